//! What Compute refuses in a network, subnetwork, firewall or router (see the parent
//! module's list), and how it stores references (as self links).

use serde_json::{Value, json};

use super::{Kind, reference, self_link};
use crate::error::{ApiError, IN_OPERATION};
use crate::names::{check_name, cidr, has_host_bits, overlaps};
use crate::state::State;

/// The stored network a `network` field names, as its self link; 404 if it does not exist.
fn network_link(state: &State, project: &str, field: &str, body: &Value) -> Result<String, ApiError> {
    let text = body
        .get("network")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("Invalid value for field '{field}': ''. The network must be specified.")))?;
    let (coll, name) =
        reference(project, text).ok_or_else(|| ApiError::invalid(format!("Invalid value for field '{field}': '{text}'.")))?;
    if !coll.ends_with("/global/networks") || state.get(&coll, &name).is_none() {
        return Err(ApiError::not_found(&format!("{coll}/{name}")));
    }
    Ok(self_link(&coll, &name))
}

pub(super) fn validate(
    state: &State,
    project: &str,
    region: Option<&str>,
    kind: Kind,
    name: &str,
    body: &mut Value,
) -> Result<(), ApiError> {
    match kind {
        Kind::Network => {
            if body.get("IPv4Range").is_some() && body.get("autoCreateSubnetworks").and_then(Value::as_bool) == Some(true) {
                return Err(ApiError::invalid("Invalid value for field 'resource.IPv4Range': a legacy network cannot create subnetworks."));
            }
            if let Some(mtu) = body.get("mtu").and_then(Value::as_i64)
                && !(1300..=8896).contains(&mtu)
            {
                return Err(ApiError::invalid(format!("Invalid value for field 'resource.mtu': '{mtu}'. Must be between 1300 and 8896.")));
            }
            if let Some(mode) = body.pointer("/routingConfig/routingMode").and_then(Value::as_str)
                && !["REGIONAL", "GLOBAL"].contains(&mode)
            {
                return Err(ApiError::invalid(format!("Invalid value for field 'resource.routingConfig.routingMode': '{mode}'.")));
            }
        }
        Kind::Subnetwork => {
            let network = network_link(state, project, "resource.network", body)?;
            body["network"] = json!(network);
            validate_subnetwork(state, project, region.unwrap_or_default(), name, &network, body)?;
        }
        Kind::Firewall => {
            let network = network_link(state, project, "resource.network", body)?;
            body["network"] = json!(network);
            validate_firewall(body)?;
        }
        Kind::Router => {
            let network = network_link(state, project, "resource.network", body)?;
            body["network"] = json!(network);
            validate_router(state, project, region.unwrap_or_default(), body)?;
            normalize_nat_subnetworks(project, body);
        }
    }
    Ok(())
}

