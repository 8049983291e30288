//! The state store: environment-level state kept outside git and outside the pod (the
//! inventory of what the reconciler applied, and later the last verified and applied
//! revisions, the journal and the lease). Every write is conditional on the version read,
//! so two reconcilers cannot interleave silently.
//!
//! [`LocalDir`] is the embedded default; [`s3::S3Store`], [`gcs::GcsStore`] and
//! [`azblob::AzureBlobStore`] keep the same objects in a bucket or container with its
//! conditional writes (S3 and Azure ETags, GCS generations). [`lease::Lease`] builds an
//! expiring lock on top of any of them.

pub mod azblob;
pub mod gcs;
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

/// What can go wrong with the state store. [`StateError::retryable`] says whether trying
/// again later can help, as the pipeline's errors do.
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
    /// The store could not be reached, timed out, or answered with a server error
    /// (throttling, 5xx): the same call may work later.
    #[error("state {key:?}: {message}; the store may be unreachable for now, retrying later can help")]
    Unavailable {
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
    /// The store refused the call for a reason a retry does not change (access denied, no
    /// such bucket), or the location is not usable.
    #[error("state {key:?}: {message}")]
    Refused {
        /// The key (empty when the store as a whole is meant).
        key: String,
        /// What happened and what to do.
        message: String,
    },
    /// Local I/O, a key that is not a plain name, or a malformed stored object.
    #[error("state {key:?}: {message}")]
    Io {
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
}

impl StateError {
    /// Whether trying again later can help: another writer moved first (reload, then
    /// retry), held the lock, or the store was unreachable. A refusal, a local I/O error
    /// or a malformed object needs a person.
    pub fn retryable(&self) -> bool {
        matches!(self, StateError::Conflict { .. } | StateError::Locked { .. } | StateError::Unavailable { .. })
    }
}

/// What a store call returns: a boxed future, so the trait stays usable as
/// `dyn StateStore` (the daemon and the commands pick the backend from their config at run
/// time). `Send`, so a reconcile that awaits the store can run on any worker thread.
pub type StoreFuture<'a, T> = futures::future::BoxFuture<'a, Result<T, StateError>>;

/// Keys to versioned byte values, with compare-and-swap writes.
///
/// Async, and never blocking the thread that polls it: a call against a slow bucket or a
/// contended lock lets every other task of the runtime (the lease renewal, the HTTP doors,
/// actions in flight) go on. The methods return boxed futures rather than being
/// `async fn`s because an `async fn` in a trait makes it unusable as `dyn StateStore`, and
/// the few calls a reconcile makes do not notice one allocation each.
pub trait StateStore: Send + Sync {
    /// The value at `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>>;
    /// Writes `value` if the stored version is `expected` (`None`: only if absent); returns
    /// the new version.
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String>;
}

impl<S: StateStore + ?Sized> StateStore for Box<S> {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        (**self).get(key)
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String> {
        (**self).put(key, value, expected)
    }
}

/// A state store in a local directory: `<dir>/<key>` holds the value and `<key>.version`
/// its generation; writes go through a temporary file and a rename while holding an
/// advisory lock on `<key>.lock`. The kernel drops that lock when its holder dies, so a
/// writer killed mid-write (SIGKILL) blocks nobody.
///
/// The file system calls and the wait for the lock block, so each call runs on tokio's
/// blocking pool (`spawn_blocking`), never on a runtime worker: it must be called from
/// inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
    lock_wait: std::time::Duration,
}

impl LocalDir {
    /// Uses `dir`, creating it if needed (once, at start-up, before any task runs).
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

    fn get_blocking(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let Some(version) = self.read_version(key)? else { return Ok(None) };
        let path = self.path(key, "")?;
        let value = fs::read(&path).map_err(|e| io(key, &path, &e))?;
        Ok(Some(Versioned { value, version }))
    }

