//! Preflight on AWS: the checks made before any change (who the caller is, the quota node
//! groups need, an IAM simulation of every action the plan calls with the request context
//! those calls carry, and the service-linked roles AWS makes on first use), all problems
//! collected at once.

use std::collections::BTreeSet;

use aws_sdk_iam::types as iamt;

use super::Aws;
use crate::cloud::CloudError;
use crate::plan::{Action, Plan};
use crate::resource::Kind;

/// The service-linked role of the node groups' Auto Scaling groups.
pub const AUTOSCALING_ROLE: &str = "AWSServiceRoleForAutoScaling";
/// Service Quotas: EKS "Managed node groups per cluster".
pub const NODE_GROUP_QUOTA: (&str, &str) = ("eks", "L-6D54EA21");
/// The environment needs room for this many managed node groups.
pub const NODE_GROUP_QUOTA_MIN: f64 = 36.0;

/// What preflight found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Who the calls are made as (from STS).
    pub caller: String,
    /// Every problem, each naming the role, quota or action.
    pub problems: Vec<String>,
    /// Checks that could not be made meaningfully, and why.
    pub notes: Vec<String>,
}

/// Read actions observe makes on every run.
const OBSERVE_ACTIONS: &[&str] = &[
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeNatGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcEndpointServiceConfigurations",
    "iam:ListRoles",
    "iam:ListRoleTags",
    "iam:ListPolicies",
    "iam:ListPolicyTags",
    "iam:ListOpenIDConnectProviders",
    "iam:GetOpenIDConnectProvider",
    "eks:ListClusters",
    "eks:DescribeCluster",
    "eks:ListNodegroups",
    "eks:DescribeNodegroup",
    "eks:ListAccessEntries",
    "eks:DescribeAccessEntry",
    "eks:ListAddons",
    "eks:DescribeAddon",
    "ec2:DescribeLaunchTemplates",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcEndpointServicePermissions",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTags",
];

