//! The real `byoc clusters` binary against the API double served over HTTP on a loopback
//! port, through a kubeconfig, as a user would run it.

use std::path::Path;

use crate::support::{byoc, copy_dir, project_root};

use super::support::{byoc_writes, double, operator};

async fn run(dir: &Path, args: Vec<String>) -> crate::support::Run {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || byoc(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>())).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byoc_clusters_converges_through_a_kubeconfig_and_is_idempotent() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());

    let work = tempfile::tempdir().expect("tempdir");
    let env = work.path().join("env");
    copy_dir(&project_root().join("examples/aws"), &env);
    std::fs::write(work.path().join("kubeconfig"), kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    let args = |output: &str| -> Vec<String> {
        [
            "clusters",
            "--env",
            "env",
            "--state-dir",
            "state",
            "--kubeconfig",
            "kubeconfig",
            "--health-timeout",
            "5",
            "--poll-interval",
            "0.05",
            "--output",
            output,
        ]
        .map(str::to_owned)
        .to_vec()
    };

    let first = run(work.path(), args("json")).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let report: serde_json::Value = serde_json::from_str(&first.stdout).expect("json report");
    let outcomes: Vec<(&str, &str)> = report["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| (c["cluster"].as_str().unwrap_or(""), c["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(outcomes, [("analytics", "Ready"), ("ingest", "Ready")]);
    assert_eq!(byoc_writes(&d).len(), 6, "three applies per cluster: {:?}", byoc_writes(&d));
    assert!(work.path().join("state/kubernetes-inventory.json").is_file(), "inventory kept in the state directory");

    d.clear_requests();
    let second = run(work.path(), args("text")).await;
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("2 cluster(s), 2 ready, 0 write(s)"), "{}", second.stdout);
    assert_eq!(byoc_writes(&d), Vec::<String>::new());

    let analytics = env.join("clusters/analytics.yaml");
    let text = std::fs::read_to_string(&analytics).expect("read").replace("compute: {replicas: 3,", "compute: {replicas: 6,");
    std::fs::write(&analytics, text).expect("write");
    d.clear_requests();
    let resized = run(work.path(), args("text")).await;
    assert_eq!(resized.code, 0, "{}{}", resized.stdout, resized.stderr);
    assert_eq!(byoc_writes(&d), ["PATCH /apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/rw-analytics/risingwaves/analytics"]);
    assert!(resized.stdout.contains("applied RisingWave rw-analytics/analytics"), "{}", resized.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_or_an_unreachable_api_server_are_clear_errors_and_write_nothing() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);

    let work = tempfile::tempdir().expect("tempdir");
    let env = work.path().join("env");
    copy_dir(&project_root().join("examples/aws"), &env);
    let analytics = env.join("clusters/analytics.yaml");
    let text = std::fs::read_to_string(&analytics).expect("read").replace("compute: {replicas: 3,", "compute: {replicas: -3,");
    std::fs::write(&analytics, text).expect("write");
    std::fs::write(work.path().join("kubeconfig"), kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    let bad = run(work.path(), ["clusters", "--env", "env", "--kubeconfig", "kubeconfig"].map(str::to_owned).to_vec()).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("env/clusters/analytics.yaml:10:25: error: invalid u32"), "{}", bad.stderr);
    assert!(d.requests().is_empty(), "nothing reached the API server");

    // A port nothing listens on: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    std::fs::write(work.path().join("gone"), kube_double::kubeconfig(&format!("http://{closed}"))).expect("kubeconfig");
    copy_dir(&project_root().join("examples/aws"), &env);
    // Not inside a git repository: the state directory must be named.
    let down =
        run(work.path(), ["clusters", "--env", "env", "--kubeconfig", "gone", "--state-dir", "state"].map(str::to_owned).to_vec()).await;
    assert_eq!(down.code, 1, "{}{}", down.stdout, down.stderr);
    assert!(down.stderr.contains("error: reading Namespace rw-analytics"), "{}", down.stderr);
}

/// The same reconcile against a real cluster. Not run by default: no Kubernetes API server
/// can be installed on the CI machines. To run it on kind:
///
/// ```text
/// kind create cluster --name byoc
/// # install the risingwave-operator (it brings its RisingWave CRD), or only its CRD:
/// gzip -dc tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz | kubectl apply -f -
/// BYOC_KIND=1 cargo test -p byoc-reconciler --test e2e -- --ignored kube::binary::on_a_real_cluster
/// ```
///
/// Without the operator nothing writes a status, so the clusters end `Stalled` at the
/// health deadline; the test checks the objects and that a second run writes nothing.
#[tokio::test]
#[ignore = "needs a real Kubernetes cluster (kind) from $KUBECONFIG"]
async fn on_a_real_cluster() {
    use byoc::k8s::reconcile::{Options, Reconciler};
    let client = kube::Client::try_default().await.expect("a kubeconfig for a real cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = byoc::state::LocalDir::new(dir.path()).expect("state");
    let specs = super::support::example("aws");
    let options = Options { health_timeout: std::time::Duration::from_secs(5), ..Options::default() };
    let desired = super::support::objects(&specs);
    let first = Reconciler::new(client.clone(), &store, options.clone()).await.expect("r").reconcile(&desired).await.expect("first");
    assert!(first.clusters.iter().all(|c| c.conflicts.is_empty()), "{first:#?}");
    let second = Reconciler::new(client.clone(), &store, options.clone()).await.expect("r").reconcile(&desired).await.expect("second");
    assert!(second.clusters.iter().all(|c| c.actions.is_empty() && c.drift.is_empty()), "{second:#?}");
    let removed = Reconciler::new(client, &store, options).await.expect("r").reconcile(&[]).await.expect("prune");
    assert_eq!(removed.clusters.len(), 2);
}
