//! Wiring and lifecycle: load the first snapshot, bind the listeners, start the proxy, the
//! admin server and the reloader, and shut down gracefully.
//!
//! Shutdown (SIGTERM or SIGINT, or [`Gate::shutdown`]): `/readyz` turns 503 first, then the
//! proxy listeners close and in-flight requests drain for at most `timeouts.shutdown_grace`,
//! then the admin listener and the reloader stop.

pub mod demo;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState};
use crate::proxy::{self, Proxy, ProxySettings};
use crate::reload::{self, ReloadError, Reloader};
use crate::snapshot::{SnapshotHandle, StoreLists, StoreView};
use crate::store::{Store, StoreError};

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Load(#[from] ReloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("start-up task failed: {0}")]
    Task(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running gate.
pub struct Gate {
    proxy_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop_proxy: watch::Sender<bool>,
    stop_rest: watch::Sender<bool>,
    proxies: JoinSet<()>,
    rest: JoinSet<()>,
    reloader: Arc<Reloader>,
    snapshots: SnapshotHandle,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// The control plane, loaded and connected: the config's inputs, the first snapshot, the
/// store, and the reloader that is the snapshot's only writer (installed as the store's commit
/// hook). [`Gate::start`] binds the listeners around it; tests use it without sockets.
pub struct ControlPlane {
    pub inputs: crate::snapshot::Inputs,
    pub snapshots: SnapshotHandle,
    pub store: Arc<Store>,
    pub reloader: Arc<Reloader>,
}

impl ControlPlane {
    /// Reads the config and list files, opens the store, compiles the first snapshot and
    /// connects the store to the reloader. Blocking (file I/O, SQLite, compilation).
    pub fn open(config_path: &Path) -> Result<ControlPlane, AppError> {
        // The config names the store; the store's entries join the first snapshot.
        let config = crate::config::load(config_path).map_err(ReloadError::Config)?;
        let store = Store::open_sqlite(&config.store.sqlite)?;
        let state = store.load()?;
        let view = StoreView {
            lists: Arc::new(StoreLists::from_entries(&state.entries)),
            restrictions: state.restrictions,
        };
        let (inputs, snapshot, fingerprint) = reload::load(config_path, view, 1)?;
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        let snapshots: SnapshotHandle = Arc::new(ArcSwap::from_pointee(snapshot));
        let reloader = Arc::new(Reloader::new(
            config_path,
            &inputs,
            fingerprint,
            snapshots.clone(),
        ));
        // Committed admin writes reach the live gate on the store's writer thread, in commit
        // order, before the API answers (read-your-writes).
        let hook = reloader.clone();
        store.set_commit_hook(Arc::new(move |changes| hook.apply_store_changes(changes)));
        Ok(ControlPlane {
            inputs,
            snapshots,
            store: Arc::new(store),
            reloader,
        })
    }
}

impl Gate {
    /// Loads `config_path`, binds every listener (port 0 picks a free port) and starts serving.
    pub async fn start(config_path: &Path) -> Result<Gate, AppError> {
        let p = config_path.to_path_buf();
        let ControlPlane {
            inputs,
            snapshots,
            store,
            reloader,
        } = tokio::task::spawn_blocking(move || ControlPlane::open(&p))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;
        let cfg = &inputs.config;
        let settings = ProxySettings {
            header_read_timeout: cfg.timeouts.header_read,
            upstream_connect_timeout: cfg.timeouts.upstream_connect,
            pool_idle_timeout: Duration::from_secs(90),
            shutdown_grace: cfg.timeouts.shutdown_grace,
        };

        let mut listeners = Vec::new();
        for l in &cfg.listen {
            listeners.push(bind(l.addr).await?);
        }
        let admin_listener = bind(cfg.admin.listen).await?;
        let proxy_addrs = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| AppError::Bind {
                addr: cfg.admin.listen,
                source,
            })?;

        let ready = Arc::new(AtomicBool::new(true));
        let (stop_proxy, stop_proxy_rx) = watch::channel(false);
        let (stop_rest, stop_rest_rx) = watch::channel(false);

        let proxy = Arc::new(Proxy::new(snapshots.clone(), settings));
        let mut proxies = JoinSet::new();
        for l in listeners {
            proxies.spawn(proxy::serve(l, proxy.clone(), stop_proxy_rx.clone()));
        }
        let mut rest = JoinSet::new();
        let admin_router = admin::router(AdminState {
            ready: ready.clone(),
            snapshots: snapshots.clone(),
            store: store.clone(),
            reloader: reloader.clone(),
            secret_keys: Arc::new(cfg.admin.secret_keys.clone()),
        });
        rest.spawn(admin::serve(
            admin_listener,
            admin_router,
            stop_rest_rx.clone(),
        ));
        rest.spawn(reload::run(reloader.clone(), stop_rest_rx));
        tracing::info!(proxy = ?proxy_addrs, admin = %admin_addr, "idgate is serving");
        Ok(Gate {
            proxy_addrs,
            admin_addr,
            ready,
            stop_proxy,
            stop_rest,
            proxies,
            rest,
            reloader,
            snapshots,
        })
    }

    /// The bound proxy addresses, in `listen` order.
    pub fn proxy_addrs(&self) -> &[SocketAddr] {
        &self.proxy_addrs
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The reloader (for an immediate reload).
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// The snapshot handle (read-only use).
    pub fn snapshots(&self) -> &SnapshotHandle {
        &self.snapshots
    }

    /// Graceful shutdown: not ready, stop accepting, drain, stop the rest.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.stop_proxy.send(true);
        while self.proxies.join_next().await.is_some() {}
        let _ = self.stop_rest.send(true);
        while self.rest.join_next().await.is_some() {}
        tracing::info!("idgate stopped");
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
