//! Converging the RisingWave clusters' Kubernetes objects: observe (get each object, list
//! our namespaces by label), compare with what we applied last time (the inventory in the
//! state store), server-side apply only what changed or drifted, prune removed clusters by
//! their deletion policy, then wait for each `RisingWave` to become ready.
//!
//! Field ownership: we apply as field manager `byoc` without `force`. A conflict on a field
//! we applied before (someone edited it: drift) is corrected with `force`, unless the
//! cluster says `ignoreDrift`; a conflict on a field we never applied belongs to someone
//! else and is reported, never overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::objects::{
    ANNOTATION_DELETION_POLICY, ClusterObjects, LABEL_CLUSTER, LABEL_MANAGED_BY, LABEL_ORPHANED, MANAGED_BY, Object, ObjectKind, object_id,
};
use crate::spec::DeletionPolicy;
use crate::state::{StateError, StateStore};

/// Why a Kubernetes reconcile stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Another reconciler wrote the inventory since we read it.
    #[error("{0}: another reconciler is converging this environment")]
    Contended(#[source] StateError),
    /// The stored inventory does not parse: a person must look.
    #[error("state {INVENTORY_KEY} is not a valid inventory: {0}")]
    Inventory(#[source] serde_json::Error),
    /// A call to the API server failed (transport, timeout, or an error status).
    #[error("{action}: {source}")]
    Api {
        /// What was being done: `reading Namespace rw-a`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The API server refused an apply without a field conflict (validation, admission,
    /// RBAC).
    #[error("applying {object}: the API server refused it ({code} {reason}): {message}")]
    Refused {
        /// `Kind namespace/name`.
        object: String,
        /// HTTP status.
        code: u16,
        /// Its reason.
        reason: String,
        /// Its message.
        message: String,
    },
    /// A removed cluster's namespace did not finish terminating in time.
    #[error(
        "namespace {namespace} of removed cluster {cluster} is still terminating after {secs}s; look for finalizers on the objects left in it"
    )]
    Terminating {
        /// The namespace.
        namespace: String,
        /// The cluster.
        cluster: String,
        /// How long was waited.
        secs: f64,
    },
    /// An object could not be encoded or decoded (a bug, or a server speaking another
    /// version).
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl ReconcileError {
    /// Whether trying again later can help: the store or the API server being down or
    /// busy, another writer finishing, a namespace still terminating. A refusal for
    /// validation or RBAC, or a malformed inventory, needs a person.
    pub fn retryable(&self) -> bool {
        match self {
            ReconcileError::State(_) | ReconcileError::Contended(_) | ReconcileError::Terminating { .. } => true,
            ReconcileError::Api { source: kube::Error::Api(status), .. } => status.code == 429 || status.code >= 500,
            ReconcileError::Api { .. } => true,
            ReconcileError::Refused { code, .. } => *code == 429 || *code >= 500,
            ReconcileError::Inventory(_) | ReconcileError::Encoding(_) => false,
        }
    }
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| ReconcileError::Api { action, source }
}

/// How many clusters are converged at once.
const CONVERGE_CONCURRENCY: usize = 16;

/// The field manager the reconciler applies as.
pub const FIELD_MANAGER: &str = "byoc";
/// Key of the Kubernetes inventory in the state store.
pub const INVENTORY_KEY: &str = "kubernetes-inventory.json";

/// Deadlines and poll intervals.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a `RisingWave` may take to become ready after a reconcile.
    pub health_timeout: Duration,
    /// How often its status is read meanwhile.
    pub poll_interval: Duration,
    /// How long a deleted namespace may take to go.
    pub namespace_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            health_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            namespace_timeout: Duration::from_secs(300),
        }
    }
}

/// What the reconciler applied, per object; kept in the state store.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Inventory {
    /// By [`Object::id`].
    pub objects: BTreeMap<String, Applied>,
}

/// One applied object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its kind.
    pub kind: ObjectKind,
    /// Namespace, none for a namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The body last applied.
    pub body: Value,
}

