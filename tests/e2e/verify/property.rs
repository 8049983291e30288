//! The signed-history property, checked on random histories against a small model.
//!
//! Each case builds a repository in process (git2, SSH signatures made with keys from
//! ssh-keygen): a signed base, then a random range of commits on `main` and a side branch
//! (changes, deletions, policy edits, empty commits, merges that keep either side's content
//! or a mix) signed by random people: alice and bob (trusted), mallory (not), the forge's
//! web-UI key, or nobody. `verify_range`'s verdict must equal the model's, which is the
//! property as the README states it, written from scratch here:
//!
//! - every commit reachable from the tip and not from the base is signed by a trusted
//!   person, or by the forge key when the policy trusts it and the commit does not change
//!   `.byoc/`;
//! - every path whose content differs between base and tip has, among those trusted
//!   people, as many distinct signers of commits whose tree holds the tip's content of it
//!   as its rule needs (prod/ and .byoc/: 2, the rest: 1); the forge counts for nobody;
//! - a changed `.byoc/policy.yaml` at the tip loads and has a version above the
//!   operator's.
//!
//! Cases: 48 by default, `BYOC_PROPERTY_CASES=N` for more; the seed of a failing case is
//! printed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use byoc::verify::policy::Policy;
use git2::{Oid, Repository, Signature, Time};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

const PEOPLE: [&str; 5] = ["alice", "bob", "mallory", "forge", "nobody"];
const PATHS: [&str; 4] = ["env/a.yaml", "prod/p.yaml", "prod/q.yaml", ".byoc/policy.yaml"];

/// A commit of the model: its tree (path -> content), signer and parents.
#[derive(Clone)]
struct Node {
    tree: BTreeMap<String, String>,
    signer: &'static str,
    parents: Vec<usize>,
    oid: Oid,
}

struct World {
    repo: Repository,
    keys: HashMap<&'static str, PrivateKey>,
    nodes: Vec<Node>,
}

impl World {
    fn commit(&mut self, tree: BTreeMap<String, String>, signer: &'static str, parents: Vec<usize>) -> usize {
        let mut index = git2::Index::new().expect("index");
        for (path, text) in &tree {
            let blob = self.repo.blob(text.as_bytes()).expect("blob");
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100_644,
                uid: 0,
                gid: 0,
                file_size: 0,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).expect("add");
        }
        let tree_id = index.write_tree_to(&self.repo).expect("tree");
        let git_tree = self.repo.find_tree(tree_id).expect("tree");
        let n = self.nodes.len();
        let who = Signature::new(signer, &format!("{signer}@example.com"), &Time::new(1_767_225_600 + n as i64, 0)).expect("sig");
        let parent_commits: Vec<git2::Commit<'_>> =
            parents.iter().map(|&p| self.repo.find_commit(self.nodes[p].oid).expect("parent")).collect();
        let refs: Vec<&git2::Commit<'_>> = parent_commits.iter().collect();
        let buf = self.repo.commit_create_buffer(&who, &who, &format!("commit {n}"), &git_tree, &refs).expect("buffer");
        let text = std::str::from_utf8(&buf).expect("utf8").to_owned();
        let oid = match self.keys.get(signer) {
            Some(key) => {
                let sig = SshSig::sign(key, "git", HashAlg::Sha512, text.as_bytes()).expect("sign").to_pem(LineEnding::LF).expect("pem");
                self.repo.commit_signed(&text, &sig, None).expect("commit")
            }
            None => self.repo.odb().expect("odb").write(git2::ObjectType::Commit, text.as_bytes()).expect("write"),
        };
        self.nodes.push(Node { tree, signer, parents, oid });
        n
    }
}

