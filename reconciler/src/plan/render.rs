//! Plan output: text for terminals, markdown for pull-request comments, JSON for machines.
//! All three are deterministic: the same plan renders to the same bytes.
//!
//! Each renderer writes to an [`io::Write`] as it goes, one resource at a time, so what a
//! plan of thousands of resources costs in memory is the plan, not its rendering.
//!
//! Markdown goes into pull-request comments, and a GitHub comment holds 65,536
//! characters. [`Comments::One`] cuts the plan to one comment: the summary always, then as
//! many resources as fit, then how many more there are and how to see them.
//! [`Comments::Parts`] keeps everything and splits it into numbered parts of at most N
//! characters each (one comment each, as Atlantis splits long plans); a table cut by a
//! part boundary is continued under its heading in the next part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

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
    /// What the plan says besides its steps (capacity, cost); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How markdown is fitted into pull-request comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comments {
    /// One comment of at most this many characters: what does not fit is counted, not
    /// shown.
    One(usize),
    /// Numbered parts of at most this many characters each, nothing left out.
    Parts(usize),
}

/// A GitHub comment holds at most this many characters.
pub const GITHUB_COMMENT_CHARS: usize = 65_536;

/// Mermaid refuses to draw a graph with more edges than this (its default `maxEdges`).
const MERMAID_MAX_EDGES: usize = 500;

/// Room kept at the end of a cut comment for the note that says what was left out.
const CUT_NOTE_ROOM: usize = 700;

impl<'a> Report<'a> {
    /// Bundles a plan with its context.
    pub fn new(environment: &'a str, cloud: &'a str, base: &'a str, head: &'a str, plan: &'a Plan) -> Self {
        Self { format_version: 1, environment, cloud, base, head, summary: plan.summary(), steps: &plan.steps, notes: Vec::new() }
    }

