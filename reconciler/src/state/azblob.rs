//! The state store in an Azure Blob container: one block blob per key under a prefix, the
//! blob's ETag as its version, creates with `If-None-Match: *` and updates with
//! `If-Match: <etag>`, so a write based on a stale read is refused (412, or 409
//! `BlobAlreadyExists` for a create) instead of overwriting.
//!
//! The client is `azure_storage_blob` over azure_core's pipeline. It authenticates with an
//! Entra token (in the pod: the workload-identity token of the pod's service account,
//! through `azure_identity`) or with a SAS appended to every URL (no shared key, no
//! connection string: the crate offers neither, and shared-key access is off on the
//! environment's storage accounts anyway).

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{Etag, RequestContent, Url};
use azure_storage_blob::models::{BlobClientDownloadOptions, BlobClientUploadOptions};
use azure_storage_blob::{BlobClient, BlobClientOptions};

use super::{StateError, StateStore, StoreFuture, Versioned, check_key};

/// Where the state lives: the container's URL and the prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureBlobLocation {
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER`, or path-style
    /// `http://127.0.0.1:PORT/ACCOUNT/CONTAINER` for an emulator (azurite).
    pub container_url: Url,
    /// The prefix, empty or ending in '/'.
    pub prefix: String,
}

impl AzureBlobLocation {
    /// Reads `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`, or the emulator form
    /// `http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PREFIX` (a loopback host: the account is the
    /// first path segment). The error says what was expected.
    pub fn parse(text: &str) -> Result<AzureBlobLocation, String> {
        let expected = "expected https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX";
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e}); {expected}"))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} carries a query; {expected}, and give a SAS in AZURE_STORAGE_SAS_TOKEN, never in a flag or a config file"
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let segments: Vec<&str> = url.path_segments().map(|s| s.filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        let (account_in_path, rest) = if loopback {
            match segments.split_first() {
                Some((account, rest)) => (Some(*account), rest),
                None => {
                    return Err(format!("{text:?} names no account; an emulator URL is http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PREFIX"));
                }
            }
        } else {
            let account = host.split('.').next().unwrap_or_default();
            if !host.contains(".blob.") || account.is_empty() {
                return Err(format!("{text:?} is not a blob endpoint; {expected}"));
            }
            if url.scheme() != "https" {
                return Err(format!("{text:?} must use https (an Entra token is never sent in the clear)"));
            }
            (None, &segments[..])
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{text:?}: scheme {:?}; {expected}", url.scheme()));
        }
        let Some((container, prefix)) = rest.split_first() else {
            return Err(format!("{text:?} names no container; {expected}"));
        };
        check_container(container).map_err(|why| format!("{text:?}: container {container:?} {why}"))?;
        let mut container_url = url.clone();
        container_url.set_path(&match account_in_path {
            Some(account) => format!("/{account}/{container}"),
            None => format!("/{container}"),
        });
        let prefix = if prefix.is_empty() { String::new() } else { format!("{}/", prefix.join("/")) };
        Ok(AzureBlobLocation { container_url, prefix })
    }
}

/// Azure's container naming rule: 3-63 lower-case letters, digits and '-', starting and
/// ending with a letter or digit, no "--".
fn check_container(name: &str) -> Result<(), &'static str> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(3..=63).contains(&name.len()) || !ok_chars || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("is not a container name (3-63 lower-case letters, digits and single '-', starting and ending with a letter or digit)");
    }
    Ok(())
}

/// How the store authenticates.
#[derive(Clone)]
pub enum AzureAuth {
    /// A SAS token (`sv=...&sig=...`), appended to every URL.
    Sas(String),
    /// An Entra token credential (workload identity in the pod).
    Token(Arc<dyn TokenCredential>),
}

/// An Azure-Blob-backed state store.
#[derive(Clone)]
pub struct AzureBlobStore {
    location: AzureBlobLocation,
    auth: AzureAuth,
}

impl std::fmt::Debug for AzureBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobStore")
            .field("container", &self.location.container_url.as_str())
            .field("prefix", &self.location.prefix)
            .finish()
    }
}

impl AzureBlobStore {
    /// A store at `location` with the given authentication.
    pub fn new(location: AzureBlobLocation, auth: AzureAuth) -> AzureBlobStore {
        // azure_core's reqwest builds its TLS on the process's rustls provider: make it
        // ring, as kube needs (installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        AzureBlobStore { location, auth }
    }

    /// A store at `location`: with a SAS when one is given, else with the pod's
    /// workload-identity token (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, set by AKS's workload-identity webhook).
    pub fn connect(location: AzureBlobLocation, sas: Option<String>) -> Result<AzureBlobStore, StateError> {
        let auth = match sas {
            Some(sas) => AzureAuth::Sas(sas.trim_start_matches('?').to_owned()),
            None if location.container_url.scheme() != "https" => {
                return Err(StateError::Refused {
                    key: String::new(),
                    message: format!(
                        "{}: a plain-http endpoint takes no Entra token; give a SAS in AZURE_STORAGE_SAS_TOKEN",
                        location.container_url
                    ),
                });
            }
            None => {
                let credential = azure_identity::WorkloadIdentityCredential::new(None).map_err(|e| StateError::Refused {
                    key: String::new(),
                    message: format!(
                        "{}: no workload identity ({e}); run in a pod whose service account is federated with a managed identity, or give a SAS in AZURE_STORAGE_SAS_TOKEN",
                        location.container_url
                    ),
                })?;
                AzureAuth::Token(credential)
            }
        };
        Ok(AzureBlobStore::new(location, auth))
    }

