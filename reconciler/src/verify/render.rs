//! The verify report for terminals and for pull-request comments.

use super::{PathReport, RangeReport, short};

/// The report for terminals: one line per commit, the paths below their threshold, the verdict.
pub fn render_text(r: &RangeReport, name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {} ({}); range {}..{}",
        r.policy,
        r.policy_source,
        r.from.as_deref().map_or("(root)", |f| &f[..12.min(f.len())]),
        &r.to[..12.min(r.to.len())]
    );
    for c in &r.commits {
        let _ = writeln!(
            out,
            "  {} {:<7} {:<24} {:<10} {}{}",
            short(&c.id),
            c.format,
            c.signer.as_deref().unwrap_or("-"),
            if c.rules.is_empty() { "-".to_owned() } else { c.rules.join(",") },
            if c.ok { "ok" } else { "REFUSED: " },
            c.reason
        );
    }
    for p in r.paths.iter().filter(|p| !p.ok) {
        let _ = writeln!(out, "  path {}", p.shortfall());
    }
    if r.ok {
        let _ = writeln!(out, "verified {name}: {} commit(s), {} path(s)", r.commits.len(), r.paths.len());
    } else {
        let _ = writeln!(out, "refused {name}: {}", r.reasons.first().map_or("", String::as_str));
        for reason in r.reasons.iter().skip(1) {
            let _ = writeln!(out, "  and: {reason}");
        }
    }
    out
}

/// The signature section of a pull-request comment.
pub fn render_markdown(r: &RangeReport) -> String {
    use std::fmt::Write;
    let mut out = String::from("### Signatures\n\n");
    let _ = writeln!(
        out,
        "Policy `{}` ({}). {}\n",
        r.policy,
        r.policy_source,
        if r.ok { "**All commits verify; every rule has its signatures.**" } else { "**Not mergeable yet:** see below." }
    );
    out.push_str("| commit | format | signer | rules | result |\n|---|---|---|---|---|\n");
    for c in &r.commits {
        let _ = writeln!(
            out,
            "| `{}` {} | {} | {} | {} | {} |",
            short(&c.id),
            c.summary.replace('|', "\\|"),
            c.format,
            c.signer.as_deref().unwrap_or("-"),
            c.rules.join(", "),
            if c.ok { "ok".to_owned() } else { format!("refused: {}", c.reason.replace('|', "\\|")) }
        );
    }
    let protected: Vec<&PathReport> = r.paths.iter().filter(|p| p.threshold > 1 || !p.ok || !p.not_counted.is_empty()).collect();
    if !protected.is_empty() {
        out.push_str("\nApprovals by path (a signer counts when a commit they signed holds the path's final content):\n\n");
        out.push_str("| path | rule | needs | counted | not counted |\n|---|---|---|---|---|\n");
        for p in protected {
            let not_counted: Vec<String> =
                p.not_counted.iter().map(|n| format!("{} (`{}`: {})", n.signer, short(&n.commit), n.why)).collect();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                p.path,
                p.rule.as_deref().unwrap_or("none"),
                p.threshold,
                if p.signers.is_empty() { "-".to_owned() } else { p.signers.join(", ") },
                if not_counted.is_empty() { "-".to_owned() } else { not_counted.join("; ") },
            );
        }
    }
    let lacking: Vec<&PathReport> = r.paths.iter().filter(|p| !p.ok).collect();
    if !lacking.is_empty() {
        out.push_str("\nRules still lacking signatures:\n\n");
        for p in lacking {
            let _ = writeln!(out, "- {}", p.shortfall());
        }
    }
    out
}
