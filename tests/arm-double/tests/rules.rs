//! The fake refuses what ARM refuses, with ARM's codes, and fills in what ARM fills in.

mod common;

use arm_double::Options;
use common::{Arm, SUB, rg_path};
use serde_json::{Value, json};

const NET: &str = "api-version=2024-05-01";
const AKS: &str = "api-version=2025-01-01";
const STG: &str = "api-version=2023-05-01";
const MSI: &str = "api-version=2023-01-31";

fn net(rg: &str, rest: &str) -> String {
    format!("{}/providers/Microsoft.Network/{rest}?{NET}", rg_path(rg))
}

async fn fresh(polls: u32) -> Arm {
    let arm = Arm::new(Options { provisioning_polls: polls, ..Options::default() });
    arm.group("rg").await;
    arm
}

async fn vnet_with_subnet(arm: &Arm) -> String {
    arm.create(
        &net("rg", "virtualNetworks/vnet"),
        json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}}),
    )
    .await;
    let subnet = net("rg", "virtualNetworks/vnet/subnets/nodes");
    let s = arm.create(&subnet, json!({"properties": {"addressPrefix": "10.1.0.0/20"}})).await;
    assert_eq!(s.status, 200, "{}", s.body);
    s.body["id"].as_str().expect("subnet id").to_owned()
}

fn cluster(subnet: &str, pool: &str) -> Value {
    json!({
        "location": "eastus",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": "byoc-aks",
            "oidcIssuerProfile": {"enabled": true},
            "securityProfile": {"workloadIdentity": {"enabled": true}},
            "networkProfile": {"networkPlugin": "azure", "serviceCidr": "10.2.0.0/16", "dnsServiceIP": "10.2.0.10"},
            "agentPoolProfiles": [{"name": pool, "mode": "System", "count": 3, "vmSize": "Standard_D4s_v5", "vnetSubnetID": subnet}]
        }
    })
}

#[tokio::test]
async fn storage_account_names_follow_the_rule_and_are_globally_unique() {
    let arm = fresh(0).await;
    let bad = arm
        .put(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/Byoc-State?{STG}", rg_path("rg")),
            json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, "AccountNameInvalid"));
    let long = "a".repeat(25);
    let bad = arm
        .put(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/{long}?{STG}", rg_path("rg")),
            json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, "AccountNameInvalid"));
    let ok = arm
        .create(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate?{STG}", rg_path("rg")),
            json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
    assert_eq!(ok.body["properties"]["primaryEndpoints"]["blob"], "https://byocstate.blob.core.windows.net/");
    arm.group("other").await;
    let taken = arm
        .put(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate?{STG}", rg_path("other")),
            json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
    assert_eq!((taken.status, taken.code()), (409, "StorageAccountAlreadyTaken"));
    let no_sku = arm
        .put(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate2?{STG}", rg_path("rg")),
            json!({"location": "eastus", "kind": "StorageV2"}),
        )
        .await;
    assert_eq!(no_sku.status, 400);
}

#[tokio::test]
async fn container_names_are_3_to_63_without_double_hyphens() {
    let arm = fresh(0).await;
    let account = format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate", rg_path("rg"));
    let missing = arm.put(&format!("{account}/blobServices/default/containers/state?{STG}"), json!({})).await;
    assert_eq!((missing.status, missing.code()), (404, "ParentResourceNotFound"));
    arm.create(&format!("{account}?{STG}"), json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}})).await;
    for bad in ["ab", "a--b", "Upper", "-lead", &"c".repeat(64)] {
        let a = arm.put(&format!("{account}/blobServices/default/containers/{bad}?{STG}"), json!({"properties": {}})).await;
        assert_eq!((a.status, a.code()), (400, "InvalidResourceName"), "{bad}");
    }
    let ok = arm
        .put(&format!("{account}/blobServices/default/containers/hummock-001?{STG}"), json!({"properties": {"publicAccess": "None"}}))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(ok.body["etag"].is_string());
    assert_eq!(ok.body["type"], "Microsoft.Storage/storageAccounts/blobServices/containers");
}

