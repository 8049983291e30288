//! The bad-spec corpus: every case under tests/bad-specs/ overlays the valid environment in
//! `_base/` with its own files (and removes those named in `REMOVE`); `byoc validate` must
//! exit 1, never panic, and print every line of `expect`. Every diagnostic must name a file
//! of the case, with line and column where the file has them.

use std::path::Path;

use super::support::{byoc, copy_dir, project_root};

#[test]
fn every_bad_spec_is_refused_with_its_message() {
    let corpus = project_root().join("tests/bad-specs");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("_base"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases, fewer than 40", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = run_case(&corpus, case) {
            failures.push(format!("{}: {why}", case.file_name().unwrap_or_default().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

fn run_case(corpus: &Path, case: &Path) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env = work.path().join("env");
    copy_dir(&corpus.join("_base"), &env);
    for entry in walk(case) {
        let rel = entry.strip_prefix(case).map_err(|e| e.to_string())?;
        let name = rel.to_string_lossy();
        if matches!(name.as_ref(), "expect" | "REMOVE" | "GENERATE") {
            continue;
        }
        let target = env.join(rel);
        std::fs::create_dir_all(target.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        std::fs::copy(&entry, &target).map_err(|e| e.to_string())?;
    }
    if let Ok(list) = std::fs::read_to_string(case.join("REMOVE")) {
        for f in list.lines().filter(|l| !l.is_empty()) {
            std::fs::remove_file(env.join(f)).map_err(|e| format!("REMOVE {f}: {e}"))?;
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
    if run.code != 1 {
        return Err(format!("exit code {} (want 1)\nstdout: {}\nstderr: {}", run.code, run.stdout, run.stderr));
    }
    if run.stderr.contains("panicked") {
        return Err(format!("panicked:\n{}", run.stderr));
    }
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
        if !(file == "env" || (file.starts_with("env/") && work.path().join(file).is_file())) {
            return Err(format!("diagnostic does not name a file of the case: {line}"));
        }
        let has_position = place.split(':').count() == 3;
        let whole_file =
            line.contains("not valid UTF-8") || line.contains("larger than the limit") || line.contains("no `kind`") || file == "env";
        if !has_position && !whole_file {
            return Err(format!("diagnostic has no line and column: {line}"));
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
