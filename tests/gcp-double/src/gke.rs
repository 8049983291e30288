//! GKE (container v1): clusters, node pools and their operations.
//!
//! Reproduced from the reference (<https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters>):
//! - cluster names are RFC 1035, at most 40 characters; node pool names likewise;
//! - a taken name: 409 `ALREADY_EXISTS`; a node pool of a missing cluster, or anything
//!   missing: 404 `NOT_FOUND`;
//! - a cluster needs node pools or an `initialNodeCount` (or Autopilot): 400;
//! - its `network`/`subnetwork` must exist in Compute (404), the subnetwork in the cluster's
//!   region, not of purpose `PRIVATE_SERVICE_CONNECT` (400), and the secondary ranges named by
//!   `ipAllocationPolicy` must be ranges of that subnetwork (400);
//! - `workloadIdentityConfig.workloadPool` must be `{project}.svc.id.goog` (400);
//! - the location must be a GCP region or zone (400 `Location "X" does not exist.`, also on a list); `resourceLabels` of clusters and node
//!   pools follow GCP's label rules (keys start with a lowercase letter, 63 characters at
//!   most, lowercase letters, digits, `_`, `-`; 400 otherwise);
//! - `labels` is not a Cluster field (it has `resourceLabels`): 400 unknown name;
//! - `clusters.update` takes exactly one `desired*` field (`ClusterUpdate`: "Exactly one
//!   update can be applied to a cluster with each request"): 400 otherwise;
//! - while an operation on a cluster (or one of its node pools) runs, another mutation of it
//!   is 400 `FAILED_PRECONDITION` ("incompatible operation"), as GKE serializes them;
//! - a cluster is `PROVISIONING` from its create until the operation is DONE, then `RUNNING`
//!   with `endpoint`, `masterAuth.clusterCaCertificate` and `currentMasterVersion` filled
//!   in; a deleted one is `STOPPING` until DONE. Node pools likewise.
//! - `setResourceLabels` needs the current `labelFingerprint`: otherwise 400
//!   `FAILED_PRECONDITION` "Labels could not be set due to fingerprint mismatch" (the
//!   message GKE gives, e.g. terraform-provider-google issue 5608);
//! - `operations.list` answers the location's operations (running and done); only a get
//!   of one advances it (the fake has no clock), so a caller that finds a running one
//!   polls it to DONE as it would wait on GKE;
//! - `setSize` (recorded per pool in the collection [`SIZES`] under the cluster, as node
//!   counts are not a field of NodePool; the cluster's `currentNodeCount` is their sum) and `setAutoscaling` (min <= max, else 400).

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::compute;
use crate::error::ApiError;
use crate::names::{check_labels, check_name};
use crate::state::{Effect, OpKind, State, now};
use crate::{Reply, Req};

const BASE: &str = "https://container.googleapis.com/v1/";
/// The Kubernetes version every cluster and node pool reports.
pub const VERSION: &str = "1.33.5-gke.1000000";

fn fields_refused(body: &Value, what: &str) -> Result<(), ApiError> {
    if body.get("labels").is_some() {
        return Err(ApiError::invalid(format!("Invalid JSON payload received. Unknown name \"labels\" at '{what}': Cannot find field.")));
    }
    Ok(())
}

