//! gitsign (x509/CMS) signatures: the real commits in tests/fixtures/gitsign, signed by
//! gitsign with Fulcio certificates and logged in Rekor, verified offline against the
//! public sigstore trusted root.

use std::path::{Path, PathBuf};

use byoc::verify::gitsign;
use byoc::verify::policy::Policy;
use git2::{Oid, Repository};

const GOOGLE: &str = "https://accounts.google.com";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gitsign")
}

/// The fixture commit stored in a scratch repository under its own id, split as `byoc
/// verify` splits it: (signature, signed payload).
fn signature_of(id: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let raw = std::fs::read(fixtures().join(format!("{id}.commit"))).expect("fixture");
    let odb = repo.odb().expect("odb");
    let oid = odb.write(git2::ObjectType::Commit, &raw).expect("write");
    assert_eq!(oid, Oid::from_str(id).expect("id"), "stored under its original id");
    let split = byoc::verify::commit::parse(&raw, "gpgsig").expect("one signature header");
    let (sig, payload) = (split.signature.expect("signed"), split.payload);
    // On a well-formed commit, the header split agrees with libgit2's.
    let (git_sig, git_payload) = repo.extract_signature(&oid, None).expect("signed");
    assert!(sig == git_sig.to_vec() && payload == git_payload.to_vec(), "{id}: the header split differs from libgit2's");
    (sig, payload)
}

