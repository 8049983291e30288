//! `byoc apply` / `byoc destroy` against the moto server: examples/aws from nothing, the
//! second plan, a resize, a removal, destroy; SIGKILL after each step; two concurrent
//! applies; injected throttling and 500s; preflight; web identity credentials.
//!
//! Each test starts its own moto (tests/moto/start.sh) and, in front of it,
//! tests/moto/faults.py: a proxy that injects faults when asked and answers the two calls
//! moto does not implement (iam SimulatePrincipalPolicy, Service Quotas for EKS) from
//! recorded responses — a recorded-response double, named as such; every other call
//! reaches moto. What exists is read back with boto3 describe calls
//! (tests/moto/inventory.py), never from byoc's own state.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::state_s3::{MOTO_ENV, start_moto};
use crate::support::{Killed, Repo, Run, byoc_env, project_root};

/// Every AWS resource examples/aws describes and an apply without a cluster makes: the
/// agent's and the proxy's NLBs are their Services' (made by the AWS Load Balancer
/// Controller in the cluster) and their endpoint services follow them
/// (tests/e2e/aws_endpoint_services.rs).
const EXPECTED: &[&str] = &[
    "aws.eks-addon/aws-ebs-csi-driver",
    "aws.eks-cluster/main",
    "aws.eks-nodegroup/risingwave",
    "aws.eks-nodegroup/system",
    "aws.iam-role/agent",
    "aws.iam-role/ebs-csi",
    "aws.iam-role/eks-cluster",
    "aws.iam-role/eks-node",
    "aws.iam-role/load-balancer-controller",
    "aws.iam-role/rw-analytics",
    "aws.iam-role/rw-ingest",
    "aws.internet-gateway/main",
    "aws.launch-template/risingwave",
    "aws.launch-template/system",
    "aws.nat-gateway/main",
    "aws.oidc-provider/main",
    "aws.route-table/private",
    "aws.route-table/public",
    "aws.s3-bucket/data",
    "aws.s3-bucket/state",
    "aws.security-group/cluster",
    "aws.subnet/private-a",
    "aws.subnet/private-b",
    "aws.subnet/private-c",
    "aws.subnet/public-a",
    "aws.subnet/public-b",
    "aws.subnet/public-c",
    "aws.vpc-endpoint/s3",
    "aws.vpc/main",
    // Owned by the NAT gateway, tagged with its id.
    "eip:aws.nat-gateway/main",
];

fn venv_python() -> PathBuf {
    let venv = std::env::var("BYOC_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/byoc/moto-venv"));
    venv.join("bin/python")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A moto server of this test's own, and the fault proxy / recorded-response double in
/// front of it. Both stop when dropped (and when the test binary exits).
pub(crate) struct Account {
    moto: String,
    moto_pid: u32,
    front: Option<(String, Killed)>,
}

impl Account {
    pub(crate) fn new() -> Account {
        let (moto, pid) = start_moto();
        let mut a = Account { moto, moto_pid: pid, front: None };
        a.front(&[]);
        a
    }

    /// (Re)starts the proxy in front of moto with `args` (fault rate, denied actions, quota).
    pub(crate) fn front(&mut self, args: &[&str]) {
        self.front = None;
        // EKS's version support is judged on the day these tests were written (the front's
        // table holds the real dates), so they pass on any later day too.
        let today: &[&str] = if args.contains(&"--today") { &[] } else { &["--today", "2026-11-26"] };
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(project_root().join("tests/moto/faults.py"))
            .args(["--port", &port.to_string(), "--upstream", &self.moto, "--owner", &std::process::id().to_string()])
            .args(args)
            .args(today)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start faults.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("faults.py starts");
        assert_eq!(line.trim(), "ready");
        self.front = Some((format!("http://127.0.0.1:{port}"), Killed(child)));
    }

    /// Restarts the front in its real-AWS mode (tests/moto/faults.py, item 5) with `args`.
    pub(crate) fn real_aws(mut self, args: &[&str]) -> Account {
        let mut all = vec!["--real-aws"];
        all.extend_from_slice(args);
        self.front(&all);
        self
    }

    /// The endpoint byoc talks to (the proxy).
    pub(crate) fn endpoint(&self) -> &str {
        &self.front.as_ref().expect("front proxy").0
    }

    /// boto3 against moto directly.
    pub(crate) fn python(&self, code: &str) -> String {
        let out = Command::new(venv_python())
            .args(["-c", code])
            .envs(MOTO_ENV)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.moto)
            .output()
            .expect("python runs");
        assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The service-linked role node groups need (a real account has it once used).
    pub(crate) fn with_autoscaling_role(self) -> Account {
        self.python("import boto3; boto3.client('iam').create_service_linked_role(AWSServiceName='autoscaling.amazonaws.com')");
        self
    }

    /// What the account holds for environment prod-use1, read with describe calls.
    pub(crate) fn inventory(&self) -> Value {
        self.inventory_of("prod-use1")
    }

    /// What the account holds for environment `env`, read with describe calls.
    fn inventory_of(&self, env: &str) -> Value {
        let out = Command::new(venv_python())
            .arg(project_root().join("tests/moto/inventory.py"))
            .args([self.moto.as_str(), env])
            // moto has no EKS add-ons: the front keeps them.
            .args(self.front.as_ref().map(|(url, _)| url.as_str()))
            .envs(MOTO_ENV)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("inventory.py runs");
        assert!(out.status.success(), "inventory.py: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("inventory JSON")
    }

    /// Resource id -> how many cloud resources carry its tag.
    pub(crate) fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.counts_of("prod-use1")
    }

    /// [`Account::counts`] for environment `env`.
    fn counts_of(&self, env: &str) -> std::collections::BTreeMap<String, usize> {
        let inv = self.inventory_of(env);
        inv["tagged"].as_object().expect("tagged").iter().map(|(k, v)| (k.clone(), v.as_array().map_or(0, Vec::len))).collect()
    }

