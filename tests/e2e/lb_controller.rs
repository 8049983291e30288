//! The AWS Load Balancer Controller `byoc apply` installs before the sidecar: the real
//! binary against moto (the cloud) and the Kubernetes API double over HTTP (the cluster),
//! the values read back from both; its webhook certificate checked with a real `openssl`;
//! and the embedded rendering kept equal to what a real kustomize renders.

use std::process::Command;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::aws::example_repo;
use crate::manifests::kustomize;
use crate::state_s3::MOTO_ENV;
use crate::support::{byoc_env, project_root};
use byoc::cloud::aws::lb_controller;

#[test]
fn the_embedded_rendering_is_what_kubectl_kustomize_renders() {
    let live = kustomize(&project_root().join("manifests/aws-load-balancer-controller"));
    let embedded = lb_controller::embedded().expect("embedded manifests parse");
    assert_eq!(
        embedded, live,
        "manifests/rendered/aws-load-balancer-controller.yaml is stale: regenerate it with `kubectl kustomize manifests/aws-load-balancer-controller`"
    );
}

fn api(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().expect("kind");
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn held(client: &kube::Client, obj: &Value) -> Option<Value> {
    let name = obj["metadata"]["name"].as_str().expect("name");
    api(client, obj).get_opt(name).await.expect("the double answers").map(|o| serde_json::to_value(o).expect("json"))
}

fn decoded(b64: &Value) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64 text")).expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_installs_the_controller_before_the_sidecar_with_the_environments_outputs() {
    let account = crate::aws::Account::new();
    let moto = account.endpoint().to_owned();
    let d = crate::kube::support::double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let client = d.client();
    let _op = crate::kube::support::operator(&client);
    let repo = example_repo();
    let kube_dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube_dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    // The controller's stand-in makes the NLBs of the sidecar's Services, which the
    // endpoint services front.
    let _controller = account.lb_controller(std::path::Path::new(&kubeconfig));
    let run = || {
        let dir = repo.path().to_path_buf();
        let (moto, kubeconfig) = (moto.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let args = [
                "apply",
                "--repo",
                ".",
                "--env",
                "examples/aws",
                "--endpoint-url",
                &moto,
                "--state-dir",
                "state",
                "--poll-interval",
                "0.1",
                "--auto-approve",
                "--skip-preflight",
                "--kubeconfig",
                &kubeconfig,
                "--health-timeout",
                "10",
            ];
            byoc_env(&dir, &args, &MOTO_ENV)
        })
    };

    let applied = run().await.expect("join");
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    let objects = lb_controller::embedded().expect("embedded");
    for obj in &objects {
        assert!(held(&client, obj).await.is_some(), "{} is in the double after apply", byoc::sidecar::describe(obj));
    }
    assert!(applied.stdout.contains("lb-controller: 13 object(s) applied"), "{}", applied.stdout);

    // Every object of the controller is applied (as byoc, forced) before the sidecar's first.
    let patches: Vec<String> = d.writes().iter().filter(|r| r.method == http::Method::PATCH).map(|r| r.uri.clone()).collect();
    let first_sidecar = patches.iter().position(|u| u.contains("byoc-system")).expect("the sidecar is applied");
    let controller: Vec<usize> = patches
        .iter()
        .enumerate()
        .filter(|(_, u)| u.contains("aws-load-balancer") || u.contains("elbv2.k8s.aws"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(controller.len(), 13, "{patches:#?}");
    assert!(controller.iter().all(|i| *i < first_sidecar), "the controller goes before the sidecar: {patches:#?}");
    assert!(patches[controller[0]].starts_with("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"), "{patches:#?}");

    // The values are the environment's, read back from moto.
    let find = |kind: &str| objects.iter().find(|o| o["kind"] == kind).expect("object").clone();
    let sa = held(&client, &find("ServiceAccount")).await.expect("service account");
    let arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().expect("IRSA annotation").to_owned();
    let trust = account.python(&format!(
        "import boto3,json\nr=boto3.client('iam').get_role(RoleName='{}')\nprint(json.dumps(r['Role']['AssumeRolePolicyDocument']))",
        arn.rsplit('/').next().expect("role name")
    ));
    assert!(trust.contains("system:serviceaccount:kube-system:aws-load-balancer-controller"), "{arn} trusts the controller: {trust}");
    let deployment = held(&client, &find("Deployment")).await.expect("deployment");
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let cluster = account.python("import boto3\nprint(boto3.client('eks').list_clusters()['clusters'][0])");
    let vpc = account.python(
        "import boto3\nprint([v['VpcId'] for v in boto3.client('ec2').describe_vpcs()['Vpcs'] if any(t['Key']=='byoc.risingwave.dev/environment' for t in v.get('Tags',[]))][0])",
    );
    for want in [format!("--cluster-name={}", cluster.trim()), format!("--aws-vpc-id={}", vpc.trim()), "--aws-region=us-east-1".into()] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }

    // The TargetGroupBinding kind is served once its CRD is in: the controller's informers
    // can start.
    let tgb =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("elbv2.k8s.aws", "v1beta1", "TargetGroupBinding"), "targetgroupbindings");
    let tgbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "byoc-system", &tgb);
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding", "metadata": {"name": "k8s-probe"},
        "spec": {"targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/k8s/0", "targetType": "ip",
                 "serviceRef": {"name": "rwproxy", "port": 4566}}}))
    .expect("object");
    tgbs.create(&Default::default(), &binding).await.expect("a TargetGroupBinding is accepted");

    // The webhooks trust the CA that signed the Secret's certificate, issued for the
    // webhook Service's name: checked by openssl, not by byoc.
    let secret_obj =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": lb_controller::CERT_SECRET, "namespace": "kube-system"}});
    let secret = held(&client, &secret_obj).await.expect("the certificate's Secret");
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, key) in [("tls.crt", "tls.crt"), ("ca.crt", "ca.crt")] {
        std::fs::write(dir.path().join(file), decoded(&secret["data"][key])).expect("write");
    }
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hooks = held(&client, &find(kind)).await.expect("webhooks");
        for h in hooks["webhooks"].as_array().expect("webhooks") {
            std::fs::write(dir.path().join("bundle.crt"), decoded(&h["clientConfig"]["caBundle"])).expect("write");
            let out = Command::new("openssl")
                .args([
                    "verify",
                    "-purpose",
                    "sslserver",
                    "-verify_hostname",
                    "aws-load-balancer-webhook-service.kube-system.svc",
                    "-CAfile",
                ])
                .arg(dir.path().join("bundle.crt"))
                .arg(dir.path().join("tls.crt"))
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "{kind} {}: {}{}",
                h["name"],
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // A second apply keeps the certificate (no rotation on every run).
    let again = run().await.expect("join");
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let after = held(&client, &secret_obj).await.expect("the certificate's Secret");
    assert_eq!(after["data"]["tls.crt"], secret["data"]["tls.crt"], "the certificate is reused");
}
