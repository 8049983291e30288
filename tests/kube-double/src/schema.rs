//! The resource types the double serves: a fixed set of built-in types (core; Deployment,
//! PodDisruptionBudget, NetworkPolicy, StorageClass, webhook configurations and RBAC with
//! the fields the API server requires of them) plus those of the
//! CustomResourceDefinitions it is given or that are written to it, with the part of structural-schema handling the
//! real API server does on write: unknown fields pruned, `type`, `required` and `minimum`
//! checked (422 with the field path).

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// `metav1.MicroTime` on the wire: RFC 3339 in UTC, with up to microseconds.
const MICRO_TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$";

/// A resource type: `group/version`, plural, kind, scope.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Group, empty for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name, as in URLs.
    pub plural: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `status` is written only through the `/status` subresource.
    pub status_subresource: bool,
    /// The openAPIV3Schema of a custom resource; shared, since a real CRD's is megabytes
    /// and every request looks its type up.
    pub schema: Option<std::sync::Arc<Value>>,
}

impl ResourceType {
    fn core(plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: String::new(),
            version: "v1".into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: true,
            schema: None,
        }
    }

    /// `apiVersion` as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The built-in types the double serves.
    pub fn builtin() -> Vec<ResourceType> {
        vec![
            Self::core("namespaces", "Namespace", false),
            Self::core("serviceaccounts", "ServiceAccount", true),
            Self::core("services", "Service", true),
            Self::core("configmaps", "ConfigMap", true),
            Self::core("secrets", "Secret", true),
            Self::typed("apps", "deployments", "Deployment", true, true, deployment_schema()),
            Self::typed("policy", "poddisruptionbudgets", "PodDisruptionBudget", true, true, open(json!({"spec": open(json!({}))}))),
            Self::typed("networking.k8s.io", "networkpolicies", "NetworkPolicy", true, false, network_policy_schema()),
            Self::typed("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", false, false, role_schema()),
            Self::typed("rbac.authorization.k8s.io", "roles", "Role", true, false, role_schema()),
            Self::typed("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", false, false, binding_schema()),
            Self::typed("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", true, false, binding_schema()),
            Self::typed("storage.k8s.io", "storageclasses", "StorageClass", false, false, storage_class_schema()),
            Self::typed(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                "MutatingWebhookConfiguration",
                false,
                false,
                webhook_configuration_schema(),
            ),
            Self::typed(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "ValidatingWebhookConfiguration",
                false,
                false,
                webhook_configuration_schema(),
            ),
            Self::typed(CRD_GROUP, CRD_PLURAL, "CustomResourceDefinition", false, true, crd_schema()),
            Self::lease(),
        ]
    }

    /// A built-in type of a named group at v1, judged by `schema`: the fields the real API
    /// server requires of it (its OpenAPI `required` lists and the validation of the kind),
    /// everything else kept as sent.
    fn typed(group: &str, plural: &str, kind: &str, namespaced: bool, status: bool, schema: Value) -> Self {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: status,
            schema: Some(std::sync::Arc::new(schema)),
        }
    }

    /// `coordination.k8s.io/v1` `Lease`, the lock of leader election. Its fields are judged
    /// as kube-apiserver's validation judges them (`leaseDurationSeconds` and
    /// `leaseTransitions` bounds, times in RFC 3339 with microseconds); no status.
    fn lease() -> Self {
        let time = serde_json::json!({"type": "string", "pattern": MICRO_TIME});
        let schema = serde_json::json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "holderIdentity": {"type": "string"},
                "leaseDurationSeconds": {"type": "integer", "minimum": 1, "maximum": 2147483647},
                "acquireTime": time, "renewTime": time,
                "leaseTransitions": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                "strategy": {"type": "string", "enum": ["OldestEmulationVersion"]},
                "preferredHolder": {"type": "string"}}}}});
        ResourceType {
            group: "coordination.k8s.io".into(),
            version: "v1".into(),
            plural: "leases".into(),
            kind: "Lease".into(),
            namespaced: true,
            status_subresource: false,
            schema: Some(std::sync::Arc::new(schema)),
        }
    }

    /// The served versions of a CustomResourceDefinition (YAML or JSON text).
    pub fn from_crd(text: &str) -> anyhow::Result<Vec<ResourceType>> {
        let crd: Value = serde_saphyr::from_str(text).context("CRD is not valid YAML")?;
        let spec = crd.get("spec").context("CRD has no spec")?;
        let s = |v: Option<&Value>, what: &str| v.and_then(Value::as_str).map(str::to_owned).with_context(|| format!("CRD has no {what}"));
        let group = s(spec.get("group"), "spec.group")?;
        let plural = s(spec.pointer("/names/plural"), "spec.names.plural")?;
        let kind = s(spec.pointer("/names/kind"), "spec.names.kind")?;
        let namespaced = match spec.get("scope").and_then(Value::as_str) {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => bail!("CRD scope {other:?} is neither Namespaced nor Cluster"),
        };
        let versions = spec.get("versions").and_then(Value::as_array).context("CRD has no spec.versions")?;
        versions
            .iter()
            .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
            .map(|v| {
                Ok(ResourceType {
                    group: group.clone(),
                    version: s(v.get("name"), "version name")?,
                    plural: plural.clone(),
                    kind: kind.clone(),
                    namespaced,
                    status_subresource: v.pointer("/subresources/status").is_some(),
                    schema: v.pointer("/schema/openAPIV3Schema").cloned().map(std::sync::Arc::new),
                })
            })
            .collect()
    }
}

