//! What `byoc` writes to stderr, and in which format.
//!
//! stdout carries each command's result (a plan, a report, the lines of an apply's
//! progress); stderr carries what goes wrong and what is retried, for people or for a log
//! collector. With `--log-format text` (the default) those are the plain lines byoc has
//! always printed (`error: ...`, `retry: ...`), with no colour unless stderr is a terminal;
//! with `--log-format json` each is one JSON object a line (`timestamp`, `level`,
//! `fields.message`, `target`), and so is every event of the libraries byoc uses (the AWS
//! SDK, kube) that passes the filter in `BYOC_LOG` (default: byoc's own at info, others
//! at warn). The question `byoc apply` asks without `--auto-approve` stays plain text.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// Formats of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the subscriber for `format`; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BYOC_LOG").unwrap_or_else(|_| "byoc=info,warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        // Colour codes only where a person reads them: never into a file or a pipe.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    if installed.is_ok() {
        JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    }
}

/// How serious a stderr line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The command failed or refused.
    Error,
    /// Something the user should look at (a retry, a skipped check).
    Warn,
    /// Progress that is not the command's result.
    Info,
}

/// Writes one stderr line (or a few lines that belong together, such as an error and its
/// hint): as it is in text mode, as one JSON object in json mode.
pub fn line(level: Level, text: &str) {
    if !JSON.load(Ordering::Relaxed) {
        eprintln!("{text}");
        return;
    }
    // The level is a field of its own in JSON; the text keeps everything else.
    let message = text.strip_prefix("error: ").or_else(|| text.strip_prefix("warning: ")).unwrap_or(text);
    match level {
        Level::Error => tracing::error!(target: "byoc", "{message}"),
        Level::Warn => tracing::warn!(target: "byoc", "{message}"),
        Level::Info => tracing::info!(target: "byoc", "{message}"),
    }
}

/// `error: ...` on stderr.
pub fn error(text: &str) {
    line(Level::Error, &format!("error: {text}"));
}
