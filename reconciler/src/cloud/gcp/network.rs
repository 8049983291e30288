//! Compute Engine networking: the VPC network, subnetworks (secondary ranges, purpose),
//! firewall rules, and the Cloud Router with its NAT. None of these take labels: each is
//! named from the environment and marked ours in its `description` (module doc of
//! [`super`]). Every mutation answers an Operation, waited on until DONE.

use google_cloud_compute_v1::model::{self as m, firewall, router_nat, subnetwork};

use super::{Gcp, found, last_segment, resolve, strings, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource, Value};

/// Pages through a Compute list call: `$call` is a closure taking the page token.
macro_rules! list_all {
    ($self:expr, $what:expr, $call:expr) => {{
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let page = $self.call($what, || $call(token.clone())).await?;
            items.extend(page.items);
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = t,
                _ => break,
            }
        }
        items
    }};
}

/// A firewall rule's `allow` property (`tcp`, `tcp:443`, `tcp:30000-32767`) as Compute's
/// allowed list, one entry per protocol.
pub(super) fn allowed(rules: &[String]) -> Vec<firewall::Allowed> {
    let mut by_protocol: Vec<(String, Vec<String>)> = Vec::new();
    for rule in rules {
        let (protocol, port) = match rule.split_once(':') {
            Some((p, port)) => (p, Some(port)),
            None => (rule.as_str(), None),
        };
        let i = match by_protocol.iter().position(|(p, _)| p == protocol) {
            Some(i) => i,
            None => {
                by_protocol.push((protocol.to_owned(), Vec::new()));
                by_protocol.len() - 1
            }
        };
        by_protocol[i].1.extend(port.map(str::to_owned));
    }
    by_protocol.into_iter().map(|(p, ports)| firewall::Allowed::new().set_ip_protocol(p).set_ports(ports)).collect()
}

/// Compute's allowed list back in the property's form.
pub(super) fn allow_property(allowed: &[firewall::Allowed]) -> Vec<String> {
    let mut out = Vec::new();
    for a in allowed {
        let protocol = a.ip_protocol.clone().unwrap_or_default();
        if a.ports.is_empty() {
            out.push(protocol);
        } else {
            out.extend(a.ports.iter().map(|p| format!("{protocol}:{p}")));
        }
    }
    out
}