    /// The stand-in AWS Load Balancer Controller (tests/moto/lb_controller.py) in the
    /// Kubernetes double `kubeconfig` reaches: once byoc has installed the controller's
    /// Deployment it reads its flags from it (cluster name, VPC, region, as the real pod
    /// does), then makes and deletes the NLBs of the LoadBalancer Services there, in this
    /// account, through the front (so its calls meet the front's real-AWS behaviours too).
    /// Stops when dropped.
    pub(crate) fn lb_controller(&self, kubeconfig: &Path) -> Killed {
        let child = Command::new(venv_python())
            .arg(project_root().join("tests/moto/lb_controller.py"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--aws", self.endpoint(), "--from-deployment", "kube-system/aws-load-balancer-controller"])
            .args(["--owner", &std::process::id().to_string(), "--lifetime", "900"])
            .envs(MOTO_ENV)
            // One line per action on stderr: shown when BYOC_TEST_LB_CONTROLLER_LOG is set.
            .stderr(if std::env::var_os("BYOC_TEST_LB_CONTROLLER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start lb_controller.py");
        Killed(child)
    }

    fn faults_injected(&self) -> u64 {
        get_json(&format!("{}/__faults", self.endpoint())).as_object().expect("counts").values().filter_map(Value::as_u64).sum()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.moto_pid.to_string()).status();
    }
}

pub(crate) fn assert_exactly_one_of_each(counts: &std::collections::BTreeMap<String, usize>) {
    let want: std::collections::BTreeMap<String, usize> = EXPECTED.iter().map(|id| ((*id).to_owned(), 1)).collect();
    assert_eq!(counts, &want, "exactly one of each resource, counted by tag");
}

pub(crate) fn example_repo() -> Repo {
    let mut repo = Repo::new();
    repo.copy_from_project("examples/aws", "examples/aws");
    repo.commit("aws example");
    repo
}

pub(crate) fn apply_args<'a>(account: &'a Account, state: &'a str) -> Vec<&'a str> {
    vec![
        "apply",
        "--repo",
        ".",
        "--env",
        "examples/aws",
        "--endpoint-url",
        account.endpoint(),
        "--state-dir",
        state,
        "--poll-interval",
        "0.1",
    ]
}

/// `apply_args` that approve the plan without asking.
pub(crate) fn approved_apply_args<'a>(account: &'a Account, state: &'a str) -> Vec<&'a str> {
    let mut args = apply_args(account, state);
    args.push("--auto-approve");
    args
}

pub(crate) fn run(repo: &Repo, args: &[&str]) -> Run {
    byoc_env(repo.path(), args, &MOTO_ENV)
}

/// The real `byoc` in the repository, with moto's credentials.
pub(crate) fn byoc_command(repo: &Repo) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byoc"));
    c.envs(MOTO_ENV).current_dir(repo.path());
    c
}

/// GET `url` and parse the JSON answer (the fault proxy's counters).
pub(crate) fn get_json(url: &str) -> Value {
    let out = Command::new("python3")
        .args(["-c", &format!("import urllib.request; print(urllib.request.urlopen('{url}').read().decode())")])
        .output()
        .expect("python3");
    serde_json::from_slice(&out.stdout).expect("json")
}

pub(crate) fn ok(r: &Run) -> &Run {
    assert_eq!(r.code, 0, "byoc failed\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

pub(crate) fn summary(r: &Run) -> &str {
    r.stdout.lines().find(|l| l.contains(" to create, ")).unwrap_or_else(|| panic!("no plan summary in:\n{}", r.stdout))
}

#[test]
fn apply_creates_every_resource_then_plans_nothing_resizes_removes_and_destroys() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    let args = approved_apply_args(&account, "state");

    let first = run(&repo, &args);
    ok(&first);
    assert!(summary(&first).starts_with("30 to create, 0 to update, 0 to replace, 0 to delete, 4 blocked"), "{}", summary(&first));
    // Without a cluster, what stands on the sidecar's Services waits, and says so.
    for id in ["aws.service-nlb/agent", "aws.service-nlb/proxy", "aws.vpc-endpoint-service/agent", "aws.vpc-endpoint-service/proxy"] {
        assert!(first.stdout.contains(&format!("waiting: {id}: waits for the sidecar's Services")), "{id}\n{}", first.stdout);
    }
    assert_exactly_one_of_each(&account.counts());

    let inv = account.inventory();
    let d = &inv["details"];
    assert_eq!(d["vpcCidr"], serde_json::json!(["10.20.0.0/16"]));
    assert_eq!(d["subnets"]["aws.subnet/private-b"], serde_json::json!({"zone": "us-east-1b", "cidr": "10.20.32.0/19"}));
    assert_eq!(d["igwAttached"].as_array().map(Vec::len), Some(1));
    let routes = &d["routes"];
    assert!(
        routes["aws.route-table/public"]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("0.0.0.0/0->igw-")))
    );
    assert!(
        routes["aws.route-table/private"]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("0.0.0.0/0->nat-")))
    );
    assert_eq!(routes["aws.route-table/private"]["subnets"], 3);
    assert_eq!(d["cluster"]["version"], "1.35");
    assert_eq!(d["nodeGroups"]["risingwave"]["taints"], serde_json::json!(["dedicated=risingwave:NO_SCHEDULE"]));
    assert_eq!((d["nodeGroups"]["risingwave"]["min"].as_i64(), d["nodeGroups"]["risingwave"]["max"].as_i64()), (Some(4), Some(12)));
    for (bucket, days) in [("aws.s3-bucket/data", vec![7]), ("aws.s3-bucket/state", vec![])] {
        assert_eq!(
            d["buckets"][bucket],
            serde_json::json!({"versioning": "Enabled", "encryption": "aws:kms", "publicAccessBlocked": true, "noncurrentDays": days}),
            "{bucket}"
        );
    }
    // IRSA: trusted through the cluster's OIDC provider for one service account.
    let oidc_arn = d["oidc"]["arn"].as_str().expect("oidc arn");
    let trust = &d["roles"]["aws.iam-role/rw-analytics"]["trust"];
    assert_eq!(trust["Principal"]["Federated"], oidc_arn);
    assert_eq!(trust["Action"], "sts:AssumeRoleWithWebIdentity");
    let host = d["oidc"]["url"].as_str().expect("url").trim_start_matches("https://").to_owned();
    assert_eq!(trust["Condition"]["StringEquals"][format!("{host}:sub")], "system:serviceaccount:rw-analytics:rw-analytics");
    // Least privilege, as in policies/aws/agent.json.
    let agent_policy: Value =
        serde_json::from_str(&std::fs::read_to_string(project_root().join("policies/aws/agent.json")).expect("policy")).expect("json");
    let mut want: Vec<String> = agent_policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|st| match &st["Action"] {
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap_or_default().to_owned()).collect(),
            a => vec![a.as_str().unwrap_or_default().to_owned()],
        })
        .collect();
    want.sort();
    assert_eq!(d["roles"]["aws.iam-role/agent"]["actions"], serde_json::json!(want));
    assert_eq!(d["roles"]["aws.iam-role/eks-cluster"]["managed"], serde_json::json!(["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]));
    // The AWS Load Balancer Controller's role: trusted by its service account only, with
    // the policy published in policies/aws/load-balancer-controller.json.
    let lbc = &d["roles"]["aws.iam-role/load-balancer-controller"];
    assert_eq!(
        lbc["trust"]["Condition"]["StringEquals"][format!("{host}:sub")],
        "system:serviceaccount:kube-system:aws-load-balancer-controller"
    );
    assert!(lbc["actions"].as_array().is_some_and(|a| a.iter().any(|a| a == "elasticloadbalancing:CreateLoadBalancer")), "{lbc}");

    let second = run(&repo, &args);
    ok(&second);
    assert!(
        summary(&second).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete, 4 blocked, 30 unchanged"),
        "{}",
        summary(&second)
    );
    assert!(second.stdout.contains("nothing to do"));

    // Resize one node group: one update, seen in EKS.
    repo.edit("examples/aws/environment.yaml", "        min: 4\n        max: 12", "        min: 4\n        max: 16");
    repo.commit("grow risingwave nodes");
    let resize = run(&repo, &args);
    ok(&resize);
    assert!(summary(&resize).starts_with("0 to create, 1 to update, 0 to replace, 0 to delete"), "{}", summary(&resize));
    assert!(resize.stdout.contains("~ update aws.eks-nodegroup/risingwave"), "{}", resize.stdout);
    assert_eq!(account.inventory()["details"]["nodeGroups"]["risingwave"]["max"], 16);

    // Remove the external NLB: on AWS it is its Service's (the sidecar deletes the Service,
    // tests/e2e/sidecar_install.rs), so nothing changes in the cloud.
    repo.edit("examples/aws/environment.yaml", "      public:\n        allowedCidrs: [203.0.113.0/24]\n", "");
    repo.commit("no public endpoint");
    let removal = run(&repo, &args);
    ok(&removal);
    assert!(summary(&removal).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", summary(&removal));
    assert_eq!(account.counts().len(), EXPECTED.len());

    // Destroy keeps the buckets (and the retained cluster's role) unless told otherwise.
    let mut destroy: Vec<&str> = args.clone();
    destroy[0] = "destroy";
    let kept = run(&repo, &destroy);
    ok(&kept);
    assert!(kept.stdout.contains("kept: aws.s3-bucket/data"), "{}", kept.stdout);
    assert_eq!(
        account.counts().keys().cloned().collect::<Vec<_>>(),
        ["aws.iam-role/rw-analytics", "aws.s3-bucket/data", "aws.s3-bucket/state"]
    );
    destroy.push("--delete-data");
    ok(&run(&repo, &destroy));
    assert_eq!(account.counts(), Default::default(), "destroy --delete-data leaves nothing tagged");
}

/// Runs `byoc apply` and SIGKILLs it once `k` actions have printed "done".
fn apply_killed_after(repo: &Repo, args: &[&str], k: usize) -> usize {
    let mut child = byoc_command(repo).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("byoc runs");
    let mut done = 0;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("done ") {
            done += 1;
            if done == k {
                child.kill().expect("SIGKILL");
                break;
            }
        }
    }
    let _ = child.wait();
    done
}

#[test]
fn killed_after_each_step_a_rerun_completes_with_exactly_one_of_each() {
    // k = 1..=29 (of the 30 actions) split over three accounts (moto servers) that run
    // side by side.
    let lanes: Vec<Vec<usize>> = (0..3).map(|lane| (1..=29).filter(|k| k % 3 == lane).collect()).collect();
    std::thread::scope(|s| {
        for ks in &lanes {
            s.spawn(move || killed_lane(ks));
        }
    });
}

fn killed_lane(ks: &[usize]) {
    let account = Account::new();
    let repo = example_repo();
    for &k in ks {
        // A fresh account and state for each k.
        account.python("import urllib.request, os; urllib.request.urlopen(urllib.request.Request(os.environ['AWS_ENDPOINT_URL'] + '/moto-api/reset', method='POST'))");
        account.python("import boto3; boto3.client('iam').create_service_linked_role(AWSServiceName='autoscaling.amazonaws.com')");
        let state = format!("state-{k}");
        let args = approved_apply_args(&account, &state);
        let reached = apply_killed_after(&repo, &args, k);
        assert_eq!(reached, k, "the apply was killed after step {k}");
        let rerun = run(&repo, &args);
        ok(&rerun);
        if k < 30 {
            assert!(rerun.stdout.contains("note: resuming: the apply of"), "k={k}: the journal tells what was done:\n{}", rerun.stdout);
        }
        assert!(!rerun.stdout.contains("is a second resource tagged"), "k={k}: a duplicate was created:\n{}", rerun.stdout);
        assert_exactly_one_of_each(&account.counts());
        if k % 5 == 0 {
            let again = run(&repo, &args);
            assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "k={k}: {}", summary(&again));
        }
    }
}

#[test]
fn a_lost_inventory_is_rebuilt_from_tags_without_creating_anything() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    std::fs::remove_file(repo.path().join("state/cloud-inventory.json")).expect("remove inventory");
    std::fs::remove_file(repo.path().join("state/cloud-inventory.json.version")).expect("remove version");
    // A VPC tagged for this environment that nothing wants (leaked), and one of another
    // environment, which is not ours to touch.
    let tag = |env: &str, id: &str| {
        format!(
            "{{'ResourceType': 'vpc', 'Tags': [{{'Key': 'byoc.risingwave.dev/environment', 'Value': '{env}'}}, {{'Key': 'byoc.risingwave.dev/resource', 'Value': '{id}'}}]}}"
        )
    };
    let other = account.python(&format!(
        "import boto3; e = boto3.client('ec2'); e.create_vpc(CidrBlock='10.99.0.0/16', TagSpecifications=[{}]); print(e.create_vpc(CidrBlock='10.98.0.0/16', TagSpecifications=[{}])['Vpc']['VpcId'])",
        tag("prod-use1", "aws.vpc/old"),
        tag("staging", "aws.vpc/main")
    ));
    let rebuilt = run(&repo, &args);
    ok(&rebuilt);
    assert!(summary(&rebuilt).starts_with("0 to create, 30 to update, 0 to replace, 1 to delete"), "{}", summary(&rebuilt));
    assert_eq!(rebuilt.stdout.matches("adopting it").count(), 30);
    assert!(
        rebuilt.stdout.contains("note: aws.vpc/old is tagged for this environment but not managed (leaked); it will be deleted"),
        "{}",
        rebuilt.stdout
    );
    assert_exactly_one_of_each(&account.counts());
    let still =
        account.python(&format!("import boto3; print(len(boto3.client('ec2').describe_vpcs(VpcIds=['{}'])['Vpcs']))", other.trim()));
    assert_eq!(still.trim(), "1", "another environment's VPC is left alone");
    assert!(summary(ok(&run(&repo, &args))).starts_with("0 to create, 0 to update"));
}

