//! Plan output: text for terminals, markdown for pull-request comments, JSON for machines.
//! All three are deterministic: the same plan renders to the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{Action, Plan, Step, Summary};
use crate::resource::{Kind, ResourceId};

/// A plan with what it was made from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    /// Version of this JSON layout.
    pub format_version: u32,
    /// Environment name.
    pub environment: &'a str,
    /// Cloud.
    pub cloud: &'a str,
    /// Revision compared from (observed), e.g. `main@sha1:<hex>`.
    pub base: &'a str,
    /// Revision compared to (desired).
    pub head: &'a str,
    /// Counts by action.
    pub summary: Summary,
    /// Every step, no-ops included, in execution order.
    pub steps: &'a [Step],
}

impl<'a> Report<'a> {
    /// Bundles a plan with its context.
    pub fn new(environment: &'a str, cloud: &'a str, base: &'a str, head: &'a str, plan: &'a Plan) -> Self {
        Self { format_version: 1, environment, cloud, base, head, summary: plan.summary(), steps: &plan.steps }
    }

    /// Pretty JSON with a trailing newline.
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }

    /// Plain text for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Plan for environment {} ({}): {} -> {}", self.environment, self.cloud, self.base, self.head);
        let _ = writeln!(out, "{}\n", summary_line(&self.summary));
        for step in self.steps.iter().filter(|s| s.action != Action::NoOp) {
            let _ = writeln!(out, "{} {} {}  ({})", symbol(step.action), step.action.as_str(), step.id, step.reason);
            if matches!(step.action, Action::Update | Action::Replace)
                || (step.action == Action::Blocked && !step.changes.iter().all(|c| c.after.is_none()))
            {
                for c in &step.changes {
                    let before = c.before.as_ref().map_or("(none)".to_owned(), ToString::to_string);
                    let after = c.after.as_ref().map_or("(none)".to_owned(), ToString::to_string);
                    let forces = if c.forces_replacement { "  # forces replacement" } else { "" };
                    let _ = writeln!(out, "    {}: {before} -> {after}{forces}", c.path);
                }
            }
        }
        if !self.steps.iter().any(|s| s.action != Action::NoOp) {
            let _ = writeln!(out, "No changes. The environment matches the specs.");
        }
        out
    }

    /// Markdown for a pull-request comment.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### byoc plan: `{}` ({})\n", self.environment, self.cloud);
        let _ = writeln!(out, "`{}` → `{}`\n", self.base, self.head);
        let s = &self.summary;
        let _ = writeln!(out, "| create | update | replace | delete | blocked | unchanged |\n|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(out, "| {} | {} | {} | {} | {} | {} |\n", s.create, s.update, s.replace, s.delete, s.blocked, s.no_op);
        let changed: Vec<&Step> = self.steps.iter().filter(|s| s.action != Action::NoOp).collect();
        if changed.is_empty() {
            let _ = writeln!(out, "No changes. The environment matches the specs.");
            return out;
        }
        if s.blocked > 0 {
            let _ = writeln!(out, "> [!WARNING]\n> {} action(s) are blocked and will not be applied; see the reasons below.\n", s.blocked);
        }

        let mut by_kind: BTreeMap<Kind, Vec<&Step>> = BTreeMap::new();
        for step in &changed {
            by_kind.entry(step.kind).or_default().push(step);
        }
        for (kind, steps) in &by_kind {
            let _ = writeln!(out, "#### {}\n\n| action | resource | why |\n|---|---|---|", kind.label());
            for step in steps {
                let _ = writeln!(out, "| {} {} | `{}` | {} |", symbol(step.action), step.action.as_str(), step.id, escape(&step.reason));
            }
            out.push('\n');
        }

        let _ = writeln!(out, "#### Property changes\n");
        for step in &changed {
            let _ = writeln!(
                out,
                "<details><summary>{} <code>{}</code> ({} change{})</summary>\n",
                step.action.as_str(),
                step.id,
                step.changes.len(),
                if step.changes.len() == 1 { "" } else { "s" }
            );
            let _ = writeln!(out, "```diff");
            for c in &step.changes {
                let forces = if c.forces_replacement { "  # forces replacement" } else { "" };
                if let Some(b) = &c.before {
                    let _ = writeln!(out, "- {}: {b}", c.path);
                }
                if let Some(a) = &c.after {
                    let _ = writeln!(out, "+ {}: {a}{forces}", c.path);
                }
            }
            let _ = writeln!(out, "```\n\n</details>\n");
        }

        let _ = writeln!(out, "#### Changed resources and their dependencies\n\n```mermaid\ngraph LR");
        let mut nodes: BTreeMap<&ResourceId, Option<Action>> = changed.iter().map(|s| (&s.id, Some(s.action))).collect();
        let mut edges = BTreeSet::new();
        for step in &changed {
            for dep in &step.depends_on {
                nodes.entry(dep).or_insert(None);
                edges.insert((dep, &step.id));
            }
        }
        let node_names: BTreeMap<&ResourceId, String> = nodes.keys().enumerate().map(|(i, id)| (*id, format!("n{i}"))).collect();
        for (id, action) in &nodes {
            let class = action.map_or("unchanged", Action::as_str);
            let _ = writeln!(out, "  {}[\"{}\"]:::{}", node_names[id], id, class.replace('-', ""));
        }
        for (from, to) in &edges {
            let _ = writeln!(out, "  {} --> {}", node_names[from], node_names[to]);
        }
        let _ = writeln!(
            out,
            "  classDef create fill:#d4f7d4\n  classDef update fill:#fff3c4\n  classDef replace fill:#ffd8a8\n  classDef delete fill:#ffc9c9\n  classDef blocked fill:#e0c3fc\n  classDef unchanged fill:#eeeeee\n```"
        );
        out
    }
}

fn summary_line(s: &Summary) -> String {
    format!(
        "{} to create, {} to update, {} to replace, {} to delete, {} blocked, {} unchanged.",
        s.create, s.update, s.replace, s.delete, s.blocked, s.no_op
    )
}

fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Blocked => "!",
        Action::NoOp => " ",
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}
