//! OpenPGP commit signatures (`gpgsig` holding `-----BEGIN PGP SIGNATURE-----`), checked
//! with rPGP against the certificates the policy lists.
//!
//! rPGP checks the signature mathematics; which key may sign, and when, is decided here:
//! - the key is found by the signature's issuer fingerprint (or key id), primary or subkey;
//! - every self-signature, binding and revocation of a certificate is checked when the
//!   policy loads, so a forged binding never counts;
//! - a subkey must carry the signing flag in its newest binding made at or before the
//!   judgement time, and the primary key too when its self-signature has key flags;
//! - expiry (key expiration time of the newest self-signature or binding) and revocation
//!   are judged at the time the reconciler first saw the commit. A revocation for key
//!   compromise, or without a reason, makes every signature of that key invalid whenever it
//!   was made; "superseded" and "retired" only take effect from their own date.

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Timestamp};

/// Why an OpenPGP certificate or signature is refused; each carries the whole sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgpError {
    /// A configured certificate does not parse, or one of its bindings does not verify.
    #[error("{0}")]
    Certificate(String),
    /// Not an armored data signature.
    #[error("{0}")]
    Malformed(String),
    /// The issuing key is in no certificate of the policy.
    #[error("{0}")]
    UnknownKey(String),
    /// The key is known but not valid at the judged time (revoked, expired, not yet
    /// created or bound, not marked for signing).
    #[error("{0}")]
    NotValid(String),
    /// The signature does not match the commit.
    #[error("{0}")]
    BadSignature(String),
}

/// An OpenPGP certificate the policy accepts, and whose it is.
#[derive(Debug, Clone)]
pub struct PgpSigner {
    /// The signer's identity.
    pub name: String,
    /// The certificate, its bindings already checked.
    pub cert: SignedPublicKey,
    /// Where it was configured, for messages.
    pub origin: String,
}

impl PgpSigner {
    /// Parses an armored public key and checks all its self-signatures and bindings.
    pub fn parse(name: &str, armored: &str, origin: String) -> Result<PgpSigner, PgpError> {
        let (cert, _) = SignedPublicKey::from_string(armored)
            .map_err(|e| PgpError::Certificate(format!("{origin}: not an OpenPGP public key: {e}")))?;
        cert.verify_bindings().map_err(|e| PgpError::Certificate(format!("{origin}: a self-signature or binding does not verify: {e}")))?;
        Ok(PgpSigner { name: name.to_owned(), cert, origin })
    }

    /// The primary key's fingerprint in upper-case hex.
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.cert.primary_key.fingerprint())
    }
}

/// Verifies an armored detached signature over `payload` at time `at` (seconds since the
/// epoch); returns the signer whose key made it, or why not.
pub fn verify<'a>(armored: &[u8], payload: &[u8], signers: &'a [PgpSigner], at: i64) -> Result<&'a PgpSigner, PgpError> {
    use PgpError::{BadSignature, Malformed, NotValid};
    let (sig, _) = DetachedSignature::from_armor_single(armored).map_err(|e| Malformed(format!("malformed OpenPGP signature: {e}")))?;
    let sig = sig.signature;
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(Malformed(format!("OpenPGP signature of type {:?}, not a data signature", sig.typ())));
    }
    let issuer = issuer_text(&sig);
    let (signer, key) = signers
        .iter()
        .find_map(|s| find_key(&s.cert, &sig).map(|k| (s, k)))
        .ok_or_else(|| PgpError::UnknownKey(format!("signed by OpenPGP key {issuer}, which is not in the policy")))?;
    let who = format!("{} (OpenPGP key {issuer})", signer.name);
    let cert = &signer.cert;
    let primary_self = newest_at(cert.details.users.iter().flat_map(|u| u.signatures.iter()).chain(&cert.details.direct_signatures), at);
    if let Some(r) = revoked(&cert.details.revocation_signatures, at) {
        return Err(NotValid(format!("{who}: its certificate is revoked ({r})")));
    }
    expired(cert.primary_key.created_at(), primary_self, at).map_err(|e| NotValid(format!("{who}: its certificate {e}")))?;
    match key {
        Key::Primary => {
            if let Some(s) = primary_self
                && has_key_flags(s)
                && !s.key_flags().sign()
            {
                return Err(NotValid(format!("{who}: the primary key is not marked for signing")));
            }
            not_before(cert.primary_key.created_at(), at).map_err(|e| NotValid(format!("{who}: {e}")))?;
            sig.verify(&cert.primary_key, payload)
                .map_err(|e| BadSignature(format!("{who}: the signature does not match the commit: {e}")))?;
        }
        Key::Sub(i) => {
            let sub = &cert.public_subkeys[i];
            let bindings = sub.signatures.iter().filter(|s| s.typ() == Some(SignatureType::SubkeyBinding));
            let revocations: Vec<Signature> =
                sub.signatures.iter().filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation)).cloned().collect();
            if let Some(r) = revoked(&revocations, at) {
                return Err(NotValid(format!("{who}: the subkey is revoked ({r})")));
            }
            let binding =
                newest_at(bindings, at).ok_or_else(|| NotValid(format!("{who}: the subkey was not bound to the certificate yet")))?;
            if !binding.key_flags().sign() {
                return Err(NotValid(format!("{who}: the subkey is not marked for signing")));
            }
            expired(sub.key.created_at(), Some(binding), at).map_err(|e| NotValid(format!("{who}: the subkey {e}")))?;
            not_before(sub.key.created_at(), at).map_err(|e| NotValid(format!("{who}: {e}")))?;
            sig.verify(&sub.key, payload).map_err(|e| BadSignature(format!("{who}: the signature does not match the commit: {e}")))?;
        }
    }
    Ok(signer)
}

