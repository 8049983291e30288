//! `rwproxy`: parses the command line, loads routes and certificates, runs the proxy.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Parser;
use ipnet::IpNet;
use rwproxy::metrics::Metrics;
use rwproxy::routing::Router;
use rwproxy::server::{Shared, serve};
use rwproxy::tls::{CertFiles, SniResolver};
use tokio_util::sync::CancellationToken;

/// RWProxy, the PostgreSQL-wire routing proxy for RisingWave clusters.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory with the `kind: Routes` files (the published, verified tree).
    #[arg(long)]
    routes: PathBuf,
    /// Address to accept SQL connections on.
    #[arg(long, default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// PEM certificate chain; repeat with --tls-key for several (chosen by SNI).
    #[arg(long)]
    tls_cert: Vec<PathBuf>,
    /// PEM private key of the --tls-cert at the same position.
    #[arg(long)]
    tls_key: Vec<PathBuf>,
    /// PEM certificates that backends' certificates must chain to, for routes with
    /// `backendTls: verify-full`. Read at start.
    #[arg(long)]
    backend_ca: Option<PathBuf>,
    /// Address for /metrics and /healthz.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Load balancer networks whose connections start with a PROXY protocol v2 header.
    #[arg(long)]
    proxy_protocol_from: Vec<IpNet>,
    /// Seconds from accept to a ready session before the connection is closed; at least 1.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout: u64,
    /// Seconds open sessions get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// Worker threads, 1 to 256. One (the default) is what a small pod should run:
    /// relaying is cheap and a single thread avoids cross-thread wake-ups on every message.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// New connections allowed per client network (/24 for IPv4, /64 for IPv6), written
    /// `N/s` or `N/m`; past it a client gets SQLSTATE 53400 before any backend is dialled.
    /// Default: no limit.
    #[arg(long, value_name = "N/s")]
    connect_rate_per_network: Option<rwproxy::limits::Rate>,
    /// Most client connections open at once; at the cap rwproxy stops accepting and new
    /// clients wait in the listen queue. Default: from the open-files limit (raised to
    /// its hard limit at start), two descriptors per connection plus headroom.
    #[arg(long)]
    max_client_connections: Option<usize>,
    /// Spare connections kept open per backend address, for routes with plain TCP to the
    /// backend: opened ahead of the clients that will take them, so a new client's startup
    /// message goes to a backend that has already accepted (PostgreSQL has forked by then).
    /// Opened only while clients keep coming; 0 turns them off.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    backend_spares: u16,
    /// Seconds a spare connection is kept unused before it is closed; keep it well below the
    /// backend's authentication timeout (PostgreSQL's `authentication_timeout`, 60 s by
    /// default, counts from the connect: a client handed a spare of this age has the rest).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    backend_spare_max_age: u64,
    /// Validate the routes, print the table and exit.
    #[arg(long)]
    check: bool,
    /// Format of the log on stderr: text (colour only on a terminal) or json (one object
    /// a line, for log collectors). The level filter comes from RWPROXY_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Formats of the log on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line.
    Json,
}

