//! How `byoc` behaves for a new user in a shell or a CI job: exit codes, flags each
//! command accepts, where state goes, how fast hopeless calls fail, what goes to stderr,
//! and plans too big for one pull-request comment. All through the real binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Repo, Run, byoc, byoc_env, project_root};

const ENV: &str = "envs/prod";

fn repo_with_example() -> (Repo, String) {
    let mut repo = Repo::new();
    repo.copy_from_project("examples/aws", ENV);
    let base = repo.commit("add prod environment");
    (repo, base)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

#[test]
fn usage_errors_exit_64_never_2_which_means_changes() {
    let (repo, base) = repo_with_example();
    let dir = repo.path();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "--repo", ".", "--env", ENV, "--state-dir", "/nonexistent/never-used"];
        args.extend_from_slice(extra);
        byoc(dir, &args)
    };
    let cases: Vec<(&str, Run)> = vec![
        ("a mistyped flag", byoc(dir, &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV, "--ouput", "json"])),
        ("a missing argument", byoc(dir, &["plan", "--repo", "."])),
        ("--delete-data is destroy's", apply(&["--delete-data"])),
        ("--concurrency 0", apply(&["--concurrency", "0"])),
        ("--lease-seconds 1", apply(&["--lease-seconds", "1"])),
        ("--poll-interval -1", apply(&["--poll-interval", "-1"])),
        ("--poll-interval 0", apply(&["--poll-interval", "0"])),
        ("verify prints no markdown", byoc(dir, &["verify", "--repo", ".", "--policy", "p.yaml", "--output", "markdown"])),
        ("clusters prints no markdown", byoc(dir, &["clusters", "--env", ENV, "--output", "markdown"])),
        ("clusters --health-timeout -5", byoc(dir, &["clusters", "--env", ENV, "--health-timeout", "-5"])),
        (
            "--max-comment-chars without markdown",
            byoc(dir, &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV, "--max-comment-chars", "5000"]),
        ),
        (
            "--max-comment-chars too small for a comment",
            byoc(
                dir,
                &[
                    "plan",
                    "--repo",
                    ".",
                    "--base",
                    &base,
                    "--head",
                    "HEAD",
                    "--env",
                    ENV,
                    "--output",
                    "markdown",
                    "--max-comment-chars",
                    "10",
                ],
            ),
        ),
        ("--branch with a local path", byoc(dir, &["verify", "--repo", ".", "--policy", "p.yaml", "--branch", "dev"])),
        ("--log-format yaml", byoc(dir, &["--log-format", "yaml", "validate", ENV])),
    ];
    for (what, run) in &cases {
        assert_eq!(run.code, 64, "{what}: exit {}\n{}", run.code, run.stderr);
        assert!(run.stderr.contains("error:"), "{what}: the error is said:\n{}", run.stderr);
        assert!(run.stdout.is_empty(), "{what}: nothing on stdout:\n{}", run.stdout);
    }
    // Asking for help is not an error.
    for args in [&["--help"][..], &["apply", "--help"], &["--version"]] {
        let run = byoc(dir, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
}

#[test]
fn a_plan_whose_only_entries_are_blocked_exits_3() {
    let (mut repo, base) = repo_with_example();
    // analytics is retained (deletionPolicy Retain): removing it is refused, entry by entry.
    repo.remove("envs/prod/clusters/analytics.yaml");
    repo.write(
        "envs/prod/routes.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata: {name: default}\nspec:\n  routes:\n    - {name: ingest-db, match: {database: ingest}, cluster: ingest, allowedCidrs: [10.20.0.0/16]}\n",
    );
    repo.commit("remove the retained cluster");
    for output in ["text", "json", "markdown"] {
        let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV, "--output", output]);
        assert_eq!(run.code, 3, "{output}: only blocked entries\n{}\n{}", run.stdout, run.stderr);
        if output == "json" {
            let json: Value = serde_json::from_str(&run.stdout).expect("json");
            assert_eq!((json["summary"]["blocked"].as_u64(), json["summary"]["delete"].as_u64()), (Some(4), Some(0)));
        }
    }
    // With something to do besides, it is "changes" again.
    repo.edit("envs/prod/clusters/ingest.yaml", "replicas: 2", "replicas: 4");
    repo.commit("and grow ingest");
    let run = byoc(repo.path(), &["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn each_command_says_what_it_does_in_its_help() {
    let dir = project_root();
    let help = |cmd: &str| byoc(&dir, &[cmd, "--help"]).stdout;
    let destroy = help("destroy");
    assert!(destroy.contains("Destroy without asking"), "{destroy}");
    assert!(destroy.contains("--delete-data"), "{destroy}");
    assert!(!destroy.to_lowercase().contains("apply without asking") && !destroy.contains("Revision to apply"), "{destroy}");
    let apply = help("apply");
    assert!(apply.contains("Apply without asking") && !apply.contains("--delete-data"), "{apply}");
    let output_values = |cmd: &str| {
        let text = help(cmd);
        let section = text.split("--output <OUTPUT>").nth(1).unwrap_or_default().split("[default").next().unwrap_or_default().to_owned();
        ["text", "markdown", "json"].into_iter().filter(|v| section.contains(&format!("- {v}:"))).collect::<Vec<_>>()
    };
    for cmd in ["verify", "clusters"] {
        assert_eq!(output_values(cmd), ["text", "json"], "{cmd} offers only what it prints");
    }
    assert_eq!(output_values("plan"), ["text", "markdown", "json"]);
}

/// The long flags (`--name`) in a piece of text.
pub fn long_flags(text: &str) -> std::collections::BTreeSet<String> {
    let mut flags = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at + 2;
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_lowercase() || **b == b'-').count();
        if end > start && (i + at == 0 || !bytes[i + at - 1].is_ascii_alphanumeric()) {
            flags.insert(text[start..end].trim_end_matches('-').to_owned());
        }
        i = end.max(start);
    }
    flags
}

