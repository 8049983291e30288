//! Problems found in user-supplied files, each with the place it was found and a hint.

use std::fmt;

use serde_saphyr::Location;

/// Where in a file a problem was found. `line` and `column` are 1-based; they are absent
/// when the problem concerns the file as a whole (too large, not UTF-8, missing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Path of the file, relative to the repository root or as given on the command line.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
}

impl Position {
    /// The whole file, with no line or column.
    pub fn file(file: impl Into<String>) -> Self {
        Self { file: file.into(), line: None, column: None }
    }

    /// A position taken from a parser location; an unknown location degrades to the file.
    pub fn at(file: impl Into<String>, location: &Location) -> Self {
        let line = location.line();
        if line == 0 {
            return Self::file(file);
        }
        Self { file: file.into(), line: Some(line), column: Some(location.column()) }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}", self.file),
            (Some(line), None) => write!(f, "{}:{line}", self.file),
            _ => write!(f, "{}", self.file),
        }
    }
}

/// One problem in an input file: where, what, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is.
    pub position: Position,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it, when there is something better to say than the message.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at `position`.
    pub fn new(position: Position, message: impl Into<String>) -> Self {
        Self { position, message: message.into(), hint: None }
    }

    /// Adds a hint that tells the user how to fix the problem.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: {}", self.position, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics during validation so that every problem is reported at once.
#[derive(Debug, Default)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// Records one problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Records a problem at `position` with a hint.
    pub fn error(&mut self, position: Position, message: impl Into<String>, hint: impl Into<String>) {
        self.0.push(Diagnostic::new(position, message).hint(hint));
    }

    /// Records all problems of another collection.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, else every problem sorted by position.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<Diagnostic>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            let mut all = self.0;
            all.sort_by(|a, b| a.position.cmp(&b.position));
            Err(all)
        }
    }

    /// The recorded problems, sorted by position.
    pub fn into_sorted(self) -> Vec<Diagnostic> {
        let mut all = self.0;
        all.sort_by(|a, b| a.position.cmp(&b.position));
        all
    }
}
