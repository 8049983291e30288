//! What byoc knows about EKS that decides the graph and the plan's notes, written once and
//! table-tested: Kubernetes minor versions (the form, the one-minor upgrade steps, no
//! downgrade), the AMI type an instance type needs, the capacity of common instance types,
//! and the check of the clusters' requests against their node group's minimum.

use crate::spec::{Cloud, Cluster, Environment, NodeGroup, Specs};

/// What a plan of `specs` says besides its steps: the clusters' requests against their
/// node groups' minimum capacity, and the cost of extended support when asked for. AWS
/// only: the capacity table holds EC2 instance types.
pub fn plan_notes(specs: &Specs) -> Vec<String> {
    let env = &specs.environment;
    if env.cloud != Cloud::Aws {
        return Vec::new();
    }
    let mut notes = capacity_notes(env, &specs.clusters);
    if env.kubernetes.extended_support {
        notes.push(format!(
            "cost: supportType extended lets EKS keep Kubernetes {} past its standard support, at {EXTENDED_COST_FACTOR} times the standard price per cluster hour ($0.60 against $0.10) for as long as it runs there",
            env.kubernetes.version
        ));
    }
    notes
}

/// The StorageClass byoc gives an EKS cluster, marked default: EKS 1.30+ marks none
/// default (the in-tree `gp2` class is no longer annotated), so a PersistentVolumeClaim
/// without a class, like the RisingWave meta store's, would stay Pending for ever.
pub const STORAGE_CLASS: &str = "gp3";
/// The EBS CSI driver (the add-on the graph installs) provisions its volumes.
pub const STORAGE_CLASS_PROVISIONER: &str = "ebs.csi.aws.com";
/// The annotation that makes a StorageClass the one a claim without a class gets.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The StorageClass's parameters (the EBS CSI driver's): gp3 volumes, encrypted with the
/// account's default EBS key.
pub const STORAGE_CLASS_PARAMETERS: [(&str, &str); 2] = [("type", "gp3"), ("encrypted", "true")];
/// A zonal EBS volume must be made in the zone of the node the pod lands on: binding waits
/// for the pod's scheduling instead of picking a zone first.
pub const STORAGE_CLASS_BINDING: &str = "WaitForFirstConsumer";
/// Volumes go with their claims (RisingWave's data lives in S3; the meta store's volume
/// follows its cluster's deletion policy through its namespace).
pub const STORAGE_CLASS_RECLAIM: &str = "Delete";

/// `STANDARD` or `EXTENDED`, as EKS's `upgradePolicy.supportType` takes it.
pub fn support_type(extended: bool) -> &'static str {
    if extended { "EXTENDED" } else { "STANDARD" }
}

/// How many times the standard per-cluster-hour price extended support costs (Amazon EKS
/// pricing: $0.60 against $0.10 per cluster hour).
pub const EXTENDED_COST_FACTOR: u32 = 6;

/// The minor of a `1.N` version, or `None` when it does not have that form.
pub fn minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("1.")?;
    (!rest.is_empty() && rest.len() <= 3 && rest.bytes().all(|b| b.is_ascii_digit()) && !rest.starts_with('0'))
        .then(|| rest.parse().ok())
        .flatten()
}

/// The versions `UpdateClusterVersion` is called with to go from `current` to `target`:
/// EKS moves a control plane one minor version per update, so 1.32 -> 1.35 is three
/// updates. Empty when there is nothing to do; `Err` for a downgrade, which EKS cannot do.
pub fn upgrade_steps(current: &str, target: &str) -> Result<Vec<String>, String> {
    match (minor(current), minor(target)) {
        (Some(c), Some(t)) if t < c => Err(format!("Kubernetes {current} cannot be downgraded to {target}")),
        (Some(c), Some(t)) => Ok((c + 1..=t).map(|m| format!("1.{m}")).collect()),
        _ if current == target => Ok(Vec::new()),
        _ => Err(format!("cannot tell how to move Kubernetes from {current:?} to {target:?}")),
    }
}

/// The error for a spec asking for a lower version than the cluster runs: where it is
/// written, what runs, what to do.
pub fn downgrade(at: &str, running: &str, wanted: &str) -> Option<String> {
    match (minor(running), minor(wanted)) {
        (Some(r), Some(w)) if w < r => Some(format!(
            "{at}: kubernetes.version {wanted:?} is lower than the {running} the EKS cluster runs; EKS cannot downgrade a cluster. Write \"{running}\" or later there (a downgrade means a new cluster: a new environment)"
        )),
        _ => None,
    }
}

