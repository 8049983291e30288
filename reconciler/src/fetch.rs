//! Fetches one branch of a remote repository (`file://`, `https://`, `ssh://`) into a bare
//! cache repository, after a cheap check of the remote tip (one ref advertisement, no pack)
//! that skips the fetch when the cache already holds it.
//!
//! The cache ref `refs/byoc/heads/<branch>` mirrors the remote, even when the remote moved
//! backwards: judging the move (fast-forward only) is verification's job, which refuses it
//! with the evidence at hand. Nothing here trusts the fetched bytes.
//!
//! A SHA-256 remote (known from the object ids it advertises) is fetched into a cache of
//! that format.
//!
//! Auth: SSH with a private key file (`--ssh-key`), the server's host key checked against
//! a known_hosts file (no trust on first use); HTTPS with a token from `BYOC_GIT_TOKEN`
//! (sent as the password, the way GitHub, GitLab and Gitea accept tokens).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions, ObjectFormat, Oid, RemoteCallbacks, Repository,
    RepositoryInitOptions,
};
use sha2::{Digest, Sha256};

/// Where to fetch from, and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// `file://`, `https://` or `ssh://` URL.
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// SSH private key.
    pub ssh_key: Option<PathBuf>,
    /// SSH known_hosts file the server's key must be listed in.
    pub known_hosts: Option<PathBuf>,
    /// HTTPS token.
    pub token: Option<String>,
}

/// The result of a fetch.
pub struct Fetched {
    /// The cache repository.
    pub repo: Repository,
    /// The remote branch's tip.
    pub tip: Oid,
    /// False when the tip check found the cache up to date and nothing was downloaded.
    pub downloaded: bool,
}

/// Whether `repo` names a remote rather than a local path.
pub fn is_url(repo: &str) -> bool {
    ["file://", "https://", "http://", "ssh://"].iter().any(|p| repo.starts_with(p))
}

/// The cache ref of `branch`.
pub fn cache_ref(branch: &str) -> String {
    format!("refs/byoc/heads/{branch}")
}

/// Why a fetch failed. Nothing is moved by a failed fetch: the cache ref keeps the last
/// tip fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or branch cannot be fetched as configured (plain http, an invalid branch
    /// name): a person must change the configuration.
    #[error("{0}")]
    Config(String),
    /// The remote could not be reached or refused the connection or the credentials.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The remote.
        url: String,
        /// libgit2's or our callbacks' words.
        why: String,
    },
    /// The remote does not advertise the branch (deleted, or not pushed yet).
    #[error("{url} has no branch {branch:?}")]
    NoBranch {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
    },
    /// The pack transfer failed part way.
    #[error("fetching {branch} from {url}: {why}")]
    Transfer {
        /// The remote.
        url: String,
        /// The branch.
        branch: String,
        /// libgit2's or our callbacks' words.
        why: String,
    },
    /// The local cache repository could not be created or read.
    #[error("cache {path}: {why}")]
    Cache {
        /// The cache repository.
        path: String,
        /// What went wrong.
        why: String,
    },
}

impl FetchError {
    /// Whether trying again later can help: a remote that was down, a transfer cut short or
    /// a branch not pushed yet can come back; a bad configuration or a broken cache needs a
    /// person.
    pub fn retryable(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. } | FetchError::NoBranch { .. } | FetchError::Transfer { .. })
    }
}

/// Fetches `remote.branch` into a bare repository under `cache` (one per URL).
pub fn fetch(remote: &Remote, cache: &Path) -> Result<Fetched, FetchError> {
    if remote.url.starts_with("http://") {
        return Err(FetchError::Config(format!("{}: plain http is refused; use https://", remote.url)));
    }
    let mirror = cache_ref(&remote.branch);
    if !git2::Reference::is_valid_name(&mirror) {
        return Err(FetchError::Config(format!("{:?} is not a valid branch name", remote.branch)));
    }
    let key: String = Sha256::digest(remote.url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let path = cache.join(key);
    let repo = cache_repo(&path, ObjectFormat::Sha1)?;
    let wanted = format!("refs/heads/{}", remote.branch);
    // libgit2 replaces a callback's error with its own words; keep ours.
    let problem = Rc::new(RefCell::new(None::<String>));
    let why = |e: git2::Error| problem.borrow_mut().take().unwrap_or_else(|| e.message().to_owned());
    let unreachable = |why: String| FetchError::Unreachable { url: remote.url.clone(), why };
    let advertised = {
        let mut r = repo.remote_anonymous(&remote.url).map_err(|e| FetchError::Config(format!("{}: {}", remote.url, e.message())))?;
        let conn = r.connect_auth(Direction::Fetch, Some(callbacks(remote, &problem)), None).map_err(|e| unreachable(why(e)))?;
        let heads = conn.list().map_err(|e| unreachable(e.message().to_owned()))?;
        heads.iter().find(|h| h.name() == wanted).map(|h| h.oid())
    };
    let Some(tip) = advertised else {
        return Err(FetchError::NoBranch { url: remote.url.clone(), branch: remote.branch.clone() });
    };
    // The advertisement tells the remote's hash. A repository of the other format gets
    // a cache of its own: libgit2 must never fetch SHA-256 objects into a SHA-1 store.
    let repo = if tip.object_format() == repo.object_format() { repo } else { cache_repo(&path, tip.object_format())? };
    let local = repo.refname_to_id(&mirror).ok();
    if local == Some(tip) && repo.find_commit(tip).is_ok() {
        return Ok(Fetched { repo, tip, downloaded: false });
    }
    {
        let mut r = repo.remote_anonymous(&remote.url).map_err(|e| FetchError::Config(format!("{}: {}", remote.url, e.message())))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(remote, &problem));
        let spec = format!("+{wanted}:{mirror}");
        r.fetch(&[spec.as_str()], Some(&mut options), None).map_err(|e| FetchError::Transfer {
            url: remote.url.clone(),
            branch: remote.branch.clone(),
            why: why(e),
        })?;
    }
    // The tip advertised a moment ago may have moved since; report what was fetched.
    let tip = repo
        .refname_to_id(&mirror)
        .map_err(|e| FetchError::Cache { path: repo.path().display().to_string(), why: e.message().to_owned() })?;
    Ok(Fetched { repo, tip, downloaded: true })
}