    /// Adds what the plan says besides its steps (capacity, cost), shown after the summary.
    pub fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes = notes;
        self
    }

    /// Pretty JSON with a trailing newline.
    pub fn json(&self) -> String {
        let mut out = Vec::new();
        let _ = self.write_json(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes pretty JSON with a trailing newline.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self).map_err(io::Error::other)?;
        out.write_all(b"\n")
    }

    /// Plain text for a terminal.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = self.write_text(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes plain text for a terminal.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "Plan for environment {} ({}): {} -> {}", self.environment, self.cloud, self.base, self.head)?;
        writeln!(out, "{}\n", summary_line(&self.summary))?;
        for n in &self.notes {
            writeln!(out, "note: {n}")?;
        }
        if !self.notes.is_empty() {
            writeln!(out)?;
        }
        for step in self.steps.iter().filter(|s| s.action != Action::NoOp) {
            writeln!(out, "{} {} {}  ({})", symbol(step.action), step.action.as_str(), step.id, step.reason)?;
            if matches!(step.action, Action::Update | Action::Replace)
                || (step.action == Action::Blocked && !step.changes.iter().all(|c| c.after.is_none()))
            {
                for c in &step.changes {
                    let before = c.before.as_ref().map_or("(none)".to_owned(), ToString::to_string);
                    let after = c.after.as_ref().map_or("(none)".to_owned(), ToString::to_string);
                    let forces = if c.forces_replacement { "  # forces replacement" } else { "" };
                    writeln!(out, "    {}: {before} -> {after}{forces}", c.path)?;
                }
            }
        }
        if !self.steps.iter().any(|s| s.action != Action::NoOp) {
            writeln!(out, "No changes. The environment matches the specs.")?;
        }
        Ok(())
    }

    /// Markdown for one pull-request comment of GitHub's size.
    pub fn markdown(&self) -> String {
        let mut out = Vec::new();
        let _ = self.write_markdown(&mut out, Comments::One(GITHUB_COMMENT_CHARS), "");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes markdown for pull-request comments, fitted as `comments` says; `trailer`
    /// (markdown, e.g. the signature status) closes the last comment and is never cut.
    pub fn write_markdown(&self, out: &mut impl Write, comments: Comments, trailer: &str) -> io::Result<()> {
        match comments {
            Comments::One(max) => {
                let mut layout = Layout::new(out, max, false, self, trailer);
                self.markdown_blocks(&mut layout)?;
                layout.finish()
            }
            Comments::Parts(max) => {
                // First count the parts (the layout is deterministic), then write them
                // numbered "I/N"; neither pass holds more than one block.
                let mut counting = Layout::new(io::sink(), max, true, self, trailer);
                self.markdown_blocks(&mut counting)?;
                counting.finish()?;
                let mut layout = Layout::new(out, max, true, self, trailer);
                layout.parts = counting.part;
                self.markdown_blocks(&mut layout)?;
                layout.finish()
            }
        }
    }

    fn markdown_blocks<W: Write>(&self, layout: &mut Layout<'_, W>) -> io::Result<()> {
        let s = &self.summary;
        let mut block = String::new();
        let _ = writeln!(block, "### byoc plan: `{}` ({})\n", self.environment, self.cloud);
        let _ = writeln!(block, "`{}` → `{}`\n", self.base, self.head);
        let _ = writeln!(block, "| create | update | replace | delete | blocked | unchanged |\n|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(block, "| {} | {} | {} | {} | {} | {} |\n", s.create, s.update, s.replace, s.delete, s.blocked, s.no_op);
        for n in &self.notes {
            let _ = writeln!(block, "> [!NOTE]\n> {}\n", escape(n));
        }
        let changed: Vec<&Step> = self.steps.iter().filter(|s| s.action != Action::NoOp).collect();
        layout.total = changed.len();
        if changed.is_empty() {
            let _ = writeln!(block, "No changes. The environment matches the specs.");
            return layout.preamble(&block);
        }
        if s.blocked > 0 {
            let _ =
                writeln!(block, "> [!WARNING]\n> {} action(s) are blocked and will not be applied; see the reasons below.\n", s.blocked);
        }
        layout.preamble(&block)?;

        let mut by_kind: BTreeMap<Kind, Vec<&Step>> = BTreeMap::new();
        for step in &changed {
            by_kind.entry(step.kind).or_default().push(step);
        }
        for (kind, steps) in &by_kind {
            const TABLE: &str = "| action | resource | why |\n|---|---|---|\n";
            layout.section(format!("#### {}\n\n{TABLE}", kind.label()), format!("#### {} (continued)\n\n{TABLE}", kind.label()));
            for (i, step) in steps.iter().enumerate() {
                block.clear();
                let _ = writeln!(block, "| {} {} | `{}` | {} |", symbol(step.action), step.action.as_str(), step.id, escape(&step.reason));
                if i + 1 == steps.len() {
                    block.push('\n');
                }
                layout.block(&block, Counted::Row)?;
            }
        }

        layout.section("#### Property changes\n\n".to_owned(), "#### Property changes (continued)\n\n".to_owned());
        for step in &changed {
            block.clear();
            let _ = writeln!(
                block,
                "<details><summary>{} <code>{}</code> ({} change{})</summary>\n",
                step.action.as_str(),
                step.id,
                step.changes.len(),
                if step.changes.len() == 1 { "" } else { "s" }
            );
            let _ = writeln!(block, "```diff");
            for c in &step.changes {
                let forces = if c.forces_replacement { "  # forces replacement" } else { "" };
                if let Some(b) = &c.before {
                    let _ = writeln!(block, "- {}: {b}", c.path);
                }
                if let Some(a) = &c.after {
                    let _ = writeln!(block, "+ {}: {a}{forces}", c.path);
                }
            }
            let _ = writeln!(block, "```\n\n</details>\n");
            layout.block(&block, Counted::Diff)?;
        }

        layout.section(String::new(), String::new());
        let graph = Graph::of(&changed);
        let mut size = CharCount(0);
        graph.write(&mut size);
        if graph.edges.len() > MERMAID_MAX_EDGES || size.0 > layout.largest_block() {
            block.clear();
            let _ = writeln!(
                block,
                "#### Changed resources and their dependencies\n\nThe graph of the changed resources ({} nodes, {} edges) is too large to draw here; each step's `dependsOn` in `--output json` has it.",
                graph.nodes.len(),
                graph.edges.len()
            );
            return layout.block(&block, Counted::Graph);
        }
        // Small by the check above: at most one comment's worth.
        block.clear();
        graph.write(&mut block);
        layout.block(&block, Counted::Graph)
    }
}

/// The mermaid graph of the changed resources and what they depend on.
struct Graph<'s> {
    nodes: BTreeMap<&'s ResourceId, Option<Action>>,
    edges: BTreeSet<(&'s ResourceId, &'s ResourceId)>,
}

impl<'s> Graph<'s> {
    fn of(changed: &[&'s Step]) -> Self {
        let mut nodes: BTreeMap<&ResourceId, Option<Action>> = changed.iter().map(|s| (&s.id, Some(s.action))).collect();
        let mut edges = BTreeSet::new();
        for step in changed {
            for dep in &step.depends_on {
                nodes.entry(dep).or_insert(None);
                edges.insert((dep, &step.id));
            }
        }
        Graph { nodes, edges }
    }

    fn write(&self, out: &mut impl std::fmt::Write) {
        let _ = writeln!(out, "#### Changed resources and their dependencies\n\n```mermaid\ngraph LR");
        let index: BTreeMap<&ResourceId, usize> = self.nodes.keys().enumerate().map(|(i, id)| (*id, i)).collect();
        for (id, action) in &self.nodes {
            let class = action.map_or("unchanged", Action::as_str);
            let _ = writeln!(out, "  n{}[\"{}\"]:::{}", index[id], id, class.replace('-', ""));
        }
        for (from, to) in &self.edges {
            let _ = writeln!(out, "  n{} --> n{}", index[from], index[to]);
        }
        let _ = writeln!(
            out,
            "  classDef create fill:#d4f7d4\n  classDef update fill:#fff3c4\n  classDef replace fill:#ffd8a8\n  classDef delete fill:#ffc9c9\n  classDef blocked fill:#e0c3fc\n  classDef unchanged fill:#eeeeee\n```"
        );
    }
}

/// Counts characters written, keeping none.
struct CharCount(usize);

impl std::fmt::Write for CharCount {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.chars().count();
        Ok(())
    }
}

