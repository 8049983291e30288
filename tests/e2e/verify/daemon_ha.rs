//! Two replicas of `byoc run` (the real binary) against one Kubernetes API double and one
//! state store: only the holder of the Lease writes (writes told apart at the double by
//! each replica's `User-Agent`, as the API server's audit log tells them apart); SIGKILL of
//! the holder lets the other take over within the lease and finish the reconcile; SIGTERM
//! finishes the step in progress and releases the lease, so the other takes over at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};

use super::Signed;
use super::daemon::{Daemon, REPORTS, free_port, routes, status, wait_for, webhook};
use crate::kube::support::{Behaviour, double, operator};
use crate::support::SpawnTied;

/// The lease the test replicas use: 6 s, so they retry every second.
const LEASE_SECONDS: u64 = 6;
const LEASE_NAMESPACE: &str = "byoc-system";
const LEASE_NAME: &str = "byoc-test";

/// A signed repository with the AWS example, its bare remote, a kubeconfig for the double
/// and a webhook secret, in one directory every replica shares (each has its own publish
/// and cache directories, as each pod has).
pub(super) struct Repo {
    pub(super) s: Signed,
    pub(super) work: PathBuf,
    pub(super) first: String,
}

impl Repo {
    pub(super) fn new(api: std::net::SocketAddr) -> Repo {
        let mut s = Signed::new();
        s.default_policy();
        crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("env"));
        let first = s.commit(Some("alice"), "environment");
        let work = s.dir.path().to_owned();
        let remote = work.join("remote.git");
        s.git(&["clone", "-q", "--bare", ".", &remote.display().to_string()]);
        s.git(&["remote", "add", "origin", &remote.display().to_string()]);
        std::fs::write(work.join("kubeconfig"), kube_double::kubeconfig(&format!("http://{api}"))).expect("kubeconfig");
        std::fs::write(work.join("webhook-secret"), "hook-s3cret\n").expect("secret");
        Repo { s, work, first }
    }

    /// Writes `reconciler-ID.yaml` (with `extra` lines under `spec`) and starts a replica
    /// with that identity, listening on `port`.
    pub(super) fn start(&self, id: &str, port: u16, extra: &str) -> Daemon {
        let remote = self.work.join("remote.git");
        std::fs::write(
            self.work.join(format!("reconciler-{id}.yaml")),
            format!(
                "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: test}}\nspec:\n  repository: {{url: \"file://{}\", branch: main}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{dir: daemon-state}}\n  publishDir: publish-{id}\n  cacheDir: cache-{id}\n  listen: \"127.0.0.1:{port}\"\n  interval: 1h\n  webhook: {{secretFile: webhook-secret}}\n  kubernetes: {{kubeconfig: kubeconfig}}\n  leaderElection: {{leaseName: {LEASE_NAME}, namespace: {LEASE_NAMESPACE}, leaseDuration: {LEASE_SECONDS}s, identity: {id}}}\n{extra}",
                remote.display()
            ),
        )
        .expect("config");
        let child = crate::support::tied_byoc()
            .args(["run", "--config", &format!("reconciler-{id}.yaml")])
            .current_dir(&self.work)
            .stderr(std::fs::File::create(self.work.join(format!("daemon-{id}.log"))).expect("log"))
            .spawn_tied()
            .expect("byoc run starts");
        Daemon(child)
    }

    pub(super) fn logs(&self) -> String {
        ["a", "b", "c"]
            .iter()
            .map(|id| format!("--- {id}:\n{}", std::fs::read_to_string(self.work.join(format!("daemon-{id}.log"))).unwrap_or_default()))
            .collect()
    }

    pub(super) fn publish(&self, id: &str) -> PathBuf {
        self.work.join(format!("publish-{id}"))
    }
}

