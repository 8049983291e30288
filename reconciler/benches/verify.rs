//! Verification throughput: generated ranges of 10,000 SSH-signed commits (key from
//! ssh-keygen) and 1,000 OpenPGP-signed ones (key from `gpg --quick-gen-key`), signed in
//! process, and 1,000 in the x509/gitsign format (test CA and test log, each commit with its
//! inclusion proof, checkpoint and signed entry timestamp; see `gitsign.rs`), verified the
//! way `byoc verify` does. Prints commits per second and whether the targets hold (10,000
//! SSH commits under 3 s, 1,000 gitsign commits under 1 s). Run with tests/bench/verify.sh.

#[path = "verify/gitsign.rs"]
mod gitsign;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use byoc::verify::policy::Policy;
use byoc::verify::verify_range;
use git2::{Oid, Repository, Signature, Time};
use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::Password;
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

const SSH_COMMITS: usize = 10_000;
const PGP_COMMITS: usize = 1_000;
const TARGET_SECS: f64 = 3.0;
const GITSIGN_COMMITS: usize = 1_000;
const GITSIGN_TARGET_SECS: f64 = 1.0;

fn main() -> anyhow::Result<()> {
    // `cargo bench --bench verify -- gitsign` runs one part; no argument runs all.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let dir = tempfile::tempdir()?;
    if run("ssh") {
        ssh(dir.path())?;
    }
    if run("openpgp") {
        openpgp(dir.path())?;
    }
    if run("gitsign") {
        let (repo, tip, x509_policy) = gitsign::generate(&dir.path().join("gitsign"), GITSIGN_COMMITS)?;
        let median = measure(&repo, &x509_policy, tip, GITSIGN_COMMITS, "gitsign")?;
        println!(
            "target: {GITSIGN_COMMITS} gitsign commits in under {GITSIGN_TARGET_SECS} s: {}",
            if median < GITSIGN_TARGET_SECS { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

fn ssh(dir: &Path) -> anyhow::Result<()> {
    let key_path = dir.join("key");
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"]).arg(&key_path).output()?;
    anyhow::ensure!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let key = PrivateKey::read_openssh_file(&key_path)?;
    let public = key.public_key().to_openssh()?;
    let (repo, tip) = generate(&dir.join("ssh"), SSH_COMMITS, "SSH", &mut |text| {
        Ok(SshSig::sign(&key, "git", HashAlg::Sha512, text)?.to_pem(LineEnding::LF)?)
    })?;
    let ssh_policy = policy(&format!("sshKeys: [\"{public}\"]"))?;
    let median = measure(&repo, &ssh_policy, tip, SSH_COMMITS, "SSH")?;
    println!("target: {SSH_COMMITS} SSH commits in under {TARGET_SECS} s: {}", if median < TARGET_SECS { "met" } else { "MISSED" });
    Ok(())
}

fn openpgp(dir: &Path) -> anyhow::Result<()> {
    let (secret, public) = gpg_key(&dir.join("gnupg"))?;
    let mut rng = rand08::thread_rng();
    let (repo, tip) = generate(&dir.join("pgp"), PGP_COMMITS, "OpenPGP", &mut |text| {
        let sig = DetachedSignature::sign_binary_data(&mut rng, &secret.primary_key, &Password::empty(), HashAlgorithm::Sha256, text)?;
        Ok(sig.to_armored_string(ArmorOptions::default())?)
    })?;
    let indented: String = public.lines().map(|l| format!("\n          {l}")).collect();
    let pgp_policy = policy(&format!("openpgpKeys:\n        - |{indented}"))?;
    measure(&repo, &pgp_policy, tip, PGP_COMMITS, "OpenPGP")?;
    Ok(())
}

/// A linear history of `n` commits, each changing one of 50 files, signed by `sign`.
fn generate(path: &Path, n: usize, what: &str, sign: &mut dyn FnMut(&[u8]) -> anyhow::Result<String>) -> anyhow::Result<(Repository, Oid)> {
    let repo = Repository::init(path)?;
    let started = Instant::now();
    let mut parent: Option<Oid> = None;
    for i in 0..n {
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
        let sig = sign(text.as_bytes())?;
        parent = Some(repo.commit_signed(text, &sig, None)?);
    }
    let tip = parent.ok_or_else(|| anyhow::anyhow!("no commits"))?;
    println!("generated {n} {what}-signed commits in {:.1} s", started.elapsed().as_secs_f64());
    Ok((repo, tip))
}

/// A policy with one signer, `bench@example.com`, whose keys are `keys` (YAML).
fn policy(keys: &str) -> anyhow::Result<Policy> {
    let text = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: bench}}\nspec:\n  version: 1\n  signers:\n    - name: bench@example.com\n      {keys}\n  rules:\n    - {{paths: [\"**\"], signers: [bench@example.com], threshold: 1}}\n    - {{paths: [\"prod/**\"], signers: [bench@example.com], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
    );
    Policy::parse("bench-policy.yaml", &text, &|_| Err("none".into())).map_err(anyhow::Error::msg)
}

/// Verifies the range three times; prints min, median and max; returns the median.
fn measure(repo: &Repository, policy: &Policy, tip: Oid, n: usize, what: &str) -> anyhow::Result<f64> {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify_range(repo, policy, None, tip, &mut |_| 1_800_000_000)?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(report.ok && report.commits.len() == n, "verification failed: {:?}", report.reasons.first());
        runs.push(secs);
    }
    runs.sort_by(f64::total_cmp);
    let median = runs[1];
    println!(
        "verify {n} {what} commits: min {:.3} s, median {median:.3} s, max {:.3} s; {:.0} commits/s (median)",
        runs[0],
        runs[2],
        n as f64 / median
    );
    Ok(median)
}

/// An ed25519 signing key made by gpg in its own home: (secret key, armored public key).
fn gpg_key(home: &Path) -> anyhow::Result<(SignedSecretKey, String)> {
    std::fs::create_dir_all(home)?;
    let gpg = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("gpg")
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .env("GNUPGHOME", home)
            .output()?;
        anyhow::ensure!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    };
    gpg(&["--quick-gen-key", "Bench <bench@example.com>", "ed25519", "sign", "never"])?;
    let public = gpg(&["--armor", "--export", "bench@example.com"])?;
    let secret = gpg(&["--armor", "--export-secret-keys", "bench@example.com"])?;
    let _ = Command::new("gpgconf").args(["--kill", "all"]).env("GNUPGHOME", home).status();
    let (secret, _) = SignedSecretKey::from_string(&secret)?;
    Ok((secret, public))
}
