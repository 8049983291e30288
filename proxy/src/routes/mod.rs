//! Route table: which RisingWave cluster a SQL connection goes to, and who may connect.
//!
//! Routes are written as `kind: Routes` documents in the environment directory. They are
//! read in three steps: bytes -> [`RoutesDocument`] (serde, unknown fields refused) ->
//! [`validate`] (every semantic problem collected) -> [`RouteTable`] (the domain type the
//! proxy routes with). This module has no heavy dependencies so the reconciler can use it
//! to refuse a bad table before it is ever published.

mod names;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostics::{Diagnostic, Diagnostics, Position};
pub use names::{is_dns_label, is_hostname};

/// The `apiVersion` every spec document carries.
pub const API_VERSION: &str = "byoc.risingwave.dev/v1alpha1";

/// Port RisingWave's frontend listens on; the default backend port.
pub const FRONTEND_PORT: u16 = 4566;

/// The namespace the reconciler gives a RisingWave cluster: `rw-<cluster>`.
pub fn cluster_namespace(cluster: &str) -> String {
    format!("rw-{cluster}")
}

/// The name of a cluster's frontend service, which routes reach by default: the Service the
/// risingwave-operator creates and owns for every `RisingWave` (it names each component's
/// objects `<name>-<component>`). byoc does not create a Service of its own: two writers of
/// one object would fight over it.
pub fn frontend_service(cluster: &str) -> String {
    format!("{cluster}-frontend")
}

/// The port of the operator's frontend Service (its port `service`; the operator starts
/// the frontends listening there), which routes without a `backend:` dial.
pub const OPERATOR_FRONTEND_PORT: u16 = 4567;

/// A `kind: Routes` document as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutesDocument {
    /// Must be [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// Must be `Routes`.
    pub kind: Spanned<String>,
    /// Name of this set of routes.
    pub metadata: Metadata,
    /// The routes.
    pub spec: RoutesSpec,
}

/// `metadata` of a spec document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Name of the object, a DNS label.
    pub name: Spanned<String>,
}

/// `spec` of a `Routes` document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesSpec {
    /// Route entries, in any order: matching does not depend on order.
    pub routes: Vec<RouteSpec>,
}

/// One route entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSpec {
    /// Unique name of the route (used in metrics and logs).
    pub name: Spanned<String>,
    /// How a connection is matched to this route: exactly one of the fields.
    #[serde(rename = "match")]
    pub matcher: Spanned<MatchSpec>,
    /// Name of the RisingWave cluster the route sends connections to; on a `*.domain` SNI
    /// route, `*` means the first label of the host names the cluster.
    pub cluster: Spanned<String>,
    /// Client networks allowed to use the route. Required: write `0.0.0.0/0` to allow all.
    pub allowed_cidrs: Spanned<Vec<Spanned<IpNet>>>,
    /// Backend address `host:port`; `{cluster}` in it stands for the cluster's name.
    /// Default: the operator's frontend service of the cluster,
    /// `<cluster>-frontend.rw-<cluster>.svc.cluster.local:4567`.
    pub backend: Option<Spanned<String>>,
    /// TLS from the proxy to the backend: `disable` (the default, for a frontend inside
    /// the cluster's network) or `verify-full` (the backend's certificate must chain to
    /// rwproxy's `--backend-ca` and name the backend host).
    pub backend_tls: Option<Spanned<BackendTls>>,
    /// Most client connections open at once through this route to its cluster (to each
    /// cluster, on a `cluster: "*"` route); past it a new client is refused with SQLSTATE
    /// 53300 while open sessions carry on. Default: no limit.
    pub max_connections: Option<Spanned<u32>>,
}

/// Largest `maxConnections` accepted: far above what one RisingWave frontend serves, so a
/// larger number is a typo rather than a limit.
pub const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

/// Whether the proxy speaks TLS to a route's backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, with the certificate checked against the proxy's backend CA and host name.
    VerifyFull,
}

