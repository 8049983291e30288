//! The daemon's configuration (`kind: Reconciler`), held outside the repository it
//! governs (in the pod: a ConfigMap), like the signing policy.
//!
//! ```yaml
//! apiVersion: byoc.risingwave.dev/v1alpha1
//! kind: Reconciler
//! metadata: {name: prod}
//! spec:
//!   repository: {url: "https://git.example.com/org/infra.git", branch: main, tokenFile: /etc/byoc/token}
//!   environment: environments/prod          # the environment directory in the repository
//!   signingPolicy: /etc/byoc/policy/signing-policy.yaml
//!   stateStore: {dir: /var/lib/byoc}        # or {s3: "s3://bucket/prefix"}, {gcs: "gs://bucket/prefix"},
//!                                           # {azureBlob: "https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX"}
//!   publishDir: /publish                    # RWProxy reads publishDir/current
//!   cacheDir: /var/cache/byoc               # the fetch cache
//!   listen: "127.0.0.1:8080"                # status, metrics, probes, webhooks
//!   interval: 60s                           # poll period (with jitter)
//!   staleAfter: 10m                         # no successful fetch for this long: SourceStale
//!   webhook: {secretFile: /etc/byoc/webhook/secret}
//!   leaderElection:                         # all optional; two replicas, one writer
//!     leaseName: byoc-prod                  # default: byoc-<metadata.name>
//!     namespace: byoc-system                # default: the pod's namespace, else default
//!     leaseDuration: 15s                    # whole seconds, at least 1s
//!     identity: byoc-7d9f-abcde             # default: $POD_NAME, else <hostname>-<pid>
//! ```
//!
//! Read with the project's hardened YAML reader (size cap, alias limits, duplicate keys
//! refused); unknown fields are refused with file:line:col, and every problem (a policy
//! that does not load, an unreadable secret) is reported at once, before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rwproxy::diagnostics::{Diagnostic, Position};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::verify::policy::Policy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    repository: RepositorySpec,
    environment: String,
    signing_policy: Spanned<String>,
    state_store: StateStoreSpec,
    publish_dir: String,
    cache_dir: String,
    listen: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    webhook: Option<WebhookSpec>,
    cloud: Option<CloudSpec>,
    kubernetes: Option<KubernetesSpec>,
    agent: Option<super::agent::AgentSpec>,
    leader_election: Option<LeaderElectionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LeaderElectionSpec {
    lease_name: Option<String>,
    namespace: Option<String>,
    lease_duration: Option<Spanned<String>>,
    identity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RepositorySpec {
    url: String,
    branch: Option<String>,
    ssh_key: Option<String>,
    known_hosts: Option<String>,
    token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StateStoreSpec {
    dir: Option<String>,
    s3: Option<Spanned<String>>,
    gcs: Option<Spanned<String>>,
    azure_blob: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WebhookSpec {
    secret_file: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CloudSpec {
    endpoint_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubernetesSpec {
    kubeconfig: Option<String>,
    context: Option<String>,
}

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A local directory.
    Dir(PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3(String),
    /// `gs://BUCKET/PREFIX`.
    Gcs(String),
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`.
    AzureBlob(String),
}

/// A checked daemon configuration.
#[derive(Debug)]
pub struct Config {
    /// metadata.name.
    pub name: String,
    /// The repository to follow.
    pub remote: crate::fetch::Remote,
    /// Environment directory inside the repository.
    pub environment: String,
    /// The signing policy, loaded.
    pub policy: Policy,
    /// Where the state lives.
    pub state: StateLocation,
    /// RWProxy's published tree.
    pub publish_dir: PathBuf,
    /// The fetch cache.
    pub cache_dir: PathBuf,
    /// The status, metrics, probe and webhook listener (loopback by default).
    pub listen: SocketAddr,
    /// Poll period.
    pub interval: Duration,
    /// No successful fetch for this long: `SourceStale`.
    pub stale_after: Duration,
    /// The webhook secret, when webhooks are on.
    pub webhook_secret: Option<Vec<u8>>,
    /// Cloud API endpoint override (an emulator).
    pub cloud_endpoint: Option<String>,
    /// Kubeconfig and context; in-cluster when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// The mTLS agent API, when configured.
    pub agent: Option<super::agent::AgentConfig>,
    /// The Lease that makes one of two replicas the writer.
    pub lease: super::leader::LeaseSettings,
}

/// Default lease duration, client-go's.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Where a pod's service account token mounts its namespace.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// This process's lease identity: the pod's name when the pod says it (`POD_NAME` from the
/// downward API), else the host's name and the process id, unique on one machine.
fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "byoc".into());
    format!("{host}-{}", std::process::id())
}

/// Default poll period, as Flux's `interval` is commonly set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Default staleness bound.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(600);

/// Reads and checks the file at `path`; every problem at once.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| vec![Diagnostic::new(Position::file(&file), format!("cannot read the configuration: {e}"))])?;
    let text = rwproxy::yaml::decode(&file, &bytes).map_err(|d| vec![d])?;
    parse(&file, text, path.parent().unwrap_or(Path::new(".")))
}

/// Parses and checks a configuration; relative paths are taken from `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Config, Vec<Diagnostic>> {
    let doc: Document = rwproxy::yaml::parse(file, text).map_err(|d| vec![d])?;
    let mut problems = Vec::new();
    let at = |s: &Spanned<String>| Position::at(file, &s.referenced);
    if doc.api_version.value != "byoc.risingwave.dev/v1alpha1" {
        problems.push(Diagnostic::new(at(&doc.api_version), "apiVersion must be byoc.risingwave.dev/v1alpha1"));
    }
    if doc.kind.value != "Reconciler" {
        problems.push(Diagnostic::new(at(&doc.kind), "kind must be Reconciler"));
    }
    let spec = doc.spec;
    let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
    let policy_path = resolve(&spec.signing_policy.value);
    let policy = Policy::load(&policy_path)
        .map_err(|e| problems.push(Diagnostic::new(at(&spec.signing_policy), format!("signingPolicy does not load: {e}"))))
        .ok();
    let store = &spec.state_store;
    let given = usize::from(store.dir.is_some()) + [&store.s3, &store.gcs, &store.azure_blob].iter().filter(|u| u.is_some()).count();
    let state = if given != 1 {
        problems.push(Diagnostic::new(Position::file(file), "stateStore needs exactly one of dir, s3, gcs and azureBlob"));
        None
    } else if let Some(dir) = &store.dir {
        Some(StateLocation::Dir(resolve(dir)))
    } else {
        // The URL is checked as the store will read it, and a bad one is reported at its
        // line and column.
        use crate::state::Remote;
        let checked = if let Some(u) = &store.s3 {
            Some((u, Remote::parse_s3("stateStore.s3", &u.value).map(|_| StateLocation::S3(u.value.clone()))))
        } else if let Some(u) = &store.gcs {
            Some((u, Remote::parse_gcs("stateStore.gcs", &u.value).map(|_| StateLocation::Gcs(u.value.clone()))))
        } else {
            store
                .azure_blob
                .as_ref()
                .map(|u| (u, Remote::parse_azure_blob("stateStore.azureBlob", &u.value).map(|_| StateLocation::AzureBlob(u.value.clone()))))
        };
        match checked {
            Some((_, Ok(location))) => Some(location),
            Some((url, Err(why))) => {
                problems.push(Diagnostic::new(at(url), why));
                None
            }
            None => None,
        }
    };
    let listen = match &spec.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(l) => l.value.parse().map_err(|_| problems.push(Diagnostic::new(at(l), "listen must be ADDRESS:PORT"))).ok(),
    };
    let mut duration = |field: &Option<Spanned<String>>, name: &str, default: Duration| match field {
        None => default,
        Some(s) => match parse_duration(&s.value) {
            Some(d) if d >= Duration::from_secs(1) => d,
            _ => {
                problems.push(Diagnostic::new(at(s), format!("{name} must be a duration of at least 1s, like 30s, 5m or 1h")));
                default
            }
        },
    };
    let interval = duration(&spec.interval, "interval", DEFAULT_INTERVAL);
    let lease_duration = duration(
        &spec.leader_election.as_ref().and_then(|l| l.lease_duration.clone()),
        "leaderElection.leaseDuration",
        DEFAULT_LEASE_DURATION,
    );
    let stale_after = duration(&spec.stale_after, "staleAfter", DEFAULT_STALE_AFTER);
    let read_secret = |s: &Spanned<String>, what: &str, problems: &mut Vec<Diagnostic>| -> Option<Vec<u8>> {
        match std::fs::read(resolve(&s.value)) {
            Ok(bytes) if !bytes.trim_ascii().is_empty() => Some(bytes.trim_ascii().to_vec()),
            Ok(_) => {
                problems.push(Diagnostic::new(at(s), format!("{what} {} is empty", s.value)));
                None
            }
            Err(e) => {
                problems.push(Diagnostic::new(at(s), format!("{what} {} cannot be read: {e}", s.value)));
                None
            }
        }
    };
    let webhook_secret = spec.webhook.as_ref().and_then(|w| read_secret(&w.secret_file, "webhook.secretFile", &mut problems));
    let token = spec
        .repository
        .token_file
        .as_ref()
        .and_then(|t| read_secret(t, "repository.tokenFile", &mut problems))
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let agent = spec.agent.and_then(|a| a.check(file, &resolve, &mut problems));
    // The Lease is named from the configuration: a name the API server refuses would keep
    // the daemon retrying in standby forever, so it is refused here, before anything starts.
    let lease_name =
        spec.leader_election.as_ref().and_then(|l| l.lease_name.clone()).unwrap_or_else(|| format!("byoc-{}", doc.metadata.name));
    let from = if spec.leader_election.as_ref().is_some_and(|l| l.lease_name.is_some()) {
        "leaderElection.leaseName"
    } else {
        "the Lease named byoc-<metadata.name>"
    };
    if let Err(why) = crate::expand::names::K8S_DNS1123_SUBDOMAIN.check(&lease_name) {
        problems.push(Diagnostic::new(Position::file(file), format!("{from}: {why}")));
    }
    if let Some(ns) = spec.leader_election.as_ref().and_then(|l| l.namespace.as_deref())
        && let Err(why) = crate::expand::names::K8S_DNS1123_LABEL.check(ns)
    {
        problems.push(Diagnostic::new(Position::file(file), format!("leaderElection.namespace: {why}")));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let (Some(policy), Some(state), Some(listen)) = (policy, state, listen) else {
        return Err(vec![Diagnostic::new(Position::file(file), "the configuration is incomplete")]);
    };
    let (kubeconfig, context) = spec.kubernetes.map_or((None, None), |k| (k.kubeconfig.map(|p| resolve(&p)), k.context));
    let election =
        spec.leader_election.unwrap_or(LeaderElectionSpec { lease_name: None, namespace: None, lease_duration: None, identity: None });
    let lease = super::leader::LeaseSettings {
        name: lease_name,
        namespace: election.namespace.unwrap_or_else(|| {
            std::fs::read_to_string(POD_NAMESPACE_FILE)
                .ok()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into())
        }),
        // The API keeps whole seconds.
        duration: Duration::from_secs(lease_duration.as_secs().max(1)),
        identity: election.identity.unwrap_or_else(default_identity),
    };
    Ok(Config {
        name: doc.metadata.name,
        remote: crate::fetch::Remote {
            url: spec.repository.url,
            branch: spec.repository.branch.unwrap_or_else(|| "main".into()),
            ssh_key: spec.repository.ssh_key.map(|p| resolve(&p)),
            known_hosts: spec.repository.known_hosts.map(|p| resolve(&p)),
            token,
        },
        environment: spec.environment,
        policy,
        state,
        publish_dir: resolve(&spec.publish_dir),
        cache_dir: resolve(&spec.cache_dir),
        listen,
        interval,
        stale_after,
        webhook_secret,
        cloud_endpoint: spec.cloud.and_then(|c| c.endpoint_url),
        kubeconfig,
        context,
        agent,
        lease,
    })
}

/// `30s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_policy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for f in ["signing-policy.yaml", "allowed_signers"] {
            std::fs::copy(policy.join(f), dir.path().join(f)).expect("copy");
        }
        std::fs::write(dir.path().join("secret"), "s3cret\n").expect("write");
        dir
    }

    const GOOD: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Reconciler\nmetadata: {name: prod}\nspec:\n  repository: {url: \"file:///srv/infra.git\"}\n  environment: environments/prod\n  signingPolicy: signing-policy.yaml\n  stateStore: {dir: state}\n  publishDir: publish\n  cacheDir: cache\n  interval: 30s\n  webhook: {secretFile: secret}\n";

    #[test]
    fn a_good_configuration_loads_with_defaults_and_relative_paths() {
        let dir = dir_with_policy();
        let c = parse("reconciler.yaml", GOOD, dir.path()).expect("loads");
        assert_eq!(c.remote.branch, "main");
        assert_eq!(c.state, StateLocation::Dir(dir.path().join("state")));
        assert_eq!((c.interval, c.stale_after), (Duration::from_secs(30), DEFAULT_STALE_AFTER));
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.webhook_secret.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!((c.lease.name.as_str(), c.lease.duration), ("byoc-prod", DEFAULT_LEASE_DURATION));
        assert!(c.lease.identity.ends_with(&format!("-{}", std::process::id())) || std::env::var("POD_NAME").is_ok());
        let set = GOOD.to_owned() + "  leaderElection: {leaseName: l, namespace: byoc-system, leaseDuration: 6s, identity: replica-a}\n";
        let c = parse("reconciler.yaml", &set, dir.path()).expect("loads");
        assert_eq!(
            c.lease,
            crate::run::leader::LeaseSettings {
                name: "l".into(),
                namespace: "byoc-system".into(),
                duration: Duration::from_secs(6),
                identity: "replica-a".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_position() {
        let dir = dir_with_policy();
        let bad = GOOD
            .replace("signingPolicy: signing-policy.yaml", "signingPolicy: missing.yaml")
            .replace("secretFile: secret", "secretFile: nope")
            .replace("interval: 30s", "interval: soon");
        let problems = parse("reconciler.yaml", &bad, dir.path()).expect_err("refused");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{text:#?}");
        assert!(text[0].starts_with("reconciler.yaml:7:18: error: signingPolicy does not load"), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("reconciler.yaml:11:13: error: interval must be a duration")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("webhook.secretFile nope cannot be read")), "{text:#?}");
        let unknown = GOOD.replace("  interval: 30s\n", "  intervall: 30s\n");
        let problems = parse("reconciler.yaml", &unknown, dir.path()).expect_err("refused");
        assert!(problems[0].to_string().starts_with("reconciler.yaml:11:3: error: unknown field `intervall`"), "{}", problems[0]);
    }

    #[test]
    fn a_lease_name_the_api_server_would_refuse_is_refused_before_anything_starts() {
        let dir = dir_with_policy();
        // Found by hand: `metadata.name: Stranger_Daemon` made the daemon retry a 422 forever.
        let upper = GOOD.replace("metadata: {name: prod}", "metadata: {name: Stranger_Daemon}");
        let text = parse("reconciler.yaml", &upper, dir.path()).expect_err("refused")[0].to_string();
        assert!(
            text.contains("the Lease named byoc-<metadata.name>: Kubernetes object name \"byoc-Stranger_Daemon\" contains 'S'"),
            "{text}"
        );
        let set = GOOD.to_owned() + "  leaderElection: {leaseName: ok.name, namespace: Byoc}\n";
        let text = parse("reconciler.yaml", &set, dir.path()).expect_err("refused")[0].to_string();
        assert!(text.contains("leaderElection.namespace: Kubernetes name \"Byoc\" contains 'B'"), "{text}");
        let dotted = GOOD.to_owned() + "  leaderElection: {leaseName: byoc.prod}\n";
        assert_eq!(parse("reconciler.yaml", &dotted, dir.path()).expect("a subdomain is a valid Lease name").lease.name, "byoc.prod");
    }

    #[test]
    fn bucket_state_stores_load_and_a_bad_url_is_reported_at_its_line() {
        let dir = dir_with_policy();
        for (field, url, want) in [
            ("s3", "s3://st/reconciler", StateLocation::S3("s3://st/reconciler".into())),
            ("gcs", "gs://infra-state/reconciler", StateLocation::Gcs("gs://infra-state/reconciler".into())),
            (
                "azureBlob",
                "https://acct.blob.core.windows.net/state/reconciler",
                StateLocation::AzureBlob("https://acct.blob.core.windows.net/state/reconciler".into()),
            ),
        ] {
            let text = GOOD.replace("stateStore: {dir: state}", &format!("stateStore: {{{field}: \"{url}\"}}"));
            assert_eq!(parse("reconciler.yaml", &text, dir.path()).expect(field).state, want);
        }
        for (field, url, why) in [
            ("gcs", "s3://infra-state/x", "stateStore.gcs \"s3://infra-state/x\": expected gs://BUCKET/PREFIX"),
            ("gcs", "gs://Infra_State!/x", "is not a GCS bucket name"),
            ("azureBlob", "http://acct.blob.core.windows.net/state", "must use https"),
            ("azureBlob", "https://acct.blob.core.windows.net/", "names no container"),
            ("s3", "gs://b/p", "expected s3://BUCKET/PREFIX"),
        ] {
            let text = GOOD.replace("stateStore: {dir: state}", &format!("stateStore: {{{field}: \"{url}\"}}"));
            let problems = parse("reconciler.yaml", &text, dir.path()).expect_err(url);
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert_eq!(text.len(), 1, "{text:#?}");
            // Line 8 of GOOD holds stateStore; the value starts after `  stateStore: {FIELD: `.
            let column = "  stateStore: {".len() + field.len() + 3;
            assert!(text[0].starts_with(&format!("reconciler.yaml:8:{column}: error: ")), "{text:#?}");
            assert!(text[0].contains(why), "{text:#?}");
        }
        let two = GOOD.replace("stateStore: {dir: state}", "stateStore: {dir: state, gcs: \"gs://b/p\"}");
        let text = parse("reconciler.yaml", &two, dir.path()).expect_err("two stores")[0].to_string();
        assert!(text.contains("exactly one of dir, s3, gcs and azureBlob"), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
