//! Routing through the real proxy: SNI over TLS (psql and tokio-postgres), the options
//! token and the database name each land on the right server; password roles
//! authenticate against the backend through the proxy.

use super::support::{Proxy, default_routes, psql, servers, text, tls_connector};

fn conninfo(proxy: &Proxy, host: &str, rest: &str) -> String {
    format!("host={host} hostaddr=127.0.0.1 port={} sslmode=require {rest}", proxy.port)
}

#[test]
fn psql_with_sni_over_tls_lands_on_the_sni_route() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let out = psql(&conninfo(&proxy, "alpha.sql.test", "user=postgres dbname=postgres"), "SHOW cluster_name", &[]);
    assert_eq!(text(&out).0, "alpha", "{:?}", text(&out));
    // A wildcard route: any other single label under sql.test goes to beta.
    let out = psql(
        &conninfo(&proxy, "anything.sql.test", "user=postgres dbname=postgres"),
        "SELECT current_setting('cluster_name') || ' ' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())::text",
        &[],
    );
    assert_eq!(text(&out).0, "beta false", "TLS ends at the proxy: {:?}", text(&out));
}

#[test]
fn psql_options_token_and_database_name() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    // No SNI (connecting by address): the token decides, and is stripped before the
    // backend sees it (PostgreSQL, like RisingWave, would reject an unknown option).
    let by_ip = format!("host=127.0.0.1 port={} sslmode=require user=postgres", proxy.port);
    let out = psql(&format!("{by_ip} dbname=postgres"), "SHOW cluster_name", &[("PGOPTIONS", "cluster=beta")]);
    assert_eq!(text(&out).0, "beta", "{:?}", text(&out));
    let out = psql(&format!("{by_ip} dbname=postgres"), "SHOW search_path", &[("PGOPTIONS", "cluster=beta -c search_path=routed")]);
    assert_eq!(text(&out).0, "routed", "other options pass through: {:?}", text(&out));
    let out = psql(&format!("{by_ip} dbname=ingest"), "SELECT current_setting('cluster_name') || '/' || current_database()", &[]);
    assert_eq!(text(&out).0, "beta/ingest", "{:?}", text(&out));
    let out = psql(&format!("{by_ip} dbname=postgres"), "SHOW cluster_name", &[]);
    assert_eq!(text(&out).0, "alpha", "{:?}", text(&out));
}

#[tokio::test]
async fn tokio_postgres_over_tls_with_sni_token_and_database() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let cases = [
        ("alpha.sql.test", "postgres", None, "alpha"),
        ("beta.sql.test", "postgres", None, "beta"),
        ("sql.test", "postgres", Some("cluster=beta"), "beta"),
        ("sql.test", "ingest", None, "beta"),
        ("sql.test", "postgres", Some("cluster=alpha"), "alpha"),
    ];
    for (host, db, options, want) in cases {
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .hostaddr("127.0.0.1".parse().expect("ip"))
            .port(proxy.port)
            .user("postgres")
            .dbname(db)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        if let Some(o) = options {
            config.options(o);
        }
        let (client, connection) = config.connect(tls_connector()).await.unwrap_or_else(|e| panic!("{host}/{db}/{options:?}: {e}"));
        tokio::spawn(connection);
        let row = client.query_one("SHOW cluster_name", &[]).await.expect("query");
        assert_eq!(row.get::<_, String>(0), want, "{host}/{db}/{options:?}");
    }
}

#[test]
fn sni_and_token_naming_different_clusters_is_refused() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let out = psql(&conninfo(&proxy, "alpha.sql.test", "user=postgres dbname=postgres"), "SELECT 1", &[("PGOPTIONS", "cluster=beta")]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("the host name and the cluster option name different clusters"), "{:?}", text(&out));
}

#[test]
fn a_client_outside_the_allowlist_and_an_unknown_route_are_refused() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let by_ip = format!("host=127.0.0.1 port={} sslmode=require user=postgres", proxy.port);
    let out = psql(&format!("{by_ip} dbname=denied"), "SELECT 1", &[]);
    assert!(text(&out).1.contains("connections from this address are not allowed"), "{:?}", text(&out));
    let out = psql(&format!("{by_ip} dbname=elsewhere"), "SELECT 1", &[]);
    assert!(text(&out).1.contains("no route for this connection"), "{:?}", text(&out));
    assert!(proxy.connections("refused") >= 2.0);
}

#[test]
fn md5_and_scram_roles_authenticate_through_the_proxy_and_a_wrong_password_fails() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    for (user, password) in [("md5user", "md5pass"), ("scramuser", "scrampass")] {
        for host in ["alpha.sql.test", "beta.sql.test"] {
            let out = psql(
                &conninfo(&proxy, host, &format!("user={user} dbname=postgres")),
                "SELECT current_user || '@' || current_setting('cluster_name')",
                &[("PGPASSWORD", password)],
            );
            let want = format!("{user}@{}", host.split('.').next().expect("label"));
            assert_eq!(text(&out).0, want, "{:?}", text(&out));
        }
        let out =
            psql(&conninfo(&proxy, "alpha.sql.test", &format!("user={user} dbname=postgres")), "SELECT 1", &[("PGPASSWORD", "wrong")]);
        assert!(!out.status.success());
        assert!(
            text(&out).1.contains(&format!("password authentication failed for user \"{user}\"")),
            "the backend's own refusal: {:?}",
            text(&out)
        );
    }
    assert!(proxy.connections("auth_failed") >= 2.0);
    // Both wrong passwords went through alpha's SNI route, and the metrics say so.
    assert_eq!(proxy.metric("rwproxy_connections_total{outcome=\"auth_failed\",route=\"alpha-sni\"}"), 2.0);
    let _ = servers();
}

#[tokio::test]
async fn sessions_are_counted_by_route_and_bytes_while_the_session_is_still_open() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let mut config = tokio_postgres::Config::new();
    config.host("beta.sql.test").hostaddr("127.0.0.1".parse().expect("ip")).port(proxy.port).user("postgres").dbname("postgres");
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = config.connect(tls_connector()).await.expect("connect");
    tokio::spawn(connection);
    let row = client.query_one("SELECT repeat('x', 200000)", &[]).await.expect("query");
    assert_eq!(row.get::<_, String>(0).len(), 200_000);
    // The session is open: its bytes are already in the metrics, on its route.
    let down = proxy.metric("rwproxy_bytes_total{direction=\"backend_to_client\",route=\"beta-wildcard\"}");
    let up = proxy.metric("rwproxy_bytes_total{direction=\"client_to_backend\",route=\"beta-wildcard\"}");
    assert!(down >= 200_000.0 && up > 0.0, "down {down}, up {up}:\n{}", proxy.metrics());
    assert_eq!(proxy.metric("rwproxy_connections_total{outcome=\"session\",route=\"beta-wildcard\"}"), 1.0);
    drop(client);
}
