//! AWS cost and resilience defaults, preflight and destroy as AWS allows (issue 16 items 9,
//! 11, 7, 6): `byoc apply` / `byoc destroy` against moto behind tests/moto/faults.py, read
//! back with boto3 (tests/moto/inventory.py). Each test fails without the behaviour it names.

use serde_json::json;

use crate::aws::{Account, approved_apply_args, example_repo, ok, run, summary};

/// The example's private subnets reach S3 through a gateway endpoint on their route table,
/// not through the NAT gateway, and the data bucket expires noncurrent versions after the
/// default 7 days (the state bucket keeps its history).
#[test]
fn s3_goes_through_a_gateway_endpoint_and_old_data_versions_expire() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    ok(&run(&repo, &approved_apply_args(&account, "state")));
    let d = &account.inventory()["details"];
    assert_eq!(
        d["vpcEndpoints"]["aws.vpc-endpoint/s3"],
        json!({"service": "com.amazonaws.us-east-1.s3", "type": "Gateway", "routeTables": ["aws.route-table/private"]})
    );
    assert_eq!(d["buckets"]["aws.s3-bucket/data"]["noncurrentDays"], json!([7]));
    assert_eq!(d["buckets"]["aws.s3-bucket/state"]["noncurrentDays"], json!([]));
    // One NAT gateway by default, serving every zone.
    assert_eq!(d["routes"]["aws.route-table/private"]["natZones"], json!(["us-east-1a"]));

    // Someone drops the lifecycle rule: drift, set back.
    account.python("import boto3; boto3.client('s3').delete_bucket_lifecycle(Bucket='byoc-prod-use1-123456789012-data')");
    let fixed = run(&repo, &approved_apply_args(&account, "state"));
    assert!(
        ok(&fixed).stdout.contains("note: drift: aws.s3-bucket/data `noncurrentVersionDays`: applied 7, live 0; it will be set back"),
        "{}",
        fixed.stdout
    );
    assert_eq!(account.inventory()["details"]["buckets"]["aws.s3-bucket/data"]["noncurrentDays"], json!([7]));
}

/// `natGateways: perZone`: a NAT gateway in each zone's public subnet, and each zone's
/// private subnets routed to their own zone's gateway, so one zone's loss cuts only its
/// own egress; the S3 endpoint sits on every private table; the lifecycle takes the
/// spec's days.
#[test]
fn a_nat_gateway_per_zone_routes_each_zone_through_its_own() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    repo.edit("examples/aws/environment.yaml", "    zones: [us-east-1a", "    natGateways: perZone\n    zones: [us-east-1a");
    repo.edit("examples/aws/environment.yaml", "  tags:\n", "  storage:\n    noncurrentVersionDays: 30\n  tags:\n");
    repo.commit("a NAT gateway per zone, 30 days of old versions");
    let applied = run(&repo, &approved_apply_args(&account, "state"));
    ok(&applied);
    let counts = account.counts();
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    for z in zones {
        assert_eq!(counts.get(&format!("aws.nat-gateway/{z}")), Some(&1), "{counts:?}");
        assert_eq!(counts.get(&format!("aws.route-table/private-{z}")), Some(&1), "{counts:?}");
    }
    assert_eq!(counts.get("aws.nat-gateway/main"), None);
    let d = &account.inventory()["details"];
    for z in zones {
        let table = &d["routes"][format!("aws.route-table/private-{z}")];
        assert_eq!(table["natZones"], json!([z]), "{table}");
        assert_eq!(table["subnetZones"], json!([z]), "{table}");
    }
    assert_eq!(
        d["vpcEndpoints"]["aws.vpc-endpoint/s3"]["routeTables"],
        json!(["aws.route-table/private-us-east-1a", "aws.route-table/private-us-east-1b", "aws.route-table/private-us-east-1c"])
    );
    assert_eq!(d["buckets"]["aws.s3-bucket/data"]["noncurrentDays"], json!([30]));
    assert!(summary(ok(&run(&repo, &approved_apply_args(&account, "state")))).starts_with("0 to create, 0 to update"));
}

