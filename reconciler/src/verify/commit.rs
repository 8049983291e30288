//! A commit object read as git writes it: the signature and the parents come from the
//! object's header, never from what libgit2 makes of it (libgit2 searches the whole object
//! for a `gpgsig` field, message included, and applies grafts and shallow boundaries to
//! the parents).

use git2::{Oid, Repository};

/// The parts of a raw commit object verification needs.
#[derive(Debug)]
pub struct RawCommit {
    /// The signature header's value (continuation lines joined), if any.
    pub signature: Option<Vec<u8>>,
    /// The object without the signature header: what the signature covers.
    pub payload: Vec<u8>,
    /// The `parent` lines of the header, in order.
    pub parents: Vec<String>,
}

/// Why a raw commit cannot be judged.
#[derive(Debug, thiserror::Error)]
pub enum RawCommitError {
    /// The object could not be read.
    #[error("cannot read commit {0}: {1}")]
    Read(Oid, String),
    /// More than one signature header.
    #[error("commit {0} has more than one `{1}` header; git would not write that")]
    TwoSignatures(Oid, String),
}

/// Reads commit `oid` and splits its header. `field` names the signature header
/// (`gpgsig` in SHA-1 repositories, `gpgsig-sha256` in SHA-256 ones).
pub fn read(repo: &Repository, oid: Oid, field: &str) -> Result<RawCommit, RawCommitError> {
    let odb = repo.odb().map_err(|e| RawCommitError::Read(oid, e.message().to_owned()))?;
    let object = odb.read(oid).map_err(|e| RawCommitError::Read(oid, e.message().to_owned()))?;
    parse(object.data(), field).ok_or_else(|| RawCommitError::TwoSignatures(oid, field.to_owned()))
}

/// Splits a raw commit object; `None` when it carries the signature header twice.
pub fn parse(raw: &[u8], field: &str) -> Option<RawCommit> {
    // The header ends at the first empty line; the message after it is never a header.
    let header_end = raw.windows(2).position(|w| w == b"\n\n").map_or(raw.len(), |i| i + 1);
    let (header, message) = raw.split_at(header_end);
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut parents = Vec::new();
    let mut in_signature = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if let Some(continued) = line.strip_prefix(b" ") {
            if in_signature {
                signature.get_or_insert_with(Vec::new).extend_from_slice(continued);
            } else {
                payload.extend_from_slice(line);
            }
            continue;
        }
        in_signature = false;
        let (name, value) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if name == field.as_bytes() {
            if signature.is_some() {
                return None;
            }
            signature = Some(value.to_vec());
            in_signature = true;
            continue;
        }
        if name == b"parent" {
            parents.push(String::from_utf8_lossy(value).trim().to_owned());
        }
        payload.extend_from_slice(line);
    }
    payload.extend_from_slice(message);
    // As libgit2 hands it out: the continuation lines joined, without the last newline.
    if let Some(sig) = &mut signature
        && sig.ends_with(b"\n")
    {
        sig.pop();
    }
    Some(RawCommit { signature, payload, parents })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 1111111111111111111111111111111111111111\nauthor A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n\nmessage\n";

    #[test]
    fn the_signature_comes_out_of_the_header_and_the_rest_is_the_payload() {
        let c = parse(SIGNED.as_bytes(), "gpgsig").expect("parses");
        assert_eq!(c.signature.as_deref(), Some(&b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----"[..]));
        assert_eq!(
            String::from_utf8_lossy(&c.payload),
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 1111111111111111111111111111111111111111\nauthor A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\n\nmessage\n"
        );
        assert_eq!(c.parents, ["1111111111111111111111111111111111111111"]);
    }

    #[test]
    fn a_signature_block_in_the_message_is_not_a_signature() {
        let moved = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\n\nmessage\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n";
        let c = parse(moved.as_bytes(), "gpgsig").expect("parses");
        assert!(c.signature.is_none());
        assert_eq!(c.payload, moved.as_bytes());
    }

    #[test]
    fn two_signature_headers_are_refused_and_the_other_hash_field_stays_in_the_payload() {
        let twice = SIGNED.replace("\n\nmessage", "\ngpgsig second\n\nmessage");
        assert!(parse(twice.as_bytes(), "gpgsig").is_none());
        let c = parse(SIGNED.as_bytes(), "gpgsig-sha256").expect("parses");
        assert!(c.signature.is_none());
        assert_eq!(c.payload, SIGNED.as_bytes());
    }
}
