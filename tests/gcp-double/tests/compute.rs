//! The real `google-cloud-compute-v1` client against the fake: if the client cannot parse an
//! answer, the answer is wrong.

mod common;

use common::{anonymous, client_reason, fast_polls, raw, reason};
use gcp_double::{Double, Options};
use google_cloud_compute_v1::client::{Firewalls, GlobalOperations, Networks, Routers, Subnetworks};
use google_cloud_compute_v1::model::{
    Firewall, Network, Router, RouterNat, Subnetwork, SubnetworkSecondaryRange, firewall, router_nat, subnetwork,
};
use google_cloud_lro::Poller;
use serde_json::json;

const P: &str = "byoc-test-project";
const R: &str = "us-central1";

struct Clients {
    networks: Networks,
    subnetworks: Subnetworks,
    firewalls: Firewalls,
    routers: Routers,
    operations: GlobalOperations,
}

async fn clients(double: &Double) -> Clients {
    common::init();
    Clients {
        networks: Networks::builder()
            .with_endpoint(double.url())
            .with_credentials(anonymous())
            .with_polling_backoff_policy(fast_polls())
            .build()
            .await
            .expect("client"),
        subnetworks: Subnetworks::builder()
            .with_endpoint(double.url())
            .with_credentials(anonymous())
            .with_polling_backoff_policy(fast_polls())
            .build()
            .await
            .expect("client"),
        firewalls: Firewalls::builder()
            .with_endpoint(double.url())
            .with_credentials(anonymous())
            .with_polling_backoff_policy(fast_polls())
            .build()
            .await
            .expect("client"),
        routers: Routers::builder()
            .with_endpoint(double.url())
            .with_credentials(anonymous())
            .with_polling_backoff_policy(fast_polls())
            .build()
            .await
            .expect("client"),
        operations: GlobalOperations::builder().with_endpoint(double.url()).with_credentials(anonymous()).build().await.expect("client"),
    }
}

async fn make_network(c: &Clients, name: &str) {
    let op = c
        .networks
        .insert()
        .set_project(P)
        .set_body(Network::new().set_name(name).set_auto_create_subnetworks(false))
        .poller()
        .until_done()
        .await
        .expect("insert network");
    assert_eq!(op.status, Some(google_cloud_compute_v1::model::operation::Status::Done));
}

async fn make_subnet(
    c: &Clients,
    name: &str,
    network: &str,
    range: &str,
) -> google_cloud_compute_v1::Result<google_cloud_compute_v1::model::Operation> {
    c.subnetworks
        .insert()
        .set_project(P)
        .set_region(R)
        .set_body(Subnetwork::new().set_name(name).set_network(format!("global/networks/{network}")).set_ip_cidr_range(range))
        .poller()
        .until_done()
        .await
}

#[tokio::test]
async fn a_change_is_visible_only_once_its_operation_is_done() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    let op = c
        .networks
        .insert()
        .set_project(P)
        .set_body(Network::new().set_name("vpc").set_auto_create_subnetworks(false))
        .send()
        .await
        .expect("insert");
    assert_eq!(op.status, Some(google_cloud_compute_v1::model::operation::Status::Pending));
    assert!(op.target_link.as_deref().is_some_and(|l| l.ends_with("/projects/byoc-test-project/global/networks/vpc")), "{op:?}");
    let err = c.networks.get().set_project(P).set_network("vpc").send().await.expect_err("not visible yet");
    assert_eq!(err.http_status_code(), Some(404));
    let name = op.name.clone().expect("operation name");
    let first = c.operations.get().set_project(P).set_operation(&name).send().await.expect("poll 1");
    assert_eq!(first.status, Some(google_cloud_compute_v1::model::operation::Status::Running));
    assert!(c.networks.get().set_project(P).set_network("vpc").send().await.is_err(), "RUNNING is not DONE");
    let second = c.operations.get().set_project(P).set_operation(&name).send().await.expect("poll 2");
    assert_eq!(second.status, Some(google_cloud_compute_v1::model::operation::Status::Done));
    let net = c.networks.get().set_project(P).set_network("vpc").send().await.expect("visible when DONE");
    assert_eq!(net.name.as_deref(), Some("vpc"));
    assert!(net.id.is_some() && net.creation_timestamp.is_some() && net.self_link.is_some(), "{net:?}");
    assert_eq!(double.writes(), vec!["POST /compute/v1/projects/byoc-test-project/global/networks".to_owned()]);
}

