//! The daemon's cloud side on AWS, GCP and Azure: each RisingWave cluster's own identity
//! (on AWS its IAM role under `/byoc/<env>/clusters/`, IRSA-trusted for the cluster's
//! service account, bounded by the environment's permissions boundary; on GCP its Google
//! service account `rw-<cluster>` and the bindings made for it: workload identity for the
//! cluster's Kubernetes service account, and its prefix of the data bucket; on Azure its
//! user-assigned identity `rw-<cluster>`, the federated credential trusting the cluster's
//! service account and its prefix-conditioned role on the data container) is converged; everything else in the
//! environment (network, EKS, node groups, buckets, load balancers, endpoint service, the
//! boundary itself) is only observed, and any difference is reported as
//! `EnvironmentInSync=False` for a person with administrator credentials to apply.
//!
//! Nothing here plans or calls AWS on its own: the desired graph comes from `expand`, the
//! plan from the same `observe` + `plan` that `byoc apply` runs ([`apply::prepare`]), and
//! the actions from the same engine ([`Prepared::execute`]). The daemon only narrows the
//! plan, in the pure [`narrow`], to the cluster identities and to the pass it is in:
//! creates and updates before the clusters' Kubernetes objects are applied (their service
//! accounts name the role), deletions after a removed cluster's objects are gone.

use crate::cloud::apply::{self, ApplyError, Options, Prepared};
use crate::cloud::aws::Aws;
use crate::cloud::azure::{self, Azure};
use crate::cloud::gcp::Gcp;
use crate::cloud::{Cloud, cloud_part};
use crate::expand::aws::is_cluster_identity;
use crate::plan::{Action, Plan, Step, Summary};
use crate::resource::{Graph, Kind, Resource};
use crate::spec::Specs;
use crate::state::StateStore;

/// Which of the daemon's two cloud passes runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Before the Kubernetes objects: create, update or replace cluster identities.
    Converge,
    /// After removed clusters' Kubernetes objects are gone: delete their identities.
    Prune,
}

/// What the environment-level part of the plan shows: empty when in sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentDrift {
    /// Counts of the environment's planned changes.
    pub summary: Summary,
    /// One line per planned change (`~ update aws.eks-nodegroup/risingwave: minSize 3 -> 4`).
    pub changes: Vec<String>,
    /// Settings changed outside byoc, from observe.
    pub live: Vec<String>,
}

impl EnvironmentDrift {
    /// Whether the environment matches its specs.
    pub fn in_sync(&self) -> bool {
        self.changes.is_empty() && self.live.is_empty()
    }

