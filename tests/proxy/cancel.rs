//! Cancel routing: the key the client got from the proxy cancels its query on the right
//! backend within a second; a forged key cancels nothing.

use std::io::Write;
use std::time::{Duration, Instant};

use super::support::{Proxy, default_routes};

async fn connect(proxy: &Proxy, host: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config.host(host).hostaddr("127.0.0.1".parse().expect("ip")).port(proxy.port).user("postgres").dbname("postgres");
    let (client, connection) = config.connect(super::support::tls_connector()).await.expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn the_clients_key_cancels_its_query_within_a_second() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    for host in ["alpha.sql.test", "beta.sql.test"] {
        let client = connect(&proxy, host).await;
        let token = client.cancel_token();
        let started = Instant::now();
        let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(super::support::tls_connector()).await.expect("cancel sent");
        let result = tokio::time::timeout(Duration::from_secs(5), query).await.expect("query ended").expect("task");
        let err = result.expect_err("the query was cancelled");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{err}");
        assert!(started.elapsed() < Duration::from_millis(1300), "{host}: took {:?}", started.elapsed());
    }
    assert!(proxy.connections("cancel") >= 2.0);
}

#[tokio::test]
async fn a_forged_key_cancels_nothing() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let client = connect(&proxy, "alpha.sql.test").await;
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1.5)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Keys nobody was given, sent as raw CancelRequests.
    for i in 0..5u32 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        let mut packet = 16u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80_877_102u32.to_be_bytes());
        packet.extend_from_slice(&(1000 + i).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        s.write_all(&packet).expect("send");
    }
    let result = tokio::time::timeout(Duration::from_secs(10), query).await.expect("ended").expect("task");
    assert!(result.is_ok(), "the query ran to the end: {result:?}");
    assert!(proxy.connections("cancel_refused") >= 5.0);
}
