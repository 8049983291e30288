//! Property test: valid specs for all three clouds, generated across the whole space
//! validation accepts (names at their length limits, hyphens wherever allowed, digits
//! first where allowed, every proxy port), run through the loader and `expand`; every name
//! the graph hands to an API must satisfy its rule in [`super`], be unique under that rule,
//! and match a hand-written regular expression of the provider's documented rule (so the
//! check does not only repeat the table it tests).
//!
//! 256 cases per cloud by default; set `PROPTEST_CASES` for a longer run.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use std::collections::BTreeMap;

use super::*;

/// A spec as generated.
#[derive(Debug, Clone)]
struct Case {
    cloud: Cloud,
    env: String,
    account: String,
    port: u16,
    public: bool,
    subnets: Vec<String>,
    node_groups: Vec<String>,
    clusters: Vec<String>,
    tags: Vec<(String, String)>,
}

/// A name of `min..=max` characters from `alphabet` (hyphens weighted up), with the
/// length at either limit half the time; hyphens first, last or doubled are replaced
/// where the rule refuses them.
fn name(min: usize, max: usize, first_letter: bool, double_hyphen: bool) -> impl Strategy<Value = String> {
    let len = prop_oneof![Just(min), Just(max), min..=max];
    len.prop_flat_map(|n| {
        prop::collection::vec(prop_oneof![4 => prop::char::range('a', 'z'), 2 => prop::char::range('0', '9'), 3 => Just('-')], n)
    })
    .prop_map(move |mut cs| {
        let n = cs.len();
        for i in 0..n {
            if cs[i] == '-' && (i == 0 || i + 1 == n || (!double_hyphen && cs[i - 1] == '-')) {
                cs[i] = '7';
            }
        }
        if first_letter && !cs[0].is_ascii_lowercase() {
            cs[0] = 'q';
        }
        cs.into_iter().collect()
    })
}

/// `n` distinct names.
fn distinct(s: impl Strategy<Value = String>, n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(s, n).prop_map(|s| s.into_iter().collect())
}

fn text(chars: &'static str, min: usize, max: usize) -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = chars.chars().collect();
    let len = prop_oneof![Just(min), Just(max), min..=max];
    len.prop_flat_map(move |n| prop::collection::vec(prop::sample::select(alphabet.clone()), n)).prop_map(|v| v.into_iter().collect())
}

fn tags(cloud: Cloud) -> BoxedStrategy<Vec<(String, String)>> {
    let pair: BoxedStrategy<(String, String)> = match cloud {
        Cloud::Aws => (text("abcXYZ059 _.:/=+-@", 1, 128), text("abcXYZ059 _.:/=+-@", 0, 256)).boxed(),
        Cloud::Gcp => (name(1, 63, true, true), text("abz059_-", 0, 63)).boxed(),
        Cloud::Azure => (text("abcXYZ059 _.:=+-@!#é", 1, 128), text("abcXYZ059 _.:/=+-@<>?%", 0, 256)).boxed(),
    };
    prop::collection::vec(pair, 0..=3)
        .prop_map(|v| {
            v.into_iter()
                .map(|(k, v)| {
                    // Reserved prefixes are refused by validation, not generated.
                    let reserved = ["aws:", "byoc", "Byoc"].iter().any(|p| k.to_ascii_lowercase().starts_with(p));
                    (if reserved { format!("t{k}").chars().take(63).collect() } else { k }, v)
                })
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect()
        })
        .boxed()
}

