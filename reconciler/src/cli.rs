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
use crate::logging;
use crate::plan::plan;
use crate::plan::render::{Comments, Report};
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
/// Exit code of `byoc plan` when every entry of the plan is blocked: the pull request asks
/// for something byoc refuses to do (delete a bucket, a retained cluster), and applying it
/// would change nothing.
pub const EXIT_ONLY_BLOCKED: u8 = 3;
/// Exit code for a command line that does not parse (an unknown flag, a value out of
/// range): sysexits' `EX_USAGE`, apart from 2 so CI never reads a typo as "changes".
pub const EXIT_USAGE: u8 = 64;

/// A GitHub comment holds at most this many characters.
pub const GITHUB_COMMENT_CHARS: usize = 65_536;

/// GitOps for RisingWave in your own cloud account.
#[derive(Debug, Parser)]
#[command(
    name = "byoc",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success or no changes, 1 error, 2 the plan has changes, 3 the plan's only entries are blocked, 64 the command line is wrong."
)]
pub struct Cli {
    /// Format of the log lines on stderr: text (colour on a terminal only) or json (one
    /// object a line). Results go to stdout either way.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Formats of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
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
    /// 2 changes, 3 only blocked entries, 1 error.
    Plan(PlanArgs),
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
    /// retained clusters' roles are kept unless --delete-data is given. Exit code: 0
    /// destroyed or nothing to do, 1 error or refused.
    Destroy(DestroyArgs),
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

/// Arguments of `byoc plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Path of the git repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// Revision the pull request starts from (observed).
    #[arg(long)]
    pub base: String,
    /// Revision of the pull request (desired).
    #[arg(long)]
    pub head: String,
    /// Environment directory inside the repository, e.g. examples/aws.
    #[arg(long)]
    pub env: String,
    /// Output format. Markdown fits one GitHub comment (65,536 characters): what does
    /// not fit is counted, not shown; see --max-comment-chars.
    #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
    pub output: PlanOutput,
    /// With --output markdown: split the whole plan into numbered parts of at most this
    /// many characters each (one pull-request comment per part), each starting with a line
    /// `<!-- byoc plan part I/N -->`, instead of cutting it to one comment.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2_000..=1_000_000))]
    pub max_comment_chars: Option<u32>,
    /// Signing policy: also show the signature status of the pull request's commits
    /// (base..head) and which rules still lack signatures. Does not change the exit code.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

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
    /// Output format.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

/// What `byoc apply` and `byoc destroy` both need: the environment, the state store, the
/// cloud endpoint and how to pace the work.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Path of the git repository holding the environment.
    #[arg(long)]
    pub repo: PathBuf,
    /// Environment directory inside the repository, e.g. examples/aws.
    #[arg(long)]
    pub env: String,
    /// State store directory (inventory, journal, lease); default
    /// `<git dir>/byoc-state/<environment name>`, outside the work tree.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The state in a bucket instead, `s3://BUCKET/PREFIX` (conditional writes).
    #[arg(long, conflicts_with = "state_dir")]
    pub state_s3: Option<String>,
    /// Endpoint of an AWS emulator (every service, and --state-s3).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Cloud actions in flight at once (1 to 100).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub concurrency: u16,
    /// Seconds between status reads while waiting for a resource (EKS, NAT gateways);
    /// more than 0.
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub poll_interval: Duration,
    /// Seconds the environment's lease lasts unless renewed (it is renewed while the
    /// command works); 30 to 86400.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u32).range(30..=86_400))]
    pub lease_seconds: u32,
    /// Skip the preflight checks (service-linked role, node-group quota, IAM permission
    /// simulation), e.g. against an emulator that cannot answer them. Each skipped check
    /// is named on stderr.
    #[arg(long)]
    pub skip_preflight: bool,
    /// Kubeconfig of the environment's cluster: `byoc apply` installs the sidecar there,
    /// `byoc destroy` removes it first. Without this or --context neither touches
    /// Kubernetes (and says so).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the environment's cluster (see --kubeconfig).
    #[arg(long)]
    pub context: Option<String>,
}

