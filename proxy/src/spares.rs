//! Spare backend connections: a few TCP connections per backend address opened ahead of
//! the clients that will take them, so a new client's startup message goes to a backend
//! that has already accepted (PostgreSQL has forked its backend process by then; a
//! RisingWave frontend has its TCP handshake done) instead of waiting for a dial.
//!
//! A plain relay such as HAProxy dials the backend the moment it accepts a client, so the
//! backend's accept overlaps with the client sending its startup message. RWProxy cannot:
//! the route comes from the startup message. A spare gives it that overlap and more.
//!
//! Bounded in count (`per_backend` per address), in age (`max_age`: a backend closes a
//! connection that sends no startup message within its authentication timeout, 60 s in
//! PostgreSQL, and that time counts from the connect), and by demand: a spare is opened
//! only when one was just taken, or when the previous client to the same address came
//! within `max_age`, so a backend reached once a minute is never dialled twice per client.
//! A spare still unused at `max_age` is closed. Only routes with plain TCP to the backend
//! use spares.
//!
//! A spare is never handed out stale: [`Spares::take`] checks that the backend has neither
//! closed nor reset it (a non-blocking peek: a live PostgreSQL or RisingWave backend sends
//! nothing before the startup message), and the server dials afresh when a spare it took
//! still closes before the backend's first byte (the client has been sent nothing then).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Metric labels for what became of a spare.
pub mod fate {
    /// Handed to a client.
    pub const USED: &str = "used";
    /// Found closed or reset by the backend when taken, and dropped.
    pub const STALE: &str = "stale";
    /// Handed to a client, but the backend closed it before answering; the client got a
    /// fresh dial.
    pub const CLOSED_AFTER_USE: &str = "closed_after_use";
    /// Reached its maximum age unused, and closed.
    pub const EXPIRED: &str = "expired";
    /// Could not be opened (the name did not resolve, or the connect failed at once).
    pub const DIAL_FAILED: &str = "dial_failed";
}

/// A spare taken from the pool: a socket connected (or connecting) to the backend,
/// nothing sent on it yet.
#[derive(Debug)]
pub struct Spare {
    /// The connection, registered with the runtime.
    pub stream: tokio::net::TcpStream,
    /// The address it reached (where cancel requests go).
    pub addr: SocketAddr,
}

/// The spare connections of every backend address.
pub struct Spares {
    per_backend: usize,
    max_age: Duration,
    metrics: Arc<Metrics>,
    /// One pool per backend address in use (a handful: the route table's backends), shared
    /// with the sweepers and name lookups.
    pools: Arc<Mutex<Vec<Pool>>>,
    /// The sweepers and name lookups.
    tasks: TaskTracker,
}

/// One backend address's spares.
struct Pool {
    host: String,
    port: u16,
    /// Oldest first, each with when it was opened. Kept as plain sockets, not registered
    /// with the runtime until taken.
    ready: VecDeque<(Instant, socket2::Socket, SocketAddr)>,
    /// Name lookups under way for spares.
    dialling: usize,
    /// When a client last asked for this address.
    last_wanted: Instant,
    /// The last client took a spare, or came within `max_age` of the one before: clients
    /// keep coming, and spares are worth opening.
    warm: bool,
    /// A sweeper task is watching this pool's ages.
    swept: bool,
}

impl Spares {
    /// `per_backend` spares at most per backend address (0: none), each closed at
    /// `max_age`.
    pub fn new(per_backend: usize, max_age: Duration, metrics: Arc<Metrics>) -> Self {
        Self { per_backend, max_age, metrics, pools: Arc::default(), tasks: TaskTracker::new() }
    }

