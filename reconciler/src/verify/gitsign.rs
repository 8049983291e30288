//! x509 commit signatures made by gitsign (`gpgsig` holding `-----BEGIN SIGNED MESSAGE-----`,
//! a detached CMS SignedData), verified fully offline.
//!
//! gitsign signs the commit with a short-lived Fulcio certificate and logs the signature in
//! Rekor as a `hashedrekord` over the SHA-256 of the CMS signed attributes; the log entry
//! (without its body, which the verifier rebuilds) rides along as the unsigned attribute
//! 1.3.6.1.4.1.57264.3.1, a protobuf `dev.sigstore.rekor.v1.TransparencyLogEntry`.
//!
//! Here: the CMS is parsed (cms, x509-cert), its `messageDigest` must be the SHA-256 of the
//! commit payload, and the embedded entry, the signature and the leaf certificate are put
//! into a sigstore bundle that sigstore-verify checks against the pinned
//! `trusted_root.json`: the Fulcio chain at the log's integrated time, the embedded SCT,
//! the Merkle inclusion proof and its signed checkpoint, the signed entry timestamp, and the
//! signature itself. Identity (certificate SAN) and OIDC issuer (OID 1.3.6.1.4.1.57264.1.8,
//! falling back to .1.1) are then matched against the policy's signers. A signature with no
//! embedded entry is refused: the certificate alone proves nothing once it has expired.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, EncodePem};
use globset::{Glob, GlobMatcher};
use sha2::{Digest, Sha256};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::Bundle;
use sigstore_verify::{VerificationPolicy, Verifier};

/// The unsigned CMS attribute in which gitsign embeds the Rekor entry.
pub const REKOR_ENTRY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.3.1");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// A sigstore identity the policy accepts.
#[derive(Debug, Clone)]
pub struct SigstoreSigner {
    /// The signer's identity in the policy.
    pub name: String,
    /// OIDC issuer, exactly.
    pub issuer: String,
    /// Certificate subject (SAN value: an email address or URI).
    pub subject: Subject,
    /// Where it was configured, for messages.
    pub origin: String,
}

/// How a certificate's subject is matched.
#[derive(Debug, Clone)]
pub enum Subject {
    /// Exactly this value.
    Exact(String),
    /// A glob (`*@example.com`).
    Pattern(String, GlobMatcher),
}

impl Subject {
    /// A glob pattern for subjects.
    pub fn pattern(p: &str) -> Result<Subject, globset::Error> {
        Ok(Subject::Pattern(p.to_owned(), Glob::new(p)?.compile_matcher()))
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Subject::Exact(e) => e == s,
            Subject::Pattern(_, m) => m.is_match(s),
        }
    }
}

/// The trust material and identities of a policy.
pub struct Sigstore {
    verifier: Verifier,
    /// Identities, in policy order.
    pub signers: Vec<SigstoreSigner>,
    /// Whether the leaf must carry a valid SCT from a CT log of the trusted root.
    pub require_sct: bool,
}

impl std::fmt::Debug for Sigstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sigstore").field("signers", &self.signers).field("require_sct", &self.require_sct).finish()
    }
}

impl Sigstore {
    /// Prepares a verifier for `trusted_root` (the JSON of a `trusted_root.json`).
    pub fn new(origin: &str, trusted_root: &str, signers: Vec<SigstoreSigner>, require_sct: bool) -> Result<Sigstore, X509Error> {
        let unusable = |e: &dyn std::fmt::Display| X509Error::Config(format!("{origin}: not a usable trusted_root.json: {e}"));
        let root = TrustedRoot::from_json(trusted_root).map_err(|e| unusable(&e))?;
        let verifier = Verifier::new(&root).map_err(|e| unusable(&e))?;
        Ok(Sigstore { verifier, signers, require_sct })
    }
}

/// What a verified gitsign signature says.
#[derive(Debug)]
pub struct Verified<'a> {
    /// The policy signer it matched.
    pub signer: &'a SigstoreSigner,
    /// When the log integrated it (seconds since the epoch).
    pub log_time: i64,
}

