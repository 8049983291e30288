//! The Kubernetes reconcile against the API double (tests/kube-double: a state-keeping
//! stand-in for kube-apiserver, which cannot be installed here), with a stand-in for the
//! risingwave-operator writing statuses.

use byoc::k8s::objects::ObjectKind::{Namespace, RisingWave, Service, ServiceAccount};
use byoc::k8s::reconcile::Outcome;
use byoc::spec::DeletionPolicy;
use byoc::state::LocalDir;
use serde_json::json;

use super::support::{Behaviour, Fixture, byoc_writes, edit_replicas, example, fast, get, reconcile};

#[tokio::test]
async fn applying_the_aws_example_creates_every_object_and_a_second_reconcile_writes_nothing() {
    let fx = Fixture::new();
    let (d, client) = (&fx.double, &fx.client);
    let specs = example("aws");

    let report = fx.reconcile(&specs).await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(
        report.clusters.iter().map(|c| (c.cluster.as_str(), c.outcome)).collect::<Vec<_>>(),
        [("analytics", Outcome::Ready), ("ingest", Outcome::Ready)]
    );

    for c in &specs.clusters {
        let ns = format!("rw-{}", c.name);
        let namespace = get(client, Namespace, None, &ns).await.expect("namespace");
        assert_eq!(namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"], "byoc");
        assert_eq!(namespace["metadata"]["labels"]["byoc.risingwave.dev/cluster"], c.name.as_str());
        assert_eq!(namespace["metadata"]["annotations"]["byoc.risingwave.dev/deletion-policy"], c.deletion_policy.as_str());

        let sa = get(client, ServiceAccount, Some(&ns), &ns).await.expect("service account");
        assert_eq!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            format!("arn:aws:iam::123456789012:role/byoc/prod-use1/clusters/byoc-prod-use1-{ns}").as_str()
        );

        let rw = get(client, RisingWave, Some(&ns), &c.name).await.expect("RisingWave");
        let spec = &rw["spec"];
        assert_eq!(spec["image"], c.image.as_str());
        for (name, comp) in [("meta", &c.meta), ("frontend", &c.frontend), ("compute", &c.compute), ("compactor", &c.compactor)] {
            let group = &spec["components"][name]["nodeGroups"][0];
            assert_eq!(group["replicas"], comp.replicas, "{name} replicas");
            let resources = &group["template"]["spec"]["resources"];
            let cpu = byoc::spec::quantity::format_cpu(comp.cpu_millis);
            let memory = byoc::spec::quantity::format_memory(comp.memory_bytes);
            for side in ["requests", "limits"] {
                assert_eq!(resources[side]["cpu"], cpu.as_str(), "{name} cpu {side}");
                assert_eq!(resources[side]["memory"], memory.as_str(), "{name} memory {side}");
            }
            assert_eq!(group["template"]["spec"]["serviceAccountName"], ns.as_str());
            assert_eq!(group["template"]["metadata"]["labels"]["byoc.risingwave.dev/cluster"], c.name.as_str());
            match &c.node_group {
                Some(g) => {
                    assert_eq!(group["template"]["spec"]["nodeSelector"]["byoc.risingwave.dev/node-group"], g.as_str());
                    // The example's risingwave node group is tainted dedicated=risingwave:NoSchedule.
                    assert_eq!(
                        group["template"]["spec"]["tolerations"],
                        json!([{"key": "dedicated", "operator": "Equal", "value": "risingwave", "effect": "NoSchedule"}])
                    );
                }
                None => assert!(group["template"]["spec"].get("nodeSelector").is_none()),
            }
        }
        assert_eq!(spec["stateStore"]["dataDirectory"], c.state_prefix.as_str());
        assert_eq!(
            spec["stateStore"]["s3"],
            json!({"bucket": specs.environment.data_bucket, "region": "us-east-1", "credentials": {"useServiceAccount": true}})
        );
        match &c.meta_store {
            byoc::spec::MetaStore::Sqlite => assert_eq!(spec["metaStore"], json!({"sqlite": {"path": "/risingwave/data/meta.db"}})),
            byoc::spec::MetaStore::Postgresql { host, .. } => assert_eq!(spec["metaStore"]["postgresql"]["host"], host.as_str()),
        }
        let managers: Vec<&str> =
            rw["metadata"]["managedFields"].as_array().expect("managedFields").iter().filter_map(|m| m["manager"].as_str()).collect();
        assert!(managers.contains(&"byoc"), "{managers:?}");

        // The operator creates and owns `<cluster>-frontend`; a second writer would fight it.
        let svc = get(client, Service, Some(&ns), &format!("{}-frontend", c.name)).await;
        assert!(svc.is_none(), "byoc wrote the operator's frontend Service: {svc:?}");
    }

    d.clear_requests();
    let again = fx.reconcile(&specs).await;
    assert!(again.ok(), "{again:#?}");
    assert!(again.clusters.iter().all(|c| c.actions.is_empty() && c.drift.is_empty()), "{again:#?}");
    assert_eq!(byoc_writes(d), Vec::<String>::new(), "a second reconcile of unchanged specs writes nothing");
    assert!(!d.requests().is_empty(), "it did read");
}

