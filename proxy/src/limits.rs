//! Limits that keep a connection storm from reaching the clusters or exhausting the proxy:
//! a per-network rate limiter (used for connects and for cancel requests), the count of
//! open connections per route and cluster against each route's `maxConnections`, and the
//! default process-wide connection cap derived from the open-files limit.
//!
//! Decisions only: the server asks and acts on the answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// At most `limit` events per `window` from one client network (/24 for IPv4, /64 for
/// IPv6): one host cannot evade it by cycling through its neighbours' addresses, and a
/// NAT's users share one budget, as they share one path to the clusters.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// A limiter allowing `limit` events per `window` per network.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether an event from `addr` at `now` is allowed (and counts it).
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let net = network_of(addr);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded memory: forget finished windows when the map grows.
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = seen.entry(net).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.limit
    }
}

/// The network a client address is limited as: its /24 (IPv4) or /64 (IPv6).
pub fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; limit them as IPv4.
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// A rate written `N/s` or `N/m` (`N` alone means per second), as `--connect-rate-per-network`
/// takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per window.
    pub limit: u32,
    /// The window.
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(format!("unknown unit {unit:?} in {text:?}: write N/s or N/m, e.g. 50/s")),
        };
        let limit: u32 = count.trim().parse().map_err(|_| format!("{text:?} is not a rate: write N/s or N/m, e.g. 50/s"))?;
        if limit == 0 {
            return Err("a rate of 0 would refuse every connection: leave the flag out for no limit".to_owned());
        }
        Ok(Rate { limit, per })
    }
}

/// Open client connections per route and cluster, each held by a [`RouteSlot`].
///
/// Counted for every route, limited or not, so a reload that adds or lowers a route's
/// `maxConnections` judges new connections against the sessions already open; those
/// sessions are never closed by it. Entries stay once made: their number is bounded by the
/// route names of verified tables and, for `cluster: "*"` routes, the environment's
/// clusters, and keeping them spares an allocation on every connect.
#[derive(Debug, Default)]
pub struct RouteCounts {
    open: Mutex<HashMap<String, HashMap<String, u32>>>,
}

/// One connection's place in its route's count; given back when dropped.
#[derive(Debug)]
pub struct RouteSlot<'a> {
    counts: &'a RouteCounts,
    route: String,
    cluster: String,
}

impl RouteCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, u32>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot on `route` to `cluster` unless `limit` connections hold one already.
    pub fn acquire(&self, route: &str, cluster: &str, limit: Option<u32>) -> Option<RouteSlot<'_>> {
        let mut open = self.lock();
        let count = entry(entry(&mut open, route), cluster);
        if limit.is_some_and(|max| *count >= max) {
            return None;
        }
        *count += 1;
        Some(RouteSlot { counts: self, route: route.to_owned(), cluster: cluster.to_owned() })
    }

    /// Connections open now on `route` to `cluster`.
    pub fn open(&self, route: &str, cluster: &str) -> u32 {
        self.lock().get(route).and_then(|c| c.get(cluster)).copied().unwrap_or(0)
    }
}

/// The value under `key`, made when missing; looked up by `&str` so a known key costs no
/// allocation.
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl Drop for RouteSlot<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.counts.lock().get_mut(&self.route).and_then(|c| c.get_mut(&self.cluster)) {
            *n = n.saturating_sub(1);
        }
    }
}

/// File descriptors kept aside from client connections: the listeners, the admin
/// endpoint's connections, cancel requests to backends, the reload watcher, certificate
/// and route files being read, and the standard streams.
pub const RESERVED_FDS: u64 = 64;

/// The default process-wide cap on client connections for an open-files limit of
/// `nofile`: each connection holds two descriptors (client and backend); [`RESERVED_FDS`]
/// plus a sixteenth of the limit are kept aside. At least 1.
pub fn default_max_client_connections(nofile: u64) -> usize {
    let spare = nofile.saturating_sub(RESERVED_FDS + nofile / 16);
    usize::try_from(spare / 2).unwrap_or(usize::MAX).max(1)
}

/// Raises this process's soft open-files limit to its hard limit (as Go programs and
/// most servers do: containers often start with a soft limit of 1,024 under a far higher
/// hard one) and returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        // On failure the old soft limit stays, and is what the cap is derived from.
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    // `None` is unlimited; Linux never allows that for open files, and the kernel's
    // ceiling (fs.nr_open, 1,048,576 by default) would apply anyway.
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_is_per_network_and_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let same_net: IpAddr = "10.0.0.200".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.1.1".parse().unwrap();
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(same_net, t0));
        assert!(!limiter.allow(mapped, t0), "an IPv4-mapped address shares its /24's budget");
        assert!(limiter.allow(other, t0));
        assert!(limiter.allow(a, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(limiter.allow("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(!limiter.allow("2001:db8:1:2:ffff::9".parse().unwrap(), t0));
        assert!(limiter.allow("2001:db8:1:3::1".parse().unwrap(), t0));
    }

    #[test]
    fn rates_parse_with_their_unit() {
        assert_eq!("50/s".parse(), Ok(Rate { limit: 50, per: Duration::from_secs(1) }));
        assert_eq!("50".parse(), Ok(Rate { limit: 50, per: Duration::from_secs(1) }));
        assert_eq!("600/m".parse(), Ok(Rate { limit: 600, per: Duration::from_secs(60) }));
        for bad in ["0/s", "x/s", "5/h", "-1"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn route_slots_count_per_route_and_cluster_and_come_back_when_dropped() {
        let counts = RouteCounts::default();
        let a = counts.acquire("r", "c1", Some(2)).expect("first");
        let b = counts.acquire("r", "c1", Some(2)).expect("second");
        assert!(counts.acquire("r", "c1", Some(2)).is_none(), "third is over the limit");
        assert!(counts.acquire("r", "c2", Some(2)).is_some(), "another cluster of a wildcard route has its own count");
        let unlimited: Vec<_> = (0..5).map(|_| counts.acquire("other", "c1", None).expect("no limit")).collect();
        assert_eq!(counts.open("other", "c1"), 5);
        drop(a);
        assert_eq!(counts.open("r", "c1"), 1);
        let again = counts.acquire("r", "c1", Some(2));
        assert!(again.is_some());
        drop((b, again, unlimited));
        assert_eq!(counts.open("r", "c1"), 0);
        assert_eq!(counts.open("other", "c1"), 0);
    }

    #[test]
    fn the_default_cap_leaves_headroom_under_the_open_files_limit() {
        assert_eq!(default_max_client_connections(1024), (1024 - 64 - 64) / 2);
        assert_eq!(default_max_client_connections(10), 1);
        for nofile in [100, 1024, 65_536, 1_048_576] {
            let cap = default_max_client_connections(nofile) as u64;
            assert!(2 * cap + RESERVED_FDS <= nofile, "{nofile}: {cap}");
        }
    }
}
