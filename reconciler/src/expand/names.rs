//! Every name byoc derives from user input, and the rules each cloud API holds such a name
//! to, written down once.
//!
//! Three things use this table: the derivations below (which shorten a name that would be
//! too long with a hash suffix, never by plain truncation), validation (which refuses a spec
//! whose names cannot be derived validly, at the file, line and column of the input), and
//! the property test at the bottom, which runs generated valid specs for all three clouds
//! through validation and expansion and checks every name the graph hands to an API
//! ([`cloud_names`]) against these rules, and against hand-written regular expressions of
//! the documented rules so the check is not circular.

use sha2::Digest;

use crate::resource::{Graph, Kind, Map, Resource, Value};
use crate::spec::{Cloud, Environment};

/// One API's rule for one kind of name.
#[derive(Debug)]
pub struct Rule {
    /// What is named, for messages (`ELBv2 load balancer name`).
    pub what: &'static str,
    /// Fewest characters.
    pub min: usize,
    /// Most characters.
    pub max: usize,
    /// Characters allowed anywhere.
    pub chars: fn(char) -> bool,
    /// Characters allowed first.
    pub first: fn(char) -> bool,
    /// Characters allowed last.
    pub last: fn(char) -> bool,
    /// Whether `--` is refused.
    pub no_double_hyphen: bool,
    /// Prefixes the API reserves.
    pub reserved_prefixes: &'static [&'static str],
    /// Whether the reserved prefixes are reserved in any letter case (AWS's `aws:`).
    pub prefixes_any_case: bool,
    /// Suffixes the API reserves.
    pub reserved_suffixes: &'static [&'static str],
    /// Text the name must not contain.
    pub forbidden: &'static [&'static str],
    /// Written in the hint: the rule in one line.
    pub summary: &'static str,
}

impl Rule {
    /// `Ok` when `name` satisfies the rule; otherwise why not.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let n = name.chars().count();
        if n < self.min || n > self.max {
            return Err(format!("{} {name:?} has {n} characters; {}", self.what, self.summary));
        }
        if let Some(c) = name.chars().find(|c| !(self.chars)(*c)) {
            return Err(format!("{} {name:?} contains {c:?}; {}", self.what, self.summary));
        }
        if name.chars().next().is_some_and(|c| !(self.first)(c)) || name.chars().last().is_some_and(|c| !(self.last)(c)) {
            return Err(format!("{} {name:?} starts or ends with a character it may not; {}", self.what, self.summary));
        }
        if self.no_double_hyphen && name.contains("--") {
            return Err(format!("{} {name:?} contains \"--\"; {}", self.what, self.summary));
        }
        let lower = name.to_lowercase();
        let reserved = |p: &&&str| if self.prefixes_any_case { lower.starts_with(**p) } else { name.starts_with(**p) };
        if let Some(p) = self.reserved_prefixes.iter().find(reserved) {
            return Err(format!("{} {name:?} starts with the reserved {p:?}; {}", self.what, self.summary));
        }
        if let Some(s) = self.reserved_suffixes.iter().find(|s| name.ends_with(**s)) {
            return Err(format!("{} {name:?} ends with the reserved {s:?}; {}", self.what, self.summary));
        }
        if let Some(f) = self.forbidden.iter().find(|f| name.contains(**f)) {
            return Err(format!("{} {name:?} contains {f:?}; {}", self.what, self.summary));
        }
        Ok(())
    }
}

