//! The **apply** stage: the cloud half ([`crate::cloud::apply`], run by `byoc apply` with
//! administrator credentials), then the Kubernetes half ([`Kubernetes`], run by
//! `byoc apply`, `byoc clusters` and the daemon alike), and what passes between them: the
//! values only the cloud knows ([`CLOUD_OUTPUTS_KEY`]) and the revision whose Kubernetes
//! half was applied last ([`KUBERNETES_REVISION_KEY`]), which the next plan observes.
//!
//! `byoc apply` runs the cloud half in two passes around the cluster's own add-ons (the AWS
//! Load Balancer Controller, the sidecar): first every create and update but those
//! [`after_kubernetes`] picks, then, planned again from what exists, the rest
//! ([`cloud_after_kubernetes`]): what stands on the load balancers the sidecar's Services
//! make, and every deletion.

use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::cloud::apply::ApplyError;
use crate::cloud::{Cloud, Refs};
use crate::k8s::objects::{CloudOutputs, ClusterObjects};
use crate::k8s::reconcile::{ClusterReport, Options, Reconciler, Report};
use crate::plan::{Action, Step};
use crate::resource::{Graph, Kind};
use crate::spec::Specs;
use crate::state::{StateError, StateStore};

/// Key in the state store of the values only the cloud knows (a role's ARN, an Azure
/// identity's client id, ...), a JSON object by resource id; written by the cloud apply.
pub const CLOUD_OUTPUTS_KEY: &str = "cloud-outputs.json";

/// Key in the state store of the revision whose Kubernetes objects were applied last.
pub const KUBERNETES_REVISION_KEY: &str = "kubernetes-revision.json";

/// What went wrong applying the Kubernetes half.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The state store failed; retrying may help.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stored object (cloud outputs, inventory) is malformed: a person must look.
    #[error("state {key}: {message}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The specs cannot be turned into objects (a cloud output is missing).
    #[error(transparent)]
    Objects(#[from] crate::k8s::objects::ObjectsError),
    /// The API server could not be reached or refused a call; retrying may help.
    #[error("{0}")]
    Api(String),
    /// Converging the clusters' objects stopped.
    #[error(transparent)]
    Reconcile(#[from] crate::k8s::reconcile::ReconcileError),
}

impl KubernetesError {
    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            KubernetesError::State(_) | KubernetesError::Api(_) => true,
            KubernetesError::Reconcile(e) => e.retryable(),
            KubernetesError::Malformed { .. } | KubernetesError::Objects(_) => false,
        }
    }
}

/// The cloud's outputs as the last cloud apply wrote them (empty before the first).
pub async fn cloud_outputs(store: &(impl StateStore + ?Sized)) -> Result<CloudOutputs, KubernetesError> {
    match store.get(CLOUD_OUTPUTS_KEY).await? {
        Some(v) => {
            serde_json::from_slice(&v.value).map_err(|e| KubernetesError::Malformed { key: CLOUD_OUTPUTS_KEY, message: e.to_string() })
        }
        None => Ok(CloudOutputs::default()),
    }
}

/// Writes what Kubernetes objects need from the cloud, by resource id (a role's ARN,
/// anything else's cloud id), from the cloud inventory.
pub async fn write_cloud_outputs(store: &(impl StateStore + ?Sized)) -> Result<(), crate::cloud::apply::ApplyError> {
    let (inventory, _) = crate::cloud::apply::load_inventory(store).await?;
    let outputs: CloudOutputs = inventory
        .resources
        .iter()
        // An IAM role's ARN; an Azure identity's client id (what a service account's
        // azure.workload.identity/client-id annotation names); else the cloud id.
        .map(|(id, r)| (id.clone(), r.outputs.get("arn").or(r.outputs.get("clientId")).cloned().unwrap_or_else(|| r.cloud_id.clone())))
        .collect();
    let current = store.get(CLOUD_OUTPUTS_KEY).await?;
    let bytes =
        serde_json::to_vec_pretty(&outputs).map_err(|e| StateError::Io { key: CLOUD_OUTPUTS_KEY.into(), message: e.to_string() })?;
    store.put(CLOUD_OUTPUTS_KEY, &bytes, current.as_ref().map(|v| v.version.as_str())).await?;
    Ok(())
}

/// Cloud kinds that stand on what the Kubernetes half makes: on AWS the NLBs the Load
/// Balancer Controller makes for the sidecar's Services, and the endpoint services in
/// front of them.
pub const AFTER_KUBERNETES: &[Kind] = &[Kind::AwsServiceNlb, Kind::AwsVpcEndpointService];

/// Why a change is blocked when no cluster was reached (see [`needs_the_cluster`]).
pub const WAITS_FOR_THE_CLUSTER: &str =
    "waits for the sidecar's Services, whose load balancers it stands on: byoc apply with --kubeconfig/--context makes it";

/// Whether a planned cloud change of an apply waits for the Kubernetes half: what stands
/// on the sidecar's load balancers, and every deletion (nothing goes while the cluster's
/// add-ons may still use it; byoc's own NLBs of before go once the endpoint services front
/// the controller's).
pub fn after_kubernetes(step: &Step) -> bool {
    step.action == Action::Delete || AFTER_KUBERNETES.contains(&step.kind)
}