#[test]
fn drift_made_outside_byoc_is_reported_and_set_back() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    // Someone grows a node group, opens SSH on a security group and suspends versioning.
    account.python(
        "import boto3
eks = boto3.client('eks'); ec2 = boto3.client('ec2'); s3 = boto3.client('s3')
eks.update_nodegroup_config(clusterName='byoc-prod-use1', nodegroupName='risingwave', scalingConfig={'minSize': 3, 'maxSize': 20, 'desiredSize': 3})
g = [x for x in ec2.describe_security_groups()['SecurityGroups'] if any(t['Value'] == 'aws.security-group/cluster' for t in x.get('Tags', []))][0]
ec2.authorize_security_group_ingress(GroupId=g['GroupId'], IpPermissions=[{'IpProtocol': 'tcp', 'FromPort': 22, 'ToPort': 22, 'IpRanges': [{'CidrIp': '0.0.0.0/0'}]}])
s3.put_bucket_versioning(Bucket='byoc-prod-use1-123456789012-data', VersioningConfiguration={'Status': 'Suspended'})",
    );
    let fixed = run(&repo, &args);
    ok(&fixed);
    for note in [
        "note: drift: aws.eks-nodegroup/risingwave `maxSize`: applied 12, live 20; it will be set back",
        "note: drift: aws.s3-bucket/data `versioning`: applied true, live false; it will be set back",
        "note: drift: aws.security-group/cluster `ingress`: applied [{from: \"10.20.0.0/16\", protocol: \"all\"}], live [",
    ] {
        assert!(fixed.stdout.contains(note), "{note}\n{}", fixed.stdout);
    }
    assert!(summary(&fixed).starts_with("0 to create, 3 to update, 0 to replace, 0 to delete"), "{}", summary(&fixed));
    let d = &account.inventory()["details"];
    assert_eq!(d["nodeGroups"]["risingwave"]["max"], 12);
    assert_eq!(d["ingress"]["aws.security-group/cluster"], serde_json::json!(["-1::10.20.0.0/16"]));
    assert_eq!(d["buckets"]["aws.s3-bucket/data"]["versioning"], "Enabled");
    assert!(summary(ok(&run(&repo, &args))).starts_with("0 to create, 0 to update"));
}

