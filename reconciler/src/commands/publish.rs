//! `byoc publish`: the last verified revision's routes and clusters, where RWProxy reads
//! them.

use std::path::PathBuf;

use super::{EXIT_ERROR, EXIT_OK, report_problems};
use crate::pipeline::load::{LoadError, at_revision};
use crate::pipeline::{publish as stage, source as verified};
use crate::source;

/// Arguments of `byoc publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Path of the git repository (a work tree, bare repository or fetch cache).
    #[arg(long)]
    pub repo: PathBuf,
    /// Environment directory inside the repository, e.g. environments/prod.
    #[arg(long)]
    pub env: String,
    /// The publish directory (RWProxy's --routes is DIR/current).
    #[arg(long)]
    pub to: PathBuf,
    /// State directory holding the high-water mark `byoc verify` moved.
    #[arg(long, conflicts_with_all = ["state_s3", "state_gcs", "state_azblob"])]
    pub state_dir: Option<PathBuf>,
    /// Or the state in a bucket: s3://BUCKET/PREFIX.
    #[arg(long, conflicts_with_all = ["state_gcs", "state_azblob"], value_parser = crate::state::s3_flag)]
    pub state_s3: Option<String>,
    /// Or in a GCS bucket: gs://BUCKET/PREFIX.
    #[arg(long, conflicts_with = "state_azblob", value_parser = crate::state::gcs_flag)]
    pub state_gcs: Option<String>,
    /// Or in an Azure Blob container: https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX.
    #[arg(long, value_parser = crate::state::azblob_flag)]
    pub state_azblob: Option<String>,
    /// Endpoint for the state bucket (an emulator).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

/// Runs `byoc publish`; returns the exit code.
pub fn run(args: &PublishArgs) -> u8 {
    let run = || -> anyhow::Result<u8> {
        let repo = source::open(&args.repo)?;
        // The state store is async; this one-shot command gives it a runtime of its own.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let last = runtime.block_on(async {
            let bucket = args.state_s3.as_deref().or(args.state_gcs.as_deref()).or(args.state_azblob.as_deref());
            let store = crate::state::open(args.state_dir.as_deref(), bucket, args.endpoint_url.as_deref()).await?.ok_or_else(|| {
                anyhow::anyhow!(
                    "give --state-dir, --state-s3, --state-gcs or --state-azblob: only the revision `byoc verify` accepted is published"
                )
            })?;
            anyhow::Ok(verified::last_verified(&repo, store.as_ref()).await?)
        })?;
        let Some(commit) = last else {
            anyhow::bail!("nothing verified yet in this state store: run `byoc verify` first");
        };
        let loaded = match at_revision(&repo, &commit.to_string(), &args.env) {
            Ok(l) => l,
            Err(LoadError::Invalid { revision, problems }) => {
                return Ok(report_problems(&format!("the verified revision {revision} is not valid; nothing published"), &problems));
            }
            Err(LoadError::Missing { env, revision }) => anyhow::bail!("{env} does not exist at the verified revision {revision}"),
            Err(e) => return Err(e.into()),
        };
        let published = stage::publish(&args.to, &commit.to_string(), &args.env, &loaded.files)?;
        let current = args.to.join(stage::CURRENT);
        if published.changed {
            println!("published {} ({} file(s)) to {}", loaded.name, published.files, current.display());
        } else {
            println!("{} is already published at {}", loaded.name, current.display());
        }
        Ok(EXIT_OK)
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}
