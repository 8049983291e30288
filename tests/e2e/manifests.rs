//! `manifests/` and the `Dockerfile`, checked as rendered: each overlay built by a real
//! kustomize (`kubectl kustomize`), the pod's hardening, the cloud's workload identity and
//! internal load balancer annotations, NetworkPolicy ports against the Service ports, the
//! rendered `Reconciler` config judged by `byoc run --check`, the containers' arguments
//! judged by the real binaries, and the image definition read statically (no container
//! builder runs on these machines).
//!
//! The RBAC rules are checked against the calls the daemon really makes in
//! `verify/rbac.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{TestCa, project_root};

/// The path of a tool, installed by `tests/tools/install.sh` when missing.
fn tool(name: &str) -> PathBuf {
    let out = Command::new("bash").arg(project_root().join("tests/tools/install.sh")).arg(name).output().expect("bash runs");
    assert!(out.status.success(), "tests/tools/install.sh {name}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `kubectl kustomize DIR` (kubectl's built-in kustomize v5).
pub fn kustomize(dir: &Path) -> Vec<Value> {
    static KUBECTL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let kubectl = KUBECTL.get_or_init(|| tool("kubectl"));
    let out = Command::new(kubectl).arg("kustomize").arg(dir).output().expect("kubectl runs");
    assert!(out.status.success(), "kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("the rendered YAML of {} parses: {e}", dir.display()))
}

/// The one object of `kind` named `name`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn kinds<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| o["kind"] == kind)
}

const OVERLAYS: [&str; 3] = ["aws", "gcp", "azure"];

fn overlay(cloud: &str) -> PathBuf {
    project_root().join("manifests/overlays").join(cloud)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[test]
fn every_overlay_builds_and_runs_a_hardened_two_container_pod() {
    for cloud in OVERLAYS {
        let objects = kustomize(&overlay(cloud));
        assert!(kinds(&objects, "Secret").next().is_none(), "{cloud}: Secrets are referenced, never committed");
        let deployment = object(&objects, "Deployment", "byoc");
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(deployment["spec"]["replicas"], 2, "{cloud}");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{cloud}");
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{cloud}");
        assert_eq!(spec["serviceAccountName"], "byoc");
        let containers = spec["containers"].as_array().expect("containers");
        let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["byoc", "rwproxy"], "{cloud}");
        let publish: Vec<&Value> = spec["volumes"].as_array().expect("volumes").iter().filter(|v| v["name"] == "publish").collect();
        assert!(publish.len() == 1 && publish[0]["emptyDir"].is_object(), "{cloud}: the publish directory is an emptyDir");
        for c in containers {
            let name = c["name"].as_str().unwrap_or("?");
            let sc = &c["securityContext"];
            assert_eq!(
                (&sc["readOnlyRootFilesystem"], &sc["runAsNonRoot"], &sc["allowPrivilegeEscalation"], &sc["seccompProfile"]["type"]),
                (&Value::Bool(true), &Value::Bool(true), &Value::Bool(false), &Value::from("RuntimeDefault")),
                "{cloud}/{name}: {sc:#}"
            );
            assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{cloud}/{name}");
            assert!(sc["capabilities"]["add"].is_null(), "{cloud}/{name}");
            for kind in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(c["resources"][kind][r].is_string(), "{cloud}/{name}: resources.{kind}.{r}");
                }
            }
            let mounts = c["volumeMounts"].as_array().expect("mounts");
            assert!(mounts.iter().any(|m| m["name"] == "publish" && m["mountPath"] == "/publish"), "{cloud}/{name} mounts /publish");
        }
        let byoc = &containers[0];
        assert_eq!(byoc["livenessProbe"]["httpGet"]["path"], "/healthz", "{cloud}");
        assert_eq!(byoc["readinessProbe"]["httpGet"]["path"], "/readyz", "{cloud}");
        let pdb = object(&objects, "PodDisruptionBudget", "byoc");
        assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"], "{cloud}");
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{cloud}");
    }
}

