//! What the double keeps: resources by collection, operations with their pending effects,
//! the write log, and the fault generator.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use crate::Options;
use crate::error::ApiError;

/// What an operation does to the stored resources when it reaches DONE.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    /// Stores `value` as `collection`/`name`.
    Put { collection: String, name: String, value: Value },
    /// Merges `patch` into `collection`/`name` (if it still exists).
    Merge { collection: String, name: String, patch: Value },
    /// Removes `collection`/`name`.
    Delete { collection: String, name: String },
}

/// Which API's operation shape an operation has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum OpKind {
    /// Compute: PENDING, RUNNING, DONE.
    Compute,
    /// GKE: PENDING, RUNNING, DONE (as `status` strings of the container v1 Operation).
    Container,
}

/// One long-running operation.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub kind: OpKind,
    pub json: Value,
    pub polls: u32,
    pub effects: Vec<Effect>,
    pub done: bool,
    /// An error the operation ends with at DONE (`errors[].code`, message), instead of its
    /// effects.
    pub failure: Option<(String, String)>,
}

/// Everything the double remembers.
pub(crate) struct State {
    pub opts: Options,
    pub collections: BTreeMap<String, BTreeMap<String, Value>>,
    /// Keyed by the operation's path (`projects/P/global/operations/NAME`, ...).
    pub operations: BTreeMap<String, Operation>,
    next_id: u64,
    rng: u64,
    pub writes: Vec<String>,
    /// Compute's `requestId`s answered, with the key of the operation each started.
    pub request_ids: BTreeMap<String, String>,
    pub faults: u64,
    /// Permissions requests were checked for ([`crate::authz`]).
    pub permissions_checked: std::collections::BTreeSet<String>,
}

impl State {
    pub(crate) fn new(opts: Options) -> State {
        // splitmix64 wants a non-trivial start; the seed alone decides the sequence.
        let rng = opts.seed ^ 0x9E37_79B9_7F4A_7C15;
        State {
            opts,
            collections: BTreeMap::new(),
            operations: BTreeMap::new(),
            next_id: 0,
            rng,
            writes: Vec::new(),
            request_ids: BTreeMap::new(),
            faults: 0,
            permissions_checked: Default::default(),
        }
    }

