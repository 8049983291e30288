//! The standby's routes: each replica's pod has its own RWProxy reading its own publish
//! directory, and the Service sends SQL to both, so the replica that does not hold the
//! Lease publishes too: exactly the revision and the routes the holder published last.
//!
//! The holder records what it published ([`PUBLISHED_KEY`]: the commit, the route names,
//! the clusters it saw Ready) in the state store after each publish. The standby reads
//! that record, but the state store is not a trust root: it fetches the commit from the
//! remote itself, verifies the range up to it against its own signing policy, loads it,
//! and publishes only if the routes it finds there are the ones recorded and every cluster
//! they (and the revision) name was recorded Ready. Anything else is logged and the
//! standby keeps what it published before.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pipeline::{load, publish, source};

/// Key in the state store of what the Lease holder published last.
pub const PUBLISHED_KEY: &str = "published.json";

/// What the Lease holder published last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedRecord {
    /// The commit (full hex id) whose routes and clusters were published.
    pub commit: String,
    /// The environment directory in it.
    pub environment: String,
    /// The names of the routes published, sorted.
    pub routes: Vec<String>,
    /// The clusters the holder saw Ready when it published, sorted.
    pub ready_clusters: Vec<String>,
    /// The holder's identity.
    pub by: String,
}

/// Why a standby did not publish a record.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The record is for another environment directory.
    #[error("the holder published {found}, this replica serves {expected}")]
    OtherEnvironment {
        /// The configured one.
        expected: String,
        /// The record's.
        found: String,
    },
    /// The record is malformed.
    #[error("state {PUBLISHED_KEY} is malformed: {0}")]
    Malformed(String),
    /// The fetch failed; the next try may work.
    #[error("fetching: {0}")]
    Fetch(String),
    /// The commit is not on the fetched branch.
    #[error("commit {commit} is not on {branch} (tip {tip}): not published")]
    NotOnBranch {
        /// The record's commit.
        commit: String,
        /// The branch.
        branch: String,
        /// Its tip.
        tip: String,
    },
    /// The range up to the commit did not verify against this replica's policy.
    #[error("{commit} refused by this replica's signing policy: {why}")]
    Refused {
        /// The record's commit.
        commit: String,
        /// The first reason.
        why: String,
    },
    /// The revision cannot be loaded.
    #[error("{0}")]
    Load(String),
    /// The revision's routes or clusters are not what the holder recorded as published.
    #[error("{commit}: {why}; not published")]
    Mismatch {
        /// The record's commit.
        commit: String,
        /// What differs.
        why: String,
    },
    /// Writing the publish directory failed.
    #[error("{0}")]
    Publish(String),
}

impl MirrorError {
    /// Whether the next try may succeed without a person (a fetch that failed, a commit
    /// the cache did not have yet, a full disk freed).
    pub fn retryable(&self) -> bool {
        matches!(self, MirrorError::Fetch(_) | MirrorError::NotOnBranch { .. } | MirrorError::Publish(_))
    }
}

/// The record the holder writes after publishing `loaded` with every cluster in
/// `ready` Ready.
pub fn record(loaded: &load::Loaded, environment: &str, ready: &[String], by: &str) -> PublishedRecord {
    let mut routes: Vec<String> = loaded.specs.routes.routes.iter().map(|r| r.name.clone()).collect();
    routes.sort();
    let mut ready_clusters = ready.to_vec();
    ready_clusters.sort();
    ready_clusters.dedup();
    PublishedRecord { commit: loaded.commit.to_string(), environment: environment.to_owned(), routes, ready_clusters, by: by.to_owned() }
}

/// Whether `loaded` is what `record` says was published: the same route names, and every
/// cluster of the revision and every cluster a route names recorded Ready. `Err` says
/// what differs.
pub fn same_as_published(record: &PublishedRecord, loaded: &load::Loaded) -> Result<(), String> {
    let mut routes: Vec<&str> = loaded.specs.routes.routes.iter().map(|r| r.name.as_str()).collect();
    routes.sort_unstable();
    if routes != record.routes.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(format!("the revision's routes {routes:?} are not the ones recorded as published {:?}", record.routes));
    }
    let ready: BTreeSet<&str> = record.ready_clusters.iter().map(String::as_str).collect();
    let named = loaded
        .specs
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .chain(loaded.specs.routes.routes.iter().map(|r| r.cluster.as_str()).filter(|c| *c != rwproxy::routes::CLUSTER_FROM_SNI));
    let not_ready: BTreeSet<&str> = named.filter(|c| !ready.contains(c)).collect();
    if !not_ready.is_empty() {
        return Err(format!("clusters {not_ready:?} were not recorded Ready by the holder"));
    }
    Ok(())
}

/// What the standby verified and published so far (in memory: a restarted standby
/// verifies from the start again).
#[derive(Debug, Default)]
pub struct Mirror {
    /// The last commit verified here, the start of the next range.
    verified: Option<git2::Oid>,
    /// The commit last published here.
    published: Option<String>,
    /// When this replica first saw each commit (key validity is judged by it).
    first_seen: BTreeMap<String, i64>,
}