#[tokio::test]
async fn a_resize_and_an_image_change_are_one_patch_each() {
    let fx = Fixture::new();
    let (d, client) = (&fx.double, &fx.client);
    let mut specs = example("aws");
    assert!(fx.reconcile(&specs).await.ok());

    specs.clusters[0].compute.replicas = 6;
    d.clear_requests();
    let report = fx.reconcile(&specs).await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(byoc_writes(d), ["PATCH /apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/rw-analytics/risingwaves/analytics"]);
    let body: serde_json::Value = serde_json::from_str(&d.writes()[0].body).expect("json body");
    assert_eq!(body["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 6);
    let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
    assert_eq!(rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 6);
    assert_eq!(rw["metadata"]["generation"], 2);

    specs.clusters[0].image = "risingwavelabs/risingwave:v2.2.0".into();
    d.clear_requests();
    assert!(fx.reconcile(&specs).await.ok());
    assert_eq!(byoc_writes(d), ["PATCH /apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/rw-analytics/risingwaves/analytics"]);
    let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
    assert_eq!(rw["spec"]["image"], "risingwavelabs/risingwave:v2.2.0");
}

#[tokio::test]
async fn a_removed_cluster_is_deleted_with_delete_and_kept_labelled_with_retain() {
    let fx = Fixture::new();
    let (d, client) = (&fx.double, &fx.client);
    let mut specs = example("aws");
    assert_eq!(specs.clusters[0].deletion_policy, DeletionPolicy::Retain, "analytics is Retain in the example");
    assert_eq!(specs.clusters[1].deletion_policy, DeletionPolicy::Delete, "ingest is Delete in the example");
    assert!(fx.reconcile(&specs).await.ok());

    specs.clusters.clear();
    let report = fx.reconcile(&specs).await;
    assert!(report.ok(), "{report:#?}");
    let by_name = |n: &str| report.clusters.iter().find(|c| c.cluster == n).expect("reported");

    let ingest = by_name("ingest");
    assert_eq!(ingest.outcome, Outcome::Deleted);
    assert!(ingest.actions.contains(&"deleted RisingWave rw-ingest/ingest".to_owned()), "{:?}", ingest.actions);
    assert_eq!(get(client, Namespace, None, "rw-ingest").await, None, "the reconcile waited for the namespace to go");
    assert_eq!(get(client, RisingWave, Some("rw-ingest"), "ingest").await, None);

    let analytics = by_name("analytics");
    assert_eq!(analytics.outcome, Outcome::Retained);
    assert!(analytics.message.contains("Retain"), "{}", analytics.message);
    let ns = get(client, Namespace, None, "rw-analytics").await.expect("kept");
    assert_eq!(ns["metadata"]["labels"]["byoc.risingwave.dev/orphaned"], "true");
    let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("kept");
    assert_eq!(rw["metadata"]["labels"]["byoc.risingwave.dev/orphaned"], "true");
    assert_eq!(rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 3, "untouched");

    // The retained cluster is still reported, and not written again.
    d.clear_requests();
    let again = fx.reconcile(&specs).await;
    assert_eq!(again.clusters.len(), 1);
    assert_eq!(again.clusters[0].outcome, Outcome::Retained);
    assert_eq!(byoc_writes(d), Vec::<String>::new());
}

#[tokio::test]
async fn drift_is_reported_with_its_path_and_set_back() {
    let fx = Fixture::new();
    let client = &fx.client;
    let specs = example("aws");
    assert!(fx.reconcile(&specs).await.ok());

    edit_replicas(client, 9).await;
    let report = fx.reconcile(&specs).await;
    assert!(report.ok(), "{report:#?}");
    let drift = &report.clusters[0].drift;
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].object, "RisingWave rw-analytics/analytics");
    assert_eq!(drift[0].path, ".spec.components.compute.nodeGroups[0].replicas");
    assert_eq!((drift[0].applied.clone(), drift[0].live.clone(), drift[0].corrected), (json!(3), json!(9), true));
    let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
    assert_eq!(rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 3, "restored");
    let managers: Vec<&str> =
        rw["metadata"]["managedFields"].as_array().expect("mf").iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(!managers.contains(&"kubectl-edit"), "the field is ours again: {managers:?}");
}

