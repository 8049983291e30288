//! `byoc validate DIR`: check an environment directory of the work tree.

use std::path::Path;

use super::{EXIT_OK, report_problems};
use crate::expand::expand;
use crate::pipeline::load::{DirectoryError, directory};

/// Runs `byoc validate`; returns the exit code.
pub fn run(dir: &Path) -> u8 {
    let shown = dir.display().to_string();
    match directory(dir) {
        Ok(specs) => {
            let graph = expand(&specs);
            println!(
                "{shown}: valid {} environment {:?}: {} cluster(s), {} route(s), {} resource(s)",
                specs.environment.cloud.as_str(),
                specs.environment.name,
                specs.clusters.len(),
                specs.routes.routes.len(),
                graph.len()
            );
            EXIT_OK
        }
        Err(DirectoryError::Unreadable(problems)) => report_problems(&format!("cannot read {shown}"), &problems),
        Err(DirectoryError::Invalid(problems)) => report_problems(&format!("{shown} is not valid"), &problems),
    }
}
