//! `rwproxy`: for now, checks a routes directory the way the proxy will load it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// RWProxy, the PostgreSQL-wire routing proxy for RisingWave clusters.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the `kind: Routes` files of a directory and print the route table.
    Check {
        /// Directory holding the routes (the published environment tree).
        #[arg(long)]
        routes: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { routes } => match rwproxy::routes::load_dir(&routes) {
            Ok(table) => {
                for r in &table.routes {
                    let nets: Vec<String> = r.allowed.iter().map(ToString::to_string).collect();
                    println!("{}\t{}\t-> {}\tallow {}", r.name, r.matcher, r.cluster, nets.join(","));
                }
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::FAILURE
            }
        },
    }
}
