//! Cloud Storage through the fake: forwarded to a real fake-gcs-server (tests/gcs/start.sh),
//! bucket IAM kept by the fake.

mod common;

use std::sync::OnceLock;

use common::raw;
use gcp_double::{Double, Options};
use serde_json::json;

/// The fake-gcs-server shared by this file's tests; it stops when this test binary exits.
fn fake_gcs() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gcs/start.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .expect("run tests/gcs/start.sh");
        assert!(out.status.success(), "starting fake-gcs-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
        format!("http://127.0.0.1:{port}")
    })
}

fn double() -> Double {
    Double::spawn(Options { gcs_upstream: Some(fake_gcs().to_owned()), ..Options::default() }).expect("spawn")
}

#[test]
fn storage_calls_reach_fake_gcs_server_through_the_one_endpoint() {
    let d = double();
    let bucket = format!("fwd-{}", std::process::id());
    let (status, body) = raw(&d.url(), "POST", "/storage/v1/b?project=byoc-test-project", Some(&json!({"name": bucket})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], json!(bucket));
    let (status, body) = raw(
        &d.url(),
        "POST",
        &format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name=state.json&ifGenerationMatch=0"),
        Some(&json!({"v": 1})),
    );
    assert_eq!(status, 200, "{body}");
    let generation = body["generation"].as_str().expect("generation").to_owned();
    // Query and body arrive unchanged: the object reads back as written.
    let (status, data) = raw(&d.url(), "GET", &format!("/storage/v1/b/{bucket}/o/state.json?alt=media"), None);
    assert_eq!((status, data), (200, json!({"v": 1})));
    let (status, body) = raw(&d.url(), "GET", &format!("/storage/v1/b/{bucket}/o"), None);
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["generation"], json!(generation));
    let writes = d.writes();
    assert_eq!(writes, vec!["POST /storage/v1/b".to_owned(), format!("POST /upload/storage/v1/b/{bucket}/o")]);
}

#[test]
fn bucket_iam_is_kept_by_the_fake_with_etags() {
    let d = double();
    let bucket = format!("iam-{}", std::process::id());
    let (status, _) = raw(&d.url(), "POST", "/storage/v1/b?project=byoc-test-project", Some(&json!({"name": bucket})));
    assert_eq!(status, 200);
    let path = format!("/storage/v1/b/{bucket}/iam");
    let (status, policy) = raw(&d.url(), "GET", &path, None);
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["kind"], json!("storage#policy"));
    let etag = policy["etag"].clone();
    let (status, sa) = raw(&d.url(), "POST", "/v1/projects/byoc-test-project/serviceAccounts", Some(&json!({"accountId": "byoc-agent"})));
    assert_eq!(status, 200, "{sa}");
    let binding =
        json!({"role": "roles/storage.objectAdmin", "members": [format!("serviceAccount:{}", sa["email"].as_str().expect("email"))]});
    let (status, set) = raw(&d.url(), "PUT", &path, Some(&json!({"etag": etag, "bindings": [binding]})));
    assert_eq!(status, 200, "{set}");
    assert_ne!(set["etag"], etag);
    let (status, body) = raw(&d.url(), "PUT", &path, Some(&json!({"etag": etag, "bindings": []})));
    assert_eq!((status, common::reason(&body)), (412, "conditionNotMet"), "{body}");
    let (_, got) = raw(&d.url(), "GET", &path, None);
    assert_eq!(got["bindings"][0]["role"], json!("roles/storage.objectAdmin"));
    let (status, _) = raw(&d.url(), "GET", "/storage/v1/b/no-such-bucket-here/iam", None);
    assert_eq!(status, 404);
    assert_eq!(d.snapshot()["iamPolicies"][format!("b/{bucket}")]["bindings"][0]["role"], json!("roles/storage.objectAdmin"));
}

#[test]
fn bucket_fields_fake_gcs_server_drops_are_kept_and_judged() {
    let d = double();
    let bucket = format!("meta-{}", std::process::id());
    let create = json!({
        "name": bucket,
        "labels": {"byoc-env": "prod"},
        "versioning": {"enabled": true},
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": true}, "publicAccessPrevention": "enforced"},
        "lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"numNewerVersions": 3, "isLive": false}}]},
    });
    let (status, body) = raw(&d.url(), "POST", "/storage/v1/b?project=byoc-test-project", Some(&create));
    assert_eq!(status, 200, "{body}");
    let path = format!("/storage/v1/b/{bucket}");
    let (_, got) = raw(&d.url(), "GET", &path, None);
    for key in ["labels", "versioning", "iamConfiguration", "lifecycle"] {
        assert_eq!(got[key], create[key], "{key} kept: {got}");
    }
    assert_eq!(got["metageneration"], json!("1"));
    // A PATCH of labels alone merges them and leaves versioning on (fake-gcs-server alone
    // would turn it off).
    let (status, patched) = raw(&d.url(), "PATCH", &path, Some(&json!({"labels": {"team": "data"}})));
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["labels"], json!({"byoc-env": "prod", "team": "data"}));
    assert_eq!(patched["versioning"], json!({"enabled": true}));
    assert_eq!(patched["metageneration"], json!("2"));
    let (_, upstream) = raw(fake_gcs(), "GET", &path, None);
    assert_eq!(upstream["versioning"], json!({"enabled": true}), "the upstream keeps versioning too");
    let (_, list) = raw(&d.url(), "GET", "/storage/v1/b?project=byoc-test-project", None);
    let mine = list["items"].as_array().into_iter().flatten().find(|b| b["name"] == json!(bucket)).cloned().expect("listed");
    assert_eq!(mine["labels"]["team"], json!("data"));

    // Drift: another actor turns versioning off.
    d.tamper("buckets", &bucket, json!({"versioning": {"enabled": false}})).expect("tamper");
    let (_, got) = raw(&d.url(), "GET", &path, None);
    assert_eq!((got["versioning"].clone(), got["metageneration"].clone()), (json!({"enabled": false}), json!("3")));

    for bad in ["ab", "Upper", "my-google-bucket", "goog-data", "-dash", &"x".repeat(64)] {
        let (status, body) = raw(&d.url(), "POST", "/storage/v1/b?project=byoc-test-project", Some(&json!({"name": bad})));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = raw(&d.url(), "PATCH", &path, Some(&json!({"labels": {"Team": "x"}})));
    assert_eq!(status, 400, "a label key must start with a lowercase letter");

    // fake-gcs-server answers 200 here (Cloud Storage 204); either is success.
    let (status, _) = raw(&d.url(), "DELETE", &path, None);
    assert!((200..300).contains(&status), "{status}");
    assert!(d.snapshot().get("buckets").and_then(|b| b.get(&bucket)).is_none(), "the kept fields go with the bucket");
}