#[tokio::test]
async fn with_ignore_drift_drift_is_only_reported() {
    let fx = Fixture::new();
    let (d, client) = (&fx.double, &fx.client);
    let mut specs = example("aws");
    specs.clusters[0].ignore_drift = true;
    assert!(fx.reconcile(&specs).await.ok());

    edit_replicas(client, 9).await;
    d.clear_requests();
    let report = fx.reconcile(&specs).await;
    let analytics = &report.clusters[0];
    assert_eq!(analytics.drift.len(), 1, "{analytics:#?}");
    assert!(!analytics.drift[0].corrected);
    assert!(analytics.message.contains("ignoreDrift"), "{}", analytics.message);
    assert_eq!(byoc_writes(d), Vec::<String>::new(), "nothing written");
    let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
    assert_eq!(rw["spec"]["components"]["compute"]["nodeGroups"][0]["replicas"], 9, "left as edited");
}

#[tokio::test]
async fn health_is_ready_stalled_with_the_operators_message_or_timed_out() {
    let fx = Fixture::new();
    let (client, op) = (&fx.client, &fx.operator);
    op.behaviour.lock().expect("lock").insert("analytics".into(), Behaviour::Failed("meta store unreachable: connection refused"));
    op.behaviour.lock().expect("lock").insert("ingest".into(), Behaviour::Upgrading);
    let store = &fx.store;
    let specs = example("aws");
    let mut options = fast();
    options.health_timeout = std::time::Duration::from_millis(600);
    let started = std::time::Instant::now();
    let report = reconcile(client, store, &specs, options.clone()).await;
    let elapsed = started.elapsed();
    assert!(!report.ok());
    let analytics = &report.clusters[0];
    assert_eq!(analytics.outcome, Outcome::Stalled);
    assert!(analytics.message.contains("meta store unreachable: connection refused"), "{}", analytics.message);
    let ingest = &report.clusters[1];
    assert_eq!(ingest.outcome, Outcome::Stalled);
    assert!(ingest.message.contains("not ready after 0.6s") && ingest.message.contains("rolling compute nodes"), "{}", ingest.message);
    // Both deadlines run at once, not one after the other.
    assert!(elapsed < std::time::Duration::from_millis(1100), "{elapsed:?}");

    op.behaviour.lock().expect("lock").clear();
    // Recovery is the operator's to report: wait (bounded) until it has.
    for _ in 0..200 {
        let rw = get(client, RisingWave, Some("rw-analytics"), "analytics").await.expect("rw");
        if rw["status"]["conditions"].as_array().is_some_and(|c| c.iter().all(|c| c["type"] != "Failed")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report = reconcile(client, store, &specs, options).await;
    assert!(report.ok(), "{report:#?}");
    assert!(report.clusters.iter().all(|c| c.outcome == Outcome::Ready));
}

#[tokio::test]
async fn a_lost_inventory_is_rebuilt_without_writes() {
    let fx = Fixture::new();
    let (d, client) = (&fx.double, &fx.client);
    let specs = example("aws");
    assert!(fx.reconcile(&specs).await.ok());

    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = LocalDir::new(dir.path()).expect("state");
    d.clear_requests();
    let report = reconcile(client, &fresh, &specs, fast()).await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(byoc_writes(d), Vec::<String>::new());
    let inventory = byoc::k8s::reconcile::Reconciler::new(client.clone(), &fresh, fast()).await.expect("loads").inventory().clone();
    assert_eq!(inventory.objects.len(), 6, "three objects per cluster recorded again");
}

#[tokio::test]
async fn a_namespace_that_does_not_go_times_out_with_a_clear_message() {
    let fx = Fixture::new();
    fx.double.set_terminate_after(std::time::Duration::from_secs(60));
    let (client, store) = (&fx.client, &fx.store);
    let mut specs = example("aws");
    assert!(fx.reconcile(&specs).await.ok());
    specs.clusters.retain(|c| c.name != "ingest");
    let mut options = fast();
    options.namespace_timeout = std::time::Duration::from_millis(300);
    let mut r = byoc::k8s::reconcile::Reconciler::new(client.clone(), store, options).await.expect("loads");
    let err = r.reconcile(&super::support::objects(&specs)).await.expect_err("times out");
    // Finalizers may still finish: the daemon tries again rather than giving up.
    assert!(matches!(err, byoc::k8s::reconcile::ReconcileError::Terminating { .. }) && err.retryable(), "{err:?}");
    let text = format!("{err:#}");
    assert!(text.contains("namespace rw-ingest of removed cluster ingest is still terminating after 0.3s"), "{text}");
}

#[tokio::test]
async fn gcp_and_azure_service_accounts_carry_their_clouds_identity() {
    let gcp = super::support::objects(&example("gcp"));
    let sa = &gcp[0].objects[1].body;
    let email = sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].as_str().expect("annotation");
    assert!(email.starts_with("byoc-prod-usc1-rw-analytics@") && email.ends_with(".iam.gserviceaccount.com"), "{email}");
    // GKE clusters of one project share a workload-identity pool: the service account's
    // name carries the environment, and the pods run as it.
    assert_eq!(sa["metadata"]["name"], "byoc-prod-usc1");
    let rw = &gcp[0].objects[2].body;
    for component in ["meta", "frontend", "compute", "compactor"] {
        assert_eq!(rw["spec"]["components"][component]["nodeGroups"][0]["template"]["spec"]["serviceAccountName"], "byoc-prod-usc1");
    }

    let azure = example("azure");
    let err = byoc::k8s::objects::desired(&azure, &Default::default()).expect_err("no client id yet").to_string();
    assert!(err.contains("azure.managed-identity/rw-analytics") && err.contains("apply the environment first"), "{err}");
    let outputs = [
        ("azure.managed-identity/rw-analytics".to_owned(), "11111111-2222-3333-4444-555555555555".to_owned()),
        ("azure.managed-identity/rw-ingest".to_owned(), "66666666-2222-3333-4444-555555555555".to_owned()),
    ]
    .into_iter()
    .collect();
    let objs = byoc::k8s::objects::desired(&azure, &outputs).expect("objects");
    assert_eq!(
        objs[0].objects[1].body["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    let rw = &objs[0].objects[2].body;
    assert_eq!(
        rw["spec"]["components"]["compute"]["nodeGroups"][0]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert!(rw["spec"]["stateStore"]["azureBlob"]["endpoint"].as_str().expect("endpoint").ends_with(".blob.core.windows.net"));
}

/// The pull-request plan shows the graph's `k8s.*` resources; what `byoc clusters` applies
/// is built separately, as typed objects. They must say the same thing.
#[test]
fn the_plan_preview_and_the_applied_objects_agree() {
    for cloud in ["aws", "gcp"] {
        let specs = example(cloud);
        let graph = byoc::expand::expand(&specs);
        for c in super::support::objects(&specs) {
            let id = |kind: &str, name: &str| format!("{kind}/{name}");
            let props = |id: String| {
                let r = graph.resources.values().find(|r| r.id.to_string() == id).unwrap_or_else(|| panic!("{id} in the plan"));
                serde_json::to_value(&r.properties).expect("json")
            };
            let planned = props(id("k8s.risingwave", &c.cluster));
            let applied = &c.objects[2].body["spec"];
            assert_eq!(planned["image"], applied["image"], "{cloud} {}", c.cluster);
            for comp in ["meta", "frontend", "compute", "compactor"] {
                let group = &applied["components"][comp]["nodeGroups"][0];
                assert_eq!(planned["components"][comp]["replicas"], group["replicas"], "{cloud} {} {comp}", c.cluster);
                assert_eq!(planned["components"][comp]["cpu"], group["template"]["spec"]["resources"]["limits"]["cpu"]);
                assert_eq!(planned["components"][comp]["memory"], group["template"]["spec"]["resources"]["limits"]["memory"]);
                assert_eq!(planned["nodeSelector"], group["template"]["spec"]["nodeSelector"]);
                let tolerations: Vec<(&serde_json::Value, &serde_json::Value)> = group["template"]["spec"]["tolerations"]
                    .as_array()
                    .map(|t| t.iter().map(|t| (&t["key"], &t["effect"])).collect())
                    .unwrap_or_default();
                let planned_tolerations: Vec<(&serde_json::Value, &serde_json::Value)> =
                    planned["tolerations"].as_array().expect("list").iter().map(|t| (&t["key"], &t["effect"])).collect();
                assert_eq!(planned_tolerations, tolerations, "{cloud} {} {comp}", c.cluster);
            }
            assert_eq!(planned["stateStore"]["dataDirectory"], applied["stateStore"]["dataDirectory"]);
            let ns = props(id("k8s.namespace", &c.cluster));
            assert_eq!(ns["name"], c.objects[0].body["metadata"]["name"]);
            // The plan shows the state store as the object carries it (credentials included).
            let backend = planned["stateStore"]["backend"].as_object().expect("backend");
            for (kind, value) in backend {
                assert_eq!(value, &applied["stateStore"][kind], "{cloud} {} stateStore.{kind}", c.cluster);
            }
            assert!(!graph.resources.values().any(|r| r.id.to_string().starts_with("k8s.service/")), "{cloud}: no Service is planned");
        }
    }
}