#[test]
fn each_overlay_sets_its_clouds_workload_identity_and_internal_load_balancers() {
    // (overlay, ServiceAccount annotations, the Services' annotations)
    type Expected<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let expect: [Expected; 3] = [
        (
            "aws",
            &["eks.amazonaws.com/role-arn"],
            &[
                ("service.beta.kubernetes.io/aws-load-balancer-scheme", "internal"),
                ("service.beta.kubernetes.io/aws-load-balancer-nlb-target-type", "ip"),
            ],
        ),
        ("gcp", &["iam.gke.io/gcp-service-account"], &[("networking.gke.io/load-balancer-type", "Internal")]),
        (
            "azure",
            &["azure.workload.identity/client-id"],
            &[("service.beta.kubernetes.io/azure-load-balancer-internal", "true"), ("service.beta.kubernetes.io/azure-pls-create", "true")],
        ),
    ];
    for (cloud, identity, lb) in expect {
        let objects = kustomize(&overlay(cloud));
        let sa = object(&objects, "ServiceAccount", "byoc");
        for key in identity {
            assert!(
                sa["metadata"]["annotations"][key].as_str().is_some_and(|v| !v.is_empty()),
                "{cloud}: {key} on the ServiceAccount: {sa:#}"
            );
        }
        for service in ["byoc-agent", "rwproxy"] {
            let svc = object(&objects, "Service", service);
            assert_eq!(svc["spec"]["type"], "LoadBalancer", "{cloud}/{service}");
            for (key, value) in lb {
                assert_eq!(svc["metadata"]["annotations"][key], *value, "{cloud}/{service}: {key}");
            }
        }
        let pod_labels = &object(&objects, "Deployment", "byoc")["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["azure.workload.identity/use"].as_str() == Some("true"), cloud == "azure", "{cloud}: {pod_labels}");
    }
    // AWS: the SQL NLB speaks PROXY protocol v2, and RWProxy accepts it from the VPC.
    let aws = kustomize(&overlay("aws"));
    assert_eq!(
        object(&aws, "Service", "rwproxy")["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"],
        "*"
    );
    let args = strs(&object(&aws, "Deployment", "byoc")["spec"]["template"]["spec"]["containers"][1]["args"]).join(" ");
    assert!(args.contains("--proxy-protocol-from="), "{args}");
}

#[test]
fn network_policy_ports_are_exactly_the_service_ports() {
    for cloud in OVERLAYS {
        let objects = kustomize(&overlay(cloud));
        let deployment = object(&objects, "Deployment", "byoc");
        // Container port names to numbers, to resolve the Services' named target ports.
        let mut named = std::collections::BTreeMap::new();
        for c in deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers") {
            for p in c["ports"].as_array().into_iter().flatten() {
                named.insert(p["name"].as_str().unwrap_or("").to_owned(), p["containerPort"].as_u64().expect("port"));
            }
        }
        let resolve = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|n| named.get(n).copied()));
        let mut service_ports: Vec<u64> = kinds(&objects, "Service")
            .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| resolve(&p["targetPort"]).unwrap_or_else(|| panic!("{cloud}: target port {p} resolves")))
            .collect();
        service_ports.sort_unstable();
        service_ports.dedup();
        // Ports opened to ipBlocks (load balancer traffic) are the Services' ports; the
        // monitoring policy (namespaceSelector) opens the status and admin ports only.
        let mut open: Vec<u64> = Vec::new();
        for np in kinds(&objects, "NetworkPolicy") {
            for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
                let from_ip_blocks = rule["from"].as_array().is_some_and(|f| f.iter().all(|p| p["ipBlock"].is_object()));
                let ports: Vec<u64> = rule["ports"].as_array().into_iter().flatten().filter_map(|p| resolve(&p["port"])).collect();
                if from_ip_blocks {
                    open.extend(ports);
                } else {
                    assert!(ports.iter().all(|p| [8080, 9090].contains(p)), "{cloud}: {} opens {ports:?} to pods", np["metadata"]["name"]);
                }
            }
        }
        open.sort_unstable();
        open.dedup();
        assert_eq!(open, service_ports, "{cloud}: NetworkPolicy ports vs Service target ports");
        let default_deny = object(&objects, "NetworkPolicy", "byoc-default-deny");
        assert!(default_deny["spec"]["ingress"].is_null() && strs(&default_deny["spec"]["policyTypes"]) == ["Ingress"], "{cloud}");
    }
}

