//! Least-privilege permissions of the workload identities. The same lists are published as
//! files under `policies/` for security review; a test keeps the two identical.

use crate::resource::{Map, Value};

/// The agent's AWS policy (the in-account daemon's identity), as published for review in
/// `policies/aws/agent.json`, with `<account>`, `<env>` and `<state-bucket>` standing for
/// the environment's values. Compiled in, so the file reviewed is the policy applied.
pub const AWS_AGENT_POLICY: &str = include_str!("../../../policies/aws/agent.json");

/// The AWS Load Balancer Controller's policy (its IRSA role's), as published for review in
/// `policies/aws/load-balancer-controller.json`: what it calls to make the NLBs of the
/// agent's and the proxy's Services (no Ingress, WAF or Shield: byoc makes no ALBs), its
/// writes limited to what carries the tag `elbv2.k8s.aws/cluster=byoc-<env>`, which the
/// controller puts on everything it makes for the cluster.
pub const AWS_LOAD_BALANCER_CONTROLLER_POLICY: &str = include_str!("../../../policies/aws/load-balancer-controller.json");

/// [`AWS_AGENT_POLICY`]'s statements for one environment, in the form of a role's
/// `inlinePolicy` property (`effect`, `actions`, `resources`, `condition`). The file's
/// ARNs say `arn:aws:`; they are rewritten to the partition of `region`.
pub fn aws_agent_statements(region: &str, account: &str, env: &str, state_bucket: &str) -> Vec<Value> {
    aws_statements(AWS_AGENT_POLICY, region, account, env, state_bucket)
}

/// [`AWS_LOAD_BALANCER_CONTROLLER_POLICY`]'s statements for one environment, like
/// [`aws_agent_statements`].
pub fn aws_load_balancer_controller_statements(region: &str, account: &str, env: &str) -> Vec<Value> {
    aws_statements(AWS_LOAD_BALANCER_CONTROLLER_POLICY, region, account, env, "")
}

