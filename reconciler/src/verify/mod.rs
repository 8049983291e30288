//! verify: every commit in `last_verified..new` (all parents) must be signed by a signer the
//! policy accepts for every path it changes, `new` must descend from `last_verified`, and
//! each path changed in the range needs its rule's threshold of distinct signers.
//!
//! How approvals count: the signers of the commits in the range that changed a path approve
//! it; a merge commit changes (relative to its first parent) everything its branch brings
//! in, so the person who signs the merge approves the branch's changes as well. A prod path
//! with threshold 2 is met by an author signing the branch commits and a second person
//! signing the merge (`git merge --no-ff -S`). One identity with several keys counts once.
//!
//! Key validity is judged at a time the signer cannot choose: when the reconciler first saw
//! the commit (supplied by the caller from the state store), never the committer date.
//!
//! A repository may carry its own policy in `.byoc/policy.yaml`. A commit that changes it
//! is judged by the policy in force before it, and the new file must load and carry a
//! higher `version`; from then on it judges the commits after it. Thresholds of a range
//! are counted under the policy in force where the range starts. An operator's file with a
//! higher version than the repository's (e.g. to revoke a key) takes precedence.
//!
//! Formats: SSH (SSHSIG, namespace `git`, [`ssh`]), OpenPGP ([`openpgp`]), and x509 as
//! gitsign makes it ([`gitsign`]: judged at the transparency log's time, not first-seen).

pub mod gitsign;
pub mod openpgp;
pub mod policy;
pub mod ssh;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use git2::{Oid, Repository, Sort};
use serde::{Deserialize, Serialize};

use crate::state::StateStore;
use policy::{FORGE, Policy};

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

/// The threshold check of one path changed in the range.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// The path.
    pub path: String,
    /// The governing rule (`rules[1]`), none when no rule covers it.
    pub rule: Option<String>,
    /// Distinct signers it needs.
    pub threshold: u32,
    /// Distinct accepted signers of the range's commits that changed it.
    pub signers: Vec<String>,
    /// Threshold met.
    pub ok: bool,
}

impl PathReport {
    /// `` `path` (rules[1]): 1 of 2 distinct signer(s) so far ["alice"] ``.
    pub fn shortfall(&self) -> String {
        format!(
            "`{}` ({}): {} of {} distinct signer(s) so far {:?}",
            self.path,
            self.rule.as_deref().unwrap_or("no rule covers it"),
            self.signers.len(),
            self.threshold,
            self.signers
        )
    }
}

