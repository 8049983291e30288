//! Google service accounts and IAM bindings.
//!
//! A service account takes no labels: its id is named from the environment and its
//! `description` carries the ownership line. An IAM binding is not a resource in GCP but
//! one member of one role in a policy (the project's, a bucket's, a service account's).
//! Each is added or removed by read-modify-write: read the policy with its etag, change
//! only that member of that role (and condition), write it back with the etag. A write
//! that lost a race (ABORTED, 409, as Resource Manager and IAM answer setIamPolicy with a
//! stale etag; 412 from GCS) is read again and redone, so a binding someone else added
//! meanwhile is never dropped.

use serde_json::{Value as Json, json};

use super::{Gcp, found, resolve, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Rounds of read-modify-write before giving up on a policy that keeps changing.
const POLICY_ROUNDS: u32 = 10;

/// Where a binding lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `projects/<p>`.
    Project(String),
    /// A service account, by email.
    ServiceAccount(String),
    /// A bucket, by name (its policy is read and written through the GCS JSON API).
    Bucket(String),
}

/// One binding: a member of a role on a target, under an optional condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Binding {
    pub target: Target,
    pub role: String,
    pub member: String,
    /// `(title, expression)`.
    pub condition: Option<(String, String)>,
}

impl Binding {
    /// The binding as a cloud id (what the inventory keeps and delete reads).
    fn cloud_id(&self) -> String {
        let (kind, on) = match &self.target {
            Target::Project(p) => ("project", p),
            Target::ServiceAccount(e) => ("serviceAccount", e),
            Target::Bucket(b) => ("bucket", b),
        };
        let mut v = json!({"on": kind, "name": on, "role": self.role, "member": self.member});
        if let Some((title, expression)) = &self.condition {
            v["condition"] = json!({"title": title, "expression": expression});
        }
        v.to_string()
    }

    fn from_cloud_id(id: &str) -> Option<Binding> {
        let v: Json = serde_json::from_str(id).ok()?;
        let name = v["name"].as_str()?.to_owned();
        let target = match v["on"].as_str()? {
            "project" => Target::Project(name),
            "serviceAccount" => Target::ServiceAccount(name),
            "bucket" => Target::Bucket(name),
            _ => return None,
        };
        let condition = v.get("condition").and_then(|c| Some((c["title"].as_str()?.to_owned(), c["expression"].as_str()?.to_owned())));
        Some(Binding { target, role: v["role"].as_str()?.to_owned(), member: v["member"].as_str()?.to_owned(), condition })
    }
}

/// Whether a policy binding (JSON, as the APIs answer) is for `role` under `condition`.
fn same_slot(b: &Json, role: &str, condition: Option<&(String, String)>) -> bool {
    if b["role"].as_str() != Some(role) {
        return false;
    }
    match (condition, b.get("condition").filter(|c| !c.is_null())) {
        (None, None) => true,
        (Some((title, expression)), Some(c)) => c["title"].as_str() == Some(title) && c["expression"].as_str() == Some(expression),
        _ => false,
    }
}

/// Whether `policy` holds the binding.
pub(super) fn holds(policy: &Json, b: &Binding) -> bool {
    policy["bindings"].as_array().is_some_and(|bs| {
        bs.iter().any(|x| {
            same_slot(x, &b.role, b.condition.as_ref()) && x["members"].as_array().is_some_and(|m| m.iter().any(|m| m == &b.member))
        })
    })
}

/// Adds the binding's member to `policy`, leaving every other binding and member as it
/// is; false when it was there already.
pub(super) fn add(policy: &mut Json, b: &Binding) -> bool {
    if holds(policy, b) {
        return false;
    }
    if !policy["bindings"].is_array() {
        policy["bindings"] = json!([]);
    }
    let bindings = policy["bindings"].as_array_mut().expect("made an array above");
    match bindings.iter_mut().find(|x| same_slot(x, &b.role, b.condition.as_ref())) {
        Some(slot) => match slot["members"].as_array_mut() {
            Some(members) => members.push(json!(b.member)),
            None => slot["members"] = json!([b.member]),
        },
        None => {
            let mut slot = json!({"role": b.role, "members": [b.member]});
            if let Some((title, expression)) = &b.condition {
                slot["condition"] = json!({"title": title, "expression": expression});
            }
            bindings.push(slot);
        }
    }
    if b.condition.is_some() {
        // Conditions need policy version 3 (IAM docs, "Policy versions").
        policy["version"] = json!(3);
    }
    true
}