/// The bare cache repository of one remote for one object format, created if missing.
fn cache_repo(base: &Path, format: ObjectFormat) -> Result<Repository, FetchError> {
    let path = base.with_extension(format!("{format}.git"));
    if let Ok(r) = Repository::open_bare(&path) {
        return Ok(r);
    }
    let failed = |why: String| FetchError::Cache { path: path.display().to_string(), why };
    std::fs::create_dir_all(&path).map_err(|e| failed(e.to_string()))?;
    let mut options = RepositoryInitOptions::new();
    options.bare(true).object_format(format);
    Repository::init_opts(&path, &options).map_err(|e| failed(format!("cannot create it: {}", e.message())))
}

fn callbacks<'a>(remote: &'a Remote, problem: &Rc<RefCell<Option<String>>>) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut tried = 0u32;
    let (p1, p2) = (problem.clone(), problem.clone());
    let fail = move |p: &Rc<RefCell<Option<String>>>, msg: String| {
        *p.borrow_mut() = Some(msg.clone());
        git2::Error::from_str(&msg)
    };
    cb.credentials(move |url, username, allowed| {
        tried += 1;
        if tried > 3 {
            return Err(fail(&p1, format!("authentication to {url} failed")));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let key = remote.ssh_key.as_deref().ok_or_else(|| fail(&p1, "the server wants an SSH key: pass --ssh-key".into()))?;
            return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = remote.token.as_deref().ok_or_else(|| fail(&p1, "the server wants a token: set BYOC_GIT_TOKEN".into()))?;
            return Cred::userpass_plaintext(username.unwrap_or("x-access-token"), token);
        }
        Err(fail(&p1, format!("no credentials for {url} ({allowed:?})")))
    });
    cb.certificate_check(move |cert, host| {
        let fail = |msg: String| fail(&p2, msg);
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already checked the chain against the system's roots.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let key = hostkey.hostkey().ok_or_else(|| fail("the SSH server sent no host key".into()))?;
        let known =
            remote.known_hosts.as_deref().ok_or_else(|| fail(format!("cannot check the host key of {host}: pass --ssh-known-hosts")))?;
        if known_host(known, host, key).map_err(fail)? {
            Ok(CertificateCheckStatus::CertificateOk)
        } else {
            Err(fail(format!("the host key of {host} is not in {}", known.display())))
        }
    });
    cb
}

/// Whether known_hosts lists `key` (the raw SSH wire encoding) for `host` (`name` or
/// `[name]:port`). Hashed host names are not matched.
fn known_host(file: &Path, host: &str, key: &[u8]) -> Result<bool, String> {
    let entries = ssh_key::known_hosts::KnownHosts::read_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let names = [host.to_owned(), format!("[{host}]")];
    Ok(entries.iter().any(|e| {
        let listed = match e.host_patterns() {
            ssh_key::known_hosts::HostPatterns::Patterns(p) => {
                p.iter().any(|p| names.iter().any(|n| p == n || p.starts_with(&format!("{n}:"))))
            }
            ssh_key::known_hosts::HostPatterns::HashedName { .. } => false,
        };
        listed && e.marker().is_none() && e.public_key().to_bytes().is_ok_and(|k| k == key)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, branch: &str) -> Remote {
        Remote { url: url.into(), branch: branch.into(), ..Remote::default() }
    }

    #[test]
    fn a_configuration_error_is_not_retried_and_an_unreachable_remote_is() {
        let cache = tempfile::tempdir().expect("tempdir");
        let e = fetch(&remote("http://example.invalid/r.git", "main"), cache.path()).err().expect("plain http refused");
        assert!(matches!(e, FetchError::Config(_)) && !e.retryable(), "{e:?}");
        let e = fetch(&remote("file:///nonexistent/r.git", "main..x"), cache.path()).err().expect("bad branch refused");
        assert!(matches!(e, FetchError::Config(_)) && !e.retryable(), "{e:?}");
        let gone = cache.path().join("gone.git");
        let e = fetch(&remote(&format!("file://{}", gone.display()), "main"), cache.path()).err().expect("nothing there");
        assert!(matches!(e, FetchError::Unreachable { .. }) && e.retryable(), "{e:?}");
        // A repository without the branch: it may be pushed later.
        git2::Repository::init_bare(&gone).expect("init");
        let e = fetch(&remote(&format!("file://{}", gone.display()), "main"), cache.path()).err().expect("no branch");
        assert!(matches!(e, FetchError::NoBranch { .. }) && e.retryable(), "{e:?}");
    }
}
