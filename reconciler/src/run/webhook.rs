//! Push webhooks from a forge: they only wake the fetch. No revision, branch or commit is
//! ever taken from a body; the fetched revision is verified like any other. So a webhook
//! needs only to be authentic enough not to be a cheap way to make the daemon fetch:
//! GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the body) or GitLab's `X-Gitlab-Token`,
//! both compared in constant time; a delivery id seen before is ignored.

use std::collections::VecDeque;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Largest body read; a push event is a few KiB.
pub const MAX_BODY: usize = 1 << 20;

/// How many delivery ids are remembered.
const REMEMBERED: usize = 1024;

/// The verdict on one delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic and new: wake the fetch.
    Wake,
    /// Authentic, but this delivery id was seen before.
    Duplicate,
    /// Refused, with the reason (for the log and the counter).
    Refused(Refusal),
}

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Neither GitHub's nor GitLab's header.
    Unsigned,
    /// The signature or token does not match the secret.
    BadSignature,
}

impl Refusal {
    /// Label value for the refusal counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
        }
    }
}

/// Checks deliveries against the shared secret.
pub struct Webhooks {
    secret: Vec<u8>,
    seen: Mutex<VecDeque<String>>,
}

impl Webhooks {
    /// With the secret from the configuration.
    pub fn new(secret: Vec<u8>) -> Webhooks {
        Webhooks { secret, seen: Mutex::new(VecDeque::new()) }
    }

    /// Judges a delivery; `header` looks a request header up by name (any case).
    pub fn check(&self, header: &dyn Fn(&str) -> Option<String>, body: &[u8]) -> Verdict {
        let authentic = if let Some(sig) = header("x-hub-signature-256") {
            let Some(hex) = sig.strip_prefix("sha256=").and_then(decode_hex) else { return Verdict::Refused(Refusal::BadSignature) };
            let mut mac = self.mac();
            mac.update(body);
            mac.verify_slice(&hex).is_ok()
        } else if let Some(token) = header("x-gitlab-token") {
            // Equal tokens give equal MACs; CtOutput compares in constant time.
            let mut given = self.mac();
            given.update(token.as_bytes());
            let mut expected = self.mac();
            expected.update(&self.secret);
            given.finalize() == expected.finalize()
        } else {
            return Verdict::Refused(Refusal::Unsigned);
        };
        if !authentic {
            return Verdict::Refused(Refusal::BadSignature);
        }
        let Some(id) = header("x-github-delivery").or_else(|| header("x-gitlab-event-uuid")) else { return Verdict::Wake };
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&id) {
            return Verdict::Duplicate;
        }
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(id);
        Verdict::Wake
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// GitHub's signature header value for `body` under `secret` (for tests and tools).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned())).collect();
        move |name: &str| owned.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn github_and_gitlab_deliveries_are_judged_and_repeats_ignored() {
        let w = Webhooks::new(b"s3cret".to_vec());
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = github_signature(b"s3cret", body);
        let h = headers(&[("X-Hub-Signature-256", &good), ("X-GitHub-Delivery", "d-1")]);
        assert_eq!(w.check(&h, body), Verdict::Wake);
        assert_eq!(w.check(&h, body), Verdict::Duplicate);
        assert_eq!(w.check(&h, b"{}"), Verdict::Refused(Refusal::BadSignature), "another body");
        let wrong = github_signature(b"other", body);
        assert_eq!(w.check(&headers(&[("X-Hub-Signature-256", &wrong)]), body), Verdict::Refused(Refusal::BadSignature));
        assert_eq!(w.check(&headers(&[("X-Hub-Signature-256", "sha256=zz")]), body), Verdict::Refused(Refusal::BadSignature));
        assert_eq!(w.check(&headers(&[]), body), Verdict::Refused(Refusal::Unsigned));
        assert_eq!(w.check(&headers(&[("X-Gitlab-Token", "s3cret"), ("X-Gitlab-Event-UUID", "u-1")]), body), Verdict::Wake);
        assert_eq!(w.check(&headers(&[("X-Gitlab-Token", "s3cre")]), body), Verdict::Refused(Refusal::BadSignature));
    }
}
