//! Role assignments, the caller's permissions, provider and feature registration,
//! throttling, conditional writes and drift by another actor.

mod common;

use std::time::Instant;

use arm_double::Options;
use azure_core::http::{Method, RetryOptions};
use common::{Arm, SUB, rg_path};
use serde_json::json;

const AUTHZ: &str = "api-version=2022-04-01";
const MSI: &str = "api-version=2023-01-31";
const NET: &str = "api-version=2024-05-01";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const BLOB_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";

async fn identity(arm: &Arm, name: &str) -> String {
    let a = arm
        .put(
            &format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?{MSI}", rg_path("rg")),
            json!({"location": "eastus"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["properties"]["principalId"].as_str().expect("an identity has a principalId").to_owned()
}

fn assignment(role: &str, principal: &str) -> serde_json::Value {
    json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"), "principalId": principal, "principalType": "ServicePrincipal"}})
}

#[tokio::test]
async fn role_assignments_are_unique_per_scope_role_and_principal() {
    let arm = Arm::new(Options::default());
    arm.group("rg").await;
    let principal = identity(&arm, "rw-compute").await;
    let scope = rg_path("rg");
    let first = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/6f2a8f7c-6e1d-4c3b-9a57-1b1f3f0c2a10?{AUTHZ}");
    let a = arm.put(&first, assignment(BLOB_CONTRIBUTOR, &principal)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["properties"]["scope"], scope);
    // The same name again is idempotent; another name for the same triple is a conflict.
    let again = arm.put(&first, assignment(BLOB_CONTRIBUTOR, &principal)).await;
    assert_eq!(again.status, 201);
    let dup = arm
        .put(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/0c3b7e0e-2d4f-4a43-8c55-6a0f0b7a9d21?{AUTHZ}"),
            assignment(BLOB_CONTRIBUTOR, &principal),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (409, "RoleAssignmentExists"));
    let changed = arm.put(&first, assignment(CONTRIBUTOR, &principal)).await;
    assert_eq!((changed.status, changed.code()), (400, "RoleAssignmentUpdateNotPermitted"));
    let not_guid = arm
        .put(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/rw-blob?{AUTHZ}"),
            assignment(BLOB_CONTRIBUTOR, &principal),
        )
        .await;
    assert_eq!((not_guid.status, not_guid.code()), (400, "InvalidRoleAssignmentId"));
    let nobody = arm
        .put(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/1c3b7e0e-2d4f-4a43-8c55-6a0f0b7a9d21?{AUTHZ}"),
            assignment(BLOB_CONTRIBUTOR, "99999999-9999-9999-9999-999999999999"),
        )
        .await;
    assert_eq!((nobody.status, nobody.code()), (400, "PrincipalNotFound"));
    let no_role = arm
        .put(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/2c3b7e0e-2d4f-4a43-8c55-6a0f0b7a9d21?{AUTHZ}"),
            assignment("00000000-1111-2222-3333-444444444444", &principal),
        )
        .await;
    assert_eq!((no_role.status, no_role.code()), (400, "RoleDefinitionDoesNotExist"));
    // A missing scope.
    let missing = arm
        .put(
            &format!("{}/providers/Microsoft.Authorization/roleAssignments/3c3b7e0e-2d4f-4a43-8c55-6a0f0b7a9d21?{AUTHZ}", rg_path("nope")),
            assignment(BLOB_CONTRIBUTOR, &principal),
        )
        .await;
    assert_eq!((missing.status, missing.code()), (404, "ResourceGroupNotFound"));

    // Listing: atScope() at a resource below sees the group's assignment (and the caller's
    // Owner on the subscription, which the fake's caller holds by default); principalId filters.
    let id_scope = format!("{scope}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rw-compute");
    let below = arm.get(&format!("{id_scope}/providers/Microsoft.Authorization/roleAssignments?{AUTHZ}&$filter=atScope()")).await;
    assert_eq!(below.body["value"].as_array().map(Vec::len), Some(2), "{}", below.body);
    let sub = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?{AUTHZ}&$filter=atScope()")).await;
    assert_eq!(sub.body["value"].as_array().map(Vec::len), Some(1), "only the caller's Owner: {}", sub.body);
    let by_principal = arm
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?{AUTHZ}&$filter=principalId%20eq%20'{principal}'"
        ))
        .await;
    assert_eq!(by_principal.body["value"].as_array().map(Vec::len), Some(1));
    let defs = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions?{AUTHZ}&$filter=roleName%20eq%20'Storage%20Blob%20Data%20Contributor'")).await;
    assert_eq!(defs.body["value"][0]["name"], BLOB_CONTRIBUTOR);

    // ABAC conditions take conditionVersion 2.0 and are kept.
    let cond = "((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})) OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith 'env/'))";
    let mut with_condition = assignment(CONTRIBUTOR, &principal);
    with_condition["properties"]["condition"] = json!(cond);
    with_condition["properties"]["conditionVersion"] = json!("1.0");
    let ra = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/4c3b7e0e-2d4f-4a43-8c55-6a0f0b7a9d21?{AUTHZ}");
    let bad_version = arm.put(&ra, with_condition.clone()).await;
    assert_eq!((bad_version.status, bad_version.code()), (400, "InvalidConditionVersion"));
    with_condition["properties"]["conditionVersion"] = json!("2.0");
    let ok = arm.put(&ra, with_condition).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(arm.get(&ra).await.body["properties"]["condition"], cond);

    let del = arm.delete(&first).await;
    assert_eq!(del.status, 200);
    let del = arm.delete(&first).await;
    assert_eq!(del.status, 204);
}

#[tokio::test]
async fn a_caller_without_the_role_is_refused_with_authorization_failed() {
    let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/rg");
    let arm = Arm::new(Options { caller_roles: Some(vec![(rg_scope.clone(), CONTRIBUTOR.to_owned())]), ..Options::default() });
    // Contributor on the group only: no new groups, no role assignments.
    let other = arm.put(&format!("{}?api-version=2021-04-01", rg_path("other")), json!({"location": "eastus"})).await;
    assert_eq!((other.status, other.code()), (403, "AuthorizationFailed"));
    let rg = arm.put(&format!("{}?api-version=2021-04-01", rg_path("rg")), json!({"location": "eastus"})).await;
    assert_eq!(rg.status, 201, "Contributor at the group's scope may write the group: {}", rg.body);
    let principal = identity(&arm, "rw-compute").await;
    let ra = arm
        .put(
            &format!("{rg_scope}/providers/Microsoft.Authorization/roleAssignments/6f2a8f7c-6e1d-4c3b-9a57-1b1f3f0c2a10?{AUTHZ}"),
            assignment(BLOB_CONTRIBUTOR, &principal),
        )
        .await;
    assert_eq!((ra.status, ra.code()), (403, "AuthorizationFailed"));
}

#[tokio::test]
async fn unregistered_providers_and_features_are_reported_and_can_be_registered() {
    let arm = Arm::new(Options {
        unregistered_providers: vec!["Microsoft.ContainerService".into()],
        unregistered_features: vec!["Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview".into()],
        provisioning_polls: 2,
        ..Options::default()
    });
    arm.group("rg").await;
    let cluster = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?api-version=2025-01-01", rg_path("rg"));
    let a = arm.put(&cluster, json!({"location": "eastus"})).await;
    assert_eq!((a.status, a.code()), (409, "MissingSubscriptionRegistration"));
    let provider = format!("/subscriptions/{SUB}/providers/Microsoft.ContainerService?api-version=2021-04-01");
    assert_eq!(arm.get(&provider).await.body["registrationState"], "NotRegistered");
    let network = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Network?api-version=2021-04-01")).await;
    assert_eq!(network.body["registrationState"], "Registered");
    let feature = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Features/providers/Microsoft.ContainerService/features/EnableAPIServerVnetIntegrationPreview?api-version=2021-07-01"
    );
    let f = arm.get(&feature).await;
    assert_eq!(f.body["properties"]["state"], "NotRegistered");
    assert_eq!(f.body["name"], "Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview");
    let wrong = arm.get(&feature.replace("2021-07-01", "2021-04-01")).await;
    assert_eq!((wrong.status, wrong.code()), (400, "InvalidApiVersionParameter"));

    let r = arm
        .call(
            Method::Post,
            &format!("/subscriptions/{SUB}/providers/Microsoft.ContainerService/register?api-version=2021-04-01"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["registrationState"], "Registering");
    let mut states = Vec::new();
    for _ in 0..3 {
        states.push(arm.get(&provider).await.body["registrationState"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(states, ["Registering", "Registering", "Registered"]);
    let fr = arm.call(Method::Post, &feature.replace("?api-version", "/register?api-version"), None, &[]).await;
    assert_eq!(fr.body["properties"]["state"], "Registering");
    arm.double.set_feature_registered("Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview", true);
    assert_eq!(arm.get(&feature).await.body["properties"]["state"], "Registered");
    let a = arm.put(&cluster, json!({"location": "eastus"})).await;
    assert_ne!(a.code(), "MissingSubscriptionRegistration");
}

#[tokio::test]
async fn throttled_requests_get_429_with_retry_after_and_the_real_retry_policy_gets_through() {
    // Without retries the client sees the 429s.
    let bare = Arm::new(Options { throttle_rate: 1.0, ..Options::default() });
    let a = bare.get(&format!("{}?api-version=2021-04-01", rg_path("rg"))).await;
    assert_eq!((a.status, a.code()), (429, "TooManyRequests"));
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(bare.double.throttled(), 1);
    bare.double.set_throttle_rate(0.0);
    let a = bare.get(&format!("{}?api-version=2021-04-01", rg_path("rg"))).await;
    assert_eq!(a.code(), "ResourceGroupNotFound");

    // azure_core's default retry policy honours Retry-After and gets every write through.
    let arm = Arm::with_retry(Options { throttle_rate: 0.3, seed: 7, ..Options::default() }, RetryOptions::default());
    let started = Instant::now();
    for i in 0..6 {
        let a = arm.put(&format!("{}?api-version=2021-04-01", rg_path(&format!("rg{i}"))), json!({"location": "eastus"})).await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let throttled = arm.double.throttled();
    assert!(throttled >= 1, "seed 7 at 30% throttles some of the requests");
    assert!(started.elapsed().as_secs() >= throttled, "each 429 waited its Retry-After second");
    assert_eq!(arm.double.writes().len(), 6);
}

#[tokio::test]
async fn if_match_is_honoured_and_tamper_changes_the_etag() {
    let arm = Arm::new(Options { provisioning_polls: 0, ..Options::default() });
    arm.group("rg").await;
    let path = format!("{}/providers/Microsoft.Network/networkSecurityGroups/nsg?{NET}", rg_path("rg"));
    let created = arm.create(&path, json!({"location": "eastus"})).await;
    let etag = created.body["etag"].as_str().expect("network resources have an etag").to_owned();
    assert_eq!(created.header("etag"), Some(etag.as_str()));
    let ok = arm.call(Method::Put, &path, Some(json!({"location": "eastus", "tags": {"a": "1"}})), &[("if-match", &etag)]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let new_etag = ok.body["etag"].as_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let stale = arm.call(Method::Put, &path, Some(json!({"location": "eastus"})), &[("if-match", &etag)]).await;
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));
    let exists = arm.call(Method::Put, &path, Some(json!({"location": "eastus"})), &[("if-none-match", "*")]).await;
    assert_eq!((exists.status, exists.code()), (412, "PreconditionFailed"));

    // Another actor changes the resource: content and etag change, the old etag is stale.
    let id = created.body["id"].as_str().unwrap().to_owned();
    arm.double.tamper(&id, json!({"tags": {"a": null, "owner": "portal"}})).unwrap();
    let drifted = arm.get(&path).await;
    assert_eq!(drifted.body["tags"], json!({"owner": "portal"}));
    assert_ne!(drifted.body["etag"], new_etag.as_str());
    let stale = arm.call(Method::Delete, &path, None, &[("if-match", &new_etag)]).await;
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));
    assert!(arm.double.tamper("/subscriptions/x/none", json!({})).is_err());
    // Writes record only what was answered 2xx.
    let writes = arm.double.writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(writes.iter().all(|w| w.starts_with("PUT ")));
}

#[tokio::test]
async fn a_planned_failure_ends_the_operation_failed_with_the_error() {
    let arm = Arm::new(Options { provisioning_polls: 1, ..Options::default() });
    arm.group("rg").await;
    arm.double.fail_next_operation("natGateways/nat", "InternalServerError", "An error occurred.");
    let path = format!("{}/providers/Microsoft.Network/natGateways/nat?{NET}", rg_path("rg"));
    let a = arm.put(&path, json!({"location": "eastus", "zones": ["1"]})).await;
    assert_eq!(a.status, 201);
    let op = a.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_owned();
    let status = arm.get(&op).await;
    assert_eq!(status.body["status"], "Failed");
    assert_eq!(status.body["error"]["code"], "InternalServerError");
    assert_eq!(arm.get(&path).await.body["properties"]["provisioningState"], "Failed");
    // Used once: the retry succeeds.
    let again = arm.put(&path, json!({"location": "eastus", "zones": ["1"]})).await;
    assert_eq!(again.status, 200);
    let op = again.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_owned();
    assert_eq!(arm.wait(&op).await, "Succeeded");
}

#[tokio::test]
async fn a_new_principal_is_not_found_until_replicated_unless_principal_type_is_given() {
    let arm = Arm::new(Options::default());
    arm.group("rg").await;
    arm.double.set_principal_replication_delay(2);
    let principal = identity(&arm, "rw-compute").await;
    let scope = rg_path("rg");
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/6f2a8f7c-6e1d-4c3b-9a57-1b1f3f0c2a10?{AUTHZ}");
    let mut untyped = assignment(BLOB_CONTRIBUTOR, &principal);
    if let Some(p) = untyped["properties"].as_object_mut() {
        p.remove("principalType");
    }
    let first = arm.put(&path, untyped.clone()).await;
    assert_eq!((first.status, first.code()), (400, "PrincipalNotFound"));
    // With principalType ARM does not look the principal up.
    let typed = arm.put(&path, assignment(BLOB_CONTRIBUTOR, &principal)).await;
    assert_eq!(typed.status, 201, "{}", typed.body);
    let other = identity(&arm, "rw-meta").await;
    let other_path = path.replace("6f2a8f7c", "7f2a8f7c");
    let a = arm.put(&other_path, assignment(BLOB_CONTRIBUTOR, &other)).await;
    assert_eq!(a.status, 201);
    // Without it, retries get through once replicated.
    let third = identity(&arm, "rw-frontend").await;
    let third_path = path.replace("6f2a8f7c", "8f2a8f7c");
    let mut untyped = assignment(BLOB_CONTRIBUTOR, &third);
    if let Some(p) = untyped["properties"].as_object_mut() {
        p.remove("principalType");
    }
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(arm.put(&third_path, untyped.clone()).await.status);
        }
        v
    };
    assert_eq!(codes, [400, 400, 201]);
}
