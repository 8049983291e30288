//! `plan(&desired, &observed) -> Plan`: pure. Each resource gets one action with the
//! property-level changes and the reason. The same function serves the pull-request
//! preview (observed = desired at the base revision) and the live loop.
//!
//! Order: creates, updates and replacements in dependency order (dependencies first), then
//! deletions in reverse dependency order (dependents first). Ties break by resource id, so
//! the same inputs always give the same plan.

pub mod render;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::resource::{Graph, Kind, Resource, ResourceId, Value};

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The resource does not exist and will be created.
    Create,
    /// The resource changes in place.
    Update,
    /// The resource is deleted and created anew.
    Replace,
    /// The resource is deleted.
    Delete,
    /// A deletion or replacement the reconciler refuses to make; a person must act.
    Blocked,
    /// Nothing changes.
    #[serde(rename = "no-op")]
    NoOp,
}

impl Action {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Blocked => "blocked",
            Action::NoOp => "no-op",
        }
    }
}

/// One property that changes. `path` is dotted for nested maps (`components.compute.replicas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Property path.
    pub path: String,
    /// Value before, absent when the property is new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Value after, absent when the property goes away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Whether this change alone forces replacement.
    pub forces_replacement: bool,
}

/// The planned action for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Resource id.
    pub id: ResourceId,
    /// Resource kind.
    pub kind: Kind,
    /// What happens.
    pub action: Action,
    /// Why, in one sentence.
    pub reason: String,
    /// Property-level changes.
    pub changes: Vec<Change>,
    /// Dependencies (of the desired resource, or of the observed one when deleting).
    pub depends_on: Vec<ResourceId>,
}

/// Counts of steps by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Creations.
    pub create: usize,
    /// In-place updates.
    pub update: usize,
    /// Replacements.
    pub replace: usize,
    /// Deletions.
    pub delete: usize,
    /// Refused deletions or replacements.
    pub blocked: usize,
    /// Unchanged resources.
    pub no_op: usize,
}

/// An ordered plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps in execution order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Counts by action.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::Blocked => s.blocked += 1,
                Action::NoOp => s.no_op += 1,
            }
        }
        s
    }

    /// Whether anything would change or is blocked.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action != Action::NoOp)
    }

    /// The steps that are not no-ops.
    pub fn changed(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.action != Action::NoOp)
    }
}

/// Plans how to move from `observed` to `desired`.
pub fn plan(desired: &Graph, observed: &Graph) -> Plan {
    // Steps are indexed like the desired resources (sorted by id); both graphs are sorted,
    // so one merge pass pairs each desired resource with what is observed.
    let ids: Vec<&ResourceId> = desired.resources.keys().collect();
    let mut observed_iter = observed.resources.iter().peekable();
    let mut steps: Vec<Step> = Vec::with_capacity(ids.len());
    for (id, want) in &desired.resources {
        while observed_iter.peek().is_some_and(|(oid, _)| *oid < id) {
            observed_iter.next();
        }
        let have = observed_iter.peek().filter(|(oid, _)| *oid == id).map(|(_, r)| *r);
        steps.push(match have {
            None => step(
                want,
                Action::Create,
                "does not exist yet".to_owned(),
                want.properties
                    .iter()
                    .map(|(k, v)| Change { path: k.to_owned(), before: None, after: Some(v.clone()), forces_replacement: false })
                    .collect(),
            ),
            Some(have) => compare(want, have),
        });
    }

    // A replaced resource gets a new cloud id: what refers to it in a property that cannot
    // change in place must be replaced too; in any other property it is updated.
    let order = topological_indices(desired);
    if steps.iter().any(|s| s.action == Action::Replace) {
        let index = |id: &ResourceId| ids.binary_search(&id).ok();
        for &i in &order {
            if steps[i].action == Action::Replace {
                continue;
            }
            let want = &desired.resources[ids[i]];
            let mut cascade: Option<(Action, String)> = None;
            for (prop, value) in want.properties.iter() {
                let mut hit = None;
                value.for_each_ref(&mut |dep| {
                    if hit.is_none() && index(dep).is_some_and(|d| steps[d].action == Action::Replace) {
                        hit = Some(dep.clone());
                    }
                });
                if let Some(dep) = hit {
                    if want.kind.replace_on().contains(&prop) {
                        cascade = Some((Action::Replace, format!("{dep} is replaced and `{prop}` cannot change in place")));
                        break;
                    } else if cascade.is_none() {
                        cascade = Some((Action::Update, format!("{dep} is replaced; `{prop}` will point at the new one")));
                    }
                }
            }
            if let Some((action, reason)) = cascade {
                let s = &mut steps[i];
                if action == Action::Replace || s.action == Action::NoOp {
                    s.action = action;
                    s.reason = reason;
                }
            }
        }
    }

    // Replacing a protected resource would delete it: refuse, like a deletion.
    for s in steps.iter_mut().filter(|s| s.action == Action::Replace) {
        if let Some(reason) = observed.resources.get(&s.id).and_then(|r| r.protection.as_ref()) {
            s.action = Action::Blocked;
            s.reason = format!("replacement refused ({}): {reason}", s.reason);
        }
    }

    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut ordered: Vec<Step> = order.iter().filter_map(|&i| slots[i].take()).collect();

    let observed_ids: Vec<&ResourceId> = observed.resources.keys().collect();
    for i in topological_indices(observed).into_iter().rev() {
        let id = observed_ids[i];
        if desired.resources.contains_key(id) {
            continue;
        }
        let have = &observed.resources[id];
        // An adopted resource (an Azure resource group the spec named) existed before byoc
        // and outlives it: not even lifting the protections (`destroy --delete-data`)
        // deletes it.
        let adopted = have.properties.get("adopted") == Some(&Value::Bool(true));
        let (action, reason) = match &have.protection {
            _ if adopted => {
                (Action::Blocked, format!("deletion refused: {} was adopted, not created, by byoc; it is never deleted", have.id))
            }
            Some(reason) => (Action::Blocked, format!("deletion refused: {reason}")),
            None => (Action::Delete, "removed from the specs".to_owned()),
        };
        let changes = have
            .properties
            .iter()
            .map(|(k, v)| Change { path: k.to_owned(), before: Some(v.clone()), after: None, forces_replacement: false })
            .collect();
        ordered.push(step(have, action, reason, changes));
    }
    Plan { steps: ordered }
}

