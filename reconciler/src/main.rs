//! `byoc`: parses the command line and runs it; everything else lives in the library.

use clap::Parser;

// Plans allocate many small objects; mimalloc frees them several times faster than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    byoc::cli::run(byoc::cli::Cli::parse())
}
