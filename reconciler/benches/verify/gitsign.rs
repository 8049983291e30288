//! The x509/gitsign half of the verify benchmark: a linear history whose commits carry
//! gitsign-format signatures (detached CMS by a Fulcio-style leaf of a test CA), each with
//! its transparency-log entry embedded the way gitsign embeds Rekor's: an inclusion proof
//! in the test log's Merkle tree as it stood when the entry was appended, that tree's
//! signed checkpoint, and the signed entry timestamp. Verification then runs every offline
//! check a real gitsign commit goes through (chain at the integrated time, Merkle proof,
//! checkpoint signature, SET, signature, identity).
//!
//! `openssl` makes the test CA, the leaf, the log key and one template CMS; each commit's
//! CMS is the template with its `messageDigest` set to the commit's digest and re-signed in
//! process (P-256), so generating 1,000 commits does not spawn 3,000 processes.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use byoc::verify::gitsign::{REKOR_ENTRY_OID, hashedrekord_body, rekor};
use byoc::verify::policy::Policy;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, EncodePem};
use git2::{Oid, Repository, Signature, Time};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://issuer.example.com";
const EMAIL: &str = "bench@example.com";
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output()?;
    anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The test PKI: CA, one leaf valid from now for a day, the log's key.
struct Pki {
    leaf_key: SigningKey,
    log_key: SigningKey,
    log_id: Vec<u8>,
    trusted_root: String,
    /// A CMS made by `openssl cms -sign` with the leaf; every commit's signature starts from it.
    template: Vec<u8>,
}

impl Pki {
    fn new(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/O=test/CN=test-fulcio", "-days", "3650"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(dir, &ca)?;
        let raw: String = ISSUER.bytes().map(|b| format!("{b:02X}")).collect();
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,email:{EMAIL}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n1.3.6.1.4.1.57264.1.1=DER:{raw}\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}\n"
            ),
        )?;
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend(["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/"]);
        openssl(dir, &csr)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        )?;
        openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "log.key"])?;
        openssl(dir, &["pkey", "-in", "log.key", "-pubout", "-outform", "DER", "-out", "log.der"])?;
        std::fs::write(dir.join("payload"), b"template")?;
        openssl(
            dir,
            &[
                "cms",
                "-sign",
                "-binary",
                "-md",
                "sha256",
                "-nosmimecap",
                "-signer",
                "leaf.pem",
                "-inkey",
                "leaf.key",
                "-in",
                "payload",
                "-outform",
                "DER",
                "-out",
                "template.der",
            ],
        )?;

        let log_der = std::fs::read(dir.join("log.der"))?;
        let log_id = Sha256::digest(&log_der).to_vec();
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))?;
        let ca_der = x509_cert::Certificate::load_pem_chain(ca_pem.as_bytes())?[0].to_der()?;
        let trusted_root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://log.test", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&log_der), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2000-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(&log_id)},
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "test-fulcio"}, "uri": "https://ca.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&ca_der)}]},
                "validFor": {"start": "2000-01-01T00:00:00Z"},
            }],
            "ctlogs": [],
            "timestampAuthorities": [],
        })
        .to_string();
        Ok(Pki {
            leaf_key: SigningKey::from_pkcs8_pem(&std::fs::read_to_string(dir.join("leaf.key"))?)?,
            log_key: SigningKey::from_pkcs8_pem(&std::fs::read_to_string(dir.join("log.key"))?)?,
            log_id,
            trusted_root,
            template: std::fs::read(dir.join("template.der"))?,
        })
    }
}

/// RFC 6962 hashes.
fn leaf_hash(body: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update([0u8]).chain_update(body).finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update([1u8]).chain_update(left).chain_update(right).finalize().into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]) of RFC 6962 over leaf hashes.
fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
}

