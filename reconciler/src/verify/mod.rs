//! verify: every commit in `last_verified..new` (all parents) must be signed by a signer
//! the policy accepts for every path it changes, `new` must descend from `last_verified`,
//! and each path whose content the range changes needs its rule's threshold of approvals.
//!
//! **The property.** A threshold of N on a path means N distinct identities, each trusted
//! by the policy in force at the start of the range, signed a commit in the range whose
//! tree holds exactly the final content of that path (or its absence, for a deletion).
//! A signature covers a commit's whole tree; so the author of a branch commit that holds
//! the final content and the person who signs the merge both approve it, while a
//! signature on content that was later discarded (`merge -s ours`, an earlier draft)
//! approves nothing ([`approvals`]). One identity with several keys counts once; the
//! forge's web-UI key never counts, and a forge-signed commit may not change `.byoc/`.
//!
//! **Which policy judges.** Every commit of a range is judged by the policy in force at
//! its start: the repository's `.byoc/policy.yaml` at the verified `from` when its version
//! is greater than the operator's file (the operator wins ties, so raising the operator's
//! version always overrides), else the operator's file. A repository policy at `from`
//! that does not load is a refusal, never a fallback. Changes to `.byoc/` (the policy and
//! every file it loads) inside a range take effect only for later ranges, once the range
//! that makes them has verified under the old policy, thresholds on `.byoc/` included;
//! the new policy must load and carry a greater version, and the policy in force cannot
//! be deleted by a commit.
//!
//! **What git says the history is.** Signatures and parents are read from each commit
//! object's header ([`commit`]): a signature moved into the message is no signature, and
//! a repository with grafts, or a range that reaches past a shallow clone's boundary, is
//! refused.
//!
//! Key validity is judged at a time the signer cannot choose: when the reconciler first saw
//! the commit (supplied by the caller from the state store), never the committer date.
//!
//! Formats: SSH (SSHSIG, namespace `git`, [`ssh`]), OpenPGP ([`openpgp`]), and x509 as
//! gitsign makes it ([`gitsign`]: judged at the transparency log's time, not first-seen).

pub mod approvals;
pub mod commit;
pub mod gitsign;
pub mod openpgp;
pub mod policy;
mod render;
pub mod ssh;

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository, Sort};
use serde::{Deserialize, Serialize};

use crate::state::{StateError, StateStore};
use policy::{FORGE, Policy};
pub use render::{render_markdown, render_text};

/// The verdict on one commit.
#[derive(Debug, Clone, Serialize)]
pub struct CommitReport {
    /// Commit id (hex).
    pub id: String,
    /// First line of the message.
    pub summary: String,
    /// `ssh`, `openpgp`, `x509`, `unknown` or `none`.
    pub format: &'static str,
    /// Signer identity, when the signature verified.
    pub signer: Option<String>,
    /// Rules governing the paths it changes.
    pub rules: Vec<String>,
    /// Accepted or not.
    pub ok: bool,
    /// Why not (empty when accepted).
    pub reason: String,
}

/// A signer whose signature in the range does not count toward a path's threshold.
#[derive(Debug, Clone, Serialize)]
pub struct NotCounted {
    /// The identity.
    pub signer: String,
    /// One of its commits in the range (hex).
    pub commit: String,
    /// Why it does not count.
    pub why: String,
}

/// The threshold check of one path changed in the range.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathReport {
    /// The path.
    pub path: String,
    /// The governing rule (`rules[1]`), none when no rule covers it.
    pub rule: Option<String>,
    /// Distinct signers it needs.
    pub threshold: u32,
    /// Distinct signers that count: trusted by the rule, and signed a commit of the range
    /// whose tree holds the path's final content.
    pub signers: Vec<String>,
    /// Signers of the range whose signatures do not count for this path, and why.
    pub not_counted: Vec<NotCounted>,
    /// Threshold met.
    pub ok: bool,
}

impl PathReport {
    /// `` `path` (rules[1]): 1 of 2 distinct signer(s) so far ["alice"]; not counted: … ``.
    pub fn shortfall(&self) -> String {
        let mut s = format!(
            "`{}` ({}): {} of {} distinct signer(s) so far {:?}",
            self.path,
            self.rule.as_deref().unwrap_or("no rule covers it"),
            self.signers.len(),
            self.threshold,
            self.signers
        );
        s.push_str(&self.not_counted_text());
        s
    }

