//! The **fetch** and **verify** stages: bring the branch into the cache, then check every
//! commit of `last_verified..tip` against the signing policy, moving the high-water mark
//! in the state store only when the whole range verifies.

use git2::{Oid, Repository};

pub use crate::fetch::{FetchError, Fetched, Remote, fetch};
use crate::state::StateStore;
use crate::verify::policy::Policy;
use crate::verify::{RangeReport, SourceState};

/// Why verification could not give a verdict (a refused range is not an error: it is a
/// report whose `ok` is false).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The source state in the state store could not be read or is malformed.
    #[error("cannot read the source state: {0}")]
    StateUnreadable(String),
    /// Walking the commits failed (a missing object, an unrelated history).
    #[error("{0}")]
    Walk(String),
    /// The verdict could not be recorded (a conflicting writer, the store is down).
    #[error("cannot record the verification: {0}")]
    StateUnwritable(String),
}

impl VerifyError {
    /// Whether trying again later can help (a store that was down); a broken history or
    /// malformed state needs a person.
    pub fn retryable(&self) -> bool {
        matches!(self, VerifyError::StateUnwritable(_))
    }
}

/// Verifies `from..to` where `from` is `from_override`, else the high-water mark in
/// `store`, else nothing (the whole history). With a store, the first-seen times and the
/// mark are saved (the mark moves only if the range verified).
#[tracing::instrument(level = "info", skip_all, fields(stage = "verify", revision = %to))]
pub async fn verify(
    repo: &Repository,
    policy: &Policy,
    store: Option<&dyn StateStore>,
    from_override: Option<Oid>,
    to: Oid,
    now: i64,
) -> Result<RangeReport, VerifyError> {
    let (mut state, version) = match store {
        Some(s) => SourceState::load(s).await.map_err(|e| VerifyError::StateUnreadable(format!("{e:#}")))?,
        None => (SourceState::default(), None),
    };
    let from = match from_override {
        Some(oid) => Some(oid),
        None => state.last_verified(repo).map_err(|e| VerifyError::StateUnreadable(format!("{e:#}")))?,
    };
    let seen = &mut state.first_seen;
    let report = crate::verify::verify_range(repo, policy, from, to, &mut |oid| *seen.entry(oid.to_string()).or_insert(now))
        .map_err(|e| VerifyError::Walk(e.message().to_owned()))?;
    if let Some(store) = store {
        state.record(&report, to);
        state.save(store, version.as_deref()).await.map_err(|e| VerifyError::StateUnwritable(format!("{e:#}")))?;
    }
    Ok(report)
}

/// The high-water mark: the last revision `verify` accepted, if any.
pub async fn last_verified(repo: &Repository, store: &dyn StateStore) -> Result<Option<Oid>, VerifyError> {
    let (state, _) = SourceState::load(store).await.map_err(|e| VerifyError::StateUnreadable(format!("{e:#}")))?;
    state.last_verified(repo).map_err(|e| VerifyError::StateUnreadable(format!("{e:#}")))
}

/// Seconds since the Unix epoch: when a commit is first seen.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
