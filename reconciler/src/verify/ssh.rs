//! SSH commit signatures: git's `allowed_signers` file format, and SSHSIG verification in
//! namespace `git` (the `ssh-key` crate does the cryptography).
//!
//! Which line of an `allowed_signers` file judges a signature follows what `git
//! verify-commit` gets from `ssh-keygen`: git asks `ssh-keygen -Y find-principals` for the
//! principals of the *first* line whose key matches and whose validity window holds the
//! time (the namespace is not looked at there), then runs `ssh-keygen -Y verify -I P -n git`
//! for each of those principals in turn; verify accepts if any line naming `P` with the
//! same key allows namespace `git` at that time. [`verify`] makes the same two steps, so a
//! key listed on several lines is judged as git judges it. Where ssh-keygen would refuse a
//! line (repeated or unknown options, unquoted values, `valid-before` not after
//! `valid-after`), the whole policy is refused when it loads, with the line; patterns and
//! `!` negations in the principals column are refused too, since an identity must be a name.

use ssh_key::{PublicKey, SshSig};

/// One accepted SSH key: whose it is, and when and for what it may sign.
#[derive(Debug, Clone)]
pub struct SshSigner {
    /// Principals (an `allowed_signers` file's first column) or the policy signer's name.
    pub principals: Vec<String>,
    /// The key.
    pub key: PublicKey,
    /// `namespaces="…"`: a pattern list as ssh-keygen reads it (`*`, `?`, `!` negation);
    /// `None` means any namespace.
    pub namespaces: Option<String>,
    /// Seconds since the Unix epoch (UTC) before which the key is not valid.
    pub valid_after: Option<i64>,
    /// Seconds since the Unix epoch (UTC) after which the key is no longer valid.
    pub valid_before: Option<i64>,
    /// Where it was declared (`allowed_signers:3`), for messages.
    pub origin: String,
}

impl SshSigner {
    /// A key with no options, as a policy's inline `sshKeys` declare them.
    pub fn plain(principal: &str, key: PublicKey, origin: String) -> SshSigner {
        SshSigner { principals: vec![principal.to_owned()], key, namespaces: None, valid_after: None, valid_before: None, origin }
    }

    fn valid_at(&self, at: i64) -> bool {
        self.valid_after.is_none_or(|t| at >= t) && self.valid_before.is_none_or(|t| at <= t)
    }

    fn allows_git(&self) -> bool {
        self.namespaces.as_deref().is_none_or(|list| match_pattern_list("git", list) == 1)
    }
}

/// Parses an `allowed_signers` file as ssh-keygen reads it: `principals [options] keytype
/// key [comment]`, with the options `namespaces="…"`, `valid-after="…"` and
/// `valid-before="…"` (values in double quotes; option names in any case; timestamps
/// `YYYYMMDD[HHMM[SS]]`, taken as UTC; a trailing `Z` is accepted). Every line ssh-keygen
/// would refuse is refused here, with its line.
pub fn parse_allowed_signers(file: &str, text: &str) -> Result<Vec<SshSigner>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{file}:{}", i + 1);
        out.push(parse_line(line).map_err(|e| format!("{at}: {e}"))?.with_origin(at));
    }
    Ok(out)
}

impl SshSigner {
    fn with_origin(mut self, origin: String) -> SshSigner {
        self.origin = origin;
        self
    }
}

