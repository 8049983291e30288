//! Least-privilege permissions of the workload identities. The same lists are published as
//! files under `policies/` for security review; a test keeps the two identical.

/// AWS actions of the agent (private connectivity checks and metrics reads).
pub const AWS_AGENT_ACTIONS: &[&str] = &[
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcEndpointServices",
    "ec2:DescribeSubnets",
    "aps:GetLabels",
    "aps:GetMetricMetadata",
    "aps:GetSeries",
    "aps:QueryMetrics",
];

/// AWS actions of a RisingWave cluster on objects under its prefix in the data bucket.
pub const AWS_CLUSTER_OBJECT_ACTIONS: &[&str] =
    &["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"];

/// AWS actions of a RisingWave cluster on the data bucket itself (listing its prefix).
pub const AWS_CLUSTER_BUCKET_ACTIONS: &[&str] = &["s3:ListBucket"];

/// GCP roles of the agent, on the project.
pub const GCP_AGENT_ROLES: &[&str] = &["roles/compute.networkViewer", "roles/monitoring.viewer"];

/// GCP role of a RisingWave cluster, on the data bucket with a condition on its prefix.
pub const GCP_CLUSTER_ROLES: &[&str] = &["roles/storage.objectUser"];

/// Azure roles of the agent, on the resource group.
pub const AZURE_AGENT_ROLES: &[&str] = &["Network Contributor", "Monitoring Reader"];

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
    fn policy_files_match_the_code() {
        let cases: [(&str, Vec<&str>); 6] = [
            ("aws/agent.json", AWS_AGENT_ACTIONS.to_vec()),
            ("aws/cluster.json", [AWS_CLUSTER_OBJECT_ACTIONS, AWS_CLUSTER_BUCKET_ACTIONS].concat()),
            ("gcp/agent.json", GCP_AGENT_ROLES.to_vec()),
            ("gcp/cluster.json", GCP_CLUSTER_ROLES.to_vec()),
            ("azure/agent.json", AZURE_AGENT_ROLES.to_vec()),
            ("azure/cluster.json", AZURE_CLUSTER_ROLES.to_vec()),
        ];
        for (path, code) in cases {
            assert_eq!(file(path), code, "policies/{path} differs from expand::permissions");
        }
    }
}
