//! Preflight on AWS: the checks made before any change (who the caller is, the service-linked
//! role and quota node groups need, and an IAM simulation of every action the plan calls),
//! all problems collected at once.

use std::collections::BTreeSet;

use super::Aws;
use crate::cloud::CloudError;
use crate::plan::{Action, Plan};
use crate::resource::Kind;

/// The service-linked role EKS managed node groups need.
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
    "eks:ListAddons",
    "eks:DescribeAddon",
    "ec2:DescribeLaunchTemplates",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetEncryptionConfiguration",
    "ec2:DescribeVpcEndpointServicePermissions",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTags",
];

/// The IAM actions one planned action calls (create and update share `ensure`).
pub fn actions_for(kind: Kind, action: Action) -> &'static [&'static str] {
    let delete = matches!(action, Action::Delete);
    match (kind, delete) {
        (Kind::AwsVpc, false) => &["ec2:CreateVpc", "ec2:CreateTags", "ec2:ModifyVpcAttribute"],
        (Kind::AwsVpc, true) => &["ec2:DeleteVpc"],
        (Kind::AwsSubnet, false) => &["ec2:CreateSubnet", "ec2:CreateTags", "ec2:ModifySubnetAttribute"],
        (Kind::AwsSubnet, true) => &["ec2:DeleteSubnet"],
        (Kind::AwsInternetGateway, false) => {
            &["ec2:CreateInternetGateway", "ec2:CreateTags", "ec2:AttachInternetGateway", "ec2:DetachInternetGateway"]
        }
        (Kind::AwsInternetGateway, true) => &["ec2:DetachInternetGateway", "ec2:DeleteInternetGateway"],
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
        (Kind::AwsS3Bucket, false) => &[
            "s3:CreateBucket",
            "s3:PutBucketVersioning",
            "s3:PutEncryptionConfiguration",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutBucketTagging",
        ],
        (Kind::AwsS3Bucket, true) => &["s3:ListBucketVersions", "s3:DeleteObjectVersion", "s3:DeleteBucket"],
        (Kind::AwsNlb, false) => &[
            "elasticloadbalancing:CreateLoadBalancer",
            "elasticloadbalancing:AddTags",
            "elasticloadbalancing:ModifyLoadBalancerAttributes",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteTargetGroup",
        ],
        (Kind::AwsNlb, true) => &[
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteLoadBalancer",
            "elasticloadbalancing:DeleteTargetGroup",
        ],
        (Kind::AwsVpcEndpointService, false) => &[
            "ec2:CreateVpcEndpointServiceConfiguration",
            "ec2:ModifyVpcEndpointServiceConfiguration",
            "ec2:DescribeVpcEndpointServicePermissions",
            "ec2:ModifyVpcEndpointServicePermissions",
        ],
        (Kind::AwsVpcEndpointService, true) => &["ec2:DeleteVpcEndpointServiceConfigurations"],
        _ => &[],
    }
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
    /// The node-group checks (service-linked role, quota) are made only when the plan
    /// creates or changes node groups.
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
        match self.retry.call(&format!("iam GetRole {AUTOSCALING_ROLE}"), || self.iam.get_role().role_name(AUTOSCALING_ROLE).send()).await {
            Ok(_) => {}
            Err(e) if e.is(&["NoSuchEntity"]) => p.problems.push(format!(
                "the service-linked role {AUTOSCALING_ROLE} does not exist in this account; EKS managed node groups need it. Create it once with: aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com"
            )),
            Err(e) => p.problems.push(format!("cannot check the service-linked role {AUTOSCALING_ROLE}: {e}")),
        }

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
        let actions: Vec<String> = plan_actions(plan).into_iter().map(str::to_owned).collect();
        let mut denied = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .retry
                .call("iam SimulatePrincipalPolicy", || {
                    self.iam
                        .simulate_principal_policy()
                        .policy_source_arn(&principal)
                        .set_action_names(Some(actions.clone()))
                        .set_marker(marker.clone())
                        .send()
                })
                .await;
            match out {
                Ok(out) => {
                    for r in out.evaluation_results() {
                        if r.eval_decision() != &aws_sdk_iam::types::PolicyEvaluationDecisionType::Allowed {
                            denied.push(format!("{} ({})", r.eval_action_name(), r.eval_decision().as_str()));
                        }
                    }
                    marker = out.marker().map(str::to_owned);
                    if !out.is_truncated() || marker.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    p.problems.push(format!("cannot check the permissions of {principal} (iam:SimulatePrincipalPolicy): {e}"));
                    return;
                }
            }
        }
        if !denied.is_empty() {
            p.problems.push(format!("{principal} is not allowed {} action(s) this plan needs: {}", denied.len(), denied.join(", ")));
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