/// Exit code for a command line that does not parse (sysexits' `EX_USAGE`), as `byoc`.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RWPROXY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colour codes only where a person reads them, never into a file or a pipe.
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => log.json().with_ansi(false).init(),
    }
    // In the sidecar pod the reconciler publishes the routes only after its first
    // reconcile; until then there is nothing at --routes. Serving starts with no routes and
    // the first publish is picked up, instead of exiting and being restarted with backoff.
    let unpublished = !cli.check && std::fs::symlink_metadata(&cli.routes).is_err();
    let table = match if unpublished { Ok(Default::default()) } else { rwproxy::routes::load_dir(&cli.routes) } {
        Ok(t) => t,
        Err(problems) => {
            // Plain diagnostics, as `byoc validate` prints them (the same function judged
            // them); with --log-format json, through the log, one object a line.
            let json = matches!(cli.log_format, LogFormat::Json);
            for p in problems {
                if json {
                    tracing::error!("{p}");
                } else {
                    eprintln!("{p}");
                }
            }
            if json {
                tracing::error!("the routes in {} are not valid", cli.routes.display());
            } else {
                eprintln!("error: the routes in {} are not valid", cli.routes.display());
            }
            return ExitCode::FAILURE;
        }
    };
    if unpublished {
        tracing::warn!(routes = %cli.routes.display(), "nothing published at --routes yet; every connection is refused until routes are published");
    } else if table.routes.is_empty() {
        // An empty table routes nothing: most likely the wrong directory, or a tree the
        // reconciler has not published routes into yet.
        let what = format!("{} holds no route (no `kind: Routes` document lists one)", cli.routes.display());
        if cli.check {
            eprintln!("error: {what}");
            eprintln!("  hint: pass the published tree or an environment directory with a Routes document");
            return ExitCode::FAILURE;
        }
        tracing::warn!(routes = %cli.routes.display(), "starting with NO ROUTES: {what}; every connection is refused until routes are published");
    }
    if cli.check {
        for r in &table.routes {
            let nets: Vec<String> = r.allowed.iter().map(ToString::to_string).collect();
            println!("{}\t{}\t-> {}\tallow {}", r.name, r.matcher, r.cluster, nets.join(","));
        }
        return ExitCode::SUCCESS;
    }
    if cli.backend_ca.is_none() && table.routes.iter().any(|r| r.backend_tls == rwproxy::routes::BackendTls::VerifyFull) {
        tracing::warn!("some routes ask for backendTls: verify-full, but no --backend-ca was given; their connections will be refused");
    }
    match run(cli, table) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, table: rwproxy::routes::RouteTable) -> anyhow::Result<()> {
    anyhow::ensure!(cli.tls_cert.len() == cli.tls_key.len(), "give one --tls-key for each --tls-cert");
    let resolver = if cli.tls_cert.is_empty() {
        None
    } else {
        let files = cli.tls_cert.iter().zip(&cli.tls_key).map(|(c, k)| CertFiles { cert: c.clone(), key: k.clone() }).collect();
        Some(Arc::new(SniResolver::load(files)?))
    };
    let metrics = Arc::new(Metrics::default());
    let router = Arc::new(ArcSwap::from_pointee(Router::new(table)));
    let mut shared = Shared::new(router.clone(), resolver.clone().map(rwproxy::tls::server_config), metrics.clone());
    shared.proxy_protocol_from = cli.proxy_protocol_from;
    shared.handshake_timeout = Duration::from_secs(cli.handshake_timeout);
    shared.backend_tls = cli.backend_ca.as_deref().map(rwproxy::tls::backend_config).transpose()?;
    shared.connect_rate = cli.connect_rate_per_network.map(|r| rwproxy::limits::RateLimiter::new(r.limit, r.per));
    shared.spares =
        rwproxy::spares::Spares::new(usize::from(cli.backend_spares), Duration::from_secs(cli.backend_spare_max_age), metrics.clone());
    let nofile = rwproxy::limits::raise_open_files_limit();
    shared.max_client_connections = cli.max_client_connections.unwrap_or_else(|| rwproxy::limits::default_max_client_connections(nofile));
    if shared.max_client_connections.saturating_mul(2) > usize::try_from(nofile).unwrap_or(usize::MAX) {
        tracing::warn!(
            max_client_connections = shared.max_client_connections,
            open_files_limit = nofile,
            "--max-client-connections needs two descriptors per connection, more than the open-files limit allows; raise it (ulimit -n)"
        );
    }
    let shared = Arc::new(shared);
    rwproxy::reload::watch(cli.routes.clone(), router, resolver, metrics.clone())?;

    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(cli.threads)).enable_all().build()?
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(cli.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "accepting SQL connections");
        if let Some(admin) = cli.admin {
            let admin = tokio::net::TcpListener::bind(admin).await?;
            tokio::spawn(rwproxy::metrics::serve_admin(admin, metrics, shutdown.clone()));
        }
        let signals = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down: no new connections");
            signals.cancel();
        });
        serve(listener, shared, shutdown, Duration::from_secs(cli.grace)).await;
        anyhow::Ok(())
    })
}
