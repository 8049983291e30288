//! Wire tests in the kube-rs style: the reconciler's client talks to a `tower-test` mock
//! whose other end records each HTTP request exactly as sent and then lets the API double
//! answer it. They pin what matters on the wire: server-side apply as field manager
//! `byoc`, the apply content type, and `force` only for fields we applied ourselves.

use std::sync::{Arc, Mutex};

use byoc::state::LocalDir;
use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

use super::support::{double, edit_replicas, example, fast, objects, operator, reconcile};

#[derive(Debug, Clone)]
struct Wire {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: String,
}

/// A client whose requests are recorded, then answered by `d`.
fn recording(d: &kube_double::Double) -> (kube::Client, Arc<Mutex<Vec<Wire>>>, tokio::task::JoinHandle<()>) {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Arc<Mutex<Vec<Wire>>> = Arc::default();
    let (d, l) = (d.clone(), log.clone());
    let task = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("body");
            l.lock().expect("lock").push(Wire {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts.headers.get(http::header::CONTENT_TYPE).map(|v| v.to_str().expect("ascii").to_owned()),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
            send.send_response(d.handle(Request::from_parts(parts, bytes)).map(Body::from));
        }
    });
    (kube::Client::new(mock, "default"), log, task)
}

fn patches(log: &Arc<Mutex<Vec<Wire>>>) -> Vec<Wire> {
    log.lock().expect("lock").iter().filter(|w| w.method == "PATCH").cloned().collect()
}

#[tokio::test]
async fn every_write_is_server_side_apply_as_byoc_without_force_and_sends_exactly_our_object() {
    let d = double();
    let _op = operator(&d.client());
    let (client, log, _task) = recording(&d);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDir::new(dir.path()).expect("state");
    let specs = example("aws");
    assert!(reconcile(&client, &store, &specs, fast()).await.ok());

    let sent = patches(&log);
    let expected: Vec<(String, Value)> = objects(&specs)
        .into_iter()
        .flat_map(|c| c.objects)
        .map(|o| {
            let base = match (o.kind, &o.namespace) {
                (byoc::k8s::objects::ObjectKind::Namespace, _) => "/api/v1/namespaces".to_owned(),
                (k, Some(ns)) => {
                    let ar = k.api_resource();
                    let prefix = if ar.group.is_empty() { "/api/v1".to_owned() } else { format!("/apis/{}", ar.api_version) };
                    format!("{prefix}/namespaces/{ns}/{}", ar.plural)
                }
                (_, None) => unreachable!("only namespaces are cluster-scoped"),
            };
            (format!("{base}/{}?&fieldManager=byoc", o.name), o.body)
        })
        .collect();
    assert_eq!(sent.len(), expected.len(), "{sent:#?}");
    // Clusters converge side by side, so writes of two clusters may interleave; each
    // cluster's own writes keep their order (namespace, service account, RisingWave).
    let position = |uri: &str| sent.iter().position(|w| w.uri == uri);
    let mut last_of_cluster: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (uri, body) in &expected {
        let at = position(uri).unwrap_or_else(|| panic!("{uri} not written (field manager byoc, no force): {sent:#?}"));
        let w = &sent[at];
        assert_eq!(w.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert_eq!(&serde_json::from_str::<Value>(&w.body).expect("json"), body);
        let namespace = body.pointer("/metadata/namespace").or_else(|| body.pointer("/metadata/name")).and_then(Value::as_str).expect("ns");
        if let Some(before) = last_of_cluster.insert(namespace.to_owned(), at) {
            assert!(before < at, "{uri} written before an object it depends on in {namespace}: {sent:#?}");
        }
    }
    assert!(log.lock().expect("lock").iter().all(|w| !w.uri.contains("force")));
}

/// The reconciler's client recording, one reconcile of the AWS example done, then the
/// analytics cluster's compute replicas edited by `kubectl-edit`; the log starts empty.
struct Edited {
    double: kube_double::Double,
    client: kube::Client,
    log: Arc<Mutex<Vec<Wire>>>,
    store: LocalDir,
    specs: byoc::spec::Specs,
    _operator: super::support::Operator,
    _task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn edited() -> Edited {
    let d = double();
    let operator = operator(&d.client());
    let (client, log, task) = recording(&d);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDir::new(dir.path()).expect("state");
    let specs = example("aws");
    assert!(reconcile(&client, &store, &specs, fast()).await.ok());
    edit_replicas(&d.client(), 9).await;
    log.lock().expect("lock").clear();
    Edited { double: d, client, log, store, specs, _operator: operator, _task: task, _dir: dir }
}

#[tokio::test]
async fn force_is_sent_only_to_set_back_a_field_we_applied() {
    let Edited { client, log, store, specs, .. } = &edited().await;
    assert!(reconcile(client, store, specs, fast()).await.ok());
    let sent = patches(log);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(
        sent[0].uri,
        "/apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/rw-analytics/risingwaves/analytics?&force=true&fieldManager=byoc"
    );
    assert_eq!(sent[0].content_type.as_deref(), Some("application/apply-patch+yaml"));
}

#[tokio::test]
async fn force_is_never_sent_for_a_field_another_manager_owns() {
    let Edited { double: d, client, log, specs, .. } = &edited().await;
    // A reconciler with no record of having applied the field (its inventory is gone)
    // cannot tell an edit from someone else's field: it must not take it.
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = LocalDir::new(fresh_dir.path()).expect("state");
    let report = reconcile(client, &fresh, specs, fast()).await;
    assert!(!report.ok());
    let analytics = &report.clusters[0];
    assert_eq!(analytics.outcome, byoc::k8s::reconcile::Outcome::Stalled);
    assert_eq!(analytics.conflicts.len(), 1, "{analytics:#?}");
    assert_eq!(analytics.conflicts[0].field, ".spec.components.compute.nodeGroups");
    assert!(analytics.conflicts[0].message.contains("kubectl-edit"), "{}", analytics.conflicts[0].message);

    let sent = patches(log);
    assert_eq!(sent.len(), 1, "one apply, refused with 409, and no forced retry: {sent:#?}");
    assert!(sent.iter().all(|w| !w.uri.contains("force")), "{sent:#?}");
    let rw =
        super::support::get(&d.client(), byoc::k8s::objects::ObjectKind::RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
    assert_eq!(rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 9, "not overwritten");
}
