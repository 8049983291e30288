//! The real `google-cloud-iam-admin-v1`, `google-cloud-resourcemanager-v3` and
//! `google-cloud-api-serviceusage-v1` clients against the fake.

mod common;

use common::{anonymous, raw};
use gcp_double::{Double, Options};
use google_cloud_api_serviceusage_v1::client::ServiceUsage;
use google_cloud_gax::error::rpc::Code;
use google_cloud_iam_admin_v1::client::Iam;
use google_cloud_iam_admin_v1::model::ServiceAccount;
use google_cloud_iam_v1::model::{Binding, Policy};
use google_cloud_resourcemanager_v3::client::Projects;
use serde_json::json;

const P: &str = "byoc-test-project";

async fn iam(double: &Double) -> Iam {
    common::init();
    Iam::builder().with_endpoint(double.url()).with_credentials(anonymous()).build().await.expect("client")
}

async fn projects(double: &Double) -> Projects {
    common::init();
    Projects::builder().with_endpoint(double.url()).with_credentials(anonymous()).build().await.expect("client")
}

async fn make_account(c: &Iam, id: &str) -> google_cloud_iam_admin_v1::Result<ServiceAccount> {
    c.create_service_account()
        .set_name(format!("projects/{P}"))
        .set_account_id(id)
        .set_service_account(ServiceAccount::new().set_display_name(format!("byoc {id}")))
        .send()
        .await
}

#[tokio::test]
async fn service_accounts_are_created_judged_and_patched() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = iam(&double).await;
    let sa = make_account(&c, "byoc-agent").await.expect("create");
    assert_eq!(sa.email, format!("byoc-agent@{P}.iam.gserviceaccount.com"));
    assert_eq!(sa.name, format!("projects/{P}/serviceAccounts/{}", sa.email));
    assert!(!sa.unique_id.is_empty());
    let err = make_account(&c, "byoc-agent").await.expect_err("taken");
    assert_eq!((err.http_status_code(), err.status().map(|s| s.code)), (Some(409), Some(Code::AlreadyExists)));
    for bad in ["short", "Upper-case", "1digit-first", "trailing-hyphen-", "a-name-that-is-much-too-long-x1"] {
        let err = make_account(&c, bad).await.expect_err(bad);
        assert_eq!(err.http_status_code(), Some(400), "{bad}");
    }
    let got = c.get_service_account().set_name(format!("projects/-/serviceAccounts/{}", sa.email)).send().await.expect("get");
    assert_eq!(got.display_name, "byoc byoc-agent");
    let patched = c
        .patch_service_account()
        .set_service_account(ServiceAccount::new().set_name(&sa.name).set_description("the agent").set_display_name("ignored"))
        .set_update_mask(google_cloud_wkt_mask(&["description"]))
        .send()
        .await
        .expect("patch");
    assert_eq!(
        (patched.description.as_str(), patched.display_name.as_str()),
        ("the agent", "byoc byoc-agent"),
        "only the masked field changes"
    );
    let list = c.list_service_accounts().set_name(format!("projects/{P}")).send().await.expect("list");
    assert_eq!(list.accounts.len(), 1);
    c.delete_service_account().set_name(&sa.name).send().await.expect("delete");
    let err = c.get_service_account().set_name(&sa.name).send().await.expect_err("gone");
    assert_eq!(err.http_status_code(), Some(404));
}

fn google_cloud_wkt_mask(paths: &[&str]) -> google_cloud_wkt::FieldMask {
    google_cloud_wkt::FieldMask::default().set_paths(paths.iter().copied())
}

#[tokio::test]
async fn a_stale_policy_etag_is_aborted_and_a_reread_wins() {
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = projects(&double).await;
    let admin = iam(&double).await;
    let sa = make_account(&admin, "byoc-nodes").await.expect("sa");
    let resource = format!("projects/{P}");
    // Two writers read the same policy.
    let first = c.get_iam_policy().set_resource(&resource).send().await.expect("read 1");
    let second = c.get_iam_policy().set_resource(&resource).send().await.expect("read 2");
    assert_eq!(first.etag, second.etag);
    let bind = |p: Policy, role: &str| {
        let mut bindings = p.bindings.clone();
        bindings.push(Binding::new().set_role(role).set_members([format!("serviceAccount:{}", sa.email)]));
        p.set_bindings(bindings)
    };
    c.set_iam_policy().set_resource(&resource).set_policy(bind(first, "roles/logging.logWriter")).send().await.expect("first write");
    let err = c
        .set_iam_policy()
        .set_resource(&resource)
        .set_policy(bind(second, "roles/monitoring.metricWriter"))
        .send()
        .await
        .expect_err("stale etag");
    assert_eq!(err.http_status_code(), Some(409), "{err:?}");
    assert_eq!(err.status().map(|s| s.code), Some(Code::Aborted));
    // The loser re-reads and both bindings survive.
    let again = c.get_iam_policy().set_resource(&resource).send().await.expect("re-read");
    c.set_iam_policy().set_resource(&resource).set_policy(bind(again, "roles/monitoring.metricWriter")).send().await.expect("retry");
    let end = c.get_iam_policy().set_resource(&resource).send().await.expect("final");
    let roles: Vec<&str> = end.bindings.iter().map(|b| b.role.as_str()).collect();
    assert_eq!(roles, vec!["roles/logging.logWriter", "roles/monitoring.metricWriter"]);

    // Tampering (another actor) also makes a held etag stale.
    let held = c.get_iam_policy().set_resource(&resource).send().await.expect("read");
    double.tamper("iamPolicies", &resource, json!({"bindings": []})).expect("tamper");
    let err = c.set_iam_policy().set_resource(&resource).set_policy(held).send().await.expect_err("stale after drift");
    assert_eq!(err.http_status_code(), Some(409));
}

