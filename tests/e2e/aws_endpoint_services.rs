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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = double.serve(listener);
        let operator = crate::kube::support::operator(&double.client());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
        let controller = account.lb_controller(&path);
        Cluster {
            kubeconfig: path.display().to_string(),
            _double: double,
            _controller: controller,
            _server: server,
            _operator: operator,
            _dir: dir,
        }
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
    let repo = example_repo();
    let kubeconfig = cluster.kubeconfig.clone();
    let run = |verb: &'static str, extra: &'static [&'static str]| {
        let dir = repo.path().to_path_buf();
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
    // The public proxy's NLB is its Service's alone: internet-facing, fronted by nothing.
    assert_eq!(lbs["byoc-system/rwproxy-public"]["scheme"], "internet-facing", "{live}");
    assert_eq!(live["services"].as_object().map(|s| s.len()), Some(2), "{live}");
    assert_eq!(lbs.as_object().map(|l| l.len()), Some(3), "the controller's three and no NLB of byoc's own: {live}");

    let second = run("apply", &[]).await.expect("join");
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);

    let destroyed = run("destroy", &["--delete-data"]).await.expect("join");
    assert_eq!(destroyed.code, 0, "{}\n{}", destroyed.stdout, destroyed.stderr);
    let last_sidecar = destroyed
        .stdout
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.starts_with("sidecar: deleted "))
        .expect("sidecar deletions reported");
    for id in ["aws.vpc-endpoint-service/agent", "aws.service-nlb/agent", "aws.subnet/private-a"] {
        assert!(last_sidecar < done(&destroyed, id), "{id} goes after the sidecar:\n{}", destroyed.stdout);
    }
    assert!(done(&destroyed, "aws.vpc-endpoint-service/agent") < done(&destroyed, "aws.subnet/private-a"), "{}", destroyed.stdout);
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = double.serve(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
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