/// Why a sigstore configuration or an x509/gitsign signature is refused; each carries
/// the whole sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The policy's trusted root is not usable.
    #[error("{0}")]
    Config(String),
    /// Not a detached CMS signature with an embedded log entry in gitsign's layout.
    #[error("{0}")]
    Malformed(String),
    /// The signature, certificate chain or log inclusion does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// It verifies, for an identity the policy does not trust.
    #[error("{0}")]
    UnknownSigner(String),
}

/// Verifies an armored gitsign signature over `payload` (the commit without `gpgsig`).
pub fn verify<'a>(armored: &[u8], payload: &[u8], sigstore: &'a Sigstore) -> Result<Verified<'a>, X509Error> {
    use X509Error::Malformed;
    let der = dearmor(armored)?;
    let info = ContentInfo::from_der(&der).map_err(|e| Malformed(format!("malformed CMS signature: {e}")))?;
    if info.content_type != SIGNED_DATA {
        return Err(Malformed(format!("CMS content type {} is not SignedData", info.content_type)));
    }
    let signed: SignedData = info.content.decode_as().map_err(|e| Malformed(format!("malformed CMS SignedData: {e}")))?;
    if signed.encap_content_info.econtent.is_some() {
        return Err(Malformed("the CMS signature embeds its content; a commit signature must be detached".into()));
    }
    let [si] = signed.signer_infos.0.as_slice() else {
        return Err(Malformed(format!("the CMS signature has {} signers; exactly one expected", signed.signer_infos.0.len())));
    };
    if si.digest_alg.oid != SHA256 {
        return Err(Malformed(format!("digest algorithm {} is not SHA-256", si.digest_alg.oid)));
    }
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| Malformed("the CMS signature has no signed attributes".into()))?;
    let digest = attrs
        .iter()
        .find(|a| a.oid == MESSAGE_DIGEST)
        .and_then(|a| a.values.get(0))
        .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok())
        .ok_or_else(|| Malformed("the CMS signature has no messageDigest attribute".into()))?;
    if digest.as_bytes() != Sha256::digest(payload).as_slice() {
        return Err(X509Error::BadSignature("the signature does not match the commit's content (messageDigest differs)".into()));
    }
    let leaf = signed
        .certificates
        .as_ref()
        .and_then(|set| {
            set.0.iter().find_map(|c| match (c, &si.sid) {
                (CertificateChoices::Certificate(cert), SignerIdentifier::IssuerAndSerialNumber(id))
                    if cert.tbs_certificate.issuer == id.issuer && cert.tbs_certificate.serial_number == id.serial_number =>
                {
                    Some(cert)
                }
                _ => None,
            })
        })
        .ok_or_else(|| Malformed("the CMS signature does not carry its signer's certificate".into()))?;
    let entry = si.unsigned_attrs.as_ref().and_then(|u| u.iter().find(|a| a.oid == REKOR_ENTRY_OID)).and_then(|a| a.values.get(0)).ok_or_else(|| Malformed("no transparency-log entry is embedded (gitsign's online mode); without it the short-lived certificate cannot be judged offline".into()))?;
    let entry = entry.decode_as::<der::asn1::OctetString>().map_err(|e| {
        Malformed(format!(
            "the embedded Rekor entry (attribute {REKOR_ENTRY_OID}) is an ASN.1 {} of {} byte(s), and this verifier reads only gitsign's layout, an OCTET STRING holding a protobuf TransparencyLogEntry; that layout is not supported, so the signature is refused ({e})",
            der::Tagged::tag(entry),
            entry.value().len()
        ))
    })?;
    let entry = <rekor::TransparencyLogEntry as prost::Message>::decode(entry.as_bytes()).map_err(|e| {
        Malformed(format!(
            "the embedded Rekor entry (attribute {REKOR_ENTRY_OID}) is an OCTET STRING of {} byte(s) that is not a protobuf TransparencyLogEntry, the only layout this verifier reads; that layout is not supported, so the signature is refused ({e})",
            entry.as_bytes().len()
        ))
    })?;

    let signed_attrs = attrs.to_der().map_err(|e| Malformed(e.to_string()))?;
    let signature = si.signature.as_bytes();
    let leaf_der = leaf.to_der().map_err(|e| Malformed(e.to_string()))?;
    let leaf_pem = leaf.to_pem(der::pem::LineEnding::LF).map_err(|e| Malformed(e.to_string()))?;
    let bundle = bundle(&entry, &signed_attrs, signature, &leaf_der, &leaf_pem)?;
    let mut policy = VerificationPolicy::any_identity();
    if !sigstore.require_sct {
        policy = policy.skip_sct();
    }
    let result = sigstore
        .verifier
        .verify(signed_attrs.as_slice(), &bundle, &policy)
        .map_err(|e| X509Error::BadSignature(format!("sigstore verification failed: {e}")))?;
    let subject = result.identity().map(|s| s.as_str().to_owned()).ok_or_else(|| Malformed("the certificate names no identity".into()))?;
    let issuer = result.issuer().ok_or_else(|| Malformed("the certificate names no OIDC issuer".into()))?.to_owned();
    let log_time =
        result.integrated_time().map(|t| t.as_second()).ok_or_else(|| Malformed("the log entry has no integrated time".into()))?;
    let signer = sigstore.signers.iter().find(|s| s.issuer == issuer && s.subject.matches(&subject)).ok_or_else(|| {
        match sigstore.signers.iter().find(|s| s.subject.matches(&subject)) {
            Some(s) => X509Error::UnknownSigner(format!(
                "signed by {subject} with OIDC issuer {issuer}, but the policy trusts {} only from {}",
                s.name, s.issuer
            )),
            None => X509Error::UnknownSigner(format!("signed by {subject} (OIDC issuer {issuer}), which is not in the policy")),
        }
    })?;
    Ok(Verified { signer, log_time })
}