fn step(r: &Resource, action: Action, reason: String, changes: Vec<Change>) -> Step {
    Step { id: r.id.clone(), kind: r.kind, action, reason, changes, depends_on: r.depends_on.iter().cloned().collect() }
}

fn compare(want: &Resource, have: &Resource) -> Step {
    let immutable = want.kind.replace_on();
    let mut changes = Vec::new();
    if want.properties == have.properties {
        return step(want, Action::NoOp, "unchanged".to_owned(), changes);
    }
    let keys: BTreeSet<&str> = want.properties.keys().chain(have.properties.keys()).collect();
    for key in keys {
        let forces = immutable.contains(&key);
        diff(key, have.properties.get(key), want.properties.get(key), forces, &mut changes);
    }
    let forcing: Vec<&str> = changes.iter().filter(|c| c.forces_replacement).map(|c| c.path.as_str()).collect();
    let (action, reason) = if !forcing.is_empty() {
        let first: BTreeSet<&str> = forcing.iter().map(|p| p.split('.').next().unwrap_or(p)).collect();
        let names: Vec<String> = first.iter().map(|p| format!("`{p}`")).collect();
        (Action::Replace, format!("{} cannot change in place", names.join(", ")))
    } else if !changes.is_empty() {
        let n = changes.len();
        (Action::Update, format!("{n} propert{} change{} in place", if n == 1 { "y" } else { "ies" }, if n == 1 { "s" } else { "" }))
    } else {
        (Action::NoOp, "unchanged".to_owned())
    };
    step(want, action, reason, changes)
}

fn diff(path: &str, before: Option<&Value>, after: Option<&Value>, forces: bool, out: &mut Vec<Change>) {
    // Most properties of most resources are unchanged: one comparison, no path built.
    if before == after {
        return;
    }
    match (before, after) {
        (Some(Value::Map(b)), Some(Value::Map(a))) => {
            let keys: BTreeSet<&str> = b.keys().chain(a.keys()).collect();
            for k in keys {
                diff(&format!("{path}.{k}"), b.get(k), a.get(k), forces, out);
            }
        }
        (b, a) => out.push(Change { path: path.to_owned(), before: b.cloned(), after: a.cloned(), forces_replacement: forces }),
    }
}

/// Resource ids with every dependency before its dependents; ties by id. Dependencies
/// outside the graph are ignored; a cycle (a bug in expansion) is broken by id order.
pub fn topological(graph: &Graph) -> Vec<ResourceId> {
    let ids: Vec<&ResourceId> = graph.resources.keys().collect();
    topological_indices(graph).into_iter().map(|i| ids[i].clone()).collect()
}