    /// `; not counted: bob (commit …: why)`, or nothing.
    pub fn not_counted_text(&self) -> String {
        if self.not_counted.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self.not_counted.iter().map(|n| format!("{} (commit {}: {})", n.signer, short(&n.commit), n.why)).collect();
        format!("; not counted: {}", list.join(", "))
    }
}

/// The verdict on a range.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeReport {
    /// Last verified commit, if any.
    pub from: Option<String>,
    /// The new tip.
    pub to: String,
    /// The policy that judged the range: name and version.
    pub policy: String,
    /// Where that policy came from: the operator's file, or `.byoc/policy.yaml` at `from`.
    pub policy_source: String,
    /// Oldest first.
    pub commits: Vec<CommitReport>,
    /// Every path changed between `from` and `to`.
    pub paths: Vec<PathReport>,
    /// The whole range may be used.
    pub ok: bool,
    /// Why not, first reason first.
    pub reasons: Vec<String>,
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Where `.byoc/` policy files live: everything under it is policy.
pub const POLICY_DIR: &str = ".byoc/";

/// Verifies `from..to` (everything reachable from `to` when `from` is `None`).
/// `first_seen(id)` gives the time (seconds since the epoch) validity is judged at.
pub fn verify_range(
    repo: &Repository,
    file_policy: &Policy,
    from: Option<Oid>,
    to: Oid,
    first_seen: &mut dyn FnMut(Oid) -> i64,
) -> Result<RangeReport, git2::Error> {
    let mut report = RangeReport {
        from: from.map(|f| f.to_string()),
        to: to.to_string(),
        policy: format!("{} v{}", file_policy.name, file_policy.version),
        policy_source: "the operator's file".into(),
        commits: Vec::new(),
        paths: Vec::new(),
        ok: false,
        reasons: Vec::new(),
    };
    // libgit2 applies grafts to every parent it reports; a graft could hide any commit.
    if repo.path().join("info/grafts").exists() {
        report.reasons.push(format!(
            "the repository has grafts ({}), which rewrite commits' parents; remove them and fetch the real history",
            repo.path().join("info/grafts").display()
        ));
        return Ok(report);
    }
    if let Some(f) = from
        && f != to
        && !repo.graph_descendant_of(to, f)?
    {
        report.reasons.push(format!("history rewritten: {to} is not a descendant of {f}"));
        return Ok(report);
    }
    // The policy in force where the range starts judges every commit of the range.
    let repo_start = from.map(|f| repo_policy(repo, f)).transpose()?.flatten();
    let repo_in_force = match (&repo_start, from) {
        (Some(Err(e)), Some(f)) => {
            report.reasons.push(format!(
                "the repository's {REPO_POLICY} at the last verified commit {} does not load: {e}; nothing is judged by another policy in its place",
                short(&f.to_string())
            ));
            return Ok(report);
        }
        (Some(Ok(p)), _) if p.version > file_policy.version => Some(p),
        _ => None,
    };
    let start: &Policy = repo_in_force.unwrap_or(file_policy);
    report.policy = format!("{} v{}", start.name, start.version);
    if repo_in_force.is_some() {
        report.policy_source = format!("{REPO_POLICY} at {}", from.map(|f| short(&f.to_string()).to_owned()).unwrap_or_default());
    }

    let from_tree = from.map(|f| repo.find_commit(f).and_then(|c| c.tree())).transpose()?;
    let to_tree = repo.find_commit(to)?.tree()?;
    let net: Vec<String> = diff_paths(repo, from_tree.as_ref(), &to_tree)?.into_iter().collect();
    let mut holdings = approvals::Holdings::new(net, &to_tree);

    let field = match repo.object_format() {
        git2::ObjectFormat::Sha1 => "gpgsig",
        git2::ObjectFormat::Sha256 => "gpgsig-sha256",
    };
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    walk.push(to)?;
    if let Some(f) = from {
        walk.hide(f)?;
    }
    // Accepted commits and their signers, in walk order.
    let mut accepted: Vec<(Oid, String)> = Vec::new();
    for oid in walk {
        let oid = oid?;
        let commit = repo.find_commit(oid)?;
        let changed = changed_paths(repo, &commit)?;
        holdings.record(oid, &commit.tree()?, commit.parent_id(0).ok(), &changed);
        let mut c = CommitReport {
            id: oid.to_string(),
            summary: commit.summary().ok().flatten().unwrap_or("").to_owned(),
            format: "none",
            signer: None,
            rules: Vec::new(),
            ok: false,
            reason: String::new(),
        };
        let judged = judge(repo, &commit, field, start, &changed, first_seen(oid));
        c.format = judged.format;
        c.rules = judged.rules;
        c.signer = judged.signer;
        c.ok = judged.problem.is_none();
        match (judged.problem, &c.signer) {
            (Some(problem), _) => {
                report.reasons.push(format!("commit {} ({:?}): {problem}", c.id, c.summary));
                c.reason = problem;
            }
            (None, Some(signer)) => accepted.push((oid, signer.clone())),
            (None, None) => {}
        }
        report.commits.push(c);
    }

    for (i, path) in holdings.paths.iter().enumerate() {
        let rule = start.rule_for(path);
        let threshold = rule.map_or(0, |r| r.threshold);
        let mut counted: BTreeSet<&str> = BTreeSet::new();
        let mut not_counted: BTreeMap<&str, NotCounted> = BTreeMap::new();
        for (oid, signer) in &accepted {
            let why = if signer == FORGE {
                Some("the forge's web-UI key never counts toward a threshold")
            } else if !rule.is_some_and(|r| r.signers.contains(signer)) {
                Some("not among the rule's signers")
            } else if !holdings.holds(*oid, i) {
                Some("its commit's tree holds other content at this path than the range's final one")
            } else {
                None
            };
            match why {
                None => {
                    counted.insert(signer);
                }
                Some(why) => {
                    not_counted.entry(signer).or_insert_with(|| NotCounted {
                        signer: signer.clone(),
                        commit: oid.to_string(),
                        why: why.into(),
                    });
                }
            }
        }
        not_counted.retain(|s, _| !counted.contains(s));
        let signers: Vec<String> = counted.iter().map(|s| (*s).to_owned()).collect();
        let ok = rule.is_some() && signers.len() >= threshold as usize;
        let p = PathReport {
            path: path.clone(),
            rule: rule.map(|r| r.name.clone()),
            threshold,
            signers,
            not_counted: not_counted.into_values().collect(),
            ok,
        };
        if !ok {
            report.reasons.push(match rule {
                None => format!("{path} changed, and no rule covers it"),
                Some(r) => format!(
                    "{path} needs {threshold} distinct signer(s) under {} and has {}: {:?}{}",
                    r.name,
                    p.signers.len(),
                    p.signers,
                    p.not_counted_text()
                ),
            });
        }
        report.paths.push(p);
    }
    if let Some(problem) = policy_change_problem(repo, &holdings.paths, start, repo_in_force.is_some(), to)? {
        report.reasons.push(problem);
    }
    report.ok = report.reasons.is_empty();
    Ok(report)
}

