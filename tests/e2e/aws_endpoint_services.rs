//! Issue 16 item 1: on AWS the agent's and the proxy's NLBs are their Services', made by the
//! AWS Load Balancer Controller, and byoc puts a VPC endpoint service in front of each once
//! the sidecar is in the cluster; destroy goes the other way (the sidecar and with it the
//! controller's NLBs, then the endpoint services, then the rest).
//!
//! The real `byoc` binary against moto (through the front) and the Kubernetes API double
//! over HTTP; `tests/moto/lb_controller.py` stands in for the controller, making in moto
//! what the controller makes for each LoadBalancer Service (found by the controller's tags,
//! as byoc finds them). What exists is read back with boto3.

use serde_json::{Value, json};

use crate::aws::{Account, example_repo};
use crate::support::{Run, byoc_env};

/// Load balancers by the Service they were made for, and endpoint services by byoc's
/// resource id, read from moto.
const READ: &str = "import boto3, json
elb = boto3.client('elbv2'); ec2 = boto3.client('ec2')
lbs = {}
for l in elb.describe_load_balancers()['LoadBalancers']:
    tags = {t['Key']: t['Value'] for t in elb.describe_tags(ResourceArns=[l['LoadBalancerArn']])['TagDescriptions'][0]['Tags']}
    lbs[tags.get('service.k8s.aws/stack', l['LoadBalancerName'])] = {'arn': l['LoadBalancerArn'], 'scheme': l['Scheme'], 'cluster': tags.get('elbv2.k8s.aws/cluster')}
services = {}
for c in ec2.describe_vpc_endpoint_service_configurations()['ServiceConfigurations']:
    if c.get('ServiceState') in ('Deleted', 'Deleting'):
        continue
    tags = {t['Key']: t['Value'] for t in c.get('Tags', [])}
    perms = [p['Principal'] for p in ec2.describe_vpc_endpoint_service_permissions(ServiceId=c['ServiceId'])['AllowedPrincipals']]
    services[tags.get('byoc.risingwave.dev/resource', c['ServiceId'])] = {'loadBalancers': c.get('NetworkLoadBalancerArns', []), 'acceptanceRequired': c['AcceptanceRequired'], 'principals': perms}
print(json.dumps({'lbs': lbs, 'services': services}))
";

/// The environment's cluster for a test: the Kubernetes API double served over HTTP on
/// this test's runtime, the risingwave-operator's stand-in, and the AWS Load Balancer
/// Controller's stand-in making the NLBs of its Services in `account`. Everything stops
/// when it is dropped.
pub(crate) struct Cluster {
    /// `--kubeconfig` for byoc.
    pub kubeconfig: String,
    _double: kube_double::Double,
    _controller: crate::support::Killed,
    _server: tokio::task::JoinHandle<()>,
    _operator: crate::kube::support::Operator,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn new(account: &Account) -> Cluster {
        let double = crate::kube::support::double();
        let (server, dir, kubeconfig) = crate::kube::support::served(&double).await;
        let operator = crate::kube::support::operator(&double.client());
        let controller = account.lb_controller(std::path::Path::new(&kubeconfig));
        Cluster { kubeconfig, _double: double, _controller: controller, _server: server, _operator: operator, _dir: dir }
    }

    /// The flags that give byoc this cluster.
    pub(crate) fn args(&self) -> [&str; 4] {
        ["--kubeconfig", &self.kubeconfig, "--health-timeout", "10"]
    }
}

fn read(account: &Account) -> Value {
    serde_json::from_str(&account.python(READ)).expect("JSON from moto")
}

fn position(run: &Run, what: &str) -> usize {
    run.stdout.lines().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no line with {what:?} in:\n{}", run.stdout))
}

