//! `byoc run` (the real binary) when the source misbehaves, and when nothing changed: a
//! remote that goes away (`SourceStale` after `staleAfter`, cleared when it returns), a
//! rewound branch, refused commits (a key outside the policy, an invalid spec on a signed
//! commit), and no-op reconciles. Each refusal: nothing written at the Kubernetes API double
//! (writes counted there), the publish directory's `current` unchanged, and `/status`
//! naming the commit and the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

use super::daemon::{Daemon, request, status, wait_for, webhook};
use super::daemon_ha::Repo;
use crate::kube::support::{Operator, double, operator};

/// A double on a loopback port with the stand-in operator and the daemons' namespace.
struct Cluster {
    d: kube_double::Double,
    addr: std::net::SocketAddr,
    _server: tokio::task::JoinHandle<()>,
    _op: Operator,
}

async fn cluster() -> Cluster {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = d.serve(listener);
    let op = operator(&d.client());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "byoc-system"}})).expect("namespace");
    Api::<Namespace>::all(d.client()).create(&PostParams::default(), &ns).await.expect("namespace");
    Cluster { d, addr, _server: server, _op: op }
}

/// Writes the double answered, leases aside.
fn writes(d: &kube_double::Double) -> usize {
    d.writes().iter().filter(|r| !r.uri.contains("/leases")).count()
}

fn current(publish: &Path) -> std::path::PathBuf {
    std::fs::read_link(publish.join("current")).expect("current is published")
}