fn lower_digit_hyphen(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}
fn lower_digit_hyphen_dot(c: char) -> bool {
    lower_digit_hyphen(c) || c == '.'
}
fn alnum_hyphen(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}
fn alnum_hyphen_underscore(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}
fn alnum_hyphen_underscore_dot(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}
fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}
fn alnum_or_underscore(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}
fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}
fn lower(c: char) -> bool {
    c.is_ascii_lowercase()
}
fn hex_or_hyphen(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-'
}
fn any(_: char) -> bool {
    true
}
fn iam_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}
/// S3 takes dots too, but a dotted name breaks the TLS certificate of virtual-hosted-style
/// addressing (`*.s3.<region>.amazonaws.com` matches one label only), which the SDKs use;
/// without dots a name cannot take the IP-address form S3 refuses, nor contain `..`.
fn s3_bucket(c: char) -> bool {
    lower_digit_hyphen(c)
}
fn gcs_bucket(c: char) -> bool {
    lower_digit_hyphen_dot(c) || c == '_'
}
fn security_group(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)
}
/// IAM, S3, ELBv2 and EKS tags: the tagging APIs' pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]`
/// (Unicode letters, separators and numbers, and `_.:/=+-@`; EC2 takes more; the strictest
/// service decides, as every service gets the same tags). Rust's `char::is_alphanumeric`
/// is wider (it takes combining marks and circled letters, which AWS refuses), so the
/// Unicode general categories are read from the regex crate's tables.
fn aws_tag(c: char) -> bool {
    static ALLOWED: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]$").expect("a literal pattern compiles"));
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c);
    }
    let mut buf = [0u8; 4];
    ALLOWED.is_match(c.encode_utf8(&mut buf))
}
fn role_id(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}
fn gcp_label(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}
fn azure_tag_name(c: char) -> bool {
    !c.is_control() && !"<>%&\\?/".contains(c)
}
fn azure_resource_group(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')')
}
fn not_dot(c: char) -> bool {
    azure_resource_group(c) && c != '.'
}
fn label_value(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

const fn rule(what: &'static str, min: usize, max: usize, chars: fn(char) -> bool, summary: &'static str) -> Rule {
    Rule {
        what,
        min,
        max,
        chars,
        first: any,
        last: any,
        no_double_hyphen: false,
        reserved_prefixes: &[],
        prefixes_any_case: false,
        reserved_suffixes: &[],
        forbidden: &[],
        summary,
    }
}

/// ELBv2 load balancer names (CreateLoadBalancer `Name`).
pub const AWS_LOAD_BALANCER: Rule = Rule {
    first: alnum,
    last: alnum,
    no_double_hyphen: true,
    reserved_prefixes: &["internal-"],
    ..rule(
        "ELBv2 load balancer name",
        1,
        32,
        alnum_hyphen,
        "1 to 32 letters, digits and single hyphens, not starting or ending with a hyphen nor with \"internal-\"",
    )
};
/// ELBv2 target group names: the API's pattern is `(?!.*--)(?!^-)(?!.*-$)^[A-Za-z0-9-]+$`.
pub const AWS_TARGET_GROUP: Rule = Rule { what: "ELBv2 target group name", ..AWS_LOAD_BALANCER };
/// IAM role names (`[\w+=,.@-]+`, at most 64).
pub const AWS_IAM_ROLE: Rule = rule("IAM role name", 1, 64, iam_name, "1 to 64 of letters, digits and _+=,.@-");
/// S3 general purpose bucket names ("General purpose bucket naming rules", Amazon S3 User
/// Guide), without dots (see `s3_bucket`).
pub const AWS_S3_BUCKET: Rule = Rule {
    first: lower_alnum,
    last: lower_alnum,
    reserved_prefixes: &["xn--", "sthree-", "amzn-s3-demo-"],
    reserved_suffixes: &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"],
    forbidden: &[".."],
    ..rule(
        "S3 bucket name",
        3,
        63,
        s3_bucket,
        "3 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit, not starting with xn--, sthree- or amzn-s3-demo- nor ending with -s3alias, --ol-s3, --x-s3 or --table-s3; byoc refuses dots, which break TLS for virtual-hosted-style requests",
    )
};
/// EKS cluster names.
pub const AWS_EKS_CLUSTER: Rule = Rule {
    first: alnum,
    ..rule("EKS cluster name", 1, 100, alnum_hyphen_underscore, "1 to 100 letters, digits, '-' and '_', starting with a letter or digit")
};
/// EKS managed node group names.
pub const AWS_EKS_NODEGROUP: Rule = Rule {
    first: alnum,
    ..rule("EKS node group name", 1, 63, alnum_hyphen_underscore, "1 to 63 letters, digits, '-' and '_', starting with a letter or digit")
};
/// EC2 security group names in a VPC.
pub const AWS_SECURITY_GROUP: Rule = Rule {
    reserved_prefixes: &["sg-"],
    ..rule(
        "security group name",
        1,
        255,
        security_group,
        "1 to 255 characters of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*, not starting with sg-",
    )
};
/// Tag keys, the same for every AWS service byoc tags ("Tag naming limits and
/// requirements", Tagging AWS Resources: `aws:` in any case is reserved for keys and values).
pub const AWS_TAG_KEY: Rule = Rule {
    reserved_prefixes: &["aws:"],
    prefixes_any_case: true,
    ..rule("AWS tag key", 1, 128, aws_tag, "1 to 128 Unicode letters, digits, spaces and _.:/=+-@, not starting with aws: in any case")
};
/// Tag values.
pub const AWS_TAG_VALUE: Rule = Rule {
    reserved_prefixes: &["aws:"],
    prefixes_any_case: true,
    ..rule("AWS tag value", 0, 256, aws_tag, "at most 256 Unicode letters, digits, spaces and _.:/=+-@, not starting with aws: in any case")
};
/// Tags one AWS resource may carry.
pub const AWS_MAX_TAGS: usize = 50;

/// Compute Engine resource names (networks, subnetworks, forwarding rules, firewalls):
/// `[a-z]([-a-z0-9]*[a-z0-9])?`.
pub const GCP_RESOURCE: Rule = Rule {
    first: lower,
    last: lower_alnum,
    ..rule(
        "GCP resource name",
        1,
        63,
        lower_digit_hyphen,
        "1 to 63 lower-case letters, digits and '-', starting with a letter and not ending with '-'",
    )
};
/// GKE cluster and node pool names: as [`GCP_RESOURCE`], at most 40.
pub const GCP_GKE: Rule = Rule {
    what: "GKE cluster or node pool name",
    max: 40,
    summary: "1 to 40 lower-case letters, digits and '-', starting with a letter and not ending with '-'",
    ..GCP_RESOURCE
};
/// Service account ids: `[a-z]([-a-z0-9]*[a-z0-9])`, 6 to 30.
pub const GCP_SERVICE_ACCOUNT: Rule = Rule {
    what: "GCP service account id",
    min: 6,
    max: 30,
    summary: "6 to 30 lower-case letters, digits and '-', starting with a letter and not ending with '-'",
    ..GCP_RESOURCE
};
/// Custom IAM role ids (`projects/P/roles/ID`): `[a-zA-Z0-9_.]{3,64}`, no hyphens
/// (<https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles/create>).
pub const GCP_CUSTOM_ROLE: Rule = rule("GCP custom role id", 3, 64, role_id, "3 to 64 letters, digits, '_' and '.' (no '-')");
/// Label keys (byoc writes only the ASCII part of what GCP allows).
pub const GCP_LABEL_KEY: Rule = Rule {
    first: lower,
    ..rule("GCP label key", 1, 63, gcp_label, "1 to 63 lower-case letters, digits, '_' and '-', starting with a letter")
};
/// Label values.
pub const GCP_LABEL_VALUE: Rule = rule("GCP label value", 0, 63, gcp_label, "at most 63 lower-case letters, digits, '_' and '-'");
/// Labels one GCP resource may carry.
pub const GCP_MAX_LABELS: usize = 64;
/// Cloud Storage bucket names (without dots).
pub const GCP_BUCKET: Rule = Rule {
    first: lower_alnum,
    last: lower_alnum,
    reserved_prefixes: &["goog"],
    forbidden: &["google", ".."],
    ..rule(
        "GCS bucket name",
        3,
        63,
        gcs_bucket,
        "3 to 63 lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit, not starting with goog nor containing google",
    )
};

/// Resource group names.
pub const AZURE_RESOURCE_GROUP: Rule = Rule {
    last: not_dot,
    ..rule(
        "Azure resource group name",
        1,
        90,
        azure_resource_group,
        "1 to 90 letters, digits, '-', '_', '.' and parentheses, not ending with '.'",
    )
};
/// Virtual network names.
pub const AZURE_VNET: Rule = Rule {
    first: alnum,
    last: alnum_or_underscore,
    ..rule(
        "Azure virtual network name",
        2,
        64,
        alnum_hyphen_underscore_dot,
        "2 to 64 letters, digits, '-', '_' and '.', starting with a letter or digit and ending with a letter, digit or '_'",
    )
};
/// Subnet, load balancer and similar network resource names.
pub const AZURE_NETWORK: Rule = Rule {
    what: "Azure network resource name",
    min: 1,
    max: 80,
    summary: "1 to 80 letters, digits, '-', '_' and '.', starting with a letter or digit and ending with a letter, digit or '_'",
    ..AZURE_VNET
};
/// AKS cluster names.
pub const AZURE_AKS_CLUSTER: Rule = Rule {
    first: alnum,
    last: alnum,
    ..rule(
        "AKS cluster name",
        1,
        63,
        alnum_hyphen_underscore,
        "1 to 63 letters, digits, '-' and '_', starting and ending with a letter or digit",
    )
};
/// AKS (Linux) node pool names.
pub const AZURE_AKS_NODE_POOL: Rule = Rule {
    first: lower,
    ..rule("AKS node pool name", 1, 12, lower_alnum, "1 to 12 lower-case letters and digits, starting with a letter")
};
/// User-assigned managed identity names.
pub const AZURE_MANAGED_IDENTITY: Rule = Rule {
    first: alnum,
    ..rule(
        "Azure managed identity name",
        3,
        128,
        alnum_hyphen_underscore,
        "3 to 128 letters, digits, '-' and '_', starting with a letter or digit",
    )
};
/// Storage account names.
pub const AZURE_STORAGE_ACCOUNT: Rule = rule("Azure storage account name", 3, 24, lower_alnum, "3 to 24 lower-case letters and digits");
/// Blob container names.
pub const AZURE_CONTAINER: Rule = Rule {
    first: lower_alnum,
    last: lower_alnum,
    no_double_hyphen: true,
    ..rule(
        "Azure blob container name",
        3,
        63,
        lower_digit_hyphen,
        "3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit",
    )
};
/// Federated identity credential names.
pub const AZURE_FEDERATED_CREDENTIAL: Rule = Rule {
    first: alnum,
    ..rule(
        "Azure federated credential name",
        3,
        120,
        alnum_hyphen_underscore,
        "3 to 120 letters, digits, '-' and '_', starting with a letter or digit",
    )
};
/// Role assignment names: a GUID.
pub const AZURE_ROLE_ASSIGNMENT: Rule = rule("Azure role assignment name", 36, 36, hex_or_hyphen, "a GUID");
/// Tag names.
pub const AZURE_TAG_NAME: Rule = rule("Azure tag name", 1, 512, azure_tag_name, "1 to 512 characters, none of < > % & \\ ? /");
/// Tag values.
pub const AZURE_TAG_VALUE: Rule = rule("Azure tag value", 0, 256, any, "at most 256 characters");
/// Tags one Azure resource may carry.
pub const AZURE_MAX_TAGS: usize = 50;

/// A DNS-1123 label: namespaces, service accounts, most object names.
pub const K8S_DNS1123_LABEL: Rule = Rule {
    first: lower_alnum,
    last: lower_alnum,
    ..rule(
        "Kubernetes name",
        1,
        63,
        lower_digit_hyphen,
        "1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
    )
};
/// A DNS-1123 subdomain: the names of most other objects (a Lease, a ConfigMap).
pub const K8S_DNS1123_SUBDOMAIN: Rule = Rule {
    first: lower_alnum,
    last: lower_alnum,
    ..rule(
        "Kubernetes object name",
        1,
        253,
        lower_digit_hyphen_dot,
        "1 to 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
    )
};
/// A DNS-1035 label: Service names, which must start with a letter.
pub const K8S_DNS1035_LABEL: Rule = Rule {
    what: "Kubernetes Service name",
    first: lower,
    summary: "1 to 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit",
    ..K8S_DNS1123_LABEL
};
/// Label values.
pub const K8S_LABEL_VALUE: Rule = Rule {
    first: alnum,
    last: alnum,
    ..rule(
        "Kubernetes label value",
        0,
        63,
        label_value,
        "at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    )
};

/// The components the risingwave-operator makes a Service for, named `<cluster>-<component>`.
pub const OPERATOR_COMPONENTS: &[&str] = &["meta", "frontend", "compute", "compactor"];

/// `base` if it has at most `max` characters; otherwise a prefix of it, without trailing
/// separators, then `-` and 8 hex digits of the SHA-256 of `base`: two inputs never meet
/// in one name, and the result never ends on (or doubles) a hyphen.
pub fn shorten(base: &str, max: usize) -> String {
    if base.chars().count() <= max {
        return base.to_owned();
    }
    let hash = hash8(base);
    let keep: String = base.chars().take(max.saturating_sub(hash.len() + 1)).collect();
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if keep.is_empty() { hash } else { format!("{keep}-{hash}") }
}

/// 8 hex digits of the SHA-256 of `text`.
fn hash8(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// AWS names.
pub mod aws {
    use super::*;

    /// The environment's EKS cluster: `byoc-<env>` (validation keeps it within 100).
    pub fn eks_cluster(env: &str) -> String {
        format!("byoc-{env}")
    }

    /// An IAM role of the environment: `byoc-<env>-<suffix>`, at most 64. The
    /// `byoc-<env>-` prefix always survives (observe lists roles by it).
    pub fn role(env: &str, suffix: &str) -> String {
        shorten(&format!("byoc-{env}-{suffix}"), AWS_IAM_ROLE.max)
    }

    /// The ARN partition of a region ("Identify AWS resources with Amazon Resource Names",
    /// IAM User Guide): GovCloud and China are their own partitions, and an ARN written
    /// with `arn:aws:` names nothing there.
    pub fn partition(region: &str) -> &'static str {
        const PARTITIONS: [(&str, &str); 6] = [
            ("cn-", "aws-cn"),
            ("us-gov-", "aws-us-gov"),
            ("us-isob-", "aws-iso-b"),
            ("us-isof-", "aws-iso-f"),
            ("eu-isoe-", "aws-iso-e"),
            ("us-iso-", "aws-iso"),
        ];
        PARTITIONS.iter().find(|(prefix, _)| region.starts_with(prefix)).map_or("aws", |(_, p)| p)
    }

    /// `arn:<partition>:<rest>` for the environment's region.
    pub fn arn(region: &str, rest: &str) -> String {
        format!("arn:{}:{rest}", partition(region))
    }

    /// The service name of S3's gateway endpoint in `region`: `com.amazonaws.<region>.s3`
    /// (Amazon VPC User Guide, "Gateway endpoints for Amazon S3"; the China regions use the
    /// same form for S3).
    pub fn s3_gateway_service(region: &str) -> String {
        format!("com.amazonaws.{region}.s3")
    }

    /// A default bucket: `byoc-<env>-<account>-<role>` (S3 names are global; the account
    /// keeps customers apart).
    pub fn bucket(env: &str, account: &str, role: &str) -> String {
        shorten(&format!("byoc-{env}-{account}-{role}"), AWS_S3_BUCKET.max)
    }
}

/// GCP names.
///
/// Networks, subnetworks, firewalls, routers, service attachments and service accounts
/// carry no labels in GCP, so they cannot be found by label: each is named from the
/// environment (`byoc-<env>-<role>`), looked up by that exact name, and proven ours by the
/// [`gcp::ownership_description`] written in its `description` and by the inventory. Two
/// environments in one project therefore never share a name, and a name another
/// environment holds is reported, not adopted.
pub mod gcp {
    use super::*;

    /// The GKE cluster and the VPC network of the environment: `byoc-<env>[-<role>]`, at
    /// most 40 (the GKE limit).
    pub fn resource(env: &str, role: Option<&str>) -> String {
        let base = match role {
            Some(r) => format!("byoc-{env}-{r}"),
            None => format!("byoc-{env}"),
        };
        shorten(&base, GCP_GKE.max)
    }

    /// A Compute Engine resource of the environment (subnetwork, firewall rule, router,
    /// service attachment): `byoc-<env>-<role>`, at most 63.
    pub fn compute(env: &str, role: &str) -> String {
        shorten(&format!("byoc-{env}-{role}"), GCP_RESOURCE.max)
    }

    /// A Google service account id: `byoc-<env>-<who>`, 6 to 30, cut with a hash when
    /// longer (ids are unique per project, which two environments may share).
    pub fn service_account(env: &str, who: &str) -> String {
        shorten(&format!("byoc-{env}-{who}"), GCP_SERVICE_ACCOUNT.max)
    }

    /// A custom IAM role id of the environment: `byoc_<env>_<who>` with the environment's
    /// hyphens as `_` (role ids take no `-`; environment names are DNS labels, which hold
    /// no `_`, so two environments never meet in one id), at most 64 (cut with a hash).
    pub fn custom_role(env: &str, who: &str) -> String {
        let base = format!("byoc_{env}_{who}").replace('-', "_");
        if base.chars().count() <= GCP_CUSTOM_ROLE.max {
            return base;
        }
        let hash = hash8(&base);
        let keep: String = base.chars().take(GCP_CUSTOM_ROLE.max - hash.len() - 1).collect();
        format!("{}_{hash}", keep.trim_end_matches('_'))
    }

    /// The `description` byoc writes on a resource that cannot carry labels: which
    /// environment owns it and which resource of the graph it is.
    pub fn ownership_description(env: &str, id: &str) -> String {
        format!("{OWNERSHIP_PREFIX}environment={env} resource={id}")
    }

    /// The owner `(environment, resource id)` a description names, if byoc wrote it.
    pub fn owner_of(description: &str) -> Option<(&str, &str)> {
        let rest = description.strip_prefix(OWNERSHIP_PREFIX)?;
        let (env, id) = rest.strip_prefix("environment=")?.split_once(" resource=")?;
        Some((env, id))
    }

    const OWNERSHIP_PREFIX: &str = "managed by byoc: ";

    /// A label key made from any text: lower-cased, other characters as `_`, starting with
    /// a letter (`k` put in front otherwise), at most 63 (cut with a hash).
    pub fn label_key(text: &str) -> String {
        let s = label_chars(text);
        let s = if s.starts_with(|c: char| c.is_ascii_lowercase()) { s } else { format!("k{s}") };
        shorten(&s, GCP_LABEL_KEY.max)
    }

    /// A label value made from any text: lower-cased, other characters as `_`, at most 63
    /// (cut with a hash).
    pub fn label_value(text: &str) -> String {
        shorten(&label_chars(text), GCP_LABEL_VALUE.max)
    }

    fn label_chars(text: &str) -> String {
        text.chars().map(|c| if gcp_label(c.to_ascii_lowercase()) { c.to_ascii_lowercase() } else { '_' }).collect()
    }

    /// A default bucket: `byoc-<env>-<project>-<role>`, at most 63. GCS refuses names
    /// containing `google`; where the environment or project brings it in, it is written
    /// `g00gle` and the name carries the hash of the original, so no two inputs meet.
    pub fn bucket(env: &str, project: &str, role: &str) -> String {
        let base = format!("byoc-{env}-{project}-{role}");
        if !base.contains("google") {
            return shorten(&base, GCP_BUCKET.max);
        }
        let shown = base.replace("google", "g00gle");
        let hash = hash8(&base);
        let keep: String = shown.chars().take(GCP_BUCKET.max - hash.len() - 1).collect();
        format!("{}-{hash}", keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
    }
}

/// Azure names.
///
/// Ownership: every Azure resource that takes tags carries [`azure::TAG_ENVIRONMENT`],
/// [`azure::TAG_MANAGED_BY`] and [`azure::TAG_RESOURCE`] (names without `/`, which Azure
/// refuses in tag names; [`ownership_tags`] is the one place they are written). Four kinds
/// take no tags ([`azure::UNTAGGED`]), and are proven byoc's by name and inventory instead:
/// - subnets live inside byoc's VNet (which is tagged) under the spec's names or byoc's
///   fixed [`azure::API_SERVER_SUBNET`] and [`azure::PRIVATE_LINK_SUBNET`]; a subnet of
///   the tagged VNet that the inventory does not list is reported, never adopted;
/// - blob containers live inside byoc's storage accounts (tagged), one each;
/// - federated credentials live inside byoc's user-assigned identities (tagged) and are
///   named [`azure::federated_credential`] from the environment;
/// - role assignments are named by a GUID derived from the subscription, the environment
///   and the graph's resource id ([`azure::role_assignment`]), so observe can read each by
///   its name, and carry [`azure::ownership_description`] in their `description`;
/// - a private endpoint's DNS zone group lives inside byoc's private endpoint (tagged) and
///   is named like it.
pub mod azure {
    use super::*;

    /// Ownership tag names on Azure, where tag names may not contain `/`.
    pub const TAG_ENVIRONMENT: &str = "byoc-environment";
    /// See [`TAG_ENVIRONMENT`].
    pub const TAG_MANAGED_BY: &str = "byoc-managed-by";
    /// See [`TAG_ENVIRONMENT`].
    pub const TAG_RESOURCE: &str = "byoc-resource";

    /// Kinds Azure cannot tag (see the module's doc for how they are proven byoc's), and
    /// what AKS makes from the Services' annotations (found through the Services).
    pub const UNTAGGED: &[Kind] = &[
        Kind::AzureSubnet,
        Kind::AzureBlobContainer,
        Kind::AzureRoleAssignment,
        Kind::AzureFederatedCredential,
        Kind::AzurePrivateLinkService,
        Kind::AzureLoadBalancer,
        Kind::AzurePrivateDnsZoneGroup,
    ];

    /// byoc's subnet delegated to AKS for API-server VNet integration.
    pub const API_SERVER_SUBNET: &str = "aks-apiserver";
    /// byoc's subnet the Private Link services take their NAT addresses from.
    pub const PRIVATE_LINK_SUBNET: &str = "private-link";

    /// A resource of the environment (VNet, NSG, NAT gateway, public IP, AKS cluster,
    /// private endpoint): `byoc-<env>[-<role>]`, at most 63 (the AKS limit, the tightest).
    pub fn resource(env: &str, role: Option<&str>) -> String {
        let base = match role {
            Some(r) => format!("byoc-{env}-{r}"),
            None => format!("byoc-{env}"),
        };
        shorten(&base, AZURE_AKS_CLUSTER.max)
    }

    /// A user-assigned identity: `byoc-<env>-<who>`, at most 128.
    pub fn identity(env: &str, who: &str) -> String {
        shorten(&format!("byoc-{env}-{who}"), AZURE_MANAGED_IDENTITY.max)
    }

    /// A federated identity credential: `byoc-<env>-<who>`, at most 120.
    pub fn federated_credential(env: &str, who: &str) -> String {
        shorten(&format!("byoc-{env}-{who}"), AZURE_FEDERATED_CREDENTIAL.max)
    }

    /// A storage account: `byoc`, the environment's letters and digits (at most 11), the
    /// role's initial and 8 hex digits of the hash of subscription, environment and role;
    /// at most 24 lower-case letters and digits. Account names are global across Azure:
    /// the hash keeps two subscriptions, two environments (`a-b` and `ab` squeeze alike)
    /// and the two roles apart.
    pub fn storage_account(subscription: &str, env: &str, role: &str) -> String {
        let squeezed: String = env.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(11).collect();
        let initial = role.chars().find(char::is_ascii_lowercase).unwrap_or('x');
        format!("byoc{squeezed}{initial}{}", hash8(&format!("{subscription}/{env}/{role}")))
    }

    /// A role assignment's name, a GUID Azure requires: derived from the subscription,
    /// the environment and the graph's resource id, so the same assignment gets the same
    /// name on every run (a PUT of it is idempotent) and two environments never share one.
    pub fn role_assignment(subscription: &str, env: &str, id: &str) -> String {
        let d = sha2::Sha256::digest(format!("{subscription}/{env}/{id}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        // A name-based (version 5 layout) UUID: version and variant bits set.
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    /// The `description` byoc writes on a role assignment, which takes no tags.
    pub fn ownership_description(env: &str, id: &str) -> String {
        super::gcp::ownership_description(env, id)
    }
}

/// One name the graph hands to an API.
#[derive(Debug, Clone)]
pub struct Named {
    /// Resource it belongs to.
    pub resource: String,
    /// Which part (`name`, `tags key`, `target group of port 4566`).
    pub field: String,
    /// The rule it must satisfy.
    pub rule: &'static Rule,
    /// The name.
    pub value: String,
}

/// Every name, tag and label that `graph` hands to an API, with the rule it must satisfy.
/// Names within one rule must also be distinct ([`duplicates`]).
pub fn cloud_names(graph: &Graph, cloud: Cloud) -> Vec<Named> {
    let mut out = Vec::new();
    for r in graph.resources.values() {
        let mut push = |field: String, rule: &'static Rule, value: &str| {
            out.push(Named { resource: r.id.to_string(), field, rule, value: value.to_owned() });
        };
        let name = r.properties.get("name").and_then(Value::as_str);
        let short = r.id.as_str().split_once('/').map_or(r.id.as_str(), |(_, n)| n);
        let rule: Option<&'static Rule> = match r.kind {
            Kind::AwsSecurityGroup => Some(&AWS_SECURITY_GROUP),
            Kind::AwsIamRole => Some(&AWS_IAM_ROLE),
            Kind::AwsEksCluster => Some(&AWS_EKS_CLUSTER),
            Kind::AwsS3Bucket => Some(&AWS_S3_BUCKET),
            Kind::AwsNlb => Some(&AWS_LOAD_BALANCER),
            Kind::GcpNetwork | Kind::GcpSubnetwork | Kind::GcpFirewall | Kind::GcpRouterNat | Kind::GcpServiceAttachment => {
                Some(&GCP_RESOURCE)
            }
            Kind::GcpGkeCluster => Some(&GCP_GKE),
            Kind::GcpBucket => Some(&GCP_BUCKET),
            Kind::AzureResourceGroup => Some(&AZURE_RESOURCE_GROUP),
            Kind::AzureVnet => Some(&AZURE_VNET),
            Kind::AzureAksCluster => Some(&AZURE_AKS_CLUSTER),
            Kind::AzureStorageAccount => Some(&AZURE_STORAGE_ACCOUNT),
            Kind::AzureBlobContainer => Some(&AZURE_CONTAINER),
            Kind::AzureNsg
            | Kind::AzureNatGateway
            | Kind::AzurePublicIp
            | Kind::AzurePrivateEndpoint
            | Kind::AzurePrivateDnsZone
            | Kind::AzurePrivateDnsZoneLink
            | Kind::AzurePrivateDnsZoneGroup => Some(&AZURE_NETWORK),
            Kind::AzureLoadBalancer | Kind::AzurePrivateLinkService => Some(&AZURE_NETWORK),
            Kind::AzureManagedIdentity => Some(&AZURE_MANAGED_IDENTITY),
            Kind::AzureFederatedCredential => Some(&AZURE_FEDERATED_CREDENTIAL),
            Kind::AzureRoleAssignment => Some(&AZURE_ROLE_ASSIGNMENT),
            Kind::K8sNamespace | Kind::K8sServiceAccount | Kind::K8sRisingWave | Kind::K8sStorageClass => Some(&K8S_DNS1123_LABEL),
            Kind::K8sService => Some(&K8S_DNS1035_LABEL),
            _ => None,
        };
        if let (Some(rule), Some(name)) = (rule, name) {
            push("name".to_owned(), rule, name);
        }
        // Resources whose cloud name is their id's name part (as the AWS driver names
        // node groups).
        let by_id: Option<&'static Rule> = match r.kind {
            Kind::AwsEksNodeGroup => Some(&AWS_EKS_NODEGROUP),
            Kind::GcpNodePool => Some(&GCP_GKE),
            Kind::AzureNodePool => Some(&AZURE_AKS_NODE_POOL),
            Kind::AzureSubnet => Some(&AZURE_NETWORK),
            _ => None,
        };
        if let Some(rule) = by_id {
            push("id".to_owned(), rule, short);
        }
        if r.kind == Kind::GcpServiceAccount
            && let Some(id) = r.properties.get("accountId").and_then(Value::as_str)
        {
            push("accountId".to_owned(), &GCP_SERVICE_ACCOUNT, id);
        }
        if r.kind == Kind::GcpCustomRole
            && let Some(id) = r.properties.get("roleId").and_then(Value::as_str)
        {
            push("roleId".to_owned(), &GCP_CUSTOM_ROLE, id);
        }
        if r.kind == Kind::K8sRisingWave
            && let Some(name) = name
        {
            for c in OPERATOR_COMPONENTS {
                push(format!("operator's {c} Service"), &K8S_DNS1035_LABEL, &format!("{name}-{c}"));
            }
        }
        let (keys, values, max): (&'static Rule, &'static Rule, usize) = match cloud {
            Cloud::Aws => (&AWS_TAG_KEY, &AWS_TAG_VALUE, AWS_MAX_TAGS),
            Cloud::Gcp => (&GCP_LABEL_KEY, &GCP_LABEL_VALUE, GCP_MAX_LABELS),
            Cloud::Azure => (&AZURE_TAG_NAME, &AZURE_TAG_VALUE, AZURE_MAX_TAGS),
        };
        if !r.kind.as_str().starts_with("k8s.") {
            for field in ["tags", "labels"] {
                if let Some(Value::Map(m)) = r.properties.get(field) {
                    for (k, v) in m.iter() {
                        push(format!("{field} key"), keys, k);
                        push(format!("{field} {k}"), values, v.as_str().unwrap_or_default());
                    }
                    if m.len() > max {
                        push(format!("{field} ({} > {max})", m.len()), &TOO_MANY, "");
                    }
                }
            }
        }
        let node_labels = r.properties.get("labels").filter(|_| matches!(r.kind, Kind::AwsEksNodeGroup));
        for m in [node_labels, r.properties.get("nodeLabels")].into_iter().flatten() {
            if let Value::Map(m) = m {
                label_values(m, &mut push);
            }
        }
    }
    out
}

fn label_values(m: &Map, push: &mut impl FnMut(String, &'static Rule, &str)) {
    for (k, v) in m.iter() {
        push(format!("node label {k}"), &K8S_LABEL_VALUE, v.as_str().unwrap_or_default());
    }
}

/// A rule nothing satisfies, to report a count over its limit through the same path.
pub const TOO_MANY: Rule =
    Rule { what: "too many tags or labels", ..rule("too many tags or labels", 1, 0, any, "cloud APIs limit tags per resource") };

/// Names that two resources of one kind claim under one rule (the cloud keeps one of
/// them). Tags and labels are values, not names, and may repeat.
pub fn duplicates(names: &[Named]) -> Vec<String> {
    let mut seen: std::collections::BTreeMap<(&str, &str, &str, &str), &str> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for n in names.iter().filter(|n| !n.field.starts_with("tags") && !n.field.starts_with("labels") && !n.field.starts_with("node label")) {
        let kind = n.resource.split_once('/').map_or(n.resource.as_str(), |(k, _)| k);
        // A cluster's service account lives in the cluster's own namespace (whose names
        // are checked here): its name need only be unique there (on GCP every cluster's
        // is `byoc-<env>`).
        let scope = if kind == "k8s.service-account" { n.resource.as_str() } else { "" };
        if let Some(first) = seen.insert((kind, scope, n.rule.what, n.value.as_str()), n.resource.as_str())
            && first != n.resource
        {
            out.push(format!("{} {:?} is used by {first} and {}", n.rule.what, n.value, n.resource));
        }
    }
    out
}

/// Tags on a cloud resource: the user's, then byoc's ownership tags under the names the
/// cloud allows.
pub(crate) fn ownership_tags(env: &Environment, r: &Resource) -> Map {
    use super::{TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_RESOURCE};
    let mut map: Map = env.tags.iter().map(|(k, v)| (crate::resource::Key::Owned(k.clone()), Value::from(v))).collect();
    let (e, m, res) = match env.cloud {
        Cloud::Azure => (azure::TAG_ENVIRONMENT, azure::TAG_MANAGED_BY, azure::TAG_RESOURCE),
        _ => (TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_RESOURCE),
    };
    map.insert(e, Value::from(&env.name));
    map.insert(m, Value::from("byoc"));
    map.insert(res, Value::from(r.id.as_str()));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_keeps_short_names_and_never_ends_on_a_hyphen() {
        assert_eq!(shorten("byoc-prod-agent", 32), "byoc-prod-agent");
        // 23 characters kept would end on the hyphen before "proxy".
        let long = "byoc-abcdefghijklmnopq-proxy-4566";
        let s = shorten(long, 32);
        assert!(s.len() <= 32 && !s.contains("--") && !s.ends_with('-'), "{s}");
        assert_ne!(shorten("byoc-abcdefghijklmnopqrstuvwx-proxy-public", 32), shorten("byoc-abcdefghijklmnopqrstuvwx-proxy-public2", 32));
        AWS_TARGET_GROUP.check(&s).expect("valid");
    }

    #[test]
    fn gcp_names_fit_and_stay_apart_where_plain_cutting_would_not() {
        // 24-character environments overflowed `byoc-<env>-agent` (35 characters).
        let env = "abcdefghijklmnopqrstuvwx";
        let agent = gcp::service_account(env, "agent");
        GCP_SERVICE_ACCOUNT.check(&agent).expect("valid");
        assert_ne!(agent, gcp::service_account(env, "nodes"));
        // Two long cluster names sharing their first 30 characters get two accounts.
        let (a, b) =
            (gcp::service_account("prod", "rw-analytics-eu-west-one-a"), gcp::service_account("prod", "rw-analytics-eu-west-one-b"));
        assert_ne!(a, b);
        assert!(a.len() <= 30 && b.len() <= 30, "{a} {b}");
        // `google` is refused in bucket names: written otherwise, and kept apart by the hash.
        let g = gcp::bucket("google-prod", "acme", "data");
        GCP_BUCKET.check(&g).expect("valid");
        assert_ne!(g, gcp::bucket("g00gle-prod", "acme", "data"));
        GCP_BUCKET.check(&gcp::bucket(env, "abcdefghijklmnopqrstuvwxyz1234", "state")).expect("63 at most");
        // Label keys start with a letter, values fit in 63.
        assert_eq!(gcp::label_key("Team"), "team");
        assert_eq!(gcp::label_key("9lives"), "k9lives");
        GCP_LABEL_VALUE.check(&gcp::label_value(&"V".repeat(100))).expect("cut with a hash");
        assert_eq!(gcp::owner_of(&gcp::ownership_description("prod", "gcp.firewall/internal")), Some(("prod", "gcp.firewall/internal")));
        assert_eq!(gcp::owner_of("someone else's network"), None);
    }

    #[test]
    fn rules_refuse_what_the_apis_refuse() {
        for bad in ["a--b", "-a", "a-", "internal-x", &"a".repeat(33), "a_b"] {
            assert!(AWS_LOAD_BALANCER.check(bad).is_err(), "{bad}");
        }
        assert!(AWS_IAM_ROLE.check(&"r".repeat(65)).is_err());
        assert!(AWS_IAM_ROLE.check("byoc-x+=,.@_-1").is_ok());
        assert!(K8S_DNS1035_LABEL.check("9rw-frontend").is_err());
        assert!(K8S_DNS1123_LABEL.check("9rw").is_ok());
        assert!(AZURE_TAG_NAME.check("byoc.risingwave.dev/environment").is_err());
        assert!(GCP_SERVICE_ACCOUNT.check("byoc-").is_err());
        assert!(AWS_S3_BUCKET.check("xn--bucket").is_err() && AWS_S3_BUCKET.check("a..b").is_err());
        assert!(AZURE_AKS_NODE_POOL.check("rw-compute").is_err() && AZURE_AKS_NODE_POOL.check("compute1").is_ok());
    }
}

#[cfg(test)]
mod property;