    /// No spares: every client's backend is dialled when its startup message arrives.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self::new(0, Duration::ZERO, metrics)
    }

    fn enabled(&self) -> bool {
        self.per_backend > 0 && !self.max_age.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Pool>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live spare for `host:port`, if one is ready. Call [`Spares::replenish`] once the
    /// client's startup message is on its way. Must be called inside a tokio runtime.
    pub fn take(&self, host: &str, port: u16) -> Option<Spare> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut pools = self.lock();
        let pool = match pools.iter().position(|p| p.port == port && p.host == host) {
            Some(at) => &mut pools[at],
            None => {
                // Wanted once: no spare yet. The next client within max_age opens some.
                // Addresses wanted once long ago, with nothing open or under way, are
                // forgotten here (the others by their sweeper), so the list stays as short
                // as the set of backends in use.
                let max_age = self.max_age;
                pools.retain(|p| p.swept || p.dialling > 0 || now.duration_since(p.last_wanted) < max_age);
                let pool =
                    Pool { host: host.to_owned(), port, ready: VecDeque::new(), dialling: 0, last_wanted: now, warm: false, swept: false };
                pools.push(pool);
                return None;
            }
        };
        pool.warm = now.duration_since(pool.last_wanted) < self.max_age;
        pool.last_wanted = now;
        let mut taken = None;
        while let Some((opened, socket, addr)) = pool.ready.pop_front() {
            if now.duration_since(opened) >= self.max_age {
                self.metrics.spare(fate::EXPIRED);
            } else if !is_live(&socket) {
                self.metrics.spare(fate::STALE);
            } else {
                taken = Some((socket, addr));
                pool.warm = true;
                break;
            }
        }
        self.metrics.spares_held.set(held(&pools));
        drop(pools);
        let (socket, addr) = taken?;
        match tokio::net::TcpStream::from_std(socket.into()) {
            Ok(stream) => {
                self.metrics.spare(fate::USED);
                Some(Spare { stream, addr })
            }
            Err(_) => {
                self.metrics.spare(fate::STALE);
                None
            }
        }
    }

    /// Opens spares for `host:port` up to the bound, if clients keep coming to it (the last
    /// [`Spares::take`] got a spare, or came within `max_age` of the one before). An IP address is dialled here, without waiting
    /// for the connect to complete (the check in [`Spares::take`] sees a connect that
    /// failed); a name is looked up in a task of its own first.
    pub fn replenish(&self, host: &str, port: u16) {
        if !self.enabled() {
            return;
        }
        let mut pools = self.lock();
        let Some(pool) = pools.iter_mut().find(|p| p.port == port && p.host == host && p.warm) else { return };
        let wanted = self.per_backend.saturating_sub(pool.ready.len() + pool.dialling);
        if wanted == 0 {
            return;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let addr = SocketAddr::new(ip, port);
                for _ in 0..wanted {
                    match dial(addr) {
                        Ok(socket) => pool.ready.push_back((Instant::now(), socket, addr)),
                        Err(_) => {
                            self.metrics.spare(fate::DIAL_FAILED);
                            break;
                        }
                    }
                }
            }
            Err(_) => {
                pool.dialling += wanted;
                let (pools, metrics, key) = (self.pools.clone(), self.metrics.clone(), (host.to_owned(), port));
                self.tasks.spawn(async move {
                    let addrs: Vec<SocketAddr> =
                        tokio::net::lookup_host((key.0.as_str(), key.1)).await.map(Iterator::collect).unwrap_or_default();
                    let mut all = pools.lock().unwrap_or_else(PoisonError::into_inner);
                    let Some(pool) = all.iter_mut().find(|p| p.port == key.1 && p.host == key.0) else { return };
                    pool.dialling = pool.dialling.saturating_sub(wanted);
                    for _ in 0..wanted {
                        match addrs.iter().find_map(|a| dial(*a).ok().map(|s| (s, *a))) {
                            Some((socket, addr)) => pool.ready.push_back((Instant::now(), socket, addr)),
                            None => metrics.spare(fate::DIAL_FAILED),
                        }
                    }
                    metrics.spares_held.set(held(&all));
                });
            }
        }
        let sweep = !pool.swept;
        pool.swept = true;
        self.metrics.spares_held.set(held(&pools));
        drop(pools);
        if sweep {
            self.tasks.spawn(sweep_pool(self.pools.clone(), (host.to_owned(), port), self.max_age, self.metrics.clone()));
        }
    }

    /// Counts a spare that closed after it was taken, before the backend answered.
    pub fn closed_after_use(&self) {
        self.metrics.spare(fate::CLOSED_AFTER_USE);
    }
}

fn held(pools: &[Pool]) -> i64 {
    i64::try_from(pools.iter().map(|p| p.ready.len()).sum::<usize>()).unwrap_or(i64::MAX)
}

