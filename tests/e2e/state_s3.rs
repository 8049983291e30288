//! The S3 state store and the lease against moto's S3 (started once per test binary by
//! tests/moto/start.sh on a loopback port): conditional writes, no lost update under
//! concurrent writers, one lease holder at a time. Each test uses a bucket of its own.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use byoc::state::lease::{Lease, LeaseError};
use byoc::state::s3::S3Store;
use byoc::state::{StateError, StateStore};

use crate::support::project_root;

/// Starts a moto server on a free loopback port (tests/moto/start.sh; it stops when this
/// test binary exits): its URL and pid.
pub fn start_moto() -> (String, u32) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let out = Command::new("bash")
        .arg(project_root().join("tests/moto/start.sh"))
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .output()
        .expect("run tests/moto/start.sh");
    assert!(out.status.success(), "starting moto failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let pid = String::from_utf8_lossy(&out.stdout).trim().parse().expect("start.sh prints the pid");
    (format!("http://127.0.0.1:{port}"), pid)
}

/// The moto endpoint URL shared by this file's tests.
pub fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start_moto().0)
}

/// Client configuration for moto (any credentials do).
pub fn moto_conf() -> aws_sdk_s3::Config {
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(moto())
        .force_path_style(true)
        .build()
}

/// A fresh bucket in moto.
pub fn new_bucket() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let bucket = format!("state-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let client = aws_sdk_s3::Client::from_conf(moto_conf());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(client.create_bucket().bucket(&bucket).send()).expect("create bucket");
    bucket
}

/// The environment the `byoc` binary needs to reach moto with the default credential chain.
pub const MOTO_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A store on a fresh bucket under `prefix`.
fn store(prefix: &str) -> S3Store {
    S3Store::from_conf(&new_bucket(), prefix, moto_conf())
}

/// A runtime for a test's async part (the helpers above make their own, so they run
/// before it).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn s3_writes_are_conditional_on_the_etag_read() {
    let s = store("envs/prod/");
    runtime().block_on(async {
        assert_eq!(s.get("inventory.json").await.expect("get"), None);
        let v1 = s.put("inventory.json", b"a", None).await.expect("create");
        assert!(
            matches!(s.put("inventory.json", b"b", None).await, Err(StateError::Conflict { .. })),
            "If-None-Match: * over an existing object"
        );
        let v2 = s.put("inventory.json", b"b", Some(&v1)).await.expect("update with the current ETag");
        assert_ne!(v1, v2);
        assert!(matches!(s.put("inventory.json", b"c", Some(&v1)).await, Err(StateError::Conflict { .. })), "a stale ETag");
        let got = s.get("inventory.json").await.expect("get").expect("present");
        assert_eq!((got.value.as_slice(), got.version.as_str()), (&b"b"[..], v2.as_str()));
        assert!(matches!(s.get("../escape").await, Err(StateError::Io { .. })));
    });
}

#[test]
fn a_missing_bucket_is_refused_and_an_unreachable_store_is_worth_a_retry() {
    let conf = moto_conf();
    runtime().block_on(async {
        let missing = S3Store::from_conf("no-such-bucket-here", "", conf).get("inventory.json").await.expect_err("no bucket");
        assert!(matches!(missing, StateError::Refused { .. }) && !missing.retryable(), "{missing:?}");
        assert!(missing.to_string().contains("s3://no-such-bucket-here/inventory.json"), "{missing}");
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let closed = moto_conf()
            .to_builder()
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        let down = S3Store::from_conf("b", "", closed).put("inventory.json", b"a", None).await.expect_err("nothing listens");
        assert!(matches!(down, StateError::Unavailable { .. }) && down.retryable(), "{down:?}");
    });
}

