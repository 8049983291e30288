//! The **expand, observe and plan** stages, for the two kinds of plan:
//!
//! - [`preview`]: a pull request's plan, read from git alone: what exists is taken to be
//!   the desired state at the base revision;
//! - [`live`]: the plan `byoc apply` runs: the cloud observed by its tags against the
//!   inventory ([`crate::cloud::apply::prepare`], which takes the environment's lease),
//!   then the Kubernetes half, observed as the revision applied last
//!   ([`super::apply::KUBERNETES_REVISION_KEY`]) checked against the namespaces that
//!   exist. Its [`LivePlan::fingerprint`] pins what was observed, so a saved plan can be
//!   refused when the live state moved.

use std::collections::BTreeMap;

use git2::{Oid, Repository};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use rwproxy::diagnostics::Diagnostic;
use sha2::{Digest, Sha256};

use super::apply::{CLOUD_OUTPUTS_KEY, KubernetesError, applied_revision};
use super::load::{LoadError, Loaded, at_revision, at_revision_cached};
use crate::cloud::apply::{ApplyError, Options, Prepared, prepare};
use crate::cloud::{Cloud, cloud_part};
use crate::expand::{expand, expand_pair};
use crate::k8s::objects::{LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY, ObjectKind};
use crate::plan::{Action, Plan, plan};
use crate::resource::{Graph, Kind};
use crate::source::SourceError;
use crate::spec::Specs;
use crate::spec::load::ParseCache;
use crate::state::StateStore;

/// A pull request's plan.
#[derive(Debug)]
pub struct Preview {
    /// The base revision's name.
    pub base: String,
    /// The base commit.
    pub base_commit: Oid,
    /// The head revision's name.
    pub head: String,
    /// The head commit.
    pub head_commit: Oid,
    /// The head's specs.
    pub specs: Specs,
    /// From base to head.
    pub plan: Plan,
}

/// Why a pull request cannot be planned; none is helped by retrying.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// A revision or its files could not be read.
    #[error("{which}: {error}")]
    Source {
        /// `head` or `base`.
        which: &'static str,
        /// What failed.
        error: SourceError,
    },
    /// The environment is missing at head.
    #[error("{env} does not exist at head {revision}")]
    HeadMissing {
        /// The environment directory.
        env: String,
        /// Head's name.
        revision: String,
    },
    /// Specs that do not validate.
    #[error("{which} {revision} is not valid")]
    Invalid {
        /// `head` or `base`.
        which: &'static str,
        /// The revision's name.
        revision: String,
        /// Every problem.
        problems: Vec<Diagnostic>,
    },
    /// The pull request moves the environment to another cloud.
    #[error("the pull request moves environment {env} from {from} to {to}")]
    CloudChanged {
        /// The environment directory.
        env: String,
        /// Base's cloud.
        from: &'static str,
        /// Head's cloud.
        to: &'static str,
    },
}

/// Plans merging `head` into `base`; base and head share most files, each distinct file
/// is parsed once.
#[tracing::instrument(level = "info", skip_all, fields(stage = "plan", base = base, head = head, environment = env))]
pub fn preview(repo: &Repository, base: &str, head: &str, env: &str) -> Result<Preview, PreviewError> {
    let cache = ParseCache::default();
    let head = match at_revision_cached(repo, head, env, &cache) {
        Ok(l) => l,
        Err(LoadError::Source(error)) => return Err(PreviewError::Source { which: "head", error }),
        Err(LoadError::Missing { env, revision }) => return Err(PreviewError::HeadMissing { env, revision }),
        Err(LoadError::Invalid { revision, problems }) => return Err(PreviewError::Invalid { which: "head", revision, problems }),
    };
    // The base was merged earlier and should be valid; if it is not, the plan cannot say
    // what exists, so refuse rather than plan against a guess. A base without the
    // environment is a new environment: nothing is observed.
    let (base_name, base_commit, base_specs) = match at_revision_cached(repo, base, env, &cache) {
        Ok(l) => {
            if l.specs.environment.cloud != head.specs.environment.cloud {
                return Err(PreviewError::CloudChanged {
                    env: env.to_owned(),
                    from: l.specs.environment.cloud.as_str(),
                    to: head.specs.environment.cloud.as_str(),
                });
            }
            (l.name, l.commit, Some(l.specs))
        }
        Err(LoadError::Missing { revision, .. }) => {
            let commit = repo.revparse_single(base).and_then(|o| o.peel_to_commit()).map(|c| c.id()).unwrap_or_else(|_| Oid::ZERO_SHA1);
            (revision, commit, None)
        }
        Err(LoadError::Source(error)) => return Err(PreviewError::Source { which: "base", error }),
        Err(LoadError::Invalid { revision, problems }) => return Err(PreviewError::Invalid { which: "base", revision, problems }),
    };
    drop(cache);
    let Loaded { name: head_name, commit: head_commit, files, specs } = head;
    // The file texts are parsed; what follows needs only the specs.
    drop(files);
    let (observed, desired) = expand_pair(base_specs.as_ref(), &specs);
    let plan = plan(&desired, &observed);
    Ok(Preview { base: base_name, base_commit, head: head_name, head_commit, specs, plan })
}

