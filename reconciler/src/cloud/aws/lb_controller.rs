//! The AWS Load Balancer Controller in the environment's cluster: `byoc apply` installs it
//! on AWS before the sidecar, so the sidecar's Services (`loadBalancerClass:
//! service.k8s.aws/nlb`) get their internal NLBs from it (see DESIGN.md, "Load balancers
//! and private connectivity").
//!
//! The objects are `kubectl kustomize manifests/aws-load-balancer-controller`, rendered
//! ahead of time into `manifests/rendered/aws-load-balancer-controller.yaml` and embedded
//! here, like the sidecar's (tests/e2e/lb_controller.rs fails when the two differ). byoc
//! fills in what only the apply knows: the IRSA role's ARN on the ServiceAccount, and the
//! EKS cluster's name, the VPC and the region in the controller's arguments (so it asks
//! no instance metadata, which the nodes' hop limit keeps from pods).
//!
//! The admission webhooks' serving certificate is byoc's own: a CA and a leaf for the
//! webhook Service's DNS names, generated with rcgen, kept in the Secret
//! `kube-system/aws-load-balancer-tls` (`tls.crt`, `tls.key`, `ca.crt`), the CA written into
//! both webhook configurations' `caBundle`. No cert-manager: it would be one more
//! controller to install and trust before this one. A later apply reuses the Secret's
//! certificate while it has more than [`RENEW_BEFORE_SECS`] left, so reapplying does not
//! rotate it; the controller reloads a renewed one from the mounted Secret on its own.
//!
//! `byoc destroy` does not remove the controller: it must outlive the sidecar's Services to
//! delete their NLBs (its finalizer on each Service), and it goes with the cluster.

use std::collections::BTreeMap;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

use crate::expand::aws::{LOAD_BALANCER_CONTROLLER, LOAD_BALANCER_CONTROLLER_NAMESPACE, LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT};
use crate::resource::{Kind, ResourceId};
use crate::sidecar::{SidecarError, describe, kind_of, name_of};
use crate::spec::Environment;

/// `kubectl kustomize manifests/aws-load-balancer-controller`, with its placeholders.
const RENDERED: &str = include_str!("../../../../manifests/rendered/aws-load-balancer-controller.yaml");

/// The Service the API server calls the webhooks through; its DNS names are the leaf's.
pub const WEBHOOK_SERVICE: &str = "aws-load-balancer-webhook-service";
/// The Secret holding the webhooks' serving certificate (the Deployment mounts it).
pub const CERT_SECRET: &str = "aws-load-balancer-tls";
/// Annotation on [`CERT_SECRET`]: when its certificate expires (Unix seconds), so a later
/// apply decides whether to reuse it without parsing X.509.
pub const NOT_AFTER_ANNOTATION: &str = "byoc.risingwave.dev/not-after";
/// How long the generated certificates are valid.
pub const VALIDITY_SECS: i64 = 5 * 365 * 86_400;
/// A certificate with less than this left is replaced at the next apply.
pub const RENEW_BEFORE_SECS: i64 = 90 * 86_400;

/// The order objects are applied in: what others refer to first; the webhook
/// configurations last, once the Service and the pods they name exist.
const ORDER: &[&str] = &[
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "Secret",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Why the controller could not be rendered or installed.
#[derive(Debug, thiserror::Error)]
pub enum LbControllerError {
    /// A value byoc needs is not in the apply's outputs.
    #[error("aws-load-balancer-controller: {0}")]
    Missing(String),
    /// The embedded manifests do not have the shape byoc fills in.
    #[error(
        "manifests/rendered/aws-load-balancer-controller.yaml: {0}; regenerate it with `kubectl kustomize manifests/aws-load-balancer-controller`"
    )]
    Manifests(String),
    /// The webhook certificate could not be made.
    #[error("aws-load-balancer-controller: generating the webhook certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Applying to (or reading from) the cluster failed.
    #[error("aws-load-balancer-controller: {0}")]
    Kube(#[from] SidecarError),
}

impl LbControllerError {
    /// Whether trying again later can help: only a call the API server failed or refused.
    pub fn retryable(&self) -> bool {
        matches!(self, LbControllerError::Kube(e) if e.retryable())
    }
}