    /// The next number of the seeded generator (splitmix64).
    pub(crate) fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in [0, 1).
    pub(crate) fn draw(&mut self) -> f64 {
        (self.random() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fresh numeric id, as Compute gives (a uint64, sent as a string).
    pub(crate) fn id(&mut self) -> String {
        self.next_id += 1;
        (1_000_000_000_000_000_000u64 + self.next_id * 7_919).to_string()
    }

    /// A fresh fingerprint or etag: base64 of 8 bytes, as Compute and IAM send them.
    /// Compute's clients read fingerprints in the URL-safe alphabet, IAM's read etags in
    /// the standard one: drawn again until it has neither `+`/`/` nor `-`/`_`, so it reads
    /// the same in both (bounded: each draw is clean with odds of about 2 in 3).
    pub(crate) fn fingerprint(&mut self) -> String {
        let mut text = String::new();
        for _ in 0..64 {
            let bytes = self.random().to_be_bytes();
            text = base64::engine::general_purpose::STANDARD.encode(bytes);
            if !text.contains(['+', '/', '-', '_']) {
                break;
            }
        }
        text
    }

    pub(crate) fn get(&self, collection: &str, name: &str) -> Option<&Value> {
        self.collections.get(collection).and_then(|c| c.get(name))
    }

    pub(crate) fn list(&self, collection: &str) -> Vec<Value> {
        self.collections.get(collection).map(|c| c.values().cloned().collect()).unwrap_or_default()
    }

    /// Every stored resource of every collection whose path ends with `/{plural}`.
    pub(crate) fn all_of(&self, plural: &str) -> Vec<(String, String, Value)> {
        let suffix = format!("/{plural}");
        self.collections
            .iter()
            .filter(|(c, _)| c.ends_with(&suffix))
            .flat_map(|(c, items)| items.iter().map(move |(n, v)| (c.clone(), n.clone(), v.clone())))
            .collect()
    }

    pub(crate) fn put(&mut self, collection: &str, name: &str, value: Value) {
        self.collections.entry(collection.to_owned()).or_default().insert(name.to_owned(), value);
    }

    pub(crate) fn remove(&mut self, collection: &str, name: &str) -> Option<Value> {
        let c = self.collections.get_mut(collection)?;
        let v = c.remove(name);
        if c.is_empty() {
            self.collections.remove(collection);
        }
        v
    }

    /// Whether an operation not yet DONE will create `collection`/`name`.
    pub(crate) fn pending_put(&self, collection: &str, name: &str) -> bool {
        self.operations
            .values()
            .filter(|o| !o.done)
            .any(|o| o.effects.iter().any(|e| matches!(e, Effect::Put { collection: c, name: n, .. } if c == collection && n == name)))
    }

    /// Every value an operation not yet DONE will store in a collection ending with `/{plural}`.
    pub(crate) fn pending_puts_of(&self, plural: &str) -> Vec<Value> {
        let suffix = format!("/{plural}");
        self.operations
            .values()
            .filter(|o| !o.done)
            .flat_map(|o| o.effects.iter())
            .filter_map(|e| match e {
                Effect::Put { collection, value, .. } if collection.ends_with(&suffix) => Some(value.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn apply(&mut self, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::Put { collection, name, value } => self.put(collection, name, value.clone()),
                Effect::Merge { collection, name, patch } => {
                    if let Some(v) = self.collections.get_mut(collection).and_then(|c| c.get_mut(name)) {
                        merge_patch(v, patch);
                    }
                }
                Effect::Delete { collection, name } => {
                    self.remove(collection, name);
                }
            }
        }
    }

    /// Registers an operation; with `operation_polls == 0` it is DONE at once.
    pub(crate) fn start_operation(
        &mut self,
        key: String,
        kind: OpKind,
        mut json: Value,
        effects: Vec<Effect>,
        failure: Option<(String, String)>,
    ) -> Value {
        let done = self.opts.operation_polls == 0;
        json["status"] = json!(if done { "DONE" } else { "PENDING" });
        if done {
            finish(&mut json, kind, failure.as_ref());
            if failure.is_none() {
                self.apply(&effects);
            }
        }
        self.operations.insert(key, Operation { kind, json: json.clone(), polls: 0, effects, done, failure });
        json
    }

    /// One poll of an operation: PENDING -> RUNNING -> ... -> DONE after `operation_polls`
    /// polls; the effects apply at DONE.
    pub(crate) fn poll_operation(&mut self, key: &str, what: &str) -> Result<Value, ApiError> {
        let wanted = self.opts.operation_polls;
        let op = self.operations.get_mut(key).ok_or_else(|| ApiError::not_found(what))?;
        if op.done {
            return Ok(op.json.clone());
        }
        op.polls += 1;
        if op.polls >= wanted {
            op.done = true;
            op.json["status"] = json!("DONE");
            finish(&mut op.json, op.kind, op.failure.as_ref());
            let effects = if op.failure.is_none() { op.effects.clone() } else { Vec::new() };
            let json = op.json.clone();
            self.apply(&effects);
            Ok(json)
        } else {
            op.json["status"] = json!("RUNNING");
            if op.kind == OpKind::Compute {
                op.json["startTime"] = json!(now());
                op.json["progress"] = json!(50);
            }
            Ok(op.json.clone())
        }
    }

    /// Changes a stored resource as another actor would; bumps what marks a change.
    pub(crate) fn tamper(&mut self, collection: &str, name: &str, patch: &Value) -> Result<(), ApiError> {
        let fp = self.fingerprint();
        let v = self
            .collections
            .get_mut(collection)
            .and_then(|c| c.get_mut(name))
            .ok_or_else(|| ApiError::not_found(&format!("{collection}/{name}")))?;
        merge_patch(v, patch);
        for key in ["fingerprint", "etag", "labelFingerprint"] {
            if v.get(key).is_some() {
                v[key] = json!(fp);
            }
        }
        // Cloud Storage marks a metadata change with the bucket's metageneration.
        if let Some(m) = v.get("metageneration").and_then(Value::as_str).and_then(|m| m.parse::<u64>().ok()) {
            v["metageneration"] = json!((m + 1).to_string());
        }
        Ok(())
    }
}

/// Marks an operation DONE; a failed one carries Compute's `error.errors[]` and
/// `httpErrorStatusCode` (<https://cloud.google.com/compute/docs/reference/rest/v1/globalOperations>),
/// or GKE's `error` status.
fn finish(json: &mut Value, kind: OpKind, failure: Option<&(String, String)>) {
    match kind {
        OpKind::Compute => {
            json["progress"] = json!(100);
            json["endTime"] = json!(now());
            if let Some((code, message)) = failure {
                json["error"] = json!({"errors": [{"code": code, "message": message}]});
                json["httpErrorStatusCode"] = json!(400);
                json["httpErrorMessage"] = json!("BAD REQUEST");
            }
        }
        OpKind::Container => {
            json["endTime"] = json!(now());
            if let Some((_, message)) = failure {
                json["error"] = json!({"code": 9, "message": message});
                json["statusMessage"] = json!(message);
            }
        }
    }
}

/// RFC 3339 now, as the APIs write timestamps.
pub(crate) fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// RFC 7396 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}