#[tokio::test]
async fn subnetwork_lifecycle_with_fingerprints() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    make_network(&c, "vpc").await;
    let range = SubnetworkSecondaryRange::new().set_range_name("pods").set_ip_cidr_range("10.8.0.0/14");
    c.subnetworks
        .insert()
        .set_project(P)
        .set_region(R)
        .set_body(
            Subnetwork::new()
                .set_name("nodes")
                .set_network("global/networks/vpc")
                .set_ip_cidr_range("10.0.0.0/20")
                .set_purpose(subnetwork::Purpose::Private)
                .set_secondary_ip_ranges([range]),
        )
        .poller()
        .until_done()
        .await
        .expect("insert subnetwork");
    let got = c.subnetworks.get().set_project(P).set_region(R).set_subnetwork("nodes").send().await.expect("get");
    let fingerprint = got.fingerprint.clone().expect("fingerprint");
    assert!(got.network.as_deref().is_some_and(|n| n.ends_with("projects/byoc-test-project/global/networks/vpc")));

    // The first patch with the fingerprint read wins; a second with the same one is stale.
    let patch = Subnetwork::new().set_private_ip_google_access(true).set_fingerprint(fingerprint.clone());
    c.subnetworks
        .patch()
        .set_project(P)
        .set_region(R)
        .set_subnetwork("nodes")
        .set_body(patch.clone())
        .poller()
        .until_done()
        .await
        .expect("patch");
    let err = c
        .subnetworks
        .patch()
        .set_project(P)
        .set_region(R)
        .set_subnetwork("nodes")
        .set_body(patch)
        .send()
        .await
        .expect_err("stale fingerprint");
    assert_eq!(err.http_status_code(), Some(412), "{err:?}");
    assert_eq!(client_reason(&err), "conditionNotMet");
    let after = c.subnetworks.get().set_project(P).set_region(R).set_subnetwork("nodes").send().await.expect("get");
    assert_eq!(after.private_ip_google_access, Some(true));
    assert_ne!(after.fingerprint, Some(fingerprint), "a change makes a new fingerprint");

    // The network is in use while the subnetwork lives: the request is taken, its operation
    // ends DONE with the error (the client's poller answers Ok with `error` set), and nothing
    // is deleted.
    let op = c.networks.delete().set_project(P).set_network("vpc").poller().until_done().await.expect("taken");
    let error = op.error.expect("the operation failed");
    assert_eq!(error.errors[0].code.as_deref(), Some("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"));
    assert!(error.errors[0].message.as_deref().is_some_and(|m| m.contains("is already being used by")));
    assert_eq!(op.http_error_status_code, Some(400));
    c.networks.get().set_project(P).set_network("vpc").send().await.expect("the network is still there");
    c.subnetworks.delete().set_project(P).set_region(R).set_subnetwork("nodes").poller().until_done().await.expect("delete subnetwork");
    c.networks.delete().set_project(P).set_network("vpc").poller().until_done().await.expect("delete network");
    assert_eq!(double.snapshot(), json!({}));
}

#[tokio::test]
async fn a_taken_name_is_already_exists() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    make_network(&c, "vpc").await;
    let err = c.networks.insert().set_project(P).set_body(Network::new().set_name("vpc")).send().await.expect_err("taken");
    assert_eq!(err.http_status_code(), Some(409));
    assert_eq!(err.status().map(|s| s.code), Some(google_cloud_gax::error::rpc::Code::AlreadyExists));
    assert_eq!(client_reason(&err), "alreadyExists");
}