/// What a block shows, for the note on what a cut comment left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Row,
    Diff,
    Graph,
    Trailer,
}

/// Places blocks of markdown into comments of at most `max` characters (characters, as
/// GitHub counts them).
struct Layout<'r, W: Write> {
    out: W,
    max: usize,
    split: bool,
    report: &'r Report<'r>,
    trailer: &'r str,
    /// Characters in the current comment.
    used: usize,
    /// Current part, 1-based; after the last block, how many there are.
    part: usize,
    /// Parts in all (the second pass of a split); 0 while counting.
    parts: usize,
    /// The current section's heading, not yet written, and its heading in a later part.
    pending: Option<String>,
    continued: String,
    /// One comment: a block did not fit, so nothing more is shown.
    cut: bool,
    total: usize,
    rows: usize,
    diffs: usize,
    graph: bool,
}

impl<'r, W: Write> Layout<'r, W> {
    fn new(out: W, max: usize, split: bool, report: &'r Report<'r>, trailer: &'r str) -> Self {
        Layout {
            out,
            max,
            split,
            report,
            trailer,
            used: 0,
            part: 0,
            parts: 0,
            pending: None,
            continued: String::new(),
            cut: false,
            total: 0,
            rows: 0,
            diffs: 0,
            graph: false,
        }
    }

    fn write(&mut self, s: &str) -> io::Result<()> {
        self.used += s.chars().count();
        self.out.write_all(s.as_bytes())
    }

    /// The line that opens part `i` of `n`, and the heading that follows it after the
    /// first. Its length is budgeted at its widest (`n` unknown while counting), so both
    /// passes cut the parts at the same places.
    fn part_header(&self, i: usize, n: usize) -> String {
        let mut h = format!("<!-- byoc plan part {i}/{n} -->\n");
        if i > 1 {
            let _ = writeln!(h, "### byoc plan: `{}` ({}), part {i} of {n}\n", self.report.environment, self.report.cloud);
        }
        h
    }

    fn header_room(&self) -> usize {
        if self.split { self.part_header(99_999, 99_999).chars().count() } else { 0 }
    }

    /// What one block may hold at most: a comment less the part's header and, for a cut
    /// comment, the room for the note and the trailer.
    fn largest_block(&self) -> usize {
        let reserved = if self.split { 0 } else { CUT_NOTE_ROOM + self.trailer.chars().count() };
        self.max.saturating_sub(self.header_room() + reserved + self.continued.chars().count())
    }

    fn start_part(&mut self) -> io::Result<()> {
        self.part += 1;
        self.used = 0;
        if self.split {
            let header = self.part_header(self.part, self.parts.max(self.part));
            self.out.write_all(header.as_bytes())?;
            // Budgeted at its widest: see part_header.
            self.used = self.header_room();
        }
        Ok(())
    }

    /// The summary: always shown, at the top of the first comment.
    fn preamble(&mut self, text: &str) -> io::Result<()> {
        self.start_part()?;
        self.write(text)
    }

    /// Starts a section: `heading` is written before its first block, `continued` before
    /// its first block in a later part.
    fn section(&mut self, heading: String, continued: String) {
        self.pending = Some(heading);
        self.continued = continued;
    }

