//! The in-cluster half of a GCP environment: `byoc apply` of examples/gcp with
//! `--kubeconfig` to the Kubernetes double (loaded with the risingwave-operator's CRD and
//! GKE's ServiceAttachment CRD, tests/fixtures/gke/) and the cloud on the GCP fake. What
//! exists is read back from the double and the fake, never from byoc's state.

use std::collections::BTreeMap;
use std::time::Duration;

use gcp_double::{Double, Options};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use crate::support::{Repo, Run, byoc};

const PROJECT: &str = "acme-data-prod";
/// GKE's ServiceAttachment CRD, written from ingress-gce's API types.
const GKE_CRD: &str = include_str!("../fixtures/gke/serviceattachments.crd.yaml");

/// Every type the sidecar and the clusters' objects use: (group, version, kind, plural).
const TYPES: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("apps", "v1", "Deployment", "deployments"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles"),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings"),
    ("networking.gke.io", "v1", "ServiceAttachment", "serviceattachments"),
    ("risingwave.risingwavelabs.com", "v1alpha1", "RisingWave", "risingwaves"),
];

fn kube_double() -> kube_double::Double {
    let d = kube_double::Double::new(&[crate::kube::support::crd(), GKE_CRD]).expect("the CRDs load");
    d.set_terminate_after(Duration::from_millis(50));
    d
}

fn gcp_double() -> Double {
    let o = Options {
        project: PROJECT.into(),
        region: "us-central1".into(),
        gcs_upstream: Some(crate::state_gcs::start_fake_gcs()),
        ..Options::default()
    };
    Double::spawn(o).expect("the fake starts")
}

fn example_repo() -> Repo {
    let mut repo = Repo::new();
    repo.copy_from_project("examples/gcp", "examples/gcp");
    repo.commit("gcp example");
    repo
}

/// `byoc apply` of examples/gcp, the cloud on `url`, the cluster through `kubeconfig`.
async fn apply(repo: &Repo, url: &str, kubeconfig: &str) -> Run {
    let dir = repo.path().to_path_buf();
    let (url, kubeconfig) = (url.to_owned(), kubeconfig.to_owned());
    tokio::task::spawn_blocking(move || {
        let args = [
            "apply",
            "--repo",
            ".",
            "--env",
            "examples/gcp",
            "--endpoint-url",
            &url,
            "--state-dir",
            "state",
            "--poll-interval",
            "0.05",
            "--auto-approve",
            "--kubeconfig",
            &kubeconfig,
            "--health-timeout",
            "10",
        ];
        byoc(&dir, &args)
    })
    .await
    .expect("join")
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "byoc failed\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// Every object of [`TYPES`] the double holds, by `Kind namespace/name`.
async fn cluster(client: &kube::Client) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (group, version, kind, plural) in TYPES {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        for o in api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list {plural}: {e}")).items {
            let mut v = serde_json::to_value(&o).expect("json");
            // When a field manager last applied is not a change of the object (a real API
            // server leaves a no-op apply's managedFields alone; the double stamps them).
            for m in v.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(m) = m.as_object_mut() {
                    m.remove("time");
                }
            }
            let ns = o.metadata.namespace.clone().map(|n| format!("{n}/")).unwrap_or_default();
            out.insert(format!("{kind} {ns}{}", o.metadata.name.clone().unwrap_or_default()), v);
        }
    }
    out
}

