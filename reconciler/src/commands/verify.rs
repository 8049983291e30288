//! `byoc verify`: check the signatures of a range of commits, moving the high-water mark.

use std::path::PathBuf;

use anyhow::Context;

use super::{EXIT_ERROR, EXIT_OK, TextOrJson, usage_error};
use crate::logging;
use crate::pipeline::source as stage;
use crate::source;

/// Arguments of `byoc verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The git repository: a local path, or a `file://`, `https://` or `ssh://` URL whose
    /// --branch is fetched into --cache-dir first.
    #[arg(long)]
    pub repo: String,
    /// With a URL: the branch to fetch and verify (default main).
    #[arg(long)]
    pub branch: Option<String>,
    /// With a URL: where fetched repositories are cached (one bare repository per URL);
    /// default $XDG_CACHE_HOME/byoc/git, else ~/.cache/byoc/git.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// With an ssh:// URL: the private key to authenticate with.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// With an ssh:// URL: known_hosts file the server's host key must be listed in.
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// The signing policy (a file outside the repository).
    #[arg(long)]
    pub policy: PathBuf,
    /// Last verified revision; default: the one recorded in the state store, else none
    /// (the whole history is verified).
    #[arg(long, conflicts_with_all = ["state_dir", "state_s3", "state_gcs", "state_azblob"])]
    pub from: Option<String>,
    /// The new tip; default: HEAD of a local repository, the fetched branch of a URL.
    #[arg(long)]
    pub to: Option<String>,
    /// State store directory: keeps the last verified revision (the high-water mark) and
    /// when each pending commit was first seen; advanced only when the range verifies.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The same state in a bucket, `s3://BUCKET/PREFIX` (conditional writes; credentials
    /// from the default chain, including web identity).
    #[arg(long, conflicts_with_all = ["state_dir", "state_gcs", "state_azblob"], value_parser = crate::state::s3_flag)]
    pub state_s3: Option<String>,
    /// Or in a GCS bucket, `gs://BUCKET/PREFIX` (application-default credentials).
    #[arg(long, conflicts_with_all = ["state_dir", "state_azblob"], value_parser = crate::state::gcs_flag)]
    pub state_gcs: Option<String>,
    /// Or in an Azure Blob container, `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`
    /// (the workload identity, or a SAS in AZURE_STORAGE_SAS_TOKEN).
    #[arg(long, conflicts_with = "state_dir", value_parser = crate::state::azblob_flag)]
    pub state_azblob: Option<String>,
    /// Endpoint of an S3 or GCS emulator for --state-s3 or --state-gcs.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

/// Runs `byoc verify`; returns the exit code.
pub fn run(args: &VerifyArgs) -> u8 {
    match verify(args) {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_ERROR,
        Err(e) if e.is::<Usage>() => usage_error(&e.to_string()),
        Err(e) => {
            logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

/// A command line whose flags parse but do not go together.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn verify(args: &VerifyArgs) -> anyhow::Result<bool> {
    let is_url = crate::fetch::is_url(&args.repo);
    if !is_url {
        let remote_only = [
            ("--branch", args.branch.is_some()),
            ("--cache-dir", args.cache_dir.is_some()),
            ("--ssh-key", args.ssh_key.is_some()),
            ("--ssh-known-hosts", args.ssh_known_hosts.is_some()),
        ];
        if let Some((flag, _)) = remote_only.iter().find(|(_, given)| *given) {
            return Err(Usage(format!(
                "{flag} applies to a repository URL (file://, https://, ssh://), and --repo {} is a local path",
                args.repo
            ))
            .into());
        }
    }
    let policy = crate::verify::policy::Policy::load(&args.policy)?;
    // With a URL the fetched branch is the default tip, and names it.
    let branch = args.branch.clone().unwrap_or_else(|| "main".to_owned());
    let (repo, default_to, fetched_branch) = if is_url {
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        let remote = stage::Remote {
            url: args.repo.clone(),
            branch: branch.clone(),
            ssh_key: args.ssh_key.clone(),
            known_hosts: args.ssh_known_hosts.clone(),
            token: std::env::var("BYOC_GIT_TOKEN").ok(),
        };
        let fetched = stage::fetch(&remote, &cache_dir)?;
        let what = if fetched.downloaded { "fetched" } else { "remote tip unchanged, nothing fetched:" };
        logging::line(logging::Level::Info, &format!("{what} {} {branch} at {}", args.repo, fetched.tip));
        (fetched.repo, crate::fetch::cache_ref(&branch), Some(branch.as_str()))
    } else {
        (source::open(std::path::Path::new(&args.repo))?, "HEAD".to_owned(), None)
    };
    let resolve = |rev: &str| -> anyhow::Result<git2::Oid> {
        Ok(repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).with_context(|| format!("unknown revision {rev:?}"))?.id())
    };
    let to_rev = args.to.clone().unwrap_or(default_to);
    let to = resolve(&to_rev)?;
    let from = args.from.as_deref().map(resolve).transpose()?;
    // The state store is async; this one-shot command gives it a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let store = crate::state::open(
            args.state_dir.as_deref(),
            args.state_s3.as_deref().or(args.state_gcs.as_deref()).or(args.state_azblob.as_deref()),
            args.endpoint_url.as_deref(),
        )
        .await?;
        stage::verify(&repo, &policy, store.as_deref(), from, to, stage::unix_now()).await.map_err(|e| match e {
            stage::VerifyError::Walk(m) => anyhow::anyhow!("walking {}: {m}", args.repo),
            other => other.into(),
        })
    })?;
    let name = match (fetched_branch, &args.to) {
        (Some(branch), None) => source::label(Some(branch), to),
        _ => source::revision_name(&repo, &to_rev, to),
    };
    let text = match args.output {
        TextOrJson::Json => serde_json::to_string_pretty(&report)? + "\n",
        TextOrJson::Text => crate::verify::render_text(&report, &name),
    };
    print!("{text}");
    Ok(report.ok)
}

/// Where fetched repositories are cached by default: `$XDG_CACHE_HOME/byoc/git`, else
/// `~/.cache/byoc/git`; never the current directory, which is often a work tree.
fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let base = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache"),
        _ => anyhow::bail!("neither XDG_CACHE_HOME nor HOME is set; give --cache-dir"),
    };
    Ok(base.join("byoc").join("git"))
}