/// Writes the double answered (leases aside) for the replica with identity `id`.
fn writes_by(d: &kube_double::Double, id: &str) -> usize {
    let agent = format!("({id})");
    d.writes()
        .iter()
        .filter(|r| {
            let path = r.uri.split('?').next().unwrap_or_default();
            !path.contains("/leases/") && !path.ends_with("/leases")
        })
        .filter(|r| r.user_agent.as_deref().is_some_and(|ua| ua.ends_with(&agent)))
        .count()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt(LEASE_NAME).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

/// Polls the lease until `id` holds it (bounded: 30 s).
async fn until_held_by(leases: &Api<Lease>, id: &str, logs: impl Fn() -> String) {
    let start = Instant::now();
    while holder(leases).await.as_deref() != Some(id) {
        assert!(start.elapsed() < Duration::from_secs(30), "{id} never took the lease: {:?}\n{}", holder(leases).await, logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn role(port: u16) -> (String, String) {
    let st = status(port);
    let e = &st["leaderElection"];
    (e["role"].as_str().unwrap_or("").to_owned(), e["holder"].as_str().unwrap_or("").to_owned())
}

fn current(publish: &Path) -> String {
    std::fs::read_link(publish.join("current")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// Every file of the published tree `publish/current`, by path, with its bytes.
fn published_files(publish: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(path.strip_prefix(root).unwrap_or(&path).display().to_string(), bytes);
            }
        }
    }
    let root = publish.join("current");
    let mut out = std::collections::BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Waits (bounded: 30 s) until the standby's publish directory holds the same revision,
/// file for file, as the holder's, and returns its route names.
fn until_mirrored(repo: &Repo, holder: &str, standby: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let (h, s) = (current(&repo.publish(holder)), current(&repo.publish(standby)));
        if !h.is_empty() && h == s {
            let files = published_files(&repo.publish(standby));
            assert!(!files.is_empty(), "{s} is empty");
            assert_eq!(files, published_files(&repo.publish(holder)), "the standby published other files than the holder");
            return routes(&repo.publish(standby));
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{standby} never published {holder}'s {h:?} (has {s:?}):\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(daemon: &mut Daemon, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(code) = daemon.0.try_wait().expect("wait") {
            return code;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_writer_sigkill_takes_over_within_the_lease_and_sigterm_hands_over_at_once() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let op = operator(&d.client());
    // The daemons' own namespace, made by whoever installed them.
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": LEASE_NAMESPACE}})).expect("namespace");
    Api::<Namespace>::all(d.client()).create(&PostParams::default(), &ns).await.expect("namespace");
    let leases: Api<Lease> = Api::namespaced(d.client(), LEASE_NAMESPACE);
    let rw: Api<DynamicObject> = Api::all_with(d.client(), &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());

    let mut repo = Repo::new(api_addr);
    let ports = [("a", free_port()), ("b", free_port())];
    let mut daemons: Vec<Option<Daemon>> = ports.iter().map(|(id, port)| Some(repo.start(id, *port, ""))).collect();

    // Exactly one reconciles: the holder applies the first revision, the other waits.
    let start = Instant::now();
    let (leader, follower) = loop {
        let roles: Vec<(String, String)> = ports
            .iter()
            .map(|(_, p)| if super::daemon::request_ok(*p, "/healthz") == Some(200) { role(*p) } else { Default::default() })
            .collect();
        if let Some(i) = roles.iter().position(|(r, _)| r == "leader")
            && roles[1 - i].0 == "standby"
        {
            break (i, 1 - i);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no leader: {roles:?}\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (lid, lport) = ports[leader];
    let (fid, fport) = ports[follower];
    let first = format!("main@sha1:{}", repo.first);
    wait_for(lport, "the holder applies the first revision", |st| st["lastAppliedRevision"] == first);
    let st = wait_for(fport, "the standby serves the holder's saved status", |st| st["lastAppliedRevision"] == first);
    assert_eq!((st["leaderElection"]["role"].as_str(), st["leaderElection"]["holder"].as_str()), (Some("standby"), Some(lid)), "{st:#}");
    assert_eq!(super::daemon::request_ok(fport, "/readyz"), Some(200), "a standby is ready: its pod's proxy serves SQL");
    assert!(writes_by(&d, lid) > 0, "the holder wrote");
    assert_eq!(writes_by(&d, fid), 0, "the standby wrote nothing:\n{:#?}", d.writes());
    assert_eq!(holder(&leases).await.as_deref(), Some(lid));
    // The standby's own RWProxy routes too: it published the holder's revision itself
    // (fetched and verified here, not copied), file for file.
    assert_eq!(until_mirrored(&repo, lid, fid), routes(&repo.publish(lid)));
    assert_eq!(writes_by(&d, fid), 0, "publishing is local: the standby still wrote nothing to Kubernetes");

    // A push whose cluster stays Upgrading: the holder is mid-reconcile, waiting for it, when
    // it is SIGKILLed. The other takes over once the lease is not renewed for its duration,
    // and finishes the reconcile.
    op.behaviour.lock().expect("lock").insert("reports".into(), Behaviour::Upgrading);
    repo.s.write("env/clusters/reports.yaml", REPORTS);
    let routes_file = std::fs::read_to_string(repo.s.repo().join("env/routes.yaml")).expect("routes");
    repo.s.write(
        "env/routes.yaml",
        &format!("{routes_file}    - name: reports-db\n      match: {{database: reports}}\n      cluster: reports\n      allowedCidrs: [10.20.0.0/16]\n"),
    );
    let added = repo.s.commit(Some("bob"), "add the reports cluster");
    repo.s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(lport, b"hook-s3cret", "d-1"), 202);
    let start = Instant::now();
    while rw.list(&Default::default()).await.expect("list").items.iter().all(|o| o.metadata.name.as_deref() != Some("reports")) {
        assert!(start.elapsed() < Duration::from_secs(30), "the holder never applied reports:\n{}", repo.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes_by(&d, fid), 0, "the standby still wrote nothing");
    // reports is not Ready, so the holder published nothing new, and neither did the
    // standby: no route to a cluster the holder has not seen Ready, though the tip has one.
    assert!(!routes(&repo.publish(lid)).contains(&"reports-db".to_owned()));
    assert!(!routes(&repo.publish(fid)).contains(&"reports-db".to_owned()), "the standby published past the holder");
    let killed = Instant::now();
    daemons[leader].take().expect("holder").0.kill().expect("SIGKILL");
    op.behaviour.lock().expect("lock").insert("reports".into(), Behaviour::Running);
    until_held_by(&leases, fid, || repo.logs()).await;
    let took = killed.elapsed();
    let lease = Duration::from_secs(LEASE_SECONDS);
    // Expiry is measured from when the standby last saw a renewal (client-go's rule, so
    // skewed clocks cannot make two writers): at most one retry period (a sixth) later.
    println!("SIGKILL: {fid} took the lease {took:?} after {lid} was killed (lease {lease:?})");
    assert!(took <= lease + lease / 6 + Duration::from_millis(500), "takeover took {took:?}\n{}", repo.logs());
    let added_rev = format!("main@sha1:{added}");
    wait_for(fport, "the new holder finishes the reconcile", |st| st["lastAppliedRevision"] == added_rev);
    assert!(routes(&repo.publish(fid)).contains(&"reports-db".to_owned()));

    // A third replica joins as standby; SIGTERM to the holder in the middle of a resize:
    // it finishes the step, releases the lease and exits; the third takes over at once.
    let cport = free_port();
    let mut c = repo.start("c", cport, "");
    let start = Instant::now();
    while super::daemon::request_ok(cport, "/healthz") != Some(200) || role(cport) != ("standby".to_owned(), fid.to_owned()) {
        assert!(start.elapsed() < Duration::from_secs(30), "c never became standby:\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // After the push that added reports, both replicas' proxies have its route.
    let mirrored = until_mirrored(&repo, fid, "c");
    assert!(mirrored.contains(&"reports-db".to_owned()), "{mirrored:?}");
    op.behaviour.lock().expect("lock").insert("reports".into(), Behaviour::Upgrading);
    repo.s.write("env/clusters/reports.yaml", &REPORTS.replace("compute: {replicas: 1,", "compute: {replicas: 2,"));
    let resized = repo.s.commit(Some("bob"), "resize reports");
    repo.s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(fport, b"hook-s3cret", "d-2"), 202);
    let start = Instant::now();
    loop {
        let list = rw.list(&Default::default()).await.expect("list");
        let generation = list.items.iter().find(|o| o.metadata.name.as_deref() == Some("reports")).and_then(|o| o.metadata.generation);
        if generation.is_some_and(|g| g >= 2) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the resize never reached the double:\n{}", repo.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut holder_daemon = daemons[follower].take().expect("holder");
    std::process::Command::new("kill").args(["-TERM", &holder_daemon.0.id().to_string()]).status().expect("kill");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(holder(&leases).await.as_deref(), Some(fid), "the lease is kept while the step finishes");
    op.behaviour.lock().expect("lock").insert("reports".into(), Behaviour::Running);
    let code = wait_exit(&mut holder_daemon, "the holder after SIGTERM");
    let exited = Instant::now();
    assert!(code.success(), "{code:?}\n{}", repo.logs());
    assert!(current(&repo.publish(fid)).contains(&resized), "the step in progress finished and published: {}", current(&repo.publish(fid)));
    until_held_by(&leases, "c", || repo.logs()).await;
    let took = exited.elapsed();
    println!("SIGTERM: c took the lease {took:?} after {fid} exited (lease {lease:?})");
    assert!(took < lease / 3, "a released lease is taken at once, not after {took:?}\n{}", repo.logs());
    let transitions = leases.get(LEASE_NAME).await.expect("lease").spec.and_then(|s| s.lease_transitions);
    assert_eq!(transitions, Some(2), "two takeovers");
    let resized_rev = format!("main@sha1:{resized}");
    wait_for(cport, "c reconciles", |st| st["lastAppliedRevision"] == resized_rev && st["leaderElection"]["role"] == "leader");
    std::process::Command::new("kill").args(["-TERM", &c.0.id().to_string()]).status().expect("kill");
    assert!(wait_exit(&mut c, "c").success());
}

/// A Lease the API server refuses (here 404: the daemon's namespace was never made, as
/// when the install forgot it) does not leave the replica waiting in standby forever: each
/// refusal is reported (`Stalled` with reason `LeaseRefused`, `byoc_lease_refusals_total`),
/// and after `MAX_REFUSALS` in a row the daemon exits 1 naming the Lease, the API server's
/// answer and what to grant or create, so the pod shows CrashLoopBackOff with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lease_is_reported_and_ends_the_daemon_with_the_reason() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    // No byoc-system namespace: creating the Lease in it is refused with 404.
    let repo = Repo::new(api_addr);
    let port = free_port();
    let mut daemon = repo.start("a", port, "");
    let started = Instant::now();
    while super::daemon::request_ok(port, "/healthz") != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "never listened:\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = wait_for(port, "the refusal is reported", |st| {
        st["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Stalled" && c["reason"] == "LeaseRefused"))
    });
    let stalled = st["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Stalled")).cloned().unwrap_or_default();
    assert_eq!(stalled["status"], "True", "{st:#}");
    let message = stalled["message"].as_str().unwrap_or("");
    assert!(message.contains(&format!("{LEASE_NAMESPACE}/{LEASE_NAME}")) && message.contains("not found"), "{message}");
    assert_eq!(st["lastError"]["stage"], "lease", "{st:#}");
    let (_, metrics) = super::daemon::request(port, "GET", "/metrics", &[], b"");
    assert!(
        metrics.lines().any(|l| l.starts_with("byoc_lease_refusals_total ") && !l.ends_with(" 0")),
        "{}",
        metrics.lines().filter(|l| l.contains("lease")).collect::<Vec<_>>().join("\n")
    );
    let code = wait_exit(&mut daemon, "the refused replica");
    let took = started.elapsed();
    println!("a refused Lease ended the daemon after {took:?} (retry every {:?})", Duration::from_secs(LEASE_SECONDS) / 6);
    assert_eq!(code.code(), Some(1), "{code:?}\n{}", repo.logs());
    let log = std::fs::read_to_string(repo.work.join("daemon-a.log")).unwrap_or_default();
    assert!(log.contains("refused the Lease byoc-system/byoc-test 5 times in a row"), "{log}");
    assert!(log.contains("namespaces \\\"byoc-system\\\" not found") || log.contains("namespaces \"byoc-system\" not found"), "{log}");
    assert!(log.contains("grant the daemon's ServiceAccount get, create and update on leases in byoc-system"), "{log}");
    assert_eq!(writes_by(&d, "a"), 0, "a replica without the lease wrote nothing");
}

/// The standby's own RWProxy serves SQL: a PostgreSQL server stands in for the analytics
/// frontend, a signed push adds a route to it, and the real `rwproxy` reading only the
/// *standby's* publish directory takes psql there once the holder has applied and
/// published the push. (That the standby follows the holder, not the tip, is shown in the
/// test above: a pushed route to a cluster not yet Ready is published by neither.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reaches_the_cluster_through_the_standbys_own_rwproxy() {
    use super::daemon_aws::{Proxy, frontend, through_proxy};
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": LEASE_NAMESPACE}})).expect("namespace");
    Api::<Namespace>::all(d.client()).create(&PostParams::default(), &ns).await.expect("namespace");

    let mut repo = Repo::new(api_addr);
    let ports = [("a", free_port()), ("b", free_port())];
    let _daemons: Vec<Daemon> = ports.iter().map(|(id, port)| repo.start(id, *port, "")).collect();
    let start = Instant::now();
    let (leader, follower) = loop {
        let roles: Vec<String> = ports
            .iter()
            .map(|(_, p)| if super::daemon::request_ok(*p, "/healthz") == Some(200) { role(*p).0 } else { String::new() })
            .collect();
        if let Some(i) = roles.iter().position(|r| r == "leader")
            && roles[1 - i] == "standby"
        {
            break (ports[i], ports[1 - i]);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no leader: {roles:?}\n{}", repo.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    until_mirrored(&repo, leader.0, follower.0);

    // The real rwproxy on the standby's tree only.
    let proxy_port = free_port();
    let _proxy = Proxy(
        crate::support::tied(crate::bad_specs::rwproxy_binary())
            .arg("--routes")
            .arg(repo.publish(follower.0).join("current"))
            .args(["--listen", &format!("127.0.0.1:{proxy_port}"), "--admin", &format!("127.0.0.1:{}", free_port())])
            .env("RWPROXY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn_tied()
            .expect("rwproxy starts"),
    );
    let pg = frontend(&repo.work, "analytics");
    through_proxy(proxy_port, "analytics", None);

    let routes_file = std::fs::read_to_string(repo.s.repo().join("env/routes.yaml")).expect("routes");
    repo.s.write(
        "env/routes.yaml",
        &format!(
            "{routes_file}    - name: analytics-local\n      match: {{database: analytics}}\n      cluster: analytics\n      allowedCidrs: [127.0.0.0/8]\n      backend: '127.0.0.1:{pg}'\n"
        ),
    );
    let pushed = repo.s.commit(Some("bob"), "a route to the analytics frontend");
    repo.s.git(&["push", "-q", "origin", "main"]);
    assert_eq!(webhook(leader.1, b"hook-s3cret", "p-1"), 202);
    wait_for(leader.1, "the holder applies the push", |st| st["lastAppliedRevision"] == format!("main@sha1:{pushed}"));
    let mirrored = until_mirrored(&repo, leader.0, follower.0);
    assert!(mirrored.contains(&"analytics-local".to_owned()), "{mirrored:?}");
    through_proxy(proxy_port, "analytics", Some("analytics"));
    assert_eq!(writes_by(&d, follower.0), 0, "the standby wrote nothing to Kubernetes");
}
