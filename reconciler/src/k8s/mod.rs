//! Kubernetes: each RisingWave cluster's namespace, service account, `RisingWave` resource
//! and frontend service, converged with server-side apply ([`reconcile`]) from the objects
//! [`objects`] derives from the specs.

pub mod objects;
pub mod reconcile;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no Kubernetes client could be built. None of these goes away by retrying: each
/// names the configuration to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The named kubeconfig file cannot be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// kube's reason.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No configuration found in the usual places (or the named context is not in them).
    #[error("{what}: {source}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// kube's reason.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The User-Agent given cannot be sent as a header.
    #[error("{0:?} cannot be a User-Agent header")]
    UserAgent(String),
    /// The configuration was read but the client could not be built from it.
    #[error("building the Kubernetes client: {0}")]
    Build(#[source] kube::Error),
}

/// Builds the one client a run shares: from `kubeconfig` if given, else the usual places
/// (`$KUBECONFIG`, `~/.kube/config`, then the pod's service account).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Client, ClientError> {
    client_as(kubeconfig, context, None).await
}

/// [`client`], sending `user_agent` with every request, so the API server's audit log can
/// tell two replicas of the daemon apart (they share one field manager, as they must).
pub async fn client_as(kubeconfig: Option<&Path>, context: Option<&str>, user_agent: Option<&str>) -> Result<kube::Client, ClientError> {
    // Both rustls providers are linked (kube asks for ring, the AWS SDK for aws-lc-rs), so
    // rustls cannot pick the process default kube's TLS needs; ring it is. A provider
    // installed earlier by the embedding program stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..KubeConfigOptions::default() };
    let config = match kubeconfig {
        Some(path) => {
            let file =
                |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Kubeconfig { path: path.display().to_string(), source: e };
            let kc = Kubeconfig::read_from(path).map_err(|e| file(e.into()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| file(e.into()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ClientError::NotFound { what: "reading the kubeconfig", source: e.into() })?,
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::NotFound { what: "no kubeconfig found and not running in a pod", source: e.into() })?,
    };
    let mut config = config;
    if let Some(agent) = user_agent {
        let value = http::HeaderValue::from_str(agent).map_err(|_| ClientError::UserAgent(agent.to_owned()))?;
        config.headers.push((http::header::USER_AGENT, value));
    }
    kube::Client::try_from(config).map_err(ClientError::Build)
}

/// Whether any Kubernetes configuration is there to find without flags: `$KUBECONFIG`,
/// `~/.kube/config`, or a pod's service account.
pub fn configured() -> bool {
    let home_config = std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").exists());
    std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) || home_config || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// The report for terminals: one block per cluster.
pub fn render_text(report: &reconcile::Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in &report.clusters {
        let _ = writeln!(
            out,
            "{}: {:?}{}",
            c.cluster,
            c.outcome,
            if c.message.is_empty() { String::new() } else { format!(" - {}", c.message) }
        );
        for a in &c.actions {
            let _ = writeln!(out, "  {a}");
        }
        for d in &c.drift {
            let what = if d.corrected { "corrected" } else { "not corrected" };
            let _ = writeln!(out, "  drift {} {}: applied {} live {} ({what})", d.object, d.path, d.applied, d.live);
        }
        for x in &c.conflicts {
            let _ = writeln!(out, "  conflict {} {}: {}", x.object, x.field, x.message);
        }
        if c.actions.is_empty() && c.drift.is_empty() && c.conflicts.is_empty() {
            let _ = writeln!(out, "  no changes");
        }
    }
    let ready = report.clusters.iter().filter(|c| c.outcome == reconcile::Outcome::Ready).count();
    let _ = writeln!(
        out,
        "{} cluster(s), {ready} ready, {} write(s)",
        report.clusters.len(),
        report.clusters.iter().map(|c| c.actions.len()).sum::<usize>()
    );
    out
}
