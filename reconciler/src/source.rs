//! Reads an environment directory at a git revision straight from the object database: no
//! checkout, no working tree, so a pull request's head can be planned without touching
//! the files of anything else.

use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};
use rwproxy::diagnostics::{Diagnostic, Position};
use rwproxy::specfiles::{EntryKind, EntryVerdict, SourceFile, judge};
use rwproxy::yaml::MAX_FILE_BYTES;

/// Failure to read a revision.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository could not be opened.
    #[error("cannot open git repository {path}: {message}")]
    Open {
        /// Path given.
        path: String,
        /// libgit2's message.
        message: String,
    },
    /// The revision does not name a commit.
    #[error("revision {rev:?} does not name a commit: {message}")]
    Resolve {
        /// Revision given.
        rev: String,
        /// libgit2's message.
        message: String,
    },
    /// The environment path names something other than a directory.
    #[error("{path} at {revision} is not a directory")]
    NotADirectory {
        /// The environment path.
        path: String,
        /// The revision.
        revision: String,
    },
    /// Reading objects failed.
    #[error("cannot read {path} at {revision}: {message}")]
    Read {
        /// The path.
        path: String,
        /// The revision.
        revision: String,
        /// libgit2's message.
        message: String,
    },
    /// Files that cannot be specs (symlinks, submodules).
    #[error("{} problem(s) in the files of the revision:\n{}", .0.len(), lines(.0))]
    Files(Vec<Diagnostic>),
}

fn lines(problems: &[Diagnostic]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// A resolved revision and the spec files of the environment directory in it.
#[derive(Debug)]
pub struct Revision {
    /// Name like `main@sha1:<hex>` (or `sha1:<hex>` for a bare commit id).
    pub name: String,
    /// Commit id.
    pub commit: Oid,
    /// Spec files, sorted by path; `None` when the directory does not exist at this revision
    /// (a new environment: nothing is observed at the base).
    pub files: Option<Vec<SourceFile>>,
}

/// Opens the repository at `path` (a work tree or a bare repository).
pub fn open(path: &Path) -> Result<Repository, SourceError> {
    Repository::open(path).map_err(|e| SourceError::Open { path: path.display().to_string(), message: e.message().to_owned() })
}

/// Reads the spec files under `env_dir` at `rev`.
pub fn read(repo: &Repository, rev: &str, env_dir: &str) -> Result<Revision, SourceError> {
    let resolve_err = |e: git2::Error| SourceError::Resolve { rev: rev.to_owned(), message: e.message().to_owned() };
    let object = repo.revparse_single(rev).map_err(resolve_err)?;
    let commit = object.peel_to_commit().map_err(resolve_err)?;
    let name = revision_name(repo, rev, commit.id());
    let read_err =
        |path: &str, e: git2::Error| SourceError::Read { path: path.to_owned(), revision: name.clone(), message: e.message().to_owned() };

    let dir = normalize(env_dir);
    let root = commit.tree().map_err(|e| read_err("/", e))?;
    let tree = if dir.is_empty() {
        root
    } else {
        match root.get_path(Path::new(&dir)) {
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Revision { name, commit: commit.id(), files: None }),
            Err(e) => return Err(read_err(&dir, e)),
            Ok(entry) if entry.kind() != Some(ObjectType::Tree) => return Err(SourceError::NotADirectory { path: dir, revision: name }),
            Ok(entry) => repo.find_tree(entry.id()).map_err(|e| read_err(&dir, e))?,
        }
    };

    let mut files = Vec::new();
    let mut problems = Vec::new();
    walk(repo, &tree, &dir, &mut files, &mut problems).map_err(|e| read_err(&dir, e))?;
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.position.cmp(&b.position));
        return Err(SourceError::Files(problems));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Revision { name, commit: commit.id(), files: Some(files) })
}

fn walk(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    files: &mut Vec<SourceFile>,
    problems: &mut Vec<Diagnostic>,
) -> Result<(), git2::Error> {
    for entry in tree {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let kind = match entry.kind() {
            Some(ObjectType::Tree) => EntryKind::Directory,
            Some(ObjectType::Blob) if entry.filemode() == 0o120_000 => EntryKind::Symlink,
            Some(ObjectType::Blob) => EntryKind::File,
            Some(ObjectType::Commit) => EntryKind::Submodule,
            _ => EntryKind::Special,
        };
        // The same rule as a work tree's (`rwproxy::specfiles::read_dir`): one verdict for
        // one tree, whichever command reads it.
        match judge(&path, &name, kind) {
            EntryVerdict::Skip => {}
            EntryVerdict::Descend => walk(repo, &repo.find_tree(entry.id())?, &path, files, problems)?,
            EntryVerdict::Refuse(d) => problems.push(d),
            EntryVerdict::Read => match read_blob(repo, entry.id()) {
                Ok(bytes) => files.push(SourceFile { path, bytes }),
                Err(e) => {
                    problems.push(Diagnostic::new(Position::file(&path), format!("cannot read blob {}: {}", entry.id(), e.message())))
                }
            },
        }
    }
    Ok(())
}

/// The bytes of blob `id`, or, when it is larger than [`MAX_FILE_BYTES`],
/// `MAX_FILE_BYTES + 1` zero bytes: enough for the loader to report the file as too large,
/// without loading a huge blob into memory.
///
/// The size comes from the object header, which libgit2 reads from loose objects and packs
/// alike (a pack entry's header is its first bytes, and deltas record the result's size);
/// libgit2's streaming reader (`Odb::reader`) knows loose objects only, and every clone
/// and `git gc` packs them.
fn read_blob(repo: &Repository, id: Oid) -> Result<Vec<u8>, git2::Error> {
    let (size, _) = repo.odb()?.read_header(id)?;
    if size > MAX_FILE_BYTES {
        return Ok(vec![0; MAX_FILE_BYTES + 1]);
    }
    Ok(repo.find_blob(id)?.content().to_vec())
}

/// `main@sha1:<hex>` when `rev` is a branch (or HEAD on a branch), else `sha1:<hex>`.
pub fn revision_name(repo: &Repository, rev: &str, id: Oid) -> String {
    let branch = if rev == "HEAD" {
        repo.head().ok().filter(git2::Reference::is_branch).and_then(|r| r.shorthand().ok().map(str::to_owned))
    } else {
        repo.resolve_reference_from_short_name(rev)
            .ok()
            .filter(|r| r.is_branch() || r.is_remote())
            .and_then(|r| r.shorthand().ok().map(str::to_owned))
    };
    label(branch.as_deref(), id)
}

/// `branch@<hash>:<hex>` (`main@sha1:…`, `main@sha256:…`), or `<hash>:<hex>` without a branch.
pub fn label(branch: Option<&str>, id: Oid) -> String {
    let format = id.object_format();
    match branch {
        Some(b) => format!("{b}@{format}:{id}"),
        None => format!("{format}:{id}"),
    }
}

fn normalize(dir: &str) -> String {
    dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}
