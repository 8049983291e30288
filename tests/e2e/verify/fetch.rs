//! `byoc verify --repo URL`: the branch is fetched into a cache first, over `file://` and
//! over `ssh://` from a real OpenSSH server started on a loopback port (key auth, host key
//! checked against a known_hosts file).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Signed;
use crate::support::{Killed, Run, TestCa, byoc};

impl Signed {
    fn verify_url(&self, url: &str, extra: &[&str]) -> Run {
        self.verify_branch(url, "main", extra)
    }

    fn verify_branch(&self, url: &str, branch: &str, extra: &[&str]) -> Run {
        let policy = self.dir.path().join("policy.yaml").display().to_string();
        let state = self.dir.path().join("state").display().to_string();
        let cache = self.dir.path().join("cache").display().to_string();
        let mut args = vec!["verify", "--repo", url, "--branch", branch, "--cache-dir", &cache, "--policy", &policy, "--state-dir", &state];
        args.extend_from_slice(extra);
        byoc(self.dir.path(), &args)
    }
}

#[test]
fn a_file_remote_is_fetched_only_when_its_tip_moved_and_a_rewrite_is_refused() {
    let mut s = Signed::new();
    let base = s.verified_base();
    let url = format!("file://{}", s.repo().display());
    let run = s.verify_url(&url, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("fetched {url} main at {base}")), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("main@sha1:{base}")), "{}", run.stdout);
    let run = s.verify_url(&url, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("remote tip unchanged, nothing fetched"), "{}", run.stderr);
    s.write("env/b.yaml", "b: 1\n");
    let tip = s.commit(Some("bob"), "add b");
    let run = s.verify_url(&url, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("fetched {url} main at {tip}")), "{}", run.stderr);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
    // The remote is force-pushed back to the older, fully signed commit.
    s.git(&["reset", "-q", "--hard", &base]);
    let run = s.verify_url(&url, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("history rewritten: {base} is not a descendant of {tip}")), "{}", run.stdout);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
    let run = s.verify_branch(&url, "nope", &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("has no branch \"nope\""), "{}", run.stderr);
}

/// An OpenSSH server on a loopback port, stopped by pid when dropped.
struct Sshd {
    _server: Killed,
    port: u16,
    dir: PathBuf,
}

impl Sshd {
    fn start(dir: &Path, client_pub: &str) -> Sshd {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (openssh-server) is installed by tests/run.sh");
        std::fs::create_dir_all(dir).expect("mkdir");
        let out =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join("host")).output().expect("ssh-keygen");
        assert!(out.status.success());
        std::fs::write(dir.join("authorized_keys"), client_pub).expect("write");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("write");
        let _ = std::fs::create_dir_all("/run/sshd"); // privilege-separation directory, when root
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
            .spawn()
            .expect("sshd starts");
        let started = Instant::now();
        while TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(100)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { _server: Killed(child), port, dir: dir.to_owned() }
    }

    fn known_hosts(&self) -> String {
        let host = std::fs::read_to_string(self.dir.join("host.pub")).expect("host key");
        format!("[127.0.0.1]:{} {}", self.port, host.trim())
    }
}

