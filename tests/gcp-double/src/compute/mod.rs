//! Compute Engine v1: networks, subnetworks, firewalls, routers and their operations.
//!
//! Reproduced from the reference (<https://cloud.google.com/compute/docs/reference/rest/v1>):
//! - names are RFC 1035, 1-63 characters (`naming-resources#resource-name-format`); a region
//!   GCP does not have is 400 (`/compute/docs/regions-zones`);
//! - insert of a taken name: 409 `alreadyExists`; a missing resource: 404 `notFound`;
//! - a field the resource does not have (e.g. `labels` on a network, subnetwork, firewall or
//!   router, none of which has labels in v1): 400 "Invalid JSON payload received. Unknown
//!   name";
//! - a mutation repeated with the same `requestId` answers the first one's operation and
//!   changes nothing more (no 409 for a retried insert);
//! - every mutation answers an Operation (`compute#operation`, `PENDING` -> `RUNNING` ->
//!   `DONE`), and the change is visible only once it is DONE (`globalOperations/get`,
//!   `regionOperations/get`, `.../wait`);
//! - `subnetworks.patch` needs the current `fingerprint`: a stale one is 412
//!   `conditionNotMet`; `ipCidrRange`, `network`, `purpose` cannot be patched (400);
//! - a subnetwork whose primary or secondary range overlaps a range of another subnetwork of
//!   the same network: a failed operation (below); ranges overlapping each other within
//!   the subnetwork, or with host bits set: 400; a `PRIVATE_SERVICE_CONNECT` subnetwork with
//!   secondary ranges: 400;
//! - a firewall needs exactly one of `allowed`/`denied`, `direction` INGRESS or EGRESS,
//!   `priority` 0-65535, valid CIDRs; EGRESS takes no source tags;
//! - a router's NATs: unique RFC 1035 names, `natIpAllocateOption` AUTO_ONLY or MANUAL_ONLY,
//!   `LIST_OF_SUBNETWORKS` naming existing subnetworks of the router's region;
//! - the referenced network of a subnetwork, firewall or router must exist (404);
//! - deleting a network still used by a subnetwork, firewall or router, or a subnetwork still
//!   named by a router's NAT or a GKE cluster: the operation ends DONE with
//!   `error.errors[].code` `RESOURCE_IN_USE_BY_ANOTHER_RESOURCE` (and `httpErrorStatusCode`
//!   400) and nothing is deleted; likewise a range conflicting with another subnetwork's
//!   (code `INVALID_USAGE`): Compute reports these through the operation, not the request.

use serde_json::{Value, json};

use crate::error::ApiError;

mod rules;
use crate::names::check_name;
use crate::state::{Effect, OpKind, State, now};
use crate::{Reply, Req};
use rules::validate;

/// Where self links point, as the real API writes them.
pub const BASE: &str = "https://www.googleapis.com/compute/v1/";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Network,
    Subnetwork,
    Firewall,
    Router,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Network => "networks",
            Kind::Subnetwork => "subnetworks",
            Kind::Firewall => "firewalls",
            Kind::Router => "routers",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Network => "compute#network",
            Kind::Subnetwork => "compute#subnetwork",
            Kind::Firewall => "compute#firewall",
            Kind::Router => "compute#router",
        }
    }

    /// The fields of the v1 resource (google-cloud-compute-v1's model), so an unknown one is
    /// refused as the real API's JSON parser refuses it.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Network => &[
                "IPv4Range",
                "autoCreateSubnetworks",
                "creationTimestamp",
                "description",
                "enableUlaInternalIpv6",
                "firewallPolicy",
                "gatewayIPv4",
                "id",
                "internalIpv6Range",
                "kind",
                "mtu",
                "name",
                "networkFirewallPolicyEnforcementOrder",
                "networkProfile",
                "params",
                "peerings",
                "routingConfig",
                "selfLink",
                "selfLinkWithId",
                "subnetworks",
            ],
            Kind::Subnetwork => &[
                "allowSubnetCidrRoutesOverlap",
                "creationTimestamp",
                "description",
                "enableFlowLogs",
                "externalIpv6Prefix",
                "fingerprint",
                "gatewayAddress",
                "id",
                "internalIpv6Prefix",
                "ipCidrRange",
                "ipCollection",
                "ipv6AccessType",
                "ipv6CidrRange",
                "ipv6GceEndpoint",
                "kind",
                "logConfig",
                "name",
                "network",
                "params",
                "privateIpGoogleAccess",
                "privateIpv6GoogleAccess",
                "purpose",
                "region",
                "reservedInternalRange",
                "resolveSubnetMask",
                "role",
                "secondaryIpRanges",
                "selfLink",
                "stackType",
                "state",
                "systemReservedExternalIpv6Ranges",
                "systemReservedInternalIpv6Ranges",
                "utilizationDetails",
            ],
            Kind::Firewall => &[
                "allowed",
                "creationTimestamp",
                "denied",
                "description",
                "destinationRanges",
                "direction",
                "disabled",
                "id",
                "kind",
                "logConfig",
                "name",
                "network",
                "params",
                "priority",
                "selfLink",
                "sourceRanges",
                "sourceServiceAccounts",
                "sourceTags",
                "targetServiceAccounts",
                "targetTags",
            ],
            Kind::Router => &[
                "bgp",
                "bgpPeers",
                "creationTimestamp",
                "description",
                "encryptedInterconnectRouter",
                "id",
                "interfaces",
                "kind",
                "md5AuthenticationKeys",
                "name",
                "nats",
                "nccGateway",
                "network",
                "params",
                "region",
                "selfLink",
            ],
        }
    }
}