/// The line that reports `id`'s action done (`done 3/30 <id> <action> <cloud id> (0.1s)`).
fn done(run: &Run, id: &str) -> usize {
    let word = format!(" {id} ");
    run.stdout
        .lines()
        .position(|l| l.starts_with("done ") && l.contains(&word))
        .unwrap_or_else(|| panic!("{id} was not done:\n{}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_service_fronts_its_services_nlb_made_by_the_controller_after_the_sidecar_and_destroy_goes_back() {
    let account = Account::new().with_autoscaling_role();
    let endpoint = account.endpoint().to_owned();
    let cluster = Cluster::new(&account).await;
    let mut repo = example_repo();
    let root = repo.path().to_path_buf();
    let kubeconfig = cluster.kubeconfig.clone();
    let run = |verb: &'static str, extra: &'static [&'static str]| {
        let dir = root.clone();
        let (endpoint, kubeconfig) = (endpoint.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![verb, "--repo", ".", "--env", "examples/aws", "--endpoint-url", &endpoint, "--state-dir", "state"];
            args.extend(["--poll-interval", "0.1", "--auto-approve", "--skip-preflight", "--kubeconfig", &kubeconfig]);
            if verb == "apply" {
                args.extend(["--health-timeout", "10"]);
            }
            args.extend_from_slice(extra);
            byoc_env(&dir, &args, &crate::state_s3::MOTO_ENV)
        })
    };

    let first = run("apply", &[]).await.expect("join");
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    // The plan shows them; they are made after the controller and the sidecar.
    for id in ["aws.service-nlb/agent", "aws.service-nlb/proxy", "aws.vpc-endpoint-service/agent", "aws.vpc-endpoint-service/proxy"] {
        assert!(first.stdout.contains(&format!("+ create {id}")), "{id}\n{}", first.stdout);
        assert!(position(&first, "sidecar: ") < done(&first, id), "{id} after the sidecar:\n{}", first.stdout);
    }
    assert!(position(&first, "lb-controller: ") < position(&first, "sidecar: "), "{}", first.stdout);

    let live = read(&account);
    let lbs = &live["lbs"];
    for (role, service) in [("agent", "byoc-system/byoc-agent"), ("proxy", "byoc-system/rwproxy")] {
        let lb = &lbs[service];
        assert_eq!((lb["scheme"].as_str(), lb["cluster"].as_str()), (Some("internal"), Some("byoc-prod-use1")), "{service}: {live}");
        // Exactly its Service's NLB: an interface endpoint reaches one NLB per zone.
        assert_eq!(
            live["services"][format!("aws.vpc-endpoint-service/{role}")],
            json!({"loadBalancers": [lb["arn"]], "acceptanceRequired": true, "principals": ["arn:aws:iam::210987654321:root"]}),
            "{live}"
        );
    }
    // What the control plane's interface endpoint to each service reaches, zone by zone (the
    // front answers as PrivateLink routes: one NLB per zone): its Service's NLB in every
    // zone. Two NLBs behind one service would leave one unreachable here.
    for (role, service) in [("agent", "byoc-system/byoc-agent"), ("proxy", "byoc-system/rwproxy")] {
        let id = account.python(&format!(
            "import boto3\nfor c in boto3.client('ec2').describe_vpc_endpoint_service_configurations()['ServiceConfigurations']:\n    if any(t['Value'] == 'aws.vpc-endpoint-service/{role}' for t in c.get('Tags', [])): print(c['ServiceId'])"
        ));
        let reached = crate::aws::get_json(&format!("{}/__reaches/{}", account.endpoint(), id.trim()));
        let zones = reached.as_object().expect("zones");
        assert_eq!(zones.len(), 3, "{role}: one per zone of the private subnets: {reached}");
        assert!(zones.values().all(|arn| *arn == lbs[service]["arn"]), "{role} reaches its Service's NLB in every zone: {reached}");
    }
    // The public proxy's NLB is its Service's alone: internet-facing, fronted by nothing.
    assert_eq!(lbs["byoc-system/rwproxy-public"]["scheme"], "internet-facing", "{live}");
    assert_eq!(live["services"].as_object().map(|s| s.len()), Some(2), "{live}");
    assert_eq!(lbs.as_object().map(|l| l.len()), Some(3), "the controller's three and no NLB of byoc's own: {live}");

    let second = run("apply", &[]).await.expect("join");
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);

    // Once the NLBs exist, an apply without the cluster (a CI runner outside the VPC) may
    // change what stands on them: a new control-plane principal reaches both endpoint
    // services.
    repo.edit(
        "examples/aws/environment.yaml",
        "      - arn:aws:iam::210987654321:root\n",
        "      - arn:aws:iam::210987654321:root\n      - arn:aws:iam::210987654321:role/vendor-ops\n",
    );
    repo.commit("a second control-plane principal");
    let (dir, e) = (root.clone(), endpoint.clone());
    let cloud_only = tokio::task::spawn_blocking(move || {
        let args = ["apply", "--repo", ".", "--env", "examples/aws", "--endpoint-url", &e, "--state-dir", "state"];
        byoc_env(
            &dir,
            &[&args[..], &["--poll-interval", "0.1", "--auto-approve", "--skip-preflight", "--cloud-only"]].concat(),
            &crate::state_s3::MOTO_ENV,
        )
    })
    .await
    .expect("join");
    assert_eq!(cloud_only.code, 0, "{}\n{}", cloud_only.stdout, cloud_only.stderr);
    assert!(cloud_only.stdout.contains("~ update aws.vpc-endpoint-service/agent"), "{}", cloud_only.stdout);
    assert!(!cloud_only.stdout.contains("waiting: "), "nothing waits once the NLBs exist:\n{}", cloud_only.stdout);
    let principals = read(&account)["services"]["aws.vpc-endpoint-service/proxy"]["principals"].clone();
    let mut principals: Vec<String> = serde_json::from_value(principals).expect("principals");
    principals.sort();
    assert_eq!(principals, ["arn:aws:iam::210987654321:role/vendor-ops", "arn:aws:iam::210987654321:root"]);

    // The front refuses to delete an NLB an endpoint service fronts (ResourceInUse, as
    // ELBv2 does), so the controller can let the Services go only once byoc has deleted
    // the endpoint services: destroy deletes them first, then the sidecar, then the rest.
    let destroyed = run("destroy", &["--delete-data"]).await.expect("join");
    assert_eq!(destroyed.code, 0, "{}\n{}", destroyed.stdout, destroyed.stderr);
    let last_sidecar = destroyed
        .stdout
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.starts_with("sidecar: deleted "))
        .expect("sidecar deletions reported");
    let first_sidecar = position(&destroyed, "sidecar: deleted ");
    for id in ["aws.vpc-endpoint-service/agent", "aws.vpc-endpoint-service/proxy"] {
        assert!(done(&destroyed, id) < first_sidecar, "{id} goes before the sidecar:\n{}", destroyed.stdout);
    }
    for id in ["aws.subnet/private-a", "aws.eks-cluster/main"] {
        assert!(last_sidecar < done(&destroyed, id), "{id} goes after the sidecar:\n{}", destroyed.stdout);
    }
    // The controller deleted its NLBs with their Services: byoc's second pass finds them
    // gone and deletes none itself.
    assert!(destroyed.stdout.contains("note: aws.service-nlb/agent is in the inventory but no longer exists"), "{}", destroyed.stdout);
    assert!(!destroyed.stderr.contains("is still there"), "{}", destroyed.stderr);
    let left = read(&account);
    assert_eq!(left, json!({"lbs": {}, "services": {}}), "the controller deleted its NLBs with their Services");
    assert_eq!(account.counts(), Default::default(), "destroy --delete-data leaves nothing tagged");
}

/// The stand-in itself, held to what the controller does (tests/moto/test_lb_controller.sh:
/// NLBs, tags, subnets, listeners, target groups, security groups, finalizers, deletion
/// through DependencyViolation, restarts), against a double served here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_stand_in_does_what_the_controller_does() {
    let double = kube_double::Double::new(&[]).expect("double");
    let (_server, _dir, kubeconfig) = crate::kube::support::served(&double).await;
    let script = crate::support::project_root().join("tests/moto/test_lb_controller.sh");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash").arg(script).env("SERVED_KUBECONFIG", &kubeconfig).output().expect("bash runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "test_lb_controller.sh:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
