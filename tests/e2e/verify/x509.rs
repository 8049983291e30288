//! x509 commit signatures made by git itself (`gpg.format=x509`) through
//! tests/x509/openssl-gpgsm.sh, a wrapper around `openssl cms -sign`, with a test CA whose
//! leaves carry Fulcio's extensions. A test transparency log (a P-256 key made by openssl
//! that signs entry timestamps, as Rekor does) embeds the entry gitsign would, so the range
//! goes through the same offline checks as the real gitsign fixtures, against a test
//! `trusted_root.json` naming the test CA and the test log.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use byoc::verify::gitsign::{REKOR_ENTRY_OID, hashedrekord_body, rekor};
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::{Decode, Encode, EncodePem};
use sha2::{Digest, Sha256};

use super::Signed;
use crate::support::{TestCa, openssl};

const ISSUER: &str = "https://issuer.example.com";

/// A test CA, a test log key, and leaves issued by the CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: PathBuf) -> Pki {
        TestCa::new(&dir, "/O=test/CN=test-fulcio");
        openssl(&dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "log.key"]);
        openssl(&dir, &["pkey", "-in", "log.key", "-pubout", "-outform", "DER", "-out", "log.der"]);
        Pki { dir }
    }

    /// A Fulcio-style leaf (empty subject, critical email SAN, OIDC issuer in .1.1 and .1.8,
    /// code signing), valid from now for `days`; returns (certificate, key) paths.
    fn leaf(&self, name: &str, email: &str, issuer: &str, days: u32) -> (String, String) {
        let raw: String = issuer.bytes().map(|b| format!("{b:02X}")).collect();
        let ext = format!(
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,email:{email}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n1.3.6.1.4.1.57264.1.1=DER:{raw}\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{issuer}\n"
        );
        let (pem, key) = TestCa { dir: self.dir.clone() }.issue(name, "/", &ext, days);
        (pem.display().to_string(), key.display().to_string())
    }

    fn log_id(&self) -> Vec<u8> {
        Sha256::digest(std::fs::read(self.dir.join("log.der")).expect("log key")).to_vec()
    }

    /// `trusted_root.json` with the test CA and the test log.
    fn trusted_root(&self) -> String {
        let pem = std::fs::read_to_string(self.dir.join("ca.pem")).expect("ca");
        let ca = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).expect("pem")[0].to_der().expect("der");
        let log = std::fs::read(self.dir.join("log.der")).expect("log key");
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://log.test", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&log), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2000-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(self.log_id())},
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "test-fulcio"}, "uri": "https://ca.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&ca)}]},
                "validFor": {"start": "2000-01-01T00:00:00Z"},
            }],
            "ctlogs": [],
            "timestampAuthorities": [],
        })
        .to_string()
    }

    /// The commit object `raw` with a log entry for its signature embedded the way gitsign
    /// embeds Rekor's, integrated at `time` (seconds since the epoch).
    fn log(&self, raw: &str, time: i64) -> String {
        let (head, rest) = raw.split_once("\ngpgsig ").expect("signed commit");
        let end = rest.find("-----END SIGNED MESSAGE-----").expect("armor end") + "-----END SIGNED MESSAGE-----".len();
        let (armored, tail) = rest.split_at(end);
        let body: String = armored.lines().filter(|l| !l.trim().starts_with("-----")).map(str::trim).collect();
        let der = B64.decode(body).expect("base64");
        let mut info = ContentInfo::from_der(&der).expect("cms");
        let mut signed: SignedData = info.content.decode_as().expect("signed data");
        let mut si = signed.signer_infos.0.as_slice()[0].clone();
        let attrs = si.signed_attrs.as_ref().expect("signed attributes").to_der().expect("der");
        let leaf = match &signed.certificates.as_ref().expect("certs").0.as_slice()[0] {
            cms::cert::CertificateChoices::Certificate(c) => c.to_pem(der::pem::LineEnding::LF).expect("pem"),
            other => panic!("{other:?}"),
        };
        let body = hashedrekord_body(&attrs, si.signature.as_bytes(), &leaf);
        let log_id = self.log_id();
        let payload = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{time},\"logID\":\"{}\",\"logIndex\":0}}",
            B64.encode(&body),
            log_id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        std::fs::write(self.dir.join("set.payload"), payload).expect("write");
        openssl(&self.dir, &["dgst", "-sha256", "-sign", "log.key", "-out", "set.sig", "set.payload"]);
        let entry = rekor::TransparencyLogEntry {
            log_index: 0,
            log_id: Some(rekor::LogId { key_id: log_id }),
            kind_version: Some(rekor::KindVersion { kind: "hashedrekord".into(), version: "0.0.1".into() }),
            integrated_time: time,
            inclusion_promise: Some(rekor::InclusionPromise {
                signed_entry_timestamp: std::fs::read(self.dir.join("set.sig")).expect("sig"),
            }),
            inclusion_proof: None,
            canonicalized_body: Vec::new(),
        };
        let value = der::asn1::OctetString::new(prost::Message::encode_to_vec(&entry)).expect("octets");
        let attr = x509_cert::attr::Attribute {
            oid: REKOR_ENTRY_OID,
            values: der::asn1::SetOfVec::try_from(vec![der::Any::encode_from(&value).expect("any")]).expect("set"),
        };
        si.unsigned_attrs = Some(der::asn1::SetOfVec::try_from(vec![attr]).expect("set"));
        signed.signer_infos = cms::signed_data::SignerInfos(der::asn1::SetOfVec::try_from(vec![si]).expect("signer infos"));
        info.content = der::Any::encode_from(&signed).expect("any");
        let der = info.to_der().expect("der");
        let b64 = B64.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
        let armored = format!("-----BEGIN SIGNED MESSAGE-----\n {}\n -----END SIGNED MESSAGE-----", lines.join("\n "));
        format!("{head}\ngpgsig {armored}{tail}")
    }
}