#[tokio::test]
async fn bindings_are_judged() {
    let double = Double::spawn(Options { operation_polls: 0, ..Options::default() }).expect("spawn");
    let c = projects(&double).await;
    let admin = iam(&double).await;
    let sa = make_account(&admin, "byoc-cluster").await.expect("sa");
    let resource = format!("projects/{P}");
    let cases = [
        (
            "missing service account",
            Binding::new().set_role("roles/viewer").set_members([format!("serviceAccount:nobody@{P}.iam.gserviceaccount.com")]),
        ),
        ("bad role", Binding::new().set_role("viewer").set_members(["user:a@example.com"])),
        ("bad member", Binding::new().set_role("roles/viewer").set_members(["a@example.com"])),
        (
            "condition without version 3",
            Binding::new()
                .set_role("roles/viewer")
                .set_members(["user:a@example.com"])
                .set_condition(google_cloud_type::model::Expr::new().set_expression("true")),
        ),
    ];
    for (what, b) in cases {
        let err = c.set_iam_policy().set_resource(&resource).set_policy(Policy::new().set_bindings([b])).send().await.expect_err(what);
        assert_eq!(err.http_status_code(), Some(400), "{what}: {err:?}");
    }
    // Workload Identity on a service account: refused until a cluster has the pool.
    let wi = Policy::new().set_bindings([Binding::new()
        .set_role("roles/iam.workloadIdentityUser")
        .set_members([format!("serviceAccount:{P}.svc.id.goog[risingwave/compute]")])]);
    let err = admin.set_iam_policy().set_resource(&sa.name).set_policy(wi.clone()).send().await.expect_err("no pool yet");
    assert_eq!(err.http_status_code(), Some(400));
    assert!(err.status().is_some_and(|s| s.message.contains("Identity Pool does not exist")), "{err:?}");
    common::compute_insert(&double.url(), &format!("projects/{P}/global/networks"), json!({"name": "vpc"}));
    let (status, body) = raw(
        &double.url(),
        "POST",
        &format!("/v1/projects/{P}/locations/us-central1/clusters"),
        Some(
            &json!({"cluster": {"name": "rw", "network": "vpc", "initialNodeCount": 1, "workloadIdentityConfig": {"workloadPool": format!("{P}.svc.id.goog")}}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let set = admin.set_iam_policy().set_resource(&sa.name).set_policy(wi).send().await.expect("pool exists now");
    assert_eq!(set.bindings.len(), 1);
    let got = admin.get_iam_policy().set_resource(&sa.name).send().await.expect("get");
    assert_eq!(got.etag, set.etag);
}

#[tokio::test]
async fn test_iam_permissions_leaves_out_the_denied_ones() {
    let double =
        Double::spawn(Options { denied_permissions: vec!["container.clusters.create".to_owned()], ..Options::default() }).expect("spawn");
    let c = projects(&double).await;
    let got = c
        .test_iam_permissions()
        .set_resource(format!("projects/{P}"))
        .set_permissions(["compute.networks.create", "container.clusters.create"])
        .send()
        .await
        .expect("test");
    assert_eq!(got.permissions, vec!["compute.networks.create".to_owned()]);
    let project = c.get_project().set_name(format!("projects/{P}")).send().await.expect("project");
    assert_eq!(project.project_id, P);
    let err = c.get_project().set_name("projects/not-mine").send().await.expect_err("other project");
    assert_eq!(err.http_status_code(), Some(403));
}

#[tokio::test]
async fn service_usage_reports_and_gates_the_apis() {
    let double =
        Double::spawn(Options { disabled_services: vec!["container.googleapis.com".to_owned()], ..Options::default() }).expect("spawn");
    common::init();
    let c = ServiceUsage::builder().with_endpoint(double.url()).with_credentials(anonymous()).build().await.expect("client");
    let got = c.get_service().set_name(format!("projects/{P}/services/container.googleapis.com")).send().await.expect("get");
    assert_eq!(got.state, google_cloud_api_serviceusage_v1::model::State::Disabled);
    let batch = c
        .batch_get_services()
        .set_parent(format!("projects/{P}"))
        .set_names([format!("projects/{P}/services/compute.googleapis.com"), format!("projects/{P}/services/container.googleapis.com")])
        .send()
        .await
        .expect("batchGet");
    let states: Vec<_> = batch.services.iter().map(|s| s.state.clone()).collect();
    assert_eq!(
        states,
        vec![google_cloud_api_serviceusage_v1::model::State::Enabled, google_cloud_api_serviceusage_v1::model::State::Disabled]
    );
    let enabled = c.list_services().set_parent(format!("projects/{P}")).set_filter("state:ENABLED").send().await.expect("list");
    assert!(enabled.services.iter().all(|s| s.state == google_cloud_api_serviceusage_v1::model::State::Enabled));
    assert!(!enabled.services.iter().any(|s| s.name.ends_with("/container.googleapis.com")));
    // A disabled API refuses its calls as Google does.
    let (status, body) = raw(&double.url(), "GET", &format!("/v1/projects/{P}/locations/us-central1/clusters"), None);
    assert_eq!((status, common::reason(&body)), (403, "accessNotConfigured"), "{body}");
    let (status, _) = raw(&double.url(), "POST", &format!("/v1/projects/{P}/services/container.googleapis.com:enable"), Some(&json!({})));
    assert_eq!(status, 200);
    let (status, _) = raw(&double.url(), "GET", &format!("/v1/projects/{P}/locations/us-central1/clusters"), None);
    assert_eq!(status, 200);
}

/// Custom roles through the real client: bad ids refused 400, a taken id 409 (a deleted
/// one too), an update with a stale etag 409 ABORTED, delete is soft, undelete brings the
/// role back, and a binding to a custom role that does not exist is refused.
#[tokio::test]
async fn custom_roles_are_judged_soft_deleted_and_undeleted() {
    use google_cloud_iam_admin_v1::model::Role;
    use google_cloud_iam_admin_v1::model::role::RoleLaunchStage;
    let double = Double::spawn(Options::default()).expect("spawn");
    let c = iam(&double).await;
    let role = || {
        Role::new()
            .set_title("byoc agent")
            .set_included_permissions(["iam.roles.get", "compute.networks.list"])
            .set_stage(RoleLaunchStage::Ga)
    };
    let create = |id: &'static str| c.create_role().set_parent(format!("projects/{P}")).set_role_id(id).set_role(role()).send();
    for bad in ["byoc-agent", "ab", "x".repeat(65).leak() as &str] {
        let err = create(bad).await.expect_err(bad);
        assert_eq!((err.http_status_code(), err.status().map(|s| s.code)), (Some(400), Some(Code::InvalidArgument)), "{bad}");
    }
    let made = create("byoc_prod_agent").await.expect("create");
    assert_eq!(made.name, format!("projects/{P}/roles/byoc_prod_agent"));
    assert_eq!(made.included_permissions, ["compute.networks.list", "iam.roles.get"], "kept sorted");
    assert_eq!(made.stage, RoleLaunchStage::Ga);
    assert!(!made.etag.is_empty());
    let err = create("byoc_prod_agent").await.expect_err("taken");
    assert_eq!((err.http_status_code(), err.status().map(|s| s.code)), (Some(409), Some(Code::AlreadyExists)));

    // An update carrying the etag read succeeds once; the same etag again is stale.
    let name = made.name.clone();
    let update = |etag: bytes::Bytes| {
        let body = json!({"name": name, "role": serde_json::to_value(role().set_title("changed").set_etag(etag)).expect("json"), "updateMask": "title"});
        let request: google_cloud_iam_admin_v1::model::UpdateRoleRequest = serde_json::from_value(body).expect("request");
        c.update_role().with_request(request).send()
    };
    let updated = update(made.etag.clone()).await.expect("update with the etag read");
    assert_eq!(updated.title, "changed");
    let err = update(made.etag.clone()).await.expect_err("stale etag");
    assert_eq!((err.http_status_code(), err.status().map(|s| s.code)), (Some(409), Some(Code::Aborted)));

    let deleted = c.delete_role().set_name(&name).send().await.expect("delete");
    assert!(deleted.deleted);
    let got = c.get_role().set_name(&name).send().await.expect("a deleted role is still read");
    assert!(got.deleted);
    let err = create("byoc_prod_agent").await.expect_err("a deleted role keeps its id");
    assert_eq!(err.http_status_code(), Some(409));
    let err = update(got.etag.clone()).await.expect_err("a deleted role cannot be changed");
    assert_eq!(err.http_status_code(), Some(400));
    let back = c.undelete_role().set_name(&name).set_etag(got.etag.clone()).send().await.expect("undelete");
    assert!(!back.deleted);
    assert_eq!(back.title, "changed", "undelete brings the role back as it was");

    let (status, body) = raw(
        &double.url(),
        "POST",
        &format!("/v3/projects/{P}:setIamPolicy"),
        Some(&json!({"policy": {"bindings": [{"role": format!("projects/{P}/roles/nope"), "members": ["user:a@example.com"]}]}})),
    );
    assert_eq!(status, 400, "{body}");
}
