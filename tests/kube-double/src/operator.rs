//! A stand-in for the risingwave-operator, for trying `byoc run` by hand against the
//! double (the demo): whenever a `RisingWave`'s generation moves past the status it last
//! wrote, it reports the cluster Running through the status subresource, as field manager
//! `risingwave-operator`, the way the real operator does once its pods are up. It creates
//! no pods and no Services: the demo's routes name their backends.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

/// Polls every `every` until `rounds` have passed (bounded: it stops by itself).
pub async fn run(client: kube::Client, every: Duration, rounds: u64) {
    let resource = ApiResource {
        group: "risingwave.risingwavelabs.com".into(),
        version: "v1alpha1".into(),
        api_version: "risingwave.risingwavelabs.com/v1alpha1".into(),
        kind: "RisingWave".into(),
        plural: "risingwaves".into(),
    };
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    for _ in 0..rounds {
        if let Ok(list) = all.list(&ListParams::default()).await {
            for rw in list.items {
                let (Some(name), Some(ns)) = (rw.metadata.name.clone(), rw.metadata.namespace.clone()) else { continue };
                let generation = rw.metadata.generation.unwrap_or(0);
                let observed = rw.data.pointer("/status/observedGeneration").and_then(serde_json::Value::as_i64);
                if observed == Some(generation) {
                    continue;
                }
                let status = json!({"status": {
                    "observedGeneration": generation,
                    "conditions": [
                        {"type": "Running", "status": "True", "message": ""},
                        {"type": "Upgrading", "status": "False", "message": ""},
                    ],
                }});
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
                let params = PatchParams { field_manager: Some("risingwave-operator".into()), ..PatchParams::default() };
                let _ = api.patch_status(&name, &params, &Patch::Merge(status)).await;
            }
        }
        tokio::time::sleep(every).await;
    }
}
