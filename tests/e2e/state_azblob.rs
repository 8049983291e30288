//! The Azure Blob state store and the lease against the real azurite (started once per
//! test binary by tests/azurite/start.sh on a loopback port), authenticated with a SAS the
//! tests sign for azurite's well-known development account, as a SAS for a real account
//! is signed: conditional writes, no lost update under concurrent writers, one lease
//! holder at a time, a wrong signature refused. Each test uses a container of its own.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use byoc::state::azblob::{AzureAuth, AzureBlobLocation, AzureBlobStore};
use byoc::state::lease::{Lease, LeaseError};
use byoc::state::{StateError, StateStore};
use hmac::Mac as _;

use crate::support::project_root;

/// Azurite's development account and its published key (the same in every azurite).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The azurite endpoint shared by this file's tests, `http://127.0.0.1:PORT`.
pub fn azurite() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let out = Command::new("bash")
            .arg(project_root().join("tests/azurite/start.sh"))
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .output()
            .expect("run tests/azurite/start.sh");
        assert!(out.status.success(), "starting azurite failed:\n{}", String::from_utf8_lossy(&out.stderr));
        format!("http://127.0.0.1:{port}")
    })
}

/// An account SAS for the development account (blob service; service, container and
/// object level; read, write, delete, list, add, create; valid until 2099), signed with
/// HMAC-SHA256 over the documented string-to-sign of version 2021-08-06.
pub fn sas() -> String {
    sas_with_key(KEY)
}

fn sas_with_key(key: &str) -> String {
    let (sv, sp, ss, srt, se, spr) = ("2021-08-06", "rwdlac", "b", "sco", "2099-01-01T00:00:00Z", "http,https");
    let to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n");
    let key = base64::engine::general_purpose::STANDARD.decode(key).expect("base64 key");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String =
        sig.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect();
    let se = se.replace(':', "%3A");
    format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={se}&spr={}&sig={sig}", spr.replace(',', "%2C"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A fresh container in azurite: its location URL (without the prefix).
pub fn new_container() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let container = format!("state-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let url = format!("{}/{ACCOUNT}/{container}", azurite());
    let with_sas = azure_core::http::Url::parse(&format!("{url}?{}", sas())).expect("url");
    runtime().block_on(async {
        let client = azure_storage_blob::BlobContainerClient::new(with_sas, None, None).expect("container client");
        client.create(None).await.expect("create container");
    });
    url
}

fn store(prefix: &str) -> AzureBlobStore {
    let location = AzureBlobLocation::parse(&format!("{}/{prefix}", new_container())).expect("location");
    AzureBlobStore::new(location, AzureAuth::Sas(sas()))
}

#[test]
fn azure_blob_writes_are_conditional_on_the_etag_read() {
    let s = store("envs/prod");
    runtime().block_on(async {
        assert_eq!(s.get("inventory.json").await.expect("get"), None);
        let v1 = s.put("inventory.json", b"a", None).await.expect("create");
        let again = s.put("inventory.json", b"b", None).await;
        assert!(matches!(again, Err(StateError::Conflict { .. })), "If-None-Match: * over an existing blob: {again:?}");
        let v2 = s.put("inventory.json", b"b", Some(&v1)).await.expect("update with the current ETag");
        assert_ne!(v1, v2);
        let stale = s.put("inventory.json", b"c", Some(&v1)).await.expect_err("a stale ETag");
        assert!(matches!(stale, StateError::Conflict { .. }) && stale.retryable(), "{stale:?}");
        assert!(stale.to_string().contains("was changed by someone else"), "{stale}");
        let got = s.get("inventory.json").await.expect("get").expect("present");
        assert_eq!((got.value.as_slice(), got.version.as_str()), (&b"b"[..], v2.as_str()));
        assert!(matches!(s.get("../escape").await, Err(StateError::Io { .. })));
    });
}

/// A SAS signed with another key is refused by azurite (403), and the store says a retry
/// will not help; a container that does not exist is refused too, not read as "no state".
#[test]
fn a_wrong_signature_and_a_missing_container_are_refused() {
    let container = new_container();
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let location = AzureBlobLocation::parse(&container).expect("location");
    let forged = AzureBlobStore::new(location, AzureAuth::Sas(sas_with_key(&other_key)));
    let missing = AzureBlobStore::new(
        AzureBlobLocation::parse(&format!("{}/{ACCOUNT}/no-such-container", azurite())).expect("location"),
        AzureAuth::Sas(sas()),
    );
    runtime().block_on(async {
        let e = forged.put("inventory.json", b"a", None).await.expect_err("forged SAS");
        assert!(matches!(e, StateError::Refused { .. }) && !e.retryable(), "{e:?}");
        assert!(e.to_string().contains("403"), "{e}");
        let e = missing.get("inventory.json").await.expect_err("no container");
        assert!(matches!(e, StateError::Refused { .. }) && !e.retryable(), "{e:?}");
        assert!(e.to_string().contains("no-such-container/inventory.json"), "{e}");
    });
}

#[test]
fn concurrent_writers_lose_no_update_in_azure_blob() {
    let s = std::sync::Arc::new(store(""));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let conflicts = std::sync::Arc::new(AtomicU32::new(0));
    rt.block_on(async {
        s.put("counter", b"0", None).await.expect("create");
        let writers: Vec<_> = (0..6)
            .map(|_| {
                let (s, conflicts) = (s.clone(), conflicts.clone());
                tokio::spawn(async move {
                    for _ in 0..5 {
                        // Read, modify, conditional write; on conflict, read again (bounded).
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            assert!(attempts < 200, "no progress");
                            let cur = s.get("counter").await.expect("get").expect("present");
                            let n: u32 = std::str::from_utf8(&cur.value).expect("utf8").parse().expect("number");
                            match s.put("counter", (n + 1).to_string().as_bytes(), Some(&cur.version)).await {
                                Ok(_) => break,
                                Err(StateError::Conflict { .. }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let end = s.get("counter").await.expect("get").expect("present");
        let conflicts = conflicts.load(Ordering::Relaxed);
        println!("6 writers x 5 increments on Azure Blob: {conflicts} conflict(s) retried");
        assert_eq!(std::str::from_utf8(&end.value).expect("utf8"), "30", "every increment kept ({conflicts} conflicts retried)");
    });
}

#[test]
fn one_lease_holder_at_a_time_in_azure_blob() {
    let s = store("envs/prod");
    runtime().block_on(async {
        let names: Vec<String> = (0..4).map(|i| format!("apply-{i}")).collect();
        let winners: Vec<Result<Lease, LeaseError>> =
            futures::future::join_all(names.iter().map(|n| Lease::acquire(&s, n, 1_000, 60))).await;
        let held: Vec<&Lease> = winners.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(held.len(), 1, "{winners:?}");
        for r in &winners {
            if let Err(e) = r {
                assert!(matches!(e, LeaseError::Held { .. }), "{e}");
                assert!(e.to_string().contains("is locked by apply-"), "{e}");
            }
        }
        assert!(matches!(Lease::acquire(&s, "late", 1_030, 60).await, Err(LeaseError::Held { .. })));
        let late = Lease::acquire(&s, "late", 1_061, 60).await.expect("expired leases can be taken");
        late.release(&s).await.expect("released");
        Lease::acquire(&s, "next", 1_062, 60).await.expect("a released lease is free at once");
    });
}