fn parse_line(line: &str) -> Result<SshSigner, String> {
    let fields = split_fields(line)?;
    let mut rest = fields.iter().map(String::as_str);
    let principals: Vec<String> = rest.next().unwrap_or("").trim_matches('"').split(',').map(str::to_owned).collect();
    if let Some(p) = principals.iter().find(|p| p.is_empty() || p.contains(['*', '?', '!'])) {
        return Err(format!(
            "principal {p:?}: patterns, negations and empty names are not supported in the principals column (name each signer)"
        ));
    }
    let mut signer =
        SshSigner { principals, key: placeholder_key(), namespaces: None, valid_after: None, valid_before: None, origin: String::new() };
    let mut next = rest.next();
    // Options come before the key type; a key type never contains '='.
    if let Some(options) = next
        && !is_key_type(options)
    {
        parse_options(options, &mut signer)?;
        next = rest.next();
    }
    let (Some(kind), Some(data)) = (next, rest.next()) else {
        return Err("expected `principals [options] keytype base64-key [comment]`".into());
    };
    signer.key = PublicKey::from_openssh(&format!("{kind} {data}")).map_err(|e| format!("not a valid {kind} key: {e}"))?;
    Ok(signer)
}

/// The options field, with ssh-keygen's rules: each option at most once, values quoted.
fn parse_options(options: &str, signer: &mut SshSigner) -> Result<(), String> {
    for opt in split_outside_quotes(options, ',') {
        let (name, value) = opt.split_once('=').map_or((opt, None), |(n, v)| (n, Some(v)));
        let name = name.to_ascii_lowercase();
        let quoted = |what: &str| -> Result<String, String> {
            let v = value.ok_or_else(|| format!("option {what} needs a value"))?;
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned)
                .ok_or_else(|| format!("option {what}: the value must be in double quotes, as ssh-keygen requires"))
        };
        let once = |set: bool| if set { Err(format!("option {name} given twice (ssh-keygen refuses such a line)")) } else { Ok(()) };
        match name.as_str() {
            "namespaces" => {
                once(signer.namespaces.is_some())?;
                signer.namespaces = Some(quoted("namespaces")?);
            }
            "valid-after" => {
                once(signer.valid_after.is_some())?;
                signer.valid_after = Some(parse_time(&quoted("valid-after")?).map_err(|e| format!("valid-after: {e}"))?);
            }
            "valid-before" => {
                once(signer.valid_before.is_some())?;
                signer.valid_before = Some(parse_time(&quoted("valid-before")?).map_err(|e| format!("valid-before: {e}"))?);
            }
            "cert-authority" => return Err("cert-authority lines are not supported (sign with plain keys)".into()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if let (Some(after), Some(before)) = (signer.valid_after, signer.valid_before)
        && before <= after
    {
        return Err("valid-before is not after valid-after".into());
    }
    Ok(())
}

/// A key that is never used: [`parse_line`] replaces it before returning.
fn placeholder_key() -> PublicKey {
    PublicKey::from(ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([0; 32])))
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

/// OpenSSH's `match_pattern_list`: 1 when a pattern of the comma-separated `list` matches
/// `s` and no negated (`!`) one does, -1 when a negated one matches, 0 otherwise.
pub fn match_pattern_list(s: &str, list: &str) -> i32 {
    let mut got = 0;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(s.as_bytes(), pattern.as_bytes()) {
            if negated {
                return -1;
            }
            got = 1;
        }
    }
    got
}

/// `*` matches any run of bytes, `?` one byte; everything else itself.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_pattern(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && match_pattern(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && match_pattern(&s[1..], rest),
    }
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

/// A verified SSH signature: the identity git would report and the line that allowed it.
#[derive(Debug)]
pub struct Verified<'a> {
    /// The principal the signature verified for.
    pub principal: String,
    /// The entry that allowed namespace `git` at the judged time.
    pub signer: &'a SshSigner,
}