fn aws_statements(policy: &str, region: &str, account: &str, env: &str, state_bucket: &str) -> Vec<Value> {
    let partition = format!("arn:{}:", super::names::aws::partition(region));
    let text =
        policy.replace("arn:aws:", &partition).replace("<account>", account).replace("<env>", env).replace("<state-bucket>", state_bucket);
    // The file is checked by the tests below; a broken one yields no statements, not a panic.
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let list = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Value::strings([s.as_str()]),
        serde_json::Value::Array(items) => Value::strings(items.iter().filter_map(|i| i.as_str())),
        _ => Value::List(Vec::new()),
    };
    doc["Statement"]
        .as_array()
        .map(|statements| {
            statements
                .iter()
                .map(|st| {
                    let mut m: Map = [
                        ("effect", Value::from(st["Effect"].as_str().unwrap_or("Deny"))),
                        ("actions", list(&st["Action"])),
                        ("resources", list(&st["Resource"])),
                    ]
                    .into_iter()
                    .collect();
                    if let Some(c) = Value::from_json(&st["Condition"]) {
                        m.insert("condition", c);
                    }
                    Value::Map(m)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// AWS actions of a RisingWave cluster on objects under its prefix in the data bucket.
pub const AWS_CLUSTER_OBJECT_ACTIONS: &[&str] =
    &["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"];

/// AWS actions of a RisingWave cluster on the data bucket itself (listing its prefix).
pub const AWS_CLUSTER_BUCKET_ACTIONS: &[&str] = &["s3:ListBucket"];

/// GCP roles of the agent, on the project, as published in `policies/gcp/agent.json`:
/// only the agent's custom role ([`GCP_AGENT_ROLE`]), created by `byoc apply` in the
/// project, with `<project>` and `<agent-role>` standing for the project and the role's id
/// ([`gcp_agent_roles`]). The custom role holds every permission the daemon's pass uses,
/// so no predefined role is bound besides it.
pub const GCP_AGENT_ROLES: &[&str] = &["projects/<project>/roles/<agent-role>"];

/// GCP roles of the agent on the state bucket, as published in
/// `policies/gcp/agent-state.json`: the daemon reads and writes its state there (objects
/// only; the bucket's settings are `byoc apply`'s).
pub const GCP_AGENT_STATE_ROLES: &[&str] = &["roles/storage.objectUser"];

/// The agent's custom role as published for review in `policies/gcp/agent-role.json` (the
/// format `gcloud iam roles create --file` reads). Compiled in, so the file reviewed is
/// the role applied.
pub const GCP_AGENT_ROLE: &str = include_str!("../../../policies/gcp/agent-role.json");

/// [`GCP_AGENT_ROLES`] for a project whose agent role has the id `role_id`.
pub fn gcp_agent_roles(project: &str, role_id: &str) -> Vec<String> {
    GCP_AGENT_ROLES.iter().map(|r| r.replace("<project>", project).replace("<agent-role>", role_id)).collect()
}

/// `(title, includedPermissions)` of [`GCP_AGENT_ROLE`]. The file is checked by the tests
/// below; a broken one yields an empty role, not a panic.
pub fn gcp_agent_role() -> (String, Vec<String>) {
    let doc: serde_json::Value = serde_json::from_str(GCP_AGENT_ROLE).unwrap_or_default();
    let title = doc["title"].as_str().unwrap_or("byoc agent").to_owned();
    let permissions = doc["includedPermissions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    (title, permissions)
}

/// GCP role of the GKE nodes' own service account, on the project: what GKE's nodes need
/// (logs, metrics, image pulls), instead of the Compute Engine default account's Editor.
pub const GCP_NODE_ROLES: &[&str] = &["roles/container.defaultNodeServiceAccount"];

/// GCP role of a RisingWave cluster, on the data bucket with a condition on its prefix.
pub const GCP_CLUSTER_ROLES: &[&str] = &["roles/storage.objectUser"];

/// Azure roles of the agent, on the resource group: reading everything it observes
/// (Monitoring Reader's `*/read`), the network it reports on (Network Contributor, as the
/// seed), the clusters' user-assigned identities and federated credentials it converges
/// (Managed Identity Contributor), and their role assignments (Role Based Access Control
/// Administrator, limited by [`AZURE_AGENT_ASSIGNABLE_ROLES`] through an ABAC condition).
pub const AZURE_AGENT_ROLES: &[&str] =
    &["Network Contributor", "Monitoring Reader", "Managed Identity Contributor", "Role Based Access Control Administrator"];

/// Azure role of the agent on the state container: the state store, its lease and the
/// inventory are blobs there.
pub const AZURE_AGENT_STATE_ROLES: &[&str] = &["Storage Blob Data Contributor"];

/// The roles the agent may assign and remove (the clusters' role on the data container):
/// the condition on its Role Based Access Control Administrator assignment.
pub const AZURE_AGENT_ASSIGNABLE_ROLES: &[&str] = AZURE_CLUSTER_ROLES;

/// Azure role of a RisingWave cluster, on the data container.
pub const AZURE_CLUSTER_ROLES: &[&str] = &["Storage Blob Data Contributor"];

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Vec<String> {
        let full = format!("{}/../policies/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"));
        value["permissions"]
            .as_array()
            .unwrap_or_else(|| panic!("{full}: no permissions array"))
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    }

    #[test]
    fn the_agents_custom_role_file_is_a_role_of_sorted_permissions() {
        let (title, permissions) = gcp_agent_role();
        assert_eq!(title, "byoc agent");
        assert_eq!(permissions.len(), 15, "{permissions:?}");
        let mut sorted = permissions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, permissions, "sorted, each once");
        assert!(permissions.iter().all(|p| p.split('.').count() == 3), "service.resource.verb: {permissions:?}");
        assert_eq!(gcp_agent_roles("acme", "byoc_prod_agent"), ["projects/acme/roles/byoc_prod_agent"]);
    }

    #[test]
    fn policy_files_match_the_code() {
        let cases: [(&str, Vec<&str>); 7] = [
            ("aws/cluster.json", [AWS_CLUSTER_OBJECT_ACTIONS, AWS_CLUSTER_BUCKET_ACTIONS].concat()),
            ("gcp/agent.json", GCP_AGENT_ROLES.to_vec()),
            ("gcp/agent-state.json", GCP_AGENT_STATE_ROLES.to_vec()),
            ("gcp/cluster.json", GCP_CLUSTER_ROLES.to_vec()),
            ("gcp/nodes.json", GCP_NODE_ROLES.to_vec()),
            ("azure/agent.json", [AZURE_AGENT_ROLES, AZURE_AGENT_STATE_ROLES].concat()),
            ("azure/cluster.json", AZURE_CLUSTER_ROLES.to_vec()),
        ];
        for (path, code) in cases {
            assert_eq!(file(path), code, "policies/{path} differs from expand::permissions");
        }
    }

    #[test]
    fn the_agent_policy_grants_iam_writes_only_on_cluster_roles_and_creates_only_with_the_boundary() {
        let statements = aws_agent_statements("us-east-1", "123456789012", "prod", "state-b");
        assert_eq!(statements.len(), 7);
        let text = |v: &Value| v.to_string();
        for st in &statements {
            let Value::Map(m) = st else { panic!("{st}") };
            let get = |k: &str| m.get(k).cloned().unwrap_or(Value::List(Vec::new()));
            let actions = text(&get("actions"));
            let writes = ["iam:Create", "iam:Put", "iam:Delete", "iam:Update", "iam:Tag", "iam:Attach", "iam:Detach"];
            if get("effect").as_str() == Some("Allow") && writes.iter().any(|w| actions.contains(w)) {
                assert_eq!(text(&get("resources")), text(&Value::strings(["arn:aws:iam::123456789012:role/byoc/prod/clusters/*"])), "{st}");
                if actions.contains("iam:CreateRole") {
                    let c = text(&get("condition"));
                    assert!(c.contains("arn:aws:iam::123456789012:policy/byoc/prod/byoc-prod-cluster-boundary"), "{c}");
                }
            }
        }
        assert!(!AWS_AGENT_POLICY.contains("iam:AttachRolePolicy"), "the daemon never attaches managed policies");
    }

    #[test]
    fn the_load_balancer_controller_writes_only_what_names_this_environments_cluster() {
        let statements = aws_load_balancer_controller_statements("cn-north-1", "123456789012", "prod");
        assert_eq!(statements.len(), 6);
        let text: String = statements.iter().map(Value::to_string).collect();
        assert!(!text.contains('<'), "every placeholder filled: {text}");
        assert!(!text.contains("arn:aws:"), "the partition of cn-north-1: {text}");
        for st in &statements {
            let Value::Map(m) = st else { panic!("{st}") };
            let actions = m.get("actions").map(Value::to_string).unwrap_or_default();
            let resources = m.get("resources").map(Value::to_string).unwrap_or_default();
            let condition = m.get("condition").map(Value::to_string).unwrap_or_default();
            // Anything but a read (Describe*, Get*, List*) is a write.
            let writes = actions
                .split(", ")
                .filter_map(|a| a.trim_matches(|c| matches!(c, '[' | ']' | '"')).split_once(':'))
                .any(|(_, action)| !["Describe", "Get", "List"].iter().any(|r| action.starts_with(r)));
            // A write is either held to the cluster's tag, or to ARNs of this account.
            assert!(
                !writes
                    || condition.contains("byoc-prod")
                    || condition.contains("elasticloadbalancing.amazonaws.com")
                    || condition.contains("CreateSecurityGroup")
                    || (!resources.contains("\"*\"") && resources.contains(":123456789012:")),
                "{st}"
            );
        }
        assert!(!AWS_LOAD_BALANCER_CONTROLLER_POLICY.contains("\"elasticloadbalancing:*\""), "no wildcard actions");
    }
}
