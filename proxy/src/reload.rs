//! Route table and certificate reloads. The routes directory is usually a symlink the
//! reconciler swaps to publish a new revision, so three things are watched: the routes
//! directory itself (recursively, through the symlink, for edits in place), its parent
//! (not recursively, for the swap; the new target is then watched instead of the old), and
//! the certificates' directories (a Kubernetes secret volume also swaps a symlink there).
//! Events elsewhere in those directories are ignored, so a busy parent directory costs
//! nothing. A table that fails validation is logged and counted, and the old one stays in
//! use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use crate::metrics::{Metrics, ReloadResult};
use crate::routing::Router;
use crate::tls::SniResolver;

/// Loads the routes from `dir` into `router`; on failure keeps the current table.
pub fn reload_routes(dir: &Path, router: &ArcSwap<Router>, metrics: &Metrics) -> bool {
    match crate::routes::load_dir(dir) {
        Ok(table) => {
            if router.load().table() != &table {
                if table.routes.is_empty() {
                    tracing::warn!(routes = %dir.display(), "route table reloaded with NO ROUTES: every connection is refused");
                } else {
                    tracing::info!(routes = table.routes.len(), "route table reloaded");
                }
            }
            router.store(Arc::new(Router::new(table)));
            metrics.reloads.get_or_create(&ReloadResult { result: "ok" }).inc();
            true
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "routes refused; keeping the previous table");
            }
            metrics.reloads.get_or_create(&ReloadResult { result: "failed" }).inc();
            false
        }
    }
}

/// Watches the routes directory and the certificate files, and reloads on change, from a
/// thread that runs for the life of the process.
pub fn watch(routes: PathBuf, router: Arc<ArcSwap<Router>>, tls: Option<Arc<SniResolver>>, metrics: Arc<Metrics>) -> notify::Result<()> {
    // Events name paths the way their watch was given: make every path absolute (without
    // resolving the symlink) so they compare equal.
    let routes = std::path::absolute(&routes)?;
    let (tx, rx) = std::sync::mpsc::channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = tx.send(e);
        }
    })?;
    let parent = routes.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    watcher.watch(&parent, RecursiveMode::NonRecursive)?;
    // Not published yet: the parent's watch sees the symlink appear (a swap, below).
    if routes.exists() {
        watcher.watch(&routes, RecursiveMode::Recursive)?;
    }
    let mut cert_dirs: Vec<PathBuf> = Vec::new();
    for f in tls.iter().flat_map(|t| t.files()) {
        for p in [&f.cert, &f.key] {
            if let Some(dir) = std::path::absolute(p)?.parent().filter(|d| !cert_dirs.iter().any(|c| c == d)) {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
                cert_dirs.push(dir.to_path_buf());
            }
        }
    }
    std::thread::Builder::new().name("rwproxy-reload".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            // A publish is several file operations: let them land, then reload once for all
            // of them. The window is fixed, not "until quiet", so a stream of publishes
            // cannot starve reloads.
            std::thread::sleep(Duration::from_millis(20));
            let events: Vec<notify::Event> = std::iter::once(first).chain(rx.try_iter()).collect();
            let paths = || events.iter().flat_map(|e| e.paths.iter());
            // The entry itself changed: the symlink was swapped (or the directory replaced).
            let swapped = paths().any(|p| p == &routes);
            if swapped {
                // Follow the symlink to the new revision; the old one may be gone already.
                let _ = watcher.unwatch(&routes);
                if let Err(e) = watcher.watch(&routes, RecursiveMode::Recursive) {
                    tracing::error!(error = %e, routes = %routes.display(), "cannot watch the routes directory");
                }
            }
            if paths().any(|p| p.starts_with(&routes)) {
                reload_routes(&routes, &router, &metrics);
            }
            if paths().any(|p| p.parent().is_some_and(|d| cert_dirs.iter().any(|c| c == d)))
                && let Some(Err(e)) = tls.as_ref().map(|t| t.reload())
            {
                tracing::error!(error = %e, "certificates refused; keeping the previous ones");
            }
        }
    })?;
    Ok(())
}
