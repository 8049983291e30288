//! What the daemon reports: Flux-style conditions, the revisions it attempted and applied,
//! per-cluster health and the last error. Served at `/status` and kept in the state store.

use serde::Serialize;

/// Key of the daemon's status in the state store.
pub const STATUS_KEY: &str = "daemon-status.json";

/// One condition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `SourceVerified`, `Ready`, `Reconciling`, `Stalled`, `SourceStale`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// One CamelCase word.
    pub reason: String,
    /// What happened, with the revision, commit or file:line:col involved.
    pub message: String,
    /// Seconds since the epoch when the status last changed.
    pub last_transition_time: i64,
}

/// One cluster's health after the last reconcile.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterHealth {
    /// Cluster name.
    pub name: String,
    /// `ready`, `stalled`, `deleted`, `retained`.
    pub outcome: String,
    /// Why, when not ready.
    pub message: String,
}

/// The last error and the stage it came from.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// `fetch`, `verify`, `load`, `apply`, `publish`.
    pub stage: &'static str,
    /// The message.
    pub message: String,
}

/// The daemon's status.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// metadata.name of the configuration.
    pub name: String,
    /// Conditions, in a fixed order.
    pub conditions: Vec<Condition>,
    /// The last revision a reconcile started on.
    pub last_attempted_revision: Option<String>,
    /// The last revision fully applied and published.
    pub last_applied_revision: Option<String>,
    /// Per cluster, after the last reconcile that reached Kubernetes.
    pub clusters: Vec<ClusterHealth>,
    /// The last error, cleared by a successful reconcile.
    pub last_error: Option<LastError>,
    /// Seconds since the epoch of the last successful fetch.
    pub last_fetch: Option<i64>,
    /// Reconciles finished since start.
    pub reconciles: u64,
}

impl Status {
    /// Sets a condition, keeping its transition time when its status did not change.
    pub fn set(&mut self, kind: &'static str, ok: bool, reason: &str, message: impl Into<String>, now: i64) {
        let status = if ok { "True" } else { "False" };
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.to_owned();
                c.message = message;
            }
            None => {
                self.conditions.push(Condition { kind, status, reason: reason.to_owned(), message, last_transition_time: now });
            }
        }
    }

    /// A condition's status, if set.
    pub fn is(&self, kind: &str) -> Option<bool> {
        self.conditions.iter().find(|c| c.kind == kind).map(|c| c.status == "True")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut s = Status::default();
        s.set("Ready", true, "Applied", "a", 10);
        s.set("Ready", true, "Applied", "b", 20);
        assert_eq!((s.conditions[0].last_transition_time, s.conditions[0].message.as_str()), (10, "b"));
        s.set("Ready", false, "Stalled", "c", 30);
        assert_eq!((s.conditions[0].last_transition_time, s.is("Ready")), (30, Some(false)));
    }
}
