//! The objects and what the API server does to them: create, get, list with label
//! selectors, update, JSON merge patch, server-side apply with field managers and
//! conflicts, the status subresource, delete (namespaces terminate for a while first).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fields::{self, Path};
use crate::schema::{self, ResourceType};

/// An error the API server answers with a `Status` body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (NotFound, AlreadyExists, Conflict, Invalid, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details.causes`: `(type, field, message)`.
    pub causes: Vec<(String, String, String)>,
    /// `details.name` and `details.kind`.
    pub details: (String, String),
}

impl ApiError {
    /// An error with no causes or details.
    pub(crate) fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, causes: Vec::new(), details: (String::new(), String::new()) }
    }

    fn about(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = (name.to_owned(), rt.plural.clone());
        self
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let causes: Vec<Value> = self.causes.iter().map(|(t, f, m)| json!({"reason": t, "field": f, "message": m})).collect();
        let mut details = json!({"name": self.details.0, "kind": self.details.1});
        if !causes.is_empty() {
            details["causes"] = Value::Array(causes);
        }
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
               "reason": self.reason, "details": details, "code": self.code})
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// Whether a manager's fields came from apply or from update (create, put, merge patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Apply,
    Update,
}

#[derive(Debug, Clone)]
struct Managed {
    manager: String,
    operation: Operation,
    fields: BTreeSet<Path>,
    time: String,
}

#[derive(Debug, Clone)]
struct Stored {
    obj: Value,
    managers: Vec<Managed>,
    gone_at: Option<Instant>,
}

/// Key of an object: plural (with group), namespace ("" for cluster-scoped), name.
type Key = (String, String, String);

/// The double's state.
#[derive(Debug)]
pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    revision: u64,
    uids: u64,
    /// How long a deleted namespace stays `Terminating`.
    pub terminate_after: Duration,
}

fn is_crd(rt: &ResourceType) -> bool {
    rt.group == schema::CRD_GROUP && rt.plural == schema::CRD_PLURAL
}

