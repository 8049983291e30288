//! Fault injection, drift (`tamper`), and the fake's lifetime.

mod common;

use common::{compute_insert, raw};
use gcp_double::{Double, Options};
use serde_json::json;

const NETS: &str = "/compute/v1/projects/byoc-test-project/global/networks";

fn statuses(seed: u64, n: usize) -> (Vec<u16>, u64) {
    let d = Double::spawn(Options { fault_rate: 0.4, seed, ..Options::default() }).expect("spawn");
    let got = (0..n).map(|_| raw(&d.url(), "GET", NETS, None).0).collect();
    (got, d.faults_injected())
}

#[test]
fn faults_are_deterministic_from_the_seed_and_counted() {
    let (a, faults) = statuses(7, 60);
    let (b, _) = statuses(7, 60);
    let (c, _) = statuses(8, 60);
    assert_eq!(a, b, "the same seed gives the same faults");
    assert_ne!(a, c, "another seed gives others");
    let injected = a.iter().filter(|s| **s != 200).count() as u64;
    assert_eq!(injected, faults);
    assert!(a.contains(&429) && a.contains(&503), "{a:?}");
    assert!((10..=40).contains(&injected), "about 40% of 60: {injected}");
    assert!(a.iter().all(|s| [200, 429, 503].contains(s)));
}

#[test]
fn a_fault_is_google_error_json_and_changes_nothing() {
    let d = Double::spawn(Options::default()).expect("spawn");
    d.set_fault_rate(1.0);
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (status, body) = raw(&d.url(), "POST", NETS, Some(&json!({"name": "vpc"})));
        let want = match status {
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            other => panic!("not a fault: {other} {body}"),
        };
        assert_eq!(body["error"]["status"], json!(want));
        assert_eq!(body["error"]["code"], json!(status));
        seen.push(status);
    }
    assert_eq!(d.faults_injected(), 20);
    assert!(d.writes().is_empty() && d.snapshot() == json!({}), "a faulted request changes nothing");
    d.set_fault_rate(0.0);
    assert_eq!(raw(&d.url(), "POST", NETS, Some(&json!({"name": "vpc"}))).0, 200);
}

#[test]
fn tamper_changes_a_resource_and_makes_held_fingerprints_stale() {
    let d = Double::spawn(Options::default()).expect("spawn");
    compute_insert(&d.url(), "projects/byoc-test-project/global/networks", json!({"name": "vpc"}));
    compute_insert(
        &d.url(),
        "projects/byoc-test-project/regions/us-central1/subnetworks",
        json!({"name": "nodes", "network": "global/networks/vpc", "ipCidrRange": "10.0.0.0/20"}),
    );
    let path = "/compute/v1/projects/byoc-test-project/regions/us-central1/subnetworks/nodes";
    let (_, before) = raw(&d.url(), "GET", path, None);
    d.tamper(
        "projects/byoc-test-project/regions/us-central1/subnetworks",
        "nodes",
        json!({"privateIpGoogleAccess": true, "description": null}),
    )
    .expect("tamper");
    let (_, after) = raw(&d.url(), "GET", path, None);
    assert_eq!(after["privateIpGoogleAccess"], json!(true));
    assert_ne!(after["fingerprint"], before["fingerprint"]);
    let (status, body) = raw(&d.url(), "PATCH", path, Some(&json!({"description": "x", "fingerprint": before["fingerprint"]})));
    assert_eq!((status, common::reason(&body)), (412, "conditionNotMet"));
    assert!(d.tamper("projects/byoc-test-project/global/networks", "missing", json!({})).is_err());
    assert_eq!(d.writes().len(), 2, "tampering is not a request: {:?}", d.writes());
}

#[test]
fn the_fake_stops_with_its_last_handle() {
    let d = Double::spawn(Options::default()).expect("spawn");
    let url = d.url();
    let other = d.clone();
    drop(d);
    assert_eq!(raw(&url, "GET", NETS, None).0, 200, "a clone keeps it serving");
    drop(other);
    let addr = url.trim_start_matches("http://").to_owned();
    let stopped = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::net::TcpStream::connect(&addr).is_err()
    });
    assert!(stopped, "still listening on {addr}");
}

/// What the provider must know to count faults one for one: the real clients retry a 503 on
/// an idempotent call (GET, PUT, DELETE) by themselves, unseen by the caller, and give a 429
/// and any fault on a POST or PATCH back to it.
#[tokio::test]
async fn the_real_client_retries_idempotent_503s_by_itself() {
    use google_cloud_compute_v1::client::Networks;
    use google_cloud_compute_v1::model::Network;
    let d = Double::spawn(Options { operation_polls: 0, ..Options::default() }).expect("spawn");
    compute_insert(&d.url(), "projects/byoc-test-project/global/networks", json!({"name": "vpc"}));
    common::init();
    let client = Networks::builder()
        .with_endpoint(d.url())
        .with_credentials(common::anonymous())
        .with_backoff_policy(common::fast_polls())
        .build()
        .await
        .expect("client");
    d.set_fault_rate(0.5);
    let mut seen = Vec::new();
    for _ in 0..30 {
        match client.get().set_project("byoc-test-project").set_network("vpc").send().await {
            Ok(_) => seen.push(200),
            Err(e) => seen.push(e.http_status_code().unwrap_or(0)),
        }
    }
    let faults = d.faults_injected();
    let visible = seen.iter().filter(|s| **s != 200).count() as u64;
    assert!(seen.iter().all(|s| [200, 429].contains(s)), "GET: 503s are retried inside the client: {seen:?}");
    assert!(faults > visible, "{faults} faults injected, {visible} seen by the caller");
    let before = d.faults_injected();
    let mut posts = Vec::new();
    for i in 0..30 {
        let r = client.insert().set_project("byoc-test-project").set_body(Network::new().set_name(format!("n{i}"))).send().await;
        posts.push(r.map(|_| 200).unwrap_or_else(|e| e.http_status_code().unwrap_or(0)));
    }
    let post_faults = d.faults_injected() - before;
    assert_eq!(post_faults, posts.iter().filter(|s| **s != 200).count() as u64, "a POST is never retried by the client: {posts:?}");
    assert!(posts.contains(&503));
}
