//! SSH commit signatures: git's `allowed_signers` file format, and SSHSIG verification in
//! namespace `git` (the `ssh-key` crate does the cryptography).

use ssh_key::{PublicKey, SshSig};

/// One accepted SSH key: whose it is, and when and for what it may sign.
#[derive(Debug, Clone)]
pub struct SshSigner {
    /// Principals (an `allowed_signers` file's first column) or the policy signer's name.
    pub principals: Vec<String>,
    /// The key.
    pub key: PublicKey,
    /// Namespaces the key may sign in (`namespaces="git"`); empty means any.
    pub namespaces: Vec<String>,
    /// Seconds since the Unix epoch (UTC) before which the key is not valid.
    pub valid_after: Option<i64>,
    /// Seconds since the Unix epoch (UTC) from which the key is no longer valid.
    pub valid_before: Option<i64>,
    /// Where it was declared (`allowed_signers:3`), for messages.
    pub origin: String,
}

/// Parses an `allowed_signers` file as git and ssh-keygen read it: `principals [options]
/// keytype key [comment]`, with the options `namespaces=`, `valid-after=` and
/// `valid-before=` (timestamps `YYYYMMDD[HHMM[SS]]`, taken as UTC; a trailing `Z` is
/// accepted). `cert-authority` lines are refused: certificates are not supported.
pub fn parse_allowed_signers(file: &str, text: &str) -> Result<Vec<SshSigner>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{file}:{}", i + 1);
        let fields = split_fields(line).map_err(|e| format!("{at}: {e}"))?;
        let mut rest = fields.iter().map(String::as_str);
        let principals: Vec<String> = rest.next().unwrap_or("").trim_matches('"').split(',').map(str::to_owned).collect();
        let (mut namespaces, mut valid_after, mut valid_before) = (Vec::new(), None, None);
        let mut next = rest.next();
        // Options come before the key type; a key type never contains '='.
        if let Some(options) = next
            && !is_key_type(options)
        {
            for opt in split_outside_quotes(options, ',') {
                let (name, value) = opt.split_once('=').map_or((opt, ""), |(n, v)| (n, v.trim_matches('"')));
                match name.to_ascii_lowercase().as_str() {
                    "namespaces" => namespaces = value.split(',').map(str::to_owned).collect(),
                    "valid-after" => valid_after = Some(parse_time(value).map_err(|e| format!("{at}: valid-after: {e}"))?),
                    "valid-before" => valid_before = Some(parse_time(value).map_err(|e| format!("{at}: valid-before: {e}"))?),
                    "cert-authority" => return Err(format!("{at}: cert-authority lines are not supported (sign with plain keys)")),
                    other => return Err(format!("{at}: unknown option {other:?}")),
                }
            }
            next = rest.next();
        }
        let (Some(kind), Some(data)) = (next, rest.next()) else {
            return Err(format!("{at}: expected `principals [options] keytype base64-key [comment]`"));
        };
        let key = PublicKey::from_openssh(&format!("{kind} {data}")).map_err(|e| format!("{at}: not a valid {kind} key: {e}"))?;
        let signer = SshSigner { principals, key, namespaces, valid_after, valid_before, origin: at };
        out.push(signer);
    }
    Ok(out)
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-") || s.starts_with("ecdsa-sha2-") || s.starts_with("sk-")
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, ch) in s.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + ch.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits on whitespace, keeping double-quoted parts (option values may hold spaces and
/// commas) together.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    fields.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        fields.push(cur);
    }
    Ok(fields)
}