/// A range that changes `.byoc/` changes the policy of later ranges: the result must load,
/// be newer than the policy in force, and the policy in force may not be deleted.
fn policy_change_problem(
    repo: &Repository,
    net: &[String],
    start: &Policy,
    repo_in_force: bool,
    to: Oid,
) -> Result<Option<String>, git2::Error> {
    if !net.iter().any(|p| p.starts_with(POLICY_DIR)) {
        return Ok(None);
    }
    Ok(match repo_policy(repo, to)? {
        None if repo_in_force => Some(format!(
            "the range deletes {REPO_POLICY}, the policy in force (v{}); a commit cannot remove the policy that judges it: raise the operator's policy version above {} instead",
            start.version, start.version
        )),
        None => None,
        Some(Err(e)) => Some(format!("{REPO_POLICY} at the tip does not load: {e}")),
        Some(Ok(p)) if p.version <= start.version => Some(format!(
            "policy rolled back or unchanged: {REPO_POLICY} at the tip has version {} but the policy in force has version {}; every change to {POLICY_DIR} must raise the version",
            p.version, start.version
        )),
        Some(Ok(_)) => None,
    })
}

/// What [`judge`] found about one commit.
struct Judged {
    format: &'static str,
    /// The identity whose signature verified, even when its rights fall short.
    signer: Option<String>,
    rules: Vec<String>,
    /// Why the commit is refused.
    problem: Option<String>,
}