/// `projects/P/global/networks` or `projects/P/regions/R/subnetworks`.
fn collection(project: &str, region: Option<&str>, kind: Kind) -> String {
    match region {
        Some(r) => format!("projects/{project}/regions/{r}/{}", kind.plural()),
        None => format!("projects/{project}/global/{}", kind.plural()),
    }
}

/// The stored key (collection, name) of a reference to a Compute resource, given as a full
/// URL, `projects/P/...`, or `global/...`/`regions/R/...`.
pub(crate) fn reference(project: &str, link: &str) -> Option<(String, String)> {
    let tail = match link.find("/compute/v1/") {
        Some(i) => &link[i + "/compute/v1/".len()..],
        None => link,
    };
    let path = if tail.starts_with("projects/") { tail.to_owned() } else { format!("projects/{project}/{tail}") };
    let (coll, name) = path.rsplit_once('/')?;
    Some((coll.to_owned(), name.to_owned()))
}

fn self_link(coll: &str, name: &str) -> String {
    format!("{BASE}{coll}/{name}")
}

/// Routes `/compute/v1/projects/{project}/{rest}`.
pub(crate) fn route(state: &mut State, req: &Req, project: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let m = &req.method;
    match rest {
        ["global", "operations", op] if m == M::GET => poll(state, &format!("projects/{project}/global/operations/{op}")),
        ["global", "operations", op, "wait"] if m == M::POST => poll(state, &format!("projects/{project}/global/operations/{op}")),
        ["regions", r, "operations", op] if m == M::GET => poll(state, &format!("projects/{project}/regions/{r}/operations/{op}")),
        ["regions", r, "operations", op, "wait"] if m == M::POST => poll(state, &format!("projects/{project}/regions/{r}/operations/{op}")),
        ["global", plural] | ["global", plural, _] => {
            let kind = match *plural {
                "networks" => Kind::Network,
                "firewalls" => Kind::Firewall,
                _ => return Err(unserved(req)),
            };
            resource(state, req, project, None, kind, rest.get(2).copied())
        }
        ["regions", region, plural] | ["regions", region, plural, _] => {
            crate::names::check_location("region", region)?;
            let kind = match *plural {
                "subnetworks" => Kind::Subnetwork,
                "routers" => Kind::Router,
                _ => return Err(unserved(req)),
            };
            resource(state, req, project, Some(region), kind, rest.get(3).copied())
        }
        _ => Err(unserved(req)),
    }
}

fn unserved(req: &Req) -> ApiError {
    ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/")))
}

fn poll(state: &mut State, key: &str) -> Result<Reply, ApiError> {
    state.poll_operation(key, key).and_then(Reply::read)
}

fn resource(state: &mut State, req: &Req, project: &str, region: Option<&str>, kind: Kind, name: Option<&str>) -> Result<Reply, ApiError> {
    use http::Method as M;
    let coll = collection(project, region, kind);
    // A mutation repeated with the same `requestId` answers the operation the first one
    // started and does nothing more ("the server ignores the request if it has already been
    // completed", the `requestId` parameter of every Compute mutation).
    let request_id = req.param("requestId").filter(|_| req.method != M::GET).map(|r| format!("{project}/{r}"));
    if let Some(id) = &request_id
        && let Some(op) = state.request_ids.get(id).and_then(|key| state.operations.get(key))
    {
        // Still a mutating request answered 2xx, so it counts in `writes()`.
        return Reply::write(op.json.clone());
    }
    let reply = resource_call(state, req, project, region, kind, name, &coll)?;
    if let (Some(id), Some(link)) = (request_id, reply.body.get("selfLink").and_then(Value::as_str)) {
        let key = link.find("projects/").map(|i| link[i..].to_owned()).unwrap_or_default();
        state.request_ids.insert(id, key);
    }
    Ok(reply)
}

