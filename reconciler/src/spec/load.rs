//! From the files of an environment directory to validated [`Specs`]: dispatch each file
//! on its kind, validate each document, then check what spans documents (one environment,
//! unique cluster names, disjoint state prefixes, routes to existing clusters).

use std::collections::BTreeMap;

use rwproxy::diagnostics::{Diagnostic, Diagnostics, Position};
use rwproxy::routes;
use rwproxy::specfiles::{Kind, SourceFile, kind_of};
use rwproxy::yaml;

use super::wire::{ClusterDocument, EnvironmentDocument};
use super::{Specs, validate};

/// Loads and validates an environment from its spec files. `dir` names the directory in
/// messages that concern no single file.
pub fn load(dir: &str, files: &[SourceFile]) -> Result<Specs, Vec<Diagnostic>> {
    let mut problems = Diagnostics::default();
    let mut environments: Vec<(String, EnvironmentDocument)> = Vec::new();
    let mut clusters: Vec<(String, ClusterDocument)> = Vec::new();
    let mut route_docs: Vec<(String, routes::RoutesDocument)> = Vec::new();

    // A file whose kind or content could not be read may hold a cluster: its name is
    // unknown, so "route targets an unknown cluster" would be a guess and is not reported.
    let mut unreadable_files = false;
    for file in files {
        let (kind, text) = match kind_of(file) {
            Ok(k) => k,
            Err(d) => {
                problems.push(d);
                unreadable_files = true;
                continue;
            }
        };
        let path = file.path.clone();
        let parsed = match kind {
            Kind::Environment => yaml::parse(&path, text).map(|d| environments.push((path.clone(), d))),
            Kind::RisingWaveCluster => yaml::parse(&path, text).map(|d| clusters.push((path.clone(), d))),
            Kind::Routes => routes::parse_document(&path, text).map(|d| route_docs.push((path.clone(), d))),
        };
        if let Err(d) = parsed {
            problems.push(d);
            unreadable_files |= kind == Kind::RisingWaveCluster;
        }
    }

    let environment = match environments.as_slice() {
        [] => {
            if problems.is_empty() {
                problems.error(Position::file(dir), "no Environment document in the directory", "add a file with kind: Environment; see examples/aws/environment.yaml");
            }
            None
        }
        [(file, doc), rest @ ..] => {
            for (other, d) in rest {
                problems.error(Position::at(other, &d.kind.referenced), "a second Environment in the same directory", format!("one environment per directory; the first is in {file}"));
            }
            validate::environment(file, doc, &mut problems)
        }
    };

    let mut valid_clusters = Vec::new();
    let mut names: BTreeMap<String, Position> = BTreeMap::new();
    let mut prefixes: Vec<(String, String, Position)> = Vec::new();
    for (file, doc) in &clusters {
        let name_at = Position::at(file, &doc.metadata.name.referenced);
        if let Some(first) = names.get(&doc.metadata.name.value) {
            problems.error(name_at.clone(), format!("duplicate cluster name {:?}", doc.metadata.name.value), format!("cluster names must be unique; first defined at {first}"));
        } else {
            names.insert(doc.metadata.name.value.clone(), name_at);
        }
        if let Some(cluster) = validate::cluster(file, doc, environment.as_ref(), &mut problems) {
            let at = Position::at(file, &doc.spec.state_store.prefix.referenced);
            for (other, other_prefix, other_at) in &prefixes {
                if nested(&cluster.state_prefix, other_prefix) {
                    problems.error(at.clone(), format!("state-store prefix {:?} overlaps cluster {other}'s {other_prefix:?}", cluster.state_prefix), format!("two clusters writing under one prefix corrupt each other's data; the other is at {other_at}"));
                }
            }
            prefixes.push((cluster.name.clone(), cluster.state_prefix.clone(), at));
            valid_clusters.push(cluster);
        }
    }

    let table = match routes::validate(&route_docs) {
        Ok(table) => {
            for route in table.routes.iter().filter(|_| !unreadable_files) {
                if !names.contains_key(&route.cluster) {
                    let known: Vec<&str> = names.keys().map(String::as_str).collect();
                    problems.push(Diagnostic::new(route.cluster_at.clone(), format!("route {:?} targets unknown cluster {:?}", route.name, route.cluster)).hint(format!("clusters in this environment: {}", known.join(", "))));
                }
            }
            Some(table)
        }
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

/// Whether one prefix lies under the other (or equals it), as object-key directories.
fn nested(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::nested;

    #[test]
    fn prefixes_nest_by_path_segment() {
        assert!(nested("a", "a"));
        assert!(nested("a/b", "a"));
        assert!(nested("a", "a/b"));
        assert!(!nested("ab", "a"));
        assert!(!nested("a/bc", "a/b"));
    }
}
