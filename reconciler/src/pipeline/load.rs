//! The **load** stage: the environment directory's spec files at a revision (from git
//! objects, never the work tree), parsed and validated into typed specs, every problem
//! with its file:line:col.

use std::path::Path;

use git2::{Oid, Repository};
use rwproxy::diagnostics::Diagnostic;
use rwproxy::specfiles::{self, SourceFile};

use crate::source::{self, SourceError};
use crate::spec::Specs;
use crate::spec::load::{ParseCache, load_cached};

/// Why a revision's specs could not be had. None of these goes away by retrying: the
/// revision or the files must change.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The revision or its files could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The environment directory is not in the revision.
    #[error("{env} does not exist at {revision}")]
    Missing {
        /// The environment directory.
        env: String,
        /// The revision's name.
        revision: String,
    },
    /// The specs do not validate.
    #[error("{revision} is not valid: {} problem(s)", problems.len())]
    Invalid {
        /// The revision's name.
        revision: String,
        /// Every problem, with file:line:col.
        problems: Vec<Diagnostic>,
    },
}

/// A revision's environment, loaded.
#[derive(Debug)]
pub struct Loaded {
    /// `main@sha1:<hex>` or `sha1:<hex>`.
    pub name: String,
    /// The commit.
    pub commit: Oid,
    /// The spec files as read (what `publish` writes).
    pub files: Vec<SourceFile>,
    /// The validated specs.
    pub specs: Specs,
}

/// Loads `env` at `rev`.
pub fn at_revision(repo: &Repository, rev: &str, env: &str) -> Result<Loaded, LoadError> {
    at_revision_cached(repo, rev, env, &ParseCache::default())
}

/// [`at_revision`] sharing parsed files through `cache` (a pull request's base and head
/// have most files in common).
#[tracing::instrument(level = "info", skip_all, fields(stage = "load", revision = rev, environment = env))]
pub fn at_revision_cached(repo: &Repository, rev: &str, env: &str, cache: &ParseCache) -> Result<Loaded, LoadError> {
    let revision = source::read(repo, rev, env)?;
    let Some(files) = revision.files else {
        return Err(LoadError::Missing { env: env.to_owned(), revision: revision.name });
    };
    match load_cached(env, &files, cache) {
        Ok(specs) => Ok(Loaded { name: revision.name, commit: revision.commit, files, specs }),
        Err(problems) => Err(LoadError::Invalid { revision: revision.name, problems }),
    }
}

/// Why a directory of the work tree could not be loaded.
#[derive(Debug)]
pub enum DirectoryError {
    /// Files that cannot be specs (unreadable, too large, a symlink).
    Unreadable(Vec<Diagnostic>),
    /// The specs do not validate.
    Invalid(Vec<Diagnostic>),
}

/// Loads a directory of the work tree (`byoc validate`, `byoc clusters`).
pub fn directory(dir: &Path) -> Result<Specs, DirectoryError> {
    let files = specfiles::read_dir(dir).map_err(DirectoryError::Unreadable)?;
    crate::spec::load::load(&dir.display().to_string(), &files).map_err(DirectoryError::Invalid)
}
