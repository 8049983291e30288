//! The state store: environment-level state kept outside git and outside the pod (the
//! inventory of what the reconciler applied, and later the last verified and applied
//! revisions, the journal and the lease). Every write is conditional on the version read,
//! so two reconcilers cannot interleave silently.
//!
//! [`LocalDir`] is the embedded default; [`s3::S3Store`] keeps the same objects in a bucket
//! with S3's conditional writes (GCS generation preconditions and Azure ETags would
//! implement the same trait). [`lease::Lease`] builds an expiring lock on top.

pub mod lease;
pub mod s3;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an environment's state lives when no `--state-dir` is given:
/// `<git common dir>/byoc-state/<environment name>/`. Tied to the repository (every work
/// tree and subdirectory of it finds the same store, so there is one lease), kept apart per
/// environment, and outside the work tree, so `git add -A` never picks up a lease or an
/// inventory. The state is as local as the clone: for a store shared between hosts, use a
/// bucket (`--state-s3`).
pub fn default_dir(repo: &git2::Repository, environment: &str) -> Result<PathBuf, StateError> {
    // Environment names are validated (lowercase letters, digits, '-'); this keeps the path
    // inside byoc-state even for a name that was not.
    if environment.is_empty() || !environment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(StateError::Io {
            key: String::new(),
            message: format!("environment name {environment:?} cannot name a state directory; give --state-dir"),
        });
    }
    Ok(repo.commondir().join("byoc-state").join(environment))
}

/// [`default_dir`] of the git repository that holds `path` (a directory in its work tree).
pub fn default_dir_for_path(path: &Path, environment: &str) -> Result<PathBuf, StateError> {
    let repo = git2::Repository::discover(path).map_err(|e| StateError::Io {
        key: String::new(),
        message: format!(
            "{} is not inside a git repository ({}), so there is no default state directory; state is never kept in a work tree or the current directory",
            path.display(),
            e.message()
        ),
    })?;
    default_dir(&repo, environment)
}

/// A stored value and the version a conditional write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes.
    pub value: Vec<u8>,
    /// Opaque version (a generation number here; an ETag in a bucket).
    pub version: String,
}

/// What can go wrong with the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The object changed since it was read (or exists when it should not).
    #[error("state {key:?} was changed by someone else (expected version {expected:?}, found {found:?}); reload and retry")]
    Conflict {
        /// The key.
        key: String,
        /// The version the writer read.
        expected: Option<String>,
        /// The version found.
        found: Option<String>,
    },
    /// Another writer holds the key's write lock.
    #[error("state {key:?} is being written by another process, which held the lock on {lock} longer than the wait")]
    Locked {
        /// The key.
        key: String,
        /// The lock file.
        lock: String,
    },
    /// I/O or a malformed stored object.
    #[error("state {key:?}: {message}")]
    Io {
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
}

/// Keys to versioned byte values, with compare-and-swap writes.
pub trait StateStore {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Versioned>, StateError>;
    /// Writes `value` if the stored version is `expected` (`None`: only if absent); returns
    /// the new version.
    fn put(&self, key: &str, value: &[u8], expected: Option<&str>) -> Result<String, StateError>;
}

impl StateStore for Box<dyn StateStore> {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        (**self).get(key)
    }

    fn put(&self, key: &str, value: &[u8], expected: Option<&str>) -> Result<String, StateError> {
        (**self).put(key, value, expected)
    }
}

/// A state store in a local directory: `<dir>/<key>` holds the value and `<key>.version`
/// its generation; writes go through a temporary file and a rename while holding an
/// advisory lock on `<key>.lock`. The kernel drops that lock when its holder dies, so a
/// writer killed mid-write (SIGKILL) blocks nobody.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
    lock_wait: std::time::Duration,
}

impl LocalDir {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<LocalDir, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| StateError::Io { key: String::new(), message: format!("creating {}: {e}", dir.display()) })?;
        Ok(LocalDir { dir, lock_wait: std::time::Duration::from_secs(5) })
    }

    /// How long a write waits for another writer of the same key (default 5 s).
    pub fn with_lock_wait(mut self, wait: std::time::Duration) -> LocalDir {
        self.lock_wait = wait;
        self
    }

    fn path(&self, key: &str, suffix: &str) -> Result<PathBuf, StateError> {
        check_key(key)?;
        Ok(self.dir.join(format!("{key}{suffix}")))
    }

    fn read_version(&self, key: &str) -> Result<Option<String>, StateError> {
        let path = self.path(key, ".version")?;
        match fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(key, &path, &e)),
        }
    }
}

