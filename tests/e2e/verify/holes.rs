//! The ways one person (or nobody with a key) could get past a threshold, each attacked
//! with real git and ssh-keygen keys: every one must be refused with a reason that names
//! the path, the missing signers and why each signature did not count, and must leave the
//! high-water mark where it was. The README states the property these follow.

use std::process::Command;

use super::Signed;

impl Signed {
    /// `keytype base64` of `who`'s public key.
    fn key_line(&self, who: &str) -> String {
        self.public(who).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    /// The operator's policy: `version`, alice (two keys) and bob from an allowed_signers
    /// file plus `extra_signers` inline, prod/** at threshold 2, and the forge key's trust.
    fn operator_policy(&self, version: u64, extra_rules: &str, extra_signers: &[(&str, &str)], forge_trusted: bool) {
        self.policy("", "");
        let key = |who: &str| self.public(who).split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let inline: String =
            extra_signers.iter().map(|(name, who)| format!("    - {{name: {name}, sshKeys: [\"{}\"]}}\n", key(who))).collect();
        let signers = if inline.is_empty() { String::new() } else { format!("  signers:\n{inline}") };
        let members: Vec<&str> =
            ["alice@example.com", "bob@example.com"].into_iter().chain(extra_signers.iter().map(|(n, _)| *n)).collect();
        let forge = if forge_trusted { format!("{{trusted: true, sshKeys: [\"{}\"]}}", key("forge")) } else { "{trusted: false}".into() };
        let policy = format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: operator}}\nspec:\n  version: {version}\n  allowedSignersFile: allowed_signers\n{signers}  groups:\n    - {{name: platform, members: [{}]}}\n  rules:\n    - {{paths: [\"**\"], signers: [platform], threshold: 1}}\n    - {{paths: [\"prod/**\"], signers: [platform], threshold: 2}}\n{extra_rules}  forgeMergeKey: {forge}\n",
            members.join(", ")
        );
        std::fs::write(self.dir.path().join("policy.yaml"), policy).expect("write");
    }

    /// Signs a commit of the staged tree with `who`'s key through `git commit -S`, with
    /// extra git arguments (a merge, say).
    fn signed(&mut self, who: &str, args: &[&str]) -> String {
        let key = self.key_path(who);
        let mut all = vec!["-c".to_owned(), format!("user.signingkey={key}")];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.git(&all);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Puts the high-water mark at `commit`, as an earlier reconciler would have left it.
    fn set_mark(&self, commit: &str) {
        let state = serde_json::json!({"lastVerified": commit, "firstSeen": {}});
        std::fs::write(self.dir.path().join("state/source-state.json"), state.to_string()).expect("write");
        std::fs::write(self.dir.path().join("state/source-state.json.version"), "1").expect("write");
    }
}

fn base_with_operator_policy(s: &mut Signed, forge_trusted: bool) -> String {
    s.operator_policy(1, "", &[], forge_trusted);
    s.write("env/a.yaml", "a: 1\n");
    s.write("prod/a.yaml", "replicas: 1\n");
    s.commit(Some("alice"), "base");
    // prod/** needs two people: bob signs a commit on top whose tree holds it.
    let base = s.commit(Some("bob"), "bob approves the base");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    base
}

#[test]
fn hole_1_a_signature_on_discarded_content_is_not_an_approval() {
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, false);
    // Bob signs a draft with other content for the protected file.
    s.git(&["checkout", "-q", "-b", "draft"]);
    s.write("prod/a.yaml", "replicas: 2\n");
    let bobs = s.commit(Some("bob"), "bob's draft");
    s.git(&["checkout", "-q", "main"]);
    s.write("prod/a.yaml", "replicas: 9\n");
    s.commit(Some("alice"), "alice's change");
    // Alice merges the draft and keeps only her own content.
    s.signed("alice", &["merge", "-q", "-s", "ours", "--no-ff", "-S", "-m", "merge draft (ours)", "draft"]);
    s.assert_refused("prod/a.yaml needs 2 distinct signer(s) under rules[1] and has 1: [\"alice@example.com\"]", &base);
    let run = s.verify(&[]);
    assert!(
        run.stdout.contains(&format!(
            "not counted: bob@example.com (commit {}: its commit's tree holds other content at this path than the range's final one)",
            &bobs[..12]
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn the_two_person_flows_still_verify() {
    // Bob signs the branch commit that holds the final content; alice signs the merge.
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, false);
    s.git(&["checkout", "-q", "-b", "feature"]);
    s.write("prod/a.yaml", "replicas: 3\n");
    s.commit(Some("bob"), "bob's change");
    s.git(&["checkout", "-q", "main"]);
    s.signed("alice", &["merge", "-q", "--no-ff", "-S", "-m", "merge feature", "feature"]);
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Both sign commits whose trees hold the final content: alice changes it, bob signs
    // the next commit on top.
    let mark = s.last_verified().expect("mark");
    assert_ne!(mark, base);
    s.write("prod/a.yaml", "replicas: 4\n");
    s.commit(Some("alice"), "alice's change");
    s.write("env/b.yaml", "b: 1\n");
    let tip = s.commit(Some("bob"), "bob on top");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));

    // Bob's commit changed the content again: only his tree holds the final one.
    s.write("prod/a.yaml", "replicas: 5\n");
    s.commit(Some("alice"), "alice again");
    s.write("prod/a.yaml", "replicas: 6\n");
    s.commit(Some("bob"), "bob changes it after her");
    s.assert_refused("prod/a.yaml needs 2 distinct signer(s) under rules[1] and has 1: [\"bob@example.com\"]", &tip);
}

#[test]
fn hole_2_a_policy_added_inside_a_range_judges_nothing_in_it() {
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, false);
    // Alice adds a repository policy naming mallory's key as "bob".
    s.repo_policy(5, &[("alice@example.com", "alice"), ("bob@example.com", "mallory")]);
    s.commit(Some("alice"), "policy naming mallory as bob");
    s.write("prod/a.yaml", "replicas: 7\n");
    let forged = s.commit(Some("mallory"), "prod change as fake bob");
    s.git(&["rm", "-q", ".byoc/policy.yaml"]);
    s.commit(Some("alice"), "remove the policy again");
    s.assert_refused(&format!("commit {forged} (\"prod change as fake bob\"): signed with SSH key"), &base);
    let run = s.verify(&[]);
    assert!(run.stdout.contains("policy operator v1 (the operator's file)"), "{}", run.stdout);
    assert!(!run.stdout.contains("ssh     bob@example.com"), "the fake bob is never named:\n{}", run.stdout);
    assert!(run.stdout.contains("prod/a.yaml needs 2 distinct signer(s) under rules[1] and has 1"), "{}", run.stdout);
}

#[test]
fn the_repository_policy_in_force_cannot_be_deleted_by_a_commit() {
    let mut s = Signed::new();
    base_with_operator_policy(&mut s, false);
    s.repo_policy(2, &[("alice@example.com", "alice"), ("bob@example.com", "bob")]);
    s.commit(Some("alice"), "repository policy v2");
    assert_eq!(s.verify(&[]).code, 0);
    let v2 = s.last_verified().expect("mark");
    let run = s.verify(&[]);
    assert!(run.stdout.contains(&format!("policy in-repo v2 (.byoc/policy.yaml at {})", &v2[..12])), "{}", run.stdout);
    s.git(&["rm", "-q", ".byoc/policy.yaml"]);
    s.commit(Some("alice"), "drop the repository policy");
    s.assert_refused("the range deletes .byoc/policy.yaml, the policy in force (v2)", &v2);
}

#[test]
fn hole_3_forge_commits_never_change_the_policy_nor_count() {
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, true);
    s.repo_policy(9, &[("alice@example.com", "mallory"), ("bob@example.com", "mallory")]);
    let forged = s.commit(Some("forge"), "forge replaces the policy");
    s.assert_refused(
        &format!("commit {forged} (\"forge replaces the policy\"): signed by the forge's web-UI key, which may never change .byoc/"),
        &base,
    );
    // A forge-signed merge of alice's prod change: the forge counts for nothing.
    s.git(&["reset", "-q", "--hard", &base]);
    s.git(&["checkout", "-q", "-b", "feature"]);
    s.write("prod/a.yaml", "replicas: 3\n");
    s.commit(Some("alice"), "alice's change");
    s.git(&["checkout", "-q", "main"]);
    s.signed("forge", &["merge", "-q", "--no-ff", "-S", "-m", "merged in the web UI", "feature"]);
    s.assert_refused("prod/a.yaml needs 2 distinct signer(s) under rules[1] and has 1", &base);
    let run = s.verify(&[]);
    assert!(run.stdout.contains("forge-web-ui (commit"), "{}", run.stdout);
    assert!(run.stdout.contains("the forge's web-UI key never counts toward a threshold"), "{}", run.stdout);
}

