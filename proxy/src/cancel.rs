//! Cancel keys. Clients get the proxy's own random keys; each maps to the backend that
//! issued the real key, so a CancelRequest goes to that backend only and a guessed or
//! forged key cancels nothing. Requests are rate-limited per client network by
//! [`crate::limits::RateLimiter`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::protocol::CancelKey;

/// Where a proxy-issued key leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The backend that issued the key.
    pub backend: SocketAddr,
    /// The backend's own key.
    pub key: CancelKey,
}

/// Proxy keys of the open sessions.
#[derive(Debug, Default)]
pub struct CancelMap {
    keys: Mutex<HashMap<CancelKey, Target>>,
}

/// Removes a session's key when the session ends.
#[derive(Debug)]
pub struct Registration<'a> {
    map: &'a CancelMap,
    key: CancelKey,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

impl CancelMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CancelKey, Target>> {
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a fresh random key for a session whose backend gave `target`.
    pub fn register(&self, target: Target) -> (CancelKey, Registration<'_>) {
        let mut keys = self.lock();
        loop {
            let key = CancelKey { pid: rand::random(), secret: rand::random() };
            if let std::collections::hash_map::Entry::Vacant(e) = keys.entry(key) {
                e.insert(target);
                return (key, Registration { map: self, key });
            }
        }
    }

    /// The backend a key leads to, if it is a live proxy key.
    pub fn lookup(&self, key: CancelKey) -> Option<Target> {
        self.lock().get(&key).copied()
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session holds a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_backend_until_the_session_ends() {
        let map = CancelMap::default();
        let target = Target { backend: "127.0.0.1:5432".parse().unwrap(), key: CancelKey { pid: 1, secret: 2 } };
        let (key, registration) = map.register(target);
        assert_ne!(key, target.key, "the client never sees the backend's key");
        assert_eq!(map.lookup(key), Some(target));
        assert_eq!(map.lookup(CancelKey { pid: key.pid, secret: key.secret ^ 1 }), None);
        drop(registration);
        assert_eq!(map.lookup(key), None);
    }
}