/// The environment's values the controller's objects carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbControllerOutputs {
    /// The ARN of the controller's IRSA role (`aws.iam-role/load-balancer-controller`).
    pub role_arn: String,
    /// The EKS cluster's name: the controller tags its NLBs `elbv2.k8s.aws/cluster` with it.
    pub cluster_name: String,
    /// The VPC the NLBs go in.
    pub vpc_id: String,
    /// The environment's region.
    pub region: String,
}

impl LbControllerOutputs {
    /// The values for `env` after an apply whose cloud outputs (resource id to ARN or cloud
    /// id) are `outputs`.
    pub fn aws(env: &Environment, outputs: &BTreeMap<String, String>) -> Result<Self, LbControllerError> {
        let get = |id: ResourceId, what: &str, ok: fn(&str) -> bool| {
            outputs.get(id.as_str()).filter(|v| ok(v)).cloned().ok_or_else(|| {
                LbControllerError::Missing(format!("the state has no {what} for {id}; the environment's apply must finish first"))
            })
        };
        Ok(LbControllerOutputs {
            role_arn: get(ResourceId::new(Kind::AwsIamRole, LOAD_BALANCER_CONTROLLER), "ARN", |v| v.starts_with("arn:"))?,
            // The outputs hold the cluster's ARN (`arn:PARTITION:eks:REGION:ACCOUNT:cluster/NAME`).
            cluster_name: get(ResourceId::new(Kind::AwsEksCluster, "main"), "ARN", |v| {
                v.starts_with("arn:") && v.rsplit_once(":cluster/").is_some_and(|(_, n)| !n.is_empty())
            })?
            .rsplit_once(":cluster/")
            .map(|(_, n)| n.to_owned())
            .unwrap_or_default(),
            vpc_id: get(ResourceId::new(Kind::AwsVpc, "main"), "id", |v| v.starts_with("vpc-"))?,
            region: env.region.clone(),
        })
    }
}

/// The webhooks' serving certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCert {
    /// The CA that signed the leaf: the webhooks' `caBundle`.
    pub ca_pem: String,
    /// The leaf, for [`WEBHOOK_SERVICE`]'s DNS names.
    pub cert_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
    /// When both expire, Unix seconds.
    pub not_after: i64,
}

/// The DNS names the API server calls [`WEBHOOK_SERVICE`] by.
pub fn webhook_dns_names() -> Vec<String> {
    let ns = LOAD_BALANCER_CONTROLLER_NAMESPACE;
    vec![format!("{WEBHOOK_SERVICE}.{ns}.svc"), format!("{WEBHOOK_SERVICE}.{ns}.svc.cluster.local")]
}

/// `(year, month, day)` of the day `unix` seconds fall in (UTC; Howard Hinnant's
/// civil-from-days), for rcgen's dates.
fn civil(unix: i64) -> (i32, u8, u8) {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// A fresh CA and leaf, valid from the day before `now` (clock skew between this machine
/// and the API server) for [`VALIDITY_SECS`].
pub fn generate(now: i64) -> Result<WebhookCert, LbControllerError> {
    let day = |t: i64| {
        let (y, m, d) = civil(t);
        rcgen::date_time_ymd(y, m, d)
    };
    // Whole days: the expiry recorded is the start of the day rcgen writes.
    let not_after = (now + VALIDITY_SECS).div_euclid(86_400) * 86_400;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "byoc aws-load-balancer-controller webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = day(now - 86_400);
    ca.not_after = day(not_after);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let names = webhook_dns_names();
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name.push(DnType::CommonName, names[0].as_str());
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = day(now - 86_400);
    leaf.not_after = day(not_after);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(WebhookCert { ca_pem: ca_cert.pem(), cert_pem: leaf_cert.pem(), key_pem: leaf_key.serialize_pem(), not_after })
}

/// The certificate in `secret` (the Secret as the API server returns it), if it is whole,
/// was made by byoc and has more than [`RENEW_BEFORE_SECS`] left at `now`.
pub fn reusable(secret: &Value, now: i64) -> Option<WebhookCert> {
    let not_after: i64 = secret.pointer("/metadata/annotations")?.get(NOT_AFTER_ANNOTATION)?.as_str()?.parse().ok()?;
    if not_after - now <= RENEW_BEFORE_SECS {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let b64 = secret.get("data")?.get(k)?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(bytes).ok().filter(|s| s.contains("-----BEGIN "))
    };
    Some(WebhookCert { ca_pem: field("ca.crt")?, cert_pem: field("tls.crt")?, key_pem: field("tls.key")?, not_after })
}

/// The Secret holding `cert`, in the layout the controller mounts (and cert-manager writes).
pub fn cert_secret(cert: &WebhookCert) -> Value {
    let b64 = |s: &str| Value::String(base64::engine::general_purpose::STANDARD.encode(s));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": CERT_SECRET,
            "namespace": LOAD_BALANCER_CONTROLLER_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "aws-load-balancer-controller", "app.kubernetes.io/managed-by": "byoc"},
            "annotations": {NOT_AFTER_ANNOTATION: cert.not_after.to_string()}
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&cert.cert_pem), "tls.key": b64(&cert.key_pem), "ca.crt": b64(&cert.ca_pem)}
    })
}

