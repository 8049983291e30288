//! Reads an environment directory at a git revision straight from the object database: no
//! checkout, no working tree, so a pull request's head can be planned without touching
//! the files of anything else.

use std::io::Read;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};
use rwproxy::diagnostics::{Diagnostic, Position};
use rwproxy::specfiles::{SourceFile, is_spec_file};
use rwproxy::yaml::MAX_FILE_BYTES;

/// Failure to read a revision.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository could not be opened.
    #[error("cannot open git repository {path}: {message}")]
    Open {
        /// Path given.
        path: String,
        /// libgit2's message.
        message: String,
    },
    /// The revision does not name a commit.
    #[error("revision {rev:?} does not name a commit: {message}")]
    Resolve {
        /// Revision given.
        rev: String,
        /// libgit2's message.
        message: String,
    },
    /// The environment path names something other than a directory.
    #[error("{path} at {revision} is not a directory")]
    NotADirectory {
        /// The environment path.
        path: String,
        /// The revision.
        revision: String,
    },
    /// Reading objects failed.
    #[error("cannot read {path} at {revision}: {message}")]
    Read {
        /// The path.
        path: String,
        /// The revision.
        revision: String,
        /// libgit2's message.
        message: String,
    },
    /// Files that cannot be specs (symlinks, submodules).
    #[error("{} problem(s) in the files of the revision", .0.len())]
    Files(Vec<Diagnostic>),
}

/// A resolved revision and the spec files of the environment directory in it.
#[derive(Debug)]
pub struct Revision {
    /// Name like `main@sha1:<hex>` (or `sha1:<hex>` for a bare commit id).
    pub name: String,
    /// Commit id.
    pub commit: Oid,
    /// Spec files, sorted by path; `None` when the directory does not exist at this revision
    /// (a new environment: nothing is observed at the base).
    pub files: Option<Vec<SourceFile>>,
}

/// Opens the repository at `path` (a work tree or a bare repository).
pub fn open(path: &Path) -> Result<Repository, SourceError> {
    Repository::open(path).map_err(|e| SourceError::Open { path: path.display().to_string(), message: e.message().to_owned() })
}

/// Reads the spec files under `env_dir` at `rev`.
pub fn read(repo: &Repository, rev: &str, env_dir: &str) -> Result<Revision, SourceError> {
    let resolve_err = |e: git2::Error| SourceError::Resolve { rev: rev.to_owned(), message: e.message().to_owned() };
    let object = repo.revparse_single(rev).map_err(resolve_err)?;
    let commit = object.peel_to_commit().map_err(resolve_err)?;
    let name = revision_name(repo, rev, commit.id());
    let read_err =
        |path: &str, e: git2::Error| SourceError::Read { path: path.to_owned(), revision: name.clone(), message: e.message().to_owned() };

    let dir = normalize(env_dir);
    let root = commit.tree().map_err(|e| read_err("/", e))?;
    let tree = if dir.is_empty() {
        root
    } else {
        match root.get_path(Path::new(&dir)) {
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Revision { name, commit: commit.id(), files: None }),
            Err(e) => return Err(read_err(&dir, e)),
            Ok(entry) if entry.kind() != Some(ObjectType::Tree) => return Err(SourceError::NotADirectory { path: dir, revision: name }),
            Ok(entry) => repo.find_tree(entry.id()).map_err(|e| read_err(&dir, e))?,
        }
    };

    let mut files = Vec::new();
    let mut problems = Vec::new();
    walk(repo, &tree, &dir, &mut files, &mut problems).map_err(|e| read_err(&dir, e))?;
    if !problems.is_empty() {
        return Err(SourceError::Files(problems));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Revision { name, commit: commit.id(), files: Some(files) })
}

fn walk(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    files: &mut Vec<SourceFile>,
    problems: &mut Vec<Diagnostic>,
) -> Result<(), git2::Error> {
    for entry in tree {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        match entry.kind() {
            Some(ObjectType::Tree) => walk(repo, &repo.find_tree(entry.id())?, &path, files, problems)?,
            Some(ObjectType::Blob) if is_spec_file(&name) => {
                if entry.filemode() == 0o120_000 {
                    problems.push(
                        Diagnostic::new(Position::file(&path), "spec file is a symbolic link")
                            .hint("commit the file itself; links could point outside the verified tree"),
                    );
                    continue;
                }
                // Read at most one byte past the limit: a huge blob costs no more memory
                // than that, and the loader reports it as too large.
                let mut bytes = Vec::new();
                let odb = repo.odb()?;
                let mut reader = odb.reader(entry.id())?.0;
                if let Err(e) = (&mut reader).take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes) {
                    problems.push(Diagnostic::new(Position::file(&path), format!("cannot read blob: {e}")));
                    continue;
                }
                files.push(SourceFile { path, bytes });
            }
            Some(ObjectType::Commit) => {
                problems.push(
                    Diagnostic::new(Position::file(&path), "submodules are not followed")
                        .hint("keep specs in this repository; a submodule's commits are not verified"),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// `main@sha1:<hex>` when `rev` is a branch (or HEAD on a branch), else `sha1:<hex>`.
pub fn revision_name(repo: &Repository, rev: &str, id: Oid) -> String {
    let branch = if rev == "HEAD" {
        repo.head().ok().filter(git2::Reference::is_branch).and_then(|r| r.shorthand().ok().map(str::to_owned))
    } else {
        repo.resolve_reference_from_short_name(rev)
            .ok()
            .filter(|r| r.is_branch() || r.is_remote())
            .and_then(|r| r.shorthand().ok().map(str::to_owned))
    };
    label(branch.as_deref(), id)
}

/// `branch@<hash>:<hex>` (`main@sha1:…`, `main@sha256:…`), or `<hash>:<hex>` without a branch.
pub fn label(branch: Option<&str>, id: Oid) -> String {
    let format = id.object_format();
    match branch {
        Some(b) => format!("{b}@{format}:{id}"),
        None => format!("{format}:{id}"),
    }
}

fn normalize(dir: &str) -> String {
    dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}
