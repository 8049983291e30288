//! Helpers for the Kubernetes tests: the API double with the RisingWave CRD, the example
//! specs, a stand-in for the risingwave-operator's status updates, and a reconcile runner.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byoc::k8s::objects::{ClusterObjects, desired};
use byoc::k8s::reconcile::{Options, Reconciler, Report};
use byoc::spec::Specs;
use byoc::spec::load::load;
use byoc::state::LocalDir;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube_double::Double;
use serde_json::{Value, json};

use crate::support::project_root;

/// The risingwave-operator's own `RisingWave` CRD (tests/fixtures/risingwave-operator, the
/// operator's file unchanged), decompressed once with the real `gzip`: the double prunes
/// and refuses `RisingWave` objects by the schema a real API server would use.
pub fn crd() -> &'static str {
    static CRD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CRD.get_or_init(|| {
        let file = project_root().join("tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz");
        let out = std::process::Command::new("gzip").arg("-dc").arg(&file).output().expect("gzip runs");
        assert!(out.status.success(), "gzip -dc {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("the CRD is UTF-8")
    })
}

/// The double, with the operator's RisingWave CRD installed and namespaces terminating in
/// 50 ms.
pub fn double() -> Double {
    let d = Double::new(&[crd()]).expect("the operator's CRD loads");
    d.set_terminate_after(Duration::from_millis(50));
    d
}

/// The specs of `examples/<cloud>`.
pub fn example(cloud: &str) -> Specs {
    let dir = project_root().join("examples").join(cloud);
    let files = rwproxy::specfiles::read_dir(&dir).expect("example reads");
    load(cloud, &files).expect("example is valid")
}

pub fn objects(specs: &Specs) -> Vec<ClusterObjects> {
    desired(specs, &BTreeMap::new()).expect("objects")
}

pub fn fast() -> Options {
    Options { health_timeout: Duration::from_secs(5), poll_interval: Duration::from_millis(20), namespace_timeout: Duration::from_secs(5) }
}

/// One reconcile with a fresh `Reconciler` over the state in `state`, as each run of the
/// daemon would do.
pub async fn reconcile(client: &kube::Client, state: &LocalDir, specs: &Specs, options: Options) -> Report {
    let mut r = Reconciler::new(client.clone(), state, options).await.expect("inventory loads");
    r.reconcile(&objects(specs)).await.expect("reconcile")
}

/// What the stand-in operator reports for a cluster.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Running,
    Failed(&'static str),
    Upgrading,
}

/// Stands in for the risingwave-operator: whenever a `RisingWave`'s generation moves, it
/// writes a status through the status subresource, as field manager `risingwave-operator`.
/// Stops when dropped.
pub struct Operator {
    pub behaviour: Arc<Mutex<BTreeMap<String, Behaviour>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn operator(client: &kube::Client) -> Operator {
    let behaviour: Arc<Mutex<BTreeMap<String, Behaviour>>> = Arc::default();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
    let client = client.clone();
    let b = behaviour.clone();
    let task = tokio::spawn(async move {
        // Bounded: 12,000 rounds of 10 ms, longer than any test (the two-replica ones wait
        // out whole lease durations).
        for _ in 0..12_000 {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for rw in list.items {
                    let name = rw.metadata.name.clone().unwrap_or_default();
                    let ns = rw.metadata.namespace.clone().unwrap_or_default();
                    let generation = rw.metadata.generation.unwrap_or(0);
                    let wanted = b.lock().expect("lock").get(&name).cloned().unwrap_or(Behaviour::Running);
                    let status = status_for(generation, &wanted);
                    if rw.data.get("status") != Some(&status) {
                        let api: Api<DynamicObject> =
                            Api::namespaced_with(client.clone(), &ns, &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
                        let params = PatchParams { field_manager: Some("risingwave-operator".into()), ..PatchParams::default() };
                        let _ = api.patch_status(&name, &params, &Patch::Merge(json!({"status": status}))).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Operator { behaviour, task }
}

fn status_for(generation: i64, b: &Behaviour) -> Value {
    let cond = |ty: &str, status: &str, message: &str| json!({"type": ty, "status": status, "message": message});
    match b {
        Behaviour::Running => {
            json!({"observedGeneration": generation, "conditions": [cond("Running", "True", ""), cond("Upgrading", "False", "")]})
        }
        Behaviour::Failed(m) => {
            json!({"observedGeneration": generation, "conditions": [cond("Running", "False", ""), cond("Failed", "True", m)]})
        }
        Behaviour::Upgrading => {
            json!({"observedGeneration": generation, "conditions": [cond("Running", "True", ""), cond("Upgrading", "True", "rolling compute nodes")]})
        }
    }
}

/// A double with the stand-in operator running and an empty local state store.
pub struct Fixture {
    pub double: Double,
    pub client: kube::Client,
    pub operator: Operator,
    pub store: LocalDir,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let double = double();
        let client = double.client();
        let operator = operator(&client);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path()).expect("state");
        Fixture { double, client, operator, store, _dir: dir }
    }

    /// One reconcile of `specs` with the test deadlines.
    pub async fn reconcile(&self, specs: &Specs) -> Report {
        reconcile(&self.client, &self.store, specs, fast()).await
    }
}

/// Like `kubectl edit` of the analytics cluster's compute replicas: a merge patch of the
/// whole `nodeGroups` list (one field for the double) as field manager `kubectl-edit`.
pub async fn edit_replicas(client: &kube::Client, replicas: i64) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "rw-analytics", &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
    let mut rw = serde_json::to_value(api.get("analytics").await.expect("get")).expect("json");
    rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"] = json!(replicas);
    let patch = json!({"spec": {"components": {"compute": {"nodeGroups": rw["spec"]["components"]["compute"]["nodeGroups"]}}}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() };
    api.patch("analytics", &params, &Patch::Merge(&patch)).await.expect("edit");
}

/// GET of one object through the double's client, `None` when it is not there.
pub async fn get(client: &kube::Client, kind: byoc::k8s::objects::ObjectKind, ns: Option<&str>, name: &str) -> Option<Value> {
    let ar = kind.api_resource();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.get_opt(name).await.expect("get").map(|o| serde_json::to_value(o).expect("json"))
}

/// The writes the double saw from anyone but the stand-in operator, as `METHOD path`.
pub fn byoc_writes(d: &Double) -> Vec<String> {
    d.writes()
        .iter()
        .filter(|r| !r.uri.contains("fieldManager=risingwave-operator"))
        .map(|r| format!("{} {}", r.method, r.uri.split('?').next().unwrap_or("")))
        .collect()
}

/// `d` served over HTTP on a loopback port, and a kubeconfig file for it: the server task,
/// the directory holding the file (removed when dropped) and the file's path.
pub async fn served(d: &kube_double::Double) -> (tokio::task::JoinHandle<()>, tempfile::TempDir, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = d.serve(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    (server, dir, path.display().to_string())
}
