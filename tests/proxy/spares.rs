//! Spare backend connections (`--backend-spares`): opened once clients keep coming to a
//! backend, handed to the next clients, and never handed out after the backend closed
//! them: a client then gets a fresh dial, not an error.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::support::{Proxy, default_routes, impatient_server};

/// The routes, plus one to the server that closes silent connections after a second.
fn routes() -> String {
    let gamma = impatient_server();
    default_routes(&format!(
        "    - {{name: gamma-token, match: {{optionsToken: gamma}}, cluster: gamma, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{gamma}'}}\n"
    ))
}

/// Connects through the proxy to `cluster` and asks which server answered.
async fn cluster_name(proxy: &Proxy, cluster: &str) -> Result<String, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(proxy.port).user("postgres").dbname("postgres").options(format!("cluster={cluster}"));
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    let row = client.query_one("SHOW cluster_name", &[]).await?;
    drop(client);
    let _ = connection.await;
    Ok(row.get(0))
}

fn spares(proxy: &Proxy, result: &str) -> f64 {
    proxy.metric(&format!("rwproxy_backend_spares_total{{result=\"{result}\"}}"))
}

/// Waits up to 10 s for the proxy to hold `n` spares.
fn until_held(proxy: &Proxy, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.metric("rwproxy_backend_spares_held") != n {
        assert!(Instant::now() < deadline, "the proxy never held {n} spares: {}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_spare_the_backend_closed_is_never_handed_out_and_the_client_gets_a_fresh_dial() {
    // Spares kept up to 30 s; gamma closes each after 1 s without a startup message.
    let proxy = Proxy::start(&routes(), &["--backend-spares", "2", "--backend-spare-max-age", "30"]);
    // Two clients in a row: the second shows that clients keep coming, and two spares open.
    for _ in 0..2 {
        assert_eq!(cluster_name(&proxy, "gamma").await.expect("connect through the proxy"), "gamma");
    }
    until_held(&proxy, 2.0);
    // Taken while fresh: a spare serves the next client.
    assert_eq!(cluster_name(&proxy, "gamma").await.expect("connect on a spare"), "gamma");
    assert_eq!(spares(&proxy, "used"), 1.0, "{}", proxy.metrics());
    until_held(&proxy, 2.0);
    // gamma closes both spares after its second; then the next client must not get them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(cluster_name(&proxy, "gamma").await.expect("connect after the backend closed the spares"), "gamma");
    let dropped = spares(&proxy, "stale") + spares(&proxy, "closed_after_use");
    assert!(dropped >= 1.0, "the closed spares were not noticed: {}", proxy.metrics());
    assert_eq!(spares(&proxy, "used"), 1.0 + spares(&proxy, "closed_after_use"), "{}", proxy.metrics());
    assert_eq!(proxy.connections("session"), 4.0, "{}", proxy.metrics());
    assert_eq!(proxy.connections("backend_unreachable"), 0.0, "{}", proxy.metrics());
}

#[tokio::test]
async fn spares_are_off_with_zero_and_closed_at_their_maximum_age() {
    let off = Proxy::start(&routes(), &["--backend-spares", "0"]);
    for _ in 0..3 {
        assert_eq!(cluster_name(&off, "alpha").await.expect("connect through the proxy"), "alpha");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(off.metric("rwproxy_backend_spares_held"), 0.0);
    assert!(!off.metrics().contains("rwproxy_backend_spares_total{"), "{}", off.metrics());

    // The default count, kept 1 s (alpha would keep a silent connection 60 s): the proxy
    // closes them itself.
    let on = Proxy::start(&routes(), &["--backend-spare-max-age", "1"]);
    for _ in 0..2 {
        assert_eq!(cluster_name(&on, "alpha").await.expect("connect through the proxy"), "alpha");
    }
    until_held(&on, 2.0);
    let held_since = Instant::now();
    until_held(&on, 0.0);
    assert!(held_since.elapsed() < Duration::from_millis(1500), "spares outlived their maximum age");
    assert_eq!(spares(&on, "expired"), 2.0, "{}", on.metrics());
    assert_eq!(spares(&on, "used"), 0.0, "{}", on.metrics());
}