/// The group of CustomResourceDefinitions: writing one makes the double serve its kind.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";
/// See [`CRD_GROUP`].
pub const CRD_PLURAL: &str = "customresourcedefinitions";

/// admissionregistration.k8s.io/v1 Mutating/ValidatingWebhookConfiguration: each webhook
/// needs a name, where to call (a service or a URL), its side effects and the review
/// versions it speaks (what kube-apiserver refuses a v1 webhook without).
fn webhook_configuration_schema() -> Value {
    let service = open_required(json!({"name": {"type": "string"}, "namespace": {"type": "string"}}), &["name", "namespace"]);
    let client = open(json!({"service": service, "caBundle": {"type": "string"}}));
    let webhook = open_required(
        json!({
            "name": {"type": "string"},
            "clientConfig": client,
            "sideEffects": {"type": "string", "enum": ["None", "NoneOnDryRun"]},
            "failurePolicy": {"type": "string", "enum": ["Ignore", "Fail"]},
            "admissionReviewVersions": {"type": "array", "items": {"type": "string"}}
        }),
        &["name", "clientConfig", "sideEffects", "admissionReviewVersions"],
    );
    open(json!({"webhooks": {"type": "array", "items": webhook}}))
}

/// apiextensions.k8s.io/v1 CustomResourceDefinition: group, names, scope and versions
/// (the rest of what the API server checks, a served version with a schema, is
/// [`ResourceType::from_crd`]'s).
fn crd_schema() -> Value {
    let names = open_required(json!({"plural": {"type": "string"}, "kind": {"type": "string"}}), &["plural", "kind"]);
    let spec = open_required(
        json!({"group": {"type": "string"}, "names": names, "scope": {"type": "string", "enum": ["Namespaced", "Cluster"]},
               "versions": {"type": "array", "items": open_required(json!({"name": {"type": "string"}}), &["name"])}}),
        &["group", "names", "scope", "versions"],
    );
    open_required(json!({"spec": spec}), &["spec"])
}

/// An object schema that keeps fields it does not describe, with `props` and `required`.
fn open(props: Value) -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": props})
}

fn open_required(props: Value, required: &[&str]) -> Value {
    let mut s = open(props);
    s["required"] = json!(required);
    s
}

/// apps/v1 Deployment: a selector and a pod template with containers, each with a name and
/// an image (what kube-apiserver's validation refuses without).
fn deployment_schema() -> Value {
    let container = open_required(json!({"name": {"type": "string"}, "image": {"type": "string"}}), &["name", "image"]);
    let pod_spec = open_required(json!({"containers": {"type": "array", "items": container}}), &["containers"]);
    let template = open(json!({"spec": pod_spec}));
    open(json!({
        "spec": open_required(json!({"replicas": {"type": "integer", "minimum": 0}, "selector": open(json!({})), "template": template}), &["selector", "template"])
    }))
}

/// networking.k8s.io/v1 NetworkPolicy: an ipBlock needs its cidr.
fn network_policy_schema() -> Value {
    let peer = open(json!({"ipBlock": open_required(json!({"cidr": {"type": "string"}}), &["cidr"])}));
    let rule = open(json!({"from": {"type": "array", "items": peer}}));
    open(json!({"spec": open(json!({"ingress": {"type": "array", "items": rule}}))}))
}

