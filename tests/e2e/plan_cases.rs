//! `byoc plan` over real git revisions: one test per kind of change in the acceptance list,
//! each checking the actions, their reasons and the exit code.

use serde_json::Value;

use super::support::{Repo, Run, byoc};

const ENV: &str = "envs/prod";
const ANALYTICS: &str = "envs/prod/clusters/analytics.yaml";

/// A repository whose first commit holds examples/aws at envs/prod.
fn repo_with_example() -> (Repo, String) {
    let mut repo = Repo::new();
    repo.copy_from_project("examples/aws", ENV);
    let base = repo.commit("add prod environment");
    (repo, base)
}

fn plan_json(repo: &Repo, base: &str) -> (Run, Value) {
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", base, "--head", "HEAD", "--env", ENV, "--output", "json"]);
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", run.stdout, run.stderr));
    (run, json)
}

/// The steps that are not no-ops, as (action, id).
fn changed(json: &Value) -> Vec<(String, String)> {
    json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] != "no-op")
        .map(|s| (s["action"].as_str().expect("action").to_owned(), s["id"].as_str().expect("id").to_owned()))
        .collect()
}

fn step<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["steps"].as_array().expect("steps").iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}"))
}

#[test]
fn a_resizing_a_cluster_updates_only_its_risingwave_resource() {
    let (mut repo, base) = repo_with_example();
    repo.edit(ANALYTICS, "compute: {replicas: 3", "compute: {replicas: 6");
    repo.commit("scale analytics compute to 6");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(changed(&json), [("update".to_owned(), "k8s.risingwave/analytics".to_owned())]);
    let s = step(&json, "k8s.risingwave/analytics");
    assert_eq!(
        s["changes"],
        serde_json::json!([{"path": "components.compute.replicas", "before": 3, "after": 6, "forcesReplacement": false}])
    );
    assert_eq!(json["summary"]["update"], 1);
}

#[test]
fn a_node_group_resize_is_an_update_not_a_replacement() {
    let (mut repo, base) = repo_with_example();
    repo.edit("envs/prod/environment.yaml", "min: 4\n        max: 12", "min: 4\n        max: 20");
    repo.commit("grow the risingwave node group");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 2);
    assert_eq!(changed(&json), [("update".to_owned(), "aws.eks-nodegroup/risingwave".to_owned())]);
}

#[test]
fn b_adding_a_cluster_creates_its_objects_and_identity() {
    let (mut repo, base) = repo_with_example();
    let text = repo.read(ANALYTICS).replace("name: analytics", "name: reporting").replace("prefix: analytics", "prefix: reporting");
    repo.write("envs/prod/clusters/reporting.yaml", &text);
    repo.commit("add the reporting cluster");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let mut got = changed(&json);
    got.sort();
    let want: Vec<(String, String)> =
        ["aws.iam-role/rw-reporting", "k8s.namespace/reporting", "k8s.risingwave/reporting", "k8s.service-account/reporting"]
            .iter()
            .map(|id| ("create".to_owned(), (*id).to_owned()))
            .collect();
    assert_eq!(got, want);
    // Dependencies come first: the namespace before what lives in it.
    let order: Vec<&str> = json["steps"].as_array().expect("steps").iter().map(|s| s["id"].as_str().expect("id")).collect();
    let pos = |id: &str| order.iter().position(|x| *x == id).expect("present");
    assert!(pos("k8s.namespace/reporting") < pos("k8s.service-account/reporting"));
    assert!(pos("k8s.service-account/reporting") < pos("k8s.risingwave/reporting"));
    assert!(pos("aws.iam-role/rw-reporting") < pos("k8s.service-account/reporting"));
}

#[test]
fn c_changing_the_vpc_cidr_replaces_the_vpc_and_what_is_bound_to_it() {
    let (mut repo, base) = repo_with_example();
    let env = repo.read("envs/prod/environment.yaml").replace("10.20.", "10.21.");
    repo.write("envs/prod/environment.yaml", &env);
    let routes = repo.read("envs/prod/routes.yaml").replace("10.20.", "10.21.");
    repo.write("envs/prod/routes.yaml", &routes);
    repo.commit("move to 10.21.0.0/16");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let vpc = step(&json, "aws.vpc/main");
    assert_eq!(vpc["action"], "replace");
    assert_eq!(vpc["changes"][0]["path"], "cidr");
    assert_eq!(vpc["changes"][0]["forcesReplacement"], true);
    for id in ["aws.subnet/private-a", "aws.security-group/cluster", "aws.eks-cluster/main", "aws.eks-nodegroup/system"] {
        assert_eq!(step(&json, id)["action"], "replace", "{id}");
    }
    // The internet gateway can be re-attached: an update, not a replacement.
    assert_eq!(step(&json, "aws.internet-gateway/main")["action"], "update");
    // Recreating EKS would recreate the Retain cluster's objects: refused and said so.
    let ns = step(&json, "k8s.namespace/analytics");
    assert_eq!(ns["action"], "blocked");
    assert!(ns["reason"].as_str().expect("reason").contains("deletionPolicy Retain"), "{}", ns["reason"]);
    // Buckets are untouched.
    assert_eq!(step(&json, "aws.s3-bucket/data")["action"], "no-op");
}