/// Routes `/v1/projects/{project}/locations/{location}/{rest}`.
pub(crate) fn route(state: &mut State, req: &Req, project: &str, location: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let m = &req.method;
    // GKE answers a location it does not have with 400 INVALID_ARGUMENT
    // `Location "X" does not exist.` (as gcloud prints it: "ResponseError: code=400,
    // message=Location ... does not exist."), on a list as on anything under it.
    if location != "-" && !crate::names::location_ok(location) {
        return Err(ApiError::invalid(format!("Location \"{location}\" does not exist.")));
    }
    let clusters = format!("projects/{project}/locations/{location}/clusters");
    match rest {
        ["operations", op] if m == M::GET => {
            let key = format!("projects/{project}/locations/{location}/operations/{op}");
            state.poll_operation(&key, &key).and_then(Reply::read)
        }
        ["operations"] if m == M::GET => {
            // `projects.locations.operations.list`: every operation of the location (of
            // all, for `-`), running or done, as they are; listing advances none.
            let prefix = if location == "-" {
                format!("projects/{project}/locations/")
            } else {
                format!("projects/{project}/locations/{location}/operations/")
            };
            let items: Vec<Value> = state
                .operations
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && k.contains("/operations/"))
                .map(|(_, o)| o.json.clone())
                .collect();
            Reply::read(json!({"operations": items}))
        }
        ["clusters"] if m == M::GET => {
            // Location `-` lists the clusters of every location, as GKE does.
            let colls: Vec<String> = if location == "-" {
                let prefix = format!("projects/{project}/locations/");
                state.collections.keys().filter(|c| c.starts_with(&prefix) && c.ends_with("/clusters")).cloned().collect()
            } else {
                vec![clusters.clone()]
            };
            let items: Vec<Value> =
                colls.iter().flat_map(|coll| state.list(coll).into_iter().map(|c| present(state, coll, c)).collect::<Vec<_>>()).collect();
            Reply::read(json!({"clusters": items}))
        }
        ["clusters"] if m == M::POST => create_cluster(state, req, project, location, &clusters),
        [first, _, ..] if *first == "clusters" => {
            // `clusters/{c}`, `clusters/{c}:verb`, `clusters/{c}/nodePools[/{np}[:verb]]`.
            let (cluster, verb) = split_verb(rest.get(1).copied().unwrap_or_default());
            let cluster_key = format!("{clusters}/{cluster}");
            match (&rest[2..], verb) {
                ([], None) if m == M::GET => {
                    let c = state.get(&clusters, cluster).cloned().ok_or_else(|| not_found(&cluster_key))?;
                    Reply::read(present(state, &clusters, c))
                }
                ([], None) if m == M::PUT => update_cluster(state, req, project, location, &clusters, cluster),
                ([], None) if m == M::DELETE => delete_cluster(state, project, location, &clusters, cluster),
                ([], Some("setResourceLabels")) if m == M::POST => set_labels(state, req, project, location, &clusters, cluster),
                (["nodePools"], None) if m == M::GET => {
                    state.get(&clusters, cluster).ok_or_else(|| not_found(&cluster_key))?;
                    Reply::read(json!({"nodePools": state.list(&format!("{cluster_key}/nodePools"))}))
                }
                (["nodePools"], None) if m == M::POST => create_node_pool(state, req, project, location, &clusters, cluster),
                (["nodePools", np], None) if m == M::GET => {
                    let (np, _) = split_verb(np);
                    let pools = format!("{cluster_key}/nodePools");
                    state.get(&clusters, cluster).ok_or_else(|| not_found(&cluster_key))?;
                    state.get(&pools, np).cloned().ok_or_else(|| not_found(&format!("{pools}/{np}"))).and_then(Reply::read)
                }
                (["nodePools", np], None) => {
                    let (np, verb) = split_verb(np);
                    node_pool_change(state, req, project, location, &clusters, cluster, np, verb)
                }
                _ => Err(unserved(req)),
            }
        }
        _ => Err(unserved(req)),
    }
}

fn unserved(req: &Req) -> ApiError {
    ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/")))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(404, "NOT_FOUND", "notFound", format!("Not found: {what}."))
}

fn split_verb(seg: &str) -> (&str, Option<&str>) {
    match seg.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (seg, None),
    }
}

/// A cluster as GET answers it: with its node pools.
fn present(state: &State, clusters: &str, mut c: Value) -> Value {
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let pools = state.list(&format!("{clusters}/{name}/nodePools"));
    if !pools.is_empty() {
        c["nodePools"] = Value::Array(pools);
    }
    let nodes: i64 =
        state.list(&format!("{clusters}/{name}/{SIZES}")).iter().filter_map(|s| s.get("nodeCount").and_then(Value::as_i64)).sum();
    c["currentNodeCount"] = json!(nodes);
    c
}

/// The collection (under a cluster) of each node pool's node count: `:setSize` changes it,
/// and GKE's NodePool has no field for it (only `initialNodeCount`), so the fake keeps it
/// apart, as `{"nodeCount": N}`; the cluster's `currentNodeCount` is their sum.
pub const SIZES: &str = "nodePoolSizes";

fn size_effect(cluster_key: &str, pool: &str, n: i64) -> Effect {
    Effect::Put { collection: format!("{cluster_key}/{SIZES}"), name: pool.to_owned(), value: json!({"nodeCount": n}) }
}