/// The match part of a route entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// TLS SNI host name: exact, or `*.domain` for any single label under `domain`.
    pub sni: Option<Spanned<String>>,
    /// Value of the startup `options` token `cluster=VALUE`.
    pub options_token: Option<Spanned<String>>,
    /// Database name in the startup message.
    pub database: Option<Spanned<String>>,
}

/// A validated route table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Routes sorted by name.
    pub routes: Vec<Route>,
    /// Names of the environment's clusters, when known (read from the same tree); a
    /// wildcard route with `cluster: "*"` only reaches these.
    pub clusters: std::collections::BTreeSet<String>,
}

/// The `cluster` value of a route whose SNI wildcard's first label names the cluster.
pub const CLUSTER_FROM_SNI: &str = "*";

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique route name.
    pub name: String,
    /// What selects this route.
    pub matcher: RouteMatch,
    /// Target cluster name, or [`CLUSTER_FROM_SNI`].
    pub cluster: String,
    /// Where the `cluster` field was written, so callers can report unknown clusters.
    pub cluster_at: Position,
    /// Allowed client networks.
    pub allowed: Vec<IpNet>,
    /// Explicit backend `host:port`, if any.
    pub backend: Option<Backend>,
    /// TLS to the backend.
    pub backend_tls: BackendTls,
    /// Most client connections open at once to the route's cluster; `None`: no limit.
    pub max_connections: Option<u32>,
}

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteMatch {
    /// SNI host name equal to this (lower case).
    SniExact(String),
    /// SNI host of exactly one label followed by this suffix (lower case, starts with `.`).
    SniWildcard(String),
    /// Startup options token `cluster=VALUE`.
    OptionsToken(String),
    /// Database name.
    Database(String),
}

impl std::fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteMatch::SniExact(h) => write!(f, "sni {h}"),
            RouteMatch::SniWildcard(s) => write!(f, "sni *{s}"),
            RouteMatch::OptionsToken(t) => write!(f, "options token cluster={t}"),
            RouteMatch::Database(d) => write!(f, "database {d}"),
        }
    }
}

/// A backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl RouteTable {
    /// Whether a client at `addr` may use `route`.
    pub fn allows(route: &Route, addr: IpAddr) -> bool {
        route.allowed.iter().any(|net| net.contains(&addr))
    }
}

/// Parses one `Routes` document. `kind` and `apiVersion` are checked by [`validate`].
pub fn parse_document(file: &str, text: &str) -> Result<RoutesDocument, Diagnostic> {
    crate::yaml::parse(file, text)
}

/// What a tree says about its RisingWave clusters: it bounds where its routes may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeClusters {
    /// The names of the `RisingWaveCluster`s the tree defines.
    pub names: std::collections::BTreeSet<String>,
    /// Whether the tree is an environment (it holds an `Environment` or a
    /// `RisingWaveCluster`) rather than a tree of routes only. In an environment every
    /// route names one of its clusters; a routes-only tree (a proxy in front of backends
    /// byoc does not manage, as the benchmark runs it) must give each route a `backend:`.
    pub environment: bool,
    /// False when some file could not be read far enough to know whether it defines a
    /// cluster: "targets unknown cluster" would then be a guess, and is not reported (the
    /// unreadable file is, so the tree is refused either way).
    pub complete: bool,
}

