//! Helpers: a throw-away git repository built with the real `git`, and a runner for the
//! real `byoc` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the project checkout.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("reconciler/ has a parent").to_path_buf()
}

/// What a `byoc` run returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `byoc` with `args` in `dir`.
pub fn byoc(dir: &Path, args: &[&str]) -> Run {
    byoc_env(dir, args, &[])
}

/// Runs `byoc` with `args` in `dir` and extra environment variables.
pub fn byoc_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_byoc")).args(args).envs(env.iter().copied()).current_dir(dir).output().expect("byoc runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `openssl` with `args` in `dir`; panics with its message when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test certificate authority made with the openssl CLI: `ca.pem` and `ca.key` (P-256)
/// in its directory.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// A CA named `subject` (e.g. `/O=test/CN=test-ca`) in `dir`, created if missing.
    pub fn new(dir: &Path, subject: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("mkdir");
        openssl(
            dir,
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"]
                .into_iter()
                .chain([
                    "-subj",
                    subject,
                    "-days",
                    "3650",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ])
                .collect::<Vec<_>>(),
        );
        TestCa { dir: dir.to_owned() }
    }

    /// Issues `<name>.pem` with key `<name>.key` (P-256) for `subject`, with the extension
    /// lines `ext` (openssl's extfile syntax), valid from now for `days`; returns their paths.
    pub fn issue(&self, name: &str, subject: &str, ext: &str, days: u32) -> (PathBuf, PathBuf) {
        let (key, csr, pem, extfile) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(self.dir.join(&extfile), ext).expect("write");
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        );
        let days = days.to_string();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                &days,
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ],
        );
        (self.dir.join(pem), self.dir.join(key))
    }
}

/// A child process (a test server), killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A git repository in a temporary directory. Commits use fixed names and dates, so the
/// same content always gets the same commit ids.
pub struct Repo {
    pub dir: tempfile::TempDir,
    commits: u32,
}

impl Repo {
    pub fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().expect("temp dir"), commits: 0 };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let date = format!("2026-01-01T00:00:{:02}Z", self.commits);
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env_remove("GIT_DIR")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Copies a directory of the project (e.g. examples/aws) to `to` in the repository.
    pub fn copy_from_project(&self, from: &str, to: &str) {
        copy_dir(&project_root().join(from), &self.path().join(to));
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path)).expect("read")
    }

    /// Replaces `old` by `new` in a file; the test fails if `old` is absent.
    pub fn edit(&self, path: &str, old: &str, new: &str) {
        let text = self.read(path);
        assert!(text.contains(old), "{path} does not contain {old:?}");
        self.write(path, &text.replacen(old, new, 1));
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.path().join(path)).expect("remove");
    }

    /// Commits everything and returns the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        self.commits += 1;
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