#[test]
fn hole_4_files_the_repository_policy_loads_are_policy() {
    let mut s = Signed::new();
    base_with_operator_policy(&mut s, false);
    let (alice, bob, mallory) = (s.key_line("alice"), s.key_line("bob"), s.key_line("mallory"));
    s.write(".byoc/allowed_signers", &format!("alice@example.com {alice}\nbob@example.com {bob}\n"));
    s.write(
        ".byoc/policy.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {name: in-repo}\nspec:\n  version: 2\n  allowedSignersFile: allowed_signers\n  rules:\n    - {paths: [\"**\"], signers: [alice@example.com, bob@example.com], threshold: 1}\n  forgeMergeKey: {trusted: false}\n",
    );
    s.commit(Some("alice"), "repository policy v2 with its signers file");
    assert_eq!(s.verify(&[]).code, 0);
    let v2 = s.last_verified().expect("mark");
    // Only the signers file changes: mallory is added with no version bump.
    s.write(".byoc/allowed_signers", &format!("alice@example.com {alice}\nbob@example.com {bob}\nmallory@example.com {mallory}\n"));
    s.commit(Some("alice"), "add mallory");
    s.assert_refused("every change to .byoc/ must raise the version", &v2);
    // A policy may not load files from outside .byoc/.
    s.git(&["reset", "-q", "--hard", &v2]);
    s.write("env/signers", &format!("mallory@example.com {mallory}\n"));
    let text = std::fs::read_to_string(s.repo().join(".byoc/policy.yaml")).expect("read");
    s.write(".byoc/policy.yaml", &text.replace("version: 2", "version: 3").replace("allowed_signers", "../env/signers"));
    s.commit(Some("alice"), "load signers from outside");
    s.assert_refused("\"../env/signers\" must be a path inside .byoc/", &v2);
}