fn keys(dir: &Path) -> (HashMap<&'static str, PrivateKey>, HashMap<&'static str, String>) {
    let (mut private, mut public) = (HashMap::new(), HashMap::new());
    for who in ["alice", "bob", "mallory", "forge"] {
        let path = dir.join(who);
        let out =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f"]).arg(&path).output().expect("ssh-keygen");
        assert!(out.status.success());
        let key = PrivateKey::read_openssh_file(&path).expect("key");
        public.insert(who, key.public_key().to_openssh().expect("public"));
        private.insert(who, key);
    }
    (private, public)
}

fn operator_policy(public: &HashMap<&str, String>, forge_trusted: bool) -> Policy {
    let forge = if forge_trusted { format!("{{trusted: true, sshKeys: [\"{}\"]}}", public["forge"]) } else { "{trusted: false}".into() };
    let text = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: operator}}\nspec:\n  version: 1\n  signers:\n    - {{name: alice, sshKeys: [\"{}\"]}}\n    - {{name: bob, sshKeys: [\"{}\"]}}\n  rules:\n    - {{paths: [\"**\"], signers: [alice, bob], threshold: 1}}\n    - {{paths: [\"prod/**\", \".byoc/**\"], signers: [alice, bob], threshold: 2}}\n  forgeMergeKey: {forge}\n",
        public["alice"], public["bob"]
    );
    Policy::parse("operator.yaml", &text, &|_| Err("none".into())).expect("operator policy")
}

/// Repository policies a commit may write: (text, loads, version).
fn repo_policies(public: &HashMap<&str, String>) -> Vec<(String, bool, u64)> {
    let doc = |version: u64, bob_key: &str| {
        format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: in-repo}}\nspec:\n  version: {version}\n  signers:\n    - {{name: alice, sshKeys: [\"{}\"]}}\n    - {{name: bob, sshKeys: [\"{}\"]}}\n  rules:\n    - {{paths: [\"**\"], signers: [alice, bob], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n",
            public["alice"], public[bob_key]
        )
    };
    vec![
        (doc(2, "bob"), true, 2),
        (doc(3, "mallory"), true, 3),
        (doc(1, "mallory"), true, 1),
        ("apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nbogus: 1\n".into(), false, 0),
    ]
}

/// The model's verdict.
fn model(w: &World, base: usize, tip: usize, forge_trusted: bool, policies: &[(String, bool, u64)]) -> (bool, Vec<String>) {
    let mut why = Vec::new();
    // Reachable from the tip, minus the base and its ancestors (the base is every
    // commit's ancestor here).
    let mut range = BTreeSet::new();
    let mut stack = vec![tip];
    while let Some(n) = stack.pop() {
        if n != base && range.insert(n) {
            stack.extend(w.nodes[n].parents.iter().copied());
        }
    }
    let trusted = |s: &str| s == "alice" || s == "bob";
    for &n in &range {
        let node = &w.nodes[n];
        let first = &w.nodes[node.parents[0]].tree;
        let changes_policy = PATHS.iter().any(|p| p.starts_with(".byoc/") && node.tree.get(*p) != first.get(*p));
        let ok = trusted(node.signer) || (node.signer == "forge" && forge_trusted && !changes_policy);
        if !ok {
            why.push(format!("commit {n} by {} not accepted", node.signer));
        }
    }
    let (start, end) = (&w.nodes[base].tree, &w.nodes[tip].tree);
    for path in PATHS {
        if start.get(path) == end.get(path) {
            continue;
        }
        let needed = if path.starts_with("prod/") || path.starts_with(".byoc/") { 2 } else { 1 };
        let approvers: BTreeSet<&str> = range
            .iter()
            .map(|&n| &w.nodes[n])
            .filter(|c| trusted(c.signer) && c.tree.get(path) == end.get(path))
            .map(|c| c.signer)
            .collect();
        if approvers.len() < needed {
            why.push(format!("{path}: {} of {needed}", approvers.len()));
        }
    }
    if start.get(".byoc/policy.yaml") != end.get(".byoc/policy.yaml")
        && let Some(text) = end.get(".byoc/policy.yaml")
    {
        let (_, loads, version) = policies.iter().find(|(t, _, _)| t == text).expect("a known policy");
        if !loads || *version <= 1 {
            why.push(format!("policy at the tip: loads {loads}, version {version}"));
        }
    }
    (why.is_empty(), why)
}

/// Runs one random case; returns the verdict both agreed on.
fn one_case(seed: u64, dir: &Path, private: &HashMap<&'static str, PrivateKey>, public: &HashMap<&'static str, String>) -> bool {
    let mut rng = StdRng::seed_from_u64(seed);
    let path = dir.join(format!("case-{seed}"));
    let repo = Repository::init(&path).expect("init");
    let mut w = World { repo, keys: private.iter().map(|(k, v)| (*k, v.clone())).collect(), nodes: Vec::new() };
    w.keys.remove("nobody");
    let policies = repo_policies(public);
    let contents = ["1", "2", "3"];
    let mut tree = BTreeMap::new();
    tree.insert("env/a.yaml".to_owned(), "0".to_owned());
    tree.insert("prod/p.yaml".to_owned(), "0".to_owned());
    let base = w.commit(tree, "alice", Vec::new());
    let (mut main, mut side) = (base, base);
    let steps = rng.random_range(1..=8);
    for _ in 0..steps {
        let signer = PEOPLE[rng.random_range(0..PEOPLE.len())];
        let on_side = rng.random_bool(0.4);
        let head = if on_side { side } else { main };
        let mut tree = w.nodes[head].tree.clone();
        let action = rng.random_range(0..10);
        let parents = if action >= 8 && !on_side && side != main {
            // A merge of the side branch: either side's content or a mix, path by path.
            let theirs = w.nodes[side].tree.clone();
            let mode = rng.random_range(0..3);
            for p in PATHS {
                let take_theirs = mode == 1 || (mode == 2 && rng.random_bool(0.5));
                if take_theirs {
                    match theirs.get(p) {
                        Some(t) => tree.insert(p.to_owned(), t.clone()),
                        None => tree.remove(p),
                    };
                }
            }
            vec![main, side]
        } else {
            if action < 7 {
                let p = PATHS[rng.random_range(0..PATHS.len())];
                if p.starts_with(".byoc/") {
                    match rng.random_range(0..5) {
                        4 => tree.remove(p),
                        i => tree.insert(p.to_owned(), policies[i].0.clone()),
                    };
                } else if rng.random_bool(0.15) {
                    tree.remove(p);
                } else {
                    tree.insert(p.to_owned(), contents[rng.random_range(0..contents.len())].to_owned());
                }
            }
            vec![head]
        };
        let n = w.commit(tree, signer, parents);
        if on_side {
            side = n;
        } else {
            main = n;
        }
    }
    let forge_trusted = rng.random_bool(0.5);
    let policy = operator_policy(public, forge_trusted);
    let (base_oid, tip_oid) = (w.nodes[base].oid, w.nodes[main].oid);
    let report = byoc::verify::verify_range(&w.repo, &policy, Some(base_oid), tip_oid, &mut |_| 1_800_000_000).expect("verify runs");
    let (want, why) = model(&w, base, main, forge_trusted, &policies);
    assert_eq!(report.ok, want, "seed {seed}: verify says {} ({:?}), the model says {want} ({why:?})", report.ok, report.reasons);
    want
}

#[test]
fn random_histories_get_the_verdict_of_the_model() {
    let cases: u64 = std::env::var("BYOC_PROPERTY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = keys(dir.path());
    let verdicts: Vec<bool> = (0..cases).map(|seed| one_case(seed, dir.path(), &private, &public)).collect();
    // Both outcomes occur, so the comparison is not one-sided.
    let verified = verdicts.iter().filter(|v| **v).count();
    println!("{cases} random histories: {verified} verified, {} refused, each as the model says", verdicts.len() - verified);
    assert!(cases < 20 || (verified > 0 && verified < verdicts.len()), "{verified} of {cases} verified");
}
