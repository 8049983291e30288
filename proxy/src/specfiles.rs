//! The files of an environment directory and the header every spec document starts with.
//!
//! Both the reconciler (reading a revision from git objects) and the proxy (reading the
//! published tree from disk) see an environment as a sorted list of [`SourceFile`]s and
//! dispatch each on its `kind`.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostics::{Diagnostic, Position};

/// One spec file: its path (for messages) and its bytes, not yet decoded.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path shown in messages: relative to the repository root, or as found on disk.
    pub path: String,
    /// Raw content.
    pub bytes: Vec<u8>,
}

/// Whether a file name is a spec file: `.yaml` or `.yml` in any letter case, not hidden.
/// Other files (README.md, ...) are ignored. `routes.YAML` is a spec file: skipping it
/// silently would leave an environment "valid" without the routes its author wrote.
pub fn is_spec_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// What an entry of an environment directory is, as a work tree or a git tree shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (a git tree).
    Directory,
    /// A regular file (a git blob, executable or not).
    File,
    /// A symbolic link (a git blob of mode 120000), whatever it points at.
    Symlink,
    /// A submodule (a git commit entry), or a work-tree directory holding its own `.git`.
    Submodule,
    /// Anything else on disk: a FIFO, a socket, a device.
    Special,
}

/// What the walker does with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryVerdict {
    /// Not a spec: hidden entries and files of other types.
    Skip,
    /// A directory: read what is in it.
    Descend,
    /// A spec file: read its bytes.
    Read,
    /// Cannot be part of a verified tree: reported, and the tree is refused.
    Refuse(Diagnostic),
}

/// The one rule every entry point applies to the entries of an environment directory, so
/// `byoc validate` (a work tree), `byoc plan` and `byoc apply` (a git revision) and
/// `rwproxy` (the published tree) give the same verdict on the same tree. `path` is the
/// entry's path as shown in messages, `name` its last component.
///
/// Symbolic links are refused everywhere, spec-named or not, rather than followed: a link
/// committed to git can point anywhere on the machine that reads it (outside the verified
/// tree), and one that points at a directory of specs would otherwise be skipped silently.
pub fn judge(path: &str, name: &str, kind: EntryKind) -> EntryVerdict {
    if name.starts_with('.') {
        return EntryVerdict::Skip;
    }
    match kind {
        EntryKind::Directory => EntryVerdict::Descend,
        EntryKind::File if is_spec_file(name) => EntryVerdict::Read,
        EntryKind::File => EntryVerdict::Skip,
        EntryKind::Symlink => EntryVerdict::Refuse(
            Diagnostic::new(Position::file(path), "is a symbolic link; links in an environment directory are not followed")
                .hint("commit the file (or directory) itself; a link could point outside the verified tree"),
        ),
        EntryKind::Submodule => EntryVerdict::Refuse(
            Diagnostic::new(Position::file(path), "is a submodule (or a nested repository); submodules are not followed")
                .hint("keep specs in this repository; a submodule's commits are not verified"),
        ),
        EntryKind::Special => EntryVerdict::Refuse(
            Diagnostic::new(Position::file(path), "is not a regular file or directory").hint("remove it from the environment directory"),
        ),
    }
}

/// Reads the spec files under `dir` (recursively, by the rules of [`judge`]), sorted by
/// path so every run sees them in the same order. `dir` itself may be a symbolic link (the
/// published tree is one); links inside it are refused. Every refused entry is reported.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    walk(dir, &mut files, &mut problems).map_err(|d| vec![d])?;
    if !problems.is_empty() {
        problems.sort_by(|a: &Diagnostic, b| a.position.cmp(&b.position));
        return Err(problems);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<SourceFile>, problems: &mut Vec<Diagnostic>) -> Result<(), Diagnostic> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostic::new(Position::file(&shown), format!("cannot read directory: {e}"))
            .hint("pass the environment directory, e.g. examples/aws")
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| Diagnostic::new(Position::file(&shown), format!("cannot list directory: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let shown = path.display().to_string();
        // `file_type` does not follow links: a link is judged as a link.
        let file_type = entry.file_type().map_err(|e| Diagnostic::new(Position::file(&shown), e.to_string()))?;
        let kind = if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            if path.join(".git").symlink_metadata().is_ok() { EntryKind::Submodule } else { EntryKind::Directory }
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Special
        };
        match judge(&shown, &name, kind) {
            EntryVerdict::Skip => {}
            EntryVerdict::Descend => walk(&path, out, problems)?,
            EntryVerdict::Refuse(d) => problems.push(d),
            EntryVerdict::Read => {
                // Read at most one byte past the limit, so a huge file costs no more than that.
                let bytes = read_capped(&path).map_err(|e| Diagnostic::new(Position::file(&shown), format!("cannot read file: {e}")))?;
                out.push(SourceFile { path: shown, bytes });
            }
        }
    }
    Ok(())
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(crate::yaml::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The fields every spec document starts with; the rest is parsed by kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Should be [`crate::routes::API_VERSION`].
    pub api_version: Option<Spanned<String>>,
    /// Environment, RisingWaveCluster or Routes.
    pub kind: Option<Spanned<String>>,
}

