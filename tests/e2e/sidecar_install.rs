//! The sidecar installed by `byoc apply` and removed by `byoc destroy`: the real binary
//! against moto (the cloud) and the Kubernetes API double served over HTTP (the cluster),
//! the values read back from both. And the embedded rendering kept equal to what the
//! overlay renders with a real kustomize.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use crate::aws::example_repo;
use crate::manifests::{config_in, kustomize};
use crate::state_s3::MOTO_ENV;
use byoc::resource::Graph;
use byoc::spec::Cloud;

use crate::support::{byoc_env, project_root};

#[test]
fn the_embedded_renderings_are_what_kubectl_kustomize_renders_from_each_clouds_overlay() {
    for cloud in [Cloud::Aws, Cloud::Gcp, Cloud::Azure] {
        let name = cloud.as_str();
        let live = kustomize(&project_root().join(format!("manifests/overlays/{name}")));
        let embedded = byoc::sidecar::embedded(cloud).expect("embedded manifests parse");
        assert_eq!(
            embedded, live,
            "manifests/rendered/{name}.yaml is stale: regenerate it with `kubectl kustomize manifests/overlays/{name}`"
        );
    }
}

#[test]
fn the_service_account_is_the_one_the_agent_role_trusts() {
    let objects = byoc::sidecar::ordered(Cloud::Aws, &Graph::default()).expect("embedded");
    let sa = objects.iter().find(|o| o["kind"] == "ServiceAccount").expect("service account");
    assert_eq!(sa["metadata"]["name"], byoc::expand::AGENT_SERVICE_ACCOUNT);
    assert_eq!(sa["metadata"]["namespace"], byoc::expand::AGENT_NAMESPACE);
}

