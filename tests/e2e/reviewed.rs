//! What was reviewed is what is applied: the demo's pull request against examples/aws
//! (scale analytics, add a cluster, drop the public SQL endpoint), planned from git the
//! way CI comments it, then applied with `byoc apply` to moto (behind the recorded-response
//! double for the two calls moto lacks) and the Kubernetes API double over HTTP, with the
//! stand-in operator marking each `RisingWave` ready. What exists is read back from moto
//! with describe calls and from the double with the Kubernetes API, never from byoc's
//! state.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::aws::{Account, example_repo};
use crate::kube::support::{Operator, double, edit_replicas, operator};
use crate::state_s3::MOTO_ENV;
use crate::support::{Repo, Run, byoc_env};

const ENV: &str = "examples/aws";

/// moto, the API double serving over HTTP, the stand-in operator, and the example
/// repository with the base applied.
struct World {
    account: Account,
    double: kube_double::Double,
    _server: tokio::task::JoinHandle<()>,
    _operator: Operator,
    repo: Repo,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _controller: crate::support::Killed,
}

impl World {
    async fn new() -> World {
        let account = Account::new().with_autoscaling_role();
        let double = double();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = double.serve(listener);
        let op = operator(&double.client());
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
        // The controller's stand-in makes the NLBs of the sidecar's Services.
        let controller = account.lb_controller(&kubeconfig);
        World { account, double, _server: server, _operator: op, repo: example_repo(), kubeconfig, _dir: dir, _controller: controller }
    }

    /// `byoc VERB [ARGS] --repo . --env examples/aws` against this world's cloud and
    /// Kubernetes, with the state in `state/`.
    fn byoc(&self, verb: &str, args: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut all = vec![verb];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--repo", ".", "--env", ENV, "--endpoint-url", self.account.endpoint(), "--state-dir", "state"]);
        all.extend_from_slice(&["--kubeconfig", &kubeconfig]);
        if verb == "apply" {
            all.extend_from_slice(&["--auto-approve", "--poll-interval", "0.1"]);
        }
        // The binary blocks this thread; the double and the operator run on the other.
        tokio::task::block_in_place(|| byoc_env(self.repo.path(), &all, &MOTO_ENV))
    }

    /// `byoc plan --out FILE` of `rev`; the saved plan's body.
    fn save_plan(&self, rev: &str, file: &Path) -> Value {
        let out = file.display().to_string();
        let run = self.byoc("plan", &["--head", rev, "--out", &out]);
        assert_eq!(run.code, 0, "plan --out:\n{}\n{}", run.stdout, run.stderr);
        let saved: Value = serde_json::from_slice(&std::fs::read(file).expect("plan file")).expect("plan JSON");
        saved["body"].clone()
    }

    /// The demo's pull request, committed on main.
    fn pull_request(&mut self) -> String {
        let r = &self.repo;
        r.edit(&format!("{ENV}/clusters/analytics.yaml"), "compute: {replicas: 3", "compute: {replicas: 6");
        let reporting = r
            .read(&format!("{ENV}/clusters/analytics.yaml"))
            .replace("name: analytics", "name: reporting")
            .replace("prefix: analytics", "prefix: reporting");
        r.write(&format!("{ENV}/clusters/reporting.yaml"), &reporting);
        r.edit(&format!("{ENV}/environment.yaml"), "      public:\n        allowedCidrs: [203.0.113.0/24]\n", "");
        self.repo.commit("scale analytics, add reporting, drop the public endpoint")
    }

    /// `RisingWave` name -> compute replicas, read from the double.
    async fn risingwaves(&self) -> Vec<(String, i64)> {
        let api: Api<DynamicObject> = Api::all_with(self.double.client(), &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
        let mut out: Vec<(String, i64)> = api
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|rw| {
                let replicas = rw.data.pointer("/spec/components/compute/nodeGroups/0/replicas").and_then(Value::as_i64).unwrap_or(-1);
                (rw.metadata.name.unwrap_or_default(), replicas)
            })
            .collect();
        out.sort();
        out
    }
}

