//! TLS from the proxy to the backend (`backendTls: verify-full`): the beta server accepts
//! TLS with a certificate from the test CA for 127.0.0.1, and its role `tlsuser` may only
//! log in over TLS, so a session that works proves the proxy's leg was encrypted.

use super::support::{Proxy, certs, default_routes, psql, servers, text};

fn routes() -> String {
    let (a, b) = (servers().alpha, servers().beta);
    default_routes(&format!(
        "    - {{name: beta-tls, match: {{optionsToken: beta-tls}}, cluster: beta, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{b}', backendTls: verify-full}}
    - {{name: beta-wrong-name, match: {{optionsToken: beta-by-name}}, cluster: beta, allowedCidrs: [127.0.0.0/8], backend: 'localhost:{b}', backendTls: verify-full}}
    - {{name: alpha-tls, match: {{optionsToken: alpha-tls}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{a}', backendTls: verify-full}}
"
    ))
}

fn via(proxy: &Proxy, token: &str, sql: &str) -> (String, String) {
    let conninfo = format!("host=127.0.0.1 port={} sslmode=require user=tlsuser dbname=postgres", proxy.port);
    text(&psql(&conninfo, sql, &[("PGOPTIONS", &format!("cluster={token}"))]))
}

#[test]
fn a_verify_full_route_speaks_tls_to_the_backend_and_checks_its_certificate() {
    let ca = certs().ca.display().to_string();
    let proxy = Proxy::start(&routes(), &["--backend-ca", &ca]);
    let sql = "SELECT current_setting('cluster_name') || ' ' || ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let (out, err) = via(&proxy, "beta-tls", sql);
    assert_eq!(out, "beta true", "{err}");

    // The same server over the plain route: the backend itself refuses tlsuser.
    let (out, err) = via(&proxy, "beta", sql);
    assert!(out.is_empty() && err.contains("pg_hba.conf rejects connection") && err.contains("no encryption"), "{out} / {err}");

    // A backend that does not speak TLS, and a certificate that does not name the host
    // dialled, are refused before any startup message is sent.
    for token in ["alpha-tls", "beta-by-name"] {
        let (out, err) = via(&proxy, token, "SELECT 1");
        assert!(out.is_empty() && err.contains("the cluster is not reachable right now"), "{token}: {out} / {err}");
    }
    for route in ["alpha-tls", "beta-wrong-name"] {
        assert_eq!(proxy.metric(&format!("rwproxy_connections_total{{outcome=\"backend_tls_failed\",route=\"{route}\"}}")), 1.0);
    }
}

#[test]
fn without_a_backend_ca_a_verify_full_route_is_refused() {
    let proxy = Proxy::start(&routes(), &[]);
    let (out, err) = via(&proxy, "beta-tls", "SELECT 1");
    assert!(out.is_empty() && err.contains("the cluster is not reachable right now"), "{out} / {err}");
    assert_eq!(proxy.connections("backend_tls_failed"), 1.0);
}