/// The embedded manifests as objects, placeholders and all.
pub fn embedded() -> Result<Vec<Value>, LbControllerError> {
    crate::sidecar::documents(RENDERED).map_err(LbControllerError::Manifests)
}

/// The controller's objects with `outputs` and `cert` filled in (the certificate's Secret
/// among them), in the order they are applied.
pub fn render(outputs: &LbControllerOutputs, cert: &WebhookCert) -> Result<Vec<Value>, LbControllerError> {
    let mut objects = embedded()?;
    let missing = |what: &str| LbControllerError::Manifests(format!("{what} is not where byoc fills it in"));
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&cert.ca_pem);
    for obj in &mut objects {
        match kind_of(obj) {
            "ServiceAccount" if name_of(obj) == LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT => {
                let a =
                    obj.pointer_mut("/metadata/annotations/eks.amazonaws.com~1role-arn").ok_or_else(|| missing("the IRSA annotation"))?;
                *a = Value::String(outputs.role_arn.clone());
            }
            "Deployment" => {
                let args = obj
                    .pointer_mut("/spec/template/spec/containers/0/args")
                    .and_then(Value::as_array_mut)
                    .ok_or_else(|| missing("the controller's arguments"))?;
                for (flag, value) in
                    [("--cluster-name", &outputs.cluster_name), ("--aws-vpc-id", &outputs.vpc_id), ("--aws-region", &outputs.region)]
                {
                    let prefix = format!("{flag}=");
                    let arg = args
                        .iter_mut()
                        .find(|a| a.as_str().is_some_and(|s| s.starts_with(&prefix)))
                        .ok_or_else(|| missing(&format!("the controller's {flag}")))?;
                    *arg = Value::String(format!("{prefix}{value}"));
                }
            }
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                let hooks = obj.get_mut("webhooks").and_then(Value::as_array_mut).ok_or_else(|| missing("the webhooks"))?;
                for h in hooks {
                    let c = h.pointer_mut("/clientConfig/caBundle").ok_or_else(|| missing("a webhook's caBundle"))?;
                    *c = Value::String(ca_bundle.clone());
                }
            }
            _ => {}
        }
    }
    objects.push(cert_secret(cert));
    let rank = |o: &Value| ORDER.iter().position(|k| *k == kind_of(o)).unwrap_or(ORDER.len());
    if let Some(o) = objects.iter().find(|o| rank(o) == ORDER.len()) {
        return Err(LbControllerError::Manifests(format!("{} is of a kind byoc does not install", describe(o))));
    }
    objects.sort_by_key(|o| rank(o));
    Ok(objects)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Installs (or updates) the controller with the apply's `outputs` into the cluster
/// `client` reaches; returns what was applied, as `Kind namespace/name`.
pub async fn install(
    client: &kube::Client,
    env: &Environment,
    outputs: &BTreeMap<String, String>,
) -> Result<Vec<String>, LbControllerError> {
    let values = LbControllerOutputs::aws(env, outputs)?;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), LOAD_BALANCER_CONTROLLER_NAMESPACE);
    let existing = secrets.get_opt(CERT_SECRET).await.map_err(|source| SidecarError::Kube {
        action: "reading",
        object: format!("Secret {LOAD_BALANCER_CONTROLLER_NAMESPACE}/{CERT_SECRET}"),
        source,
    })?;
    let now = now_unix();
    let cert = match existing.and_then(|s| serde_json::to_value(s).ok()).and_then(|s| reusable(&s, now)) {
        Some(c) => c,
        None => generate(now)?,
    };
    let objects = render(&values, &cert)?;
    Ok(crate::sidecar::install(client, &objects).await?)
}

