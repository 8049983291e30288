//! `byoc apply`, `byoc destroy` and `byoc plan --out`: read the environment at a
//! revision, take the lease, observe the cloud and Kubernetes, plan
//! ([`crate::pipeline::plan::live`]), then show the plan and either save it, or run
//! preflight, ask, and apply it: the cloud half, then the Kubernetes half
//! ([`crate::pipeline::apply`]). `byoc apply FILE` applies a saved plan exactly, and
//! refuses, changing nothing, when the live state moved since it was made.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::plan_file::{self, Body};
use super::{EXIT_ERROR, EXIT_OK, positive_seconds};
use crate::cloud::apply::{self, ApplyError, Options};
use crate::cloud::aws::Aws;
use crate::cloud::aws::preflight::Preflight;
use crate::cloud::azure::{self, Azure};
use crate::cloud::gcp::Gcp;
use crate::cloud::{Cloud, CloudError, Found, Refs};
use crate::logging;
use crate::pipeline::apply::{Kubernetes, WAITS_FOR_THE_CLUSTER, after_kubernetes, cloud_after_kubernetes, write_cloud_outputs};
use crate::pipeline::load::{LoadError, at_revision};
use crate::pipeline::plan::{LiveError, live};
use crate::plan::render::Report;
use crate::plan::{Action, Plan};
use crate::resource::{Kind, Resource, ResourceId, Value};
use crate::source;
use crate::spec::Cloud as CloudKind;

/// Where the environment's state is and how to reach its cloud: what every live plan
/// needs (`byoc apply`, `byoc destroy`, `byoc plan --out`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// State store directory (inventory, journal, lease); default
    /// `<git dir>/byoc-state/<environment name>`, outside the work tree.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The state in a bucket instead, `s3://BUCKET/PREFIX` (conditional writes).
    #[arg(long, conflicts_with_all = ["state_dir", "state_gcs", "state_azblob"], value_parser = crate::state::s3_flag)]
    pub state_s3: Option<String>,
    /// The state in a GCS bucket, `gs://BUCKET/PREFIX` (generation preconditions;
    /// application-default credentials).
    #[arg(long, conflicts_with_all = ["state_dir", "state_azblob"], value_parser = crate::state::gcs_flag)]
    pub state_gcs: Option<String>,
    /// The state in an Azure Blob container,
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX` (ETag preconditions; the
    /// workload identity, or a SAS in AZURE_STORAGE_SAS_TOKEN).
    #[arg(long, conflicts_with = "state_dir", value_parser = crate::state::azblob_flag)]
    pub state_azblob: Option<String>,
    /// Endpoint of an AWS emulator (every service, and --state-s3), of a GCP emulator (every
    /// Google API, called anonymously), or of a GCS emulator for --state-gcs.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Extra CA certificates (PEM) to trust for --endpoint-url on Azure, added to the
    /// system's roots (an ARM emulator's test CA). Azure credentials come from
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, else the workload identity.
    #[arg(long, requires = "endpoint_url")]
    pub endpoint_ca: Option<PathBuf>,
}

impl StoreArgs {
    /// The bucket or container given, whichever flag named it.
    pub fn bucket(&self) -> Option<&str> {
        self.state_s3.as_deref().or(self.state_gcs.as_deref()).or(self.state_azblob.as_deref())
    }
}

/// Which Kubernetes cluster the environment's RisingWave clusters live in.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then the pod's service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Plan and apply only the cloud half (e.g. the first bootstrap, before the
    /// Kubernetes cluster it creates is reachable); the plan then shows no Kubernetes
    /// objects.
    #[arg(long)]
    pub cloud_only: bool,
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
    /// State store and cloud endpoint.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Cloud actions in flight at once (1 to 100).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub concurrency: u16,
    /// Seconds between status reads while waiting for a resource (EKS, NAT gateways, a
    /// RisingWave becoming ready); more than 0.
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub poll_interval: Duration,
    /// Seconds the environment's lease lasts unless renewed (it is renewed while the
    /// command works); 30 to 86400.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u32).range(30..=86_400))]
    pub lease_seconds: u32,
    /// Skip the preflight checks (AWS: service-linked role, node-group quota, IAM
    /// permission simulation; GCP: enabled APIs, testIamPermissions, the region), e.g.
    /// against an emulator that cannot answer them. Each skipped check
    /// is named on stderr.
    #[arg(long)]
    pub skip_preflight: bool,
}

/// Arguments of `byoc apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved by `byoc plan --out`: apply exactly it, or refuse if the live state
    /// moved since or the file was changed.
    #[arg(value_name = "PLAN_FILE", conflicts_with = "rev")]
    pub plan_file: Option<PathBuf>,
    /// Environment, state store and pacing.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The Kubernetes cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Revision to apply (read from git objects, not the work tree); default HEAD.
    #[arg(long)]
    pub rev: Option<String>,
    /// Seconds a RisingWave may take to become ready; more than 0.
    #[arg(long, default_value = "600", value_parser = positive_seconds)]
    pub health_timeout: Duration,
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
    /// Kubeconfig of the environment's cluster: the sidecar is removed from it before the
    /// cloud is deleted. Without this or --context the sidecar is left alone (and said so).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the environment's cluster (see --kubeconfig).
    #[arg(long)]
    pub context: Option<String>,
}

