//! Least privilege, shown: `byoc run` (the real binary) reconciles against the Kubernetes
//! API double, which records every request; each request becomes the (verb, group,
//! resource, namespace) the API server's authorizer would check, and these are compared
//! with the RBAC rules `manifests/` renders (through a real kustomize) for the daemon's
//! ServiceAccount: every call is allowed, and every verb of every rule is used.
//!
//! The scenario covers what the daemon does to Kubernetes: create two clusters, then in one
//! signed commit remove one with `deletionPolicy: Delete` (deleted), remove one with
//! `Retain` (labelled orphaned) and add a third.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Signed;
use crate::kube::support::{double, operator};
use crate::manifests::{kustomize, object};

/// What an authorizer checks for one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
}

/// The request's verb and resource as the API server's RequestInfo names them.
fn access(method: &http::Method, uri: &str) -> Access {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource path: {uri}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces"] | ["namespaces", _] | ["namespaces", _, "status"] => (None, rest),
        ["namespaces", ns, rest @ ..] => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, named) = match rest {
        [plural] => ((*plural).to_owned(), false),
        [plural, _name] => ((*plural).to_owned(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => panic!("not a resource path: {uri}"),
    };
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("unexpected method {m} {uri}"),
    };
    Access { verb: verb.to_owned(), group: group.to_owned(), resource, namespace }
}

/// One (verb, group, resource) a rule grants, and the namespace it is limited to (a Role's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
}