/// The rows of the README's command table: (first cell, whole row).
pub fn readme_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(project_root().join("README.md")).expect("README");
    readme
        .lines()
        .filter(|l| l.starts_with("| `byoc ") || l.starts_with("| `rwproxy "))
        .map(|l| {
            let first = l.trim_start_matches("| ").split(" | ").next().unwrap_or_default().to_owned();
            (first, l.to_owned())
        })
        .collect()
}

/// The flags a `--help` page lists under Options, without the ones every command has.
pub fn help_flags(help: &str) -> std::collections::BTreeSet<String> {
    help.lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| long_flags(l.split("  ").find(|p| p.trim_start().starts_with('-')).unwrap_or(l)).into_iter().next())
        .filter(|f| f != "help" && f != "version")
        .collect()
}

#[test]
fn the_readme_command_table_matches_every_commands_help() {
    let dir = project_root();
    let rows = readme_rows();
    let global = help_flags(&byoc(&dir, &["--help"]).stdout);
    assert_eq!(global, ["log-format".to_owned()].into(), "byoc's own flags");
    let readme = std::fs::read_to_string(project_root().join("README.md")).expect("README");
    assert!(readme.contains("Every `byoc` command also takes `--log-format text|json`"), "the global flag is documented");
    for cmd in ["validate", "plan", "clusters", "verify", "publish", "run", "apply", "destroy", "revert"] {
        let help = byoc(&dir, &[cmd, "--help"]).stdout;
        let mut from_help = help_flags(&help);
        from_help.remove("log-format");
        let row: Vec<&(String, String)> = rows.iter().filter(|(first, _)| first.starts_with(&format!("`byoc {cmd} "))).collect();
        assert_eq!(row.len(), 1, "one README row for byoc {cmd}");
        let from_readme = long_flags(&row[0].0);
        assert_eq!(from_readme, from_help, "byoc {cmd}: the README row's flags (left) and --help's (right)\n{}", row[0].0);
    }
    // rwproxy's rows are compared with its --help by tests/proxy/logging.rs, which has
    // that binary.
}

