//! The signing policy (`kind: SigningPolicy`), loaded from a file outside the repository:
//! who may sign (SSH keys, inline or from a git `allowed_signers` file), groups, and rules
//! from path globs to the signers and how many distinct ones a change needs.
//!
//! ```yaml
//! apiVersion: byoc.risingwave.dev/v1alpha1
//! kind: SigningPolicy
//! metadata: {name: prod}
//! spec:
//!   version: 3
//!   signers:
//!     - {name: alice@example.com, sshKeys: ["ssh-ed25519 AAAA..."]}
//!     - name: carol@example.com
//!       openpgpKeys:
//!         - |
//!           -----BEGIN PGP PUBLIC KEY BLOCK-----
//!           ...
//!     - name: dana@example.com
//!       sigstore: [{issuer: "https://accounts.google.com", subject: dana@example.com}]
//!   allowedSignersFile: allowed_signers      # relative to this file
//!   trustedRoot: sigstore-public-good        # or a trusted_root.json relative to this file
//!   groups:
//!     - {name: platform, members: [alice@example.com, bob@example.com]}
//!   rules:
//!     - {paths: ["**"], signers: [platform], threshold: 1}
//!     - {paths: ["environments/prod/**"], signers: [platform], threshold: 2}
//!   forgeMergeKey: {trusted: false}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use super::gitsign::{Sigstore, SigstoreSigner, Subject};
use super::openpgp::{PgpError, PgpSigner};
use super::ssh::{SshSigner, parse_allowed_signers};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    version: u64,
    #[serde(default)]
    signers: Vec<SignerSpec>,
    allowed_signers_file: Option<String>,
    /// sigstore's trust material for gitsign signatures: a `trusted_root.json` path
    /// relative to this file, or `sigstore-public-good` for the public instance's root as
    /// shipped in sigstore-trust-root.
    trusted_root: Option<String>,
    /// Whether gitsign certificates need a valid SCT (default true; a private Fulcio
    /// without a CT log sets false).
    require_sct: Option<bool>,
    #[serde(default)]
    groups: Vec<GroupSpec>,
    rules: Vec<RuleSpec>,
    forge_merge_key: ForgeSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignerSpec {
    name: String,
    #[serde(default)]
    ssh_keys: Vec<String>,
    /// ASCII-armored OpenPGP public keys (`gpg --export --armor`).
    #[serde(default)]
    openpgp_keys: Vec<String>,
    /// gitsign identities: OIDC issuer plus exact subject or a subject pattern.
    #[serde(default)]
    sigstore: Vec<SigstoreSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SigstoreSpec {
    issuer: String,
    subject: Option<String>,
    subject_pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    name: String,
    members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    paths: Vec<String>,
    signers: Vec<String>,
    threshold: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ForgeSpec {
    trusted: bool,
    #[serde(default)]
    ssh_keys: Vec<String>,
}

/// A rule: paths it governs, who may sign them, how many distinct signers a change needs.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The glob patterns as written.
    pub patterns: Vec<String>,
    matchers: Vec<(GlobMatcher, (usize, usize))>,
    /// Signer identities allowed (groups expanded).
    pub signers: BTreeSet<String>,
    /// Distinct signers needed.
    pub threshold: u32,
    /// Its position in the policy, for messages (`rules[1]`).
    pub name: String,
}

impl Rule {
    /// How specifically the rule matches `path`: the literal prefix length of the best
    /// matching pattern, then its length; `None` when it does not match.
    fn specificity(&self, path: &str) -> Option<(usize, usize)> {
        self.matchers.iter().filter(|(m, _)| m.is_match(path)).map(|(_, s)| *s).max()
    }
}

/// A loaded, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name from metadata.
    pub name: String,
    /// Must increase whenever the policy changes.
    pub version: u64,
    /// Every accepted SSH key; its first principal is the signer's identity.
    pub ssh: Vec<SshSigner>,
    /// Every accepted OpenPGP certificate.
    pub pgp: Vec<PgpSigner>,
    /// gitsign identities and the trusted root they are checked against.
    pub sigstore: Option<Arc<Sigstore>>,
    /// Rules, in file order.
    pub rules: Vec<Rule>,
    /// Whether commits signed with the forge's web-UI key are accepted.
    pub trust_forge_merge_key: bool,
    /// The forge's keys.
    pub forge_ssh: Vec<SshSigner>,
}

