//! `byoc revert --to REV`: roll back by going forward, with one new signed commit.

use std::path::Path;

use super::{EXIT_ERROR, EXIT_OK};
use crate::logging;

/// Runs `byoc revert`; returns the exit code.
pub fn run(repo: &Path, to: &str, message: Option<&str>) -> u8 {
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git").arg("-C").arg(repo).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    let run = || -> Result<String, String> {
        if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            return Err("the work tree has uncommitted changes; commit or stash them first".into());
        }
        let head = git(&["rev-parse", "--verify", "HEAD^{commit}"])?;
        let target = git(&["rev-parse", "--verify", &format!("{to}^{{commit}}")]).map_err(|_| format!("unknown revision {to:?}"))?;
        let tree = git(&["rev-parse", &format!("{target}^{{tree}}")])?;
        if git(&["rev-parse", "HEAD^{tree}"])? == tree {
            return Err(format!("HEAD already has the tree of {to}; nothing to revert"));
        }
        let message = message.map_or_else(|| format!("Revert to {to}\n\nRestores the tree of {target}."), str::to_owned);
        let commit = git(&["commit-tree", "-S", &tree, "-p", &head, "-m", &message])?;
        // Moves the branch only if it is still where we read it.
        git(&["update-ref", "-m", &format!("byoc revert --to {to}"), "HEAD", &commit, &head])?;
        git(&["reset", "-q", "--hard", "HEAD"])?;
        Ok(commit)
    };
    match run() {
        Ok(commit) => {
            println!("made signed commit {commit} restoring the tree of {to}; push it for review");
            EXIT_OK
        }
        Err(e) => {
            logging::error(&e);
            EXIT_ERROR
        }
    }
}
