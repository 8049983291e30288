//! `byoc apply` / `byoc destroy` of examples/gcp against `gcp_double::Double` (a
//! state-keeping fake of Compute, GKE, IAM, Resource Manager and Service Usage, named as
//! a fake) with a real fake-gcs-server behind it for the buckets. What exists is read
//! back from the fake's snapshot and from fake-gcs-server, never from byoc's own state.

use std::process::Command;
use std::time::Instant;

use gcp_double::{Double, Options};
use serde_json::{Value, json};

use crate::support::{Repo, Run, byoc, project_root};

const PROJECT: &str = "acme-data-prod";
const REGION: &str = "us-central1";
const DATA_BUCKET: &str = "byoc-prod-usc1-acme-data-prod-data";
const STATE_BUCKET: &str = "byoc-prod-usc1-acme-data-prod-state";

/// A fake-gcs-server of this test's own (buckets are global names; tests must not share).
fn fake_gcs() -> String {
    crate::state_gcs::start_fake_gcs()
}

fn double_with(f: impl FnOnce(&mut Options)) -> Double {
    let mut o = Options { project: PROJECT.into(), region: REGION.into(), gcs_upstream: Some(fake_gcs()), ..Options::default() };
    f(&mut o);
    Double::spawn(o).expect("the fake starts")
}

fn example_repo() -> Repo {
    let mut repo = Repo::new();
    repo.copy_from_project("examples/gcp", "examples/gcp");
    repo.commit("gcp example");
    repo
}

fn apply(repo: &Repo, double: &Double, extra: &[&str]) -> Run {
    let url = double.url();
    let mut args = vec!["apply", "--repo", ".", "--env", "examples/gcp", "--endpoint-url", &url, "--state-dir", "state"];
    args.extend_from_slice(&["--poll-interval", "0.05", "--cloud-only", "--auto-approve"]);
    args.extend_from_slice(extra);
    byoc(repo.path(), &args)
}

fn destroy(repo: &Repo, double: &Double, extra: &[&str]) -> Run {
    let url = double.url();
    let mut args = vec!["destroy", "--repo", ".", "--env", "examples/gcp", "--endpoint-url", &url, "--state-dir", "state"];
    args.extend_from_slice(&["--poll-interval", "0.05", "--auto-approve"]);
    args.extend_from_slice(extra);
    byoc(repo.path(), &args)
}

fn ok(r: &Run) -> &Run {
    assert_eq!(r.code, 0, "byoc failed\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

/// The names in one collection of the snapshot, sorted.
fn names(snapshot: &Value, collection: &str) -> Vec<String> {
    let mut v: Vec<String> = snapshot[collection].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    v.sort();
    v
}

/// A bucket as fake-gcs-server has it (through the fake, which forwards GCS unchanged).
fn bucket(double: &Double, name: &str) -> Option<Value> {
    let url = format!("{}/storage/v1/b/{name}", double.url());
    // reqwest is built without a crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).send().await.expect("GET bucket");
        if r.status().as_u16() == 200 { Some(r.json::<Value>().await.expect("bucket JSON")) } else { None }
    })
}

fn email(who: &str) -> String {
    format!("byoc-prod-usc1-{who}@{PROJECT}.iam.gserviceaccount.com")
}