#[test]
fn an_ssh_remote_is_fetched_with_a_key_and_a_checked_host_key() {
    let mut s = Signed::new();
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    let tip = s.commit(Some("alice"), "base");
    let client = s.dir.path().join("keys/bob"); // any key will do as the git user's login key
    let sshd = Sshd::start(&s.dir.path().join("sshd"), &s.public("bob"));
    let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout).expect("utf8").trim().to_owned();
    let url = format!("ssh://{user}@127.0.0.1:{}{}", sshd.port, s.repo().display());
    let known = s.dir.path().join("known_hosts");
    let key = client.display().to_string();
    let known_arg = known.display().to_string();

    // A host key nobody vouched for: refused before anything is fetched.
    std::fs::write(&known, format!("[127.0.0.1]:{} {}\n", sshd.port, s.public("mallory"))).expect("write");
    let run = s.verify_url(&url, &["--ssh-key", &key, "--ssh-known-hosts", &known_arg]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the host key of 127.0.0.1 is not in"), "{}", run.stderr);

    std::fs::write(&known, sshd.known_hosts() + "\n").expect("write");
    let run = s.verify_url(&url, &["--ssh-known-hosts", &known_arg]);
    assert_eq!(run.code, 1, "without a key: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("pass --ssh-key"), "{}", run.stderr);

    let run = s.verify_url(&url, &["--ssh-key", &key, "--ssh-known-hosts", &known_arg]);
    assert_eq!(
        run.code,
        0,
        "{}{}\nsshd: {}",
        run.stdout,
        run.stderr,
        std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap_or_default()
    );
    assert!(run.stderr.contains(&format!("fetched {url} main at {tip}")), "{}", run.stderr);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
}

/// `tests/git/https_server.py`: `git http-backend` behind HTTPS with a token, its
/// certificate issued by a test CA; stopped by pid when dropped.
pub(super) struct HttpsGit {
    _server: Killed,
    pub(super) port: u16,
    pub(super) ca: PathBuf,
}

impl HttpsGit {
    pub(super) fn start(dir: &Path, root: &Path, token: &str) -> HttpsGit {
        let ca = TestCa::new(dir, "/CN=test-ca");
        let (cert, key) = ca.issue("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n", 2);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/git/https_server.py");
        let port_file = dir.join("port");
        let child =
            Command::new("python3").arg(script).arg(root).arg(cert).arg(key).arg(token).arg(&port_file).spawn().expect("python3 runs");
        let started = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port");
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the https git server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        HttpsGit { _server: Killed(child), port, ca: dir.join("ca.pem") }
    }
}

#[test]
fn an_https_remote_is_fetched_with_a_token_over_checked_tls() {
    let mut s = Signed::new();
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    let tip = s.commit(Some("alice"), "base");
    let server = HttpsGit::start(&s.dir.path().join("https"), s.dir.path(), "s3cret");
    let url = format!("https://127.0.0.1:{}/repo", server.port);
    let policy = s.dir.path().join("policy.yaml").display().to_string();
    let cache = s.dir.path().join("cache").display().to_string();
    let ca = server.ca.display().to_string();
    let run = |env: &[(&str, &str)]| {
        crate::support::byoc_env(s.dir.path(), &["verify", "--repo", &url, "--cache-dir", &cache, "--policy", &policy], env)
    };
    let untrusted = run(&[("BYOC_GIT_TOKEN", "s3cret")]);
    assert_eq!(untrusted.code, 1, "a certificate from an unknown CA: {}{}", untrusted.stdout, untrusted.stderr);
    assert!(untrusted.stderr.contains("cannot reach"), "{}", untrusted.stderr);
    let no_token = run(&[("SSL_CERT_FILE", &ca)]);
    assert_eq!(no_token.code, 1);
    assert!(no_token.stderr.contains("the server wants a token: set BYOC_GIT_TOKEN"), "{}", no_token.stderr);
    let wrong = run(&[("SSL_CERT_FILE", &ca), ("BYOC_GIT_TOKEN", "guess")]);
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("authentication to"), "{}", wrong.stderr);
    let ok = run(&[("SSL_CERT_FILE", &ca), ("BYOC_GIT_TOKEN", "s3cret")]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stderr.contains(&format!("fetched {url} main at {tip}")), "{}", ok.stderr);
    assert!(ok.stdout.contains(&format!("verified main@sha1:{tip}")), "{}", ok.stdout);
}

#[test]
fn a_sha256_remote_gets_a_sha256_cache_and_verifies() {
    let mut s = Signed::with_format("sha256");
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    let tip = s.commit(Some("alice"), "base");
    let url = format!("file://{}", s.repo().display());
    let run = s.verify_url(&url, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("verified main@sha256:{tip}")), "{}", run.stdout);
    let run = s.verify_url(&url, &[]);
    assert!(run.stderr.contains("remote tip unchanged, nothing fetched"), "{}", run.stderr);
}