#[test]
fn apply_asks_and_anything_but_yes_changes_nothing() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let mut child = byoc_command(&repo)
        .args(apply_args(&account, "state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("byoc runs");
    child.stdin.take().expect("stdin").write_all(b"y\n").expect("answer");
    let out = child.wait_with_output().expect("byoc ends");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("30 to create"), "the live plan is shown first:\n{stdout}");
    assert!(stderr.contains("Apply these 30 change(s) to prod-use1? Only 'yes' approves: "), "{stderr}");
    assert!(stderr.contains("not applied: only 'yes' approves; nothing was changed"), "{stderr}");
    assert_eq!(account.counts(), Default::default());
}

#[test]
fn a_second_concurrent_apply_is_refused_by_the_lease_and_no_state_update_is_lost() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    account.python("import boto3; boto3.client('s3').create_bucket(Bucket='infra-state')");
    let common = [
        "--repo",
        ".",
        "--env",
        "examples/aws",
        "--endpoint-url",
        account.endpoint(),
        "--state-s3",
        "s3://infra-state/prod-use1",
        "--poll-interval",
        "0.1",
    ];

    // The first apply holds the lease while it waits for approval.
    let mut first = byoc_command(&repo)
        .arg("apply")
        .args(common)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("byoc runs");
    let mut stderr = first.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Only 'yes' approves: ") {
        let n = stderr.read(&mut buf).expect("read stderr");
        assert!(n > 0, "the first apply ended before asking:\n{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }

    let second = byoc_env(repo.path(), &[&["apply"][..], &common, &["--auto-approve"]].concat(), &MOTO_ENV);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(second.stderr.contains("the environment is locked by") && second.stderr.contains("nothing was changed"), "{}", second.stderr);
    assert_eq!(account.counts(), Default::default(), "the refused apply changed nothing");

    first.stdin.take().expect("stdin").write_all(b"yes\n").expect("approve");
    let out = first.wait_with_output().expect("first apply ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_exactly_one_of_each(&account.counts());

    // Every one of the 30 conditional writes landed: the inventory in the bucket has all.
    let records = account.python(
        "import boto3, json; b = boto3.client('s3').get_object(Bucket='infra-state', Key='prod-use1/cloud-inventory.json')['Body'].read(); d = json.loads(b); print(len(d['resources']), len(d['journal']['done']), d['journal']['finishedAt'] is not None)",
    );
    assert_eq!(records.trim(), "30 30 True");
    // The lease was released: the second apply now runs (and finds nothing to do).
    let later = byoc_env(repo.path(), &[&["apply"][..], &common, &["--auto-approve"]].concat(), &MOTO_ENV);
    assert!(ok(&later).stdout.contains("nothing to do"));
}

#[test]
fn throttling_and_server_errors_are_retried_and_each_retry_is_printed() {
    let mut account = Account::new().with_autoscaling_role();
    account.front(&["--fault-rate", "0.2", "--seed", "42"]);
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    let r = run(&repo, &args);
    ok(&r);
    let retries = r.stderr.lines().filter(|l| l.starts_with("retry: ")).count() as u64;
    let injected = account.faults_injected();
    assert!(injected >= 10, "the proxy injected only {injected} faults");
    assert_eq!(retries, injected, "one printed retry per injected fault:\n{}", r.stderr);
    assert!(r.stdout.contains(&format!("{injected} retries of throttled or failed calls")), "{}", r.stdout);
    assert!(r.stderr.contains("RequestLimitExceeded") && r.stderr.contains("Throttling"), "{}", r.stderr);
    assert_exactly_one_of_each(&account.counts());
}

/// Found by hand: an environment whose spec.account differs from the credentials' account
/// was applied into the credentials' account, under ARNs naming the other one.
#[test]
fn credentials_for_another_account_are_refused_before_any_change() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = Repo::new();
    repo.copy_from_project("examples/aws", "examples/aws");
    let path = repo.path().join("examples/aws/environment.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("account: \"123456789012\"", "account: \"999988887777\"")).expect("write");
    repo.commit("another account");
    let r = run(&repo, &approved_apply_args(&account, "state"));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("are for account 123456789012, but the environment's spec.account is 999988887777"), "{}", r.stderr);
    assert_eq!(account.counts(), Default::default());
}

