//! The first packet read in one read (tests/bench/proxy.sh, mode connect): a startup
//! message that arrives in pieces still works, bytes a client pipelines behind its
//! startup message reach the backend, bytes pipelined behind an SSLRequest are refused
//! before any answer, and a backend that refuses the connect is reported to the client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rwproxy::protocol;

use super::support::{Proxy, default_routes, free_port};

fn startup() -> Vec<u8> {
    protocol::startup_message(&[("user".to_owned(), "postgres".to_owned()), ("database".to_owned(), "postgres".to_owned())])
}

fn query(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&(u32::try_from(sql.len() + 5).expect("short query")).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // Each write its own segment, so a pause splits the packet on the wire too.
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads backend messages until ReadyForQuery; returns them as (type, body).
fn until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    loop {
        let mut header = [0u8; 5];
        s.read_exact(&mut header).expect("a message from the proxy");
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).expect("the message body");
        let tag = header[0];
        messages.push((tag, body));
        if tag == b'Z' || tag == b'E' {
            return messages;
        }
    }
}

/// The value of the first DataRow's only column.
fn first_value(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = messages.iter().find(|(t, _)| *t == b'D').expect("a data row");
    String::from_utf8_lossy(&row[6..]).into_owned()
}

#[test]
fn a_startup_message_split_across_segments_with_a_pause_is_served() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let packet = startup();
    // In the length word, in the protocol version, and in a parameter.
    for split in [2, 6, 20] {
        let mut s = connect(&proxy);
        s.write_all(&packet[..split]).expect("first part");
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&packet[split..]).expect("second part");
        let auth = until_ready(&mut s);
        assert_eq!(auth.last().map(|m| m.0), Some(b'Z'), "split at {split}: {auth:?}");
        s.write_all(&query("SHOW cluster_name")).expect("query");
        assert_eq!(first_value(&until_ready(&mut s)), "alpha", "split at {split}");
    }
    // An SSLRequest in two pieces is answered as one.
    let mut s = connect(&proxy);
    let ssl_request = [0u8, 0, 0, 8, 4, 210, 22, 47];
    s.write_all(&ssl_request[..3]).expect("first part");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(&ssl_request[3..]).expect("second part");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).expect("the answer");
    assert_eq!(&answer, b"S");
}

#[test]
fn a_query_pipelined_behind_the_startup_message_reaches_the_backend() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let mut s = connect(&proxy);
    // One write: the proxy's first read takes the startup message and the query with it.
    let mut bytes = startup();
    bytes.extend(query("SHOW cluster_name"));
    s.write_all(&bytes).expect("startup and query");
    let auth = until_ready(&mut s);
    assert_eq!(auth.last().map(|m| m.0), Some(b'Z'), "{auth:?}");
    assert_eq!(first_value(&until_ready(&mut s)), "alpha");
}

#[test]
fn bytes_pipelined_behind_an_ssl_request_are_refused_before_any_answer() {
    let mut proxy = Proxy::start(&default_routes(""), &[]);
    let mut s = connect(&proxy);
    let mut bytes = vec![0u8, 0, 0, 8, 4, 210, 22, 47];
    // A client hello or a startup message in the clear: either could be an injection.
    bytes.extend(startup());
    let started = Instant::now();
    s.write_all(&bytes).expect("request and data");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply.is_empty(), "answered {reply:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    assert_eq!(proxy.connections("protocol_error"), 1.0);
    assert!(proxy.is_running());
}

#[test]
fn a_backend_that_refuses_the_connect_is_reported_to_the_client() {
    // A port nothing listens on: the connect is refused at once.
    let closed = free_port();
    let routes = default_routes(&format!(
        "    - {{name: down-db, match: {{database: down}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{closed}'}}\n"
    ));
    let proxy = Proxy::start(&routes, &[]);
    let mut s = connect(&proxy);
    s.write_all(&protocol::startup_message(&[("user".to_owned(), "postgres".to_owned()), ("database".to_owned(), "down".to_owned())]))
        .expect("startup");
    let reply = until_ready(&mut s);
    let (tag, body) = reply.last().expect("an answer");
    assert_eq!(*tag, b'E');
    assert!(body.windows(6).any(|w| w == b"C08006"), "{body:?}");
    assert_eq!(proxy.connections("backend_unreachable"), 1.0);
}
