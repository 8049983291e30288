//! `byoc`: parses the command line and runs it; everything else lives in the library.

// Plans allocate many small objects; mimalloc frees them several times faster than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match byoc::cli::parse() {
        Ok(cli) => byoc::cli::run(cli),
        // Usage errors exit with their own code (64), never 2, which means "changes".
        Err(code) => code,
    }
}
