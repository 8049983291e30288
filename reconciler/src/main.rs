//! `byoc`: parses the command line and runs it; everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    byoc::cli::run(byoc::cli::Cli::parse())
}