#[test]
fn preflight_reports_every_problem_at_once_and_changes_nothing() {
    let mut account = Account::new(); // no AWSServiceRoleForAutoScaling
    account.front(&["--deny", "ec2:CreateVpc,eks:CreateNodegroup,iam:PassRole,iam:CreateServiceLinkedRole", "--quota", "30"]);
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    let r = run(&repo, &args);
    assert_eq!(r.code, 1, "{}", r.stdout);
    // Three service-linked roles the caller may not create, the quota, the actions. (ELB's
    // is the controller's first NLB's, checked when an apply reaches the cluster.)
    assert!(r.stderr.contains("preflight found 5 problem(s); nothing was changed"), "{}", r.stderr);
    assert!(r.stderr.contains("the service-linked role AWSServiceRoleForAutoScaling does not exist"), "{}", r.stderr);
    assert!(r.stderr.contains("eks/L-6D54EA21 (managed node groups per cluster) is 30, below the 36"), "{}", r.stderr);
    assert!(
        r.stderr.contains("not allowed 3 action(s) this plan needs: ec2:CreateVpc (implicitDeny), eks:CreateNodegroup (implicitDeny), iam:PassRole (implicitDeny) when passing a role to eks.amazonaws.com"),
        "{}",
        r.stderr
    );
    assert_eq!(account.counts(), Default::default());

    // A quota that cannot be read is a problem too, not a pass.
    account.front(&["--quota", "none"]);
    let account = account.with_autoscaling_role();
    let args = approved_apply_args(&account, "state");
    let r = run(&repo, &args);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("cannot read the quota eks/L-6D54EA21"), "{}", r.stderr);
    assert_eq!(account.counts(), Default::default());
}

#[test]
fn slow_eks_phases_are_waited_for_with_progress_and_a_version_eks_does_not_offer_is_refused() {
    let mut account = Account::new().with_autoscaling_role();
    // moto's clusters are ACTIVE at once and it has no UpdateClusterVersion: the double in
    // front shows CREATING / UPDATING for three reads and answers the upgrade.
    account.front(&["--creating", "3"]);
    let mut repo = example_repo();
    let args = approved_apply_args(&account, "state");
    let first = run(&repo, &args);
    ok(&first);
    for id in ["aws.eks-cluster/main", "aws.eks-nodegroup/system", "aws.eks-nodegroup/risingwave"] {
        assert_eq!(first.stdout.matches(&format!("waiting {id}: CREATING (")).count(), 3, "{id}:\n{}", first.stdout);
    }
    // Nothing that depends on the cluster started before it was ACTIVE.
    let line = |needle: &str| first.stdout.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}"));
    assert!(line("done") < line("waiting aws.eks-cluster/main"));
    assert!(line("create byoc-prod-use1 (") < line("waiting aws.eks-nodegroup/system"));
    assert!(line("create byoc-prod-use1 (") < line("aws.oidc-provider/main create"));

    repo.edit("examples/aws/environment.yaml", "version: \"1.35\"", "version: \"1.36\"");
    repo.commit("upgrade Kubernetes");
    // 1.36 is not in the front's table (EKS's calendar as read): preflight says so.
    let refused = run(&repo, &args);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("EKS does not offer Kubernetes 1.36"), "{}", refused.stderr);
    repo.edit("examples/aws/environment.yaml", "version: \"1.36\"", "version: \"1.35\"");
    repo.commit("back to 1.35");
    assert!(summary(ok(&run(&repo, &args))).starts_with("0 to create, 0 to update"));
}

/// Starts examples/aws at Kubernetes `version` (its support type `support`, if given).
fn repo_at_version(version: &str, support: Option<&str>) -> Repo {
    let mut repo = example_repo();
    repo.edit("examples/aws/environment.yaml", "version: \"1.35\"", &format!("version: \"{version}\""));
    if let Some(t) = support {
        repo.edit("examples/aws/environment.yaml", "    serviceCidr:", &format!("    supportType: {t}\n    serviceCidr:"));
    }
    repo.commit(&format!("Kubernetes {version}"));
    repo
}

