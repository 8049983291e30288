//! The IAM permission Google checks for each request the fake serves, so a test can deny
//! permissions ([`crate::Options::denied_permissions`]) and see the caller refused as it
//! would be: 403 `PERMISSION_DENIED` naming the permission, and nothing changed.
//!
//! From the permission references of each API:
//! Compute (<https://cloud.google.com/compute/docs/reference/rest/v1>, "IAM permissions" of
//! each method: `compute.<collection>.<get|list|create|update|delete>`, operations as
//! `compute.globalOperations.get` / `compute.regionOperations.get`), GKE
//! (<https://cloud.google.com/kubernetes-engine/docs/reference/api-permissions>: node pools
//! are read with `container.clusters.get` and changed with `container.clusters.update`),
//! IAM (<https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts>,
//! custom roles `iam.roles.create|get|list|update|delete|undelete`),
//! Resource Manager (`resourcemanager.projects.get|getIamPolicy|setIamPolicy`;
//! `testIamPermissions` needs none), Service Usage (`serviceusage.services.get|list`) and
//! Cloud Storage (<https://cloud.google.com/storage/docs/json_api/v1/>; `testIamPermissions`
//! needs none).
//!
//! Not reproduced: conditions; predefined roles (without [`crate::Options::caller`] a caller
//! holds every permission not denied; with one, only what the project's custom roles bound
//! to it hold); resource-level policies; and each API's own wording of the refusal (one
//! message for all).

use http::Method;

/// Every permission [`permission`] can name, sorted.
pub const ALL: &[&str] = &[
    "compute.firewalls.create",
    "compute.firewalls.delete",
    "compute.firewalls.get",
    "compute.firewalls.list",
    "compute.firewalls.update",
    "compute.globalOperations.get",
    "compute.networks.create",
    "compute.networks.delete",
    "compute.networks.get",
    "compute.networks.list",
    "compute.networks.update",
    "compute.regionOperations.get",
    "compute.routers.create",
    "compute.routers.delete",
    "compute.routers.get",
    "compute.routers.list",
    "compute.routers.update",
    "compute.subnetworks.create",
    "compute.subnetworks.delete",
    "compute.subnetworks.get",
    "compute.subnetworks.list",
    "compute.subnetworks.update",
    "container.clusters.create",
    "container.clusters.delete",
    "container.clusters.get",
    "container.clusters.list",
    "container.clusters.update",
    "container.operations.get",
    "container.operations.list",
    "iam.roles.create",
    "iam.roles.delete",
    "iam.roles.get",
    "iam.roles.list",
    "iam.roles.undelete",
    "iam.roles.update",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.list",
    "iam.serviceAccounts.setIamPolicy",
    "iam.serviceAccounts.update",
    "resourcemanager.projects.get",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.setIamPolicy",
    "serviceusage.services.get",
    "serviceusage.services.list",
    "storage.buckets.create",
    "storage.buckets.delete",
    "storage.buckets.get",
    "storage.buckets.getIamPolicy",
    "storage.buckets.list",
    "storage.buckets.setIamPolicy",
    "storage.buckets.update",
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.update",
];

/// `get`/`list`/`create`/`update`/`delete` of a REST collection by method and whether the
/// path names one item.
fn crud(method: &Method, item: bool) -> &'static str {
    match (method.as_str(), item) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("DELETE", _) => "delete",
        _ => "update",
    }
}