/// Loads the route table from a directory as the proxy sees it: the `kind: Routes` files,
/// checked against the clusters the same tree defines by [`validate`], the one check
/// `byoc validate`, `byoc plan` and `byoc apply` use too. Environment documents are not
/// read (the reconciler validated them before publishing).
pub fn load_dir(dir: &std::path::Path) -> Result<RouteTable, Vec<Diagnostic>> {
    let files = crate::specfiles::read_dir(dir)?;
    let mut problems = Diagnostics::default();
    let mut documents = Vec::new();
    let mut clusters = TreeClusters { complete: true, ..TreeClusters::default() };
    for file in &files {
        match crate::specfiles::kind_of(file) {
            Ok((crate::specfiles::Kind::Routes, text)) => match parse_document(&file.path, text) {
                Ok(doc) => documents.push((file.path.clone(), doc)),
                Err(d) => problems.push(d),
            },
            Ok((crate::specfiles::Kind::RisingWaveCluster, text)) => {
                clusters.environment = true;
                match crate::yaml::parse::<NamedDocument>(&file.path, text) {
                    Ok(doc) => {
                        clusters.names.insert(doc.metadata.name.value);
                    }
                    Err(d) => {
                        clusters.complete = false;
                        problems.push(d);
                    }
                }
            }
            Ok((crate::specfiles::Kind::Environment, _)) => clusters.environment = true,
            Err(d) => {
                // Unreadable: it might have been a cluster.
                clusters.complete = false;
                problems.push(d);
            }
        }
    }
    let borrowed: Vec<(&str, &RoutesDocument)> = documents.iter().map(|(f, d)| (f.as_str(), d)).collect();
    // Route problems are reported with the files' problems, all at once.
    match validate(&borrowed, &clusters) {
        Ok(table) if problems.is_empty() => Ok(table),
        Ok(_) => Err(problems.into_sorted()),
        Err(ds) => {
            problems.extend(ds);
            Err(problems.into_sorted())
        }
    }
}

/// Any spec document, read only for its name.
#[derive(Debug, Deserialize)]
struct NamedDocument {
    metadata: Metadata,
}

/// Validates a set of `Routes` documents (each with the file it came from) into one table,
/// given what the same tree says about its clusters, reporting every problem at once.
///
/// This is the one definition of a valid route table: the reconciler refuses to publish
/// what it refuses, and the proxy refuses to load it (`--check`, start and reload).
pub fn validate(documents: &[(&str, &RoutesDocument)], clusters: &TreeClusters) -> Result<RouteTable, Vec<Diagnostic>> {
    let mut problems = Diagnostics::default();
    let mut names: BTreeMap<String, Position> = BTreeMap::new();
    let mut matchers: BTreeMap<RouteMatch, (String, Position)> = BTreeMap::new();
    let mut routes = Vec::new();

    for (file, doc) in documents {
        let file: &str = file;
        let at = |loc: &serde_saphyr::Location| Position::at(file, loc);
        check_header(file, &doc.api_version, &doc.kind, "Routes", &mut problems);
        if !is_dns_label(&doc.metadata.name.value) {
            problems.error(
                at(&doc.metadata.name.referenced),
                format!("invalid name {:?}", doc.metadata.name.value),
                "use lower-case letters, digits and '-', at most 63 characters",
            );
        }
        for spec in &doc.spec.routes {
            // Uniqueness is judged on what was written, also for a route with other
            // problems: each problem is reported, not only the first.
            let name = &spec.name.value;
            let name_at = at(&spec.name.referenced);
            if let Some(first) = names.get(name) {
                problems.error(
                    name_at.clone(),
                    format!("duplicate route name {name:?}"),
                    format!("route names must be unique; first defined at {first}"),
                );
            } else {
                names.insert(name.clone(), name_at.clone());
            }
            let (matcher, route) = validate_route(file, spec, &mut problems);
            if let Some(matcher) = matcher {
                if let Some((other, first)) = matchers.get(&matcher) {
                    problems.error(
                        at(&spec.matcher.referenced),
                        format!("route {name:?} matches {matcher} like route {other:?}"),
                        format!("a connection must match one route only; the other is at {first}"),
                    );
                } else {
                    matchers.insert(matcher, (name.clone(), name_at));
                }
            }
            check_target(spec, clusters, &at, &mut problems);
            routes.extend(route);
        }
    }
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    problems.finish(RouteTable { routes, clusters: clusters.names.clone() })
}

