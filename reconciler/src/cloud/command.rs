//! `byoc apply` and `byoc destroy`: read the environment at a revision, take the lease,
//! observe, plan, run preflight, ask, apply, report.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use super::apply::{self, ApplyError, Options, Prepared};
use super::aws::Aws;
use super::cloud_part;
use crate::cli::{ApplyArgs, CLOUD_OUTPUTS_KEY, EXIT_ERROR, EXIT_OK, open_store};
use crate::expand::expand;
use crate::plan::render::Report;
use crate::plan::{Action, Plan};
use crate::resource::Graph;
use crate::source;
use crate::spec::Cloud as CloudKind;
use crate::spec::load::load;
use crate::state::StateStore;

/// Runs `byoc apply` (or `byoc destroy`); returns the exit code.
pub fn apply(args: &ApplyArgs, destroy: bool) -> u8 {
    match run(args, destroy) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn run(args: &ApplyArgs, destroy: bool) -> anyhow::Result<u8> {
    let repository = source::open(&args.repo)?;
    let revision = source::read(&repository, &args.rev, &args.env)?;
    let Some(files) = &revision.files else {
        anyhow::bail!("{} does not exist at {}", args.env, revision.name);
    };
    let specs = match load(&args.env, files) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("error: {} at {} is not valid; nothing was applied", args.env, revision.name);
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(EXIT_ERROR);
        }
    };
    let env = &specs.environment;
    if env.cloud != CloudKind::Aws {
        anyhow::bail!("environment {} is on {}; byoc apply converges AWS environments only so far", env.name, env.cloud.as_str());
    }
    let desired = if destroy { Graph::default() } else { cloud_part(&expand(&specs)) };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| ".byoc-state".into());
    let store = open_store(args.state_s3.is_none().then_some(state_dir.as_path()), args.state_s3.as_deref(), args.endpoint_url.as_deref())?
        .expect("a directory is always given without --state-s3");
    let poll = Duration::try_from_secs_f64(args.poll_interval)
        .map_err(|_| anyhow::anyhow!("--poll-interval takes seconds, not {}", args.poll_interval))?;
    let options = Options {
        revision: if destroy { format!("destroy at {}", revision.name) } else { revision.name.clone() },
        concurrency: args.concurrency.max(1),
        holder: format!("{}:{}", apply::hostname(), std::process::id()),
        lease_ttl: args.lease_seconds.max(3),
        delete_data: destroy && args.delete_data,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut cloud = Aws::connect(&env.name, &env.region, args.endpoint_url.as_deref()).await;
        cloud.poll = poll;
        let started = Instant::now();
        let mut prepared = match apply::prepare(&cloud, &store, &desired, &options).await {
            Ok(p) => p,
            Err(e @ ApplyError::Lease(_)) => {
                eprintln!("error: {e}");
                eprintln!("  nothing was changed; wait for the other apply to finish, or for the lease to expire if it died");
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
        print!("{}", Report::new(&env.name, "aws", "live", &options.revision, &prepared.plan).text());
        report_blocked(&prepared.plan);
        if destroy && !options.delete_data && prepared.plan.steps.iter().any(|s| s.action == Action::Blocked) {
            println!("kept resources stay; destroy --delete-data deletes them too (emptying the buckets)");
        }
        if !prepared.has_work() {
            println!("nothing to do: the account matches {}", options.revision);
            prepared.release()?;
            return Ok(EXIT_OK);
        }
        let check = cloud.preflight(&prepared.plan).await;
        println!("credentials: {}", if check.caller.is_empty() { "unknown" } else { &check.caller });
        for n in &check.notes {
            println!("preflight note: {n}");
        }
        if !check.problems.is_empty() {
            eprintln!("error: preflight found {} problem(s); nothing was changed:", check.problems.len());
            for p in &check.problems {
                eprintln!("  - {p}");
            }
            prepared.release()?;
            return Ok(EXIT_ERROR);
        }
        if !args.auto_approve && !confirm(&env.name, &prepared)? {
            eprintln!("not applied: only 'yes' approves; nothing was changed");
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
                Ok(EXIT_OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("  {} retries were made", cloud.retry.retries());
                Ok(EXIT_ERROR)
            }
        }
    })
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
