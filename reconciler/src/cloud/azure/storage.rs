//! Microsoft.Storage ([`api::STORAGE`]): the data and state storage accounts (shared-key
//! access, anonymous blob access and public network access off, TLS 1.2 at least, HTTPS
//! only) and one blob container in each. Containers take no tags: they are ours because
//! they are in our tagged accounts.

use serde_json::{Value as Json, json};

use super::{Azure, Found, Refs, api, at, found_json, resolve, text};
use crate::cloud::CloudError;
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Settings of an account that someone else may change, graph name -> ARM property.
const SETTINGS: &[(&str, &str)] = &[
    ("allowBlobPublicAccess", "allowBlobPublicAccess"),
    ("allowSharedKeyAccess", "allowSharedKeyAccess"),
    ("publicNetworkAccess", "publicNetworkAccess"),
    ("minimumTlsVersion", "minimumTlsVersion"),
    ("httpsOnly", "supportsHttpsTrafficOnly"),
];

fn account_live(account: &Json) -> Map {
    let mut m = Map::new();
    for (ours, theirs) in SETTINGS {
        if let Some(v) = at(account, &format!("properties.{theirs}")).and_then(Value::from_json) {
            m.insert(*ours, v);
        }
    }
    m
}

/// The management policy of the graph's `lifecycle` rules: each deletes blob versions
/// `daysAfterNoncurrentVersionCreated` days after they stopped being current (ARM's
/// `actions.version.delete.daysAfterCreationGreaterThan`: a version is created when it
/// stops being the current blob). Block blobs only, as lifecycle rules require a blob type.
fn management_policy(rules: &[Value]) -> Json {
    let rules: Vec<Json> = rules
        .iter()
        .filter_map(|rule| {
            let Value::Map(m) = rule else { return None };
            let days = match m.get("daysAfterNoncurrentVersionCreated") {
                Some(Value::Int(d)) => *d,
                _ => return None,
            };
            Some(json!({
                "enabled": true,
                "name": m.get("name").and_then(Value::as_str).unwrap_or_default(),
                "type": "Lifecycle",
                "definition": {
                    "actions": {"version": {"delete": {"daysAfterCreationGreaterThan": days}}},
                    "filters": {"blobTypes": ["blockBlob"]},
                },
            }))
        })
        .collect();
    json!({"properties": {"policy": {"rules": rules}}})
}

/// A management policy read back as the graph's `lifecycle` (only enabled rules that delete
/// noncurrent versions; anything else someone added shows as a difference).
fn lifecycle_live(policy: &Json) -> Value {
    let rules = at(policy, "properties.policy.rules").and_then(Json::as_array).cloned().unwrap_or_default();
    Value::List(
        rules
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("name", Value::from(r.get("name").and_then(Json::as_str).unwrap_or_default()));
                let days = at(r, "definition.actions.version.delete.daysAfterCreationGreaterThan").and_then(Json::as_i64);
                let enabled = r.get("enabled").and_then(Json::as_bool).unwrap_or(false);
                m.insert("action", Value::from(if days.is_some() && enabled { "Delete" } else { "None" }));
                m.insert("daysAfterNoncurrentVersionCreated", Value::Int(days.unwrap_or(0)));
                Value::Map(m)
            })
            .collect(),
    )
}

impl Azure {
    /// Blob versioning (`blobServices/default`) and the lifecycle rules
    /// (`managementPolicies/default`) of an account, as the graph names them.
    async fn blob_settings(&self, account_id: &str, live: &mut Map) -> Result<(), CloudError> {
        let blob = self.arm.get("GET blobServices", &format!("{account_id}/blobServices/default"), api::STORAGE).await?;
        if let Some(b) = blob {
            live.insert("versioning", Value::Bool(at(&b, "properties.isVersioningEnabled").and_then(Json::as_bool).unwrap_or(false)));
        }
        match self.arm.get("GET managementPolicies", &format!("{account_id}/managementPolicies/default"), api::STORAGE).await? {
            Some(p) => live.insert("lifecycle", lifecycle_live(&p)),
            None => live.insert("lifecycle", Value::List(Vec::new())),
        };
        Ok(())
    }

