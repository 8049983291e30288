//! The apply engine: observe, plan, and run the plan against a [`Cloud`], recording each
//! finished action in the state store before the next is counted as done.
//!
//! Phases, each bounded by `concurrency`:
//! 1. replacements delete the old resource, dependents first ([`super::DELETE_ORDER`]),
//!    but for kinds replaced by creating first ([`Kind::replaced_by_creating_first`]:
//!    node groups, whose capacity must never drop to zero);
//! 2. creates, updates and replacements' creates run as soon as what they depend on is
//!    done (a create-first replacement's driver sees the old resource under its own id in
//!    `refs`, so it names the new one apart);
//! 3. the old resources of create-first replacements go, then deletions, dependents first. A failed deletion stops only the deletions of what
//!    the failed resource still uses (its recorded dependencies, transitively; every later
//!    kind when nothing is recorded, as for a leaked resource); every other deletion goes
//!    on, and the error lists each resource left and why.
//!
//! A crash anywhere leaves the cloud ahead of the inventory by at most the actions in
//! flight; those resources carry their tags already, so the next run finds and adopts
//! them. The journal says what the interrupted run had finished.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{Cloud, CloudError, Found, INVENTORY_KEY, Inventory, Journal, JournalEntry, Record, Refs, delete_rank};
use crate::plan::{Action, Plan, Step, plan};
use crate::resource::{Graph, Kind, Map, Resource, ResourceId, Value};
use crate::state::lease::{Lease, LeaseError, LeaseGuard};
use crate::state::{StateError, StateStore};

/// How to apply.
#[derive(Debug, Clone)]
pub struct Options {
    /// The revision being applied (`destroy` for a destroy); kept in the journal.
    pub revision: String,
    /// Cloud actions in flight at once.
    pub concurrency: usize,
    /// Who we are, for the lease (`host:pid`).
    pub holder: String,
    /// Lease lifetime in seconds; renewed at a third of it while applying.
    pub lease_ttl: i64,
    /// Destroy: every protection is lifted; buckets are emptied and deleted, retained
    /// clusters' roles deleted.
    pub delete_data: bool,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another apply holds the environment.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The stored inventory is not readable.
    #[error("state {key:?} is not a byoc inventory: {message}")]
    Inventory {
        /// Key.
        key: &'static str,
        /// Parse error.
        message: String,
    },
    /// Observing failed; nothing was changed.
    #[error("cannot observe the account, nothing was changed: {0}")]
    Observe(CloudError),
    /// The person did not approve, or a check refused; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// Actions failed; what finished is recorded.
    #[error("{failed} action(s) failed ({done} finished and recorded; run apply again to continue):\n{errors}")]
    Actions {
        /// Failed actions.
        failed: usize,
        /// Finished actions.
        done: usize,
        /// One line per failure.
        errors: String,
    },
}

/// What the account holds, read against the inventory.
#[derive(Debug, Default)]
pub struct Observed {
    /// What exists, as last applied (adopted resources as desired; leaked ones bare).
    pub graph: Graph,
    /// Cloud ids and outputs of everything that exists.
    pub found: Refs,
    /// Found by tag but missing from the inventory, and desired: adopted.
    pub adopted: BTreeSet<ResourceId>,
    /// Found by tag, missing from the inventory, and not desired: leaked.
    pub leaked: BTreeSet<ResourceId>,
    /// A second resource with a tag already seen: deleted after the plan.
    pub duplicates: Vec<Found>,
    /// In the inventory but not found: deleted outside byoc.
    pub gone: Vec<ResourceId>,
    /// Settings changed outside byoc, one line each (`id `prop`: applied X, live Y`).
    pub drift: Vec<String>,
}

/// Lists are compared as multisets: the cloud returns rules and principals in its own order.
fn same(applied: &Value, live: &Value) -> bool {
    match (applied, live) {
        (Value::List(a), Value::List(b)) => {
            let key = |items: &Vec<Value>| {
                let mut v: Vec<String> = items.iter().map(ToString::to_string).collect();
                v.sort();
                v
            };
            key(a) == key(b)
        }
        _ => applied == live,
    }
}

/// Puts the live value of each drifted setting into `resource` (what exists), so the plan
/// shows the change back to what is desired; notes each one.
/// A live setting the desired state never has but that forces replacement (an EKS node
/// group's `createFailed`) is put in too, so the plan replaces what cannot be repaired;
/// with `forcing_only` (an adopted resource, whose settings are re-applied anyway) only
/// that.
fn overlay_drift(resource: &mut Resource, live: &Map, notes: &mut Vec<String>, forcing_only: bool) {
    for (prop, now) in live.iter() {
        match resource.properties.get(prop) {
            Some(applied) if !forcing_only && !same(applied, now) => {
                notes.push(format!("{} `{prop}`: applied {applied}, live {now}", resource.id));
                resource.properties.insert(prop.to_owned(), now.clone());
            }
            None if resource.kind.replace_on().contains(&prop) => {
                notes.push(format!("{} `{prop}`: live {now}, which forces a replacement", resource.id));
                resource.properties.insert(prop.to_owned(), now.clone());
            }
            _ => {}
        }
    }
}