/// Arguments of `byoc apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Environment, state store and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Revision to apply (read from git objects, not the work tree).
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// The sidecar's container image; default this byoc's release,
    /// ghcr.io/risingwavelabs/byoc:VERSION.
    #[arg(long)]
    pub sidecar_image: Option<String>,
}

/// Arguments of `byoc destroy`.
#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    /// Environment, state store and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Revision the environment (its name and region) is read from.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Destroy without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Lift every protection: empty and delete the data and state buckets, and delete the
    /// roles of clusters whose deletionPolicy is Retain.
    #[arg(long)]
    pub delete_data: bool,
}

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

/// Output formats of `byoc plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    /// For terminals.
    Text,
    /// For pull-request comments.
    Markdown,
    /// For machines; deterministic.
    Json,
}

/// Output formats of the commands that print a report (verify, clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// For terminals.
    Text,
    /// For machines.
    Json,
}

/// A number of seconds, finite and more than zero (`0.5`, `10`).
fn positive_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s} is out of range: give a number of seconds more than 0")),
    }
}

/// Parses the command line; a usage error or `--help` ends the process here, a usage
/// error with [`EXIT_USAGE`].
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK })
    })
}

/// A usage error found after parsing (two flags that do not go together), printed the
/// way clap prints its own.
fn usage_error(message: &str) -> u8 {
    let _ = <Cli as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, message).print();
    EXIT_USAGE
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    crate::logging::init(cli.log_format);
    let code = match cli.command {
        Command::Validate { dir } => validate(&dir),
        Command::Plan(args) => plan_command(&args),
        Command::Clusters(args) => clusters_command(&args),
        Command::Verify(args) => verify_command(&args),
        Command::Publish(args) => publish_command(&args),
        Command::Run { config, once, check } => run_command(&config, once, check),
        Command::Apply(args) => crate::cloud::command::apply(&args),
        Command::Destroy(args) => crate::cloud::command::destroy(&args),
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

fn plan_command(args: &PlanArgs) -> u8 {
    let (repo, base, head, env) = (&args.repo, args.base.as_str(), args.head.as_str(), args.env.as_str());
    let comments = match (args.output, args.max_comment_chars) {
        (PlanOutput::Markdown, Some(n)) => Comments::Parts(n as usize),
        (_, Some(_)) => return usage_error("--max-comment-chars splits markdown only; give it with --output markdown"),
        (_, None) => Comments::One(GITHUB_COMMENT_CHARS),
    };
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
        logging::error(&format!(
            "{env} does not exist at head {}\n  hint: pass the environment directory inside the repository, e.g. --env examples/aws",
            head_rev.name
        ));
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
                    logging::error(&format!(
                        "the pull request moves environment {} from {} to {}\n  hint: an environment cannot change cloud; create a new environment directory instead",
                        env,
                        s.environment.cloud.as_str(),
                        head_specs.environment.cloud.as_str()
                    ));
                    return EXIT_ERROR;
                }
                Some(s)
            }
            Err(problems) => return report_problems(&format!("base {} is not valid", base_rev.name), &problems),
        },
    };
    // The file texts are parsed; what follows needs only the specs.
    drop((head_rev.files, base_rev.files, cache));
    let (observed, desired) = expand_pair(base_specs.as_ref(), &head_specs);
    let the_plan = plan(&desired, &observed);
    drop((observed, desired));
    let report = Report::new(&head_specs.environment.name, cloud_name(&head_specs), &base_rev.name, &head_rev.name, &the_plan);
    let signatures = match args.policy.as_deref().map(|p| pr_signatures(&repository, p, base_rev.commit, head_rev.commit)).transpose() {
        Ok(s) => s,
        Err(e) => {
            logging::error(&e);
            return EXIT_ERROR;
        }
    };
    // Straight to stdout as it is rendered: a plan of thousands of resources is never
    // held as one string.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match (args.output, &signatures) {
        (PlanOutput::Text, None) => report.write_text(&mut stdout),
        (PlanOutput::Text, Some(s)) => {
            report.write_text(&mut stdout).and_then(|()| write!(stdout, "\n{}", crate::verify::render_text(s, &head_rev.name)))
        }
        (PlanOutput::Markdown, s) => {
            let trailer = s.as_ref().map(crate::verify::render_markdown).unwrap_or_default();
            report.write_markdown(&mut stdout, comments, &trailer)
        }
        (PlanOutput::Json, None) => report.write_json(&mut stdout),
        (PlanOutput::Json, Some(s)) => {
            #[derive(serde::Serialize)]
            struct WithSignatures<'a> {
                #[serde(flatten)]
                report: &'a Report<'a>,
                signatures: &'a crate::verify::RangeReport,
            }
            serde_json::to_writer_pretty(&mut stdout, &WithSignatures { report: &report, signatures: s })
                .map_err(std::io::Error::other)
                .and_then(|()| stdout.write_all(b"\n"))
        }
    };
    if let Err(e) = written.and_then(|()| stdout.flush()) {
        logging::error(&format!("cannot write the plan: {e}"));
        return EXIT_ERROR;
    }
    plan_exit_code(&the_plan)
}