/// `YYYYMMDD[HHMM[SS]][Z]` as seconds since the epoch, UTC.
fn parse_time(s: &str) -> Result<i64, String> {
    let digits = s.strip_suffix('Z').unwrap_or(s);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(format!("{s:?} is not YYYYMMDD[HHMM[SS]]"));
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map_or(0, |x| x.parse::<i64>().unwrap_or(0));
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    let (hh, mm, ss) = (n(8..10), n(10..12), n(12..14));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(format!("{s:?} is not a valid time"));
    }
    Ok(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Why an SSH signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshError {
    /// Not an armored SSHSIG.
    Malformed(String),
    /// Signed for another namespace than `git`.
    Namespace(String),
    /// The signing key is in no signer entry.
    UnknownKey(String),
    /// The key is known but not valid at the judged time, or not for namespace `git`.
    NotValid(String),
    /// The signature does not match the commit.
    BadSignature(String),
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshError::Malformed(m)
            | SshError::Namespace(m)
            | SshError::UnknownKey(m)
            | SshError::NotValid(m)
            | SshError::BadSignature(m) => f.write_str(m),
        }
    }
}

/// Verifies an armored SSHSIG over `payload` against the known keys, judging validity at
/// `at` (seconds since the epoch). Returns the matching signer entry.
pub fn verify<'a>(armored: &[u8], payload: &[u8], signers: &'a [SshSigner], at: i64) -> Result<&'a SshSigner, SshError> {
    let text = std::str::from_utf8(armored).map_err(|_| SshError::Malformed("the SSH signature is not ASCII armor".into()))?;
    let sig = SshSig::from_pem(text.trim()).map_err(|e| SshError::Malformed(format!("unreadable SSH signature: {e}")))?;
    if sig.namespace() != "git" {
        return Err(SshError::Namespace(format!("signed in namespace {:?}, not \"git\"", sig.namespace())));
    }
    let key = PublicKey::from(sig.public_key().clone());
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let candidates: Vec<&SshSigner> = signers.iter().filter(|s| s.key.key_data() == key.key_data()).collect();
    if candidates.is_empty() {
        return Err(SshError::UnknownKey(format!("signed with SSH key {fingerprint}, which the policy does not list")));
    }
    key.verify("git", payload, &sig)
        .map_err(|_| SshError::BadSignature(format!("the SSH signature by {fingerprint} does not match the commit's content")))?;
    let mut why = Vec::new();
    for s in candidates {
        if !s.namespaces.is_empty() && !s.namespaces.iter().any(|n| n == "git") {
            why.push(format!("{} allows namespaces {:?}, not git", s.origin, s.namespaces));
        } else if s.valid_after.is_some_and(|t| at < t) {
            why.push(format!("{} is valid only after {}", s.origin, s.valid_after.unwrap_or_default()));
        } else if s.valid_before.is_some_and(|t| at >= t) {
            why.push(format!("{} expired (valid-before) at {}", s.origin, s.valid_before.unwrap_or_default()));
        } else {
            return Ok(s);
        }
    }
    Err(SshError::NotValid(format!("SSH key {fingerprint} is not valid at {at} (first seen): {}", why.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHoZ7F6m5yFQ3mCv4Pn1rG4VYxqkJwTqLqvY4ZgN8m8n";

    #[test]
    fn allowed_signers_lines_with_options_quotes_and_comments() {
        let text = format!(
            "# team\nalice@example.com,alice@corp {KEY} laptop\n\"bob@example.com\" namespaces=\"git,file\",valid-after=\"20260101\",valid-before=\"20261231235959Z\" {KEY}\n"
        );
        let s = parse_allowed_signers("allowed_signers", &text).expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].principals, ["alice@example.com", "alice@corp"]);
        assert_eq!(s[1].namespaces, ["git", "file"]);
        assert_eq!(s[1].valid_after, Some(1_767_225_600));
        assert_eq!(s[1].valid_before, Some(1_798_761_599));
        assert_eq!(s[1].origin, "allowed_signers:3");
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, want) in [
            ("a cert-authority ssh-ed25519 AAAA", "allowed_signers:1: cert-authority"),
            ("a valid-before=\"2026\" ssh-ed25519 AAAA", "allowed_signers:1: valid-before"),
            ("a\n\na", "allowed_signers:1: expected"),
            ("a ssh-ed25519 notbase64", "allowed_signers:1: not a valid ssh-ed25519 key"),
        ] {
            let e = parse_allowed_signers("allowed_signers", text).expect_err(text);
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
