//! Load balancing on ELBv2. The NLBs the control plane reaches are the sidecar's Services',
//! made by the AWS Load Balancer Controller (`../shared/DESIGN.md`, "Load balancers and
//! private connectivity"): byoc finds each by the controller's tags and waits for it before
//! putting a VPC endpoint service in front. byoc's own NLBs of before (with a listener and
//! an IP target group per port, which nothing registered pods in) are only found and
//! deleted.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::{Aws, Wait, found, missing, resolve_prop, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::expand::aws::SERVICE_LOAD_BALANCERS;
use crate::expand::{AGENT_NAMESPACE, TAG_ENVIRONMENT, TAG_RESOURCE};
use crate::resource::{Kind, Map, Resource, ResourceId};

/// Tag the AWS Load Balancer Controller puts on everything it makes for a cluster (its
/// `--cluster-name`); documented in the controller's "Resource tagging" guide.
pub const CONTROLLER_CLUSTER_TAG: &str = "elbv2.k8s.aws/cluster";
/// Tag naming the Service (`<namespace>/<name>`) the controller made a resource for.
pub const CONTROLLER_STACK_TAG: &str = "service.k8s.aws/stack";
/// The longest wait for the controller to make a Service's NLB and for it to become active:
/// NLBs take two to three minutes to provision; ten leaves room for a controller restart.
const SERVICE_NLB_LIMIT: Duration = Duration::from_secs(10 * 60);

/// A load balancer and its tags.
struct Tagged {
    lb: elbt::LoadBalancer,
    tags: Vec<(String, String)>,
}

