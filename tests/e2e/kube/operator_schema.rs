//! The `RisingWave` objects byoc applies, judged by the risingwave-operator's real CRD
//! (tests/fixtures/risingwave-operator) loaded into the API double: for every cloud's
//! example, the object a real API server stores is exactly the object sent, field by
//! field, so nothing byoc sets is pruned away (a field in the wrong place would be dropped
//! silently and the operator would never see it). The double's pruning and refusals are
//! shown to bite on the mistakes they exist to catch.

use std::collections::BTreeMap;

use byoc::k8s::objects::{ObjectKind, desired};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::support::{double, example};

/// Azure assigns an identity's client id on creation; the cloud inventory holds it.
fn outputs(specs: &byoc::spec::Specs) -> BTreeMap<String, String> {
    specs
        .clusters
        .iter()
        .map(|c| (format!("azure.managed-identity/rw-{}", c.name), "00000000-0000-4000-8000-000000000001".to_owned()))
        .collect()
}

async fn apply(client: &kube::Client, kind: ObjectKind, ns: Option<&str>, name: &str, body: &Value) -> Result<Value, kube::Error> {
    let ar = kind.api_resource();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let stored = api.patch(name, &PatchParams::apply("byoc"), &Patch::Apply(body)).await?;
    Ok(serde_json::to_value(stored).expect("json"))
}

/// Every field of `sent` with its value in `stored` (which may hold more: uid, ...).
fn missing(sent: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => missing(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k} was pruned")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                missing(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: sent {a}, stored {b}")),
        _ => {}
    }
}

#[tokio::test]
async fn every_clouds_risingwave_object_survives_the_operators_schema_unchanged() {
    for cloud in ["aws", "gcp", "azure"] {
        let d = double();
        let client = d.client();
        let specs = example(cloud);
        let clusters = desired(&specs, &outputs(&specs)).expect("objects");
        assert!(!clusters.is_empty(), "{cloud}: the example has clusters");
        for c in &clusters {
            for o in &c.objects {
                let stored = apply(&client, o.kind, o.namespace.as_deref(), &o.name, &o.body)
                    .await
                    .unwrap_or_else(|e| panic!("{cloud}: {} refused: {e}", o.id()));
                if o.kind == ObjectKind::RisingWave {
                    let mut problems = Vec::new();
                    missing(&o.body["spec"], &stored["spec"], "spec", &mut problems);
                    assert!(problems.is_empty(), "{cloud}: {}: {problems:#?}", o.id());
                    assert_eq!(stored["spec"], o.body["spec"], "{cloud}: {}", o.id());
                }
            }
        }
    }
}

#[tokio::test]
async fn the_double_prunes_misplaced_fields_and_refuses_wrong_types_like_the_api_server() {
    let d = double();
    let client = d.client();
    apply(&client, ObjectKind::Namespace, None, "rw-a", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rw-a"}}))
        .await
        .expect("namespace");
    // The GCP object as byoc wrote it before: `useWorkloadIdentity` beside the bucket.
    let misplaced = json!({"apiVersion": "risingwave.risingwavelabs.com/v1alpha1", "kind": "RisingWave",
        "metadata": {"name": "a", "namespace": "rw-a"},
        "spec": {"image": "risingwavelabs/risingwave:v2.1.0",
                 "stateStore": {"dataDirectory": "a", "gcs": {"bucket": "b", "root": "", "useWorkloadIdentity": true}}}});
    let stored = apply(&client, ObjectKind::RisingWave, Some("rw-a"), "a", &misplaced).await.expect("pruned, not refused");
    assert_eq!(stored["spec"]["stateStore"]["gcs"], json!({"bucket": "b", "root": ""}), "silently pruned");

    let mut wrong = misplaced.clone();
    wrong["spec"]["components"] = json!({"meta": {"nodeGroups": [{"name": "default", "replicas": "three"}]}});
    wrong["spec"]["frontendServiceType"] = json!("Ingress");
    wrong["spec"]["stateStore"]["dataDirectory"] = json!("a.b");
    let err = apply(&client, ObjectKind::RisingWave, Some("rw-a"), "a", &wrong).await.expect_err("refused");
    let kube::Error::Api(status) = err else { panic!("not an API error: {err}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    for want in [
        "spec.components.meta.nodeGroups[0].replicas: Invalid value: \"three\": spec.components.meta.nodeGroups[0].replicas in body must be of type integer",
        "spec.frontendServiceType: Unsupported value: \"Ingress\"",
        "spec.stateStore.dataDirectory: Invalid value: \"a.b\"",
    ] {
        assert!(status.message.contains(want), "missing {want:?} in {}", status.message);
    }
    let mut no_image = misplaced;
    no_image["spec"].as_object_mut().expect("spec").remove("image");
    let err = apply(&client, ObjectKind::RisingWave, Some("rw-a"), "a", &no_image).await.expect_err("refused");
    assert!(err.to_string().contains("spec.image: Required value"), "{err}");
}
