//! The GCS state store and the lease against the real fake-gcs-server (started once per
//! test binary by tests/gcs/start.sh on a loopback port): first that the emulator judges
//! generation preconditions at all, then conditional writes, no lost update under
//! concurrent writers, one lease holder at a time. Each test uses a bucket of its own.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use byoc::state::gcs::GcsStore;
use byoc::state::lease::{Lease, LeaseError};
use byoc::state::{StateError, StateStore};

use crate::support::project_root;

/// The fake-gcs-server endpoint shared by this file's tests (tests/gcs/start.sh; it stops
/// when this test binary exits).
pub fn fake_gcs() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start_fake_gcs)
}

/// A new fake-gcs-server (tests/gcs/start.sh), tied to this test binary; its endpoint.
pub fn start_fake_gcs() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let out = Command::new("bash")
        .arg(project_root().join("tests/gcs/start.sh"))
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .output()
        .expect("run tests/gcs/start.sh");
    assert!(out.status.success(), "starting fake-gcs-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
    format!("http://127.0.0.1:{port}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A fresh bucket in fake-gcs-server, made through its JSON API.
pub fn new_bucket() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let bucket = format!("state-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let url = format!("{}/storage/v1/b?project=test", fake_gcs());
    let body = serde_json::json!({ "name": bucket }).to_string();
    let status = runtime().block_on(async {
        let r = reqwest::Client::new().post(url).header("content-type", "application/json").body(body).send().await.expect("create bucket");
        r.status().as_u16()
    });
    assert_eq!(status, 200, "creating bucket {bucket}");
    bucket
}

fn store(prefix: &str) -> GcsStore {
    GcsStore::new(&new_bucket(), prefix, Some(fake_gcs())).expect("store")
}

/// One multipart upload straight to the emulator, with `ifGenerationMatch`: its status and
/// the generation it wrote.
async fn upload(bucket: &str, name: &str, generation: &str, body: &str) -> (u16, Option<String>) {
    let url = format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=multipart&ifGenerationMatch={generation}", fake_gcs());
    let multipart = format!(
        "--b\r\ncontent-type: application/json\r\n\r\n{{\"name\":\"{name}\"}}\r\n--b\r\ncontent-type: text/plain\r\n\r\n{body}\r\n--b--\r\n"
    );
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "multipart/related; boundary=b")
        .body(multipart)
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    let json: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).unwrap_or_default();
    (status, json.get("generation").and_then(|g| g.as_str()).map(str::to_owned))
}

/// The store's safety rests on the emulator judging preconditions as GCS does; an
/// emulator that accepted every write would let every test below pass for nothing. So:
/// `ifGenerationMatch=0` over an existing object, and a generation that is no longer the
/// live one, both get 412, and the current generation is accepted.
#[test]
fn fake_gcs_server_refuses_a_stale_generation_with_412() {
    let bucket = new_bucket();
    runtime().block_on(async {
        let (created, g1) = upload(&bucket, "p/k", "0", "a").await;
        assert_eq!(created, 200);
        let g1 = g1.expect("a generation");
        assert_eq!(upload(&bucket, "p/k", "0", "b").await.0, 412, "a create over an existing object");
        let (updated, g2) = upload(&bucket, "p/k", &g1, "b").await;
        assert_eq!(updated, 200, "the live generation is accepted");
        assert_ne!(Some(g1.clone()), g2);
        assert_eq!(upload(&bucket, "p/k", &g1, "c").await.0, 412, "a stale generation");
    });
}

#[test]
fn gcs_writes_are_conditional_on_the_generation_read() {
    let s = store("envs/prod/");
    runtime().block_on(async {
        assert_eq!(s.get("inventory.json").await.expect("get"), None);
        let v1 = s.put("inventory.json", b"a", None).await.expect("create");
        let again = s.put("inventory.json", b"b", None).await;
        assert!(matches!(again, Err(StateError::Conflict { .. })), "ifGenerationMatch=0 over an existing object: {again:?}");
        let v2 = s.put("inventory.json", b"b", Some(&v1)).await.expect("update with the current generation");
        assert_ne!(v1, v2);
        let stale = s.put("inventory.json", b"c", Some(&v1)).await.expect_err("a stale generation");
        assert!(matches!(stale, StateError::Conflict { .. }) && stale.retryable(), "{stale:?}");
        assert!(stale.to_string().contains("was changed by someone else"), "{stale}");
        let got = s.get("inventory.json").await.expect("get").expect("present");
        assert_eq!((got.value.as_slice(), got.version.as_str()), (&b"b"[..], v2.as_str()));
        assert!(matches!(s.get("../escape").await, Err(StateError::Io { .. })));
        // The key lives under the prefix, as one object named with '/'.
        let listed = reqwest::get(format!("{}/storage/v1/b/{}/o?prefix=envs/prod/", fake_gcs(), bucket_of(&s))).await.expect("list");
        let listed: serde_json::Value = serde_json::from_str(&listed.text().await.expect("body")).expect("json");
        assert_eq!(listed["items"][0]["name"], "envs/prod/inventory.json", "{listed}");
    });
}

fn bucket_of(s: &GcsStore) -> String {
    // `GcsStore`'s Debug names the bucket; the tests make one bucket per store.
    let shown = format!("{s:?}");
    let start = shown.find("bucket: \"").expect("bucket shown") + "bucket: \"".len();
    shown[start..].split('"').next().expect("bucket").to_owned()
}

#[test]
fn a_missing_gcs_bucket_is_refused_and_an_unreachable_one_is_worth_a_retry() {
    runtime().block_on(async {
        let missing = GcsStore::new("no-such-bucket-here", "", Some(fake_gcs())).expect("store");
        let e = missing.put("inventory.json", b"a", None).await.expect_err("no bucket");
        assert!(matches!(e, StateError::Refused { .. }) && !e.retryable(), "{e:?}");
        assert!(e.to_string().contains("gs://no-such-bucket-here/inventory.json") && e.to_string().contains("HTTP 404"), "{e}");
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let down = GcsStore::new("b", "", Some(&format!("http://127.0.0.1:{port}"))).expect("store");
        let e = down.put("inventory.json", b"a", None).await.expect_err("nothing listens");
        assert!(matches!(e, StateError::Unavailable { .. }) && e.retryable(), "{e:?}");
    });
}

#[test]
fn concurrent_writers_lose_no_update_in_gcs() {
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
        let conflicts = conflicts.load(Ordering::Relaxed);
        println!("6 writers x 5 increments on GCS: {conflicts} conflict(s) retried");
        assert_eq!(std::str::from_utf8(&end.value).expect("utf8"), "30", "every increment kept ({conflicts} conflicts retried)");
    });
}

#[test]
fn one_lease_holder_at_a_time_in_gcs() {
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
        let late = Lease::acquire(&s, "late", 1_061, 60).await.expect("expired leases can be taken");
        late.release(&s).await.expect("released");
        Lease::acquire(&s, "next", 1_062, 60).await.expect("a released lease is free at once");
    });
}
