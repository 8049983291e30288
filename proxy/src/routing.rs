//! Route choice: a pure function from the route table and what the client sent to a
//! backend, or a refusal the client may see.
//!
//! Precedence: the TLS SNI host (exact, then `*.domain`), else an options token
//! `cluster=NAME`, else the database name. An SNI route and a token naming another cluster
//! is a conflict and refused. The token is removed before the startup message is forwarded,
//! because RisingWave applies `options` as session settings and fails on unknown ones.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::routes::{
    Backend, BackendTls, CLUSTER_FROM_SNI, OPERATOR_FRONTEND_PORT, Route, RouteMatch, RouteTable, cluster_namespace, frontend_service,
};

/// A route table indexed for lookup.
#[derive(Debug, Default)]
pub struct Router {
    table: RouteTable,
    sni: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    token: HashMap<String, usize>,
    database: HashMap<String, usize>,
}

impl Router {
    /// Indexes a validated table (validation guarantees each match appears once).
    pub fn new(table: RouteTable) -> Self {
        let mut r = Router { table, ..Router::default() };
        for (i, route) in r.table.routes.iter().enumerate() {
            let (map, key) = match &route.matcher {
                RouteMatch::SniExact(h) => (&mut r.sni, h),
                RouteMatch::SniWildcard(s) => (&mut r.wildcard, s),
                RouteMatch::OptionsToken(t) => (&mut r.token, t),
                RouteMatch::Database(d) => (&mut r.database, d),
            };
            map.insert(key.clone(), i);
        }
        r
    }

    /// The table this router was built from.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The route for an SNI host, and the host's first label when a wildcard matched.
    fn by_sni(&self, host: &str) -> Option<(usize, Option<String>)> {
        let host = host.to_ascii_lowercase();
        if let Some(&i) = self.sni.get(&host) {
            return Some((i, None));
        }
        let dot = host.find('.')?;
        let i = *self.wildcard.get(&host[dot..])?;
        Some((i, Some(host[..dot].to_owned())))
    }

    /// The cluster a route sends to: its own, or for `cluster: "*"` the SNI host's first
    /// label, provided it names a cluster of the environment.
    fn cluster_of(&self, index: usize, label: Option<&str>) -> Option<String> {
        let route = &self.table.routes[index];
        if route.cluster != CLUSTER_FROM_SNI {
            return Some(route.cluster.clone());
        }
        label.filter(|l| self.table.clusters.contains(*l)).map(str::to_owned)
    }
}

/// What the proxy knows about a connection when it routes it.
#[derive(Debug)]
pub struct Request<'a> {
    /// SNI host name from the TLS handshake, if any.
    pub sni: Option<&'a str>,
    /// Startup parameters, as sent.
    pub params: &'a [(String, String)],
    /// The client's address (after PROXY protocol, if any).
    pub client: IpAddr,
}

/// Where to send a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Route name.
    pub route: String,
    /// Target cluster.
    pub cluster: String,
    /// Backend address.
    pub backend: Backend,
    /// TLS to the backend.
    pub backend_tls: BackendTls,
    /// Startup parameters to forward (the routing token removed).
    pub params: Vec<(String, String)>,
    /// The route's `maxConnections`.
    pub max_connections: Option<u32>,
}

/// Why a connection is refused; the text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing matched.
    NoRoute,
    /// The SNI host and the options token select different clusters.
    Conflict,
    /// The client's address is not in the route's allowlist.
    NotAllowed,
    /// The options parameter could not be parsed.
    BadOptions,
    /// The route's `maxConnections` sessions are open (decided by the server's count).
    TooManyConnections,
    /// The client's network opened connections faster than `--connect-rate-per-network`.
    RateLimited,
}

impl Refusal {
    /// SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::NoRoute | Refusal::Conflict => "08004",
            Refusal::NotAllowed => "28000",
            Refusal::BadOptions => "08P01",
            // PostgreSQL's own codes, so clients and poolers already treat them as "retry later".
            Refusal::TooManyConnections => "53300",
            Refusal::RateLimited => "53400",
        }
    }

    /// Message sent to the client: says what to fix, reveals nothing about the table.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::NoRoute => {
                "no route for this connection: connect with the cluster's host name, options=cluster=NAME, or a routed database"
            }
            Refusal::Conflict => "the host name and the cluster option name different clusters",
            Refusal::NotAllowed => "connections from this address are not allowed",
            Refusal::BadOptions => "invalid options parameter",
            Refusal::TooManyConnections => "too many connections to this cluster; try again later",
            Refusal::RateLimited => "too many new connections from this network; try again in a moment",
        }
    }

    /// Fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::Conflict => "conflict",
            Refusal::NotAllowed => "not_allowed",
            Refusal::BadOptions => "bad_options",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// Chooses the route for a connection.
