//! Two replicas, one writer: only the holder of a Kubernetes `Lease`
//! (`coordination.k8s.io/v1`) reconciles; the other serves `/status` and waits.
//!
//! The algorithm is client-go's leader election, written against kube's Lease API
//! directly (read, then create or replace with the `resourceVersion` read, so the API
//! server's optimistic concurrency decides every race):
//!
//! - a free lease (none yet, or `holderIdentity` empty) is taken at once;
//! - a lease held by another is taken only when nobody renewed it for its
//!   `leaseDurationSeconds`, measured from when *this* replica saw the record last change
//!   (never from the `renewTime` written in it, so clocks that disagree cannot make two
//!   writers);
//! - the holder renews every [`LeaseSettings::retry`]; a holder that could not renew for
//!   [`LeaseSettings::renew_deadline`] stops writing before anyone may take over;
//! - on SIGTERM the holder finishes the step in progress and releases: `holderIdentity`
//!   cleared and `leaseDurationSeconds` 1, as client-go's `ReleaseOnCancel` does, so the
//!   other replica takes over on its next try instead of after a whole lease duration.
//!
//! - a Lease request the API server refuses outright (403: the daemon's RBAC lacks a verb on
//!   `leases`; 404 on create: the namespace does not exist) will not pass by retrying: after
//!   [`MAX_REFUSALS`] such answers in a row the role becomes `refused`, and the daemon
//!   reports it and exits non-zero (see [`crate::run`]).
//!
//! `kube-lease-manager` 0.13 builds on this workspace's kube 5, but it decides races by
//! server-side apply field ownership and strategic merge patches rather than by
//! `resourceVersion`, and adds `rand` 0.10; the part used here is a hundred lines.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the lease lives, how long it lasts and who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `leaseDurationSeconds`: how long a silent holder keeps it.
    pub duration: Duration,
    /// `holderIdentity` when this replica holds it.
    pub identity: String,
}

impl LeaseSettings {
    /// How often the holder renews and a standby tries: client-go's 2 s for its 15 s
    /// default, a sixth of shorter leases.
    pub fn retry(&self) -> Duration {
        (self.duration / 6).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// A holder that could not renew for this long stops writing: two thirds of the lease,
    /// so it has stopped before a standby may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Lease requests refused in a row (403, or 404 on create) before the role becomes
/// `refused`: a few, so an install whose Role or namespace lands a moment after the pod
/// starts is not taken for a broken one, and few enough that a real misconfiguration shows
/// within seconds.
pub const MAX_REFUSALS: u32 = 5;

/// This replica's part, as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// This replica's identity.
    pub identity: String,
    /// `starting` (no answer from the API server yet), `leader`, `standby`, or `refused`
    /// (the API server refused the Lease requests [`MAX_REFUSALS`] times in a row).
    pub role: &'static str,
    /// The holder last seen, if any.
    pub holder: Option<String>,
    /// Why the last try failed, when it did (the API server unreachable, say).
    pub error: Option<String>,
    /// Lease requests refused in a row (403, or 404 on create) so far.
    #[serde(skip_serializing_if = "is_zero")]
    pub refusals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether the API server refused a Lease request for a reason retrying does not change:
/// 403 (RBAC), or 404 on create (the namespace is missing; a 404 on a read is "no Lease
/// yet", and on a replace "deleted meanwhile").
fn refused(e: &kube::Error, creating: bool) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 || (creating && s.code == 404))
}

impl Role {
    /// Whether this replica may write.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// What one look at the lease decided.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Create it: there is none.
    Create,
    /// Replace it with this spec, from the resourceVersion read.
    Take { spec: LeaseSpec, transition: bool },
    /// Someone else holds it, and it has not expired.
    Wait { holder: String, expires_in: Duration },
}

/// The pure part: given the lease read (if any), when its record last changed as this
/// replica saw it, and now, what to do.
fn decide(settings: &LeaseSettings, lease: Option<&LeaseSpec>, unchanged_for: Duration, now: MicroTime) -> Decision {
    let Some(spec) = lease else { return Decision::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == settings.identity;
    let lasts = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0).max(0)).unwrap_or(0));
    if !holder.is_empty() && !mine && unchanged_for < lasts {
        return Decision::Wait { holder, expires_in: lasts - unchanged_for };
    }
    let transitions = spec.lease_transitions.unwrap_or(0);
    let spec = LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.duration_seconds()),
        acquire_time: if mine { spec.acquire_time.clone() } else { Some(now.clone()) },
        renew_time: Some(now),
        lease_transitions: Some(if mine { transitions } else { transitions.saturating_add(1) }),
        ..LeaseSpec::default()
    };
    Decision::Take { spec, transition: !mine }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One replica's view of the lease.
struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The record last read (as JSON, to notice any change) and when it changed.
    observed: Option<(serde_json::Value, Instant)>,
    /// When this replica last renewed successfully.
    renewed: Option<Instant>,
    /// Lease requests refused in a row.
    refusals: u32,
}

impl Elector {
    /// One try: read, then create, take, renew or wait. Returns the role and how long to
    /// sleep before the next try.
    async fn try_once(&mut self) -> (Role, Duration) {
        let retry = self.settings.retry();
        let role = |role, holder: Option<String>, error: Option<String>| Role {
            identity: self.settings.identity.clone(),
            role,
            holder,
            error,
            refusals: 0,
        };
        let read = match self.api.get_opt(&self.settings.name).await {
            Ok(l) => l,
            Err(e) => {
                let refused = refused(&e, false);
                return (self.failed(format!("reading Lease {}/{}: {e}", self.settings.namespace, self.settings.name), refused), retry);
            }
        };
        let spec = read.as_ref().and_then(|l| l.spec.clone());
        let record = serde_json::to_value(&spec).unwrap_or_default();
        let unchanged_for = match &self.observed {
            Some((r, at)) if *r == record => at.elapsed(),
            _ => {
                self.observed = Some((record, Instant::now()));
                Duration::ZERO
            }
        };
        let decision = match (&read, &spec) {
            (Some(_), None) => decide(&self.settings, Some(&LeaseSpec::default()), unchanged_for, now()),
            (_, s) => decide(&self.settings, s.as_ref(), unchanged_for, now()),
        };
        match decision {
            Decision::Wait { holder, expires_in } => {
                self.renewed = None;
                self.refusals = 0;
                // Wake when it would expire, so a takeover does not wait a further retry.
                (role("standby", Some(holder), None), expires_in.min(retry) + Duration::from_millis(10))
            }
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..ObjectMeta::default() },
                    spec: match decide(&self.settings, Some(&LeaseSpec::default()), Duration::ZERO, now()) {
                        Decision::Take { spec, .. } => Some(LeaseSpec { lease_transitions: Some(0), ..spec }),
                        _ => None,
                    },
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => self.took(true),
                    // Another replica created it first: it holds it.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        self.refusals = 0;
                        (role("standby", None, None), Duration::ZERO)
                    }
                    Err(e) => {
                        let refused = refused(&e, true);
                        (self.failed(format!("creating Lease {}/{}: {e}", self.settings.namespace, self.settings.name), refused), retry)
                    }
                }
            }
            Decision::Take { spec, transition } => {
                let mut lease = read.unwrap_or_default();
                lease.spec = Some(spec);
                match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
                    Ok(_) => self.took(transition),
                    // Someone wrote it since the read: read again at once to see who.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        (self.failed(format!("Lease {} changed under this replica", self.settings.name), false), Duration::ZERO)
                    }
                    Err(e) => {
                        let refused = refused(&e, false);
                        (self.failed(format!("renewing Lease {}/{}: {e}", self.settings.namespace, self.settings.name), refused), retry)
                    }
                }
            }
        }
    }

    fn took(&mut self, transition: bool) -> (Role, Duration) {
        if transition {
            tracing::info!(lease = self.settings.name, identity = self.settings.identity, "acquired the lease; reconciling");
        }
        self.renewed = Some(Instant::now());
        self.refusals = 0;
        let role = Role {
            identity: self.settings.identity.clone(),
            role: "leader",
            holder: Some(self.settings.identity.clone()),
            error: None,
            refusals: 0,
        };
        (role, self.settings.retry())
    }

    /// A failed try: a holder stays one until its renew deadline passes. `refused`: the API
    /// server refused it outright; [`MAX_REFUSALS`] of those in a row end in `refused`.
    fn failed(&mut self, error: String, refused: bool) -> Role {
        self.refusals = if refused { self.refusals + 1 } else { 0 };
        if refused {
            tracing::error!(lease = self.settings.name, refusals = self.refusals, "{error}");
        } else {
            tracing::warn!(lease = self.settings.name, "{error}");
        }
        if self.refusals >= MAX_REFUSALS {
            self.renewed = None;
            return Role {
                identity: self.settings.identity.clone(),
                role: "refused",
                holder: None,
                error: Some(error),
                refusals: self.refusals,
            };
        }
        let still = self.renewed.is_some_and(|at| at.elapsed() < self.settings.renew_deadline());
        if self.renewed.is_some() && !still {
            tracing::error!(lease = self.settings.name, "could not renew the lease in time; stopped reconciling");
            self.renewed = None;
        }
        let holder = still.then(|| self.settings.identity.clone());
        Role {
            identity: self.settings.identity.clone(),
            role: if still { "leader" } else { "standby" },
            holder,
            error: Some(error),
            refusals: self.refusals,
        }
    }

    /// Gives the lease up if this replica holds it.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = self.settings.name, "released the lease"),
            Err(e) => tracing::warn!(lease = self.settings.name, "could not release the lease ({e}); it expires by itself"),
        }
    }
}

