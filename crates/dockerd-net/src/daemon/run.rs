//! The daemon's main loop (built with the `daemon` feature): threads, socket, signals.

use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{Context, Result, anyhow};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::proxy::{NoProxies, Proxies, Userland};
use super::reaper::Reaper;
use super::service::{Service, Setup};
use super::{server, service, sys};
use crate::backend::Backends;

/// How many requests may wait for the worker before senders wait in turn.
const QUEUE: usize = 1024;

/// What `dockerd-net daemon` needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub setup: Setup,
    /// The API socket's path (from `-H unix://PATH`).
    pub socket: PathBuf,
    /// `--iptables-backend`.
    pub iptables_backend: String,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns an error when it cannot start.
pub fn run(opts: Options) -> Result<()> {
    let lock = sys::lock(&opts.socket)?;
    let _root_lock = sys::lock_data_root(&opts.setup.data_root, sys::LockMode::Exclusive)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dockerd-net-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let (tx, rx) = mpsc::channel(QUEUE);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let setup = opts.setup.clone();
    let backend = opts.iptables_backend.clone();
    let handle = runtime.handle().clone();
    // Dropped when the worker thread ends, however it ends (a panic unwinds through it):
    // the server then stops instead of answering 503 forever.
    let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = thread::Builder::new()
        .name("dockerd-net-worker".into())
        .spawn(move || {
            let _alive = alive_tx;
            let started = Backends::open(
                &backend,
                setup.config.iptables,
                setup.config.firewall_backend,
            )
            .and_then(|b| {
                // Spawned from this thread: the reaper's link backend is in our namespace.
                let reaper = Reaper::start()?;
                let proxies: Box<dyn Proxies> = if setup.config.userland_proxy {
                    Box::new(Userland::new(handle))
                } else {
                    Box::new(NoProxies)
                };
                Service::start(&setup, b, proxies, reaper)
            });
            match started {
                Ok(svc) => {
                    let _ = ready_tx.send(Ok(()));
                    service::run(svc, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .context("starting the worker thread")?;
    let started = ready_rx
        .recv()
        .map_err(|_| anyhow!("the worker thread ended during start-up"))
        .and_then(|r| r);
    if let Err(e) = started {
        let _ = worker.join();
        return Err(e);
    }

    let socket = opts.socket.clone();
    let served = runtime.block_on(serve(&socket, tx, lock.path(), alive_rx));
    // Every sender is gone with the server: the worker finishes the queue, stops the
    // proxies and returns.
    let joined = worker.join();
    if let Err(e) = sys::remove_socket(&socket) {
        tracing::warn!("removing the socket: {e:#}");
    }
    drop(runtime);
    served?;
    if joined.is_err() {
        return Err(anyhow!("the worker thread panicked; see the log above"));
    }
    tracing::info!("dockerd-net stopped");
    Ok(())
}

async fn serve(
    socket: &Path,
    tx: mpsc::Sender<service::Job>,
    lock: &Path,
    worker_alive: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    sys::remove_stale_socket(socket)?;
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    sys::restrict_socket(socket)?;
    tracing::info!(lock = %lock.display(), "dockerd-net ready on {}", socket.display());
    match sys::notify("READY=1") {
        Ok(true) => tracing::debug!("notified systemd: READY=1"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}"),
    }
    axum::serve(listener, server::router(tx))
        .with_graceful_shutdown(shutdown_signal(worker_alive))
        .await
        .context("serving the API")?;
    if let Err(e) = sys::notify("STOPPING=1") {
        tracing::debug!("cannot notify systemd: {e}");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, or when the worker thread has ended.
async fn shutdown_signal(worker_alive: tokio::sync::oneshot::Receiver<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (mut term, mut int) = match (term, int) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for signals ({e}); stop with SIGKILL");
            let _ = worker_alive.await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: finishing the requests in flight"),
        _ = int.recv() => tracing::info!("SIGINT received: finishing the requests in flight"),
        _ = worker_alive => tracing::error!("the worker thread ended: stopping"),
    }
}