/// [`topological`] as positions in the graph's (sorted) resource map.
fn topological_indices(graph: &Graph) -> Vec<usize> {
    // Work on indices into the (sorted) id list: the order of indices is the order of ids,
    // and no string is compared after the edges are resolved.
    let ids: Vec<&ResourceId> = graph.resources.keys().collect();
    let index = |id: &ResourceId| ids.binary_search(&id).ok();
    let mut pending = vec![0usize; ids.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for (i, r) in graph.resources.values().enumerate() {
        for dep in r.depends_on.iter().filter_map(&index).filter(|&d| d != i) {
            pending[i] += 1;
            dependents[dep].push(i);
        }
    }
    let mut done = vec![false; ids.len()];
    let mut ready: BTreeSet<usize> = (0..ids.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(ids.len());
    let mut scan = 0;
    while order.len() < ids.len() {
        let next = match ready.pop_first() {
            Some(i) => i,
            None => {
                // Only a cycle gets here: take the first resource not yet placed.
                while done[scan] {
                    scan += 1;
                }
                scan
            }
        };
        if done[next] {
            continue;
        }
        done[next] = true;
        order.push(next);
        for &d in &dependents[next] {
            pending[d] = pending[d].saturating_sub(1);
            if pending[d] == 0 && !done[d] {
                ready.insert(d);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;

    fn graph(resources: Vec<Resource>) -> Graph {
        let mut g = Graph::default();
        for r in resources {
            g.add(r);
        }
        g
    }

    fn vpc(cidr: &str) -> Resource {
        Resource::new(Kind::AwsVpc, "main").set("cidr", cidr)
    }

    fn subnet(name: &str, cidr: &str) -> Resource {
        Resource::new(Kind::AwsSubnet, name).set("vpc", Value::reference(&ResourceId::new(Kind::AwsVpc, "main"))).set("cidr", cidr)
    }

    fn igw() -> Resource {
        Resource::new(Kind::AwsInternetGateway, "main").set("vpc", Value::reference(&ResourceId::new(Kind::AwsVpc, "main")))
    }

    fn actions(p: &Plan) -> Vec<(&str, Action)> {
        p.steps.iter().map(|s| (s.id.as_str(), s.action)).collect()
    }

    #[test]
    fn table_of_cases() {
        struct Case {
            name: &'static str,
            observed: Vec<Resource>,
            desired: Vec<Resource>,
            want: Vec<(&'static str, Action)>,
        }
        let cases = [
            Case { name: "nothing to nothing", observed: vec![], desired: vec![], want: vec![] },
            Case {
                name: "create in dependency order",
                observed: vec![],
                desired: vec![subnet("a", "10.0.0.0/24"), vpc("10.0.0.0/16")],
                want: vec![("aws.vpc/main", Action::Create), ("aws.subnet/a", Action::Create)],
            },
            Case {
                name: "unchanged",
                observed: vec![vpc("10.0.0.0/16")],
                desired: vec![vpc("10.0.0.0/16")],
                want: vec![("aws.vpc/main", Action::NoOp)],
            },
            Case {
                name: "mutable property updates",
                observed: vec![vpc("10.0.0.0/16").set("enableDnsHostnames", false)],
                desired: vec![vpc("10.0.0.0/16").set("enableDnsHostnames", true)],
                want: vec![("aws.vpc/main", Action::Update)],
            },
            Case {
                name: "immutable property replaces and cascades by binding",
                observed: vec![vpc("10.0.0.0/16"), subnet("a", "10.0.0.0/24"), igw()],
                desired: vec![vpc("10.1.0.0/16"), subnet("a", "10.0.0.0/24"), igw()],
                want: vec![
                    ("aws.vpc/main", Action::Replace),
                    ("aws.internet-gateway/main", Action::Update),
                    ("aws.subnet/a", Action::Replace),
                ],
            },
            Case {
                name: "delete dependents first",
                observed: vec![vpc("10.0.0.0/16"), subnet("a", "10.0.0.0/24")],
                desired: vec![],
                want: vec![("aws.subnet/a", Action::Delete), ("aws.vpc/main", Action::Delete)],
            },
            Case {
                name: "protected deletion is blocked",
                observed: vec![Resource::new(Kind::AwsS3Bucket, "data").set("name", "b").protect("holds data")],
                desired: vec![],
                want: vec![("aws.s3-bucket/data", Action::Blocked)],
            },
            Case {
                name: "protected replacement is blocked",
                observed: vec![Resource::new(Kind::AwsS3Bucket, "data").set("name", "b").protect("holds data")],
                desired: vec![Resource::new(Kind::AwsS3Bucket, "data").set("name", "c").protect("holds data")],
                want: vec![("aws.s3-bucket/data", Action::Blocked)],
            },
        ];
        for case in cases {
            let p = plan(&graph(case.desired), &graph(case.observed));
            assert_eq!(actions(&p), case.want, "{}", case.name);
        }
    }

    #[test]
    fn nested_changes_are_reported_by_path() {
        let before = Resource::new(Kind::K8sRisingWave, "a")
            .set("components", Value::map([("compute", Value::map([("replicas", 3u32.into()), ("cpu", "4".into())]))]));
        let after = Resource::new(Kind::K8sRisingWave, "a")
            .set("components", Value::map([("compute", Value::map([("replicas", 6u32.into()), ("cpu", "4".into())]))]));
        let p = plan(&graph(vec![after]), &graph(vec![before]));
        assert_eq!(p.steps[0].action, Action::Update);
        assert_eq!(
            p.steps[0].changes,
            vec![Change {
                path: "components.compute.replicas".into(),
                before: Some(Value::Int(3)),
                after: Some(Value::Int(6)),
                forces_replacement: false
            }]
        );
    }

    #[test]
    fn blocked_replacement_says_why_in_both_parts() {
        let p = plan(
            &graph(vec![Resource::new(Kind::AwsS3Bucket, "data").set("name", "c")]),
            &graph(vec![Resource::new(Kind::AwsS3Bucket, "data").set("name", "b").protect("holds data")]),
        );
        assert_eq!(p.steps[0].reason, "replacement refused (`name` cannot change in place): holds data");
    }
}
