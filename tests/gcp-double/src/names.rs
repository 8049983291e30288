//! GCP's naming and address rules, written once.

use crate::error::ApiError;

/// RFC 1035 names, 1-63 characters, as Compute requires of every resource name
/// (<https://cloud.google.com/compute/docs/naming-resources#resource-name-format>) and GKE of
/// clusters (40 at most) and node pools.
pub fn rfc1035(name: &str, max: usize) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// 400 unless `name` is an RFC 1035 name of at most `max` characters.
pub(crate) fn check_name(field: &str, name: &str, max: usize) -> Result<(), ApiError> {
    if rfc1035(name, max) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Invalid value for field '{field}': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,{}}}[a-z0-9])?)'",
            max.saturating_sub(2)
        )))
    }
}

/// An IPv4 CIDR block as (network address, prefix length); `None` if malformed.
pub fn cidr(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = text.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let octets: Vec<u8> = addr.split('.').map(|o| o.parse::<u8>()).collect::<Result<_, _>>().ok()?;
    let [a, b, c, d] = octets.as_slice() else { return None };
    Some((u32::from_be_bytes([*a, *b, *c, *d]), len))
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

/// Whether `addr/len` has host bits set (GCP refuses such a range).
pub fn has_host_bits((addr, len): (u32, u8)) -> bool {
    addr & !mask(len) != 0
}

/// Whether two CIDR blocks share an address.
pub fn overlaps((a, al): (u32, u8), (b, bl): (u32, u8)) -> bool {
    let m = mask(al.min(bl));
    a & m == b & m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc1035() {
        for ok in ["a", "net-1", "a23456789012345678901234567890123456789012345678901234567890123"] {
            assert!(rfc1035(ok, 63), "{ok}");
        }
        for bad in ["", "1net", "Net", "net-", "net_1", "a234567890123456789012345678901234567890123456789012345678901234"] {
            assert!(!rfc1035(bad, 63), "{bad}");
        }
    }

    #[test]
    fn cidr_overlap() {
        let a = cidr("10.0.0.0/20").expect("cidr");
        assert!(overlaps(a, cidr("10.0.8.0/24").expect("cidr")));
        assert!(!overlaps(a, cidr("10.0.16.0/24").expect("cidr")));
        assert!(has_host_bits(cidr("10.0.0.1/24").expect("cidr")));
        assert!(cidr("10.0.0.0/33").is_none() && cidr("10.0.0/8").is_none());
    }
}
