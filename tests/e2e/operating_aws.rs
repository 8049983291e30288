//! `byoc apply` against moto, for what a new user meets first: trying it with
//! `--skip-preflight` where preflight cannot be answered, and a run that fails part-way
//! giving its lease back.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

use crate::aws::{Account, approved_apply_args, assert_exactly_one_of_each, byoc_command, example_repo};
use crate::state_s3::MOTO_ENV;
use crate::support::byoc_env;

#[test]
fn skip_preflight_lets_a_first_apply_run_on_plain_moto_and_says_what_it_skipped() {
    // moto has no EKS add-ons (the EBS CSI driver is one), so plain moto cannot take a
    // whole apply any more: the front answers them (and, unasked, fixes GetBucketVersioning).
    let account = Account::new();
    let moto = account.endpoint().to_owned();
    let repo = example_repo();
    let run = byoc_env(
        repo.path(),
        &[
            "apply",
            "--repo",
            ".",
            "--env",
            "examples/aws",
            "--endpoint-url",
            &moto,
            "--state-dir",
            "state",
            "--poll-interval",
            "0.1",
            "--auto-approve",
            "--skip-preflight",
        ],
        &MOTO_ENV,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("applied 30 action(s) to prod-use1"), "{}", run.stdout);
    let warning = run.stderr.lines().skip_while(|l| !l.starts_with("warning: --skip-preflight")).collect::<Vec<_>>();
    assert!(!warning.is_empty(), "the skip is said loudly:\n{}", run.stderr);
    let skipped: Vec<&&str> = warning.iter().filter(|l| l.starts_with("  - skipped: ")).collect();
    assert_eq!(skipped.len(), 5, "{warning:?}");
    for check in
        ["spec.account", "AWSServiceRoleForAutoScaling", "eks/L-6D54EA21", "iam:SimulatePrincipalPolicy", "DescribeClusterVersions"]
    {
        assert!(skipped.iter().any(|l| l.contains(check)), "{check} named as skipped: {skipped:?}");
    }
    assert!(!run.stderr.contains("preflight found"), "no preflight was run:\n{}", run.stderr);

    // The user's next steps on the same account: a second apply and a destroy.
    let again = |verb: &str, extra: &[&str]| {
        let mut args = vec![verb, "--repo", ".", "--env", "examples/aws", "--endpoint-url", &moto, "--state-dir", "state"];
        args.extend_from_slice(&["--auto-approve", "--skip-preflight"]);
        args.extend_from_slice(extra);
        byoc_env(repo.path(), &args, &MOTO_ENV)
    };
    let second = again("apply", &[]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
    let destroy = again("destroy", &["--delete-data"]);
    assert_eq!(destroy.code, 0, "{}\n{}", destroy.stdout, destroy.stderr);
    assert!(destroy.stdout.contains("applied 30 action(s)"), "{}", destroy.stdout);
}

#[test]
fn an_apply_that_fails_part_way_gives_its_lease_back_and_the_next_one_runs_at_once() {
    let account = Account::new().with_autoscaling_role();
    let repo = example_repo();
    let mut args = approved_apply_args(&account, "state");
    args.extend(["--concurrency", "1"]);
    let mut child = byoc_command(&repo).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("byoc runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.expect("stdout").starts_with("done 1/") {
            break;
        }
    }
    // Someone else writes the inventory: the apply's next record is refused (a conflict),
    // an error part-way through.
    std::fs::write(repo.path().join("state/cloud-inventory.json.version"), "999").expect("write version");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().expect("byoc ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{rest:?}\n{stderr}");
    assert!(stderr.contains("was changed by someone else"), "{stderr}");
    let lease: Value = serde_json::from_str(&repo.read("state/lease.json")).expect("lease record");
    assert_eq!(lease["expiresAt"], 0, "the lease was given back: {lease}");

    let next = byoc_env(repo.path(), &args, &MOTO_ENV);
    assert!(!next.stderr.contains("locked by"), "{}", next.stderr);
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, next.stderr);
    assert_exactly_one_of_each(&account.counts());
}

/// The lease is taken before the live plan observes Kubernetes; an API server that cannot
/// be reached then fails the plan, and the lease is given back with it (the release is an
/// explicit write on that way out: a dropped guard only logs).
#[test]
fn a_plan_that_cannot_observe_kubernetes_gives_its_lease_back() {
    let account = Account::new();
    let repo = example_repo();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    std::fs::write(repo.path().join("kubeconfig"), kube_double::kubeconfig(&format!("http://127.0.0.1:{port}"))).expect("kubeconfig");
    let mut args = approved_apply_args(&account, "state");
    args.extend(["--kubeconfig", "kubeconfig", "--skip-preflight"]);
    let out = byoc_command(&repo).args(&args).output().expect("byoc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("observing Kubernetes"), "{stderr}");
    let lease: Value = serde_json::from_str(&repo.read("state/lease.json")).expect("lease record");
    assert_eq!(lease["expiresAt"], 0, "the lease was given back: {lease}");
}
