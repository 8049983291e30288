//! `byoc clusters --env DIR`: the Kubernetes half of the apply stage
//! ([`crate::pipeline::apply::Kubernetes`], the same code `byoc apply` and the daemon
//! run) for a directory of the work tree, e.g. a checkout of a verified, published
//! revision. `byoc apply` applies a revision's Kubernetes half after its cloud half.

use std::path::PathBuf;
use std::time::Duration;

use super::{EXIT_ERROR, EXIT_OK, TextOrJson, positive_seconds, report_problems, runtime};
use crate::k8s;
use crate::logging;
use crate::pipeline::apply::Kubernetes;
use crate::pipeline::load::{DirectoryError, directory};
use crate::state::LocalDir;

/// Arguments of `byoc clusters`.
#[derive(Debug, clap::Args)]
pub struct ClustersArgs {
    /// The environment directory (a verified, published revision).
    #[arg(long)]
    pub env: PathBuf,
    /// State store directory: the inventory of applied objects lives here; default
    /// `<git dir>/byoc-state/<environment name>` of the repository holding --env (the
    /// store `byoc apply` uses); required when --env is not inside a git repository.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then the pod's service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Seconds a RisingWave may take to become ready; more than 0.
    #[arg(long, default_value = "600", value_parser = positive_seconds)]
    pub health_timeout: Duration,
    /// Seconds between status reads; more than 0.
    #[arg(long, default_value = "2", value_parser = positive_seconds)]
    pub poll_interval: Duration,
    /// Seconds a deleted namespace may take to go; more than 0.
    #[arg(long, default_value = "300", value_parser = positive_seconds)]
    pub namespace_timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

/// Runs `byoc clusters`; returns the exit code.
pub fn run(args: &ClustersArgs) -> u8 {
    let shown = args.env.display().to_string();
    let specs = match directory(&args.env) {
        Ok(s) => s,
        Err(DirectoryError::Unreadable(problems)) => return report_problems(&format!("cannot read {shown}"), &problems),
        Err(DirectoryError::Invalid(problems)) => return report_problems(&format!("{shown} is not valid"), &problems),
    };
    let options = k8s::reconcile::Options {
        health_timeout: args.health_timeout,
        poll_interval: args.poll_interval,
        namespace_timeout: args.namespace_timeout,
    };
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => match crate::state::default_dir_for_path(&args.env, &specs.environment.name) {
            Ok(dir) => dir,
            Err(e) => {
                logging::error(&format!("{e}\n  hint: give --state-dir (the store `byoc apply` wrote the environment's cloud outputs to)"));
                return EXIT_ERROR;
            }
        },
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let converged = runtime.block_on(async {
        let store = LocalDir::new(&state_dir)?;
        let client = k8s::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let mut kubernetes = Kubernetes::new(client, &store, &specs, options).await?;
        let report = kubernetes.reconcile().await?;
        // A work tree: the next `byoc apply` plans Kubernetes from the live objects.
        kubernetes.record(None, &shown).await?;
        anyhow::Ok(report)
    });
    match converged {
        Ok(report) => {
            let text = match args.output {
                TextOrJson::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
                TextOrJson::Text => k8s::render_text(&report),
            };
            print!("{text}");
            if report.ok() { EXIT_OK } else { EXIT_ERROR }
        }
        Err(e) => {
            logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}