pub fn choose(router: &Router, req: &Request<'_>) -> Result<Decision, Refusal> {
    let options = req.params.iter().find(|(k, _)| k == "options").map(|(_, v)| v.as_str());
    let (token, rest_options) = match options {
        Some(o) => split_token(o).ok_or(Refusal::BadOptions)?,
        None => (None, None),
    };
    // An SNI match counts only if it leads to a cluster (a wildcard's label may not).
    let by_sni = req.sni.and_then(|h| router.by_sni(h)).and_then(|(i, label)| Some((i, router.cluster_of(i, label.as_deref())?)));
    let by_token = match &token {
        Some(t) => {
            let i = *router.token.get(t.as_str()).ok_or(Refusal::NoRoute)?;
            Some((i, router.cluster_of(i, None).ok_or(Refusal::NoRoute)?))
        }
        None => None,
    };
    let (index, cluster) = match (by_sni, by_token) {
        (Some((_, a)), Some((_, b))) if a != b => return Err(Refusal::Conflict),
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            let user = req.params.iter().find(|(k, _)| k == "user").map(|(_, v)| v.as_str());
            // Like PostgreSQL: the database defaults to the user name.
            let db = req.params.iter().find(|(k, _)| k == "database").map(|(_, v)| v.as_str()).or(user);
            let i = *db.and_then(|d| router.database.get(d)).ok_or(Refusal::NoRoute)?;
            (i, router.cluster_of(i, None).ok_or(Refusal::NoRoute)?)
        }
    };
    let route = &router.table.routes[index];
    if !RouteTable::allows(route, req.client) {
        return Err(Refusal::NotAllowed);
    }
    // Forwarded as sent, unless the token is to be taken out of `options`.
    let params = match token {
        None => req.params.to_vec(),
        Some(_) => {
            let mut params: Vec<(String, String)> = req.params.iter().filter(|(k, _)| k != "options").cloned().collect();
            if let Some(rest) = rest_options {
                params.push(("options".to_owned(), rest));
            }
            params
        }
    };
    let backend = backend_of(route, &cluster);
    Ok(Decision {
        route: route.name.clone(),
        cluster,
        backend,
        backend_tls: route.backend_tls,
        params,
        max_connections: route.max_connections,
    })
}

/// The backend of a route for `cluster`: explicit (with `{cluster}` filled in), or the
/// frontend Service the risingwave-operator made for the cluster.
pub fn backend_of(route: &Route, cluster: &str) -> Backend {
    match &route.backend {
        // Most hosts have no placeholder; looking for its brace is cheaper than `replace`.
        Some(b) if !b.host.contains('{') => Backend { host: b.host.clone(), port: b.port },
        Some(b) => Backend { host: b.host.replace("{cluster}", cluster), port: b.port },
        None => Backend {
            host: format!("{}.{}.svc.cluster.local", frontend_service(cluster), cluster_namespace(cluster)),
            port: OPERATOR_FRONTEND_PORT,
        },
    }
}

