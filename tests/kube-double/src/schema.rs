//! The resource types the double serves: a fixed set of core types plus those of the
//! CustomResourceDefinitions it is given, with the part of structural-schema handling the
//! real API server does on write: unknown fields pruned, `type`, `required` and `minimum`
//! checked (422 with the field path).

use anyhow::{Context, bail};
use serde_json::Value;

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
    /// The openAPIV3Schema of a custom resource.
    pub schema: Option<Value>,
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
        ]
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
                    schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                })
            })
            .collect()
    }
}

/// Prunes fields the schema does not know and checks the rest; returns `(field, message)`
/// for each violation.
pub fn validate(schema: &Value, obj: &mut Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Some(map) = obj.as_object_mut() {
        for (key, value) in map.iter_mut() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(sub) = schema.pointer(&format!("/properties/{key}")) {
                check(sub, value, key, &mut problems);
            }
        }
        let known = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata") || schema.pointer(&format!("/properties/{k}")).is_some();
        map.retain(|k, _| known(k));
    }
    problems
}

fn check(schema: &Value, v: &mut Value, path: &str, problems: &mut Vec<(String, String)>) {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push((path.to_owned(), format!("Invalid value: {v}: {path} in body must be of type {ty}")));
        return;
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        problems.push((path.to_owned(), format!("Invalid value: {v}: {path} in body should be greater than or equal to {min}")));
    }
    match v {
        Value::Object(map) => {
            for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(req) {
                    problems.push((format!("{path}.{req}"), format!("Required value: {path}.{req} in body is required")));
                }
            }
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (k, child) in map.iter_mut() {
                    if let Some(sub) = props.get(k) {
                        check(sub, child, &format!("{path}.{k}"), problems);
                    }
                }
            }
            if !preserve {
                map.retain(|k, _| props.is_some_and(|p| p.contains_key(k)));
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
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["spec.image", "spec.replicas"]);
    }
}