/// The control plane's projects examples/gcp accepts.
fn control_plane_projects() -> Vec<String> {
    crate::kube::support::example("gcp").environment.control_plane_principals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_publishes_both_services_through_gke_service_attachments_and_a_second_apply_changes_nothing() {
    let d = kube_double();
    let (_server, _dir, kubeconfig) = crate::kube::support::served(&d).await;
    let client = d.client();
    let _op = crate::kube::support::operator(&client);
    let gcp = gcp_double();
    let repo = example_repo();

    let first = apply(&repo, &gcp.url(), &kubeconfig).await;
    ok(&first);
    let held = cluster(&client).await;
    let attachments: Vec<(&String, &Value)> = held.iter().filter(|(k, _)| k.starts_with("ServiceAttachment ")).collect();
    let names: Vec<&str> = attachments.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["ServiceAttachment byoc-system/byoc-prod-usc1-agent", "ServiceAttachment byoc-system/byoc-prod-usc1-proxy"],
        "{:?}",
        held.keys().collect::<Vec<_>>()
    );
    // The PSC subnetwork the fake holds is the one both name.
    let subnetworks = gcp.snapshot()[format!("projects/{PROJECT}/regions/us-central1/subnetworks")].clone();
    assert_eq!(subnetworks["byoc-prod-usc1-psc"]["purpose"], "PRIVATE_SERVICE_CONNECT");
    for ((_, a), service) in attachments.iter().zip(["byoc-agent", "rwproxy"]) {
        let spec = &a["spec"];
        assert_eq!(spec["natSubnets"], serde_json::json!(["byoc-prod-usc1-psc"]), "{a}");
        assert_eq!(spec["resourceRef"]["kind"], "Service", "{a}");
        assert_eq!(spec["resourceRef"]["name"], service, "{a}");
        assert!(held.contains_key(&format!("Service byoc-system/{service}")), "the Service it publishes exists");
        let projects: Vec<String> = spec["consumerAllowList"]
            .as_array()
            .expect("allow list")
            .iter()
            .filter_map(|p| p["project"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(projects, control_plane_projects(), "{a}");
        assert_eq!(spec["connectionPreference"], "ACCEPT_MANUAL", "{a}");
    }
    // The sidecar acts as the agent's Google account (workload identity).
    let sa = &held["ServiceAccount byoc-system/byoc"];
    assert_eq!(
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        format!("byoc-prod-usc1-agent@{PROJECT}.iam.gserviceaccount.com"),
        "{sa}"
    );
    assert!(!held.contains_key("Service byoc-system/rwproxy-public"), "no publicProxy in the example");

    let cloud_writes = gcp.writes();
    let second = apply(&repo, &gcp.url(), &kubeconfig).await;
    ok(&second);
    assert_eq!(cluster(&client).await, held, "a second apply changes nothing in the cluster");
    assert_eq!(gcp.writes(), cloud_writes, "nor in the cloud");
}

/// Acceptance 2 of issue 19, "removing the external load balancer deletes exactly its
/// resources": with `publicProxy`, apply; drop it and apply again: the `proxy-public`
/// firewall rule and the `rwproxy-public` Service go; in the fake and in the cluster
/// nothing else changes but the SQL port's NetworkPolicy, which lets the public CIDRs in
/// only while the public proxy exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_public_proxy_deletes_exactly_its_firewall_rule_and_service() {
    let d = kube_double();
    let (_server, _dir, kubeconfig) = crate::kube::support::served(&d).await;
    let client = d.client();
    let _op = crate::kube::support::operator(&client);
    let gcp = gcp_double();
    let mut repo = example_repo();
    let public = "  exposure:\n    proxy:\n      port: 4566\n      public:\n        allowedCidrs: [203.0.113.0/24]\n  controlPlane:";
    repo.edit("examples/gcp/environment.yaml", "  controlPlane:", public);
    repo.commit("a public proxy");

    ok(&apply(&repo, &gcp.url(), &kubeconfig).await);
    let firewalls = format!("projects/{PROJECT}/global/firewalls");
    let before_cloud = gcp.snapshot();
    let before = cluster(&client).await;
    assert!(before_cloud[&firewalls].get("byoc-prod-usc1-proxy-public").is_some(), "{}", before_cloud[&firewalls]);
    let public_service = before.get("Service byoc-system/rwproxy-public").expect("the public Service").clone();
    assert_eq!(public_service["spec"]["loadBalancerSourceRanges"], serde_json::json!(["203.0.113.0/24"]));

    repo.edit("examples/gcp/environment.yaml", public, "  controlPlane:");
    repo.commit("no public proxy");
    let r = apply(&repo, &gcp.url(), &kubeconfig).await;
    ok(&r);
    assert!(r.stdout.contains("deleted Service byoc-system/rwproxy-public"), "{}", r.stdout);

    let mut want_cloud = before_cloud.clone();
    want_cloud[&firewalls].as_object_mut().expect("firewalls").remove("byoc-prod-usc1-proxy-public");
    assert_eq!(gcp.snapshot(), want_cloud, "only the proxy-public firewall rule left the cloud");

    let after = cluster(&client).await;
    let gone: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert_eq!(gone, ["Service byoc-system/rwproxy-public"]);
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(new.is_empty(), "{new:?}");
    let changed: Vec<&String> = after.keys().filter(|k| before[*k] != after[*k]).collect();
    assert_eq!(changed, ["NetworkPolicy byoc-system/rwproxy"], "nothing else changed");
    let cidrs = |p: &Value| -> Vec<String> {
        p["spec"]["ingress"][0]["from"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["ipBlock"]["cidr"].as_str().map(str::to_owned))
            .collect()
    };
    let (was, is) = (cidrs(&before["NetworkPolicy byoc-system/rwproxy"]), cidrs(&after["NetworkPolicy byoc-system/rwproxy"]));
    assert_eq!(was.iter().filter(|c| !is.contains(c)).collect::<Vec<_>>(), ["203.0.113.0/24"], "{was:?} -> {is:?}");
}

/// A cluster without the risingwave-operator (so without its CRD): the apply stops before
/// changing anything, saying what to install, instead of a bare 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_risingwave_operator_is_refused_with_what_to_install() {
    let d = kube_double::Double::new(&[GKE_CRD]).expect("the CRD loads");
    let (_server, _dir, kubeconfig) = crate::kube::support::served(&d).await;
    let gcp = gcp_double();
    let repo = example_repo();

    let refused = apply(&repo, &gcp.url(), &kubeconfig).await;
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("install the risingwave-operator in the cluster first"),
        "the error says what is missing: {}",
        refused.stderr
    );
    assert!(d.writes().is_empty(), "nothing written in the cluster: {:?}", d.writes());
    assert!(!refused.stdout.contains("applied "), "nothing applied in the cloud: {}", refused.stdout);
}