/// How a cluster ended this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Applied, and the operator reports it running at the applied generation.
    Ready,
    /// The operator reports a failure, the deadline passed, or a field conflict stopped the apply.
    Stalled,
    /// Removed from the specs with `deletionPolicy: Delete`: deleted.
    Deleted,
    /// Removed from the specs with `deletionPolicy: Retain`: kept, labelled orphaned.
    Retained,
}

/// A managed field whose live value is not what we applied.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path, e.g. `.spec.components.compute.nodeGroups[0].replicas`.
    pub path: String,
    /// What we applied.
    pub applied: Value,
    /// What is there (null: the field is gone).
    pub live: Value,
    /// Whether this reconcile set it back.
    pub corrected: bool,
}

/// A field another manager owns that we would have to overwrite.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path as the API server names it.
    pub field: String,
    /// The API server's message, naming the other manager.
    pub message: String,
}

/// The result for one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Cluster name.
    pub cluster: String,
    /// How it ended.
    pub outcome: Outcome,
    /// One line per write made (`applied RisingWave rw-a/a`, `deleted Namespace rw-b`).
    pub actions: Vec<String>,
    /// Drift found.
    pub drift: Vec<Drift>,
    /// Conflicts not overwritten.
    pub conflicts: Vec<Conflict>,
    /// Why, for anything but a plain Ready.
    pub message: String,
}

/// The result of one reconcile.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per cluster: desired ones first, in spec order, then removed ones by name.
    pub clusters: Vec<ClusterReport>,
}

impl Report {
    /// True when every desired cluster is ready and nothing is left in conflict.
    pub fn ok(&self) -> bool {
        self.clusters.iter().all(|c| c.outcome != Outcome::Stalled)
    }
}

/// Converges the clusters' Kubernetes objects. The client is built once and shared.
pub struct Reconciler<'a, S: StateStore + ?Sized> {
    client: Client,
    store: &'a S,
    options: Options,
    inventory: Inventory,
    version: Option<String>,
    /// The inventory changed since it was last saved.
    unsaved: bool,
}

impl<'a, S: StateStore + ?Sized> Reconciler<'a, S> {
    /// Loads the inventory from `store`.
    pub async fn new(client: Client, store: &'a S, options: Options) -> Result<Self, ReconcileError> {
        let (inventory, version) = match store.get(INVENTORY_KEY).await? {
            Some(v) => (serde_json::from_slice(&v.value).map_err(ReconcileError::Inventory)?, Some(v.version)),
            None => (Inventory::default(), None),
        };
        Ok(Reconciler { client, store, options, inventory, version, unsaved: false })
    }