/// Key of [`Found::live`] a provider sets on something it found in the environment's place
/// that is not the environment's (a DNS zone group an Azure Policy put on byoc's private
/// endpoint), its value saying why: the plan shows it as kept (blocked, with that reason),
/// and nothing deletes it, not even `destroy --delete-data`.
pub const NOT_OURS: &str = "notOurs";

/// Reads the account and the inventory together.
pub fn reconcile(inventory: &Inventory, found: Vec<Found>, desired: &Graph, delete_data: bool) -> Observed {
    let mut o = Observed::default();
    for f in found {
        let record = inventory.resources.get(f.id.as_str());
        if let Some(first) = o.found.get(&f.id) {
            // Keep the one the inventory names; the other is a duplicate.
            if record.is_some_and(|r| r.cloud_id == f.cloud_id) && first.cloud_id != f.cloud_id {
                let first = o.found.insert(f.id.clone(), f).expect("present");
                o.duplicates.push(first);
            } else {
                o.duplicates.push(f);
            }
            continue;
        }
        let mut resource = match (record, desired.resources.get(&f.id)) {
            (Some(r), _) => Inventory::applied_resource(&f.id, f.kind, r),
            (None, Some(want)) => {
                o.adopted.insert(f.id.clone());
                Resource { protection: None, ..want.clone() }
            }
            (None, None) if f.live.get(NOT_OURS).is_some() => Resource { id: f.id.clone(), ..Resource::new(f.kind, "not ours") },
            (None, None) => {
                o.leaked.insert(f.id.clone());
                Resource { id: f.id.clone(), ..Resource::new(f.kind, "leaked") }
            }
        };
        if record.is_some() || o.adopted.contains(&f.id) {
            overlay_drift(&mut resource, &f.live, &mut o.drift, record.is_none());
        }
        resource.protection = record.and_then(|r| r.protection.clone()).filter(|_| !delete_data);
        if matches!(f.kind, Kind::AwsS3Bucket | Kind::GcpBucket) && !delete_data {
            resource.protection.get_or_insert_with(|| {
                "buckets hold data; byoc never deletes or replaces one unless destroy is given --delete-data".to_owned()
            });
        }
        if record.is_none()
            && let Some(why) = f.live.get(NOT_OURS).and_then(Value::as_str)
        {
            resource.protection = Some(why.to_owned());
        }
        o.graph.resources.insert(f.id.clone(), resource);
        o.found.insert(f.id.clone(), f);
    }
    o.gone = inventory
        .resources
        .keys()
        .filter_map(|k| ResourceId::parse(k))
        .filter(|(_, id)| !o.found.contains_key(id))
        .map(|(_, id)| id)
        .collect();
    o
}

/// The plan from `observed` to `desired`; adopted resources are re-applied (their
/// settings were never confirmed), leaked ones deleted.
pub fn plan_apply(desired: &Graph, observed: &Observed) -> Plan {
    let mut p = plan(desired, &observed.graph);
    for s in &mut p.steps {
        if observed.adopted.contains(&s.id) && s.action == Action::NoOp {
            s.action = Action::Update;
            s.reason = "found by its tags but not in the inventory (an earlier apply stopped before recording it): adopted, its settings re-applied".to_owned();
        }
        if observed.leaked.contains(&s.id) && s.action == Action::Delete {
            s.reason = "tagged for this environment but neither desired nor in the inventory (leaked)".to_owned();
        }
    }
    p
}

/// Reads the inventory and its version.
pub async fn load_inventory(store: &(impl StateStore + ?Sized)) -> Result<(Inventory, Option<String>), ApplyError> {
    match store.get(INVENTORY_KEY).await? {
        None => Ok((Inventory::default(), None)),
        Some(v) => {
            let inv = serde_json::from_slice(&v.value).map_err(|e| ApplyError::Inventory { key: INVENTORY_KEY, message: e.to_string() })?;
            Ok((inv, Some(v.version)))
        }
    }
}

/// The inventory in the state store, written only on top of the version read.
struct Recorder<'a, S: StateStore + ?Sized> {
    store: &'a S,
    inventory: Inventory,
    version: Option<String>,
    /// Given back on every way out of the apply, errors and panics included.
    lease: LeaseGuard<'a, S>,
    options: &'a Options,
    renewed: Instant,
}