#[tokio::test]
async fn overlapping_ranges_and_bad_names_are_refused() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    make_network(&c, "vpc").await;
    make_subnet(&c, "a", "vpc", "10.0.0.0/20").await.expect("first subnet");
    let op = make_subnet(&c, "b", "vpc", "10.0.8.0/24").await.expect("taken, failing in the operation");
    let message = op.error.and_then(|e| e.errors.into_iter().next()).and_then(|e| e.message).unwrap_or_default();
    assert!(message.contains("conflicts with range 10.0.0.0/20"), "{message}");
    let missing = c.subnetworks.get().set_project(P).set_region(R).set_subnetwork("b").send().await.expect_err("not created");
    assert_eq!(missing.http_status_code(), Some(404));
    make_network(&c, "other").await;
    make_subnet(&c, "c", "other", "10.0.8.0/24").await.expect("another network may reuse the range");
    for bad in ["Upper", "1digit", "trailing-", "x".repeat(64).as_str()] {
        let err = make_subnet(&c, bad, "vpc", "10.1.0.0/24").await.expect_err("bad name");
        assert_eq!(err.http_status_code(), Some(400), "{bad}");
    }
    let err = make_subnet(&c, "hostbits", "vpc", "10.1.0.1/24").await.expect_err("host bits");
    assert_eq!(err.http_status_code(), Some(400));
    let err = make_subnet(&c, "nonet", "missing", "10.2.0.0/24").await.expect_err("missing network");
    assert_eq!(err.http_status_code(), Some(404));
    let psc = Subnetwork::new()
        .set_name("psc")
        .set_network("global/networks/vpc")
        .set_ip_cidr_range("10.3.0.0/24")
        .set_purpose(subnetwork::Purpose::PrivateServiceConnect)
        .set_secondary_ip_ranges([SubnetworkSecondaryRange::new().set_range_name("x").set_ip_cidr_range("10.4.0.0/24")]);
    let err = c.subnetworks.insert().set_project(P).set_region(R).set_body(psc).send().await.expect_err("psc with secondary ranges");
    assert_eq!(err.http_status_code(), Some(400));
}