/// storage.k8s.io/v1 StorageClass: a provisioner, string parameters, and the binding
/// modes and reclaim policies kube-apiserver's validation knows.
fn storage_class_schema() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "required": ["provisioner"], "properties": {
        "provisioner": {"type": "string"},
        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
        "volumeBindingMode": {"type": "string", "enum": ["Immediate", "WaitForFirstConsumer"]},
        "reclaimPolicy": {"type": "string", "enum": ["Delete", "Retain"]},
        "allowVolumeExpansion": {"type": "boolean"}}})
}

/// rbac.authorization.k8s.io/v1 Role and ClusterRole: each rule needs its verbs.
fn role_schema() -> Value {
    let rule = open_required(json!({"verbs": {"type": "array", "items": {"type": "string"}}}), &["verbs"]);
    open(json!({"rules": {"type": "array", "items": rule}}))
}

/// rbac.authorization.k8s.io/v1 RoleBinding and ClusterRoleBinding: a complete roleRef,
/// subjects with kind and name.
fn binding_schema() -> Value {
    let role_ref = open_required(json!({}), &["apiGroup", "kind", "name"]);
    let subject = open_required(json!({}), &["kind", "name"]);
    open_required(json!({"roleRef": role_ref, "subjects": {"type": "array", "items": subject}}), &["roleRef"])
}

/// One way an object breaks its schema, as the API server reports it in the causes of a
/// 422 `Invalid` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `FieldValueRequired`, `FieldValueTypeInvalid`, `FieldValueNotSupported`,
    /// `FieldValueInvalid` or `FieldValueTooLong`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.components.meta.nodeGroups[0].replicas`.
    pub field: String,
    /// The message, worded as kube-apiserver words it.
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, field: &str, message: String) -> Self {
        Problem { reason, field: field.to_owned(), message }
    }
}

/// Prunes what a structural schema does not know and checks the rest, the way the API
/// server treats a custom resource on write: fields not under `properties` are dropped
/// silently (unless `x-kubernetes-preserve-unknown-fields`), as are nulls where the schema
/// is not `nullable`; `type` (with `x-kubernetes-int-or-string`), `required`, `enum`,
/// `items`, `additionalProperties`, `minimum`, `maximum`, `maxLength` and `pattern` are
/// checked. Defaults are not applied. Returns every problem found.
pub fn validate(schema: &Value, obj: &mut Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(map) = obj.as_object_mut() {
        let props = schema.get("properties").and_then(Value::as_object);
        // `apiVersion`, `kind` and `metadata` are the server's own, whatever the schema says.
        let own = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata");
        map.retain(|k, v| own(k) || props.and_then(|p| p.get(k)).is_some_and(|sub| !v.is_null() || nullable(Some(sub))));
        for (key, value) in map.iter_mut() {
            if own(key) {
                continue;
            }
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                check(sub, value, key, &mut problems);
            }
        }
        for req in required(schema) {
            if !map.contains_key(req) {
                problems.push(Problem::new("FieldValueRequired", req, "Required value".into()));
            }
        }
    }
    problems
}

fn nullable(schema: Option<&Value>) -> bool {
    schema.and_then(|s| s.get("nullable")).and_then(Value::as_bool) == Some(true)
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the server quotes it in messages.
fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Whether `text` matches `pattern`; `None` when the pattern does not compile. Compiled
/// patterns are kept: a CRD has a few dozen, and every write checks them again.
fn matches(pattern: &str, text: &str) -> Option<bool> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Option<regex::Regex>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let re = cache.entry(pattern.to_owned()).or_insert_with(|| regex::Regex::new(pattern).ok());
    re.as_ref().map(|re| re.is_match(text))
}

