//! The data-path workers: OS threads, each running a current-thread tokio runtime that serves
//! every proxy listener through a socket of its own, with an upstream pool of its own.
//!
//! The sockets of one listener are bound to the same address with `SO_REUSEPORT`, so the
//! kernel spreads new connections across the workers; from then on a client connection, the
//! upstream connection it uses, its timers and every task it spawns stay on one thread. No
//! work stealing and no cross-thread wake-ups on the data path: the thread-per-core model of
//! nginx and Envoy. On a 2-core machine it served a third more requests per CPU-second than
//! the same proxy on a work-stealing runtime (README, Performance).
//!
//! Before the group is bound, the address is bound once without `SO_REUSEPORT` and released:
//! a port held by anything — another idgate included, which would otherwise share the port
//! silently — fails the start with "address in use".
//!
//! The control plane (admin API, reloads, certificate watcher, invitations) stays on the
//! process's multi-thread runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::proxy::{self, Proxy};

use super::AppError;

/// The connection backlog of each proxy socket.
const BACKLOG: i32 = 1024;

/// One proxy listener: a socket per worker (all on the same address) and its TLS config.
pub struct ListenerGroup {
    pub addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// How many workers serve the data path by default: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Binds `addr` once per worker (port 0 picks one free port for the whole group).
pub fn bind(
    addr: SocketAddr,
    workers: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<ListenerGroup, AppError> {
    let err = |source| AppError::Bind { addr, source };
    // Exclusive first: SO_REUSEPORT alone would join whatever already holds the port.
    let probe = std::net::TcpListener::bind(addr).map_err(err)?;
    let bound = probe.local_addr().map_err(err)?;
    drop(probe);
    let sockets = (0..workers.max(1))
        .map(|_| reuseport_socket(bound))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(err)?;
    Ok(ListenerGroup {
        addr: bound,
        sockets,
        tls,
    })
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's own `TcpListener::bind`: a restart may bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Starts `workers` threads serving `groups` (each group bound for that many workers) until
/// `stop` turns true and their connections drained. Returns a receiver per worker that
/// resolves when it has ended.
pub fn spawn(
    groups: Vec<ListenerGroup>,
    workers: usize,
    proxy: &Proxy,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<oneshot::Receiver<()>>, AppError> {
    let workers = workers.max(1);
    // Deal the sockets out: worker `w` takes the `w`-th socket of every listener.
    let mut per_worker: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    for group in groups {
        for (w, socket) in group.sockets.into_iter().enumerate() {
            per_worker[w % workers].push((socket, group.tls.clone()));
        }
    }
    let mut ended = Vec::with_capacity(workers);
    for (w, sockets) in per_worker.into_iter().enumerate() {
        let proxy = proxy.fork();
        let stop = stop.clone();
        let (done, ended_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AppError::Task(format!("data-path runtime: {e}")))?;
        // Registered with the worker's own reactor, here, so a failure stops the start.
        let listeners = {
            let _entered = runtime.enter();
            sockets
                .into_iter()
                .map(|(socket, tls)| {
                    let addr = socket.local_addr();
                    tokio::net::TcpListener::from_std(socket)
                        .map(|l| (l, tls))
                        .map_err(|source| match addr {
                            Ok(addr) => AppError::Bind { addr, source },
                            Err(e) => AppError::Task(format!("proxy socket: {e}")),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        std::thread::Builder::new()
            .name(format!("idgate-proxy-{w}"))
            .spawn(move || {
                runtime.block_on(serve(listeners, proxy, stop));
                // Dropped here, on the worker: its remaining tasks (idle upstream
                // connections) are cancelled before the gate reports it stopped.
                drop(runtime);
                let _ = done.send(());
            })
            .map_err(|e| AppError::Task(format!("data-path thread: {e}")))?;
        ended.push(ended_rx);
    }
    Ok(ended)
}

/// One worker: serves each of its listeners until `stop`, then drains.
async fn serve(
    listeners: Vec<(tokio::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    proxy: Proxy,
    stop: watch::Receiver<bool>,
) {
    let proxy = Arc::new(proxy);
    let mut serving = JoinSet::new();
    for (listener, tls) in listeners {
        serving.spawn(proxy::serve(listener, proxy.clone(), tls, stop.clone()));
    }
    while serving.join_next().await.is_some() {}
}
