//! The `byoc` command line: argument parsing only. Each command's arguments and its code
//! live in its module under [`crate::commands`]; [`run`] dispatches to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::apply::{ApplyArgs, DestroyArgs};
use crate::commands::clusters::ClustersArgs;
use crate::commands::plan::PlanArgs;
use crate::commands::publish::PublishArgs;
use crate::commands::verify::VerifyArgs;
use crate::commands::{self, EXIT_OK, EXIT_USAGE};
pub use crate::logging::LogFormat;

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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an environment directory; prints every problem with file:line:col.
    Validate {
        /// The environment directory.
        dir: PathBuf,
    },
    /// Show what merging head into base would change. Reads both revisions from git
    /// objects; what is observed is the desired state at base. With --out FILE instead of
    /// --base: observe the live environment, plan head against it and save that plan for
    /// `byoc apply FILE`. Exit code: 0 no changes, 2 changes, 3 only blocked entries, 1
    /// error (with --out: 0 saved, 1 error).
    Plan(PlanArgs),
    /// Converge the RisingWave clusters' Kubernetes objects of a work-tree directory
    /// (namespace, service account, `RisingWave`) with server-side apply; prune removed
    /// clusters by their deletionPolicy; wait until each is ready. The same Kubernetes
    /// stage `byoc apply` runs for a revision. Exit code: 0 all ready, 1 otherwise.
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
    /// Converge the environment to a revision, everything its plan shows: the cloud
    /// resources (AWS), then the RisingWave clusters' Kubernetes objects. Observes what
    /// exists, shows the plan, runs preflight checks, asks, applies. Holds the
    /// environment's lease; each finished cloud action is recorded, so a rerun after a
    /// crash continues. With PLAN_FILE (from `byoc plan --out`): applies exactly that
    /// plan, or refuses if the live state moved since. Exit code: 0 applied or nothing to
    /// do, 1 error or refused.
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

/// Parses the command line; a usage error or `--help` ends the process here, a usage
/// error with [`EXIT_USAGE`].
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK })
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    crate::logging::init(cli.log_format);
    let code = match cli.command {
        Command::Validate { dir } => commands::validate::run(&dir),
        Command::Plan(args) => commands::plan::run(&args),
        Command::Clusters(args) => commands::clusters::run(&args),
        Command::Verify(args) => commands::verify::run(&args),
        Command::Publish(args) => commands::publish::run(&args),
        Command::Run { config, once, check } => commands::run::run(&config, once, check),
        Command::Apply(args) => commands::apply::apply(&args),
        Command::Destroy(args) => commands::apply::destroy(&args),
        Command::Revert { repo, to, message } => commands::revert::run(&repo, &to, message.as_deref()),
    };
    ExitCode::from(code)
}