impl<S: StateStore + ?Sized> Recorder<'_, S> {
    async fn save(&mut self) -> Result<(), ApplyError> {
        let bytes = serde_json::to_vec_pretty(&self.inventory).expect("inventory serializes");
        self.version = Some(self.store.put(INVENTORY_KEY, &bytes, self.version.as_deref()).await?);
        Ok(())
    }

    async fn renew_if_due(&mut self) -> Result<(), ApplyError> {
        if self.renewed.elapsed() >= Duration::from_secs((self.options.lease_ttl / 3).max(1) as u64) {
            self.lease.renew(now(), self.options.lease_ttl).await?;
            self.renewed = Instant::now();
        }
        Ok(())
    }

    async fn done(&mut self, id: &ResourceId, action: Action, desired: Option<&Resource>, found: Option<&Found>) -> Result<(), ApplyError> {
        match (desired, found) {
            (Some(r), Some(f)) => {
                let record = Record {
                    kind: r.kind.as_str().to_owned(),
                    cloud_id: f.cloud_id.clone(),
                    outputs: f.outputs.clone(),
                    applied: serde_json::to_value(&r.properties).expect("properties serialize"),
                    depends_on: r.depends_on.iter().map(|d| d.as_str().to_owned()).collect(),
                    protection: r.protection.clone(),
                };
                self.inventory.resources.insert(id.as_str().to_owned(), record);
            }
            _ => {
                self.inventory.resources.remove(id.as_str());
            }
        }
        if let Some(j) = &mut self.inventory.journal {
            j.done.push(JournalEntry {
                id: id.as_str().to_owned(),
                action: action.as_str().to_owned(),
                at: now(),
                cloud_id: found.map(|f| f.cloud_id.clone()).unwrap_or_default(),
            });
        }
        self.save().await?;
        self.renew_if_due().await
    }
}

/// Whether a lease holder (`host:pid`) is a process of this host that no longer runs: an
/// apply that was killed. Its lease is taken over at once instead of after it expires.
fn dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else { return false };
    host == hostname() && pid.parse::<u32>().is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// This host's name, as lease holders name it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".to_owned())
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Everything before the first change: the lease, the inventory, what exists, the plan.
pub struct Prepared<'a, S: StateStore + ?Sized> {
    recorder: Recorder<'a, S>,
    /// What exists.
    pub observed: Observed,
    /// The plan that [`Prepared::execute`] runs, exactly.
    pub plan: Plan,
    desired: Graph,
}

/// Takes the lease, reads the inventory and the account, and plans. Nothing is changed;
/// [`Prepared::execute`] or [`Prepared::release`] gives the lease back (an error here
/// gives it back before returning).
pub async fn prepare<'a, S: StateStore + ?Sized, C: Cloud>(
    cloud: &C,
    store: &'a S,
    desired: &Graph,
    options: &'a Options,
) -> Result<Prepared<'a, S>, ApplyError> {
    let lease = LeaseGuard::new(store, Lease::acquire_unless(store, &options.holder, now(), options.lease_ttl, dead_here).await?);
    let mut recorder = Recorder { store, inventory: Inventory::default(), version: None, lease, options, renewed: Instant::now() };
    let result = async {
        let (inventory, version) = load_inventory(store).await?;
        recorder.inventory = inventory;
        recorder.version = version;
        let found = cloud.observe().await.map_err(ApplyError::Observe)?;
        Ok::<_, ApplyError>(reconcile(&recorder.inventory, found, desired, options.delete_data))
    }
    .await;
    let observed = match result {
        Ok(o) => o,
        Err(e) => {
            // Nothing was changed: the lease goes back at once. A failure to give it back
            // is logged, and the first error is the one reported.
            if let Err(release) = recorder.lease.release().await {
                tracing::warn!(
                    stage = "apply",
                    "could not give back the environment's lease after an error ({release}); it expires on its own"
                );
            }
            return Err(e);
        }
    };
    let plan = plan_apply(desired, &observed);
    Ok(Prepared { recorder, observed, plan, desired: desired.clone() })
}

