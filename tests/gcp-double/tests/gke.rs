//! The real `google-cloud-container-v1` client against the fake.

mod common;

use common::{anonymous, client_reason, network_with_subnets, raw};
use gcp_double::{Double, Options};
use google_cloud_container_v1::client::ClusterManager;
use google_cloud_container_v1::model::{
    Cluster, ClusterUpdate, IPAllocationPolicy, NodeConfig, NodePool, NodePoolAutoscaling, WorkloadIdentityConfig, cluster, node_pool,
    operation,
};
use serde_json::json;

const P: &str = "byoc-test-project";
const PARENT: &str = "projects/byoc-test-project/locations/us-central1";

async fn client(double: &Double) -> ClusterManager {
    common::init();
    ClusterManager::builder().with_endpoint(double.url()).with_credentials(anonymous()).build().await.expect("client")
}

fn cluster(name: &str) -> Cluster {
    Cluster::new()
        .set_name(name)
        .set_network("vpc")
        .set_subnetwork("nodes")
        .set_ip_allocation_policy(
            IPAllocationPolicy::new()
                .set_use_ip_aliases(true)
                .set_cluster_secondary_range_name("pods")
                .set_services_secondary_range_name("services"),
        )
        .set_workload_identity_config(WorkloadIdentityConfig::new().set_workload_pool(format!("{P}.svc.id.goog")))
        .set_node_pools([NodePool::new()
            .set_name("system")
            .set_initial_node_count(1)
            .set_config(NodeConfig::new().set_machine_type("e2-standard-4"))])
}

/// Polls a GKE operation until DONE (bounded).
async fn wait(c: &ClusterManager, op: &google_cloud_container_v1::model::Operation) {
    let name = format!("{PARENT}/operations/{}", op.name);
    for _ in 0..10 {
        let got = c.get_operation().set_name(&name).send().await.expect("get operation");
        if got.status == operation::Status::Done {
            return;
        }
    }
    panic!("operation {name} never DONE");
}