/// Why the live plan could not be made; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The cloud half: the lease, the state store, observing the account.
    #[error(transparent)]
    Cloud(#[from] ApplyError),
    /// The Kubernetes half.
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    /// The revision applied last cannot be loaded any more (rewritten history).
    #[error("the revision applied last to Kubernetes cannot be read: {0}")]
    Applied(LoadError),
}

impl LiveError {
    /// Whether trying again later can help (another apply holds the lease, a service was
    /// unreachable).
    pub fn retryable(&self) -> bool {
        match self {
            LiveError::Cloud(ApplyError::Lease(_) | ApplyError::State(_) | ApplyError::Observe(_)) => true,
            LiveError::Kubernetes(e) => e.retryable(),
            _ => false,
        }
    }
}

/// The plan `byoc apply` runs, holding the environment's lease until it is executed or
/// dropped.
pub struct LivePlan<'a, S: StateStore + ?Sized> {
    /// The cloud half, ready to execute.
    pub cloud: Prepared<'a, S>,
    /// The whole plan: the cloud's steps, then the Kubernetes objects'.
    pub plan: Plan,
    /// Hex SHA-256 of everything observed: the cloud as found and its inventory, the
    /// Kubernetes revision applied last, the managed namespaces and `RisingWave`
    /// generations, the versions of the state store's records.
    pub fingerprint: String,
}

impl<S: StateStore + ?Sized> LivePlan<'_, S> {
    /// Whether the Kubernetes half has anything to do.
    pub fn kubernetes_changes(&self) -> bool {
        self.plan.changed().any(|s| s.kind.as_str().starts_with("k8s.") && s.action != crate::plan::Action::Blocked)
    }
}

/// Without a cluster to install the sidecar in, what stands on its Services' load
/// balancers cannot be made: those changes are shown blocked, with what to do.
fn waits_for_the_cluster(plan: &mut Plan, desired: &Graph, found: &crate::cloud::Refs) {
    for s in plan.steps.iter_mut() {
        if super::apply::needs_the_cluster(s, desired, found) {
            s.action = Action::Blocked;
            s.reason = super::apply::WAITS_FOR_THE_CLUSTER.to_owned();
        }
    }
}

/// Observes and plans `loaded` (the revision to apply) against the live environment: the
/// cloud through `cloud`, Kubernetes through `kube` (`None`: the cloud half only).
#[tracing::instrument(level = "info", skip_all, fields(stage = "plan", revision = %loaded.name, environment = env_dir))]
#[allow(clippy::too_many_arguments)]
pub async fn live<'a, S: StateStore + ?Sized, C: Cloud>(
    cloud: &C,
    store: &'a S,
    repo: &Repository,
    env_dir: &str,
    loaded: &Loaded,
    kube: Option<&kube::Client>,
    options: &'a Options,
    destroy: bool,
) -> Result<LivePlan<'a, S>, LiveError> {
    let desired = if destroy { Graph::default() } else { expand(&loaded.specs) };
    let mut prepared = prepare(cloud, store, &cloud_part(&desired), options).await?;
    if kube.is_none() && !destroy {
        let found = prepared.observed.found.clone();
        waits_for_the_cluster(&mut prepared.plan, &cloud_part(&desired), &found);
    }
    // Past this point the lease is held: an error gives it back before it is returned.
    let observed = async {
        let mut fingerprint = Sha256::new();
        let (_, inventory_version) = crate::cloud::apply::load_inventory(store).await?;
        let outputs_version = store.get(CLOUD_OUTPUTS_KEY).await.map_err(ApplyError::State)?.map(|v| v.version);
        let found: BTreeMap<&str, &str> = prepared.observed.found.iter().map(|(id, f)| (id.as_str(), f.cloud_id.as_str())).collect();
        let cloud_seen = serde_json::json!({
            "graph": prepared.observed.graph,
            "found": found,
            "duplicates": prepared.observed.duplicates.iter().map(|d| &d.cloud_id).collect::<Vec<_>>(),
            "inventory": inventory_version,
            "outputs": outputs_version,
        });
        fingerprint.update(cloud_seen.to_string().as_bytes());
        let mut whole = prepared.plan.clone();
        if let Some(client) = kube {
            let (k8s_steps, seen) = kubernetes(client, store, repo, env_dir, &desired).await?;
            fingerprint.update(seen.to_string().as_bytes());
            whole.steps.extend(k8s_steps);
        }
        Ok::<_, LiveError>((whole, hex(&fingerprint.finalize())))
    }
    .await;
    let (whole, fingerprint) = match observed {
        Ok(o) => o,
        Err(e) => {
            if let Err(release) = prepared.release().await {
                tracing::warn!(
                    stage = "plan",
                    "could not give back the environment's lease after an error ({release}); it expires on its own"
                );
            }
            return Err(e);
        }
    };
    let summary = whole.summary();
    tracing::debug!(%fingerprint, create = summary.create, update = summary.update, delete = summary.delete, "planned against the live state");
    Ok(LivePlan { cloud: prepared, plan: whole, fingerprint })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Kubernetes half of a live plan: the `k8s.*` steps from the revision applied last