/// The permission Google checks for `method path` (`None`: none, or not a path the fake
/// serves).
pub fn permission(method: &Method, path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let verb = |s: &str| s.split_once(':').map(|(_, v)| v.to_owned());
    let name = match segs.as_slice() {
        ["compute", "v1", "projects", _, "global", "operations", ..] => "compute.globalOperations.get".to_owned(),
        ["compute", "v1", "projects", _, "regions", _, "operations", ..] => "compute.regionOperations.get".to_owned(),
        ["compute", "v1", "projects", _, "global", coll, rest @ ..] | ["compute", "v1", "projects", _, "regions", _, coll, rest @ ..] => {
            // `POST .../{name}/setX` (e.g. subnetworks' expandIpCidrRange) updates.
            format!("compute.{coll}.{}", crud(method, !rest.is_empty()))
        }
        ["v1", "projects", _, "locations", _, "operations", rest @ ..] => {
            format!("container.operations.{}", if rest.is_empty() { "list" } else { "get" })
        }
        ["v1", "projects", _, "locations", _, "clusters"] => format!("container.clusters.{}", crud(method, false)),
        ["v1", "projects", _, "locations", _, "clusters", c] => {
            let action = if verb(c).is_some() { "update" } else { crud(method, true) };
            format!("container.clusters.{action}")
        }
        // Node pools are parts of their cluster: read with get, changed with update.
        ["v1", "projects", _, "locations", _, "clusters", _, "nodePools", ..] => {
            format!("container.clusters.{}", if method == Method::GET { "get" } else { "update" })
        }
        // Custom roles (<https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles>).
        ["v1", "projects", _, "roles"] => format!("iam.roles.{}", crud(method, false)),
        ["v1", "projects", _, "roles", r] => match verb(r).as_deref() {
            Some("undelete") => "iam.roles.undelete".to_owned(),
            Some(_) => "iam.roles.update".to_owned(),
            None => format!("iam.roles.{}", crud(method, true)),
        },
        ["v1", "projects", _, "serviceAccounts"] => format!("iam.serviceAccounts.{}", crud(method, false)),
        ["v1", "projects", _, "serviceAccounts", a, ..] => match verb(a).as_deref() {
            Some(v @ ("getIamPolicy" | "setIamPolicy")) => format!("iam.serviceAccounts.{v}"),
            Some(_) => "iam.serviceAccounts.update".to_owned(),
            None => format!("iam.serviceAccounts.{}", crud(method, true)),
        },
        ["v1", "projects", _, s, ..] if s.starts_with("services") => {
            format!("serviceusage.services.{}", if *s == "services" { "list" } else { "get" })
        }
        ["v3", "projects", p] => match verb(p).as_deref() {
            Some("testIamPermissions") => return None,
            Some(v) => format!("resourcemanager.projects.{v}"),
            None => "resourcemanager.projects.get".to_owned(),
        },
        ["storage", "v1", "b", _, "iam", "testPermissions"] => return None,
        ["storage", "v1", "b", _, "iam"] => {
            format!("storage.buckets.{}", if method == Method::GET { "getIamPolicy" } else { "setIamPolicy" })
        }
        ["storage", "v1", "b"] => format!("storage.buckets.{}", crud(method, false)),
        ["storage", "v1", "b", _] => format!("storage.buckets.{}", crud(method, true)),
        ["storage", "v1", "b", _, "o"] | ["upload", "storage", "v1", "b", _, "o"] => format!("storage.objects.{}", crud(method, false)),
        ["storage", "v1", "b", _, "o", ..] | ["download", "storage", "v1", "b", _, "o", ..] => {
            format!("storage.objects.{}", crud(method, true))
        }
        _ => return None,
    };
    ALL.iter().copied().find(|p| *p == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_the_permissions_google_checks() {
        let p = |m: Method, path: &str| permission(&m, path);
        assert_eq!(p(Method::POST, "/compute/v1/projects/p/global/networks"), Some("compute.networks.create"));
        assert_eq!(p(Method::GET, "/compute/v1/projects/p/regions/r/subnetworks"), Some("compute.subnetworks.list"));
        assert_eq!(p(Method::PATCH, "/compute/v1/projects/p/regions/r/routers/x"), Some("compute.routers.update"));
        assert_eq!(p(Method::POST, "/compute/v1/projects/p/regions/r/operations/o/wait"), Some("compute.regionOperations.get"));
        assert_eq!(p(Method::POST, "/v1/projects/p/locations/l/clusters/c/nodePools/n:setSize"), Some("container.clusters.update"));
        assert_eq!(p(Method::GET, "/v1/projects/p/locations/l/clusters/c/nodePools"), Some("container.clusters.get"));
        assert_eq!(p(Method::GET, "/v1/projects/p/locations/l/operations"), Some("container.operations.list"));
        assert_eq!(p(Method::POST, "/v1/projects/p/serviceAccounts"), Some("iam.serviceAccounts.create"));
        assert_eq!(
            p(Method::POST, "/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:setIamPolicy"),
            Some("iam.serviceAccounts.setIamPolicy")
        );
        assert_eq!(p(Method::POST, "/v1/projects/p/roles"), Some("iam.roles.create"));
        assert_eq!(p(Method::PATCH, "/v1/projects/p/roles/byoc_x"), Some("iam.roles.update"));
        assert_eq!(p(Method::POST, "/v1/projects/p/roles/byoc_x:undelete"), Some("iam.roles.undelete"));
        assert_eq!(p(Method::DELETE, "/v1/projects/p/roles/byoc_x"), Some("iam.roles.delete"));
        assert_eq!(p(Method::GET, "/v1/projects/p/roles/byoc_x"), Some("iam.roles.get"));
        assert_eq!(p(Method::POST, "/v3/projects/p:getIamPolicy"), Some("resourcemanager.projects.getIamPolicy"));
        assert_eq!(p(Method::POST, "/v3/projects/p:testIamPermissions"), None);
        assert_eq!(p(Method::PUT, "/storage/v1/b/b/iam"), Some("storage.buckets.setIamPolicy"));
        assert_eq!(p(Method::POST, "/upload/storage/v1/b/b/o"), Some("storage.objects.create"));
        assert_eq!(p(Method::GET, "/storage/v1/b/b/o/x"), Some("storage.objects.get"));
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, ALL);
    }
}
