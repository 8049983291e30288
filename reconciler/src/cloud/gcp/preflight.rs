//! Checks made before any change, every problem reported at once: the APIs byoc calls are
//! enabled in the project (Service Usage `services:batchGet`), the caller holds every
//! permission the plan needs on the project (Resource Manager `testIamPermissions`, which
//! answers the subset held), and the region exists (GKE, or Compute when GKE's API is off,
//! answers a list in an unknown region with INVALID_ARGUMENT naming it).

use std::collections::BTreeSet;

use super::Gcp;
pub use crate::cloud::aws::preflight::Preflight;
use crate::plan::{Action, Plan};
use crate::resource::Kind;

/// The APIs every apply calls.
pub const SERVICES: [&str; 4] =
    ["compute.googleapis.com", "container.googleapis.com", "iam.googleapis.com", "cloudresourcemanager.googleapis.com"];

/// The permissions one planned action needs on the project (create and update share
/// `ensure`; reads are listed with them, since ensure reads back).
pub fn permissions_for(kind: Kind, action: Action) -> &'static [&'static str] {
    let delete = action == Action::Delete;
    match (kind, delete) {
        (Kind::GcpNetwork, false) => &["compute.networks.create", "compute.networks.get"],
        (Kind::GcpNetwork, true) => &["compute.networks.delete"],
        (Kind::GcpSubnetwork, false) => {
            &["compute.subnetworks.create", "compute.subnetworks.update", "compute.subnetworks.get", "compute.networks.updatePolicy"]
        }
        (Kind::GcpSubnetwork, true) => &["compute.subnetworks.delete"],
        (Kind::GcpFirewall, false) => {
            &["compute.firewalls.create", "compute.firewalls.update", "compute.firewalls.get", "compute.networks.updatePolicy"]
        }
        (Kind::GcpFirewall, true) => &["compute.firewalls.delete"],
        (Kind::GcpRouterNat, false) => &["compute.routers.create", "compute.routers.update", "compute.routers.get"],
        (Kind::GcpRouterNat, true) => &["compute.routers.delete"],
        (Kind::GcpGkeCluster, false) => &[
            "container.clusters.create",
            "container.clusters.update",
            "container.clusters.get",
            "container.operations.get",
            "container.operations.list",
        ],
        (Kind::GcpGkeCluster, true) => &["container.clusters.delete", "container.operations.get", "container.operations.list"],
        (Kind::GcpNodePool, false) => &[
            "container.clusters.update",
            "container.clusters.get",
            "container.operations.get",
            "container.operations.list",
            "iam.serviceAccounts.actAs",
        ],
        (Kind::GcpNodePool, true) => &["container.clusters.update", "container.operations.get", "container.operations.list"],
        (Kind::GcpServiceAccount, false) => &["iam.serviceAccounts.create", "iam.serviceAccounts.get"],
        (Kind::GcpServiceAccount, true) => &["iam.serviceAccounts.delete"],
        (Kind::GcpCustomRole, false) => &["iam.roles.create", "iam.roles.get", "iam.roles.update", "iam.roles.undelete"],
        (Kind::GcpCustomRole, true) => &["iam.roles.delete"],
        (Kind::GcpIamBinding, _) => &[
            "resourcemanager.projects.getIamPolicy",
            "resourcemanager.projects.setIamPolicy",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccounts.setIamPolicy",
            "storage.buckets.getIamPolicy",
            "storage.buckets.setIamPolicy",
        ],
        (Kind::GcpBucket, false) => &["storage.buckets.create", "storage.buckets.get", "storage.buckets.update"],
        (Kind::GcpBucket, true) => &["storage.buckets.delete", "storage.objects.list", "storage.objects.delete"],
        _ => &[],
    }
}

/// Every permission the plan's changes need, sorted, each once.
pub fn plan_permissions(plan: &Plan) -> Vec<&'static str> {
    let mut all: BTreeSet<&'static str> = BTreeSet::new();
    for s in plan.changed() {
        all.extend(permissions_for(s.kind, s.action));
    }
    all.into_iter().collect()
}