/// (restricted to the clusters whose namespace exists) to `desired`, and what was seen.
async fn kubernetes<S: StateStore + ?Sized>(
    client: &kube::Client,
    store: &S,
    repo: &Repository,
    env_dir: &str,
    desired: &Graph,
) -> Result<(Vec<crate::plan::Step>, serde_json::Value), LiveError> {
    let api = |kind: ObjectKind| Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource());
    let selector = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let unreachable = |e: kube::Error| KubernetesError::Api(format!("observing Kubernetes: {e}"));
    let namespaces = api(ObjectKind::Namespace).list(&selector).await.map_err(unreachable)?;
    let risingwaves = api(ObjectKind::RisingWave).list(&selector).await.map_err(|e| match e {
        // The kind is not served: the operator (which installs the CRD) is not there.
        kube::Error::Api(s) if s.code == 404 => KubernetesError::Api(format!(
            "observing Kubernetes: the cluster does not serve {} (the RisingWave CRD): install the risingwave-operator in the cluster first (it brings the CRD), or use --cloud-only",
            ObjectKind::RisingWave.api_resource().api_version
        )),
        e => unreachable(e),
    })?;
    // The environment's cluster-wide objects (the default StorageClass), by name.
    let classes: std::collections::BTreeSet<String> = if desired.resources.values().any(|r| r.kind == Kind::K8sStorageClass) {
        let storage_classes =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"), "storageclasses");
        Api::<DynamicObject>::all_with(client.clone(), &storage_classes)
            .list(&selector)
            .await
            .map_err(unreachable)?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect()
    } else {
        std::collections::BTreeSet::new()
    };
    // cluster -> namespace labels and annotations (deletion policy, orphaned)
    let live: BTreeMap<String, serde_json::Value> = namespaces
        .items
        .iter()
        .filter_map(|ns| {
            let cluster = ns.metadata.labels.as_ref()?.get(LABEL_CLUSTER)?.clone();
            Some((cluster, serde_json::json!([ns.metadata.name, ns.metadata.labels, ns.metadata.annotations])))
        })
        .collect();
    // Status writes do not move the generation; spec edits do.
    let generations: BTreeMap<String, Option<i64>> = risingwaves
        .items
        .iter()
        .map(|rw| {
            (
                format!("{}/{}", rw.metadata.namespace.clone().unwrap_or_default(), rw.metadata.name.clone().unwrap_or_default()),
                rw.metadata.generation,
            )
        })
        .collect();
    let (applied, applied_version) = applied_revision(store).await?;
    let inventory_version = store.get(crate::k8s::reconcile::INVENTORY_KEY).await.map_err(KubernetesError::State)?.map(|v| v.version);
    let seen = serde_json::json!({
        "namespaces": live,
        "risingwaves": generations,
        "applied": applied_version,
        "inventory": inventory_version,
        "storageClasses": classes,
    });
    let is_k8s = |kind: &str| kind.starts_with("k8s.");
    let cluster_of = |id: &crate::resource::ResourceId| id.as_str().rsplit_once('/').map(|(_, name)| name.to_owned()).unwrap_or_default();
    let observed = match applied.and_then(|a| a.commit) {
        Some(commit) => at_revision(repo, &commit, env_dir).map(|l| expand(&l.specs)).map_err(LiveError::Applied)?,
        // Nothing recorded (a first apply, or a work tree applied with `byoc clusters`):
        // the clusters whose namespace exists are taken as desired; their drift is
        // corrected by the apply itself.
        None => desired.clone(),
    };
    let mut observed = Graph {
        resources: observed
            .resources
            .into_iter()
            .filter(|(id, r)| r.kind != Kind::K8sStorageClass && (!is_k8s(r.kind.as_str()) || live.contains_key(&cluster_of(id))))
            .collect(),
    };
    // A cluster-wide object is there as desired when byoc's of that name is in the cluster
    // (the sidecar's install applies it whole each time); otherwise it is to be made.
    for (id, r) in desired.resources.iter().filter(|(_, r)| r.kind == Kind::K8sStorageClass) {
        if r.properties.get("name").and_then(crate::resource::Value::as_str).is_some_and(|n| classes.contains(n)) {
            observed.resources.insert(id.clone(), r.clone());
        }
    }
    // The cloud part of both sides is the same, so only the Kubernetes steps differ.
    for (id, r) in desired.resources.iter().filter(|(_, r)| !is_k8s(r.kind.as_str())) {
        observed.resources.insert(id.clone(), r.clone());
    }
    let steps = plan(desired, &observed).steps.into_iter().filter(|s| is_k8s(s.kind.as_str())).collect();
    Ok((steps, seen))
}
