//! The one way this project reads YAML from users: size-capped, alias-bomb resistant,
//! duplicate keys refused, one document per file, errors with file, line and column.

use serde::de::DeserializeOwned;
use serde_saphyr::budget::Budget;
use serde_saphyr::options::{AliasLimits, DuplicateKeyPolicy};

use crate::diagnostics::{Diagnostic, Position};

/// Largest spec file accepted. Real specs are a few KiB; anything near this is a mistake
/// or an attack, and refusing it early bounds the parser's memory.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Checks a file's size and encoding before any parsing happens.
pub fn decode<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::new(Position::file(file), format!("file is larger than the limit of {MAX_FILE_BYTES} bytes (1 MiB)"))
            .hint("split the specs into several files; no single spec needs to be this large"));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col_at(bytes, e.valid_up_to());
        Diagnostic::new(Position { file: file.to_owned(), line: Some(line), column: Some(column) }, "file is not valid UTF-8")
            .hint("save the file as UTF-8 text")
    })
}

/// Parses one YAML document from `text` into `T`.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| from_parser(file, &e))
}

fn options() -> serde_saphyr::options::Options {
    // Specs are small and hand-written: a few thousand nodes at most. These caps stop an
    // alias bomb after a bounded amount of work instead of after a million replayed events.
    let mut budget = Budget::default();
    budget.max_events = 400_000;
    budget.max_nodes = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 32;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    let mut alias_limits = AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 1_000;
    serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        duplicate_keys: DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

/// Turns a parser error into a diagnostic at its location, without repeating the location
/// in the message text (the parser appends " at line L, column C").
fn from_parser(file: &str, error: &serde_saphyr::Error) -> Diagnostic {
    let location = error.location();
    let rendered = error.to_string();
    let position = match &location {
        Some(loc) => Position::at(file, loc),
        None => Position::file(file),
    };
    // The parser appends " at line L, column C" (sometimes more location detail after it);
    // the diagnostic's position already says where, so the text stops before it.
    let message = match rendered.find(" at line ") {
        Some(i) if rendered[i + 9..].starts_with(|c: char| c.is_ascii_digit()) => rendered[..i].to_owned(),
        _ => rendered,
    };
    let hint = hint_for(&message);
    let diagnostic = Diagnostic::new(position, message);
    match hint {
        Some(h) => diagnostic.hint(h),
        None => diagnostic,
    }
}

fn hint_for(message: &str) -> Option<&'static str> {
    if message.starts_with("unknown field") {
        Some("remove the field or fix its spelling; unknown fields are refused so typos cannot pass silently")
    } else if message.starts_with("duplicate mapping key") {
        Some("each key may appear once in a mapping; remove one of them")
    } else if message.contains("budget breached") || message.contains("alias") || message.contains("anchor") {
        Some("anchors and aliases may not expand into large structures; write the values out")
    } else if message.contains("multiple YAML documents") {
        Some("put one document per file")
    } else if message.starts_with("missing field") {
        Some("add the field; see examples/ for a complete spec")
    } else if message.starts_with("invalid") || message.starts_with("expected") {
        Some("check the value's type against the schema in examples/README.md")
    } else {
        None
    }
}

fn line_col_at(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, (offset - line_start) as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        items: Option<Vec<serde::de::IgnoredAny>>,
    }

    #[test]
    fn location_is_not_repeated_in_the_message() {
        let d = parse::<Doc>("f.yaml", "name: x\nbogus: 1\n").unwrap_err();
        assert_eq!(d.position.to_string(), "f.yaml:2:1");
        assert!(d.message.starts_with("unknown field `bogus`"), "{}", d.message);
        assert!(!d.message.contains("line 2"), "{}", d.message);
    }

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut text = String::from("name: x\nitems:\n  - &a0 [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 1..12 {
            text += &format!("  - &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(","));
        }
        let started = std::time::Instant::now();
        let d = parse::<Doc>("bomb.yaml", &text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
        assert!(d.position.line.is_some(), "{d}");
    }

    #[test]
    fn oversized_and_non_utf8_files_are_refused_before_parsing() {
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        assert!(decode("big.yaml", &big).unwrap_err().message.contains("larger than the limit"));
        let d = decode("bad.yaml", b"name: ok\nx: \xff\n").unwrap_err();
        assert_eq!(d.position.to_string(), "bad.yaml:2:4");
    }
}