#[tokio::test]
async fn labels_on_kinds_without_labels_are_unknown_fields() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let (status, body) = raw(
        &double.url(),
        "POST",
        &format!("/compute/v1/projects/{P}/global/networks"),
        Some(&json!({"name": "vpc", "labels": {"a": "b"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body.pointer("/error/status"), Some(&json!("INVALID_ARGUMENT")));
    let (status, _) = raw(&double.url(), "POST", &format!("/compute/v1/projects/{P}/global/networks"), Some(&json!({"name": "vpc"})));
    assert_eq!(status, 200);
    let (status, _) = raw(&double.url(), "GET", &format!("/compute/v1/projects/{P}/regions/us-nowhere1/subnetworks"), None);
    assert_eq!(status, 400, "a region GCP does not have");
    let (status, body) = raw(&double.url(), "GET", "/compute/v1/projects/someone-else/global/networks", None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason(&body), "forbidden");
}

#[tokio::test]
async fn firewalls_and_router_nat() {
    let double = Double::spawn(Options { operation_polls: 0, ..Options::default() }).expect("spawn");
    let c = clients(&double).await;
    make_network(&c, "vpc").await;
    make_subnet(&c, "nodes", "vpc", "10.0.0.0/20").await.expect("subnet");
    let fw = Firewall::new()
        .set_name("allow-internal")
        .set_network("global/networks/vpc")
        .set_direction(firewall::Direction::Ingress)
        .set_source_ranges(["10.0.0.0/8"])
        .set_allowed([firewall::Allowed::new().set_ip_protocol("tcp").set_ports(["4566"])]);
    c.firewalls.insert().set_project(P).set_body(fw.clone()).poller().until_done().await.expect("firewall");
    let both = fw.clone().set_name("both").set_denied([firewall::Denied::new().set_ip_protocol("udp")]);
    let err = c.firewalls.insert().set_project(P).set_body(both).send().await.expect_err("allowed and denied");
    assert_eq!(err.http_status_code(), Some(400));
    // update (PUT) replaces the whole rule.
    let replaced = fw.set_source_ranges(["192.168.0.0/16"]);
    c.firewalls.update().set_project(P).set_firewall("allow-internal").set_body(replaced).poller().until_done().await.expect("update");
    let got = c.firewalls.get().set_project(P).set_firewall("allow-internal").send().await.expect("get");
    assert_eq!(got.source_ranges, vec!["192.168.0.0/16".to_owned()]);

    let nat = RouterNat::new()
        .set_name("nat")
        .set_nat_ip_allocate_option(router_nat::NatIpAllocateOption::AutoOnly)
        .set_source_subnetwork_ip_ranges_to_nat(router_nat::SourceSubnetworkIpRangesToNat::ListOfSubnetworks)
        .set_subnetworks([google_cloud_compute_v1::model::RouterNatSubnetworkToNat::new()
            .set_name(format!("projects/{P}/regions/{R}/subnetworks/nodes"))
            .set_source_ip_ranges_to_nat([
                google_cloud_compute_v1::model::router_nat_subnetwork_to_nat::SourceIpRangesToNat::AllIpRanges,
            ])]);
    let router = Router::new().set_name("router-nat").set_network("global/networks/vpc").set_nats([nat]);
    c.routers.insert().set_project(P).set_region(R).set_body(router).poller().until_done().await.expect("router");
    let got = c.routers.get().set_project(P).set_region(R).set_router("router-nat").send().await.expect("get router");
    assert_eq!(got.nats.len(), 1);
    let op = c.subnetworks.delete().set_project(P).set_region(R).set_subnetwork("nodes").send().await.expect("taken");
    let error = op.error.expect("the operation failed");
    assert_eq!(error.errors[0].code.as_deref(), Some("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"));
    assert_eq!(op.http_error_status_code, Some(400));
    let list = c.routers.list().set_project(P).set_region(R).send().await.expect("list");
    assert_eq!(list.items.len(), 1);
    // Six requests answered 2xx, the failed deletion among them.
    let writes = double.writes();
    assert_eq!(writes.len(), 6, "{writes:?}");
}

#[tokio::test]
async fn list_filters_and_operation_wait() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    for name in ["byoc-a", "byoc-b", "other"] {
        make_network(&c, name).await;
    }
    let names = |l: google_cloud_compute_v1::model::NetworkList| l.items.into_iter().filter_map(|n| n.name).collect::<Vec<_>>();
    let got = c.networks.list().set_project(P).set_filter("name eq byoc-.*").send().await.expect("regex filter");
    assert_eq!(names(got), vec!["byoc-a", "byoc-b"]);
    let got = c.networks.list().set_project(P).set_filter("name = \"other\"").send().await.expect("literal filter");
    assert_eq!(names(got), vec!["other"]);
    let got = c.networks.list().set_project(P).set_filter("name ne byoc-.*").send().await.expect("negated");
    assert_eq!(names(got), vec!["other"]);
    let err = c.networks.list().set_project(P).set_filter("description = x").send().await.expect_err("unsupported filter");
    assert_eq!(err.http_status_code(), Some(400));
    let page = c.networks.list().set_project(P).set_max_results(2u32).send().await.expect("page 1");
    let token = page.next_page_token.clone().expect("a second page");
    assert_eq!(page.items.len(), 2);
    let rest = c.networks.list().set_project(P).set_max_results(2u32).set_page_token(token).send().await.expect("page 2");
    assert_eq!((rest.items.len(), rest.next_page_token), (1, None));

    // `wait` advances an operation as `get` does, one step per call.
    let op = c.networks.delete().set_project(P).set_network("other").send().await.expect("delete");
    let name = op.name.expect("name");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let got = c.operations.wait().set_project(P).set_operation(&name).send().await.expect("wait");
        statuses.push(got.status.expect("status"));
    }
    use google_cloud_compute_v1::model::operation::Status;
    assert_eq!(statuses, vec![Status::Running, Status::Done, Status::Done]);
    let err = c.operations.get().set_project(P).set_operation("operation-missing").send().await.expect_err("no such operation");
    assert_eq!(err.http_status_code(), Some(404));
}

#[tokio::test]
async fn a_retried_insert_with_its_request_id_is_not_a_duplicate() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = clients(&double).await;
    let insert = || {
        c.networks.insert().set_project(P).set_request_id("3f2a1c52-0d4e-4b8e-9a43-1f7d2b9e6c10").set_body(Network::new().set_name("vpc"))
    };
    let first = insert().send().await.expect("first");
    let again = insert().send().await.expect("the retry answers the same operation");
    assert_eq!(first.name, again.name);
    c.operations.get().set_project(P).set_operation(first.name.clone().expect("name")).send().await.expect("poll");
    c.operations.get().set_project(P).set_operation(first.name.clone().expect("name")).send().await.expect("poll");
    let done = insert().send().await.expect("after DONE too");
    assert_eq!(done.status, Some(google_cloud_compute_v1::model::operation::Status::Done));
    let err = c.networks.insert().set_project(P).set_body(Network::new().set_name("vpc")).send().await.expect_err("a new request");
    assert_eq!(err.http_status_code(), Some(409));
    assert_eq!(double.writes().len(), 3, "every mutating request answered 2xx counts: {:?}", double.writes());
    assert_eq!(double.snapshot()[format!("projects/{P}/global/networks")].as_object().map(|o| o.len()), Some(1));
}