impl Gcp {
    /// Runs every check; problems are collected, not stopped at.
    pub async fn preflight(&self, plan: &Plan) -> Preflight {
        let mut out = Preflight { caller: format!("project {}", self.project), ..Preflight::default() };
        let parent = self.project_path();
        let names: Vec<String> = SERVICES.iter().map(|s| format!("{parent}/services/{s}")).collect();
        match self
            .call("serviceusage services.batchGet", || self.usage.batch_get_services().set_parent(&parent).set_names(names.clone()).send())
            .await
        {
            Ok(answer) => {
                for s in SERVICES {
                    let enabled = answer.services.iter().any(|x| {
                        x.name.ends_with(&format!("/services/{s}")) && x.state == google_cloud_api_serviceusage_v1::model::State::Enabled
                    });
                    if !enabled {
                        out.problems.push(format!(
                            "the API {s} is not enabled in project {}: enable it with `gcloud services enable {s} --project {}`",
                            self.project, self.project
                        ));
                    }
                }
            }
            Err(e) => out.problems.push(format!("could not read which APIs are enabled ({e}); the caller needs serviceusage.services.get")),
        }
        let wanted = plan_permissions(plan);
        if !wanted.is_empty() {
            let asked: Vec<String> = wanted.iter().map(|p| (*p).to_owned()).collect();
            match self
                .call("resourcemanager projects.testIamPermissions", || {
                    self.projects.test_iam_permissions().set_resource(&parent).set_permissions(asked.clone()).send()
                })
                .await
            {
                Ok(answer) => {
                    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !answer.permissions.iter().any(|h| h == p)).collect();
                    if !missing.is_empty() {
                        out.problems.push(format!(
                            "the caller lacks {} permission(s) the plan needs on project {}: {}; grant a role holding them (e.g. roles/owner for a bootstrap, or the roles in policies/gcp/)",
                            missing.len(),
                            self.project,
                            missing.join(", ")
                        ));
                    }
                }
                Err(e) => out.problems.push(format!("could not test the caller's permissions ({e})")),
            }
        }
        // The region is checked by a list in it: GKE's, or Compute's when GKE's API is off
        // (reported above); both answer a region GCP lacks 400 INVALID_ARGUMENT naming it.
        let location = format!("{parent}/locations/{}", self.region);
        let mut listed = self.call("container clusters.list", || self.gke.list_clusters().set_parent(&location).send()).await.map(|_| ());
        if matches!(&listed, Err(e) if super::api_disabled(e)) {
            listed = self
                .call("compute subnetworks.list", || {
                    self.subnetworks.list().set_project(&self.project).set_region(&self.region).set_max_results(1_u32).send()
                })
                .await
                .map(|_| ());
        }
        if let Err(e) = listed {
            if super::unknown_region(&e, &self.region) || e.is(&["NOT_FOUND"]) {
                out.problems.push(format!(
                    "the region {:?} does not exist in project {} ({}); set spec.region to a GCP region such as us-central1",
                    self.region, self.project, e.message
                ));
            } else {
                out.problems.push(format!("could not check the region {:?} ({e})", self.region));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_provider_changes_needs_some_permission() {
        for kind in [
            Kind::GcpNetwork,
            Kind::GcpSubnetwork,
            Kind::GcpFirewall,
            Kind::GcpRouterNat,
            Kind::GcpGkeCluster,
            Kind::GcpNodePool,
            Kind::GcpServiceAccount,
            Kind::GcpIamBinding,
            Kind::GcpCustomRole,
            Kind::GcpBucket,
        ] {
            for action in [Action::Create, Action::Delete] {
                assert!(!permissions_for(kind, action).is_empty(), "{kind:?} {action:?}");
            }
        }
        assert!(permissions_for(Kind::GcpServiceAttachment, Action::Create).is_empty(), "applied in the cluster, not by the cloud half");
    }
}