/// The IAM actions one planned action calls (create and update share `ensure`).
pub fn actions_for(kind: Kind, action: Action) -> &'static [&'static str] {
    let delete = matches!(action, Action::Delete);
    match (kind, delete) {
        (Kind::AwsVpc, false) => &["ec2:CreateVpc", "ec2:CreateTags", "ec2:ModifyVpcAttribute"],
        (Kind::AwsVpc, true) => &["ec2:DeleteVpc", "ec2:DescribeNetworkInterfaces"],
        (Kind::AwsSubnet, false) => &["ec2:CreateSubnet", "ec2:CreateTags", "ec2:ModifySubnetAttribute"],
        (Kind::AwsSubnet, true) => &["ec2:DeleteSubnet", "ec2:DescribeNetworkInterfaces"],
        (Kind::AwsInternetGateway, false) => {
            &["ec2:CreateInternetGateway", "ec2:CreateTags", "ec2:AttachInternetGateway", "ec2:DetachInternetGateway"]
        }
        (Kind::AwsInternetGateway, true) => &["ec2:DetachInternetGateway", "ec2:DeleteInternetGateway", "ec2:DescribeNetworkInterfaces"],
        (Kind::AwsNatGateway, false) => &["ec2:DescribeAddresses", "ec2:AllocateAddress", "ec2:CreateNatGateway", "ec2:CreateTags"],
        (Kind::AwsNatGateway, true) => &["ec2:DeleteNatGateway", "ec2:DescribeAddresses", "ec2:ReleaseAddress"],
        (Kind::AwsRouteTable, false) => &[
            "ec2:CreateRouteTable",
            "ec2:CreateTags",
            "ec2:CreateRoute",
            "ec2:ReplaceRoute",
            "ec2:DeleteRoute",
            "ec2:AssociateRouteTable",
            "ec2:DisassociateRouteTable",
        ],
        (Kind::AwsRouteTable, true) => &["ec2:DisassociateRouteTable", "ec2:DeleteRouteTable"],
        (Kind::AwsSecurityGroup, false) => {
            &["ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]
        }
        (Kind::AwsSecurityGroup, true) => &["ec2:DeleteSecurityGroup"],
        (Kind::AwsIamRole, false) => &[
            "iam:CreateRole",
            "iam:TagRole",
            "iam:GetRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:ListAttachedRolePolicies",
            "iam:AttachRolePolicy",
            "iam:DetachRolePolicy",
            "iam:PutRolePolicy",
            "iam:PutRolePermissionsBoundary",
        ],
        (Kind::AwsIamPolicy, false) => {
            &["iam:CreatePolicy", "iam:TagPolicy", "iam:CreatePolicyVersion", "iam:ListPolicyVersions", "iam:DeletePolicyVersion"]
        }
        (Kind::AwsIamPolicy, true) => &["iam:ListPolicyVersions", "iam:DeletePolicyVersion", "iam:DeletePolicy"],
        (Kind::AwsIamRole, true) => {
            &["iam:ListAttachedRolePolicies", "iam:DetachRolePolicy", "iam:ListRolePolicies", "iam:DeleteRolePolicy", "iam:DeleteRole"]
        }
        (Kind::AwsEksCluster, false) => &[
            "eks:CreateCluster",
            "eks:TagResource",
            "iam:PassRole",
            "eks:UpdateClusterVersion",
            "eks:UpdateClusterConfig",
            "eks:DescribeClusterVersions",
        ],
        (Kind::AwsEksCluster, true) => &["eks:DeleteCluster"],
        (Kind::AwsOidcProvider, false) => {
            &["iam:CreateOpenIDConnectProvider", "iam:TagOpenIDConnectProvider", "iam:AddClientIDToOpenIDConnectProvider"]
        }
        (Kind::AwsOidcProvider, true) => &["iam:DeleteOpenIDConnectProvider"],
        (Kind::AwsEksNodeGroup, false) => {
            &["eks:CreateNodegroup", "eks:TagResource", "iam:PassRole", "eks:UpdateNodegroupConfig", "eks:UpdateNodegroupVersion"]
        }
        (Kind::AwsLaunchTemplate, false) => &["ec2:CreateLaunchTemplate", "ec2:CreateTags"],
        (Kind::AwsLaunchTemplate, true) => &["ec2:DeleteLaunchTemplate"],
        (Kind::AwsEksAddon, false) => &["eks:CreateAddon", "eks:TagResource", "iam:PassRole", "eks:DescribeAddon", "eks:UpdateAddon"],
        (Kind::AwsEksAddon, true) => &["eks:DeleteAddon", "eks:DescribeAddon"],
        (Kind::AwsEksNodeGroup, true) => &["eks:DeleteNodegroup"],
        (Kind::AwsEksAccessEntry, false) => &["eks:CreateAccessEntry", "eks:TagResource", "eks:AssociateAccessPolicy"],
        (Kind::AwsEksAccessEntry, true) => &["eks:DeleteAccessEntry"],
        (Kind::AwsS3Bucket, false) => &[
            "s3:CreateBucket",
            "s3:PutBucketVersioning",
            "s3:PutEncryptionConfiguration",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutBucketTagging",
            "s3:PutLifecycleConfiguration",
        ],
        (Kind::AwsS3Bucket, true) => &["s3:ListBucketVersions", "s3:DeleteObjectVersion", "s3:DeleteBucket"],
        // Made by the AWS Load Balancer Controller with its own role: byoc only waits for it.
        (Kind::AwsServiceNlb, false) => &["elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTags"],
        // Found gone once the sidecar is removed; one left is deleted with what the
        // controller made for it.
        (Kind::AwsServiceNlb, true) => &[
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteLoadBalancer",
            "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:DescribeLoadBalancers",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups",
            "ec2:DeleteSecurityGroup",
        ],
        // byoc's own NLBs of before: only deleted.
        (Kind::AwsNlb, true) => &[
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteLoadBalancer",
            "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:DescribeLoadBalancers",
            "ec2:DescribeNetworkInterfaces",
        ],
        (Kind::AwsVpcEndpointService, false) => &[
            "ec2:CreateVpcEndpointServiceConfiguration",
            "ec2:ModifyVpcEndpointServiceConfiguration",
            "ec2:DescribeVpcEndpointServicePermissions",
            "ec2:ModifyVpcEndpointServicePermissions",
        ],
        (Kind::AwsVpcEndpointService, true) => {
            &["ec2:DescribeVpcEndpointConnections", "ec2:RejectVpcEndpointConnections", "ec2:DeleteVpcEndpointServiceConfigurations"]
        }
        (Kind::AwsVpcEndpoint, false) => &["ec2:CreateVpcEndpoint", "ec2:CreateTags", "ec2:DescribeVpcEndpoints", "ec2:ModifyVpcEndpoint"],
        (Kind::AwsVpcEndpoint, true) => &["ec2:DeleteVpcEndpoints"],
        _ => &[],
    }
}

/// The service-linked roles AWS makes on first use, the service each is for, and the kind
/// whose creation first uses it. (ELB's, `AWSServiceRoleForElasticLoadBalancing`, is not
/// byoc's to check: the controller's first NLB makes it, and its policy,
/// `policies/aws/load-balancer-controller.json`, may create it.)
pub const SERVICE_LINKED_ROLES: &[(&str, &str, Kind)] = &[
    ("AWSServiceRoleForAmazonEKS", "eks.amazonaws.com", Kind::AwsEksCluster),
    ("AWSServiceRoleForAmazonEKSNodegroup", "eks-nodegroup.amazonaws.com", Kind::AwsEksNodeGroup),
    (AUTOSCALING_ROLE, "autoscaling.amazonaws.com", Kind::AwsEksNodeGroup),
];

/// The service `iam:PassRole` passes roles to: EKS takes the cluster role and the node role.
pub const PASSED_TO_SERVICE: &str = "eks.amazonaws.com";

/// EC2 create calls that tag in the same request (tag specifications): their tags are
/// authorized as `ec2:CreateTags` with `ec2:CreateAction` set to the create call.
pub const TAG_ON_CREATE: &[&str] = &[
    "ec2:AllocateAddress",
    "ec2:CreateInternetGateway",
    "ec2:CreateNatGateway",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSubnet",
    "ec2:CreateVpc",
    "ec2:CreateVpcEndpoint",
    "ec2:CreateVpcEndpointServiceConfiguration",
];

fn context_entry(key: &str, value: &str) -> iamt::ContextEntry {
    iamt::ContextEntry::builder().context_key_name(key).context_key_type(iamt::ContextKeyTypeEnum::String).context_key_values(value).build()
}

/// The simulations that judge `actions` as AWS will judge the calls: each with the request
/// context those calls carry, so a role scoped by condition keys is not flagged falsely
/// (a simulation without a key the policy's condition names does not match it). Each is
/// (actions, context, words that say when the action is needed).
fn simulations(actions: &[&str]) -> Vec<(Vec<String>, Vec<iamt::ContextEntry>, String)> {
    let contextual = ["iam:PassRole", "ec2:CreateTags"];
    let plain: Vec<String> = actions.iter().filter(|a| !contextual.contains(a)).map(|a| (*a).to_owned()).collect();
    let mut out = vec![(plain, Vec::new(), String::new())];
    if actions.contains(&"iam:PassRole") {
        out.push((
            vec!["iam:PassRole".to_owned()],
            vec![context_entry("iam:PassedToService", PASSED_TO_SERVICE)],
            format!(" when passing a role to {PASSED_TO_SERVICE}"),
        ));
    }
    if actions.contains(&"ec2:CreateTags") {
        for create in TAG_ON_CREATE.iter().filter(|c| actions.contains(c)) {
            let call = create.trim_start_matches("ec2:");
            out.push((
                vec!["ec2:CreateTags".to_owned()],
                vec![context_entry("ec2:CreateAction", call)],
                format!(" when tagging in {call}"),
            ));
        }
    }
    out
}

/// Every IAM action `plan` needs, sorted.
pub fn plan_actions(plan: &Plan) -> Vec<&'static str> {
    let mut all: BTreeSet<&'static str> = OBSERVE_ACTIONS.iter().copied().collect();
    for s in plan.changed().filter(|s| s.action != Action::Blocked) {
        all.extend(actions_for(s.kind, s.action));
        if s.action == Action::Replace {
            all.extend(actions_for(s.kind, Action::Delete));
        }
    }
    all.into_iter().collect()
}