fn case(cloud: Cloud) -> impl Strategy<Value = Case> {
    let account: BoxedStrategy<String> = match cloud {
        Cloud::Aws => text("0123456789", 12, 12).boxed(),
        Cloud::Gcp => name(6, 30, true, true).boxed(),
        Cloud::Azure => (text("0123456789abcdef", 8, 8), text("0123456789abcdef", 4, 4), text("0123456789abcdef", 12, 12))
            .prop_map(|(a, b, c)| format!("{a}-{b}-{b}-{b}-{c}"))
            .boxed(),
    };
    let subnet_count = if cloud == Cloud::Aws { 4..=4 } else { 2..=2 };
    let subnet = name(1, 63, cloud == Cloud::Gcp, true);
    let node_group: BoxedStrategy<String> = match cloud {
        Cloud::Azure => (prop::char::range('a', 'z'), text("abcxyz0123456789", 0, 11)).prop_map(|(c, s)| format!("{c}{s}")).boxed(),
        _ => name(1, 32, cloud == Cloud::Gcp, true).boxed(),
    };
    let port = prop_oneof![Just(1024u16), Just(65535u16), Just(4566u16), Just(9999u16), Just(10000u16), 1024u16..=65535];
    (
        name(1, 24, false, false),
        account,
        port,
        prop::bool::ANY,
        distinct(subnet, subnet_count),
        distinct(node_group, 1..=3),
        distinct(name(1, 40, true, true), 1..=3),
        tags(cloud),
    )
        .prop_map(move |(env, account, port, public, subnets, node_groups, clusters, tags)| Case {
            cloud,
            env,
            account,
            port,
            public,
            subnets,
            node_groups,
            clusters,
            tags,
        })
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn files(c: &Case) -> Vec<rwproxy::specfiles::SourceFile> {
    let (region, zones, principal) = match c.cloud {
        Cloud::Aws => ("us-east-1", "[us-east-1a, us-east-1b]", "arn:aws:iam::210987654321:root"),
        Cloud::Gcp => ("us-central1", "[us-central1-a]", "consumer-project"),
        Cloud::Azure => ("eastus2", "[\"1\", \"2\"]", "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"),
    };
    let mut subnets = String::new();
    let layout: &[(&str, &str, &str)] = match c.cloud {
        Cloud::Aws => &[
            ("private", "10.20.0.0/19", "us-east-1a"),
            ("private", "10.20.32.0/19", "us-east-1b"),
            ("public", "10.20.96.0/22", "us-east-1a"),
            ("public", "10.20.100.0/22", "us-east-1b"),
        ],
        Cloud::Gcp => &[("private", "10.20.0.0/19", ""), ("private", "10.20.32.0/19", "")],
        Cloud::Azure => &[("private", "10.20.0.0/19", ""), ("public", "10.20.96.0/22", "")],
    };
    // Azure: the API-server and Private Link subnets have fields of their own, and AKS's
    // overlay its pod and service ranges.
    let (azure_subnets, azure_ranges) = match c.cloud {
        Cloud::Azure => (
            "    apiServer: {cidr: 10.20.128.0/28}\n    privateLink: {cidr: 10.20.129.0/24}\n",
            "    serviceCidr: 172.20.0.0/16\n    podCidr: 10.244.0.0/16\n",
        ),
        _ => ("", ""),
    };
    // GCP: the PSC NAT subnet and GKE's secondary ranges have fields of their own.
    let (psc, ranges) = match c.cloud {
        Cloud::Gcp => {
            ("    privateServiceConnect: {cidr: 10.20.64.0/24}\n", "    serviceCidr: 172.30.0.0/20\n    podCidr: 10.100.0.0/16\n")
        }
        _ => ("", ""),
    };
    for (name, (tier, cidr, zone)) in c.subnets.iter().zip(layout) {
        // The PSC subnet's id is reserved on GCP.
        let name = if c.cloud == Cloud::Gcp && name == "psc" { "psc0" } else { name.as_str() };
        let name =
            if c.cloud == Cloud::Azure && [azure::API_SERVER_SUBNET, azure::PRIVATE_LINK_SUBNET].contains(&name) { "own0" } else { name };
        let zone = if zone.is_empty() { String::new() } else { format!(", zone: {zone}") };
        subnets.push_str(&format!("      - {{name: {}, tier: {tier}, cidr: {cidr}{zone}}}\n", quoted(name)));
    }
    let mut groups = String::new();
    for g in &c.node_groups {
        groups.push_str(&format!("      - {{name: {}, machineType: m6i.large, min: 1, max: 3, labels: {{role: system}}}}\n", quoted(g)));
    }
    let public = if c.public { "      public:\n        allowedCidrs: [203.0.113.0/24]\n" } else { "" };
    let mut tags = String::new();
    if !c.tags.is_empty() {
        tags.push_str("  tags:\n");
        for (k, v) in &c.tags {
            tags.push_str(&format!("    {}: {}\n", quoted(k), quoted(v)));
        }
    }
    let env = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Environment\nmetadata:\n  name: {}\nspec:\n  cloud: {}\n  region: {region}\n  account: {}\n  network:\n    cidr: 10.20.0.0/16\n    zones: {zones}\n    subnets:\n{subnets}{psc}{azure_subnets}  kubernetes:\n    version: \"1.31\"\n{ranges}{azure_ranges}    nodeGroups:\n{groups}  exposure:\n    proxy:\n      port: {}\n{public}  controlPlane:\n    principals: [{}]\n{tags}",
        quoted(&c.env),
        c.cloud.as_str(),
        quoted(&c.account),
        c.port,
        quoted(principal),
    );
    let mut out = vec![rwproxy::specfiles::SourceFile { path: "env/environment.yaml".into(), bytes: env.into_bytes() }];
    for name in &c.clusters {
        let doc = format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: {}\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {{replicas: 1, cpu: \"1\", memory: 2Gi}}\n    frontend: {{replicas: 1, cpu: \"1\", memory: 2Gi}}\n    compute: {{replicas: 1, cpu: \"2\", memory: 8Gi}}\n    compactor: {{replicas: 1, cpu: \"1\", memory: 2Gi}}\n  stateStore:\n    prefix: {}\n  deletionPolicy: Delete\n",
            quoted(name),
            quoted(name)
        );
        out.push(rwproxy::specfiles::SourceFile { path: format!("env/clusters/{name}.yaml"), bytes: doc.into_bytes() });
    }
    out
}

/// The documented rules again, as regular expressions written from the providers' pages,
/// independently of the table.
fn documented(rule: &Rule) -> Option<(regex::Regex, usize)> {
    let (pattern, max) = match rule.what {
        "ELBv2 load balancer name" | "ELBv2 target group name" => (r"^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9])*$", 32),
        "IAM role name" => (r"^[\w+=,.@-]+$", 64),
        // Dots are legal in S3 but refused by byoc (virtual-hosted TLS); the reserved
        // prefixes and suffixes are checked in `aws_documented` below.
        "S3 bucket name" => (r"^[a-z0-9][a-z0-9-]*[a-z0-9]$", 63),
        // "Tag naming limits and requirements" (Tagging AWS Resources), and the IAM, S3
        // and ELBv2 API models' pattern.
        "AWS tag key" => (r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$", 128),
        "AWS tag value" => (r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$", 256),
        "EKS cluster name" => (r"^[0-9A-Za-z][A-Za-z0-9_-]*$", 100),
        "EKS node group name" => (r"^[0-9A-Za-z][A-Za-z0-9_-]*$", 63),
        "GCP resource name" => (r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$", 63),
        "GKE cluster or node pool name" => (r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$", 40),
        "GCP service account id" => (r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$", 30),
        "GCP custom role id" => (r"^[a-zA-Z0-9_.]{3,64}$", 64),
        "GCS bucket name" => (r"^[a-z0-9][a-z0-9_.-]*[a-z0-9]$", 63),
        "GCP label key" => (r"^[a-z][a-z0-9_-]*$", 63),
        "GCP label value" => (r"^[a-z0-9_-]*$", 63),
        "Azure virtual network name" => (r"^[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9_]$", 64),
        "Azure network resource name" => (r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$", 80),
        "AKS cluster name" => (r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$", 63),
        "AKS node pool name" => (r"^[a-z][a-z0-9]{0,11}$", 12),
        "Azure storage account name" => (r"^[a-z0-9]{3,24}$", 24),
        "Azure blob container name" => (r"^[a-z0-9](?:[a-z0-9]|-[a-z0-9])*$", 63),
        "Azure tag name" => (r"^[^<>%&\\?/]+$", 512),
        "Azure managed identity name" => (r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$", 128),
        "Azure federated credential name" => (r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$", 120),
        "Azure role assignment name" => (r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", 36),
        "Kubernetes name" => (r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$", 63),
        "Kubernetes Service name" => (r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$", 63),
        "Kubernetes label value" => (r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", 63),
        _ => return None,
    };
    Some((regex::Regex::new(pattern).expect("pattern compiles"), max))
}

/// The documented AWS rules a pattern cannot say: reserved bucket prefixes and suffixes
/// ("General purpose bucket naming rules", Amazon S3 User Guide) and the `aws:` prefix of
/// tag keys and values in any case.
fn aws_documented(rule: &Rule, value: &str) -> bool {
    match rule.what {
        "S3 bucket name" => {
            !["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| value.starts_with(p))
                && !["-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"].iter().any(|p| value.ends_with(p))
                && !value.contains("..")
                && value.parse::<std::net::Ipv4Addr>().is_err()
        }
        "AWS tag key" | "AWS tag value" => !value.to_lowercase().starts_with("aws:"),
        _ => true,
    }
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let specs = crate::spec::load::load("env", &files(c))
        .map_err(|d| TestCaseError::fail(format!("a spec in the accepted space was refused: {d:?}\n{c:?}")))?;
    let graph = crate::expand::expand(&specs);
    let names = cloud_names(&graph, c.cloud);
    prop_assert!(names.iter().any(|n| n.rule.what == "Kubernetes Service name"), "no names found in the graph");
    for n in &names {
        if let Err(why) = n.rule.check(&n.value) {
            return Err(TestCaseError::fail(format!("{} {}: {why}", n.resource, n.field)));
        }
        if let Some((re, max)) = documented(n.rule) {
            prop_assert!(
                re.is_match(&n.value) && n.value.chars().count() <= max,
                "{} {}: {:?} does not match the documented rule {re} (max {max})",
                n.resource,
                n.field,
                n.value
            );
        }
        prop_assert!(aws_documented(n.rule, &n.value), "{} {}: {:?} is reserved by AWS", n.resource, n.field, n.value);
    }
    let dup = duplicates(&names);
    prop_assert!(dup.is_empty(), "{dup:?}");
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn run(cloud: Cloud) {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    if let Err(e) = runner.run(&case(cloud), |c| check(&c)) {
        panic!("{}: {e}", cloud.as_str());
    }
    eprintln!("{}: {} cases in {:.1}s", cloud.as_str(), cases(), started.elapsed().as_secs_f64());
}

#[test]
fn every_derived_aws_name_is_one_aws_accepts() {
    run(Cloud::Aws);
}

#[test]
fn every_derived_gcp_name_is_one_gcp_accepts() {
    run(Cloud::Gcp);
}

#[test]
fn every_derived_azure_name_is_one_azure_accepts() {
    run(Cloud::Azure);
}

/// `s` with `google` put in at `at` (a fraction of its length) and cut back to `max`: GCS
/// refuses bucket names containing it, and nothing else keeps a user from writing it.
fn with_google(s: String, at: f64, max: usize) -> String {
    let i = ((s.len() as f64) * at) as usize;
    let mut out = format!("{}google{}", &s[..i], &s[i..]);
    out.truncate(max);
    out.trim_end_matches('-').to_owned()
}

fn holds(rule: &Rule, value: &str) -> Result<(), TestCaseError> {
    rule.check(value).map_err(TestCaseError::fail)?;
    if let Some((re, max)) = documented(rule) {
        prop_assert!(re.is_match(value) && value.chars().count() <= max, "{value:?} breaks the documented rule {re} (max {max})");
    }
    Ok(())
}

/// Every GCP name derived from user input, straight from [`gcp`], over the whole space
/// validation accepts (environment names to 24, project ids to 30, subnet names to 63,
/// cluster names to 40, `google` anywhere) and over any text for labels: each is valid,
/// and different inputs never meet in one name.
#[test]
fn every_gcp_name_function_gives_a_valid_name_for_every_accepted_input() {
    fn env() -> BoxedStrategy<String> {
        (name(1, 24, false, false), prop::option::of(0.0..=1.0f64))
            .prop_map(|(e, g)| g.map_or(e.clone(), |at| with_google(e, at, 24)))
            .prop_filter("a DNS label", |e| !e.is_empty() && !e.contains("--"))
            .boxed()
    }
    fn any_text() -> BoxedStrategy<String> {
        prop::collection::vec(prop::char::any(), 0..=80).prop_map(|v| v.into_iter().collect::<String>()).boxed()
    }
    let project = (name(6, 30, true, true), prop::option::of(0.0..=1.0f64))
        .prop_map(|(p, g)| g.map_or(p.clone(), |at| with_google(p, at, 30)))
        .prop_filter("a project id", |p| p.len() >= 6);
    let strategy =
        ((env(), env()), project, name(1, 63, true, true), (name(1, 40, true, true), name(1, 40, true, true)), (any_text(), any_text()));
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |((env, other_env), project, subnet, (c1, c2), (key, value))| {
        for role in ["nodes", "internal", "health-checks", "proxy-public", "nat", "agent", "proxy", "psc", subnet.as_str()] {
            holds(&GCP_RESOURCE, &gcp::compute(&env, role))?;
        }
        holds(&GCP_GKE, &gcp::resource(&env, None))?;
        for who in ["agent", "nodes", &format!("rw-{c1}"), &format!("rw-{c2}")] {
            holds(&GCP_SERVICE_ACCOUNT, &gcp::service_account(&env, who))?;
        }
        holds(&GCP_CUSTOM_ROLE, &gcp::custom_role(&env, "agent"))?;
        for role in ["data", "state"] {
            holds(&GCP_BUCKET, &gcp::bucket(&env, &project, role))?;
        }
        holds(&GCP_LABEL_KEY, &gcp::label_key(&key))?;
        holds(&GCP_LABEL_VALUE, &gcp::label_value(&value))?;
        holds(&GCP_LABEL_VALUE, &gcp::label_value(&env))?;
        // Apart: two clusters' accounts, two environments' buckets and subnetworks.
        if c1 != c2 {
            prop_assert_ne!(gcp::service_account(&env, &format!("rw-{c1}")), gcp::service_account(&env, &format!("rw-{c2}")));
        }
        if env != other_env {
            prop_assert_ne!(gcp::bucket(&env, &project, "data"), gcp::bucket(&other_env, &project, "data"));
            prop_assert_ne!(gcp::service_account(&env, "agent"), gcp::service_account(&other_env, "agent"));
            prop_assert_ne!(gcp::custom_role(&env, "agent"), gcp::custom_role(&other_env, "agent"));
            prop_assert_ne!(gcp::resource(&env, None), gcp::resource(&other_env, None));
        }
        let id = format!("gcp.subnetwork/{subnet}");
        let description = gcp::ownership_description(&env, &id);
        prop_assert_eq!(gcp::owner_of(&description), Some((env.as_str(), id.as_str())));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every Azure name derived from user input, straight from [`azure`], over the whole space
/// validation accepts (environment names to 24, any subscription id, cluster names to 40):
/// each is valid, and different inputs never meet in one name (storage account names are
/// global across Azure, role assignment names unique in the tenant).
#[test]
fn every_azure_name_function_gives_a_valid_name_for_every_accepted_input() {
    fn env() -> BoxedStrategy<String> {
        name(1, 24, false, false).prop_filter("a DNS label", |e| !e.contains("--")).boxed()
    }
    let uuid = || {
        (text("0123456789abcdef", 8, 8), text("0123456789abcdef", 4, 4), text("0123456789abcdef", 12, 12))
            .prop_map(|(a, b, c)| format!("{a}-{b}-{b}-{b}-{c}"))
    };
    let strategy = ((env(), env()), (uuid(), uuid()), (name(1, 40, true, true), name(1, 40, true, true)));
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |((env, other_env), (sub, other_sub), (c1, c2))| {
        holds(&AZURE_AKS_CLUSTER, &azure::resource(&env, None))?;
        holds(&AZURE_VNET, &azure::resource(&env, None))?;
        for role in ["nat", "nodes", "agent", "proxy", "data-blob", "state-blob"] {
            holds(&AZURE_NETWORK, &azure::resource(&env, Some(role)))?;
        }
        for who in ["agent", "aks", &format!("rw-{c1}"), &format!("rw-{c2}")] {
            holds(&AZURE_MANAGED_IDENTITY, &azure::identity(&env, who))?;
            holds(&AZURE_FEDERATED_CREDENTIAL, &azure::federated_credential(&env, who))?;
        }
        for role in ["data", "state"] {
            holds(&AZURE_STORAGE_ACCOUNT, &azure::storage_account(&sub, &env, role))?;
        }
        let ra = |sub: &str, env: &str, c: &str| azure::role_assignment(sub, env, &format!("azure.role-assignment/rw-{c}-data"));
        holds(&AZURE_ROLE_ASSIGNMENT, &ra(&sub, &env, &c1))?;
        prop_assert_ne!(azure::storage_account(&sub, &env, "data"), azure::storage_account(&sub, &env, "state"));
        if env != other_env {
            prop_assert_ne!(azure::storage_account(&sub, &env, "data"), azure::storage_account(&sub, &other_env, "data"));
            prop_assert_ne!(ra(&sub, &env, &c1), ra(&sub, &other_env, &c1));
        }
        if sub != other_sub {
            prop_assert_ne!(azure::storage_account(&sub, &env, "data"), azure::storage_account(&other_sub, &env, "data"));
            prop_assert_ne!(ra(&sub, &env, &c1), ra(&other_sub, &env, &c1));
        }
        if c1 != c2 {
            prop_assert_ne!(azure::identity(&env, &format!("rw-{c1}")), azure::identity(&env, &format!("rw-{c2}")));
            prop_assert_ne!(ra(&sub, &env, &c1), ra(&sub, &env, &c2));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// An AWS spec with what a user may write anywhere in it: tags and bucket names from an
/// alphabet wider than AWS takes (symbols, combining marks, circled letters, controls,
/// reserved prefixes and suffixes, dots, IP forms) and a region in any partition.
#[derive(Debug, Clone)]
struct Wild {
    region: &'static str,
    tags: Vec<(String, String)>,
    buckets: (String, String),
}

/// Text of `min..=max` characters; `wild` mixes in what AWS refuses.
fn aws_text(min: usize, max: usize, wild: bool) -> impl Strategy<Value = String> {
    let accepted = prop_oneof![
        6 => prop::char::range('a', 'z').prop_map(String::from),
        2 => prop::sample::select(vec!["A", "Z", "0", "9", " ", "_", ".", ":", "/", "=", "+", "-", "@"]).prop_map(str::to_owned),
        // Unicode letters (Ll, Lo), numbers (No, Nl) and a separator (Zs) AWS accepts.
        1 => prop::sample::select(vec!["é", "日", "½", "Ⅻ", "\u{a0}"]).prop_map(str::to_owned),
    ];
    let pieces = if wild {
        prop_oneof![
            8 => accepted,
            // Symbols, a combining mark, a circled letter (So), controls, the reserved prefix.
            1 => prop::sample::select(vec!["#", "!", "*", "&", "\u{301}", "Ⓐ", "\t", "€", "<"]).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["aws:", "AWS:", "Aws:"]).prop_map(str::to_owned),
        ]
        .boxed()
    } else {
        accepted.boxed()
    };
    let len = prop_oneof![Just(min), Just(max), min..=max];
    len.prop_flat_map(move |n| prop::collection::vec(pieces.clone(), n)).prop_map(move |v| {
        let t: String = v.concat();
        // Keys generated clean must not start with the reserved prefix by chance.
        if !wild && t.to_lowercase().starts_with("aws:") { format!("x{t}").chars().take(max).collect() } else { t }
    })
}

fn aws_tag_pair() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        3 => (aws_text(1, 128, false), aws_text(0, 256, false)),
        1 => (aws_text(1, 130, true), aws_text(0, 258, true)),
    ]
}

fn wild_bucket() -> impl Strategy<Value = String> {
    let body = text("abcxyz0189-.", 1, 64);
    let prefix = prop::sample::select(vec!["", "xn--", "sthree-", "amzn-s3-demo-", "192.168.", "A"]);
    let suffix = prop::sample::select(vec!["", "-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3", ".5", "_"]);
    let wild = (prefix, body, suffix).prop_map(|(p, b, s)| format!("{p}{b}{s}"));
    prop_oneof![3 => name(3, 63, false, true), 1 => wild]
}

fn wild() -> impl Strategy<Value = Wild> {
    (
        prop::sample::select(vec!["us-east-1", "us-gov-west-1", "cn-north-1", "eu-isoe-west-1"]),
        prop::collection::vec(aws_tag_pair(), 0..=3),
        (wild_bucket(), wild_bucket()),
    )
        .prop_map(|(region, tags, buckets)| Wild {
            region,
            tags: tags.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect(),
            buckets,
        })
}

fn wild_files(w: &Wild) -> Vec<rwproxy::specfiles::SourceFile> {
    let base = Case {
        cloud: Cloud::Aws,
        env: "prod".into(),
        account: "123456789012".into(),
        port: 4566,
        public: false,
        subnets: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        node_groups: vec!["system".into()],
        clusters: vec!["analytics".into()],
        tags: w.tags.clone(),
    };
    let mut out = files(&base);
    let partition = aws::partition(w.region);
    let text = String::from_utf8(out[0].bytes.clone()).expect("generated as text");
    let text = text.replace("us-east-1", w.region).replace("arn:aws:iam::", &format!("arn:{partition}:iam::")).replace(
        "  tags:\n",
        &format!("  storage:\n    dataBucket: {}\n    stateBucket: {}\n  tags:\n", quoted(&w.buckets.0), quoted(&w.buckets.1)),
    );
    let text = if w.tags.is_empty() {
        format!("{text}  storage:\n    dataBucket: {}\n    stateBucket: {}\n", quoted(&w.buckets.0), quoted(&w.buckets.1))
    } else {
        text
    };
    out[0].bytes = text.into_bytes();
    out
}

#[test]
fn every_aws_tag_bucket_and_arn_validation_accepts_is_one_aws_accepts() {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&wild(), |w| {
        let Ok(specs) = crate::spec::load::load("env", &wild_files(&w)) else { return Ok(()) };
        accepted.set(accepted.get() + 1);
        let graph = crate::expand::expand(&specs);
        for n in cloud_names(&graph, Cloud::Aws) {
            if let Some((re, max)) = documented(n.rule) {
                prop_assert!(
                    re.is_match(&n.value) && n.value.chars().count() <= max,
                    "{} {}: {:?} breaks {re}",
                    n.resource,
                    n.field,
                    n.value
                );
            }
            prop_assert!(aws_documented(n.rule, &n.value), "{} {}: {:?} is reserved by AWS", n.resource, n.field, n.value);
        }
        // Every ARN the graph holds is in the region's partition.
        let text = format!("{graph:?}");
        let want = format!("arn:{}:", aws::partition(w.region));
        for (at, _) in text.match_indices("arn:") {
            prop_assert!(text[at..].starts_with(&want), "{} in {}: {}", &text[at..(at + 40).min(text.len())], w.region, want);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Not vacuous: a good share of the generated specs pass validation.
    assert!(accepted.get() * 20 >= cases(), "only {} of {} generated specs were accepted", accepted.get(), cases());
}