/// `-----BEGIN SIGNED MESSAGE-----` (or `CMS`) armor to DER.
fn dearmor(armored: &[u8]) -> Result<Vec<u8>, X509Error> {
    use X509Error::Malformed;
    let text = std::str::from_utf8(armored).map_err(|_| Malformed("the x509 signature is not text".into()))?;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
    B64.decode(body).map_err(|e| Malformed(format!("the x509 signature is not base64: {e}")))
}

/// A sigstore bundle (message signature) of the gitsign signature and its log entry, whose
/// `hashedrekord` body is rebuilt as Rekor canonicalised it.
fn bundle(
    entry: &rekor::TransparencyLogEntry,
    signed_attrs: &[u8],
    signature: &[u8],
    leaf_der: &[u8],
    leaf_pem: &str,
) -> Result<Bundle, X509Error> {
    use X509Error::Malformed;
    let kv = entry.kind_version.as_ref().ok_or_else(|| Malformed("the embedded Rekor entry has no kind".into()))?;
    if (kv.kind.as_str(), kv.version.as_str()) != ("hashedrekord", "0.0.1") {
        return Err(Malformed(format!("the embedded Rekor entry is {}/{}, not hashedrekord/0.0.1", kv.kind, kv.version)));
    }
    let digest = Sha256::digest(signed_attrs);
    let body = hashedrekord_body(signed_attrs, signature, leaf_pem);
    let mut tlog = serde_json::json!({
        "logIndex": entry.log_index.to_string(),
        "logId": {"keyId": B64.encode(entry.log_id.as_ref().map(|l| l.key_id.as_slice()).unwrap_or_default())},
        "kindVersion": {"kind": kv.kind, "version": kv.version},
        "integratedTime": entry.integrated_time.to_string(),
        "canonicalizedBody": B64.encode(body),
    });
    if let Some(p) = &entry.inclusion_promise {
        tlog["inclusionPromise"] = serde_json::json!({"signedEntryTimestamp": B64.encode(&p.signed_entry_timestamp)});
    }
    if let Some(p) = &entry.inclusion_proof {
        tlog["inclusionProof"] = serde_json::json!({
            "logIndex": p.log_index.to_string(),
            "rootHash": B64.encode(&p.root_hash),
            "treeSize": p.tree_size.to_string(),
            "hashes": p.hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
            "checkpoint": {"envelope": p.checkpoint.as_ref().map(|c| c.envelope.as_str()).unwrap_or_default()},
        });
    }
    // An entry with only the log's signed promise (no inclusion proof) is what bundle
    // v0.1 carries; v0.3 requires the proof.
    let (media_type, mut material) = if entry.inclusion_proof.is_some() {
        ("application/vnd.dev.sigstore.bundle.v0.3+json", serde_json::json!({"certificate": {"rawBytes": B64.encode(leaf_der)}}))
    } else {
        (
            "application/vnd.dev.sigstore.bundle+json;version=0.1",
            serde_json::json!({"x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(leaf_der)}]}}),
        )
    };
    material["tlogEntries"] = serde_json::json!([tlog]);
    let json = serde_json::json!({
        "mediaType": media_type,
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
            "signature": B64.encode(signature),
        },
    });
    Bundle::from_json(&json.to_string()).map_err(|e| Malformed(format!("the embedded Rekor entry does not form a bundle: {e}")))
}

/// The `hashedrekord` 0.0.1 entry body Rekor stores for a gitsign signature, in the
/// canonical JSON form it hashed into the log.
pub fn hashedrekord_body(signed_attrs: &[u8], signature: &[u8], leaf_pem: &str) -> String {
    let hex: String = Sha256::digest(signed_attrs).iter().map(|b| format!("{b:02x}")).collect();
    // serde_json's map is ordered by key: this is the RFC 8785 form.
    serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex}},
            "signature": {"content": B64.encode(signature), "publicKey": {"content": B64.encode(leaf_pem)}},
        },
    })
    .to_string()
}

