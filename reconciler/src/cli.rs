//! The `byoc` command line: argument types and the commands. `main.rs` only parses and
//! calls [`run`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rwproxy::diagnostics::Diagnostic;
use rwproxy::specfiles;

use std::time::Duration;

use crate::expand::{expand, expand_pair};
use crate::k8s;
use crate::plan::plan;
use crate::plan::render::Report;
use crate::source::{self, SourceError};
use crate::spec::load::{ParseCache, load, load_cached};
use crate::spec::{Cloud, Specs};
use crate::state::{LocalDir, StateStore};
use crate::verify::SourceState;

/// Key in the state store of the values only the cloud knows (an Azure identity's client
/// id, ...), a JSON object by resource id; written by the cloud apply.
pub const CLOUD_OUTPUTS_KEY: &str = "cloud-outputs.json";

/// Exit code for "no changes" / "valid".
pub const EXIT_OK: u8 = 0;
/// Exit code for errors.
pub const EXIT_ERROR: u8 = 1;
/// Exit code for "the plan has changes" (like `terraform plan -detailed-exitcode`).
pub const EXIT_CHANGES: u8 = 2;

/// GitOps for RisingWave in your own cloud account.
#[derive(Debug, Parser)]
#[command(name = "byoc", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an environment directory; prints every problem with file:line:col.
    Validate {
        /// The environment directory.
        dir: PathBuf,
    },
    /// Show what merging head into base would change. Reads both revisions from git
    /// objects; what is observed is the desired state at base. Exit code: 0 no changes,
    /// 2 changes, 1 error.
    Plan {
        /// Path of the git repository.
        #[arg(long)]
        repo: PathBuf,
        /// Revision the pull request starts from (observed).
        #[arg(long)]
        base: String,
        /// Revision of the pull request (desired).
        #[arg(long)]
        head: String,
        /// Environment directory inside the repository, e.g. examples/aws.
        #[arg(long)]
        env: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Signing policy: also show the signature status of the pull request's commits
        /// (base..head) and which rules still lack signatures. Does not change the exit code.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Converge the RisingWave clusters' Kubernetes objects (namespace, service account,
    /// `RisingWave`, frontend service) with server-side apply; prune removed clusters by
    /// their deletionPolicy; wait until each is ready. Exit code: 0 all ready, 1 otherwise.
    Clusters(ClustersArgs),
    /// Verify that every commit in LAST..TO is signed as the signing policy requires, that
    /// TO descends from LAST (fast-forward only), and that each changed path has its rule's
    /// threshold of distinct signers. Exit code: 0 verified, 1 refused or error.
    Verify(VerifyArgs),
    /// The in-account daemon: fetch, verify, converge the clusters in Kubernetes and
    /// publish the routes, on every poll interval and at once on a push webhook; serves
    /// /status, /metrics, /healthz, /readyz and /hooks/git on the configured listen
    /// address. A bad configuration exits 1 before anything starts. Exit code with --once:
    /// 0 applied or unchanged, 1 stopped at a stage.
    Run {
        /// The daemon's configuration (`kind: Reconciler`), kept outside the repository.
        #[arg(long)]
        config: PathBuf,
        /// One reconcile, then exit.
        #[arg(long)]
        once: bool,
        /// Only check the configuration (exit 0 valid, 1 with every problem).
        #[arg(long, conflicts_with = "once")]
        check: bool,
    },
    /// Publish the last verified revision's routes and clusters where RWProxy reads them:
    /// DIR/revisions/<commit>, then DIR/current swapped to it in one step. Only the
    /// revision the state store's high-water mark names is published, after its specs
    /// validate. Exit code: 0 published or already current, 1 otherwise.
    Publish(PublishArgs),
    /// Create or converge the environment's cloud resources (AWS) to a revision: observe
    /// what exists by tag, show the plan, run preflight checks, ask, apply. Holds the
    /// environment's lease throughout; each finished action is recorded, so a rerun after
    /// a crash continues. Exit code: 0 applied or nothing to do, 1 error or refused.
    Apply(ApplyArgs),
    /// Delete every resource tagged for the environment, dependents first. Buckets and
    /// retained clusters' roles are kept unless --delete-data is given.
    Destroy(ApplyArgs),
    /// Roll back by going forward: make one new commit on the current branch whose tree is
    /// REV's, signed through your own git signing set-up (`git commit-tree -S`, so
    /// gpg.format, user.signingkey and gpg.program apply). History is never reset.
    Revert {
        /// Path of the git repository (a work tree).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The revision whose tree to restore.
        #[arg(long)]
        to: String,
        /// Commit message; default "Revert to <REV>".
        #[arg(long, short)]
        message: Option<String>,
    },
}

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
    #[arg(long, conflicts_with = "state_s3")]
    pub state_dir: Option<PathBuf>,
    /// Or the state in a bucket: s3://BUCKET/PREFIX.
    #[arg(long)]
    pub state_s3: Option<String>,
    /// Endpoint for the state bucket (an emulator).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