/// PATH(m, D[n]) of RFC 6962: sibling hashes from the leaf up.
fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() == 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// A linear history of `n` gitsign-format commits, each changing one of 50 files.
pub fn generate(dir: &Path, n: usize) -> anyhow::Result<(Repository, Oid, Policy)> {
    let pki = Pki::new(&dir.join("pki"))?;
    let repo = Repository::init(dir.join("repo"))?;
    let started = Instant::now();
    let info_template = ContentInfo::from_der(&pki.template)?;
    let template: SignedData = info_template.content.decode_as()?;
    let leaf_pem = match &template.certificates.as_ref().ok_or_else(|| anyhow::anyhow!("template has no certificate"))?.0.as_slice()[0] {
        cms::cert::CertificateChoices::Certificate(c) => c.to_pem(der::pem::LineEnding::LF)?,
        other => anyhow::bail!("template certificate: {other:?}"),
    };
    let logged_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let mut leaves: Vec<[u8; 32]> = Vec::with_capacity(n);
    let mut parent: Option<Oid> = None;
    for i in 0..n {
        let mut tb = match parent {
            Some(p) => repo.treebuilder(Some(&repo.find_commit(p)?.tree()?))?,
            None => repo.treebuilder(None)?,
        };
        tb.insert(format!("cluster-{:02}.yaml", i % 50), repo.blob(format!("replicas: {i}\n").as_bytes())?, 0o100_644)?;
        let tree = repo.find_tree(tb.write()?)?;
        let who = Signature::new("Bench", EMAIL, &Time::new(1_767_225_600 + i as i64, 0))?;
        let parents: Vec<git2::Commit<'_>> = parent.map(|p| repo.find_commit(p)).transpose()?.into_iter().collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let buf = repo.commit_create_buffer(&who, &who, &format!("change {i}"), &tree, &parent_refs)?;
        let text = std::str::from_utf8(&buf)?;

        // The commit's CMS: the template's signed attributes with this payload's digest.
        let mut signed = template.clone();
        let mut si = signed.signer_infos.0.as_slice()[0].clone();
        let digest = der::asn1::OctetString::new(Sha256::digest(text.as_bytes()).to_vec())?;
        let attrs: Vec<x509_cert::attr::Attribute> = si
            .signed_attrs
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("template has no signed attributes"))?
            .iter()
            .map(|a| {
                let mut a = a.clone();
                if a.oid == MESSAGE_DIGEST {
                    a.values = der::asn1::SetOfVec::try_from(vec![der::Any::encode_from(&digest)?])?;
                }
                Ok(a)
            })
            .collect::<anyhow::Result<_>>()?;
        let attrs = der::asn1::SetOfVec::try_from(attrs)?;
        let attrs_der = attrs.to_der()?;
        let signature: DerSignature = pki.leaf_key.sign(&attrs_der);
        si.signed_attrs = Some(attrs);
        si.signature = der::asn1::OctetString::new(signature.as_bytes())?;

        // Appended to the log as entry i: proof against the tree of size i + 1.
        let body = hashedrekord_body(&attrs_der, signature.as_bytes(), &leaf_pem);
        leaves.push(leaf_hash(body.as_bytes()));
        let root_hash = root(&leaves);
        let note = format!("log.test - 1\n{}\n{}\n", leaves.len(), B64.encode(root_hash));
        let note_sig: DerSignature = pki.log_key.sign(note.as_bytes());
        let mut hinted = pki.log_id[..4].to_vec();
        hinted.extend_from_slice(note_sig.as_bytes());
        let checkpoint = format!("{note}\n\u{2014} log.test {}\n", B64.encode(hinted));
        let log_hex: String = pki.log_id.iter().map(|b| format!("{b:02x}")).collect();
        let set_payload =
            format!("{{\"body\":\"{}\",\"integratedTime\":{logged_at},\"logID\":\"{log_hex}\",\"logIndex\":{i}}}", B64.encode(&body));
        let set: DerSignature = pki.log_key.sign(set_payload.as_bytes());
        let entry = rekor::TransparencyLogEntry {
            log_index: i as i64,
            log_id: Some(rekor::LogId { key_id: pki.log_id.clone() }),
            kind_version: Some(rekor::KindVersion { kind: "hashedrekord".into(), version: "0.0.1".into() }),
            integrated_time: logged_at,
            inclusion_promise: Some(rekor::InclusionPromise { signed_entry_timestamp: set.as_bytes().to_vec() }),
            inclusion_proof: Some(rekor::InclusionProof {
                log_index: i as i64,
                root_hash: root_hash.to_vec(),
                tree_size: leaves.len() as i64,
                hashes: path(i, &leaves).iter().map(|h| h.to_vec()).collect(),
                checkpoint: Some(rekor::Checkpoint { envelope: checkpoint }),
            }),
            canonicalized_body: Vec::new(),
        };
        let value = der::asn1::OctetString::new(prost::Message::encode_to_vec(&entry))?;
        let attr = x509_cert::attr::Attribute {
            oid: REKOR_ENTRY_OID,
            values: der::asn1::SetOfVec::try_from(vec![der::Any::encode_from(&value)?])?,
        };
        si.unsigned_attrs = Some(der::asn1::SetOfVec::try_from(vec![attr])?);
        signed.signer_infos = cms::signed_data::SignerInfos(der::asn1::SetOfVec::try_from(vec![si])?);
        let mut info = info_template.clone();
        info.content = der::Any::encode_from(&signed)?;
        let b64 = B64.encode(info.to_der()?);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(std::str::from_utf8).collect::<Result<_, _>>()?;
        let armored = format!("-----BEGIN SIGNED MESSAGE-----\n{}\n-----END SIGNED MESSAGE-----\n", lines.join("\n"));
        parent = Some(repo.commit_signed(text, &armored, None)?);
    }
    let tip = parent.ok_or_else(|| anyhow::anyhow!("no commits"))?;
    println!("generated {n} gitsign-format commits (test CA, test log, inclusion proofs) in {:.1} s", started.elapsed().as_secs_f64());

    let text = format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: SigningPolicy\nmetadata: {{name: bench}}\nspec:\n  version: 1\n  trustedRoot: trusted_root.json\n  requireSct: false\n  signers:\n    - name: bench\n      sigstore: [{{issuer: \"{ISSUER}\", subject: \"{EMAIL}\"}}]\n  rules:\n    - {{paths: [\"**\"], signers: [bench], threshold: 1}}\n  forgeMergeKey: {{trusted: false}}\n"
    );
    let root_json = pki.trusted_root.clone();
    let policy = Policy::parse("bench-policy.yaml", &text, &move |_| Ok(root_json.clone())).map_err(anyhow::Error::msg)?;
    Ok((repo, tip, policy))
}