fn secondary(r: &Resource) -> Vec<m::SubnetworkSecondaryRange> {
    match r.properties.get("secondaryRanges") {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::Map(m) => Some(
                    m::SubnetworkSecondaryRange::new()
                        .set_range_name(m.get("name").and_then(Value::as_str).unwrap_or_default())
                        .set_ip_cidr_range(m.get("cidr").and_then(Value::as_str).unwrap_or_default()),
                ),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn secondary_property(ranges: &[m::SubnetworkSecondaryRange]) -> Value {
    Value::List(
        ranges
            .iter()
            .map(|s| {
                Value::map([
                    ("name", s.range_name.clone().unwrap_or_default().into()),
                    ("cidr", s.ip_cidr_range.clone().unwrap_or_default().into()),
                ])
            })
            .collect(),
    )
}

/// Compute's `requestId` for creating `id` with `body`: a UUID made from the
/// environment, the resource and what is asked, so an apply that resumes after a crash
/// repeats the very request, and Compute answers the first one's operation (kept 60
/// minutes) instead of 409 for a resource whose creation is still running.
pub(super) fn request_id(environment: &str, id: &crate::resource::ResourceId, body: &impl std::fmt::Debug) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{environment}\n{id}\n{body:?}").as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// The `requestId` of a second insert of `id` with `body`, sent when the first one's
/// operation finished without the resource existing: Compute answers a `requestId` it saw
/// within the last 60 minutes with that request's operation and does nothing else, so an
/// apply soon after a destroy (same environment, resource and body, so the same id) gets
/// the first apply's operation back and creates nothing. Deterministic too, so a rerun
/// after a kill during this second insert repeats it.
pub(super) fn second_request_id(environment: &str, id: &crate::resource::ResourceId, body: &impl std::fmt::Debug) -> String {
    request_id(environment, id, &(body, "again: the first request id was answered by an earlier, finished request"))
}

impl Gcp {
    fn network_path(&self, name: &str) -> String {
        format!("projects/{}/global/networks/{name}", self.project)
    }

    fn subnetwork_path(&self, region: &str, name: &str) -> String {
        format!("projects/{}/regions/{region}/subnetworks/{name}", self.project)
    }

    pub(super) async fn observe_network(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let p = &self.project;
        let networks = list_all!(self, "compute networks.list", |t: String| self
            .networks
            .list()
            .set_project(p)
            .set_or_clear_page_token((!t.is_empty()).then_some(t))
            .send());
        for n in networks {
            if let Some(id) = self.described_kind(Kind::GcpNetwork, n.description.as_deref()) {
                let name = n.name.clone().unwrap_or_default();
                out.push(found(&id, Kind::GcpNetwork, self.network_path(&name), [("name", name)], Map::new()));
            }
        }
        let r = &self.region;
        let subnetworks = super::none_in_unknown_region(
            async {
                Ok(list_all!(self, "compute subnetworks.list", |t: String| self
                    .subnetworks
                    .list()
                    .set_project(p)
                    .set_region(r)
                    .set_or_clear_page_token((!t.is_empty()).then_some(t))
                    .send()))
            }
            .await,
            r,
        )?;
        for s in subnetworks {
            if let Some(id) = self.described_kind(Kind::GcpSubnetwork, s.description.as_deref()) {
                let name = s.name.clone().unwrap_or_default();
                let mut live = Map::new();
                live.insert("privateIpGoogleAccess", Value::Bool(s.private_ip_google_access.unwrap_or(false)));
                if !s.secondary_ip_ranges.is_empty() {
                    live.insert("secondaryRanges", secondary_property(&s.secondary_ip_ranges));
                }
                out.push(found(&id, Kind::GcpSubnetwork, self.subnetwork_path(r, &name), [("name", name)], live));
            }
        }
        let firewalls = list_all!(self, "compute firewalls.list", |t: String| self
            .firewalls
            .list()
            .set_project(p)
            .set_or_clear_page_token((!t.is_empty()).then_some(t))
            .send());
        for f in firewalls {
            if let Some(id) = self.described_kind(Kind::GcpFirewall, f.description.as_deref()) {
                let name = f.name.clone().unwrap_or_default();
                let mut live = Map::new();
                live.insert("sourceRanges", Value::strings(&f.source_ranges));
                live.insert("allow", Value::strings(allow_property(&f.allowed)));
                out.push(found(&id, Kind::GcpFirewall, format!("projects/{p}/global/firewalls/{name}"), [("name", name)], live));
            }
        }
        let routers = super::none_in_unknown_region(
            async {
                Ok(list_all!(self, "compute routers.list", |t: String| self
                    .routers
                    .list()
                    .set_project(p)
                    .set_region(r)
                    .set_or_clear_page_token((!t.is_empty()).then_some(t))
                    .send()))
            }
            .await,
            r,
        )?;
        for router in routers {
            if let Some(id) = self.described_kind(Kind::GcpRouterNat, router.description.as_deref()) {
                let name = router.name.clone().unwrap_or_default();
                out.push(found(&id, Kind::GcpRouterNat, format!("projects/{p}/regions/{r}/routers/{name}"), [("name", name)], Map::new()));
            }
        }
        Ok(())
    }

    /// Reads a resource that a create found already there; `description` is its
    /// description, which must name `r` of this environment.
    fn adopt(&self, r: &Resource, description: Option<&str>, what: String, noun: &str) -> Result<(), CloudError> {
        if self.described_kind(r.kind, description).as_ref() == Some(&r.id) {
            Ok(())
        } else {
            Err(self.not_ours(r, what, noun, text(r, "name")))
        }
    }

    pub(super) async fn ensure_network(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let what = format!("compute networks.insert for {}", r.id);
        if existing.is_none() {
            let body = m::Network::new()
                .set_name(name)
                .set_description(text(r, "description"))
                .set_auto_create_subnetworks(super::flag(r, "autoCreateSubnetworks"));
            let insert = |rid: String| self.networks.insert().set_project(&self.project).set_request_id(rid).set_body(body.clone()).send();
            let get = || self.networks.get().set_project(&self.project).set_network(name).send();
            match self.call(&what, || insert(request_id(&self.environment, &r.id, &body))).await {
                Ok(op) => {
                    self.compute_done(&what, op, None).await?;
                    if unless_gone(self.call(&what, get).await)?.is_none() {
                        let op = self.call(&what, || insert(second_request_id(&self.environment, &r.id, &body))).await?;
                        self.compute_done(&what, op, None).await?;
                    }
                }
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let n = self.call(&what, || self.networks.get().set_project(&self.project).set_network(name).send()).await?;
                    self.adopt(r, n.description.as_deref(), what.clone(), "network")?;
                }
                Err(e) => return Err(e),
            }
        }
        // Nothing of a network byoc sets can change in place (its name, subnet mode).
        Ok(found(&r.id, Kind::GcpNetwork, self.network_path(name), [("name", name.to_owned())], Map::new()))
    }

    pub(super) async fn ensure_subnetwork(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let region = text(r, "region");
        let network = resolve(refs, r, "network")?;
        let purpose = text(r, "purpose");
        let mut body = m::Subnetwork::new()
            .set_name(name)
            .set_description(text(r, "description"))
            .set_network(network)
            .set_region(region)
            .set_ip_cidr_range(text(r, "cidr"))
            .set_purpose(subnetwork::Purpose::from(purpose))
            .set_secondary_ip_ranges(secondary(r));
        // A PSC NAT subnetwork takes no Private Google Access (it serves no VMs).
        if purpose != "PRIVATE_SERVICE_CONNECT" {
            body = body.set_private_ip_google_access(super::flag(r, "privateIpGoogleAccess"));
        }
        let what = format!("compute subnetworks.insert for {}", r.id);
        let get = || self.subnetworks.get().set_project(&self.project).set_region(region).set_subnetwork(name).send();
        let mut created = false;
        if existing.is_none() {
            let insert = |rid: String| {
                self.subnetworks.insert().set_project(&self.project).set_region(region).set_request_id(rid).set_body(body.clone()).send()
            };
            match self.call(&what, || insert(request_id(&self.environment, &r.id, &body))).await {
                Ok(op) => {
                    self.compute_done(&what, op, Some(region)).await?;
                    if unless_gone(self.call(&what, get).await)?.is_none() {
                        let op = self.call(&what, || insert(second_request_id(&self.environment, &r.id, &body))).await?;
                        self.compute_done(&what, op, Some(region)).await?;
                    }
                    created = true;
                }
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let s = self.call(&what, get).await?;
                    self.adopt(r, s.description.as_deref(), what.clone(), "subnetwork")?;
                }
                Err(e) => return Err(e),
            }
        }
        if !created {
            // Converge what can change in place: secondary ranges and Private Google
            // Access, sent with the fingerprint read (a stale one answers 412).
            let what = format!("compute subnetworks.patch for {}", r.id);
            let live = self.call(&what, get).await?;
            let drifted = live.secondary_ip_ranges != body.secondary_ip_ranges
                || (purpose != "PRIVATE_SERVICE_CONNECT" && live.private_ip_google_access != body.private_ip_google_access);
            if drifted {
                let mut patch = m::Subnetwork::new().set_secondary_ip_ranges(body.secondary_ip_ranges.clone());
                patch.private_ip_google_access = body.private_ip_google_access;
                patch.fingerprint = live.fingerprint.clone();
                let op = self
                    .call(&what, || {
                        self.subnetworks
                            .patch()
                            .set_project(&self.project)
                            .set_region(region)
                            .set_subnetwork(name)
                            .set_body(patch.clone())
                            .send()
                    })
                    .await?;
                self.compute_done(&what, op, Some(region)).await?;
            }
        }
        Ok(found(&r.id, Kind::GcpSubnetwork, self.subnetwork_path(region, name), [("name", name.to_owned())], Map::new()))
    }

    pub(super) async fn ensure_firewall(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let network = resolve(refs, r, "network")?;
        let body = m::Firewall::new()
            .set_name(name)
            .set_description(text(r, "description"))
            .set_network(network)
            .set_direction(firewall::Direction::from(text(r, "direction")))
            .set_source_ranges(strings(r.properties.get("sourceRanges")))
            .set_allowed(allowed(&strings(r.properties.get("allow"))));
        let what = format!("compute firewalls.insert for {}", r.id);
        let mut created = false;
        if existing.is_none() {
            let insert = |rid: String| self.firewalls.insert().set_project(&self.project).set_request_id(rid).set_body(body.clone()).send();
            let get = || self.firewalls.get().set_project(&self.project).set_firewall(name).send();
            match self.call(&what, || insert(request_id(&self.environment, &r.id, &body))).await {
                Ok(op) => {
                    self.compute_done(&what, op, None).await?;
                    if unless_gone(self.call(&what, get).await)?.is_none() {
                        let op = self.call(&what, || insert(second_request_id(&self.environment, &r.id, &body))).await?;
                        self.compute_done(&what, op, None).await?;
                    }
                    created = true;
                }
                Err(e) if !e.is(&["ALREADY_EXISTS"]) => return Err(e),
                Err(_) => {}
            }
        }
        if !created {
            let what = format!("compute firewalls.patch for {}", r.id);
            let live = self.call(&what, || self.firewalls.get().set_project(&self.project).set_firewall(name).send()).await?;
            if existing.is_none() {
                self.adopt(r, live.description.as_deref(), what.clone(), "firewall rule")?;
            }
            let mut want_ranges = body.source_ranges.clone();
            let mut live_ranges = live.source_ranges.clone();
            want_ranges.sort();
            live_ranges.sort();
            let mut want_allow = allow_property(&body.allowed);
            let mut live_allow = allow_property(&live.allowed);
            want_allow.sort();
            live_allow.sort();
            if want_ranges != live_ranges || want_allow != live_allow {
                let patch = m::Firewall::new().set_source_ranges(body.source_ranges.clone()).set_allowed(body.allowed.clone());
                let op = self
                    .call(&what, || self.firewalls.patch().set_project(&self.project).set_firewall(name).set_body(patch.clone()).send())
                    .await?;
                self.compute_done(&what, op, None).await?;
            }
        }
        Ok(found(
            &r.id,
            Kind::GcpFirewall,
            format!("projects/{}/global/firewalls/{name}", self.project),
            [("name", name.to_owned())],
            Map::new(),
        ))
    }

    pub(super) async fn ensure_router(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let region = text(r, "region");
        let network = resolve(refs, r, "network")?;
        let nat = m::RouterNat::new()
            .set_name(name)
            .set_nat_ip_allocate_option(router_nat::NatIpAllocateOption::from(text(r, "natIpAllocation")))
            .set_source_subnetwork_ip_ranges_to_nat(router_nat::SourceSubnetworkIpRangesToNat::from("ALL_SUBNETWORKS_ALL_IP_RANGES"));
        let body = m::Router::new()
            .set_name(name)
            .set_description(text(r, "description"))
            .set_network(network)
            .set_region(region)
            .set_nats([nat.clone()]);
        let what = format!("compute routers.insert for {}", r.id);
        if existing.is_none() {
            let insert = |rid: String| {
                self.routers.insert().set_project(&self.project).set_region(region).set_request_id(rid).set_body(body.clone()).send()
            };
            let get = || self.routers.get().set_project(&self.project).set_region(region).set_router(name).send();
            match self.call(&what, || insert(request_id(&self.environment, &r.id, &body))).await {
                Ok(op) => {
                    self.compute_done(&what, op, Some(region)).await?;
                    if unless_gone(self.call(&what, get).await)?.is_none() {
                        let op = self.call(&what, || insert(second_request_id(&self.environment, &r.id, &body))).await?;
                        self.compute_done(&what, op, Some(region)).await?;
                    }
                }
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let live = self
                        .call(&what, || self.routers.get().set_project(&self.project).set_region(region).set_router(name).send())
                        .await?;
                    self.adopt(r, live.description.as_deref(), what.clone(), "router")?;
                    self.patch_nat(r, region, name, nat).await?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.patch_nat(r, region, name, nat).await?;
        }
        Ok(found(
            &r.id,
            Kind::GcpRouterNat,
            format!("projects/{}/regions/{region}/routers/{name}", self.project),
            [("name", name.to_owned())],
            Map::new(),
        ))
    }

    /// Sets the router's NAT to `nat` when it differs (the NAT is a field of the router).
    async fn patch_nat(&self, r: &Resource, region: &str, name: &str, nat: m::RouterNat) -> Result<(), CloudError> {
        let what = format!("compute routers.patch for {}", r.id);
        let live = self.call(&what, || self.routers.get().set_project(&self.project).set_region(region).set_router(name).send()).await?;
        let same = live.nats.len() == 1
            && live.nats[0].name == nat.name
            && live.nats[0].nat_ip_allocate_option == nat.nat_ip_allocate_option
            && live.nats[0].source_subnetwork_ip_ranges_to_nat == nat.source_subnetwork_ip_ranges_to_nat;
        if !same {
            let patch = m::Router::new().set_nats([nat]);
            let op = self
                .call(&what, || {
                    self.routers.patch().set_project(&self.project).set_region(region).set_router(name).set_body(patch.clone()).send()
                })
                .await?;
            self.compute_done(&what, op, Some(region)).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_network(&self, f: &Found) -> Result<(), CloudError> {
        let name = last_segment(&f.cloud_id);
        let what = format!("compute networks.delete for {}", f.id);
        if let Some(op) =
            unless_gone(self.call(&what, || self.networks.delete().set_project(&self.project).set_network(name).send()).await)?
        {
            self.compute_done(&what, op, None).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_subnetwork(&self, f: &Found) -> Result<(), CloudError> {
        let name = last_segment(&f.cloud_id);
        let what = format!("compute subnetworks.delete for {}", f.id);
        let r = &self.region;
        if let Some(op) = unless_gone(
            self.call(&what, || self.subnetworks.delete().set_project(&self.project).set_region(r).set_subnetwork(name).send()).await,
        )? {
            self.compute_done(&what, op, Some(r)).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_firewall(&self, f: &Found) -> Result<(), CloudError> {
        let name = last_segment(&f.cloud_id);
        let what = format!("compute firewalls.delete for {}", f.id);
        if let Some(op) =
            unless_gone(self.call(&what, || self.firewalls.delete().set_project(&self.project).set_firewall(name).send()).await)?
        {
            self.compute_done(&what, op, None).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_router(&self, f: &Found) -> Result<(), CloudError> {
        let name = last_segment(&f.cloud_id);
        let what = format!("compute routers.delete for {}", f.id);
        let r = &self.region;
        if let Some(op) =
            unless_gone(self.call(&what, || self.routers.delete().set_project(&self.project).set_region(r).set_router(name).send()).await)?
        {
            self.compute_done(&what, op, Some(r)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_a_uuid_that_repeats_for_the_same_request_only() {
        let id = crate::resource::ResourceId::new(Kind::GcpNetwork, "main");
        let a = request_id("prod", &id, &"body");
        assert_eq!(a.len(), 36);
        assert_eq!(a.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert_eq!(a, request_id("prod", &id, &"body"), "a resumed apply repeats it");
        assert_ne!(a, request_id("staging", &id, &"body"));
        assert_ne!(a, request_id("prod", &id, &"other body"));
        let again = second_request_id("prod", &id, &"body");
        assert_ne!(a, again, "an insert answered by an earlier request's operation is sent under another id");
        assert_eq!(again, second_request_id("prod", &id, &"body"), "which a resumed apply repeats");
    }

    #[test]
    fn firewall_rules_group_ports_by_protocol_and_read_back_the_same() {
        let rules: Vec<String> = ["tcp:8443", "tcp:4566", "tcp:10256", "tcp:30000-32767", "icmp"].iter().map(|s| s.to_string()).collect();
        let a = allowed(&rules);
        assert_eq!(a.len(), 2, "one entry per protocol");
        assert_eq!(a[0].ip_protocol.as_deref(), Some("tcp"));
        assert_eq!(a[0].ports, ["8443", "4566", "10256", "30000-32767"]);
        assert!(a[1].ports.is_empty(), "icmp has no ports");
        assert_eq!(allow_property(&a), rules);
    }
}