    fn put_blocking(&self, key: &str, value: &[u8], expected: Option<&str>) -> Result<String, StateError> {
        let lock = self.path(key, ".lock")?;
        let lock_file = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&lock).map_err(|e| io(key, &lock, &e))?;
        let deadline = std::time::Instant::now() + self.lock_wait;
        loop {
            match lock_file.try_lock() {
                Ok(()) => break,
                // On the blocking pool: sleeping here holds no runtime worker.
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

    /// Runs `f` on a clone of this store on the blocking pool.
    fn off_runtime<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(&LocalDir) -> Result<T, StateError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let this = self.clone();
        let key = key.to_owned();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || f(&this)).await {
                Ok(result) => result,
                Err(e) => Err(StateError::Io { key, message: format!("the state store's file task failed: {e}") }),
            }
        })
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
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        let owned = key.to_owned();
        self.off_runtime(key, move |s| s.get_blocking(&owned))
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String> {
        let (owned, value, expected) = (key.to_owned(), value.to_vec(), expected.map(str::to_owned));
        self.off_runtime(key, move |s| s.put_blocking(&owned, &value, expected.as_deref()))
    }
}

/// A bucket or container that holds the state, as `--state-s3`, `--state-gcs`,
/// `--state-azblob` or the daemon's `stateStore` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// `s3://BUCKET/PREFIX`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix, empty or ending in '/'.
        prefix: String,
    },
    /// `gs://BUCKET/PREFIX`.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The prefix, empty or ending in '/'.
        prefix: String,
    },
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`.
    AzureBlob(azblob::AzureBlobLocation),
}

/// `SCHEME://BUCKET/PREFIX` split, the prefix ending in '/' unless empty.
fn bucket_url(flag: &str, scheme: &str, url: &str) -> Result<(String, String), String> {
    let (bucket, prefix) = url
        .strip_prefix(scheme)
        .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
        .filter(|(b, _)| !b.is_empty() && !b.contains(|c: char| c.is_whitespace() || c == '?' || c == '#'))
        .ok_or_else(|| format!("{flag} {url:?}: expected {scheme}BUCKET/PREFIX"))?;
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
    Ok((bucket.to_owned(), prefix))
}

impl Remote {
    /// `s3://BUCKET/PREFIX`; the error names `flag` and says what was expected.
    pub fn parse_s3(flag: &str, url: &str) -> Result<Remote, String> {
        bucket_url(flag, "s3://", url).map(|(bucket, prefix)| Remote::S3 { bucket, prefix })
    }

    /// `gs://BUCKET/PREFIX`.
    pub fn parse_gcs(flag: &str, url: &str) -> Result<Remote, String> {
        let (bucket, prefix) = bucket_url(flag, "gs://", url)?;
        // GCS bucket names: 3-63 (222 with dots) lower-case letters, digits, '-', '_', '.'.
        if bucket.len() < 3
            || bucket.len() > 222
            || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(format!("{flag} {url:?}: {bucket:?} is not a GCS bucket name (lower-case letters, digits, '-', '_', '.')"));
        }
        Ok(Remote::Gcs { bucket, prefix })
    }

    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX` (or an emulator's
    /// `http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PREFIX`).
    pub fn parse_azure_blob(flag: &str, url: &str) -> Result<Remote, String> {
        azblob::AzureBlobLocation::parse(url).map(Remote::AzureBlob).map_err(|e| format!("{flag} {e}"))
    }

    /// Connects: S3 and GCS with their default credentials (`endpoint_url` points them at
    /// an emulator), Azure Blob with `azure_sas` if given (the commands read it from
    /// `AZURE_STORAGE_SAS_TOKEN`), else the pod's workload identity.
    pub async fn open(&self, endpoint_url: Option<&str>, azure_sas: Option<String>) -> Result<Box<dyn StateStore>, StateError> {
        Ok(match self {
            Remote::S3 { bucket, prefix } => Box::new(s3::S3Store::new(bucket, prefix, endpoint_url).await),
            Remote::Gcs { bucket, prefix } => Box::new(gcs::GcsStore::new(bucket, prefix, endpoint_url)?),
            Remote::AzureBlob(location) => Box::new(azblob::AzureBlobStore::connect(location.clone(), azure_sas)?),
        })
    }
}

/// The state store the flags name: a directory, or a bucket (`s3://`, `gs://`, or an
/// Azure Blob container's `https://` URL); `None` for neither. The bucket's kind is told
/// by its scheme, so each command passes whichever of `--state-s3`, `--state-gcs` and
/// `--state-azblob` was given (clap checks each flag's own scheme).
pub async fn open(
    dir: Option<&std::path::Path>,
    bucket: Option<&str>,
    endpoint_url: Option<&str>,
) -> Result<Option<Box<dyn StateStore>>, StateError> {
    let refused = |message: String| StateError::Refused { key: String::new(), message };
    Ok(match (dir, bucket) {
        (Some(dir), _) => Some(Box::new(LocalDir::new(dir)?)),
        (None, Some(url)) => {
            let remote = if url.starts_with("s3://") {
                Remote::parse_s3("--state-s3", url)
            } else if url.starts_with("gs://") {
                Remote::parse_gcs("--state-gcs", url)
            } else {
                Remote::parse_azure_blob("--state-azblob", url)
            }
            .map_err(refused)?;
            // The SAS is a secret: never a flag (visible in the process list) or a file.
            let sas = std::env::var("AZURE_STORAGE_SAS_TOKEN").ok().filter(|s| !s.is_empty());
            Some(remote.open(endpoint_url, sas).await?)
        }
        (None, None) => None,
    })
}