#[test]
fn state_goes_outside_the_work_tree_and_one_store_serves_every_subdirectory() {
    let (repo, _) = repo_with_example();
    std::fs::create_dir_all(repo.path().join("envs/prod/clusters")).expect("subdirectory");
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    // Each run takes the lease in the default store, then fails to reach the account.
    let from_root = byoc_env(repo.path(), &["apply", "--repo", ".", "--env", ENV, "--endpoint-url", &endpoint, "--auto-approve"], &env);
    assert_eq!(from_root.code, 1, "{}", from_root.stderr);
    let store = repo.path().join(".git/byoc-state/prod-use1");
    let version = || std::fs::read_to_string(store.join("lease.json.version")).expect("the lease is in <git dir>/byoc-state/prod-use1");
    let after_root = version();
    let sub = repo.path().join("envs/prod/clusters");
    let from_sub = byoc_env(&sub, &["apply", "--repo", "../../..", "--env", ENV, "--endpoint-url", &endpoint, "--auto-approve"], &env);
    assert_eq!(from_sub.code, 1, "{}", from_sub.stderr);
    assert!(version().trim().parse::<u64>().expect("n") > after_root.trim().parse::<u64>().expect("n"), "the same store was used");
    let status = repo.git(&["status", "--porcelain", "--untracked-files=all", "--ignored"]);
    assert_eq!(status, "", "nothing appears in the work tree");
}

/// The environment of a machine with no AWS credentials anywhere.
fn no_credentials(cmd: &mut Command, home: &Path) {
    for var in
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"]
    {
        cmd.env_remove(var);
    }
    // Empty configuration files: no profile, no keys.
    std::fs::write(home.join("aws-config"), "").expect("config");
    cmd.env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1");
}

