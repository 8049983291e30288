//! What the tests of the fake share: anonymous credentials, a short poll backoff, and a raw
//! HTTP client for what the real clients cannot send (unknown fields, wrong shapes).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

/// Installs the ring rustls provider once, as the `byoc` binary does at start-up.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Anonymous credentials: the fake checks no token.
pub fn anonymous() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}

/// Polls every 10 ms instead of the default second.
pub fn fast_polls() -> google_cloud_gax::exponential_backoff::ExponentialBackoff {
    google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(10))
        .with_maximum_delay(Duration::from_millis(20))
        .build()
        .expect("backoff")
}

/// One HTTP/1.1 request to the fake: (status, JSON body).
pub fn raw(url: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let text = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    stream.read_to_string(&mut resp).expect("read");
    let status: u16 = resp.get(9..12).and_then(|s| s.parse().ok()).expect("status line");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The `errors[0].reason` of a Google error body.
pub fn reason(body: &Value) -> &str {
    body.pointer("/error/errors/0/reason").and_then(Value::as_str).unwrap_or("")
}

/// The `ErrorInfo.reason` a real client read from an error answer.
pub fn client_reason(e: &google_cloud_gax::error::Error) -> String {
    e.status()
        .and_then(|s| {
            s.details.iter().find_map(|d| match d {
                google_cloud_gax::error::rpc::StatusDetails::ErrorInfo(i) => Some(i.reason.clone()),
                _ => None,
            })
        })
        .unwrap_or_default()
}

/// Inserts a Compute resource over raw HTTP and polls its operation until DONE.
pub fn compute_insert(url: &str, collection: &str, body: Value) {
    let (status, op) = raw(url, "POST", &format!("/compute/v1/{collection}"), Some(&body));
    assert_eq!(status, 200, "{op}");
    let link = op["selfLink"].as_str().expect("operation selfLink").to_owned();
    let path = &link[link.find("/compute/v1/").expect("compute path")..];
    for _ in 0..10 {
        let (_, op) = raw(url, "GET", path, None);
        if op["status"] == "DONE" {
            return;
        }
    }
    panic!("operation {path} never DONE");
}

/// A network `vpc` with a subnetwork `nodes` (secondary ranges `pods`, `services`) and a
/// `PRIVATE_SERVICE_CONNECT` subnetwork `psc`, in us-central1.
pub fn network_with_subnets(url: &str, project: &str) {
    compute_insert(url, &format!("projects/{project}/global/networks"), serde_json::json!({"name": "vpc", "autoCreateSubnetworks": false}));
    compute_insert(
        url,
        &format!("projects/{project}/regions/us-central1/subnetworks"),
        serde_json::json!({"name": "nodes", "network": "global/networks/vpc", "ipCidrRange": "10.0.0.0/20",
            "secondaryIpRanges": [{"rangeName": "pods", "ipCidrRange": "10.8.0.0/14"}, {"rangeName": "services", "ipCidrRange": "10.12.0.0/20"}]}),
    );
    compute_insert(
        url,
        &format!("projects/{project}/regions/us-central1/subnetworks"),
        serde_json::json!({"name": "psc", "network": "global/networks/vpc", "ipCidrRange": "10.13.0.0/24", "purpose": "PRIVATE_SERVICE_CONNECT"}),
    );
}