/// The grants of the roles bound to the daemon's ServiceAccount in the rendered manifests.
fn grants(objects: &[Value]) -> Vec<Grant> {
    let deployment = object(objects, "Deployment", "byoc");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"].as_str().expect("serviceAccountName");
    let sa_ns = deployment["metadata"]["namespace"].as_str().expect("namespace");
    let mut out = Vec::new();
    for binding in objects.iter().filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding") {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_ns) {
            continue;
        }
        let role = object(objects, binding["roleRef"]["kind"].as_str().expect("kind"), binding["roleRef"]["name"].as_str().expect("name"));
        // A RoleBinding limits even a ClusterRole to its own namespace.
        let namespace = (binding["kind"] == "RoleBinding").then(|| binding["metadata"]["namespace"].as_str().expect("ns").to_owned());
        for rule in role["rules"].as_array().expect("rules") {
            assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "unexpected rule shape: {rule}");
            for verb in rule["verbs"].as_array().expect("verbs") {
                assert_ne!(verb, "*", "no wildcard verbs: {rule}");
                for group in rule["apiGroups"].as_array().expect("apiGroups") {
                    for resource in rule["resources"].as_array().expect("resources") {
                        assert_ne!(resource, "*", "no wildcard resources: {rule}");
                        out.push(Grant {
                            verb: verb.as_str().expect("verb").to_owned(),
                            group: group.as_str().expect("group").to_owned(),
                            resource: resource.as_str().expect("resource").to_owned(),
                            namespace: namespace.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

fn allows(g: &Grant, a: &Access) -> bool {
    g.verb == a.verb
        && g.group == a.group
        && g.resource == a.resource
        && g.namespace.as_ref().is_none_or(|ns| Some(ns) == a.namespace.as_ref())
}

const REPORTS: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: reports\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    frontend: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    compute: {replicas: 1, cpu: \"1\", memory: 4Gi}\n    compactor: {replicas: 1, cpu: \"1\", memory: 2Gi}\n  stateStore:\n    prefix: reports\n  deletionPolicy: Delete\n";

/// The rendered grants of the base, once.
fn rendered() -> Vec<Grant> {
    let objects = kustomize(&crate::support::project_root().join("manifests/base"));
    let grants = grants(&objects);
    assert!(!grants.is_empty(), "the daemon's ServiceAccount is bound to roles");
    grants
}

/// The double's RBAC for the daemon's token: the grants, less `without`.
fn enforced(grants: &[Grant], without: Option<&Grant>) -> kube_double::rbac::Rbac {
    kube_double::rbac::Rbac {
        token: "double".into(), // the kubeconfig's token: the daemon's requests
        user: "system:serviceaccount:byoc-system:byoc".into(),
        rules: grants
            .iter()
            .filter(|g| Some(*g) != without)
            .map(|g| kube_double::rbac::Rule {
                verbs: vec![g.verb.clone()],
                api_groups: vec![g.group.clone()],
                resources: vec![g.resource.clone()],
                namespace: g.namespace.clone(),
            })
            .collect(),
    }
}

/// The scenario under `rbac`, with the real binary (`byoc run --once`, twice): the
/// daemon's requests, or the stderr of the run that failed.
async fn scenario(rbac: kube_double::rbac::Rbac) -> Result<Vec<kube_double::Recorded>, String> {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());
    // The daemon's own namespace, where its Lease lives (the manifests make it).
    let namespaces: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(d.client(), &byoc::k8s::objects::ObjectKind::Namespace.api_resource());
    let own = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "byoc-system"}});
    namespaces.create(&Default::default(), &serde_json::from_value(own).expect("object")).await.expect("byoc-system");
    d.set_rbac(Some(rbac));

    let mut s = Signed::new();
    s.default_policy();
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("env"));
    s.commit(Some("alice"), "environment");
    let work = s.dir.path().to_owned();
    let remote = work.join("remote.git");
    s.git(&["clone", "-q", "--bare", ".", &remote.display().to_string()]);
    s.git(&["remote", "add", "origin", &remote.display().to_string()]);
    std::fs::write(work.join("kubeconfig"), kube_double::kubeconfig(&format!("http://{api_addr}"))).expect("kubeconfig");
    std::fs::write(
        work.join("reconciler.yaml"),
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: rbac}}\nspec:\n  repository: {{url: \"file://{}\", branch: main}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{dir: daemon-state}}\n  publishDir: publish\n  cacheDir: cache\n  listen: \"127.0.0.1:0\"\n  kubernetes: {{kubeconfig: kubeconfig}}\n  leaderElection: {{namespace: byoc-system, leaseDuration: 3s}}\n",
            remote.display()
        ),
    )
    .expect("config");
    let once = || {
        let out = crate::support::tied_byoc()
            .args(["run", "--config", "reconciler.yaml", "--once"])
            .current_dir(&work)
            .output()
            .expect("byoc runs");
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    };
    // Only the daemon's requests (its kubeconfig's token): the stand-in operator's and the
    // test's own carry none.
    let daemons = |d: &kube_double::Double| d.requests().into_iter().filter(|r| r.token.as_deref() == Some("double")).collect::<Vec<_>>();
    once()?;
    let mut requests = daemons(&d);
    // A frontend Service as earlier versions of byoc made it, which the removal deletes.
    let legacy = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ingest-frontend-legacy", "namespace": "rw-ingest", "labels": {
            "app.kubernetes.io/managed-by": "byoc", "byoc.risingwave.dev/cluster": "ingest"}},
        "spec": {"ports": [{"port": 4566}]},
    });
    let services: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(d.client(), "rw-ingest", &byoc::k8s::objects::ObjectKind::Service.api_resource());
    services.create(&Default::default(), &serde_json::from_value(legacy).expect("object")).await.expect("legacy service");
    d.clear_requests();
    // One commit: ingest (Delete) removed, analytics (Retain) removed, reports added.
    std::fs::remove_file(s.repo().join("env/clusters/ingest.yaml")).expect("rm");
    std::fs::remove_file(s.repo().join("env/clusters/analytics.yaml")).expect("rm");
    s.write("env/clusters/reports.yaml", REPORTS);
    s.write(
        "env/routes.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata:\n  name: default\nspec:\n  routes:\n    - name: reports-db\n      match: {database: reports}\n      cluster: reports\n      allowedCidrs: [10.20.0.0/16]\n",
    );
    s.commit(Some("bob"), "replace the clusters");
    s.git(&["push", "-q", "origin", "main"]);
    once()?;
    requests.extend(daemons(&d));
    Ok(requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_rbac_allows_every_call_the_daemon_makes_and_nothing_it_does_not() {
    let grants = rendered();
    // The double enforces the rendered rules for the daemon's token: the scenario passes.
    let requests = scenario(enforced(&grants, None)).await.unwrap_or_else(|stderr| panic!("refused under the rendered RBAC:\n{stderr}"));
    let kinds: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.uri.split('?').next().unwrap_or("")))
        .collect();
    assert!(kinds.iter().any(|k| k.starts_with("DELETE /api/v1/namespaces/rw-ingest")), "the scenario deleted a cluster: {kinds:#?}");
    assert!(kinds.iter().any(|k| k.starts_with("PATCH /api/v1/namespaces/rw-analytics")), "the scenario orphaned a cluster: {kinds:#?}");
    assert!(kinds.contains("DELETE /api/v1/namespaces/rw-ingest/services/ingest-frontend-legacy"), "{kinds:#?}");
    assert!(requests.iter().all(|r| r.status != 403), "refused under the rendered RBAC");
    let calls: BTreeSet<Access> = requests.iter().map(|r| access(&r.method, &r.uri)).collect();

    // Every call is allowed...
    let denied: Vec<&Access> = calls.iter().filter(|a| !grants.iter().any(|g| allows(g, a))).collect();
    assert!(denied.is_empty(), "calls the rendered RBAC would refuse (403):\n{denied:#?}");
    // ...and every grant is used. Leases are the leader election's, in the daemon's own
    // namespace (in the pod its service account's; here named in the config, as the pod
    // would find it): judged like the rest once the build calls them.
    let leader_election = calls.iter().any(|a| a.resource == "leases");
    let unused: Vec<&Grant> =
        grants.iter().filter(|g| (g.resource != "leases" || leader_election) && !calls.iter().any(|a| allows(g, a))).collect();
    assert!(unused.is_empty(), "rules the daemon never uses (least privilege: remove them):\n{unused:#?}\ncalls:\n{calls:#?}");
    // Cluster-wide grants only on the clusters' namespaces and what they hold.
    for g in grants.iter().filter(|g| g.namespace.is_none()) {
        assert!(["namespaces", "serviceaccounts", "services", "risingwaves"].contains(&g.resource.as_str()), "{g:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_one_rule_the_daemon_fails_with_a_403_naming_its_verb_and_resource() {
    let grants = rendered();
    let mut judged = 0;
    for g in &grants {
        // A refused Lease (get, create, or update on renewal) ends the daemon after a few
        // tries in a row (a 3 s lease: one every 500 ms) with the API server's 403.
        let Err(stderr) = scenario(enforced(&grants, Some(g))).await else {
            panic!("the scenario passed without {g:?}: the rule is not needed");
        };
        let scope = match &g.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "in the namespace \"rw-".to_owned(),
        };
        let needle = format!("cannot {} resource \"{}\" in API group \"{}\"", g.verb, g.resource, g.group);
        assert!(stderr.contains(&needle), "without {g:?} the daemon must say {needle:?}:\n{stderr}");
        assert!(stderr.contains(&scope) || stderr.contains("at the cluster scope"), "{stderr}");
        judged += 1;
    }
    assert_eq!(judged, grants.len());
    assert!(grants.iter().filter(|g| g.resource == "leases").count() >= 3, "get, create and update on leases are judged too");
    assert!(judged >= 13, "{judged}");
}

#[test]
fn request_paths_map_to_the_authorizers_verbs() {
    let a = access(
        &http::Method::PATCH,
        "/apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/rw-a/risingwaves/a?fieldManager=byoc&force=true",
    );
    assert_eq!(
        (a.verb.as_str(), a.group.as_str(), a.resource.as_str(), a.namespace.as_deref()),
        ("patch", "risingwave.risingwavelabs.com", "risingwaves", Some("rw-a"))
    );
    let a = access(&http::Method::GET, "/api/v1/namespaces?labelSelector=x%3Dy");
    assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace), ("list", "namespaces", None));
    let a = access(&http::Method::GET, "/api/v1/namespaces/rw-a");
    assert_eq!((a.verb.as_str(), a.namespace), ("get", None));
    let a = access(&http::Method::DELETE, "/api/v1/namespaces/rw-a/services/x");
    assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_deref()), ("delete", "services", Some("rw-a")));
    let a = access(&http::Method::GET, "/apis/coordination.k8s.io/v1/namespaces/byoc-system/leases/byoc?watch=true");
    assert_eq!(a.verb, "watch");
}
