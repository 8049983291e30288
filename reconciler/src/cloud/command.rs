//! `byoc apply` and `byoc destroy`: read the environment at a revision, take the lease,
//! observe, plan, run preflight, ask, apply, report.

use std::io::{BufRead, Write};
use std::time::Instant;

use super::apply::{self, ApplyError, Options, Prepared};
use super::aws::Aws;
use super::cloud_part;
use crate::cli::{ApplyArgs, CLOUD_OUTPUTS_KEY, DestroyArgs, EXIT_ERROR, EXIT_OK, TargetArgs};
use crate::expand::expand;
use crate::logging;
use crate::plan::render::Report;
use crate::plan::{Action, Plan};
use crate::resource::Graph;
use crate::source;
use crate::spec::Cloud as CloudKind;
use crate::spec::load::load;
use crate::state::StateStore;

/// What `byoc apply` and `byoc destroy` were asked to do, whichever it was.
struct Request<'a> {
    target: &'a TargetArgs,
    rev: &'a str,
    auto_approve: bool,
    /// `Some` for a destroy: whether to delete the data too.
    destroy: Option<bool>,
    /// The sidecar's image (`byoc apply --sidecar-image`).
    sidecar_image: Option<&'a str>,
}

/// Runs `byoc apply`; returns the exit code.
pub fn apply(args: &ApplyArgs) -> u8 {
    finish(run(&Request {
        target: &args.target,
        rev: &args.rev,
        auto_approve: args.auto_approve,
        destroy: None,
        sidecar_image: args.sidecar_image.as_deref(),
    }))
}

/// Runs `byoc destroy`; returns the exit code.
pub fn destroy(args: &DestroyArgs) -> u8 {
    finish(run(&Request {
        target: &args.target,
        rev: &args.rev,
        auto_approve: args.auto_approve,
        destroy: Some(args.delete_data),
        sidecar_image: None,
    }))
}

fn finish(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

/// The checks `--skip-preflight` leaves out, as the warning names them.
const SKIPPED_CHECKS: &[&str] = &[
    "the service-linked role AWSServiceRoleForAutoScaling exists (EKS managed node groups need it)",
    "the quota eks/L-6D54EA21 (managed node groups per cluster) is at least 36",
    "iam:SimulatePrincipalPolicy allows the caller every action the plan needs",
];

fn run(request: &Request<'_>) -> anyhow::Result<u8> {
    let args = request.target;
    let destroy = request.destroy.is_some();
    let repository = source::open(&args.repo)?;
    let revision = source::read(&repository, request.rev, &args.env)?;
    let Some(files) = &revision.files else {
        anyhow::bail!("{} does not exist at {}", args.env, revision.name);
    };
    let specs = match load(&args.env, files) {
        Ok(s) => s,
        Err(problems) => {
            logging::error(&format!("{} at {} is not valid; nothing was applied", args.env, revision.name));
            for p in &problems {
                logging::line(logging::Level::Error, &p.to_string());
            }
            return Ok(EXIT_ERROR);
        }
    };
    let env = &specs.environment;
    if env.cloud != CloudKind::Aws {
        anyhow::bail!("environment {} is on {}; byoc apply converges AWS environments only so far", env.name, env.cloud.as_str());
    }
    let desired = if destroy { Graph::default() } else { cloud_part(&expand(&specs)) };
    let state_dir = match (&args.state_dir, &args.state_s3) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(crate::state::default_dir(&repository, &env.name)?),
        (None, Some(_)) => None,
    };
    let store = crate::state::open(state_dir.as_deref(), args.state_s3.as_deref(), args.endpoint_url.as_deref())?
        .ok_or_else(|| anyhow::anyhow!("no state store: give --state-dir or --state-s3"))?;
    let options = Options {
        revision: if destroy { format!("destroy at {}", revision.name) } else { revision.name.clone() },
        concurrency: usize::from(args.concurrency),
        holder: format!("{}:{}", apply::hostname(), std::process::id()),
        lease_ttl: i64::from(args.lease_seconds),
        delete_data: request.destroy == Some(true),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut cloud = Aws::connect(&env.name, &env.region, args.endpoint_url.as_deref()).await;
        cloud.poll = args.poll_interval;
        let started = Instant::now();
        let mut prepared = match apply::prepare(&cloud, &store, &desired, &options).await {
            Ok(p) => p,
            Err(e @ ApplyError::Lease(_)) => {
                logging::error(&format!(
                    "{e}\n  nothing was changed; wait for the other apply to finish, or for the lease to expire if it died"
                ));
                return Ok(EXIT_ERROR);
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        if destroy {
            for s in prepared.plan.steps.iter_mut().filter(|s| s.action == Action::Delete) {
                s.reason = "destroy".to_owned();
            }
        }
        for note in prepared.notes() {
            println!("note: {note}");
        }
        {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            Report::new(&env.name, "aws", "live", &options.revision, &prepared.plan).write_text(&mut stdout)?;
            stdout.flush()?;
        }
        report_blocked(&prepared.plan);
        if destroy && !options.delete_data && prepared.plan.steps.iter().any(|s| s.action == Action::Blocked) {
            println!("kept resources stay; destroy --delete-data deletes them too (emptying the buckets)");
        }
        if !prepared.has_work() {
            println!("nothing to do: the account matches {}", options.revision);
            prepared.release()?;
            if !destroy {
                write_outputs(&store)?;
                return sidecar_after_apply(args, request.sidecar_image, env, &store).await;
            }
            return Ok(EXIT_OK);
        }
        if args.skip_preflight {
            let mut warning = String::from("warning: --skip-preflight: these preflight checks were NOT made, and a failure they would have caught shows only part-way through:");
            for check in SKIPPED_CHECKS {
                warning.push_str("\n  - skipped: ");
                warning.push_str(check);
            }
            logging::line(logging::Level::Warn, &warning);
        } else {
            let check = cloud.preflight(&prepared.plan).await;
            println!("credentials: {}", if check.caller.is_empty() { "unknown" } else { &check.caller });
            for n in &check.notes {
                println!("preflight note: {n}");
            }
            if !check.problems.is_empty() {
                let mut text = format!("error: preflight found {} problem(s); nothing was changed:", check.problems.len());
                for p in &check.problems {
                    text.push_str("\n  - ");
                    text.push_str(p);
                }
                text.push_str("\n  hint: against an emulator that cannot answer these checks, --skip-preflight leaves them out");
                logging::line(logging::Level::Error, &text);
                prepared.release()?;
                return Ok(EXIT_ERROR);
            }
        }
        if !request.auto_approve && !confirm(&env.name, &prepared)? {
            logging::line(logging::Level::Error, "not applied: only 'yes' approves; nothing was changed");
            prepared.release()?;
            return Ok(EXIT_ERROR);
        }
        // The sidecar goes while its cluster is still there to delete it from.
        if destroy && let Err(e) = crate::sidecar::before_destroy(kube_target(args)).await {
            logging::error(&format!("{e:#}\n  nothing was deleted in the cloud; without --kubeconfig/--context destroy skips the sidecar"));
            prepared.release()?;
            return Ok(EXIT_ERROR);
        }
        match prepared.execute(&cloud, options.concurrency).await {
            Ok(done) => {
                write_outputs(&store)?;
                println!(
                    "applied {done} action(s) to {} in {:.1}s; {} retr{} of throttled or failed calls",
                    env.name,
                    started.elapsed().as_secs_f64(),
                    cloud.retry.retries(),
                    if cloud.retry.retries() == 1 { "y" } else { "ies" }
                );
                if destroy { Ok(EXIT_OK) } else { sidecar_after_apply(args, request.sidecar_image, env, &store).await }
            }
            Err(e) => {
                logging::error(&format!("{e}\n  {} retries were made", cloud.retry.retries()));
                Ok(EXIT_ERROR)
            }
        }
    })
}

fn kube_target(args: &TargetArgs) -> crate::sidecar::KubeTarget<'_> {
    crate::sidecar::KubeTarget { kubeconfig: args.kubeconfig.as_deref(), context: args.context.as_deref() }
}