#[tokio::test]
async fn cluster_provisions_then_runs_with_its_endpoint_and_pool() {
    let double = Double::spawn(Options::default()).expect("spawn");
    network_with_subnets(&double.url(), P);
    let c = client(&double).await;
    let op = c.create_cluster().set_parent(PARENT).set_cluster(cluster("rw")).send().await.expect("create");
    assert_eq!(op.operation_type, operation::Type::CreateCluster);
    assert!(op.target_link.ends_with("/projects/byoc-test-project/locations/us-central1/clusters/rw"), "{op:?}");
    let got = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("get");
    assert_eq!(got.status, cluster::Status::Provisioning);
    // The location's operations list the running create (how a rerun finds it); listing
    // advances nothing.
    for _ in 0..3 {
        let listed = c.list_operations().set_parent(PARENT).send().await.expect("list operations").operations;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].name, op.name);
        assert_ne!(listed[0].status, operation::Status::Done);
    }
    assert!(got.endpoint.is_empty(), "no endpoint while provisioning");
    let err = c
        .create_node_pool()
        .set_parent(format!("{PARENT}/clusters/rw"))
        .set_node_pool(NodePool::new().set_name("compute").set_initial_node_count(1))
        .send()
        .await
        .expect_err("busy");
    assert_eq!(err.http_status_code(), Some(400), "one operation at a time: {err:?}");
    wait(&c, &op).await;
    let got = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("get");
    assert_eq!(got.status, cluster::Status::Running);
    assert!(!got.endpoint.is_empty());
    assert_eq!(got.workload_identity_config.map(|w| w.workload_pool), Some(format!("{P}.svc.id.goog")));
    assert_eq!(got.node_pools.len(), 1);
    assert_eq!(got.node_pools[0].status, node_pool::Status::Running);
    let all = c.list_clusters().set_parent(format!("projects/{P}/locations/-")).send().await.expect("list every location");
    assert_eq!(all.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["rw"]);
    let err = c.create_cluster().set_parent(PARENT).set_cluster(cluster("rw")).send().await.expect_err("taken");
    assert_eq!(err.http_status_code(), Some(409));

    // A node pool, resized and autoscaled.
    let op = c
        .create_node_pool()
        .set_parent(format!("{PARENT}/clusters/rw"))
        .set_node_pool(
            NodePool::new().set_name("compute").set_initial_node_count(2).set_config(NodeConfig::new().set_machine_type("n2-standard-8")),
        )
        .send()
        .await
        .expect("node pool");
    wait(&c, &op).await;
    let op =
        c.set_node_pool_size().set_name(format!("{PARENT}/clusters/rw/nodePools/compute")).set_node_count(5).send().await.expect("setSize");
    assert_eq!(op.operation_type, operation::Type::SetNodePoolSize);
    wait(&c, &op).await;
    let op = c
        .set_node_pool_autoscaling()
        .set_name(format!("{PARENT}/clusters/rw/nodePools/compute"))
        .set_autoscaling(NodePoolAutoscaling::new().set_enabled(true).set_min_node_count(1).set_max_node_count(9))
        .send()
        .await
        .expect("setAutoscaling");
    wait(&c, &op).await;
    let sizes = double.snapshot()[format!("{PARENT}/clusters/rw/nodePoolSizes")].clone();
    assert_eq!(sizes, json!({"system": {"nodeCount": 1}, "compute": {"nodeCount": 5}}));
    // `currentNodeCount` is deprecated in the client's model; read it raw.
    let (_, raw_cluster) = raw(&double.url(), "GET", &format!("/v1/{PARENT}/clusters/rw"), None);
    assert_eq!(raw_cluster["currentNodeCount"], json!(6));
    let pool = c.get_node_pool().set_name(format!("{PARENT}/clusters/rw/nodePools/compute")).send().await.expect("get pool");
    assert_eq!(pool.autoscaling.map(|a| (a.min_node_count, a.max_node_count)), Some((1, 9)));
    let err = c
        .set_node_pool_autoscaling()
        .set_name(format!("{PARENT}/clusters/rw/nodePools/compute"))
        .set_autoscaling(NodePoolAutoscaling::new().set_enabled(true).set_min_node_count(5).set_max_node_count(2))
        .send()
        .await
        .expect_err("min > max");
    assert_eq!(err.http_status_code(), Some(400));
    let list = c.list_node_pools().set_parent(format!("{PARENT}/clusters/rw")).send().await.expect("list");
    assert_eq!(list.node_pools.len(), 2);

    // Labels: the current fingerprint wins once; a held one is then stale.
    let held = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("get").label_fingerprint;
    let op = c
        .set_labels()
        .set_name(format!("{PARENT}/clusters/rw"))
        .set_resource_labels([("byoc-env", "prod")])
        .set_label_fingerprint(&held)
        .send()
        .await
        .expect("setResourceLabels");
    assert_eq!(op.operation_type, operation::Type::UpdateCluster, "SET_LABELS is deprecated in the API");
    wait(&c, &op).await;
    let err = c
        .set_labels()
        .set_name(format!("{PARENT}/clusters/rw"))
        .set_resource_labels([("byoc-env", "dev")])
        .set_label_fingerprint(&held)
        .send()
        .await
        .expect_err("stale label fingerprint");
    assert_eq!(err.http_status_code(), Some(400));
    assert_eq!(err.status().map(|s| s.code), Some(google_cloud_gax::error::rpc::Code::FailedPrecondition));
    let got = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("get");
    assert_eq!(got.resource_labels.get("byoc-env").map(String::as_str), Some("prod"));
    assert_ne!(got.label_fingerprint, held);

    // update: exactly one desired field.
    let op = c
        .update_cluster()
        .set_name(format!("{PARENT}/clusters/rw"))
        .set_update(ClusterUpdate::new().set_desired_master_version("1.34"))
        .send()
        .await
        .expect("update");
    wait(&c, &op).await;
    let two = ClusterUpdate::new().set_desired_master_version("1.34").set_desired_logging_service("none");
    let err = c.update_cluster().set_name(format!("{PARENT}/clusters/rw")).set_update(two).send().await.expect_err("two updates");
    assert_eq!(err.http_status_code(), Some(400));

    // The subnetwork is in use by the cluster; after the delete it is not.
    let (status, op) = raw(&double.url(), "DELETE", &format!("/compute/v1/projects/{P}/regions/us-central1/subnetworks/nodes"), None);
    assert_eq!(status, 200, "{op}");
    let link = op["selfLink"].as_str().expect("operation link").to_owned();
    let path = &link[link.find("/compute/v1/").expect("path")..];
    let polled: Vec<_> = (0..2).map(|_| raw(&double.url(), "GET", path, None).1).collect();
    assert_eq!(polled[1]["status"], json!("DONE"));
    assert_eq!(polled[1]["error"]["errors"][0]["code"], json!("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"), "{}", polled[1]);
    let op = c.delete_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("delete");
    let got = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect("still there");
    assert_eq!(got.status, cluster::Status::Stopping);
    wait(&c, &op).await;
    let err = c.get_cluster().set_name(format!("{PARENT}/clusters/rw")).send().await.expect_err("gone");
    assert_eq!(err.http_status_code(), Some(404));
    assert!(double.snapshot().get(format!("{PARENT}/clusters/rw/nodePools")).is_none(), "its node pools went with it");
}