    /// The inventory as last saved.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn api(&self, kind: ObjectKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = kind.api_resource();
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    async fn save(&mut self) -> Result<(), ReconcileError> {
        let bytes = serde_json::to_vec_pretty(&self.inventory)?;
        match self.store.put(INVENTORY_KEY, &bytes, self.version.as_deref()).await {
            Ok(v) => {
                self.version = Some(v);
                self.unsaved = false;
                Ok(())
            }
            Err(e @ StateError::Conflict { .. }) => Err(ReconcileError::Contended(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// One reconcile: apply, wait for health, prune.
    pub async fn reconcile(&mut self, desired: &[ClusterObjects]) -> Result<Report, ReconcileError> {
        let mut report = self.converge_and_wait(desired).await?;
        report.clusters.extend(self.prune_absent(desired).await?);
        Ok(report)
    }

    /// Applies every desired cluster and waits for each to be ready (or to stall), without
    /// pruning: the daemon publishes the routes of the new revision in between, so a
    /// removed cluster's routes are gone before its objects are.
    pub async fn converge_and_wait(&mut self, desired: &[ClusterObjects]) -> Result<Report, ReconcileError> {
        let mut reports = Vec::new();
        // The inventory is saved once after the writes, not after each object: saving it
        // per object rewrote the whole inventory 3,000 times for 1,000 clusters (quadratic,
        // minutes). An object applied but not yet recorded when the process dies is
        // harmless: the next reconcile finds it live with no record, compares it with the
        // desired object and writes only if they differ; prune finds our namespaces by
        // label as well as in the inventory.
        //
        // Clusters are converged CONVERGE_CONCURRENCY at a time (each is a few calls in
        // order: namespace, service account, RisingWave); one cluster's failure does not
        // stop the others, and the first failure is returned after every write is recorded.
        let this = &*self;
        let results: Vec<_> = futures::stream::iter(desired)
            .map(|c| async move {
                let mut written = Vec::new();
                let report = this.converge(c, &mut written).await;
                (report, written)
            })
            .buffered(CONVERGE_CONCURRENCY)
            .collect()
            .await;
        let mut failed = None;
        for (report, written) in results {
            for (id, applied) in written {
                if self.inventory.objects.get(&id) != Some(&applied) {
                    self.inventory.objects.insert(id, applied);
                    self.unsaved = true;
                }
            }
            match report {
                Ok(report) => reports.push(report),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if self.unsaved {
            self.save().await?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let healthy = futures::future::join_all(
            desired.iter().zip(&reports).filter(|(_, r)| r.conflicts.is_empty()).map(|(c, _)| self.wait_ready(c)),
        )
        .await;
        let mut health = healthy.into_iter();
        for report in reports.iter_mut().filter(|r| r.conflicts.is_empty()) {
            if let Some(h) = health.next() {
                let (outcome, message) = h?;
                report.outcome = outcome;
                if !message.is_empty() {
                    report.message = if report.message.is_empty() { message } else { format!("{}; {message}", report.message) };
                }
            }
        }
        Ok(Report { clusters: reports })
    }

    /// Deletes (by their deletionPolicy) the clusters of the inventory that `desired` no
    /// longer holds.
    pub async fn prune_absent(&mut self, desired: &[ClusterObjects]) -> Result<Vec<ClusterReport>, ReconcileError> {
        let wanted: BTreeSet<&str> = desired.iter().map(|c| c.cluster.as_str()).collect();
        self.prune(&wanted).await
    }

    /// Converges one cluster's objects in order; what it applied goes to `written` for the
    /// inventory, even when a later object fails.
    async fn converge(&self, c: &ClusterObjects, written: &mut Vec<(String, Applied)>) -> Result<ClusterReport, ReconcileError> {
        let mut report = ClusterReport {
            cluster: c.cluster.clone(),
            outcome: Outcome::Ready,
            actions: Vec::new(),
            drift: Vec::new(),
            conflicts: Vec::new(),
            message: String::new(),
        };
        for obj in &c.objects {
            let id = obj.id();
            let api = self.api(obj.kind, obj.namespace.as_deref());
            let live = api.get_opt(&obj.name).await.map_err(api_err(format!("reading {id}")))?.map(serde_json::to_value).transpose()?;
            let last = self.inventory.objects.get(&id).map(|a| a.body.clone());
            let (write, force) = match (&live, &last) {
                (None, _) => (true, false),
                (Some(live), Some(last)) => {
                    let mut drift = Vec::new();
                    diff(last, live, &mut String::new(), &mut drift);
                    let drifted = !drift.is_empty();
                    report.drift.extend(drift.into_iter().map(|(path, applied, live)| Drift {
                        object: id.clone(),
                        path,
                        applied,
                        live,
                        corrected: !c.ignore_drift,
                    }));
                    let changed = last != &obj.body;
                    // Drift alone is corrected by forcing our own fields back.
                    (changed || (drifted && !c.ignore_drift), drifted && !c.ignore_drift && !changed)
                }
                // No record of what we applied (first run, or the inventory was lost):
                // write only if the live object differs from the desired one.
                (Some(live), None) => {
                    let mut d = Vec::new();
                    diff(&obj.body, live, &mut String::new(), &mut d);
                    (!d.is_empty(), false)
                }
            };
            if write {
                match self.apply(obj, force).await {
                    Ok(()) => report.actions.push(format!("applied {id}{}", if force { " (forced: drift corrected)" } else { "" })),
                    Err(ApplyError::Conflict(causes)) => {
                        let ours = last.as_ref().map(applied_paths).unwrap_or_default();
                        let all_ours = causes.iter().all(|(field, _)| owned_by(&ours, field));
                        if all_ours && !c.ignore_drift {
                            self.apply(obj, true).await.map_err(|e| e.into_error(&id))?;
                            report.actions.push(format!("applied {id} (forced: drift corrected)"));
                        } else {
                            report.conflicts.extend(causes.into_iter().map(|(field, message)| Conflict {
                                object: id.clone(),
                                field,
                                message,
                            }));
                            report.outcome = Outcome::Stalled;
                            report.message = format!(
                                "{id}: fields owned by another field manager were not overwritten: {}",
                                report.conflicts.iter().map(|x| format!("{} ({})", x.field, x.message)).collect::<Vec<_>>().join(", ")
                            );
                            return Ok(report);
                        }
                    }
                    Err(e @ ApplyError::Other(_)) => return Err(e.into_error(&id)),
                }
            }
            let applied = Applied {
                cluster: c.cluster.clone(),
                kind: obj.kind,
                namespace: obj.namespace.clone(),
                name: obj.name.clone(),
                body: obj.body.clone(),
            };
            written.push((id, applied));
        }
        if c.ignore_drift && !report.drift.is_empty() {
            report.message = format!("drift reported, not corrected (ignoreDrift): {}", drift_summary(&report.drift));
        }
        Ok(report)
    }

    async fn apply(&self, obj: &Object, force: bool) -> Result<(), ApplyError> {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        match self.api(obj.kind, obj.namespace.as_deref()).patch(&obj.name, &params, &Patch::Apply(&obj.body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && !force => {
                let causes: Vec<(String, String)> =
                    status.details.iter().flat_map(|d| &d.causes).map(|c| (c.field.clone(), c.message.clone())).collect();
                if causes.is_empty() { Err(ApplyError::Other(kube::Error::Api(status))) } else { Err(ApplyError::Conflict(causes)) }
            }
            Err(e) => Err(ApplyError::Other(e)),
        }
    }

    /// Polls the cluster's `RisingWave` until the operator reports it running at the
    /// generation we applied, reports a failure, or the deadline passes.
    async fn wait_ready(&self, c: &ClusterObjects) -> Result<(Outcome, String), ReconcileError> {
        let api = self.api(ObjectKind::RisingWave, Some(&c.namespace));
        let started = Instant::now();
        loop {
            let rw = api.get(&c.cluster).await.map_err(api_err(format!("reading RisingWave {}/{}", c.namespace, c.cluster)))?;
            let rw = serde_json::to_value(rw)?;
            match health(&rw) {
                Health::Ready => return Ok((Outcome::Ready, String::new())),
                Health::Failed(message) => return Ok((Outcome::Stalled, format!("the operator reports a failure: {message}"))),
                Health::Waiting(why) => {
                    let elapsed = started.elapsed();
                    if elapsed >= self.options.health_timeout {
                        return Ok((Outcome::Stalled, format!("not ready after {}s: {why}", self.options.health_timeout.as_secs_f64())));
                    }
                    tokio::time::sleep(self.options.poll_interval.min(self.options.health_timeout - elapsed)).await;
                }
            }
        }
    }

    /// Clusters we manage (found by label, or in the inventory) that the specs no longer
    /// have: deleted with `Delete`, labelled orphaned and left with `Retain`.
    async fn prune(&mut self, wanted: &BTreeSet<&str>) -> Result<Vec<ClusterReport>, ReconcileError> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let namespaces = self
            .api(ObjectKind::Namespace, None)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_err("listing namespaces"))?;
        // cluster -> (namespace, policy, already orphaned)
        let mut removed: BTreeMap<String, (String, DeletionPolicy, bool)> = BTreeMap::new();
        for ns in namespaces.items {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            let Some(cluster) = labels.get(LABEL_CLUSTER) else { continue };
            if wanted.contains(cluster.as_str()) {
                continue;
            }
            let policy = ns.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_DELETION_POLICY)).map(String::as_str);
            let orphaned = labels.get(LABEL_ORPHANED).is_some_and(|v| v == "true");
            removed.insert(cluster.clone(), (ns.metadata.name.clone().unwrap_or_default(), parse_policy(policy), orphaned));
        }
        for a in self.inventory.objects.values().filter(|a| a.kind == ObjectKind::Namespace && !wanted.contains(a.cluster.as_str())) {
            let policy = a.body.pointer("/metadata/annotations").and_then(|x| x.get(ANNOTATION_DELETION_POLICY)).and_then(Value::as_str);
            removed.entry(a.cluster.clone()).or_insert_with(|| (a.name.clone(), parse_policy(Some(policy.unwrap_or("Retain"))), false));
        }
        let mut reports = Vec::new();
        for (cluster, (ns, policy, orphaned)) in removed {
            let mut report = ClusterReport {
                cluster: cluster.clone(),
                outcome: Outcome::Retained,
                actions: Vec::new(),
                drift: Vec::new(),
                conflicts: Vec::new(),
                message: String::new(),
            };
            match policy {
                DeletionPolicy::Delete => {
                    self.delete_cluster(&cluster, &ns, &mut report).await?;
                    report.outcome = Outcome::Deleted;
                    report.message = format!("removed from the specs with deletionPolicy Delete: namespace {ns} and its objects deleted");
                }
                DeletionPolicy::Retain => {
                    if !orphaned {
                        self.label_orphaned(&cluster, &ns, &mut report).await?;
                    }
                    report.message = format!(
                        "removed from the specs with deletionPolicy Retain: namespace {ns} and its RisingWave are kept, labelled {LABEL_ORPHANED}=true; delete them by hand when done"
                    );
                }
            }
            let before = self.inventory.objects.len();
            self.inventory.objects.retain(|_, a| a.cluster != cluster);
            if self.inventory.objects.len() != before {
                self.save().await?;
            }
            reports.push(report);
        }
        Ok(reports)
    }

    async fn delete_cluster(&self, cluster: &str, ns: &str, report: &mut ClusterReport) -> Result<(), ReconcileError> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CLUSTER}={cluster}");
        // Dependents first, so the operator sees its resource go before the namespace does.
        for kind in [ObjectKind::Service, ObjectKind::RisingWave, ObjectKind::ServiceAccount] {
            let api = self.api(kind, Some(ns));
            for obj in api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(api_err(format!("listing {}s in {ns}", kind.as_str())))?
                .items
            {
                let name = obj.metadata.name.unwrap_or_default();
                delete_if_present(&api, &name).await.map_err(api_err(format!("deleting {}", object_id(kind, Some(ns), &name))))?;
                report.actions.push(format!("deleted {}", object_id(kind, Some(ns), &name)));
            }
        }
        let api = self.api(ObjectKind::Namespace, None);
        delete_if_present(&api, ns).await.map_err(api_err(format!("deleting namespace {ns}")))?;
        report.actions.push(format!("deleted {}", object_id(ObjectKind::Namespace, None, ns)));
        let started = Instant::now();
        while api.get_opt(ns).await.map_err(api_err(format!("reading namespace {ns}")))?.is_some() {
            if started.elapsed() >= self.options.namespace_timeout {
                return Err(ReconcileError::Terminating {
                    namespace: ns.to_owned(),
                    cluster: cluster.to_owned(),
                    secs: self.options.namespace_timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(self.options.poll_interval.min(Duration::from_millis(500))).await;
        }
        Ok(())
    }

    async fn label_orphaned(&self, cluster: &str, ns: &str, report: &mut ClusterReport) -> Result<(), ReconcileError> {
        let patch = json!({"metadata": {"labels": {LABEL_ORPHANED: "true"}}});
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        self.api(ObjectKind::Namespace, None)
            .patch(ns, &params, &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("labelling namespace {ns}")))?;
        report.actions.push(format!("labelled {} orphaned", object_id(ObjectKind::Namespace, None, ns)));
        let api = self.api(ObjectKind::RisingWave, Some(ns));
        if api.get_opt(cluster).await.map_err(api_err(format!("reading RisingWave {ns}/{cluster}")))?.is_some() {
            api.patch(cluster, &params, &Patch::Merge(&patch)).await.map_err(api_err(format!("labelling RisingWave {ns}/{cluster}")))?;
            report.actions.push(format!("labelled {} orphaned", object_id(ObjectKind::RisingWave, Some(ns), cluster)));
        }
        Ok(())
    }
}

enum ApplyError {
    Conflict(Vec<(String, String)>),
    Other(kube::Error),
}

impl ApplyError {
    /// The reconcile's error for applying `object`.
    fn into_error(self, object: &str) -> ReconcileError {
        match self {
            ApplyError::Other(kube::Error::Api(status)) => {
                ReconcileError::Refused { object: object.to_owned(), code: status.code, reason: status.reason, message: status.message }
            }
            ApplyError::Other(source) => ReconcileError::Api { action: format!("applying {object}"), source },
            conflict @ ApplyError::Conflict(_) => {
                ReconcileError::Refused { object: object.to_owned(), code: 409, reason: "Conflict".into(), message: conflict.to_string() }
            }
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Conflict(c) => {
                write!(f, "conflicts on {}", c.iter().map(|(field, _)| field.as_str()).collect::<Vec<_>>().join(", "))
            }
            ApplyError::Other(e) => write!(f, "{e}"),
        }
    }
}

async fn delete_if_present(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn parse_policy(text: Option<&str>) -> DeletionPolicy {
    // Anything but an explicit Delete keeps the cluster: losing data is not a default.
    if text == Some("Delete") { DeletionPolicy::Delete } else { DeletionPolicy::Retain }
}

fn drift_summary(drift: &[Drift]) -> String {
    drift.iter().map(|d| format!("{} {}: applied {} live {}", d.object, d.path, d.applied, d.live)).collect::<Vec<_>>().join("; ")
}

/// What the operator's status says.
#[derive(Debug, PartialEq)]
enum Health {
    Ready,
    Failed(String),
    Waiting(String),
}

fn health(rw: &Value) -> Health {
    let generation = rw.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = rw.pointer("/status/observedGeneration").and_then(Value::as_i64);
    let conditions = rw.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let condition = |ty: &str| conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let is_true = |ty: &str| condition(ty).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True");
    let message = |ty: &str| condition(ty).and_then(|c| c.get("message")).and_then(Value::as_str).unwrap_or("").to_owned();
    if is_true("Failed") {
        return Health::Failed(message("Failed"));
    }
    if observed != generation {
        return Health::Waiting(format!(
            "the operator has not observed generation {} yet (observed {:?})",
            generation.unwrap_or(0),
            observed
        ));
    }
    if is_true("Upgrading") {
        return Health::Waiting(format!("still upgrading: {}", message("Upgrading")));
    }
    if !is_true("Running") {
        let m = message("Running");
        return Health::Waiting(if m.is_empty() {
            "condition Running is not True".into()
        } else {
            format!("condition Running is not True: {m}")
        });
    }
    Health::Ready
}

/// Fields of `applied` whose value in `live` differs, as `(path, applied, live)`.
/// `metadata` counts only for labels and annotations; lists compare element by element, and
/// fields the server added (defaults, status) do not count.
pub fn diff(applied: &Value, live: &Value, path: &mut String, out: &mut Vec<(String, Value, Value)>) {
    match (applied, live) {
        (Value::Object(a), Value::Object(l)) => {
            for (k, av) in a {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                if path == ".metadata" {
                    for sub in ["labels", "annotations"] {
                        if let Some(av) = av.get(sub) {
                            let len = path.len();
                            path.push('.');
                            path.push_str(sub);
                            diff(av, l.get("metadata").and_then(|m| m.get(sub)).unwrap_or(&Value::Null), path, out);
                            path.truncate(len);
                        }
                    }
                } else {
                    diff(av, l.get(k).unwrap_or(&Value::Null), path, out);
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(l)) if a.len() == l.len() => {
            for (i, (av, lv)) in a.iter().zip(l).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                diff(av, lv, path, out);
                path.truncate(len);
            }
        }
        (a, l) if same_scalar(a, l) => {}
        (a, l) => out.push((path.clone(), a.clone(), l.clone())),
    }
}

fn same_scalar(a: &Value, l: &Value) -> bool {
    match (a, l) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == l,
    }
}

/// Dotted key paths of every leaf in an applied body (list indexes dropped).
fn applied_paths(body: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, path: String, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    walk(c, format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                out.insert(path.clone());
                for c in items {
                    walk(c, path.clone(), out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(body, String::new(), &mut out);
    out
}

/// Whether the API server's conflict field (`.spec.x`, `.spec.list[name="a"].y`) is one we
/// applied.
fn owned_by(ours: &BTreeSet<String>, field: &str) -> bool {
    let mut key = String::new();
    let mut depth = 0;
    for ch in field.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => key.push(ch),
            _ => {}
        }
    }
    ours.iter().any(|p| p == &key || p.starts_with(&format!("{key}.")) || key.starts_with(&format!("{p}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_needs_a_person_and_a_busy_server_does_not() {
        let status = |code: u16| kube::core::Status { code, reason: "r".into(), message: "m".into(), ..kube::core::Status::default() };
        let refused = |code: u16| ApplyError::Other(kube::Error::Api(Box::new(status(code)))).into_error("RisingWave rw-a/a");
        assert!(!refused(422).retryable(), "validation refused");
        assert!(!refused(403).retryable(), "RBAC refused");
        assert!(refused(429).retryable() && refused(503).retryable());
        assert!(refused(422).to_string().contains("applying RisingWave rw-a/a: the API server refused it (422 r): m"));
        let read = api_err("reading Namespace rw-a")(kube::Error::Api(Box::new(status(500))));
        assert!(read.retryable(), "{read}");
        let bad = ReconcileError::Inventory(serde_json::from_slice::<Inventory>(b"{").expect_err("malformed"));
        assert!(!bad.retryable());
    }

    #[test]
    fn diff_ignores_server_added_fields_and_names_the_path() {
        let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"x": "1"}},
                             "spec": {"ports": [{"port": 4566}], "type": "ClusterIP"}});
        let live = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}},
                          "spec": {"ports": [{"port": 4567, "protocol": "TCP"}], "type": "ClusterIP", "clusterIP": "10.0.0.1"}});
        let mut out = Vec::new();
        diff(&applied, &live, &mut String::new(), &mut out);
        assert_eq!(out, vec![(".spec.ports[0].port".to_owned(), json!(4566), json!(4567))]);
    }