impl super::Daemon {
    /// On a standby: publishes what the holder published, if it changed and checks out.
    pub(super) async fn mirror_holder(&mut self) {
        let record = match self.store.get(PUBLISHED_KEY).await {
            Ok(Some(v)) => serde_json::from_slice::<PublishedRecord>(&v.value).map_err(|e| MirrorError::Malformed(e.to_string())),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(stage = "mirror", "cannot read what the holder published: {e}");
                return;
            }
        };
        let result = match record {
            Ok(r) if self.mirror.published.as_deref() == Some(r.commit.as_str()) => return,
            Ok(r) => self.mirror_record(&r).await.map(|files| (r, files)),
            Err(e) => Err(e),
        };
        match result {
            Ok((r, files)) => {
                tracing::info!(
                    stage = "publish",
                    revision = r.commit,
                    files,
                    holder = r.by,
                    "published the holder's revision on this standby"
                );
            }
            Err(e) if e.retryable() => tracing::warn!(stage = "mirror", "{e}"),
            Err(e) => tracing::error!(stage = "mirror", "{e}"),
        }
    }

    async fn mirror_record(&mut self, record: &PublishedRecord) -> Result<usize, MirrorError> {
        if record.environment != self.config.environment {
            return Err(MirrorError::OtherEnvironment { expected: self.config.environment.clone(), found: record.environment.clone() });
        }
        let commit = git2::Oid::from_str(&record.commit)
            .ok()
            .filter(|o| o.to_string() == record.commit)
            .ok_or_else(|| MirrorError::Malformed(format!("commit {:?} is not a full commit id", record.commit)))?;
        let remote = self.config.remote.clone();
        let cache = self.config.cache_dir.clone();
        let fetched = tokio::task::spawn_blocking(move || source::fetch(&remote, &cache))
            .await
            .map_err(|e| MirrorError::Fetch(e.to_string()))?
            .map_err(|e| MirrorError::Fetch(format!("{e:#}")))?;
        let (repo, tip) = (fetched.repo, fetched.tip);
        if commit != tip && !repo.graph_descendant_of(tip, commit).unwrap_or(false) {
            return Err(MirrorError::NotOnBranch {
                commit: record.commit.clone(),
                branch: self.config.remote.branch.clone(),
                tip: tip.to_string(),
            });
        }
        // From the last commit verified here when the new one descends from it; else the
        // whole history, as a first `byoc verify` does.
        let from = self.mirror.verified.filter(|v| *v == commit || repo.graph_descendant_of(commit, *v).unwrap_or(false));
        let now = source::unix_now();
        let seen = &mut self.mirror.first_seen;
        let report =
            crate::verify::verify_range(&repo, &self.config.policy, from, commit, &mut |oid| *seen.entry(oid.to_string()).or_insert(now))
                .map_err(|e| MirrorError::Refused { commit: record.commit.clone(), why: e.message().to_owned() })?;
        if !report.ok {
            let why = report.reasons.first().cloned().unwrap_or_default();
            return Err(MirrorError::Refused { commit: record.commit.clone(), why });
        }
        for c in &report.commits {
            self.mirror.first_seen.remove(&c.id);
        }
        self.mirror.verified = Some(commit);
        let loaded = load::at_revision(&repo, &record.commit, &self.config.environment).map_err(|e| MirrorError::Load(e.to_string()))?;
        same_as_published(record, &loaded).map_err(|why| MirrorError::Mismatch { commit: record.commit.clone(), why })?;
        let published = publish::publish(&self.config.publish_dir, &record.commit, &self.config.environment, &loaded.files)
            .map_err(|e| MirrorError::Publish(e.to_string()))?;
        self.mirror.published = Some(record.commit.clone());
        Ok(published.files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> load::Loaded {
        let repo = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(repo.path())
                .output()
                .expect("git runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        git(&["init", "-q"]);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/aws");
        let env = repo.path().join("env");
        copy(&root, &env);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "env"]);
        let r = git2::Repository::open(repo.path()).expect("repo");
        load::at_revision(&r, "HEAD", "env").expect("the example loads")
    }

    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir").flatten() {
            let target = to.join(e.file_name());
            if e.path().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).expect("copy");
            }
        }
    }

    #[test]
    fn a_standby_publishes_only_the_recorded_routes_and_only_to_ready_clusters() {
        let l = loaded();
        let all: Vec<String> = l.specs.clusters.iter().map(|c| c.name.clone()).collect();
        assert!(all.len() >= 2, "{all:?}");
        let good = record(&l, "env", &all, "a");
        assert_eq!(same_as_published(&good, &l), Ok(()));
        // A cluster the holder did not see Ready: refused.
        let mut not_ready = good.clone();
        not_ready.ready_clusters.retain(|c| *c != all[0]);
        let why = same_as_published(&not_ready, &l).expect_err("a cluster not Ready");
        assert!(why.contains(&all[0]), "{why}");
        // A route set other than the one recorded (a route added, or one dropped): refused.
        let mut more = good.clone();
        more.routes.push("zz-extra".into());
        assert!(same_as_published(&more, &l).is_err());
        let mut fewer = good.clone();
        fewer.routes.pop();
        assert!(same_as_published(&fewer, &l).is_err());
    }
}