fn condition(st: &serde_json::Value, kind: &str) -> (String, String, String) {
    let c = st["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).cloned().unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    (s("status"), s("reason"), s("message"))
}

fn metrics(port: u16) -> String {
    request(port, "GET", "/metrics", &[], b"").1
}

fn metric(port: u16, name: &str) -> f64 {
    metrics(port)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(-1.0)
}

/// Starts replica `a` and waits for the first revision to be applied.
fn start(repo: &Repo, extra: &str) -> (Daemon, u16) {
    let port = super::daemon::free_port();
    let daemon = repo.start("a", port, extra);
    let first = format!("main@sha1:{}", repo.first);
    let start = Instant::now();
    while super::daemon::request_ok(port, "/healthz") != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(30), "never up:\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(port, "the first revision is applied", |st| st["lastAppliedRevision"] == first);
    (daemon, port)
}

/// Wakes the daemon until `done` holds on its status (bounded: 30 s).
fn wake_until(port: u16, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    for i in 0.. {
        let st = status(port);
        if done(&st) {
            return st;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: {st:#}");
        assert_eq!(webhook(port, b"hook-s3cret", &format!("{what}-{i}")), 202);
        std::thread::sleep(Duration::from_millis(300));
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_goes_away_makes_the_source_stale_and_its_return_clears_it() {
    let c = cluster().await;
    let repo = Repo::new(c.addr);
    let (_daemon, port) = start(&repo, "  staleAfter: 1s\n");
    let before = writes(&c.d);
    let published = current(&repo.publish("a"));

    let remote = repo.work.join("remote.git");
    let gone = repo.work.join("remote.git.moved");
    std::fs::rename(&remote, &gone).expect("the remote goes away");
    let st = wake_until(port, "stale", |st| condition(st, "SourceStale").0 == "True");
    let (_, reason, message) = condition(&st, "SourceStale");
    assert_eq!(reason, "FetchFailing", "{st:#}");
    assert!(message.contains("no successful fetch for"), "{message}");
    assert_eq!(st["lastError"]["stage"], "fetch", "{st:#}");
    assert_eq!(metric(port, "byoc_source_stale"), 1.0, "{}", metrics(port));
    assert!(metric(port, "byoc_fetch_failures_total") >= 1.0, "{}", metrics(port));
    assert_eq!((writes(&c.d), current(&repo.publish("a"))), (before, published.clone()), "nothing moved");

    std::fs::rename(&gone, &remote).expect("the remote returns");
    let st = wake_until(port, "fresh", |st| condition(st, "SourceStale").0 == "False");
    assert_eq!(condition(&st, "Ready").0, "True", "{st:#}");
    assert!(st["lastError"].is_null(), "{st:#}");
    assert_eq!(metric(port, "byoc_source_stale"), 0.0, "{}", metrics(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_branch_and_refused_commits_apply_nothing_and_the_status_names_them() {
    let c = cluster().await;
    let mut repo = Repo::new(c.addr);
    let (_daemon, port) = start(&repo, "");
    let publish = repo.publish("a");

    // A signed change, applied: the last verified revision moves to it.
    repo.s.write("README.md", "# notes\n");
    let second = repo.s.commit(Some("alice"), "a second signed commit");
    repo.s.git(&["push", "-q", "origin", "main"]);
    let rev = format!("main@sha1:{second}");
    wake_until(port, "second", |st| st["lastAppliedRevision"] == rev);
    let published = current(&publish);
    let before = writes(&c.d);
    let unchanged = |st: &serde_json::Value| {
        assert_eq!(st["lastAppliedRevision"], rev, "{st:#}");
        assert_eq!(writes(&c.d), before, "nothing written at the API");
        assert_eq!(current(&publish), published, "the published routes did not change");
    };

    // A force-push back to the older, signed first commit: history rewritten.
    repo.s.git(&["push", "-q", "--force", "origin", &format!("{}:main", repo.first)]);
    let st = wake_until(port, "rewound", |st| condition(st, "SourceVerified").0 == "False");
    let (_, reason, message) = condition(&st, "SourceVerified");
    assert_eq!(reason, "HistoryRewritten", "{st:#}");
    assert!(message.contains(&format!("{} is not a descendant of the last verified revision {second}", repo.first)), "{message}");
    assert_eq!(metric(port, "byoc_history_rewrites_total"), 1.0, "{}", metrics(port));
    let log = std::fs::read_to_string(repo.work.join("daemon-a.log")).expect("log");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("history rewritten")), "{log}");
    unchanged(&st);
    repo.s.git(&["push", "-q", "--force", "origin", "main"]);
    wake_until(port, "restored", |st| condition(st, "SourceVerified").0 == "True");

    // A commit signed by a key outside the policy.
    repo.s.write("env/routes.yaml", "# mallory was here\n");
    let mallory = repo.s.commit(Some("mallory"), "by mallory");
    repo.s.git(&["push", "-q", "origin", "main"]);
    let st = wake_until(port, "mallory", |st| condition(st, "SourceVerified").0 == "False");
    let (_, reason, message) = condition(&st, "SourceVerified");
    assert_eq!(reason, "VerificationFailed", "{st:#}");
    assert!(message.contains(&mallory) && message.contains("which the policy does not list"), "{message}");
    assert_eq!(st["lastAttemptedRevision"], format!("main@sha1:{mallory}"));
    unchanged(&st);

    // Taken back; then a signed commit whose spec is invalid: Stalled, file:line:col.
    repo.s.git(&["reset", "-q", "--hard", &second]);
    let cluster = std::fs::read_to_string(repo.s.repo().join("env/clusters/analytics.yaml")).expect("a cluster file");
    repo.s.write("env/clusters/analytics.yaml", &cluster.replace("spec:\n", "spec:\n  replicaz: 3\n"));
    let invalid = repo.s.commit(Some("alice"), "signed but invalid");
    repo.s.git(&["push", "-q", "--force", "origin", "main"]);
    let st = wake_until(port, "invalid", |st| condition(st, "Stalled").0 == "True");
    let (_, reason, message) = condition(&st, "Stalled");
    assert_eq!(reason, "InvalidSpecs", "{st:#}");
    assert!(message.contains(&format!("main@sha1:{invalid}")), "{message}");
    let last = st["lastError"]["message"].as_str().unwrap_or("");
    assert!(regex::Regex::new(r"analytics\.yaml:\d+:\d+: error: .*replicaz").expect("re").is_match(last), "{st:#}");
    assert_eq!(condition(&st, "SourceVerified").0, "True", "signed, so verified: {st:#}");
    unchanged(&st);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_reconcile_parses_nothing_writes_nothing_and_publishes_nothing() {
    let c = cluster().await;
    let mut repo = Repo::new(c.addr);
    let (_daemon, port) = start(&repo, "");
    let publish = repo.publish("a");
    let published = current(&publish);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(publish.join("revisions"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let revisions = listing();
    let before = writes(&c.d);

    // The same revision again.
    let count = status(port)["reconciles"].as_u64().expect("count");
    assert_eq!(webhook(port, b"hook-s3cret", "again"), 202);
    wait_for(port, "a second reconcile", |st| st["reconciles"].as_u64() > Some(count));
    assert_eq!(metric(port, "byoc_parses_skipped_total"), 1.0, "{}", metrics(port));

    // A new signed commit that leaves the environment directory as it was.
    repo.s.write("README.md", "# infra\n");
    let docs = repo.s.commit(Some("alice"), "docs only");
    repo.s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(port, b"hook-s3cret", "docs"), 202);
    let st = wait_for(port, "the docs commit", |st| st["lastAppliedRevision"] == format!("main@sha1:{docs}"));
    assert_eq!(condition(&st, "Ready").0, "True", "{st:#}");
    assert_eq!(metric(port, "byoc_parses_skipped_total"), 2.0, "{}", metrics(port));
    assert_eq!(writes(&c.d), before, "no Kubernetes writes:\n{:#?}", &c.d.writes()[before..]);
    assert_eq!((current(&publish), listing()), (published, revisions), "nothing published");
    assert!(metrics(port).contains("byoc_reconciles_total{result=\"unchanged\"} 2"), "{}", metrics(port));
}
