//! `byoc run` on AWS, the real binary, from a signed push to psql reaching the new cluster:
//! each cluster's IAM role converged by the daemon, the environment only observed, and
//! every AWS call it makes allowed by `policies/aws/agent.json`.
//!
//! The environment is applied first with `byoc apply` (the administrator's bootstrap) on
//! moto, behind tests/moto/faults.py, whose request log records each call as the IAM
//! action and resource AWS would authorize. The daemon then runs with its state in S3 on
//! the same moto, a bare repository of ssh-keygen-signed commits served by the https test
//! server (git http-backend behind TLS and a token), the Kubernetes API double over HTTP
//! with a stand-in operator, two PostgreSQL servers standing in for cluster frontends, and
//! the real rwproxy reading the publish directory.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use super::Signed;
use super::daemon::{condition, free_port};
use crate::aws::Account;
use crate::kube::support::{double, operator};
use crate::state_s3::MOTO_ENV;
use crate::support::SpawnTied;

/// The daemon process; SIGKILLed if the test ends without stopping it.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn status(port: u16) -> Value {
    let (code, body) = http(port, "GET", "/status", &[], b"");
    if code != 200 {
        return Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn wait_for(port: u16, work: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = status(port);
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{what}: {s:#}\n{}", log(work));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log(work: &Path) -> String {
    std::fs::read_to_string(work.join("daemon.log")).unwrap_or_default()
}

fn webhook(port: u16, delivery: &str) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = byoc::run::webhook::github_signature(b"hook-s3cret", body);
    let (code, _) = http(port, "POST", "/hooks/git", &[("X-Hub-Signature-256", sig), ("X-GitHub-Delivery", delivery.to_owned())], body);
    assert_eq!(code, 202);
}

/// The fault proxy's request log: every AWS call since the last reset.
fn calls(account: &Account, reset: bool) -> Vec<Value> {
    let port: u16 = account.endpoint().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let (code, body) = http(port, if reset { "POST" } else { "GET" }, "/__calls", &[], b"");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).expect("json").as_array().cloned().unwrap_or_default()
}

// ---- PostgreSQL frontends and rwproxy ------------------------------------------------------

/// A PostgreSQL server standing in for cluster `name`'s frontend (`SHOW cluster_name` says
/// `name`), with a database `name`; stopped when the test binary exits.
pub(super) fn frontend(dir: &Path, name: &str) -> u16 {
    let port = free_port();
    let out = std::process::Command::new("bash")
        .arg(crate::support::project_root().join("tests/pg/start.sh"))
        .arg(dir.join(format!("pg-{name}")))
        .args([port.to_string(), name.to_owned(), std::process::id().to_string()])
        .output()
        .expect("tests/pg/start.sh runs");
    assert!(out.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&out.stderr));
    let made = sql(port, "postgres", &format!("CREATE DATABASE {name}"));
    assert!(made.is_ok(), "{made:?}");
    port
}

