//! Reloads: the route table is republished 100 times while pgbench runs through the proxy,
//! with no failed transaction; a broken table is refused and routing stays as it was.

use std::process::Command;
use std::time::Duration;

use super::support::{Proxy, default_routes, psql, servers, text};

#[test]
fn republishing_routes_100_times_under_pgbench_fails_no_transaction() {
    let s = servers();
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", &s.alpha.to_string(), "-U", "postgres", "postgres"])
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));

    let proxy = Proxy::start(&default_routes(""), &[]);
    let bench = Command::new("pgbench")
        .args(["-n", "-S", "-c", "4", "-j", "2", "-T", "6", "-h", "127.0.0.1", "-p", &proxy.port.to_string(), "-U", "postgres", "postgres"])
        .output();
    let bench = std::thread::scope(|scope| {
        let runner = scope.spawn(|| bench);
        // 100 revisions, each a different table (an extra route that changes every time).
        for i in 0..100 {
            let extra = format!("    - {{name: extra-{i}, match: {{database: extra{i}}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:1'}}\n");
            proxy.publish(&default_routes(&extra));
            std::thread::sleep(Duration::from_millis(40));
        }
        runner.join().expect("pgbench thread")
    })
    .expect("pgbench runs");
    let out = String::from_utf8_lossy(&bench.stdout);
    assert!(bench.status.success(), "{out}\n{}", String::from_utf8_lossy(&bench.stderr));
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.parse().ok())
        .expect("count");
    assert!(processed > 1000, "{out}");
    let reloads = proxy.metric("rwproxy_route_reloads_total{result=\"ok\"}");
    eprintln!("pgbench through the proxy: {processed} transactions, 0 failed, {reloads} route reloads during the run");
    // Publishes 40 ms apart, reloads after a 20 ms settle: nearly every revision is loaded.
    assert!(reloads >= 50.0, "only {reloads} reloads:\n{}", proxy.metrics());
}

#[test]
fn a_broken_table_is_refused_and_routing_stays_as_it_was() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let by_ip = format!("host=127.0.0.1 port={} sslmode=require user=postgres", proxy.port);
    let before = proxy.metric("rwproxy_route_reloads_total{result=\"failed\"}");
    // A route to a cluster with an invalid name, plus a duplicate: validation fails.
    proxy.publish(&default_routes("    - {name: alpha-sni, match: {database: x}, cluster: Bad_Name, allowedCidrs: [127.0.0.0/8]}\n"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.metric("rwproxy_route_reloads_total{result=\"failed\"}") <= before {
        assert!(std::time::Instant::now() < deadline, "no failed reload counted:\n{}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = psql(&format!("{by_ip} dbname=ingest"), "SHOW cluster_name", &[]);
    assert_eq!(text(&out).0, "beta", "{:?}", text(&out));
    // A good table afterwards is taken: the ingest route now goes to alpha.
    let (a, b) = (servers().alpha, servers().beta);
    let route = |cluster: &str, port: u16| {
        format!(
            "{{name: ingest-db, match: {{database: ingest}}, cluster: {cluster}, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{port}'}}"
        )
    };
    let swapped = default_routes("").replace(&route("beta", b), &route("alpha", a));
    assert_ne!(swapped, default_routes(""));
    proxy.publish(&swapped);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = psql(&format!("{by_ip} dbname=ingest"), "SHOW cluster_name", &[]);
        if text(&out).0 == "alpha" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the good table was not taken: {:?}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 5 s for the `ok` reload count to pass `above`; returns it.
fn reloads_after(proxy: &Proxy, above: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = proxy.metric("rwproxy_route_reloads_total{result=\"ok\"}");
        if now > above || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn only_the_routes_and_their_symlink_trigger_a_reload_and_a_swap_moves_the_watch() {
    let proxy = Proxy::start(&default_routes(""), &[]);
    let dir = proxy.published_dir();
    let start = proxy.metric("rwproxy_route_reloads_total{result=\"ok\"}");
    // Busy neighbours of the symlink (another program's files and subdirectories) are not
    // the routes: 200 writes there reload nothing.
    std::fs::create_dir(dir.join("neighbour")).expect("mkdir");
    for i in 0..100 {
        std::fs::write(dir.join("neighbour").join(format!("log-{i}")), "x").expect("write");
        std::fs::write(dir.join(format!("stray-{i}")), "x").expect("write");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(proxy.metric("rwproxy_route_reloads_total{result=\"ok\"}"), start, "writes beside the routes reloaded them");

    // A swap is seen, and afterwards an edit inside the new revision is seen too: the watch
    // followed the symlink.
    proxy.publish(&default_routes(""));
    let swapped = reloads_after(&proxy, start);
    assert!(swapped > start, "the swap was not seen");
    let extra = "    - {name: edited, match: {database: edited}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:1'}\n";
    std::fs::write(dir.join("current").join("routes.yaml"), default_routes(extra)).expect("edit in place");
    assert!(reloads_after(&proxy, swapped) > swapped, "an edit inside the new revision was not seen");
    let out = psql(&format!("host=127.0.0.1 port={} sslmode=require user=postgres dbname=edited", proxy.port), "SELECT 1", &[]);
    assert!(text(&out).1.contains("the cluster is not reachable right now"), "the edited route is in use: {:?}", text(&out));
}

/// The sidecar pod starts rwproxy before the reconciler's first publish: with nothing at
/// `--routes` yet it serves (refusing every connection) and picks up the first publish,
/// rather than exiting and being restarted with backoff.
#[test]
fn a_proxy_started_before_the_first_publish_routes_once_it_appears() {
    use std::io::{Read, Write};
    let c = super::support::certs();
    let root = tempfile::tempdir().expect("tempdir");
    let (port, admin) = (super::support::free_port(), super::support::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .arg("--routes")
        .arg(root.path().join("current"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin", &format!("127.0.0.1:{admin}")])
        .arg("--tls-cert")
        .arg(&c.cert)
        .arg("--tls-key")
        .arg(&c.key)
        .env("RWPROXY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start rwproxy");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let reloads = || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin)) else { return -1.0 };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines()
            .find_map(|l| l.strip_prefix("rwproxy_route_reloads_total{result=\"ok\"}").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    let start = std::time::Instant::now();
    while reloads() < 0.0 {
        assert!(child.0.try_wait().expect("wait").is_none(), "rwproxy exited with nothing published");
        assert!(start.elapsed() < Duration::from_secs(10), "rwproxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = psql(&format!("host=127.0.0.1 port={port} sslmode=require user=postgres dbname=postgres"), "SELECT 1", &[]);
    assert!(!refused.status.success(), "nothing is routed before the first publish: {:?}", text(&refused));
    // The first publish, as the reconciler makes it: a revision directory, then the symlink.
    let rev = root.path().join("rev-0");
    std::fs::create_dir(&rev).expect("mkdir");
    std::fs::write(rev.join("routes.yaml"), default_routes("")).expect("write");
    std::os::unix::fs::symlink(&rev, root.path().join("current.tmp")).expect("symlink");
    std::fs::rename(root.path().join("current.tmp"), root.path().join("current")).expect("swap");
    while reloads() < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the first publish was not picked up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = psql(&format!("host=127.0.0.1 port={port} sslmode=require user=postgres dbname=postgres"), "SELECT 1", &[]);
    assert_eq!(text(&out).0, "1", "{:?}", text(&out));
}