#[tokio::test]
async fn clusters_refuse_what_gke_refuses() {
    let double = Double::spawn(Options::default()).expect("spawn");
    network_with_subnets(&double.url(), P);
    let c = client(&double).await;
    let cases = [
        ("name too long", cluster(&"c".repeat(41)), 400),
        ("PSC subnetwork for nodes", cluster("a").set_subnetwork("psc").set_ip_allocation_policy(IPAllocationPolicy::new()), 400),
        (
            "missing secondary range",
            cluster("a").set_ip_allocation_policy(IPAllocationPolicy::new().set_cluster_secondary_range_name("nope")),
            400,
        ),
        (
            "wrong workload pool",
            cluster("a").set_workload_identity_config(WorkloadIdentityConfig::new().set_workload_pool("x.svc.id.goog")),
            400,
        ),
        ("missing subnetwork", cluster("a").set_subnetwork("nope"), 404),
        ("missing network", cluster("a").set_network("nope"), 404),
        ("no nodes", cluster("a").set_node_pools(Vec::<NodePool>::new()), 400),
        ("label key with a capital", cluster("a").set_resource_labels([("Env", "prod")]), 400),
        ("label value too long", cluster("a").set_resource_labels([("env", "x".repeat(64))]), 400),
    ];
    for (what, cl, code) in cases {
        let err = c.create_cluster().set_parent(PARENT).set_cluster(cl).send().await.expect_err(what);
        assert_eq!(err.http_status_code(), Some(code), "{what}: {err:?}");
    }
    let err = c
        .create_node_pool()
        .set_parent(format!("{PARENT}/clusters/missing"))
        .set_node_pool(NodePool::new().set_name("p").set_initial_node_count(1))
        .send()
        .await
        .expect_err("missing cluster");
    assert_eq!(err.http_status_code(), Some(404));
    assert_eq!(client_reason(&err), "notFound");
    let (status, body) = raw(
        &double.url(),
        "POST",
        &format!("/v1/{PARENT}/clusters"),
        Some(&json!({"cluster": {"name": "l", "initialNodeCount": 1, "network": "vpc", "labels": {"a": "b"}}})),
    );
    assert_eq!(status, 400, "{body}");
    let err = c
        .create_cluster()
        .set_parent(format!("projects/{P}/locations/us-nowhere1"))
        .set_cluster(cluster("a"))
        .send()
        .await
        .expect_err("bad region");
    assert_eq!(err.http_status_code(), Some(400));
    // A list in a location GKE lacks is refused too (preflight's region check calls it),
    // with GKE's status and message.
    let err = c.list_clusters().set_parent(format!("projects/{P}/locations/us-nowhere1")).send().await.expect_err("list, bad region");
    assert_eq!(err.http_status_code(), Some(400));
    let status = err.status().expect("a service error");
    assert_eq!(status.code, google_cloud_gax::error::rpc::Code::InvalidArgument);
    assert_eq!(status.message, "Location \"us-nowhere1\" does not exist.");
    c.create_cluster()
        .set_parent(PARENT)
        .set_cluster(cluster("ok").set_resource_labels([("byoc-env", "prod")]))
        .send()
        .await
        .expect("valid labels");
    let clusters = double.snapshot()[format!("{PARENT}/clusters")].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(clusters, Some(vec!["ok".to_owned()]), "only the valid cluster was stored");
}