    /// The `EnvironmentInSync=False` message: the plan's summary, each change, and what to do.
    pub fn message(&self, revision: &str) -> String {
        let s = &self.summary;
        let mut m = format!(
            "{revision}: the environment differs from its specs: {} to create, {} to update, {} to replace, {} to delete, {} blocked",
            s.create, s.update, s.replace, s.delete, s.blocked
        );
        for c in self.changes.iter().chain(self.live.iter().map(|l| format!("drift: {l}")).collect::<Vec<_>>().iter()) {
            m.push_str("\n  ");
            m.push_str(c);
        }
        m.push_str("\nthe daemon never changes environment resources: run `byoc apply` with administrator credentials");
        m
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// The environment's side of the plan.
    pub environment: EnvironmentDrift,
    /// Cluster-identity actions that finished.
    pub done: usize,
    /// Why the cluster-identity actions failed, if they did (what finished is recorded).
    pub failed: Option<IdentityError>,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Observing, the lease or an action failed; what finished is recorded.
    #[error("cluster identities at {revision}: {source}")]
    Apply {
        /// The revision.
        revision: String,
        /// What failed.
        #[source]
        source: ApplyError,
    },
}

fn one_line(step: &Step) -> String {
    let sign = match step.action {
        Action::Create => "+ create",
        Action::Update => "~ update",
        Action::Replace => "-/+ replace",
        Action::Delete => "- delete",
        Action::Blocked => "! blocked",
        Action::NoOp => "  no-op",
    };
    let changes: Vec<String> = step
        .changes
        .iter()
        .map(|c| {
            let show = |v: &Option<crate::resource::Value>| v.as_ref().map_or_else(|| "(none)".to_owned(), ToString::to_string);
            format!("{} {} -> {}", c.path, show(&c.before), show(&c.after))
        })
        .collect();
    if changes.is_empty() { format!("{sign} {}: {}", step.id, step.reason) } else { format!("{sign} {}: {}", step.id, changes.join(", ")) }
}

/// Narrows `plan` to what the daemon may do in `pass`: every step that is not a cluster
/// identity's, or not of this pass, becomes a no-op. Returns the environment-level
/// changes the plan showed. Pure.
pub fn narrow(env: &str, plan: &mut Plan, desired: &Graph, observed: &Graph, pass: Pass) -> EnvironmentDrift {
    let mut drift = EnvironmentDrift::default();
    for step in &mut plan.steps {
        if step.action == Action::NoOp {
            continue;
        }
        let resource = desired.resources.get(&step.id).or_else(|| observed.resources.get(&step.id));
        let ours = resource.is_some_and(|r| is_identity(env, r));
        if !ours {
            match step.action {
                Action::Create => drift.summary.create += 1,
                Action::Update => drift.summary.update += 1,
                Action::Replace => drift.summary.replace += 1,
                Action::Delete => drift.summary.delete += 1,
                Action::Blocked => drift.summary.blocked += 1,
                Action::NoOp => {}
            }
            drift.changes.push(one_line(step));
            step.action = Action::NoOp;
            continue;
        }
        let this_pass = match pass {
            Pass::Converge => matches!(step.action, Action::Create | Action::Update | Action::Replace),
            Pass::Prune => step.action == Action::Delete,
        };
        if !this_pass && step.action != Action::Blocked {
            step.action = Action::NoOp;
        }
    }
    drift
}

/// Whether `r` is a RisingWave cluster's own cloud identity, the one thing in the cloud
/// the daemon may change: on AWS the cluster's IAM role; on GCP the cluster's Google
/// service account and its bindings, all named from the cluster's namespace `rw-<name>`
/// (the agent's and the nodes' are `agent` and `nodes`); on Azure its managed identity,
/// federated credential and role assignment.
pub fn is_identity(env: &str, r: &Resource) -> bool {
    let gcp = matches!(r.kind, Kind::GcpServiceAccount | Kind::GcpIamBinding)
        && r.id.as_str().split_once('/').is_some_and(|(_, name)| name.starts_with("rw-"));
    gcp || is_cluster_identity(env, r) || crate::expand::azure::is_cluster_identity(r)
}

/// Who this process is when it holds the environment's apply lease (`host:pid`).
pub fn holder() -> String {
    format!("{}:{}", apply::hostname(), std::process::id())
}

/// One pass over the clusters' cloud identities of `specs` (an AWS, GCP or Azure environment).
pub async fn pass<S: StateStore + ?Sized>(
    store: &S,
    specs: &Specs,
    endpoint: Option<&str>,
    revision: &str,
    pass: Pass,
) -> Result<PassReport, IdentityError> {
    let env = &specs.environment;
    let failed = |source| IdentityError::Apply { revision: revision.to_owned(), source };
    let desired = cloud_part(&crate::expand::expand(specs));
    match env.cloud {
        crate::spec::Cloud::Aws => {
            let mut cloud = Aws::connect(&env.name, &env.region, endpoint).await;
            cloud.buckets = vec![env.data_bucket.clone(), env.state_bucket.clone()];
            pass_with(&cloud, store, specs, &desired, revision, pass).await
        }
        crate::spec::Cloud::Azure => {
            // The pod's workload identity (or a client secret from the environment).
            let endpoint = azure::Endpoint { url: endpoint.map(str::to_owned), extra_ca_pem: None };
            azure_pass(store, specs, &endpoint, &azure::Credential::from_env(), revision, pass).await
        }
        crate::spec::Cloud::Gcp => {
            let mut cloud =
                Gcp::connect(&env.name, &env.account, &env.region, endpoint).await.map_err(|e| failed(ApplyError::Observe(e)))?;
            let (inventory, _) = apply::load_inventory(store).await.map_err(failed)?;
            cloud.know(&desired, &inventory);
            pass_with(&cloud, store, specs, &desired, revision, pass).await
        }
    }
}

/// [`pass`] on an Azure environment, connected as `byoc apply` connects (commands::apply):
/// to the resource group the graph names, with what the inventory recorded known. Public
/// so that a test can give the ARM fake's CA, for which the daemon has no setting.
pub async fn azure_pass<S: StateStore + ?Sized>(
    store: &S,
    specs: &Specs,
    endpoint: &azure::Endpoint,
    credential: &azure::Credential,
    revision: &str,
    pass: Pass,
) -> Result<PassReport, IdentityError> {
    let env = &specs.environment;
    let failed = |source| IdentityError::Apply { revision: revision.to_owned(), source };
    let desired = cloud_part(&crate::expand::expand(specs));
    let rg = crate::expand::azure::resource_group_name(&desired);
    let mut cloud =
        Azure::connect(&env.name, &env.account, &env.region, &rg, endpoint, credential).map_err(|e| failed(ApplyError::Observe(e)))?;
    let (inventory, _) = apply::load_inventory(store).await.map_err(failed)?;
    cloud.know(&desired, &inventory);
    pass_with(&cloud, store, specs, &desired, revision, pass).await
}

/// [`pass`] with the environment's cloud.
async fn pass_with<S: StateStore + ?Sized, C: Cloud>(
    cloud: &C,
    store: &S,
    specs: &Specs,
    desired: &Graph,
    revision: &str,
    pass: Pass,
) -> Result<PassReport, IdentityError> {
    let env = &specs.environment;
    let failed = |source| IdentityError::Apply { revision: revision.to_owned(), source };
    let options = Options { revision: revision.to_owned(), concurrency: 4, holder: holder(), lease_ttl: 300, delete_data: false };
    let mut prepared: Prepared<'_, S> = apply::prepare(cloud, store, desired, &options).await.map_err(failed)?;
    let mut environment = narrow(&env.name, &mut prepared.plan, desired, &prepared.observed.graph, pass);
    environment.live = prepared
        .observed
        .drift
        .iter()
        .filter(|d| !prepared.observed.graph.resources.iter().any(|(id, r)| is_identity(&env.name, r) && d.starts_with(&format!("{id} "))))
        .cloned()
        .collect();
    // A second resource with a tag already seen is the environment's to clean up.
    for d in std::mem::take(&mut prepared.observed.duplicates) {
        environment.changes.push(format!("- delete {} {} (a second resource tagged {})", d.kind.label(), d.cloud_id, d.id));
        environment.summary.delete += 1;
    }
    if !prepared.has_work() {
        prepared.release().await.map_err(failed)?;
        return Ok(PassReport { environment, done: 0, failed: None });
    }
    // The environment's state is known now; a failed action does not hide it.
    let executed = match prepared.execute(cloud, options.concurrency).await {
        Ok(done) => crate::pipeline::apply::write_cloud_outputs(store).await.map(|()| done),
        Err(e) => Err(e),
    };
    match executed {
        Ok(done) => Ok(PassReport { environment, done, failed: None }),
        Err(e) => Ok(PassReport { environment, done: 0, failed: Some(failed(e)) }),
    }
}

impl super::Daemon {
    /// The daemon's cloud pass at `revision`, with `EnvironmentInSync` set from the
    /// converge pass. `Err` carries how the reconcile ended when the pass failed.
    pub(super) async fn cloud_pass(&self, specs: &Specs, revision: &str, which: Pass) -> Result<(), super::Ended> {
        let t = super::now();
        match self.store.get(crate::cloud::INVENTORY_KEY).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Nothing to bound or trust the roles with yet (no OIDC provider, no
                // boundary): no cloud call is made until the environment exists.
                let m = format!(
                    "{revision}: environment {} has never been applied (no inventory in the state store); run `byoc apply` with administrator credentials",
                    specs.environment.name
                );
                self.update(|s| s.set("EnvironmentInSync", false, "NotBootstrapped", m, t));
                return Ok(());
            }
            Err(e) => return Err(self.stop("apply", "Ready", "InventoryUnreadable", e.to_string())),
        }
        match pass(self.store.as_ref(), specs, self.config.cloud_endpoint.as_deref(), revision, which).await {
            Ok(report) => {
                if which == Pass::Converge {
                    let drift = &report.environment;
                    let (ok, reason, m) = if drift.in_sync() {
                        (true, "InSync", format!("{revision}: the environment matches its specs"))
                    } else {
                        (false, "ChangesPending", drift.message(revision))
                    };
                    if !ok {
                        tracing::warn!(revision, stage = "observe", "{m}");
                    }
                    self.update(|s| s.set("EnvironmentInSync", ok, reason, m, t));
                }
                if let Some(e) = report.failed {
                    return Err(self.stop("apply", "Ready", "IdentityFailed", e.to_string()));
                }
                if report.done > 0 {
                    tracing::info!(revision, stage = "apply", actions = report.done, "cluster identities converged");
                }
                Ok(())
            }
            Err(e) => Err(self.stop("apply", "Ready", "IdentityFailed", format!("{e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, path: Option<&str>) -> Resource {
        let r = Resource::new(Kind::AwsIamRole, name).set("name", format!("byoc-prod-{name}"));
        match path {
            Some(p) => r.set("path", p),
            None => r,
        }
    }

    fn step(r: &Resource, action: Action) -> Step {
        Step { id: r.id.clone(), kind: r.kind, action, reason: "because".into(), changes: Vec::new(), depends_on: Vec::new() }
    }

    fn graph(rs: &[&Resource]) -> Graph {
        Graph { resources: rs.iter().map(|r| (r.id.clone(), (*r).clone())).collect() }
    }

    #[test]
    fn the_daemon_runs_only_cluster_identities_and_each_pass_its_own_actions() {
        let clusters = "/byoc/prod/clusters/";
        let new = role("rw-new", Some(clusters));
        let changed = role("rw-changed", Some(clusters));
        let removed = role("rw-removed", Some(clusters));
        let retained = role("rw-retained", Some(clusters));
        let agent = role("agent", None);
        let node_group = Resource::new(Kind::AwsEksNodeGroup, "risingwave").set("minSize", 3u32);
        // An old role under another path is the environment's, even if named like a cluster's.
        let elsewhere = role("rw-elsewhere", Some("/byoc/other/clusters/"));
        let desired = graph(&[&new, &changed, &agent, &node_group, &elsewhere]);
        let observed = graph(&[&changed, &removed, &retained, &agent, &node_group]);
        let plan = Plan {
            steps: vec![
                step(&new, Action::Create),
                step(&changed, Action::Update),
                step(&removed, Action::Delete),
                step(&retained, Action::Blocked),
                step(&agent, Action::NoOp),
                step(&node_group, Action::Update),
                step(&elsewhere, Action::Create),
            ],
        };
        let actions = |p: &Plan| p.steps.iter().map(|s| s.action).collect::<Vec<_>>();
        use Action::*;
        let cases = [
            (Pass::Converge, vec![Create, Update, NoOp, Blocked, NoOp, NoOp, NoOp]),
            (Pass::Prune, vec![NoOp, NoOp, Delete, Blocked, NoOp, NoOp, NoOp]),
        ];
        for (pass, want) in cases {
            let mut p = plan.clone();
            let drift = narrow("prod", &mut p, &desired, &observed, pass);
            assert_eq!(actions(&p), want, "{pass:?}");
            assert_eq!(drift.summary, Summary { create: 1, update: 1, ..Summary::default() }, "{pass:?}");
            assert_eq!(drift.changes.len(), 2);
            assert!(drift.changes[0].starts_with("~ update aws.eks-nodegroup/risingwave"), "{:?}", drift.changes);
            assert!(!drift.in_sync());
            let m = drift.message("main@sha1:abc");
            assert!(m.contains("0 to create, 1 to update") || m.contains("1 to create, 1 to update"), "{m}");
            assert!(m.ends_with("run `byoc apply` with administrator credentials"), "{m}");
        }
        let mut quiet = Plan { steps: vec![step(&agent, Action::NoOp), step(&new, Action::Create)] };
        assert!(narrow("prod", &mut quiet, &desired, &observed, Pass::Converge).in_sync());
    }

    #[test]
    fn on_gcp_the_daemon_runs_only_the_clusters_accounts_and_their_bindings() {
        let dir = format!("{}/../examples/gcp", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        let specs = crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"));
        let desired = cloud_part(&crate::expand::expand(&specs));
        let mut plan = Plan { steps: desired.resources.values().map(|r| step(r, Action::Create)).collect() };
        let drift = narrow("prod-usc1", &mut plan, &desired, &Graph::default(), Pass::Converge);
        let mut ours: Vec<&str> = plan.steps.iter().filter(|s| s.action == Action::Create).map(|s| s.id.as_str()).collect();
        ours.sort();
        assert_eq!(
            ours,
            [
                "gcp.iam-binding/rw-analytics-data",
                "gcp.iam-binding/rw-analytics-workload-identity",
                "gcp.iam-binding/rw-ingest-data",
                "gcp.iam-binding/rw-ingest-workload-identity",
                "gcp.service-account/rw-analytics",
                "gcp.service-account/rw-ingest",
            ]
        );
        assert_eq!(drift.summary.create, desired.resources.len() - ours.len(), "everything else is the environment's, reported");
        assert!(drift.changes.iter().any(|c| c.starts_with("+ create gcp.service-account/agent")), "{:?}", drift.changes);
    }

    #[test]
    fn on_azure_the_daemon_converges_each_clusters_identity_credential_and_data_role_and_nothing_else() {
        let dir = format!("{}/../examples/azure", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        let specs = crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"));
        let desired = cloud_part(&crate::expand::expand(&specs));
        let ours: Vec<&Resource> = desired.resources.values().filter(|r| is_identity("prod", r)).collect();
        // Per cluster: its managed identity, federated credential and role on the data container.
        assert!(!specs.clusters.is_empty());
        for c in &specs.clusters {
            let ns = crate::expand::cluster_namespace(c);
            for (kind, name) in [
                (Kind::AzureManagedIdentity, ns.clone()),
                (Kind::AzureFederatedCredential, ns.clone()),
                (Kind::AzureRoleAssignment, format!("{ns}-data")),
            ] {
                assert!(
                    ours.iter().any(|r| r.kind == kind && r.id.as_str().ends_with(&format!("/{name}"))),
                    "{kind:?} {name} is the daemon's"
                );
            }
        }
        assert_eq!(ours.len(), 3 * specs.clusters.len(), "{:?}", ours.iter().map(|r| &r.id).collect::<Vec<_>>());
        // The agent's identity and roles, the network, AKS and storage are the environment's.
        let plan = Plan { steps: desired.resources.values().map(|r| step(r, Action::Create)).collect() };
        let mut converge = plan.clone();
        let drift = narrow("prod", &mut converge, &desired, &Graph::default(), Pass::Converge);
        let creates = converge.steps.iter().filter(|s| s.action == Action::Create).count();
        assert_eq!(creates, ours.len());
        assert_eq!(drift.summary.create, desired.resources.len() - ours.len());
        let agent = crate::resource::ResourceId::new(Kind::AzureManagedIdentity, "agent");
        assert!(desired.resources.contains_key(&agent));
        assert!(drift.changes.iter().any(|c| c.contains(&format!("{agent}:"))), "the agent's identity is reported: {:?}", drift.changes);
    }
}
