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

impl Azure {
    pub(super) async fn observe_storage(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let accounts = self.observe_type(Kind::AzureStorageAccount, "Microsoft.Storage/storageAccounts", api::STORAGE, out).await?;
        for (id, account) in &accounts {
            if let Some(f) = out.iter_mut().find(|f| &f.id == id) {
                f.live = account_live(account);
                f.outputs.insert("name".into(), account.get("name").and_then(Json::as_str).unwrap_or_default().to_owned());
            }
            let account_id = account.get("id").and_then(Json::as_str).unwrap_or_default();
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
        let mut f = found_json(r.id.clone(), r.kind, &account);
        f.live = account_live(&account);
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
}