/// Splits libpq's `options` (space-separated, `\` escapes) into the routing token's value
/// and the remaining options (re-escaped), `None` when nothing remains.
fn split_token(options: &str) -> Option<(Option<String>, Option<String>)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(chars.next()?);
                in_word = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut token = None;
    let mut rest = Vec::new();
    for w in words {
        match w.strip_prefix("cluster=") {
            Some(value) if token.is_none() => token = Some(value.to_owned()),
            // Two tokens: ambiguous, refuse rather than pick one.
            Some(_) => return None,
            None => rest.push(w.replace('\\', "\\\\").replace(' ', "\\ ")),
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join(" "));
    Some((token, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Position;

    fn route(name: &str, matcher: RouteMatch, cluster: &str, allowed: &str) -> Route {
        Route {
            name: name.into(),
            matcher,
            cluster: cluster.into(),
            cluster_at: Position::file("routes.yaml"),
            allowed: vec![allowed.parse().unwrap()],
            backend: Some(Backend { host: format!("{cluster}.internal"), port: 4566 }),
            backend_tls: BackendTls::Disable,
            max_connections: None,
        }
    }

    #[test]
    fn a_route_without_a_backend_dials_the_operators_frontend_service() {
        let r = Route { backend: None, ..route("r", RouteMatch::Database("d".into()), "analytics", "0.0.0.0/0") };
        // The risingwave-operator names it `<name>-frontend` and serves it on port 4567.
        assert_eq!(backend_of(&r, "analytics"), Backend { host: "analytics-frontend.rw-analytics.svc.cluster.local".into(), port: 4567 });
    }

    fn router() -> Router {
        Router::new(RouteTable {
            routes: vec![
                route("a-sni", RouteMatch::SniExact("a.sql.example.com".into()), "a", "0.0.0.0/0"),
                route("wild", RouteMatch::SniWildcard(".dev.example.com".into()), "b", "0.0.0.0/0"),
                route("b-token", RouteMatch::OptionsToken("b".into()), "b", "0.0.0.0/0"),
                route("a-token", RouteMatch::OptionsToken("a".into()), "a", "0.0.0.0/0"),
                route("c-db", RouteMatch::Database("cdb".into()), "c", "10.0.0.0/8"),
                Route {
                    backend: Some(Backend { host: "{cluster}.rw.internal".into(), port: 4566 }),
                    ..route("by-label", RouteMatch::SniWildcard(".rw.example.com".into()), CLUSTER_FROM_SNI, "0.0.0.0/0")
                },
            ],
            clusters: ["a", "b", "c"].into_iter().map(String::from).collect(),
        })
    }

    type Params = Vec<(String, String)>;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn table_of_cases() {
        let r = router();
        let lan: IpAddr = "10.1.1.1".parse().unwrap();
        let wan: IpAddr = "203.0.113.9".parse().unwrap();
        struct Case<'a> {
            sni: Option<&'a str>,
            params: Params,
            client: IpAddr,
            want: Result<(&'a str, Params), Refusal>,
        }
        let cases = [
            Case {
                sni: Some("A.sql.example.com"),
                params: params(&[("user", "u")]),
                client: wan,
                want: Ok(("a-sni", params(&[("user", "u")]))),
            },
            Case {
                sni: Some("x.dev.example.com"),
                params: params(&[("user", "u")]),
                client: wan,
                want: Ok(("wild", params(&[("user", "u")]))),
            },
            Case { sni: Some("x.y.dev.example.com"), params: params(&[("user", "u")]), client: wan, want: Err(Refusal::NoRoute) },
            Case {
                sni: None,
                params: params(&[("user", "u"), ("options", "cluster=b -c search_path=x")]),
                client: wan,
                want: Ok(("b-token", params(&[("user", "u"), ("options", "-c search_path=x")]))),
            },
            Case {
                sni: None,
                params: params(&[("user", "u"), ("options", "cluster=b")]),
                client: wan,
                want: Ok(("b-token", params(&[("user", "u")]))),
            },
            Case {
                sni: Some("a.sql.example.com"),
                params: params(&[("user", "u"), ("options", "cluster=a")]),
                client: wan,
                want: Ok(("a-sni", params(&[("user", "u")]))),
            },
            Case {
                sni: Some("a.sql.example.com"),
                params: params(&[("user", "u"), ("options", "cluster=b")]),
                client: wan,
                want: Err(Refusal::Conflict),
            },
            Case { sni: None, params: params(&[("user", "u"), ("options", "cluster=zzz")]), client: wan, want: Err(Refusal::NoRoute) },
            Case {
                sni: None,
                params: params(&[("user", "u"), ("options", "cluster=a cluster=b")]),
                client: wan,
                want: Err(Refusal::BadOptions),
            },
            Case {
                sni: None,
                params: params(&[("user", "u"), ("database", "cdb")]),
                client: lan,
                want: Ok(("c-db", params(&[("user", "u"), ("database", "cdb")]))),
            },
            Case { sni: None, params: params(&[("user", "cdb")]), client: lan, want: Ok(("c-db", params(&[("user", "cdb")]))) },
            Case { sni: None, params: params(&[("user", "u"), ("database", "cdb")]), client: wan, want: Err(Refusal::NotAllowed) },
            Case {
                sni: Some("unknown.example.org"),
                params: params(&[("user", "u"), ("database", "cdb")]),
                client: lan,
                want: Ok(("c-db", params(&[("user", "u"), ("database", "cdb")]))),
            },
            Case { sni: None, params: params(&[("user", "u"), ("database", "nope")]), client: lan, want: Err(Refusal::NoRoute) },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let got = choose(&r, &Request { sni: c.sni, params: &c.params, client: c.client }).map(|d| (d.route, d.params));
            let want = c.want.map(|(n, p)| (n.to_owned(), p));
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn a_wildcards_first_label_names_a_known_cluster() {
        let r = router();
        let wan: IpAddr = "203.0.113.9".parse().unwrap();
        let p = params(&[("user", "u")]);
        let go = |sni: &str, p: &[(String, String)]| choose(&r, &Request { sni: Some(sni), params: p, client: wan });
        let d = go("b.rw.example.com", &p).unwrap();
        assert_eq!((d.route.as_str(), d.cluster.as_str(), d.backend.host.as_str()), ("by-label", "b", "b.rw.internal"));
        // A label that is not a cluster of the environment: no route, and nothing dialled.
        assert_eq!(go("evil.rw.example.com", &p), Err(Refusal::NoRoute));
        // The token must agree with the label.
        assert_eq!(go("a.rw.example.com", &params(&[("user", "u"), ("options", "cluster=b")])), Err(Refusal::Conflict));
        assert_eq!(go("b.rw.example.com", &params(&[("user", "u"), ("options", "cluster=b")])).unwrap().cluster, "b");
    }

    #[test]
    fn options_are_re_escaped() {
        assert_eq!(split_token(r"cluster=a -c x=a\ b"), Some((Some("a".into()), Some(r"-c x=a\ b".into()))));
        assert_eq!(split_token("  "), Some((None, None)));
        assert_eq!(split_token("trailing\\"), None);
    }
}