/// Judges one commit under `policy`: its signature (from the header), its parents (from
/// the object), and the signer's rights on every path it changes.
fn judge(repo: &Repository, commit: &git2::Commit<'_>, field: &str, policy: &Policy, changed: &BTreeSet<String>, at: i64) -> Judged {
    let refused = |format, problem: String| Judged { format, signer: None, rules: Vec::new(), problem: Some(problem) };
    let raw = match commit::read(repo, commit.id(), field) {
        Ok(raw) => raw,
        Err(e) => return refused("unknown", e.to_string()),
    };
    let seen: Vec<String> = commit.parent_ids().map(|p| p.to_string()).collect();
    if seen != raw.parents {
        let why = if repo.is_shallow() {
            "the repository is shallow here: fetch more history (git fetch --deepen or --unshallow)"
        } else {
            "grafts or a damaged repository"
        };
        return refused(
            "unknown",
            format!("its object names parents {:?} but git reports {seen:?} ({why}); the commits between cannot be verified", raw.parents),
        );
    }
    let Some(sig) = raw.signature else { return refused("none", "not signed".into()) };
    let (format, signer) = match signature_of(&sig, &raw.payload, policy, at) {
        Ok(found) => found,
        Err((format, reason)) => return refused(format, reason),
    };
    let mut rules = BTreeSet::new();
    let mut problems = Vec::new();
    for path in changed {
        match policy.rule_for(path) {
            None => problems.push(format!("changes {path}, which no rule covers")),
            Some(rule) => {
                rules.insert(rule.name.clone());
                if signer == FORGE {
                    if path.starts_with(POLICY_DIR) {
                        problems.push(format!("signed by the forge's web-UI key, which may never change {POLICY_DIR} (it changes {path})"));
                    }
                } else if !rule.signers.contains(&signer) {
                    problems.push(format!("{signer} may not sign {path} ({} allows {:?})", rule.name, rule.signers));
                }
            }
        }
    }
    Judged {
        format,
        signer: Some(signer),
        rules: rules.into_iter().collect(),
        problem: if problems.is_empty() { None } else { Some(problems.join("; ")) },
    }
}

/// Key in the state store of the source's state.
pub const SOURCE_STATE_KEY: &str = "source-state.json";

/// What the state store keeps about the git source: the last verified revision (the
/// high-water mark) and when each commit not yet verified was first seen.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceState {
    last_verified: Option<String>,
    /// Commit id -> seconds since the epoch.
    pub first_seen: BTreeMap<String, i64>,
}

impl SourceState {
    /// Reads it, with the version a later [`SourceState::save`] must name.
    pub async fn load(store: &(impl StateStore + ?Sized)) -> Result<(SourceState, Option<String>), StateError> {
        match store.get(SOURCE_STATE_KEY).await? {
            Some(v) => Ok((serde_json::from_slice(&v.value).map_err(|e| malformed(e.to_string()))?, Some(v.version))),
            None => Ok((SourceState::default(), None)),
        }
    }

    /// The high-water mark, an id in `repo`'s object format.
    pub fn last_verified(&self, repo: &Repository) -> Result<Option<Oid>, StateError> {
        self.last_verified
            .as_deref()
            .map(|hex| {
                let format = repo.object_format();
                // A prefix would parse too; only the full id in the repository's format counts.
                Oid::from_str_ext(hex, format)
                    .ok()
                    .filter(|oid| oid.to_string() == hex)
                    .ok_or_else(|| malformed(format!("lastVerified {hex:?} is not a {format} commit id")))
            })
            .transpose()
    }

    /// After a verification: a verified range moves the mark to `to` and forgets when its
    /// commits were first seen; a refused one keeps those times for the next attempt.
    pub fn record(&mut self, report: &RangeReport, to: Oid) {
        if report.ok {
            self.last_verified = Some(to.to_string());
            for c in &report.commits {
                self.first_seen.remove(&c.id);
            }
        }
    }

    /// Writes it if nobody else did since it was read.
    pub async fn save(&self, store: &(impl StateStore + ?Sized), version: Option<&str>) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| malformed(e.to_string()))?;
        store.put(SOURCE_STATE_KEY, &bytes, version).await?;
        Ok(())
    }
}

/// The source state is there but not what this version of byoc wrote: a person must look.
fn malformed(message: String) -> StateError {
    StateError::Io { key: SOURCE_STATE_KEY.to_owned(), message }
}