fn api(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().expect("kind");
    let plural = if kind == "NetworkPolicy" { "networkpolicies".to_owned() } else { format!("{}s", kind.to_ascii_lowercase()) };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// The object as the double holds it, `None` when it has none.
async fn held(client: &kube::Client, obj: &Value) -> Option<Value> {
    let name = obj["metadata"]["name"].as_str().expect("name");
    api(client, obj).get_opt(name).await.expect("the double answers").map(|o| serde_json::to_value(o).expect("json"))
}

/// `%XX` escapes decoded (IAM returns policy documents URL-encoded).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_installs_the_sidecar_with_the_environments_outputs_and_destroy_removes_it_before_the_cluster() {
    // moto has no EKS add-ons (the EBS CSI driver): the front answers them.
    let account = crate::aws::Account::new();
    let moto = account.endpoint().to_owned();
    let d = crate::kube::support::double();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = d.serve(listener);
    let client = d.client();
    // The RisingWave clusters' objects apply after the sidecar; a stand-in operator makes
    // them ready.
    let _op = crate::kube::support::operator(&client);
    let repo = example_repo();
    let kube_dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube_dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://{addr}"))).expect("kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    // The controller's stand-in makes the NLBs of the sidecar's Services, which the
    // endpoint services front.
    let controller = account.lb_controller(std::path::Path::new(&kubeconfig));

    let run = |verb: &'static str, extra: Vec<String>| {
        let dir = repo.path().to_path_buf();
        let moto = moto.clone();
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let mut args: Vec<String> =
                [verb, "--repo", ".", "--env", "examples/aws", "--endpoint-url", &moto, "--state-dir", "state"].map(str::to_owned).to_vec();
            args.extend(["--poll-interval", "0.1", "--auto-approve", "--skip-preflight", "--kubeconfig", &kubeconfig].map(str::to_owned));
            if verb == "apply" {
                args.extend(["--health-timeout", "10"].map(str::to_owned));
            }
            args.extend(extra);
            byoc_env(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>(), &MOTO_ENV)
        })
    };

    let applied = run("apply", vec!["--sidecar-image".into(), "registry.test/byoc:1.2.3".into()]).await.expect("join");
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    assert!(applied.stdout.contains("action(s) to prod-use1"), "{}", applied.stdout);

    let objects = byoc::sidecar::ordered(Cloud::Aws, &Graph::default()).expect("embedded");
    // Namespace, ServiceAccount, 2 roles, 2 bindings, 2 ConfigMaps, 3 Services (the
    // example has a public proxy), 4 NetworkPolicies, the PDB and the Deployment.
    assert_eq!(objects.len(), 17);
    for obj in &objects {
        assert!(held(&client, obj).await.is_some(), "{} is in the double after apply", byoc::sidecar::describe(obj));
    }
    // Server-side apply as byoc, in dependency order: the Namespace first, the Deployment last.
    // (The RisingWave clusters' own namespaces and objects follow; they are not the sidecar's.)
    // (The load balancer controller's own cluster roles are tests/e2e/lb_controller.rs's.)
    // The controller's stand-in writes its finalizer and status onto the sidecar's Services.
    let by_controller = |r: &kube_double::Recorded| r.user_agent.as_deref() == Some("aws-load-balancer-controller-stand-in");
    let sidecar_uri = |u: &str| {
        (u.contains("byoc-system") || u.contains("/clusterroles/") || u.contains("/clusterrolebindings/"))
            && !u.contains("aws-load-balancer")
    };
    let patches: Vec<String> = d
        .writes()
        .iter()
        .filter(|r| r.method == http::Method::PATCH && sidecar_uri(&r.uri) && !by_controller(r))
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(patches.len(), 17, "{patches:#?}");
    assert!(patches.iter().all(|u| u.contains("fieldManager=byoc") && u.contains("force=true")), "{patches:#?}");
    assert!(patches[0].starts_with("/api/v1/namespaces/byoc-system?"), "{patches:#?}");
    assert!(patches[16].starts_with("/apis/apps/v1/namespaces/byoc-system/deployments/byoc?"), "{patches:#?}");

    let find =
        |kind: &str, name: &str| objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).expect("object").clone();
    let deployment = held(&client, &find("Deployment", "byoc")).await.expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["byoc", "rwproxy"]);
    assert!(containers.iter().all(|c| c["image"] == "registry.test/byoc:1.2.3"), "{containers:?}");
    assert!(containers[1]["args"].as_array().expect("args").iter().any(|a| a == "--proxy-protocol-from=10.20.0.0/16"), "{containers:?}");

    // The ServiceAccount names the role byoc created, and that role trusts it.
    let sa = held(&client, &find("ServiceAccount", "byoc")).await.expect("service account");
    let arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().expect("IRSA annotation").to_owned();
    let config = sdk_config(&moto).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let roles = iam.list_roles().send().await.expect("moto lists roles");
    let role = roles.roles().iter().find(|r| r.arn() == arn).unwrap_or_else(|| panic!("{arn} is a role in moto"));
    let trust = percent_decoded(role.assume_role_policy_document().unwrap_or(""));
    assert!(trust.contains("system:serviceaccount:byoc-system:byoc\""), "{arn} trusts the sidecar's service account: {trust}");

    // The config carries the environment's state bucket, which exists, and byoc accepts it.
    let cms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "byoc-system",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps"),
    );
    let held_cms: Vec<Value> =
        cms.list(&ListParams::default()).await.expect("list").items.into_iter().map(|o| serde_json::to_value(o).expect("json")).collect();
    let reconciler = held_cms
        .iter()
        .find(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("byoc-config-")))
        .expect("the config ConfigMap")["data"]["reconciler.yaml"]
        .as_str()
        .expect("reconciler.yaml")
        .to_owned();
    let s3 = aws_sdk_s3::Client::new(&config);
    let buckets: Vec<String> =
        s3.list_buckets().send().await.expect("buckets").buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect();
    let state_bucket = buckets.iter().find(|b| reconciler.contains(&format!("stateStore: {{s3: \"s3://{b}/reconciler\"}}"))).cloned();
    assert!(
        state_bucket.as_deref().is_some_and(|b| b.contains("state")),
        "the state store is a bucket in moto ({buckets:?}):\n{reconciler}"
    );
    assert!(reconciler.contains("environment: \"examples/aws\""), "{reconciler}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_in(&held_cms, dir.path());
    let check = crate::support::tied_byoc().args(["run", "--config"]).arg(&path).arg("--check").output().expect("byoc runs");
    assert!(
        check.status.success(),
        "byoc run --check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The CIDRs: the agent port from the private subnets, the SQL port from the VPC and the
    // spec's allowed ranges.
    let cidrs = |p: &Value| -> Vec<String> {
        p["spec"]["ingress"][0]["from"]
            .as_array()
            .expect("from")
            .iter()
            .filter_map(|f| f["ipBlock"]["cidr"].as_str().map(str::to_owned))
            .collect()
    };
    let agent = held(&client, &find("NetworkPolicy", "byoc-agent")).await.expect("policy");
    assert_eq!(cidrs(&agent), ["10.20.0.0/19", "10.20.32.0/19", "10.20.64.0/19"]);
    let proxy = held(&client, &find("NetworkPolicy", "rwproxy")).await.expect("policy");
    assert_eq!(cidrs(&proxy), ["10.20.0.0/16", "203.0.113.0/24"]);

    // A second apply with nothing to do in the cloud applies the same objects again and
    // changes nothing in them.
    d.clear_requests();
    let again = run("apply", vec!["--sidecar-image".into(), "registry.test/byoc:1.2.3".into()]).await.expect("join");
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("sidecar: 17 object(s), 0 changed"), "{}", again.stdout);
    assert!(!again.stdout.contains("sidecar: updated") && !again.stdout.contains("sidecar: created"), "{}", again.stdout);
    let after = held(&client, &find("Deployment", "byoc")).await.expect("deployment");
    assert_eq!(after["metadata"]["generation"], deployment["metadata"]["generation"], "re-applying the same objects changes nothing");

    // The AWS Load Balancer Controller (its stand-in) holds each of its Services with its
    // finalizer until it has deleted the NLB: destroy must wait for it before deleting the
    // cluster, or the NLB is left behind holding the subnets. The controller is paused to
    // show the wait.
    let services = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "byoc-system",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services"),
    );
    let held_by = services.get("rwproxy").await.expect("the proxy's Service").metadata.finalizers.unwrap_or_default();
    assert_eq!(held_by, ["service.k8s.aws/resources"], "the controller holds the Service it made an NLB for");
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").args([sig, &controller.0.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");

    // Destroy: every object deleted, each before EKS deletes the cluster.
    d.clear_requests();
    let destroying = run("destroy", vec![]);
    let eks_client = aws_sdk_eks::Client::new(&config);
    let mut marked = false;
    for _ in 0..300 {
        let s = services.get_opt("rwproxy").await.expect("get");
        if s.as_ref().is_some_and(|s| s.metadata.deletion_timestamp.is_some()) {
            marked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(marked, "destroy deletes the proxy's Service");
    // Held by the finalizer: the cloud must wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(eks_client.list_clusters().send().await.expect("clusters").clusters().len(), 1, "EKS waits for the Service to go");
    signal("-CONT");
    let destroyed = destroying.await.expect("join");
    assert_eq!(destroyed.code, 0, "{}\n{}", destroyed.stdout, destroyed.stderr);
    assert!(destroyed.stdout.contains("sidecar: 17 object(s) deleted and gone"), "{}", destroyed.stdout);
    let deletes = d.writes().iter().filter(|r| r.method == http::Method::DELETE).count();
    assert_eq!(deletes, 17, "{:?}", d.writes());
    let lines: Vec<&str> = destroyed.stdout.lines().collect();
    let last_sidecar = lines.iter().rposition(|l| l.starts_with("sidecar: deleted ")).expect("sidecar deletions reported");
    let eks =
        lines.iter().position(|l| l.starts_with("done ") && l.contains("aws.eks-cluster/")).expect("the EKS cluster's deletion reported");
    assert!(last_sidecar < eks, "the sidecar goes before the cluster:\n{}", destroyed.stdout);
    assert_eq!(eks_client.list_clusters().send().await.expect("clusters").clusters().len(), 0, "EKS deleted");
    // The namespace stays Terminating for a moment (50 ms in this double); bounded wait.
    for obj in &objects {
        let mut gone = false;
        for _ in 0..50 {
            if held(&client, obj).await.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "{} is gone after destroy", byoc::sidecar::describe(obj));
    }
}

/// byoc's filling-in, against a real kustomize given the same values as an overlay of the
/// AWS overlay: the same objects, but for the ConfigMaps' name hashes (kustomize hashes the
/// new content, byoc keeps the names) and byoc's config digest on the pod template.
#[test]
fn filling_in_gives_what_kustomize_gives_with_the_same_values_in_an_overlay() {
    let outputs = byoc::sidecar::SidecarOutputs {
        cloud: Cloud::Aws,
        identity: "arn:aws:iam::123456789012:role/byoc-t-agent".into(),
        state_store: "s3://t-state/reconciler".into(),
        environment: "envs/t".into(),
        agent_cidrs: vec!["10.9.0.0/19".parse().expect("cidr"), "10.9.32.0/19".parse().expect("cidr")],
        proxy_cidrs: vec!["10.9.0.0/16".parse().expect("cidr"), "198.51.100.0/24".parse().expect("cidr")],
        proxy_protocol_from: Some("10.9.0.0/16".parse().expect("cidr")),
        service_annotations: Default::default(),
        public_proxy: None,
        attachments: Vec::new(),
        proxy_port: 4566,
        image: "registry.test/byoc:7".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    let config = std::fs::read_to_string(project_root().join("manifests/overlays/aws/config/reconciler.yaml"))
        .expect("read")
        .replace("environment: environments/prod", "environment: \"envs/t\"")
        .replace("stateStore: {s3: \"s3://byoc-prod-infra-state/reconciler\"}", "stateStore: {s3: \"s3://t-state/reconciler\"}");
    std::fs::write(dir.path().join("config/reconciler.yaml"), config).expect("write");
    let blocks = |cidrs: &[&str]| cidrs.iter().map(|c| format!("{{ipBlock: {{cidr: \"{c}\"}}}}")).collect::<Vec<_>>().join(", ");
    // kustomize takes no absolute paths: up from the temporary directory to `/`, then down.
    let base = "../".repeat(dir.path().components().count() - 1)
        + project_root().join("manifests/overlays/aws").display().to_string().trim_start_matches('/');
    let kustomization = format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
configMapGenerator:
  - name: byoc-config
    behavior: replace
    files:
      - config/reconciler.yaml
patches:
  - target: {{kind: ServiceAccount, name: byoc}}
    patch: |-
      - {{op: replace, path: /metadata/annotations/eks.amazonaws.com~1role-arn, value: "arn:aws:iam::123456789012:role/byoc-t-agent"}}
  - target: {{kind: NetworkPolicy, name: byoc-agent}}
    patch: |-
      - {{op: replace, path: /spec/ingress/0/from, value: [{agent}]}}
  - target: {{kind: NetworkPolicy, name: rwproxy}}
    patch: |-
      - {{op: replace, path: /spec/ingress/0/from, value: [{proxy}]}}
  - target: {{kind: Deployment, name: byoc}}
    patch: |-
      - {{op: replace, path: /spec/template/spec/containers/0/image, value: "registry.test/byoc:7"}}
      - {{op: replace, path: /spec/template/spec/containers/1/image, value: "registry.test/byoc:7"}}
      - {{op: replace, path: /spec/template/spec/containers/1/args/6, value: "--proxy-protocol-from=10.9.0.0/16"}}
"#,
        base = base,
        agent = blocks(&["10.9.0.0/19", "10.9.32.0/19"]),
        proxy = blocks(&["10.9.0.0/16", "198.51.100.0/24"]),
    );
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).expect("write");

    // ConfigMap names lose their hash suffix, everywhere they appear.
    let unhashed = |mut objects: Vec<Value>| -> Vec<Value> {
        let strip = |v: &mut Value| {
            if let Some(n) = v.as_str().and_then(|n| n.rsplit_once('-')).filter(|(p, _)| p.starts_with("byoc-")).map(|(p, _)| p.to_owned())
            {
                *v = Value::String(n);
            }
        };
        for o in &mut objects {
            if o["kind"] == "ConfigMap" {
                strip(&mut o["metadata"]["name"]);
            }
            if o["kind"] == "Deployment" {
                for v in o["spec"]["template"]["spec"]["volumes"].as_array_mut().expect("volumes") {
                    if v.get("configMap").is_some() {
                        strip(&mut v["configMap"]["name"]);
                    }
                }
                if let Some(a) = o.pointer_mut("/spec/template/metadata/annotations").and_then(Value::as_object_mut) {
                    a.remove(byoc::sidecar::CONFIG_DIGEST_ANNOTATION);
                    if a.is_empty() {
                        o["spec"]["template"]["metadata"].as_object_mut().expect("metadata").remove("annotations");
                    }
                }
            }
        }
        objects.sort_by_key(byoc::sidecar::describe);
        objects
    };
    let by_kustomize = unhashed(kustomize(dir.path()));
    let by_byoc = unhashed(byoc::sidecar::render(&outputs).expect("render"));
    assert_eq!(by_byoc.len(), by_kustomize.len());
    for (b, k) in by_byoc.iter().zip(&by_kustomize) {
        assert_eq!(b, k, "{} differs between byoc and kustomize", byoc::sidecar::describe(b));
    }
}