/// `trustedRoot` value naming the public sigstore instance's root shipped in sigstore-trust-root.
pub const PUBLIC_GOOD: &str = "sigstore-public-good";

/// The largest `spec.version` accepted. A bound keeps a version from being set so high
/// that no later policy (the operator's override included) could ever be newer.
pub const MAX_VERSION: u64 = 1_000_000;

/// The identity under which the forge's web-UI key signs.
pub const FORGE: &str = "forge-web-ui";

/// Why a signing policy cannot be used. Each names the file (and line or field) to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy, or a file it names, cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// The policy reads but is not a valid policy.
    #[error("{0}")]
    Invalid(String),
    /// An OpenPGP certificate it lists is refused.
    #[error(transparent)]
    Key(#[from] PgpError),
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PolicyError::Unreadable(format!("{shown}: {e}")))?;
        let text = rwproxy::yaml::decode(&shown, &bytes).map_err(|d| PolicyError::Invalid(d.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Policy::parse(&shown, text, &|name| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        })
    }

    /// Parses a policy from text; `read` fetches the allowed_signers file it names.
    pub fn parse(file: &str, text: &str, read: &dyn Fn(&str) -> Result<String, String>) -> Result<Policy, PolicyError> {
        use PolicyError::Invalid;
        let read = |name: &str| read(name).map_err(PolicyError::Unreadable);
        let doc: Document = rwproxy::yaml::parse(file, text).map_err(|d| Invalid(d.to_string()))?;
        if doc.api_version != "byoc.risingwave.dev/v1alpha1" || doc.kind != "SigningPolicy" {
            return Err(Invalid(format!("{file}: expected apiVersion byoc.risingwave.dev/v1alpha1, kind SigningPolicy")));
        }
        let spec = doc.spec;
        if spec.version > MAX_VERSION {
            let line = text.lines().position(|l| l.trim_start().starts_with("version:")).map_or(String::new(), |i| format!(":{}", i + 1));
            return Err(Invalid(format!(
                "{file}{line}: spec.version {} is past the largest version accepted, {MAX_VERSION}; versions count policy changes, one at a time",
                spec.version
            )));
        }
        let mut ssh = Vec::new();
        let mut pgp = Vec::new();
        let mut sigstore = Vec::new();
        for (i, s) in spec.signers.iter().enumerate() {
            for (j, id) in s.sigstore.iter().enumerate() {
                let origin = format!("{file}: spec.signers[{i}].sigstore[{j}]");
                let subject = match (&id.subject, &id.subject_pattern) {
                    (Some(e), None) => Subject::Exact(e.clone()),
                    (None, Some(p)) => Subject::pattern(p).map_err(|e| Invalid(format!("{origin}.subjectPattern: {e}")))?,
                    _ => return Err(Invalid(format!("{origin}: give exactly one of subject and subjectPattern"))),
                };
                sigstore.push(SigstoreSigner { name: s.name.clone(), issuer: id.issuer.clone(), subject, origin });
            }
            if s.ssh_keys.is_empty() && s.openpgp_keys.is_empty() && s.sigstore.is_empty() {
                return Err(Invalid(format!("{file}: spec.signers[{i}] ({}) has no keys", s.name)));
            }
            for (j, k) in s.openpgp_keys.iter().enumerate() {
                pgp.push(PgpSigner::parse(&s.name, k, format!("{file}: spec.signers[{i}].openpgpKeys[{j}]"))?);
            }
            for (j, k) in s.ssh_keys.iter().enumerate() {
                let origin = format!("{file}: spec.signers[{i}].sshKeys[{j}]");
                let key =
                    ssh_key::PublicKey::from_openssh(k.trim()).map_err(|e| Invalid(format!("{origin}: not an OpenSSH public key: {e}")))?;
                ssh.push(SshSigner::plain(&s.name, key, origin));
            }
        }
        if let Some(name) = &spec.allowed_signers_file {
            // Named relative to the policy, as the user wrote it down.
            let shown = Path::new(file).parent().map_or_else(|| name.clone(), |dir| dir.join(name).display().to_string());
            ssh.extend(parse_allowed_signers(&shown, &read(name)?).map_err(Invalid)?);
        }
        let known: BTreeSet<String> = ssh
            .iter()
            .flat_map(|s| s.principals.iter().cloned())
            .chain(pgp.iter().map(|p| p.name.clone()))
            .chain(sigstore.iter().map(|s| s.name.clone()))
            .collect();
        let sigstore = match (&spec.trusted_root, sigstore.is_empty()) {
            (None, true) => None,
            (None, false) => return Err(Invalid(format!("{file}: signers have sigstore identities but spec.trustedRoot is not set"))),
            (Some(root), _) => {
                let json = if root == PUBLIC_GOOD {
                    sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT.to_owned()
                } else {
                    read(root)?
                };
                let origin = format!("{file}: spec.trustedRoot ({root})");
                Some(Arc::new(
                    Sigstore::new(&origin, &json, sigstore, spec.require_sct.unwrap_or(true)).map_err(|e| Invalid(e.to_string()))?,
                ))
            }
        };
        let mut groups: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for g in &spec.groups {
            if known.contains(&g.name) {
                return Err(Invalid(format!("{file}: group {:?} has the name of a signer", g.name)));
            }
            for m in &g.members {
                if !known.contains(m) {
                    return Err(Invalid(format!("{file}: group {:?} lists {m:?}, who is not a signer", g.name)));
                }
            }
            groups.insert(&g.name, g.members.iter().cloned().collect());
        }
        if spec.rules.is_empty() {
            return Err(Invalid(format!("{file}: no rules: every path would be refused")));
        }
        let mut rules = Vec::new();
        for (i, r) in spec.rules.iter().enumerate() {
            let name = format!("rules[{i}]");
            let mut signers = BTreeSet::new();
            for s in &r.signers {
                match groups.get(s.as_str()) {
                    Some(members) => signers.extend(members.iter().cloned()),
                    None if known.contains(s) => {
                        signers.insert(s.clone());
                    }
                    None => return Err(Invalid(format!("{file}: spec.{name}.signers names {s:?}, which is neither a signer nor a group"))),
                }
            }
            if r.threshold == 0 || r.threshold as usize > signers.len() {
                return Err(Invalid(format!(
                    "{file}: spec.{name}.threshold is {} but the rule has {} distinct signer(s); it must be 1 to {}",
                    r.threshold,
                    signers.len(),
                    signers.len()
                )));
            }
            let mut matchers = Vec::new();
            for p in &r.paths {
                // `*` stops at `/` (as in a shell); only `**` crosses directories.
                let glob =
                    GlobBuilder::new(p).literal_separator(true).build().map_err(|e| Invalid(format!("{file}: spec.{name}.paths: {e}")))?;
                let literal = p.find(['*', '?', '[', '{']).unwrap_or(p.len());
                matchers.push((glob.compile_matcher(), (literal, p.len())));
            }
            rules.push(Rule { patterns: r.paths.clone(), matchers, signers, threshold: r.threshold, name });
        }
        let mut forge_ssh = Vec::new();
        for (j, k) in spec.forge_merge_key.ssh_keys.iter().enumerate() {
            let origin = format!("{file}: spec.forgeMergeKey.sshKeys[{j}]");
            let key =
                ssh_key::PublicKey::from_openssh(k.trim()).map_err(|e| Invalid(format!("{origin}: not an OpenSSH public key: {e}")))?;
            forge_ssh.push(SshSigner::plain(FORGE, key, origin));
        }
        Ok(Policy {
            name: doc.metadata.name,
            version: spec.version,
            ssh,
            pgp,
            sigstore,
            rules,
            trust_forge_merge_key: spec.forge_merge_key.trusted,
            forge_ssh,
        })
    }

    /// The rule governing `path`: the most specific matching one; `None` means no rule
    /// covers it, and a change to it is refused.
    pub fn rule_for(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().filter_map(|r| r.specificity(path).map(|s| (s, r))).max_by_key(|(s, _)| *s).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHoZ7F6m5yFQ3mCv4Pn1rG4VYxqkJwTqLqvY4ZgN8m8n";

    fn policy(rules: &str) -> Result<Policy, PolicyError> {
        let text = format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: t}}\nspec:\n  version: 1\n  signers:\n    - {{name: alice, sshKeys: [\"{KEY}\"]}}\n    - {{name: bob, sshKeys: [\"{KEY}\"]}}\n  groups:\n    - {{name: platform, members: [alice, bob]}}\n  rules:\n{rules}\n  forgeMergeKey: {{trusted: false}}\n"
        );
        Policy::parse("policy.yaml", &text, &|_| Err("no files".into()))
    }

    #[test]
    fn the_most_specific_rule_wins_and_uncovered_paths_have_none() {
        let p = policy(
            "    - {paths: [\"environments/**\"], signers: [platform], threshold: 1}\n    - {paths: [\"environments/prod/**\"], signers: [platform], threshold: 2}",
        )
        .expect("valid");
        assert_eq!(p.rule_for("environments/prod/clusters/a.yaml").map(|r| r.threshold), Some(2));
        assert_eq!(p.rule_for("environments/dev/a.yaml").map(|r| r.threshold), Some(1));
        assert!(p.rule_for("README.md").is_none());
    }

    #[test]
    fn a_single_star_does_not_cross_directories() {
        let p = policy(
            "    - {paths: [\"environments/prod/**\"], signers: [platform], threshold: 2}\n    - {paths: [\"environments/prod/README*\"], signers: [platform], threshold: 1}",
        )
        .expect("valid");
        assert_eq!(p.rule_for("environments/prod/README.md").map(|r| r.threshold), Some(1));
        assert_eq!(p.rule_for("environments/prod/README-notes/cluster.yaml").map(|r| r.threshold), Some(2));
        assert_eq!(p.rule_for("environments/prod/a/b/c.yaml").map(|r| r.threshold), Some(2));
    }

    #[test]
    fn a_version_past_the_bound_is_refused_with_its_line() {
        let text = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {name: t}\nspec:\n  version: 18446744073709551615\n  signers: []\n  rules: []\n  forgeMergeKey: {trusted: false}\n";
        let e = Policy::parse("policy.yaml", text, &|_| Err("none".into())).expect_err("too big").to_string();
        assert!(e.starts_with("policy.yaml:5: spec.version 18446744073709551615 is past the largest version accepted, 1000000"), "{e}");
    }

    #[test]
    fn the_shipped_example_policy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/signing-policy.yaml");
        let p = Policy::load(&path).expect("policies/signing-policy.yaml loads");
        assert_eq!((p.version, p.ssh.len(), p.trust_forge_merge_key), (1, 2, false));
        assert_eq!(p.sigstore.as_ref().map(|s| s.signers.len()), Some(1));
        assert_eq!(p.rule_for("environments/prod/aws/environment.yaml").map(|r| r.threshold), Some(2));
    }

    #[test]
    fn mistakes_are_named() {
        for (rules, want) in [
            ("    - {paths: [\"**\"], signers: [carol], threshold: 1}", "neither a signer nor a group"),
            ("    - {paths: [\"**\"], signers: [alice], threshold: 2}", "threshold is 2 but the rule has 1"),
            ("    - {paths: [\"a/[\"], signers: [alice], threshold: 1}", "spec.rules[0].paths"),
        ] {
            let e = policy(rules).expect_err(rules).to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn signer_key_mistakes_are_named() {
        let doc = |signer: &str, extra: &str| {
            format!(
                "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: t}}\nspec:\n  version: 1\n{extra}  signers:\n    - {signer}\n  rules:\n    - {{paths: [\"**\"], signers: [dana], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
            )
        };
        for (signer, extra, want) in [
            ("{name: dana, openpgpKeys: [\"not a key\"]}", "", "spec.signers[0].openpgpKeys[0]: not an OpenPGP public key"),
            ("{name: dana, sigstore: [{issuer: i, subject: s}]}", "", "spec.trustedRoot is not set"),
            (
                "{name: dana, sigstore: [{issuer: i, subject: s, subjectPattern: \"*\"}]}",
                "  trustedRoot: sigstore-public-good\n",
                "exactly one of subject and subjectPattern",
            ),
            ("{name: dana, sigstore: [{issuer: i, subject: s}]}", "  trustedRoot: root.json\n", "root.json: missing"),
            ("{name: dana}", "", "spec.signers[0] (dana) has no keys"),
        ] {
            let e =
                Policy::parse("policy.yaml", &doc(signer, extra), &|name| Err(format!("{name}: missing"))).expect_err(signer).to_string();
            assert!(e.contains(want), "{signer}: {e}");
        }
        let ok = Policy::parse(
            "policy.yaml",
            &doc("{name: dana, sigstore: [{issuer: i, subjectPattern: \"*@example.com\"}]}", "  trustedRoot: sigstore-public-good\n"),
            &|_| Err("no files".into()),
        )
        .expect("loads");
        assert_eq!(ok.rule_for("a").map(|r| r.signers.len()), Some(1));
    }
}
