//! `byoc publish`: the verified revision's routes and clusters, swapped in where RWProxy
//! reads them. Read back with RWProxy's own loader (`rwproxy::routes::load_dir`), the
//! function its `--routes` reload calls.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::Signed;
use crate::support::{Run, byoc};

impl Signed {
    fn publish_dir(&self) -> PathBuf {
        self.dir.path().join("publish")
    }

    fn publish(&self) -> Run {
        let (repo, to, state) = (
            self.repo().display().to_string(),
            self.publish_dir().display().to_string(),
            self.dir.path().join("state").display().to_string(),
        );
        byoc(self.dir.path(), &["publish", "--repo", &repo, "--env", "env", "--to", &to, "--state-dir", &state])
    }

    fn routes_file(&self, extra: &str) {
        let text = std::fs::read_to_string(crate::support::project_root().join("examples/aws/routes.yaml")).expect("read");
        self.write("env/routes.yaml", &format!("{text}{extra}"));
    }
}

fn route_names(dir: &Path) -> Vec<String> {
    let table = rwproxy::routes::load_dir(dir).unwrap_or_else(|p| panic!("{} loads: {p:?}", dir.display()));
    let mut names: Vec<String> = table.routes.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

const EXTRA_ROUTE: &str =
    "    - name: ingest-sni\n      match: {sni: ingest.sql.example.com}\n      cluster: ingest\n      allowedCidrs: [10.20.0.0/16]\n";

#[test]
fn only_the_verified_revision_is_published_and_the_swap_is_atomic() {
    let mut s = Signed::new();
    s.default_policy();
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("env"));
    let first = s.commit(Some("alice"), "environment");

    // Nothing verified yet: nothing to publish.
    let run = s.publish();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nothing verified yet"), "{}", run.stderr);
    assert!(!s.publish_dir().join("current").exists());

    assert_eq!(s.verify(&[]).code, 0);
    let run = s.publish();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("published sha1:{first} (3 file(s))")), "{}", run.stdout);
    let current = s.publish_dir().join("current");
    assert_eq!(std::fs::read_link(&current).expect("a symlink"), Path::new("revisions").join(&first));
    assert!(!current.join("environment.yaml").exists(), "the environment's own spec is not the proxy's");
    assert!(current.join("clusters/analytics.yaml").exists());
    assert_eq!(route_names(&current), ["analytics-sni", "analytics-token", "ingest-db"]);
    let again = s.publish();
    assert!(again.stdout.contains("is already published"), "{}", again.stdout);

    // A signed but not yet verified commit is not published.
    s.routes_file(EXTRA_ROUTE);
    let second = s.commit(Some("alice"), "a route for ingest by SNI");
    assert_eq!(s.publish().code, 0);
    assert_eq!(route_names(&current), ["analytics-sni", "analytics-token", "ingest-db"]);
    assert_eq!(s.verify(&[]).code, 0);

    // While revisions are swapped in, a reader always finds a whole table.
    let stop = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let names = route_names(&current);
                assert!(names.len() == 3 || names.len() == 4, "{names:?}");
                reads += 1;
            }
            reads
        });
        let run = s.publish();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(&format!("published sha1:{second}")), "{}", run.stdout);
        for i in 0..4 {
            s.routes_file(if i % 2 == 0 { "" } else { EXTRA_ROUTE });
            s.commit(Some("alice"), &format!("toggle {i}"));
            assert_eq!(s.verify(&[]).code, 0);
            assert_eq!(s.publish().code, 0);
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader")
    });
    assert!(reads > 0);
    assert_eq!(route_names(&current).len(), 4);
    let kept = std::fs::read_dir(s.publish_dir().join("revisions")).expect("revisions").count();
    assert_eq!(kept, byoc::publish::KEEP, "older revisions are removed");
}

#[test]
fn a_verified_revision_with_invalid_specs_publishes_nothing() {
    let mut s = Signed::new();
    s.default_policy();
    crate::support::copy_dir(&crate::support::project_root().join("examples/aws"), &s.repo().join("env"));
    let good = s.commit(Some("alice"), "environment");
    assert_eq!(s.verify(&[]).code, 0);
    assert_eq!(s.publish().code, 0);
    s.routes_file(
        "    - name: nowhere\n      match: {database: nowhere}\n      cluster: no-such-cluster\n      allowedCidrs: [10.20.0.0/16]\n",
    );
    s.commit(Some("alice"), "a route to a cluster that does not exist");
    assert_eq!(s.verify(&[]).code, 0, "signed and verified: validity is the next stage's");
    let run = s.publish();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("env/routes.yaml:"), "file:line:col: {}", run.stderr);
    assert!(run.stderr.contains("nothing published"), "{}", run.stderr);
    let current = s.publish_dir().join("current");
    assert_eq!(std::fs::read_link(&current).expect("link"), Path::new("revisions").join(&good));
}