/// Arguments of `byoc verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The git repository: a local path, or a `file://`, `https://` or `ssh://` URL whose
    /// --branch is fetched into --cache-dir first.
    #[arg(long)]
    pub repo: String,
    /// With a URL: the branch to fetch and verify.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// With a URL: where fetched repositories are cached (one bare repository per URL).
    #[arg(long, default_value = ".byoc-cache")]
    pub cache_dir: PathBuf,
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
    #[arg(long, conflicts_with_all = ["state_dir", "state_s3"])]
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
    #[arg(long, conflicts_with = "state_dir")]
    pub state_s3: Option<String>,
    /// Endpoint of an S3 emulator for --state-s3.
    #[arg(long, requires = "state_s3")]
    pub endpoint_url: Option<String>,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Arguments of `byoc apply` and `byoc destroy`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Path of the git repository holding the environment.
    #[arg(long)]
    pub repo: PathBuf,
    /// Environment directory inside the repository, e.g. examples/aws.
    #[arg(long)]
    pub env: String,
    /// Revision to apply (read from git objects, not the work tree).
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// State store directory (inventory, journal, lease); default .byoc-state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The state in a bucket instead, `s3://BUCKET/PREFIX` (conditional writes).
    #[arg(long, conflicts_with = "state_dir")]
    pub state_s3: Option<String>,
    /// Endpoint of an AWS emulator (every service, and --state-s3).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Cloud actions in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds between status reads while waiting for a resource (EKS, NAT gateways).
    #[arg(long, default_value_t = 10.0)]
    pub poll_interval: f64,
    /// Seconds the environment's lease lasts unless renewed (it is renewed while applying).
    #[arg(long, default_value_t = 900)]
    pub lease_seconds: i64,
    /// destroy only: lift every protection: empty and delete the data and state buckets,
    /// and delete the roles of clusters whose deletionPolicy is Retain.
    #[arg(long)]
    pub delete_data: bool,
}

/// Arguments of `byoc clusters`.
#[derive(Debug, clap::Args)]
pub struct ClustersArgs {
    /// The environment directory (a verified, published revision).
    #[arg(long)]
    pub env: PathBuf,
    /// State store directory: the inventory of applied objects lives here.
    #[arg(long, default_value = ".byoc-state")]
    pub state_dir: PathBuf,
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then the pod's service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Seconds a RisingWave may take to become ready.
    #[arg(long, default_value_t = 600.0)]
    pub health_timeout: f64,
    /// Seconds between status reads.
    #[arg(long, default_value_t = 2.0)]
    pub poll_interval: f64,
    /// Seconds a deleted namespace may take to go.
    #[arg(long, default_value_t = 300.0)]
    pub namespace_timeout: f64,
    /// Output format (text or json).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Plan output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For terminals.
    Text,
    /// For pull-request comments.
    Markdown,
    /// For machines; deterministic.
    Json,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Validate { dir } => validate(&dir),
        Command::Plan { repo, base, head, env, output, policy } => plan_command(&repo, &base, &head, &env, output, policy.as_deref()),
        Command::Clusters(args) => clusters_command(&args),
        Command::Verify(args) => verify_command(&args),
        Command::Publish(args) => publish_command(&args),
        Command::Run { config, once, check } => run_command(&config, once, check),
        Command::Apply(args) => crate::cloud::command::apply(&args, false),
        Command::Destroy(args) => crate::cloud::command::apply(&args, true),
        Command::Revert { repo, to, message } => revert_command(&repo, &to, message.as_deref()),
    };
    ExitCode::from(code)
}

fn validate(dir: &std::path::Path) -> u8 {
    let shown = dir.display().to_string();
    let files = match specfiles::read_dir(dir) {
        Ok(f) => f,
        Err(problems) => return report_problems(&format!("cannot read {shown}"), &problems),
    };
    match load(&shown, &files) {
        Ok(specs) => {
            let graph = expand(&specs);
            println!(
                "{shown}: valid {} environment {:?}: {} cluster(s), {} route(s), {} resource(s)",
                specs.environment.cloud.as_str(),
                specs.environment.name,
                specs.clusters.len(),
                specs.routes.routes.len(),
                graph.len()
            );
            EXIT_OK
        }
        Err(problems) => report_problems(&format!("{shown} is not valid"), &problems),
    }
}