/// 400 if an operation on `cluster` is still running.
fn check_idle(state: &State, cluster_key: &str) -> Result<(), ApiError> {
    let prefix = format!("{BASE}{cluster_key}");
    if let Some(op) = state.operations.values().find(|o| {
        !o.done
            && o.kind == OpKind::Container
            && o.json.get("targetLink").and_then(Value::as_str).is_some_and(|t| t == prefix || t.starts_with(&format!("{prefix}/")))
    }) {
        let name = op.json.get("name").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::new(
            400,
            "FAILED_PRECONDITION",
            "failedPrecondition",
            format!("Cluster is running incompatible operation {name}. Please wait and try again."),
        ));
    }
    Ok(())
}

fn operation(state: &mut State, project: &str, location: &str, op_type: &str, target: &str, effects: Vec<Effect>) -> Value {
    let name = format!("operation-{}-{:08x}", jiff::Timestamp::now().as_millisecond(), state.random() as u32);
    let json = json!({
        "name": name,
        "zone": location,
        "location": location,
        "operationType": op_type,
        "selfLink": format!("{BASE}projects/{project}/locations/{location}/operations/{name}"),
        "targetLink": format!("{BASE}{target}"),
        "startTime": now(),
    });
    state.start_operation(format!("projects/{project}/locations/{location}/operations/{name}"), OpKind::Container, json, effects, None)
}

/// The region of a location (`us-central1-a` -> `us-central1`).
fn region_of(location: &str) -> &str {
    match location.rsplit_once('-') {
        Some((region, zone)) if zone.len() == 1 => region,
        _ => location,
    }
}

fn check_pool(i: &str, pool: &Value) -> Result<(), ApiError> {
    let name = pool.get("name").and_then(Value::as_str).unwrap_or_default();
    check_name(&format!("{i}.name"), name, 40)?;
    check_labels(&format!("{i}.config.resourceLabels"), pool.pointer("/config/resourceLabels"))?;
    if let Some(a) = pool.get("autoscaling").filter(|a| a.get("enabled").and_then(Value::as_bool) == Some(true)) {
        // The total_* counts (the whole pool, over its zones) are the alternative to the
        // per-zone ones and mutually exclusive with them (NodePoolAutoscaling reference).
        let total = a.get("totalMinNodeCount").is_some() || a.get("totalMaxNodeCount").is_some();
        let per_zone = a.get("minNodeCount").is_some() || a.get("maxNodeCount").is_some();
        if total && per_zone {
            return Err(ApiError::invalid(format!("{i}.autoscaling: total_*_node_count and *_node_count are mutually exclusive.")));
        }
        let (min_key, max_key) = if total { ("totalMinNodeCount", "totalMaxNodeCount") } else { ("minNodeCount", "maxNodeCount") };
        let min = a.get(min_key).and_then(Value::as_i64).unwrap_or(0);
        let max = a.get(max_key).and_then(Value::as_i64).unwrap_or(0);
        if min < 0 || max < 1 || min > max {
            return Err(ApiError::invalid(format!(
                "{i}.autoscaling: minNodeCount ({min}) must be >= 0 and <= maxNodeCount ({max}), and maxNodeCount >= 1."
            )));
        }
    }
    if pool.get("initialNodeCount").and_then(Value::as_i64).is_some_and(|n| n < 0) {
        return Err(ApiError::invalid(format!("{i}.initialNodeCount must be >= 0.")));
    }
    Ok(())
}