/// Removes the binding's member from `policy` (and its role's binding when it was the
/// last member); false when it was not there.
pub(super) fn remove(policy: &mut Json, b: &Binding) -> bool {
    if !holds(policy, b) {
        return false;
    }
    if let Some(bindings) = policy["bindings"].as_array_mut() {
        for slot in bindings.iter_mut().filter(|x| same_slot(x, &b.role, b.condition.as_ref())) {
            if let Some(members) = slot["members"].as_array_mut() {
                members.retain(|m| m != &b.member);
            }
        }
        bindings.retain(|x| x["members"].as_array().is_some_and(|m| !m.is_empty()));
    }
    true
}

/// A service account's email from its id.
pub(super) fn email(account_id: &str, project: &str) -> String {
    format!("{account_id}@{project}.iam.gserviceaccount.com")
}

impl Gcp {
    fn account_path(&self, email: &str) -> String {
        format!("projects/{}/serviceAccounts/{email}", self.project)
    }

    pub(super) async fn observe_service_accounts(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let parent = self.project_path();
        let mut token = String::new();
        loop {
            let page = self
                .call("iam serviceAccounts.list", || self.iam.list_service_accounts().set_name(&parent).set_page_token(&token).send())
                .await?;
            for a in &page.accounts {
                if let Some(id) = self.described_kind(Kind::GcpServiceAccount, Some(&a.description)) {
                    out.push(found(&id, Kind::GcpServiceAccount, a.email.clone(), [("email", a.email.clone())], Map::new()));
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            token = page.next_page_token.clone();
        }
    }

    pub(super) async fn ensure_service_account(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let account_id = text(r, "accountId");
        let project = match text(r, "project") {
            "" => self.project.as_str(),
            p => p,
        };
        let email = email(account_id, project);
        let what = format!("iam serviceAccounts.create for {}", r.id);
        if existing.is_none() {
            let account = google_cloud_iam_admin_v1::model::ServiceAccount::new()
                .set_display_name(account_id)
                .set_description(text(r, "description"));
            let parent = format!("projects/{project}");
            let created = self
                .call(&what, || {
                    self.iam
                        .create_service_account()
                        .set_name(&parent)
                        .set_account_id(account_id)
                        .set_service_account(account.clone())
                        .send()
                })
                .await;
            match created {
                Ok(_) => {}
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let path = self.account_path(&email);
                    let live = self.call(&what, || self.iam.get_service_account().set_name(&path).send()).await?;
                    if self.described_kind(r.kind, Some(&live.description)).as_ref() != Some(&r.id) {
                        return Err(self.not_ours(r, what, "service account", &email));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(found(&r.id, Kind::GcpServiceAccount, email.clone(), [("email", email)], Map::new()))
    }

    pub(super) async fn delete_service_account(&self, f: &Found) -> Result<(), CloudError> {
        let path = self.account_path(&f.cloud_id);
        let what = format!("iam serviceAccounts.delete for {}", f.id);
        unless_gone(self.call(&what, || self.iam.delete_service_account().set_name(&path).send()).await)?;
        Ok(())
    }

    /// The binding `r` describes, its references resolved through `refs`.
    fn binding_of(&self, r: &Resource, refs: &Refs) -> Result<Binding, CloudError> {
        let target = match r.refs_in("resource").into_iter().next() {
            Some(id) => {
                let on = resolve(refs, r, "resource")?.to_owned();
                match id.as_str().split_once('/').map(|(k, _)| k) {
                    Some("gcp.service-account") => Target::ServiceAccount(on),
                    Some("gcp.bucket") => Target::Bucket(on),
                    _ => return Err(CloudError::new(r.id.to_string(), format!("a binding on {id} is not supported"))),
                }
            }
            None => Target::Project(text(r, "resource").to_owned()),
        };
        let member = if r.refs_in("member").is_empty() {
            text(r, "member").to_owned()
        } else {
            format!("serviceAccount:{}", resolve(refs, r, "member")?)
        };
        let condition = match r.properties.get("condition") {
            Some(Value::Map(c)) => Some((
                c.get("title").and_then(Value::as_str).unwrap_or_default().to_owned(),
                c.get("expression").and_then(Value::as_str).unwrap_or_default().to_owned(),
            )),
            _ => None,
        };
        Ok(Binding { target, role: text(r, "role").to_owned(), member, condition })
    }

    /// The policy on `target` as JSON, with its etag inside.
    async fn read_policy(&self, target: &Target, what: &str) -> Result<Json, CloudError> {
        let options = google_cloud_iam_v1::model::GetPolicyOptions::new().set_requested_policy_version(3);
        let policy = match target {
            Target::Project(p) => {
                self.call(what, || self.projects.get_iam_policy().set_resource(p).set_options(options.clone()).send()).await?
            }
            Target::ServiceAccount(email) => {
                let path = self.account_path(email);
                self.call(what, || self.iam.get_iam_policy().set_resource(&path).set_options(options.clone()).send()).await?
            }
            Target::Bucket(b) => return self.storage.get_policy(&self.retry, b, what).await,
        };
        serde_json::to_value(&policy).map_err(|e| CloudError::new(what, format!("the policy read is not JSON: {e}")))
    }

    /// Writes `policy` (carrying the etag read) to `target`.
    async fn write_policy(&self, target: &Target, policy: &Json, what: &str) -> Result<(), CloudError> {
        let typed = || -> Result<google_cloud_iam_v1::model::Policy, CloudError> {
            serde_json::from_value(policy.clone()).map_err(|e| CloudError::new(what, format!("the policy made is not valid: {e}")))
        };
        match target {
            Target::Project(p) => {
                let policy = typed()?;
                self.call(what, || self.projects.set_iam_policy().set_resource(p).set_policy(policy.clone()).send()).await?;
            }
            Target::ServiceAccount(email) => {
                let policy = typed()?;
                let path = self.account_path(email);
                self.call(what, || self.iam.set_iam_policy().set_resource(&path).set_policy(policy.clone()).send()).await?;
            }
            Target::Bucket(b) => self.storage.set_policy(&self.retry, b, policy, what).await?,
        }
        Ok(())
    }

    /// Read-modify-write of the policy on `b.target` with `change`, redone when the write
    /// lost a race (the etag moved).
    async fn change_policy(&self, b: &Binding, id: &ResourceId, change: fn(&mut Json, &Binding) -> bool) -> Result<(), CloudError> {
        let what = format!("setIamPolicy for {id}");
        for round in 1..=POLICY_ROUNDS {
            let mut policy = self.read_policy(&b.target, &what).await?;
            if !change(&mut policy, b) {
                return Ok(());
            }
            match self.write_policy(&b.target, &policy, &what).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is(&["ABORTED", "FAILED_PRECONDITION"]) && round < POLICY_ROUNDS => {
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!(
                            "retry: {what}: the policy changed since it was read ({}); reading it again",
                            e.code.as_deref().unwrap_or("")
                        ),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(CloudError::new(what, format!("the policy kept changing under {POLICY_ROUNDS} writes; apply again")))
    }

    pub(super) async fn ensure_binding(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let b = self.binding_of(r, refs)?;
        self.change_policy(&b, &r.id, add).await?;
        Ok(found(&r.id, Kind::GcpIamBinding, b.cloud_id(), [], Map::new()))
    }

    pub(super) async fn delete_binding(&self, f: &Found) -> Result<(), CloudError> {
        let b = Binding::from_cloud_id(&f.cloud_id)
            .ok_or_else(|| CloudError::new(f.id.to_string(), format!("the recorded binding {:?} is not readable", f.cloud_id)))?;
        self.change_policy(&b, &f.id, remove).await
    }

    /// Bindings named by [`Gcp::bindings`] that their policies hold. References are
    /// resolved from what observe found so far (service accounts, buckets) and, for a
    /// service account not found, from its id (emails are made from ids).
    pub(super) async fn observe_bindings(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut refs: Refs = out.iter().map(|f| (f.id.clone(), f.clone())).collect();
        for (id, name) in &self.buckets {
            refs.entry(id.clone()).or_insert_with(|| found(id, Kind::GcpBucket, name.clone(), [], Map::new()));
        }
        for a in &self.accounts {
            refs.entry(a.0.clone()).or_insert_with(|| found(&a.0, Kind::GcpServiceAccount, a.1.clone(), [], Map::new()));
        }
        let mut policies: Vec<(Target, Json)> = Vec::new();
        for r in &self.bindings {
            let Ok(b) = self.binding_of(r, &refs) else { continue };
            let policy = match policies.iter().find(|(t, _)| *t == b.target) {
                Some((_, p)) => p.clone(),
                None => {
                    let what = format!("getIamPolicy for {}", r.id);
                    let read = match &b.target {
                        // A target that is gone holds no binding.
                        Target::ServiceAccount(_) | Target::Bucket(_) => unless_gone(self.read_policy(&b.target, &what).await)?,
                        Target::Project(_) => Some(self.read_policy(&b.target, &what).await?),
                    };
                    let p = read.unwrap_or(Json::Null);
                    policies.push((b.target.clone(), p.clone()));
                    p
                }
            };
            if holds(&policy, &b) {
                out.push(found(&r.id, Kind::GcpIamBinding, b.cloud_id(), [], Map::new()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(role: &str, member: &str) -> Binding {
        Binding { target: Target::Project("projects/p".into()), role: role.into(), member: member.into(), condition: None }
    }

    #[test]
    fn adding_and_removing_a_member_keeps_every_other_binding() {
        let mut policy = json!({"etag": "BwX1", "version": 1, "bindings": [
            {"role": "roles/viewer", "members": ["user:alice@example.com"]},
            {"role": "roles/monitoring.viewer", "members": ["user:bob@example.com"]},
        ]});
        let ours = binding("roles/monitoring.viewer", "serviceAccount:agent@p.iam.gserviceaccount.com");
        assert!(add(&mut policy, &ours));
        assert!(!add(&mut policy, &ours), "adding twice changes nothing");
        assert!(holds(&policy, &ours));
        assert_eq!(policy["bindings"][1]["members"], json!(["user:bob@example.com", "serviceAccount:agent@p.iam.gserviceaccount.com"]));
        assert_eq!(policy["etag"], "BwX1", "the etag read goes back with the write");
        assert!(remove(&mut policy, &ours));
        assert!(!holds(&policy, &ours));
        assert_eq!(policy["bindings"][1]["members"], json!(["user:bob@example.com"]), "bob stays");
        assert_eq!(policy["bindings"][0]["members"], json!(["user:alice@example.com"]));
        let last = binding("roles/viewer", "user:alice@example.com");
        assert!(remove(&mut policy, &last));
        assert_eq!(policy["bindings"].as_array().map(Vec::len), Some(1), "a role with no member left goes");
    }

    #[test]
    fn a_conditional_binding_is_its_own_slot_and_raises_the_policy_version() {
        let mut policy = json!({"etag": "e", "bindings": [{"role": "roles/storage.objectUser", "members": ["serviceAccount:x@p.iam.gserviceaccount.com"]}]});
        let mut b = binding("roles/storage.objectUser", "serviceAccount:rw@p.iam.gserviceaccount.com");
        b.target = Target::Bucket("data".into());
        b.condition = Some(("rw-a data prefix".into(), "resource.name.startsWith('x')".into()));
        assert!(add(&mut policy, &b));
        assert_eq!(policy["version"], 3);
        assert_eq!(policy["bindings"].as_array().map(Vec::len), Some(2), "not merged into the unconditional binding");
        let back = Binding::from_cloud_id(&b.cloud_id()).expect("readable");
        assert_eq!(back, b);
    }
}
