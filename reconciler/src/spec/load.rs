//! From the files of an environment directory to validated [`Specs`]: dispatch each file
//! on its kind, validate each document, then check what spans documents (one environment,
//! unique cluster names, disjoint state prefixes, routes to existing clusters).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use rwproxy::diagnostics::{Diagnostic, Diagnostics, Position};
use rwproxy::routes;
use rwproxy::specfiles::{Kind, SourceFile, kind_of};
use rwproxy::yaml;

use super::wire::{ClusterDocument, EnvironmentDocument};
use super::{Specs, validate};

/// One parsed spec document. Clusters are the common case and stay inline; the rarer,
/// larger environment is boxed.
#[allow(clippy::large_enum_variant)]
enum Document {
    Environment(Box<EnvironmentDocument>),
    Cluster(ClusterDocument),
    Routes(routes::RoutesDocument),
}

/// A parse failure, and the file's kind when that much was read (a file of unknown kind
/// could have held a cluster: its name is then unknown, so "route targets an unknown
/// cluster" would be a guess and is not reported).
type ParseError = (Diagnostic, Option<Kind>);

type Parsed = Result<Arc<Document>, ParseError>;

/// Parsed documents by file path and content. A pull request changes a few files: planning
/// it parses each distinct file once for both revisions, and a long-running reconciler
/// can keep one cache across reconciles. Parsing is pure, so a hit is exactly what a
/// fresh parse would return.
#[derive(Default)]
pub struct ParseCache {
    entries: Mutex<HashMap<(String, Vec<u8>), Parsed>>,
}

impl ParseCache {
    fn parse_all(&self, files: &[SourceFile]) -> Vec<Parsed> {
        let key = |f: &SourceFile| (f.path.clone(), f.bytes.clone());
        let mut found: Vec<Option<Parsed>> = {
            let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            files.iter().map(|f| map.get(&key(f)).cloned()).collect()
        };
        let missing: Vec<&SourceFile> = files.iter().zip(&found).filter(|(_, hit)| hit.is_none()).map(|(f, _)| f).collect();
        let mut parsed = parse_all(&missing).into_iter();
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for (file, slot) in files.iter().zip(&mut found) {
            if slot.is_none() {
                let result = parsed
                    .next()
                    .unwrap_or_else(|| Err((Diagnostic::new(Position::file(&file.path), "internal error: file was not parsed"), None)));
                map.insert(key(file), result.clone());
                *slot = Some(result);
            }
        }
        found.into_iter().flatten().collect()
    }
}

/// Loads and validates an environment from its spec files. `dir` names the directory in
/// messages that concern no single file.
pub fn load(dir: &str, files: &[SourceFile]) -> Result<Specs, Vec<Diagnostic>> {
    load_cached(dir, files, &ParseCache::default())
}

/// [`load`], reusing documents already parsed into `cache`.
pub fn load_cached(dir: &str, files: &[SourceFile], cache: &ParseCache) -> Result<Specs, Vec<Diagnostic>> {
    let mut problems = Diagnostics::default();
    let parsed = cache.parse_all(files);
    let mut environments: Vec<(&str, &EnvironmentDocument)> = Vec::new();
    let mut clusters: Vec<(&str, &ClusterDocument)> = Vec::new();
    let mut route_docs: Vec<(&str, &routes::RoutesDocument)> = Vec::new();
    let mut unreadable_clusters = false;
    let mut environment_tree = false;
    for (file, result) in files.iter().zip(&parsed) {
        let path = file.path.as_str();
        match result {
            Ok(doc) => match doc.as_ref() {
                Document::Environment(d) => {
                    environment_tree = true;
                    environments.push((path, d));
                }
                Document::Cluster(d) => clusters.push((path, d)),
                Document::Routes(d) => route_docs.push((path, d)),
            },
            Err((d, kind)) => {
                problems.push(d.clone());
                unreadable_clusters |= matches!(kind, None | Some(Kind::RisingWaveCluster));
                environment_tree |= kind.is_some_and(|k| k != Kind::Routes);
            }
        }
    }

    let environment = match environments.as_slice() {
        [] => {
            if problems.is_empty() {
                problems.error(
                    Position::file(dir),
                    "no Environment document in the directory",
                    "add a file with kind: Environment; see examples/aws/environment.yaml",
                );
            }
            None
        }
        [(file, doc), rest @ ..] => {
            for (other, d) in rest {
                problems.error(
                    Position::at(*other, &d.kind.referenced),
                    "a second Environment in the same directory",
                    format!("one environment per directory; the first is in {file}"),
                );
            }
            validate::environment(file, doc, &mut problems)
        }
    };

    let mut valid_clusters = Vec::new();
    let mut names: BTreeMap<&str, Position> = BTreeMap::new();
    let mut prefixes: Vec<Prefix> = Vec::new();
    for &(file, doc) in &clusters {
        let name = doc.metadata.name.value.as_str();
        let name_at = Position::at(file, &doc.metadata.name.referenced);
        if let Some(first) = names.get(name) {
            problems.error(
                name_at,
                format!("duplicate cluster name {name:?}"),
                format!("cluster names must be unique; first defined at {first}"),
            );
        } else {
            names.insert(name, name_at);
        }
        if let Some(cluster) = validate::cluster(file, doc, environment.as_ref(), &mut problems) {
            prefixes.push(Prefix {
                cluster: cluster.name.clone(),
                prefix: cluster.state_prefix.clone(),
                at: Position::at(file, &doc.spec.state_store.prefix.referenced),
            });
            valid_clusters.push(cluster);
        }
    }
    check_prefixes(prefixes, &mut problems);

    // The proxy judges the same tree with the same function (`rwproxy::routes::load_dir`).
    let tree_clusters = routes::TreeClusters {
        names: names.keys().map(|n| (*n).to_owned()).collect(),
        environment: environment_tree || !clusters.is_empty(),
        complete: !unreadable_clusters,
    };
    let table = match routes::validate(&route_docs, &tree_clusters) {
        Ok(table) => Some(table),
        Err(ds) => {
            problems.extend(ds);
            None
        }
    };

    if !problems.is_empty() {
        return Err(problems.into_sorted());
    }
    valid_clusters.sort_by(|a, b| a.name.cmp(&b.name));
    match (environment, table) {
        (Some(environment), Some(routes)) => Ok(Specs { environment, clusters: valid_clusters, routes }),
        // Unreachable in practice: a missing part always recorded a problem above.
        _ => Err(vec![Diagnostic::new(Position::file(dir), "the environment could not be loaded")]),
    }
}

