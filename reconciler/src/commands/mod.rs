//! The commands of `byoc`, one module each: each takes its parsed arguments, calls the
//! pipeline ([`crate::pipeline`]), prints its result and returns its exit code. Exit codes
//! and the helpers the commands share live here; nothing below this layer imports it.

pub mod apply;
pub mod clusters;
pub mod plan;
pub mod plan_file;
pub mod publish;
pub mod revert;
pub mod run;
pub mod validate;
pub mod verify;

use std::time::Duration;

use clap::ValueEnum;
use rwproxy::diagnostics::Diagnostic;

use crate::logging;
use crate::source::SourceError;

/// Exit code for "no changes" / "valid".
pub const EXIT_OK: u8 = 0;
/// Exit code for errors.
pub const EXIT_ERROR: u8 = 1;
/// Exit code for "the plan has changes" (like `terraform plan -detailed-exitcode`).
pub const EXIT_CHANGES: u8 = 2;
/// Exit code of `byoc plan` when every entry of the plan is blocked: the pull request asks
/// for something byoc refuses to do (delete a bucket, a retained cluster), and applying it
/// would change nothing.
pub const EXIT_ONLY_BLOCKED: u8 = 3;
/// Exit code for a command line that does not parse (an unknown flag, a value out of
/// range): sysexits' `EX_USAGE`, apart from 2 so CI never reads a typo as "changes".
pub const EXIT_USAGE: u8 = 64;

/// Output formats of the commands that print a report (verify, clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// For terminals.
    Text,
    /// For machines.
    Json,
}

/// A number of seconds, finite and more than zero (`0.5`, `10`).
pub fn positive_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s} is out of range: give a number of seconds more than 0")),
    }
}

/// A usage error found after parsing (two flags that do not go together), printed the
/// way clap prints its own.
pub fn usage_error(message: &str) -> u8 {
    let _ = clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{message}\n")).print();
    EXIT_USAGE
}

/// Prints every problem, then a headline; returns [`EXIT_ERROR`].
pub fn report_problems(headline: &str, problems: &[Diagnostic]) -> u8 {
    for p in problems {
        logging::line(logging::Level::Error, &p.to_string());
    }
    logging::error(&format!("{headline}: {} problem(s)", problems.len()));
    EXIT_ERROR
}

/// Prints a source error (with every file problem, if those are what failed).
pub fn report_source_error(which: &str, e: &SourceError) -> u8 {
    match e {
        SourceError::Files(problems) => report_problems(&format!("{which} revision has files that cannot be specs"), problems),
        other => {
            logging::error(&format!("{which}: {other}"));
            EXIT_ERROR
        }
    }
}

/// Prints an error with its causes; returns [`EXIT_ERROR`].
pub fn report_error(e: &dyn std::fmt::Display) -> u8 {
    logging::error(&e.to_string());
    EXIT_ERROR
}

/// A runtime for a one-shot command's async work.
pub fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        logging::error(&format!("cannot start the async runtime: {e}"));
        EXIT_ERROR
    })
}
