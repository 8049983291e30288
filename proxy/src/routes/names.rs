//! Name rules shared by routes and specs.

/// A DNS-1123 label: 1 to 63 lower-case letters, digits or '-', starting and ending with a
/// letter or digit. Kubernetes namespaces and our resource names follow this rule.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A lower-case DNS host name: labels joined by dots, at most 253 characters.
pub fn is_hostname(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_hosts() {
        for ok in ["a", "rw-1", "x".repeat(63).as_str()] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_hostname("sql.prod.example.com"));
        assert!(!is_hostname("sql..example.com"));
        assert!(!is_hostname("*.example.com"));
    }
}
