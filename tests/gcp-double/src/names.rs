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

/// Google Cloud's public regions (<https://cloud.google.com/compute/docs/regions-zones>).
pub const REGIONS: &[&str] = &[
    "africa-south1",
    "asia-east1",
    "asia-east2",
    "asia-northeast1",
    "asia-northeast2",
    "asia-northeast3",
    "asia-south1",
    "asia-south2",
    "asia-southeast1",
    "asia-southeast2",
    "australia-southeast1",
    "australia-southeast2",
    "europe-central2",
    "europe-north1",
    "europe-north2",
    "europe-southwest1",
    "europe-west1",
    "europe-west10",
    "europe-west12",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west6",
    "europe-west8",
    "europe-west9",
    "me-central1",
    "me-central2",
    "me-west1",
    "northamerica-northeast1",
    "northamerica-northeast2",
    "northamerica-south1",
    "southamerica-east1",
    "southamerica-west1",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-east5",
    "us-south1",
    "us-west1",
    "us-west2",
    "us-west3",
    "us-west4",
];

/// Whether `location` is a region or a zone of one (`us-central1`, `us-central1-a`).
pub fn location_ok(location: &str) -> bool {
    if REGIONS.contains(&location) {
        return true;
    }
    location.rsplit_once('-').is_some_and(|(region, zone)| REGIONS.contains(&region) && matches!(zone, "a" | "b" | "c" | "d" | "f"))
}

/// 400 for a region or zone GCP does not have.
pub(crate) fn check_location(field: &str, location: &str) -> Result<(), ApiError> {
    if location_ok(location) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("Invalid value for field '{field}': '{location}'. Unknown region or zone.")))
    }
}

/// GCP resource labels (<https://cloud.google.com/compute/docs/labeling-resources#requirements>):
/// at most 64; keys 1-63 characters starting with a lowercase letter, values at most 63;
/// both only lowercase letters, digits, `_` and `-`.
pub(crate) fn check_labels(field: &str, labels: Option<&serde_json::Value>) -> Result<(), ApiError> {
    let Some(labels) = labels else { return Ok(()) };
    let map = labels.as_object().ok_or_else(|| ApiError::invalid(format!("Invalid value for field '{field}': labels must be a map.")))?;
    if map.len() > 64 {
        return Err(ApiError::invalid(format!("Invalid value for field '{field}': at most 64 labels, not {}.", map.len())));
    }
    let chars_ok = |s: &str| {
        s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || (!c.is_ascii() && c.is_lowercase()))
    };
    for (k, v) in map {
        let v = v.as_str().unwrap_or_default();
        let key_ok = (1..=63).contains(&k.chars().count()) && k.chars().next().is_some_and(|c| c.is_lowercase()) && chars_ok(k);
        if !key_ok {
            return Err(ApiError::invalid(format!(
                "Invalid value for field '{field}': label key '{k}' must be 1-63 characters, start with a lowercase letter, and hold only lowercase letters, digits, '_' and '-'."
            )));
        }
        if v.chars().count() > 63 || !chars_ok(v) {
            return Err(ApiError::invalid(format!(
                "Invalid value for field '{field}': the value of label '{k}' must be at most 63 lowercase letters, digits, '_' or '-', not '{v}'."
            )));
        }
    }
    Ok(())
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
    fn locations_and_labels() {
        assert!(location_ok("us-central1") && location_ok("europe-west4-b"));
        assert!(!location_ok("us-nowhere1") && !location_ok("us-central1-z") && !location_ok(""));
        let ok = serde_json::json!({"byoc-env": "prod", "owner_team": ""});
        assert!(check_labels("l", Some(&ok)).is_ok());
        for bad in [
            serde_json::json!({"Env": "x"}),
            serde_json::json!({"1env": "x"}),
            serde_json::json!({"env": "Prod"}),
            serde_json::json!({"env": "x".repeat(64)}),
        ] {
            assert!(check_labels("l", Some(&bad)).is_err(), "{bad}");
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