/// clap's check of `--state-s3`.
pub fn s3_flag(url: &str) -> Result<String, String> {
    Remote::parse_s3("--state-s3", url).map(|_| url.to_owned())
}

/// clap's check of `--state-gcs`.
pub fn gcs_flag(url: &str) -> Result<String, String> {
    Remote::parse_gcs("--state-gcs", url).map(|_| url.to_owned())
}

/// clap's check of `--state-azblob`.
pub fn azblob_flag(url: &str) -> Result<String, String> {
    Remote::parse_azure_blob("--state-azblob", url).map(|_| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_conditional_on_the_version_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        assert_eq!(s.get("inv").await.expect("get"), None);
        let v1 = s.put("inv", b"a", None).await.expect("create");
        assert!(matches!(s.put("inv", b"b", None).await, Err(StateError::Conflict { .. })), "create over an existing value");
        let v2 = s.put("inv", b"b", Some(&v1)).await.expect("update");
        assert!(matches!(s.put("inv", b"c", Some(&v1)).await, Err(StateError::Conflict { .. })), "stale version");
        assert_eq!(s.get("inv").await.expect("get"), Some(Versioned { value: b"b".to_vec(), version: v2 }));
    }

    #[tokio::test]
    async fn a_held_lock_refuses_the_write_and_keys_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store").with_lock_wait(std::time::Duration::from_millis(50));
        let held = fs::File::create(dir.path().join("inv.lock")).expect("lock file");
        held.lock().expect("another writer holds the lock");
        let locked = s.put("inv", b"a", None).await;
        assert!(matches!(locked, Err(StateError::Locked { .. })), "{locked:?}");
        assert!(locked.is_err_and(|e| e.retryable()), "a held lock is worth waiting for");
        drop(held);
        s.put("inv", b"a", None).await.expect("free once the holder is gone");
        let escaped = s.get("../etc").await;
        assert!(matches!(escaped, Err(StateError::Io { .. })), "{escaped:?}");
        assert!(escaped.is_err_and(|e| !e.retryable()), "a bad key stays bad");
    }

    #[tokio::test]
    async fn a_lock_file_left_by_a_killed_writer_blocks_nobody() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        // A writer SIGKILLed mid-write leaves its lock file, but not its lock.
        fs::write(dir.path().join("inv.lock"), "").expect("lock file");
        s.put("inv", b"a", None).await.expect("written");
    }

    /// On a single-threaded runtime (the one-shot commands' kind), a write that waits for
    /// another writer's lock leaves the thread to the other tasks: a ticker keeps ticking.
    /// Waiting on the runtime's own thread, as the store once did, would freeze it for the
    /// whole wait.
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_for_the_lock_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wait = std::time::Duration::from_millis(400);
        let s = LocalDir::new(dir.path()).expect("store").with_lock_wait(wait);
        let held = fs::File::create(dir.path().join("inv.lock")).expect("lock file");
        held.lock().expect("another writer holds the lock");
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(10));
            loop {
                every.tick().await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let started = std::time::Instant::now();
        let result = s.put("inv", b"a", None).await;
        let waited = started.elapsed();
        ticker.abort();
        assert!(matches!(result, Err(StateError::Locked { .. })), "{result:?}");
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // 400 ms at one tick per 10 ms: 40 on an idle machine; 10 leaves room for a busy one.
        assert!(ticks >= 10, "the ticker ticked {ticks} time(s) during a {waited:?} wait for the lock");
    }
}