/// One statement through psql; the first line of its output, or why it failed.
fn sql(port: u16, db: &str, statement: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args(["-XAtq", "-c", statement])
        .arg(format!("host=127.0.0.1 port={port} dbname={db} user=postgres sslmode=disable connect_timeout=5"))
        .output()
        .expect("psql runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Polls `SHOW cluster_name` through the proxy until `want` (a name, or `None`: refused).
pub(super) fn through_proxy(port: u16, db: &str, want: Option<&str>) {
    let start = Instant::now();
    loop {
        let got = sql(port, db, "SHOW cluster_name");
        if got.as_deref().ok() == want || (want.is_none() && got.is_err()) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "psql through rwproxy to {db}: {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) struct Proxy(pub(super) std::process::Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- a small IAM policy evaluator -------------------------------------------------------

/// `*` and `?` wildcards, as IAM matches actions (case-insensitively) and resources.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// Whether a statement's conditions hold for a request whose only context key is
/// `iam:PermissionsBoundary` (absent when the request carries none). The operators the
/// agent's policy uses; anything else fails the test rather than being guessed.
fn conditions_hold(condition: &Value, boundary: Option<&str>) -> bool {
    let Some(ops) = condition.as_object() else { return true };
    ops.iter().all(|(op, keys)| {
        keys.as_object().expect("condition keys").iter().all(|(key, want)| {
            assert_eq!(key, "iam:PermissionsBoundary", "the evaluator knows only this condition key");
            let want = strings(want);
            match op.as_str() {
                // A missing key matches no value; a negated operator then holds.
                "StringEquals" => boundary.is_some_and(|b| want.iter().any(|w| w == b)),
                "StringNotEquals" => boundary.is_none_or(|b| want.iter().all(|w| w != b)),
                "StringLike" => boundary.is_some_and(|b| want.iter().any(|w| glob(w, b))),
                other => panic!("condition operator {other} is not evaluated here"),
            }
        })
    })
}

/// IAM's decision for one request: an explicit Deny wins, then an Allow, else denied.
fn decide(policy: &Value, action: &str, resource: &str, boundary: Option<&str>) -> &'static str {
    let mut allowed = false;
    for st in policy["Statement"].as_array().expect("statements") {
        let action_matches = strings(&st["Action"]).iter().any(|a| glob(&a.to_lowercase(), &action.to_lowercase()));
        let resource_matches = strings(&st["Resource"]).iter().any(|r| glob(r, resource));
        if !(action_matches && resource_matches && conditions_hold(&st["Condition"], boundary)) {
            continue;
        }
        match st["Effect"].as_str() {
            Some("Deny") => return "explicitDeny",
            Some("Allow") => allowed = true,
            other => panic!("effect {other:?}"),
        }
    }
    if allowed { "allowed" } else { "implicitDeny" }
}

fn agent_policy(env: &str, state_bucket: &str) -> Value {
    let text = byoc::expand::permissions::AWS_AGENT_POLICY
        .replace("<account>", "123456789012")
        .replace("<env>", env)
        .replace("<state-bucket>", state_bucket);
    serde_json::from_str(&text).expect("agent.json")
}

#[test]
fn the_policy_evaluator_decides_as_iam_does() {
    let p = agent_policy("prod", "st");
    let role = "arn:aws:iam::123456789012:role/byoc/prod/clusters/byoc-prod-rw-a";
    let boundary = "arn:aws:iam::123456789012:policy/byoc/prod/byoc-prod-cluster-boundary";
    let cases = [
        ("iam:CreateRole", role, Some(boundary), "allowed"),
        ("iam:CreateRole", role, None, "explicitDeny"),
        ("iam:CreateRole", role, Some("arn:aws:iam::aws:policy/AdministratorAccess"), "explicitDeny"),
        ("iam:CreateRole", "arn:aws:iam::123456789012:role/byoc-prod-agent", Some(boundary), "implicitDeny"),
        ("iam:PutRolePolicy", role, None, "allowed"),
        ("iam:PutRolePolicy", "arn:aws:iam::123456789012:role/byoc-prod-agent", None, "implicitDeny"),
        ("iam:PutRolePolicy", "arn:aws:iam::123456789012:role/byoc/other/clusters/x", None, "implicitDeny"),
        ("iam:DeleteRolePermissionsBoundary", role, None, "explicitDeny"),
        ("iam:AttachRolePolicy", role, None, "implicitDeny"),
        ("iam:CreatePolicyVersion", boundary, None, "explicitDeny"),
        ("eks:DescribeNodegroup", "*", None, "allowed"),
        ("eks:UpdateNodegroupConfig", "*", None, "implicitDeny"),
        ("s3:PutObject", "arn:aws:s3:::st/byoc/x.json", None, "allowed"),
        ("s3:PutObject", "arn:aws:s3:::data/x", None, "implicitDeny"),
        ("IAM:listroles", "*", None, "allowed"),
    ];
    for (action, resource, b, want) in cases {
        assert_eq!(decide(&p, action, resource, b), want, "{action} on {resource} with {b:?}");
    }
}

// ---- the daemon --------------------------------------------------------------------------

const REPORTS: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: reports\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    frontend: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    compute: {replicas: 1, cpu: \"1\", memory: 4Gi}\n    compactor: {replicas: 1, cpu: \"1\", memory: 2Gi}\n  stateStore:\n    prefix: reports\n  deletionPolicy: Delete\n";

const ENV: &str = "prod-use1";
const STATE_BUCKET: &str = "byoc-prod-use1-123456789012-state";
const ROLE: &str = "byoc-prod-use1-rw-reports";

/// The reports cluster's role as moto holds it (`null` when absent).
fn role(account: &Account) -> Value {
    let out = account.python(&format!(
        "import boto3, json\niam = boto3.client('iam')\ntry:\n    r = iam.get_role(RoleName='{ROLE}')['Role']\n    p = iam.get_role_policy(RoleName='{ROLE}', PolicyName='byoc')['PolicyDocument']\n    print(json.dumps({{'arn': r['Arn'], 'path': r['Path'], 'boundary': r.get('PermissionsBoundary', {{}}).get('PermissionsBoundaryArn'), 'trust': r['AssumeRolePolicyDocument'], 'policy': p}}, default=str))\nexcept iam.exceptions.NoSuchEntityException:\n    print('null')\n"
    ));
    serde_json::from_str(out.trim()).expect("role json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_converges_cluster_roles_only_reports_environment_drift_and_stays_within_agent_json() {
    let account = Account::new().with_autoscaling_role();
    account.python(&format!("import boto3; boto3.client('s3').create_bucket(Bucket='{STATE_BUCKET}')"));
    let state = format!("s3://{STATE_BUCKET}/byoc");

    let mut s = Signed::new();
    s.default_policy();
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("env"));
    // Two PostgreSQL servers stand in for the frontends of analytics and (later) reports;
    // the routes name them as backends, as a route may.
    let work = s.dir.path().to_owned();
    let (pg_analytics, pg_reports) = (frontend(&work, "analytics"), frontend(&work, "reports"));
    let routes = std::fs::read_to_string(s.repo().join("env/routes.yaml")).expect("routes");
    let route = |name: &str, pg: u16| {
        format!(
            "    - name: {name}-local\n      match: {{database: {name}}}\n      cluster: {name}\n      allowedCidrs: [127.0.0.0/8]\n      backend: '127.0.0.1:{pg}'\n"
        )
    };
    s.write("env/routes.yaml", &format!("{routes}{}", route("analytics", pg_analytics)));
    let first = s.commit(Some("alice"), "environment");
    let remote = work.join("remote.git");
    s.git(&["clone", "-q", "--bare", ".", &remote.display().to_string()]);
    s.git(&["remote", "add", "origin", &remote.display().to_string()]);

    // The cluster, and in it the AWS Load Balancer Controller's stand-in, which makes the
    // NLBs of the sidecar's Services that the endpoint services front.
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());
    std::fs::write(work.join("kubeconfig"), kube_double::kubeconfig(&format!("http://{api_addr}"))).expect("kubeconfig");
    let controller = account.lb_controller(&work.join("kubeconfig"));
    let kubeconfig = work.join("kubeconfig").display().to_string();

    // The administrator's bootstrap: the whole environment, cluster roles included, and the
    // sidecar.
    let apply = crate::support::byoc_env(
        &s.repo(),
        &[
            "apply",
            "--repo",
            ".",
            "--env",
            "env",
            "--endpoint-url",
            account.endpoint(),
            "--state-s3",
            &state,
            "--poll-interval",
            "0.1",
            "--auto-approve",
            "--kubeconfig",
            &kubeconfig,
            "--health-timeout",
            "10",
        ],
        &MOTO_ENV,
    );
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    // From here on every call is the daemon's: the controller (its own identity) is done.
    drop(controller);
    calls(&account, true);

    std::fs::write(work.join("webhook-secret"), "hook-s3cret\n").expect("secret");
    std::fs::write(work.join("git-token"), "git-s3cret\n").expect("token");
    // The repository over the https test server (git http-backend behind TLS and a token).
    let https = super::fetch::HttpsGit::start(&work.join("https"), &work, "git-s3cret");
    let port = free_port();
    std::fs::write(
        work.join("reconciler.yaml"),
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: test}}\nspec:\n  repository: {{url: \"https://127.0.0.1:{}/remote.git\", branch: main, tokenFile: git-token}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{s3: \"{state}\"}}\n  publishDir: publish\n  cacheDir: cache\n  listen: \"127.0.0.1:{port}\"\n  interval: 1h\n  webhook: {{secretFile: webhook-secret}}\n  cloud: {{endpointUrl: \"{}\"}}\n  kubernetes: {{kubeconfig: kubeconfig}}\n",
            https.port,
            account.endpoint()
        ),
    )
    .expect("config");
    let child = crate::support::tied_byoc()
        .args(["run", "--config", "reconciler.yaml"])
        .envs(MOTO_ENV)
        .env("SSL_CERT_FILE", &https.ca)
        .current_dir(&work)
        .stderr(std::fs::File::create(work.join("daemon.log")).expect("log"))
        .spawn_tied()
        .expect("byoc run starts");
    let _daemon = Daemon(child);

    // First reconcile: the environment as applied, so in sync.
    let st = wait_for(port, &work, "the first revision is applied", |st| st["lastAppliedRevision"] == format!("main@sha1:{first}"));
    assert_eq!(condition(&st, "EnvironmentInSync").0, "True", "{st:#}");
    assert_eq!(role(&account), Value::Null);

    // The real rwproxy on the published tree: analytics is reachable, reports is not yet.
    let proxy_port = free_port();
    let _proxy = Proxy(
        crate::support::tied(crate::bad_specs::rwproxy_binary())
            .arg("--routes")
            .arg(work.join("publish/current"))
            .args(["--listen", &format!("127.0.0.1:{proxy_port}"), "--admin", &format!("127.0.0.1:{}", free_port())])
            .env("RWPROXY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn_tied()
            .expect("rwproxy starts"),
    );
    through_proxy(proxy_port, "analytics", Some("analytics"));
    through_proxy(proxy_port, "reports", None);

    // A signed push adding a cluster: the daemon creates its role (moto) before its
    // objects (double), under the clusters' path and with the boundary.
    s.write("env/clusters/reports.yaml", REPORTS);
    let routes = std::fs::read_to_string(s.repo().join("env/routes.yaml")).expect("routes");
    s.write("env/routes.yaml", &format!("{routes}{}", route("reports", pg_reports)));
    let added = s.commit(Some("bob"), "add the reports cluster and its route");
    s.git(&["push", "-q", "origin", "main"]);
    webhook(port, "d-1");
    let st = wait_for(port, &work, "the new cluster is applied", |st| st["lastAppliedRevision"] == format!("main@sha1:{added}"));
    assert_eq!(condition(&st, "Ready").0, "True", "{st:#}");
    assert_eq!(condition(&st, "EnvironmentInSync").0, "True", "{st:#}");
    let r = role(&account);
    assert_eq!(r["path"], "/byoc/prod-use1/clusters/", "{r:#}");
    assert_eq!(r["boundary"], "arn:aws:iam::123456789012:policy/byoc/prod-use1/byoc-prod-use1-cluster-boundary", "{r:#}");
    let trust = &r["trust"]["Statement"][0];
    assert_eq!(trust["Action"], "sts:AssumeRoleWithWebIdentity");
    let subjects: Vec<&Value> = trust["Condition"]["StringEquals"].as_object().expect("condition").values().collect();
    assert!(subjects.contains(&&Value::from("system:serviceaccount:rw-reports:rw-reports")), "{trust:#}");
    assert!(r["policy"].to_string().contains("byoc-prod-use1-123456789012-data/reports/*"), "{r:#}");
    let sa: Api<DynamicObject> =
        Api::namespaced_with(d.client(), "rw-reports", &byoc::k8s::objects::ObjectKind::ServiceAccount.api_resource());
    let sa = sa.get("rw-reports").await.expect("service account");
    assert_eq!(
        sa.metadata.annotations.unwrap_or_default().get("eks.amazonaws.com/role-arn"),
        r["arn"].as_str().map(str::to_owned).as_ref()
    );
    // psql through rwproxy reaches the new cluster's frontend, and only it.
    through_proxy(proxy_port, "reports", Some("reports"));
    through_proxy(proxy_port, "analytics", Some("analytics"));

    // A signed revert: the cluster's objects go, then its role.
    let bob = s.key_path("bob");
    s.git(&["-c", &format!("user.signingkey={bob}"), "revert", "--no-edit", "-S", &added]);
    let reverted = s.git(&["rev-parse", "HEAD"]);
    s.git(&["push", "-q", "origin", "main"]);
    webhook(port, "d-2");
    wait_for(port, &work, "the revert is applied", |st| st["lastAppliedRevision"] == format!("main@sha1:{reverted}"));
    assert_eq!(role(&account), Value::Null, "the removed cluster's role is deleted");
    through_proxy(proxy_port, "reports", None);
    let rw: Api<DynamicObject> = Api::all_with(d.client(), &byoc::k8s::objects::ObjectKind::RisingWave.api_resource());
    let names: Vec<String> = rw.list(&Default::default()).await.expect("list").items.into_iter().filter_map(|o| o.metadata.name).collect();
    assert_eq!(names, ["analytics", "ingest"]);

    // A node group resized in the specs: reported, never attempted.
    let env_file = std::fs::read_to_string(s.repo().join("env/environment.yaml")).expect("read");
    s.write("env/environment.yaml", &env_file.replace("        min: 4\n        max: 12", "        min: 4\n        max: 16"));
    let resized = s.commit(Some("alice"), "grow the risingwave node group");
    s.git(&["push", "-q", "origin", "main"]);
    webhook(port, "d-3");
    let st = wait_for(port, &work, "the resize is reported", |st| st["lastAppliedRevision"] == format!("main@sha1:{resized}"));
    let (in_sync, message) = condition(&st, "EnvironmentInSync");
    assert_eq!(in_sync, "False", "{st:#}");
    assert!(message.contains("0 to create, 1 to update, 0 to replace, 0 to delete"), "{message}");
    assert!(message.contains("~ update aws.eks-nodegroup/risingwave: maxSize 12 -> 16"), "{message}");
    assert!(message.contains("run `byoc apply` with administrator credentials"), "{message}");
    assert_eq!(condition(&st, "Ready").0, "True", "the clusters are still converged: {st:#}");

    // Live drift made outside byoc (straight to moto, not through the front): reported
    // with the next revision that changes the environment, never set back by the daemon.
    account.python(
        "import boto3; boto3.client('eks').update_nodegroup_config(clusterName='byoc-prod-use1', nodegroupName='system', scalingConfig={'minSize': 2, 'maxSize': 9, 'desiredSize': 2})",
    );
    // A revision whose environment directory changed (a comment only): a commit outside it
    // is a no-op the daemon does not even parse (run/mod.rs), so it observes nothing.
    let env_file = std::fs::read_to_string(s.repo().join("env/environment.yaml")).expect("read");
    s.write("env/environment.yaml", &format!("{env_file}# a note\n"));
    let noted = s.commit(Some("alice"), "a note");
    s.git(&["push", "-q", "origin", "main"]);
    webhook(port, "d-4");
    let st = wait_for(port, &work, "the live drift is reported", |st| st["lastAppliedRevision"] == format!("main@sha1:{noted}"));
    let (in_sync, message) = condition(&st, "EnvironmentInSync");
    assert_eq!(in_sync, "False", "{st:#}");
    assert!(message.contains("0 to create, 2 to update"), "{message}");
    assert!(message.contains("drift: aws.eks-nodegroup/system `maxSize`: applied 4, live 9"), "{message}");

    // Every call the daemon made, against the agent's policy; no EKS write among them.
    let log = calls(&account, false);
    let policy = agent_policy(ENV, STATE_BUCKET);
    let mut denied = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for c in &log {
        let action = c["action"].as_str().expect("action");
        assert!(!action.ends_with(":Unknown"), "the request log could not name a call: {c}");
        *seen.entry(action.to_owned()).or_default() += 1;
        let verdict = decide(&policy, action, c["resource"].as_str().expect("resource"), c["boundary"].as_str());
        if verdict != "allowed" {
            denied.push(format!("{action} on {} ({verdict})", c["resource"]));
        }
    }
    assert!(denied.is_empty(), "calls policies/aws/agent.json would deny:\n{}", denied.join("\n"));
    let eks: Vec<&String> =
        seen.keys().filter(|a| a.starts_with("eks:") && !a.starts_with("eks:List") && !a.starts_with("eks:Describe")).collect();
    assert!(eks.is_empty(), "EKS writes: {eks:?}");
    assert!(seen.contains_key("eks:DescribeNodegroup"), "the node groups were observed: {seen:?}");
    for write in ["iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:DeleteRole"] {
        assert!(seen.contains_key(write), "{write} was made: {seen:?}");
    }
    eprintln!("daemon AWS calls: {} in total; by action: {seen:?}", log.len());
}