/// Members of `role` in the policy on `resource`, sorted.
fn members(snapshot: &Value, resource: &str, role: &str) -> Vec<String> {
    let mut out: Vec<String> = snapshot["iamPolicies"][resource]["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["role"] == role)
        .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The id of the agent's custom role in the example environment (prod-usc1).
const AGENT_ROLE: &str = "byoc_prod_usc1_agent";

/// Roles a policies/gcp/*.json file lists, with `<project>` and `<agent-role>` (the agent's
/// custom role's id) filled in for the example.
fn policy_roles(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(project_root().join("policies/gcp").join(file)).expect("policy file");
    let v: Value = serde_json::from_str(&text).expect("policy JSON");
    v["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .filter_map(|r| r.as_str().map(|r| r.replace("<project>", PROJECT).replace("<agent-role>", AGENT_ROLE)))
        .collect()
}

/// The agent's custom role as the fake has it.
fn agent_role(double: &Double) -> Value {
    double.snapshot()[format!("projects/{PROJECT}/roles")][AGENT_ROLE].clone()
}

/// A role's permissions as the fake has them.
fn role_permissions(role: &Value) -> Vec<String> {
    role["includedPermissions"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect()
}

#[test]
fn apply_creates_every_gcp_resource_once_and_a_second_apply_writes_nothing() {
    let double = double_with(|_| {});
    let repo = example_repo();
    let started = Instant::now();
    let first = apply(&repo, &double, &[]);
    let first_time = started.elapsed();
    ok(&first);
    let s = double.snapshot();
    let p = format!("projects/{PROJECT}");
    assert_eq!(names(&s, &format!("{p}/global/networks")), ["byoc-prod-usc1"]);
    assert_eq!(names(&s, &format!("{p}/regions/{REGION}/subnetworks")), ["byoc-prod-usc1-nodes", "byoc-prod-usc1-psc"]);
    assert_eq!(names(&s, &format!("{p}/global/firewalls")), ["byoc-prod-usc1-health-checks", "byoc-prod-usc1-internal"]);
    assert_eq!(names(&s, &format!("{p}/regions/{REGION}/routers")), ["byoc-prod-usc1-nat"]);
    assert_eq!(names(&s, &format!("{p}/locations/{REGION}/clusters")), ["byoc-prod-usc1"]);
    // Dataplane V2, so the sidecar's NetworkPolicies are enforced.
    let cluster = &s[format!("{p}/locations/{REGION}/clusters").as_str()]["byoc-prod-usc1"];
    // Proto3 JSON takes an enum by name or number; the client sends the number
    // (DatapathProvider.ADVANCED_DATAPATH = 2).
    let datapath = &cluster["networkConfig"]["datapathProvider"];
    assert!(datapath == "ADVANCED_DATAPATH" || datapath == 2, "{cluster}");
    assert_eq!(names(&s, &format!("{p}/locations/{REGION}/clusters/byoc-prod-usc1/nodePools")), ["risingwave", "system"]);
    let accounts = names(&s, &format!("{p}/serviceAccounts"));
    assert_eq!(accounts.len(), 4, "agent, nodes and one per cluster: {accounts:?}");
    for who in ["agent", "nodes"] {
        assert!(accounts.contains(&email(who)), "{who}: {accounts:?}");
    }
    let psc = &s[format!("{p}/regions/{REGION}/subnetworks")]["byoc-prod-usc1-psc"];
    assert_eq!(psc["purpose"], "PRIVATE_SERVICE_CONNECT");
    let nodes = &s[format!("{p}/regions/{REGION}/subnetworks")]["byoc-prod-usc1-nodes"];
    assert_eq!(nodes["secondaryIpRanges"].as_array().map(Vec::len), Some(2), "{nodes}");
    let nat = &s[format!("{p}/regions/{REGION}/routers")]["byoc-prod-usc1-nat"];
    assert_eq!(nat["nats"][0]["natIpAllocateOption"], "AUTO_ONLY");
    // The agent's custom role, with exactly the permissions of policies/gcp/agent-role.json.
    assert_eq!(names(&s, &format!("{p}/roles")), [AGENT_ROLE]);
    let role = agent_role(&double);
    assert_eq!(role_permissions(&role), agent_role_permissions(), "{role}");
    assert_eq!((role["title"].as_str(), role["stage"].as_str()), (Some("byoc agent"), Some("GA")), "{role}");
    // Roles: exactly what policies/gcp/*.json say, on the project and the data bucket; the
    // agent holds its custom role and no other role on the project.
    assert_eq!(policy_roles("agent.json"), [format!("{p}/roles/{AGENT_ROLE}")]);
    let agent_member = json!(format!("serviceAccount:{}", email("agent")));
    let agents_roles: Vec<&str> = s["iamPolicies"][&p]["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["members"].as_array().is_some_and(|m| m.contains(&agent_member)))
        .filter_map(|b| b["role"].as_str())
        .collect();
    assert_eq!(agents_roles, policy_roles("agent.json"), "the agent's roles on the project are agent.json's");
    for role in policy_roles("agent.json") {
        assert_eq!(members(&s, &p, &role), [format!("serviceAccount:{}", email("agent"))], "{role}");
    }
    for role in policy_roles("nodes.json") {
        assert_eq!(members(&s, &p, &role), [format!("serviceAccount:{}", email("nodes"))], "{role}");
    }
    // The daemon's state: object access on the state bucket alone.
    for role in policy_roles("agent-state.json") {
        assert_eq!(members(&s, &format!("b/{STATE_BUCKET}"), &role), [format!("serviceAccount:{}", email("agent"))], "{role}");
        assert!(members(&s, &format!("b/{DATA_BUCKET}"), &role).iter().all(|m| *m != format!("serviceAccount:{}", email("agent"))));
    }
    for role in policy_roles("cluster.json") {
        assert_eq!(members(&s, &format!("b/{DATA_BUCKET}"), &role).len(), 2, "one per cluster: {role}");
    }
    // Workload identity: each Google account trusts one Kubernetes service account.
    let agent_wi = members(&s, &format!("{p}/serviceAccounts/{}", email("agent")), "roles/iam.workloadIdentityUser");
    assert_eq!(agent_wi, [format!("serviceAccount:{PROJECT}.svc.id.goog[byoc-system/byoc]")]);
    for b in [DATA_BUCKET, STATE_BUCKET] {
        let got = bucket(&double, b).unwrap_or_else(|| panic!("bucket {b} exists"));
        assert_eq!(got["versioning"]["enabled"], true, "{b}: {got}");
    }

    let writes = double.writes();
    let started = Instant::now();
    let second = apply(&repo, &double, &[]);
    let noop_time = started.elapsed();
    ok(&second);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
    assert_eq!(double.writes(), writes, "a second apply writes nothing");
    println!("wall time: first apply {:.2}s, no-op apply {:.2}s", first_time.as_secs_f64(), noop_time.as_secs_f64());
}

#[test]
fn a_resize_is_one_update_and_destroy_keeps_the_buckets_unless_told() {
    let double = double_with(|_| {});
    let mut repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    repo.edit("examples/gcp/environment.yaml", "min: 3\n        max: 9", "min: 3\n        max: 12");
    repo.commit("more risingwave nodes");
    let before = double.writes().len();
    ok(&apply(&repo, &double, &[]));
    let new: Vec<String> = double.writes()[before..].to_vec();
    assert_eq!(new.len(), 1, "one write: {new:?}");
    assert!(new[0].ends_with("/nodePools/risingwave:setAutoscaling"), "{new:?}");
    let p = format!("projects/{PROJECT}");
    let pool = &double.snapshot()[format!("{p}/locations/{REGION}/clusters/byoc-prod-usc1/nodePools")]["risingwave"];
    assert_eq!(pool["autoscaling"]["totalMaxNodeCount"], 12, "{pool}");

    let kept = destroy(&repo, &double, &[]);
    ok(&kept);
    let s = double.snapshot();
    assert!(names(&s, &format!("{p}/global/networks")).is_empty(), "{}", kept.stdout);
    assert!(names(&s, &format!("{p}/locations/{REGION}/clusters")).is_empty());
    assert!(bucket(&double, DATA_BUCKET).is_some() && bucket(&double, STATE_BUCKET).is_some(), "buckets kept without --delete-data");
    ok(&destroy(&repo, &double, &["--delete-data"]));
    assert!(bucket(&double, DATA_BUCKET).is_none() && bucket(&double, STATE_BUCKET).is_none(), "--delete-data deletes them");
}

#[test]
fn faults_are_retried_and_counted() {
    let double = double_with(|o| {
        o.fault_rate = 0.2;
        o.seed = 7;
    });
    let repo = example_repo();
    let r = apply(&repo, &double, &[]);
    ok(&r);
    let faults = double.faults_injected();
    assert!(faults > 0);
    // Every fault met one retry of ours (the clients' own retries are off), printed and
    // counted in the summary line.
    let printed = r.stderr.lines().filter(|l| l.starts_with("retry: ") && !l.contains("the policy changed since it was read")).count();
    assert_eq!(printed as u64, faults, "{}", r.stderr);
    let summary = r.stdout.lines().find(|l| l.starts_with("applied ")).expect("summary line");
    assert!(summary.contains(&format!("; {faults} retr")), "{summary}");
    double.set_fault_rate(0.0);
    let writes = double.writes();
    ok(&apply(&repo, &double, &[]));
    assert_eq!(double.writes(), writes, "everything was made once, despite the faults");
}

#[test]
fn preflight_reports_a_disabled_api_and_a_denied_permission_together_and_changes_nothing() {
    let double = double_with(|o| {
        o.disabled_services = vec!["container.googleapis.com".into()];
        o.denied_permissions = vec!["compute.networks.create".into()];
    });
    let mut repo = example_repo();
    // A region GCP does not have (GKE answers its list 400 `Location ... does not exist.`).
    repo.edit("examples/gcp/environment.yaml", "region: us-central1", "region: us-nowhere1");
    repo.edit(
        "examples/gcp/environment.yaml",
        "zones: [us-central1-a, us-central1-b, us-central1-c]",
        "zones: [us-nowhere1-a, us-nowhere1-b]",
    );
    repo.commit("a region GCP does not have");
    let r = apply(&repo, &double, &[]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("container.googleapis.com is not enabled"), "{all}");
    assert!(all.contains("compute.networks.create"), "{all}");
    assert!(all.contains("the region \"us-nowhere1\" does not exist"), "{all}");
    assert!(double.writes().is_empty(), "nothing changed: {:?}", double.writes());
}

#[test]
fn drift_on_a_pool_a_firewall_and_a_bucket_is_reported_and_set_back() {
    let double = double_with(|_| {});
    let repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    let p = format!("projects/{PROJECT}");
    double
        .tamper(
            &format!("{p}/locations/{REGION}/clusters/byoc-prod-usc1/nodePools"),
            "system",
            json!({"autoscaling": {"totalMaxNodeCount": 7}}),
        )
        .expect("tamper pool");
    double
        .tamper(&format!("{p}/global/firewalls"), "byoc-prod-usc1-internal", json!({"sourceRanges": ["0.0.0.0/0"]}))
        .expect("tamper firewall");
    // Another actor suspends versioning on the data bucket (in fake-gcs-server itself).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let status = rt.block_on(async {
        let url = format!("{}/storage/v1/b/{DATA_BUCKET}", double.url());
        reqwest::Client::new()
            .patch(url)
            .json(&json!({"versioning": {"enabled": false}}))
            .send()
            .await
            .expect("PATCH bucket")
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    assert_ne!(bucket(&double, DATA_BUCKET).expect("bucket")["versioning"]["enabled"], true, "suspended");
    let r = apply(&repo, &double, &[]);
    ok(&r);
    assert!(r.stdout.contains("gcp.bucket/data `versioning`"), "{}", r.stdout);
    assert_eq!(bucket(&double, DATA_BUCKET).expect("bucket")["versioning"]["enabled"], true, "set back");
    assert!(r.stdout.contains("gcp.node-pool/system `autoscaling`"), "{}", r.stdout);
    assert!(r.stdout.contains("gcp.firewall/internal `sourceRanges`"), "{}", r.stdout);
    let s = double.snapshot();
    assert_eq!(s[format!("{p}/locations/{REGION}/clusters/byoc-prod-usc1/nodePools")]["system"]["autoscaling"]["totalMaxNodeCount"], 3);
    assert_eq!(s[format!("{p}/global/firewalls")]["byoc-prod-usc1-internal"]["sourceRanges"], json!(["10.30.0.0/16", "10.100.0.0/16"]));
}

/// Runs `byoc apply` and SIGKILLs it once `k` actions have printed "done"; the number
/// reached.
fn apply_killed_after(repo: &Repo, double: &Double, k: usize) -> usize {
    apply_killed_when(repo, double, |line, done| line.starts_with("done ") && done == k).1
}

/// Runs `byoc apply` and SIGKILLs it at the first line `kill(line, actions done so far)`
/// accepts; whether it was killed, and the actions done.
fn apply_killed_when(repo: &Repo, double: &Double, kill: impl Fn(&str, usize) -> bool) -> (bool, usize) {
    use std::io::{BufRead, BufReader};
    let url = double.url();
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
        "--cloud-only",
        "--auto-approve",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_byoc"))
        .args(args)
        .current_dir(repo.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("byoc runs");
    let mut done = 0;
    let mut killed = false;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("done ") {
            done += 1;
        }
        if kill(&line, done) {
            child.kill().expect("SIGKILL");
            killed = true;
            break;
        }
    }
    let _ = child.wait();
    (killed, done)
}

/// Every collection's names, for comparing two runs' results.
fn shape(s: &Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = s.as_object().into_iter().flatten().map(|(k, _)| (k.clone(), names(s, k))).collect();
    out.sort();
    out
}

/// Killed while Compute, IAM and bucket actions are in flight (before GKE's): a rerun
/// repeats Compute inserts with the same requestId and waits on the first operation.
/// (Killed while a GKE operation runs: the next test.)
#[test]
fn killed_after_a_step_a_rerun_completes_with_exactly_one_of_each() {
    let reference = double_with(|_| {});
    ok(&apply(&example_repo(), &reference, &[]));
    let want = shape(&reference.snapshot());
    for k in [1, 3, 6, 9, 12, 14] {
        let double = double_with(|_| {});
        let repo = example_repo();
        assert_eq!(apply_killed_after(&repo, &double, k), k, "killed after step {k}");
        let rerun = apply(&repo, &double, &[]);
        ok(&rerun);
        assert_eq!(shape(&double.snapshot()), want, "k={k}: exactly one of each, as an uninterrupted apply makes");
        let writes = double.writes();
        ok(&apply(&repo, &double, &[]));
        assert_eq!(double.writes(), writes, "k={k}: then nothing to do");
    }
}

/// Another writer adding members to roles/viewer on the project until `stop`, one
/// read-modify-write each, redone on 409 ABORTED as a careful client does; how many it
/// added.
fn other_writer(url: &str, stop: &std::sync::atomic::AtomicBool) -> usize {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut added = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && added < 500 {
            let member = format!("user:other-{added}@example.com");
            let get = http.post(format!("{url}/v3/projects/{PROJECT}:getIamPolicy")).json(&json!({})).send().await;
            let Ok(get) = get else { continue };
            if get.status().as_u16() != 200 {
                continue;
            }
            let mut policy: Value = get.json().await.expect("policy JSON");
            let mut bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
            match bindings.iter_mut().find(|b| b["role"] == "roles/viewer") {
                Some(b) => b["members"].as_array_mut().expect("members").push(json!(member)),
                None => bindings.push(json!({"role": "roles/viewer", "members": [member]})),
            }
            policy["bindings"] = Value::Array(bindings);
            let set = http.post(format!("{url}/v3/projects/{PROJECT}:setIamPolicy")).json(&json!({"policy": policy})).send().await;
            if set.is_ok_and(|r| r.status().as_u16() == 200) {
                added += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        added
    })
}

#[test]
fn two_writers_racing_on_the_project_policy_lose_no_binding() {
    let double = double_with(|_| {});
    let repo = example_repo();
    let url = double.url();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (r, added) = std::thread::scope(|s| {
        let other = s.spawn(|| other_writer(&url, &stop));
        let r = apply(&repo, &double, &[]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (r, other.join().expect("the other writer"))
    });
    ok(&r);
    assert!(added > 0);
    let s = double.snapshot();
    let p = format!("projects/{PROJECT}");
    let viewers = members(&s, &p, "roles/viewer");
    assert_eq!(viewers.len(), added, "every binding the other writer made was kept: {viewers:?}");
    for role in policy_roles("agent.json").into_iter().chain(policy_roles("nodes.json")) {
        assert_eq!(members(&s, &p, &role).len(), 1, "ours were kept too: {role}");
    }
}

/// The daemon's cloud pass on GCP (`run::identity::pass`, as `byoc run` calls it): after a
/// bootstrap apply, a new cluster and a bigger node pool arrive in one revision; the pass
/// makes only the new cluster's Google account and its bindings, and reports the pool.
#[test]
fn the_daemons_pass_converges_only_cluster_identities_and_reports_the_rest() {
    let double = double_with(|_| {});
    let mut repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    let text = repo
        .read("examples/gcp/clusters/ingest.yaml")
        .replace("name: ingest", "name: reporting")
        .replace("prefix: ingest", "prefix: reporting");
    repo.write("examples/gcp/clusters/reporting.yaml", &text);
    repo.edit("examples/gcp/environment.yaml", "min: 3\n        max: 9", "min: 3\n        max: 12");
    repo.commit("reporting, and more nodes");
    let dir = repo.path().join("examples/gcp");
    let files = rwproxy::specfiles::read_dir(&dir).expect("specs readable");
    let specs = byoc::spec::load::load(&dir.to_string_lossy(), &files).unwrap_or_else(|e| panic!("{e:?}"));
    let store = byoc::state::LocalDir::new(repo.path().join("state")).expect("state dir");
    let before = double.writes().len();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let url = double.url();
    let report = rt
        .block_on(byoc::run::identity::pass(&store, &specs, Some(&url), "main@sha1:test", byoc::run::identity::Pass::Converge))
        .expect("the pass runs");
    assert!(report.failed.is_none(), "{:?}", report.failed);
    assert_eq!(report.done, 3, "the account, its workload identity and its data binding");
    let new: Vec<String> = double.writes()[before..].to_vec();
    assert!(new.iter().all(|w| w.contains("/serviceAccounts") || w.ends_with(":setIamPolicy") || w.ends_with("/iam")), "{new:?}");
    assert!(!new.iter().any(|w| w.contains("nodePools")), "the pool is the environment's: {new:?}");
    assert!(names(&double.snapshot(), &format!("projects/{PROJECT}/serviceAccounts")).contains(&email("rw-reporting")));
    assert_eq!(report.environment.summary.update, 1, "{:?}", report.environment.changes);
    assert!(
        report.environment.changes.iter().any(|c| c.starts_with("~ update gcp.node-pool/risingwave")),
        "{:?}",
        report.environment.changes
    );
}

/// `byoc plan --out` of a GCP environment, then `byoc apply FILE`: the saved plan goes
/// through the same provider, and applies exactly.
#[test]
fn a_saved_plan_of_a_gcp_environment_applies() {
    let double = double_with(|_| {});
    let repo = example_repo();
    let url = double.url();
    let base = ["--repo", ".", "--env", "examples/gcp", "--endpoint-url", url.as_str(), "--state-dir", "state", "--cloud-only"];
    let mut plan_args = vec!["plan", "--head", "HEAD", "--out", "plan.json"];
    plan_args.extend_from_slice(&base);
    let saved = byoc(repo.path(), &plan_args);
    assert_eq!(saved.code, 0, "plan --out:\n{}\n{}", saved.stdout, saved.stderr);
    assert!(double.writes().is_empty(), "planning writes nothing: {:?}", double.writes());
    let mut apply_args = vec!["apply", "plan.json", "--auto-approve", "--poll-interval", "0.05"];
    apply_args.extend_from_slice(&base);
    ok(&byoc(repo.path(), &apply_args));
    assert_eq!(names(&double.snapshot(), &format!("projects/{PROJECT}/global/networks")), ["byoc-prod-usc1"]);
}

/// The permissions of the agent's custom role (policies/gcp/agent-role.json).
fn agent_role_permissions() -> Vec<String> {
    let text = std::fs::read_to_string(project_root().join("policies/gcp/agent-role.json")).expect("policies/gcp/agent-role.json");
    let v: Value = serde_json::from_str(&text).expect("role JSON");
    v["includedPermissions"].as_array().expect("includedPermissions").iter().filter_map(|p| p.as_str().map(str::to_owned)).collect()
}

/// A bootstrap apply, then a new cluster in the repository: the daemon's pass run as the
/// agent's Google account, holding only the roles apply bound to it (the fake grants a
/// permission only through a custom role bound on the project), with `denied` taken away
/// besides; whether it converged, the permissions the fake checked during the pass, and
/// the permissions of the custom role apply made.
fn daemon_pass_as_the_agent(denied: &[String]) -> (Result<usize, String>, Vec<String>, Vec<String>) {
    let double = double_with(|_| {});
    let mut repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    let created = role_permissions(&agent_role(&double));
    let text = repo
        .read("examples/gcp/clusters/ingest.yaml")
        .replace("name: ingest", "name: reporting")
        .replace("prefix: ingest", "prefix: reporting");
    repo.write("examples/gcp/clusters/reporting.yaml", &text);
    repo.commit("reporting");
    let dir = repo.path().join("examples/gcp");
    let files = rwproxy::specfiles::read_dir(&dir).expect("specs readable");
    let specs = byoc::spec::load::load(&dir.to_string_lossy(), &files).unwrap_or_else(|e| panic!("{e:?}"));
    let store = byoc::state::LocalDir::new(repo.path().join("state")).expect("state dir");
    double.act_as(Some(format!("serviceAccount:{}", email("agent"))));
    double.set_denied_permissions(denied.to_vec());
    double.clear_permissions_checked();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let url = double.url();
    let report = rt.block_on(byoc::run::identity::pass(&store, &specs, Some(&url), "main@sha1:test", byoc::run::identity::Pass::Converge));
    let outcome = match report {
        Ok(r) => match r.failed {
            None => Ok(r.done),
            Some(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    (outcome, double.permissions_checked(), created)
}

/// The daemon's least privilege: acting as the agent's account with only what `byoc
/// apply` bound to it (its custom role, made from policies/gcp/agent-role.json), its pass
/// makes the new cluster's account and bindings; the role holds exactly the permissions
/// the pass is checked for; and without any one of them the pass fails.
#[test]
fn the_daemons_pass_needs_exactly_the_agents_custom_role() {
    let role = agent_role_permissions();
    let (outcome, checked, created) = daemon_pass_as_the_agent(&[]);
    assert_eq!(created, role, "apply made the role of the file");
    assert_eq!(outcome, Ok(3), "the account, its workload identity and its data binding");
    assert_eq!(checked, role, "the role holds exactly what the pass is checked for");
    for p in &role {
        let (outcome, _, _) = daemon_pass_as_the_agent(std::slice::from_ref(p));
        let e = outcome.expect_err(&format!("the pass without {p} fails"));
        assert!(e.contains(p.as_str()) || e.contains("PERMISSION_DENIED"), "{p}: {e}");
    }
}

/// Killed while GKE creates the cluster, or a node pool: the operation is left running
/// (the cluster or pool PROVISIONING); the rerun finds it among the location's operations,
/// waits for it, and creates nothing twice.
#[test]
fn killed_while_a_gke_operation_runs_the_rerun_waits_for_it_and_creates_nothing_twice() {
    let reference = double_with(|_| {});
    ok(&apply(&example_repo(), &reference, &[]));
    let want = shape(&reference.snapshot());
    let p = format!("projects/{PROJECT}/locations/{REGION}/clusters");
    for (waiting, collection, name) in [
        ("waiting container clusters.create", p.clone(), "byoc-prod-usc1"),
        ("waiting container nodePools.create for gcp.node-pool/system", format!("{p}/byoc-prod-usc1/nodePools"), "system"),
    ] {
        // Enough polls that the operation is still running when the kill lands.
        let double = double_with(|o| o.operation_polls = 6);
        let repo = example_repo();
        let (killed, _) = apply_killed_when(&repo, &double, |line, _| {
            // gke_done's line ("...: PENDING"), not a wait for another pool's operation.
            line.starts_with(waiting) && (line.contains(": PENDING") || line.contains(": RUNNING"))
        });
        assert!(killed, "{waiting}: reached");
        assert_eq!(double.snapshot()[&collection][name]["status"], "PROVISIONING", "{waiting}: killed mid-operation");
        let rerun = apply(&repo, &double, &[]);
        ok(&rerun);
        assert_eq!(double.snapshot()[&collection][name]["status"], "RUNNING", "{waiting}");
        assert_eq!(shape(&double.snapshot()), want, "{waiting}: exactly one of each");
        let creates = |suffix: &str| double.writes().iter().filter(|w| w.starts_with("POST ") && w.ends_with(suffix)).count();
        assert_eq!(creates("/clusters"), 1, "{waiting}: one cluster create: {:?}", double.writes());
        assert_eq!(creates("/nodePools"), 2, "{waiting}: one create per pool: {:?}", double.writes());
        let writes = double.writes();
        ok(&apply(&repo, &double, &[]));
        assert_eq!(double.writes(), writes, "{waiting}: then nothing to do");
    }
}

/// The agent's custom role after `byoc destroy`: GCP soft-deletes it and keeps its id, so
/// the next apply's create is answered 409; apply undeletes the role and sets it to the
/// file, binds the agent again, and a third apply writes nothing.
#[test]
fn after_destroy_the_next_apply_undeletes_the_agents_custom_role() {
    let double = double_with(|_| {});
    let repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    ok(&destroy(&repo, &double, &[]));
    let p = format!("projects/{PROJECT}");
    let role = agent_role(&double);
    assert_eq!(role["deleted"], true, "destroy deletes the role (softly, as GCP does): {role}");
    assert!(members(&double.snapshot(), &p, &format!("{p}/roles/{AGENT_ROLE}")).is_empty(), "and unbinds the agent first");
    // Right away: within Compute's 60 minutes the first apply's `requestId`s are answered
    // with their old operations, and creating nothing then is not taken for done.
    let before = double.writes().len();
    let again = apply(&repo, &double, &[]);
    ok(&again);
    let role = agent_role(&double);
    assert_eq!(role.get("deleted"), None, "undeleted: {role}");
    assert_eq!(role_permissions(&role), agent_role_permissions());
    let undeletes = double.writes()[before..].iter().filter(|w| w.ends_with(&format!("/roles/{AGENT_ROLE}:undelete"))).count();
    assert_eq!(undeletes, 1, "{:?}", double.writes());
    assert_eq!(names(&double.snapshot(), &format!("{p}/global/networks")), ["byoc-prod-usc1"], "the network made again");
    assert_eq!(members(&double.snapshot(), &p, &format!("{p}/roles/{AGENT_ROLE}")), [format!("serviceAccount:{}", email("agent"))]);
    let writes = double.writes();
    ok(&apply(&repo, &double, &[]));
    assert_eq!(double.writes(), writes, "then nothing to do");
}

/// Someone adds a permission to the agent's custom role and drops another: apply reports
/// the drift on `includedPermissions` and sets the role back to the file with one update.
#[test]
fn drift_on_the_agents_custom_role_is_reported_and_set_back() {
    let double = double_with(|_| {});
    let repo = example_repo();
    ok(&apply(&repo, &double, &[]));
    let mut tampered = agent_role_permissions();
    tampered.retain(|p| p != "iam.serviceAccounts.create");
    tampered.push("iam.serviceAccounts.delete".to_owned());
    tampered.sort();
    double.tamper(&format!("projects/{PROJECT}/roles"), AGENT_ROLE, json!({"includedPermissions": tampered})).expect("tamper role");
    let before = double.writes().len();
    let r = apply(&repo, &double, &[]);
    ok(&r);
    assert!(r.stdout.contains("gcp.custom-role/agent `includedPermissions`"), "{}", r.stdout);
    let new: Vec<String> = double.writes()[before..].to_vec();
    assert_eq!(new, [format!("PATCH /v1/projects/{PROJECT}/roles/{AGENT_ROLE}")], "one update");
    assert_eq!(role_permissions(&agent_role(&double)), agent_role_permissions(), "set back");
}