impl Tagged {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl Aws {
    /// Every load balancer of the region with its tags (every page; tags 20 at a time, the
    /// most DescribeTags takes).
    async fn load_balancers(&self, what: &str) -> Result<Vec<Tagged>, CloudError> {
        let mut marker: Option<String> = None;
        let mut lbs = Vec::new();
        loop {
            let page = self
                .retry
                .call(&format!("elbv2 DescribeLoadBalancers{what}"), || {
                    self.elb.describe_load_balancers().set_marker(marker.clone()).send()
                })
                .await?;
            lbs.extend(page.load_balancers().iter().cloned());
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for chunk in lbs.chunks(20) {
            let arns: Vec<String> = chunk.iter().filter_map(|l| l.load_balancer_arn().map(str::to_owned)).collect();
            let t = self
                .retry
                .call(&format!("elbv2 DescribeTags{what}"), || self.elb.describe_tags().set_resource_arns(Some(arns.clone())).send())
                .await?;
            for lb in chunk {
                let tags = t
                    .tag_descriptions()
                    .iter()
                    .filter(|d| d.resource_arn().is_some() && d.resource_arn() == lb.load_balancer_arn())
                    .flat_map(|d| {
                        d.tags().iter().map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
                    })
                    .collect();
                out.push(Tagged { lb: lb.clone(), tags });
            }
        }
        Ok(out)
    }

    /// The `aws.service-nlb` id of a load balancer the controller made for one of the
    /// sidecar's Services in this environment's cluster.
    fn service_nlb_of(&self, t: &Tagged) -> Option<ResourceId> {
        if t.tag(CONTROLLER_CLUSTER_TAG) != Some(crate::expand::names::aws::eks_cluster(&self.environment).as_str()) {
            return None;
        }
        let stack = t.tag(CONTROLLER_STACK_TAG)?;
        SERVICE_LOAD_BALANCERS
            .iter()
            .find(|(_, service)| stack == format!("{AGENT_NAMESPACE}/{service}"))
            .map(|(role, _)| ResourceId::new(Kind::AwsServiceNlb, role))
    }

    /// byoc's own NLBs of before (tagged as ours, deleted since the graph has none), and
    /// the controller's NLBs of the sidecar's Services (by the controller's tags).
    pub(super) async fn observe_elb(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        for t in self.load_balancers("").await? {
            let Some(arn) = t.lb.load_balancer_arn() else { continue };
            let dns = t.lb.dns_name().unwrap_or_default().to_owned();
            let (id, kind) = if let Some(id) = self.ours(Kind::AwsNlb, t.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                (id, Kind::AwsNlb)
            } else if let Some(id) = self.service_nlb_of(&t) {
                (id, Kind::AwsServiceNlb)
            } else {
                continue;
            };
            out.push(Found { live: Map::new(), id, kind, cloud_id: arn.to_owned(), outputs: [("dnsName".to_owned(), dns)].into() });
        }
        Ok(())
    }

    /// Waits (at most [`SERVICE_NLB_LIMIT`]) until the controller's NLB of `r`'s Service
    /// exists and is active: byoc does not make it, the Service does, once the sidecar is
    /// installed.
    pub(super) async fn ensure_service_nlb(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let service = text(r, "service");
        let cluster = resolve_prop(refs, r, "cluster")?.to_owned();
        let made: std::cell::RefCell<Option<Found>> = std::cell::RefCell::new(None);
        let limit = SERVICE_NLB_LIMIT.min(self.wait_limit);
        let (slot, wanted) = (&made, cluster.as_str());
        let waited = self
            .wait_up_to(&r.id, limit, move || async move {
                let lbs = self.load_balancers(&format!(" for {}", r.id)).await?;
                let Some(t) =
                    lbs.into_iter().find(|t| t.tag(CONTROLLER_CLUSTER_TAG) == Some(wanted) && t.tag(CONTROLLER_STACK_TAG) == Some(service))
                else {
                    return Ok(Wait::Pending(format!("no NLB of Service {service} from the AWS Load Balancer Controller yet")));
                };
                let arn = t.lb.load_balancer_arn().unwrap_or_default().to_owned();
                let state = t.lb.state().and_then(|s| s.code()).cloned();
                Ok(match state {
                    Some(elbt::LoadBalancerStateEnum::Active) | None => {
                        *slot.borrow_mut() = Some(found(r, arn, [("dnsName", t.lb.dns_name().unwrap_or_default().to_owned())]));
                        Wait::Done
                    }
                    Some(elbt::LoadBalancerStateEnum::Failed) => Wait::Failed(format!(
                        "the NLB {arn} of Service {service} failed: {}",
                        t.lb.state().and_then(|s| s.reason()).unwrap_or("no reason given")
                    )),
                    Some(other) => Wait::Pending(format!("the NLB of Service {service} is {}", other.as_str())),
                })
            })
            .await;
        match (waited, made.into_inner()) {
            (Ok(()), Some(f)) => Ok(f),
            (Ok(()), None) => Err(missing(&format!("elbv2 DescribeLoadBalancers for {}", r.id), "load balancer")),
            (Err(e), _) if e.code.is_none() => Err(CloudError {
                code: Some("ServiceLoadBalancerNotReady".to_owned()),
                message: format!(
                    "{}\n  the AWS Load Balancer Controller makes it (tags {CONTROLLER_CLUSTER_TAG}={cluster}, {CONTROLLER_STACK_TAG}={service}); see `kubectl -n {} describe service {}` for its events and `kubectl -n kube-system logs deployment/aws-load-balancer-controller`",
                    e.message,
                    service.split_once('/').map_or("", |(ns, _)| ns),
                    service.split_once('/').map_or(service, |(_, n)| n),
                ),
                ..e
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// The controller deletes a Service's NLB when the Service goes (its finalizer holds
    /// the Service until then), and destroy removes the sidecar first, so this finds it
    /// gone. One still there (destroy ran without the cluster: no --kubeconfig, or the
    /// cluster was lost) is deleted here so the subnets can go; with its controller still
    /// running and its Service still there it may be made again.
    pub(super) async fn delete_service_nlb(&self, f: &Found) -> Result<(), CloudError> {
        let cluster = crate::expand::names::aws::eks_cluster(&self.environment);
        let stack = SERVICE_LOAD_BALANCERS
            .iter()
            .find(|(role, _)| ResourceId::new(Kind::AwsServiceNlb, role) == f.id)
            .map(|(_, service)| format!("{AGENT_NAMESPACE}/{service}"))
            .unwrap_or_default();
        let controllers = |tags: &[(String, String)]| {
            let has = |key: &str, value: &str| tags.iter().any(|(k, v)| k == key && v == value);
            has(CONTROLLER_CLUSTER_TAG, &cluster) && has(CONTROLLER_STACK_TAG, &stack)
        };
        // Its target groups (and listeners, which go with it) are the controller's too.
        let groups = self.target_groups_where(&f.id, controllers).await?;
        self.delete_load_balancer_and_groups(f, &groups).await?;
        // The frontend security group the controller made for it holds the VPC.
        let filters = [
            aws_sdk_ec2::types::Filter::builder().name(format!("tag:{CONTROLLER_CLUSTER_TAG}")).values(&cluster).build(),
            aws_sdk_ec2::types::Filter::builder().name(format!("tag:{CONTROLLER_STACK_TAG}")).values(&stack).build(),
        ];
        let what = format!("ec2 DescribeSecurityGroups for {}", f.id);
        let d = self.retry.call(&what, || self.ec2.describe_security_groups().set_filters(Some(filters.to_vec())).send()).await?;
        for g in d.security_groups() {
            let Some(id) = g.group_id() else { continue };
            let what = format!("ec2 DeleteSecurityGroup for {} {id}", f.id);
            let r = self.until_released(&what, None, || self.ec2.delete_security_group().group_id(id).send()).await;
            unless_gone(r, &["InvalidGroup.NotFound"])?;
        }
        Ok(())
    }

    /// Deletes one of byoc's own NLBs of before, with its target groups (found by byoc's
    /// tags: one half created has none yet, and one half deleted may be gone while its
    /// groups remain).
    pub(super) async fn delete_nlb(&self, f: &Found) -> Result<(), CloudError> {
        let groups = self
            .target_groups_where(&f.id, |tags| {
                let has = |key: &str, value: &str| tags.iter().any(|(k, v)| k == key && v == value);
                has(TAG_ENVIRONMENT, &self.environment) && has(TAG_RESOURCE, f.id.as_str())
            })
            .await?;
        self.delete_load_balancer_and_groups(f, &groups).await
    }

    /// Deletes the load balancer `f` (listeners first), waits for it and its network
    /// interfaces to go, then deletes `groups`.
    async fn delete_load_balancer_and_groups(&self, f: &Found, groups: &[String]) -> Result<(), CloudError> {
        let what = |op: &str| format!("elbv2 {op} for {} {}", f.id, f.cloud_id);
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
        for tg in groups {
            let r = self.retry.call(&what("DeleteTargetGroup"), || self.elb.delete_target_group().target_group_arn(tg).send()).await;
            unless_gone(r, &["TargetGroupNotFound"])?;
        }
        Ok(())
    }

    /// ARNs of the target groups whose tags `wanted` accepts (`id`: for messages).
    async fn target_groups_where(&self, id: &ResourceId, wanted: impl Fn(&[(String, String)]) -> bool) -> Result<Vec<String>, CloudError> {
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
                let tags: Vec<(String, String)> =
                    d.tags().iter().map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned())).collect();
                if wanted(&tags)
                    && let Some(arn) = d.resource_arn()
                {
                    ours.push(arn.to_owned());
                }
            }
        }
        Ok(ours)
    }
}