fn parse_one(file: &SourceFile) -> Parsed {
    let (kind, text) = kind_of(file).map_err(|d| (d, None))?;
    let path = &file.path;
    let doc = match kind {
        Kind::Environment => yaml::parse(path, text).map(|d| Document::Environment(Box::new(d))),
        Kind::RisingWaveCluster => yaml::parse(path, text).map(Document::Cluster),
        Kind::Routes => routes::parse_document(path, text).map(Document::Routes),
    }
    .map_err(|d| (d, Some(kind)))?;
    Ok(Arc::new(doc))
}

/// Parses every file, spread over the machine's cores; results come back in file order,
/// so what follows is as deterministic as a sequential parse.
fn parse_all(files: &[&SourceFile]) -> Vec<Parsed> {
    const MIN_FILES_PER_THREAD: usize = 32;
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(files.len() / MIN_FILES_PER_THREAD).max(1);
    if threads == 1 {
        return files.iter().map(|f| parse_one(f)).collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            files.chunks(chunk).map(|part| (part, scope.spawn(move || part.iter().map(|f| parse_one(f)).collect::<Vec<_>>()))).collect();
        handles
            .into_iter()
            .flat_map(|(part, handle)| {
                // A panic in the parser is a bug; report it against the files rather than
                // bringing the whole process down.
                handle.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|f| Err((Diagnostic::new(Position::file(&f.path), "internal error while parsing this file"), None)))
                        .collect()
                })
            })
            .collect()
    })
}

/// A cluster's state-store prefix and where it was written.
struct Prefix {
    cluster: String,
    prefix: String,
    at: Position,
}

/// Reports every state-store prefix that equals or lies under another cluster's: two
/// clusters writing under one prefix corrupt each other's data.
///
/// Sorted by `prefix + "/"`, a prefix's descendants follow it directly (everything sorted
/// between `a/` and `a/x/` starts with `a/`), so one pass with a stack of open ancestors
/// finds all nestings in O(n log n), where comparing all pairs would be quadratic.
fn check_prefixes(mut prefixes: Vec<Prefix>, problems: &mut Diagnostics) {
    prefixes.sort_by_cached_key(|p| (format!("{}/", p.prefix), p.at.clone()));
    let mut open: Vec<&Prefix> = Vec::new();
    for entry in &prefixes {
        let key = format!("{}/", entry.prefix);
        while open.last().is_some_and(|top| !key.starts_with(&format!("{}/", top.prefix))) {
            open.pop();
        }
        if let Some(other) = open.last() {
            problems.error(
                entry.at.clone(),
                format!("state-store prefix {:?} overlaps cluster {}'s {:?}", entry.prefix, other.cluster, other.prefix),
                format!("two clusters writing under one prefix corrupt each other's data; the other is at {}", other.at),
            );
        }
        open.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(list: &[(&str, &str)]) -> Vec<String> {
        let prefixes = list
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Prefix {
                cluster: (*c).to_owned(),
                prefix: (*p).to_owned(),
                at: Position { file: "f".into(), line: Some(i as u64 + 1), column: Some(1) },
            })
            .collect();
        let mut problems = Diagnostics::default();
        check_prefixes(prefixes, &mut problems);
        problems.into_sorted().into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn prefixes_nest_by_path_segment() {
        assert!(overlaps(&[("x", "ab"), ("y", "a"), ("z", "a-b"), ("w", "a0")]).is_empty());
        assert_eq!(overlaps(&[("x", "a"), ("y", "a")]), ["state-store prefix \"a\" overlaps cluster x's \"a\""]);
        assert_eq!(overlaps(&[("y", "a/b"), ("x", "a")]), ["state-store prefix \"a/b\" overlaps cluster x's \"a\""]);
        // Every nesting is reported, also those not adjacent in sorted order.
        let all = overlaps(&[("r", "a"), ("s", "a/b"), ("t", "a/c"), ("u", "a-x"), ("v", "b")]);
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[test]
    fn a_cache_hit_gives_what_a_fresh_parse_gives() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/aws");
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(dir)).expect("example");
        let cache = ParseCache::default();
        let first = load_cached(dir, &files, &cache).expect("valid");
        let second = load_cached(dir, &files, &cache).expect("valid");
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
        assert_eq!(cache.entries.lock().expect("lock").len(), files.len());
    }
}
