//! AWS as real AWS judges it (issue 16): `byoc apply` against moto behind the front's
//! real-AWS mode (tests/moto/faults.py --real-aws), which answers as AWS documents where
//! moto does not: buckets in another region redirect, bucket policies deny, EKS lists come
//! in pages. Each test fails without the behaviour it names.

use crate::aws::{Account, apply_args, approved_apply_args, assert_exactly_one_of_each, example_repo, get_json, ok, run, summary};

/// The S3 and EKS calls byoc made, from the front's request log.
fn calls(account: &Account) -> Vec<(String, String)> {
    get_json(&format!("{}/__calls", account.endpoint()))
        .as_array()
        .expect("call log")
        .iter()
        .map(|c| (c["action"].as_str().unwrap_or_default().to_owned(), c["resource"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn observe_reads_only_our_buckets_and_every_page_of_clusters_and_node_groups() {
    let account = Account::new().with_autoscaling_role().real_aws(&[]);
    // What a real account holds besides the environment: a bucket in another region (S3
    // redirects a us-east-1 request for it), one whose policy denies everyone, and an
    // EKS cluster made earlier, so ours comes on the second page of ListClusters.
    account.python(
        "import boto3, json
boto3.client('s3', region_name='eu-west-1').create_bucket(Bucket='someone-elses-logs', CreateBucketConfiguration={'LocationConstraint': 'eu-west-1'})
s3 = boto3.client('s3'); s3.create_bucket(Bucket='locked-down')
s3.put_bucket_policy(Bucket='locked-down', Policy=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Deny', 'Principal': '*', 'Action': 's3:*', 'Resource': ['arn:aws:s3:::locked-down', 'arn:aws:s3:::locked-down/*']}]}))
boto3.client('eks').create_cluster(name='aaa-earlier', roleArn='arn:aws:iam::123456789012:role/x', resourcesVpcConfig={'subnetIds': []})",
    );
    // The front answers as AWS would (asked without boto3, which follows S3's redirects
    // itself, where the AWS SDK for Rust does not).
    let probe = account.python(&format!(
        "import json, urllib.request, urllib.error
auth = {{'Authorization': 'AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'}}
for b in ['someone-elses-logs', 'locked-down']:
    try:
        urllib.request.urlopen(urllib.request.Request('{0}/' + b + '?tagging', headers=auth))
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        print(b, e.code, body.split('<Code>')[1].split('<')[0], e.headers.get('x-amz-bucket-region'))
eks = dict(auth, Authorization=auth['Authorization'].replace('/s3/', '/eks/'))
print(len(json.load(urllib.request.urlopen(urllib.request.Request('{0}/clusters', headers=eks)))['clusters']))
urllib.request.urlopen(urllib.request.Request('{0}/__calls/reset', method='POST'))",
        account.endpoint()
    ));
    assert_eq!(probe.trim(), "someone-elses-logs 301 PermanentRedirect eu-west-1\nlocked-down 403 AccessDenied None\n1", "{probe}");

    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    assert_exactly_one_of_each(&account.counts());
    let seen = calls(&account);
    assert!(!seen.iter().any(|(a, _)| a == "s3:ListAllMyBuckets"), "observe listed every bucket in the account");
    for (action, resource) in &seen {
        assert!(
            !resource.contains("someone-elses-logs") && !resource.contains("locked-down"),
            "byoc called {action} on {resource}, which cannot be ours"
        );
    }
    // The second apply sees everything it made, although the cluster and one of the two
    // node groups are on the second page of their lists.
    let again = run(&repo, &args);
    assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", again.stdout);
    let pages = calls(&account).iter().filter(|(a, _)| a == "eks:ListClusters").count()
        - seen.iter().filter(|(a, _)| a == "eks:ListClusters").count();
    assert!(pages >= 2, "the second apply read ListClusters {pages} time(s)");
}

#[test]
fn our_bucket_name_redirecting_or_denied_is_not_ours_and_not_a_failed_observe() {
    let account = Account::new().with_autoscaling_role().real_aws(&[]);
    let repo = example_repo();
    let args = approved_apply_args(&account, "state");
    ok(&run(&repo, &args));
    // Someone locks the data bucket with a deny-all policy: byoc can no longer read it,
    // so it is not provably ours; observe must not fail on it.
    account.python(
        "import boto3, json
boto3.client('s3').put_bucket_policy(Bucket='byoc-prod-use1-123456789012-data', Policy=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Deny', 'Principal': '*', 'Action': 's3:GetBucketTagging', 'Resource': 'arn:aws:s3:::byoc-prod-use1-123456789012-data'}]}))",
    );
    // Unapproved: the live plan is shown and nothing changes.
    let plan = run(&repo, &apply_args(&account, "state"));
    let out = format!("{}{}", plan.stdout, plan.stderr);
    assert!(out.contains("note: bucket byoc-prod-use1-123456789012-data exists but is not this environment's (AccessDenied)"), "{out}");
    assert!(summary(&plan).starts_with("1 to create, 0 to update"), "observe went on past the denied bucket:\n{out}");
}

#[test]
fn what_was_just_created_is_retried_until_aws_sees_it() {
    // Each new role, OIDC provider and EC2 id is "not found" for the first three calls
    // that use it, as AWS's eventual consistency answers them.
    let account = Account::new().with_autoscaling_role().real_aws(&["--propagation", "3"]);
    let repo = example_repo();
    let applied = run(&repo, &approved_apply_args(&account, "state"));
    ok(&applied);
    assert_exactly_one_of_each(&account.counts());
    let injected = get_json(&format!("{}/__propagation", account.endpoint()))["injected"].as_u64().unwrap_or(0);
    assert!(injected >= 20, "only {injected} not-yet-visible answers were given");
    for retried in [
        "retry: eks CreateCluster for aws.eks-cluster/main: InvalidParameterException (not visible yet",
        "retry: eks CreateNodegroup for aws.eks-nodegroup/system: InvalidParameterException (not visible yet",
        "retry: ec2 ModifyVpcAttribute for aws.vpc/main: InvalidVpcID.NotFound (not visible yet",
        "retry: ec2 CreateRoute for aws.route-table/private: InvalidNatGatewayID.NotFound (not visible yet",
        "MalformedPolicyDocument (not visible yet",
    ] {
        assert!(applied.stderr.contains(retried) || applied.stdout.contains(retried), "{retried}\n{}", applied.stderr);
    }
}

/// Someone else's role, bucket, EKS cluster or node group under the name byoc derives:
/// each is reported as a conflict, and none is changed.
#[test]
fn a_same_named_resource_without_our_tags_is_a_conflict_and_never_taken_over() {
    let account = Account::new().with_autoscaling_role();
    let trust = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}"#;
    account.python(&format!(
        "import boto3
boto3.client('iam').create_role(RoleName='byoc-prod-use1-eks-node', AssumeRolePolicyDocument='{trust}')
s3 = boto3.client('s3'); s3.create_bucket(Bucket='byoc-prod-use1-123456789012-state')
s3.put_bucket_tagging(Bucket='byoc-prod-use1-123456789012-state', Tagging={{'TagSet': [{{'Key': 'owner', 'Value': 'data-team'}}]}})"
    ));
    let repo = example_repo();
    let failed = run(&repo, &approved_apply_args(&account, "state"));
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    let text = format!("{}{}", failed.stdout, failed.stderr);
    for conflict in [
        "iam CreateRole for aws.iam-role/eks-node: OwnershipConflict: IAM role \"byoc-prod-use1-eks-node\" already exists and is not tagged as this environment's (byoc.risingwave.dev/environment=prod-use1, byoc.risingwave.dev/resource=aws.iam-role/eks-node)",
        "s3 CreateBucket for aws.s3-bucket/state: OwnershipConflict: bucket \"byoc-prod-use1-123456789012-state\" already exists and is not tagged as this environment's",
    ] {
        assert!(text.contains(conflict), "{conflict}\n{text}");
    }
    // Neither was touched: the role's trust policy and tags, the bucket's tags.
    let after = account.python(
        "import boto3
iam = boto3.client('iam'); s3 = boto3.client('s3')
print(iam.get_role(RoleName='byoc-prod-use1-eks-node')['Role']['AssumeRolePolicyDocument']['Statement'][0]['Principal'])
print(len(iam.list_role_tags(RoleName='byoc-prod-use1-eks-node')['Tags']), len(iam.list_attached_role_policies(RoleName='byoc-prod-use1-eks-node')['AttachedPolicies']))
print(s3.get_bucket_tagging(Bucket='byoc-prod-use1-123456789012-state')['TagSet'])",
    );
    assert_eq!(after.trim(), "{'Service': 'lambda.amazonaws.com'}\n0 0\n[{'Key': 'owner', 'Value': 'data-team'}]", "{after}");

    // An EKS cluster of that name, made by someone else (after the roles exist).
    let account = Account::new().with_autoscaling_role();
    account.python(
        "import boto3
boto3.client('eks').create_cluster(name='byoc-prod-use1', roleArn='arn:aws:iam::123456789012:role/theirs', resourcesVpcConfig={'subnetIds': []}, tags={'team': 'theirs'})",
    );
    let failed = run(&repo, &approved_apply_args(&account, "state2"));
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    let text = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        text.contains("eks CreateCluster for aws.eks-cluster/main: OwnershipConflict: EKS cluster \"byoc-prod-use1\" already exists"),
        "{text}"
    );
    let tags = account.python("import boto3; print(boto3.client('eks').describe_cluster(name='byoc-prod-use1')['cluster']['tags'])");
    assert_eq!(tags.trim(), "{'team': 'theirs'}");
}

/// What EKS holds about who reaches the API, read through the front (which keeps the
/// access entries and `accessConfig` moto lacks): one JSON line.
fn api_access(account: &Account) -> serde_json::Value {
    let out = account.python(&format!(
        "import boto3, json
eks = boto3.client('eks', endpoint_url='{0}')
c = eks.describe_cluster(name='byoc-prod-use1')['cluster']
v = c['resourcesVpcConfig']
entries = {{}}
# Every page: the front pages this list as AWS does.
principals = [p for page in eks.get_paginator('list_access_entries').paginate(clusterName='byoc-prod-use1') for p in page['accessEntries']]
for p in principals:
    e = eks.describe_access_entry(clusterName='byoc-prod-use1', principalArn=p)['accessEntry']
    pols = eks.list_associated_access_policies(clusterName='byoc-prod-use1', principalArn=p)['associatedAccessPolicies']
    entries[p] = {{'resource': e['tags'].get('byoc.risingwave.dev/resource', ''), 'policies': sorted(x['policyArn'].rsplit('/', 1)[1] + ':' + x['accessScope']['type'] for x in pols)}}
print(json.dumps({{'access': c.get('accessConfig'), 'private': v.get('endpointPrivateAccess'), 'public': v.get('endpointPublicAccess'), 'cidrs': sorted(v.get('publicAccessCidrs', [])), 'entries': entries}}))",
        account.endpoint()
    ));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Issue 16 item 2: the API server's public endpoint is open to the spec's networks only,
/// the cluster uses access entries (`authenticationMode: API`), and each administrator the
/// spec names has one with AmazonEKSClusterAdminPolicy on the cluster; changes to either
/// converge in place.
#[test]
fn the_api_endpoint_is_open_to_the_specs_networks_and_administrators_are_access_entries() {
    let account = Account::new().with_autoscaling_role().real_aws(&[]);
    let mut repo = example_repo();
    let ci = "arn:aws:iam::123456789012:role/platform-ci";
    let alice = "arn:aws:iam::123456789012:user/alice";
    repo.edit(
        "examples/aws/environment.yaml",
        "      # administrators: [arn:aws:iam::123456789012:role/platform-ci]\n",
        &format!("      administrators: [{ci}, {alice}]\n"),
    );
    repo.commit("administrators");
    let args = approved_apply_args(&account, "state");
    let first = run(&repo, &args);
    ok(&first);
    assert!(!first.stdout.contains("endpoint of prod-use1 is private"), "{}", first.stdout);
    let a = api_access(&account);
    assert_eq!(a["access"], serde_json::json!({"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": false}), "{a}");
    assert_eq!([&a["private"], &a["public"]], [true, true], "{a}");
    assert_eq!(a["cidrs"], serde_json::json!(["198.51.100.0/24"]), "{a}");
    let entries = a["entries"].as_object().expect("entries");
    // The two administrators, and no entry for the creator beside them.
    let mut want = vec![ci, alice];
    want.sort_unstable();
    assert_eq!(entries.keys().map(String::as_str).collect::<Vec<_>>(), want, "{a}");
    for (principal, e) in entries {
        assert_eq!(e["policies"], serde_json::json!(["AmazonEKSClusterAdminPolicy:cluster"]), "{principal}");
        assert!(e["resource"].as_str().is_some_and(|r| r.starts_with("aws.eks-access-entry/admin-")), "{principal}: {e}");
    }
    let again = run(&repo, &args);
    assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", again.stdout);

    // Another office network, and alice leaves: the endpoint is updated in place and her
    // entry deleted; nothing else changes.
    repo.edit("examples/aws/environment.yaml", "publicCidrs: [198.51.100.0/24]", "publicCidrs: [198.51.100.0/24, 192.0.2.7/32]");
    repo.edit("examples/aws/environment.yaml", &format!("administrators: [{ci}, {alice}]"), &format!("administrators: [{ci}]"));
    repo.commit("one more network, one administrator less");
    let changed = run(&repo, &args);
    assert!(summary(ok(&changed)).starts_with("0 to create, 1 to update, 0 to replace, 1 to delete"), "{}", changed.stdout);
    assert!(changed.stdout.contains("~ update aws.eks-cluster/main"), "{}", changed.stdout);
    let a = api_access(&account);
    assert_eq!(a["cidrs"], serde_json::json!(["192.0.2.7/32", "198.51.100.0/24"]), "{a}");
    assert_eq!(a["entries"].as_object().expect("entries").keys().map(String::as_str).collect::<Vec<_>>(), [ci], "{a}");

    // Without public networks the endpoint goes private, and apply says where the
    // bootstrap must run.
    repo.edit("examples/aws/environment.yaml", "      publicCidrs: [198.51.100.0/24, 192.0.2.7/32]\n", "");
    repo.commit("private endpoint only");
    let private = run(&repo, &args);
    ok(&private);
    assert!(private.stdout.contains("note: the Kubernetes API endpoint of prod-use1 is private"), "{}", private.stdout);
    assert_eq!(api_access(&account)["public"], serde_json::json!(false));
}
