//! Wiring and lifecycle: load the first snapshot, bind the listeners, start the proxy (on the
//! data-path worker threads of [`workers`]), the admin server and the reloader, and shut down
//! gracefully.
//!
//! Shutdown (SIGTERM or SIGINT, or [`Gate::shutdown`]): `/readyz` turns 503 first, then the
//! proxy listeners close and in-flight requests drain for at most `timeouts.shutdown_grace`,
//! then the admin listener and the reloader stop.
//!
//! TLS: [`TlsSetup::load`] reads every certificate the config names before anything binds
//! (a missing or broken pair stops the start); the certificate watcher (`tls::watch`) runs
//! beside the reloader. The admin listener over TLS is served here (HTTP/1.1, the axum router
//! as a hyper service), since `tls` may not import axum.

pub mod acceptance;
pub mod demo;
pub mod workers;

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
use crate::proxy::{Proxy, ProxySettings};
use crate::reload::{self, ReloadError, Reloader};
use crate::snapshot::{SnapshotHandle, StoreLists, StoreView};
use crate::store::{Store, StoreError};
use crate::tls::{self, CertStore, TlsError, UpstreamConnector};

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Load(#[from] ReloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Audit(#[from] crate::observe::AuditError),
    #[error(transparent)]
    Invite(#[from] crate::invite::InviteError),
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
    certificates: Vec<Arc<CertStore>>,
    /// Held while the gate runs; dropped with it.
    _store_lock: std::fs::File,
}

/// Every TLS setting of a config, loaded: per proxy listener (in `listen` order) and for the
/// admin listener a certificate store and its rustls config, and the upstream connector.
pub struct TlsSetup {
    pub listeners: Vec<Option<(Arc<CertStore>, Arc<rustls::ServerConfig>)>>,
    pub admin: Option<(Arc<CertStore>, Arc<rustls::ServerConfig>)>,
    pub upstream: UpstreamConnector,
}

impl TlsSetup {
    /// Reads and checks every certificate, key and CA file the config names. Blocking.
    pub fn load(cfg: &crate::config::Config) -> Result<TlsSetup, TlsError> {
        let server = |t: &crate::config::ServerTls, h2: bool| {
            let store = CertStore::load(&t.certificates)?;
            let config = tls::server_config(store.clone(), h2)?;
            Ok::<_, TlsError>((store, config))
        };
        let mut listeners = Vec::with_capacity(cfg.listen.len());
        for l in &cfg.listen {
            listeners.push(l.tls.as_ref().map(|t| server(t, true)).transpose()?);
        }
        let admin = cfg
            .admin
            .tls
            .as_ref()
            .map(|t| server(t, false))
            .transpose()?;
        let upstream = UpstreamConnector::new(cfg.upstream_tls.as_ref())?;
        Ok(TlsSetup {
            listeners,
            admin,
            upstream,
        })
    }

    /// Every certificate store (proxy listeners in order, then the admin listener).
    pub fn stores(&self) -> Vec<Arc<CertStore>> {
        self.listeners
            .iter()
            .chain(std::iter::once(&self.admin))
            .flatten()
            .map(|(s, _)| s.clone())
            .collect()
    }
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
    /// This process's hold on the store (`store::lock_exclusive`), released when dropped.
    pub store_lock: std::fs::File,
}

impl ControlPlane {
    /// Reads the config and list files, opens the store, compiles the first snapshot and
    /// connects the store to the reloader. Blocking (file I/O, SQLite, compilation).
    pub fn open(config_path: &Path) -> Result<ControlPlane, AppError> {
        // The config names the store; the store's entries join the first snapshot.
        let config = crate::config::load(config_path).map_err(ReloadError::Config)?;
        let store_lock = crate::store::lock_exclusive(&config.store.sqlite)?;
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
            store_lock,
        })
    }
}