/// Where a repository carries its own signing policy.
pub const REPO_POLICY: &str = ".byoc/policy.yaml";

/// The repository's own policy at commit `oid`: `None` when it has none; its
/// `allowedSignersFile` is read from the same commit, relative to `.byoc/`.
fn repo_policy(repo: &Repository, oid: Oid) -> Result<Option<Result<Policy, policy::PolicyError>>, git2::Error> {
    let tree = repo.find_commit(oid)?.tree()?;
    let read = |path: &str| -> Result<Option<String>, String> {
        let Ok(entry) = tree.get_path(std::path::Path::new(path)) else { return Ok(None) };
        let blob = entry.to_object(repo).and_then(|o| o.peel_to_blob()).map_err(|e| format!("{path}: {}", e.message()))?;
        if blob.size() > 1 << 20 {
            return Err(format!("{path}: larger than 1 MiB"));
        }
        String::from_utf8(blob.content().to_vec()).map(Some).map_err(|_| format!("{path}: not UTF-8"))
    };
    let text = match read(REPO_POLICY) {
        Ok(None) => return Ok(None),
        Ok(Some(t)) => t,
        Err(e) => return Ok(Some(Err(policy::PolicyError::Unreadable(e)))),
    };
    let parsed = Policy::parse(REPO_POLICY, &text, &|name| {
        // Everything the repository's policy loads is policy: it must live under `.byoc/`.
        if name.starts_with('/') || name.split('/').any(|part| part == ".." || part == "." || part.is_empty()) {
            return Err(format!("{REPO_POLICY}: {name:?} must be a path inside {POLICY_DIR}"));
        }
        read(&format!("{POLICY_DIR}{name}"))?.ok_or_else(|| format!("{POLICY_DIR}{name}: not in the commit"))
    });
    Ok(Some(parsed))
}

/// The signature's format and accepted signer identity, or (format, reason).
fn signature_of(sig: &[u8], payload: &[u8], policy: &Policy, at: i64) -> Result<(&'static str, String), (&'static str, String)> {
    let head = sig.get(..40).unwrap_or(sig);
    if head.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        if !policy.forge_ssh.is_empty() && ssh::verify(sig, payload, &policy.forge_ssh, at).is_ok() {
            return if policy.trust_forge_merge_key {
                Ok(("ssh", FORGE.into()))
            } else {
                Err((
                    "ssh",
                    "signed with the forge's web-UI merge key, which this policy does not trust (forgeMergeKey.trusted: false)".into(),
                ))
            };
        }
        return ssh::verify(sig, payload, &policy.ssh, at).map(|v| ("ssh", v.principal)).map_err(|e| ("ssh", e.to_string()));
    }
    if head.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return openpgp::verify(sig, payload, &policy.pgp, at).map(|s| ("openpgp", s.name.clone())).map_err(|e| ("openpgp", e.to_string()));
    }
    if head.starts_with(b"-----BEGIN SIGNED MESSAGE-----") || head.starts_with(b"-----BEGIN CMS-----") {
        let Some(sigstore) = &policy.sigstore else {
            return Err(("x509", "an x509/gitsign signature, and the policy has no sigstore identities".into()));
        };
        return gitsign::verify(sig, payload, sigstore).map(|v| ("x509", v.signer.name.clone())).map_err(|e| ("x509", e.to_string()));
    }
    Err(("unknown", "the signature is in no format git knows".into()))
}

/// Paths a commit changes: against its first parent, or every file of a root commit.
fn changed_paths(repo: &Repository, commit: &git2::Commit<'_>) -> Result<BTreeSet<String>, git2::Error> {
    let parent_tree = match commit.parent_count() {
        0 => None,
        _ => Some(commit.parent(0)?.tree()?),
    };
    diff_paths(repo, parent_tree.as_ref(), &commit.tree()?)
}

fn diff_paths(repo: &Repository, old: Option<&git2::Tree<'_>>, new: &git2::Tree<'_>) -> Result<BTreeSet<String>, git2::Error> {
    let diff = repo.diff_tree_to_tree(old, Some(new), None)?;
    let mut paths = BTreeSet::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path() {
                paths.insert(p.to_string_lossy().into_owned());
            }
        }
    }
    Ok(paths)
}
