//! The fake through the real azure_identity + azure_core client: token, TLS, resource
//! groups, generic create/get/list/delete with long-running operations.

mod common;

use arm_double::Options;
use azure_core::http::Method;
use common::{Arm, SUB, rg_path};
use serde_json::json;

#[tokio::test]
async fn bearer_token_from_the_fake_authorizes_arm_calls_over_tls() {
    let arm = Arm::new(Options::default());
    let a = arm.get(&format!("/subscriptions/{SUB}?api-version=2021-04-01")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["subscriptionId"], SUB);
}

#[tokio::test]
async fn arm_refuses_requests_without_a_token_it_issued() {
    let double = arm_double::Double::spawn(Options::default()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(double.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let url = format!("{}/subscriptions/{SUB}/resourceGroups?api-version=2021-04-01", double.url());
    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let body: serde_json::Value = serde_json::from_slice(&none.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    let forged = http.get(&url).bearer_auth("made-up").send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let body: serde_json::Value = serde_json::from_slice(&forged.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    // A wrong secret gets no token.
    let token_url = format!("{}/00000000-0000-0000-0000-000000000002/oauth2/v2.0/token", double.url());
    let bad = http
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={}&client_secret=wrong&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            double.client_id()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert!(double.writes().is_empty());
}

#[tokio::test]
async fn tokens_are_jwt_shaped_and_name_the_caller_whose_roles_are_listed() {
    use base64::Engine as _;
    let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/rg");
    let contributor = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    let double =
        arm_double::Double::spawn(Options { caller_roles: Some(vec![(rg_scope.clone(), contributor.to_owned())]), ..Options::default() })
            .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(double.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let token_url = format!("{}/00000000-0000-0000-0000-000000000002/oauth2/v2.0/token", double.url());
    let issued = http
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            double.client_id(),
            double.client_secret()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let issued: serde_json::Value = serde_json::from_slice(&issued).unwrap();
    let token = issued["access_token"].as_str().expect("a token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "header.payload.signature: {token}");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).expect("base64url")).expect("JSON claims");
    assert_eq!(claims["oid"], double.caller_principal_id());
    assert_eq!(claims["tid"], "00000000-0000-0000-0000-000000000002");
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert!(claims["exp"].as_i64().expect("exp") > claims["iat"].as_i64().expect("iat"));
    // The same claims under another signature are not a token the fake issued.
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64.encode("not-the-signature"));
    let url = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=principalId%20eq%20'{}'",
        double.url(),
        claims["oid"].as_str().unwrap()
    );
    assert_eq!(http.get(&url).bearer_auth(&forged).send().await.unwrap().status().as_u16(), 401);
    // The caller's own assignments are listed, by its principal, as its administrator made them.
    let listed = http.get(&url).bearer_auth(token).send().await.unwrap().bytes().await.unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    let value = listed["value"].as_array().expect("value");
    assert_eq!(value.len(), 1, "{listed}");
    assert_eq!(value[0]["properties"]["scope"], rg_scope);
    assert!(value[0]["properties"]["roleDefinitionId"].as_str().unwrap().ends_with(contributor));
    assert_eq!(value[0]["properties"]["principalId"], double.caller_principal_id());
    // Without caller_roles the caller is Owner of the subscription (and may do everything).
    let arm = Arm::new(Options::default());
    let all = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01")).await;
    let owners: Vec<&serde_json::Value> = all.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter(|a| a["properties"]["roleDefinitionId"].as_str().is_some_and(|r| r.ends_with("8e3af657-a8ff-443c-a75c-2fe8c4bcb635")))
        .collect();
    assert_eq!(owners.len(), 1, "{}", all.body);
    assert_eq!(owners[0]["properties"]["scope"], format!("/subscriptions/{SUB}"));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_test_ca_cannot_connect() {
    let double = arm_double::Double::spawn(Options::default()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let other = arm_double::Double::spawn(Options::default()).unwrap();
    let ca = reqwest::Certificate::from_pem(other.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    assert!(http.get(format!("{}/subscriptions/{SUB}", double.url())).send().await.is_err());
}

#[tokio::test]
async fn api_versions_are_checked_per_namespace() {
    let arm = Arm::new(Options::default());
    let wrong = arm.put(&format!("{}?api-version=2020-06-01", rg_path("rg1")), json!({"location": "eastus"})).await;
    assert_eq!((wrong.status, wrong.code()), (400, "InvalidApiVersionParameter"));
    let missing = arm.put(&rg_path("rg1"), json!({"location": "eastus"})).await;
    assert_eq!((missing.status, missing.code()), (400, "MissingApiVersionParameter"));
    arm.group("rg1").await;
    let vnet = format!("{}/providers/Microsoft.Network/virtualNetworks/v1?api-version=2023-09-01", rg_path("rg1"));
    let a = arm.put(&vnet, json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}})).await;
    assert_eq!((a.status, a.code()), (400, "InvalidApiVersionParameter"));
}

#[tokio::test]
async fn resource_groups_create_read_list_delete() {
    let arm = Arm::new(Options { provisioning_polls: 1, ..Options::default() });
    let path = format!("{}?api-version=2021-04-01", rg_path("Data-RG"));
    let created = arm.put(&path, json!({"location": "westeurope", "tags": {"team": "data"}})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["id"], format!("/subscriptions/{SUB}/resourceGroups/Data-RG"));
    assert_eq!(created.body["properties"]["provisioningState"], "Succeeded");
    let again = arm.put(&path, json!({"location": "westeurope", "tags": {"team": "data2"}})).await;
    assert_eq!(again.status, 200);
    // Names are case-insensitive: the same group.
    let got = arm.get(&format!("{}?api-version=2021-04-01", rg_path("data-rg"))).await;
    assert_eq!(got.body["tags"]["team"], "data2");
    let moved = arm.put(&path, json!({"location": "eastus"})).await;
    assert_eq!((moved.status, moved.code()), (400, "InvalidResourceGroupLocation"));
    let list = arm.get(&format!("/subscriptions/{SUB}/resourcegroups?api-version=2021-04-01")).await;
    assert_eq!(list.body["value"].as_array().map(Vec::len), Some(1));
    let bad = arm.put(&format!("{}?api-version=2021-04-01", rg_path("bad.")), json!({"location": "eastus"})).await;
    assert_eq!((bad.status, bad.code()), (400, "InvalidResourceGroup"));
    let no_loc = arm.put(&format!("{}?api-version=2021-04-01", rg_path("x")), json!({})).await;
    assert_eq!((no_loc.status, no_loc.code()), (400, "LocationRequired"));

    let deleting = arm.delete(&path).await;
    assert_eq!(deleting.status, 202);
    let location = deleting.header("location").expect("Location header").to_owned();
    assert!(deleting.header("retry-after").is_some());
    let done = arm.get(&location).await;
    assert_eq!(done.status, 200);
    let gone = arm.get(&path).await;
    assert_eq!((gone.status, gone.code()), (404, "ResourceGroupNotFound"));
    assert_eq!(
        arm.double.writes(),
        vec![
            "PUT /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Data-RG".to_owned(),
            "PUT /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Data-RG".to_owned(),
            format!("DELETE /subscriptions/{SUB}/resourceGroups/Data-RG")
        ]
    );
}

#[tokio::test]
async fn long_running_put_goes_updating_to_succeeded_over_polls() {
    let arm = Arm::new(Options { provisioning_polls: 3, ..Options::default() });
    arm.group("rg").await;
    let path = format!("{}/providers/Microsoft.Network/natGateways/nat?api-version=2024-05-01", rg_path("rg"));
    let a = arm.put(&path, json!({"location": "eastus", "sku": {"name": "Standard"}, "zones": ["1"]})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // The network provider reports Updating while it creates.
    assert_eq!(a.body["properties"]["provisioningState"], "Updating");
    assert_eq!(a.header("retry-after"), Some("1"));
    let op = a.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_owned();
    assert!(op.starts_with(&arm.double.url()), "{op}");
    let first = arm.get(&op).await;
    assert_eq!(first.body["status"], "InProgress");
    let key = format!("/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.network/natgateways/nat");
    assert_eq!(arm.double.snapshot()[&key]["properties"]["provisioningState"], "Updating");
    let second = arm.get(&op).await;
    assert_eq!(second.body["status"], "InProgress");
    let third = arm.get(&op).await;
    assert_eq!(third.body["status"], "Succeeded");
    let got = arm.get(&path).await;
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(got.body["type"], "Microsoft.Network/natGateways");
    assert_eq!(got.body["id"], format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/natGateways/nat"));

    let list = arm.get(&format!("{}/providers/Microsoft.Network/natGateways?api-version=2024-05-01", rg_path("rg"))).await;
    assert_eq!(list.body["value"][0]["name"], "nat");

    let del = arm.delete(&path).await;
    assert_eq!(del.status, 202);
    let location = del.header("location").expect("Location").to_owned();
    let mut polls = 0;
    loop {
        polls += 1;
        let p = arm.get(&location).await;
        if p.status != 202 {
            assert_eq!(p.status, 200);
            break;
        }
        assert!(polls < 10);
    }
    assert_eq!(polls, 3);
    let gone = arm.get(&path).await;
    assert_eq!((gone.status, gone.code()), (404, "ResourceNotFound"));
    let again = arm.delete(&path).await;
    assert_eq!(again.status, 204);
}

#[tokio::test]
async fn storage_account_create_answers_202_with_location_only_as_the_storage_provider_does() {
    let arm = Arm::new(Options { provisioning_polls: 2, ..Options::default() });
    arm.group("rg").await;
    let path = format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate1?api-version=2023-05-01", rg_path("rg"));
    let body = json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_ZRS"}});
    let a = arm.put(&path, body.clone()).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(a.body.is_null(), "empty body");
    assert!(a.header("azure-asyncoperation").is_none());
    let location = a.header("location").expect("Location").to_owned();
    // A PUT while it is created answers with the account as it is.
    let again = arm.put(&path, body.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["properties"]["provisioningState"], "Creating");
    let first = arm.get(&location).await;
    assert_eq!(first.status, 202);
    let done = arm.get(&location).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(done.body["properties"]["primaryEndpoints"]["blob"], "https://byocstate1.blob.core.windows.net/");
    // Updates and deletes are synchronous.
    let update =
        arm.put(&path, json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_ZRS"}, "tags": {"a": "b"}})).await;
    assert_eq!(update.status, 200);
    assert_eq!(update.body["properties"]["provisioningState"], "Succeeded");
    let del = arm.delete(&path).await;
    assert_eq!(del.status, 200);
    let gone = arm.get(&path).await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn resources_in_a_missing_group_or_under_a_missing_parent_are_refused() {
    let arm = Arm::new(Options::default());
    let path = format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1?api-version=2023-01-31", rg_path("nope"));
    let a = arm.put(&path, json!({"location": "eastus"})).await;
    assert_eq!((a.status, a.code()), (404, "ResourceGroupNotFound"));
    arm.group("rg").await;
    let child = format!("{}/providers/Microsoft.Network/virtualNetworks/missing/subnets/s1?api-version=2024-05-01", rg_path("rg"));
    let a = arm.put(&child, json!({"properties": {"addressPrefix": "10.0.0.0/24"}})).await;
    assert_eq!((a.status, a.code()), (404, "ParentResourceNotFound"));
    let unknown = arm
        .put(&format!("{}/providers/Microsoft.Network/virtualHubs/h?api-version=2024-05-01", rg_path("rg")), json!({"location": "eastus"}))
        .await;
    assert_eq!((unknown.status, unknown.code()), (400, "InvalidResourceType"));
    let _ = Method::Get;
}