#[tokio::test]
async fn tag_names_with_reserved_characters_are_refused() {
    let arm = fresh(0).await;
    let path = format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rw-id?{MSI}", rg_path("rg"));
    let a = arm.put(&path, json!({"location": "eastus", "tags": {"byoc.dev/env": "prod"}})).await;
    assert_eq!((a.status, a.code()), (400, "InvalidTagNameCharacters"));
    let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("t{i}"), json!("v"))).collect();
    let a = arm.put(&path, json!({"location": "eastus", "tags": many})).await;
    assert_eq!(a.status, 400);
    let rg = arm.put(&format!("{}?api-version=2021-04-01", rg_path("rg2")), json!({"location": "eastus", "tags": {"a?b": "x"}})).await;
    assert_eq!((rg.status, rg.code()), (400, "InvalidTagNameCharacters"));
    let ok = arm.put(&path, json!({"location": "eastus", "tags": {"byoc-env": "prod"}})).await;
    assert_eq!(ok.status, 201);
}

#[tokio::test]
async fn identities_get_client_and_principal_ids_that_stay() {
    let arm = fresh(0).await;
    let path = format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rw-compute?{MSI}", rg_path("rg"));
    let a = arm.put(&path, json!({"location": "eastus"})).await;
    assert_eq!(a.status, 201);
    let props = a.body["properties"].clone();
    assert_eq!(props["tenantId"], "00000000-0000-0000-0000-000000000002");
    assert!(props["clientId"].as_str().is_some_and(|c| c.len() == 36));
    assert!(props["principalId"].as_str().is_some_and(|c| c.len() == 36));
    assert_ne!(props["clientId"], props["principalId"]);
    let again = arm.put(&path, json!({"location": "eastus", "tags": {"x": "y"}, "properties": {"clientId": "overwritten?"}})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["properties"]["clientId"], props["clientId"]);
    let fic = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rw-compute/federatedIdentityCredentials/rw-fic?{MSI}",
        rg_path("rg")
    );
    let f = arm.put(&fic, json!({"properties": {"issuer": "https://eastus.oic.prod-aks.azure.com/t/c/", "subject": "system:serviceaccount:rw:compute", "audiences": ["api://AzureADTokenExchange"]}})).await;
    assert_eq!(f.status, 201, "{}", f.body);
    let dup = arm.put(&fic.replace("/rw-fic?", "/rw-fic2?"), json!({"properties": {"issuer": "https://eastus.oic.prod-aks.azure.com/t/c/", "subject": "system:serviceaccount:rw:compute", "audiences": ["api://AzureADTokenExchange"]}})).await;
    assert_eq!(dup.status, 409);
    let http = arm
        .put(
            &fic.replace("/rw-fic?", "/rw-fic3?"),
            json!({"properties": {"issuer": "http://x", "subject": "s", "audiences": ["api://AzureADTokenExchange"]}}),
        )
        .await;
    assert_eq!(http.status, 400);
    let moved = arm.put(&path, json!({"location": "westus"})).await;
    assert_eq!((moved.status, moved.code()), (400, "InvalidResourceLocation"));
}

#[tokio::test]
async fn nat_gateways_take_at_most_one_zone() {
    let arm = fresh(0).await;
    let a = arm.put(&net("rg", "natGateways/nat"), json!({"location": "eastus", "sku": {"name": "Standard"}, "zones": ["1", "2"]})).await;
    assert_eq!((a.status, a.code()), (400, "NatGatewayCannotHaveMultipleZones"));
    let basic_ip = arm
        .put(
            &net("rg", "publicIPAddresses/ip"),
            json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Dynamic"}}),
        )
        .await;
    assert_eq!((basic_ip.status, basic_ip.code()), (400, "StandardSkuPublicIPAddressesMustBeStatic"));
    let ip = arm
        .create(
            &net("rg", "publicIPAddresses/ip"),
            json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}}),
        )
        .await;
    let ip_id = ip.body["id"].as_str().unwrap().to_owned();
    let missing_ip = arm
        .put(
            &net("rg", "natGateways/nat"),
            json!({"location": "eastus", "zones": ["1"], "properties": {"publicIpAddresses": [{"id": format!("{ip_id}x")}]}}),
        )
        .await;
    assert_eq!((missing_ip.status, missing_ip.code()), (400, "InvalidResourceReference"));
    let nat = arm
        .create(
            &net("rg", "natGateways/nat"),
            json!({"location": "eastus", "zones": ["1"], "properties": {"publicIpAddresses": [{"id": ip_id}]}}),
        )
        .await;
    assert_eq!(nat.body["properties"]["provisioningState"], "Succeeded");
    let in_use = arm.delete(&net("rg", "publicIPAddresses/ip")).await;
    assert_eq!(in_use.status, 400);
}

