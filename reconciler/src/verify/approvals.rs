//! Which commits of a range approve which paths: a commit approves a path when its tree
//! holds exactly the range's final content of that path (the same blob and mode, or no
//! entry for a deletion). A signature covers the commit's whole tree, so this is what a
//! signer can be said to have seen; content a signer never signed (a branch discarded by
//! `merge -s ours`, an earlier draft) approves nothing.
//!
//! Computed incrementally: a commit holds the same content as its first parent except at
//! the paths it changes, so only those are looked up; a commit whose first parent is
//! outside the range is looked up in full.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;

use git2::{Oid, Tree};

/// A path's content in a tree: object id and file mode, `None` when absent.
type Content = Option<(Oid, i32)>;

fn content(tree: &Tree<'_>, path: &str) -> Content {
    tree.get_path(Path::new(path)).ok().map(|e| (e.id(), e.filemode()))
}

/// The paths whose final content each commit of the range holds.
pub struct Holdings {
    /// The range's changed paths, in order; bits below index into it.
    pub paths: Vec<String>,
    index: HashMap<String, usize>,
    finals: Vec<Content>,
    by_commit: HashMap<Oid, Rc<Vec<u64>>>,
}

impl Holdings {
    /// For the paths `paths` (the range's net changes) and the range's final tree.
    pub fn new(paths: Vec<String>, final_tree: &Tree<'_>) -> Holdings {
        let finals = paths.iter().map(|p| content(final_tree, p)).collect();
        let index = paths.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        Holdings { paths, index, finals, by_commit: HashMap::new() }
    }

    /// Records commit `oid` (tree `tree`, first parent `parent`, changing `changed` relative
    /// to it). Parents inside the range must be recorded first (a topological walk does so).
    pub fn record(&mut self, oid: Oid, tree: &Tree<'_>, parent: Option<Oid>, changed: &BTreeSet<String>) {
        let words = self.paths.len().div_ceil(64);
        let bits = match parent.and_then(|p| self.by_commit.get(&p)) {
            Some(inherited) => {
                let touched: Vec<usize> = changed.iter().filter_map(|p| self.index.get(p).copied()).collect();
                if touched.is_empty() {
                    inherited.clone()
                } else {
                    let mut bits = (**inherited).clone();
                    for i in touched {
                        set(&mut bits, i, content(tree, &self.paths[i]) == self.finals[i]);
                    }
                    Rc::new(bits)
                }
            }
            None => {
                let mut bits = vec![0; words];
                for i in 0..self.paths.len() {
                    set(&mut bits, i, content(tree, &self.paths[i]) == self.finals[i]);
                }
                Rc::new(bits)
            }
        };
        self.by_commit.insert(oid, bits);
    }

    /// Whether commit `oid` (recorded) holds the final content of path number `i`.
    pub fn holds(&self, oid: Oid, i: usize) -> bool {
        self.by_commit.get(&oid).is_some_and(|bits| bits[i / 64] >> (i % 64) & 1 == 1)
    }
}

fn set(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}