fn validate_subnetwork(state: &State, project: &str, region: &str, name: &str, network: &str, body: &Value) -> Result<(), ApiError> {
    let text = body.get("ipCidrRange").and_then(Value::as_str).unwrap_or_default();
    let primary = cidr(text)
        .ok_or_else(|| ApiError::invalid(format!("Invalid value for field 'resource.ipCidrRange': '{text}'. Invalid IPCidrRange.")))?;
    if has_host_bits(primary) {
        return Err(ApiError::invalid(format!("Invalid value for field 'resource.ipCidrRange': '{text}'. The address has host bits set.")));
    }
    let purpose = body.get("purpose").and_then(Value::as_str).unwrap_or("PRIVATE");
    const PURPOSES: &[&str] = &[
        "PRIVATE",
        "PRIVATE_RFC_1918",
        "PRIVATE_SERVICE_CONNECT",
        "REGIONAL_MANAGED_PROXY",
        "GLOBAL_MANAGED_PROXY",
        "INTERNAL_HTTPS_LOAD_BALANCER",
        "PRIVATE_NAT",
        "PEER_MIGRATION",
    ];
    if !PURPOSES.contains(&purpose) {
        return Err(ApiError::invalid(format!("Invalid value for field 'resource.purpose': '{purpose}'.")));
    }
    let mut ranges = vec![(format!("{name} primary range"), primary)];
    let secondaries = body.get("secondaryIpRanges").and_then(Value::as_array).cloned().unwrap_or_default();
    if purpose == "PRIVATE_SERVICE_CONNECT" && !secondaries.is_empty() {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.secondaryIpRanges': a PRIVATE_SERVICE_CONNECT subnetwork cannot have secondary ranges.",
        ));
    }
    let mut seen = Vec::new();
    for (i, s) in secondaries.iter().enumerate() {
        let rname = s.get("rangeName").and_then(Value::as_str).unwrap_or_default();
        check_name(&format!("resource.secondaryIpRanges[{i}].rangeName"), rname, 63)?;
        if seen.contains(&rname) {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.secondaryIpRanges[{i}].rangeName': '{rname}'. Duplicate range name."
            )));
        }
        seen.push(rname);
        let t = s.get("ipCidrRange").and_then(Value::as_str).unwrap_or_default();
        let c = cidr(t).filter(|c| !has_host_bits(*c)).ok_or_else(|| {
            ApiError::invalid(format!("Invalid value for field 'resource.secondaryIpRanges[{i}].ipCidrRange': '{t}'. Invalid IPCidrRange."))
        })?;
        ranges.push((format!("{name} secondary range {rname}"), c));
    }
    for (i, (a, ra)) in ranges.iter().enumerate() {
        for (b, rb) in &ranges[i + 1..] {
            if overlaps(*ra, *rb) {
                return Err(ApiError::invalid(format!("Invalid IPCidrRange: {a} conflicts with {b}.")));
            }
        }
    }
    let own = self_link(&format!("projects/{project}/regions/{region}/subnetworks"), name);
    let others = state.all_of("subnetworks").into_iter().map(|(_, _, v)| v).chain(state.pending_puts_of("subnetworks"));
    for other in others {
        if other.get("network").and_then(Value::as_str) != Some(network)
            || other.get("selfLink").and_then(Value::as_str) == Some(own.as_str())
        {
            continue;
        }
        let oname = other.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut theirs: Vec<&str> = other.get("ipCidrRange").and_then(Value::as_str).into_iter().collect();
        theirs.extend(
            other
                .get("secondaryIpRanges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("ipCidrRange").and_then(Value::as_str)),
        );
        for t in theirs {
            if let Some(rt) = cidr(t)
                && let Some((mine, _)) = ranges.iter().find(|(_, r)| overlaps(*r, rt))
            {
                return Err(ApiError::new(
                    400,
                    "INVALID_ARGUMENT",
                    IN_OPERATION,
                    format!(
                        "Invalid IPCidrRange: the {mine} conflicts with range {t} of existing subnetwork '{oname}' in network '{network}'."
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_firewall(body: &Value) -> Result<(), ApiError> {
    let has = |f: &str| body.get(f).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if has("allowed") == has("denied") {
        return Err(ApiError::invalid("Invalid value for field 'resource': exactly one of 'allowed' and 'denied' must be given."));
    }
    let direction = body.get("direction").and_then(Value::as_str).unwrap_or("INGRESS");
    if !["INGRESS", "EGRESS"].contains(&direction) {
        return Err(ApiError::invalid(format!("Invalid value for field 'resource.direction': '{direction}'.")));
    }
    if direction == "EGRESS" && (has("sourceTags") || has("sourceServiceAccounts")) {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.sourceTags': an EGRESS firewall cannot have source tags or service accounts.",
        ));
    }
    if let Some(p) = body.get("priority").and_then(Value::as_i64)
        && !(0..=65535).contains(&p)
    {
        return Err(ApiError::invalid(format!("Invalid value for field 'resource.priority': '{p}'. Must be between 0 and 65535.")));
    }
    for field in ["sourceRanges", "destinationRanges"] {
        for (i, r) in body.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let t = r.as_str().unwrap_or_default();
            if cidr(t).is_none() && cidr(&format!("{t}/32")).is_none() {
                return Err(ApiError::invalid(format!(
                    "Invalid value for field 'resource.{field}[{i}]': '{t}'. Must be a CIDR address range."
                )));
            }
        }
    }
    for field in ["allowed", "denied"] {
        for (i, rule) in body.get(field).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let proto = rule.get("IPProtocol").and_then(Value::as_str).unwrap_or_default();
            if proto.is_empty() {
                return Err(ApiError::invalid(format!("Required field 'resource.{field}[{i}].IPProtocol' not specified")));
            }
        }
    }
    Ok(())
}

/// Stores NAT subnetwork references as self links, as the API answers them.
fn normalize_nat_subnetworks(project: &str, body: &mut Value) {
    for nat in body.get_mut("nats").and_then(Value::as_array_mut).into_iter().flatten() {
        for s in nat.get_mut("subnetworks").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some((coll, name)) = s.get("name").and_then(Value::as_str).and_then(|t| reference(project, t)) {
                s["name"] = json!(self_link(&coll, &name));
            }
        }
    }
}

fn validate_router(state: &State, project: &str, region: &str, body: &Value) -> Result<(), ApiError> {
    let mut names = Vec::new();
    for (i, nat) in body.get("nats").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let n = nat.get("name").and_then(Value::as_str).unwrap_or_default();
        check_name(&format!("resource.nats[{i}].name"), n, 63)?;
        if names.contains(&n) {
            return Err(ApiError::invalid(format!("Invalid value for field 'resource.nats[{i}].name': '{n}'. Duplicate NAT name.")));
        }
        names.push(n);
        let alloc = nat.get("natIpAllocateOption").and_then(Value::as_str).unwrap_or_default();
        if !["AUTO_ONLY", "MANUAL_ONLY"].contains(&alloc) {
            return Err(ApiError::invalid(format!("Invalid value for field 'resource.nats[{i}].natIpAllocateOption': '{alloc}'.")));
        }
        let source = nat.get("sourceSubnetworkIpRangesToNat").and_then(Value::as_str).unwrap_or_default();
        if !["ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES", "LIST_OF_SUBNETWORKS"].contains(&source) {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.nats[{i}].sourceSubnetworkIpRangesToNat': '{source}'."
            )));
        }
        let subnets = nat.get("subnetworks").and_then(Value::as_array).cloned().unwrap_or_default();
        if source == "LIST_OF_SUBNETWORKS" && subnets.is_empty() {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.nats[{i}].subnetworks': LIST_OF_SUBNETWORKS needs at least one subnetwork."
            )));
        }
        for s in &subnets {
            let text = s.get("name").and_then(Value::as_str).unwrap_or_default();
            let (coll, sname) = reference(project, text).unwrap_or_default();
            if coll != format!("projects/{project}/regions/{region}/subnetworks") || state.get(&coll, &sname).is_none() {
                return Err(ApiError::not_found(&format!("{coll}/{sname}")));
            }
        }
    }
    Ok(())
}