/// Whether a route's cluster is one the tree defines (see [`TreeClusters`]).
fn check_target(spec: &RouteSpec, clusters: &TreeClusters, at: &dyn Fn(&serde_saphyr::Location) -> Position, problems: &mut Diagnostics) {
    let (name, cluster) = (&spec.name.value, &spec.cluster.value);
    if !clusters.complete || (cluster != CLUSTER_FROM_SNI && !is_dns_label(cluster)) {
        return;
    }
    let listed = || {
        if clusters.names.is_empty() {
            "this tree defines no RisingWaveCluster".to_owned()
        } else {
            format!("clusters in this environment: {}", clusters.names.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
        }
    };
    if cluster == CLUSTER_FROM_SNI {
        // Such a route reaches only the tree's clusters: with none it matches nothing.
        if clusters.names.is_empty() {
            problems.error(
                at(&spec.cluster.referenced),
                format!("route {name:?} takes its cluster from the SNI host, but the tree defines no RisingWaveCluster"),
                "name the cluster, or define the clusters the host names in this tree",
            );
        }
    } else if clusters.environment {
        if !clusters.names.contains(cluster) {
            problems.push(
                Diagnostic::new(at(&spec.cluster.referenced), format!("route {name:?} targets unknown cluster {cluster:?}")).hint(listed()),
            );
        }
    } else if spec.backend.is_none() {
        problems.error(
            at(&spec.cluster.referenced),
            format!("route {name:?} targets cluster {cluster:?}, which no RisingWaveCluster in this tree defines, and has no backend"),
            "give the route a backend: host:port, or add the cluster's RisingWaveCluster to the tree",
        );
    }
}

/// Checks `apiVersion` and `kind` of a spec document.
pub fn check_header(file: &str, api_version: &Spanned<String>, kind: &Spanned<String>, expected_kind: &str, problems: &mut Diagnostics) {
    if api_version.value != API_VERSION {
        problems.error(
            Position::at(file, &api_version.referenced),
            format!("unsupported apiVersion {:?}", api_version.value),
            format!("use apiVersion: {API_VERSION}"),
        );
    }
    if kind.value != expected_kind {
        problems.error(
            Position::at(file, &kind.referenced),
            format!("expected kind {expected_kind}, found {:?}", kind.value),
            "kinds are Environment, RisingWaveCluster and Routes",
        );
    }
}

/// Checks one route on its own; returns its matcher when that is valid (for the
/// duplicate-match check, which does not depend on the rest) and the route when all of it is.
fn validate_route(file: &str, spec: &RouteSpec, problems: &mut Diagnostics) -> (Option<RouteMatch>, Option<Route>) {
    let at = |loc: &serde_saphyr::Location| Position::at(file, loc);
    let before = problems.len();

    let name = spec.name.value.clone();
    if !is_dns_label(&name) {
        problems.error(
            at(&spec.name.referenced),
            format!("invalid route name {name:?}"),
            "use lower-case letters, digits and '-', at most 63 characters",
        );
    }
    let wildcard = spec.matcher.value.sni.as_ref().is_some_and(|h| h.value.starts_with("*."));
    if spec.cluster.value == CLUSTER_FROM_SNI {
        if !wildcard {
            problems.error(
                at(&spec.cluster.referenced),
                format!("route {name:?} takes its cluster from the SNI host but does not match `sni: \"*.domain\"`"),
                "use cluster: \"*\" only with a wildcard SNI match, or name the cluster",
            );
        }
    } else if !is_dns_label(&spec.cluster.value) {
        problems.error(
            at(&spec.cluster.referenced),
            format!("invalid cluster name {:?}", spec.cluster.value),
            "name a RisingWaveCluster of this environment, or \"*\" on a wildcard SNI route",
        );
    }

    let m = &spec.matcher.value;
    let given = [m.sni.is_some(), m.options_token.is_some(), m.database.is_some()].iter().filter(|&&g| g).count();
    let matcher = if given != 1 {
        problems.error(
            at(&spec.matcher.referenced),
            format!("route {name:?} must match on exactly one of sni, optionsToken, database ({given} given)"),
            "write one route entry per way of reaching the cluster",
        );
        None
    } else if let Some(sni) = &m.sni {
        sni_match(&sni.value).or_else(|| {
            problems.error(
                at(&sni.referenced),
                format!("invalid SNI host {:?}", sni.value),
                "use a lower-case host name, or *.domain with at least two labels after the '*'",
            );
            None
        })
    } else if let Some(token) = &m.options_token {
        let ok = !token.value.is_empty()
            && token.value.len() <= 63
            && token.value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Some(RouteMatch::OptionsToken(token.value.clone()))
        } else {
            problems.error(
                at(&token.referenced),
                format!("invalid options token {:?}", token.value),
                "use lower-case letters, digits, '-' and '_', at most 63 characters",
            );
            None
        }
    } else if let Some(db) = &m.database {
        // PostgreSQL truncates identifiers to 63 bytes; a longer name could never match.
        if db.value.is_empty() || db.value.len() > 63 || db.value.contains('\0') {
            problems.error(at(&db.referenced), format!("invalid database name {:?}", db.value), "database names are 1 to 63 bytes");
            None
        } else {
            Some(RouteMatch::Database(db.value.clone()))
        }
    } else {
        None
    };

    let mut allowed = Vec::new();
    if spec.allowed_cidrs.value.is_empty() {
        problems.error(
            at(&spec.allowed_cidrs.referenced),
            format!("route {name:?} allows no client network"),
            "list the client networks, or 0.0.0.0/0 and ::/0 to allow all",
        );
    }
    for net in &spec.allowed_cidrs.value {
        if net.value.trunc() != net.value {
            problems.error(
                at(&net.referenced),
                format!("CIDR {} has host bits set", net.value),
                format!("did you mean {}?", net.value.trunc()),
            );
        }
        allowed.push(net.value);
    }

    let backend = spec.backend.as_ref().and_then(|b| {
        parse_backend(&b.value).or_else(|| {
            problems.error(
                at(&b.referenced),
                format!("invalid backend address {:?}", b.value),
                "write host:port, e.g. analytics-frontend.rw-analytics.svc:4566",
            );
            None
        })
    });

    if let Some(max) = &spec.max_connections
        && !(1..=MAX_CONNECTIONS_LIMIT).contains(&max.value)
    {
        problems.error(
            at(&max.referenced),
            format!("route {name:?} has maxConnections {}", max.value),
            format!("use 1 to {MAX_CONNECTIONS_LIMIT}, or leave maxConnections out for no limit"),
        );
    }

    if problems.len() != before {
        return (matcher, None);
    }
    let Some(valid_matcher) = matcher.clone() else { return (None, None) };
    let backend_tls = spec.backend_tls.as_ref().map(|t| t.value).unwrap_or_default();
    let route = Route {
        name,
        matcher: valid_matcher,
        cluster: spec.cluster.value.clone(),
        cluster_at: at(&spec.cluster.referenced),
        allowed,
        backend,
        backend_tls,
        max_connections: spec.max_connections.as_ref().map(|m| m.value),
    };
    (matcher, Some(route))
}