/// The rendered config, with the pod's mount points moved under `root`, where the test puts
/// what the volumes would hold: the signing policy from its ConfigMap, TLS files from a
/// test CA, a webhook secret.
pub(crate) fn config_in(objects: &[Value], root: &Path) -> PathBuf {
    let configmap = |prefix: &str| {
        kinds(objects, "ConfigMap")
            .find(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no ConfigMap {prefix}*"))
    };
    let etc = root.join("etc/byoc");
    for dir in ["config", "policy", "agent-tls", "webhook"] {
        std::fs::create_dir_all(etc.join(dir)).expect("mkdir");
    }
    for (name, text) in configmap("byoc-signing-policy-")["data"].as_object().expect("data") {
        std::fs::write(etc.join("policy").join(name), text.as_str().expect("text")).expect("write");
    }
    let ca = TestCa::new(&root.join("ca"), "/CN=test-ca");
    let (cert, key) = ca.issue("agent", "/CN=agent", "subjectAltName=DNS:agent.test\n", 2);
    std::fs::copy(cert, etc.join("agent-tls/tls.crt")).expect("copy");
    std::fs::copy(key, etc.join("agent-tls/tls.key")).expect("copy");
    std::fs::copy(ca.dir.join("ca.pem"), etc.join("agent-tls/ca.crt")).expect("copy");
    std::fs::write(etc.join("webhook/secret"), "s3cret\n").expect("write");
    let text = configmap("byoc-config-")["data"]["reconciler.yaml"].as_str().expect("reconciler.yaml").to_owned();
    let root_text = root.display().to_string();
    let moved = text.replace("/etc/byoc/", &format!("{root_text}/etc/byoc/")).replace("/var/", &format!("{root_text}/var/"));
    let path = etc.join("config/reconciler.yaml");
    std::fs::write(&path, moved).expect("write");
    path
}

#[test]
fn the_rendered_config_and_container_arguments_are_accepted_by_the_binaries() {
    for cloud in OVERLAYS {
        let objects = kustomize(&overlay(cloud));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(&objects, dir.path());
        let containers = object(&objects, "Deployment", "byoc")["spec"]["template"]["spec"]["containers"].as_array().expect("c").clone();

        // byoc: the container's command line, with --check, against the rendered config.
        let byoc = &containers[0];
        assert_eq!(strs(&byoc["command"]), ["/usr/local/bin/byoc"], "{cloud}");
        let args: Vec<String> =
            strs(&byoc["args"]).iter().map(|a| a.replace("/etc/byoc/config/reconciler.yaml", &config.display().to_string())).collect();
        assert!(args.iter().any(|a| *a == config.display().to_string()), "{cloud}: the args name the mounted config: {args:?}");
        let out = Command::new(env!("CARGO_BIN_EXE_byoc")).args(&args).arg("--check").output().expect("byoc runs");
        assert!(
            out.status.success(),
            "{cloud}: byoc {args:?} --check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The config mounts where the Deployment mounts it, and the ports agree.
        let text = std::fs::read_to_string(&config).expect("read");
        let ports: Vec<u64> = byoc["ports"].as_array().expect("ports").iter().filter_map(|p| p["containerPort"].as_u64()).collect();
        assert!(
            text.contains("listen: \"0.0.0.0:8080\"") && text.contains("listen: \"0.0.0.0:8443\"") && ports == [8080, 8443],
            "{cloud}: {ports:?}\n{text}"
        );

        // rwproxy: its arguments with --check, the routes from an example environment.
        let proxy = &containers[1];
        assert_eq!(strs(&proxy["command"]), ["/usr/local/bin/rwproxy"], "{cloud}");
        let routes = project_root().join("examples").join(cloud);
        let args: Vec<String> = strs(&proxy["args"]).iter().map(|a| a.replace("/publish/current", &routes.display().to_string())).collect();
        let out = Command::new(super::bad_specs::rwproxy_binary()).args(&args).arg("--check").output().expect("rwproxy runs");
        assert!(out.status.success(), "{cloud}: rwproxy {args:?} --check: {}", String::from_utf8_lossy(&out.stderr));
        let listen = args.iter().find_map(|a| a.strip_prefix("--listen=")).expect("--listen");
        let admin = args.iter().find_map(|a| a.strip_prefix("--admin=")).expect("--admin");
        let ports: Vec<u64> = proxy["ports"].as_array().expect("ports").iter().filter_map(|p| p["containerPort"].as_u64()).collect();
        assert_eq!((listen, admin, ports), ("0.0.0.0:4566", "0.0.0.0:9090", vec![4566, 9090]), "{cloud}");
    }
}

#[test]
fn the_public_proxy_component_adds_one_restricted_load_balancer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = project_root().join("manifests");
    // kustomize refuses paths outside the kustomization root by default; symlink instead.
    std::os::unix::fs::symlink(&root, dir.path().join("m")).expect("symlink");
    std::fs::write(dir.path().join("kustomization.yaml"), "resources: [m/overlays/aws]\ncomponents: [m/components/public-proxy]\n")
        .expect("write");
    let objects = kustomize(dir.path());
    let public = object(&objects, "Service", "rwproxy-public");
    assert_eq!(public["spec"]["type"], "LoadBalancer");
    assert!(!strs(&public["spec"]["loadBalancerSourceRanges"]).is_empty(), "the public proxy is limited to source ranges");
    assert!(kustomize(&overlay("aws")).iter().all(|o| o["metadata"]["name"] != "rwproxy-public"), "optional: not in the overlay alone");
}

#[test]
fn the_image_builds_both_binaries_onto_a_non_root_distroless_base() {
    let text = std::fs::read_to_string(project_root().join("Dockerfile")).expect("Dockerfile at the repository root");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let froms: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a multi-stage build: {froms:?}");
    assert!(froms[0].ends_with(" AS build") && froms[0].starts_with("rust:"), "{froms:?}");
    let base = froms[1];
    assert!(base.starts_with("gcr.io/distroless/cc-debian12") && base.ends_with(":nonroot"), "{base}");
    // Every stage after the last FROM: a numeric, non-root USER.
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("FROM");
    let user = lines[last_from..].iter().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("USER in the final stage");
    let uid: u32 = user.split(':').next().and_then(|u| u.parse().ok()).expect("numeric uid (runAsNonRoot can check it)");
    assert_ne!(uid, 0);

    // The binaries copied are Cargo's bin targets, built by name, and what the pod runs.
    let bin_name = |manifest: &str| -> String {
        let toml = std::fs::read_to_string(project_root().join(manifest)).expect("Cargo.toml");
        let after = toml.split("[[bin]]").nth(1).expect("[[bin]]");
        after.lines().find_map(|l| l.trim().strip_prefix("name = ")).map(|n| n.trim_matches('"').to_owned()).expect("bin name")
    };
    let objects = kustomize(&overlay("aws"));
    let containers = object(&objects, "Deployment", "byoc")["spec"]["template"]["spec"]["containers"].clone();
    for (manifest, package, index) in [("reconciler/Cargo.toml", "byoc-reconciler", 0), ("proxy/Cargo.toml", "rwproxy", 1)] {
        let bin = bin_name(manifest);
        assert!(text.contains(&format!("cargo build --release --locked -p {package} --bin {bin}")), "{bin} is built");
        let copied = format!("COPY --from=build /out/{bin} /usr/local/bin/{bin}");
        assert!(lines[last_from..].contains(&copied.as_str()), "{copied}");
        assert_eq!(strs(&containers[index]["command"]), [format!("/usr/local/bin/{bin}").as_str()]);
    }
    // hadolint (installed by the tool script) has nothing to say.
    let lint = Command::new(tool("hadolint")).arg("--no-color").arg(project_root().join("Dockerfile")).output().expect("hadolint runs");
    assert!(lint.status.success(), "hadolint: {}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    let uid_in_pod = object(&objects, "Deployment", "byoc")["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64();
    assert_eq!(uid_in_pod, Some(u64::from(uid)), "the pod runs as the image's user");
}

/// Each rendered object read into the Kubernetes API's own types (k8s-openapi, the API
/// version the reconciler is built for) and written back: a field of the wrong type fails to
/// read, and a field the API does not have (a typo, a field of another version) is lost on
/// the way, so the two differ. This stands in for kubeconform, which needs schemas fetched
/// from the network.
#[test]
fn every_rendered_object_is_valid_for_the_kubernetes_api_version_in_use() {
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(o: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(o.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    let mut seen = std::collections::BTreeSet::new();
    for cloud in OVERLAYS {
        for o in kustomize(&overlay(cloud)) {
            let kind = o["kind"].as_str().unwrap_or("").to_owned();
            let back = match kind.as_str() {
                "Namespace" => round_trip::<core::v1::Namespace>(&o),
                "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(&o),
                "ConfigMap" => round_trip::<core::v1::ConfigMap>(&o),
                "Service" => round_trip::<core::v1::Service>(&o),
                "Deployment" => round_trip::<apps::v1::Deployment>(&o),
                "PodDisruptionBudget" => round_trip::<policy::v1::PodDisruptionBudget>(&o),
                "NetworkPolicy" => round_trip::<networking::v1::NetworkPolicy>(&o),
                "ClusterRole" => round_trip::<rbac::v1::ClusterRole>(&o),
                "ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(&o),
                "Role" => round_trip::<rbac::v1::Role>(&o),
                "RoleBinding" => round_trip::<rbac::v1::RoleBinding>(&o),
                other => panic!("{cloud}: no check for kind {other}"),
            };
            let name = o["metadata"]["name"].as_str().unwrap_or("?");
            let back = back.unwrap_or_else(|e| panic!("{cloud}: {kind} {name} does not read as the API's type: {e}"));
            assert_eq!(back, o, "{cloud}: {kind} {name} has fields the API does not know (left: as the API reads it)");
            seen.insert(kind);
        }
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
}
