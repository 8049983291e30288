//! The proxy's life around its sessions: SIGTERM stops intake and lets open sessions
//! finish within the grace period; certificates are reloaded when their files change.

use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{Proxy, certs, default_routes, psql, text};

#[test]
fn sigterm_stops_intake_and_drains_open_sessions() {
    let mut proxy = Proxy::start(&default_routes(""), &["--grace", "5"]);
    let conninfo = format!("host=127.0.0.1 port={} sslmode=require user=postgres dbname=postgres", proxy.port);
    let running = std::thread::spawn(move || psql(&conninfo, "SELECT pg_sleep(1.5), current_setting('cluster_name')", &[]));
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status().expect("kill").success());
    std::thread::sleep(Duration::from_millis(200));
    // No new connections...
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err(), "still accepting after SIGTERM");
    // ...but the open session finishes its query.
    let out = running.join().expect("psql thread");
    assert_eq!(text(&out).0, "|alpha", "{:?}", text(&out));
    // And the proxy exits once it has drained, well before the grace period ends.
    while proxy.is_running() {
        assert!(signalled.elapsed() < Duration::from_secs(4), "did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_session_outliving_the_grace_period_is_closed() {
    let mut proxy = Proxy::start(&default_routes(""), &["--grace", "1"]);
    let conninfo = format!("host=127.0.0.1 port={} sslmode=require user=postgres dbname=postgres", proxy.port);
    let running = std::thread::spawn(move || psql(&conninfo, "SELECT pg_sleep(20)", &[]));
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status().expect("kill").success());
    while proxy.is_running() {
        assert!(signalled.elapsed() < Duration::from_secs(3), "grace period not enforced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = running.join().expect("psql thread");
    assert!(!out.status.success(), "the session was cut: {:?}", text(&out));
}

#[test]
fn certificates_are_reloaded_when_their_files_change() {
    // A second pair, for names the shared test certificate does not cover, so the proxy
    // picks it by SNI; replacing its files must change what the proxy serves.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = certs().ca.display().to_string();
    let ca_key = certs().ca.with_file_name("ca.key").display().to_string();
    let issue = |cn: &str| {
        let script = format!(
            "set -e; cd {d}
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout new.key -out new.csr -subj /CN={cn} 2>/dev/null
             printf 'subjectAltName=DNS:*.reload.test\\n' > ext
             openssl x509 -req -in new.csr -CA {ca} -CAkey {ca_key} -CAcreateserial -out new.crt -days 2 -extfile ext 2>/dev/null
             mv new.key key.pem; mv new.crt cert.pem",
            d = dir.path().display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    issue("first.reload.test");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let proxy = Proxy::start(&default_routes(""), &["--tls-cert", cert.to_str().expect("utf8"), "--tls-key", key.to_str().expect("utf8")]);
    let served = |name: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{} -starttls postgres -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -subject",
                proxy.port
            ))
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(served("x.reload.test").contains("CN = first.reload.test"), "{}", served("x.reload.test"));
    assert!(served("alpha.sql.test").contains("CN = sql.test"), "{}", served("alpha.sql.test"));

    issue("renewed.reload.test");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served("x.reload.test").contains("renewed.reload.test") {
        assert!(Instant::now() < deadline, "still serving {}", served("x.reload.test"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Sessions work with the new certificate (no route matches this SNI name, so the
    // database name routes it).
    let out = psql(
        &format!("host=x.reload.test hostaddr=127.0.0.1 port={} sslmode=require user=postgres dbname=postgres", proxy.port),
        "SHOW cluster_name",
        &[],
    );
    assert_eq!(text(&out).0, "alpha", "{:?}", text(&out));
}