/// The step of `byoc apply` on AWS before the sidecar: install the controller, report it.
pub async fn after_apply(client: &kube::Client, env: &Environment, outputs: &BTreeMap<String, String>) -> Result<(), LbControllerError> {
    let applied = install(client, env, outputs).await?;
    for a in &applied {
        println!("lb-controller: {a}");
    }
    println!("lb-controller: {} object(s) applied", applied.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> LbControllerOutputs {
        LbControllerOutputs {
            role_arn: "arn:aws:iam::123456789012:role/byoc-x-load-balancer-controller".into(),
            cluster_name: "byoc-x".into(),
            vpc_id: "vpc-0abc".into(),
            region: "eu-west-1".into(),
        }
    }

    #[test]
    fn outputs_name_the_cluster_from_its_arn_and_say_what_is_missing() {
        let dir = format!("{}/../examples/aws", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        let env = crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}")).environment;
        let mut out: BTreeMap<String, String> = [
            ("aws.iam-role/load-balancer-controller", "arn:aws:iam::123456789012:role/byoc-x-load-balancer-controller"),
            ("aws.eks-cluster/main", "arn:aws:eks:us-east-1:123456789012:cluster/byoc-x"),
            ("aws.vpc/main", "vpc-0abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let values = LbControllerOutputs::aws(&env, &out).expect("outputs");
        assert_eq!((values.cluster_name.as_str(), values.vpc_id.as_str()), ("byoc-x", "vpc-0abc"));
        out.remove("aws.vpc/main");
        let e = LbControllerOutputs::aws(&env, &out).expect_err("no VPC");
        assert!(e.to_string().contains("aws.vpc/main"), "{e}");
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29));
        assert_eq!(civil(1_795_651_200), (2026, 11, 26));
    }

    #[test]
    fn render_fills_every_placeholder_and_installs_the_crds_first_and_the_webhooks_last() {
        let cert = generate(1_795_651_200).expect("cert");
        let objects = render(&outputs(), &cert).expect("render");
        let text = serde_json::to_string(&objects).expect("json");
        for placeholder in ["111122223333", "byoc-prod", "vpc-0123456789abcdef0", "us-east-1", "Q0E="] {
            assert!(!text.contains(placeholder), "{placeholder} left in the rendering");
        }
        let kinds: Vec<&str> = objects.iter().map(kind_of).collect();
        assert_eq!(kinds[..2], ["CustomResourceDefinition", "CustomResourceDefinition"]);
        assert_eq!(kinds[kinds.len() - 2..], ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]);
        let secret = kinds.iter().position(|k| *k == "Secret").expect("the certificate's Secret");
        let deployment = kinds.iter().position(|k| *k == "Deployment").expect("deployment");
        assert!(secret < deployment, "the Secret the pods mount exists before them: {kinds:?}");
        let args = &objects[deployment]["spec"]["template"]["spec"]["containers"][0]["args"];
        for a in ["--cluster-name=byoc-x", "--aws-vpc-id=vpc-0abc", "--aws-region=eu-west-1"] {
            assert!(args.as_array().expect("args").iter().any(|x| x == a), "{a} in {args}");
        }
        let image = objects[deployment]["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("image");
        assert!(image.contains("@sha256:") && image.len() > image.find("@sha256:").unwrap_or(0) + 8 + 63, "pinned by digest: {image}");
    }

    #[test]
    fn a_certificate_is_reused_until_it_nears_expiry_and_only_when_whole() {
        let now = 1_795_651_200;
        let cert = generate(now).expect("cert");
        assert!(cert.not_after - now > VALIDITY_SECS - 86_400, "{}", cert.not_after);
        let secret = cert_secret(&cert);
        assert_eq!(reusable(&secret, now), Some(cert.clone()));
        assert_eq!(reusable(&secret, cert.not_after - RENEW_BEFORE_SECS), None, "renewed ahead of expiry");
        let mut partial = secret.clone();
        partial["data"].as_object_mut().expect("data").remove("tls.key");
        assert_eq!(reusable(&partial, now), None);
        let mut foreign = secret;
        foreign["metadata"]["annotations"] = json!({});
        assert_eq!(reusable(&foreign, now), None, "a Secret byoc did not write is replaced");
    }
}
