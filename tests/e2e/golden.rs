//! Golden plans: creating each example environment from nothing. The JSON must be
//! byte-identical between runs and equal to tests/golden/plan-<cloud>.json. Set
//! BYOC_UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff.

use super::support::{Repo, byoc, project_root};

fn golden(cloud: &str) {
    let mut repo = Repo::new();
    repo.write("README.md", "environments\n");
    let base = repo.commit("empty");
    repo.copy_from_project(&format!("examples/{cloud}"), cloud);
    repo.commit("add environment");

    let args = ["plan", "--repo", ".", "--base", &base, "--head", "HEAD", "--env", cloud, "--output", "json"];
    let first = byoc(repo.path(), &args);
    let second = byoc(repo.path(), &args);
    assert_eq!(first.code, 2, "{}", first.stderr);
    assert_eq!(first.stdout, second.stdout, "two runs differ");

    let path = project_root().join(format!("tests/golden/plan-{cloud}.json"));
    if std::env::var_os("BYOC_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &first.stdout).expect("write golden");
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with BYOC_UPDATE_GOLDEN=1 to create)", path.display()));
    assert!(first.stdout == want, "plan differs from {}; rerun with BYOC_UPDATE_GOLDEN=1 and review the diff", path.display());
    let json: serde_json::Value = serde_json::from_str(&first.stdout).expect("json");
    assert!(json["steps"].as_array().expect("steps").iter().all(|s| s["action"] == "create"));
}

#[test]
fn aws_plan_matches_golden() {
    golden("aws");
}

#[test]
fn gcp_plan_matches_golden() {
    golden("gcp");
}

#[test]
fn azure_plan_matches_golden() {
    golden("azure");
}