fn create_cluster(state: &mut State, req: &Req, project: &str, location: &str, clusters: &str) -> Result<Reply, ApiError> {
    let mut cluster = req.body.get("cluster").cloned().ok_or_else(|| ApiError::invalid("Required field 'cluster' not specified."))?;
    fields_refused(&cluster, "cluster")?;
    let name = cluster.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    check_name("cluster.name", &name, 40)?;
    check_labels("cluster.resourceLabels", cluster.get("resourceLabels"))?;
    let key = format!("{clusters}/{name}");
    if state.get(clusters, &name).is_some() {
        return Err(ApiError::new(409, "ALREADY_EXISTS", "alreadyExists", format!("Already exists: {key}.")));
    }
    let pools: Vec<Value> = cluster.get("nodePools").and_then(Value::as_array).cloned().unwrap_or_default();
    let autopilot = cluster.pointer("/autopilot/enabled").and_then(Value::as_bool) == Some(true);
    if pools.is_empty() && !autopilot && cluster.get("initialNodeCount").and_then(Value::as_i64).unwrap_or(0) <= 0 {
        return Err(ApiError::invalid("Cluster.initial_node_count must be greater than zero, or node pools must be given."));
    }
    for (i, p) in pools.iter().enumerate() {
        check_pool(&format!("cluster.nodePools[{i}]"), p)?;
    }
    // Network and subnetwork: names (or paths) of Compute resources that must exist.
    let region = region_of(location);
    let network = cluster.get("network").and_then(Value::as_str).unwrap_or("default").to_owned();
    let net_name = network.rsplit('/').next().unwrap_or_default().to_owned();
    let nets = format!("projects/{project}/global/networks");
    if state.get(&nets, &net_name).is_none() {
        return Err(ApiError::not_found(&format!("{nets}/{net_name}")));
    }
    if let Some(sub) = cluster.get("subnetwork").and_then(Value::as_str).map(str::to_owned) {
        let (coll, sname) = if sub.contains('/') {
            compute::reference(project, &sub).unwrap_or_default()
        } else {
            (format!("projects/{project}/regions/{region}/subnetworks"), sub.clone())
        };
        if coll != format!("projects/{project}/regions/{region}/subnetworks") {
            return Err(ApiError::invalid(format!("Subnetwork '{sub}' is not in the cluster's region {region}.")));
        }
        let subnet = state.get(&coll, &sname).cloned().ok_or_else(|| ApiError::not_found(&format!("{coll}/{sname}")))?;
        if subnet.get("network").and_then(Value::as_str).is_some_and(|n| !n.ends_with(&format!("/global/networks/{net_name}"))) {
            return Err(ApiError::invalid(format!("Subnetwork '{sname}' does not belong to network '{net_name}'.")));
        }
        if subnet.get("purpose").and_then(Value::as_str) == Some("PRIVATE_SERVICE_CONNECT") {
            return Err(ApiError::invalid(format!(
                "Subnetwork '{sname}' has purpose PRIVATE_SERVICE_CONNECT and cannot host cluster nodes; use a PRIVATE subnetwork."
            )));
        }
        let ranges: Vec<&str> = subnet
            .get("secondaryIpRanges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("rangeName").and_then(Value::as_str))
            .collect();
        for field in ["clusterSecondaryRangeName", "servicesSecondaryRangeName"] {
            if let Some(r) = cluster.pointer(&format!("/ipAllocationPolicy/{field}")).and_then(Value::as_str)
                && !ranges.contains(&r)
            {
                return Err(ApiError::invalid(format!(
                    "Secondary range \"{r}\" (ipAllocationPolicy.{field}) does not exist in subnetwork '{sname}'."
                )));
            }
        }
        cluster["subnetwork"] = json!(sname);
    }
    cluster["network"] = json!(net_name);
    if let Some(pool) = cluster.pointer("/workloadIdentityConfig/workloadPool").and_then(Value::as_str) {
        let want = format!("{project}.svc.id.goog");
        if pool != want {
            return Err(ApiError::invalid(format!("Workload Identity pool must be \"{want}\", not \"{pool}\".")));
        }
    }
    let fp = state.fingerprint();
    let obj = cluster.as_object_mut().ok_or_else(|| ApiError::invalid("cluster must be an object"))?;
    obj.remove("nodePools");
    let mut extra = Map::new();
    extra.insert("selfLink".into(), json!(format!("{BASE}{key}")));
    extra.insert("location".into(), json!(location));
    extra.insert("zone".into(), json!(location));
    extra.insert("status".into(), json!("PROVISIONING"));
    extra.insert("createTime".into(), json!(now()));
    extra.insert("id".into(), json!(format!("{:032x}", u128::from(state.random()) << 64 | u128::from(state.random()))));
    extra.insert("etag".into(), json!(fp));
    extra.insert("labelFingerprint".into(), json!(format!("{:08x}", state.random() as u32)));
    obj.extend(extra);
    let pool_coll = format!("{key}/nodePools");
    let mut effects = Vec::new();
    let mut stored_pools = Vec::new();
    let pools = if pools.is_empty() && !autopilot {
        vec![json!({"name": "default-pool", "initialNodeCount": cluster.get("initialNodeCount").cloned().unwrap_or(json!(3))})]
    } else {
        pools
    };
    for mut p in pools {
        let pname = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        effects.push(size_effect(&key, &pname, p.get("initialNodeCount").and_then(Value::as_i64).unwrap_or(0)));
        p["selfLink"] = json!(format!("{BASE}{pool_coll}/{pname}"));
        p["status"] = json!("PROVISIONING");
        p["version"] = json!(VERSION);
        p["etag"] = json!(state.fingerprint());
        stored_pools.push((pname.clone(), p));
        effects.push(Effect::Merge { collection: pool_coll.clone(), name: pname, patch: json!({"status": "RUNNING"}) });
    }
    state.put(clusters, &name, cluster);
    for (pname, p) in stored_pools {
        state.put(&pool_coll, &pname, p);
    }
    let ca = base64::engine::general_purpose::STANDARD
        .encode(format!("-----BEGIN CERTIFICATE-----\nfake CA of {key}\n-----END CERTIFICATE-----\n"));
    let n = state.random();
    effects.push(Effect::Merge {
        collection: clusters.to_owned(),
        name: name.clone(),
        patch: json!({
            "status": "RUNNING",
            "endpoint": format!("34.{}.{}.{}", n % 250 + 1, (n >> 8) % 250 + 1, (n >> 16) % 250 + 1),
            "masterAuth": {"clusterCaCertificate": ca},
            "currentMasterVersion": VERSION,
            "currentNodeVersion": VERSION,
        }),
    });
    Reply::write(operation(state, project, location, "CREATE_CLUSTER", &key, effects))
}

fn update_cluster(state: &mut State, req: &Req, project: &str, location: &str, clusters: &str, name: &str) -> Result<Reply, ApiError> {
    let key = format!("{clusters}/{name}");
    let current = state.get(clusters, name).cloned().ok_or_else(|| not_found(&key))?;
    let update = req.body.get("update").and_then(Value::as_object).cloned().unwrap_or_default();
    let desired: Vec<(&String, &Value)> =
        update.iter().filter(|(k, _)| k.starts_with("desired") && k.as_str() != "desiredNodePoolId").collect();
    if desired.len() != 1 {
        return Err(ApiError::invalid(format!(
            "Exactly one update can be applied to a cluster with each request; got {} ({}).",
            desired.len(),
            desired.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(etag) = update.get("etag").and_then(Value::as_str)
        && Some(etag) != current.get("etag").and_then(Value::as_str)
    {
        return Err(ApiError::new(
            409,
            "ABORTED",
            "aborted",
            format!("The cluster {key} was changed since etag {etag}; get it again and retry."),
        ));
    }
    check_idle(state, &key)?;
    let (field, value) = desired[0];
    let mut patch = json!({});
    match field.as_str() {
        "desiredMasterVersion" => patch["currentMasterVersion"] = value.clone(),
        "desiredNodePoolAutoscaling" => {
            let pool = update.get("desiredNodePoolId").and_then(Value::as_str).unwrap_or_default();
            let pools = format!("{key}/nodePools");
            state.get(&pools, pool).ok_or_else(|| not_found(&format!("{pools}/{pool}")))?;
            check_pool("update.desiredNodePoolAutoscaling", &json!({"name": pool, "autoscaling": value}))?;
            let effects = vec![Effect::Merge { collection: pools, name: pool.to_owned(), patch: json!({"autoscaling": value}) }];
            return Reply::write(operation(state, project, location, "UPDATE_CLUSTER", &key, effects));
        }
        "desiredWorkloadIdentityConfig" => {
            let want = format!("{project}.svc.id.goog");
            if value.get("workloadPool").and_then(Value::as_str).is_some_and(|p| p != want) {
                return Err(ApiError::invalid(format!("Workload Identity pool must be \"{want}\".")));
            }
            patch["workloadIdentityConfig"] = value.clone();
        }
        other => {
            // desiredFooBar -> fooBar, the Cluster field it sets.
            let rest = &other["desired".len()..];
            let mut chars = rest.chars();
            let target = chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default();
            patch[target] = value.clone();
        }
    }
    patch["etag"] = json!(state.fingerprint());
    let effects = vec![Effect::Merge { collection: clusters.to_owned(), name: name.to_owned(), patch }];
    Reply::write(operation(state, project, location, "UPDATE_CLUSTER", &key, effects))
}

/// `:setResourceLabels`: replaces the cluster's labels if `labelFingerprint` is the current
/// one; otherwise 400 `FAILED_PRECONDITION` "Labels could not be set due to fingerprint
/// mismatch", as GKE answers (an empty fingerprint included).
fn set_labels(state: &mut State, req: &Req, project: &str, location: &str, clusters: &str, name: &str) -> Result<Reply, ApiError> {
    let key = format!("{clusters}/{name}");
    let current = state.get(clusters, name).cloned().ok_or_else(|| not_found(&key))?;
    let labels = req.body.get("resourceLabels").cloned().unwrap_or(json!({}));
    check_labels("resourceLabels", Some(&labels))?;
    let sent = req.body.get("labelFingerprint").and_then(Value::as_str).unwrap_or_default();
    let want = current.get("labelFingerprint").and_then(Value::as_str).unwrap_or_default();
    if sent != want {
        return Err(ApiError::new(
            400,
            "FAILED_PRECONDITION",
            "failedPrecondition",
            format!(
                "Labels could not be set due to fingerprint mismatch; try again with the proper fingerprint: incorrect fingerprint supplied was \"{sent}\", the expected one is \"{want}\"."
            ),
        ));
    }
    check_idle(state, &key)?;
    let fp = format!("{:08x}", state.random() as u32);
    let effects = vec![
        Effect::Merge { collection: clusters.to_owned(), name: name.to_owned(), patch: json!({"resourceLabels": null}) },
        Effect::Merge {
            collection: clusters.to_owned(),
            name: name.to_owned(),
            patch: json!({"resourceLabels": labels, "labelFingerprint": fp}),
        },
    ];
    Reply::write(operation(state, project, location, "UPDATE_CLUSTER", &key, effects))
}

fn delete_cluster(state: &mut State, project: &str, location: &str, clusters: &str, name: &str) -> Result<Reply, ApiError> {
    let key = format!("{clusters}/{name}");
    state.get(clusters, name).ok_or_else(|| not_found(&key))?;
    check_idle(state, &key)?;
    if let Some(c) = state.collections.get_mut(clusters).and_then(|c| c.get_mut(name)) {
        c["status"] = json!("STOPPING");
    }
    let pools = format!("{key}/nodePools");
    let mut effects: Vec<Effect> = state
        .list(&pools)
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .flat_map(|p| {
            [
                Effect::Delete { collection: pools.clone(), name: p.to_owned() },
                Effect::Delete { collection: format!("{key}/{SIZES}"), name: p.to_owned() },
            ]
        })
        .collect();
    effects.push(Effect::Delete { collection: clusters.to_owned(), name: name.to_owned() });
    Reply::write(operation(state, project, location, "DELETE_CLUSTER", &key, effects))
}

fn create_node_pool(state: &mut State, req: &Req, project: &str, location: &str, clusters: &str, cluster: &str) -> Result<Reply, ApiError> {
    let key = format!("{clusters}/{cluster}");
    state.get(clusters, cluster).ok_or_else(|| not_found(&key))?;
    let mut pool = req.body.get("nodePool").cloned().ok_or_else(|| ApiError::invalid("Required field 'node_pool' not specified."))?;
    fields_refused(&pool, "node_pool")?;
    check_pool("nodePool", &pool)?;
    let name = pool.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let pools = format!("{key}/nodePools");
    if state.get(&pools, &name).is_some() {
        return Err(ApiError::new(409, "ALREADY_EXISTS", "alreadyExists", format!("Already exists: {pools}/{name}.")));
    }
    check_idle(state, &key)?;
    pool["selfLink"] = json!(format!("{BASE}{pools}/{name}"));
    pool["status"] = json!("PROVISIONING");
    pool["version"] = json!(VERSION);
    pool["etag"] = json!(state.fingerprint());
    let count = pool.get("initialNodeCount").and_then(Value::as_i64).unwrap_or(0);
    state.put(&pools, &name, pool);
    let effects = vec![
        Effect::Merge { collection: pools.clone(), name: name.clone(), patch: json!({"status": "RUNNING"}) },
        size_effect(&key, &name, count),
    ];
    Reply::write(operation(state, project, location, "CREATE_NODE_POOL", &format!("{pools}/{name}"), effects))
}

#[allow(clippy::too_many_arguments)]
fn node_pool_change(
    state: &mut State,
    req: &Req,
    project: &str,
    location: &str,
    clusters: &str,
    cluster: &str,
    np: &str,
    verb: Option<&str>,
) -> Result<Reply, ApiError> {
    use http::Method as M;
    let key = format!("{clusters}/{cluster}");
    state.get(clusters, cluster).ok_or_else(|| not_found(&key))?;
    let pools = format!("{key}/nodePools");
    let target = format!("{pools}/{np}");
    let current = state.get(&pools, np).cloned().ok_or_else(|| not_found(&target))?;
    let body = &req.body;
    let (op_type, patch) = match (&req.method, verb) {
        (m, None) if m == M::DELETE => {
            check_idle(state, &key)?;
            if let Some(p) = state.collections.get_mut(&pools).and_then(|c| c.get_mut(np)) {
                p["status"] = json!("STOPPING");
            }
            let effects = vec![
                Effect::Delete { collection: pools.clone(), name: np.to_owned() },
                Effect::Delete { collection: format!("{key}/{SIZES}"), name: np.to_owned() },
            ];
            return Reply::write(operation(state, project, location, "DELETE_NODE_POOL", &target, effects));
        }
        (m, None) if m == M::PUT => {
            let mut config = current.get("config").cloned().unwrap_or(json!({}));
            let mut patch = json!({});
            for (from, to) in
                [("machineType", "machineType"), ("diskSizeGb", "diskSizeGb"), ("diskType", "diskType"), ("imageType", "imageType")]
            {
                if let Some(v) = body.get(from) {
                    config[to] = v.clone();
                }
            }
            for (from, inner, to) in [
                ("labels", "labels", "labels"),
                ("resourceLabels", "labels", "resourceLabels"),
                ("taints", "taints", "taints"),
                ("tags", "tags", "tags"),
            ] {
                if let Some(v) = body.get(from) {
                    config[to] = v.get(inner).cloned().unwrap_or(Value::Null);
                }
            }
            patch["config"] = config;
            if let Some(l) = body.get("locations") {
                patch["locations"] = l.clone();
            }
            if let Some(v) = body.get("nodeVersion") {
                patch["version"] = v.clone();
            }
            check_labels("resourceLabels", body.pointer("/resourceLabels/labels"))?;
            if let Some(etag) = body.get("etag").and_then(Value::as_str)
                && Some(etag) != current.get("etag").and_then(Value::as_str)
            {
                return Err(ApiError::new(
                    409,
                    "ABORTED",
                    "aborted",
                    format!("The node pool {target} was changed since etag {etag}; get it again and retry."),
                ));
            }
            ("UPGRADE_NODES", patch)
        }
        (m, Some("setSize")) if m == M::POST => {
            let n = body
                .get("nodeCount")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::invalid("Required field 'node_count' not specified."))?;
            if n < 0 {
                return Err(ApiError::invalid("node_count must be >= 0."));
            }
            check_idle(state, &key)?;
            let effects = vec![size_effect(&key, np, n)];
            return Reply::write(operation(state, project, location, "SET_NODE_POOL_SIZE", &target, effects));
        }
        (m, Some("setAutoscaling")) if m == M::POST => {
            let a = body.get("autoscaling").cloned().unwrap_or(json!({}));
            check_pool("autoscaling", &json!({"name": np, "autoscaling": a}))?;
            ("UPDATE_CLUSTER", json!({"autoscaling": a}))
        }
        _ => return Err(unserved(req)),
    };
    check_idle(state, &key)?;
    let mut patch = patch;
    patch["etag"] = json!(state.fingerprint());
    // `config` is replaced whole (its label maps must lose removed keys), the rest merged.
    let mut effects = Vec::new();
    if patch.get("config").is_some() {
        effects.push(Effect::Merge { collection: pools.clone(), name: np.to_owned(), patch: json!({"config": null}) });
    }
    effects.push(Effect::Merge { collection: pools, name: np.to_owned(), patch });
    Reply::write(operation(state, project, location, op_type, &target, effects))
}