#[test]
fn hole_5_a_repository_policy_that_does_not_load_is_a_refusal_not_a_fallback() {
    let mut s = Signed::new();
    // The operator's file still trusts mallory; the repository's policy had dropped her.
    s.operator_policy(1, "", &[("mallory@example.com", "mallory")], false);
    // Written by an older reconciler that read repeated options; this one refuses them.
    let alice = s.key_line("alice");
    s.write(".byoc/allowed_signers", &format!("alice@example.com namespaces=\"git\",namespaces=\"git\" {alice}\n"));
    s.write(
        ".byoc/policy.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {name: in-repo}\nspec:\n  version: 2\n  allowedSignersFile: allowed_signers\n  rules:\n    - {paths: [\"**\"], signers: [alice@example.com], threshold: 1}\n  forgeMergeKey: {trusted: false}\n",
    );
    let old = s.commit(Some("alice"), "policy v2 without mallory");
    s.set_mark(&old);
    s.write("env/a.yaml", "a: mallory\n");
    s.commit(Some("mallory"), "mallory is back?");
    s.assert_refused("the repository's .byoc/policy.yaml at the last verified commit", &old);
    let run = s.verify(&[]);
    assert!(run.stdout.contains("does not load: .byoc/allowed_signers:1: option namespaces given twice"), "{}", run.stdout);
}

#[test]
fn hole_6_the_operator_wins_ties_and_versions_are_bounded() {
    let mut s = Signed::new();
    s.operator_policy(3, "", &[], false);
    // A repository policy at the operator's version that drops bob: the operator's file,
    // which keeps bob, is in force.
    s.repo_policy(3, &[("alice@example.com", "alice")]);
    let tie = s.commit(Some("alice"), "repository policy at the operator's version");
    s.set_mark(&tie);
    s.write("env/b.yaml", "b: 1\n");
    s.commit(Some("bob"), "bob under the operator's file");
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("policy operator v3 (the operator's file)"), "{}", run.stdout);

    let mark = s.last_verified().expect("mark");
    s.repo_policy(1, &[("alice@example.com", "alice")]);
    let text = std::fs::read_to_string(s.repo().join(".byoc/policy.yaml")).expect("read");
    s.write(".byoc/policy.yaml", &text.replace("version: 1", "version: 18446744073709551615"));
    s.commit(Some("alice"), "a version nobody can pass");
    s.assert_refused(".byoc/policy.yaml at the tip does not load: .byoc/policy.yaml:5: spec.version 18446744073709551615 is past the largest version accepted", &mark);
}

#[test]
fn hole_7_a_single_star_stays_in_its_directory() {
    let mut s = Signed::new();
    s.operator_policy(1, "    - {paths: [\"prod/README*\"], signers: [platform], threshold: 1}\n", &[], false);
    s.write("prod/README.md", "docs\n");
    let readme = s.commit(Some("alice"), "a README needs one signer");
    assert_eq!(s.verify(&[]).code, 0);
    s.write("prod/README-notes/cluster.yaml", "replicas: 99\n");
    s.commit(Some("alice"), "a cluster under a README-like directory");
    s.assert_refused("prod/README-notes/cluster.yaml needs 2 distinct signer(s) under rules[1] and has 1", &readme);
}