#[tokio::test]
async fn aks_pool_names_and_dns_service_ip_are_checked() {
    let arm = fresh(0).await;
    let subnet = vnet_with_subnet(&arm).await;
    let path = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?{AKS}", rg_path("rg"));
    for bad in ["System", "sys-pool", "1system", "abcdefghijklm"] {
        let a = arm.put(&path, cluster(&subnet, bad)).await;
        assert_eq!((a.status, a.code()), (400, "InvalidParameter"), "pool {bad}: {}", a.body);
    }
    let mut outside = cluster(&subnet, "system");
    outside["properties"]["networkProfile"]["dnsServiceIP"] = json!("10.3.0.10");
    let a = arm.put(&path, outside).await;
    assert_eq!((a.status, a.code()), (400, "InvalidParameter"));
    assert!(a.body["error"]["message"].as_str().unwrap_or("").contains("dnsServiceIP"));
    let mut overlapping = cluster(&subnet, "system");
    overlapping["properties"]["networkProfile"] = json!({"serviceCidr": "10.1.0.0/16", "dnsServiceIP": "10.1.0.10"});
    let a = arm.put(&path, overlapping).await;
    assert_eq!((a.status, a.code()), (400, "ServiceCidrOverlapExistingSubnetsCidr"));
    let mut user_only = cluster(&subnet, "system");
    user_only["properties"]["agentPoolProfiles"][0]["mode"] = json!("User");
    let a = arm.put(&path, user_only).await;
    assert_eq!((a.status, a.code()), (400, "MustDefineAtLeastOneSystemPool"));
}

