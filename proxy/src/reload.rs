//! Route table and certificate reloads. The routes directory is usually a symlink the
//! reconciler swaps to publish a new revision, so its parent is watched (recursively):
//! a swap, an edit in place and a new file all trigger a reload. A table that fails
//! validation is logged and counted, and the old one stays in use.

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
                tracing::info!(routes = table.routes.len(), "route table reloaded");
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

/// Watches the routes directory and the certificate files; reloads on change. Returns the
/// watcher, which stops watching when dropped.
pub fn watch(
    routes: PathBuf,
    router: Arc<ArcSwap<Router>>,
    tls: Option<Arc<SniResolver>>,
    metrics: Arc<Metrics>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    let parent = routes.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    watcher.watch(&parent, RecursiveMode::Recursive)?;
    if let Some(t) = &tls {
        for f in t.files() {
            for p in [&f.cert, &f.key] {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    watcher.watch(dir, RecursiveMode::NonRecursive)?;
                }
            }
        }
    }
    std::thread::Builder::new().name("rwproxy-reload".into()).spawn(move || {
        while rx.recv().is_ok() {
            // A publish is several file operations: let them land, then reload once for all
            // of them. The window is fixed, not "until quiet", so a stream of publishes
            // cannot starve reloads.
            std::thread::sleep(Duration::from_millis(20));
            while rx.try_recv().is_ok() {}
            reload_routes(&routes, &router, &metrics);
            if let Some(Err(e)) = tls.as_ref().map(|t| t.reload()) {
                tracing::error!(error = %e, "certificates refused; keeping the previous ones");
            }
        }
    })?;
    Ok(watcher)
}
