//! The bad-spec corpus: every case under tests/bad-specs/ overlays the valid environment in
//! `_base/` with its own files (removes those named in `REMOVE`, makes the symbolic links
//! `LINK` lists as `path target` lines, writes the large files `GENERATE` lists); `byoc
//! validate` must exit 1, never panic, and print every line of `expect`. Every diagnostic
//! must name a file of the case, with line and column where the file has them.
//!
//! Each case is then judged by every entry point that reads a tree, and each must give the
//! same verdict with the same diagnostics: `byoc validate` on the directory, `byoc plan` on
//! a git commit of it, and, for the cases that involve routes, `rwproxy --check` (the
//! proxy's start and reload use the same loader).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{Run, byoc, copy_dir, project_root};

/// The control files of a case, which are not copied into the environment.
const CONTROL: [&str; 4] = ["expect", "REMOVE", "GENERATE", "LINK"];

#[test]
fn every_bad_spec_is_refused_with_its_message_by_every_entry_point() {
    let corpus = project_root().join("tests/bad-specs");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("_base"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases, fewer than 40", cases.len());
    let rwproxy = rwproxy_binary();

    let mut failures = Vec::new();
    let mut route_cases = 0;
    for case in &cases {
        match run_case(&corpus, case, &rwproxy) {
            Ok(involves_routes) => route_cases += usize::from(involves_routes),
            Err(why) => failures.push(format!("{}: {why}", case.file_name().unwrap_or_default().to_string_lossy())),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    assert!(route_cases >= 12, "only {route_cases} cases involve routes");
}

/// The rwproxy binary of this build, beside `byoc`. `cargo test --workspace` builds it; a
/// copy older than the proxy's sources would judge with yesterday's rules, so that fails.
pub fn rwproxy_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_byoc")).with_file_name("rwproxy");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}; build it first: cargo build -p rwproxy", path.display()));
    let newest_source = newest_mtime(&project_root().join("proxy/src"));
    assert!(built >= newest_source, "{} is older than proxy/src; rebuild it: cargo build -p rwproxy", path.display());
    path
}

fn newest_mtime(dir: &Path) -> std::time::SystemTime {
    walk(dir).iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).max().unwrap_or(std::time::UNIX_EPOCH)
}

/// Runs one case through every entry point; returns whether it involves routes.
fn run_case(corpus: &Path, case: &Path, rwproxy: &Path) -> Result<bool, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env = work.path().join("env");
    copy_dir(&corpus.join("_base"), &env);
    let mut involves_routes = false;
    for entry in walk(case) {
        let rel = entry.strip_prefix(case).map_err(|e| e.to_string())?;
        let name = rel.to_string_lossy();
        if CONTROL.contains(&name.as_ref()) {
            continue;
        }
        involves_routes |= name.to_ascii_lowercase().contains("routes")
            || std::fs::read(&entry).is_ok_and(|b| String::from_utf8_lossy(&b).contains("kind: Routes"));
        let target = env.join(rel);
        std::fs::create_dir_all(target.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        std::fs::copy(&entry, &target).map_err(|e| e.to_string())?;
    }
    if let Ok(list) = std::fs::read_to_string(case.join("REMOVE")) {
        for f in list.lines().filter(|l| !l.is_empty()) {
            involves_routes |= f.contains("routes");
            std::fs::remove_file(env.join(f)).map_err(|e| format!("REMOVE {f}: {e}"))?;
        }
    }
    if let Ok(list) = std::fs::read_to_string(case.join("LINK")) {
        for line in list.lines().filter(|l| !l.is_empty()) {
            let (link, target) = line.split_once(' ').ok_or("LINK: want `path target`")?;
            std::os::unix::fs::symlink(target, env.join(link)).map_err(|e| format!("LINK {link}: {e}"))?;
        }
    }
    // Large inputs are made here rather than stored in the repository.
    if let Ok(spec) = std::fs::read_to_string(case.join("GENERATE")) {
        for line in spec.lines().filter(|l| !l.is_empty()) {
            let (file, size) = line.split_once(' ').ok_or("GENERATE: want `path size`")?;
            let size: usize = size.parse().map_err(|_| "GENERATE: bad size")?;
            let mut text = String::from("# filler\n");
            while text.len() < size {
                text.push_str("# xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
            }
            std::fs::write(env.join(file), text).map_err(|e| e.to_string())?;
        }
    }

    let run = byoc(work.path(), &["validate", "env"]);
    check_refused("byoc validate", &run)?;
    let expect = std::fs::read_to_string(case.join("expect")).map_err(|e| format!("expect: {e}"))?;
    for want in expect.lines().filter(|l| !l.is_empty()) {
        if !run.stderr.contains(want) {
            return Err(format!("missing {want:?} in:\n{}", run.stderr));
        }
    }
    // Every diagnostic names where: `env/<file>[:line:col]: error:` or the directory itself.
    for line in run.stderr.lines().filter(|l| l.contains(": error: ")) {
        let place = line.split(": error: ").next().unwrap_or_default();
        let file = place.split(':').next().unwrap_or_default();
        let exists = std::fs::symlink_metadata(work.path().join(file)).is_ok_and(|m| !m.is_dir());
        if !(file == "env" || (file.starts_with("env/") && exists)) {
            return Err(format!("diagnostic does not name a file of the case: {line}"));
        }
        let has_position = place.split(':').count() == 3;
        let whole_file =
            ["not valid UTF-8", "larger than the limit", "no `kind`", "symbolic link"].iter().any(|w| line.contains(w)) || file == "env";
        if !has_position && !whole_file {
            return Err(format!("diagnostic has no line and column: {line}"));
        }
    }
    let validated = diagnostics(&run);

    // The same tree as a git revision.
    git(work.path(), &["init", "-q", "-b", "main"])?;
    git(work.path(), &["add", "-A", "env"])?;
    git(work.path(), &["commit", "-q", "-m", "case"])?;
    let plan = byoc(work.path(), &["plan", "--repo", ".", "--base", "HEAD", "--head", "HEAD", "--env", "env"]);
    check_refused("byoc plan", &plan)?;
    if diagnostics(&plan) != validated {
        return Err(format!("byoc plan on a commit of the tree says\n{}\nbut byoc validate says\n{}", plan.stderr, run.stderr));
    }

    if involves_routes {
        let out = Command::new(rwproxy)
            .args(["--check", "--routes", "env"])
            .current_dir(work.path())
            .output()
            .map_err(|e| format!("rwproxy: {e}"))?;
        let check = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        check_refused("rwproxy --check", &check)?;
        if diagnostics(&check) != validated {
            return Err(format!("rwproxy --check says\n{}\nbut byoc validate says\n{}", check.stderr, run.stderr));
        }
    }
    Ok(involves_routes)
}

fn check_refused(what: &str, run: &Run) -> Result<(), String> {
    if run.code != 1 {
        return Err(format!("{what}: exit code {} (want 1)\nstdout: {}\nstderr: {}", run.code, run.stdout, run.stderr));
    }
    if run.stderr.contains("panicked") {
        return Err(format!("{what} panicked:\n{}", run.stderr));
    }
    Ok(())
}

/// The diagnostics a run printed (with their hints), without its closing headline, which
/// names the entry point.
fn diagnostics(run: &Run) -> Vec<&str> {
    run.stderr.lines().filter(|l| !l.starts_with("error: ") && !l.starts_with("fetched ")).collect()
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