/// Whether `step` cannot be made without the cluster: a Service's NLB that does not exist
/// yet, an endpoint service in front of one, and (so the endpoint services keep fronting
/// them until they move) the deletion of byoc's own NLBs of before. `found` is what
/// exists; `desired`, the graph planned.
pub fn needs_the_cluster(step: &Step, desired: &Graph, found: &Refs) -> bool {
    match (step.kind, step.action) {
        (_, Action::NoOp | Action::Blocked) => false,
        (Kind::AwsNlb, Action::Delete) => true,
        (_, Action::Delete) => false,
        (Kind::AwsServiceNlb, _) => !found.contains_key(&step.id),
        (Kind::AwsVpcEndpointService, _) => {
            desired.resources.get(&step.id).is_some_and(|r| r.refs_in("loadBalancers").iter().any(|lb| !found.contains_key(lb)))
        }
        _ => false,
    }
}

/// What the cloud pass after the Kubernetes half did.
#[derive(Debug, Default)]
pub struct AfterKubernetes {
    /// Actions finished.
    pub done: usize,
    /// Changes the second plan found that were not approved (something moved between the
    /// passes): not made; the next apply plans them.
    pub unapproved: Vec<Step>,
    /// Changes left for an apply that reaches the cluster (none was reached).
    pub waiting: Vec<Step>,
    /// What the second plan noted reading the account (`Prepared::notes`).
    pub notes: Vec<String>,
}

/// The cloud pass after the Kubernetes half: `desired` (the cloud part of the graph)
/// planned again from what exists, and of that exactly the `approved` changes run (those
/// the first pass deferred, which the user approved); anything else is returned, not
/// made. With `installed` false (no cluster was reached) what [`needs_the_cluster`] waits.
/// The lease went back after the first pass: one held meanwhile (the daemon's pass) is
/// waited for, at most its time to live.
pub async fn cloud_after_kubernetes<S: StateStore + ?Sized, C: Cloud>(
    cloud: &C,
    store: &S,
    desired: &Graph,
    options: &crate::cloud::apply::Options,
    approved: &[Step],
    installed: bool,
) -> Result<AfterKubernetes, ApplyError> {
    let started = std::time::Instant::now();
    let ttl = std::time::Duration::from_secs(u64::try_from(options.lease_ttl).unwrap_or(0));
    let mut prepared = loop {
        match crate::cloud::apply::prepare(cloud, store, desired, options).await {
            Err(ApplyError::Lease(e)) if started.elapsed() < ttl => {
                tracing::info!(stage = "apply", "waiting for the environment's lease to run the second cloud pass: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1).min(ttl)).await;
            }
            other => break other?,
        }
    };
    // The same change of the same resource; a create approved may now read as an update
    // (the controller made the NLB meanwhile, and it is adopted), not as a deletion.
    let same = |a: &Step, s: &Step| a.id == s.id && (a.action == Action::Delete) == (s.action == Action::Delete);
    let unapproved = prepared.defer(|s| !approved.iter().any(|a| same(a, s)));
    let notes = prepared.notes();
    prepared.leave_duplicates();
    let waiting = if installed {
        Vec::new()
    } else {
        let found = prepared.observed.found.clone();
        prepared.defer(|s| needs_the_cluster(s, desired, &found))
    };
    if !prepared.has_work() {
        prepared.release().await?;
        return Ok(AfterKubernetes { done: 0, unapproved, waiting, notes });
    }
    let done = prepared.execute(cloud, options.concurrency).await?;
    write_cloud_outputs(store).await?;
    Ok(AfterKubernetes { done, unapproved, waiting, notes })
}

/// The revision whose Kubernetes half was applied last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRevision {
    /// The commit; `None` when a work tree was applied (`byoc clusters`), which no plan
    /// can read back: the next plan then observes the live objects only.
    pub commit: Option<String>,
    /// The environment directory in it.
    pub environment: String,
}

/// The record of [`KUBERNETES_REVISION_KEY`], with its version.
pub async fn applied_revision(store: &(impl StateStore + ?Sized)) -> Result<(Option<AppliedRevision>, Option<String>), KubernetesError> {
    match store.get(KUBERNETES_REVISION_KEY).await? {
        Some(v) => {
            let r = serde_json::from_slice(&v.value)
                .map_err(|e| KubernetesError::Malformed { key: KUBERNETES_REVISION_KEY, message: e.to_string() })?;
            Ok((Some(r), Some(v.version)))
        }
        None => Ok((None, None)),
    }
}

/// The Kubernetes half of one apply: the desired objects of a revision's specs and the
/// reconciler that converges them, in two steps (converge and wait, then prune) so the
/// daemon can publish the routes in between.
pub struct Kubernetes<'a, S: StateStore + ?Sized> {
    reconciler: Reconciler<'a, S>,
    store: &'a S,
    desired: Vec<ClusterObjects>,
}