#[tokio::test]
async fn managed_clusters_report_oidc_issuer_and_kubelet_identity_and_own_their_pools() {
    let arm = fresh(2).await;
    let subnet = vnet_with_subnet(&arm).await;
    let path = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?{AKS}", rg_path("rg"));
    let c = arm.create(&path, cluster(&subnet, "system")).await;
    let p = &c.body["properties"];
    assert!(p["oidcIssuerProfile"]["issuerURL"].as_str().is_some_and(|u| u.starts_with("https://eastus.oic.prod-aks.azure.com/")), "{p}");
    assert!(p["identityProfile"]["kubeletidentity"]["clientId"].is_string());
    assert!(p["identityProfile"]["kubeletidentity"]["objectId"].is_string());
    assert_eq!(p["agentPoolProfiles"][0]["name"], "system");
    assert_eq!(p["agentPoolProfiles"][0]["count"], 3);
    assert_eq!(p["nodeResourceGroup"], "MC_rg_byoc_eastus");
    assert!(c.body["identity"]["principalId"].is_string());
    // A second pool through the agentPools child.
    let pool = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc/agentPools/rwcompute?{AKS}", rg_path("rg"));
    let a =
        arm.create(&pool, json!({"properties": {"mode": "User", "count": 2, "vmSize": "Standard_E8s_v5", "vnetSubnetID": subnet}})).await;
    assert_eq!(a.body["properties"]["provisioningState"], "Succeeded");
    let c = arm.get(&path).await;
    assert_eq!(c.body["properties"]["agentPoolProfiles"].as_array().map(Vec::len), Some(2));
    let list = arm.get(&format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc/agentPools?{AKS}", rg_path("rg"))).await;
    assert_eq!(list.body["value"].as_array().map(Vec::len), Some(2));
    // The last system pool cannot go.
    let sys =
        arm.delete(&format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc/agentPools/system?{AKS}", rg_path("rg"))).await;
    assert_eq!(sys.status, 400);
    // The issuer stays across updates.
    let issuer = c.body["properties"]["oidcIssuerProfile"]["issuerURL"].clone();
    let updated = arm.create(&path, cluster(&subnet, "system")).await;
    assert_eq!(updated.body["properties"]["oidcIssuerProfile"]["issuerURL"], issuer);
}

#[tokio::test]
async fn a_subnet_in_use_cannot_be_deleted_nor_dropped_from_its_vnet() {
    let arm = fresh(0).await;
    let subnet = vnet_with_subnet(&arm).await;
    let path = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?{AKS}", rg_path("rg"));
    arm.create(&path, cluster(&subnet, "system")).await;
    let a = arm.delete(&net("rg", "virtualNetworks/vnet/subnets/nodes")).await;
    assert_eq!((a.status, a.code()), (400, "InUseSubnetCannotBeDeleted"));
    // A VNet PUT without its subnets would delete them: refused while one is in use.
    let a = arm
        .put(
            &net("rg", "virtualNetworks/vnet"),
            json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "InUseSubnetCannotBeDeleted"));
    let a = arm.delete(&net("rg", "virtualNetworks/vnet")).await;
    assert_eq!((a.status, a.code()), (400, "InUseSubnetCannotBeDeleted"));
    // With the subnet listed the VNet PUT is fine, and GET shows the subnet inline.
    let v = arm.create(&net("rg", "virtualNetworks/vnet"), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}, "subnets": [{"name": "nodes", "properties": {"addressPrefix": "10.1.0.0/20"}}]}})).await;
    assert_eq!(v.body["properties"]["subnets"][0]["name"], "nodes");
    // Once the cluster is gone the subnet can go.
    let node_rg = format!("/subscriptions/{SUB}/resourcegroups/mc_rg_byoc_eastus");
    assert!(arm.double.snapshot().get(&node_rg).is_some(), "the node resource group exists with the cluster");
    let d = arm.delete(&path).await;
    assert_eq!(d.status, 202);
    assert!(arm.double.snapshot().get(&node_rg).is_none(), "the node resource group goes with the cluster");
    let a = arm.delete(&net("rg", "virtualNetworks/vnet/subnets/nodes")).await;
    assert_eq!(a.status, 202, "{}", a.body);
}