fn plan_command(repo: &std::path::Path, base: &str, head: &str, env: &str, output: Output, policy: Option<&std::path::Path>) -> u8 {
    let repository = match source::open(repo) {
        Ok(r) => r,
        Err(e) => return report_error(&e),
    };
    let head_rev = match source::read(&repository, head, env) {
        Ok(r) => r,
        Err(e) => return report_source_error("head", &e),
    };
    let base_rev = match source::read(&repository, base, env) {
        Ok(r) => r,
        Err(e) => return report_source_error("base", &e),
    };
    let Some(head_files) = &head_rev.files else {
        eprintln!("error: {env} does not exist at head {}", head_rev.name);
        eprintln!("  hint: pass the environment directory inside the repository, e.g. --env examples/aws");
        return EXIT_ERROR;
    };
    // Base and head share most files: each distinct file is parsed once.
    let cache = ParseCache::default();
    let head_specs = match load_cached(env, head_files, &cache) {
        Ok(s) => s,
        Err(problems) => return report_problems(&format!("head {} is not valid", head_rev.name), &problems),
    };
    // The base was merged earlier and should be valid; if it is not, the plan cannot say
    // what exists, so refuse rather than plan against a guess.
    let base_specs = match &base_rev.files {
        None => None,
        Some(files) => match load_cached(env, files, &cache) {
            Ok(s) => {
                if s.environment.cloud != head_specs.environment.cloud {
                    eprintln!(
                        "error: the pull request moves environment {} from {} to {}",
                        env,
                        s.environment.cloud.as_str(),
                        head_specs.environment.cloud.as_str()
                    );
                    eprintln!("  hint: an environment cannot change cloud; create a new environment directory instead");
                    return EXIT_ERROR;
                }
                Some(s)
            }
            Err(problems) => return report_problems(&format!("base {} is not valid", base_rev.name), &problems),
        },
    };
    let (observed, desired) = expand_pair(base_specs.as_ref(), &head_specs);
    let the_plan = plan(&desired, &observed);
    let report = Report::new(&head_specs.environment.name, cloud_name(&head_specs), &base_rev.name, &head_rev.name, &the_plan);
    let signatures = match policy.map(|p| pr_signatures(&repository, p, base_rev.commit, head_rev.commit)).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let text = match (output, &signatures) {
        (Output::Text, None) => report.text(),
        (Output::Text, Some(s)) => report.text() + "\n" + &crate::verify::render_text(s, &head_rev.name),
        (Output::Markdown, None) => report.markdown(),
        (Output::Markdown, Some(s)) => report.markdown() + "\n" + &crate::verify::render_markdown(s),
        (Output::Json, None) => report.json(),
        (Output::Json, Some(s)) => {
            let mut v: serde_json::Value = serde_json::from_str(&report.json()).unwrap_or_default();
            v["signatures"] = serde_json::to_value(s).unwrap_or_default();
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        eprintln!("error: cannot write the plan: {e}");
        return EXIT_ERROR;
    }
    if the_plan.has_changes() { EXIT_CHANGES } else { EXIT_OK }
}

fn clusters_command(args: &ClustersArgs) -> u8 {
    let shown = args.env.display().to_string();
    let specs = match specfiles::read_dir(&args.env) {
        Ok(files) => match load(&shown, &files) {
            Ok(s) => s,
            Err(problems) => return report_problems(&format!("{shown} is not valid"), &problems),
        },
        Err(problems) => return report_problems(&format!("cannot read {shown}"), &problems),
    };
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} takes a non-negative number of seconds, not {s}"))
    };
    let options = match (
        seconds("health-timeout", args.health_timeout),
        seconds("poll-interval", args.poll_interval),
        seconds("namespace-timeout", args.namespace_timeout),
    ) {
        (Ok(health_timeout), Ok(poll_interval), Ok(namespace_timeout)) => {
            k8s::reconcile::Options { health_timeout, poll_interval, namespace_timeout }
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(converge_clusters(args, &specs, options)) {
        Ok(report) => {
            let text = match args.output {
                Output::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
                Output::Text | Output::Markdown => k8s::render_text(&report),
            };
            print!("{text}");
            if report.ok() { EXIT_OK } else { EXIT_ERROR }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

async fn converge_clusters(args: &ClustersArgs, specs: &Specs, options: k8s::reconcile::Options) -> anyhow::Result<k8s::reconcile::Report> {
    let store = LocalDir::new(&args.state_dir)?;
    let outputs: k8s::objects::CloudOutputs = match store.get(CLOUD_OUTPUTS_KEY)? {
        Some(v) => serde_json::from_slice(&v.value).map_err(|e| anyhow::anyhow!("state {CLOUD_OUTPUTS_KEY}: {e}"))?,
        None => Default::default(),
    };
    let desired = k8s::objects::desired(specs, &outputs).map_err(anyhow::Error::msg)?;
    let client = k8s::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let mut reconciler = k8s::reconcile::Reconciler::new(client, &store, options)?;
    reconciler.reconcile(&desired).await
}

fn verify_command(args: &VerifyArgs) -> u8 {
    match verify_run(args) {
        Ok(ok) => {
            if ok {
                EXIT_OK
            } else {
                EXIT_ERROR
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn verify_run(args: &VerifyArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    let policy = crate::verify::policy::Policy::load(&args.policy).map_err(anyhow::Error::msg)?;
    // With a URL the fetched branch is the default tip, and names it.
    let (repo, default_to, fetched_branch) = if crate::fetch::is_url(&args.repo) {
        let remote = crate::fetch::Remote {
            url: args.repo.clone(),
            branch: args.branch.clone(),
            ssh_key: args.ssh_key.clone(),
            known_hosts: args.ssh_known_hosts.clone(),
            token: std::env::var("BYOC_GIT_TOKEN").ok(),
        };
        let fetched = crate::fetch::fetch(&remote, &args.cache_dir)?;
        let what = if fetched.downloaded { "fetched" } else { "remote tip unchanged, nothing fetched:" };
        eprintln!("{what} {} {} at {}", args.repo, args.branch, fetched.tip);
        (fetched.repo, crate::fetch::cache_ref(&args.branch), Some(args.branch.as_str()))
    } else {
        (source::open(std::path::Path::new(&args.repo))?, "HEAD".to_owned(), None)
    };
    let resolve = |rev: &str| -> anyhow::Result<git2::Oid> {
        Ok(repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).with_context(|| format!("unknown revision {rev:?}"))?.id())
    };
    let to_rev = args.to.clone().unwrap_or(default_to);
    let to = resolve(&to_rev)?;
    let store = open_store(args.state_dir.as_deref(), args.state_s3.as_deref(), args.endpoint_url.as_deref())?;
    let (mut state, version) = match &store {
        Some(s) => SourceState::load(s.as_ref())?,
        None => (SourceState::default(), None),
    };
    let from = match &args.from {
        Some(rev) => Some(resolve(rev)?),
        None => state.last_verified(&repo)?,
    };
    let now = unix_now();
    let seen = &mut state.first_seen;
    let report = crate::verify::verify_range(&repo, &policy, from, to, &mut |oid| *seen.entry(oid.to_string()).or_insert(now))
        .with_context(|| format!("walking {}", args.repo))?;
    if let Some(store) = &store {
        state.record(&report, to);
        state.save(store.as_ref(), version.as_deref())?;
    }
    let name = match (fetched_branch, &args.to) {
        (Some(branch), None) => source::label(Some(branch), to),
        _ => source::revision_name(&repo, &to_rev, to),
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
        Output::Text | Output::Markdown => crate::verify::render_text(&report, &name),
    };
    print!("{text}");
    Ok(report.ok)
}

fn run_command(path: &std::path::Path, once: bool, check: bool) -> u8 {
    let config = match crate::run::config::load(path) {
        Ok(c) => c,
        Err(problems) => return report_problems(&format!("{} is not a valid configuration", path.display()), &problems),
    };
    if check {
        println!("{} is a valid configuration", path.display());
        return EXIT_OK;
    }
    // One JSON object a line on stderr, with the stage and revision as fields.
    let _ = tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_ansi(false).try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    let daemon = match crate::run::Daemon::new(config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(daemon.run(once)) {
        Ok(crate::run::Ended::Stopped) if once => EXIT_ERROR,
        Ok(_) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn publish_command(args: &PublishArgs) -> u8 {
    let run = || -> anyhow::Result<u8> {
        let store = open_store(args.state_dir.as_deref(), args.state_s3.as_deref(), args.endpoint_url.as_deref())?
            .ok_or_else(|| anyhow::anyhow!("give --state-dir or --state-s3: only the revision `byoc verify` accepted is published"))?;
        let repo = source::open(&args.repo)?;
        let (state, _) = SourceState::load(store.as_ref())?;
        let Some(verified) = state.last_verified(&repo)? else {
            anyhow::bail!("nothing verified yet in this state store: run `byoc verify` first");
        };
        let revision = source::read(&repo, &verified.to_string(), &args.env)?;
        let Some(files) = &revision.files else {
            anyhow::bail!("{} does not exist at the verified revision {}", args.env, revision.name);
        };
        if let Err(problems) = crate::spec::load::load(&args.env, files) {
            return Ok(report_problems(&format!("the verified revision {} is not valid; nothing published", revision.name), &problems));
        }
        let published = crate::publish::publish(&args.to, &verified.to_string(), &args.env, files)?;
        if published.changed {
            println!("published {} ({} file(s)) to {}", revision.name, published.files, args.to.join(crate::publish::CURRENT).display());
        } else {
            println!("{} is already published at {}", revision.name, args.to.join(crate::publish::CURRENT).display());
        }
        Ok(EXIT_OK)
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

/// The state store the flags name: a directory, or `s3://BUCKET/PREFIX`; `None` for neither.
pub(crate) fn open_store(
    dir: Option<&std::path::Path>,
    s3: Option<&str>,
    endpoint_url: Option<&str>,
) -> anyhow::Result<Option<Box<dyn StateStore>>> {
    Ok(match (dir, s3) {
        (Some(dir), _) => Some(Box::new(LocalDir::new(dir)?)),
        (None, Some(url)) => {
            let (bucket, prefix) = url
                .strip_prefix("s3://")
                .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
                .filter(|(b, _)| !b.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--state-s3 {url:?}: expected s3://BUCKET/PREFIX"))?;
            let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
            Some(Box::new(crate::state::s3::S3Store::new(bucket, &prefix, endpoint_url)?))
        }
        (None, None) => None,
    })
}

fn revert_command(repo: &std::path::Path, to: &str, message: Option<&str>) -> u8 {
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git").arg("-C").arg(repo).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    let run = || -> Result<String, String> {
        if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            return Err("the work tree has uncommitted changes; commit or stash them first".into());
        }
        let head = git(&["rev-parse", "--verify", "HEAD^{commit}"])?;
        let target = git(&["rev-parse", "--verify", &format!("{to}^{{commit}}")]).map_err(|_| format!("unknown revision {to:?}"))?;
        let tree = git(&["rev-parse", &format!("{target}^{{tree}}")])?;
        if git(&["rev-parse", "HEAD^{tree}"])? == tree {
            return Err(format!("HEAD already has the tree of {to}; nothing to revert"));
        }
        let message = message.map_or_else(|| format!("Revert to {to}\n\nRestores the tree of {target}."), str::to_owned);
        let commit = git(&["commit-tree", "-S", &tree, "-p", &head, "-m", &message])?;
        // Moves the branch only if it is still where we read it.
        git(&["update-ref", "-m", &format!("byoc revert --to {to}"), "HEAD", &commit, &head])?;
        git(&["reset", "-q", "--hard", "HEAD"])?;
        Ok(commit)
    };
    match run() {
        Ok(commit) => {
            println!("made signed commit {commit} restoring the tree of {to}; push it for review");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

/// Signature status of a pull request's commits: base..head, judged as if seen now.
fn pr_signatures(
    repo: &git2::Repository,
    policy: &std::path::Path,
    base: git2::Oid,
    head: git2::Oid,
) -> Result<crate::verify::RangeReport, String> {
    let policy = crate::verify::policy::Policy::load(policy)?;
    let from = repo.merge_base(base, head).map_err(|e| format!("base and head share no history: {}", e.message()))?;
    let now = unix_now();
    crate::verify::verify_range(repo, &policy, Some(from), head, &mut |_| now).map_err(|e| e.message().to_owned())
}

/// Seconds since the Unix epoch: when a commit is first seen.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn cloud_name(specs: &Specs) -> &'static str {
    match specs.environment.cloud {
        Cloud::Aws => "aws",
        Cloud::Gcp => "gcp",
        Cloud::Azure => "azure",
    }
}

fn report_problems(headline: &str, problems: &[Diagnostic]) -> u8 {
    let mut stderr = std::io::stderr().lock();
    for p in problems {
        let _ = writeln!(stderr, "{p}");
    }
    let _ = writeln!(stderr, "error: {headline}: {} problem(s)", problems.len());
    EXIT_ERROR
}

fn report_source_error(which: &str, e: &SourceError) -> u8 {
    match e {
        SourceError::Files(problems) => report_problems(&format!("{which} revision has files that cannot be specs"), problems),
        other => {
            eprintln!("error: {which}: {other}");
            EXIT_ERROR
        }
    }
}

fn report_error(e: &SourceError) -> u8 {
    eprintln!("error: {e}");
    EXIT_ERROR
}
