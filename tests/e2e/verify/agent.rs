//! The agent API of `byoc run`, the real binary, over real TLS: certificates made with the
//! `openssl` CLI (`openssl ca`, so validity windows in the past and the future can be
//! issued), clients are the real `curl` (OpenSSL), and the daemon reconciles a signed
//! repository against the Kubernetes API double as in `daemon.rs`.
//!
//! Refusals and how each shows: a client without a certificate, with one from another CA,
//! an expired one, a not-yet-valid one, and a TLS 1.2-only client fail the handshake (the
//! certificate checks are the TLS layer's: rustls' `WebPkiClientVerifier`); a certificate
//! that chains but whose SAN is not allowed gets `403` (the handshake proved the identity,
//! so the answer can say which identity was seen and that it is not allowed). Each is
//! counted by reason in `/metrics`.

use super::Signed;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kube::support::{double, operator};
use crate::support::SpawnTied;

const SPIFFE: &str = "spiffe://rw.test/control-plane";

/// A CA made with `openssl req -x509`, issuing with `openssl ca` (which takes explicit
/// validity dates).
struct Ca {
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("newcerts")).expect("mkdir");
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("serial"), "1000\n").expect("serial");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = s\n[s]\ndir = .\ndatabase = ./index.txt\nnew_certs_dir = ./newcerts\nserial = ./serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n[any]\ncommonName = supplied\n",
        )
        .expect("cnf");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "10",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca { dir }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `name.pem`/`name.key` with the SAN and EKU given; `validity` is either
    /// `["-days", "2"]` or `["-startdate", A, "-enddate", B]`.
    fn issue(&self, name: &str, san: &str, eku: &str, validity: &[&str]) -> (PathBuf, PathBuf) {
        let (key, csr, pem, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(self.dir.join(&ext), format!("subjectAltName={san}\nextendedKeyUsage={eku}\nbasicConstraints=critical,CA:FALSE\n"))
            .expect("ext");
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
                &format!("/CN={name}"),
            ],
        );
        let mut args = vec![
            "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", &csr, "-out", &pem, "-extfile", &ext,
            "-notext",
        ];
        args.extend_from_slice(validity);
        openssl(&self.dir, &args);
        (self.dir.join(pem), self.dir.join(key))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const VALID: &[&str] = &["-days", "2"];

/// What one `curl` call saw.
struct Curl {
    code: u16,
    body: String,
    headers: String,
    /// curl's verbose log (handshake, server certificate subject) and error.
    log: String,
}

