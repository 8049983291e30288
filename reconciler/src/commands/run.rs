//! `byoc run --config FILE`: the in-account daemon ([`crate::run`]), which calls the same
//! pipeline as the one-shot commands.

use std::path::Path;

use super::{EXIT_ERROR, EXIT_OK, report_problems};

/// Runs `byoc run`; returns the exit code.
pub fn run(path: &Path, once: bool, check: bool) -> u8 {
    let config = match crate::run::config::load(path) {
        Ok(c) => c,
        Err(problems) => return report_problems(&format!("{} is not a valid configuration", path.display()), &problems),
    };
    if check {
        println!("{} is a valid configuration", path.display());
        return EXIT_OK;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crate::logging::error(&format!("cannot start the async runtime: {e}"));
            return EXIT_ERROR;
        }
    };
    let daemon = match runtime.block_on(crate::run::Daemon::new(config)) {
        Ok(d) => d,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"));
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(daemon.run(once)) {
        Ok(crate::run::Ended::Stopped) if once => EXIT_ERROR,
        Ok(_) => EXIT_OK,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}