fn resource_call(
    state: &mut State,
    req: &Req,
    project: &str,
    region: Option<&str>,
    kind: Kind,
    name: Option<&str>,
    coll: &str,
) -> Result<Reply, ApiError> {
    use http::Method as M;
    let coll = coll.to_owned();
    match (&req.method, name) {
        (m, None) if m == M::GET => list(state, req, &coll, kind),
        (m, None) if m == M::POST => insert(state, req, project, region, kind, &coll),
        (m, Some(n)) if m == M::GET => {
            let v = state.get(&coll, n).cloned().ok_or_else(|| ApiError::not_found(&format!("{coll}/{n}")))?;
            Reply::read(present(state, kind, v))
        }
        (m, Some(n)) if m == M::PATCH || (m == M::PUT && kind != Kind::Network && kind != Kind::Subnetwork) => {
            change(state, req, project, region, kind, &coll, n, m == M::PUT)
        }
        (m, Some(n)) if m == M::DELETE => delete(state, project, region, kind, &coll, n),
        _ => Err(unserved(req)),
    }
}

/// Fields the API computes when it answers (a network's subnetworks).
fn present(state: &State, kind: Kind, mut v: Value) -> Value {
    if kind == Kind::Network
        && let Some(link) = v.get("selfLink").and_then(Value::as_str).map(str::to_owned)
    {
        let subnets: Vec<Value> = state
            .all_of("subnetworks")
            .into_iter()
            .filter(|(_, _, s)| s.get("network").and_then(Value::as_str) == Some(link.as_str()))
            .filter_map(|(_, _, s)| s.get("selfLink").cloned())
            .collect();
        if !subnets.is_empty() {
            v["subnetworks"] = Value::Array(subnets);
        }
    }
    v
}

fn list(state: &State, req: &Req, coll: &str, kind: Kind) -> Result<Reply, ApiError> {
    let wanted = req.param("filter").map(NameFilter::parse).transpose()?.flatten();
    let items: Vec<Value> = state
        .list(coll)
        .into_iter()
        .filter(|v| wanted.as_ref().is_none_or(|w| w.keeps(v.get("name").and_then(Value::as_str).unwrap_or_default())))
        .map(|v| present(state, kind, v))
        .collect();
    let (items, next) = crate::page(items, req.param("maxResults"), req.param("pageToken"))?;
    let mut body = json!({"kind": format!("{}List", kind.kind()), "id": coll, "selfLink": format!("{BASE}{coll}")});
    if !items.is_empty() {
        body["items"] = Value::Array(items);
    }
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    Reply::read(body)
}

/// A list filter on `name`, as Compute reads it
/// (<https://cloud.google.com/compute/docs/reference/rest/v1/networks/list>): `name = "x"` and
/// `name != "x"` compare literally, `name eq x` and `name ne x` match an RE2 regular
/// expression against the whole name. Other filters are refused (400), so a test never
/// silently gets an unfiltered list.
enum NameFilter {
    Is(String, bool),
    Matches(regex::Regex, bool),
}

impl NameFilter {
    fn parse(filter: &str) -> Result<Option<NameFilter>, ApiError> {
        let f = filter.trim().trim_start_matches('(').trim_end_matches(')').trim();
        if f.is_empty() {
            return Ok(None);
        }
        let refused =
            || ApiError::invalid(format!("Invalid list filter expression {filter:?}: the fake filters only on name (=, !=, eq, ne)."));
        let rest = f.strip_prefix("name").map(str::trim_start).ok_or_else(refused)?;
        let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
        if let Some(v) = rest.strip_prefix("!=") {
            return Ok(Some(NameFilter::Is(unquote(v), false)));
        }
        if let Some(v) = rest.strip_prefix('=') {
            return Ok(Some(NameFilter::Is(unquote(v), true)));
        }
        let (v, want) = match (rest.strip_prefix("eq "), rest.strip_prefix("ne ")) {
            (Some(v), _) => (v, true),
            (_, Some(v)) => (v, false),
            _ => return Err(refused()),
        };
        let re = regex::Regex::new(&format!("^(?:{})$", unquote(v)))
            .map_err(|e| ApiError::invalid(format!("Invalid regular expression in filter {filter:?}: {e}")))?;
        Ok(Some(NameFilter::Matches(re, want)))
    }