#[test]
fn hole_8_grafts_are_refused_and_a_shallow_boundary_cannot_be_crossed() {
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, false);
    s.write("env/b.yaml", "b: 1\n");
    let unsigned = s.commit(None, "unsigned");
    s.write("env/c.yaml", "c: 1\n");
    let tip = s.commit(Some("alice"), "signed on top");
    std::fs::write(s.repo().join(".git/info/grafts"), format!("{tip} {base}\n")).expect("write");
    s.assert_refused("the repository has grafts", &base);
    std::fs::remove_file(s.repo().join(".git/info/grafts")).expect("rm");
    s.assert_refused(&format!("commit {unsigned} (\"unsigned\"): not signed"), &base);

    // A CI clone of depth 2: a range that starts at its boundary verifies; one that needs
    // the boundary's parents does not.
    s.git(&["reset", "-q", "--hard", &base]);
    for i in 0..3 {
        s.write("env/b.yaml", &format!("b: {i}\n"));
        s.commit(Some("bob"), &format!("bob {i}"));
    }
    let shallow = s.dir.path().join("shallow");
    let out = Command::new("git")
        .args(["clone", "-q", "--depth", "2", "--no-local"])
        .arg(format!("file://{}", s.repo().display()))
        .arg(&shallow)
        .output()
        .expect("git clone");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let boundary = std::fs::read_to_string(shallow.join(".git/shallow")).expect("shallow file").trim().to_owned();
    let (repo, policy) = (shallow.display().to_string(), s.dir.path().join("policy.yaml").display().to_string());
    let run = crate::support::byoc(s.dir.path(), &["verify", "--repo", &repo, "--policy", &policy]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("the repository is shallow here"), "{}", run.stdout);
    let run = crate::support::byoc(s.dir.path(), &["verify", "--repo", &repo, "--policy", &policy, "--from", &boundary]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn hole_9_a_signature_block_moved_into_the_message_is_no_signature() {
    let mut s = Signed::new();
    let base = base_with_operator_policy(&mut s, false);
    s.write("env/b.yaml", "b: 1\n");
    let signed = s.commit(Some("alice"), "signed");
    let raw = s.git(&["cat-file", "commit", &signed]);
    let (header, message) = raw.split_once("\n\n").expect("header");
    let sig_start = header.find("\ngpgsig ").expect("gpgsig");
    let (kept, sig) = header.split_at(sig_start);
    let moved = format!("{kept}\n\n{message}\n{}\n", sig.trim_start_matches('\n'));
    let path = s.dir.path().join("moved");
    std::fs::write(&path, moved).expect("write");
    let id = s.git(&["hash-object", "-t", "commit", "-w", &path.display().to_string()]);
    s.git(&["update-ref", "refs/heads/main", &id]);
    let check = Command::new("git").args(["verify-commit", &id]).current_dir(s.repo()).output().expect("git");
    assert!(!check.status.success(), "git itself calls it unsigned");
    s.assert_refused(&format!("{} none    -                        -          REFUSED: not signed", &id[..12]), &base);
}

#[test]
fn the_pull_request_plan_shows_who_counts_for_each_protected_path_and_why_not() {
    let mut s = Signed::new();
    s.operator_policy(1, "", &[], false);
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("prod/aws"));
    s.commit(Some("alice"), "base");
    let base = s.commit(Some("bob"), "bob approves the base");
    let file = s.repo().join("prod/aws/clusters/analytics.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    // Bob signs a draft with 6 replicas; alice's pull request sets 9 and merges the draft
    // with `-s ours`, keeping her content.
    s.git(&["checkout", "-q", "-b", "draft"]);
    std::fs::write(&file, text.replace("compute: {replicas: 3,", "compute: {replicas: 6,")).expect("write");
    let bobs = s.commit(Some("bob"), "bob's draft");
    s.git(&["checkout", "-q", "-b", "pr", &base]);
    std::fs::write(&file, text.replace("compute: {replicas: 3,", "compute: {replicas: 9,")).expect("write");
    s.commit(Some("alice"), "alice's change");
    let head = s.signed("alice", &["merge", "-q", "-s", "ours", "--no-ff", "-S", "-m", "merge draft (ours)", "draft"]);
    let (repo, policy) = (s.repo().display().to_string(), s.dir.path().join("policy.yaml").display().to_string());
    let plan = |output: &str| {
        crate::support::byoc(
            s.dir.path(),
            &["plan", "--repo", &repo, "--base", &base, "--head", &head, "--env", "prod/aws", "--output", output, "--policy", &policy],
        )
    };
    let run = plan("markdown");
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "| `prod/aws/clusters/analytics.yaml` | rules[1] | 2 | alice@example.com | bob@example.com (`{}`: its commit's tree holds other content at this path than the range's final one) |",
            &bobs[..12]
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Policy `operator v1` (the operator's file)"), "{}", run.stdout);
    let run = plan("text");
    assert!(
        run.stdout.contains("prod/aws/clusters/analytics.yaml needs 2 distinct signer(s) under rules[1] and has 1: [\"alice@example.com\"]; not counted: bob@example.com"),
        "{}",
        run.stdout
    );
}