/// With --cloud-only apply, and without a named cluster destroy, say they skip the sidecar and go on; with a
/// cluster that cannot be reached, destroy stops before deleting anything in the cloud.
#[test]
fn cloud_only_or_no_cluster_skips_the_sidecar_and_an_unreachable_one_stops_destroy_before_the_cloud() {
    // moto has no EKS add-ons (the EBS CSI driver): the front answers them.
    let account = crate::aws::Account::new();
    let moto = account.endpoint().to_owned();
    let repo = example_repo();
    let run = |verb: &str, extra: &[&str]| {
        let mut args = vec![verb, "--repo", ".", "--env", "examples/aws", "--endpoint-url", &moto, "--state-dir", "state"];
        args.extend_from_slice(&["--poll-interval", "0.1", "--auto-approve", "--skip-preflight"]);
        args.extend_from_slice(extra);
        byoc_env(repo.path(), &args, &MOTO_ENV)
    };
    let applied = run("apply", &["--cloud-only"]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    assert!(
        applied.stdout.contains("sidecar: not installed: no Kubernetes cluster (--cloud-only, or none configured)"),
        "{}",
        applied.stdout
    );
    assert!(applied.stdout.contains("lb-controller: not installed: no Kubernetes cluster"), "{}", applied.stdout);

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let kube_dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube_dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube_double::kubeconfig(&format!("http://127.0.0.1:{port}"))).expect("kubeconfig");
    let refused = run("destroy", &["--kubeconfig", &kubeconfig.display().to_string()]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    // The cluster is asked first (for the sidecar's namespace), before anything is deleted.
    assert!(refused.stderr.contains("reading Namespace byoc-system"), "names the object: {}", refused.stderr);
    assert!(refused.stderr.contains("nothing was deleted in the cloud"), "{}", refused.stderr);
    assert!(!refused.stdout.lines().any(|l| l.starts_with("done ")), "no cloud action ran: {}", refused.stdout);

    let destroyed = run("destroy", &[]);
    assert_eq!(destroyed.code, 0, "the lease was given back: {}\n{}", destroyed.stdout, destroyed.stderr);
    assert!(destroyed.stdout.contains("sidecar: not removed: no --kubeconfig or --context"), "{}", destroyed.stdout);
    assert!(destroyed.stdout.lines().any(|l| l.starts_with("done ") && l.contains("aws.eks-cluster/")), "{}", destroyed.stdout);
}