/// What the live plan is for.
enum Mode<'a> {
    /// Apply it (asking unless `auto_approve`); `saved`: only if it is this saved plan.
    Apply { auto_approve: bool, saved: Option<Body>, health_timeout: Duration, sidecar_image: Option<&'a str> },
    /// Delete everything; `delete_data` lifts the protections; the sidecar goes first from
    /// the cluster `sidecar` names.
    Destroy { auto_approve: bool, delete_data: bool, sidecar: crate::sidecar::KubeTarget<'a> },
    /// Save it to a file.
    Save { out: &'a std::path::Path },
}

/// Everything one live plan is made from.
struct Request<'a> {
    repo: &'a std::path::Path,
    env: &'a str,
    rev: String,
    store: &'a StoreArgs,
    /// `None`: the cloud half only.
    kube: Option<&'a KubeArgs>,
    concurrency: u16,
    poll_interval: Duration,
    lease_seconds: u32,
    skip_preflight: bool,
    mode: Mode<'a>,
}

/// Runs `byoc apply`; returns the exit code.
pub fn apply(args: &ApplyArgs) -> u8 {
    let saved = match &args.plan_file {
        Some(path) => match plan_file::read(path) {
            Ok(body) => Some(body),
            Err(e) => return super::report_error(&e),
        },
        None => None,
    };
    if let Some(body) = &saved
        && body.environment != args.target.env
    {
        logging::error(&format!(
            "the saved plan is for environment {}, not --env {}; nothing was applied",
            body.environment, args.target.env
        ));
        return EXIT_ERROR;
    }
    // Nothing says where Kubernetes is: the plan and the apply cover the cloud half, and
    // say so before anything is planned.
    let unconfigured = !args.kube.cloud_only && args.kube.kubeconfig.is_none() && args.kube.context.is_none() && !crate::k8s::configured();
    if unconfigured && saved.is_none() {
        logging::line(
            logging::Level::Warn,
            "warning: no Kubernetes configuration found ($KUBECONFIG, ~/.kube/config, a pod's service account): planning and applying the cloud half only; give --kubeconfig/--context to include the clusters' Kubernetes objects, or --cloud-only to silence this",
        );
    }
    let rev = match (&saved, &args.rev) {
        (Some(body), _) => body.commit.clone(),
        (None, Some(rev)) => rev.clone(),
        (None, None) => "HEAD".to_owned(),
    };
    let t = &args.target;
    finish(run(Request {
        repo: &t.repo,
        env: &t.env,
        rev,
        store: &t.store,
        // A saved plan covers the halves it was made with.
        kube: saved.as_ref().map_or(!args.kube.cloud_only && !unconfigured, |b| b.kubernetes).then_some(&args.kube),
        concurrency: t.concurrency,
        poll_interval: t.poll_interval,
        lease_seconds: t.lease_seconds,
        skip_preflight: t.skip_preflight,
        mode: Mode::Apply {
            auto_approve: args.auto_approve,
            saved,
            health_timeout: args.health_timeout,
            sidecar_image: args.sidecar_image.as_deref(),
        },
    }))
}

/// Runs `byoc destroy`; returns the exit code.
pub fn destroy(args: &DestroyArgs) -> u8 {
    let t = &args.target;
    finish(run(Request {
        repo: &t.repo,
        env: &t.env,
        rev: args.rev.clone(),
        store: &t.store,
        kube: None,
        concurrency: t.concurrency,
        poll_interval: t.poll_interval,
        lease_seconds: t.lease_seconds,
        skip_preflight: t.skip_preflight,
        mode: Mode::Destroy {
            auto_approve: args.auto_approve,
            delete_data: args.delete_data,
            sidecar: crate::sidecar::KubeTarget { kubeconfig: args.kubeconfig.as_deref(), context: args.context.as_deref() },
        },
    }))
}

/// Runs `byoc plan --out FILE`: the live plan of `rev`, shown and saved.
pub fn save(repo: &std::path::Path, env: &str, rev: &str, store: &StoreArgs, kube: &KubeArgs, out: &std::path::Path) -> u8 {
    let unconfigured = !kube.cloud_only && kube.kubeconfig.is_none() && kube.context.is_none() && !crate::k8s::configured();
    if unconfigured {
        logging::line(
            logging::Level::Warn,
            "warning: no Kubernetes configuration found ($KUBECONFIG, ~/.kube/config, a pod's service account): the saved plan covers the cloud half only; give --kubeconfig/--context to include the clusters' Kubernetes objects",
        );
    }
    finish(run(Request {
        repo,
        env,
        rev: rev.to_owned(),
        store,
        kube: (!kube.cloud_only && !unconfigured).then_some(kube),
        concurrency: 1,
        poll_interval: Duration::from_secs(10),
        lease_seconds: 300,
        skip_preflight: true,
        mode: Mode::Save { out },
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
const AWS_SKIPPED_CHECKS: &[&str] = &[
    "the credentials are for the account spec.account names",
    "the quota eks/L-6D54EA21 (managed node groups per cluster) is at least 36",
    "iam:SimulatePrincipalPolicy allows the caller every action the plan needs, with the context its calls carry (iam:PassedToService, ec2:CreateAction)",
    "the service-linked roles AWSServiceRoleForAmazonEKS, AWSServiceRoleForAmazonEKSNodegroup and AWSServiceRoleForAutoScaling exist, or the caller may iam:CreateServiceLinkedRole for them",
    "EKS offers the spec's Kubernetes version in the support the spec asks for (eks:DescribeClusterVersions)",
];

const AZURE_SKIPPED_CHECKS: &[&str] = &[
    "the resource providers the plan uses are registered in the subscription",
    "the caller holds Owner, or Contributor with User Access Administrator, on the resource group or above",
    "the state of the EnableAPIServerVnetIntegrationPreview feature flag",
];

const GCP_SKIPPED_CHECKS: &[&str] = &[
    "the APIs compute, container, iam and cloudresourcemanager are enabled in the project (serviceusage services.batchGet)",
    "the caller holds every permission the plan needs on the project (testIamPermissions)",
    "the region exists for GKE",
];

/// The environment's cloud: one arm per provider, each implementing [`Cloud`], so apply,
/// destroy and plan --out run one code path whatever the cloud.
// One value per command, never moved in a loop: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Provider {
    /// AWS, through the AWS SDK.
    Aws(Aws),
    /// GCP, through Google's clients.
    Gcp(Gcp),
    /// Azure, through Azure Resource Manager.
    Azure(Azure),
}

impl Provider {
    /// Clients for the environment's cloud. `desired` (the cloud graph) and `inventory`
    /// say what observe must look for by name where the cloud cannot list by ownership
    /// (buckets; on GCP also IAM bindings and service accounts).
    async fn connect(
        env: &crate::spec::Environment,
        store: &StoreArgs,
        poll: Duration,
        desired: &crate::resource::Graph,
        inventory: &crate::cloud::Inventory,
    ) -> anyhow::Result<Provider> {
        Ok(match env.cloud {
            CloudKind::Aws => {
                let mut cloud = Aws::connect(&env.name, &env.region, store.endpoint_url.as_deref()).await;
                cloud.poll = poll;
                cloud.buckets = vec![env.data_bucket.clone(), env.state_bucket.clone()];
                cloud.state_store_bucket =
                    store.state_s3.as_deref().and_then(|u| u.strip_prefix("s3://")).and_then(|u| u.split('/').next()).map(str::to_owned);
                Provider::Aws(cloud)
            }
            CloudKind::Gcp => {
                let mut cloud = Gcp::connect(&env.name, &env.account, &env.region, store.endpoint_url.as_deref()).await?;
                cloud.poll = poll;
                cloud.know(desired, inventory);
                Provider::Gcp(cloud)
            }
            CloudKind::Azure => {
                let rg = crate::expand::azure::resource_group_name(desired);
                let extra_ca_pem = match &store.endpoint_ca {
                    Some(path) => {
                        Some(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--endpoint-ca {}: {e}", path.display()))?)
                    }
                    None => None,
                };
                let endpoint = azure::Endpoint { url: store.endpoint_url.clone(), extra_ca_pem };
                let mut cloud = Azure::connect(&env.name, &env.account, &env.region, &rg, &endpoint, &azure::Credential::from_env())?;
                cloud.arm().poll = poll;
                cloud.know(desired, inventory);
                Provider::Azure(cloud)
            }
        })
    }

    /// Machine name of the cloud, as plans show it.
    fn name(&self) -> &'static str {
        match self {
            Provider::Aws(_) => "aws",
            Provider::Gcp(_) => "gcp",
            Provider::Azure(_) => "azure",
        }
    }

    /// Retries made so far.
    fn retries(&self) -> u32 {
        match self {
            Provider::Aws(c) => c.retry.retries(),
            Provider::Gcp(c) => c.retry.retries(),
            Provider::Azure(c) => c.retries(),
        }
    }

    /// The checks `--skip-preflight` leaves out.
    fn skipped_checks(&self) -> &'static [&'static str] {
        match self {
            Provider::Aws(_) => AWS_SKIPPED_CHECKS,
            Provider::Gcp(_) => GCP_SKIPPED_CHECKS,
            Provider::Azure(_) => AZURE_SKIPPED_CHECKS,
        }
    }

    /// Every preflight problem of `plan`, at once.
    async fn preflight(&self, plan: &Plan, env: &crate::spec::Environment) -> Preflight {
        match self {
            Provider::Aws(c) => {
                let mut check = c.preflight(plan, &env.account).await;
                // Which versions EKS offers today, asked of EKS when the cluster is made or changed.
                if plan.changed().any(|s| s.kind == Kind::AwsEksCluster && s.action != Action::Delete) {
                    let k = &env.kubernetes;
                    check.problems.extend(c.version_problems(&k.version, k.extended_support, &k.version_at).await);
                }
                check
            }
            Provider::Gcp(c) => c.preflight(plan).await,
            Provider::Azure(c) => {
                let check = c.preflight(plan).await;
                Preflight { caller: check.caller, problems: check.problems, notes: check.notes }
            }
        }
    }

    /// Notes shown under the plan.
    fn notes(&self, specs: &crate::spec::Specs) -> Vec<String> {
        match self {
            Provider::Aws(_) => crate::expand::eks::plan_notes(specs),
            Provider::Gcp(_) | Provider::Azure(_) => Vec::new(),
        }
    }
}

impl Cloud for Provider {
    async fn observe(&self) -> Result<Vec<Found>, CloudError> {
        match self {
            Provider::Aws(c) => c.observe().await,
            Provider::Gcp(c) => c.observe().await,
            Provider::Azure(c) => c.observe().await,
        }
    }

    async fn ensure(&self, desired: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        match self {
            Provider::Aws(c) => c.ensure(desired, existing, refs).await,
            Provider::Gcp(c) => c.ensure(desired, existing, refs).await,
            Provider::Azure(c) => c.ensure(desired, existing, refs).await,
        }
    }

    async fn delete(&self, found: &Found) -> Result<(), CloudError> {
        match self {
            Provider::Aws(c) => c.delete(found).await,
            Provider::Gcp(c) => c.delete(found).await,
            Provider::Azure(c) => c.delete(found).await,
        }
    }
}

fn run(request: Request<'_>) -> anyhow::Result<u8> {
    let destroy = matches!(request.mode, Mode::Destroy { .. });
    let repository = source::open(request.repo)?;
    let loaded = match at_revision(&repository, &request.rev, request.env) {
        Ok(l) => l,
        Err(LoadError::Invalid { revision, problems }) => {
            logging::error(&format!("{} at {revision} is not valid; nothing was applied", request.env));
            for p in &problems {
                logging::line(logging::Level::Error, &p.to_string());
            }
            return Ok(EXIT_ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    let env = &loaded.specs.environment;
    let args = request.store;
    let state_dir = match (&args.state_dir, args.bucket()) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(crate::state::default_dir(&repository, &env.name)?),
        (None, Some(_)) => None,
    };
    let options = Options {
        revision: if destroy { format!("destroy at {}", loaded.name) } else { loaded.name.clone() },
        concurrency: usize::from(request.concurrency),
        holder: format!("{}:{}", apply::hostname(), std::process::id()),
        lease_ttl: i64::from(request.lease_seconds),
        delete_data: matches!(request.mode, Mode::Destroy { delete_data: true, .. }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = crate::state::open(state_dir.as_deref(), args.bucket(), args.endpoint_url.as_deref())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no state store: give --state-dir, --state-s3, --state-gcs or --state-azblob"))?;
        // What observe must look for by name where the cloud cannot list by ownership.
        let (inventory, _) = apply::load_inventory(store.as_ref()).await?;
        // The whole graph: the sidecar's load-balancer objects come from its in-cluster part.
        let full = crate::expand::expand(&loaded.specs);
        let desired = crate::cloud::cloud_part(&full);
        let cloud = match Provider::connect(env, args, request.poll_interval, &desired, &inventory).await {
            Ok(c) => c,
            Err(e) => {
                logging::error(&format!("{e:#}\n  nothing was changed"));
                return Ok(EXIT_ERROR);
            }
        };
        let client = match request.kube {
            Some(k) => match crate::k8s::client(k.kubeconfig.as_deref(), k.context.as_deref()).await {
                Ok(c) => Some(c),
                Err(e) => {
                    logging::error(&format!(
                        "cannot reach Kubernetes: {e:#}\n  nothing was changed; give --kubeconfig/--context, or --cloud-only to plan and apply the cloud half only"
                    ));
                    return Ok(EXIT_ERROR);
                }
            },
            None => None,
        };
        let started = Instant::now();
        let mut live = match live(&cloud, &store, &repository, request.env, &loaded, client.as_ref(), &options, destroy).await {
            Ok(p) => p,
            Err(e @ LiveError::Cloud(ApplyError::Lease(_))) => {
                logging::error(&format!(
                    "{e}\n  nothing was changed; wait for the other apply to finish, or for the lease to expire if it died"
                ));
                return Ok(EXIT_ERROR);
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        if destroy {
            for s in live.cloud.plan.steps.iter_mut().chain(live.plan.steps.iter_mut()).filter(|s| s.action == Action::Delete) {
                s.reason = "destroy".to_owned();
            }
        }
        if let Mode::Apply { saved: Some(saved), .. } = &request.mode {
            let why = if saved.observed != live.fingerprint {
                Some("the live state moved since the plan was made (an apply, a drift, a change in Kubernetes)")
            } else if saved.plan != serde_json::to_value(&live.plan)? {
                Some("the same state plans differently now (another byoc version?)")
            } else {
                None
            };
            if let Some(why) = why {
                logging::error(&format!(
                    "the saved plan of {} is stale: {why}\n  nothing was applied; make a new plan with `byoc plan --out` and review it",
                    saved.revision
                ));
                live.cloud.release().await?;
                return Ok(EXIT_ERROR);
            }
        }
        for note in live.cloud.notes() {
            println!("note: {note}");
        }
        if !destroy && env.cloud == CloudKind::Aws && env.kubernetes.api_access.public_cidrs.is_empty() {
            println!(
                "note: the Kubernetes API endpoint of {} is private (kubernetes.apiAccess.publicCidrs is empty): installing in the cluster works only from inside the VPC (a runner or bastion there); from elsewhere, list your network in publicCidrs or use --cloud-only",
                env.name
            );
        }
        let printed = {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let notes = if destroy { Vec::new() } else { cloud.notes(&loaded.specs) };
            Report::new(&env.name, cloud.name(), "live", &options.revision, &live.plan)
                .with_notes(notes)
                .write_text(&mut stdout)
                .and_then(|()| stdout.flush())
        };
        if let Err(e) = printed {
            // Nothing was changed: the lease goes back before the error is reported.
            live.cloud.release().await?;
            return Err(e.into());
        }
        report_blocked(&live.plan);
        if let Mode::Destroy { delete_data: false, .. } = request.mode
            && live.plan.steps.iter().any(|s| s.action == Action::Blocked)
        {
            println!("kept resources stay; destroy --delete-data deletes them too (emptying the buckets)");
        }
        if let Mode::Save { out } = request.mode {
            let body = Body {
                format: plan_file::FORMAT.to_owned(),
                environment: request.env.to_owned(),
                commit: loaded.commit.to_string(),
                revision: loaded.name.clone(),
                kubernetes: client.is_some(),
                observed: live.fingerprint.clone(),
                plan: serde_json::to_value(&live.plan)?,
            };
            live.cloud.release().await?;
            plan_file::write(out, &body)?;
            println!("saved the plan of {} to {}; `byoc apply {}` applies exactly it", loaded.name, out.display(), out.display());
            return Ok(EXIT_OK);
        }
        // EKS cannot lower a cluster's version: refused before anything changes.
        let running = live
            .cloud
            .observed
            .graph
            .resources
            .get(&ResourceId::new(Kind::AwsEksCluster, "main"))
            .and_then(|r| r.properties.get("version"))
            .and_then(Value::as_str);
        if !destroy && let Some(e) = running.and_then(|v| crate::expand::eks::downgrade(&env.kubernetes.version_at, v, &env.kubernetes.version)) {
            logging::error(&format!("{e}\n  nothing was changed"));
            live.cloud.release().await?;
            return Ok(EXIT_ERROR);
        }
        let kubernetes_work = live.kubernetes_changes();
        let cloud_work = live.cloud.has_work();
        if !cloud_work && !kubernetes_work {
            let waiting = live.plan.steps.iter().filter(|s| s.reason == WAITS_FOR_THE_CLUSTER).count();
            if waiting == 0 {
                println!("nothing to do: the account matches {}", options.revision);
            } else {
                println!(
                    "nothing to do without the cluster: the account matches {} but for {waiting} change(s) waiting for it",
                    options.revision
                );
            }
            live.cloud.release().await?;
            if let Mode::Apply { sidecar_image, .. } = request.mode {
                return sidecar_after_apply(client.as_ref(), &full, sidecar_image, env, request.env, &store).await;
            }
            return Ok(EXIT_OK);
        }
        if !cloud_work {
            // Nothing to preflight in the cloud.
        } else if request.skip_preflight {
            let mut warning = String::from("warning: --skip-preflight: these preflight checks were NOT made, and a failure they would have caught shows only part-way through:");
            for check in cloud.skipped_checks() {
                warning.push_str("\n  - skipped: ");
                warning.push_str(check);
            }
            logging::line(logging::Level::Warn, &warning);
        } else {
            let check = cloud.preflight(&live.cloud.plan, env).await;
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
                live.cloud.release().await?;
                return Ok(EXIT_ERROR);
            }
        }
        let auto_approve = match request.mode {
            Mode::Apply { auto_approve, .. } | Mode::Destroy { auto_approve, .. } => auto_approve,
            Mode::Save { .. } => true,
        };
        let approved = auto_approve
            || match confirm(&env.name, &live.plan) {
                Ok(yes) => yes,
                Err(e) => {
                    live.cloud.release().await?;
                    return Err(e);
                }
            };
        if !approved {
            logging::line(logging::Level::Error, "not applied: only 'yes' approves; nothing was changed");
            live.cloud.release().await?;
            return Ok(EXIT_ERROR);
        }
        // The cluster destroy removes the sidecar from, reached before anything is deleted.
        let sidecar_client = match request.mode {
            Mode::Destroy { sidecar, .. } => match crate::sidecar::destroy_client(sidecar, env.cloud, &full).await {
                Ok(c) => c,
                Err(e) => {
                    logging::error(&format!(
                        "{e:#}\n  nothing was deleted in the cloud; without --kubeconfig/--context destroy skips the sidecar"
                    ));
                    live.cloud.release().await?;
                    return Ok(EXIT_ERROR);
                }
            },
            _ => None,
        };
        // The cloud in two passes around the cluster's add-ons (pipeline::apply). An apply
        // defers its deletions and what stands on the load balancers of the sidecar's
        // Services until the controller and the sidecar are in. A destroy deletes the
        // endpoint services first: AWS refuses to delete an NLB an endpoint service
        // fronts, so the controller could not let the sidecar's Services go.
        let later = if destroy {
            live.cloud.defer(|s| s.kind != Kind::AwsVpcEndpointService)
        } else {
            live.cloud.defer(after_kubernetes)
        };
        if live.cloud.has_work() {
            match live.cloud.execute(&cloud, options.concurrency).await {
                Ok(done) => {
                    write_cloud_outputs(store.as_ref()).await?;
                    println!(
                        "applied {done} action(s) to {} in {:.1}s; {} retr{} of throttled or failed calls",
                        env.name,
                        started.elapsed().as_secs_f64(),
                        cloud.retries(),
                        if cloud.retries() == 1 { "y" } else { "ies" }
                    );
                }
                Err(e) => {
                    logging::error(&format!("{e}\n  {} retries were made", cloud.retries()));
                    return Ok(EXIT_ERROR);
                }
            }
        } else {
            live.cloud.release().await?;
        }
        let add_ons = match request.mode {
            Mode::Apply { sidecar_image, .. } => sidecar_after_apply(client.as_ref(), &full, sidecar_image, env, request.env, &store).await?,
            // The sidecar goes while its cluster is still there to delete it from.
            Mode::Destroy { .. } => match crate::sidecar::before_destroy(sidecar_client.as_ref(), env.cloud, &full, request.poll_interval).await {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    logging::error(&format!("{e:#}\n  only the endpoint services (if any) were deleted in the cloud; fix the cause and run byoc destroy again"));
                    EXIT_ERROR
                }
            },
            Mode::Save { .. } => EXIT_OK,
        };
        if add_ons != EXIT_OK {
            if !later.is_empty() {
                println!("not applied yet: {} change(s) that follow the cluster's add-ons; the next run makes them", later.len());
            }
            return Ok(EXIT_ERROR);
        }
        if !later.is_empty() {
            let graph = if destroy { crate::resource::Graph::default() } else { desired.clone() };
            let installed = destroy || client.is_some();
            match cloud_after_kubernetes(&cloud, store.as_ref(), &graph, &options, &later, installed).await {
                Ok(after) => {
                    for note in &after.notes {
                        println!("note: {note}");
                    }
                    if after.done > 0 {
                        println!(
                            "applied {} action(s) {} to {} in {:.1}s",
                            after.done,
                            if destroy { "after the sidecar's removal" } else { "after the cluster's add-ons" },
                            env.name,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    for s in &after.waiting {
                        println!("waiting: {} {}: {}", s.action.as_str(), s.id, WAITS_FOR_THE_CLUSTER);
                    }
                    for s in &after.unapproved {
                        logging::line(
                            logging::Level::Warn,
                            &format!(
                                "warning: not applied: {} {}: found by the second pass, not in the approved plan (something changed meanwhile); the next apply plans it",
                                s.action.as_str(),
                                s.id
                            ),
                        );
                    }
                }
                Err(e) => {
                    logging::error(&format!(
                        "{e}\n  the cloud's first pass and the cluster's add-ons are done; fix the cause and run byoc {} again",
                        if destroy { "destroy" } else { "apply" }
                    ));
                    return Ok(EXIT_ERROR);
                }
            }
        }
        let (Some(client), Mode::Apply { health_timeout, .. }) = (client, &request.mode) else { return Ok(EXIT_OK) };
        if !kubernetes_work {
            return Ok(EXIT_OK);
        }
        let k8s_options = crate::k8s::reconcile::Options {
            health_timeout: *health_timeout,
            poll_interval: request.poll_interval.min(Duration::from_secs(2)),
            ..Default::default()
        };
        let mut kubernetes = Kubernetes::new(client, store.as_ref(), &loaded.specs, k8s_options).await?;
        let report = kubernetes.reconcile().await?;
        print!("{}", crate::k8s::render_text(&report));
        if !report.ok() {
            logging::error(&format!("{}: some clusters are not ready; run apply again once the cause is fixed", loaded.name));
            return Ok(EXIT_ERROR);
        }
        kubernetes.record(Some(loaded.commit), request.env).await?;
        println!("applied the Kubernetes objects of {} in {:.1}s", loaded.name, started.elapsed().as_secs_f64());
        Ok(EXIT_OK)
    })
}

/// Installs the sidecar with the outputs the cloud apply wrote.
async fn sidecar_after_apply(
    client: Option<&kube::Client>,
    graph: &crate::resource::Graph,
    image: Option<&str>,
    env: &crate::spec::Environment,
    env_dir: &str,
    store: &(impl crate::state::StateStore + ?Sized),
) -> anyhow::Result<u8> {
    let outputs = crate::pipeline::apply::cloud_outputs(store).await?;
    // The controller first: it makes the NLBs of the sidecar's Services (AWS only).
    match (env.cloud, client) {
        (CloudKind::Aws, None) => {
            println!("lb-controller: not installed: no Kubernetes cluster (--cloud-only, or none configured)");
        }
        (CloudKind::Aws, Some(client)) => {
            if let Err(e) = crate::cloud::aws::lb_controller::after_apply(client, env, &outputs).await {
                logging::error(&format!(
                    "{e:#}\n  the cloud is applied; the load balancer controller and the sidecar are not: fix the cause and run byoc apply again"
                ));
                return Ok(EXIT_ERROR);
            }
        }
        _ => {}
    }
    match crate::sidecar::after_apply(client, env, graph, env_dir, &outputs, image).await {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => {
            logging::error(&format!("{e:#}\n  the cloud is applied; the sidecar is not: fix the cause and run byoc apply again"));
            Ok(EXIT_ERROR)
        }
    }
}

fn report_blocked(plan: &Plan) {
    for s in plan.steps.iter().filter(|s| s.action == Action::Blocked) {
        let word = if s.reason == WAITS_FOR_THE_CLUSTER { "waiting" } else { "kept" };
        println!("{word}: {}: {}", s.id, s.reason);
    }
}

fn confirm(env: &str, plan: &Plan) -> anyhow::Result<bool> {
    let n = plan.changed().filter(|s| s.action != Action::Blocked).count();
    eprint!("Apply these {n} change(s) to {env}? Only 'yes' approves: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}
