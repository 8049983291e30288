//! The agent API's TLS: TLS 1.3 only, a client certificate required and chained to the
//! configured CA bundle (rustls' `WebPkiClientVerifier`), the identity read from the client
//! certificate's URI and DNS SANs, and the server certificate, key and CA bundle reloaded
//! when their contents change (cert-manager rotates them by swapping a Secret volume's
//! symlink, which an mtime check on the link can miss, so the contents are hashed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use der::Decode;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

/// The files the agent's TLS is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM server private key.
    pub key: PathBuf,
    /// PEM CA bundle the client certificates must chain to.
    pub client_ca: PathBuf,
}

/// A TLS file that does not load.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError { path: path.display().to_string(), message: message.into() }
}

/// The three files' bytes, read once so the hash and the configuration see the same data.
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl Material {
    fn read(files: &TlsFiles) -> Result<Material, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| error(p, format!("cannot be read: {e}")));
        Ok(Material { cert: read(&files.cert)?, key: read(&files.key)?, ca: read(&files.client_ca)? })
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        for part in [&self.cert, &self.key, &self.ca] {
            // Length-prefixed, so moving bytes from one file to the next changes the digest.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn server_config(&self, files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| error(&files.cert, format!("is not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(error(&files.cert, "holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| error(&files.key, format!("is not a PEM private key: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca) {
            let cert = cert.map_err(|e| error(&files.client_ca, format!("is not a PEM CA bundle: {e}")))?;
            roots.add(cert).map_err(|e| error(&files.client_ca, format!("holds a certificate that is not a usable CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(error(&files.client_ca, "holds no CA certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Client certificates are required (the builder's default); no anonymous clients.
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| error(&files.client_ca, format!("cannot verify clients with it: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| error(&files.cert, format!("TLS 1.3 is not available: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| error(&files.key, format!("does not match the certificate in {}: {e}", files.cert.display())))?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Checks that the files make a working server configuration (for `byoc run --check`).
pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
    Material::read(files)?.server_config(files).map(|_| ())
}

/// The server configuration in use, replaced when the files change.
pub struct Reloading {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
    digest: std::sync::Mutex<[u8; 32]>,
}

/// What a reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// New material is in use for new connections.
    Reloaded,
    /// The files changed but do not load; the previous material stays in use.
    Failed,
}

impl Reloading {
    /// Loads the files; fails when they do not make a configuration.
    pub fn load(files: TlsFiles) -> Result<Reloading, TlsError> {
        let material = Material::read(&files)?;
        let config = material.server_config(&files)?;
        Ok(Reloading { digest: std::sync::Mutex::new(material.digest()), current: ArcSwap::new(config), files })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Rereads the files; a change that loads replaces the configuration for new
    /// connections (open ones keep theirs), one that does not is logged and the old kept.
    pub fn reload(&self) -> Reload {
        let material = match Material::read(&self.files) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "agent TLS files unreadable; keeping the loaded certificate");
                return Reload::Failed;
            }
        };
        let digest = material.digest();
        let mut seen = self.digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == digest {
            return Reload::Unchanged;
        }
        match material.server_config(&self.files) {
            Ok(config) => {
                *seen = digest;
                self.current.store(config);
                tracing::info!(cert = %self.files.cert.display(), "agent TLS material reloaded");
                Reload::Reloaded
            }
            // The three files are read one after the other: a rotation landing in between
            // pairs an old certificate with a new key. If the files moved meanwhile, judge
            // them at the next poll instead.
            Err(_) if Material::read(&self.files).map(|m| m.digest()).ok() != Some(digest) => Reload::Unchanged,
            Err(e) => {
                // Remember the failed digest too: a bad rotation is reported once, not
                // every poll.
                *seen = digest;
                tracing::error!(error = %e, "agent TLS files changed but do not load; keeping the previous certificate");
                Reload::Failed
            }
        }
    }
}

/// The identities a client certificate names: its URI SANs (e.g. SPIFFE ids) and DNS SANs.
pub fn identities(leaf: &CertificateDer<'_>) -> Vec<String> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(cert) = x509_cert::Certificate::from_der(leaf.as_ref()) else { return Vec::new() };
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else { continue };
        for name in san.0 {
            match name {
                GeneralName::UniformResourceIdentifier(uri) => out.push(uri.to_string()),
                GeneralName::DnsName(dns) => out.push(dns.to_string()),
                _ => {}
            }
        }
    }
    out
}

/// Why a handshake failed, as a metric label.
pub fn handshake_refusal(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error, PeerIncompatible};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return "handshake_io";
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "expired",
        Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => "not_yet_valid",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        _ => "handshake",
    }
}