#[test]
fn kubernetes_versions_are_asked_of_eks_raised_one_minor_at_a_time_control_plane_first_and_never_lowered() {
    let account = Account::new().with_autoscaling_role();
    let args = approved_apply_args(&account, "state");

    // What EKS offers on 2026-11-26 (the front's table, from EKS's release calendar):
    // 1.31's extended support ends that day, 1.30's ended, 1.36 is not offered.
    for (version, support, want) in [
        ("1.31", None, "Kubernetes 1.31 left EKS standard support on 2025-11-26 (extended support ends 2026-11-26)"),
        ("1.30", Some("extended"), "Kubernetes 1.30 is UNSUPPORTED on EKS (extended support ended 2026-07-23)"),
        ("1.36", None, "EKS does not offer Kubernetes 1.36"),
    ] {
        let r = run(&repo_at_version(version, support), &args);
        assert_eq!(r.code, 1, "{version}: {}", r.stdout);
        assert!(r.stderr.contains(want), "{version}:\n{}", r.stderr);
        assert!(r.stderr.contains("examples/aws/environment.yaml:"), "{version}: names the spec's line:\n{}", r.stderr);
        assert_eq!(account.counts(), Default::default(), "{version}: nothing made");
    }

    // 1.33 is in extended support: allowed when the spec asks for it, and the plan says
    // what it costs. The policy is set explicitly (EKS's default would be EXTENDED too).
    let mut repo = repo_at_version("1.33", Some("extended"));
    let first = run(&repo, &args);
    ok(&first);
    assert!(first.stdout.contains("note: cost: supportType extended"), "{}", first.stdout);
    assert!(first.stdout.contains("6 times the standard price"), "{}", first.stdout);
    let inv = account.inventory();
    assert_eq!(inv["details"]["cluster"]["version"], "1.33");
    assert_eq!(inv["details"]["nodeGroups"]["risingwave"]["version"], "1.33");

    // To 1.35 with standard support: two control-plane updates, one minor each, then the
    // policy, then each node group after the control plane.
    repo.edit("examples/aws/environment.yaml", "version: \"1.33\"", "version: \"1.35\"");
    repo.edit("examples/aws/environment.yaml", "    supportType: extended\n", "");
    repo.commit("Kubernetes 1.35, standard support");
    let upgrade = run(&repo, &args);
    ok(&upgrade);
    assert!(summary(&upgrade).starts_with("0 to create, 3 to update, 0 to replace, 0 to delete"), "{}", summary(&upgrade));
    assert!(!upgrade.stdout.contains("note: cost:"), "{}", upgrade.stdout);
    let log = get_json(&format!("{}/__eks", account.endpoint()))["log"].clone();
    let log: Vec<String> = log
        .as_array()
        .expect("log")
        .iter()
        .map(|e| {
            let (c, v) = (e["cluster"].as_str().unwrap_or_default(), e["version"].as_str().unwrap_or_default());
            match (e.get("nodegroup"), e.get("upgradePolicy")) {
                (Some(g), _) => format!("nodegroup {} {v}", g.as_str().unwrap_or_default()),
                (_, Some(p)) => format!("policy {c} {}", p.as_str().unwrap_or_default()),
                _ if e.get("addon").is_some() => "addon".to_owned(),
                _ => format!("cluster {c} {v}"),
            }
        })
        .filter(|e| e != "addon")
        .collect();
    assert_eq!(&log[..3], ["cluster byoc-prod-use1 1.34", "cluster byoc-prod-use1 1.35", "policy byoc-prod-use1 STANDARD"], "{log:?}");
    let mut groups = log[3..].to_vec();
    groups.sort();
    assert_eq!(groups, ["nodegroup risingwave 1.35", "nodegroup system 1.35"], "{log:?}");
    // moto keeps 1.33 (inventory.py reads it directly); the front answers with the
    // versions the updates set, and byoc reads those back: nothing left to do.
    assert_eq!(get_json(&format!("{}/__eks", account.endpoint()))["byoc-prod-use1"]["version"], "1.35");
    assert!(summary(ok(&run(&repo, &args))).starts_with("0 to create, 0 to update"));

    // Lower: refused before anything changes, naming the spec's line.
    repo.edit("examples/aws/environment.yaml", "version: \"1.35\"", "version: \"1.34\"");
    repo.commit("downgrade");
    let down = run(&repo, &args);
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(
        down.stderr
            .contains("examples/aws/environment.yaml:25:14: kubernetes.version \"1.34\" is lower than the 1.35 the EKS cluster runs"),
        "{}",
        down.stderr
    );
    let after = get_json(&format!("{}/__eks", account.endpoint()))["log"].as_array().map(Vec::len);
    assert_eq!(after, Some(log.len() + 1), "no update asked (the add-on's create is the one other entry)");
}