fn sni_match(host: &str) -> Option<RouteMatch> {
    if let Some(suffix) = host.strip_prefix("*.") {
        (is_hostname(suffix) && suffix.contains('.')).then(|| RouteMatch::SniWildcard(format!(".{suffix}")))
    } else {
        is_hostname(host).then(|| RouteMatch::SniExact(host.to_owned()))
    }
}

fn parse_backend(text: &str) -> Option<Backend> {
    // `{cluster}` is filled in per connection; check the rest with a stand-in name.
    let (host, port) = text.rsplit_once(':')?;
    let checked = host.replace("{cluster}", "c");
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let bare = checked.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&checked);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (bare.parse::<IpAddr>().is_ok() || is_hostname(bare)).then(|| Backend { host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<RouteTable, Vec<Diagnostic>> {
        let doc = parse_document("routes.yaml", text).map_err(|d| vec![d])?;
        let clusters = TreeClusters { names: ["c", "c1", "c2"].into_iter().map(String::from).collect(), environment: true, complete: true };
        validate(&[("routes.yaml", &doc)], &clusters)
    }

    const HEAD: &str = "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata: {name: default}\nspec:\n  routes:\n";

    #[test]
    fn valid_routes_become_a_sorted_table() {
        let t = table(&format!(
            "{HEAD}    - {{name: b, match: {{sni: '*.sql.example.com'}}, cluster: c1, allowedCidrs: [10.0.0.0/8]}}\n    - {{name: a, match: {{database: dev}}, cluster: c2, allowedCidrs: ['0.0.0.0/0'], backend: '127.0.0.1:5432'}}\n"
        ))
        .unwrap();
        let names: Vec<_> = t.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t.routes[1].matcher, RouteMatch::SniWildcard(".sql.example.com".into()));
        assert_eq!(t.routes[0].backend, Some(Backend { host: "127.0.0.1".into(), port: 5432 }));
        assert!(RouteTable::allows(&t.routes[1], "10.1.2.3".parse().unwrap()));
        assert!(!RouteTable::allows(&t.routes[1], "192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let errs = table(&format!(
            "{HEAD}    - {{name: a, match: {{sni: '*.com'}}, cluster: c1, allowedCidrs: [10.0.0.1/8]}}\n    - {{name: a, match: {{database: x, optionsToken: y}}, cluster: C, allowedCidrs: []}}\n"
        ))
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert!(all.contains("routes.yaml:6:30: error: invalid SNI host \"*.com\""), "{all}");
        assert!(all.contains("host bits set"), "{all}");
        assert!(all.contains("exactly one of sni, optionsToken, database (2 given)"), "{all}");
        assert!(all.contains("invalid cluster name \"C\""), "{all}");
        assert!(all.contains("allows no client network"), "{all}");
    }

    #[test]
    fn cluster_from_sni_needs_a_wildcard_and_backends_may_name_the_cluster() {
        let ok = table(&format!("{HEAD}    - {{name: a, match: {{sni: '*.rw.example.com'}}, cluster: '*', allowedCidrs: [10.0.0.0/8], backend: '{{cluster}}.internal:4566'}}\n")).unwrap();
        assert_eq!(ok.routes[0].cluster, CLUSTER_FROM_SNI);
        assert_eq!(ok.routes[0].backend.as_ref().map(|b| b.host.as_str()), Some("{cluster}.internal"));
        let errs =
            table(&format!("{HEAD}    - {{name: a, match: {{database: dev}}, cluster: '*', allowedCidrs: [10.0.0.0/8]}}\n")).unwrap_err();
        assert!(errs[0].message.contains("takes its cluster from the SNI host but does not match"), "{}", errs[0]);
    }

    #[test]
    fn where_a_route_may_go_depends_on_the_clusters_of_its_tree() {
        let verdict = |route: &str, names: &[&str], environment: bool, complete: bool| {
            let doc = parse_document("routes.yaml", &format!("{HEAD}    - {route}\n")).expect("parses");
            let clusters = TreeClusters { names: names.iter().map(|n| (*n).to_owned()).collect(), environment, complete };
            validate(&[("routes.yaml", &doc)], &clusters).map(|_| ()).map_err(|e| e[0].message.clone())
        };
        let plain = "{name: r, match: {database: d}, cluster: c, allowedCidrs: [10.0.0.0/8]}";
        let backed = "{name: r, match: {database: d}, cluster: c, allowedCidrs: [10.0.0.0/8], backend: '10.0.0.1:5432'}";
        let wildcard = "{name: r, match: {sni: '*.sql.example.com'}, cluster: '*', allowedCidrs: [10.0.0.0/8]}";
        // A routes-only tree: an explicit backend is needed.
        assert_eq!(verdict(backed, &[], false, true), Ok(()));
        assert!(verdict(plain, &[], false, true).is_err_and(|m| m.contains("no RisingWaveCluster in this tree defines")));
        // An environment: the cluster must be one of its own, backend or not.
        assert_eq!(verdict(plain, &["c"], true, true), Ok(()));
        assert!(verdict(backed, &["x"], true, true).is_err_and(|m| m.contains("targets unknown cluster \"c\"")));
        assert!(verdict(backed, &[], true, true).is_err_and(|m| m.contains("targets unknown cluster")));
        // A wildcard reaches the tree's clusters only: with none it could match nothing.
        assert_eq!(verdict(wildcard, &["c"], true, true), Ok(()));
        assert!(verdict(wildcard, &[], false, true).is_err_and(|m| m.contains("tree defines no RisingWaveCluster")));
        // Some file unreadable: which clusters exist is unknown, so nothing is guessed.
        assert_eq!(verdict(backed, &["x"], true, false), Ok(()));
    }

    #[test]
    fn a_route_with_several_problems_reports_each() {
        let errs = table(&format!(
            "{HEAD}    - {{name: a, match: {{database: dev}}, cluster: c1, allowedCidrs: [10.0.0.0/8]}}\n    - {{name: a, match: {{database: dev}}, cluster: C, allowedCidrs: [10.0.0.1/8]}}\n"
        ))
        .unwrap_err();
        let all: Vec<&str> = errs.iter().map(|d| d.message.as_str()).collect();
        for want in ["duplicate route name \"a\"", "matches database dev like route \"a\"", "invalid cluster name \"C\"", "host bits set"] {
            assert!(all.iter().any(|m| m.contains(want)), "missing {want:?} in {all:?}");
        }
    }

    #[test]
    fn two_routes_with_the_same_match_are_refused() {
        let errs = table(&format!(
            "{HEAD}    - {{name: a, match: {{database: dev}}, cluster: c1, allowedCidrs: [10.0.0.0/8]}}\n    - {{name: b, match: {{database: dev}}, cluster: c2, allowedCidrs: [10.0.0.0/8]}}\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("matches database dev like route \"a\""), "{}", errs[0]);
    }

    #[test]
    fn backend_tls_defaults_to_disable_and_names_its_values_when_misspelt() {
        let route = |tls: &str| format!("{HEAD}    - {{name: a, match: {{database: dev}}, cluster: c, allowedCidrs: [10.0.0.0/8]{tls}}}\n");
        assert_eq!(table(&route("")).unwrap().routes[0].backend_tls, BackendTls::Disable);
        assert_eq!(table(&route(", backendTls: verify-full")).unwrap().routes[0].backend_tls, BackendTls::VerifyFull);
        let errs = table(&route(", backendTls: require")).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains("routes.yaml:6") && text.contains("verify-full"), "{text}");
    }

    #[test]
    fn max_connections_is_optional_and_bounded() {
        let route = |max: &str| format!("{HEAD}    - {{name: a, match: {{database: dev}}, cluster: c, allowedCidrs: [10.0.0.0/8]{max}}}\n");
        assert_eq!(table(&route("")).unwrap().routes[0].max_connections, None);
        assert_eq!(table(&route(", maxConnections: 100")).unwrap().routes[0].max_connections, Some(100));
        for bad in ["0", "1000001"] {
            let errs = table(&route(&format!(", maxConnections: {bad}"))).unwrap_err();
            let text = errs[0].to_string();
            assert!(
                text.contains("routes.yaml:6:") && text.contains(&format!("maxConnections {bad}")) && text.contains("1 to 1000000"),
                "{text}"
            );
        }
        assert!(table(&route(", maxConnections: -1")).is_err(), "negative");
        assert!(table(&route(", maxConnections: many")).is_err(), "not a number");
    }
}
