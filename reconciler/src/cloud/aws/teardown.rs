//! Deleting as AWS allows: what a deletion must wait for or undo first, shared by the
//! services. A VPC endpoint service with connected endpoints is not deleted (its
//! connections are rejected first); a load balancer's network interfaces outlive it by
//! minutes, as do those EKS made, and until they go EC2 answers `DeleteSubnet`,
//! `DeleteSecurityGroup`, `DetachInternetGateway` and `DeleteVpc` with
//! `DependencyViolation` ("Delete a load balancer", ELB User Guide; "Delete a cluster",
//! EKS User Guide), which is retried with backoff for a bounded time.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Aws, Wait, unless_gone};
use crate::cloud::CloudError;
use crate::resource::ResourceId;

/// How long a deletion answered `DependencyViolation` is retried: network interfaces of a
/// deleted load balancer or EKS cluster take minutes to be released (AWS gives no bound).
pub const DEPENDENCY_LIMIT: Duration = Duration::from_secs(20 * 60);

impl Aws {
    /// Calls `op` (a deletion) until it no longer answers `DependencyViolation`, with
    /// backoff from the poll interval up to 30 s, for at most [`DEPENDENCY_LIMIT`] (or the
    /// wait limit, if shorter). Past the limit the error names what still uses `vpc`.
    pub(super) async fn until_released<T, E, F, Fut>(&self, what: &str, vpc: Option<&str>, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let limit = DEPENDENCY_LIMIT.min(self.wait_limit);
        let mut wait = self.poll;
        loop {
            match self.retry.call(what, &mut op).await {
                Err(e) if e.is(&["DependencyViolation"]) && started.elapsed() < limit => {
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!(
                            "retry: {what}: DependencyViolation (network interfaces of a deleted load balancer or EKS cluster linger for minutes; retried for up to {} s, now in {} ms)",
                            limit.as_secs(),
                            wait.as_millis()
                        ),
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) if e.is(&["DependencyViolation"]) => {
                    let users = match vpc {
                        Some(vpc) => self.interfaces_in(vpc).await.unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let message = if users.is_empty() {
                        format!("{} (still, after {} s)", e.message, started.elapsed().as_secs())
                    } else {
                        format!(
                            "{} (still, after {} s); network interfaces in the VPC: {}. Delete what owns them (a Kubernetes Service of type LoadBalancer, a load balancer or endpoint made outside byoc), then run destroy again",
                            e.message,
                            started.elapsed().as_secs(),
                            users.join(", ")
                        )
                    };
                    return Err(CloudError { message, ..e });
                }
                other => return other,
            }
        }
    }

    /// The network interfaces in `vpc`, each as `eni-… (description)`.
    pub(super) async fn interfaces_in(&self, vpc: &str) -> Result<Vec<String>, CloudError> {
        let filter = ec2t::Filter::builder().name("vpc-id").values(vpc).build();
        self.interfaces(&format!("ec2 DescribeNetworkInterfaces in {vpc}"), filter).await
    }

    async fn interfaces(&self, what: &str, filter: ec2t::Filter) -> Result<Vec<String>, CloudError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .call(what, || self.ec2.describe_network_interfaces().filters(filter.clone()).set_next_token(token.clone()).send())
                .await?;
            out.extend(
                page.network_interfaces()
                    .iter()
                    .map(|i| format!("{} ({})", i.network_interface_id().unwrap_or_default(), i.description().unwrap_or_default())),
            );
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Waits until the load balancer `arn`, just deleted, is gone and so are its network
    /// interfaces (described `ELB <type>/<name>/<id>`, the part of the ARN after
    /// `loadbalancer/`), so that its subnets and security groups can go next. Generic over
    /// who made it: byoc or the AWS Load Balancer Controller.
    pub(super) async fn wait_load_balancer_gone(&self, id: &ResourceId, arn: &str) -> Result<(), CloudError> {
        let what = format!("elbv2 DescribeLoadBalancers for {id} {arn}");
        self.wait(id, || async {
            let d = self.retry.call(&what, || self.elb.describe_load_balancers().load_balancer_arns(arn).send()).await;
            Ok(match unless_gone(d, &["LoadBalancerNotFound"])? {
                Some(d) if !d.load_balancers().is_empty() => Wait::Pending("load balancer deleting".to_owned()),
                _ => Wait::Done,
            })
        })
        .await?;
        let Some((_, rest)) = arn.split_once(":loadbalancer/") else { return Ok(()) };
        self.wait_interfaces_gone(id, &format!("ELB {rest}")).await
    }

    /// Waits (bounded by the wait limit, polling with the wait's backoff) until no network
    /// interface described `description` is left: a deleted load balancer's (`ELB
    /// <type>/<name>/<id>`) or EKS cluster's (`Amazon EKS <name>`) outlive it by minutes,
    /// and while they exist EC2 refuses to delete their subnets and security groups.
    /// Waiting here instead of retrying those deletions keeps the refusals out of the log
    /// and names what is still held.
    pub(super) async fn wait_interfaces_gone(&self, id: &ResourceId, description: &str) -> Result<(), CloudError> {
        let filter = ec2t::Filter::builder().name("description").values(description).build();
        let what = format!("ec2 DescribeNetworkInterfaces for {id}");
        let started = Instant::now();
        let limit = DEPENDENCY_LIMIT.min(self.wait_limit);
        // From the poll interval, doubling up to 30 s: AWS gives no bound, and minutes of
        // polling at the base interval would only spend the account's EC2 request budget.
        let mut wait = self.poll;
        loop {
            let left = self.interfaces(&what, filter.clone()).await?;
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(CloudError::new(
                    id.to_string(),
                    format!(
                        "network interfaces {} are still there {} s after it was deleted; they hold its subnets and security groups. Run destroy again later, or ask AWS support if they never go",
                        left.join(", "),
                        started.elapsed().as_secs()
                    ),
                ));
            }
            println!("waiting {id}: network interfaces {} releasing ({}s)", left.join(", "), started.elapsed().as_secs());
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Rejects every endpoint connected to the endpoint service `service` (EC2 refuses to
    /// delete a service with connections: `ExistingVpcEndpointConnections`), reading the
    /// `Unsuccessful` list of the answer.
    pub(super) async fn reject_endpoint_connections(&self, id: &ResourceId, service: &str) -> Result<(), CloudError> {
        let filter = ec2t::Filter::builder().name("service-id").values(service).build();
        let mut endpoints = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = match self
                .retry
                .call(&format!("ec2 DescribeVpcEndpointConnections for {id} {service}"), || {
                    self.ec2.describe_vpc_endpoint_connections().filters(filter.clone()).set_next_token(token.clone()).send()
                })
                .await
            {
                Ok(page) => page,
                // Not a reason to stop: the deletion's `Unsuccessful` list still says
                // whether connections remain. (Plain moto has no such call.)
                Err(e) => {
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!("warning: {e}; the endpoint connections of {id} are not rejected first"),
                    );
                    return Ok(());
                }
            };
            endpoints.extend(
                page.vpc_endpoint_connections()
                    .iter()
                    .filter(|c| {
                        !matches!(
                            c.vpc_endpoint_state(),
                            Some(
                                ec2t::State::Rejected
                                    | ec2t::State::Deleted
                                    | ec2t::State::Deleting
                                    | ec2t::State::Failed
                                    | ec2t::State::Expired
                            )
                        )
                    })
                    .filter_map(|c| c.vpc_endpoint_id().map(str::to_owned)),
            );
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        if endpoints.is_empty() {
            return Ok(());
        }
        let what = format!("ec2 RejectVpcEndpointConnections for {id} {service}");
        println!("rejecting {} endpoint connection(s) to {id}: {}", endpoints.len(), endpoints.join(", "));
        let out = self
            .retry
            .call(&what, || {
                self.ec2.reject_vpc_endpoint_connections().service_id(service).set_vpc_endpoint_ids(Some(endpoints.clone())).send()
            })
            .await?;
        let failed: Vec<String> = out
            .unsuccessful()
            .iter()
            .filter_map(|u| {
                let e = u.error()?;
                Some(format!(
                    "{}: {} {}",
                    u.resource_id().unwrap_or_default(),
                    e.code().unwrap_or_default(),
                    e.message().unwrap_or_default()
                ))
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CloudError::new(what, format!("these connections were not rejected: {}", failed.join("; "))))
        }
    }
}
