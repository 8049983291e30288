//! A lease on an environment, kept in the state store: whoever holds an unexpired lease
//! may apply; everyone else is told who holds it and until when. Acquiring, renewing and
//! releasing are conditional writes, so two processes can never both believe they hold it.

use serde::{Deserialize, Serialize};

use super::{StateError, StateStore};

/// Key of the lease object.
pub const LEASE_KEY: &str = "lease.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Record {
    holder: String,
    /// Seconds since the epoch; 0 when released.
    expires_at: i64,
}

/// Why a lease was not obtained.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it.
    #[error("the environment is locked by {holder} until {expires_at} (unix time); another byoc is applying it")]
    Held {
        /// Who.
        holder: String,
        /// Until when (seconds since the epoch).
        expires_at: i64,
    },
    /// We lost it (it expired and someone else took it).
    #[error("the lease was lost to another holder; stop and start over")]
    Lost,
    /// The store failed, or the record is malformed.
    #[error(transparent)]
    Store(#[from] StateError),
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    holder: String,
    version: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

impl Lease {
    /// Takes the lease for `ttl` seconds if nobody holds an unexpired one at `now`.
    pub async fn acquire(store: &(impl StateStore + ?Sized), holder: &str, now: i64, ttl: i64) -> Result<Lease, LeaseError> {
        Lease::acquire_unless(store, holder, now, ttl, |_| false).await
    }

    /// [`Lease::acquire`], also taking over an unexpired lease whose holder `dead` says
    /// is known to have died (a process of this host that no longer runs). The take-over
    /// is a conditional write like any other, so two survivors cannot both win.
    pub async fn acquire_unless(
        store: &(impl StateStore + ?Sized),
        holder: &str,
        now: i64,
        ttl: i64,
        dead: impl Fn(&str) -> bool,
    ) -> Result<Lease, LeaseError> {
        let current = read(store).await?;
        if let Some((r, _)) = &current
            && r.expires_at > now
            && r.holder != holder
            && !dead(&r.holder)
        {
            return Err(LeaseError::Held { holder: r.holder.clone(), expires_at: r.expires_at });
        }
        let record = Record { holder: holder.to_owned(), expires_at: now + ttl };
        match store.put(LEASE_KEY, &encode(&record), current.as_ref().map(|(_, v)| v.as_str())).await {
            Ok(version) => Ok(Lease { holder: record.holder, version, expires_at: record.expires_at }),
            // Someone wrote between our read and our write: they hold it now.
            Err(StateError::Conflict { .. }) => {
                let (holder, expires_at) =
                    read(store).await?.map_or(("another process".into(), now + ttl), |(r, _)| (r.holder, r.expires_at));
                Err(LeaseError::Held { holder, expires_at })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Extends the lease to `now + ttl`; fails if it was taken over meanwhile.
    pub async fn renew(&mut self, store: &(impl StateStore + ?Sized), now: i64, ttl: i64) -> Result<(), LeaseError> {
        self.write(store, now + ttl).await
    }

    /// Gives the lease up.
    pub async fn release(mut self, store: &(impl StateStore + ?Sized)) -> Result<(), LeaseError> {
        self.write(store, 0).await
    }

    /// Rewrites our record with a new expiry, conditional on the version we wrote last.
    async fn write(&mut self, store: &(impl StateStore + ?Sized), expires_at: i64) -> Result<(), LeaseError> {
        let record = Record { holder: self.holder.clone(), expires_at };
        match store.put(LEASE_KEY, &encode(&record), Some(&self.version)).await {
            Ok(v) => {
                self.version = v;
                self.expires_at = expires_at;
                Ok(())
            }
            Err(StateError::Conflict { .. }) => Err(LeaseError::Lost),
            Err(e) => Err(e.into()),
        }
    }
}

/// Gives back a lease that `holder` still holds at `now`, when the [`Lease`] value itself is
/// gone (the task that held it was cancelled, as the daemon cancels a reconcile when it
/// loses its Kubernetes Lease). Returns whether there was one to give back; a lease of
/// another holder is left alone, and a write that races with a new holder loses.
pub async fn release_held_by(store: &(impl StateStore + ?Sized), holder: &str, now: i64) -> Result<bool, LeaseError> {
    let Some((record, version)) = read(store).await? else { return Ok(false) };
    if record.holder != holder || record.expires_at <= now {
        return Ok(false);
    }
    let mut lease = Lease { holder: record.holder, version, expires_at: record.expires_at };
    match lease.write(store, 0).await {
        Ok(()) => Ok(true),
        Err(LeaseError::Lost) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A held lease that its user gives back with [`LeaseGuard::release`] on every way out
/// it controls: success, a failed action, a refused plan. Releasing writes to the store,
/// which is async, so it cannot happen in `Drop`.
///
/// Dropping a guard that was not released (a panic, a cancelled task) is the last resort
/// only: it writes nothing and logs that the lease stays taken until it expires (or until
/// a process of this host sees that the holder died and takes it over, see
/// [`Lease::acquire_unless`]). A caller that cancels a task holding one gives it back
/// afterwards with [`release_held_by`].
#[derive(Debug)]
pub struct LeaseGuard<'s, S: StateStore + ?Sized> {
    store: &'s S,
    lease: Option<Lease>,
}

impl<'s, S: StateStore + ?Sized> LeaseGuard<'s, S> {
    /// Guards `lease`, kept in `store`.
    pub fn new(store: &'s S, lease: Lease) -> Self {
        LeaseGuard { store, lease: Some(lease) }
    }

    /// Extends the lease to `now + ttl`; fails if it was taken over meanwhile.
    pub async fn renew(&mut self, now: i64, ttl: i64) -> Result<(), LeaseError> {
        match self.lease.as_mut() {
            Some(lease) => lease.renew(self.store, now, ttl).await,
            None => Err(LeaseError::Lost),
        }
    }

    /// Gives the lease up now, reporting a failure.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        match self.lease.take() {
            Some(lease) => lease.release(self.store).await,
            None => Ok(()),
        }
    }
}

impl<S: StateStore + ?Sized> Drop for LeaseGuard<'_, S> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        crate::logging::line(
            crate::logging::Level::Warn,
            &format!(
                "warning: the environment's lease (held by {}) was not given back before its holder stopped; it stays taken until it expires at {} (unix time)",
                lease.holder, lease.expires_at
            ),
        );
    }
}

