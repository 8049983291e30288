//! Gateway VPC endpoints on EC2 (S3): the private route tables reach S3 through the
//! endpoint's prefix-list route instead of through a NAT gateway, which bills per GB.

use std::collections::BTreeSet;

use aws_sdk_ec2::types as ec2t;

use super::{Aws, ec2_tags, found, missing, resolve_list, resolve_prop, tag_spec, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource};

/// Codes EC2 answers for a VPC endpoint that does not exist.
pub(super) const ENDPOINT_GONE: &[&str] = &["InvalidVpcEndpointId.NotFound", "InvalidVpcEndpoint.NotFound"];

impl Aws {
    pub(super) async fn observe_vpc_endpoints(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let f = self.env_filter();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .call("ec2 DescribeVpcEndpoints", || {
                    self.ec2.describe_vpc_endpoints().filters(f.clone()).set_next_token(token.clone()).send()
                })
                .await?;
            for e in page.vpc_endpoints() {
                let live = !matches!(e.state(), Some(ec2t::State::Deleted | ec2t::State::Deleting | ec2t::State::Failed));
                if let (true, Some(id), Some(cloud_id)) =
                    (live, self.ours(Kind::AwsVpcEndpoint, ec2_tags(e.tags.as_deref())), e.vpc_endpoint_id())
                {
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsVpcEndpoint,
                        cloud_id: cloud_id.to_owned(),
                        outputs: Default::default(),
                    });
                }
            }
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// Creates the gateway endpoint on its route tables, or converges the tables of one
    /// that exists.
    pub(super) async fn ensure_vpc_endpoint(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let want: BTreeSet<String> = resolve_list(refs, r, "routeTables")?.into_iter().collect();
        let Some(f) = existing else {
            let out = self
                .retry
                .call_fresh(&what("CreateVpcEndpoint"), || {
                    self.ec2
                        .create_vpc_endpoint()
                        .vpc_id(vpc)
                        .service_name(text(r, "service"))
                        .vpc_endpoint_type(ec2t::VpcEndpointType::from(text(r, "type")))
                        .set_route_table_ids(Some(want.iter().cloned().collect()))
                        .tag_specifications(tag_spec(ec2t::ResourceType::VpcEndpoint, r))
                        .send()
                })
                .await?;
            let id =
                out.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()).ok_or_else(|| missing(&what("CreateVpcEndpoint"), "VpcEndpointId"))?;
            return Ok(found(r, id, []));
        };
        let d = self
            .retry
            .call(&what("DescribeVpcEndpoints"), || self.ec2.describe_vpc_endpoints().vpc_endpoint_ids(&f.cloud_id).send())
            .await?;
        let have: BTreeSet<String> = d.vpc_endpoints().iter().flat_map(|e| e.route_table_ids()).cloned().collect();
        let add: Vec<String> = want.difference(&have).cloned().collect();
        let remove: Vec<String> = have.difference(&want).cloned().collect();
        if !add.is_empty() || !remove.is_empty() {
            self.retry
                .call_fresh(&what("ModifyVpcEndpoint"), || {
                    self.ec2
                        .modify_vpc_endpoint()
                        .vpc_endpoint_id(&f.cloud_id)
                        .set_add_route_table_ids(Some(add.clone()).filter(|a| !a.is_empty()))
                        .set_remove_route_table_ids(Some(remove.clone()).filter(|a| !a.is_empty()))
                        .send()
                })
                .await?;
        }
        Ok(found(r, f.cloud_id.clone(), []))
    }

    /// Deletes the endpoint. `DeleteVpcEndpoints` answers 200 and lists what it could not
    /// delete in `Unsuccessful`, which is read: a refusal there is a failure.
    pub(super) async fn delete_vpc_endpoint(&self, f: &Found) -> Result<(), CloudError> {
        let what = format!("ec2 DeleteVpcEndpoints for {} {}", f.id, f.cloud_id);
        let out = self.retry.call(&what, || self.ec2.delete_vpc_endpoints().vpc_endpoint_ids(&f.cloud_id).send()).await;
        let Some(out) = unless_gone(out, ENDPOINT_GONE)? else { return Ok(()) };
        match out.unsuccessful().iter().filter_map(|u| u.error()).find(|e| !e.code().is_some_and(|c| ENDPOINT_GONE.contains(&c))) {
            Some(err) => {
                Err(CloudError { what, code: err.code().map(str::to_owned), message: err.message().unwrap_or_default().to_owned() })
            }
            None => Ok(()),
        }
    }
}