#[tokio::test]
async fn a_vnet_put_without_unused_subnets_deletes_them_as_arm_does() {
    let arm = fresh(0).await;
    vnet_with_subnet(&arm).await;
    arm.create(
        &net("rg", "virtualNetworks/vnet"),
        json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}}),
    )
    .await;
    let s = arm.get(&net("rg", "virtualNetworks/vnet/subnets/nodes")).await;
    assert_eq!((s.status, s.code()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn subnets_must_fit_their_vnet_and_not_overlap() {
    let arm = fresh(0).await;
    vnet_with_subnet(&arm).await;
    let outside = arm.put(&net("rg", "virtualNetworks/vnet/subnets/x"), json!({"properties": {"addressPrefix": "10.9.0.0/24"}})).await;
    assert_eq!((outside.status, outside.code()), (400, "NetcfgSubnetRangeOutsideVnet"));
    let overlap = arm.put(&net("rg", "virtualNetworks/vnet/subnets/x"), json!({"properties": {"addressPrefix": "10.1.8.0/24"}})).await;
    assert_eq!((overlap.status, overlap.code()), (400, "NetcfgSubnetRangesOverlap"));
    let bad = arm.put(&net("rg", "virtualNetworks/vnet/subnets/x"), json!({"properties": {"addressPrefix": "10.1.16.1/24"}})).await;
    assert_eq!((bad.status, bad.code()), (400, "InvalidAddressPrefixFormat"));
    let no_nsg = arm.put(&net("rg", "virtualNetworks/vnet/subnets/x"), json!({"properties": {"addressPrefix": "10.1.16.0/24", "networkSecurityGroup": {"id": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/none")}}})).await;
    assert_eq!((no_nsg.status, no_nsg.code()), (400, "InvalidResourceReference"));
}

#[tokio::test]
async fn a_put_while_provisioning_is_refused_with_another_operation_in_progress() {
    let arm = fresh(3).await;
    let path = net("rg", "virtualNetworks/vnet");
    let body = json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}});
    let first = arm.put(&path, body.clone()).await;
    assert_eq!(first.status, 201);
    let second = arm.put(&path, body.clone()).await;
    assert_eq!((second.status, second.code()), (409, "AnotherOperationInProgress"));
    let op = first.header("azure-asyncoperation").unwrap().to_owned();
    assert_eq!(arm.wait(&op).await, "Succeeded");
    let third = arm.put(&path, body).await;
    assert_eq!(third.status, 200);
}

#[tokio::test]
async fn nsg_rules_are_checked() {
    let arm = fresh(0).await;
    let rule = |name: &str, priority: i64| json!({"name": name, "properties": {"priority": priority, "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "4566"}});
    let a = arm
        .put(&net("rg", "networkSecurityGroups/nsg"), json!({"location": "eastus", "properties": {"securityRules": [rule("a", 99)]}}))
        .await;
    assert_eq!((a.status, a.code()), (400, "SecurityRuleInvalidPriority"));
    let a = arm
        .put(
            &net("rg", "networkSecurityGroups/nsg"),
            json!({"location": "eastus", "properties": {"securityRules": [rule("a", 100), rule("b", 100)]}}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "SecurityRuleConflict"));
    let a = arm
        .put(
            &net("rg", "networkSecurityGroups/nsg"),
            json!({"location": "eastus", "properties": {"securityRules": [rule("a", 100), rule("b", 110)]}}),
        )
        .await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn a_write_while_a_parent_or_child_is_provisioning_is_refused() {
    let arm = fresh(2).await;
    let vnet = net("rg", "virtualNetworks/vnet");
    let first = arm.put(&vnet, json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}})).await;
    assert_eq!(first.status, 201);
    let subnet = arm.put(&net("rg", "virtualNetworks/vnet/subnets/nodes"), json!({"properties": {"addressPrefix": "10.1.0.0/20"}})).await;
    assert_eq!((subnet.status, subnet.code()), (409, "AnotherOperationInProgress"));
    let op = first.header("azure-asyncoperation").unwrap().to_owned();
    arm.wait(&op).await;
    let subnet = arm.put(&net("rg", "virtualNetworks/vnet/subnets/nodes"), json!({"properties": {"addressPrefix": "10.1.0.0/20"}})).await;
    assert_eq!(subnet.status, 201, "{}", subnet.body);
    let del = arm.delete(&vnet).await;
    assert_eq!((del.status, del.code()), (409, "AnotherOperationInProgress"), "the subnet is still Updating");

    // A group being deleted takes no new resources.
    arm.group("gone").await;
    let d = arm.delete(&format!("{}?api-version=2021-04-01", rg_path("gone"))).await;
    assert_eq!(d.status, 202);
    let a = arm.put(&net("gone", "networkSecurityGroups/nsg"), json!({"location": "eastus"})).await;
    assert_eq!((a.status, a.code()), (409, "ResourceGroupBeingDeleted"));
}

#[tokio::test]
async fn aks_takes_the_contract_and_the_graph_api_versions_only() {
    let arm = fresh(0).await;
    for (version, status) in [("2025-01-01", 404), ("2025-05-01", 404), ("2024-09-01", 400), ("2025-05-02-preview", 400)] {
        let a =
            arm.get(&format!("{}/providers/Microsoft.ContainerService/managedClusters/none?api-version={version}", rg_path("rg"))).await;
        assert_eq!(a.status, status, "{version}: {}", a.body);
    }
}

#[tokio::test]
async fn api_server_vnet_integration_needs_a_delegated_subnet_and_pools_well_formed_taints() {
    let arm = fresh(0).await;
    let nodes = vnet_with_subnet(&arm).await;
    let plain =
        arm.create(&net("rg", "virtualNetworks/vnet/subnets/apiserver"), json!({"properties": {"addressPrefix": "10.1.16.0/28"}})).await;
    let plain_id = plain.body["id"].as_str().unwrap().to_owned();
    let path = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?{AKS}", rg_path("rg"));
    let mut c = cluster(&nodes, "system");
    c["properties"]["apiServerAccessProfile"] = json!({"enableVnetIntegration": true, "enablePrivateCluster": true, "subnetId": plain_id});
    let a = arm.put(&path, c.clone()).await;
    assert_eq!((a.status, a.code()), (400, "InvalidParameter"));
    assert!(a.body["error"]["message"].as_str().unwrap_or("").contains("delegated"), "{}", a.body);
    arm.create(&net("rg", "virtualNetworks/vnet/subnets/apiserver"), json!({"properties": {"addressPrefix": "10.1.16.0/28", "delegations": [{"name": "aks", "properties": {"serviceName": "Microsoft.ContainerService/managedClusters"}}]}})).await;
    let mut tainted = c.clone();
    tainted["properties"]["agentPoolProfiles"][0]["nodeTaints"] = json!(["CriticalAddonsOnly=true:NoScheduleX"]);
    let a = arm.put(&path, tainted).await;
    assert_eq!((a.status, a.code()), (400, "InvalidParameter"));
    c["properties"]["agentPoolProfiles"][0]["nodeTaints"] = json!(["CriticalAddonsOnly=true:NoSchedule"]);
    let ok = arm.put(&path, c).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

#[tokio::test]
async fn private_endpoints_need_their_subnet_target_and_one_valid_group() {
    let arm = fresh(0).await;
    let subnet = vnet_with_subnet(&arm).await;
    let account = arm
        .create(
            &format!("{}/providers/Microsoft.Storage/storageAccounts/byocdata?{STG}", rg_path("rg")),
            json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_ZRS"}}),
        )
        .await;
    let target = account.body["id"].as_str().unwrap().to_owned();
    let pe = |group: &str, target: &str| json!({"location": "eastus", "properties": {"subnet": {"id": subnet}, "privateLinkServiceConnections": [{"name": "blob", "properties": {"privateLinkServiceId": target, "groupIds": [group]}}]}});
    let a = arm.put(&net("rg", "privateEndpoints/pe-data"), pe("blobs", &target)).await;
    assert_eq!((a.status, a.code()), (400, "PrivateEndpointBadRequest"));
    let a = arm.put(&net("rg", "privateEndpoints/pe-data"), pe("blob", &format!("{target}x"))).await;
    assert_eq!((a.status, a.code()), (400, "InvalidResourceReference"));
    let a = arm.create(&net("rg", "privateEndpoints/pe-data"), pe("blob", &target)).await;
    assert_eq!(a.body["properties"]["provisioningState"], "Succeeded");
    // Now the subnet is in use by the endpoint.
    let d = arm.delete(&net("rg", "virtualNetworks/vnet/subnets/nodes")).await;
    assert_eq!((d.status, d.code()), (400, "InUseSubnetCannotBeDeleted"));
}

#[tokio::test]
async fn concurrent_federated_credential_writes_on_one_identity_collide_sequential_ones_do_not() {
    let arm = fresh(0).await;
    let identity = format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rw-compute", rg_path("rg"));
    assert_eq!(arm.put(&format!("{identity}?{MSI}"), json!({"location": "eastus"})).await.status, 201);
    let fic = |name: &str, subject: &str| {
        (
            format!("{identity}/federatedIdentityCredentials/{name}?{MSI}"),
            json!({"properties": {"issuer": "https://eastus.oic.prod-aks.azure.com/t/c/", "subject": subject, "audiences": ["api://AzureADTokenExchange"]}}),
        )
    };
    // Long enough that the second request surely arrives while the first holds the identity.
    arm.double.set_fic_write_time(std::time::Duration::from_secs(2));
    let (p1, b1) = fic("meta", "system:serviceaccount:rw:meta");
    let (p2, b2) = fic("compute", "system:serviceaccount:rw:compute");
    let (a, b) = tokio::join!(arm.put(&p1, b1.clone()), arm.put(&p2, b2.clone()));
    let mut codes = vec![(a.status, a.code().to_owned()), (b.status, b.code().to_owned())];
    codes.sort();
    assert_eq!(codes, vec![(201, String::new()), (409, "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity".to_owned())]);
    // One after the other both go through.
    arm.double.set_fic_write_time(std::time::Duration::from_millis(150));
    let (p3, b3) = fic("frontend", "system:serviceaccount:rw:frontend");
    assert_eq!(arm.put(&p3, b3).await.status, 201);
    let loser = if a.status == 409 { (p1, b1) } else { (p2, b2) };
    assert_eq!(arm.put(&loser.0, loser.1).await.status, 201);
}

#[tokio::test]
async fn storage_name_availability_and_subscription_wide_lists() {
    let arm = fresh(0).await;
    let check = format!("/subscriptions/{SUB}/providers/Microsoft.Storage/checkNameAvailability?{STG}");
    let ask = |name: &str| json!({"name": name, "type": "Microsoft.Storage/storageAccounts"});
    let free = arm.call(azure_core::http::Method::Post, &check, Some(ask("byocstate")), &[]).await;
    assert_eq!(free.body["nameAvailable"], true, "{}", free.body);
    let invalid = arm.call(azure_core::http::Method::Post, &check, Some(ask("Byoc_State")), &[]).await;
    assert_eq!((invalid.body["nameAvailable"].as_bool(), invalid.body["reason"].as_str()), (Some(false), Some("AccountNameInvalid")));
    arm.create(
        &format!("{}/providers/Microsoft.Storage/storageAccounts/byocstate?{STG}", rg_path("rg")),
        json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    let taken = arm.call(azure_core::http::Method::Post, &check, Some(ask("byocstate")), &[]).await;
    assert_eq!((taken.body["nameAvailable"].as_bool(), taken.body["reason"].as_str()), (Some(false), Some("AlreadyExists")));
    let all = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?{STG}")).await;
    assert_eq!(all.body["value"].as_array().map(Vec::len), Some(1), "{}", all.body);
    let wrong = arm.get(&format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?api-version=2021-04-01")).await;
    assert_eq!((wrong.status, wrong.code()), (400, "InvalidApiVersionParameter"));
}

#[tokio::test]
async fn user_assigned_nat_gateway_outbound_needs_the_nat_gateway_on_the_subnet() {
    let arm = fresh(0).await;
    let subnet = vnet_with_subnet(&arm).await;
    let path = format!("{}/providers/Microsoft.ContainerService/managedClusters/byoc?{AKS}", rg_path("rg"));
    let mut c = cluster(&subnet, "system");
    c["properties"]["networkProfile"]["outboundType"] = json!("userAssignedNATGateway");
    let a = arm.put(&path, c.clone()).await;
    assert_eq!((a.status, a.code()), (400, "InvalidParameter"));
    assert!(a.body["error"]["message"].as_str().unwrap_or("").contains("NAT gateway"), "{}", a.body);
    let nat = arm.create(&net("rg", "natGateways/nat"), json!({"location": "eastus", "zones": ["1"]})).await;
    let nat_id = nat.body["id"].as_str().unwrap().to_owned();
    arm.create(
        &net("rg", "virtualNetworks/vnet/subnets/nodes"),
        json!({"properties": {"addressPrefix": "10.1.0.0/20", "natGateway": {"id": nat_id}}}),
    )
    .await;
    let ok = arm.put(&path, c).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    // The NAT gateway cannot go while a subnet uses it.
    let d = arm.delete(&net("rg", "natGateways/nat")).await;
    assert_eq!(d.status, 400);
}

/// Private DNS: zones and links are global, at the privatedns api-version only; a link
/// names an existing VNet, a private endpoint's zone group an existing zone.
#[tokio::test]
async fn private_dns_zones_links_and_zone_groups_name_what_exists() {
    const DNS: &str = "api-version=2024-06-01";
    let arm = fresh(1).await;
    let subnet = vnet_with_subnet(&arm).await;
    let vnet = subnet.rsplit_once("/subnets/").expect("subnet of a vnet").0.to_owned();
    let zone_path =
        |q: &str| format!("{}/providers/Microsoft.Network/privateDnsZones/privatelink.blob.core.windows.net?{q}", rg_path("rg"));
    // Microsoft.Network's general api-version is not one privateDnsZones has.
    let wrong = arm.put(&zone_path(NET), json!({"location": "global"})).await;
    assert_eq!((wrong.status, wrong.code()), (400, "NoRegisteredProviderFound"), "{}", wrong.body);
    let regional = arm.put(&zone_path(DNS), json!({"location": "eastus"})).await;
    assert_eq!((regional.status, regional.code()), (400, "LocationNotAvailableForResourceType"), "{}", regional.body);
    let bad_name = arm
        .put(&format!("{}/providers/Microsoft.Network/privateDnsZones/nodots?{DNS}", rg_path("rg")), json!({"location": "global"}))
        .await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.body);

    let link = |zone: &str, target: &str| {
        (
            format!("{}/providers/Microsoft.Network/privateDnsZones/{zone}/virtualNetworkLinks/link?{DNS}", rg_path("rg")),
            json!({"location": "global", "properties": {"virtualNetwork": {"id": target}, "registrationEnabled": false}}),
        )
    };
    // A link under a zone that does not exist yet.
    let (p, b) = link("privatelink.blob.core.windows.net", &vnet);
    assert_eq!(arm.put(&p, b).await.code(), "ParentResourceNotFound");
    let zone = arm.create(&zone_path(DNS), json!({"location": "global", "tags": {"byoc-environment": "e"}})).await;
    assert!(zone.status == 200 || zone.status == 201, "{}", zone.body);
    let zone_id = zone.body["id"].as_str().expect("zone id").to_owned();
    let (p, b) = link("privatelink.blob.core.windows.net", &format!("{}/providers/Microsoft.Network/virtualNetworks/gone", rg_path("rg")));
    let missing_vnet = arm.put(&p, b).await;
    assert_eq!((missing_vnet.status, missing_vnet.code()), (400, "BadRequest"), "{}", missing_vnet.body);
    let (p, b) = link("privatelink.blob.core.windows.net", &vnet);
    let made = arm.create(&p, b).await;
    assert_eq!(made.body["properties"]["registrationEnabled"], json!(false), "{}", made.body);

    // A private endpoint to a storage account, then its zone group.
    let account = format!("{}/providers/Microsoft.Storage/storageAccounts/acct1?{STG}", rg_path("rg"));
    let a = arm.create(&account, json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}})).await;
    assert!(a.status < 300, "{}", a.body);
    let account_id = format!("{}/providers/Microsoft.Storage/storageAccounts/acct1", rg_path("rg"));
    let pe = net("rg", "privateEndpoints/pe");
    let e = arm
        .create(
            &pe,
            json!({"location": "eastus", "properties": {"subnet": {"id": subnet}, "privateLinkServiceConnections": [
                {"name": "c", "properties": {"privateLinkServiceId": account_id, "groupIds": ["blob"]}}]}}),
        )
        .await;
    assert!(e.status < 300, "{}", e.body);
    let group = net("rg", "privateEndpoints/pe/privateDnsZoneGroups/pe");
    let config =
        |zone: &str| json!({"properties": {"privateDnsZoneConfigs": [{"name": "blob", "properties": {"privateDnsZoneId": zone}}]}});
    let nowhere = format!("{}/providers/Microsoft.Network/privateDnsZones/privatelink.dfs.core.windows.net", rg_path("rg"));
    let refused = arm.put(&group, config(&nowhere)).await;
    assert_eq!((refused.status, refused.code()), (400, "InvalidPrivateDnsZoneIds"), "{}", refused.body);
    let ok = arm.create(&group, config(&zone_id)).await;
    assert!(ok.status < 300, "{}", ok.body);
}