/// Ids of the steps that change something.
fn changed(plan: &Value) -> BTreeSet<String> {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] != "no-op")
        .map(|s| format!("{} {}", s["action"].as_str().unwrap_or(""), s["id"].as_str().unwrap_or("")))
        .collect()
}

fn ok(run: &Run) -> &Run {
    assert_eq!(run.code, 0, "byoc failed\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pull_request_is_applied_whole_and_a_second_plan_shows_no_changes() {
    let mut w = World::new().await;
    let base = ok(&w.byoc("apply", &[])).stdout.clone();
    assert!(base.contains("applied the Kubernetes objects of main@sha1:"), "{base}");
    assert_eq!(w.risingwaves().await, [("analytics".to_owned(), 3), ("ingest".to_owned(), 2)]);
    let base_rev = w.repo.git(&["rev-parse", "HEAD"]);
    w.pull_request();

    // What CI shows for the pull request, from git alone.
    let pr = tokio::task::block_in_place(|| {
        byoc_env(w.repo.path(), &["plan", "--repo", ".", "--env", ENV, "--base", &base_rev, "--head", "HEAD", "--output", "json"], &[])
    });
    assert_eq!(pr.code, 2, "{}", pr.stderr);
    let reviewed = changed(&serde_json::from_str(&pr.stdout).expect("plan JSON"));
    for expected in ["update k8s.risingwave/analytics", "create k8s.risingwave/reporting", "create aws.iam-role/rw-reporting"] {
        assert!(reviewed.contains(expected), "the reviewed plan shows {expected}: {reviewed:#?}");
    }

    // The live plan of the merged revision shows the same changes, cloud and Kubernetes.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pr.plan.json");
    let saved = w.save_plan("HEAD", &file);
    assert_eq!(changed(&saved["plan"]), reviewed, "the live plan is the reviewed plan");

    // Applying the saved plan makes every one of those changes.
    let applied = w.byoc("apply", &[&file.display().to_string()]);
    ok(&applied);
    assert_eq!(
        w.risingwaves().await,
        [("analytics".to_owned(), 6), ("ingest".to_owned(), 2), ("reporting".to_owned(), 6)],
        "resize and new cluster (a copy of the resized one) in Kubernetes\n{}",
        applied.stdout
    );
    let counts = w.account.counts();
    assert_eq!(counts.get("aws.iam-role/rw-reporting"), Some(&1), "the new cluster's role: {counts:#?}");

    // Nothing is left: a second plan shows no change, a second apply has nothing to do.
    let again = w.save_plan("HEAD", &dir.path().join("again.plan.json"));
    assert_eq!(changed(&again["plan"]), BTreeSet::new());
    assert!(ok(&w.byoc("apply", &[])).stdout.contains("nothing to do"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_is_refused_when_the_live_state_moved_or_the_file_was_edited() {
    let mut w = World::new().await;
    ok(&w.byoc("apply", &[]));
    w.pull_request();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pr.plan.json");
    w.save_plan("HEAD", &file);
    let before = (w.risingwaves().await, w.account.counts());

    // An edited plan: refused before anything is observed.
    let edited = dir.path().join("edited.plan.json");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains("\"create\""), "the plan creates something");
    std::fs::write(&edited, text.replacen("\"create\"", "\"no-op\"", 1)).expect("edit");
    let run = w.byoc("apply", &[&edited.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("edited or damaged") && run.stderr.contains("nothing was applied"), "{}", run.stderr);

    // The live state moves after the plan was saved: someone scales a cluster by hand.
    edit_replicas(&w.double.client(), 9).await;
    let moved = w.risingwaves().await;
    assert_eq!(moved[0], ("analytics".to_owned(), 9));
    let run = w.byoc("apply", &[&file.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("the live state moved") && run.stderr.contains("nothing was applied"), "{}", run.stderr);
    assert_eq!(w.risingwaves().await, moved, "nothing applied in Kubernetes");
    assert_eq!(w.account.counts(), before.1, "nothing applied in the cloud");
    assert!(!moved.iter().any(|(n, _)| n == "reporting"), "{moved:?}");
}