impl Gate {
    /// Loads `config_path`, binds every listener (port 0 picks a free port) and starts serving.
    pub async fn start(config_path: &Path) -> Result<Gate, AppError> {
        // SIGHUP's default action ends the process: taken over before anything slow (reading
        // 1M-entry lists), so a reload asked for during start-up (a deploy hook, `systemctl
        // reload`) is not a crash. The reload task's first pass re-reads whatever changed
        // while the gate started (`reload::run`), which answers it.
        let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let p = config_path.to_path_buf();
        let ControlPlane {
            inputs,
            snapshots,
            store,
            reloader,
            store_lock,
        } = tokio::task::spawn_blocking(move || ControlPlane::open(&p))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;
        let cfg = &inputs.config;
        let settings = ProxySettings {
            header_read_timeout: cfg.timeouts.header_read,
            upstream_connect_timeout: cfg.timeouts.upstream_connect,
            pool_idle_timeout: Duration::from_secs(90),
            shutdown_grace: cfg.timeouts.shutdown_grace,
            tls_handshake_timeout: cfg.timeouts.tls_handshake,
        };
        let tls_cfg = cfg.clone();
        let tls_setup = tokio::task::spawn_blocking(move || TlsSetup::load(&tls_cfg))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;
        let certificates = tls_setup.stores();
        // The invitation delivery worker (`invitations:`; restart-only): its senders read
        // their CA files now, so a broken one stops the start.
        let worker = match cfg.invitations.clone() {
            Some(inv) => {
                let store = store.clone();
                let build = move || crate::invite::Worker::new(store, inv);
                Some(
                    tokio::task::spawn_blocking(build)
                        .await
                        .map_err(|e| AppError::Task(e.to_string()))??,
                )
            }
            None => None,
        };

        let workers = cfg.workers.unwrap_or_else(workers::default_count);
        let mut listeners = Vec::new();
        for (l, t) in cfg.listen.iter().zip(tls_setup.listeners.iter()) {
            let server = t.as_ref().map(|(_, c)| c.clone());
            listeners.push(workers::bind(l.addr, workers, server)?);
        }
        let admin_listener = bind(cfg.admin.listen).await?;
        let proxy_addrs = listeners.iter().map(|l| l.addr).collect();
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| AppError::Bind {
                addr: cfg.admin.listen,
                source,
            })?;

        let ready = Arc::new(AtomicBool::new(true));
        let (stop_proxy, stop_proxy_rx) = watch::channel(false);
        let (stop_rest, stop_rest_rx) = watch::channel(false);

