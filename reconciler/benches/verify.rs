//! Verification throughput: a generated range of 10,000 SSH-signed commits (signed in
//! process with a key made by ssh-keygen), verified the way `byoc verify` does. Prints
//! commits per second and whether the 3 s target holds. Run with tests/bench/verify.sh.
//!
//! The 1,000 OpenPGP commits of the target are not measured: OpenPGP verification is not
//! implemented yet (such commits are refused as unsupported).

use std::process::Command;
use std::time::Instant;

use byoc::verify::policy::Policy;
use byoc::verify::verify_range;
use git2::{Repository, Signature, Time};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

const COMMITS: usize = 10_000;
const TARGET_SECS: f64 = 3.0;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("key");
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"]).arg(&key_path).output()?;
    anyhow::ensure!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let key = PrivateKey::read_openssh_file(&key_path)?;
    let public = key.public_key().to_openssh()?;

    let repo = Repository::init(dir.path().join("repo"))?;
    let started = Instant::now();
    let mut parent: Option<git2::Oid> = None;
    let mut first = None;
    for i in 0..COMMITS {
        let mut tb = match parent {
            Some(p) => repo.treebuilder(Some(&repo.find_commit(p)?.tree()?))?,
            None => repo.treebuilder(None)?,
        };
        let blob = repo.blob(format!("replicas: {i}\n").as_bytes())?;
        tb.insert(format!("cluster-{:02}.yaml", i % 50), blob, 0o100_644)?;
        let tree = repo.find_tree(tb.write()?)?;
        let who = Signature::new("Bench", "bench@example.com", &Time::new(1_767_225_600 + i as i64, 0))?;
        let parents: Vec<git2::Commit<'_>> = parent.map(|p| repo.find_commit(p)).transpose()?.into_iter().collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let buf = repo.commit_create_buffer(&who, &who, &format!("change {i}"), &tree, &parent_refs)?;
        let text = std::str::from_utf8(&buf)?;
        let sig = SshSig::sign(&key, "git", HashAlg::Sha512, text.as_bytes())?.to_pem(LineEnding::LF)?;
        let id = repo.commit_signed(text, &sig, None)?;
        first.get_or_insert(id);
        parent = Some(id);
    }
    let tip = parent.ok_or_else(|| anyhow::anyhow!("no commits"))?;
    println!("generated {COMMITS} SSH-signed commits in {:.1} s", started.elapsed().as_secs_f64());

    let policy_text = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: bench}}\nspec:\n  version: 1\n  signers:\n    - {{name: bench@example.com, sshKeys: [\"{public}\"]}}\n  rules:\n    - {{paths: [\"**\"], signers: [bench@example.com], threshold: 1}}\n    - {{paths: [\"prod/**\"], signers: [bench@example.com], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
    );
    let policy = Policy::parse("bench-policy.yaml", &policy_text, &|_| Err("none".into())).map_err(anyhow::Error::msg)?;

    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify_range(&repo, &policy, None, tip, &mut |_| 1_800_000_000)?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(report.ok && report.commits.len() == COMMITS, "verification failed: {:?}", report.reasons.first());
        runs.push(secs);
    }
    runs.sort_by(f64::total_cmp);
    let median = runs[1];
    println!(
        "verify {COMMITS} SSH commits: min {:.3} s, median {median:.3} s, max {:.3} s; {:.0} commits/s (median)",
        runs[0],
        runs[2],
        COMMITS as f64 / median
    );
    println!("target: {COMMITS} SSH commits in under {TARGET_SECS} s: {}", if median < TARGET_SECS { "met" } else { "MISSED" });
    println!("not measured: 1,000 OpenPGP commits (OpenPGP verification is not implemented yet)");
    Ok(())
}
