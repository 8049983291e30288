//! `rwproxy --check` and start-up on trees that route nothing, and on trees whose routes
//! point where no cluster is: the proxy judges them as `byoc validate` does (the same
//! function), and says so instead of starting quietly with an empty table.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::support::{free_port, project_root};

fn check(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rwproxy")).arg("--check").arg("--routes").arg(dir).output().expect("rwproxy runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const ROUTES_HEAD: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata: {name: default}\nspec:\n  routes:\n";

#[test]
fn an_empty_directory_and_a_tree_of_clusters_only_fail_the_check() {
    let empty = tempfile::tempdir().expect("temp dir");
    let out = check(empty.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no route"), "{}", stderr(&out));

    // The bad-spec base environment without its routes: valid for byoc, nothing to route.
    let clusters = tempfile::tempdir().expect("temp dir");
    let base = project_root().join("tests/bad-specs/_base");
    std::fs::copy(base.join("environment.yaml"), clusters.path().join("environment.yaml")).expect("copy");
    std::fs::create_dir(clusters.path().join("clusters")).expect("mkdir");
    std::fs::copy(base.join("clusters/analytics.yaml"), clusters.path().join("clusters/analytics.yaml")).expect("copy");
    let out = check(clusters.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no route"), "{}", stderr(&out));
}

#[test]
fn routes_only_trees_need_a_backend_and_environment_trees_need_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |text: &str| std::fs::write(dir.path().join("routes.yaml"), format!("{ROUTES_HEAD}{text}")).expect("write");

    // As the benchmark runs it: no clusters in the tree, an explicit backend.
    write("    - {name: bench, match: {database: postgres}, cluster: bench, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:5432'}\n");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Without a backend, the route would dial a frontend service no tree defines.
    write("    - {name: bench, match: {database: postgres}, cluster: bench, allowedCidrs: [127.0.0.0/8]}\n");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("routes.yaml:6:59: error: route \"bench\" targets cluster \"bench\""), "{}", stderr(&out));

    // A tree with clusters: a route must name one of them, backend or not.
    let cluster = std::fs::read_to_string(project_root().join("tests/bad-specs/_base/clusters/analytics.yaml")).expect("read");
    std::fs::write(dir.path().join("analytics.yaml"), cluster).expect("write");
    write("    - {name: bench, match: {database: postgres}, cluster: bench, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:5432'}\n");
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("targets unknown cluster \"bench\""), "{}", stderr(&out));
    assert!(stderr(&out).contains("clusters in this environment: analytics"), "{}", stderr(&out));
}

#[test]
fn starting_with_no_routes_says_so() {
    let empty = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwproxy"))
        .arg("--routes")
        .arg(empty.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("rwproxy starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rwproxy did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("rwproxy exits");
    let log = stderr(&out);
    assert!(log.contains("starting with NO ROUTES") && log.contains("holds no route"), "{log}");
}