impl Signed {
    /// A policy with x509 signers (name, email) from `ISSUER`, trusting the test root.
    fn x509_policy(&self, pki: &Pki, people: &[(&str, &str)]) {
        std::fs::write(self.dir.path().join("trusted_root.json"), pki.trusted_root()).expect("write");
        let signers: String = people
            .iter()
            .map(|(n, e)| format!("    - name: {n}\n      sigstore: [{{issuer: \"{ISSUER}\", subject: \"{e}\"}}]\n"))
            .collect();
        let names: Vec<&str> = people.iter().map(|(n, _)| *n).collect();
        let policy = format!(
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: x509}}\nspec:\n  version: 1\n  trustedRoot: trusted_root.json\n  requireSct: false\n  signers:\n{signers}  rules:\n    - {{paths: [\"**\"], signers: {names:?}, threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
        );
        std::fs::write(self.dir.path().join("policy.yaml"), policy).expect("write");
    }

    /// Commits everything, signed by git through the openssl wrapper with (cert, key); when
    /// `logged_at` is given, the signature is then logged and HEAD replaced by the commit
    /// carrying the entry. Returns HEAD.
    fn commit_x509(&mut self, leaf: &(String, String), message: &str, log: Option<(&Pki, i64)>) -> String {
        self.git(&["add", "-A"]);
        let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/x509/openssl-gpgsm.sh").display().to_string();
        let program = format!("gpg.x509.program={wrapper}");
        let env = [("X509_LEAF", leaf.0.as_str()), ("X509_KEY", leaf.1.as_str())];
        self.git_with(
            &["-c", "gpg.format=x509", "-c", &program, "-c", "user.signingkey=test", "commit", "-q", "--allow-empty", "-S", "-m", message],
            &env,
        );
        if let Some((pki, time)) = log {
            let raw = self.git(&["cat-file", "commit", "HEAD"]);
            let path = self.dir.path().join("logged");
            std::fs::write(&path, format!("{}\n", pki.log(&raw, time))).expect("write");
            let id = self.git(&["hash-object", "-t", "commit", "-w", &path.display().to_string()]);
            self.git(&["update-ref", "HEAD", &id]);
        }
        self.git(&["rev-parse", "HEAD"])
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

#[test]
fn an_x509_commit_logged_while_its_certificate_was_valid_verifies_and_one_not_logged_is_refused() {
    let mut s = Signed::new();
    let pki = Pki::new(s.dir.path().join("pki"));
    let alice = pki.leaf("alice", "alice@example.com", ISSUER, 1);
    s.x509_policy(&pki, &[("alice", "alice@example.com")]);
    s.write("env/a.yaml", "a: 1\n");
    let tip = s.commit_x509(&alice, "logged", Some((&pki, now())));
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("x509") && run.stdout.contains("alice"), "{}", run.stdout);
    assert_eq!(s.last_verified().as_deref(), Some(tip.as_str()));
    // Signed by the same certificate through git and openssl, but never logged.
    s.write("env/b.yaml", "b: 1\n");
    s.commit_x509(&alice, "not logged", None);
    s.assert_refused("no transparency-log entry is embedded", &tip);
}

#[test]
fn an_x509_certificate_outside_its_validity_at_the_log_time_is_refused() {
    let mut s = Signed::new();
    let pki = Pki::new(s.dir.path().join("pki"));
    let alice = pki.leaf("alice", "alice@example.com", ISSUER, 1);
    s.x509_policy(&pki, &[("alice", "alice@example.com")]);
    s.write("env/a.yaml", "a: 1\n");
    // The certificate starts now; the log says it saw the signature two days earlier.
    s.commit_x509(&alice, "logged before the certificate existed", Some((&pki, now() - 2 * 86_400)));
    let run = s.verify(&[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("sigstore verification failed: certificate chain is invalid") && run.stdout.contains("CertNotValidYet"),
        "{}",
        run.stdout
    );
    assert_eq!(s.last_verified(), None);
}

#[test]
fn an_x509_identity_from_the_wrong_issuer_or_a_forged_log_entry_is_refused() {
    let mut s = Signed::new();
    let pki = Pki::new(s.dir.path().join("pki"));
    let mallory = pki.leaf("mallory", "alice@example.com", "https://evil.example.com", 1);
    s.x509_policy(&pki, &[("alice", "alice@example.com")]);
    s.write("env/a.yaml", "a: 1\n");
    s.commit_x509(&mallory, "right name, wrong issuer", Some((&pki, now())));
    let run = s.verify(&[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("with OIDC issuer https://evil.example.com, but the policy trusts alice only from https://issuer.example.com"),
        "{}",
        run.stdout
    );
    // A log nobody trusts: same shape, another key.
    let alice = pki.leaf("alice", "alice@example.com", ISSUER, 1);
    let rogue = Pki::new(s.dir.path().join("rogue"));
    std::fs::copy(pki.dir.join("ca.pem"), rogue.dir.join("ca.pem")).expect("copy");
    s.git(&["update-ref", "-d", "HEAD"]); // start over: the next commit is a root
    s.commit_x509(&alice, "logged by a rogue log", Some((&rogue, now())));
    let run = s.verify(&[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(!run.stdout.contains("right name, wrong issuer"), "{}", run.stdout);
    assert!(run.stdout.contains("\"logged by a rogue log\"): sigstore verification failed: invalid inclusion promise"), "{}", run.stdout);
    assert_eq!(s.last_verified(), None);
}