fn type_key(rt: &ResourceType) -> String {
    format!("{}/{}", rt.group, rt.plural)
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl Store {
    /// An empty cluster serving the built-in types and `types`.
    pub fn new(types: Vec<ResourceType>) -> Self {
        let mut all = ResourceType::builtin();
        all.extend(types);
        let mut store = Store { types: all, objects: BTreeMap::new(), revision: 1, uids: 0, terminate_after: Duration::from_millis(300) };
        // Every cluster has these from its first moment; leader-election leases live in them.
        let ns = ResourceType::builtin().remove(0);
        for name in ["default", "kube-system", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let managed = Managed { manager: "kube-apiserver".into(), operation: Operation::Update, fields: BTreeSet::new(), time: now() };
            store.insert_new(&ns, "", name, body, managed);
        }
        store
    }

    /// The type served at `group/version/plural`.
    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    /// Removes namespaces whose termination is over, with everything in them.
    pub fn sweep(&mut self) {
        let instant = Instant::now();
        let gone: Vec<String> = self
            .objects
            .iter()
            .filter(|((t, _, _), s)| t == "/namespaces" && s.gone_at.is_some_and(|at| at <= instant))
            .map(|((_, _, name), _)| name.clone())
            .collect();
        for ns in gone {
            // As the namespace controller does: objects without finalizers go, those with
            // are marked for deletion and keep the namespace Terminating until their
            // controllers remove the finalizers.
            let held = |s: &Stored| s.obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            let stamp = now();
            let mut waiting = false;
            self.objects.retain(|(t, n, _), s| {
                if n != &ns || t == "/namespaces" {
                    return true;
                }
                if held(s) {
                    waiting = true;
                    if s.obj.pointer("/metadata/deletionTimestamp").is_none() {
                        s.obj["metadata"]["deletionTimestamp"] = Value::String(stamp.clone());
                    }
                    return true;
                }
                false
            });
            if !waiting {
                self.objects.retain(|(t, _, name), _| !(t == "/namespaces" && name == &ns));
            }
        }
    }

    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    fn rendered(&self, s: &Stored, rt: &ResourceType) -> Value {
        let mut obj = s.obj.clone();
        let managed: Vec<Value> = s
            .managers
            .iter()
            .filter(|m| !m.fields.is_empty())
            .map(|m| {
                json!({"manager": m.manager, "operation": if m.operation == Operation::Apply { "Apply" } else { "Update" },
                       "apiVersion": rt.api_version(), "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields::fields_v1(&m.fields)})
            })
            .collect();
        obj["metadata"]["managedFields"] = Value::Array(managed);
        obj
    }

    /// GET of one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let s = self.objects.get(&(type_key(rt), ns.to_owned(), name.to_owned())).ok_or_else(|| not_found(rt, name))?;
        Ok(self.rendered(s, rt))
    }

    /// GET of a collection, `ns` None for all namespaces.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, selector: Option<&str>) -> Result<Value> {
        let selector = selector.map(parse_selector).transpose()?;
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((t, n, _), _)| t == &type_key(rt) && ns.is_none_or(|ns| ns == n))
            .filter(|(_, s)| selector.as_ref().is_none_or(|sel| matches(sel, &s.obj)))
            .map(|(_, s)| self.rendered(s, rt))
            .collect();
        Ok(json!({"apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind),
                  "metadata": {"resourceVersion": self.revision.to_string()}, "items": items}))
    }

    fn check_body(&self, rt: &ResourceType, ns: &str, name: &str, body: &mut Value) -> Result<()> {
        if !body.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body is not a JSON object".into()));
        }
        let kind = body.get("kind").and_then(Value::as_str);
        let api_version = body.get("apiVersion").and_then(Value::as_str);
        if kind != Some(rt.kind.as_str()) || api_version != Some(rt.api_version().as_str()) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the body's apiVersion/kind {api_version:?}/{kind:?} does not match {}/{}", rt.api_version(), rt.kind),
            ));
        }
        let body_name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        if body_name != name {
            return Err(invalid(
                rt,
                name,
                "metadata.name",
                format!("the name of the object ({body_name}) does not match the name on the URL ({name})"),
            ));
        }
        if !is_dns_label(name, if rt.plural == "namespaces" { 63 } else { 253 }) {
            return Err(invalid(
                rt,
                name,
                "metadata.name",
                format!(
                    "Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
                ),
            ));
        }
        match body.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(n) if rt.namespaced && n != ns => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("the namespace of the object ({n}) does not match the namespace on the request ({ns})"),
                ));
            }
            None if rt.namespaced => body["metadata"]["namespace"] = Value::String(ns.to_owned()),
            _ => {}
        }
        if is_crd(rt) {
            let group = body.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
            let plural = body.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
            if name != format!("{plural}.{group}") {
                return Err(invalid(
                    rt,
                    name,
                    "metadata.name",
                    format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                ));
            }
            if let Err(e) = ResourceType::from_crd(&body.to_string()) {
                return Err(invalid(rt, name, "spec", format!("{e:#}")));
            }
        }
        if let Some(schema) = &rt.schema {
            let problems = schema::validate(schema, body);
            if !problems.is_empty() {
                let mut e = invalid(rt, name, "", String::new());
                e.message = format!(
                    "{}.{} {name:?} is invalid: {}",
                    rt.plural,
                    rt.group,
                    problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join(", ")
                );
                e.causes = problems.into_iter().map(|p| (p.reason.to_owned(), p.field, p.message)).collect();
                return Err(e);
            }
        }
        Ok(())
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<()> {
        if !rt.namespaced {
            return Ok(());
        }
        match self.objects.get(&("/namespaces".to_owned(), String::new(), ns.to_owned())) {
            None => Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found")).about(&ResourceType::builtin()[0], ns)),
            Some(s) if s.gone_at.is_some() => Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} is forbidden: unable to create new content in namespace {ns} because it is being terminated", rt.plural),
            )),
            Some(_) => Ok(()),
        }
    }

    fn insert_new(&mut self, rt: &ResourceType, ns: &str, name: &str, mut body: Value, managed: Managed) -> Value {
        self.uids += 1;
        let rv = self.next_revision();
        if let Some(m) = body.as_object_mut() {
            m.remove("status");
        }
        let meta = &mut body["metadata"];
        meta["uid"] = Value::String(format!("00000000-0000-4000-8000-{:012}", self.uids));
        meta["resourceVersion"] = Value::String(rv);
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = Value::String(now());
        for k in ["managedFields", "deletionTimestamp"] {
            if let Some(m) = meta.as_object_mut() {
                m.remove(k);
            }
        }
        // What the real API server fills in on its own.
        match rt.plural.as_str() {
            "namespaces" => body["status"] = json!({"phase": "Active"}),
            "services" => body["spec"]["clusterIP"] = Value::String(format!("10.96.{}.{}", self.uids / 250, self.uids % 250 + 1)),
            _ => {}
        }
        self.serve_crd(rt, &body);
        let stored = Stored { obj: body, managers: vec![managed], gone_at: None };
        let out = self.rendered(&stored, rt);
        self.objects.insert((type_key(rt), ns.to_owned(), name.to_owned()), stored);
        out
    }

    /// After a CustomResourceDefinition is written, its kind is served (replacing what an
    /// earlier version of it served), as the API server establishes it.
    fn serve_crd(&mut self, rt: &ResourceType, crd: &Value) {
        if !is_crd(rt) {
            return;
        }
        // check_body judged it already; an unreadable one serves nothing.
        if let Ok(types) = ResourceType::from_crd(&crd.to_string()) {
            self.types.retain(|t| !types.iter().any(|n| n.group == t.group && n.plural == t.plural));
            self.types.extend(types);
        }
    }

    /// POST: create.
    pub fn create(&mut self, rt: &ResourceType, ns: &str, mut body: Value, manager: &str) -> Result<Value> {
        let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
        self.check_body(rt, ns, &name, &mut body)?;
        self.check_namespace(rt, ns)?;
        if self.objects.contains_key(&(type_key(rt), ns.to_owned(), name.clone())) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.plural)).about(rt, &name));
        }
        let fields = fields::owned_leaves(&body);
        Ok(self.insert_new(rt, ns, &name, body, Managed { manager: manager.into(), operation: Operation::Update, fields, time: now() }))
    }

    /// PUT, or a JSON merge patch: the object becomes `new`; the fields that change move
    /// to `manager`.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: Option<&Value>,
        put: Option<Value>,
        manager: &str,
    ) -> Result<Value> {
        let key = (type_key(rt), ns.to_owned(), name.to_owned());
        let old = self.objects.get(&key).ok_or_else(|| not_found(rt, name))?.clone();
        let mut new = old.obj.clone();
        if let Some(p) = patch {
            fields::merge_patch(&mut new, p);
        }
        if let Some(mut body) = put {
            if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                && Some(rv) != old.obj.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", qualified(rt)),
                )
                .about(rt, name));
            }
            // Identity and status are the server's.
            body["metadata"] = merge_identity(&old.obj["metadata"], &body["metadata"]);
            body["status"] = old.obj["status"].clone();
            new = body;
        }
        self.check_body(rt, ns, name, &mut new)?;
        new["status"] = old.obj["status"].clone();
        if new["status"].is_null()
            && let Some(m) = new.as_object_mut()
        {
            m.remove("status");
        }
        let before = fields::owned_leaves(&old.obj);
        let after = fields::owned_leaves(&new);
        let changed: BTreeSet<Path> = after.iter().filter(|p| fields::get(&old.obj, p) != fields::get(&new, p)).cloned().collect();
        let removed: BTreeSet<Path> = before.difference(&after).cloned().collect();
        let mut stored = old;
        for m in &mut stored.managers {
            m.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        take_fields(&mut stored.managers, manager, Operation::Update, changed);
        self.commit(rt, key, stored, new)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply.
    pub fn apply(&mut self, rt: &ResourceType, ns: &str, name: &str, mut body: Value, manager: &str, force: bool) -> Result<Value> {
        self.check_body(rt, ns, name, &mut body)?;
        let key = (type_key(rt), ns.to_owned(), name.to_owned());
        let applied = fields::owned_leaves(&body);
        let Some(old) = self.objects.get(&key).cloned() else {
            self.check_namespace(rt, ns)?;
            let managed = Managed { manager: manager.into(), operation: Operation::Apply, fields: applied, time: now() };
            return Ok(self.insert_new(rt, ns, name, body, managed));
        };
        // A field another manager owns, set here to a different value, is a conflict.
        let mut conflicts: Vec<(String, Path)> = Vec::new();
        for m in old.managers.iter().filter(|m| m.manager != manager) {
            for p in m.fields.intersection(&applied) {
                if fields::get(&old.obj, p) != fields::get(&body, p) {
                    conflicts.push((m.manager.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let using = rt.api_version();
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts
                        .iter()
                        .map(|(m, p)| format!("conflict with \"{m}\" using {using}: {}", fields::display(p)))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            )
            .about(rt, name);
            e.causes = conflicts
                .iter()
                .map(|(m, p)| ("FieldManagerConflict".to_owned(), fields::display(p), format!("conflict with \"{m}\" using {using}")))
                .collect();
            return Err(e);
        }
        let mut stored = old.clone();
        let mut new = old.obj.clone();
        // Fields this manager applied before and not now go, unless someone else owns them.
        let previous = stored.managers.iter().find(|m| m.manager == manager && m.operation == Operation::Apply).map(|m| m.fields.clone());
        for p in previous.unwrap_or_default().difference(&applied) {
            let shared = stored.managers.iter().any(|m| m.manager != manager && m.fields.contains(p));
            if !shared {
                fields::remove(&mut new, p);
            }
        }
        for p in &applied {
            if let Some(v) = fields::get(&body, p) {
                fields::set(&mut new, p, v.clone());
            }
        }
        for (m, p) in &conflicts {
            if let Some(entry) = stored.managers.iter_mut().find(|x| &x.manager == m) {
                entry.fields.remove(p);
            }
        }
        take_fields(&mut stored.managers, manager, Operation::Apply, applied);
        self.commit(rt, key, stored, new)
    }

    fn commit(&mut self, rt: &ResourceType, key: Key, mut stored: Stored, new: Value) -> Result<Value> {
        // An object marked for deletion goes once its last finalizer is removed.
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
            && rt.plural != "namespaces";
        if finalized {
            stored.obj = new;
            let out = self.rendered(&stored, rt);
            self.objects.remove(&key);
            return Ok(out);
        }
        let changed = stored.obj != new;
        let spec_changed = spec_part(&stored.obj) != spec_part(&new);
        stored.obj = new;
        stored.managers.retain(|m| !m.fields.is_empty());
        if changed {
            let rv = self.next_revision();
            stored.obj["metadata"]["resourceVersion"] = Value::String(rv);
        }
        if spec_changed {
            let generation = stored.obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            stored.obj["metadata"]["generation"] = json!(generation + 1);
        }
        self.serve_crd(rt, &stored.obj);
        let out = self.rendered(&stored, rt);
        self.objects.insert(key, stored);
        Ok(out)
    }

    /// PATCH (merge) or PUT of the status subresource.
    pub fn update_status(&mut self, rt: &ResourceType, ns: &str, name: &str, body: &Value, merge: bool) -> Result<Value> {
        let key = (type_key(rt), ns.to_owned(), name.to_owned());
        let mut stored = self.objects.get(&key).ok_or_else(|| not_found(rt, name))?.clone();
        let status = body.get("status").cloned().unwrap_or(Value::Null);
        if merge {
            fields::merge_patch(&mut stored.obj["status"], &status);
        } else {
            stored.obj["status"] = status;
        }
        let rv = self.next_revision();
        stored.obj["metadata"]["resourceVersion"] = Value::String(rv);
        let out = self.rendered(&stored, rt);
        self.objects.insert(key, stored);
        Ok(out)
    }

    /// DELETE: namespaces terminate for [`Store::terminate_after`], the rest go at once.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let key = (type_key(rt), ns.to_owned(), name.to_owned());
        let terminate_after = self.terminate_after;
        let Some(stored) = self.objects.get_mut(&key) else { return Err(not_found(rt, name)) };
        if rt.plural == "namespaces" {
            if stored.gone_at.is_none() {
                stored.gone_at = Some(Instant::now() + terminate_after);
                stored.obj["metadata"]["deletionTimestamp"] = Value::String(now());
                stored.obj["status"] = json!({"phase": "Terminating"});
            }
            let stored = stored.clone();
            return Ok(self.rendered(&stored, rt));
        }
        // Finalizers hold the object, marked for deletion, until their controllers remove
        // them (a LoadBalancer Service's `service.kubernetes.io/load-balancer-cleanup`,
        // GKE's on a ServiceAttachment), as the API server does.
        let held = stored.obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if held {
            if stored.obj.pointer("/metadata/deletionTimestamp").is_none() {
                stored.obj["metadata"]["deletionTimestamp"] = Value::String(now());
                let rv = self.next_revision();
                if let Some(stored) = self.objects.get_mut(&key) {
                    stored.obj["metadata"]["resourceVersion"] = Value::String(rv);
                }
            }
            let stored = self.objects.get(&key).cloned().ok_or_else(|| not_found(rt, name))?;
            return Ok(self.rendered(&stored, rt));
        }
        if let Some(gone) = self.objects.remove(&key)
            && is_crd(rt)
            && let Ok(types) = ResourceType::from_crd(&gone.obj.to_string())
        {
            // The API server deletes a CRD's objects with it and stops serving its kind.
            for t in &types {
                self.objects.retain(|(k, _, _), _| k != &type_key(t));
            }
            self.types.retain(|t| !types.iter().any(|n| n.group == t.group && n.plural == t.plural));
        }
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": {"name": name, "kind": rt.plural, "uid": ""}}))
    }
}

fn take_fields(managers: &mut Vec<Managed>, manager: &str, operation: Operation, fields: BTreeSet<Path>) {
    match managers.iter_mut().find(|m| m.manager == manager && m.operation == operation) {
        Some(m) => {
            if operation == Operation::Apply {
                m.fields = fields;
            } else {
                m.fields.extend(fields);
            }
            m.time = now();
        }
        None => managers.push(Managed { manager: manager.into(), operation, fields, time: now() }),
    }
}

fn merge_identity(old: &Value, new: &Value) -> Value {
    let mut out = new.clone();
    for k in ["uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"] {
        if let Some(v) = old.get(k) {
            out[k] = v.clone();
        }
    }
    out
}

/// `leases.coordination.k8s.io`, or `services` for the core group, as messages name types.
fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() { rt.plural.clone() } else { format!("{}.{}", rt.plural, rt.group) }
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(rt))).about(rt, name)
}