/// The EKS AMI type for `instance_type`: Graviton (ARM64) families take
/// `AL2023_ARM_64_STANDARD`, everything else `AL2023_x86_64_STANDARD`. A Graviton family
/// has a `g` right after its generation digits (`m7g`, `c6gn`, `r8gd`, `im4gn`, `is4gen`,
/// `x2gd`, `t4g`, `g5g`), or is the first Graviton, `a1`.
pub fn ami_type(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or_default().to_ascii_lowercase();
    let after_digits = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = after_digits.trim_start_matches(|c: char| c.is_ascii_digit());
    let has_generation = after_digits.len() > suffix.len();
    if family == "a1" || (has_generation && suffix.starts_with('g')) { "AL2023_ARM_64_STANDARD" } else { "AL2023_x86_64_STANDARD" }
}

/// Default size of a node's root volume in GiB.
pub const ROOT_VOLUME_DEFAULT_GIB: u32 = 50;
/// Sizes a root volume may take, in GiB: the AL2023 EKS AMIs' snapshot is 20 GiB, and gp3
/// volumes reach 16 TiB.
pub const ROOT_VOLUME_GIB: std::ops::RangeInclusive<u32> = 20..=16_384;

/// vCPUs and memory (GiB) per instance, from the EC2 instance type specifications, for the
/// sizes byoc's examples and users pick most; families follow one pattern per size.
const SIZES: [(&str, u32); 9] = [
    ("large", 2),
    ("xlarge", 4),
    ("2xlarge", 8),
    ("4xlarge", 16),
    ("8xlarge", 32),
    ("12xlarge", 48),
    ("16xlarge", 64),
    ("24xlarge", 96),
    ("48xlarge", 192),
];

/// GiB of memory per vCPU of the general purpose (m), compute (c) and memory (r) families
/// of the 5th generation onward (m6i.2xlarge: 8 vCPU, 32 GiB; c7g.xlarge: 4, 8; r6i.large:
/// 2, 16).
const MEMORY_PER_VCPU: [(char, u32); 3] = [('m', 4), ('c', 2), ('r', 8)];

/// vCPUs and GiB of memory of one instance of `instance_type`, or `None` when byoc's table
/// does not know it (then the plan says the capacity was not checked).
pub fn capacity(instance_type: &str) -> Option<(u32, u32)> {
    let (family, size) = instance_type.split_once('.')?;
    let vcpus = SIZES.iter().find(|(s, _)| *s == size)?.1;
    let mut chars = family.chars();
    let class = chars.next()?;
    let generation: String = chars.clone().take_while(char::is_ascii_digit).collect();
    let generation: u32 = generation.parse().ok()?;
    let suffix: String = chars.skip_while(char::is_ascii_digit).collect();
    // Known suffixes: i (Intel), a (AMD), g (Graviton), and the local-disk (d) and network
    // (n) variants; flex, metal, high-frequency and GPU families are not in the table.
    if generation < 5 || !suffix.chars().all(|c| "iagdn".contains(c)) {
        return None;
    }
    let per = MEMORY_PER_VCPU.iter().find(|(c, _)| *c == class)?.1;
    Some((vcpus, vcpus * per))
}

/// What the plan says about capacity: for each node group that clusters pin, the sum of
/// their pods' requests against what the group's minimum nodes provide. Nothing here
/// scales nodes up (see the README, "Capacity"), so requests beyond the minimum stay
/// Pending.
pub fn capacity_notes(env: &Environment, clusters: &[Cluster]) -> Vec<String> {
    let mut notes = Vec::new();
    for g in &env.kubernetes.node_groups {
        let pinned: Vec<&Cluster> = clusters.iter().filter(|c| c.node_group.as_deref() == Some(g.name.as_str())).collect();
        if pinned.is_empty() {
            continue;
        }
        let (mut cpu, mut mem) = (0u64, 0u64);
        for c in &pinned {
            for comp in [&c.meta, &c.frontend, &c.compute, &c.compactor] {
                cpu += u64::from(comp.replicas) * comp.cpu_millis;
                mem += u64::from(comp.replicas) * comp.memory_bytes;
            }
        }
        let names: Vec<&str> = pinned.iter().map(|c| c.name.as_str()).collect();
        notes.extend(group_note(g, &names, cpu, mem));
    }
    notes
}

