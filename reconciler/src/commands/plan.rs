//! `byoc plan`: a pull request's plan from git alone (`--base`, `--head`), or with
//! `--out FILE` the live plan of `--head` saved for `byoc apply FILE`.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use super::apply::{KubeArgs, StoreArgs};
use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_ONLY_BLOCKED, report_problems, report_source_error, usage_error};
use crate::logging;
use crate::pipeline::plan::{PreviewError, preview};
use crate::plan::render::{Comments, GITHUB_COMMENT_CHARS, Report};
use crate::source;
use crate::spec::Cloud;

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

/// Arguments of `byoc plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Path of the git repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// Revision the pull request starts from (observed). Not with --out, which observes
    /// the live environment.
    #[arg(long, required_unless_present = "out", conflicts_with = "out")]
    pub base: Option<String>,
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
    /// Observe the live environment (cloud and Kubernetes, taking the lease while
    /// reading), plan --head against it, and save that plan, pinned to the commit and to
    /// what was observed, for `byoc apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With --out: the state store and cloud endpoint.
    #[command(flatten)]
    pub store: StoreArgs,
    /// With --out: the Kubernetes cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Runs `byoc plan`; returns the exit code.
pub fn run(args: &PlanArgs) -> u8 {
    let Some(base) = &args.base else {
        let out = args.out.as_deref().unwrap_or(std::path::Path::new("plan.json"));
        if args.output != PlanOutput::Text || args.max_comment_chars.is_some() || args.policy.is_some() {
            return usage_error(
                "--out saves the live plan and shows it as text; --output, --max-comment-chars and --policy are for a pull request's plan (--base)",
            );
        }
        return super::apply::save(&args.repo, &args.env, &args.head, &args.store, &args.kube, out);
    };
    let given_live = args.store.state_dir.is_some() || args.store.bucket().is_some() || args.store.endpoint_url.is_some();
    if given_live || args.kube.kubeconfig.is_some() || args.kube.context.is_some() || args.kube.cloud_only {
        return usage_error(
            "--state-dir, --state-s3, --endpoint-url, --kubeconfig, --context and --cloud-only go with --out (a live plan); a pull request's plan (--base) reads git only",
        );
    }
    let (repo, head, env) = (&args.repo, args.head.as_str(), args.env.as_str());
    let comments = match (args.output, args.max_comment_chars) {
        (PlanOutput::Markdown, Some(n)) => Comments::Parts(n as usize),
        (_, Some(_)) => return usage_error("--max-comment-chars splits markdown only; give it with --output markdown"),
        (_, None) => Comments::One(GITHUB_COMMENT_CHARS),
    };
    let repository = match source::open(repo) {
        Ok(r) => r,
        Err(e) => return super::report_error(&e),
    };
    let p = match preview(&repository, base, head, env) {
        Ok(p) => p,
        Err(PreviewError::Source { which, error }) => return report_source_error(which, &error),
        Err(PreviewError::HeadMissing { env, revision }) => {
            logging::error(&format!(
                "{env} does not exist at head {revision}\n  hint: pass the environment directory inside the repository, e.g. --env examples/aws"
            ));
            return EXIT_ERROR;
        }
        Err(PreviewError::Invalid { which, revision, problems }) => {
            return report_problems(&format!("{which} {revision} is not valid"), &problems);
        }
        Err(e @ PreviewError::CloudChanged { .. }) => {
            logging::error(&format!("{e}\n  hint: an environment cannot change cloud; create a new environment directory instead"));
            return EXIT_ERROR;
        }
    };
    let cloud = match p.specs.environment.cloud {
        Cloud::Aws => "aws",
        Cloud::Gcp => "gcp",
        Cloud::Azure => "azure",
    };
    let report =
        Report::new(&p.specs.environment.name, cloud, &p.base, &p.head, &p.plan).with_notes(crate::expand::eks::plan_notes(&p.specs));
    let signatures = match args.policy.as_deref().map(|path| pr_signatures(&repository, path, p.base_commit, p.head_commit)).transpose() {
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
            report.write_text(&mut stdout).and_then(|()| write!(stdout, "\n{}", crate::verify::render_text(s, &p.head)))
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
    exit_code(&p.plan)
}

/// 0 no changes, 2 changes, 3 when every change is blocked (nothing would be applied,
/// and a person must act on each).
fn exit_code(p: &crate::plan::Plan) -> u8 {
    let mut changed = p.changed().peekable();
    if changed.peek().is_none() {
        EXIT_OK
    } else if changed.all(|s| s.action == crate::plan::Action::Blocked) {
        EXIT_ONLY_BLOCKED
    } else {
        EXIT_CHANGES
    }
}

/// Signature status of a pull request's commits: base..head, judged as if seen now.
fn pr_signatures(
    repo: &git2::Repository,
    policy: &std::path::Path,
    base: git2::Oid,
    head: git2::Oid,
) -> Result<crate::verify::RangeReport, String> {
    let policy = crate::verify::policy::Policy::load(policy).map_err(|e| e.to_string())?;
    let from = repo.merge_base(base, head).map_err(|e| format!("base and head share no history: {}", e.message()))?;
    let now = crate::pipeline::source::unix_now();
    crate::verify::verify_range(repo, &policy, Some(from), head, &mut |_| now).map_err(|e| e.message().to_owned())
}