/// Whether the backend has neither closed nor reset a spare (nor refused its connect), nor
/// sent anything on it.
fn is_live(socket: &socket2::Socket) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    // The socket is non-blocking: WouldBlock is the answer of a live, silent backend (and
    // of a connect still under way).
    matches!(socket.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Starts a non-blocking connect to `addr` with TCP_NODELAY set: on loopback or a near
/// network the handshake is over by the time a client takes the socket.
fn dial(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    let _ = socket.set_tcp_nodelay(true);
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => Ok(socket),
        Err(e) => Err(e),
    }
}

/// Closes a pool's spares as they reach `max_age`; ends (and forgets the pool, if no
/// client asked for it within `max_age`) when the pool is empty.
async fn sweep_pool(pools: Arc<Mutex<Vec<Pool>>>, key: (String, u16), max_age: Duration, metrics: Arc<Metrics>) {
    loop {
        let next = {
            let mut all = pools.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(at) = all.iter().position(|p| p.port == key.1 && p.host == key.0) else { return };
            let now = Instant::now();
            let pool = &mut all[at];
            while pool.ready.front().is_some_and(|(opened, ..)| now.duration_since(*opened) >= max_age) {
                pool.ready.pop_front();
                metrics.spare(fate::EXPIRED);
            }
            // A name lookup under way adds spares younger than now: looked at again by
            // now + max_age, before any of them is due.
            let next = pool.ready.front().map(|(opened, ..)| *opened + max_age).or((pool.dialling > 0).then(|| now + max_age));
            if next.is_none() {
                pool.swept = false;
                if now.duration_since(pool.last_wanted) >= max_age {
                    all.remove(at);
                }
            }
            metrics.spares_held.set(held(&all));
            next
        };
        match next {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(metrics: &Metrics, line: &str) -> f64 {
        metrics.encode().lines().find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    /// A real listening socket for the spares to reach, and pools of two kept 10 s.
    fn backend() -> (std::net::TcpListener, u16, Arc<Metrics>, Spares) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let metrics = Arc::new(Metrics::default());
        let spares = Spares::new(2, Duration::from_secs(10), metrics.clone());
        (listener, port, metrics, spares)
    }

    #[tokio::test]
    async fn one_client_opens_no_spare_and_clients_in_a_row_keep_the_bound() {
        let (_listener, port, metrics, spares) = backend();
        assert!(spares.take("127.0.0.1", port).is_none());
        spares.replenish("127.0.0.1", port);
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 0.0, "a single client opened spares");
        assert!(spares.take("127.0.0.1", port).is_none());
        spares.replenish("127.0.0.1", port);
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 2.0);
        for _ in 0..5 {
            let spare = spares.take("127.0.0.1", port).expect("a spare");
            assert_eq!(spare.addr.port(), port);
            spares.replenish("127.0.0.1", port);
            assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 2.0);
        }
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_total{result=\"used\"}"), 5.0);
    }

    #[tokio::test]
    async fn a_spare_the_backend_closed_is_dropped_not_handed_out() {
        let (listener, port, metrics, spares) = backend();
        let _ = spares.take("127.0.0.1", port);
        let _ = spares.take("127.0.0.1", port);
        spares.replenish("127.0.0.1", port);
        // The backend accepts both and closes them, as a server does at its timeout.
        for _ in 0..2 {
            drop(listener.accept().expect("accept"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(spares.take("127.0.0.1", port).is_none(), "a closed spare was handed out");
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_total{result=\"stale\"}"), 2.0);
        // Nothing listening at all: the connect fails, and that spare is not handed out either.
        drop(listener);
        spares.replenish("127.0.0.1", port);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(spares.take("127.0.0.1", port).is_none(), "a refused spare was handed out");
    }

    #[tokio::test(start_paused = true)]
    async fn unused_spares_are_closed_at_their_maximum_age() {
        let (_listener, port, metrics, spares) = backend();
        let _ = spares.take("127.0.0.1", port);
        let _ = spares.take("127.0.0.1", port);
        spares.replenish("127.0.0.1", port);
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 2.0);
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 2.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_held"), 0.0);
        assert_eq!(metric(&metrics, "rwproxy_backend_spares_total{result=\"expired\"}"), 2.0);
        // The pool itself is forgotten once nobody asked for it within the maximum age.
        assert!(spares.lock().is_empty());
    }
}