/// `curl` to the agent, trusting `server_ca`, with the client certificate given (if any).
fn curl(port: u16, server_ca: &Path, client: Option<&(PathBuf, PathBuf)>, method: &str, path: &str, extra: &[&str]) -> Curl {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "10", "-X", method, "--cacert"]).arg(server_ca).arg("-D").arg(&headers).args([
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(extra).arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        headers: std::fs::read_to_string(headers).unwrap_or_default(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Plain HTTP to the loopback status port.
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = get(port, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of one sample line in `/metrics`, 0 when absent.
fn metric(port: u16, sample: &str) -> u64 {
    let (_, text) = get(port, "/metrics");
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0)
}

fn refusals(port: u16, reason: &str) -> u64 {
    metric(port, &format!("byoc_agent_refusals_total{{reason=\"{reason}\"}}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// Bounded wait for `done`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const REPORTS: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: reports\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    frontend: {replicas: 1, cpu: \"1\", memory: 2Gi}\n    compute: {replicas: 1, cpu: \"1\", memory: 4Gi}\n    compactor: {replicas: 1, cpu: \"1\", memory: 2Gi}\n  stateStore:\n    prefix: reports\n  deletionPolicy: Delete\n";

/// A Secret volume's new contents as the kubelet lands them: the files written into a new
/// directory, then the `agent-tls` symlink swapped to it in one rename.
fn land(work: &Path, version: &str, cert: &Path, key: &Path, ca: &Path) {
    let dir = work.join(version);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (from, name) in [(cert, "tls.crt"), (key, "tls.key"), (ca, "ca.crt")] {
        std::fs::copy(from, dir.join(name)).expect("copy");
    }
    let tmp = work.join("agent-tls.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&dir, &tmp).expect("symlink");
    std::fs::rename(&tmp, work.join("agent-tls")).expect("swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_api_admits_only_the_allowed_identity_over_tls13_and_its_trigger_reconciles() {
    let d = double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let _op = operator(&d.client());

    // The signed repository, its bare remote, the kubeconfig and the webhook secret, as
    // every daemon test sets them up.
    let super::daemon_ha::Repo { mut s, work, first } = super::daemon_ha::Repo::new(api_addr);
    let remote = work.join("remote.git");

    // The PKI: the agent's server certificate from a server CA; clients from the client CA
    // the agent trusts, and from a foreign CA it does not.
    let pki = work.join("pki");
    let server_ca = Ca::new(&pki, "server-ca");
    let client_ca = Ca::new(&pki, "client-ca");
    let foreign = Ca::new(&pki, "foreign-ca");
    let server_v1 = server_ca.issue("agent-v1", "IP:127.0.0.1", "serverAuth", VALID);
    let server_v2 = server_ca.issue("agent-v2", "IP:127.0.0.1", "serverAuth", VALID);
    let allowed = client_ca.issue("control-plane", &format!("URI:{SPIFFE}"), "clientAuth", VALID);
    let by_dns = client_ca.issue("by-dns", "DNS:cp.rw.test", "clientAuth", VALID);
    let stranger = client_ca.issue("stranger", "URI:spiffe://rw.test/someone-else,DNS:stranger.rw.test", "clientAuth", VALID);
    let expired = client_ca.issue(
        "expired",
        &format!("URI:{SPIFFE}"),
        "clientAuth",
        &["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"],
    );
    let early =
        client_ca.issue("early", &format!("URI:{SPIFFE}"), "clientAuth", &["-startdate", "20900101000000Z", "-enddate", "20900201000000Z"]);
    let outsider = foreign.issue("outsider", &format!("URI:{SPIFFE}"), "clientAuth", VALID);
    land(&work, "tls-v1", &server_v1.0, &server_v1.1, &client_ca.pem());

    let port = free_port();
    let agent_port = free_port();
    std::fs::write(
        work.join("reconciler.yaml"),
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: test}}\nspec:\n  repository: {{url: \"file://{}\", branch: main}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{dir: daemon-state}}\n  publishDir: publish\n  cacheDir: cache\n  listen: \"127.0.0.1:{port}\"\n  interval: 1h\n  kubernetes: {{kubeconfig: kubeconfig}}\n  agent:\n    listen: \"127.0.0.1:{agent_port}\"\n    certFile: agent-tls/tls.crt\n    keyFile: agent-tls/tls.key\n    clientCaFile: agent-tls/ca.crt\n    allowedIdentities: [\"{SPIFFE}\", cp.rw.test]\n    reloadInterval: 200ms\n    reconcileMinInterval: 30s\n",
            remote.display()
        ),
    )
    .expect("config");
    let check = crate::support::byoc(&work, &["run", "--config", "reconciler.yaml", "--check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let child = crate::support::tied_byoc()
        .args(["run", "--config", "reconciler.yaml"])
        .current_dir(&work)
        .stderr(std::fs::File::create(work.join("daemon.log")).expect("log"))
        .spawn_tied()
        .expect("byoc run starts");
    let mut daemon = Daemon(child);
    let log = || std::fs::read_to_string(work.join("daemon.log")).unwrap_or_default();
    until("the first reconcile", || get(port, "/readyz").0 == 200);
    assert_eq!(status(port)["lastAppliedRevision"], format!("main@sha1:{first}"), "{}", log());
    let ca = server_ca.pem();

    // The allowed identity, by SPIFFE id and by DNS name, reads status, clusters and plan.
    let r = curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &[]);
    assert_eq!(r.code, 200, "{}\n{}\n{}", r.body, r.log, log());
    assert!(r.log.contains("TLSv1.3"), "{}", r.log);
    let st: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(st["lastAppliedRevision"], format!("main@sha1:{first}"));
    let r = curl(agent_port, &ca, Some(&by_dns), "GET", "/v1/clusters", &[]);
    assert_eq!(r.code, 200, "{}", r.body);
    let clusters: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let names: Vec<&str> = clusters["clusters"].as_array().expect("list").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["analytics", "ingest"], "{clusters:#}");
    let analytics = &clusters["clusters"][0];
    assert_eq!((analytics["health"].as_str(), analytics["revision"].as_str()), (Some("ready"), Some(&*format!("main@sha1:{first}"))));
    assert_eq!(analytics["endpoints"]["frontend"], "analytics-frontend.rw-analytics.svc:4567", "{clusters:#}");
    assert_eq!(analytics["endpoints"]["routes"], serde_json::json!(["analytics-sni", "analytics-token"]), "{clusters:#}");
    let r = curl(agent_port, &ca, Some(&allowed), "GET", "/v1/plan", &[]);
    let plan: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!((r.code, &plan["planComputed"], &plan["pending"]), (200, &serde_json::json!(false), &serde_json::json!(false)), "{plan:#}");
    // Nothing changes desired state: no other method is served.
    assert_eq!(curl(agent_port, &ca, Some(&allowed), "PUT", "/v1/status", &[]).code, 405);
    assert_eq!(curl(agent_port, &ca, Some(&allowed), "DELETE", "/v1/clusters", &[]).code, 405);

    // Refused at the handshake, each counted by its reason.
    for (what, client, reason) in [
        ("no client certificate", None, "no_client_certificate"),
        ("a certificate from another CA", Some(&outsider), "unknown_issuer"),
        ("an expired certificate", Some(&expired), "expired"),
        ("a not-yet-valid certificate", Some(&early), "not_yet_valid"),
    ] {
        let before = refusals(port, reason);
        let r = curl(agent_port, &ca, client, "GET", "/v1/status", &[]);
        assert_eq!(r.code, 0, "{what} must fail the handshake: {} {}\n{}", r.code, r.body, r.log);
        until(&format!("{what} counted as {reason}"), || refusals(port, reason) == before + 1);
    }
    let r = curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &["--tls-max", "1.2"]);
    assert_eq!(r.code, 0, "TLS 1.2 must be refused: {}\n{}", r.body, r.log);
    until("TLS 1.2 counted", || refusals(port, "protocol_version") == 1);

    // A chain the CA vouches for, but an identity not in the allow list: 403, naming it.
    let r = curl(agent_port, &ca, Some(&stranger), "GET", "/v1/status", &[]);
    assert_eq!(r.code, 403, "{}\n{}", r.body, r.log);
    assert!(r.body.contains("spiffe://rw.test/someone-else") && r.body.contains("allowedIdentities"), "{}", r.body);
    assert_eq!(curl(agent_port, &ca, Some(&stranger), "POST", "/v1/reconcile", &[]).code, 403);
    assert_eq!(refusals(port, "identity_not_allowed"), 2);
    let daemon_log = log();
    assert!(
        daemon_log.contains("identity_not_allowed") && daemon_log.contains("unknown_issuer"),
        "refusals are logged with their reason:\n{daemon_log}"
    );

    // POST /v1/reconcile wakes the loop: a signed push (no webhook) is applied.
    s.write("env/clusters/reports.yaml", REPORTS);
    let added = s.commit(Some("bob"), "add the reports cluster");
    s.git(&["push", "-q", "origin", "main"]);
    std::thread::sleep(Duration::from_millis(300));
    let reconciles = status(port)["reconciles"].as_u64().expect("count");
    assert_eq!(status(port)["lastAppliedRevision"], format!("main@sha1:{first}"), "nothing polls within the 1h interval");
    let r = curl(agent_port, &ca, Some(&allowed), "POST", "/v1/reconcile", &[]);
    assert_eq!(r.code, 202, "{}", r.body);
    // A burst right after: refused with Retry-After, nothing more queued.
    for _ in 0..3 {
        let r = curl(agent_port, &ca, Some(&allowed), "POST", "/v1/reconcile", &[]);
        assert_eq!(r.code, 429, "{}", r.body);
        let retry: u64 = r
            .headers
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {}", r.headers));
        assert!((1..=30).contains(&retry), "{retry}");
    }
    assert_eq!(refusals(port, "rate_limited"), 3);
    until("the trigger's reconcile applies the push", || status(port)["lastAppliedRevision"] == format!("main@sha1:{added}"));
    assert!(status(port)["reconciles"].as_u64().expect("count") > reconciles);

    // Rotation: new server certificate files are served to new connections, no restart.
    let before = curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &[]);
    assert!(before.log.contains("CN=agent-v1"), "{}", before.log);
    land(&work, "tls-v2", &server_v2.0, &server_v2.1, &client_ca.pem());
    until("the rotated certificate is served", || {
        curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &[]).log.contains("CN=agent-v2")
    });
    assert_eq!(curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &[]).code, 200);
    // The CA bundle too: adding the foreign CA admits its client.
    let bundle = [std::fs::read_to_string(client_ca.pem()).expect("ca"), std::fs::read_to_string(foreign.pem()).expect("ca")].concat();
    std::fs::write(work.join("bundle.pem"), bundle).expect("bundle");
    land(&work, "tls-v3", &server_v2.0, &server_v2.1, &work.join("bundle.pem"));
    until("the new CA bundle is used", || curl(agent_port, &ca, Some(&outsider), "GET", "/v1/status", &[]).code == 200);
    // A rotation to a broken file is refused and counted; the loaded certificate stays.
    std::fs::write(work.join("junk.pem"), "not a certificate\n").expect("write");
    land(&work, "tls-v4", &work.join("junk.pem"), &server_v2.1, &work.join("bundle.pem"));
    until("the broken rotation is counted", || metric(port, "byoc_agent_tls_reloads_total{result=\"failed\"}") == 1);
    let r = curl(agent_port, &ca, Some(&allowed), "GET", "/v1/status", &[]);
    assert!(r.code == 200 && r.log.contains("CN=agent-v2"), "{}", r.log);
    assert!(daemon.0.try_wait().expect("wait").is_none(), "the daemon was not restarted");
    assert_eq!(metric(port, "byoc_agent_tls_reloads_total{result=\"ok\"}"), 2, "cert+key, then the bundle");
}

#[test]
fn bad_agent_tls_files_exit_1_with_the_field_position() {
    let s = Signed::new();
    s.default_policy();
    let work = s.dir.path();
    let ca = Ca::new(work, "ca");
    let (cert, key) = ca.issue("server", "IP:127.0.0.1", "serverAuth", VALID);
    let config = |cert: &Path, allowed: &str| {
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {{name: t}}\nspec:\n  repository: {{url: \"file:///nowhere\"}}\n  environment: env\n  signingPolicy: policy.yaml\n  stateStore: {{dir: state}}\n  publishDir: publish\n  cacheDir: cache\n  agent:\n    listen: \"127.0.0.1:0\"\n    certFile: {}\n    keyFile: {}\n    clientCaFile: {}\n    allowedIdentities: {allowed}\n",
            cert.display(),
            key.display(),
            ca.pem().display()
        )
    };
    std::fs::write(work.join("good.yaml"), config(&cert, "[spiffe://x/y]")).expect("write");
    let run = crate::support::byoc(work, &["run", "--config", "good.yaml", "--check"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    std::fs::write(work.join("junk.pem"), "junk\n").expect("write");
    std::fs::write(work.join("bad.yaml"), config(&work.join("junk.pem"), "[\"*.nope\"]")).expect("write");
    let run = crate::support::byoc(work, &["run", "--config", "bad.yaml", "--check"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("bad.yaml:13:15: error: agent TLS:") && run.stderr.contains("junk.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("\"*.nope\" is neither a URI"), "{}", run.stderr);
}