impl Aws {
    /// Checks made before any change; every problem is collected, none stops the others.
    /// The node-group quota is checked only when the plan creates or changes node groups,
    /// a service-linked role only when the plan creates what first uses it.
    pub async fn preflight(&self, plan: &Plan, account: &str) -> Preflight {
        let node_groups = plan
            .changed()
            .any(|s| s.kind == Kind::AwsEksNodeGroup && matches!(s.action, Action::Create | Action::Update | Action::Replace));
        let mut p = Preflight::default();
        match self.retry.call("sts GetCallerIdentity", || self.sts.get_caller_identity().send()).await {
            Ok(id) => {
                p.caller = id.arn().unwrap_or_default().to_owned();
                // Credentials for another account would build everything there, under ARNs
                // (IRSA annotations, policies) that name the spec's account.
                if let Some(actual) = id.account()
                    && actual != account
                {
                    p.problems.push(format!(
                        "the credentials ({}) are for account {actual}, but the environment's spec.account is {account}; use credentials for {account}, or correct spec.account",
                        p.caller
                    ));
                }
            }
            Err(e) => {
                p.problems.push(format!("cannot tell who the credentials belong to: {e}"));
                return p;
            }
        }

        if node_groups {
            self.node_group_checks(&mut p).await;
        }
        self.permission_checks(plan, &mut p).await;
        p
    }