enum Key {
    Primary,
    Sub(usize),
}

/// The key of `cert` the signature names as its issuer.
fn find_key(cert: &SignedPublicKey, sig: &Signature) -> Option<Key> {
    if names(sig, &cert.primary_key) {
        return Some(Key::Primary);
    }
    cert.public_subkeys.iter().position(|s| names(sig, &s.key)).map(Key::Sub)
}

fn names(sig: &Signature, key: &impl KeyDetails) -> bool {
    let (fp, id) = (key.fingerprint(), key.legacy_key_id());
    sig.issuer_fingerprint().iter().any(|f| **f == fp) || sig.issuer_key_id().iter().any(|i| **i == id)
}

fn issuer_text(sig: &Signature) -> String {
    if let Some(f) = sig.issuer_fingerprint().first() {
        return format!("{f:X}");
    }
    sig.issuer_key_id().first().map(|i| i.as_ref().iter().map(|b| format!("{b:02X}")).collect()).unwrap_or_else(|| "(no issuer)".into())
}

fn secs(t: Timestamp) -> i64 {
    i64::from(t.as_secs())
}

/// The newest signature made at or before `at`.
fn newest_at<'a>(sigs: impl Iterator<Item = &'a Signature>, at: i64) -> Option<&'a Signature> {
    sigs.filter(|s| s.created().is_some_and(|c| secs(c) <= at)).max_by_key(|s| s.created().map(secs))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| c.hashed_subpackets().any(|p| matches!(p.data, pgp::packet::SubpacketData::KeyFlags(_))))
}

/// Whether a revocation applies at `at`: hard ones (compromise, no reason) always, soft
/// ones (superseded, retired) from their creation time.
fn revoked(revocations: &[Signature], at: i64) -> Option<String> {
    revocations.iter().find_map(|r| {
        let code = r.revocation_reason_code();
        let soft = matches!(code, Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired));
        let since = r.created().map_or(i64::MIN, secs);
        (!soft || since <= at).then(|| format!("{}, since {}", code.map_or_else(|| "no reason given".into(), |c| format!("{c:?}")), since))
    })
}

/// Refuses when the key-expiration time of `self_sig` has passed at `at`.
fn expired(created: Timestamp, self_sig: Option<&Signature>, at: i64) -> Result<(), String> {
    let Some(life) = self_sig.and_then(Signature::key_expiration_time) else { return Ok(()) };
    let until = secs(created) + i64::from(life.as_secs());
    if life.as_secs() != 0 && at >= until {
        return Err(format!("expired at {until} (judged at {at}, when the commit was first seen)"));
    }
    Ok(())
}

fn not_before(created: Timestamp, at: i64) -> Result<(), String> {
    if secs(created) > at {
        return Err(format!("the key was created at {}, after the commit was first seen ({at})", secs(created)));
    }
    Ok(())
}
