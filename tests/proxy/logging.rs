//! What rwproxy writes to stderr: no colour codes into a pipe, one JSON object a line with
//! `--log-format json`; usage errors exit 64; and the README's rwproxy rows list exactly
//! the flags its `--help` does. No PostgreSQL needed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{free_port, project_root};

/// Starts rwproxy on a loopback port with one valid route, stderr to a pipe; returns its
/// stderr lines up to and including the "accepting" one (and a failed reload after it).
fn log_lines(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("routes.yaml"),
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata: {name: t}\nspec:\n  routes:\n    - {name: a, match: {database: a}, cluster: a, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:1'}\n",
    )
    .expect("routes");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .arg("--routes")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .env("RWPROXY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rwproxy");
    let stderr = child.stderr.take().expect("stderr");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l: &String| l.contains("accepting SQL connections")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("rwproxy did not log that it accepts connections: {lines:?}"),
        }
    }
    // A table that fails validation: logged as an error by the reload watcher.
    std::fs::write(dir.path().join("routes.yaml"), "kind: Routes\nspec: {routes: [{name: 1}]}\n").expect("bad routes");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l| l.contains("ERROR") || l.contains("\"level\":\"ERROR\"")) {
        match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_into_a_pipe_have_no_colour_codes_and_json_is_one_object_a_line() {
    let text = log_lines(&[]);
    assert!(!text.is_empty());
    for line in &text {
        assert!(!line.contains('\u{1b}'), "a colour code in a pipe: {line:?}");
    }
    let json = log_lines(&["--log-format", "json"]);
    assert!(json.len() >= 2, "{json:?}");
    for line in &json {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
}

#[test]
fn usage_errors_exit_64() {
    for args in [&["--routes", "x", "--threads", "0"][..], &["--routes", "x", "--log-format", "yaml"], &["--nope"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_rwproxy")).args(args).output().expect("rwproxy runs");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The long flags in a piece of text.
fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|f| !f.is_empty() && !f.starts_with('-'))
        .map(|f| f.trim_end_matches('-').to_owned())
        .collect()
}

#[test]
fn the_readme_rows_list_the_flags_of_rwproxy_help() {
    let readme = std::fs::read_to_string(project_root().join("README.md")).expect("README");
    let from_readme: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `rwproxy "))
        .flat_map(|l| long_flags(l.trim_start_matches("| ").split(" | ").next().unwrap_or_default()))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_rwproxy")).arg("--help").output().expect("rwproxy --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let from_help: BTreeSet<String> = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| long_flags(l.split("  ").find(|p| p.trim_start().starts_with('-')).unwrap_or(l)).into_iter().next())
        .filter(|f| f != "help" && f != "version")
        .collect();
    assert_eq!(from_readme, from_help, "the README's rwproxy rows (left) and rwproxy --help (right)");
}
