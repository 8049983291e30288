//! Storage on S3: the environment's buckets (versioning, default encryption, public access
//! block, tags), read back for drift and emptied only when `destroy --delete-data` asks.

use std::collections::BTreeMap;

use super::{Aws, flag, found, int, tags, text};

/// Id of byoc's lifecycle rule on a bucket.
const LIFECYCLE_RULE: &str = "byoc-noncurrent-versions";

/// The days after which byoc's rule expires noncurrent versions; 0 without the rule (or
/// with it disabled).
fn noncurrent_days(rules: &[aws_sdk_s3::types::LifecycleRule]) -> i32 {
    rules
        .iter()
        .find(|r| r.id() == Some(LIFECYCLE_RULE) && r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
        .and_then(|r| r.noncurrent_version_expiration())
        .and_then(|n| n.noncurrent_days())
        .unwrap_or(0)
}
use crate::cloud::{CloudError, Found};
use crate::resource::{Kind, Map, Resource, Value};

impl Aws {
    /// The environment's buckets, looked up by name: S3 bucket names are global and an
    /// account may hold thousands of buckets in every region, so listing them all and
    /// asking each for its tags is slow and fails on the first one that answers from
    /// another region (301 `PermanentRedirect`, which the SDK does not follow) or whose
    /// policy denies us (403 `AccessDenied`). A bucket that answers so, or that does not
    /// exist, is not ours.
    pub(super) async fn observe_s3(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        for name in &self.buckets {
            let tagging =
                self.retry.call(&format!("s3 GetBucketTagging {name}"), || self.s3.get_bucket_tagging().bucket(name).send()).await;
            let t = match tagging {
                Ok(t) => t,
                Err(e) if e.is(&["NoSuchBucket", "NoSuchTagSet"]) => continue,
                Err(e) if e.is(&["PermanentRedirect", "AccessDenied", "AllAccessDisabled"]) || e.message.starts_with("HTTP 301") => {
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!(
                            "note: bucket {name} exists but is not this environment's ({}); byoc leaves it alone. Choose another bucket name in the environment spec if byoc should make one",
                            e.code.as_deref().unwrap_or("a redirect to another region")
                        ),
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(id) = self.ours(Kind::AwsS3Bucket, t.tag_set().iter().map(|t| (t.key(), t.value()))) {
                let live = self.live_bucket(name).await?;
                out.push(Found { live, id, kind: Kind::AwsS3Bucket, cloud_id: name.clone(), outputs: BTreeMap::new() });
            }
        }
        Ok(())
    }
}

impl Aws {
    /// A bucket's versioning, default encryption and public access block in property form.
    pub(super) async fn live_bucket(&self, name: &str) -> Result<Map, CloudError> {
        let mut live = Map::new();
        match self.retry.call(&format!("s3 GetBucketVersioning {name}"), || self.s3.get_bucket_versioning().bucket(name).send()).await {
            Ok(v) => {
                live.insert("versioning", Value::Bool(v.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled)));
            }
            // A success the SDK cannot parse is no answer S3 gives; plain moto does (a wrong
            // root element). The setting is then not read, so its drift is not checked,
            // rather than nothing else being possible on such an endpoint.
            Err(e) if e.code.is_none() && e.message.starts_with("HTTP 200") => {
                crate::logging::line(
                    crate::logging::Level::Warn,
                    &format!("warning: {e}; versioning of bucket {name} is not read, so its drift is not checked"),
                );
            }
            Err(e) => return Err(e),
        }
        let blocked = match self
            .retry
            .call(&format!("s3 GetPublicAccessBlock {name}"), || self.s3.get_public_access_block().bucket(name).send())
            .await
        {
            Ok(b) => b.public_access_block_configuration().is_some_and(|c| {
                [c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()]
                    .iter()
                    .all(|x| *x == Some(true))
            }),
            Err(e) if e.is(&["NoSuchPublicAccessBlockConfiguration"]) => false,
            Err(e) => return Err(e),
        };
        live.insert("publicAccessBlock", Value::Bool(blocked));
        let algorithm = match self
            .retry
            .call(&format!("s3 GetBucketEncryption {name}"), || self.s3.get_bucket_encryption().bucket(name).send())
            .await
        {
            Ok(e) => e
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().as_str().to_owned())
                .unwrap_or_default(),
            Err(e) if e.is(&["ServerSideEncryptionConfigurationNotFoundError"]) => String::new(),
            Err(e) => return Err(e),
        };
        live.insert("encryption", Value::from(algorithm));
        let days = match self
            .retry
            .call(&format!("s3 GetBucketLifecycleConfiguration {name}"), || {
                self.s3.get_bucket_lifecycle_configuration().bucket(name).send()
            })
            .await
        {
            Ok(l) => noncurrent_days(l.rules()),
            Err(e) if e.is(&["NoSuchLifecycleConfiguration"]) => 0,
            Err(e) => return Err(e),
        };
        live.insert("noncurrentVersionDays", Value::Int(days.into()));
        Ok(live)
    }

    pub(super) async fn ensure_bucket(&self, r: &Resource) -> Result<Found, CloudError> {
        use aws_sdk_s3::types as s3t;
        let what = |op: &str| format!("s3 {op} for {}", r.id);
        let name = text(r, "name");
        let region = text(r, "region");
        let location = (region != "us-east-1" && !region.is_empty())
            .then(|| s3t::CreateBucketConfiguration::builder().location_constraint(s3t::BucketLocationConstraint::from(region)).build());
        let tag_set: Vec<s3t::Tag> = tags(r).into_iter().filter_map(|(k, v)| s3t::Tag::builder().key(k).value(v).build().ok()).collect();
        let tagging =
            s3t::Tagging::builder().set_tag_set(Some(tag_set)).build().map_err(|e| CloudError::new(what("tags"), e.to_string()))?;
        // Look before creating: in us-east-1 CreateBucket answers 200 for a bucket the
        // account already has, so its answer cannot tell ours from a same-named bucket
        // byoc did not make, which is never taken over.
        let tagged = self.retry.call(&what("GetBucketTagging"), || self.s3.get_bucket_tagging().bucket(name).send()).await;
        let state_store = self.state_store_bucket.as_deref() == Some(name);
        let exists = match tagged {
            Ok(t) if state_store || self.owns(r, t.tag_set().iter().map(|t| (t.key(), t.value()))) => true,
            Err(e) if state_store && e.is(&["NoSuchTagSet"]) => true,
            // Untagged in this account: what a run stopped between CreateBucket and
            // PutBucketTagging leaves (the SDK's CreateBucket tags are not taken in every
            // partition), so it is taken as ours, loudly. A bucket tagged otherwise is not.
            Err(e) if e.is(&["NoSuchTagSet"]) => {
                crate::logging::line(
                    crate::logging::Level::Warn,
                    &format!(
                        "warning: bucket {name} exists in this account without tags; taking it as {} (an earlier run stopped after creating it) and tagging it",
                        r.id
                    ),
                );
                true
            }
            Err(e) if e.is(&["NoSuchBucket"]) => false,
            Ok(_) => return Err(self.not_ours(r, what("CreateBucket"), "bucket", name)),
            Err(e) if e.is(&["PermanentRedirect", "AccessDenied"]) || e.message.starts_with("HTTP 301") => {
                return Err(self.not_ours(r, what("CreateBucket"), "bucket", name));
            }
            Err(e) => return Err(e),
        };
        let created = if exists {
            Ok(())
        } else {
            self.retry
                .call(&what("CreateBucket"), || {
                    self.s3.create_bucket().bucket(name).set_create_bucket_configuration(location.clone()).send()
                })
                .await
                .map(|_| ())
        };
        match created {
            Ok(()) => {
                // Tagged at once, so a run stopped after the create finds the bucket ours.
                {
                    self.retry
                        .call(&what("PutBucketTagging"), || self.s3.put_bucket_tagging().bucket(name).tagging(tagging.clone()).send())
                        .await?;
                }
            }
            Err(e) if e.is(&["BucketAlreadyOwnedByYou"]) => {}
            Err(e) if e.is(&["BucketAlreadyExists"]) => {
                return Err(CloudError {
                    message: format!("bucket name {name:?} is taken by another account; choose another name in the environment spec"),
                    ..e
                });
            }
            Err(e) => return Err(e),
        }
        let status = if flag(r, "versioning") { s3t::BucketVersioningStatus::Enabled } else { s3t::BucketVersioningStatus::Suspended };
        let versioning = s3t::VersioningConfiguration::builder().status(status).build();
        self.retry
            .call(&what("PutBucketVersioning"), || {
                self.s3.put_bucket_versioning().bucket(name).versioning_configuration(versioning.clone()).send()
            })
            .await?;
        let algorithm =
            if text(r, "encryption") == "aws:kms" { s3t::ServerSideEncryption::AwsKms } else { s3t::ServerSideEncryption::Aes256 };
        let rule = s3t::ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                s3t::ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(algorithm)
                    .build()
                    .map_err(|e| CloudError::new(what("encryption"), e.to_string()))?,
            )
            .bucket_key_enabled(true)
            .build();
        let encryption = s3t::ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| CloudError::new(what("encryption"), e.to_string()))?;
        self.retry
            .call(&what("PutBucketEncryption"), || {
                self.s3.put_bucket_encryption().bucket(name).server_side_encryption_configuration(encryption.clone()).send()
            })
            .await?;
        if flag(r, "publicAccessBlock") {
            let block = s3t::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build();
            self.retry
                .call(&what("PutPublicAccessBlock"), || {
                    self.s3.put_public_access_block().bucket(name).public_access_block_configuration(block.clone()).send()
                })
                .await?;
        }
        let days = int(r, "noncurrentVersionDays");
        if days > 0 {
            // One rule of byoc's own, over the whole bucket: a noncurrent version (what an
            // overwrite or delete leaves behind in a versioned bucket) expires after `days`.
            // The call replaces the bucket's whole lifecycle configuration.
            let rule = s3t::LifecycleRule::builder()
                .id(LIFECYCLE_RULE)
                .status(s3t::ExpirationStatus::Enabled)
                .filter(s3t::LifecycleRuleFilter::builder().prefix("").build())
                .noncurrent_version_expiration(s3t::NoncurrentVersionExpiration::builder().noncurrent_days(days).build())
                .build()
                .map_err(|e| CloudError::new(what("lifecycle"), e.to_string()))?;
            let lifecycle = s3t::BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| CloudError::new(what("lifecycle"), e.to_string()))?;
            self.retry
                .call(&what("PutBucketLifecycleConfiguration"), || {
                    self.s3.put_bucket_lifecycle_configuration().bucket(name).lifecycle_configuration(lifecycle.clone()).send()
                })
                .await?;
        }
        self.retry.call(&what("PutBucketTagging"), || self.s3.put_bucket_tagging().bucket(name).tagging(tagging.clone()).send()).await?;
        Ok(found(r, name, []))
    }

    /// Empties a bucket (every version and delete marker) and deletes it. Only reached
    /// when `destroy --delete-data` lifted the protection. The bucket that holds the state
    /// store this run writes (`--state-s3`) is refused: deleting it would lose the
    /// inventory and the lease mid-run. `DeleteObjects` answers 200 with a per-key `Errors`
    /// list (a policy's deny, object lock), which is read: any error stops the deletion.
    pub(super) async fn delete_bucket(&self, f: &Found) -> Result<(), CloudError> {
        use aws_sdk_s3::types as s3t;
        let what = |op: &str| format!("s3 {op} for {} {}", f.id, f.cloud_id);
        if self.state_store_bucket.as_deref() == Some(f.cloud_id.as_str()) {
            return Err(CloudError::new(
                what("DeleteBucket"),
                format!(
                    "bucket {} holds the state store this run writes (--state-s3); byoc does not delete it. Move the state elsewhere, or delete the bucket by hand after the destroy",
                    f.cloud_id
                ),
            ));
        }
        loop {
            let page = self.retry.call(&what("ListObjectVersions"), || self.s3.list_object_versions().bucket(&f.cloud_id).send()).await?;
            let ids: Vec<s3t::ObjectIdentifier> = page
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(page.delete_markers().iter().map(|m| (m.key(), m.version_id())))
                .filter_map(|(k, v)| s3t::ObjectIdentifier::builder().key(k?).set_version_id(v.map(str::to_owned)).build().ok())
                .collect();
            if ids.is_empty() {
                break;
            }
            let delete = s3t::Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| CloudError::new(what("DeleteObjects"), e.to_string()))?;
            let out = self
                .retry
                .call(&what("DeleteObjects"), || self.s3.delete_objects().bucket(&f.cloud_id).delete(delete.clone()).send())
                .await?;
            if let Some(first) = out.errors().first() {
                let code = first.code().unwrap_or("unknown").to_owned();
                return Err(CloudError {
                    what: what("DeleteObjects"),
                    message: format!(
                        "{} object version(s) were not deleted, the first {:?} (version {}): {code}: {}; the bucket is left as it is. Lift what refuses the deletion (a bucket policy, object lock) and run destroy --delete-data again",
                        out.errors().len(),
                        first.key().unwrap_or_default(),
                        first.version_id().unwrap_or("null"),
                        first.message().unwrap_or_default()
                    ),
                    code: Some(code),
                });
            }
        }
        self.retry.call(&what("DeleteBucket"), || self.s3.delete_bucket().bucket(&f.cloud_id).send()).await?;
        Ok(())
    }
}