/// Keys are plain names (letters, digits, '-', '_', '.'; not starting with '.'), so no
/// store can be led outside its directory or prefix.
fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.starts_with('.') || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(StateError::Io {
            key: key.into(),
            message: "keys are letters, digits, '-', '_' and '.', not starting with '.'".into(),
        });
    }
    Ok(())
}

fn io(key: &str, path: &Path, e: &std::io::Error) -> StateError {
    StateError::Io { key: key.into(), message: format!("{}: {e}", path.display()) }
}

impl StateStore for LocalDir {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let Some(version) = self.read_version(key)? else { return Ok(None) };
        let path = self.path(key, "")?;
        let value = fs::read(&path).map_err(|e| io(key, &path, &e))?;
        Ok(Some(Versioned { value, version }))
    }

    fn put(&self, key: &str, value: &[u8], expected: Option<&str>) -> Result<String, StateError> {
        let lock = self.path(key, ".lock")?;
        let lock_file = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&lock).map_err(|e| io(key, &lock, &e))?;
        let deadline = std::time::Instant::now() + self.lock_wait;
        loop {
            match lock_file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(fs::TryLockError::WouldBlock) => return Err(StateError::Locked { key: key.into(), lock: lock.display().to_string() }),
                Err(fs::TryLockError::Error(e)) => return Err(io(key, &lock, &e)),
            }
        }
        let result = (|| {
            let found = self.read_version(key)?;
            if found.as_deref() != expected {
                return Err(StateError::Conflict { key: key.into(), expected: expected.map(str::to_owned), found });
            }
            let next = found.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
            let path = self.path(key, "")?;
            let tmp = self.path(key, ".tmp")?;
            let mut f = fs::File::create(&tmp).map_err(|e| io(key, &tmp, &e))?;
            f.write_all(value).and_then(|()| f.sync_all()).map_err(|e| io(key, &tmp, &e))?;
            fs::rename(&tmp, &path).map_err(|e| io(key, &path, &e))?;
            // The version is written last: a crash in between leaves the new value under
            // the old version, and the next conditional write still sees a consistent one.
            let vpath = self.path(key, ".version")?;
            fs::write(&vpath, next.to_string()).map_err(|e| io(key, &vpath, &e))?;
            Ok(next.to_string())
        })();
        // Closing the file releases the lock; the file itself stays (removing it would let
        // two writers lock two different files of one name).
        drop(lock_file);
        result
    }
}

/// The state store the flags name: a directory, or `s3://BUCKET/PREFIX`; `None` for neither.
pub fn open(dir: Option<&std::path::Path>, s3: Option<&str>, endpoint_url: Option<&str>) -> anyhow::Result<Option<Box<dyn StateStore>>> {
    Ok(match (dir, s3) {
        (Some(dir), _) => Some(Box::new(LocalDir::new(dir)?)),
        (None, Some(url)) => {
            let (bucket, prefix) = url
                .strip_prefix("s3://")
                .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
                .filter(|(b, _)| !b.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--state-s3 {url:?}: expected s3://BUCKET/PREFIX"))?;
            let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
            Some(Box::new(s3::S3Store::new(bucket, &prefix, endpoint_url)?))
        }
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_conditional_on_the_version_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        assert_eq!(s.get("inv").expect("get"), None);
        let v1 = s.put("inv", b"a", None).expect("create");
        assert!(matches!(s.put("inv", b"b", None), Err(StateError::Conflict { .. })), "create over an existing value");
        let v2 = s.put("inv", b"b", Some(&v1)).expect("update");
        assert!(matches!(s.put("inv", b"c", Some(&v1)), Err(StateError::Conflict { .. })), "stale version");
        assert_eq!(s.get("inv").expect("get"), Some(Versioned { value: b"b".to_vec(), version: v2 }));
    }

    #[test]
    fn a_held_lock_refuses_the_write_and_keys_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store").with_lock_wait(std::time::Duration::from_millis(50));
        let held = fs::File::create(dir.path().join("inv.lock")).expect("lock file");
        held.lock().expect("another writer holds the lock");
        assert!(matches!(s.put("inv", b"a", None), Err(StateError::Locked { .. })));
        drop(held);
        s.put("inv", b"a", None).expect("free once the holder is gone");
        assert!(matches!(s.get("../etc"), Err(StateError::Io { .. })));
    }

    #[test]
    fn a_lock_file_left_by_a_killed_writer_blocks_nobody() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        // A writer SIGKILLed mid-write leaves its lock file, but not its lock.
        fs::write(dir.path().join("inv.lock"), "").expect("lock file");
        s.put("inv", b"a", None).expect("written");
    }
}