/// Verifies an armored SSHSIG over `payload` against the known keys, judging validity at
/// `at` (seconds since the epoch), and picks the identity as git does with ssh-keygen (see
/// the module's documentation).
pub fn verify<'a>(armored: &[u8], payload: &[u8], signers: &'a [SshSigner], at: i64) -> Result<Verified<'a>, SshError> {
    let text = std::str::from_utf8(armored).map_err(|_| SshError::Malformed("the SSH signature is not ASCII armor".into()))?;
    let sig = SshSig::from_pem(text.trim()).map_err(|e| SshError::Malformed(format!("unreadable SSH signature: {e}")))?;
    if sig.namespace() != "git" {
        return Err(SshError::Namespace(format!("signed in namespace {:?}, not \"git\"", sig.namespace())));
    }
    let key = PublicKey::from(sig.public_key().clone());
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let same_key = |s: &&SshSigner| s.key.key_data() == key.key_data();
    if !signers.iter().any(|s| same_key(&s)) {
        return Err(SshError::UnknownKey(format!("signed with SSH key {fingerprint}, which the policy does not list")));
    }
    key.verify("git", payload, &sig)
        .map_err(|_| SshError::BadSignature(format!("the SSH signature by {fingerprint} does not match the commit's content")))?;
    // find-principals: the first line with this key that is valid at `at`.
    let Some(found) = signers.iter().filter(same_key).find(|s| s.valid_at(at)) else {
        let why: Vec<String> = signers
            .iter()
            .filter(same_key)
            .map(|s| match (s.valid_after, s.valid_before) {
                (Some(t), _) if at < t => format!("{} is valid only after {t}", s.origin),
                (_, Some(t)) => format!("{} expired (valid-before) at {t}", s.origin),
                _ => format!("{} is not valid", s.origin),
            })
            .collect();
        return Err(SshError::NotValid(format!("SSH key {fingerprint} is not valid at {at} (first seen): {}", why.join("; "))));
    };
    // verify -I P -n git, for each principal of that line in turn.
    for principal in &found.principals {
        if let Some(s) = signers.iter().filter(same_key).find(|s| s.principals.contains(principal) && s.valid_at(at) && s.allows_git()) {
            return Ok(Verified { principal: principal.clone(), signer: s });
        }
    }
    Err(SshError::NotValid(format!(
        "SSH key {fingerprint} is first listed for {:?} at {}, and no line for {:?} with this key allows namespace git at {at} (ssh-keygen stops at that first line too)",
        found.principals, found.origin, found.principals
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHoZ7F6m5yFQ3mCv4Pn1rG4VYxqkJwTqLqvY4ZgN8m8n";

    #[test]
    fn allowed_signers_lines_with_options_quotes_and_comments() {
        let text = format!(
            "# team\nalice@example.com,alice@corp {KEY} laptop\n\"bob@example.com\" NAMESPACES=\"git,file\",valid-after=\"20260101\",valid-before=\"20261231235959Z\" {KEY}\n"
        );
        let s = parse_allowed_signers("allowed_signers", &text).expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].principals, ["alice@example.com", "alice@corp"]);
        assert_eq!(s[1].namespaces.as_deref(), Some("git,file"));
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
            ("a namespaces=\"file\",namespaces=\"git\" ssh-ed25519 AAAA", "allowed_signers:1: option namespaces given twice"),
            (
                "a valid-before=\"20300101\",valid-before=\"20200101\" ssh-ed25519 AAAA",
                "allowed_signers:1: option valid-before given twice",
            ),
            ("a namespaces=git ssh-ed25519 AAAA", "allowed_signers:1: option namespaces: the value must be in double quotes"),
            ("a valid-after=\"20300101\",valid-before=\"20200101\" ssh-ed25519 AAAA", "allowed_signers:1: valid-before is not after"),
            ("a,!b ssh-ed25519 AAAA", "allowed_signers:1: principal \"!b\": patterns"),
            ("a* ssh-ed25519 AAAA", "allowed_signers:1: principal \"a*\": patterns"),
        ] {
            let e = parse_allowed_signers("allowed_signers", text).expect_err(text);
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn pattern_lists_follow_openssh() {
        for (list, want) in [("git", 1), ("file", 0), ("g*", 1), ("g?t", 1), ("!git,*", -1), ("file,git", 1), ("*,!git", -1), ("", 0)] {
            assert_eq!(match_pattern_list("git", list), want, "{list}");
        }
    }

    /// ssh-keygen's verdict as git asks for it: `-Y find-principals`, then `-Y verify -I P`
    /// for each principal found, the first that verifies.
    fn ssh_keygen_verdict(dir: &std::path::Path, allowed: &str) -> Option<String> {
        use std::process::Command;
        std::fs::write(dir.join("allowed"), allowed).expect("write");
        let keygen = |args: &[&str]| {
            Command::new("ssh-keygen")
                .args(args)
                .args(["-f", "allowed", "-s", "payload.sig", "-Overify-time=20260601"])
                .env("TZ", "UTC")
                .current_dir(dir)
                .stdin(std::fs::File::open(dir.join("payload")).expect("payload"))
                .output()
                .expect("ssh-keygen runs")
        };
        let found = keygen(&["-Y", "find-principals"]);
        String::from_utf8_lossy(&found.stdout)
            .lines()
            .map(str::to_owned)
            .find(|p| keygen(&["-Y", "verify", "-n", "git", "-I", p]).status.success())
    }

    #[test]
    fn every_allowed_signers_case_gets_the_verdict_ssh_keygen_gives() {
        use std::process::Command;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for who in ["k1", "k2"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f", who])
                .current_dir(d)
                .output()
                .expect("ssh-keygen");
            assert!(out.status.success());
        }
        std::fs::write(d.join("payload"), "tree 0000\n\nsigned payload\n").expect("write");
        let out =
            Command::new("ssh-keygen").args(["-Y", "sign", "-f", "k1", "-n", "git", "payload"]).current_dir(d).output().expect("sign");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = |f: &str| std::fs::read_to_string(d.join(f)).expect("pub").split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let (k1, k2) = (key("k1.pub"), key("k2.pub"));
        let sig = std::fs::read(d.join("payload.sig")).expect("sig");
        let payload = std::fs::read(d.join("payload")).expect("payload");
        let at = parse_time("20260601").expect("time");
        let cases = [
            format!("alice {k1}\n"),
            format!("alice {k2}\n"),
            format!("alice namespaces=\"file\" {k1}\nbob {k1}\n"),
            format!("alice valid-before=\"20200101\" {k1}\nbob {k1}\n"),
            format!("alice namespaces=\"file\" {k1}\nalice {k1}\n"),
            format!("alice {k1}\nbob {k1}\n"),
            format!("bob {k2}\nalice {k1}\n"),
            format!("\"alice,bob\" {k1}\n"),
            format!("alice,bob namespaces=\"file\" {k1}\nbob {k1}\n"),
            format!("alice namespaces=\"g*\" {k1}\n"),
            format!("alice namespaces=\"!git,*\" {k1}\n"),
            format!("alice namespaces=\"file,git\" {k1}\n"),
            format!("alice valid-after=\"20300101\" {k1}\n"),
            format!("alice valid-after=\"20260101\",valid-before=\"20270101\" {k1}\n"),
            format!("alice valid-before=\"20260601\" {k1}\n"),
            format!("alice valid-before=\"20260531\" {k1}\nbob valid-after=\"20260701\" {k1}\ncarol {k1}\n"),
        ];
        for allowed in &cases {
            let signers = parse_allowed_signers("allowed", allowed).expect(allowed);
            let ours = verify(&sig, &payload, &signers, at).ok().map(|v| v.principal);
            assert_eq!(ours, ssh_keygen_verdict(d, allowed), "allowed_signers:\n{allowed}");
        }
        // Lines ssh-keygen refuses when it reads them are refused when the policy loads.
        for allowed in [
            format!("alice namespaces=\"file\",namespaces=\"git\" {k1}\n"),
            format!("alice valid-before=\"20300101\",valid-before=\"20200101\" {k1}\n"),
            format!("alice namespaces=git {k1}\n"),
        ] {
            assert!(parse_allowed_signers("allowed", &allowed).is_err(), "{allowed}");
            assert_eq!(ssh_keygen_verdict(d, &allowed), None, "ssh-keygen refuses too:\n{allowed}");
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