    async fn node_group_checks(&self, p: &mut Preflight) {
        let (service, code) = NODE_GROUP_QUOTA;
        let quota = match self
            .retry
            .call("service-quotas GetServiceQuota", || self.quotas.get_service_quota().service_code(service).quota_code(code).send())
            .await
        {
            Err(e) if e.is(&["NoSuchResourceException"]) => self
                .retry
                .call("service-quotas GetAWSDefaultServiceQuota", || {
                    self.quotas.get_aws_default_service_quota().service_code(service).quota_code(code).send()
                })
                .await
                .map(|o| o.quota().and_then(|q| q.value())),
            other => other.map(|o| o.quota().and_then(|q| q.value())),
        };
        match quota {
            Ok(Some(v)) if v >= NODE_GROUP_QUOTA_MIN => {}
            Ok(Some(v)) => p.problems.push(format!(
                "the quota {service}/{code} (managed node groups per cluster) is {v}, below the {NODE_GROUP_QUOTA_MIN} this environment needs; request an increase in Service Quotas"
            )),
            Ok(None) => p.problems.push(format!("Service Quotas returned no value for {service}/{code}; the managed node group quota could not be checked")),
            Err(e) => p.problems.push(format!("cannot read the quota {service}/{code} (managed node groups per cluster), so it was not checked: {e}")),
        }
    }

    async fn permission_checks(&self, plan: &Plan, p: &mut Preflight) {
        let principal = match self.principal_arn(&p.caller).await {
            Ok(Some(arn)) => arn,
            Ok(None) => {
                p.notes.push(format!("{} is the account's root user, which IAM cannot simulate; permissions not checked", p.caller));
                return;
            }
            Err(e) => {
                p.problems.push(format!("cannot find the IAM principal behind {}: {e}", p.caller));
                return;
            }
        };
        let needed = plan_actions(plan);
        let mut denied = Vec::new();
        for (actions, context, when) in simulations(&needed) {
            match self.simulate(&principal, actions, context).await {
                Ok(d) => denied.extend(d.into_iter().map(|(action, decision)| format!("{action} ({decision}){when}"))),
                Err(e) => {
                    p.problems.push(format!("cannot check the permissions of {principal} (iam:SimulatePrincipalPolicy): {e}"));
                    return;
                }
            }
        }
        denied.sort();
        denied.dedup();
        if !denied.is_empty() {
            p.problems.push(format!("{principal} is not allowed {} action(s) this plan needs: {}", denied.len(), denied.join(", ")));
        }
        self.service_linked_role_checks(plan, &principal, p).await;
    }