    pub(super) async fn observe_storage(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let accounts = self.observe_type(Kind::AzureStorageAccount, "Microsoft.Storage/storageAccounts", api::STORAGE, out).await?;
        for (id, account) in &accounts {
            if let Some(f) = out.iter_mut().find(|f| &f.id == id) {
                f.live = account_live(account);
                f.outputs.insert("name".into(), account.get("name").and_then(Json::as_str).unwrap_or_default().to_owned());
            }
            let account_id = account.get("id").and_then(Json::as_str).unwrap_or_default();
            if let Some(f) = out.iter_mut().find(|f| &f.id == id) {
                self.blob_settings(account_id, &mut f.live).await?;
            }
            let path = format!("{account_id}/blobServices/default/containers");
            for c in self.arm.list("list containers", &path, api::STORAGE).await? {
                let name = c.get("name").and_then(Json::as_str).unwrap_or_default();
                let cid = self.known(Kind::AzureBlobContainer, &c).unwrap_or_else(|| ResourceId::new(Kind::AzureBlobContainer, name));
                out.push(found_json(cid, Kind::AzureBlobContainer, &c));
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_account(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let path = format!("{}/providers/Microsoft.Storage/storageAccounts/{name}", self.rg_path());
        let flag = |k: &str| matches!(r.properties.get(k), Some(Value::Bool(true)));
        let body = json!({
            "kind": text(r, "kind"),
            "sku": {"name": text(r, "sku")},
            "properties": {
                "allowBlobPublicAccess": flag("allowBlobPublicAccess"),
                "allowSharedKeyAccess": flag("allowSharedKeyAccess"),
                "publicNetworkAccess": text(r, "publicNetworkAccess"),
                "minimumTlsVersion": text(r, "minimumTlsVersion"),
                "supportsHttpsTrafficOnly": flag("httpsOnly"),
            },
        });
        let account = self.put_tagged(r, existing, &path, api::STORAGE, body).await?;
        // Versioning before the policy: a rule on versions needs versions to act on.
        let blob = json!({"properties": {"isVersioningEnabled": flag("versioning")}});
        self.arm.put(&format!("PUT blobServices for {}", r.id), &format!("{path}/blobServices/default"), api::STORAGE, &blob).await?;
        let policy_path = format!("{path}/managementPolicies/default");
        match r.properties.get("lifecycle") {
            Some(Value::List(rules)) if !rules.is_empty() => {
                self.arm
                    .put(&format!("PUT managementPolicies for {}", r.id), &policy_path, api::STORAGE, &management_policy(rules))
                    .await?;
            }
            // No rules wanted (the state account): none are written.
            _ => {}
        }
        let mut f = found_json(r.id.clone(), r.kind, &account);
        f.live = account_live(&account);
        let account_id = account.get("id").and_then(Json::as_str).unwrap_or(&path).to_owned();
        self.blob_settings(&account_id, &mut f.live).await?;
        f.outputs.insert("name".into(), name.to_owned());
        Ok(f)
    }

    pub(super) async fn ensure_container(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let account = resolve(refs, r, "account")?;
        let path = format!("{}/blobServices/default/containers/{}", account.cloud_id, text(r, "name"));
        let body = json!({"properties": {"publicAccess": text(r, "publicAccess")}});
        let c = self.arm.put(&format!("PUT container for {}", r.id), &path, api::STORAGE, &body).await?;
        Ok(found_json(r.id.clone(), r.kind, &c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_settings_read_back_under_the_graphs_names() {
        let live = account_live(
            &json!({"properties": {"allowSharedKeyAccess": true, "supportsHttpsTrafficOnly": true, "minimumTlsVersion": "TLS1_0"}}),
        );
        assert_eq!(live.get("allowSharedKeyAccess"), Some(&Value::Bool(true)));
        assert_eq!(live.get("httpsOnly"), Some(&Value::Bool(true)));
        assert_eq!(live.get("minimumTlsVersion"), Some(&Value::from("TLS1_0")));
        assert_eq!(live.get("publicNetworkAccess"), None);
    }

    #[test]
    fn azure_lifecycle_rules_read_back_as_written_and_a_changed_day_count_differs() {
        let rules = vec![Value::map([
            ("name", "delete-noncurrent-versions".into()),
            ("action", "Delete".into()),
            ("daysAfterNoncurrentVersionCreated", 7u32.into()),
        ])];
        let mut policy = management_policy(&rules);
        assert_eq!(
            policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"],
            json!(7)
        );
        assert_eq!(lifecycle_live(&policy), Value::List(rules.clone()));
        policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"] =
            json!(30);
        assert_ne!(lifecycle_live(&policy), Value::List(rules.clone()));
        policy["properties"]["policy"]["rules"][0]["enabled"] = json!(false);
        policy["properties"]["policy"]["rules"][0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"] = json!(7);
        assert_ne!(lifecycle_live(&policy), Value::List(rules), "a disabled rule deletes nothing");
    }
}
