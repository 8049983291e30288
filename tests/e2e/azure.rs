//! The Azure provider end to end: the real `byoc` binary against `arm_double::Double`, a
//! state-keeping fake of ARM and of the Entra token endpoint served over TLS with a test CA
//! that byoc is told to trust with `--endpoint-ca`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use arm_double::{Double, Options};
use serde_json::{Value, json};

use crate::support::{Repo, Run, byoc_env};

/// The example's subscription, region and resource group (adopted: it must exist).
const SUBSCRIPTION: &str = "0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
const LOCATION: &str = "eastus2";
const RESOURCE_GROUP: &str = "rg-risingwave-prod";

struct Azure {
    double: Double,
    repo: Repo,
    tenant: String,
}

fn options() -> Options {
    Options { subscription: SUBSCRIPTION.into(), location: LOCATION.into(), provisioning_polls: 1, ..Options::default() }
}

impl Azure {
    fn new(opts: Options) -> Azure {
        let tenant = opts.tenant.clone();
        let double = Double::spawn(opts).expect("arm double starts");
        let mut repo = Repo::new();
        repo.copy_from_project("examples/azure", "examples/azure");
        repo.commit("azure example");
        repo.write("ca.pem", &double.ca_pem());
        let a = Azure { double, repo, tenant };
        a.make_resource_group();
        a
    }