/// The election running beside the loop.
pub struct Leadership {
    role: watch::Receiver<Role>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts trying for the lease in a task of its own, so renewals go on while a
    /// reconcile runs.
    pub fn start(client: kube::Client, settings: LeaseSettings) -> Leadership {
        let api = Api::namespaced(client, &settings.namespace);
        let initial = Role { identity: settings.identity.clone(), role: "starting", holder: None, error: None, refusals: 0 };
        let (tx, rx) = watch::channel(initial);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut elector = Elector { api, settings, observed: None, renewed: None, refusals: 0 };
            loop {
                let (role, wait) = elector.try_once().await;
                tx.send_if_modified(|r| {
                    let changed = *r != role;
                    *r = role;
                    changed
                });
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            if tx.borrow().is_leader() {
                tx.send_modify(|r| r.role = "standby");
                elector.release().await;
            }
        });
        Leadership { role: rx, stop, task }
    }

    /// A receiver of the role, for the status door.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Resolves once this replica holds the lease.
    pub async fn acquired(&mut self) {
        let _ = self.role.wait_for(Role::is_leader).await;
    }

    /// Resolves once this replica no longer holds the lease (or the election stopped).
    pub async fn lost(&self) {
        let mut role = self.role.clone();
        let _ = role.wait_for(|r| !r.is_leader()).await;
    }

    /// Waits for the next change of role.
    pub async fn changed(&mut self) {
        if self.role.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops trying and releases the lease if held; called after the step in progress
    /// finished.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings { name: "byoc".into(), namespace: "byoc-system".into(), duration: Duration::from_secs(15), identity: identity.into() }
    }

    fn held_by(holder: Option<&str>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_waits_and_an_expired_or_free_one_is_taken() {
        let s = settings("b");
        let t = now();
        assert_eq!(decide(&s, None, Duration::ZERO, t.clone()), Decision::Create);
        let live = held_by(Some("a"), 15);
        assert_eq!(
            decide(&s, Some(&live), Duration::from_secs(5), t.clone()),
            Decision::Wait { holder: "a".into(), expires_in: Duration::from_secs(10) }
        );
        let Decision::Take { spec, transition } = decide(&s, Some(&live), Duration::from_secs(15), t.clone()) else { panic!("expired") };
        assert!(transition);
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions, spec.acquire_time), (Some("b"), Some(4), Some(t.clone())));
        // Released (holder cleared): taken at once, whatever the duration says.
        let released = held_by(None, 1);
        assert!(matches!(decide(&s, Some(&released), Duration::ZERO, t.clone()), Decision::Take { transition: true, .. }));
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time_and_transitions() {
        let s = settings("a");
        let Decision::Take { spec, transition } = decide(&s, Some(&held_by(Some("a"), 15)), Duration::from_secs(100), now()) else {
            panic!("renews")
        };
        assert!(!transition);
        assert_eq!((spec.lease_transitions, spec.acquire_time), (Some(3), Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))));
    }

    #[test]
    fn only_a_403_or_a_404_on_create_is_a_refusal() {
        let api = |code: u16| {
            let status =
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "m", "reason": "r", "code": code});
            kube::Error::Api(serde_json::from_value(status).expect("status"))
        };
        assert!(refused(&api(403), false) && refused(&api(403), true), "RBAC");
        assert!(refused(&api(404), true), "no namespace to create in");
        assert!(!refused(&api(404), false), "a Lease not there yet, or deleted meanwhile");
        for code in [409, 422, 429, 500, 503] {
            assert!(!refused(&api(code), true), "{code} may pass");
        }
    }

    #[test]
    fn a_holder_stops_writing_before_a_standby_may_take_over() {
        let s = settings("a");
        assert!(s.renew_deadline() < s.duration);
        assert_eq!(s.retry(), Duration::from_secs(2));
        assert_eq!(LeaseSettings { duration: Duration::from_secs(3), ..s }.retry(), Duration::from_millis(500));
    }
}
