//! Cancel keys. Clients get the proxy's own random keys; each maps to the backend that
//! issued the real key, so a CancelRequest goes to that backend only and a guessed or
//! forged key cancels nothing. Requests are rate-limited per client network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// At most `limit` cancel requests per `window` from one client network (/24 for IPv4,
/// /64 for IPv6): enough for people pressing Ctrl-C, not for guessing keys.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// A limiter allowing `limit` requests per `window` per network.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether a request from `addr` at `now` is allowed (and counts it).
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let net = network_of(addr);
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded memory: forget finished windows when the map grows.
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = seen.entry(net).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.limit
    }
}

fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
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

    #[test]
    fn rate_limit_is_per_network_and_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let same_net: IpAddr = "10.0.0.200".parse().unwrap();
        let other: IpAddr = "10.0.1.1".parse().unwrap();
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(same_net, t0));
        assert!(limiter.allow(other, t0));
        assert!(limiter.allow(a, t0 + Duration::from_secs(1)));
    }
}
