//! `shmplug serve`: a long-running host with eKuiper's REST API for portable plugins and
//! Prometheus metrics.
//!
//! - [`portables`]: eKuiper's plugin management endpoints under `/plugins/portables`, on the
//!   plugins directory shared with `shmplug plugins`.
//! - [`pipelines`]: start, list, inspect and stop pipelines (`shmplug run`'s files) under
//!   `/pipelines`.
//! - [`metrics`]: the Prometheus endpoint `/metrics`.
//!
//! At start-up the server starts a process for every valid installed plugin, binds its
//! address and prints `listening on http://ADDR` on stdout (the bound port when `--listen`
//! asks for port 0). Every second it looks at the plugins directory again: a plugin installed
//! with `shmplug plugins install` gets its process, one updated with `shmplug plugins update`
//! the new version's, one removed with `shmplug plugins remove` is stopped, as through the API. SIGINT or SIGTERM stop it: it finishes the requests in flight, then stops
//! every plugin process and reaps it.

mod download;
mod host;
mod metrics;
mod pipelines;
mod portables;
mod reply;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use clap::Args;
use shmplug_host::SupervisorConfig;
use shmplug_host::registry::Registry;

use host::Host;

/// The largest request body accepted (a plugin or pipeline description is far smaller).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How often the server looks for plugins installed or removed from the command line.
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on. Anything but a loopback address exposes the API (install and
    /// run plugins, which are programs) to whoever reaches it: make that choice deliberately.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9081")]
    pub listen: SocketAddr,

    /// A PEM file of the certificates to trust for `https://` package URLs, instead of the
    /// built-in public roots (Mozilla's): a private certificate authority, or a server's
    /// self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    host: Arc<Host>,
    pipelines: Arc<pipelines::Pipelines>,
    metrics: Arc<prometheus_client::registry::Registry>,
    downloads: Arc<download::Downloader>,
}

pub fn execute(registry: Registry, args: &ServeArgs) -> crate::error::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shmplug-serve")
        .build()
        .map_err(|e| serve_error(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(registry, args))
}

async fn serve(registry: Registry, args: &ServeArgs) -> crate::error::Result<()> {
    // Listen for the signals before anything starts, so that a stop from now on is clean.
    let stop = stop_signal()?;
    let downloads =
        Arc::new(download::Downloader::new(args.tls_ca.as_deref()).map_err(serve_error)?);
    // Bind first: a busy port fails before any plugin process starts.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| serve_error(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| serve_error(format!("cannot read the bound address: {e}")))?;
    let host = Arc::new(Host::new(registry, SupervisorConfig::default()));
    let starting = host.clone();
    tokio::task::spawn_blocking(move || starting.start_installed())
        .await
        .map_err(|e| serve_error(format!("starting the installed plugins failed: {e}")))?;
    if !address.ip().is_loopback() {
        tracing::warn!(
            "listening on {address}, beyond this machine: whoever reaches it can install and \
             run plugins"
        );
    }
    let pipelines = Arc::new(pipelines::Pipelines::default());
    let app = App {
        metrics: Arc::new(metrics::registry(host.clone(), pipelines.clone())),
        host: host.clone(),
        pipelines: pipelines.clone(),
        downloads,
    };
    tokio::spawn(rescan(host.clone()));
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{address}");
    let _ = stdout.flush();
    tracing::info!(
        "serving the plugins in {} on http://{address}",
        host.registry().root().display()
    );
    let served = axum::serve(listener, router(app))
        .with_graceful_shutdown(stop)
        .await;
    tracing::info!("stopping every pipeline and plugin");
    // Waits for a rescan in progress and keeps any other from starting a process now.
    let _change = host.change().await;
    let stopping = host.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        pipelines.stop_all();
        for (name, process) in stopping.take_all() {
            host::stop(&name, process);
        }
    })
    .await;
    served.map_err(|e| serve_error(format!("the server failed: {e}")))?;
    stopped.map_err(|e| serve_error(format!("stopping the plugins failed: {e}")))?;
    Ok(())
}

fn router(app: App) -> Router {
    Router::new()
        .route(
            "/plugins/portables",
            get(portables::list).post(portables::create),
        )
        .route(
            "/plugins/portables/{name}",
            get(portables::describe)
                .put(portables::update)
                .delete(portables::delete),
        )
        .route("/plugins/portables/{name}/status", get(portables::status))
        .route("/pipelines", get(pipelines::list).post(pipelines::start))
        .route(
            "/pipelines/{id}",
            get(pipelines::inspect).delete(pipelines::stop),
        )
        .route("/metrics", get(metrics::scrape))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Every [`RESCAN_EVERY`], starts the plugins installed from the command line and stops
/// those removed (see [`Host::rescan`]); runs until the server stops.
async fn rescan(host: Arc<Host>) {
    let mut ticks = tokio::time::interval(RESCAN_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the plugins were just started.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let _change = host.change().await;
        let scanning = host.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || scanning.rescan()).await {
            tracing::error!("rescanning the plugins directory failed: {e}");
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM.
fn stop_signal() -> crate::error::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| serve_error(format!("cannot handle SIGINT: {e}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| serve_error(format!("cannot handle SIGTERM: {e}")))?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        }
    })
}

fn serve_error(detail: String) -> crate::error::Error {
    crate::error::Error::Serve(detail)
}
