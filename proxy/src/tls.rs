//! TLS termination: certificates loaded from PEM files, one chosen per handshake by the
//! SNI host name, all reloaded when the files change (a bad file keeps the old set).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate chain file and its key file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Failure to load a certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Chooses the certificate whose names cover the SNI host; the first one otherwise.
#[derive(Debug)]
pub struct SniResolver {
    files: Vec<CertFiles>,
    keys: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl SniResolver {
    /// Loads every pair; fails on the first bad file.
    pub fn load(files: Vec<CertFiles>) -> Result<Self, TlsError> {
        let keys = load_all(&files)?;
        Ok(Self { files, keys: ArcSwap::from_pointee(keys) })
    }

    /// Reloads the files; on failure the old certificates stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let keys = load_all(&self.files)?;
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// The files this resolver reads.
    pub fn files(&self) -> &[CertFiles] {
        &self.files
    }
}

thread_local! {
    /// The SNI host name of the ClientHello this thread resolved last, for
    /// [`crate::tls_stream`]: rustls' unbuffered server connection does not say which name
    /// the client sent, and the resolver is the one place that sees it. The handshake
    /// clears it, processes records (which calls the resolver on this thread, inside the
    /// same call), then takes it. Every full handshake calls the resolver, and the server
    /// configuration allows no resumption, so each connection's own name is seen.
    static LAST_SNI: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Takes the SNI host name recorded by the last certificate resolution on this thread.
pub(crate) fn take_sni() -> Option<String> {
    LAST_SNI.with(|s| s.borrow_mut().take())
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        LAST_SNI.with(|s| *s.borrow_mut() = hello.server_name().map(str::to_owned));
        let keys = self.keys.load();
        let covers = |k: &Arc<CertifiedKey>, name: &str| -> bool {
            let Some(leaf) = k.cert.first() else { return false };
            let Ok(server_name) = ServerName::try_from(name) else { return false };
            webpki::EndEntityCert::try_from(leaf).is_ok_and(|c| c.verify_is_valid_for_subject_name(&server_name).is_ok())
        };
        hello.server_name().and_then(|name| keys.iter().find(|k| covers(k, name)).cloned()).or_else(|| keys.first().cloned())
    }
}

fn load_all(files: &[CertFiles]) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    files.iter().map(load_pair).collect()
}

fn load_pair(files: &CertFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let err = |path: &PathBuf, message: String| TlsError::File { path: path.display().to_string(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(&files.cert, "no certificate in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| err(&files.key, e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A server configuration using `resolver`, for TLS 1.2 and 1.3, without session
/// resumption.
///
/// No resumption: libpq never resumes a TLS session, so tickets (two per TLS 1.3
/// handshake by default, each with random numbers drawn and a cache entry kept) cost every
/// handshake for nothing; and a resumed handshake would skip the certificate resolver,
/// through which [`crate::tls_stream`] learns the SNI host name that routes the connection.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(resolver.clone()));
    // The ring provider supports the default versions; should that ever fail, fall back to
    // the builder's defaults rather than run without TLS.
    let mut config = config.unwrap_or_else(|_| rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver));
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Arc::new(config)
}

/// A client configuration for TLS to backends: their certificates must chain to one of the
/// certificates in `ca` (PEM) and name the host dialled.
pub fn backend_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let err = |message: String| TlsError::File { path: ca.display().to_string(), message };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