    fn blob(&self, key: &str) -> Result<(BlobClient, String), StateError> {
        check_key(key)?;
        let name = format!("{}{key}", self.location.prefix);
        let mut url = self.location.container_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(name.split('/'));
        }
        let credential = match &self.auth {
            AzureAuth::Sas(sas) => {
                url.set_query(Some(sas));
                None
            }
            AzureAuth::Token(t) => Some(t.clone()),
        };
        let shown = format!("{}/{name}", self.location.container_url);
        let client = BlobClient::new(url, credential, Some(BlobClientOptions::default()))
            .map_err(|e| StateError::Refused { key: key.into(), message: format!("{shown}: {e}") })?;
        Ok((client, shown))
    }

    /// A failed call, sorted by whether a retry can help: no answer, throttling (429), a
    /// timeout or a server error may pass; any other answer (403, no such container) will
    /// not.
    fn failure(key: &str, what: &str, shown: &str, e: &azure_core::Error) -> StateError {
        let message = format!("{what} {shown}: {e}");
        let transient = match e.kind() {
            ErrorKind::HttpResponse { status, .. } => {
                let code = u16::from(*status);
                code == 429 || code == 408 || code >= 500
            }
            ErrorKind::Io | ErrorKind::Connection => true,
            ErrorKind::Credential => false,
            _ => false,
        };
        if transient {
            StateError::Unavailable { key: key.into(), message }
        } else {
            StateError::Refused {
                key: key.into(),
                message: format!("{message}; check the container name and the identity's Storage Blob Data role"),
            }
        }
    }
}

fn status(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

fn error_code(e: &azure_core::Error) -> Option<&str> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

impl StateStore for AzureBlobStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(async move {
            let (client, shown) = self.blob(key)?;
            // One request: state objects are small, and a download split into ranges could
            // mix two versions (the crate pins later ranges to the first ETag anyway).
            let options = BlobClientDownloadOptions { parallel: std::num::NonZero::new(1), ..Default::default() };
            match client.download(Some(options)).await {
                Ok(result) => {
                    let version = result.properties.etag.as_ref().map(ToString::to_string).ok_or_else(|| StateError::Io {
                        key: key.into(),
                        message: format!("reading {shown}: the answer carries no ETag"),
                    })?;
                    let value = result
                        .body
                        .collect()
                        .await
                        .map_err(|e| StateError::Unavailable { key: key.into(), message: format!("reading {shown}: {e}") })?;
                    Ok(Some(Versioned { value: value.to_vec(), version }))
                }
                Err(e) if status(&e) == Some(404) && error_code(&e) != Some("ContainerNotFound") => Ok(None),
                Err(e) => Err(Self::failure(key, "reading", &shown, &e)),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let (client, shown) = self.blob(key)?;
            let mut options = BlobClientUploadOptions::default();
            match expected {
                None => options.if_none_match = Some(Etag::from("*")),
                Some(etag) => options.if_match = Some(Etag::from(etag)),
            }
            let content: RequestContent<azure_core::Bytes, azure_core::http::NoFormat> = RequestContent::from(value.to_vec());
            match client.upload(content, Some(options)).await {
                Ok(written) => written
                    .etag
                    .map(|t| t.to_string())
                    .ok_or_else(|| StateError::Io { key: key.into(), message: format!("writing {shown}: the answer carries no ETag") }),
                // A stale If-Match is 412; If-None-Match: * over an existing blob is 409
                // BlobAlreadyExists.
                Err(e) if status(&e) == Some(412) || (status(&e) == Some(409) && error_code(&e) == Some("BlobAlreadyExists")) => {
                    Err(StateError::Conflict { key: key.into(), expected: expected.map(str::to_owned), found: None })
                }
                Err(e) => Err(Self::failure(key, "writing", &shown, &e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AzureBlobLocation;

    #[test]
    fn locations_in_the_cloud_and_on_an_emulator() {
        let cloud = AzureBlobLocation::parse("https://acct.blob.core.windows.net/state/envs/prod").expect("parses");
        assert_eq!((cloud.container_url.as_str(), cloud.prefix.as_str()), ("https://acct.blob.core.windows.net/state", "envs/prod/"));
        let bare = AzureBlobLocation::parse("https://acct.blob.core.windows.net/state").expect("parses");
        assert_eq!(bare.prefix, "");
        let azurite = AzureBlobLocation::parse("http://127.0.0.1:10000/devstoreaccount1/state/p").expect("parses");
        assert_eq!((azurite.container_url.as_str(), azurite.prefix.as_str()), ("http://127.0.0.1:10000/devstoreaccount1/state", "p/"));
        for (bad, why) in [
            ("http://acct.blob.core.windows.net/state", "must use https"),
            ("https://example.com/state", "not a blob endpoint"),
            ("https://acct.blob.core.windows.net/", "names no container"),
            ("https://acct.blob.core.windows.net/Bad--Name", "is not a container name"),
            ("https://acct.blob.core.windows.net/state?sig=x", "AZURE_STORAGE_SAS_TOKEN"),
            ("s3://bucket/prefix", "not a blob endpoint"),
            ("not a url", "is not a URL"),
        ] {
            let e = AzureBlobLocation::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
