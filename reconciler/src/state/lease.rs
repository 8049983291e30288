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
    pub fn acquire(store: &impl StateStore, holder: &str, now: i64, ttl: i64) -> Result<Lease, LeaseError> {
        Lease::acquire_unless(store, holder, now, ttl, |_| false)
    }

    /// [`Lease::acquire`], also taking over an unexpired lease whose holder `dead` says
    /// is known to have died (a process of this host that no longer runs). The take-over
    /// is a conditional write like any other, so two survivors cannot both win.
    pub fn acquire_unless(
        store: &impl StateStore,
        holder: &str,
        now: i64,
        ttl: i64,
        dead: impl Fn(&str) -> bool,
    ) -> Result<Lease, LeaseError> {
        let current = read(store)?;
        if let Some((r, _)) = &current
            && r.expires_at > now
            && r.holder != holder
            && !dead(&r.holder)
        {
            return Err(LeaseError::Held { holder: r.holder.clone(), expires_at: r.expires_at });
        }
        let record = Record { holder: holder.to_owned(), expires_at: now + ttl };
        match store.put(LEASE_KEY, &encode(&record), current.as_ref().map(|(_, v)| v.as_str())) {
            Ok(version) => Ok(Lease { holder: record.holder, version, expires_at: record.expires_at }),
            // Someone wrote between our read and our write: they hold it now.
            Err(StateError::Conflict { .. }) => {
                let (holder, expires_at) = read(store)?.map_or(("another process".into(), now + ttl), |(r, _)| (r.holder, r.expires_at));
                Err(LeaseError::Held { holder, expires_at })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Extends the lease to `now + ttl`; fails if it was taken over meanwhile.
    pub fn renew(&mut self, store: &impl StateStore, now: i64, ttl: i64) -> Result<(), LeaseError> {
        self.write(store, now + ttl)
    }

    /// Gives the lease up.
    pub fn release(mut self, store: &impl StateStore) -> Result<(), LeaseError> {
        self.write(store, 0)
    }

    /// Rewrites our record with a new expiry, conditional on the version we wrote last.
    fn write(&mut self, store: &impl StateStore, expires_at: i64) -> Result<(), LeaseError> {
        let record = Record { holder: self.holder.clone(), expires_at };
        match store.put(LEASE_KEY, &encode(&record), Some(&self.version)) {
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

/// A held lease that is given back on every way out of its scope: [`LeaseGuard::release`]
/// where the caller wants to hear whether that worked, and otherwise when the guard is
/// dropped (an early return, a `?`, a panic), so a run that failed does not keep the
/// environment locked until the lease expires. The store is synchronous, so dropping can
/// write.
#[derive(Debug)]
pub struct LeaseGuard<'s, S: StateStore> {
    store: &'s S,
    lease: Option<Lease>,
}

impl<'s, S: StateStore> LeaseGuard<'s, S> {
    /// Guards `lease`, kept in `store`.
    pub fn new(store: &'s S, lease: Lease) -> Self {
        LeaseGuard { store, lease: Some(lease) }
    }

    /// Extends the lease to `now + ttl`; fails if it was taken over meanwhile.
    pub fn renew(&mut self, now: i64, ttl: i64) -> Result<(), LeaseError> {
        match self.lease.as_mut() {
            Some(lease) => lease.renew(self.store, now, ttl),
            None => Err(LeaseError::Lost),
        }
    }

    /// Gives the lease up now, reporting a failure.
    pub fn release(mut self) -> Result<(), LeaseError> {
        match self.lease.take() {
            Some(lease) => lease.release(self.store),
            None => Ok(()),
        }
    }
}

impl<S: StateStore> Drop for LeaseGuard<'_, S> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        match lease.release(self.store) {
            // Someone else holds it now: nothing of ours to give back.
            Ok(()) | Err(LeaseError::Lost) => {}
            Err(e) => crate::logging::line(
                crate::logging::Level::Warn,
                &format!("warning: could not release the environment's lease ({e}); it stays taken until it expires"),
            ),
        }
    }
}

/// The stored lease record and its version, if any.
fn read(store: &impl StateStore) -> Result<Option<(Record, String)>, LeaseError> {
    let Some(v) = store.get(LEASE_KEY)? else { return Ok(None) };
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

    #[test]
    fn one_holder_at_a_time_until_expiry_or_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        let mut a = Lease::acquire(&s, "a", 1000, 60).expect("a takes it");
        match Lease::acquire(&s, "b", 1010, 60) {
            Err(LeaseError::Held { holder, expires_at }) => assert_eq!((holder.as_str(), expires_at), ("a", 1060)),
            other => panic!("{other:?}"),
        }
        a.renew(&s, 1050, 60).expect("renewed");
        assert!(matches!(Lease::acquire(&s, "b", 1100, 60), Err(LeaseError::Held { .. })), "renewed to 1110");
        let b = Lease::acquire(&s, "b", 1111, 60).expect("expired: b takes it");
        assert!(matches!(a.renew(&s, 1112, 60), Err(LeaseError::Lost)), "a learns it lost the lease");
        b.release(&s).expect("released");
        Lease::acquire(&s, "c", 1113, 60).expect("free after release");
        assert!(matches!(Lease::acquire_unless(&s, "d", 1114, 60, |h| h == "x"), Err(LeaseError::Held { .. })), "c is alive");
        Lease::acquire_unless(&s, "d", 1114, 60, |h| h == "c").expect("c died: d takes over before expiry");
    }

    #[test]
    fn a_guard_gives_the_lease_back_on_every_way_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path()).expect("store");
        let far = i64::MAX / 2;
        // Dropped on an early return (here, the end of a scope): released.
        {
            let _guard = LeaseGuard::new(&s, Lease::acquire(&s, "a", 1000, far).expect("a takes it"));
        }
        Lease::acquire(&s, "b", 1001, 60).expect("free after the guard was dropped").release(&s).expect("released");
        // Dropped while a panic unwinds: released too.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = LeaseGuard::new(&s, Lease::acquire(&s, "c", 1002, far).expect("c takes it"));
            panic!("an error mid-apply");
        }));
        assert!(panicked.is_err());
        Lease::acquire(&s, "d", 1003, 60).expect("free after the panic").release(&s).expect("released");
        // Released explicitly, and renewable while held.
        let mut guard = LeaseGuard::new(&s, Lease::acquire(&s, "e", 1004, 60).expect("e takes it"));
        guard.renew(1010, 60).expect("renewed");
        assert!(matches!(Lease::acquire(&s, "f", 1065, 60), Err(LeaseError::Held { expires_at: 1070, .. })));
        guard.release().expect("released");
        Lease::acquire(&s, "f", 1011, 60).expect("free after release");
    }
}
