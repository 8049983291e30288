//! Load balancing on ELBv2: network load balancers, a TCP listener per port, each
//! forwarding to a target group of its own (IP targets).

use std::collections::BTreeSet;

use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::{Aws, flag, found, missing, resolve_list, tags, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::expand::{TAG_ENVIRONMENT, TAG_RESOURCE};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

impl Aws {
    pub(super) async fn observe_elb(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut marker: Option<String> = None;
        let mut lbs = Vec::new();
        loop {
            let page = self
                .retry
                .call("elbv2 DescribeLoadBalancers", || self.elb.describe_load_balancers().set_marker(marker.clone()).send())
                .await?;
            lbs.extend(page.load_balancers().iter().cloned());
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        for chunk in lbs.chunks(20) {
            let arns: Vec<String> = chunk.iter().filter_map(|l| l.load_balancer_arn().map(str::to_owned)).collect();
            let t = self.retry.call("elbv2 DescribeTags", || self.elb.describe_tags().set_resource_arns(Some(arns.clone())).send()).await?;
            for d in t.tag_descriptions() {
                let Some(arn) = d.resource_arn() else { continue };
                if let Some(id) =
                    self.ours(Kind::AwsNlb, d.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())))
                {
                    let lb = chunk.iter().find(|l| l.load_balancer_arn() == Some(arn));
                    let dns = lb.and_then(|l| l.dns_name()).unwrap_or_default().to_owned();
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsNlb,
                        cloud_id: arn.to_owned(),
                        outputs: [("dnsName".to_owned(), dns)].into(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Aws {
    pub(super) async fn ensure_nlb(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("elbv2 {op} for {}", r.id);
        let name = text(r, "name");
        let subnets = resolve_list(refs, r, "subnets")?;
        let elb_tags: Vec<elbt::Tag> = tags(r).into_iter().map(|(k, v)| elbt::Tag::builder().key(k).value(v).build()).collect();
        let (arn, dns, vpc) = match existing {
            Some(f) => {
                let d = self
                    .retry
                    .call(&what("DescribeLoadBalancers"), || self.elb.describe_load_balancers().load_balancer_arns(&f.cloud_id).send())
                    .await?;
                let lb = d.load_balancers().first().cloned().ok_or_else(|| missing(&what("DescribeLoadBalancers"), "load balancer"))?;
                (f.cloud_id.clone(), lb.dns_name().unwrap_or_default().to_owned(), lb.vpc_id().unwrap_or_default().to_owned())
            }
            None => {
                let scheme = if text(r, "scheme") == "internet-facing" {
                    elbt::LoadBalancerSchemeEnum::InternetFacing
                } else {
                    elbt::LoadBalancerSchemeEnum::Internal
                };
                let groups = resolve_list(refs, r, "securityGroups")?;
                let out = self
                    .retry
                    .call_fresh(&what("CreateLoadBalancer"), || {
                        self.elb
                            .create_load_balancer()
                            .name(name)
                            .r#type(elbt::LoadBalancerTypeEnum::Network)
                            .scheme(scheme.clone())
                            .set_subnets(Some(subnets.clone()))
                            .set_security_groups(Some(groups.clone()))
                            .set_tags(Some(elb_tags.clone()))
                            .send()
                    })
                    .await?;
                let lb = out.load_balancers().first().cloned().ok_or_else(|| missing(&what("CreateLoadBalancer"), "LoadBalancers"))?;
                let arn = lb.load_balancer_arn().ok_or_else(|| missing(&what("CreateLoadBalancer"), "LoadBalancerArn"))?.to_owned();
                (arn, lb.dns_name().unwrap_or_default().to_owned(), lb.vpc_id().unwrap_or_default().to_owned())
            }
        };
        let cross_zone =
            elbt::LoadBalancerAttribute::builder().key("load_balancing.cross_zone.enabled").value(flag(r, "crossZone").to_string()).build();
        self.retry
            .call(&what("ModifyLoadBalancerAttributes"), || {
                self.elb.modify_load_balancer_attributes().load_balancer_arn(&arn).attributes(cross_zone.clone()).send()
            })
            .await?;

        // Listeners by port, each forwarding to its own target group (IP targets).
        let mut want: BTreeSet<i32> = BTreeSet::new();
        if let Some(Value::List(items)) = r.properties.get("listeners") {
            for l in items {
                if let Value::Map(m) = l
                    && let Some(Value::Int(p)) = m.get("port")
                {
                    want.insert(*p as i32);
                }
            }
        }
        let listeners =
            self.retry.call(&what("DescribeListeners"), || self.elb.describe_listeners().load_balancer_arn(&arn).send()).await?;
        let mut have = BTreeSet::new();
        for l in listeners.listeners() {
            let port = l.port().unwrap_or_default();
            if want.contains(&port) {
                have.insert(port);
            } else if let Some(listener) = l.listener_arn() {
                self.retry.call(&what("DeleteListener"), || self.elb.delete_listener().listener_arn(listener).send()).await?;
                for tg in l.default_actions().iter().filter_map(|a| a.target_group_arn()) {
                    self.retry.call(&what("DeleteTargetGroup"), || self.elb.delete_target_group().target_group_arn(tg).send()).await?;
                }
            }
        }
        for port in want.difference(&have) {
            let tg_name = crate::expand::names::aws::target_group(name, i64::from(*port));
            let created = self
                .retry
                .call(&what("CreateTargetGroup"), || {
                    self.elb
                        .create_target_group()
                        .name(&tg_name)
                        .protocol(elbt::ProtocolEnum::Tcp)
                        .port(*port)
                        .vpc_id(&vpc)
                        .target_type(elbt::TargetTypeEnum::Ip)
                        .set_tags(Some(elb_tags.clone()))
                        .send()
                })
                .await;
            let groups = match created {
                Ok(out) => out.target_groups().to_vec(),
                // An interrupted run created it but not its listener (AWS answers a repeated
                // create with the existing group; some emulators refuse it).
                Err(e) if e.is(&["DuplicateTargetGroupName"]) => self
                    .retry
                    .call(&what("DescribeTargetGroups"), || self.elb.describe_target_groups().names(&tg_name).send())
                    .await?
                    .target_groups()
                    .to_vec(),
                Err(e) => return Err(e),
            };
            let tg_arn = groups
                .first()
                .and_then(|t| t.target_group_arn())
                .ok_or_else(|| missing(&what("CreateTargetGroup"), "TargetGroupArn"))?
                .to_owned();
            let action = elbt::Action::builder().r#type(elbt::ActionTypeEnum::Forward).target_group_arn(&tg_arn).build();
            self.retry
                .call(&what("CreateListener"), || {
                    self.elb
                        .create_listener()
                        .load_balancer_arn(&arn)
                        .protocol(elbt::ProtocolEnum::Tcp)
                        .port(*port)
                        .default_actions(action.clone())
                        .set_tags(Some(elb_tags.clone()))
                        .send()
                })
                .await?;
        }
        Ok(found(r, arn, [("dnsName", dns)]))
    }

    pub(super) async fn delete_nlb(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("elbv2 {op} for {} {}", f.id, f.cloud_id);
        // Target groups are found by the load balancer's resource tag, not through the load
        // balancer: one half created has none yet (DescribeTargetGroups by load balancer
        // then answers TargetGroupNotFound), and one half deleted may be gone while its
        // groups remain.
        let groups = self.target_groups_of(&f.id).await?;
        let listeners =
            self.retry.call(&what("DescribeListeners"), || self.elb.describe_listeners().load_balancer_arn(&f.cloud_id).send()).await;
        if let Some(listeners) = unless_gone(listeners, &["LoadBalancerNotFound", "ListenerNotFound"])? {
            for l in listeners.listeners().iter().filter_map(|l| l.listener_arn()) {
                let r = self.retry.call(&what("DeleteListener"), || self.elb.delete_listener().listener_arn(l).send()).await;
                unless_gone(r, &["ListenerNotFound"])?;
            }
        }
        let r =
            self.retry.call(&what("DeleteLoadBalancer"), || self.elb.delete_load_balancer().load_balancer_arn(&f.cloud_id).send()).await;
        unless_gone(r, &["LoadBalancerNotFound"])?;
        self.wait_load_balancer_gone(&f.id, &f.cloud_id).await?;
        for tg in &groups {
            let r = self.retry.call(&what("DeleteTargetGroup"), || self.elb.delete_target_group().target_group_arn(tg).send()).await;
            unless_gone(r, &["TargetGroupNotFound"])?;
        }
        Ok(())
    }

    /// ARNs of the target groups tagged for this environment with the resource id `id`.
    pub(super) async fn target_groups_of(&self, id: &ResourceId) -> Result<Vec<String>, CloudError> {
        let mut marker: Option<String> = None;
        let mut arns = Vec::new();
        loop {
            let page = self
                .retry
                .call(&format!("elbv2 DescribeTargetGroups for {id}"), || {
                    self.elb.describe_target_groups().set_marker(marker.clone()).send()
                })
                .await;
            // Some endpoints answer an empty region with TargetGroupNotFound.
            let Some(page) = unless_gone(page, &["TargetGroupNotFound"])? else { break };
            arns.extend(page.target_groups().iter().filter_map(|t| t.target_group_arn().map(str::to_owned)));
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        let mut ours = Vec::new();
        for chunk in arns.chunks(20) {
            let t = self
                .retry
                .call(&format!("elbv2 DescribeTags for {id}"), || self.elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send())
                .await?;
            for d in t.tag_descriptions() {
                let tagged = |key: &str, value: &str| d.tags().iter().any(|t| t.key() == Some(key) && t.value() == Some(value));
                if tagged(TAG_ENVIRONMENT, &self.environment)
                    && tagged(TAG_RESOURCE, id.as_str())
                    && let Some(arn) = d.resource_arn()
                {
                    ours.push(arn.to_owned());
                }
            }
        }
        Ok(ours)
    }
}