/// The stored lease record and its version, if any.
async fn read(store: &(impl StateStore + ?Sized)) -> Result<Option<(Record, String)>, LeaseError> {
    let Some(v) = store.get(LEASE_KEY).await? else { return Ok(None) };
    let r =
        serde_json::from_slice(&v.value).map_err(|e| StateError::Io { key: LEASE_KEY.into(), message: format!("malformed lease: {e}") })?;
    Ok(Some((r, v.version)))
}

fn encode(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalDir;

    #[tokio::test]
    async fn one_holder_at_a_time_until_expiry_or_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        let mut a = Lease::acquire(&s, "a", 1000, 60).await.expect("a takes it");
        match Lease::acquire(&s, "b", 1010, 60).await {
            Err(LeaseError::Held { holder, expires_at }) => assert_eq!((holder.as_str(), expires_at), ("a", 1060)),
            other => panic!("{other:?}"),
        }
        a.renew(&s, 1050, 60).await.expect("renewed");
        assert!(matches!(Lease::acquire(&s, "b", 1100, 60).await, Err(LeaseError::Held { .. })), "renewed to 1110");
        let b = Lease::acquire(&s, "b", 1111, 60).await.expect("expired: b takes it");
        assert!(matches!(a.renew(&s, 1112, 60).await, Err(LeaseError::Lost)), "a learns it lost the lease");
        b.release(&s).await.expect("released");
        Lease::acquire(&s, "c", 1113, 60).await.expect("free after release");
        assert!(matches!(Lease::acquire_unless(&s, "d", 1114, 60, |h| h == "x").await, Err(LeaseError::Held { .. })), "c is alive");
        Lease::acquire_unless(&s, "d", 1114, 60, |h| h == "c").await.expect("c died: d takes over before expiry");
    }

    #[tokio::test]
    async fn a_guard_is_given_back_by_release_and_a_dropped_one_only_by_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        let far = i64::MAX / 2;
        // Released explicitly, and renewable while held.
        let mut guard = LeaseGuard::new(&s, Lease::acquire(&s, "e", 1004, 60).await.expect("e takes it"));
        guard.renew(1010, 60).await.expect("renewed");
        assert!(matches!(Lease::acquire(&s, "f", 1065, 60).await, Err(LeaseError::Held { expires_at: 1070, .. })));
        guard.release().await.expect("released");
        Lease::acquire(&s, "f", 1011, 60).await.expect("free after release").release(&s).await.expect("released");
        // Dropped (a cancelled task): still held, until its holder gives it back by name.
        drop(LeaseGuard::new(&s, Lease::acquire(&s, "g", 1012, far).await.expect("g takes it")));
        assert!(matches!(Lease::acquire(&s, "h", 1013, 60).await, Err(LeaseError::Held { .. })), "a drop writes nothing");
        assert!(!release_held_by(&s, "h", 1014).await.expect("read"), "not h's to give back");
        assert!(release_held_by(&s, "g", 1014).await.expect("released"), "g gives back what it held");
        Lease::acquire(&s, "h", 1015, 60).await.expect("free after g gave it back");
    }
}