/// The verdict on a range.
#[derive(Debug, Clone, Serialize)]
pub struct RangeReport {
    /// Last verified commit, if any.
    pub from: Option<String>,
    /// The new tip.
    pub to: String,
    /// Policy name and version.
    pub policy: String,
    /// Oldest first.
    pub commits: Vec<CommitReport>,
    /// Every path changed between `from` and `to`.
    pub paths: Vec<PathReport>,
    /// The whole range may be used.
    pub ok: bool,
    /// Why not, first reason first.
    pub reasons: Vec<String>,
}

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
        commits: Vec::new(),
        paths: Vec::new(),
        ok: false,
        reasons: Vec::new(),
    };
    if let Some(f) = from
        && f != to
        && !repo.graph_descendant_of(to, f)?
    {
        report.reasons.push(format!("history rewritten: {to} is not a descendant of {f}"));
        return Ok(report);
    }
    // The policy in force where the range starts: the repository's own, if the verified
    // `from` carries one at least as new as the operator's file; otherwise the file.
    let file = Rc::new(file_policy.clone());
    let start: Rc<Policy> = match from.map(|f| repo_policy(repo, f)).transpose()?.flatten() {
        Some(Ok(p)) if p.version >= file.version => Rc::new(p),
        _ => file.clone(),
    };
    let mut in_force: BTreeMap<Oid, Rc<Policy>> = BTreeMap::new();
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    walk.push(to)?;
    if let Some(f) = from {
        walk.hide(f)?;
    }
    // path -> identities of accepted commits in the range that changed it
    let mut approvals: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for oid in walk {
        let oid = oid?;
        let commit = repo.find_commit(oid)?;
        let changed = changed_paths(repo, &commit)?;
        let mut c = CommitReport {
            id: oid.to_string(),
            summary: commit.summary().ok().flatten().unwrap_or("").to_owned(),
            format: "none",
            signer: None,
            rules: Vec::new(),
            ok: false,
            reason: String::new(),
        };
        let at = first_seen(oid);
        // Each commit is judged by the policy in force at its first parent.
        let current = commit.parent_id(0).ok().and_then(|p| in_force.get(&p).cloned()).unwrap_or_else(|| start.clone());
        let policy = &*current;
        match signature_of(repo, oid, policy, at) {
            Err((format, reason)) => {
                c.format = format;
                c.reason = reason;
            }
            Ok((format, signer)) => {
                c.format = format;
                c.signer = Some(signer.clone());
                let mut rules = BTreeSet::new();
                let mut problems = Vec::new();
                for path in &changed {
                    match policy.rule_for(path) {
                        None => problems.push(format!("changes {path}, which no rule covers")),
                        Some(rule) => {
                            rules.insert(rule.name.clone());
                            if signer != FORGE && !rule.signers.contains(&signer) {
                                problems.push(format!("{signer} may not sign {path} ({} allows {:?})", rule.name, rule.signers));
                            }
                        }
                    }
                }
                c.rules = rules.into_iter().collect();
                let mut next = current.clone();
                if changed.contains(REPO_POLICY) {
                    match repo_policy(repo, oid)? {
                        None => next = file.clone(),
                        Some(Err(e)) => problems.push(format!("{REPO_POLICY} does not load: {e}")),
                        Some(Ok(p)) if p.version <= current.version => problems.push(format!(
                            "policy rolled back: {REPO_POLICY} has version {} but the policy in force has version {}; versions must increase",
                            p.version, current.version
                        )),
                        Some(Ok(p)) => next = Rc::new(p),
                    }
                }
                in_force.insert(oid, next);
                if problems.is_empty() {
                    c.ok = true;
                    if signer != FORGE {
                        for path in &changed {
                            approvals.entry(path.clone()).or_default().insert(signer.clone());
                        }
                    }
                } else {
                    c.reason = problems.join("; ");
                }
            }
        }
        if !c.ok {
            report.reasons.push(format!("commit {} ({:?}): {}", c.id, c.summary, c.reason));
        }
        report.commits.push(c);
    }
    let from_tree = from.map(|f| repo.find_commit(f).and_then(|c| c.tree())).transpose()?;
    let to_tree = repo.find_commit(to)?.tree()?;
    for path in diff_paths(repo, from_tree.as_ref(), &to_tree)? {
        let rule = start.rule_for(&path);
        let signers: Vec<String> = approvals.get(&path).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        let threshold = rule.map_or(0, |r| r.threshold);
        let ok = rule.is_some() && signers.len() >= threshold as usize;
        if !ok {
            report.reasons.push(match rule {
                None => format!("{path} changed, and no rule covers it"),
                Some(r) => format!("{path} needs {threshold} distinct signer(s) under {} and has {}: {signers:?}", r.name, signers.len()),
            });
        }
        report.paths.push(PathReport { path, rule: rule.map(|r| r.name.clone()), threshold, signers, ok });
    }
    report.ok = report.reasons.is_empty();
    Ok(report)
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
    pub fn load(store: &(impl StateStore + ?Sized)) -> anyhow::Result<(SourceState, Option<String>)> {
        match store.get(SOURCE_STATE_KEY)? {
            Some(v) => {
                Ok((serde_json::from_slice(&v.value).map_err(|e| anyhow::anyhow!("state {SOURCE_STATE_KEY}: {e}"))?, Some(v.version)))
            }
            None => Ok((SourceState::default(), None)),
        }
    }

    /// The high-water mark, an id in `repo`'s object format.
    pub fn last_verified(&self, repo: &Repository) -> anyhow::Result<Option<Oid>> {
        self.last_verified
            .as_deref()
            .map(|hex| {
                let format = repo.object_format();
                // A prefix would parse too; only the full id in the repository's format counts.
                Oid::from_str_ext(hex, format)
                    .ok()
                    .filter(|oid| oid.to_string() == hex)
                    .ok_or_else(|| anyhow::anyhow!("state {SOURCE_STATE_KEY}: lastVerified {hex:?} is not a {format} commit id"))
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
    pub fn save(&self, store: &(impl StateStore + ?Sized), version: Option<&str>) -> anyhow::Result<()> {
        store.put(SOURCE_STATE_KEY, &serde_json::to_vec_pretty(self)?, version)?;
        Ok(())
    }
}

/// Where a repository carries its own signing policy.
pub const REPO_POLICY: &str = ".byoc/policy.yaml";

/// The repository's own policy at commit `oid`: `None` when it has none; its
/// `allowedSignersFile` is read from the same commit, relative to `.byoc/`.
fn repo_policy(repo: &Repository, oid: Oid) -> Result<Option<Result<Policy, String>>, git2::Error> {
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
        Err(e) => return Ok(Some(Err(e))),
    };
    let parsed = Policy::parse(REPO_POLICY, &text, &|name| {
        read(&format!(".byoc/{name}"))?.ok_or_else(|| format!(".byoc/{name}: not in the commit"))
    });
    Ok(Some(parsed))
}

/// The signature's format and accepted signer identity of commit `oid`, or (format, reason).
fn signature_of(repo: &Repository, oid: Oid, policy: &Policy, at: i64) -> Result<(&'static str, String), (&'static str, String)> {
    // git names the signature header after the repository's hash: `gpgsig` for SHA-1,
    // `gpgsig-sha256` for SHA-256.
    let field = match repo.object_format() {
        git2::ObjectFormat::Sha1 => "gpgsig",
        git2::ObjectFormat::Sha256 => "gpgsig-sha256",
    };
    let (sig, payload) = match repo.extract_signature(&oid, Some(field)) {
        Ok(x) => x,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(("none", "not signed".into())),
        Err(e) => return Err(("unknown", format!("cannot read its signature: {}", e.message()))),
    };
    let head = sig.get(..40).unwrap_or(&sig[..]);
    if head.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        if !policy.forge_ssh.is_empty() && ssh::verify(&sig, &payload, &policy.forge_ssh, at).is_ok() {
            return if policy.trust_forge_merge_key {
                Ok(("ssh", FORGE.into()))
            } else {
                Err((
                    "ssh",
                    "signed with the forge's web-UI merge key, which this policy does not trust (forgeMergeKey.trusted: false)".into(),
                ))
            };
        }
        return ssh::verify(&sig, &payload, &policy.ssh, at)
            .map(|s| ("ssh", s.principals.first().cloned().unwrap_or_default()))
            .map_err(|e| ("ssh", e.to_string()));
    }
    if head.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return openpgp::verify(&sig, &payload, &policy.pgp, at).map(|s| ("openpgp", s.name.clone())).map_err(|e| ("openpgp", e));
    }
    if head.starts_with(b"-----BEGIN SIGNED MESSAGE-----") || head.starts_with(b"-----BEGIN CMS-----") {
        let Some(sigstore) = &policy.sigstore else {
            return Err(("x509", "an x509/gitsign signature, and the policy has no sigstore identities".into()));
        };
        return gitsign::verify(&sig, &payload, sigstore).map(|v| ("x509", v.signer.name.clone())).map_err(|e| ("x509", e));
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

/// The report for terminals: one line per commit, the paths below their threshold, the verdict.
pub fn render_text(r: &RangeReport, name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {}; range {}..{}",
        r.policy,
        r.from.as_deref().map_or("(root)", |f| &f[..12.min(f.len())]),
        &r.to[..12.min(r.to.len())]
    );
    for c in &r.commits {
        let _ = writeln!(
            out,
            "  {} {:<7} {:<24} {:<10} {}{}",
            &c.id[..12.min(c.id.len())],
            c.format,
            c.signer.as_deref().unwrap_or("-"),
            if c.rules.is_empty() { "-".to_owned() } else { c.rules.join(",") },
            if c.ok { "ok" } else { "REFUSED: " },
            c.reason
        );
    }
    for p in r.paths.iter().filter(|p| !p.ok) {
        let _ = writeln!(out, "  path {}", p.shortfall());
    }
    if r.ok {
        let _ = writeln!(out, "verified {name}: {} commit(s), {} path(s)", r.commits.len(), r.paths.len());
    } else {
        let _ = writeln!(out, "refused {name}: {}", r.reasons.first().map_or("", String::as_str));
    }
    out
}

/// The signature section of a pull-request comment.
pub fn render_markdown(r: &RangeReport) -> String {
    use std::fmt::Write;
    let mut out = String::from("### Signatures\n\n");
    let _ = writeln!(
        out,
        "Policy `{}`. {}\n",
        r.policy,
        if r.ok { "**All commits verify; every rule has its signatures.**" } else { "**Not mergeable yet:** see below." }
    );
    out.push_str("| commit | format | signer | rules | result |\n|---|---|---|---|---|\n");
    for c in &r.commits {
        let _ = writeln!(
            out,
            "| `{}` {} | {} | {} | {} | {} |",
            &c.id[..12.min(c.id.len())],
            c.summary.replace('|', "\\|"),
            c.format,
            c.signer.as_deref().unwrap_or("-"),
            c.rules.join(", "),
            if c.ok { "ok".to_owned() } else { format!("refused: {}", c.reason.replace('|', "\\|")) }
        );
    }
    let lacking: Vec<&PathReport> = r.paths.iter().filter(|p| !p.ok).collect();
    if !lacking.is_empty() {
        out.push_str("\nRules still lacking signatures:\n\n");
        for p in lacking {
            let _ = writeln!(out, "- {}", p.shortfall());
        }
    }
    out
}