/// An IAM user of moto's with `policy` inline and an access key: the credentials byoc runs
/// with, as (access key id, secret).
fn user_with_policy(account: &Account, name: &str, policy: &serde_json::Value) -> (String, String) {
    let out = account.python(&format!(
        "import boto3
iam = boto3.client('iam'); iam.create_user(UserName='{name}')
iam.put_user_policy(UserName='{name}', PolicyName='byoc', PolicyDocument='''{policy}''')
k = iam.create_access_key(UserName='{name}')['AccessKey']; print(k['AccessKeyId'], k['SecretAccessKey'])"
    ));
    let mut it = out.split_whitespace().map(str::to_owned);
    (it.next().expect("key id"), it.next().expect("secret"))
}

/// A least-privilege CI policy: everything, but `iam:PassRole` only to EKS and
/// `ec2:CreateTags` only inside the create calls listed.
fn scoped_policy(passed_to: &str, tag_on: &[&str]) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "NotAction": ["iam:PassRole", "ec2:CreateTags"], "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*", "Condition": {"StringEquals": {"iam:PassedToService": passed_to}}},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*", "Condition": {"StringEquals": {"ec2:CreateAction": tag_on}}},
    ]})
}

/// Preflight simulates `iam:PassRole` with `iam:PassedToService` and tag-on-create with
/// `ec2:CreateAction`, as AWS authorizes those calls: a CI user scoped by those keys passes
/// and the apply goes through; one scoped too narrowly is told which call it lacks. moto
/// has no SimulatePrincipalPolicy; the front (faults.py --evaluate-policies) evaluates the
/// user's inline policies from moto's IAM with the request context it is given.
#[test]
fn a_ci_user_scoped_by_condition_keys_is_judged_as_aws_would_judge_its_calls() {
    let mut account = Account::new().with_autoscaling_role();
    account.front(&["--evaluate-policies"]);
    let repo = example_repo();
    let creates = [
        "AllocateAddress",
        "CreateInternetGateway",
        "CreateNatGateway",
        "CreateRouteTable",
        "CreateSecurityGroup",
        "CreateSubnet",
        "CreateVpc",
        "CreateVpcEndpoint",
    ];
    let as_user = |(key, secret): &(String, String), state: &str| {
        let env = [
            ("AWS_ACCESS_KEY_ID", key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        crate::support::byoc_env(repo.path(), &approved_apply_args(&account, state), &env)
    };

    let narrow = user_with_policy(&account, "ci-narrow", &scoped_policy("ec2.amazonaws.com", &["CreateVpc"]));
    let refused = as_user(&narrow, "state-narrow");
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    let problem = "arn:aws:iam::123456789012:user/ci-narrow is not allowed 8 action(s) this plan needs: ec2:CreateTags (implicitDeny) when tagging in AllocateAddress, ec2:CreateTags (implicitDeny) when tagging in CreateInternetGateway, ec2:CreateTags (implicitDeny) when tagging in CreateNatGateway, ec2:CreateTags (implicitDeny) when tagging in CreateRouteTable, ec2:CreateTags (implicitDeny) when tagging in CreateSecurityGroup, ec2:CreateTags (implicitDeny) when tagging in CreateSubnet, ec2:CreateTags (implicitDeny) when tagging in CreateVpcEndpoint, iam:PassRole (implicitDeny) when passing a role to eks.amazonaws.com";
    assert!(refused.stderr.contains(problem), "{}", refused.stderr);
    assert_eq!(account.counts(), Default::default());

    let scoped = user_with_policy(&account, "ci", &scoped_policy("eks.amazonaws.com", &creates));
    let applied = as_user(&scoped, "state");
    ok(&applied);
    assert_eq!(account.counts().get("aws.vpc/main"), Some(&1));
    // What preflight asked: tags judged once per create call, PassRole with its service.
    let asked = crate::aws::get_json(&format!("{}/__simulations", account.endpoint()));
    let contexts: Vec<String> = asked.as_array().expect("simulations").iter().map(|s| s["context"].to_string()).collect();
    assert!(contexts.contains(&r#"{"iam:passedtoservice":["eks.amazonaws.com"]}"#.to_owned()), "{contexts:?}");
    assert!(contexts.contains(&r#"{"ec2:createaction":["CreateSubnet"]}"#.to_owned()), "{contexts:?}");
}

/// A fresh account has none of the service-linked roles EKS and ELB use; AWS makes each
/// on first use when the caller may `iam:CreateServiceLinkedRole` for its service. Allowed:
/// a note, and the apply goes on; refused: a problem for each, before any change.
#[test]
fn service_linked_roles_of_a_fresh_account_are_made_on_first_use_if_the_caller_may() {
    let account = Account::new(); // no service-linked role at all
    let repo = example_repo();
    let applied = run(&repo, &approved_apply_args(&account, "state"));
    ok(&applied);
    for role in ["AWSServiceRoleForAmazonEKS", "AWSServiceRoleForAmazonEKSNodegroup", "AWSServiceRoleForAutoScaling"] {
        assert!(
            applied.stderr.contains(&format!("the service-linked role {role} does not exist yet; AWS makes it on first use"))
                || applied.stdout.contains(&format!("the service-linked role {role} does not exist yet; AWS makes it on first use")),
            "{role}\n{}\n{}",
            applied.stdout,
            applied.stderr
        );
    }

    let mut fresh = Account::new();
    fresh.front(&["--deny", "iam:CreateServiceLinkedRole"]);
    let refused = run(&repo, &approved_apply_args(&fresh, "state2"));
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    // (ELB's role is the controller's first NLB's, checked by an apply that reaches the
    // cluster: without one no NLB is made.)
    assert!(refused.stderr.contains("preflight found 3 problem(s); nothing was changed"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the service-linked role AWSServiceRoleForAutoScaling does not exist in this account and arn:aws:sts::123456789012:user/moto may not create it (iam:CreateServiceLinkedRole for autoscaling.amazonaws.com: implicitDeny)"),
        "{}",
        refused.stderr
    );
    assert_eq!(fresh.counts(), Default::default());
}

/// `approved_apply_args` with the state in S3 (`--state-s3 URL`) instead of a directory.
fn with_state_s3<'a>(account: &'a Account, url: &'a str) -> Vec<&'a str> {
    let mut args = approved_apply_args(account, "unused");
    let at = args.iter().position(|a| *a == "--state-dir").expect("--state-dir");
    args.splice(at..at + 2, ["--state-s3", url]);
    args
}

/// `byoc destroy --delete-data` with `args` added.
fn destroy(repo: &crate::support::Repo, account: &Account, state: &str, extra: &[&str]) -> crate::support::Run {
    let mut args = approved_apply_args(account, state);
    args[0] = "destroy";
    args.push("--delete-data");
    args.extend_from_slice(extra);
    run(repo, &args)
}

/// Destroy as AWS allows it: a consumer's endpoint connected to the endpoint service is
/// rejected first (EC2 refuses to delete a service with connections); subnets, security
/// groups, the gateway detach and the VPC are retried while the network interfaces of the
/// deleted load balancers and EKS cluster linger (the front refuses each of them three
/// times with DependencyViolation after the first such deletion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_rejects_connected_endpoints_and_waits_out_lingering_network_interfaces() {
    let account = Account::new().with_autoscaling_role().real_aws(&["--linger", "3"]);
    let repo = example_repo();
    // The endpoint services front the NLBs of the sidecar's Services: a cluster is needed.
    let cluster = crate::aws_endpoint_services::Cluster::new(&account).await;
    let mut args = approved_apply_args(&account, "state");
    args.extend(cluster.args());
    ok(&tokio::task::block_in_place(|| run(&repo, &args)));
    let service = account.python(
        "import boto3; print(boto3.client('ec2').describe_vpc_endpoint_service_configurations()['ServiceConfigurations'][0]['ServiceId'])",
    );
    let endpoint = account.python(&format!(
        "import urllib.request; print(urllib.request.urlopen(urllib.request.Request('{}/__connect', data=b'{}', method='POST')).read().decode())",
        account.endpoint(),
        service.trim()
    ));
    assert!(endpoint.trim().starts_with("\"vpce-"), "{endpoint}");

    let gone = tokio::task::block_in_place(|| destroy(&repo, &account, "state", &["--kubeconfig", &cluster.kubeconfig]));
    ok(&gone);
    let text = format!("{}{}", gone.stdout, gone.stderr);
    assert!(text.contains("rejecting 1 endpoint connection(s) to aws.vpc-endpoint-service/"), "{text}");
    for retried in [
        "retry: ec2 DeleteSubnet for aws.subnet/",
        "retry: ec2 DeleteSecurityGroup for aws.security-group/",
        "retry: ec2 DeleteVpc for aws.vpc/main",
    ] {
        assert!(text.contains(retried) && text.contains("DependencyViolation (network interfaces"), "{retried}\n{text}");
    }
    let lingered = crate::aws::get_json(&format!("{}/__linger", account.endpoint()))["injected"].as_u64().unwrap_or(0);
    assert!(lingered >= 3 * 8, "only {lingered} DependencyViolation answers were given");
    assert_eq!(account.counts(), Default::default(), "destroy leaves nothing tagged");
}

/// Emptying a bucket reads each DeleteObjects answer's `Errors` (S3 answers 200 and lists
/// the objects it refused), and stops with the first refused key named; the bucket that
/// holds the state this run writes (`--state-s3`) is never deleted.
#[test]
fn emptying_a_bucket_reads_each_refusal_and_the_state_store_bucket_is_never_deleted() {
    let account = Account::new().with_autoscaling_role().real_aws(&[]);
    account.python("import boto3; boto3.client('s3').create_bucket(Bucket='byoc-prod-use1-123456789012-state')");
    let repo = example_repo();
    let args = with_state_s3(&account, "s3://byoc-prod-use1-123456789012-state/prod-use1");
    ok(&run(&repo, &args));
    // Data in the data bucket, and a policy that refuses to delete its versions.
    account.python(
        "import boto3, json
s3 = boto3.client('s3'); b = 'byoc-prod-use1-123456789012-data'
s3.put_object(Bucket=b, Key='hummock/1.sst', Body=b'x'); s3.put_object(Bucket=b, Key='hummock/1.sst', Body=b'y')
s3.put_bucket_policy(Bucket=b, Policy=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Deny', 'Principal': '*', 'Action': 's3:DeleteObjectVersion', 'Resource': 'arn:aws:s3:::' + b + '/*'}]}))",
    );
    let mut args = args.clone();
    args[0] = "destroy";
    args.push("--delete-data");
    let refused = run(&repo, &args);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(text.contains("s3 DeleteObjects for aws.s3-bucket/data byoc-prod-use1-123456789012-data: AccessDenied: 2 object version(s) were not deleted, the first \"hummock/1.sst\""), "{text}");
    assert!(
        text.contains(
            "bucket byoc-prod-use1-123456789012-state holds the state store this run writes (--state-s3); byoc does not delete it"
        ),
        "{text}"
    );
    let left = account.python(
        "import boto3; s3 = boto3.client('s3'); print(sorted(b['Name'] for b in s3.list_buckets()['Buckets'])); print(len(s3.list_object_versions(Bucket='byoc-prod-use1-123456789012-data')['Versions']))",
    );
    assert_eq!(left.trim(), "['byoc-prod-use1-123456789012-data', 'byoc-prod-use1-123456789012-state']\n2", "{left}");
}

/// A node group EKS could not create (CREATE_FAILED: its instances never joined) is not
/// kept as if it were there: the next apply replaces it. The front answers CREATE_FAILED
/// for `system` until it is deleted.
#[test]
fn a_node_group_that_failed_to_create_is_replaced_not_kept() {
    let account = Account::new().with_autoscaling_role().real_aws(&["--fail-node-group", "system"]);
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    let failed = run(&repo, &args);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(
        failed.stderr.contains("node group system is CREATE_FAILED: Instances failed to join the kubernetes cluster"),
        "{}",
        failed.stderr
    );
    let again = run(&repo, &args);
    ok(&again);
    assert!(
        again.stdout.contains("drift: aws.eks-nodegroup/system `createFailed`: live true, which forces a replacement"),
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("replace aws.eks-nodegroup/system"), "{}", again.stdout);
    assert_eq!(account.counts().get("aws.eks-nodegroup/system"), Some(&1));
    assert!(summary(ok(&run(&repo, &args))).starts_with("0 to create, 0 to update, 0 to replace"));
}

/// Issue 16 item 8: EKS 1.30+ marks no StorageClass default, so the RisingWave meta store's
/// claim (which names no class) would stay Pending. The plan shows byoc's `gp3` class, the
/// apply puts it into the cluster (the Kubernetes API double, which judges it as
/// kube-apiserver's validation does), and the next plan finds it there and plans nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_shows_a_default_gp3_storage_class_and_apply_puts_it_in_the_cluster() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
    let account = Account::new().with_autoscaling_role();
    let endpoint = account.endpoint().to_owned();
    let d = crate::kube::support::double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let client = d.client();
    let _op = crate::kube::support::operator(&client);
    let repo = example_repo();
    let kube_dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube_dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    // The controller's stand-in makes the NLBs of the sidecar's Services, which the
    // endpoint services front.
    let _controller = account.lb_controller(std::path::Path::new(&kubeconfig));
    let apply = || {
        let dir = repo.path().to_path_buf();
        let (endpoint, kubeconfig) = (endpoint.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let args = [
                "apply",
                "--repo",
                ".",
                "--env",
                "examples/aws",
                "--endpoint-url",
                &endpoint,
                "--state-dir",
                "state",
                "--poll-interval",
                "0.1",
                "--auto-approve",
                "--skip-preflight",
                "--health-timeout",
                "10",
                "--kubeconfig",
                &kubeconfig,
            ];
            crate::support::byoc_env(&dir, &args, &crate::state_s3::MOTO_ENV)
        })
    };

    let first = apply().await.expect("join");
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("+ create k8s.storage-class/gp3"), "{}", first.stdout);

    let classes = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"), "storageclasses");
    let held: Vec<serde_json::Value> = Api::<DynamicObject>::all_with(client.clone(), &classes)
        .list(&ListParams::default())
        .await
        .expect("the double lists storage classes")
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("json"))
        .collect();
    // A claim that names no class gets the one default class: there must be exactly one.
    let defaults: Vec<&serde_json::Value> =
        held.iter().filter(|c| c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true").collect();
    assert_eq!(defaults.len(), 1, "{held:#?}");
    let gp3 = defaults[0];
    assert_eq!(gp3["metadata"]["name"], "gp3");
    assert_eq!(gp3["provisioner"], "ebs.csi.aws.com");
    assert_eq!(gp3["parameters"], json!({"type": "gp3", "encrypted": "true"}));
    assert_eq!(gp3["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(gp3["allowVolumeExpansion"], true);
    // The RisingWave clusters name no class, so their meta stores' claims get this one.
    let rws =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("risingwave.risingwavelabs.com", "v1alpha1", "RisingWave"), "risingwaves");
    let rw = Api::<DynamicObject>::all_with(client.clone(), &rws).list(&ListParams::default()).await.expect("list");
    assert!(!rw.items.is_empty());
    for r in &rw.items {
        let text = serde_json::to_string(r).expect("json");
        assert!(!text.contains("storageClassName"), "{text}");
    }

    // The next plan finds the class in the cluster: nothing to do.
    let second = apply().await.expect("join");
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
}

/// Issue 16 item 7: a node group EKS cannot change in place (here its instance type) is
/// replaced by creating the new group first, under the next name, and deleting the old one
/// once the new one is ACTIVE, so the cluster never has none of that group's nodes.
#[test]
fn a_replaced_node_group_is_created_under_a_new_name_before_the_old_one_goes() {
    let account = Account::new().with_autoscaling_role();
    let mut repo = example_repo();
    ok(&run(&repo, &approved_apply_args(&account, "state")));
    let spec = std::fs::read_to_string(repo.path().join("examples/aws/environment.yaml")).expect("spec");
    assert!(spec.contains("machineType: m6i.large"));
    repo.write("examples/aws/environment.yaml", &spec.replace("machineType: m6i.large", "machineType: m6i.xlarge"));
    repo.commit("system nodes: m6i.xlarge");
    crate::aws::get_json(&format!("{}/__calls/reset", account.endpoint()));

    let replaced = run(&repo, &approved_apply_args(&account, "state"));
    let out = &ok(&replaced).stdout;
    assert!(out.contains("-/+ replace aws.eks-nodegroup/system"), "{out}");
    let created = out.find("aws.eks-nodegroup/system replace system-2 ").unwrap_or_else(|| panic!("no create of system-2:\n{out}"));
    let deleted = out.find("aws.eks-nodegroup/system replace: deleted system ").unwrap_or_else(|| panic!("no delete of system:\n{out}"));
    assert!(created < deleted, "the new group is made before the old one goes:\n{out}");
    // What EKS was asked, in order: the create, then the delete; never the other way.
    let calls = crate::aws::get_json(&format!("{}/__calls", account.endpoint()));
    let node_group_calls: Vec<&str> = calls
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["action"].as_str())
        .filter(|a| matches!(*a, "eks:CreateNodegroup" | "eks:DeleteNodegroup"))
        .collect();
    assert_eq!(node_group_calls, ["eks:CreateNodegroup", "eks:DeleteNodegroup"]);

    let groups = account.python(
        "import boto3, json; e = boto3.client('eks'); c = e.list_clusters()['clusters'][0]; \
         print(json.dumps({n: e.describe_nodegroup(clusterName=c, nodegroupName=n)['nodegroup']['instanceTypes'] for n in e.list_nodegroups(clusterName=c)['nodegroups']}, sort_keys=True))",
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&groups).expect("json"),
        json!({"risingwave": ["r6i.2xlarge"], "system-2": ["m6i.xlarge"]})
    );
    // The next apply finds the new group by its tags and has nothing to do.
    assert!(ok(&run(&repo, &approved_apply_args(&account, "state"))).stdout.contains("nothing to do"));
}

/// Issue 16 item 7: a deleted EKS cluster's network interfaces linger
/// (the front lists them in DescribeNetworkInterfaces for two seconds after each deletion
/// and refuses subnet, security-group, gateway and VPC deletions meanwhile). Destroy waits
/// for them to go, with backoff, before it deletes what they hold, so EC2 never has to
/// refuse a deletion.
#[test]
fn destroy_waits_for_the_network_interfaces_of_deleted_load_balancers_and_the_cluster() {
    let account = Account::new().with_autoscaling_role().real_aws(&["--linger-seconds", "2"]);
    let repo = example_repo();
    ok(&run(&repo, &approved_apply_args(&account, "state")));
    let gone = destroy(&repo, &account, "state", &[]);
    let text = format!("{}{}", ok(&gone).stdout, gone.stderr);
    // (No NLB here: they are the controller's, made in the cluster. One byoc finds left
    // over is deleted and waited for the same way, `delete_service_nlb`; that path has no
    // test with lingering interfaces.)
    let waited = "waiting aws.eks-cluster/main: network interfaces eni-";
    assert!(text.contains(waited), "{waited}\n{text}");
    let linger = crate::aws::get_json(&format!("{}/__linger", account.endpoint()));
    assert!(linger["listed"].as_u64().unwrap_or(0) >= 2, "{linger}");
    assert_eq!(linger["injected"], 0, "a deletion was refused while interfaces lingered:\n{text}");
    assert!(!text.contains("DependencyViolation"), "{text}");
    assert_eq!(account.counts(), Default::default(), "destroy leaves nothing tagged");
}