fn policy(signers: &str) -> Policy {
    let text = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: gitsign}}\nspec:\n  version: 1\n  trustedRoot: sigstore-public-good\n  signers:\n{signers}  rules:\n    - {{paths: [\"**\"], signers: [billy, adam], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
    );
    Policy::parse("policy.yaml", &text, &|_| Err("no files".into())).expect("policy loads")
}

fn chainguard() -> Policy {
    policy(&format!(
        "    - name: billy\n      sigstore: [{{issuer: \"{GOOGLE}\", subject: billy@chainguard.dev}}]\n    - name: adam\n      sigstore: [{{issuer: \"{GOOGLE}\", subjectPattern: \"adam.*@chainguard.dev\"}}]\n"
    ))
}

#[test]
fn the_three_commits_with_a_rekor_entry_verify_offline_at_their_log_time() {
    let policy = chainguard();
    let sigstore = policy.sigstore.as_ref().expect("sigstore identities");
    for (id, who) in [
        ("dc68e8ce155fe12ab8fd7c55de6ef336ce716ee8", "billy"),
        ("347014354ef1632fd0bcf69189a99ba6295f0f25", "billy"),
        ("44ed33f7e317e29efa1f0188faa5d2a044fbef76", "adam"),
    ] {
        let (sig, payload) = signature_of(id);
        let v = gitsign::verify(&sig, &payload, sigstore).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(v.signer.name, who, "{id}");
        // Logged in 2026, long after... the certificates lived ten minutes; they are judged then.
        assert!((1_767_225_600..1_798_761_600).contains(&v.log_time), "{id}: log time {}", v.log_time);
    }
}

#[test]
fn a_commit_without_an_embedded_rekor_entry_is_refused_with_that_reason() {
    let policy = policy(&format!(
        "    - name: billy\n      sigstore: [{{issuer: \"{GOOGLE}\", subjectPattern: \"*@chainguard.dev\"}}]\n    - name: adam\n      sigstore: [{{issuer: \"{GOOGLE}\", subject: x}}]\n"
    ));
    let (sig, payload) = signature_of("efb9f4e74328b23de3c0df9cc669c17121fe1758");
    let e = gitsign::verify(&sig, &payload, policy.sigstore.as_ref().expect("sigstore")).expect_err("refused");
    assert!(matches!(e, gitsign::X509Error::Malformed(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("no transparency-log entry is embedded"), "{e}");
}

#[test]
fn a_gitsign_identity_with_the_wrong_issuer_is_refused() {
    let policy = policy(
        "    - name: billy\n      sigstore: [{issuer: \"https://github.com/login/oauth\", subject: billy@chainguard.dev}]\n    - name: adam\n      sigstore: [{issuer: \"https://accounts.google.com\", subject: adam.kaplan@chainguard.dev}]\n",
    );
    let (sig, payload) = signature_of("dc68e8ce155fe12ab8fd7c55de6ef336ce716ee8");
    let e = gitsign::verify(&sig, &payload, policy.sigstore.as_ref().expect("sigstore")).expect_err("refused");
    assert!(matches!(e, gitsign::X509Error::UnknownSigner(_)), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("signed by billy@chainguard.dev with OIDC issuer https://accounts.google.com, but the policy trusts billy only from https://github.com/login/oauth"),
        "{e}"
    );
}

#[test]
fn a_gitsign_signature_over_other_content_is_refused() {
    let (sig, mut payload) = signature_of("44ed33f7e317e29efa1f0188faa5d2a044fbef76");
    let last = payload.len() - 2;
    payload[last] ^= 1;
    let e = gitsign::verify(&sig, &payload, chainguard().sigstore.as_ref().expect("sigstore")).expect_err("refused");
    assert!(matches!(e, gitsign::X509Error::BadSignature(_)), "{e:?}");
    assert!(e.to_string().contains("does not match the commit's content"), "{e}");
}

/// The fixture's signature with its embedded Rekor entry (the unsigned attribute gitsign
/// adds) replaced by `value`, armored again. The attribute is outside what the CMS
/// signature covers, so everything before the entry still checks out.
fn with_rekor_entry(sig: &[u8], value: der::Any) -> Vec<u8> {
    use base64::Engine;
    use cms::content_info::ContentInfo;
    use cms::signed_data::{SignedData, SignerInfos};
    use der::{Decode, Encode};
    let text = String::from_utf8_lossy(sig);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
    let der_bytes = base64::engine::general_purpose::STANDARD.decode(body).expect("base64");
    let mut info = ContentInfo::from_der(&der_bytes).expect("CMS");
    let mut signed: SignedData = info.content.decode_as().expect("SignedData");
    let mut signers = signed.signer_infos.0.into_vec();
    let attrs = signers[0].unsigned_attrs.take().expect("unsigned attributes").into_vec();
    let attrs: Vec<x509_cert::attr::Attribute> = attrs
        .into_iter()
        .map(|mut a| {
            if a.oid == gitsign::REKOR_ENTRY_OID {
                a.values = der::asn1::SetOfVec::try_from(vec![value.clone()]).expect("one value");
            }
            a
        })
        .collect();
    signers[0].unsigned_attrs = Some(der::asn1::SetOfVec::try_from(attrs).expect("attributes"));
    signed.signer_infos = SignerInfos(der::asn1::SetOfVec::try_from(signers).expect("signers"));
    info.content = der::Any::encode_from(&signed).expect("encode");
    let encoded = base64::engine::general_purpose::STANDARD.encode(info.to_der().expect("DER"));
    format!("-----BEGIN SIGNED MESSAGE-----\n{encoded}\n-----END SIGNED MESSAGE-----\n").into_bytes()
}

#[test]
fn a_rekor_entry_in_a_layout_the_verifier_does_not_read_is_refused_saying_what_was_found() {
    let policy = chainguard();
    let sigstore = policy.sigstore.as_ref().expect("sigstore");
    let (sig, payload) = signature_of("dc68e8ce155fe12ab8fd7c55de6ef336ce716ee8");
    // The entry as a SEQUENCE (say, a layout with the entry as ASN.1) instead of gitsign's
    // OCTET STRING around a protobuf message.
    let sequence =
        der::Any::new(der::Tag::Sequence, der::Encode::to_der(&der::asn1::Utf8StringRef::new("entry").expect("utf8")).expect("DER"))
            .expect("any");
    let e = gitsign::verify(&with_rekor_entry(&sig, sequence), &payload, sigstore).expect_err("refused").to_string();
    assert!(e.contains("is an ASN.1 SEQUENCE of 7 byte(s)") && e.contains("that layout is not supported"), "{e}");
    assert!(e.contains("refused") && !e.starts_with("malformed"), "{e}");
    // An OCTET STRING that holds no protobuf TransparencyLogEntry.
    let octets = der::Any::new(der::Tag::OctetString, vec![0xff_u8, 0xff, 0xff, 0xff]).expect("any");
    let e = gitsign::verify(&with_rekor_entry(&sig, octets), &payload, sigstore).expect_err("refused").to_string();
    assert!(e.contains("is an OCTET STRING of 4 byte(s) that is not a protobuf TransparencyLogEntry"), "{e}");
    assert!(e.contains("that layout is not supported"), "{e}");
}