    #[test]
    fn health_reads_generation_and_conditions() {
        let rw = |observed: i64, conds: Value| json!({"metadata": {"generation": 2}, "status": {"observedGeneration": observed, "conditions": conds}});
        assert_eq!(health(&rw(2, json!([{"type": "Running", "status": "True"}]))), Health::Ready);
        assert!(matches!(health(&rw(1, json!([{"type": "Running", "status": "True"}]))), Health::Waiting(_)));
        assert!(matches!(
            health(&rw(2, json!([{"type": "Running", "status": "True"}, {"type": "Upgrading", "status": "True"}]))),
            Health::Waiting(_)
        ));
        assert_eq!(health(&rw(2, json!([{"type": "Failed", "status": "True", "message": "boom"}]))), Health::Failed("boom".into()));
    }

    #[test]
    fn conflict_fields_are_ours_only_when_we_applied_them() {
        let ours = applied_paths(&json!({"spec": {"image": "x", "components": {"compute": {"nodeGroups": [{"replicas": 3}]}}}}));
        assert!(owned_by(&ours, ".spec.image"));
        assert!(owned_by(&ours, ".spec.components.compute.nodeGroups"));
        assert!(owned_by(&ours, ".spec.components.compute.nodeGroups[name=\"default\"].replicas"));
        assert!(!owned_by(&ours, ".spec.imagePullPolicy"));
    }
}
