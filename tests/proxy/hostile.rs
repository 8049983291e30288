//! Hostile clients against the real proxy (handshake deadline 2 s here): oversized
//! lengths, garbage, truncated packets, TLS garbage, a slowloris, and 5,000 idle
//! connections. Each is closed within its deadline, the proxy keeps serving, memory stays
//! bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::support::{Proxy, default_routes, psql, text};

fn proxy() -> Proxy {
    Proxy::start(&default_routes(""), &["--handshake-timeout", "2"])
}

/// Sends `bytes`, then waits for the proxy to close; returns what it answered and when it
/// closed.
fn send_and_wait_close(proxy: &Proxy, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let _ = s.write_all(bytes);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    (reply, started.elapsed())
}

fn still_serves(proxy: &Proxy) {
    let out = psql(&format!("host=127.0.0.1 port={} sslmode=require user=postgres dbname=postgres", proxy.port), "SHOW cluster_name", &[]);
    assert_eq!(text(&out).0, "alpha", "{:?}", text(&out));
}

#[test]
fn oversized_garbage_and_truncated_packets_are_closed_quickly() {
    let mut proxy = proxy();
    let cases: [(&str, Vec<u8>, Duration); 5] = [
        ("claimed length over the limit", 1_000_000u32.to_be_bytes().to_vec(), Duration::from_millis(500)),
        ("garbage", b"\x16\x03\x01\x02\x00garbage that is not postgres".to_vec(), Duration::from_millis(500)),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Duration::from_millis(500)),
        ("truncated startup", vec![0, 0, 0, 40, 0, 3, 0, 0, b'u'], Duration::from_millis(2600)),
        ("truncated length", vec![0, 0], Duration::from_millis(2600)),
    ];
    for (name, bytes, within) in cases {
        let (reply, took) = send_and_wait_close(&proxy, &bytes);
        assert!(took < within, "{name}: closed after {took:?}");
        assert!(reply.is_empty(), "{name}: answered {reply:?}");
    }
    assert!(proxy.is_running());
    still_serves(&proxy);
}

#[test]
fn tls_garbage_after_ssl_request_is_closed() {
    let mut proxy = proxy();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&80_877_103u32.to_be_bytes());
    s.write_all(&request).expect("SSLRequest");
    // The garbage goes after the answer, as a client's hello would (sent before it, it is
    // refused as a protocol error: tests/proxy/startup.rs).
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).expect("the answer");
    assert_eq!(&answer, b"S");
    let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2600), "{took:?}");
    assert!(proxy.is_running());
    assert!(proxy.connections("tls_failed") >= 1.0);
    still_serves(&proxy);
}

#[test]
fn a_slowloris_is_cut_at_the_handshake_deadline() {
    let proxy = proxy();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let startup = [0u8, 0, 0, 40, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0, b'x', 0];
    let started = Instant::now();
    let mut closed_at = None;
    // One byte a second, as long as the proxy takes them (bounded: 10 bytes).
    for b in startup.iter().take(10) {
        if s.write_all(&[*b]).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut probe = [0u8; 1];
        s.set_nonblocking(true).expect("nonblocking");
        if matches!(s.read(&mut probe), Ok(0)) {
            closed_at = Some(started.elapsed());
            break;
        }
        s.set_nonblocking(false).expect("blocking");
    }
    let closed_at = closed_at.expect("the proxy closed the connection");
    assert!(closed_at < Duration::from_millis(3500), "closed after {closed_at:?}");
    assert!(proxy.connections("timeout") >= 1.0);
}

#[test]
fn five_thousand_held_connections_are_closed_at_the_deadline_with_bounded_memory() {
    // This process and the proxy each hold 5,000 sockets.
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit").args(["--pid", &me, "--nofile=20000:20000"]).status();
    let mut proxy = proxy();
    let _ = std::process::Command::new("prlimit").args(["--pid", &proxy.pid().to_string(), "--nofile=20000:20000"]).status();
    let baseline = proxy.rss_kib();
    let started = Instant::now();
    let mut held = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect (is the file limit high enough?)");
        let _ = s.write_all(&[0, 0]);
        held.push(s);
    }
    let opened = started.elapsed();
    let peak = proxy.rss_kib();
    for s in &held {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    }
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0u8; 1];
        if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    let all_closed_after = started.elapsed();
    eprintln!("5000 connections: opened in {opened:?}, proxy RSS {baseline} KiB -> {peak} KiB, all closed after {all_closed_after:?}");
    assert_eq!(closed, 5000);
    assert!(all_closed_after < opened + Duration::from_secs(4), "closed after {all_closed_after:?}");
    assert!(peak - baseline < 100 * 1024, "RSS grew by {} KiB", peak - baseline);
    assert!(proxy.is_running());
    drop(held);
    still_serves(&proxy);
}
