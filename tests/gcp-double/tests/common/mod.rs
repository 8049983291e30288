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
