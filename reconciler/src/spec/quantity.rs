//! Kubernetes resource quantities for CPU and memory, as far as specs use them.

/// Parses a CPU quantity (`2`, `0.5`, `500m`) into millicores.
pub fn parse_cpu(text: &str) -> Option<u64> {
    if let Some(m) = text.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 3 {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<3}").parse().ok()? };
    whole.checked_mul(1000)?.checked_add(frac)
}

/// Parses a memory quantity (`512Mi`, `4Gi`, `16G`, `1073741824`) into bytes.
pub fn parse_memory(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(factor);
        }
    }
    text.parse().ok()
}

/// Canonical CPU text: whole cores as `2`, otherwise millicores as `500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) { (millis / 1000).to_string() } else { format!("{millis}m") }
}

/// Canonical memory text in the largest binary unit that divides it exactly.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, factor) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{suffix}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        for (text, want) in [
            ("2", Some(2000)),
            ("0.5", Some(500)),
            (".25", Some(250)),
            ("250m", Some(250)),
            ("1.2345", None),
            ("x", None),
            ("", None),
            ("-1", None),
        ] {
            assert_eq!(parse_cpu(text), want, "{text}");
        }
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(1500), "1500m");
    }

    #[test]
    fn memory() {
        for (text, want) in
            [("4Gi", Some(4 << 30)), ("512Mi", Some(512 << 20)), ("1G", Some(1_000_000_000)), ("12", Some(12)), ("4gb", None), ("Gi", None)]
        {
            assert_eq!(parse_memory(text), want, "{text}");
        }
        assert_eq!(format_memory(4096 << 20), "4Gi");
        assert_eq!(format_memory(1_000_000_000), "1000000000");
    }
}