/// 0 no changes, 2 changes, 3 when every change is blocked (nothing would be applied,
/// and a person must act on each).
fn plan_exit_code(p: &crate::plan::Plan) -> u8 {
    let mut changed = p.changed().peekable();
    if changed.peek().is_none() {
        EXIT_OK
    } else if changed.all(|s| s.action == crate::plan::Action::Blocked) {
        EXIT_ONLY_BLOCKED
    } else {
        EXIT_CHANGES
    }
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
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            logging::error(&format!("cannot start the async runtime: {e}"));
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(converge_clusters(args, &state_dir, &specs, options)) {
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

async fn converge_clusters(
    args: &ClustersArgs,
    state_dir: &std::path::Path,
    specs: &Specs,
    options: k8s::reconcile::Options,
) -> anyhow::Result<k8s::reconcile::Report> {
    let store = LocalDir::new(state_dir)?;
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
        Err(e) if e.is::<Usage>() => usage_error(&e.to_string()),
        Err(e) => {
            logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

fn verify_run(args: &VerifyArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
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
    let policy = crate::verify::policy::Policy::load(&args.policy).map_err(anyhow::Error::msg)?;
    // With a URL the fetched branch is the default tip, and names it.
    let branch = args.branch.clone().unwrap_or_else(|| "main".to_owned());
    let (repo, default_to, fetched_branch) = if is_url {
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        let remote = crate::fetch::Remote {
            url: args.repo.clone(),
            branch: branch.clone(),
            ssh_key: args.ssh_key.clone(),
            known_hosts: args.ssh_known_hosts.clone(),
            token: std::env::var("BYOC_GIT_TOKEN").ok(),
        };
        let fetched = crate::fetch::fetch(&remote, &cache_dir)?;
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
    let store = crate::state::open(args.state_dir.as_deref(), args.state_s3.as_deref(), args.endpoint_url.as_deref())?;
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
        TextOrJson::Json => serde_json::to_string_pretty(&report)? + "\n",
        TextOrJson::Text => crate::verify::render_text(&report, &name),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crate::logging::error(&format!("cannot start the async runtime: {e}"));
            return EXIT_ERROR;
        }
    };
    let daemon = match crate::run::Daemon::new(config) {
        Ok(d) => d,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"));
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(daemon.run(once)) {
        Ok(crate::run::Ended::Stopped) if once => EXIT_ERROR,
        Ok(_) => EXIT_OK,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

fn publish_command(args: &PublishArgs) -> u8 {
    let run = || -> anyhow::Result<u8> {
        let store = crate::state::open(args.state_dir.as_deref(), args.state_s3.as_deref(), args.endpoint_url.as_deref())?
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
            crate::logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

/// A command line whose flags parse but do not go together.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

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
            logging::error(&e);
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
    for p in problems {
        logging::line(logging::Level::Error, &p.to_string());
    }
    logging::error(&format!("{headline}: {} problem(s)", problems.len()));
    EXIT_ERROR
}

fn report_source_error(which: &str, e: &SourceError) -> u8 {
    match e {
        SourceError::Files(problems) => report_problems(&format!("{which} revision has files that cannot be specs"), problems),
        other => {
            logging::error(&format!("{which}: {other}"));
            EXIT_ERROR
        }
    }
}

fn report_error(e: &SourceError) -> u8 {
    logging::error(&e.to_string());
    EXIT_ERROR
}