/// The span every Kubernetes step runs in: the stage, and the clusters as the resource.
fn span(step: &'static str, desired: &[ClusterObjects]) -> tracing::Span {
    let clusters: Vec<&str> = desired.iter().map(|c| c.cluster.as_str()).collect();
    tracing::info_span!("kubernetes", stage = "apply", step, resource = %clusters.join(","))
}

impl<'a, S: StateStore + ?Sized> Kubernetes<'a, S> {
    /// The objects of `specs`, with the cloud's outputs from `store`, and the inventory.
    pub async fn new(client: kube::Client, store: &'a S, specs: &Specs, options: Options) -> Result<Self, KubernetesError> {
        let outputs = cloud_outputs(store).await?;
        let desired = crate::k8s::objects::desired(specs, &outputs)?;
        let reconciler = Reconciler::new(client, store, options).await?;
        Ok(Kubernetes { reconciler, store, desired })
    }

    /// Applies every desired cluster and waits until each is ready or stalled.
    pub async fn converge_and_wait(&mut self) -> Result<Report, KubernetesError> {
        use tracing::Instrument;
        let span = span("converge", &self.desired);
        self.reconciler.converge_and_wait(&self.desired).instrument(span).await.map_err(KubernetesError::from)
    }

    /// Deletes (or orphans, by deletionPolicy) the clusters the specs no longer hold.
    pub async fn prune(&mut self) -> Result<Vec<ClusterReport>, KubernetesError> {
        use tracing::Instrument;
        let span = span("prune", &self.desired);
        self.reconciler.prune_absent(&self.desired).instrument(span).await.map_err(KubernetesError::from)
    }

    /// Both steps, for a caller that publishes nothing in between.
    pub async fn reconcile(&mut self) -> Result<Report, KubernetesError> {
        let mut report = self.converge_and_wait().await?;
        report.clusters.extend(self.prune().await?);
        Ok(report)
    }

    /// Records that `commit` (`None`: a work tree) of `environment` is what Kubernetes
    /// now holds; the next plan observes it.
    pub async fn record(&self, commit: Option<Oid>, environment: &str) -> Result<(), KubernetesError> {
        let (current, version) = applied_revision(self.store).await?;
        let record = AppliedRevision { commit: commit.map(|c| c.to_string()), environment: environment.to_owned() };
        if current.as_ref() == Some(&record) {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| KubernetesError::Malformed { key: KUBERNETES_REVISION_KEY, message: e.to_string() })?;
        self.store.put(KUBERNETES_REVISION_KEY, &bytes, version.as_deref()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Found;
    use crate::resource::{Resource, ResourceId, Value};

    fn step(kind: Kind, name: &str, action: Action) -> Step {
        Step { id: ResourceId::new(kind, name), kind, action, reason: String::new(), changes: Vec::new(), depends_on: Vec::new() }
    }

    fn found(kind: Kind, name: &str) -> (ResourceId, Found) {
        let id = ResourceId::new(kind, name);
        (id.clone(), Found { id, kind, cloud_id: format!("{name}-1"), outputs: Default::default(), live: Default::default() })
    }

    #[test]
    fn without_the_cluster_only_what_stands_on_a_missing_nlb_and_the_old_nlbs_deletion_wait() {
        let nlb = ResourceId::new(Kind::AwsServiceNlb, "agent");
        let mut desired = Graph::default();
        desired.add(Resource::new(Kind::AwsServiceNlb, "agent"));
        desired.add(Resource::new(Kind::AwsVpcEndpointService, "agent").set("loadBalancers", Value::references([&nlb])));
        let none = Refs::new();
        let made: Refs = [found(Kind::AwsServiceNlb, "agent")].into_iter().collect();
        let create_nlb = step(Kind::AwsServiceNlb, "agent", Action::Create);
        let update_service = step(Kind::AwsVpcEndpointService, "agent", Action::Update);
        // No NLB yet: both wait; once it exists, neither does.
        assert!(needs_the_cluster(&create_nlb, &desired, &none));
        assert!(needs_the_cluster(&update_service, &desired, &none));
        assert!(!needs_the_cluster(&update_service, &desired, &made));
        // byoc's own NLB of before goes only once the endpoint service has moved, which
        // needs the cluster; any other deletion does not wait, nor does anything else.
        assert!(needs_the_cluster(&step(Kind::AwsNlb, "agent", Action::Delete), &desired, &made));
        assert!(!needs_the_cluster(&step(Kind::AwsVpcEndpointService, "agent", Action::Delete), &desired, &none));
        assert!(!needs_the_cluster(&step(Kind::AwsSubnet, "a", Action::Create), &desired, &none));
        assert!(!needs_the_cluster(&step(Kind::AwsServiceNlb, "agent", Action::Blocked), &desired, &none));
        // With the cluster, every deletion and every change on those kinds follows it.
        assert!(after_kubernetes(&step(Kind::AwsSubnet, "a", Action::Delete)));
        assert!(after_kubernetes(&update_service));
        assert!(!after_kubernetes(&step(Kind::AwsSubnet, "a", Action::Create)));
    }
}
