//! Fixtures: two PostgreSQL servers (started once per test binary by tests/pg/start.sh,
//! stopped by its watchdog when this process exits), a test CA and certificate, and the
//! real rwproxy binary with a published routes tree (a revision directory behind a
//! `current` symlink, swapped atomically as the reconciler publishes).

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("proxy/ has a parent").to_path_buf()
}

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Servers {
    pub alpha: u16,
    pub beta: u16,
    _dir: tempfile::TempDir,
}

/// The two PostgreSQL servers, `alpha` and `beta` (their `cluster_name`); beta also
/// accepts TLS, with a certificate from the test CA for 127.0.0.1.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = project_root().join("tests/pg/start.sh");
        let start = |name: &str, tls: &[&Path]| {
            let port = free_port();
            let out = Command::new("bash")
                .arg(&script)
                .arg(dir.path().join(name))
                .arg(port.to_string())
                .arg(name)
                .arg(std::process::id().to_string())
                .args(tls)
                .output()
                .expect("run tests/pg/start.sh");
            assert!(out.status.success(), "starting PostgreSQL {name} failed:\n{}", String::from_utf8_lossy(&out.stderr));
            port
        };
        let c = certs();
        let alpha = start("alpha", &[]);
        let beta = start("beta", &[&c.backend_cert, &c.backend_key]);
        Servers { alpha, beta, _dir: dir }
    })
}

/// A third PostgreSQL server, `gamma`, that closes a connection which has not completed
/// its startup within one second (`authentication_timeout`, at its minimum): what a spare
/// backend connection meets when it is kept too long.
pub fn impatient_server() -> u16 {
    static SERVER: OnceLock<(u16, tempfile::TempDir)> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let out = Command::new("bash")
                .arg(project_root().join("tests/pg/start.sh"))
                .arg(dir.path().join("gamma"))
                .arg(port.to_string())
                .arg("gamma")
                .arg(std::process::id().to_string())
                .output()
                .expect("run tests/pg/start.sh");
            assert!(out.status.success(), "starting PostgreSQL gamma failed:\n{}", String::from_utf8_lossy(&out.stderr));
            let set = Command::new("psql")
                .args(["-qX", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
                .args(["-c", "ALTER SYSTEM SET authentication_timeout = '1s'", "-c", "SELECT pg_reload_conf()"])
                .output()
                .expect("psql runs");
            assert!(set.status.success(), "setting authentication_timeout: {}", String::from_utf8_lossy(&set.stderr));
            (port, dir)
        })
        .0
}

pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A backend server's certificate: for the address 127.0.0.1 only.
    pub backend_cert: PathBuf,
    pub backend_key: PathBuf,
    _dir: tempfile::TempDir,
}

/// A test CA, a leaf for `sql.test` and `*.sql.test`, and one for a backend at 127.0.0.1,
/// made with the openssl CLI.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let script = format!(
            "set -e; cd {d}
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=rwproxy-test-ca 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=sql.test 2>/dev/null
             printf 'subjectAltName=DNS:sql.test,DNS:*.sql.test\\n' > ext
             openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out leaf.crt -days 2 -extfile ext 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout backend.key -out backend.csr -subj /CN=backend 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1\n' > backend.ext
             openssl x509 -req -in backend.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out backend.crt -days 2 -extfile backend.ext 2>/dev/null"
        );
        let out = Command::new("bash").arg("-c").arg(script).output().expect("openssl");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let at = |f: &str| dir.path().join(f);
        Certs { ca: at("ca.crt"), cert: at("leaf.crt"), key: at("leaf.key"), backend_cert: at("backend.crt"), backend_key: at("backend.key"), _dir: dir }
    })
}

/// The routes every test starts from.
pub fn default_routes(extra: &str) -> String {
    let s = servers();
    let (a, b) = (s.alpha, s.beta);
    format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1
kind: Routes
metadata: {{name: test}}
spec:
  routes:
    - {{name: alpha-sni, match: {{sni: alpha.sql.test}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{a}'}}
    - {{name: beta-wildcard, match: {{sni: '*.sql.test'}}, cluster: beta, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{b}'}}
    - {{name: alpha-token, match: {{optionsToken: alpha}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{a}'}}
    - {{name: beta-token, match: {{optionsToken: beta}}, cluster: beta, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{b}'}}
    - {{name: ingest-db, match: {{database: ingest}}, cluster: beta, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{b}'}}
    - {{name: postgres-db, match: {{database: postgres}}, cluster: alpha, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:{a}'}}
    - {{name: denied-db, match: {{database: denied}}, cluster: alpha, allowedCidrs: [10.0.0.0/8], backend: '127.0.0.1:{a}'}}
{extra}"
    )
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin: u16,
    published: tempfile::TempDir,
    revision: AtomicU32,
}

impl Proxy {
    /// Starts rwproxy with TLS, `routes` published, and `args` added.
    pub fn start(routes: &str, args: &[&str]) -> Proxy {
        Proxy::start_under(&[], routes, args)
    }

    /// Like [`Proxy::start`], run through `wrapper` (a command that execs the rest, such as
    /// `prlimit --nofile=N:N`), so the child's pid is still rwproxy's.
    pub fn start_under(wrapper: &[&str], routes: &str, args: &[&str]) -> Proxy {
        let c = certs();
        let published = tempfile::tempdir().expect("temp dir");
        publish(published.path(), 0, routes);
        let (port, admin) = (free_port(), free_port());
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_rwproxy"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_rwproxy")),
        };
        let child = command
            .arg("--routes")
            .arg(published.path().join("current"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin", &format!("127.0.0.1:{admin}")])
            .arg("--tls-cert")
            .arg(&c.cert)
            .arg("--tls-key")
            .arg(&c.key)
            .args(args)
            .env("RWPROXY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start rwproxy");
        let proxy = Proxy { child, port, admin, published, revision: AtomicU32::new(1) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", proxy.port)).is_err() {
            assert!(Instant::now() < deadline, "rwproxy did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// The directory revisions are published in (the parent of the `current` symlink).
    pub fn published_dir(&self) -> &Path {
        self.published.path()
    }

    /// Publishes a routes file as a new revision.
    pub fn publish(&self, routes: &str) {
        publish(self.published.path(), self.revision.fetch_add(1, Ordering::SeqCst), routes);
    }

    pub fn metrics(&self) -> String {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).expect("admin");
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        out
    }

    /// A metric's value, or 0 when it has not been counted yet.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    /// Connections that ended with `outcome`, summed over routes.
    pub fn connections(&self, outcome: &str) -> f64 {
        let prefix = format!("rwproxy_connections_total{{outcome=\"{outcome}\",");
        self.metrics().lines().filter_map(|l| l.strip_prefix(&prefix)?.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

/// Publishes like the reconciler: write a new revision directory, then swap the `current`
/// symlink with a rename, so a reader never sees a half-written revision.
fn publish(root: &Path, n: u32, routes: &str) {
    let dir = root.join(format!("rev-{n}"));
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::File::create(dir.join("routes.yaml")).and_then(|mut f| f.write_all(routes.as_bytes())).expect("write routes");
    let tmp = root.join(format!("current.tmp-{n}"));
    std::os::unix::fs::symlink(&dir, &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("current")).expect("swap");
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs psql with a connection string; returns its output.
pub fn psql(conninfo: &str, sql: &str, env: &[(&str, &str)]) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql, conninfo])
        .envs(env.iter().copied())
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// A tokio-postgres TLS connector trusting the test CA.
pub fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&certs().ca).expect("ca");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().expect("pem")
}