    fn block(&mut self, text: &str, what: Counted) -> io::Result<()> {
        let heading = self.pending.as_deref().map_or(0, |h| h.chars().count());
        let len = text.chars().count();
        if self.split {
            if self.used + heading + len > self.max && self.used > self.header_room() {
                self.start_part()?;
                if self.pending.is_none() {
                    let continued = std::mem::take(&mut self.continued);
                    self.write(&continued)?;
                    self.continued = continued;
                }
            }
        } else if self.cut || self.used + heading + len > self.max.saturating_sub(CUT_NOTE_ROOM + self.trailer.chars().count()) {
            self.cut = true;
            return Ok(());
        }
        if let Some(h) = self.pending.take() {
            self.write(&h)?;
        }
        let room = self.max.saturating_sub(self.used);
        if len > room {
            // One block larger than a whole part (a resource with a huge diff): cut it, and
            // say so; the full text is in the other formats.
            let note = "\n…(cut: too long for one comment; see --output json)\n";
            let keep: String = text.chars().take(room.saturating_sub(note.chars().count())).collect();
            self.write(&keep)?;
            self.write(note)?;
        } else {
            self.write(text)?;
        }
        match what {
            Counted::Row => self.rows += 1,
            Counted::Diff => self.diffs += 1,
            Counted::Graph => self.graph = true,
            Counted::Trailer => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.cut {
            let mut note = String::new();
            let _ = write!(
                note,
                "\n---\n**This plan is cut to fit one comment ({} characters).** Listed above: {} of {} changed resources; property changes shown for {}",
                self.max, self.rows, self.total, self.diffs
            );
            if !self.graph {
                note.push_str("; the dependency graph is not shown");
            }
            let _ = writeln!(
                note,
                ". {} more not listed. See all of it with `byoc plan ... --output text` or `--output json` (e.g. in the CI log), or split it into numbered comments with `--output markdown --max-comment-chars {}`.",
                self.total - self.rows,
                GITHUB_COMMENT_CHARS
            );
            self.write(&note)?;
        }
        if !self.trailer.is_empty() {
            let trailer = format!("\n{}", self.trailer);
            if self.split {
                self.pending = None;
                self.continued.clear();
                self.block(&trailer, Counted::Trailer)?;
            } else {
                // Room was kept for it.
                self.write(&trailer)?;
            }
        }
        self.out.flush()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Change;
    use crate::resource::Value;

    /// `n` subnets created, the first with a diff far longer than any comment.
    fn big_plan(n: usize) -> Plan {
        let steps = (0..n)
            .map(|i| Step {
                id: ResourceId::new(Kind::AwsSubnet, &format!("s{i:04}")),
                kind: Kind::AwsSubnet,
                action: Action::Create,
                reason: "does not exist yet".to_owned(),
                changes: vec![Change {
                    path: "cidr".to_owned(),
                    before: None,
                    after: Some(Value::from(if i == 0 { "x".repeat(10_000) } else { format!("10.0.{i}.0/24") })),
                    forces_replacement: false,
                }],
                depends_on: Vec::new(),
            })
            .collect();
        Plan { steps }
    }

    fn markdown(plan: &Plan, comments: Comments, trailer: &str) -> String {
        let report = Report::new("prod", "aws", "main@sha1:a", "pr@sha1:b", plan);
        let mut out = Vec::new();
        report.write_markdown(&mut out, comments, trailer).expect("rendered");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn parts_hold_everything_within_the_limit_and_an_oversized_block_is_cut_and_said_so() {
        let plan = big_plan(200);
        let text = markdown(&plan, Comments::Parts(3_000), "### Signatures\n\nall signed\n");
        let parts: Vec<String> = text.split("<!-- byoc plan part ").skip(1).map(|p| format!("<!-- byoc plan part {p}")).collect();
        assert!(parts.len() > 5, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(part.chars().count() <= 3_000, "part {} has {} chars", i + 1, part.chars().count());
            assert!(part.starts_with(&format!("<!-- byoc plan part {}/{} -->\n", i + 1, parts.len())), "{part}");
        }
        for step in &plan.steps {
            assert!(text.contains(&format!("| `{}` |", step.id)), "{} listed", step.id);
        }
        assert!(text.contains("…(cut: too long for one comment; see --output json)"));
        assert!(parts.last().expect("parts").ends_with("all signed\n"), "the trailer closes the last part");
        assert!(text.contains("#### Subnet (continued)") || text.contains("#### Property changes (continued)"));
    }

    #[test]
    fn one_comment_keeps_the_summary_and_the_trailer_and_counts_what_it_left_out() {
        let plan = big_plan(200);
        let text = markdown(&plan, Comments::One(5_000), "### Signatures\n\nall signed\n");
        assert!(text.chars().count() <= 5_000, "{} chars", text.chars().count());
        assert!(text.contains("| 200 | 0 | 0 | 0 | 0 | 0 |"), "{text}");
        let listed = plan.steps.iter().filter(|s| text.contains(&format!("| `{}` |", s.id))).count();
        assert!((1..200).contains(&listed), "{listed}");
        assert!(
            text.contains(&format!("Listed above: {listed} of 200 changed resources"))
                && text.contains(&format!("{} more not listed", 200 - listed))
        );
        assert!(text.ends_with("all signed\n"), "{text}");
        // A small plan is not cut, and its graph is drawn.
        let small = markdown(&big_plan(3), Comments::One(65_536), "");
        assert!(!small.contains("cut to fit") && small.contains("```mermaid"), "{small}");
    }
}
