//! publish: hands RWProxy the verified revision's route table and cluster files, so the
//! proxy reads its routes from the same verified revision the reconciler converges.
//!
//! Layout under the publish directory (the `emptyDir` the two containers share):
//!
//! ```text
//! revisions/<commit>/...   the revision's `Routes` and `RisingWaveCluster` files, at their
//!                          paths relative to the environment directory
//! current -> revisions/<commit>
//! ```
//!
//! A revision is written into a temporary directory, synced, renamed into place, and then
//! `current` is replaced by renaming a new symlink over it: a reader (RWProxy's reload)
//! opens either the old revision or the new one, never a half-written one. The last few
//! revisions are kept for a reader still inside an old one; older ones are removed.
//! Publishing the revision `current` already names does nothing.

use std::path::{Path, PathBuf};

use rwproxy::diagnostics::Diagnostic;
use rwproxy::specfiles::{Kind, SourceFile, kind_of};

/// How many revisions stay on disk, `current` included.
pub const KEEP: usize = 3;

/// The symlink RWProxy's `--routes` points at.
pub const CURRENT: &str = "current";

const REVISIONS: &str = "revisions";

/// Why a publish failed. Nothing was swapped in either case.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Reading or writing the publish directory failed.
    #[error("publish to {path}: {message}")]
    Io {
        /// The path involved.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// A file's kind could not be read.
    #[error("{0}")]
    File(Diagnostic),
}

/// What a publish did.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    /// The directory `current` now points at.
    pub path: PathBuf,
    /// Files written (or already there).
    pub files: usize,
    /// False when `current` already named this revision.
    pub changed: bool,
    /// Older revisions removed.
    pub removed: usize,
}

fn io(path: &Path, e: &std::io::Error) -> PublishError {
    PublishError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// Publishes `files` (a revision's spec files, paths relative to the repository root) of
/// the environment directory `env_dir` as revision `commit` (hex) under `dir`.
pub fn publish(dir: &Path, commit: &str, env_dir: &str, files: &[SourceFile]) -> Result<Published, PublishError> {
    let target = Path::new(REVISIONS).join(commit);
    let current = dir.join(CURRENT);
    let selected = select(env_dir, files)?;
    if std::fs::read_link(&current).is_ok_and(|t| t == target) {
        return Ok(Published { path: dir.join(&target), files: selected.len(), changed: false, removed: 0 });
    }
    let revisions = dir.join(REVISIONS);
    std::fs::create_dir_all(&revisions).map_err(|e| io(&revisions, &e))?;
    let final_dir = dir.join(&target);
    if !final_dir.is_dir() {
        // Written aside, synced, then renamed: the directory appears whole or not at all.
        let staging = revisions.join(format!(".staging-{commit}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        for (relative, bytes) in &selected {
            let path = staging.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, &e))?;
            }
            write_synced(&path, bytes)?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, &e))?;
        std::fs::rename(&staging, &final_dir).map_err(|e| io(&final_dir, &e))?;
        sync_dir(&revisions)?;
    } else {
        // Published before and published again (a revert): it is the newest now, for pruning.
        std::fs::File::open(&final_dir).and_then(|d| d.set_modified(std::time::SystemTime::now())).map_err(|e| io(&final_dir, &e))?;
    }
    // A new symlink renamed over `current` replaces it in one step.
    let link = dir.join(format!(".{CURRENT}-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| io(&link, &e))?;
    std::fs::rename(&link, &current).map_err(|e| io(&current, &e))?;
    sync_dir(dir)?;
    let removed = prune(&revisions, commit)?;
    Ok(Published { path: final_dir, files: selected.len(), changed: true, removed })
}

/// The files RWProxy reads: routes, and clusters (a `cluster: "*"` route is bounded by
/// them). The environment's own spec stays out of the proxy's view.
fn select<'a>(env_dir: &str, files: &'a [SourceFile]) -> Result<Vec<(PathBuf, &'a [u8])>, PublishError> {
    let prefix = env_dir.trim_matches('/');
    let mut out = Vec::new();
    for file in files {
        let (kind, _) = kind_of(file).map_err(PublishError::File)?;
        if !matches!(kind, Kind::Routes | Kind::RisingWaveCluster) {
            continue;
        }
        let relative = if prefix.is_empty() { file.path.as_str() } else { file.path.strip_prefix(prefix).unwrap_or(&file.path) };
        let relative = PathBuf::from(relative.trim_start_matches('/'));
        // Paths come from a git tree walk, so they cannot climb out; refuse one that would.
        if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(PublishError::Io { path: file.path.clone(), message: "not a plain relative path".into() });
        }
        out.push((relative, file.bytes.as_slice()));
    }
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io(path, &e))?;
    f.write_all(bytes).map_err(|e| io(path, &e))?;
    f.sync_all().map_err(|e| io(path, &e))
}

fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, &e))
}

/// Removes all but the [`KEEP`] most recently published revisions (`current` is always kept).
fn prune(revisions: &Path, current: &str) -> Result<usize, PublishError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(revisions).map_err(|e| io(revisions, &e))? {
        let entry = entry.map_err(|e| io(revisions, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current || name.starts_with('.') {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).map_err(|e| io(&entry.path(), &e))?;
        found.push((modified, entry.path()));
    }
    found.sort();
    let excess = found.len().saturating_sub(KEEP - 1);
    for (_, path) in found.iter().take(excess) {
        std::fs::remove_dir_all(path).map_err(|e| io(path, &e))?;
    }
    Ok(excess)
}