        // Metrics and the audit log, shared by the proxy, the reloader and the admin listener.
        let metrics = Arc::new(crate::observe::Metrics::new());
        let audit = crate::observe::AuditLog::start(&cfg.audit, metrics.clone())?;
        let observer = Arc::new(
            crate::observe::Observer::new(metrics.clone(), audit)
                .with_request_ids(crate::observe::RequestIds::new(&cfg.request_id)),
        );
        let worker = worker.map(|w| w.with_metrics(metrics.clone()));
        // Invitation acceptance: the proxy hands over accepted sign-ups that may have been
        // invited (a synchronous pre-check against the shared filter), a task marks them.
        let (accepted_tx, accepted_rx) = acceptance::channel();
        let pending = acceptance::PendingFilter::default();
        let wanted = {
            let (pending, store) = (pending.clone(), store.clone());
            move |id: &str| pending.wanted(&store, id)
        };
        let acceptance_metrics = metrics.clone();
        let op_metrics = metrics.clone();
        store.set_op_observer(Arc::new(move |op, elapsed| {
            op_metrics.store_op(op, elapsed)
        }));
        reloader.set_metrics(metrics);
        // Each worker serves through a fork of this one (its own upstream pool and clients).
        let proxy = Proxy::new(snapshots.clone(), settings, &tls_setup.upstream)
            .with_observer(observer.clone())
            .with_acceptance(accepted_tx, wanted);
        let mut proxies = JoinSet::new();
        let started = {
            let stop = stop_proxy_rx.clone();
            tokio::task::spawn_blocking(move || workers::spawn(listeners, workers, &proxy, &stop))
                .await
                .map_err(|e| AppError::Task(e.to_string()))??
        };
        for (w, ended) in started.into_iter().enumerate() {
            proxies.spawn(async move {
                if ended.await.is_err() {
                    tracing::error!(
                        worker = w,
                        "a data-path worker died; its connections were closed"
                    );
                }
            });
        }
        let mut rest = JoinSet::new();
        let admin_router = admin::router(AdminState {
            ready: ready.clone(),
            snapshots: snapshots.clone(),
            store: store.clone(),
            reloader: reloader.clone(),
            observer,
            invitations: cfg.invitations.clone().map(Arc::new),
        });
        if let Some(warning) = admin_exposure(admin_addr, tls_setup.admin.is_some()) {
            tracing::warn!("{warning}");
        }
        match &tls_setup.admin {
            Some((_, server)) => rest.spawn(serve_admin_tls(
                admin_listener,
                admin_router,
                server.clone(),
                cfg.timeouts.tls_handshake,
                stop_rest_rx.clone(),
            )),
            None => rest.spawn(admin::serve(
                admin_listener,
                admin_router,
                stop_rest_rx.clone(),
            )),
        };
        rest.spawn(tls::watch::run(
            certificates.clone(),
            cfg.reload.debounce,
            cfg.reload.interval.unwrap_or(Duration::ZERO),
            stop_rest_rx.clone(),
        ));
        if let Some(w) = worker {
            rest.spawn(w.run(stop_rest_rx.clone()));
        }
        rest.spawn(acceptance::accept(
            store.clone(),
            accepted_rx,
            pending,
            acceptance_metrics,
            stop_rest_rx.clone(),
        ));
        rest.spawn(acceptance::expire(
            store.clone(),
            acceptance::SWEEP_EVERY,
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
            certificates,
            _store_lock: store_lock,
        })
    }

    /// The certificate stores of the TLS listeners (proxy listeners in `listen` order, then
    /// the admin listener), for their reload status.
    pub fn certificates(&self) -> &[Arc<CertStore>] {
        &self.certificates
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

/// The admin API over TLS (HTTP/1.1): the axum router as a hyper service behind a rustls
/// acceptor. Stops accepting when `stop` turns true; open connections finish their request.
async fn serve_admin_tls(
    listener: TcpListener,
    router: axum::Router,
    server: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;

    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, builder, router) = (acceptor.clone(), builder.clone(), router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "admin TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "admin TLS handshake timed out");
                        return;
                    }
                };
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut router = router.clone();
                    async move { tower::Service::call(&mut router, req).await }
                });
            let conn = builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
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

/// The warning for an admin listener reachable from other hosts without TLS: its keys, the
/// lists and `/metrics` (which needs no key) would cross the network in clear text.
fn admin_exposure(addr: SocketAddr, tls: bool) -> Option<String> {
    // `to_canonical`: an IPv4-mapped loopback (`::ffff:127.0.0.1`) is loopback too.
    (!addr.ip().to_canonical().is_loopback() && !tls).then(|| {
        format!(
            "the admin listener {addr} is not on loopback and has no TLS: secret keys, list \
             entries and /metrics cross the network in clear text (set admin.tls, or bind \
             127.0.0.1 and reach it through a tunnel)"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_non_loopback_admin_without_tls_is_warned_about() {
        let at = |a: &str| a.parse().unwrap();
        assert!(super::admin_exposure(at("0.0.0.0:9090"), false).is_some());
        assert!(super::admin_exposure(at("[::]:9090"), false).is_some());
        assert!(super::admin_exposure(at("0.0.0.0:9090"), true).is_none());
        assert!(super::admin_exposure(at("127.0.0.1:9090"), false).is_none());
        assert!(super::admin_exposure(at("[::1]:9090"), false).is_none());
        assert!(super::admin_exposure(at("[::ffff:127.0.0.1]:9090"), false).is_none());
        assert!(super::admin_exposure(at("[::ffff:10.0.0.1]:9090"), false).is_some());
    }
}