    /// The adopted resource group, made as its administrator would before the first apply.
    fn make_resource_group(&self) {
        let path = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}");
        self.arm_put(&path, "2021-04-01", &json!({"location": LOCATION}));
    }

    /// A PUT through byoc's own ARM client (another actor, in the tests).
    fn arm_put(&self, path: &str, api: &str, body: &Value) -> Value {
        let endpoint = byoc::cloud::azure::Endpoint { url: Some(self.double.url()), extra_ca_pem: Some(self.double.ca_pem()) };
        let credential = byoc::cloud::azure::Credential::ClientSecret {
            tenant: self.tenant.clone(),
            client_id: self.double.client_id().to_owned(),
            secret: self.double.client_secret().to_owned(),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut arm = byoc::cloud::azure::Arm::new(&endpoint, &credential).expect("client");
            arm.poll = std::time::Duration::from_millis(100);
            arm.put("test PUT", path, api, body).await.unwrap_or_else(|e| panic!("{e}"))
        })
    }

    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("AZURE_TENANT_ID", self.tenant.clone()),
            ("AZURE_CLIENT_ID", self.double.client_id().to_owned()),
            ("AZURE_CLIENT_SECRET", self.double.client_secret().to_owned()),
        ]
    }

    fn args<'a>(&'a self, command: &'a str, url: &'a str) -> Vec<&'a str> {
        vec![
            command,
            "--repo",
            ".",
            "--env",
            "examples/azure",
            "--endpoint-url",
            url,
            "--endpoint-ca",
            "ca.pem",
            "--state-dir",
            "state",
            "--poll-interval",
            "0.1",
            "--auto-approve",
        ]
    }

    fn run(&self, command: &str, extra: &[&str]) -> Run {
        let url = self.double.url();
        let mut args = self.args(command, &url);
        if command == "apply" {
            args.push("--cloud-only");
        }
        args.extend_from_slice(extra);
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        byoc_env(self.repo.path(), &args, &env)
    }

    fn apply(&self) -> Run {
        self.run("apply", &[])
    }

    /// Resources in the fake by ARM type (lower-case), e.g. `microsoft.network/virtualnetworks`.
    fn of_type(&self, t: &str) -> Vec<(String, Value)> {
        let snap = self.double.snapshot();
        let mut out: Vec<(String, Value)> =
            snap.as_object().expect("snapshot").iter().filter(|(id, _)| arm_type(id) == t).map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The type of an ARM id: the provider namespace and each type segment.
fn arm_type(id: &str) -> String {
    let Some((_, rest)) = id.rsplit_once("/providers/") else { return "resourcegroup".into() };
    let segs: Vec<&str> = rest.split('/').collect();
    let mut t = segs[0].to_owned();
    for s in segs[1..].iter().step_by(2) {
        t.push('/');
        t.push_str(s);
    }
    t
}

fn ok(r: &Run) -> &Run {
    assert_eq!(r.code, 0, "byoc failed\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

fn summary(r: &Run) -> &str {
    r.stdout.lines().find(|l| l.contains(" to create, ")).unwrap_or_else(|| panic!("no plan summary in:\n{}", r.stdout))
}

fn mutating(writes: &[String]) -> Vec<&String> {
    writes.iter().filter(|w| !w.contains("/oauth2/")).collect()
}

#[test]
fn azure_apply_creates_every_resource_once_and_a_second_apply_writes_nothing() {
    let a = Azure::new(options());
    let started = Instant::now();
    let first = a.apply();
    let first_time = started.elapsed();
    ok(&first);
    let count = |t: &str| a.of_type(t).len();
    assert_eq!(count("microsoft.network/virtualnetworks"), 1);
    // nodes, edge, the API server's delegated subnet, the Private Link subnet.
    assert_eq!(count("microsoft.network/virtualnetworks/subnets"), 4, "{:?}", a.of_type("microsoft.network/virtualnetworks/subnets"));
    assert_eq!(count("microsoft.network/networksecuritygroups"), 1);
    assert_eq!(count("microsoft.network/natgateways"), 1);
    assert_eq!(count("microsoft.network/publicipaddresses"), 1);
    assert_eq!(count("microsoft.network/privateendpoints"), 2);
    assert_eq!(count("microsoft.containerservice/managedclusters"), 1);
    assert_eq!(count("microsoft.containerservice/managedclusters/agentpools"), 2);
    assert_eq!(count("microsoft.storage/storageaccounts"), 2);
    assert_eq!(count("microsoft.storage/storageaccounts/blobservices/containers"), 2);
    // The control plane, the agent, one per RisingWave cluster.
    assert_eq!(count("microsoft.managedidentity/userassignedidentities"), 4);
    assert_eq!(count("microsoft.managedidentity/userassignedidentities/federatedidentitycredentials"), 3);
    // No load balancer or Private Link service is made through ARM: AKS makes them.
    assert_eq!(count("microsoft.network/loadbalancers") + count("microsoft.network/privatelinkservices"), 0);
    let lb_writes: Vec<String> = a
        .double
        .writes()
        .into_iter()
        .filter(|w| w.to_ascii_lowercase().contains("/loadbalancers/") || w.to_ascii_lowercase().contains("/privatelinkservices/"))
        .collect();
    assert!(lb_writes.is_empty(), "{lb_writes:?}");
    assert!(
        first.stdout.contains("done ") && first.stdout.contains("azure.private-link-service/agent create service:byoc-system/"),
        "{}",
        first.stdout
    );

    // The cluster: OIDC issuer, workload identity, API-server VNet integration, NAT egress.
    let (_, aks) = a.of_type("microsoft.containerservice/managedclusters").remove(0);
    let p = &aks["properties"];
    assert_eq!(p["oidcIssuerProfile"]["enabled"], json!(true));
    assert_eq!(p["securityProfile"]["workloadIdentity"]["enabled"], json!(true));
    assert_eq!(p["apiServerAccessProfile"]["enableVnetIntegration"], json!(true));
    assert!(p["apiServerAccessProfile"]["subnetId"].as_str().is_some_and(|s| s.ends_with("/subnets/aks-apiserver")), "{p}");
    assert_eq!(p["networkProfile"]["outboundType"], json!("userAssignedNATGateway"));
    let issuer = p["oidcIssuerProfile"]["issuerURL"].as_str().expect("issuer").to_owned();

    // Storage accounts locked down.
    for (_, acct) in a.of_type("microsoft.storage/storageaccounts") {
        let p = &acct["properties"];
        assert_eq!((&p["allowSharedKeyAccess"], &p["allowBlobPublicAccess"]), (&json!(false), &json!(false)), "{acct}");
        assert_eq!(p["minimumTlsVersion"], json!("TLS1_2"));
        assert_eq!(p["publicNetworkAccess"], json!("Disabled"));
    }

    // Federated credentials name the issuer and each service account.
    let mut subjects: Vec<String> = a
        .of_type("microsoft.managedidentity/userassignedidentities/federatedidentitycredentials")
        .iter()
        .map(|(_, fc)| {
            assert_eq!(fc["properties"]["issuer"].as_str(), Some(issuer.as_str()));
            fc["properties"]["subject"].as_str().expect("subject").to_owned()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            format!("system:serviceaccount:{}:{}", byoc::expand::AGENT_NAMESPACE, byoc::expand::AGENT_SERVICE_ACCOUNT),
            "system:serviceaccount:rw-analytics:rw-analytics".to_owned(),
            "system:serviceaccount:rw-ingest:rw-ingest".to_owned(),
        ]
    );

    // Role assignments: the roles of policies/azure/*.json, at the narrowest scope.
    let roles: std::collections::BTreeMap<String, String> =
        arm_double::ROLE_DEFINITIONS.iter().map(|(id, name)| ((*id).to_owned(), (*name).to_owned())).collect();
    let policy = |f: &str| -> Vec<String> {
        let text = std::fs::read_to_string(crate::support::project_root().join("policies/azure").join(f)).expect("policy");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["permissions"].as_array().expect("permissions").iter().map(|p| p.as_str().expect("str").to_owned()).collect()
    };
    let mut by_scope: Vec<(String, String)> = a
        .of_type("microsoft.authorization/roleassignments")
        .iter()
        .map(|(_, ra)| {
            let p = &ra["properties"];
            let guid = p["roleDefinitionId"].as_str().expect("role").rsplit('/').next().expect("guid").to_owned();
            let scope = p["scope"].as_str().expect("scope").to_ascii_lowercase();
            let short = scope.rsplit_once("/providers/").map_or(scope.clone(), |(_, s)| s.to_owned());
            (short, roles.get(&guid).cloned().unwrap_or(guid))
        })
        .collect();
    by_scope.sort();
    let mut want: Vec<(String, String)> = Vec::new();
    for subnet in ["aks-apiserver", "nodes", "private-link"] {
        want.push((format!("microsoft.network/virtualnetworks/byoc-prod-eus2/subnets/{subnet}"), "Network Contributor".into()));
    }
    // The agent's roles on the group, but its state store's on the state container only.
    for role in policy("agent.json") {
        if role == "Storage Blob Data Contributor" {
            want.push(("microsoft.storage/storageaccounts/_/blobservices/default/containers/byoc-state".into(), role));
        } else {
            want.push((format!("/subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}"), role));
        }
    }
    for role in policy("cluster.json").iter().chain(policy("cluster.json").iter()) {
        want.push(("microsoft.storage/storageaccounts/_/blobservices/default/containers/risingwave-data".into(), role.clone()));
    }
    let normalize = |s: &str| {
        // The data account's generated name is not written out above.
        let mut parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 3 && parts[0] == "microsoft.storage" {
            parts[2] = "_";
        }
        parts.join("/")
    };
    let mut got: Vec<(String, String)> = by_scope.iter().map(|(s, r)| (normalize(s), r.clone())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "one assignment per policy role, at the narrowest scope");
    // The agent may assign (and remove) only the clusters' data role.
    let rbac_admin = a
        .of_type("microsoft.authorization/roleassignments")
        .into_iter()
        .map(|(_, ra)| ra)
        .find(|ra| ra["properties"]["roleDefinitionId"].as_str().is_some_and(|r| r.ends_with("f58310d9-a9f6-439a-9e8d-f62e7b41a168")))
        .expect("the agent's Role Based Access Control Administrator");
    let condition = rbac_admin["properties"]["condition"].as_str().expect("a condition");
    assert_eq!(rbac_admin["properties"]["conditionVersion"], json!("2.0"));
    assert_eq!(condition.matches("GuidEquals {ba92f5b4-2d11-453d-a403-e96b0029c9fe}").count(), 2, "write and delete: {condition}");

    // The identities' client ids are what `byoc clusters` annotates service accounts with.
    let outputs: Value = serde_json::from_str(&a.repo.read("state/cloud-outputs.json")).expect("cloud outputs");
    let analytics = a
        .of_type("microsoft.managedidentity/userassignedidentities")
        .into_iter()
        .find(|(id, _)| id.ends_with("/byoc-prod-eus2-rw-analytics"))
        .expect("identity");
    let client_id = analytics.1["properties"]["clientId"].as_str().expect("client id");
    assert_eq!(outputs["azure.managed-identity/rw-analytics"].as_str(), Some(client_id), "{outputs}");

    // A second apply plans nothing and writes nothing.
    let writes = a.double.writes();
    let started = Instant::now();
    let second = a.apply();
    let noop_time = started.elapsed();
    ok(&second);
    assert!(summary(&second).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", second.stdout);
    assert_eq!(mutating(&a.double.writes()), mutating(&writes), "a no-op apply writes nothing");
    println!("azure apply of examples/azure: {:.1}s; no-op apply: {:.1}s", first_time.as_secs_f64(), noop_time.as_secs_f64());
}

#[test]
fn azure_a_pool_resize_is_one_update_and_destroy_keeps_data_and_retained_identities() {
    let mut a = Azure::new(options());
    ok(&a.apply());
    a.repo.edit("examples/azure/environment.yaml", "max: 9", "max: 12");
    a.repo.commit("more risingwave nodes");
    let before = a.double.writes().len();
    let resized = a.apply();
    ok(&resized);
    let new: Vec<String> = mutating(&a.double.writes()[before..]).into_iter().cloned().collect();
    assert_eq!(new.len(), 1, "one write: {new:?}");
    assert!(new[0].starts_with("PUT ") && new[0].to_ascii_lowercase().contains("/agentpools/risingwave"), "{new:?}");
    let pool = a
        .of_type("microsoft.containerservice/managedclusters/agentpools")
        .into_iter()
        .find(|(id, _)| id.ends_with("/risingwave"))
        .expect("pool");
    assert_eq!(pool.1["properties"]["maxCount"], json!(12));

    ok(&a.run("destroy", &[]));
    assert_eq!(a.of_type("microsoft.storage/storageaccounts").len(), 2, "storage accounts stay without --delete-data");
    let names: Vec<String> = a
        .of_type("microsoft.managedidentity/userassignedidentities")
        .iter()
        .map(|(_, v)| v["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, vec!["byoc-prod-eus2-rw-analytics".to_owned()], "only the retained cluster's identity stays");
    assert_eq!(a.of_type("microsoft.containerservice/managedclusters").len(), 0);
    assert_eq!(a.of_type("microsoft.network/virtualnetworks").len(), 0);
}

#[test]
fn azure_throttling_is_retried_after_retry_after_and_an_existing_role_assignment_is_done() {
    let a = Azure::new(Options { throttle_rate: 0.1, seed: 7, ..options() });
    let r = a.apply();
    ok(&r);
    assert!(a.double.throttled() > 0, "the fake throttled some calls");
    let retries: u64 = r
        .stdout
        .lines()
        .find(|l| l.starts_with("applied "))
        .and_then(|l| l.split("; ").nth(1))
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("retries printed");
    assert!(retries >= a.double.throttled(), "each throttled call retried: {retries} < {}\n{}", a.double.throttled(), r.stdout);
    assert!(r.stderr.contains("retry: ") && r.stderr.contains("(attempt 2 in 1000 ms)"), "Retry-After: 1 honoured:\n{}", r.stderr);
    a.double.set_throttle_rate(0.0);

    // Someone grants the same role to the same principal at the same scope under another
    // name, after byoc's own assignment is gone: byoc's PUT answers RoleAssignmentExists.
    let (id, ra) = a
        .of_type("microsoft.authorization/roleassignments")
        .into_iter()
        .find(|(id, _)| id.contains("/subnets/nodes/"))
        .expect("the control plane's assignment on the nodes subnet");
    let scope = ra["properties"]["scope"].as_str().expect("scope").to_owned();
    delete(&a, &id);
    let other = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/6f3c1a52-1111-4222-8333-944455556666");
    a.arm_put(
        &other,
        "2022-04-01",
        &json!({"properties": {"roleDefinitionId": ra["properties"]["roleDefinitionId"], "principalId": ra["properties"]["principalId"], "principalType": "ServicePrincipal"}}),
    );
    let again = a.apply();
    ok(&again);
    assert!(again.stdout.contains("1 to create"), "{}", again.stdout);
}

fn delete(a: &Azure, id: &str) {
    let endpoint = byoc::cloud::azure::Endpoint { url: Some(a.double.url()), extra_ca_pem: Some(a.double.ca_pem()) };
    let credential = byoc::cloud::azure::Credential::ClientSecret {
        tenant: a.tenant.clone(),
        client_id: a.double.client_id().to_owned(),
        secret: a.double.client_secret().to_owned(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let arm = byoc::cloud::azure::Arm::new(&endpoint, &credential).expect("client");
        arm.delete("test DELETE", id, "2022-04-01").await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn azure_preflight_reports_every_problem_at_once_and_changes_nothing() {
    let a = Azure::new(Options {
        unregistered_providers: vec!["Microsoft.ContainerService".into(), "Microsoft.ManagedIdentity".into()],
        unregistered_features: vec!["Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview".into()],
        // Contributor alone on the group: it could create the resources but not assign roles.
        caller_roles: Some(vec![(
            format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"),
            "b24988ac-6180-42a0-ab88-20f7382dd24c".into(),
        )]),
        ..options()
    });
    let before = mutating(&a.double.writes()).len();
    let url = a.double.url();
    let args: Vec<&str> = a.args("apply", &url).into_iter().chain(["--cloud-only"]).collect();
    let env = a.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = byoc_env(a.repo.path(), &args, &env);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("preflight found 3 problem(s)"), "{}", r.stderr);
    let caller = a.double.caller_principal_id();
    assert!(
        r.stderr.contains(&format!("the caller ({caller}) holds neither Owner nor Contributor with User Access Administrator")),
        "the caller's missing role assignment, read from its token's oid:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("Microsoft.ContainerService is NotRegistered"), "{}", r.stderr);
    assert!(r.stderr.contains("Microsoft.ManagedIdentity is NotRegistered"), "{}", r.stderr);
    assert!(r.stdout.contains("EnableAPIServerVnetIntegrationPreview is not registered"), "a note, not a problem:\n{}", r.stdout);
    assert_eq!(mutating(&a.double.writes()).len(), before, "nothing changed");
}

#[test]
fn azure_drift_on_a_pool_an_nsg_rule_and_a_storage_setting_is_reported_and_set_back() {
    let a = Azure::new(options());
    ok(&a.apply());
    let find = |t: &str, end: &str| a.of_type(t).into_iter().find(|(id, _)| id.ends_with(end)).expect(end).0;
    let pool = find("microsoft.containerservice/managedclusters/agentpools", "/risingwave");
    a.double.tamper(&pool, json!({"properties": {"maxCount": 20}})).expect("tamper pool");
    let nsg = find("microsoft.network/networksecuritygroups", "-nodes");
    a.double
        .tamper(&nsg, json!({"properties": {"securityRules": [{"name": "byoc-inbound-0", "properties": {"priority": 1000, "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "8443"}}]}}))
        .expect("tamper nsg");
    let account = a.of_type("microsoft.storage/storageaccounts").remove(0).0;
    a.double.tamper(&account, json!({"properties": {"allowSharedKeyAccess": true}})).expect("tamper account");
    let r = a.apply();
    ok(&r);
    let all = format!("{}{}", r.stdout, r.stderr);
    for what in ["azure.node-pool/risingwave `maxCount`", "azure.nsg/main `inbound`", "`allowSharedKeyAccess`"] {
        assert!(all.contains(what), "drift of {what} reported:\n{all}");
    }
    let snap = a.double.snapshot();
    assert_eq!(snap[&pool]["properties"]["maxCount"], json!(9));
    assert_eq!(snap[&account]["properties"]["allowSharedKeyAccess"], json!(false));
    let rules = snap[&nsg]["properties"]["securityRules"].as_array().expect("rules").len();
    assert!(rules >= 3, "the NSG's rules are set back: {}", snap[&nsg]);
    // And then it is quiet.
    let again = a.apply();
    assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", again.stdout);
}

#[test]
fn azure_data_account_keeps_versions_and_deletes_noncurrent_ones_after_the_specs_days_and_drift_is_set_back() {
    let a = Azure::new(options());
    ok(&a.apply());
    let snap = a.double.snapshot();
    let accounts = a.of_type("microsoft.storage/storageaccounts");
    assert_eq!(accounts.len(), 2);
    let data = accounts
        .iter()
        .map(|(id, _)| id.clone())
        .find(|id| id.chars().rev().nth(8) == Some('d'))
        .expect("the data account (byoc<env>d<hash8>)");
    // expand/azure.rs NONCURRENT_VERSION_DAYS (private to the crate), as on the other clouds.
    let days = 7;
    for (account, _) in &accounts {
        let blob = &snap[&format!("{account}/blobservices/default")];
        assert_eq!(blob["properties"]["isVersioningEnabled"], json!(true), "versioning on {account}: {blob}");
        let policy = &snap[&format!("{account}/managementpolicies/default")];
        if *account == data {
            let rules = policy["properties"]["policy"]["rules"].as_array().expect("the data account's lifecycle rules");
            assert_eq!(rules.len(), 1, "{policy}");
            assert_eq!(rules[0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"], json!(days));
            assert_eq!(rules[0]["enabled"], json!(true));
        } else {
            assert!(policy.is_null(), "the state account has no lifecycle rule: {policy}");
        }
    }
    // Someone turns versioning off and keeps versions for 30 days instead.
    let blob = format!("{data}/blobservices/default");
    a.double.tamper(&blob, json!({"properties": {"isVersioningEnabled": false}})).expect("tamper versioning");
    let policy = format!("{data}/managementpolicies/default");
    let mut rules = snap[&policy]["properties"]["policy"]["rules"].clone();
    rules[0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"] = json!(30);
    a.double.tamper(&policy, json!({"properties": {"policy": {"rules": rules}}})).expect("tamper policy");
    let r = a.apply();
    ok(&r);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("`versioning`: applied true, live false"), "versioning drift reported:\n{all}");
    assert!(all.contains("`lifecycle`"), "lifecycle drift reported:\n{all}");
    let snap = a.double.snapshot();
    assert_eq!(snap[&blob]["properties"]["isVersioningEnabled"], json!(true));
    assert_eq!(
        snap[&policy]["properties"]["policy"]["rules"][0]["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"],
        json!(days)
    );
    let again = a.apply();
    assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", again.stdout);
}

/// The daemon's cloud pass on Azure (`run::identity::pass` through `azure_pass`, given the
/// fake's CA): after a bootstrap apply, a new cluster and a bigger pool arrive in one
/// revision; the pass makes only the new cluster's identity, federated credential and data
/// role, and reports the pool.
#[test]
fn azure_the_daemons_pass_converges_only_cluster_identities_and_reports_the_rest() {
    let mut a = Azure::new(options());
    ok(&a.apply());
    let text = a
        .repo
        .read("examples/azure/clusters/ingest.yaml")
        .replace("name: ingest", "name: reporting")
        .replace("prefix: ingest", "prefix: reporting");
    a.repo.write("examples/azure/clusters/reporting.yaml", &text);
    a.repo.edit("examples/azure/environment.yaml", "min: 3\n        max: 9", "min: 3\n        max: 12");
    a.repo.commit("reporting, and more nodes");
    let dir = a.repo.path().join("examples/azure");
    let files = rwproxy::specfiles::read_dir(&dir).expect("specs readable");
    let specs = byoc::spec::load::load(&dir.to_string_lossy(), &files).unwrap_or_else(|e| panic!("{e:?}"));
    let store = byoc::state::LocalDir::new(a.repo.path().join("state")).expect("state dir");
    let before = mutating(&a.double.writes()).len();
    let endpoint = byoc::cloud::azure::Endpoint { url: Some(a.double.url()), extra_ca_pem: Some(a.double.ca_pem()) };
    let credential = byoc::cloud::azure::Credential::ClientSecret {
        tenant: a.tenant.clone(),
        client_id: a.double.client_id().to_owned(),
        secret: a.double.client_secret().to_owned(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let report = rt
        .block_on(byoc::run::identity::azure_pass(
            &store,
            &specs,
            &endpoint,
            &credential,
            "main@sha1:test",
            byoc::run::identity::Pass::Converge,
        ))
        .expect("the pass runs");
    assert!(report.failed.is_none(), "{:?}", report.failed);
    assert_eq!(report.done, 3, "the identity, its federated credential and its data role");
    let writes = a.double.writes();
    let new: Vec<&String> = mutating(&writes).into_iter().skip(before).collect();
    assert_eq!(new.len(), 3, "{new:?}");
    assert!(new.iter().all(|w| w.contains("rw-reporting") || w.contains("/roleAssignments/")), "{new:?}");
    assert!(!new.iter().any(|w| w.contains("agentPools")), "the pool is the environment's: {new:?}");
    assert!(
        a.of_type("microsoft.managedidentity/userassignedidentities").iter().any(|(id, _)| id.ends_with("-rw-reporting")),
        "the new cluster's identity exists"
    );
    assert!(
        report.environment.changes.iter().any(|c| c.starts_with("~ update azure.node-pool/risingwave")),
        "{:?}",
        report.environment.changes
    );
}

/// Runs `byoc apply` and SIGKILLs it once `k` actions have printed "done".
fn apply_killed_after(a: &Azure, k: usize) -> usize {
    let url = a.double.url();
    let mut args = a.args("apply", &url);
    args.push("--cloud-only");
    let mut child = Command::new(env!("CARGO_BIN_EXE_byoc"))
        .args(&args)
        .envs(a.env())
        .current_dir(a.repo.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("byoc runs");
    let mut done = 0;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("done ") {
            done += 1;
            if done == k {
                child.kill().expect("SIGKILL");
                break;
            }
        }
    }
    let _ = child.wait();
    done
}

#[test]
fn azure_killed_after_a_step_a_rerun_completes_with_exactly_one_of_each() {
    let mut waited_out = 0;
    for k in [1, 7, 19, 33] {
        let a = Azure::new(options());
        let reached = apply_killed_after(&a, k);
        assert_eq!(reached, k, "killed after step {k}");
        let rerun = a.apply();
        ok(&rerun);
        // What the killed apply left mid-provisioning answers 409 AnotherOperationInProgress
        // to the rerun's PUT, which waits it out.
        if rerun.stderr.contains(": AnotherOperationInProgress (attempt ") {
            waited_out += 1;
        }
        let again = a.apply();
        assert!(summary(ok(&again)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "k={k}: {}", again.stdout);
        assert_eq!(a.of_type("microsoft.managedidentity/userassignedidentities").len(), 4, "k={k}");
        assert_eq!(a.of_type("microsoft.containerservice/managedclusters/agentpools").len(), 2, "k={k}");
        assert_eq!(a.of_type("microsoft.authorization/roleassignments").len(), 10, "k={k}");
    }
    assert!(waited_out > 0, "some rerun met a resource still provisioning and waited it out");
}

/// Acceptance 1's last step: after `byoc apply` on the fake, `byoc clusters` against the
/// Kubernetes double annotates each cluster's service account with the client id the fake
/// assigned to that cluster's identity (read back from the fake), labels its pods for the
/// workload-identity webhook, and names the cluster whose identity is missing from the
/// cloud outputs.
#[test]
fn azure_clusters_annotates_each_service_account_with_the_client_id_azure_assigned() {
    use byoc::k8s::objects::ObjectKind;
    let a = Azure::new(options());
    ok(&a.apply());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // The double's client and server are tokio services: made inside the runtime.
    let _entered = rt.enter();
    let d = crate::kube::support::double();
    let client = d.client();
    let (addr, _server, _operator) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (addr, d.serve(listener), crate::kube::support::operator(&client))
    });
    a.repo.write("kubeconfig", &kube_double::kubeconfig(&format!("http://{addr}")));
    let clusters = || {
        byoc_env(
            a.repo.path(),
            &[
                "clusters",
                "--env",
                "examples/azure",
                "--state-dir",
                "state",
                "--kubeconfig",
                "kubeconfig",
                "--health-timeout",
                "20",
                "--poll-interval",
                "0.1",
            ],
            &[],
        )
    };
    ok(&clusters());
    for cluster in ["analytics", "ingest"] {
        let ns = format!("rw-{cluster}");
        let (_, identity) = a
            .of_type("microsoft.managedidentity/userassignedidentities")
            .into_iter()
            .find(|(id, _)| id.ends_with(&format!("/byoc-prod-eus2-{ns}")))
            .unwrap_or_else(|| panic!("the fake holds {ns}'s identity"));
        let client_id = identity["properties"]["clientId"].as_str().expect("the fake assigned a client id").to_owned();
        let sa = rt
            .block_on(crate::kube::support::get(&client, ObjectKind::ServiceAccount, Some(&ns), &ns))
            .unwrap_or_else(|| panic!("service account {ns}/{ns}"));
        assert_eq!(sa["metadata"]["annotations"]["azure.workload.identity/client-id"].as_str(), Some(client_id.as_str()), "{sa}");
        let rw = rt.block_on(crate::kube::support::get(&client, ObjectKind::RisingWave, Some(&ns), cluster)).expect("RisingWave");
        for component in ["meta", "frontend", "compute", "compactor"] {
            let labels = &rw["spec"]["components"][component]["nodeGroups"][0]["template"]["metadata"]["labels"];
            assert_eq!(labels["azure.workload.identity/use"], json!("true"), "{component} of {cluster}: {labels}");
        }
    }

    // An identity missing from cloud-outputs.json: the error names the cluster.
    let mut outputs: Value = serde_json::from_str(&a.repo.read("state/cloud-outputs.json")).expect("cloud outputs");
    outputs.as_object_mut().expect("object").remove("azure.managed-identity/rw-ingest").expect("ingest's client id was there");
    a.repo.write("state/cloud-outputs.json", &serde_json::to_string_pretty(&outputs).expect("json"));
    let missing = clusters();
    assert_ne!(missing.code, 0, "{}", missing.stdout);
    assert!(
        missing.stderr.contains("cluster \"ingest\"") && missing.stderr.contains("azure.managed-identity/rw-ingest"),
        "the error names the cluster and its identity:\n{}",
        missing.stderr
    );
}

/// The storage accounts take no public traffic, so pods reach them through their private
/// endpoints only if the accounts' names resolve there: the blob private DNS zone, linked
/// to the VNet, holding each endpoint through its zone group. Made once, untouched by a
/// second apply, removed by destroy (which keeps the accounts).
#[test]
fn azure_the_blob_private_dns_zone_is_linked_to_the_vnet_and_names_each_endpoint_and_destroy_removes_them() {
    let a = Azure::new(options());
    ok(&a.apply());
    let zones = a.of_type("microsoft.network/privatednszones");
    assert_eq!(zones.len(), 1, "{zones:?}");
    let (_, zone) = &zones[0];
    assert_eq!((zone["name"].as_str(), zone["location"].as_str()), (Some("privatelink.blob.core.windows.net"), Some("global")));
    assert_eq!(zone["tags"]["byoc-environment"], json!("prod-eus2"), "the zone carries the ownership tags: {zone}");
    let zone_id = zone["id"].as_str().expect("zone id");
    let links = a.of_type("microsoft.network/privatednszones/virtualnetworklinks");
    assert_eq!(links.len(), 1, "{links:?}");
    let (_, vnet) = a.of_type("microsoft.network/virtualnetworks").remove(0);
    assert_eq!(links[0].1["properties"]["virtualNetwork"]["id"], vnet["id"], "linked to the environment's VNet");
    assert_eq!(links[0].1["properties"]["registrationEnabled"], json!(false));
    assert_eq!(links[0].1["tags"]["byoc-environment"], json!("prod-eus2"));
    let groups = a.of_type("microsoft.network/privateendpoints/privatednszonegroups");
    let endpoints: Vec<String> = a.of_type("microsoft.network/privateendpoints").into_iter().map(|(id, _)| id).collect();
    assert_eq!(groups.len(), endpoints.len(), "one zone group per endpoint: {groups:?}");
    for endpoint in &endpoints {
        let (_, group) = groups
            .iter()
            .find(|(id, _)| id.starts_with(&format!("{endpoint}/privatednszonegroups/")))
            .unwrap_or_else(|| panic!("{endpoint} has a zone group"));
        let configs = group["properties"]["privateDnsZoneConfigs"].as_array().expect("configs");
        assert_eq!(configs.len(), 1, "{group}");
        assert_eq!(configs[0]["properties"]["privateDnsZoneId"].as_str(), Some(zone_id), "{group}");
    }
    let puts = |fragment: &str| a.double.writes().iter().filter(|w| w.starts_with("PUT ") && w.contains(fragment)).count();
    let zone_puts = a
        .double
        .writes()
        .iter()
        .filter(|w| w.starts_with("PUT ") && w.ends_with("/privateDnsZones/privatelink.blob.core.windows.net"))
        .count();
    assert_eq!(
        (zone_puts, puts("/virtualNetworkLinks/"), puts("/privateDnsZoneGroups/")),
        (1, 1, 2),
        "each written once: {:#?}",
        a.double.writes()
    );

    let writes = a.double.writes();
    let second = a.apply();
    assert!(summary(ok(&second)).starts_with("0 to create, 0 to update, 0 to replace, 0 to delete"), "{}", second.stdout);
    assert_eq!(mutating(&a.double.writes()), mutating(&writes), "a no-op apply writes nothing");

    ok(&a.run("destroy", &[]));
    for t in [
        "microsoft.network/privatednszones",
        "microsoft.network/privatednszones/virtualnetworklinks",
        "microsoft.network/privateendpoints/privatednszonegroups",
        "microsoft.network/privateendpoints",
    ] {
        assert_eq!(a.of_type(t).len(), 0, "{t} removed by destroy");
    }
    assert_eq!(a.of_type("microsoft.storage/storageaccounts").len(), 2, "the accounts stay without --delete-data");
}

/// The daemon's pass authenticated as the agent's own identity (a federated token whose
/// issuer and subject its federated credential trusts, as AKS's webhook mounts it) and
/// judged by the fake by the actions of the roles assigned to that identity: with one of
/// them removed the pass fails naming the action it lacked; with exactly the roles of
/// `policies/azure/agent.json` it makes the new cluster's identity, credential and role.
#[test]
fn azure_the_daemons_pass_runs_with_exactly_the_agents_roles_and_fails_naming_the_action_without_one() {
    use base64::Engine as _;
    let mut a = Azure::new(options());
    ok(&a.apply());
    let text = a
        .repo
        .read("examples/azure/clusters/ingest.yaml")
        .replace("name: ingest", "name: reporting")
        .replace("prefix: ingest", "prefix: reporting");
    a.repo.write("examples/azure/clusters/reporting.yaml", &text);
    a.repo.commit("reporting");

    // The agent's identity and what its federated credential trusts, read from the fake.
    let (agent_id, agent) = a
        .of_type("microsoft.managedidentity/userassignedidentities")
        .into_iter()
        .find(|(id, _)| id.ends_with("/byoc-prod-eus2-agent"))
        .expect("the agent's identity");
    let client_id = agent["properties"]["clientId"].as_str().expect("client id").to_owned();
    let principal = agent["properties"]["principalId"].as_str().expect("principal id").to_owned();
    let (_, fc) = a
        .of_type("microsoft.managedidentity/userassignedidentities/federatedidentitycredentials")
        .into_iter()
        .find(|(id, _)| id.starts_with(&format!("{agent_id}/")))
        .expect("the agent's federated credential");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let sa_token = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "RS256", "kid": "aks"})),
        b64(
            &json!({"iss": fc["properties"]["issuer"], "sub": fc["properties"]["subject"], "aud": ["api://AzureADTokenExchange"], "exp": exp})
        )
    );
    a.repo.write("sa-token", &sa_token);
    let credential = byoc::cloud::azure::Credential::Federated {
        tenant: a.tenant.clone(),
        client_id: client_id.clone(),
        token_file: a.repo.path().join("sa-token"),
    };
    let endpoint = byoc::cloud::azure::Endpoint { url: Some(a.double.url()), extra_ca_pem: Some(a.double.ca_pem()) };
    let dir = a.repo.path().join("examples/azure");
    let files = rwproxy::specfiles::read_dir(&dir).expect("specs readable");
    let specs = byoc::spec::load::load(&dir.to_string_lossy(), &files).unwrap_or_else(|e| panic!("{e:?}"));
    let store = byoc::state::LocalDir::new(a.repo.path().join("state")).expect("state dir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pass = || {
        rt.block_on(byoc::run::identity::azure_pass(
            &store,
            &specs,
            &endpoint,
            &credential,
            "main@sha1:test",
            byoc::run::identity::Pass::Converge,
        ))
        .expect("the pass runs")
    };

    // The agent's assignments are exactly the policy's roles.
    let roles: std::collections::BTreeMap<&str, &str> = arm_double::ROLE_DEFINITIONS.iter().copied().collect();
    let agents: Vec<(String, Value)> = a
        .of_type("microsoft.authorization/roleassignments")
        .into_iter()
        .filter(|(_, ra)| ra["properties"]["principalId"].as_str() == Some(principal.as_str()))
        .collect();
    let mut held: Vec<String> = agents
        .iter()
        .map(|(_, ra)| {
            let guid = ra["properties"]["roleDefinitionId"].as_str().expect("role").rsplit('/').next().expect("guid");
            roles.get(guid).copied().unwrap_or(guid).to_owned()
        })
        .collect();
    held.sort();
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::support::project_root().join("policies/azure/agent.json")).expect("agent policy"),
    )
    .expect("json");
    let mut want: Vec<String> =
        policy["permissions"].as_array().expect("permissions").iter().map(|p| p.as_str().expect("str").to_owned()).collect();
    want.sort();
    assert_eq!(held, want, "the agent holds exactly the policy's roles");

    // Without Managed Identity Contributor the pass cannot make the cluster's identity.
    let (mic_id, mic) = agents
        .iter()
        .find(|(_, ra)| ra["properties"]["roleDefinitionId"].as_str().is_some_and(|r| r.ends_with("e40ec5ca-96e0-45a2-b4ff-59039f2c2b59")))
        .cloned()
        .expect("the agent's Managed Identity Contributor");
    delete(&a, &mic_id);
    let before = mutating(&a.double.writes()).len();
    let refused = pass();
    let failure = format!("{:?}", refused.failed.expect("the pass fails without the role"));
    assert!(
        failure.contains("AuthorizationFailed")
            && failure.contains("Microsoft.ManagedIdentity/userAssignedIdentities/write")
            && failure.contains(&principal),
        "the failure names the action and the agent: {failure}"
    );
    assert_eq!(mutating(&a.double.writes()).len(), before, "nothing was written as the agent");

    // The role back (as the administrator), the same pass succeeds.
    let p = &mic["properties"];
    let scope = p["scope"].as_str().expect("scope");
    a.arm_put(
        &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", mic["name"].as_str().expect("name")),
        "2022-04-01",
        &json!({"properties": {"roleDefinitionId": p["roleDefinitionId"], "principalId": p["principalId"], "principalType": "ServicePrincipal", "description": p["description"]}}),
    );
    let report = pass();
    assert!(report.failed.is_none(), "{:?}", report.failed);
    assert_eq!(report.done, 3, "the identity, its federated credential and its data role");
    assert!(
        a.of_type("microsoft.managedidentity/userassignedidentities").iter().any(|(id, _)| id.ends_with("-rw-reporting")),
        "made as the agent"
    );
}

/// The Kubernetes double served over HTTP for the real binary, with the stand-in operator,
/// on a runtime of its own (the test thread runs the binary); its kubeconfig is written into
/// the repository as `kubeconfig`.
struct Kube {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    _server: tokio::task::JoinHandle<()>,
    _operator: crate::kube::support::Operator,
}

impl Kube {
    fn new(a: &Azure) -> Kube {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (client, addr, server, operator) = rt.block_on(async {
            let d = crate::kube::support::double();
            let client = d.client();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = d.serve(listener);
            let operator = crate::kube::support::operator(&client);
            (client, addr, server, operator)
        });
        a.repo.write("kubeconfig", &kube_double::kubeconfig(&format!("http://{addr}")));
        Kube { rt, client, _server: server, _operator: operator }
    }

    fn get(&self, kind: &kube::discovery::ApiResource, ns: &str, name: &str) -> Option<Value> {
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(self.client.clone(), ns, kind);
        self.rt.block_on(api.get_opt(name)).expect("get").map(|o| serde_json::to_value(o).expect("json"))
    }

    /// Every object of the kinds byoc applies, as `kind ns/name` -> its resourceVersion
    /// (which the API server moves only when the object changes).
    fn versions(&self) -> std::collections::BTreeMap<String, String> {
        self.objects().into_iter().map(|(k, v)| (k, v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned())).collect()
    }

    /// Every object of the kinds byoc applies, as `kind ns/name` -> the object.
    fn objects(&self) -> std::collections::BTreeMap<String, Value> {
        use k8s_openapi::api::{apps, core, networking, policy, rbac};
        let kinds = [
            kube::discovery::ApiResource::erase::<core::v1::Namespace>(&()),
            kube::discovery::ApiResource::erase::<core::v1::ServiceAccount>(&()),
            kube::discovery::ApiResource::erase::<core::v1::Service>(&()),
            kube::discovery::ApiResource::erase::<core::v1::ConfigMap>(&()),
            kube::discovery::ApiResource::erase::<apps::v1::Deployment>(&()),
            kube::discovery::ApiResource::erase::<networking::v1::NetworkPolicy>(&()),
            kube::discovery::ApiResource::erase::<policy::v1::PodDisruptionBudget>(&()),
            kube::discovery::ApiResource::erase::<rbac::v1::Role>(&()),
            kube::discovery::ApiResource::erase::<rbac::v1::RoleBinding>(&()),
            kube::discovery::ApiResource::erase::<rbac::v1::ClusterRole>(&()),
            kube::discovery::ApiResource::erase::<rbac::v1::ClusterRoleBinding>(&()),
            byoc::k8s::objects::ObjectKind::RisingWave.api_resource(),
        ];
        let mut out = std::collections::BTreeMap::new();
        for kind in kinds {
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(self.client.clone(), &kind);
            for o in self.rt.block_on(api.list(&Default::default())).expect("list").items {
                let key = format!(
                    "{} {}/{}",
                    kind.kind,
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default()
                );
                out.insert(key, serde_json::to_value(o).expect("json"));
            }
        }
        out
    }
}

impl Azure {
    /// `byoc apply` of the cloud and then Kubernetes: the sidecar and the clusters.
    fn apply_with_kube(&self) -> Run {
        let url = self.double.url();
        let mut args = self.args("apply", &url);
        args.extend_from_slice(&["--kubeconfig", "kubeconfig", "--health-timeout", "30"]);
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        byoc_env(self.repo.path(), &args, &env)
    }
}

const SERVICE: fn() -> kube::discovery::ApiResource = || kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());

/// `byoc apply` with a kubeconfig installs the Azure sidecar: its service account names the
/// client id the fake gave the agent's identity, and the agent's and proxy's Services carry
/// the Private Link annotations of the graph, visible to and auto-approved for the spec's
/// control-plane subscriptions (two here, unlike the overlay's example); a second apply
/// changes nothing in the fake or in Kubernetes.
#[test]
fn azure_apply_installs_the_sidecar_with_the_agents_client_id_and_private_link_for_the_control_plane() {
    let mut a = Azure::new(options());
    let subscriptions = "11111111-2222-4333-8444-555555555555 66666666-7777-4888-9999-aaaaaaaaaaaa";
    a.repo.edit(
        "examples/azure/environment.yaml",
        "principals: [9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d]",
        "principals: [11111111-2222-4333-8444-555555555555, 66666666-7777-4888-9999-aaaaaaaaaaaa]",
    );
    a.repo.commit("two control-plane subscriptions");
    let k = Kube::new(&a);
    let first = a.apply_with_kube();
    ok(&first);
    assert!(first.stdout.contains("sidecar: "), "{}", first.stdout);

    let (_, agent) = a
        .of_type("microsoft.managedidentity/userassignedidentities")
        .into_iter()
        .find(|(id, _)| id.ends_with("/byoc-prod-eus2-agent"))
        .expect("the agent's identity");
    let client_id = agent["properties"]["clientId"].as_str().expect("client id");
    let sa = k
        .get(
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&()),
            byoc::expand::AGENT_NAMESPACE,
            byoc::expand::AGENT_SERVICE_ACCOUNT,
        )
        .expect("the sidecar's service account");
    assert_eq!(sa["metadata"]["annotations"]["azure.workload.identity/client-id"].as_str(), Some(client_id), "{sa}");

    for (role, service) in [("agent", byoc::expand::AGENT_SERVICE), ("proxy", byoc::expand::PROXY_SERVICE)] {
        let svc = k.get(&SERVICE(), byoc::expand::AGENT_NAMESPACE, service).unwrap_or_else(|| panic!("Service {service}"));
        let an = &svc["metadata"]["annotations"];
        assert_eq!(an["service.beta.kubernetes.io/azure-load-balancer-internal"], json!("true"), "{service}: {an}");
        assert_eq!(an["service.beta.kubernetes.io/azure-pls-create"], json!("true"), "{service}: {an}");
        assert_eq!(an["service.beta.kubernetes.io/azure-pls-name"], json!(format!("byoc-prod-eus2-{role}")), "{service}: {an}");
        assert_eq!(an["service.beta.kubernetes.io/azure-pls-visibility"], json!(subscriptions), "{service}: {an}");
        assert_eq!(an["service.beta.kubernetes.io/azure-pls-auto-approval"], json!(subscriptions), "{service}: {an}");
    }

    let fake = a.double.snapshot();
    let writes = mutating(&a.double.writes()).len();
    let versions = k.versions();
    let second = a.apply_with_kube();
    ok(&second);
    assert!(second.stdout.contains(" 0 changed"), "{}", second.stdout);
    assert_eq!(mutating(&a.double.writes()).len(), writes, "the second apply writes nothing to ARM");
    assert_eq!(a.double.snapshot(), fake);
    assert_eq!(k.versions(), versions, "the second apply changes nothing in Kubernetes");
}

/// Acceptance 2: dropping `publicProxy` removes the `rwproxy-public` Service and the NSG's
/// rule for its CIDRs, and nothing else in ARM; in Kubernetes the only other change is the
/// proxy's NetworkPolicy no longer admitting those CIDRs.
#[test]
fn azure_dropping_the_public_proxy_removes_only_its_service_and_its_nsg_rule() {
    let mut a = Azure::new(options());
    let k = Kube::new(&a);
    ok(&a.apply_with_kube());
    assert!(k.get(&SERVICE(), byoc::expand::AGENT_NAMESPACE, "rwproxy-public").is_some(), "the public proxy's Service");
    let fake = a.double.snapshot();
    let objects = k.objects();
    let versions = k.versions();
    let writes = mutating(&a.double.writes()).len();

    a.repo.edit("examples/azure/environment.yaml", "  exposure:\n    proxy:\n      public:\n        allowedCidrs: [198.51.100.0/24]\n", "");
    a.repo.commit("no public proxy");
    let dropped = a.apply_with_kube();
    ok(&dropped);

    // ARM: one write, the NSG without the public rule.
    let new: Vec<String> = mutating(&a.double.writes()).into_iter().skip(writes).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].starts_with("PUT ") && new[0].contains("/networkSecurityGroups/"), "{new:?}");
    let after = a.double.snapshot();
    let (before_map, after_map) = (fake.as_object().expect("map"), after.as_object().expect("map"));
    assert_eq!(before_map.keys().collect::<Vec<_>>(), after_map.keys().collect::<Vec<_>>(), "nothing made or deleted in ARM");
    for (id, v) in before_map {
        if id.contains("/networksecuritygroups/") {
            let sources: Vec<&str> = after_map[id]["properties"]["securityRules"]
                .as_array()
                .expect("rules")
                .iter()
                .filter_map(|r| r["properties"]["sourceAddressPrefix"].as_str())
                .collect();
            assert!(!sources.contains(&"198.51.100.0/24"), "the public rule is gone: {sources:?}");
        } else {
            assert_eq!(&after_map[id], v, "{id} unchanged");
        }
    }

    // Kubernetes: the Service gone; the proxy's NetworkPolicy narrowed; nothing else.
    let now = k.objects();
    let now_versions = k.versions();
    let gone: Vec<&String> = objects.keys().filter(|key| !now.contains_key(*key)).collect();
    assert_eq!(gone, vec![&format!("Service {}/rwproxy-public", byoc::expand::AGENT_NAMESPACE)], "{gone:?}");
    assert_eq!(now.len() + 1, objects.len(), "nothing made in Kubernetes");
    let changed: Vec<&String> = now_versions.keys().filter(|key| versions.get(*key) != now_versions.get(*key)).collect();
    assert_eq!(changed.len(), 1, "the proxy's NetworkPolicy, nothing else: {changed:?}");
    for key in &changed {
        assert!(key.starts_with("NetworkPolicy "), "only a NetworkPolicy may change besides: {key}");
        assert!(serde_json::to_string(&objects[*key]).expect("json").contains("198.51.100.0/24"), "{key} admitted the public CIDRs");
        assert!(!serde_json::to_string(&now[*key]).expect("json").contains("198.51.100.0/24"), "{key} no longer admits them");
    }
}