impl<S: StateStore + ?Sized> Prepared<'_, S> {
    /// Gives the lease back without changing anything.
    pub async fn release(self) -> Result<(), ApplyError> {
        self.recorder.lease.release().await?;
        Ok(())
    }

    /// Notes from reading the inventory against the account, one line each.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(j) = &self.recorder.inventory.journal
            && j.finished_at.is_none()
        {
            notes.push(format!(
                "resuming: the apply of {} started at {} stopped after {} of {} action(s); what is left is planned again from what exists",
                j.revision,
                j.started_at,
                j.done.len(),
                j.planned
            ));
        }
        for id in &self.observed.gone {
            notes
                .push(format!("{id} is in the inventory but no longer exists (deleted outside byoc); it will be created again if desired"));
        }
        for d in &self.observed.drift {
            notes.push(format!("drift: {d}; it will be set back"));
        }
        for id in &self.observed.adopted {
            notes.push(format!("{id} exists with its tags but was not recorded (an interrupted apply); adopting it"));
        }
        for id in &self.observed.leaked {
            notes.push(format!("{id} is tagged for this environment but not managed (leaked); it will be deleted"));
        }
        for d in &self.observed.duplicates {
            notes.push(format!("{} {} is a second resource tagged {}; it will be deleted", d.kind.label(), d.cloud_id, d.id));
        }
        notes
    }

    /// Takes the changes `later` picks out of what [`Prepared::execute`] runs (they stay in
    /// the plan as no-ops) and returns them, for a later pass (planned again from what
    /// exists then) or to report. Nothing is recorded for them.
    pub fn defer(&mut self, later: impl Fn(&Step) -> bool) -> Vec<Step> {
        let mut deferred = Vec::new();
        for s in self.plan.steps.iter_mut().filter(|s| !matches!(s.action, Action::NoOp | Action::Blocked) && later(s)) {
            deferred.push(s.clone());
            s.action = Action::NoOp;
        }
        deferred
    }

    /// Leaves the second resources tagged as one of ours (found by observe) for a later
    /// apply instead of deleting them in this one.
    pub fn leave_duplicates(&mut self) {
        self.observed.duplicates.clear();
    }

    /// Whether there is anything to do.
    pub fn has_work(&self) -> bool {
        self.plan.steps.iter().any(|s| !matches!(s.action, Action::NoOp | Action::Blocked)) || !self.observed.duplicates.is_empty()
    }

    /// Runs the plan. Prints one line per finished action; returns how many finished. The
    /// lease is given back at the end, whether the plan succeeded or not.
    pub async fn execute<C: Cloud>(mut self, cloud: &C, concurrency: usize) -> Result<usize, ApplyError> {
        let result = self.run_plan(cloud, concurrency).await;
        let released = self.recorder.lease.release().await;
        match (result, released) {
            (Ok(done), Ok(())) => Ok(done),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), released) => {
                if let Err(release) = released {
                    tracing::warn!(
                        stage = "apply",
                        "could not give back the environment's lease after a failed apply ({release}); it expires on its own"
                    );
                }
                Err(e)
            }
        }
    }

    async fn run_plan<C: Cloud>(&mut self, cloud: &C, concurrency: usize) -> Result<usize, ApplyError> {
        let steps: Vec<Step> = self.plan.steps.iter().filter(|s| !matches!(s.action, Action::NoOp | Action::Blocked)).cloned().collect();
        let planned = steps.len() + self.observed.duplicates.len();
        self.recorder.inventory.journal = Some(Journal {
            revision: self.recorder.options.revision.clone(),
            started_at: now(),
            planned,
            done: Vec::new(),
            finished_at: None,
        });
        self.recorder.save().await?;
        let mut refs = std::mem::take(&mut self.observed.found);
        let mut progress = Progress { total: planned, finished: 0, failures: Vec::new(), skipped: Vec::new() };
        let concurrency = concurrency.max(1);

        // 1. Replacements: the old resource goes first, dependents before dependencies.
        let replaced: Vec<Step> = steps.iter().filter(|s| s.action == Action::Replace && !creates_first(s)).cloned().collect();
        self.delete_in_order(cloud, &replaced, &mut refs, &mut progress, concurrency, true).await?;
        // The old resources of create-first replacements, deleted once their successors exist.
        let mut superseded: Vec<Found> = Vec::new();

        // 2. Creates and updates, each once its dependencies are done.
        if progress.failures.is_empty() {
            let ensures: Vec<&Step> =
                steps.iter().filter(|s| matches!(s.action, Action::Create | Action::Update | Action::Replace)).collect();
            let desired = std::mem::take(&mut self.desired);
            self.ensure_in_order(cloud, &desired, &ensures, &mut refs, &mut progress, concurrency, &mut superseded).await?;
        }
        // 3a. What create-first replacements superseded: only once every create succeeded.
        if progress.failures.is_empty() {
            // Users first: an old node group before the old launch template it runs on.
            superseded.sort_by_key(|f| delete_rank(f.kind));
            for old in superseded {
                let started = Instant::now();
                match cloud.delete(&old).await {
                    Ok(()) => progress.done(&old.id, "replace: deleted", &old.cloud_id, started, false),
                    Err(e) => progress.failures.push(format!(
                        "{e}\n  the new {} is in place; the old one ({}) is left and the next apply deletes it",
                        old.id, old.cloud_id
                    )),
                }
            }
        }

        // 3. Deletions (and duplicates), dependents first.
        if progress.failures.is_empty() {
            let deletes: Vec<Step> = steps.iter().filter(|s| s.action == Action::Delete).cloned().collect();
            let duplicates = std::mem::take(&mut self.observed.duplicates);
            self.delete_in_order(cloud, &deletes, &mut refs, &mut progress, concurrency, false).await?;
            for d in duplicates {
                let started = Instant::now();
                match cloud.delete(&d).await {
                    Ok(()) => progress.done(&d.id, "delete-duplicate", &d.cloud_id, started, true),
                    Err(e) => progress.failures.push(e.to_string()),
                }
            }
        }

        if !progress.failures.is_empty() {
            // The lease goes back in `execute`.
            let failed = progress.failures.len();
            progress.failures.append(&mut progress.skipped);
            return Err(ApplyError::Actions { failed, done: progress.finished, errors: progress.failures.join("\n") });
        }
        if let Some(j) = &mut self.recorder.inventory.journal {
            j.finished_at = Some(now());
        }
        self.recorder.inventory.last_applied = Some(self.recorder.options.revision.clone());
        self.recorder.save().await?;
        Ok(progress.finished)
    }

    async fn delete_in_order<C: Cloud>(
        &mut self,
        cloud: &C,
        steps: &[Step],
        refs: &mut Refs,
        progress: &mut Progress,
        concurrency: usize,
        replacing: bool,
    ) -> Result<(), ApplyError> {
        let mut by_rank: BTreeMap<usize, Vec<&Step>> = BTreeMap::new();
        for s in steps {
            by_rank.entry(delete_rank(s.kind)).or_default().push(s);
        }
        // Resources that must stay because something that uses them could not be deleted:
        // id -> why.
        let mut kept: BTreeMap<ResourceId, String> = BTreeMap::new();
        // A failed deletion whose dependencies are unknown keeps every later kind.
        let mut keep_later_than: Option<(usize, ResourceId)> = None;
        for (rank, wave) in &by_rank {
            let mut queue = wave.iter();
            let mut running = FuturesUnordered::new();
            loop {
                // A replacement stops at the first failure (its creates must not run);
                // a deletion goes on with everything the failure does not hold.
                while running.len() < concurrency && (!replacing || progress.failures.is_empty()) {
                    let Some(step) = queue.next() else { break };
                    let why = kept.get(&step.id).cloned().or_else(|| {
                        keep_later_than.as_ref().filter(|(r, _)| r < rank).map(|(_, failed)| {
                            format!("the deletion of {failed} failed and what it uses is not recorded, so nothing it might use is deleted")
                        })
                    });
                    if let Some(why) = why {
                        progress.skipped.push(format!("{}: not deleted: {why}", step.id));
                        self.hold_dependencies(&step.id, &mut kept);
                        continue;
                    }
                    let Some(found) = refs.get(&step.id).cloned() else { continue };
                    running.push(async move {
                        let started = Instant::now();
                        (*step, cloud.delete(&found).await, started, found)
                    });
                }
                let Some((step, result, started, found)) = self.next_or_renew(&mut running).await? else { break };
                match result {
                    Ok(()) => {
                        refs.remove(&step.id);
                        // A replacement is recorded once its new resource exists.
                        if !replacing {
                            self.recorder.done(&step.id, Action::Delete, None, None).await?;
                        } else {
                            self.recorder.inventory.resources.remove(step.id.as_str());
                            self.recorder.save().await?;
                        }
                        let label = if replacing { "replace: deleted" } else { "delete" };
                        progress.done(&step.id, label, &found.cloud_id, started, !replacing);
                    }
                    Err(e) => {
                        progress.failures.push(e.to_string());
                        let known = self.observed.graph.resources.contains_key(&step.id) && !self.observed.leaked.contains(&step.id);
                        if known {
                            self.hold_dependencies(&step.id, &mut kept);
                        } else if keep_later_than.is_none() {
                            keep_later_than = Some((*rank, step.id.clone()));
                        }
                    }
                }
            }
            if replacing && !progress.failures.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Marks what `id` uses (as recorded, transitively) as kept: it cannot go while `id`
    /// exists.
    fn hold_dependencies(&self, id: &ResourceId, kept: &mut BTreeMap<ResourceId, String>) {
        let mut todo = vec![id.clone()];
        while let Some(user) = todo.pop() {
            let Some(r) = self.observed.graph.resources.get(&user) else { continue };
            for dep in &r.depends_on {
                if !kept.contains_key(dep) {
                    kept.insert(dep.clone(), format!("{user} uses it and is still there"));
                    todo.push(dep.clone());
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn ensure_in_order<C: Cloud>(
        &mut self,
        cloud: &C,
        desired: &Graph,
        steps: &[&Step],
        refs: &mut Refs,
        progress: &mut Progress,
        concurrency: usize,
        superseded: &mut Vec<Found>,
    ) -> Result<(), ApplyError> {
        let pending_ids: BTreeSet<&ResourceId> = steps.iter().map(|s| &s.id).collect();
        let mut waiting: Vec<&Step> = steps.to_vec();
        let mut finished: BTreeSet<ResourceId> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        loop {
            // Start every step whose pending dependencies are finished.
            let mut i = 0;
            while i < waiting.len() && running.len() < concurrency && progress.failures.is_empty() {
                let step = waiting[i];
                let want = &desired.resources[&step.id];
                let ready = want.depends_on.iter().all(|d| !pending_ids.contains(d) || finished.contains(d));
                if !ready {
                    i += 1;
                    continue;
                }
                waiting.remove(i);
                let mut existing = refs.get(&step.id).cloned();
                let mut deps: Refs = want.depends_on.iter().filter_map(|d| refs.get(d).map(|f| (d.clone(), f.clone()))).collect();
                // A create-first replacement: a new resource, with the old one shown to the
                // driver under its own id (it must not reuse its name).
                let mut old = None;
                if step.action == Action::Replace && creates_first(step) {
                    old = existing.take();
                    if let Some(o) = &old {
                        deps.insert(step.id.clone(), o.clone());
                    }
                }
                running.push(async move {
                    let started = Instant::now();
                    let result = cloud.ensure(want, existing.as_ref(), &deps).await;
                    (step, result, started, old)
                });
            }
            let Some((step, result, started, old)) = self.next_or_renew(&mut running).await? else { break };
            match result {
                Ok(found) => {
                    superseded.extend(old.filter(|o| o.cloud_id != found.cloud_id));
                    let want = &desired.resources[&step.id];
                    self.recorder.done(&step.id, step.action, Some(want), Some(&found)).await?;
                    progress.done(&step.id, step.action.as_str(), &found.cloud_id, started, true);
                    finished.insert(step.id.clone());
                    refs.insert(step.id.clone(), found);
                }
                Err(e) => progress.failures.push(e.to_string()),
            }
        }
        for step in waiting {
            progress.skipped.push(format!("{}: not started (it waits on an action that failed)", step.id));
        }
        Ok(())
    }

    /// The next finished future, renewing the lease while waiting; `None` when none run.
    async fn next_or_renew<F: std::future::Future>(&mut self, running: &mut FuturesUnordered<F>) -> Result<Option<F::Output>, ApplyError> {
        if running.is_empty() {
            return Ok(None);
        }
        let period = Duration::from_secs((self.recorder.options.lease_ttl / 3).max(1) as u64);
        loop {
            tokio::select! {
                out = running.next() => return Ok(out),
                () = tokio::time::sleep(period) => self.recorder.renew_if_due().await?,
            }
        }
    }
}

/// Whether `step` replaces by creating the new resource first. A replacement forced by a
/// failed creation (`createFailed`) deletes first: the failed one gives no capacity, and
/// its name is the one to reuse.
fn creates_first(step: &Step) -> bool {
    step.kind.replaced_by_creating_first() && !step.changes.iter().any(|c| c.path == "createFailed")
}

struct Progress {
    total: usize,
    finished: usize,
    failures: Vec<String>,
    skipped: Vec<String>,
}

impl Progress {
    /// Prints `done k/n <id> <what> <cloud id> (<seconds>s)`. `counts`: whether this
    /// finishes a planned action (a replacement counts once its new resource exists).
    fn done(&mut self, id: &ResourceId, what: &str, cloud_id: &str, started: Instant, counts: bool) {
        self.finished += usize::from(counts);
        println!("done {}/{} {id} {what} {cloud_id} ({:.1}s)", self.finished, self.total, started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::resource::Value;
    use crate::state::LocalDir;

    fn found(id: &ResourceId, kind: Kind, cloud_id: &str) -> Found {
        Found { live: Map::new(), id: id.clone(), kind, cloud_id: cloud_id.to_owned(), outputs: BTreeMap::new() }
    }

    fn record(kind: Kind, cloud_id: &str, cidr: &str) -> Record {
        Record {
            kind: kind.as_str().to_owned(),
            cloud_id: cloud_id.to_owned(),
            outputs: BTreeMap::new(),
            applied: serde_json::json!({"cidr": cidr}),
            depends_on: Vec::new(),
            protection: None,
        }
    }

    #[test]
    fn the_account_read_against_the_inventory() {
        let vpc = ResourceId::new(Kind::AwsVpc, "main");
        let subnet = ResourceId::new(Kind::AwsSubnet, "a");
        let leaked = ResourceId::new(Kind::AwsSubnet, "old");
        let gone = ResourceId::new(Kind::AwsSecurityGroup, "gone");
        let mut inventory = Inventory::default();
        inventory.resources.insert(vpc.to_string(), record(Kind::AwsVpc, "vpc-2", "10.0.0.0/16"));
        inventory.resources.insert(gone.to_string(), record(Kind::AwsSecurityGroup, "sg-1", ""));
        let mut desired = Graph::default();
        desired.add(Resource::new(Kind::AwsVpc, "main").set("cidr", "10.0.0.0/16"));
        desired.add(Resource::new(Kind::AwsSubnet, "a").set("cidr", "10.0.1.0/24").set("vpc", Value::reference(&vpc)));
        let seen = vec![
            found(&vpc, Kind::AwsVpc, "vpc-1"),
            found(&vpc, Kind::AwsVpc, "vpc-2"),
            found(&subnet, Kind::AwsSubnet, "subnet-1"),
            found(&leaked, Kind::AwsSubnet, "subnet-9"),
        ];
        let o = reconcile(&inventory, seen, &desired, false);
        assert_eq!(o.found[&vpc].cloud_id, "vpc-2", "the one the inventory names is kept");
        assert_eq!(o.duplicates.iter().map(|d| d.cloud_id.as_str()).collect::<Vec<_>>(), ["vpc-1"]);
        assert_eq!(o.adopted, BTreeSet::from([subnet.clone()]));
        assert_eq!(o.leaked, BTreeSet::from([leaked.clone()]));
        assert_eq!(o.gone, [gone]);
        let p = plan_apply(&desired, &o);
        let action = |id: &ResourceId| p.steps.iter().find(|s| &s.id == id).map(|s| s.action);
        assert_eq!(action(&vpc), Some(Action::NoOp));
        assert_eq!(action(&subnet), Some(Action::Update), "adopted: its settings are re-applied");
        assert_eq!(action(&leaked), Some(Action::Delete));
    }

    #[test]
    fn buckets_are_protected_unless_data_may_be_deleted() {
        let bucket = ResourceId::new(Kind::AwsS3Bucket, "data");
        let seen = || vec![found(&bucket, Kind::AwsS3Bucket, "b")];
        let kept = plan_apply(&Graph::default(), &reconcile(&Inventory::default(), seen(), &Graph::default(), false));
        assert_eq!(kept.steps[0].action, Action::Blocked);
        let deleted = plan_apply(&Graph::default(), &reconcile(&Inventory::default(), seen(), &Graph::default(), true));
        assert_eq!(deleted.steps[0].action, Action::Delete);
    }

    #[test]
    fn what_a_provider_marks_not_ours_is_shown_kept_and_never_deleted() {
        let group = ResourceId::new(Kind::AzurePrivateDnsZoneGroup, "pe-data-blob/deployedByPolicy");
        let seen = || {
            let mut f = found(&group, Kind::AzurePrivateDnsZoneGroup, "/x/privateDnsZoneGroups/deployedByPolicy");
            f.live.insert(NOT_OURS, Value::from("OwnershipConflict: someone else's"));
            vec![f]
        };
        for delete_data in [false, true] {
            let o = reconcile(&Inventory::default(), seen(), &Graph::default(), delete_data);
            assert!(o.leaked.is_empty(), "not leaked: it was never ours");
            let p = plan_apply(&Graph::default(), &o);
            assert_eq!(p.steps.len(), 1);
            assert_eq!(p.steps[0].action, Action::Blocked, "delete_data {delete_data}");
            assert!(p.steps[0].reason.contains("OwnershipConflict: someone else's"), "{}", p.steps[0].reason);
        }
    }

    /// A cloud that holds `existing`, fails to create the ones named in `fail` and to
    /// delete those in `fail_delete`: enough to see ordering and what is recorded when an
    /// action fails.
    #[derive(Default)]
    struct Memory {
        existing: Vec<Found>,
        fail: BTreeSet<ResourceId>,
        fail_delete: BTreeSet<ResourceId>,
        calls: RefCell<Vec<String>>,
    }

    impl Cloud for Memory {
        async fn observe(&self) -> Result<Vec<Found>, CloudError> {
            Ok(self.existing.clone())
        }

        async fn ensure(&self, desired: &Resource, _existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
            for dep in &desired.depends_on {
                assert!(refs.contains_key(dep), "{} started before {dep} existed", desired.id);
            }
            self.calls.borrow_mut().push(desired.id.to_string());
            tokio::task::yield_now().await;
            if self.fail.contains(&desired.id) {
                return Err(CloudError::new(desired.id.to_string(), "refused"));
            }
            Ok(found(&desired.id, desired.kind, &format!("cloud-{}", desired.id)))
        }

        async fn delete(&self, f: &Found) -> Result<(), CloudError> {
            self.calls.borrow_mut().push(format!("delete {}", f.id));
            tokio::task::yield_now().await;
            if self.fail_delete.contains(&f.id) {
                return Err(CloudError::new(f.id.to_string(), "refused"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_failed_deletion_of_a_leaked_resource_keeps_every_later_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path()).expect("store");
        // Nothing recorded: what the leaked load balancer uses is unknown.
        let nlb = ResourceId::new(Kind::AwsNlb, "old");
        let group = ResourceId::new(Kind::AwsVpcEndpointService, "old");
        let vpc = ResourceId::new(Kind::AwsVpc, "old");
        let cloud = Memory {
            existing: vec![
                found(&group, Kind::AwsVpcEndpointService, "vpce-1"),
                found(&nlb, Kind::AwsNlb, "lb-1"),
                found(&vpc, Kind::AwsVpc, "vpc-1"),
            ],
            fail_delete: BTreeSet::from([nlb.clone()]),
            ..Memory::default()
        };
        let options = Options { revision: "destroy".into(), concurrency: 4, holder: "test:1".into(), lease_ttl: 60, delete_data: true };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let err = rt
            .block_on(async {
                let prepared = prepare(&cloud, &store, &Graph::default(), &options).await?;
                prepared.execute(&cloud, 4).await
            })
            .expect_err("the load balancer's deletion fails");
        let text = err.to_string();
        assert!(text.contains("aws.vpc/old: not deleted: the deletion of aws.nlb/old failed and what it uses is not recorded"), "{text}");
        let calls = cloud.calls.borrow();
        assert!(calls.contains(&format!("delete {group}")), "an earlier kind is deleted: {calls:?}");
        assert!(!calls.contains(&format!("delete {vpc}")), "{calls:?}");
    }

    #[test]
    fn a_failed_deletion_keeps_only_what_it_uses_and_every_other_deletion_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path()).expect("store");
        let vpc = ResourceId::new(Kind::AwsVpc, "main");
        let used = ResourceId::new(Kind::AwsSubnet, "a");
        let free = ResourceId::new(Kind::AwsSubnet, "b");
        let nlb = ResourceId::new(Kind::AwsNlb, "proxy");
        let role = ResourceId::new(Kind::AwsIamRole, "agent");
        let cluster = ResourceId::new(Kind::AwsEksCluster, "main");
        let all = [(&vpc, vec![]), (&used, vec![&vpc]), (&free, vec![&vpc]), (&nlb, vec![&used]), (&role, vec![]), (&cluster, vec![&role])];
        let mut inventory = Inventory::default();
        let mut cloud = Memory { fail_delete: BTreeSet::from([nlb.clone()]), ..Memory::default() };
        for (id, deps) in &all {
            let kind = ResourceId::parse(id.as_str()).expect("id").0;
            let mut r = record(kind, &format!("cloud-{id}"), "");
            r.depends_on = deps.iter().map(|d| d.as_str().to_owned()).collect();
            inventory.resources.insert(id.to_string(), r);
            cloud.existing.push(found(id, kind, &format!("cloud-{id}")));
        }
        let options = Options { revision: "destroy".into(), concurrency: 4, holder: "test:1".into(), lease_ttl: 60, delete_data: true };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let err = rt
            .block_on(async {
                store.put(INVENTORY_KEY, &serde_json::to_vec(&inventory).expect("json"), None).await.expect("inventory written");
                let prepared = prepare(&cloud, &store, &Graph::default(), &options).await?;
                prepared.execute(&cloud, 4).await
            })
            .expect_err("the load balancer's deletion fails");
        let text = err.to_string();
        assert!(text.starts_with("1 action(s) failed (3 finished"), "{text}");
        assert!(text.contains("aws.nlb/proxy: refused"), "{text}");
        assert!(text.contains("aws.subnet/a: not deleted: aws.nlb/proxy uses it"), "{text}");
        assert!(text.contains("aws.vpc/main: not deleted: aws.subnet/a uses it"), "{text}");
        let calls = cloud.calls.borrow();
        for gone in [&free, &role, &cluster] {
            assert!(calls.contains(&format!("delete {gone}")), "{gone} independent of the failure is deleted: {calls:?}");
        }
        for kept in [&used, &vpc] {
            assert!(!calls.contains(&format!("delete {kept}")), "{kept} is in use and must not be deleted: {calls:?}");
        }
        let (inventory, _) = rt.block_on(load_inventory(&store)).expect("inventory");
        assert_eq!(inventory.resources.keys().collect::<Vec<_>>(), ["aws.nlb/proxy", "aws.subnet/a", "aws.vpc/main"]);
    }

    #[test]
    fn a_failed_action_stops_its_dependents_and_what_finished_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path()).expect("store");
        let mut desired = Graph::default();
        let vpc = desired.add(Resource::new(Kind::AwsVpc, "main"));
        let a = desired.add(Resource::new(Kind::AwsSubnet, "a").set("vpc", Value::reference(&vpc)));
        let b = desired.add(Resource::new(Kind::AwsSubnet, "b").set("vpc", Value::reference(&vpc)));
        desired.add(Resource::new(Kind::AwsRouteTable, "rt").set("subnets", Value::references([&a, &b])));
        let cloud = Memory { fail: BTreeSet::from([b.clone()]), ..Memory::default() };
        let options = Options { revision: "r1".into(), concurrency: 4, holder: "test:1".into(), lease_ttl: 60, delete_data: false };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let err = rt
            .block_on(async {
                let prepared = prepare(&cloud, &store, &desired, &options).await?;
                prepared.execute(&cloud, 4).await
            })
            .expect_err("subnet b fails");
        let text = err.to_string();
        assert!(text.contains("aws.subnet/b: refused") && text.contains("aws.route-table/rt: not started"), "{text}");
        assert!(!cloud.calls.borrow().contains(&"aws.route-table/rt".to_owned()));
        let (inventory, _) = rt.block_on(load_inventory(&store)).expect("inventory");
        assert_eq!(inventory.resources.keys().collect::<Vec<_>>(), ["aws.subnet/a", "aws.vpc/main"]);
        let journal = inventory.journal.expect("journal");
        assert_eq!((journal.done.len(), journal.planned, journal.finished_at), (2, 4, None));
        assert_eq!(inventory.last_applied, None);
        // The lease was given back: the next run may start at once.
        rt.block_on(Lease::acquire(&store, "test:2", now(), 60)).expect("lease released after the failure");
    }
}