fn check(schema: &Value, v: &mut Value, path: &str, problems: &mut Vec<Problem>) {
    if v.is_null() && nullable(Some(schema)) {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = if int_or_string {
        v.is_string() || v.is_i64() || v.is_u64()
    } else {
        match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        }
    };
    if !type_ok {
        let want = if int_or_string { "integer or string" } else { ty };
        problems.push(Problem::new(
            "FieldValueTypeInvalid",
            path,
            format!("Invalid value: {}: {path} in body must be of type {want}: {:?}", quoted(v), type_name(v)),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(quoted).collect();
        problems.push(Problem::new(
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {}: supported values: {}", quoted(v), list.join(", ")),
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(Problem::new(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {v}: {path} in body should be greater than or equal to {min}"),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(Problem::new(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {v}: {path} in body should be less than or equal to {max}"),
            ));
        }
    }
    if let Some(text) = v.as_str() {
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && text.chars().count() as u64 > max
        {
            problems.push(Problem::new("FieldValueTooLong", path, format!("Too long: may not be more than {max} bytes")));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            // A pattern this regex engine cannot read is not the object's fault.
            if matches(pattern, text) == Some(false) {
                problems.push(Problem::new(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {text:?}: {path} in body should match '{pattern}'"),
                ));
            }
        }
    }
    match v {
        Value::Object(map) => {
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let any_key = preserve || additional.is_some() || schema.get("additionalProperties").and_then(Value::as_bool) == Some(true);
            let known = |k: &str| any_key || props.is_some_and(|p| p.contains_key(k));
            let child = |k: &str| props.and_then(|p| p.get(k)).or(additional);
            // Pruned silently: unknown fields, and nulls the schema does not allow.
            map.retain(|k, v| known(k) && (!v.is_null() || child(k).is_none_or(|c| nullable(Some(c)))));
            for (k, value) in map.iter_mut() {
                if let Some(sub) = child(k) {
                    check(sub, value, &format!("{path}.{k}"), problems);
                }
            }
            for req in required(schema) {
                if !map.contains_key(req) {
                    problems.push(Problem::new("FieldValueRequired", &format!("{path}.{req}"), "Required value".into()));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_unknown_fields_and_reports_type_and_minimum() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["image"], "properties": {
            "replicas": {"type": "integer", "minimum": 0}, "image": {"type": "string"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        let mut obj = json!({"metadata": {"name": "a"}, "spec": {"replicas": -1, "unknown": 1, "free": {"x": 1}}, "junk": 2});
        let problems = validate(&schema, &mut obj);
        assert_eq!(obj, json!({"metadata": {"name": "a"}, "spec": {"replicas": -1, "free": {"x": 1}}}));
        let fields: Vec<(&str, &str)> = problems.iter().map(|p| (p.reason, p.field.as_str())).collect();
        assert_eq!(fields, [("FieldValueInvalid", "spec.replicas"), ("FieldValueRequired", "spec.image")]);
    }

    #[test]
    fn int_or_string_enum_maps_nulls_and_patterns_are_judged_like_the_api_server() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "cpu": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
            "policy": {"type": "string", "enum": ["Always", "Never"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
            "note": {"type": "string"},
            "maybe": {"type": "string", "nullable": true}}}}});
        let mut obj = json!({"spec": {"cpu": "2", "policy": "Always", "labels": {"a": "b"}, "name": "ok", "note": null, "maybe": null}});
        assert_eq!(validate(&schema, &mut obj), []);
        assert_eq!(
            obj,
            json!({"spec": {"cpu": "2", "policy": "Always", "labels": {"a": "b"}, "name": "ok", "maybe": null}}),
            "a null note is pruned"
        );
        let mut obj = json!({"spec": {"cpu": true, "policy": "Sometimes", "labels": {"a": 1}, "name": "TooLong"}});
        let mut got: Vec<(&str, String)> = validate(&schema, &mut obj).into_iter().map(|p| (p.reason, p.message)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("FieldValueInvalid", "Invalid value: \"TooLong\": spec.name in body should match '^[a-z]+$'".to_owned()),
                ("FieldValueNotSupported", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"".to_owned()),
                ("FieldValueTooLong", "Too long: may not be more than 5 bytes".to_owned()),
                ("FieldValueTypeInvalid", "Invalid value: 1: spec.labels.a in body must be of type string: \"integer\"".to_owned()),
                (
                    "FieldValueTypeInvalid",
                    "Invalid value: true: spec.cpu in body must be of type integer or string: \"boolean\"".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn built_in_kinds_are_refused_without_the_fields_the_api_server_requires() {
        let t = |plural: &str| ResourceType::builtin().into_iter().find(|t| t.plural == plural).expect(plural).schema.expect("schema");
        let mut deployment = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "image": "i", "x": 1}]}}}});
        assert_eq!(validate(&t("deployments"), &mut deployment), []);
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["x"], 1, "unknown fields kept");
        let mut no_image = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        let fields: Vec<String> = validate(&t("deployments"), &mut no_image).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["spec.template.spec.containers[0].image"]);
        let mut binding = json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount"}]});
        let fields: Vec<String> = validate(&t("rolebindings"), &mut binding).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["roleRef.apiGroup", "subjects[0].name"]);
        let mut pdb = json!({"spec": {"minAvailable": 1}});
        assert_eq!(validate(&t("poddisruptionbudgets"), &mut pdb), []);
        assert_eq!(pdb["spec"]["minAvailable"], 1, "the spec is kept");
        let mut policy = json!({"spec": {"ingress": [{"from": [{"ipBlock": {}}]}]}});
        assert_eq!(validate(&t("networkpolicies"), &mut policy).len(), 1);
    }
}
