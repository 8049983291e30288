//! Every command that reads git, on every shape of repository users have: a fresh
//! repository (loose objects), the same after `git gc` (packed), a `git clone --no-local`
//! (packed by the transfer), a shallow `git clone --depth 2`, a bare clone, and byoc's own
//! fetch cache (filled by `byoc verify --repo file://...`). Each shape is made with the
//! real `git`; every commit is signed with a key made by `ssh-keygen`.
//!
//! A CI checkout is always packed: reading blobs through libgit2's loose-object stream
//! failed on every shape here but the first.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::aws::Account;
use crate::state_s3::MOTO_ENV;
use crate::support::{Run, byoc, byoc_env, project_root};

const ENV: &str = "examples/aws";

/// One repository shape: where it is and the revisions to name in it.
struct Shape {
    name: &'static str,
    repo: PathBuf,
    /// The head revision as a user names it in this shape (a branch, or the cache's ref).
    head: String,
}

/// A signed repository holding examples/aws in two commits (base, then a resize), the
/// signing policy beside it (outside the repository), and every shape made from it.
struct Shapes {
    dir: tempfile::TempDir,
    base: String,
    head: String,
    shapes: Vec<Shape>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Alice", "-c", "user.email=alice@example.com", "-c", "gpg.format=ssh", "-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Loose and packed objects in a repository's object store.
fn count_objects(repo: &Path) -> (u64, u64) {
    let text = git(repo, &["count-objects", "-v"]);
    let field =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (field("count"), field("in-pack"))
}

impl Shapes {
    fn new() -> Shapes {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let key = root.join("alice");
        let out =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f"]).arg(&key).output().expect("ssh-keygen");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(root.join("allowed_signers"), format!("alice@example.com {}\n", public.join(" "))).expect("write");
        std::fs::write(
            root.join("policy.yaml"),
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {name: test}\nspec:\n  version: 1\n  allowedSignersFile: allowed_signers\n  groups:\n    - {name: platform, members: [alice@example.com]}\n  rules:\n    - {paths: [\"**\"], signers: [platform], threshold: 1}\n  forgeMergeKey: {trusted: false}\n",
        )
        .expect("write");

        let fresh = root.join("fresh");
        std::fs::create_dir(&fresh).expect("mkdir");
        git(&fresh, &["init", "-q", "-b", "main"]);
        let signing = format!("user.signingkey={}", key.display());
        let commit = |message: &str| {
            git(&fresh, &["add", "-A"]);
            git(&fresh, &["-c", &signing, "commit", "-q", "-S", "-m", message]);
            git(&fresh, &["rev-parse", "HEAD"])
        };
        // A first commit, so the shallow clone (two commits deep) really lacks history.
        std::fs::write(fresh.join("README.md"), "environments\n").expect("write");
        git(&fresh, &["add", "README.md"]);
        git(&fresh, &["-c", &signing, "commit", "-q", "-S", "-m", "start"]);
        crate::support::copy_dir(&project_root().join(ENV), &fresh.join(ENV));
        let base = commit("aws example");
        let analytics = fresh.join(ENV).join("clusters/analytics.yaml");
        let text = std::fs::read_to_string(&analytics).expect("read");
        assert!(text.contains("compute: {replicas: 3"), "the example changed; update this test");
        std::fs::write(&analytics, text.replacen("compute: {replicas: 3", "compute: {replicas: 4", 1)).expect("write");
        let head = commit("scale analytics");
        let (loose, packed) = count_objects(&fresh);
        assert!(loose > 0 && packed == 0, "a fresh repository has loose objects only: {loose} loose, {packed} packed");

        let packed_repo = root.join("packed");
        Command::new("cp").arg("-a").arg(&fresh).arg(&packed_repo).status().expect("cp");
        git(&packed_repo, &["gc", "-q", "--prune=now"]);
        let url = format!("file://{}", fresh.display());
        git(root, &["clone", "-q", "--no-local", &fresh.display().to_string(), "cloned"]);
        git(root, &["clone", "-q", "--depth", "2", &url, "shallow"]);
        git(root, &["clone", "-q", "--bare", "--no-local", &fresh.display().to_string(), "bare.git"]);
        for shape in ["packed", "cloned", "shallow", "bare.git"] {
            let (loose, packed) = count_objects(&root.join(shape));
            assert!(loose == 0 && packed > 0, "{shape}: {loose} loose, {packed} packed objects");
        }
        assert!(root.join("shallow/.git/shallow").exists(), "the --depth clone is shallow");

        // byoc's own fetch cache, filled by a verify of the remote.
        let run =
            byoc(root, &["verify", "--repo", &url, "--branch", "main", "--cache-dir", "cache", "--policy", "policy.yaml", "--from", &base]);
        assert_eq!(run.code, 0, "verify of {url}:\n{}{}", run.stdout, run.stderr);
        let cache = std::fs::read_dir(root.join("cache"))
            .expect("cache")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|e| e == "git"))
            .expect("a cache repository");

        let shape = |name, repo: PathBuf, head: &str| Shape { name, repo, head: head.to_owned() };
        let shapes = vec![
            shape("fresh", fresh, "main"),
            shape("packed", packed_repo, "main"),
            shape("cloned", root.join("cloned"), "main"),
            shape("shallow", root.join("shallow"), "main"),
            shape("bare", root.join("bare.git"), "main"),
            shape("fetch cache", cache, "refs/byoc/heads/main"),
        ];
        Shapes { dir, base, head, shapes }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn show(run: &Run) -> String {
    format!("exit {}\nstdout:\n{}\nstderr:\n{}", run.code, run.stdout, run.stderr)
}

#[test]
fn plan_and_verify_read_every_repository_shape() {
    let s = Shapes::new();
    for shape in &s.shapes {
        let repo = shape.repo.display().to_string();
        let plan = byoc(s.root(), &["plan", "--repo", &repo, "--base", &s.base, "--head", &shape.head, "--env", ENV]);
        assert_eq!(plan.code, 2, "{}: plan:\n{}", shape.name, show(&plan));
        assert!(plan.stdout.contains("k8s.risingwave/analytics"), "{}: the resize is planned:\n{}", shape.name, plan.stdout);
        assert!(plan.stdout.contains(&format!("sha1:{}", s.head)), "{}: head named by its id:\n{}", shape.name, plan.stdout);

        // The whole history where there is one; the shallow clone lacks the first commit,
        // so its range starts at the base.
        let mut args = vec!["verify", "--repo", &repo, "--policy", "policy.yaml", "--to", &shape.head];
        if shape.name == "shallow" {
            args.extend(["--from", &s.base]);
        }
        let verify = byoc(s.root(), &args);
        assert_eq!(verify.code, 0, "{}: verify:\n{}", shape.name, show(&verify));
        assert!(verify.stdout.contains(&s.head), "{}: verify names the tip:\n{}", shape.name, verify.stdout);
    }
    // A second verify of the remote finds the cache current and reads it again.
    let url = format!("file://{}", s.shapes[0].repo.display());
    let run = byoc(
        s.root(),
        &["verify", "--repo", &url, "--branch", "main", "--cache-dir", "cache", "--policy", "policy.yaml", "--from", &s.base],
    );
    assert_eq!(run.code, 0, "{}", show(&run));
    assert!(run.stderr.contains("remote tip unchanged, nothing fetched"), "{}", run.stderr);
}

#[test]
fn apply_reads_every_repository_shape() {
    let account = Account::new().with_autoscaling_role();
    let s = Shapes::new();
    let state = s.root().join("state").display().to_string();
    for (i, shape) in s.shapes.iter().enumerate() {
        let repo = shape.repo.display().to_string();
        let args = [
            "apply",
            "--repo",
            &repo,
            "--rev",
            &shape.head,
            "--env",
            ENV,
            "--endpoint-url",
            account.endpoint(),
            "--state-dir",
            &state,
            "--poll-interval",
            "0.1",
            "--auto-approve",
        ];
        let run = byoc_env(s.root(), &args, &MOTO_ENV);
        assert_eq!(run.code, 0, "{}: apply:\n{}", shape.name, show(&run));
        // The first shape creates the environment; every later one reads the same
        // revision from its own object store and finds nothing to do.
        if i > 0 {
            // (Without a cluster: but for what waits for it.)
            assert!(run.stdout.contains("nothing to do without the cluster: the account matches"), "{}: {}", shape.name, show(&run));
        }
        assert!(run.stdout.contains(&format!("sha1:{}", s.head)), "{}: names the revision:\n{}", shape.name, run.stdout);
    }
}