fn group_note(g: &NodeGroup, clusters: &[&str], cpu_millis: u64, memory_bytes: u64) -> Option<String> {
    const GIB: u64 = 1 << 30;
    let who = clusters.join(", ");
    let cpu = cpu_millis as f64 / 1000.0;
    let mem = memory_bytes as f64 / GIB as f64;
    let Some((vcpus, gib)) = capacity(&g.machine_type) else {
        return Some(format!(
            "capacity not checked: byoc's table does not know instance type {} of node group {}; the clusters pinned to it ({who}) request {cpu} CPU and {mem:.1} GiB",
            g.machine_type, g.name
        ));
    };
    let (have_cpu, have_mem) = (u64::from(g.min) * u64::from(vcpus), u64::from(g.min) * u64::from(gib));
    let short_cpu = cpu_millis > have_cpu * 1000;
    let short_mem = memory_bytes > have_mem * GIB;
    if !short_cpu && !short_mem {
        return None;
    }
    let needed = |per_node: f64, want: f64| (want / per_node).ceil() as u64;
    let nodes = needed(f64::from(vcpus), cpu).max(needed(f64::from(gib), mem));
    Some(format!(
        "capacity: the clusters pinned to node group {} ({who}) request {cpu} CPU and {mem:.1} GiB, but its minimum of {} {} node(s) provides {have_cpu} vCPU and {have_mem} GiB ({vcpus} vCPU, {gib} GiB each, before what the kubelet and DaemonSets reserve); nothing adds nodes, so pods that do not fit stay Pending. Raise its min to at least {nodes}, or request less",
        g.name, g.min, g.machine_type
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_type_follows_the_instance_family() {
        let arm = "AL2023_ARM_64_STANDARD";
        let x86 = "AL2023_x86_64_STANDARD";
        let table = [
            ("m7g.xlarge", arm),
            ("m6gd.2xlarge", arm),
            ("c6gn.large", arm),
            ("c7gn.medium", arm),
            ("r8g.4xlarge", arm),
            ("t4g.medium", arm),
            ("x2gd.xlarge", arm),
            ("im4gn.large", arm),
            ("is4gen.medium", arm),
            ("g5g.xlarge", arm),
            ("a1.large", arm),
            ("m6i.large", x86),
            ("r6i.2xlarge", x86),
            ("m6a.xlarge", x86),
            ("m7i-flex.large", x86),
            ("c5n.9xlarge", x86),
            ("g5.xlarge", x86),
            ("g4dn.xlarge", x86),
            ("t3.medium", x86),
            ("inf2.xlarge", x86),
            ("u-6tb1.metal", x86),
        ];
        for (instance, want) in table {
            assert_eq!(ami_type(instance), want, "{instance}");
        }
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time_and_never_down() {
        assert_eq!(upgrade_steps("1.32", "1.35").unwrap(), ["1.33", "1.34", "1.35"]);
        assert_eq!(upgrade_steps("1.35", "1.35").unwrap(), Vec::<String>::new());
        assert!(upgrade_steps("1.35", "1.34").unwrap_err().contains("cannot be downgraded"));
        let e = downgrade("examples/aws/environment.yaml:22:14", "1.35", "1.34").unwrap();
        assert!(e.starts_with("examples/aws/environment.yaml:22:14: "), "{e}");
        assert!(downgrade("f:1:1", "1.34", "1.35").is_none());
    }

    #[test]
    fn only_the_minor_version_form_is_valid() {
        for ok in ["1.28", "1.35", "1.40", "1.100"] {
            assert!(minor(ok).is_some(), "{ok}");
        }
        for bad in ["1.", "1.3x", "2.1", "v1.31", "1.31.2", "1.031", "", "1.-1"] {
            assert!(minor(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_ebs_csi_policy_file_names_the_policy_the_graph_attaches() {
        let file: serde_json::Value = serde_json::from_str(include_str!("../../../policies/aws/ebs-csi-driver.json")).expect("json");
        assert_eq!(file["managedPolicies"][0], format!("arn:aws:{}", super::super::aws::EBS_CSI_POLICY));
    }

    #[test]
    fn capacity_of_known_and_unknown_types() {
        assert_eq!(capacity("r6i.2xlarge"), Some((8, 64)));
        assert_eq!(capacity("m6i.large"), Some((2, 8)));
        assert_eq!(capacity("c7g.4xlarge"), Some((16, 32)));
        assert_eq!(capacity("m5.xlarge"), Some((4, 16)));
        assert_eq!(capacity("p4d.24xlarge"), None);
        assert_eq!(capacity("t3.medium"), None);
        assert_eq!(capacity("m7i-flex.large"), None);
    }
}
