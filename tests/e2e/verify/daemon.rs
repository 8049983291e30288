//! `byoc run`, the real binary, from a signed push to applied clusters and published routes:
//! a bare repository served over `file://`, commits signed with ssh-keygen keys, the
//! Kubernetes API double over HTTP with a stand-in for the operator, and the route table
//! read back with RWProxy's own loader from the publish directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};

use crate::kube::support::{double, operator};
use crate::support::SpawnTied;

/// The daemon process; SIGKILLed if a test ends without stopping it.
pub(super) struct Daemon(pub(super) std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn request(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

pub(super) fn status(port: u16) -> serde_json::Value {
    let (code, body) = request(port, "GET", "/status", &[], b"");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

pub(super) fn condition(s: &serde_json::Value, kind: &str) -> (String, String) {
    let c = s["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).cloned().unwrap_or_default();
    (c["status"].as_str().unwrap_or("").to_owned(), c["message"].as_str().unwrap_or("").to_owned())
}

/// Polls `/status` until `done` holds (bounded: 60 s).
pub(super) fn wait_for(port: u16, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(port);
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn webhook(port: u16, secret: &[u8], delivery: &str) -> u16 {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = byoc::run::webhook::github_signature(secret, body);
    request(port, "POST", "/hooks/git", &[("X-Hub-Signature-256", sig), ("X-GitHub-Delivery", delivery.to_owned())], body).0
}

pub(super) fn routes(publish: &Path) -> Vec<String> {
    let table = rwproxy::routes::load_dir(&publish.join("current")).expect("published table loads");
    let mut names: Vec<String> = table.routes.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

pub(super) const REPORTS: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: reports\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    frontend: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    compute: {replicas: 1, cpu: \"1\", memory: 4Gi}\n    compactor: {replicas: 1, cpu: \"1\", memory: 2Gi}\n  stateStore:\n    prefix: reports\n  deletionPolicy: Delete\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_is_applied_and_published_and_refusals_change_nothing() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());

    // The signed repository, its bare remote, the kubeconfig and the webhook secret, as
    // every daemon test sets them up.
    let super::daemon_ha::Repo { mut s, work, first } = super::daemon_ha::Repo::new(api_addr);
    let remote = work.join("remote.git");
    let port = free_port();
    std::fs::write(
        work.join("reconciler.yaml"),
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: test}}\nspec:\n  repository: {{url: \"file://{}\", branch: main}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{dir: daemon-state}}\n  publishDir: publish\n  cacheDir: cache\n  listen: \"127.0.0.1:{port}\"\n  interval: 1h\n  webhook: {{secretFile: webhook-secret}}\n  kubernetes: {{kubeconfig: kubeconfig}}\n",
            remote.display()
        ),
    )
    .expect("config");
    let child = crate::support::tied_byoc()
        .args(["run", "--config", "reconciler.yaml"])
        .current_dir(&work)
        .stderr(std::fs::File::create(work.join("daemon.log")).expect("log"))
        .spawn_tied()
        .expect("byoc run starts");
    let mut daemon = Daemon(child);

    // The first reconcile: both example clusters applied, the routes published.
    let start = Instant::now();
    while request_ok(port, "/readyz").is_none_or(|c| c != 200) {
        assert!(start.elapsed() < Duration::from_secs(60), "never ready: {}", log(&work));
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status(port);
    assert_eq!(st["lastAppliedRevision"], format!("main@sha1:{first}"), "{st:#}\n{}", log(&work));
    assert_eq!(condition(&st, "Ready").0, "True");
    let publish = work.join("publish");
    assert_eq!(routes(&publish), ["analytics-sni", "analytics-token", "ingest-db"]);
    let rw: Api<DynamicObject> = Api::all_with(d.client(), &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
    let names = |list: kube::core::ObjectList<DynamicObject>| list.items.into_iter().filter_map(|o| o.metadata.name).collect::<Vec<_>>();
    assert_eq!(names(rw.list(&Default::default()).await.expect("list")), ["analytics", "ingest"]);

    // A signed push adding a cluster and its route; the webhook wakes the daemon.
    s.write("env/clusters/reports.yaml", REPORTS);
    let routes_file = std::fs::read_to_string(s.repo().join("env/routes.yaml")).expect("routes");
    s.write(
        "env/routes.yaml",
        &format!("{routes_file}    - name: reports-db\n      match: {{database: reports}}\n      cluster: reports\n      allowedCidrs: [10.20.0.0/16]\n"),
    );
    let added = s.commit(Some("bob"), "add the reports cluster");
    s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(port, b"hook-s3cret", "delivery-1"), 202);
    let st = wait_for(port, "the push is applied", |st| st["lastAppliedRevision"] == format!("main@sha1:{added}"));
    assert_eq!(condition(&st, "Ready").0, "True", "{st:#}");
    assert_eq!(names(rw.list(&Default::default()).await.expect("list")), ["analytics", "ingest", "reports"]);
    assert_eq!(routes(&publish), ["analytics-sni", "analytics-token", "ingest-db", "reports-db"]);

    // A webhook with the wrong signature: 401, counted, nothing fetched.
    let reconciles = status(port)["reconciles"].as_u64().expect("count");
    assert_eq!(webhook(port, b"wrong", "delivery-2"), 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(port)["reconciles"].as_u64(), Some(reconciles), "a refused webhook wakes nothing");
    let (_, metrics) = request(port, "GET", "/metrics", &[], b"");
    assert!(metrics.contains("byoc_webhooks_total{verdict=\"bad_signature\"} 1"), "{metrics}");

    // An unsigned push: refused, nothing applied, the routes unchanged, the status names it.
    s.write("env/clusters/reports.yaml", &REPORTS.replace("compute: {replicas: 1,", "compute: {replicas: 4,"));
    let unsigned = s.commit(None, "unsigned resize");
    s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(port, b"hook-s3cret", "delivery-3"), 202);
    let st = wait_for(port, "the unsigned push is refused", |st| condition(st, "SourceVerified").0 == "False");
    let (_, why) = condition(&st, "SourceVerified");
    assert!(why.contains(&unsigned) && why.contains("not signed"), "{why}");
    assert_eq!(st["lastAppliedRevision"], format!("main@sha1:{added}"));
    assert_eq!(routes(&publish), ["analytics-sni", "analytics-token", "ingest-db", "reports-db"]);

    // The unsigned commit is taken back by a force-push to the verified tip, and the
    // addition is reverted with a signed commit: the route goes, then the cluster.
    s.git(&["reset", "-q", "--hard", &added]);
    let bob = s.key_path("bob");
    s.git(&["-c", &format!("user.signingkey={bob}"), "revert", "--no-edit", "-S", &added]);
    let reverted = s.git(&["rev-parse", "HEAD"]);
    s.git(&["push", "-q", "--force", "origin", "main"]);
    assert_eq!(webhook(port, b"hook-s3cret", "delivery-4"), 202);
    wait_for(port, "the revert is applied", |st| st["lastAppliedRevision"] == format!("main@sha1:{reverted}"));
    assert_eq!(routes(&publish), ["analytics-sni", "analytics-token", "ingest-db"]);
    assert_eq!(names(rw.list(&Default::default()).await.expect("list")), ["analytics", "ingest"]);

    // SIGTERM: the daemon stops cleanly.
    let pid = daemon.0.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let start = Instant::now();
    let code = loop {
        if let Some(code) = daemon.0.try_wait().expect("wait") {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}\n{}", log(&work));
}

pub(super) fn request_ok(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn log(work: &Path) -> String {
    std::fs::read_to_string(work.join("daemon.log")).unwrap_or_default()
}

#[test]
fn a_bad_configuration_exits_1_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {name: t}\nspec:\n  repository: {url: \"file:///nowhere\"}\n  environment: env\n  signingPolicy: missing-policy.yaml\n  stateStore: {dir: state}\n  publishDir: publish\n  cacheDir: cache\n  webhook: {secretFile: missing-secret}\n  surprise: true\n",
    )
    .expect("write");
    let run = crate::support::byoc(dir.path(), &["run", "--config", "bad.yaml"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("bad.yaml:12:3: error: unknown field `surprise`"), "{}", run.stderr);
    let fixed = std::fs::read_to_string(dir.path().join("bad.yaml")).expect("read").replace("  surprise: true\n", "");
    std::fs::write(dir.path().join("bad.yaml"), fixed).expect("write");
    let run = crate::support::byoc(dir.path(), &["run", "--config", "bad.yaml"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("signingPolicy does not load"), "{}", run.stderr);
    assert!(run.stderr.contains("webhook.secretFile missing-secret cannot be read"), "{}", run.stderr);
    assert!(!dir.path().join("state").exists() && !dir.path().join("cache").exists(), "nothing started");
}
