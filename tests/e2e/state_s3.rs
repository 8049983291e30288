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
    S3Store::from_conf(&new_bucket(), prefix, moto_conf()).expect("store")
}

#[test]
fn s3_writes_are_conditional_on_the_etag_read() {
    let s = store("envs/prod/");
    assert_eq!(s.get("inventory.json").expect("get"), None);
    let v1 = s.put("inventory.json", b"a", None).expect("create");
    assert!(matches!(s.put("inventory.json", b"b", None), Err(StateError::Conflict { .. })), "If-None-Match: * over an existing object");
    let v2 = s.put("inventory.json", b"b", Some(&v1)).expect("update with the current ETag");
    assert_ne!(v1, v2);
    assert!(matches!(s.put("inventory.json", b"c", Some(&v1)), Err(StateError::Conflict { .. })), "a stale ETag");
    let got = s.get("inventory.json").expect("get").expect("present");
    assert_eq!((got.value.as_slice(), got.version.as_str()), (&b"b"[..], v2.as_str()));
    assert!(matches!(s.get("../escape"), Err(StateError::Io { .. })));
}

#[test]
fn concurrent_writers_lose_no_update() {
    let s = store("");
    s.put("counter", b"0", None).expect("create");
    let conflicts = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                for _ in 0..5 {
                    // Read, modify, conditional write; on conflict, read again (bounded).
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts < 200, "no progress");
                        let cur = s.get("counter").expect("get").expect("present");
                        let n: u32 = std::str::from_utf8(&cur.value).expect("utf8").parse().expect("number");
                        match s.put("counter", (n + 1).to_string().as_bytes(), Some(&cur.version)) {
                            Ok(_) => break,
                            Err(StateError::Conflict { .. }) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    let end = s.get("counter").expect("get").expect("present");
    assert_eq!(
        std::str::from_utf8(&end.value).expect("utf8"),
        "30",
        "every increment kept ({} conflicts retried)",
        conflicts.load(Ordering::Relaxed)
    );
}

#[test]
fn one_lease_holder_at_a_time_in_s3() {
    let s = store("envs/prod/");
    let winners: Vec<Result<Lease, LeaseError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                scope.spawn(move || Lease::acquire(s, &format!("apply-{i}"), 1_000, 60))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let held: Vec<&Lease> = winners.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(held.len(), 1, "{winners:?}");
    for r in &winners {
        if let Err(e) = r {
            assert!(matches!(e, LeaseError::Held { .. }), "{e}");
            assert!(e.to_string().contains("is locked by apply-"), "{e}");
        }
    }
    assert!(matches!(Lease::acquire(&s, "late", 1_030, 60), Err(LeaseError::Held { .. })));
    Lease::acquire(&s, "late", 1_061, 60).expect("expired leases can be taken");
}