/// Installs the sidecar with the outputs the apply just wrote.
async fn sidecar_after_apply(
    args: &TargetArgs,
    image: Option<&str>,
    env: &crate::spec::Environment,
    store: &impl StateStore,
) -> anyhow::Result<u8> {
    let outputs: crate::k8s::objects::CloudOutputs = match store.get(CLOUD_OUTPUTS_KEY)? {
        Some(v) => serde_json::from_slice(&v.value).map_err(|e| anyhow::anyhow!("state {CLOUD_OUTPUTS_KEY}: {e}"))?,
        None => Default::default(),
    };
    match crate::sidecar::after_apply(kube_target(args), env, &args.env, &outputs, image).await {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => {
            logging::error(&format!("{e:#}\n  the cloud is applied; the sidecar is not: fix the cause and run byoc apply again"));
            Ok(EXIT_ERROR)
        }
    }
}

fn report_blocked(plan: &Plan) {
    for s in plan.steps.iter().filter(|s| s.action == Action::Blocked) {
        println!("kept: {}: {}", s.id, s.reason);
    }
}

fn confirm<S: StateStore>(env: &str, prepared: &Prepared<'_, S>) -> anyhow::Result<bool> {
    let n = prepared.plan.changed().filter(|s| s.action != Action::Blocked).count();
    eprint!("Apply these {n} change(s) to {env}? Only 'yes' approves: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// What Kubernetes objects need from the cloud, by resource id: a role's ARN, anything
/// else's cloud id (the format `byoc clusters` reads).
fn write_outputs(store: &impl StateStore) -> anyhow::Result<()> {
    let (inventory, _) = apply::load_inventory(store)?;
    let outputs: crate::k8s::objects::CloudOutputs = inventory
        .resources
        .iter()
        .map(|(id, r)| (id.clone(), r.outputs.get("arn").cloned().unwrap_or_else(|| r.cloud_id.clone())))
        .collect();
    let current = store.get(CLOUD_OUTPUTS_KEY)?;
    store.put(CLOUD_OUTPUTS_KEY, &serde_json::to_vec_pretty(&outputs)?, current.as_ref().map(|v| v.version.as_str()))?;
    Ok(())
}