#[test]
fn nodes_get_their_ami_type_an_encrypted_root_volume_with_the_users_tags_and_the_ebs_csi_driver() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    let inv = account.inventory();
    let d = &inv["details"];
    for (group, size) in [("system", 50), ("risingwave", 50)] {
        let t = &d["launchTemplates"][format!("aws.launch-template/{group}")];
        assert_eq!((t["device"].as_str(), t["size"].as_i64(), t["type"].as_str()), (Some("/dev/xvda"), Some(size), Some("gp3")), "{t}");
        assert_eq!(t["encrypted"], true, "{t}");
        assert_eq!(t["httpTokens"], "required", "{t}");
        for on in ["instance", "volume"] {
            assert_eq!(t["tags"][on]["team"], "data-platform", "{on}: {t}");
            assert_eq!(t["tags"][on]["cost-center"], "4711", "{on}: {t}");
        }
        assert_eq!(d["nodeGroups"][group]["launchTemplate"], t["id"], "{group} uses its template");
        assert_eq!(d["nodeGroups"][group]["amiType"], "AL2023_x86_64_STANDARD", "{group}");
    }
    let role = &d["roles"]["aws.iam-role/ebs-csi"];
    assert_eq!(role["managed"], serde_json::json!(["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]));
    let host = d["oidc"]["url"].as_str().expect("url").trim_start_matches("https://").to_owned();
    assert_eq!(
        role["trust"]["Condition"]["StringEquals"][format!("{host}:sub")],
        "system:serviceaccount:kube-system:ebs-csi-controller-sa"
    );
    assert_eq!(d["addons"]["aws-ebs-csi-driver"], serde_json::json!({"role": role["arn"], "status": "ACTIVE"}));

    // Graviton: the AMI type follows, and a bigger root volume; both replace the group.
    repo.edit(
        "examples/aws/environment.yaml",
        "machineType: m6i.large\n        min: 2\n        max: 4\n        rootVolumeGiB: 50",
        "machineType: m7g.large\n        min: 2\n        max: 4\n        rootVolumeGiB: 80",
    );
    repo.commit("system nodes on Graviton, 80 GiB");
    let r = run(&repo, &args);
    ok(&r);
    assert!(r.stdout.contains("replace aws.eks-nodegroup/system"), "{}", r.stdout);
    // Both made before the old ones go (the old group runs on the old template until it is
    // deleted), the old group before its template.
    let at = |what: &str| r.stdout.find(what).unwrap_or_else(|| panic!("no {what:?} in:\n{}", r.stdout));
    let new_template = at("aws.launch-template/system replace lt-");
    let new_group = at("aws.eks-nodegroup/system replace system-2 ");
    let old_group = at("aws.eks-nodegroup/system replace: deleted system ");
    let old_template = at("aws.launch-template/system replace: deleted lt-");
    assert!(new_template < new_group && new_group < old_group && old_group < old_template, "{}", r.stdout);
    let d = account.inventory()["details"].clone();
    assert_eq!(d["nodeGroups"]["system"]["amiType"], "AL2023_ARM_64_STANDARD");
    assert_eq!(d["launchTemplates"]["aws.launch-template/system"]["size"], 80);
    assert_eq!(d["nodeGroups"]["system"]["launchTemplate"], d["launchTemplates"]["aws.launch-template/system"]["id"]);
    assert_exactly_one_of_each(&account.counts());
}

#[test]
fn the_plan_compares_pinned_clusters_requests_with_their_node_groups_minimum() {
    let mut repo = example_repo();
    // The example's minimum (4 x r6i.2xlarge: 32 vCPU) holds its clusters (26 CPU).
    repo.edit("examples/aws/environment.yaml", "        min: 4\n        max: 12", "        min: 3\n        max: 12");
    repo.commit("min 3");
    let plan = |repo: &Repo, head: &str| {
        byoc_env(repo.path(), &["plan", "--repo", ".", "--env", "examples/aws", "--base", "HEAD~1", "--head", head], &MOTO_ENV)
    };
    let short = plan(&repo, "HEAD");
    assert!(
        short.stdout.contains("note: capacity: the clusters pinned to node group risingwave (analytics, ingest) request 26 CPU and 86.0 GiB, but its minimum of 3 r6i.2xlarge node(s) provides 24 vCPU and 192 GiB"),
        "{}",
        short.stdout
    );
    assert!(short.stdout.contains("Raise its min to at least 4"), "{}", short.stdout);
    let fits = plan(&repo, "HEAD~1");
    assert!(!fits.stdout.contains("capacity"), "{}", fits.stdout);

    // An instance type the table does not know is said, not guessed.
    repo.edit("examples/aws/environment.yaml", "machineType: r6i.2xlarge", "machineType: x2iedn.2xlarge");
    repo.commit("unknown type");
    let unknown = plan(&repo, "HEAD");
    assert!(
        unknown.stdout.contains("capacity not checked: byoc's table does not know instance type x2iedn.2xlarge of node group risingwave"),
        "{}",
        unknown.stdout
    );
}

#[test]
fn web_identity_credentials_from_a_projected_token_file() {
    let account = Account::new().with_autoscaling_role();
    account.python(
        "import boto3, json; boto3.client('iam').create_role(RoleName='byoc-deployer', AssumeRolePolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': []}))",
    );
    let repo = example_repo();
    let token: &Path = &repo.path().join("token");
    std::fs::write(token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YnlvYy1zeXN0ZW06YnlvYy1hZ2VudCJ9.c2ln")
        .expect("token");
    let args = approved_apply_args(&account, "state");
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().expect("utf-8")),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/byoc-deployer"),
        ("AWS_ROLE_SESSION_NAME", "ci"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", account.endpoint()),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_byoc"))
        .args(&args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .envs(env)
        .current_dir(repo.path())
        .output()
        .expect("byoc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("credentials: arn:aws:sts::123456789012:assumed-role/byoc-deployer/ci"), "{stdout}");
    assert_exactly_one_of_each(&account.counts());
}

/// Every name byoc derives from the longest environment name validation accepts, a
/// four-digit proxy port and the longest cluster name is one AWS takes: faults.py answers
/// load balancer and target group names over 32 characters or with `--`, and role names
/// over 64, with AWS's ValidationError, as AWS would.
#[test]
fn the_longest_valid_names_apply_and_destroy() {
    const ENV: &str = "abcdefghijklmnop-qrstuvw";
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    repo.edit("examples/aws/environment.yaml", "name: prod-use1", &format!("name: {ENV}"));
    repo.edit("examples/aws/environment.yaml", "      port: 4566", "      port: 9999");
    let long = "a2345678-0123456789-123456789-123456789z";
    assert_eq!(long.len(), 40, "the longest cluster name validation accepts");
    repo.write(
        &format!("examples/aws/clusters/{long}.yaml"),
        &repo
            .read("examples/aws/clusters/ingest.yaml")
            .replace("name: ingest", &format!("name: {long}"))
            .replace("prefix: ingest", "prefix: long"),
    );
    repo.commit("long names");
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    let counts = account.counts_of(ENV);
    assert_eq!(counts.len(), EXPECTED.len() + 1, "every resource and the third cluster's role: {counts:?}");
    let d = &account.inventory_of(ENV)["details"];
    let role = d["roles"][format!("aws.iam-role/rw-{long}")]["arn"].as_str().expect("the long cluster's role").to_owned();
    let name = role.rsplit('/').next().unwrap_or_default();
    assert!(name.len() <= 64 && name.starts_with(&format!("byoc-{ENV}-")), "{name}");
    let mut destroy = args.clone();
    destroy[0] = "destroy";
    destroy.push("--delete-data");
    ok(&run(&repo, &destroy));
    assert_eq!(account.counts_of(ENV), Default::default(), "destroy --delete-data leaves nothing tagged");
}

/// boto3 code that finds this environment's resources by their resource tag.
const FIND: &str = "import boto3
ec2 = boto3.client('ec2'); elb = boto3.client('elbv2'); iam = boto3.client('iam'); eks = boto3.client('eks'); s3 = boto3.client('s3')
def tagged(tags, rid):
    return any(t['Key'] == 'byoc.risingwave.dev/resource' and t['Value'] == rid for t in tags or [])
def lb(rid):
    return [l for l in elb.describe_load_balancers()['LoadBalancers'] if tagged(elb.describe_tags(ResourceArns=[l['LoadBalancerArn']])['TagDescriptions'][0]['Tags'], rid)][0]
";

#[test]
fn destroy_deletes_what_is_half_created_and_passes_over_what_is_already_gone() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    account.python(&format!(
        "{FIND}
# A role created but never given its policy.
iam.delete_role_policy(RoleName='byoc-prod-use1-rw-analytics', PolicyName='byoc')
# Already gone: a role, a bucket, a node group, the public route table and the internet gateway.
iam.delete_role_policy(RoleName='byoc-prod-use1-rw-ingest', PolicyName='byoc')
iam.delete_role(RoleName='byoc-prod-use1-rw-ingest')
s3.delete_bucket(Bucket='byoc-prod-use1-123456789012-state')
eks.delete_nodegroup(clusterName='byoc-prod-use1', nodegroupName='system')
rt = [t for t in ec2.describe_route_tables()['RouteTables'] if tagged(t.get('Tags'), 'aws.route-table/public')][0]
for a in rt.get('Associations', []):
    ec2.disassociate_route_table(AssociationId=a['RouteTableAssociationId'])
ec2.delete_route_table(RouteTableId=rt['RouteTableId'])
igw = [g for g in ec2.describe_internet_gateways()['InternetGateways'] if tagged(g.get('Tags'), 'aws.internet-gateway/main')][0]
for a in igw.get('Attachments', []):
    ec2.detach_internet_gateway(InternetGatewayId=igw['InternetGatewayId'], VpcId=a['VpcId'])
ec2.delete_internet_gateway(InternetGatewayId=igw['InternetGatewayId'])
"
    ));
    let mut destroy = args.clone();
    destroy[0] = "destroy";
    destroy.push("--delete-data");
    let out = run(&repo, &destroy);
    ok(&out);
    for gone in
        ["aws.iam-role/rw-ingest", "aws.s3-bucket/state", "aws.eks-nodegroup/system", "aws.route-table/public", "aws.internet-gateway/main"]
    {
        assert!(
            out.stdout.contains(&format!("note: {gone} is in the inventory but no longer exists (deleted outside byoc)")),
            "{gone}\n{}",
            out.stdout
        );
    }
    assert_eq!(account.counts(), Default::default(), "destroy --delete-data leaves nothing tagged");
}

#[test]
fn a_deletion_that_fails_keeps_only_what_it_uses_and_everything_else_is_destroyed() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    // Someone added a node group of their own to the EKS cluster: EKS refuses to delete a
    // cluster that has node groups (ResourceInUseException).
    account.python(&format!(
        "{FIND}
subnets = [s['SubnetId'] for s in ec2.describe_subnets()['Subnets'] if tagged(s.get('Tags'), 'aws.subnet/private-a')]
eks.create_nodegroup(clusterName='byoc-prod-use1', nodegroupName='theirs', subnets=subnets, nodeRole='arn:aws:iam::123456789012:role/theirs')
"
    ));
    let mut destroy = args.clone();
    destroy[0] = "destroy";
    destroy.push("--delete-data");
    let failed = run(&repo, &destroy);
    assert_ne!(failed.code, 0, "{}\n{}", failed.stdout, failed.stderr);
    let text = format!("{}\n{}", failed.stdout, failed.stderr);
    for line in [
        "1 action(s) failed",
        "eks DeleteCluster for aws.eks-cluster/main byoc-prod-use1: ResourceInUseException",
        "aws.iam-role/eks-cluster: not deleted: aws.eks-cluster/main uses it and is still there",
        "aws.security-group/cluster: not deleted: aws.eks-cluster/main uses it and is still there",
        "aws.subnet/private-a: not deleted: aws.eks-cluster/main uses it and is still there",
        "aws.vpc/main: not deleted: aws.s",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let left: Vec<String> = account.counts().into_keys().collect();
    assert_eq!(
        left,
        [
            "aws.eks-cluster/main",
            "aws.iam-role/eks-cluster",
            "aws.security-group/cluster",
            "aws.subnet/private-a",
            "aws.subnet/private-b",
            "aws.subnet/private-c",
            "aws.vpc/main",
        ],
        "only the cluster and what it uses are left"
    );
    // Once their node group is gone, the rerun finishes the job.
    account.python("import boto3; boto3.client('eks').delete_nodegroup(clusterName='byoc-prod-use1', nodegroupName='theirs')");
    ok(&run(&repo, &destroy));
    assert_eq!(account.counts(), Default::default(), "the second destroy leaves nothing tagged");
}

/// An environment in another region than the other tests' us-east-1. moto keeps each
/// region's clusters apart and reads the region from the request's signature, so the
/// front's own reads of a cluster (for add-ons and upgrades, which moto lacks) must be
/// signed for the caller's region: they were signed for us-east-1, and the EBS CSI add-on
/// of an eu-west-2 cluster failed with "No cluster found" (found by hand, by an
/// environment written from scratch).
#[test]
fn an_environment_in_another_region_applies_and_then_plans_nothing() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    let spec = "examples/aws/environment.yaml";
    let text = repo.read(spec).replace("us-east-1", "eu-west-2");
    repo.write(spec, &text);
    repo.commit("move to eu-west-2");
    let first = run(&repo, &approved_apply_args(&account, "state"));
    ok(&first);
    assert!(first.stdout.contains("aws.eks-addon/aws-ebs-csi-driver"), "{}", first.stdout);
    let second = run(&repo, &approved_apply_args(&account, "state"));
    ok(&second);
    assert!(second.stdout.contains("nothing to do without the cluster: the account matches"), "{}", second.stdout);
}