    /// The service-linked roles the plan's services use: one that is missing is made by
    /// AWS on first use, if the caller may `iam:CreateServiceLinkedRole` for that service
    /// (what a fresh account needs); otherwise it is a problem.
    async fn service_linked_role_checks(&self, plan: &Plan, principal: &str, p: &mut Preflight) {
        let kinds: BTreeSet<Kind> =
            plan.changed().filter(|s| matches!(s.action, Action::Create | Action::Update | Action::Replace)).map(|s| s.kind).collect();
        for (role, service, kind) in SERVICE_LINKED_ROLES {
            if !kinds.contains(kind) {
                continue;
            }
            match self.retry.call(&format!("iam GetRole {role}"), || self.iam.get_role().role_name(*role).send()).await {
                Ok(_) => continue,
                Err(e) if e.is(&["NoSuchEntity"]) => {}
                Err(e) => {
                    p.problems.push(format!("cannot check the service-linked role {role}: {e}"));
                    continue;
                }
            }
            let context = vec![context_entry("iam:AWSServiceName", service)];
            match self.simulate(principal, vec!["iam:CreateServiceLinkedRole".to_owned()], context).await {
                Ok(d) if d.is_empty() => p.notes.push(format!(
                    "the service-linked role {role} does not exist yet; AWS makes it on first use ({principal} may iam:CreateServiceLinkedRole for {service})"
                )),
                Ok(d) => p.problems.push(format!(
                    "the service-linked role {role} does not exist in this account and {principal} may not create it (iam:CreateServiceLinkedRole for {service}: {}); allow that action, or create it once with: aws iam create-service-linked-role --aws-service-name {service}",
                    d.iter().map(|(_, decision)| decision.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Err(e) => p.problems.push(format!("cannot check whether {principal} may create the service-linked role {role}: {e}")),
            }
        }
    }

    /// `(action, decision)` of each of `actions` the principal is not allowed, simulated
    /// with the request context `context`; every page is read.
    async fn simulate(
        &self,
        principal: &str,
        actions: Vec<String>,
        context: Vec<iamt::ContextEntry>,
    ) -> Result<Vec<(String, String)>, CloudError> {
        let mut denied = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .retry
                .call("iam SimulatePrincipalPolicy", || {
                    self.iam
                        .simulate_principal_policy()
                        .policy_source_arn(principal)
                        .set_action_names(Some(actions.clone()))
                        .set_context_entries(Some(context.clone()).filter(|c| !c.is_empty()))
                        .set_marker(marker.clone())
                        .send()
                })
                .await?;
            for r in out.evaluation_results() {
                if r.eval_decision() != &iamt::PolicyEvaluationDecisionType::Allowed {
                    denied.push((r.eval_action_name().to_owned(), r.eval_decision().as_str().to_owned()));
                }
            }
            marker = out.marker().map(str::to_owned);
            if !out.is_truncated() || marker.is_none() {
                return Ok(denied);
            }
        }
    }

    /// The IAM ARN to simulate for a caller: a user as is, an assumed role as its role
    /// (with its path); `None` for the root user.
    async fn principal_arn(&self, caller: &str) -> Result<Option<String>, CloudError> {
        if caller.ends_with(":root") {
            return Ok(None);
        }
        if let Some(rest) = caller.split_once(":assumed-role/").map(|(_, r)| r) {
            let role = rest.split('/').next().unwrap_or_default();
            let got = self.retry.call(&format!("iam GetRole {role}"), || self.iam.get_role().role_name(role).send()).await?;
            return Ok(got.role().map(|r| r.arn().to_owned()));
        }
        Ok(Some(caller.to_owned()))
    }
}

/// What preflight itself calls: not simulated (a caller who may not simulate is told so by
/// the failed simulation), but part of the table the call-site test checks.
pub const PREFLIGHT_ACTIONS: &[&str] =
    &["iam:SimulatePrincipalPolicy", "iam:GetRole", "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::cloud::DELETE_ORDER;

    /// The IAM action of an SDK call where its name is not the operation's: S3 authorizes
    /// several operations under other action names (Amazon S3 User Guide, "Amazon S3
    /// actions"); STS GetCallerIdentity needs no permission.
    const RENAMED: &[(&str, &str)] = &[
        ("s3:get_bucket_encryption", "s3:GetEncryptionConfiguration"),
        ("s3:put_bucket_encryption", "s3:PutEncryptionConfiguration"),
        ("s3:get_public_access_block", "s3:GetBucketPublicAccessBlock"),
        ("s3:put_public_access_block", "s3:PutBucketPublicAccessBlock"),
        ("s3:list_object_versions", "s3:ListBucketVersions"),
        ("s3:delete_objects", "s3:DeleteObjectVersion"),
        ("s3:get_bucket_lifecycle_configuration", "s3:GetLifecycleConfiguration"),
        ("s3:put_bucket_lifecycle_configuration", "s3:PutLifecycleConfiguration"),
        ("sts:get_caller_identity", ""),
    ];

    /// `service:op` of every `self.<client>.<op>(` call in the AWS provider's sources, read
    /// from the directory so that a new file is scanned too.
    fn sdk_calls() -> BTreeSet<String> {
        let clients = [
            ("ec2", "ec2"),
            ("eks", "eks"),
            ("iam", "iam"),
            ("elb", "elasticloadbalancing"),
            ("s3", "s3"),
            ("sts", "sts"),
            ("quotas", "servicequotas"),
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cloud/aws");
        let mut calls = BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("provider sources") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            // Calls are split over lines by rustfmt: `self.ec2\n    .create_vpc()`.
            let code: String = std::fs::read_to_string(&path).expect("source").chars().filter(|c| !c.is_whitespace()).collect();
            for (client, service) in clients {
                let needle = format!("self.{client}.");
                for (at, _) in code.match_indices(&needle) {
                    let op: String = code[at + needle.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if code[at + needle.len() + op.len()..].starts_with('(') {
                        calls.insert(format!("{service}:{op}"));
                    }
                }
            }
        }
        calls
    }

    /// `GetOpenIDConnectProvider` and `get_open_id_connect_provider` compare equal, as IAM
    /// compares action names case-insensitively.
    fn squash(action: &str) -> String {
        action.chars().filter(|c| *c != '_').collect::<String>().to_ascii_lowercase()
    }

    #[test]
    fn every_sdk_call_the_provider_makes_is_in_the_preflight_table() {
        let mut table: BTreeSet<String> = OBSERVE_ACTIONS.iter().chain(PREFLIGHT_ACTIONS).map(|a| squash(a)).collect();
        for kind in DELETE_ORDER.iter().filter(|k| k.as_str().starts_with("aws.")) {
            for action in [Action::Create, Action::Delete] {
                table.extend(actions_for(*kind, action).iter().map(|a| squash(a)));
            }
        }
        let calls = sdk_calls();
        assert!(calls.len() > 60, "the scan found only {} calls: {calls:?}", calls.len());
        let missing: Vec<&String> = calls
            .iter()
            .filter(|call| {
                let action = RENAMED.iter().find(|(c, _)| c == call).map_or_else(|| call.to_string(), |(_, a)| (*a).to_owned());
                !action.is_empty() && !table.contains(&squash(&action))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "SDK calls whose IAM action preflight never checks (add them to actions_for or OBSERVE_ACTIONS): {missing:?}"
        );
    }

    #[test]
    fn tags_on_create_and_passed_roles_are_simulated_with_the_context_the_calls_carry() {
        let actions = ["ec2:CreateTags", "ec2:CreateVpc", "ec2:CreateSubnet", "eks:CreateCluster", "iam:PassRole"];
        let sims = simulations(&actions);
        // (actions, [(context key, values)]) per simulation.
        type Keyed = (Vec<String>, Vec<(String, Vec<String>)>);
        let keyed: Vec<Keyed> = sims
            .iter()
            .map(|(a, c, _)| {
                (
                    a.clone(),
                    c.iter().map(|e| (e.context_key_name().unwrap_or_default().to_owned(), e.context_key_values().to_vec())).collect(),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            keyed,
            vec![
                (s(&["ec2:CreateVpc", "ec2:CreateSubnet", "eks:CreateCluster"]), vec![]),
                (s(&["iam:PassRole"]), vec![("iam:PassedToService".to_owned(), s(&["eks.amazonaws.com"]))]),
                (s(&["ec2:CreateTags"]), vec![("ec2:CreateAction".to_owned(), s(&["CreateSubnet"]))]),
                (s(&["ec2:CreateTags"]), vec![("ec2:CreateAction".to_owned(), s(&["CreateVpc"]))]),
            ]
        );
    }
}
