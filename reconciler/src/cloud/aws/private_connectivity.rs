//! Private connectivity for the control plane on EC2: a VPC endpoint service in front of the
//! internal network load balancers, with the principals allowed to connect to it.

use std::collections::BTreeSet;

use aws_sdk_ec2::types as ec2t;

use super::{Aws, ec2_tags, flag, found, missing, resolve_list, strings, tag_spec};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Resource, Value};

/// Output of a found endpoint service: its NLBs' ARNs, comma-separated.
const LOAD_BALANCER_ARNS: &str = "loadBalancerArns";

/// Sets each found endpoint service's live `loadBalancers`: a reference to each NLB observe
/// found by that ARN (the plan's form), the ARN itself for one it did not. An endpoint
/// service left in front of a replaced NLB, or of none, then shows as drift and is set back.
pub(super) fn link_endpoint_services(found: &mut [Found]) {
    let by_arn: std::collections::BTreeMap<String, crate::resource::ResourceId> =
        found.iter().filter(|f| matches!(f.kind, Kind::AwsServiceNlb | Kind::AwsNlb)).map(|f| (f.cloud_id.clone(), f.id.clone())).collect();
    for f in found.iter_mut().filter(|f| f.kind == Kind::AwsVpcEndpointService) {
        let Some(arns) = f.outputs.get(LOAD_BALANCER_ARNS) else { continue };
        let mut lbs: Vec<Value> = arns
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|arn| by_arn.get(arn).map_or_else(|| Value::from(arn), Value::reference))
            .collect();
        lbs.sort_by_key(|v| v.to_string());
        f.live.insert("loadBalancers", Value::List(lbs));
    }
}

