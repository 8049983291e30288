//! Custom IAM roles of the project (`projects/P/roles/ID`, IAM admin v1): the agent's
//! least-privilege role, `policies/gcp/agent-role.json`.
//!
//! A role takes no labels; its `description` carries the ownership line, as a service
//! account's does, and its id is named from the environment. GCP soft-deletes a custom
//! role: for about 7 days it can be undeleted, and its id cannot be used again for about
//! 37 days (<https://cloud.google.com/iam/docs/creating-custom-roles#deleting-custom-role>).
//! So a create answered 409 ALREADY_EXISTS reads the role: a deleted one of ours is
//! undeleted and then set to what is desired (an apply after a destroy); a live one of ours
//! is adopted (an apply killed after the create); anyone else's is an ownership conflict.
//! Observe treats a deleted role as absent.

use google_cloud_iam_admin_v1::model::{Role, UpdateRoleRequest, role::RoleLaunchStage};
use serde_json::json;

use super::{Gcp, found, strings, text};
use crate::cloud::{CloudError, Found};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Rounds of read-then-update before giving up on a role that keeps changing (an update
/// carries the etag read; a stale one is refused 409 ABORTED).
const UPDATE_ROUNDS: u32 = 5;

/// The fields byoc sets on a role, as `updateMask` names them.
const MASK: &str = "title,description,includedPermissions,stage";

/// A role's full name from its resource (`projects/P/roles/ID`).
pub(super) fn role_name(r: &Resource, default_project: &str) -> String {
    let project = match text(r, "project") {
        "" => default_project,
        p => p,
    };
    format!("projects/{project}/roles/{}", text(r, "roleId"))
}

/// The role `r` asks for.
fn wanted(r: &Resource) -> Role {
    Role::new()
        .set_title(text(r, "title"))
        .set_description(text(r, "description"))
        .set_included_permissions(strings(r.properties.get("includedPermissions")))
        .set_stage(RoleLaunchStage::Ga)
}

/// Whether the live role already is what `want` says (permissions compared as sets:
/// GCP keeps them sorted, the file may not).
fn same(live: &Role, want: &Role) -> bool {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    live.title == want.title
        && live.description == want.description
        && live.stage == want.stage
        && sorted(&live.included_permissions) == sorted(&want.included_permissions)
}

/// What observe reports of a live role, in the resource's property form, for drift.
fn live_properties(role: &Role) -> Map {
    let mut permissions = role.included_permissions.clone();
    permissions.sort();
    let mut live = Map::new();
    live.insert("includedPermissions", Value::strings(&permissions));
    live.insert("title", Value::from(role.title.as_str()));
    live
}

impl Gcp {
    /// The custom roles the desired graph and the inventory name that exist, are not
    /// deleted, and carry this environment's mark for their resource.
    pub(super) async fn observe_custom_roles(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        for (id, name) in &self.roles {
            let what = format!("iam roles.get for {id}");
            let Some(role) = super::unless_gone(self.call(&what, || self.iam.get_role().set_name(name).send()).await)? else { continue };
            if role.deleted || self.described_kind(Kind::GcpCustomRole, Some(&role.description)).as_ref() != Some(id) {
                continue;
            }
            out.push(found(id, Kind::GcpCustomRole, name.clone(), [("name", name.clone())], live_properties(&role)));
        }
        Ok(())
    }

    pub(super) async fn ensure_custom_role(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let name = role_name(r, &self.project);
        let want = wanted(r);
        let done = || found(&r.id, Kind::GcpCustomRole, name.clone(), [("name", name.clone())], Map::new());
        if existing.is_none() {
            let what = format!("iam roles.create for {}", r.id);
            let parent = name.rsplit_once("/roles/").map_or("", |(p, _)| p).to_owned();
            let created = self
                .call(&what, || self.iam.create_role().set_parent(&parent).set_role_id(text(r, "roleId")).set_role(want.clone()).send())
                .await;
            match created {
                Ok(_) => return Ok(done()),
                // Ours, deleted (a rerun after destroy) or live (a rerun after a kill), or
                // someone else's: read it and decide below.
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {}
                Err(e) => return Err(e),
            }
        }
        let what = format!("iam roles.update for {}", r.id);
        for round in 1..=UPDATE_ROUNDS {
            let mut live = self.call(&what, || self.iam.get_role().set_name(&name).send()).await?;
            if self.described_kind(r.kind, Some(&live.description)).as_ref() != Some(&r.id) {
                return Err(self.not_ours(r, what, "custom role", &name));
            }
            if live.deleted {
                let undo = format!("iam roles.undelete for {}", r.id);
                let etag = live.etag.clone();
                live = self.call(&undo, || self.iam.undelete_role().set_name(&name).set_etag(etag.clone()).send()).await?;
            }
            if same(&live, &want) {
                return Ok(done());
            }
            let body = serde_json::to_value(want.clone().set_etag(live.etag.clone()))
                .map_err(|e| CloudError::new(what.as_str(), format!("the role made is not JSON: {e}")))?;
            let request: UpdateRoleRequest = serde_json::from_value(json!({"name": name, "role": body, "updateMask": MASK}))
                .map_err(|e| CloudError::new(what.as_str(), format!("the update request made is not valid: {e}")))?;
            match self.call(&what, || self.iam.update_role().with_request(request.clone()).send()).await {
                Ok(_) => return Ok(done()),
                Err(e) if e.is(&["ABORTED"]) && round < UPDATE_ROUNDS => {
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!("retry: {what}: the role changed since it was read; reading it again"),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(CloudError::new(what, format!("the role {name} kept changing under {UPDATE_ROUNDS} updates; apply again")))
    }

    pub(super) async fn delete_custom_role(&self, f: &Found) -> Result<(), CloudError> {
        let what = format!("iam roles.delete for {}", f.id);
        super::unless_gone(self.call(&what, || self.iam.delete_role().set_name(&f.cloud_id).send()).await)?;
        Ok(())
    }

    /// Records the role ids observe reads (custom roles cannot be listed by owner).
    pub(super) fn expect_custom_role(&mut self, r: &Resource) {
        if !self.roles.iter().any(|(id, _)| *id == r.id) {
            let name = role_name(r, &self.project);
            self.roles.push((ResourceId::clone(&r.id), name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_the_same_whatever_the_order_of_its_permissions_and_differs_by_any_one() {
        let r = Resource::new(Kind::GcpCustomRole, "agent")
            .set("roleId", "byoc_prod_agent")
            .set("title", "byoc agent")
            .set("description", "managed by byoc: environment=prod resource=gcp.custom-role/agent")
            .set("includedPermissions", Value::strings(["b.c.d", "a.b.c"]));
        assert_eq!(role_name(&r, "acme"), "projects/acme/roles/byoc_prod_agent");
        let want = wanted(&r);
        let live = want.clone().set_included_permissions(["a.b.c", "b.c.d"]);
        assert!(same(&live, &want));
        assert!(!same(&live.clone().set_included_permissions(["a.b.c"]), &want), "one permission fewer");
        assert!(!same(&live.clone().set_included_permissions(["a.b.c", "b.c.d", "x.y.z"]), &want), "one more");
        assert!(!same(&live.set_stage(RoleLaunchStage::Beta), &want));
        let request: UpdateRoleRequest =
            serde_json::from_value(json!({"name": "projects/acme/roles/x", "role": {"title": "t"}, "updateMask": MASK})).expect("parses");
        assert_eq!(request.update_mask.map(|m| m.paths.len()), Some(4));
    }
}