#[test]
fn concurrent_writers_lose_no_update() {
    let s = std::sync::Arc::new(store(""));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let conflicts = std::sync::Arc::new(AtomicU32::new(0));
    rt.block_on(async {
        s.put("counter", b"0", None).await.expect("create");
        let writers: Vec<_> = (0..6)
            .map(|_| {
                let (s, conflicts) = (s.clone(), conflicts.clone());
                tokio::spawn(async move {
                    for _ in 0..5 {
                        // Read, modify, conditional write; on conflict, read again (bounded).
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            assert!(attempts < 200, "no progress");
                            let cur = s.get("counter").await.expect("get").expect("present");
                            let n: u32 = std::str::from_utf8(&cur.value).expect("utf8").parse().expect("number");
                            match s.put("counter", (n + 1).to_string().as_bytes(), Some(&cur.version)).await {
                                Ok(_) => break,
                                Err(StateError::Conflict { .. }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let end = s.get("counter").await.expect("get").expect("present");
        assert_eq!(
            std::str::from_utf8(&end.value).expect("utf8"),
            "30",
            "every increment kept ({} conflicts retried)",
            conflicts.load(Ordering::Relaxed)
        );
    });
}

#[test]
fn one_lease_holder_at_a_time_in_s3() {
    let s = store("envs/prod/");
    runtime().block_on(async {
        let names: Vec<String> = (0..4).map(|i| format!("apply-{i}")).collect();
        let winners: Vec<Result<Lease, LeaseError>> =
            futures::future::join_all(names.iter().map(|n| Lease::acquire(&s, n, 1_000, 60))).await;
        let held: Vec<&Lease> = winners.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(held.len(), 1, "{winners:?}");
        for r in &winners {
            if let Err(e) = r {
                assert!(matches!(e, LeaseError::Held { .. }), "{e}");
                assert!(e.to_string().contains("is locked by apply-"), "{e}");
            }
        }
        assert!(matches!(Lease::acquire(&s, "late", 1_030, 60).await, Err(LeaseError::Held { .. })));
        Lease::acquire(&s, "late", 1_061, 60).await.expect("expired leases can be taken");
    });
}

/// The state store once ran each S3 call on a runtime of its own, blocking the calling
/// thread: on a single-threaded runtime (the one-shot commands', and a worker of the
/// daemon's) every other task froze for the call's duration, the lease renewal
/// included. Against a bucket that answers each call 300 ms late (the fault proxy's
/// delay), a ticker on the same thread must keep ticking through the store's calls, and
/// the lease given back with `release().await` is free for the next writer at once, not
/// after its 10-minute expiry.
#[test]
fn a_slow_bucket_stalls_no_other_task_and_a_released_lease_is_free_at_once() {
    let bucket = new_bucket();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut child = Command::new("python3")
        .arg(project_root().join("tests/moto/faults.py"))
        .args(["--port", &port.to_string(), "--upstream", moto(), "--owner", &std::process::id().to_string(), "--delay", "0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start faults.py");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line).expect("faults.py starts");
    assert_eq!(line.trim(), "ready");
    let _front = crate::support::Killed(child);
    let slow = moto_conf().to_builder().endpoint_url(format!("http://127.0.0.1:{port}")).build();
    let s = S3Store::from_conf(&bucket, "envs/prod/", slow);

    runtime().block_on(async {
        let ticks = std::sync::Arc::new(AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(10));
            loop {
                every.tick().await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Let the ticker start, then count only what happens during the store's calls.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let before = ticks.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        let lease = Lease::acquire(&s, "writer-a", 1_000, 600).await.expect("a takes it");
        let guard = byoc::state::lease::LeaseGuard::new(&s, lease);
        guard.release().await.expect("a gives it back");
        let took = started.elapsed();
        let during = ticks.load(Ordering::Relaxed) - before;
        println!("three store calls took {took:?}; the ticker on the same thread ticked {during} time(s) meanwhile");
        // Three calls (read, write, release's write) of at least 300 ms each.
        assert!(took >= std::time::Duration::from_millis(900), "the delay was not applied: {took:?}");
        // One tick per 10 ms is about 90 here; a third leaves room for a busy machine.
        assert!(during >= 30, "the ticker ticked {during} time(s) in {took:?} of store calls on its thread");
        ticker.abort();
        // At the same instant (a lease taken at 1000 for 600 s), b takes it: released, not expired.
        let b = Lease::acquire(&s, "writer-b", 1_001, 600).await.expect("b takes it at once after a's release");
        b.release(&s).await.expect("released");
    });
}