/// The kinds of spec document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kind: Environment`.
    Environment,
    /// `kind: RisingWaveCluster`.
    RisingWaveCluster,
    /// `kind: Routes`.
    Routes,
}

/// Decodes a file and reads its `kind`, with a clear error when it is absent or unknown.
pub fn kind_of(file: &SourceFile) -> Result<(Kind, &str), Diagnostic> {
    let text = crate::yaml::decode(&file.path, &file.bytes)?;
    if let Some(kind) = scan_kind(text) {
        return Ok((kind, text));
    }
    let header: Header = crate::yaml::parse(&file.path, text)?;
    let Some(kind) = header.kind else {
        return Err(Diagnostic::new(Position::file(&file.path), "document has no `kind`")
            .hint("start each spec file with apiVersion and kind (Environment, RisingWaveCluster or Routes)"));
    };
    let k = parse_kind(&kind.value).ok_or_else(|| {
        Diagnostic::new(Position::at(&file.path, &kind.referenced), format!("unknown kind {:?}", kind.value))
            .hint("kinds are Environment, RisingWaveCluster and Routes")
    })?;
    Ok((k, text))
}

fn parse_kind(s: &str) -> Option<Kind> {
    match s {
        "Environment" => Some(Kind::Environment),
        "RisingWaveCluster" => Some(Kind::RisingWaveCluster),
        "Routes" => Some(Kind::Routes),
        _ => None,
    }
}

/// The kind from the usual layout (exactly one line `kind: Name` at column 0, no anchors,
/// tags or flow style), found without parsing the file twice. Anything unusual returns
/// `None` and the caller parses the header properly. A wrong guess cannot mis-type a
/// document: the typed parse checks `kind` again and refuses a mismatch with its position.
fn scan_kind(text: &str) -> Option<Kind> {
    let mut found = None;
    let mut content = false;
    for line in text.lines() {
        // A document marker after content starts a second document: let the parser say so.
        if line.starts_with("---") || line.starts_with("...") {
            if content {
                return None;
            }
            continue;
        }
        content |= !(line.trim().is_empty() || line.trim_start().starts_with('#'));
        let Some(rest) = line.strip_prefix("kind:") else { continue };
        let value = rest.split(" #").next().unwrap_or_default().trim();
        if found.is_some() {
            return None;
        }
        found = Some(parse_kind(value)?);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<Kind, String> {
        let file = SourceFile { path: "f.yaml".into(), bytes: text.as_bytes().to_vec() };
        kind_of(&file).map(|(k, _)| k).map_err(|d| d.to_string())
    }

    #[test]
    fn kinds_are_found_in_any_layout() {
        assert_eq!(kind("apiVersion: v\nkind: Routes # the routes\n"), Ok(Kind::Routes));
        assert_eq!(kind("{apiVersion: v, kind: Environment}\n"), Ok(Kind::Environment));
        assert_eq!(kind("kind: \"RisingWaveCluster\"\n"), Ok(Kind::RisingWaveCluster));
        // Two top-level-looking lines (one inside a multi-line string): parsed properly.
        assert_eq!(kind("a: \"x\nkind: Routes\"\nkind: Environment\n"), Ok(Kind::Environment));
        assert_eq!(
            kind("kind: Cluster\n"),
            Err("f.yaml:1:7: error: unknown kind \"Cluster\"\n  hint: kinds are Environment, RisingWaveCluster and Routes".into())
        );
        assert!(kind("apiVersion: v\n").unwrap_err().contains("no `kind`"));
        assert!(kind("kind: Routes\n---\nkind: Routes\n").unwrap_err().contains("multiple YAML documents"));
    }
}