fn timed(mut cmd: Command) -> (Run, Duration) {
    let started = Instant::now();
    let out = cmd.output().expect("byoc runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, started.elapsed())
}

#[test]
fn without_credentials_apply_fails_fast_with_a_hint_and_gives_the_lease_back() {
    let (repo, _) = repo_with_example();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byoc"));
    cmd.args(["apply", "--repo", ".", "--env", ENV, "--state-dir", "state", "--endpoint-url", &endpoint, "--auto-approve"])
        .current_dir(repo.path());
    no_credentials(&mut cmd, repo.path());
    let (run, took) = timed(cmd);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{}", run.stderr);
    assert!(!run.stderr.contains("retry:"), "credentials are not retried:\n{}", run.stderr);
    assert!(run.stderr.contains("no AWS credentials were found"), "{}", run.stderr);
    assert!(run.stderr.contains("AWS_PROFILE") && run.stderr.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{}", run.stderr);
    assert!(!run.stderr.contains("DispatchFailure") && !run.stderr.contains("ConnectorError"), "no debug dump:\n{}", run.stderr);
    assert!(run.stderr.lines().count() <= 4, "a short error:\n{}", run.stderr);
    let lease: Value = serde_json::from_str(&repo.read("state/lease.json")).expect("lease record");
    assert_eq!(lease["expiresAt"], 0, "the lease was given back");
}

#[test]
fn an_endpoint_that_refuses_connections_fails_fast() {
    let (repo, _) = repo_with_example();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byoc"));
    cmd.args(["apply", "--repo", ".", "--env", ENV, "--state-dir", "state", "--endpoint-url", &endpoint, "--auto-approve"])
        .envs([("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .current_dir(repo.path());
    let (run, took) = timed(cmd);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{}", run.stderr);
    assert!(!run.stderr.contains("retry:"), "a refused connection is not retried:\n{}", run.stderr);
    assert!(
        run.stderr.contains("the endpoint refused the connection") && run.stderr.contains("hint: check the endpoint"),
        "{}",
        run.stderr
    );
}

#[test]
fn stderr_has_no_colour_codes_and_json_logs_are_one_object_a_line() {
    let (repo, _) = repo_with_example();
    repo.write(
        "bad/environment.yaml",
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Environment\nmetadata: {name: x}\nspec: {cloud: mars}\n",
    );
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let env = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")];
    let apply = ["apply", "--repo", ".", "--env", ENV, "--state-dir", "state", "--endpoint-url", &endpoint, "--auto-approve"];
    for format in ["text", "json"] {
        for args in [&["validate", "bad"][..], &apply[..]] {
            let run = byoc_env(repo.path(), &[&["--log-format", format][..], args].concat(), &env);
            assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
            assert!(!run.stderr.is_empty());
            assert!(!run.stderr.contains('\u{1b}'), "{format} {args:?}: colour codes in a pipe:\n{}", run.stderr);
            if format == "json" {
                for line in run.stderr.lines() {
                    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
                    assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
                }
                assert!(run.stderr.contains("\"level\":\"ERROR\""), "{}", run.stderr);
            } else {
                assert!(run.stderr.lines().any(|l| l.starts_with("error: ")), "{}", run.stderr);
            }
        }
    }
}

/// A repository whose head adds `n` clusters to examples/aws.
fn repo_adding_clusters(n: usize) -> (Repo, String) {
    let (mut repo, base) = repo_with_example();
    let template = repo.read("envs/prod/clusters/ingest.yaml");
    for i in 0..n {
        let name = format!("c{i:04}");
        repo.write(
            &format!("envs/prod/clusters/{name}.yaml"),
            &template.replace("name: ingest", &format!("name: {name}")).replace("prefix: ingest", &format!("prefix: {name}")),
        );
    }
    repo.commit("add many clusters");
    (repo, base)
}

#[test]
fn a_plan_too_big_for_a_comment_is_cut_to_one_or_split_into_numbered_parts() {
    let (repo, base) = repo_adding_clusters(300);
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", ENV];
        args.extend_from_slice(extra);
        byoc(repo.path(), &args)
    };
    let json: Value = serde_json::from_str(&plan(&["--output", "json"]).stdout).expect("json");
    let ids: Vec<String> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] != "no-op")
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(ids.len() >= 1_200, "{} changed", ids.len());

    // Default: one comment, the summary, what fits, and how many more.
    let one = plan(&["--output", "markdown"]);
    assert_eq!(one.code, 2, "{}", one.stderr);
    assert!(one.stdout.chars().count() <= 65_536, "{} chars", one.stdout.chars().count());
    assert!(one.stdout.contains(&format!("| {} | 0 | 0 | 0 | 0 |", ids.len())), "the summary is always there");
    let listed = ids.iter().filter(|id| one.stdout.contains(&format!("| `{id}` |"))).count();
    assert!(listed > 0 && listed < ids.len(), "{listed} listed");
    assert!(
        one.stdout.contains(&format!("Listed above: {listed} of {} changed resources", ids.len()))
            && one.stdout.contains(&format!("{} more not listed", ids.len() - listed))
            && one.stdout.contains("--max-comment-chars"),
        "{}",
        &one.stdout[one.stdout.len().saturating_sub(800)..]
    );

    // Split: numbered parts, each within the limit, nothing left out.
    let split = plan(&["--output", "markdown", "--max-comment-chars", "20000"]);
    assert_eq!(split.code, 2, "{}", split.stderr);
    let parts: Vec<&str> = split.stdout.split("<!-- byoc plan part ").skip(1).collect();
    let n = parts.len();
    assert!(n >= 4, "{n} parts");
    for (i, part) in parts.iter().enumerate() {
        let whole = format!("<!-- byoc plan part {part}");
        assert!(whole.starts_with(&format!("<!-- byoc plan part {}/{n} -->\n", i + 1)), "{}", &whole[..60]);
        assert!(whole.chars().count() <= 20_000, "part {} has {} chars", i + 1, whole.chars().count());
        // A fence or a details block is never cut by a part boundary.
        assert_eq!(whole.matches("```").count() % 2, 0, "part {}", i + 1);
        assert_eq!(whole.matches("<details>").count(), whole.matches("</details>").count(), "part {}", i + 1);
    }
    for id in &ids {
        assert!(split.stdout.contains(&format!("| `{id}` |")), "{id} is listed");
        assert!(split.stdout.contains(&format!("<code>{id}</code>")), "{id}'s changes are shown");
    }
    assert!(!split.stdout.contains("more not listed"));
}