    fn keeps(&self, name: &str) -> bool {
        match self {
            NameFilter::Is(v, want) => (name == v) == *want,
            NameFilter::Matches(re, want) => re.is_match(name) == *want,
        }
    }
}

fn check_fields(kind: Kind, body: &Value) -> Result<(), ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::invalid("Invalid JSON payload received. The request body must be an object."));
    };
    for key in map.keys() {
        if !kind.fields().contains(&key.as_str()) {
            return Err(ApiError::invalid(format!(
                "Invalid JSON payload received. Unknown name \"{key}\" at 'resource': Cannot find field."
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn operation(
    state: &mut State,
    project: &str,
    region: Option<&str>,
    op_type: &str,
    target: &str,
    target_id: &str,
    effects: Vec<Effect>,
    failure: Option<(String, String)>,
) -> Value {
    let name = format!("operation-{}-{:016x}", jiff::Timestamp::now().as_millisecond(), state.random());
    let op_coll = match region {
        Some(r) => format!("projects/{project}/regions/{r}/operations"),
        None => format!("projects/{project}/global/operations"),
    };
    let mut json = json!({
        "kind": "compute#operation",
        "id": state.id(),
        "name": name,
        "operationType": op_type,
        "targetLink": target,
        "targetId": target_id,
        "user": "byoc@gcp-double.fake",
        "progress": 0,
        "insertTime": now(),
        "selfLink": format!("{BASE}{op_coll}/{name}"),
    });
    if let Some(r) = region {
        json["region"] = json!(format!("{BASE}projects/{project}/regions/{r}"));
    }
    state.start_operation(format!("{op_coll}/{name}"), OpKind::Compute, json, effects, failure)
}

fn insert(state: &mut State, req: &Req, project: &str, region: Option<&str>, kind: Kind, coll: &str) -> Result<Reply, ApiError> {
    let mut body = req.body.clone();
    check_fields(kind, &body)?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    check_name("resource.name", &name, 63)?;
    if state.get(coll, &name).is_some() || state.pending_put(coll, &name) {
        return Err(ApiError::already_exists(&format!("{coll}/{name}")));
    }
    let failure = deferred(validate(state, project, region, kind, &name, &mut body))?;
    let id = state.id();
    let link = self_link(coll, &name);
    body["id"] = json!(id);
    body["kind"] = json!(kind.kind());
    body["selfLink"] = json!(link);
    body["creationTimestamp"] = json!(now());
    if let Some(r) = region {
        body["region"] = json!(format!("{BASE}projects/{project}/regions/{r}"));
    }
    if kind == Kind::Subnetwork {
        body["fingerprint"] = json!(state.fingerprint());
    }
    let effects = vec![Effect::Put { collection: coll.to_owned(), name: name.clone(), value: body }];
    Reply::write(operation(state, project, region, "insert", &link, &id, effects, failure))
}

#[allow(clippy::too_many_arguments)]
fn change(
    state: &mut State,
    req: &Req,
    project: &str,
    region: Option<&str>,
    kind: Kind,
    coll: &str,
    name: &str,
    replace: bool,
) -> Result<Reply, ApiError> {
    let current = state.get(coll, name).cloned().ok_or_else(|| ApiError::not_found(&format!("{coll}/{name}")))?;
    check_fields(kind, &req.body)?;
    if kind == Kind::Subnetwork {
        let sent = req.body.get("fingerprint").and_then(Value::as_str);
        match sent {
            None => {
                return Err(ApiError::invalid(
                    "Invalid value for field 'resource.fingerprint': ''. Fingerprint is required to patch a subnetwork.",
                ));
            }
            Some(fp) if Some(fp) != current.get("fingerprint").and_then(Value::as_str) => {
                return Err(ApiError::condition_not_met(format!(
                    "Supplied fingerprint does not match current fingerprint of '{coll}/{name}'; get the subnetwork again and retry."
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(sent) = req.body.get("name").and_then(Value::as_str)
        && sent != name
    {
        return Err(ApiError::invalid(format!("Invalid value for field 'resource.name': '{sent}'. The name cannot be changed.")));
    }
    let mut next = if replace {
        let mut v = req.body.clone();
        v["name"] = json!(name);
        v
    } else {
        let mut v = current.clone();
        crate::state::merge_patch(&mut v, &req.body);
        v
    };
    for (field, immutable) in [("network", true), ("ipCidrRange", kind == Kind::Subnetwork), ("purpose", kind == Kind::Subnetwork)] {
        let sent = req.body.get(field);
        if immutable && sent.is_some() && !same_ref(project, sent, current.get(field)) {
            return Err(ApiError::invalid(format!("Invalid value for field 'resource.{field}': it cannot be changed by {}.", req.method)));
        }
    }
    let failure = deferred(validate(state, project, region, kind, name, &mut next))?;
    for keep in ["id", "kind", "selfLink", "creationTimestamp", "region", "network"] {
        if let Some(v) = current.get(keep) {
            next[keep] = v.clone();
        }
    }
    if kind == Kind::Subnetwork {
        next["fingerprint"] = json!(state.fingerprint());
    }
    let id = current.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let link = self_link(coll, name);
    let effects = vec![Effect::Put { collection: coll.to_owned(), name: name.to_owned(), value: next }];
    let op_type = if replace { "update" } else { "patch" };
    Reply::write(operation(state, project, region, op_type, &link, &id, effects, failure))
}

/// Splits a validation result into a refusal of the request and a failure the operation
/// reports at DONE ([`crate::error::IN_OPERATION`]).
fn deferred(result: Result<(), ApiError>) -> Result<Option<(String, String)>, ApiError> {
    match result {
        Ok(()) => Ok(None),
        Err(e) if e.reason == crate::error::IN_OPERATION => Ok(Some(("INVALID_USAGE".to_owned(), e.message))),
        Err(e) => Err(e),
    }
}

fn same_ref(project: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a.and_then(Value::as_str), b.and_then(Value::as_str)) {
        (Some(a), Some(b)) => a == b || (a.contains('/') && reference(project, a) == reference(project, b)),
        (a, b) => a == b,
    }
}

fn delete(state: &mut State, project: &str, region: Option<&str>, kind: Kind, coll: &str, name: &str) -> Result<Reply, ApiError> {
    let current = state.get(coll, name).cloned().ok_or_else(|| ApiError::not_found(&format!("{coll}/{name}")))?;
    let link = self_link(coll, name);
    let users: Vec<String> = match kind {
        Kind::Network => ["subnetworks", "firewalls", "routers"]
            .iter()
            .flat_map(|p| state.all_of(p))
            .filter(|(_, _, v)| v.get("network").and_then(Value::as_str) == Some(link.as_str()))
            .map(|(c, n, _)| format!("projects/{}", c.split_once("projects/").map_or(c.as_str(), |x| x.1)) + "/" + &n)
            .collect(),
        Kind::Subnetwork => {
            let mut users: Vec<String> = state
                .all_of("routers")
                .into_iter()
                .filter(|(_, _, r)| {
                    r.get("nats").and_then(Value::as_array).into_iter().flatten().any(|nat| {
                        nat.get("subnetworks")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .any(|s| s.get("name").and_then(Value::as_str) == Some(link.as_str()))
                    })
                })
                .map(|(c, n, _)| format!("{c}/{n}"))
                .collect();
            users.extend(
                state
                    .all_of("clusters")
                    .into_iter()
                    .filter(|(_, _, c)| {
                        c.get("subnetwork")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s == name || reference(project, s).is_some_and(|(sc, sn)| sc == coll && sn == name))
                    })
                    .map(|(c, n, _)| format!("{c}/{n}")),
            );
            users
        }
        Kind::Firewall | Kind::Router => Vec::new(),
    };
    // Compute reports a deletion of something in use through the operation (Terraform's
    // "Error waiting for Deleting Network: The network resource ... is already being used
    // by ..."), with the code RESOURCE_IN_USE_BY_ANOTHER_RESOURCE.
    let failure = users.first().map(|user| {
        ("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE".to_owned(), format!("The resource '{coll}/{name}' is already being used by '{user}'"))
    });
    let id = current.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let effects = vec![Effect::Delete { collection: coll.to_owned(), name: name.to_owned() }];
    Reply::write(operation(state, project, region, "delete", &link, &id, effects, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_every_form_name_one_resource() {
        let want = Some(("projects/p/global/networks".to_owned(), "n".to_owned()));
        for link in
            ["https://www.googleapis.com/compute/v1/projects/p/global/networks/n", "projects/p/global/networks/n", "global/networks/n"]
        {
            assert_eq!(reference("p", link), want, "{link}");
        }
    }
}