#[test]
fn d_removing_a_retained_cluster_is_blocked_and_a_deletable_one_is_deleted() {
    let (mut repo, base) = repo_with_example();
    repo.remove(ANALYTICS);
    repo.remove("envs/prod/clusters/ingest.yaml");
    repo.write(
        "envs/prod/routes.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata: {name: default}\nspec:\n  routes: []\n",
    );
    repo.commit("remove both clusters");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let got = changed(&json);
    let retained: Vec<&(String, String)> = got.iter().filter(|(_, id)| id.contains("analytics")).collect();
    assert_eq!(retained.len(), 4, "{got:?}");
    for (action, id) in &retained {
        assert_eq!(action, "blocked", "{id}");
        let reason = step(&json, id)["reason"].as_str().expect("reason").to_owned();
        assert!(reason.contains("deletionPolicy Retain"), "{id}: {reason}");
    }
    let deleted: Vec<&(String, String)> = got.iter().filter(|(_, id)| id.contains("ingest")).collect();
    assert_eq!(deleted.len(), 4, "{got:?}");
    assert!(deleted.iter().all(|(a, _)| a == "delete"), "{deleted:?}");
    // Dependents are deleted before what they depend on.
    let order: Vec<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
    let pos = |id: &str| order.iter().position(|x| *x == id).expect("present");
    assert!(pos("k8s.risingwave/ingest") < pos("k8s.namespace/ingest"));
    assert!(pos("k8s.service-account/ingest") < pos("aws.iam-role/rw-ingest"));
    assert_eq!(json["summary"]["blocked"], 4);
    assert_eq!(json["summary"]["delete"], 4);
}

#[test]
fn e_no_change_exits_zero() {
    let (mut repo, base) = repo_with_example();
    repo.write("envs/prod/README.md", "Notes that are not specs.\n");
    repo.commit("docs only");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(changed(&json).is_empty());
    let text = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("No changes."), "{}", text.stdout);
}

#[test]
fn removing_the_public_proxy_changes_nothing_in_the_aws_cloud() {
    // On AWS the public NLB is its Service's, made and deleted by the AWS Load Balancer
    // Controller; no cloud resource of byoc's stands on it any more.
    let (mut repo, base) = repo_with_example();
    repo.edit("envs/prod/environment.yaml", "      public:\n        allowedCidrs: [203.0.113.0/24]\n", "");
    repo.commit("no public endpoint");
    let (run, json) = plan_json(&repo, &base);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(changed(&json).is_empty(), "{json}");
}

#[test]
fn an_invalid_head_exits_one_and_names_the_revision_and_position() {
    let (mut repo, base) = repo_with_example();
    repo.edit(ANALYTICS, "compute: {replicas: 3", "compute: {replicas: 0");
    let head = repo.commit("bad scale");
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "main", "--env", ENV]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("envs/prod/clusters/analytics.yaml:10:25: error: compute replicas 0 out of range"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("head main@sha1:{head} is not valid")), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing planned: {}", run.stdout);
}

#[test]
fn a_symlinked_spec_is_refused() {
    let (mut repo, base) = repo_with_example();
    std::os::unix::fs::symlink("/etc/hostname", repo.path().join("envs/prod/clusters/link.yaml")).expect("symlink");
    repo.commit("link");
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("envs/prod/clusters/link.yaml: error: is a symbolic link"), "{}", run.stderr);
}

#[test]
fn an_unknown_revision_is_an_error() {
    let (repo, _) = repo_with_example();
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", "nope", "--head", "HEAD", "--env", ENV]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("revision \"nope\" does not name a commit"), "{}", run.stderr);
}

#[test]
fn markdown_has_summary_tables_diffs_and_a_graph() {
    let (mut repo, base) = repo_with_example();
    repo.edit(ANALYTICS, "compute: {replicas: 3", "compute: {replicas: 6");
    repo.commit("scale");
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV, "--output", "markdown"]);
    assert_eq!(run.code, 2);
    let md = run.stdout;
    assert!(md.contains("| 0 | 1 | 0 | 0 | 0 |"), "{md}");
    assert!(md.contains("#### RisingWave (operator resource)"), "{md}");
    assert!(md.contains("<details><summary>update <code>k8s.risingwave/analytics</code> (1 change)</summary>"), "{md}");
    assert!(md.contains("- components.compute.replicas: 3\n+ components.compute.replicas: 6"), "{md}");
    assert!(md.contains("```mermaid\ngraph LR"), "{md}");
    assert!(md.contains("[\"k8s.namespace/analytics\"]:::unchanged"), "{md}");
    assert!(md.contains("[\"k8s.risingwave/analytics\"]:::update"), "{md}");
}