impl Aws {
    pub(super) async fn observe_endpoint_services(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        // Tags are checked here rather than filtered by the service: not every emulator
        // filters endpoint services by tag.
        // Read every page: EC2 answers at most 1,000 per page.
        let mut services = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .call("ec2 DescribeVpcEndpointServiceConfigurations", || {
                    self.ec2.describe_vpc_endpoint_service_configurations().set_next_token(token.clone()).send()
                })
                .await?;
            services.extend(page.service_configurations().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for s in &services {
            let live =
                !matches!(s.service_state(), Some(ec2t::ServiceState::Deleted | ec2t::ServiceState::Deleting | ec2t::ServiceState::Failed));
            if let (true, Some(id), Some(cloud_id)) =
                (live, self.ours(Kind::AwsVpcEndpointService, ec2_tags(s.tags.as_deref())), s.service_id())
            {
                let name = s.service_name().unwrap_or_default().to_owned();
                let perms = self
                    .retry
                    .call("ec2 DescribeVpcEndpointServicePermissions", || {
                        self.ec2.describe_vpc_endpoint_service_permissions().service_id(cloud_id).send()
                    })
                    .await?;
                let mut principals: Vec<String> =
                    perms.allowed_principals().iter().filter_map(|p| p.principal().map(str::to_owned)).collect();
                principals.sort();
                let live = [
                    ("allowedPrincipals", Value::strings(principals)),
                    ("acceptanceRequired", Value::Bool(s.acceptance_required().unwrap_or(false))),
                ]
                .into_iter()
                .collect();
                let mut arns: Vec<String> = s.network_load_balancer_arns().to_vec();
                arns.sort();
                out.push(Found {
                    live,
                    id,
                    kind: Kind::AwsVpcEndpointService,
                    cloud_id: cloud_id.to_owned(),
                    outputs: [("serviceName".to_owned(), name), (LOAD_BALANCER_ARNS.to_owned(), arns.join(","))].into(),
                });
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_endpoint_service(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let lbs: BTreeSet<String> = resolve_list(refs, r, "loadBalancers")?.into_iter().collect();
        let acceptance = flag(r, "acceptanceRequired");
        let (service, name) = match existing {
            Some(f) => {
                let d = self
                    .retry
                    .call(&what("DescribeVpcEndpointServiceConfigurations"), || {
                        self.ec2.describe_vpc_endpoint_service_configurations().service_ids(&f.cloud_id).send()
                    })
                    .await?;
                let c = d.service_configurations().first().cloned().unwrap_or_else(|| ec2t::ServiceConfiguration::builder().build());
                let have: BTreeSet<String> = c.network_load_balancer_arns().iter().cloned().collect();
                let add: Vec<String> = lbs.difference(&have).cloned().collect();
                let remove: Vec<String> = have.difference(&lbs).cloned().collect();
                if !add.is_empty() || !remove.is_empty() || c.acceptance_required() != Some(acceptance) {
                    self.retry
                        .call(&what("ModifyVpcEndpointServiceConfiguration"), || {
                            self.ec2
                                .modify_vpc_endpoint_service_configuration()
                                .service_id(&f.cloud_id)
                                .acceptance_required(acceptance)
                                .set_add_network_load_balancer_arns(Some(add.clone()).filter(|a| !a.is_empty()))
                                .set_remove_network_load_balancer_arns(Some(remove.clone()).filter(|a| !a.is_empty()))
                                .send()
                        })
                        .await?;
                }
                (f.cloud_id.clone(), c.service_name().unwrap_or_default().to_owned())
            }
            None => {
                let out = self
                    .retry
                    .call_fresh(&what("CreateVpcEndpointServiceConfiguration"), || {
                        self.ec2
                            .create_vpc_endpoint_service_configuration()
                            .set_network_load_balancer_arns(Some(lbs.iter().cloned().collect()))
                            .acceptance_required(acceptance)
                            .tag_specifications(tag_spec(ec2t::ResourceType::VpcEndpointService, r))
                            .send()
                    })
                    .await?;
                let c = out
                    .service_configuration()
                    .ok_or_else(|| missing(&what("CreateVpcEndpointServiceConfiguration"), "ServiceConfiguration"))?;
                (c.service_id().unwrap_or_default().to_owned(), c.service_name().unwrap_or_default().to_owned())
            }
        };
        let want: BTreeSet<String> = strings(r.properties.get("allowedPrincipals")).into_iter().collect();
        let d = self
            .retry
            .call(&what("DescribeVpcEndpointServicePermissions"), || {
                self.ec2.describe_vpc_endpoint_service_permissions().service_id(&service).send()
            })
            .await?;
        let have: BTreeSet<String> = d.allowed_principals().iter().filter_map(|p| p.principal().map(str::to_owned)).collect();
        let add: Vec<String> = want.difference(&have).cloned().collect();
        let remove: Vec<String> = have.difference(&want).cloned().collect();
        if !add.is_empty() || !remove.is_empty() {
            self.retry
                .call_fresh(&what("ModifyVpcEndpointServicePermissions"), || {
                    self.ec2
                        .modify_vpc_endpoint_service_permissions()
                        .service_id(&service)
                        .set_add_allowed_principals(Some(add.clone()).filter(|a| !a.is_empty()))
                        .set_remove_allowed_principals(Some(remove.clone()).filter(|a| !a.is_empty()))
                        .send()
                })
                .await?;
        }
        Ok(found(r, service, [("serviceName", name)]))
    }

    pub(super) async fn delete_endpoint_service(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        self.reject_endpoint_connections(&f.id, id).await?;
        // This call answers 200 and lists the services it could not delete.
        let what = what("ec2 DeleteVpcEndpointServiceConfigurations");
        match self.retry.call(&what, || self.ec2.delete_vpc_endpoint_service_configurations().service_ids(id).send()).await {
            Ok(out) => match out.unsuccessful().iter().filter_map(|u| u.error()).next() {
                Some(err) if !err.code().is_some_and(|c| c.ends_with(".NotFound")) => {
                    Err(CloudError { what, code: err.code().map(str::to_owned), message: err.message().unwrap_or_default().to_owned() })
                }
                _ => Ok(()),
            },
            Err(e) => Err(e),
        }
    }
}
