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

use crate::cloud::Cloud;
use crate::cloud::apply::ApplyError;
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

/// Whether a planned cloud change waits for the Kubernetes half: what stands on the
/// sidecar's load balancers, and every deletion (nothing goes while the cluster's add-ons
/// may still use it; byoc's own NLBs of before go once the endpoint services front the
/// controller's).
pub fn after_kubernetes(step: &Step) -> bool {
    step.action == Action::Delete || AFTER_KUBERNETES.contains(&step.kind)
}

/// The cloud pass after the Kubernetes half: `desired` (the cloud part of the graph)
/// planned again from what exists, and run; returns how many actions finished. With
/// `installed` false (no cluster was reached) what stands on the sidecar's Services is left
/// for an apply that reaches it (the plan showed it blocked) and the rest runs.
pub async fn cloud_after_kubernetes<S: StateStore + ?Sized, C: Cloud>(
    cloud: &C,
    store: &S,
    desired: &Graph,
    options: &crate::cloud::apply::Options,
    installed: bool,
) -> Result<usize, ApplyError> {
    let mut prepared = crate::cloud::apply::prepare(cloud, store, desired, options).await?;
    if !installed {
        prepared.defer(|s| AFTER_KUBERNETES.contains(&s.kind) && s.action != Action::Delete);
    }
    if !prepared.has_work() {
        prepared.release().await?;
        return Ok(0);
    }
    let done = prepared.execute(cloud, options.concurrency).await?;
    write_cloud_outputs(store).await?;
    Ok(done)
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
