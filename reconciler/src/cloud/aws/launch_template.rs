//! EC2 launch templates, one per node group: the nodes' encrypted gp3 root volume of the
//! spec's size, IMDSv2 only, and the user's tags on the instances and their volumes (EKS
//! copies a node group's tags to neither). Every property replaces the template, and the
//! node group that uses it with it (see `Kind::replace_on`).

use aws_sdk_ec2::types as ec2t;

use super::{Aws, ec2_tags, found, int, missing, strings_map, tag_spec, text};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource};

/// The root device of the AL2023 EKS AMIs.
const ROOT_DEVICE: &str = "/dev/xvda";

impl Aws {
    pub(super) async fn observe_launch_templates(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut token = None;
        loop {
            let page = self
                .retry
                .call("ec2 DescribeLaunchTemplates", || {
                    self.ec2.describe_launch_templates().filters(self.env_filter()).set_next_token(token.clone()).send()
                })
                .await?;
            for t in page.launch_templates() {
                if let Some(id) = self.ours(Kind::AwsLaunchTemplate, ec2_tags(Some(t.tags())))
                    && let Some(cloud_id) = t.launch_template_id()
                {
                    let version = t.latest_version_number().map(|v| v.to_string()).unwrap_or_else(|| "1".to_owned());
                    let name = t.launch_template_name().unwrap_or_default().to_owned();
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsLaunchTemplate,
                        cloud_id: cloud_id.to_owned(),
                        outputs: [("version".to_owned(), version), ("name".to_owned(), name)].into(),
                    });
                }
            }
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    pub(super) async fn ensure_launch_template(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        if let Some(f) = existing {
            // Nothing changes in place: a different template is a replacement.
            return Ok(f.clone());
        }
        let data = launch_template_data(r);
        // A replacement is made while the old template still serves the old node group
        // (the engine shows it under `r.id`): names are unique per region, so it takes the
        // next one.
        let base = text(r, "name");
        let name = match refs.get(&r.id) {
            Some(old) => super::kubernetes::successor_name(
                base,
                old.outputs.get("name").map(String::as_str).filter(|n| !n.is_empty()).unwrap_or(base),
            ),
            None => base.to_owned(),
        };
        let name = name.as_str();
        let made = self
            .retry
            .call(&format!("ec2 CreateLaunchTemplate for {}", r.id), || {
                self.ec2
                    .create_launch_template()
                    .launch_template_name(name)
                    .launch_template_data(data.clone())
                    .tag_specifications(tag_spec(ec2t::ResourceType::LaunchTemplate, r))
                    .send()
            })
            .await?;
        let t = made.launch_template().ok_or_else(|| missing("ec2 CreateLaunchTemplate", "launchTemplate"))?;
        let id = t.launch_template_id().ok_or_else(|| missing("ec2 CreateLaunchTemplate", "launchTemplateId"))?;
        let version = t.latest_version_number().unwrap_or(1).to_string();
        Ok(found(r, id, [("version", version), ("name", name.to_owned())]))
    }

    pub(super) async fn delete_launch_template(&self, f: &Found) -> Result<(), CloudError> {
        self.retry
            .call(&format!("ec2 DeleteLaunchTemplate for {} {}", f.id, f.cloud_id), || {
                self.ec2.delete_launch_template().launch_template_id(&f.cloud_id).send()
            })
            .await
            .map(drop)
    }
}

/// What the nodes start with.
fn launch_template_data(r: &Resource) -> ec2t::RequestLaunchTemplateData {
    let ebs = ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
        .volume_size(int(r, "rootVolumeGiB"))
        .volume_type(ec2t::VolumeType::from(text(r, "volumeType")))
        .encrypted(super::flag(r, "encrypted"))
        .delete_on_termination(true)
        .build();
    let tags: Vec<ec2t::Tag> =
        strings_map(r.properties.get("instanceTags")).into_iter().map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build()).collect();
    let on = |kind: ec2t::ResourceType| {
        ec2t::LaunchTemplateTagSpecificationRequest::builder().resource_type(kind).set_tags(Some(tags.clone())).build()
    };
    ec2t::RequestLaunchTemplateData::builder()
        .block_device_mappings(ec2t::LaunchTemplateBlockDeviceMappingRequest::builder().device_name(ROOT_DEVICE).ebs(ebs).build())
        .tag_specifications(on(ec2t::ResourceType::Instance))
        .tag_specifications(on(ec2t::ResourceType::Volume))
        // IMDSv2 only; two hops so that pods on the node network can still reach it.
        .metadata_options(
            ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(ec2t::LaunchTemplateHttpTokensState::Required)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .build()
}
