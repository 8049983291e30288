//! Field paths of JSON objects, as server-side apply tracks them: every leaf (a scalar, a
//! list, an empty map) under `spec`, `data`, ... and under `metadata.labels` /
//! `metadata.annotations`. Lists are atomic here (the real API server merges lists whose
//! schema says `x-kubernetes-list-type: map` element by element; the double does not).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A path of map keys from the object's root, e.g. `["spec", "image"]`.
pub type Path = Vec<String>;

/// Renders a path the way the API server does in conflict messages: `.spec.image`.
pub fn display(path: &Path) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// The paths a field manager takes ownership of when it sends `obj`.
pub fn owned_leaves(obj: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else { return out };
    for (key, child) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for sub in ["labels", "annotations"] {
                    if let Some(m) = child.get(sub) {
                        leaves(m, &mut vec!["metadata".into(), sub.into()], &mut out);
                    }
                }
            }
            _ => leaves(child, &mut vec![key.clone()], &mut out),
        }
    }
    out
}

fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path`, if any.
pub fn get<'a>(v: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Sets `path` to `value`, creating maps on the way.
pub fn set(v: &mut Value, path: &Path, value: Value) {
    let mut cur = v;
    for k in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m.entry(k.clone()).or_insert(Value::Null);
    }
    *cur = value;
}

/// Removes the leaf at `path` and any map it leaves empty.
pub fn remove(v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(m) = v.as_object_mut() else { return };
    if rest.is_empty() {
        m.remove(first);
        return;
    }
    if let Some(child) = m.get_mut(first) {
        remove(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            m.remove(first);
        }
    }
}

/// `FieldsV1` as the API server renders it in `metadata.managedFields`:
/// `{"f:spec": {"f:image": {}}}`.
pub fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in paths {
        let keys: Path = p.iter().map(|k| format!("f:{k}")).collect();
        set(&mut root, &keys, Value::Object(Map::new()));
    }
    root
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_skip_identity_and_status_and_keep_labels() {
        let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"l": "1"}},
                         "spec": {"a": {"b": 1, "c": [1, 2]}, "e": {}}, "status": {"s": 1}});
        let got: Vec<String> = owned_leaves(&obj).iter().map(display).collect();
        assert_eq!(got, [".metadata.labels.l", ".spec.a.b", ".spec.a.c", ".spec.e"]);
    }

    #[test]
    fn remove_prunes_empty_parents() {
        let mut v = json!({"spec": {"a": {"b": 1}, "c": 2}});
        remove(&mut v, &["spec".into(), "a".into(), "b".into()]);
        assert_eq!(v, json!({"spec": {"c": 2}}));
    }

    #[test]
    fn fields_v1_nests_prefixed_keys() {
        let paths = [vec!["spec".to_owned(), "image".to_owned()]].into_iter().collect();
        assert_eq!(fields_v1(&paths), json!({"f:spec": {"f:image": {}}}));
    }
}