/// The protobuf messages of `dev.sigstore.rekor.v1` that gitsign embeds (field numbers from
/// sigstore's protobuf-specs).
pub mod rekor {
    /// A log entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransparencyLogEntry {
        /// Index in the log.
        #[prost(int64, tag = "1")]
        pub log_index: i64,
        /// Which log.
        #[prost(message, optional, tag = "2")]
        pub log_id: Option<LogId>,
        /// Entry type.
        #[prost(message, optional, tag = "3")]
        pub kind_version: Option<KindVersion>,
        /// Seconds since the epoch.
        #[prost(int64, tag = "4")]
        pub integrated_time: i64,
        /// Signed entry timestamp.
        #[prost(message, optional, tag = "5")]
        pub inclusion_promise: Option<InclusionPromise>,
        /// Merkle inclusion proof.
        #[prost(message, optional, tag = "6")]
        pub inclusion_proof: Option<InclusionProof>,
        /// The entry body (gitsign leaves it out).
        #[prost(bytes = "vec", tag = "7")]
        pub canonicalized_body: Vec<u8>,
    }
    /// Log id: SHA-256 of the log's public key.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogId {
        /// Key id.
        #[prost(bytes = "vec", tag = "1")]
        pub key_id: Vec<u8>,
    }
    /// Entry kind and version.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KindVersion {
        /// `hashedrekord`.
        #[prost(string, tag = "1")]
        pub kind: String,
        /// `0.0.1`.
        #[prost(string, tag = "2")]
        pub version: String,
    }
    /// The log's signed promise to include the entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InclusionPromise {
        /// Signature over the entry's canonical JSON.
        #[prost(bytes = "vec", tag = "1")]
        pub signed_entry_timestamp: Vec<u8>,
    }
    /// Proof of inclusion in a tree whose root a signed checkpoint names.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InclusionProof {
        /// Index of the entry in the tree.
        #[prost(int64, tag = "1")]
        pub log_index: i64,
        /// Tree root.
        #[prost(bytes = "vec", tag = "2")]
        pub root_hash: Vec<u8>,
        /// Tree size.
        #[prost(int64, tag = "3")]
        pub tree_size: i64,
        /// Sibling hashes, leaf to root.
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub hashes: Vec<Vec<u8>>,
        /// The signed checkpoint.
        #[prost(message, optional, tag = "5")]
        pub checkpoint: Option<Checkpoint>,
    }
    /// A signed note.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Checkpoint {
        /// Its text.
        #[prost(string, tag = "1")]
        pub envelope: String,
    }
}