fn invalid(rt: &ResourceType, name: &str, field: &str, message: String) -> ApiError {
    let mut e = ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {field}: {message}", rt.kind)).about(rt, name);
    e.causes.push(("FieldValueInvalid".into(), field.into(), message));
    e
}

fn is_dns_label(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && name.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// One requirement of a label selector.
#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(text: &str) -> Result<Vec<Requirement>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            if let Some((k, v)) = part.split_once("!=") {
                Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some(k) = part.strip_prefix('!') {
                Ok(Requirement::NotExists(k.trim().into()))
            } else if part.contains([' ', '(', ')']) {
                Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("unable to parse requirement: {part:?} (set-based selectors are not supported by the double)"),
                ))
            } else {
                Ok(Requirement::Exists(part.into()))
            }
        })
        .collect()
}

fn matches(selector: &[Requirement], obj: &Value) -> bool {
    let label = |k: &str| obj.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
    selector.iter().all(|r| match r {
        Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
        Requirement::Exists(k) => label(k).is_some(),
        Requirement::NotExists(k) => label(k).is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_type() -> ResourceType {
        ResourceType::builtin().remove(0)
    }

    fn cm_type() -> ResourceType {
        ResourceType::builtin().into_iter().find(|t| t.plural == "configmaps").expect("configmaps")
    }

    fn store_with_ns() -> Store {
        let mut s = Store::new(vec![]);
        s.apply(&ns_type(), "", "a", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}), "test", false)
            .expect("ns");
        s
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn apply_conflicts_with_another_managers_field_until_forced() {
        let mut s = store_with_ns();
        let t = cm_type();
        s.apply(&t, "a", "c", cm(json!({"x": "1", "y": "1"})), "byoc", false).expect("create");
        s.update(&t, "a", "c", Some(&json!({"data": {"x": "2"}})), None, "kubectl-edit").expect("edit");
        let e = s.apply(&t, "a", "c", cm(json!({"x": "1", "y": "1"})), "byoc", false).expect_err("conflict");
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert_eq!(e.causes[0].1, ".data.x");
        assert!(e.message.contains("conflict with \"kubectl-edit\""), "{}", e.message);
        let out = s.apply(&t, "a", "c", cm(json!({"x": "1", "y": "1"})), "byoc", true).expect("forced");
        assert_eq!(out["data"]["x"], "1");
        let managers: Vec<&str> =
            out["metadata"]["managedFields"].as_array().expect("mf").iter().filter_map(|m| m["manager"].as_str()).collect();
        assert_eq!(managers, ["byoc"]);
    }

    #[test]
    fn apply_drops_fields_no_longer_applied_and_keeps_rv_when_unchanged() {
        let mut s = store_with_ns();
        let t = cm_type();
        let first = s.apply(&t, "a", "c", cm(json!({"x": "1", "y": "1"})), "byoc", false).expect("create");
        let same = s.apply(&t, "a", "c", cm(json!({"x": "1", "y": "1"})), "byoc", false).expect("same");
        assert_eq!(first["metadata"]["resourceVersion"], same["metadata"]["resourceVersion"]);
        let out = s.apply(&t, "a", "c", cm(json!({"x": "1"})), "byoc", false).expect("drop y");
        assert_eq!(out["data"], json!({"x": "1"}));
    }

    #[test]
    fn a_finalizer_holds_a_deleted_object_until_its_controller_removes_it() {
        let mut s = store_with_ns();
        let t = cm_type();
        let mut held = cm(json!({"x": "1"}));
        held["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        s.apply(&t, "a", "c", held, "controller", false).expect("create");
        let marked = s.delete(&t, "a", "c").expect("delete");
        assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
        assert!(s.get(&t, "a", "c").expect("still there")["metadata"]["deletionTimestamp"].is_string());
        s.update(&t, "a", "c", Some(&json!({"metadata": {"finalizers": null}})), None, "controller").expect("finalized");
        assert_eq!(s.get(&t, "a", "c").expect_err("gone").code, 404);
    }

    #[test]
    fn a_terminating_namespace_waits_for_its_finalized_objects() {
        let mut s = store_with_ns();
        s.terminate_after = Duration::from_millis(0);
        let t = cm_type();
        let mut held = cm(json!({"x": "1"}));
        held["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        s.apply(&t, "a", "c", held, "controller", false).expect("create");
        s.delete(&ns_type(), "", "a").expect("delete");
        s.sweep();
        assert!(s.get(&t, "a", "c").expect("held")["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(s.get(&ns_type(), "", "a").expect("still terminating")["status"]["phase"], "Terminating");
        s.update(&t, "a", "c", Some(&json!({"metadata": {"finalizers": null}})), None, "controller").expect("finalized");
        s.sweep();
        assert_eq!(s.get(&ns_type(), "", "a").expect_err("gone").code, 404);
    }

    #[test]
    fn namespace_terminates_then_takes_its_objects_with_it() {
        let mut s = store_with_ns();
        s.terminate_after = Duration::from_millis(0);
        let t = cm_type();
        s.apply(&t, "a", "c", cm(json!({"x": "1"})), "byoc", false).expect("create");
        let ns = s.delete(&ns_type(), "", "a").expect("delete");
        assert_eq!(ns["status"]["phase"], "Terminating");
        s.sweep();
        assert_eq!(s.get(&t, "a", "c").expect_err("gone").code, 404);
        assert_eq!(s.get(&ns_type(), "", "a").expect_err("gone").code, 404);
    }

    fn lease(holder: &str, rv: Option<&str>) -> Value {
        let mut l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "byoc"},
                           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                                    "renewTime": "2026-01-01T00:00:00.123456Z", "leaseTransitions": 0}});
        if let Some(rv) = rv {
            l["metadata"]["resourceVersion"] = json!(rv);
        }
        l
    }

    #[test]
    fn a_lease_replaced_from_a_stale_read_is_a_conflict_and_its_fields_are_validated() {
        let mut s = Store::new(vec![]);
        let t = ResourceType::builtin().into_iter().find(|t| t.plural == "leases").expect("leases");
        assert_eq!(s.get(&t, "default", "byoc").expect_err("none yet").message, "leases.coordination.k8s.io \"byoc\" not found");
        let created = s.create(&t, "default", lease("a", None), "byoc").expect("create in the default namespace");
        let rv = created["metadata"]["resourceVersion"].as_str().expect("rv").to_owned();
        assert_eq!(s.create(&t, "default", lease("b", None), "byoc").expect_err("exists").reason, "AlreadyExists");
        assert_eq!(s.create(&t, "nowhere", lease("b", None), "byoc").expect_err("no namespace").code, 404);
        let mut renewed = lease("a", Some(&rv));
        renewed["spec"]["renewTime"] = json!("2026-01-01T00:00:02.000001Z");
        s.update(&t, "default", "byoc", None, Some(renewed), "byoc").expect("renew from the latest read");
        let e = s.update(&t, "default", "byoc", None, Some(lease("b", Some(&rv))), "byoc").expect_err("stale");
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert!(e.message.starts_with("Operation cannot be fulfilled on leases.coordination.k8s.io \"byoc\""), "{}", e.message);
        assert_eq!(s.get(&t, "default", "byoc").expect("get")["spec"]["holderIdentity"], "a");
        let mut bad = lease("a", None);
        bad["spec"]["leaseDurationSeconds"] = json!(0);
        bad["spec"]["renewTime"] = json!("yesterday");
        let e = s.update(&t, "default", "byoc", None, Some(bad), "byoc").expect_err("invalid");
        assert_eq!((e.code, e.causes.len()), (422, 2), "{}", e.message);
    }

    #[test]
    fn selectors_filter_lists() {
        let sel = parse_selector("a=1,b!=2,c,!d").expect("parse");
        assert!(matches(&sel, &json!({"metadata": {"labels": {"a": "1", "b": "3", "c": ""}}})));
        assert!(!matches(&sel, &json!({"metadata": {"labels": {"a": "1", "c": "", "d": "x"}}})));
    }

    #[test]
    fn a_written_crd_serves_its_kind_until_it_is_deleted() {
        let mut s = store_with_ns();
        let crd_type = ResourceType::builtin().into_iter().find(is_crd).expect("CRDs are served");
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "required": ["size"],
                            "properties": {"size": {"type": "integer"}}}}}}}]}});
        assert!(s.resource_type("example.com", "v1", "widgets").is_none());
        let mut misnamed = crd.clone();
        misnamed["metadata"]["name"] = json!("widgets");
        let e = s.apply(&crd_type, "", "widgets", misnamed, "byoc", false).expect_err("name");
        assert_eq!(e.code, 422, "{}", e.message);
        s.apply(&crd_type, "", "widgets.example.com", crd, "byoc", false).expect("crd");
        let t = s.resource_type("example.com", "v1", "widgets").expect("served once written");
        let widget =
            |size: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": size}});
        let e = s.apply(&t, "a", "w", widget(json!("big")), "byoc", false).expect_err("its schema judges writes");
        assert_eq!(e.code, 422, "{}", e.message);
        s.apply(&t, "a", "w", widget(json!(3)), "byoc", false).expect("widget");
        s.delete(&crd_type, "", "widgets.example.com").expect("delete");
        assert!(s.resource_type("example.com", "v1", "widgets").is_none());
        assert!(s.get(&t, "a", "w").is_err(), "its objects go with it");
    }
}
