//! The data-path workers: OS threads, each running a current-thread tokio runtime that serves
//! every proxy listener through a socket of its own, with an upstream pool of its own.
//!
//! With more than one worker, the sockets of one listener are bound to the same address with
//! `SO_REUSEPORT` (Linux spreads new connections across them); from then on a client
//! connection, the upstream connection it uses, its timers and the tasks it spawns stay on
//! one thread. No work stealing and no task hopping between threads on the data path: the
//! thread-per-core model of nginx and Envoy. What workers still share is read-mostly or
//! atomic: the snapshot, metrics, the buffering budget, the acceptance channel and the
//! identity providers' clients.
//!
//! Exclusivity: before the group is bound, the address is bound once without `SO_REUSEPORT`
//! (no `listen`, so nothing can connect to it) and released, so a port held by anything —
//! another idgate included — fails the start with "address in use". Once bound, only a
//! process of the same user can join a `SO_REUSEPORT` group (a kernel rule): run idgate under
//! a user of its own. With one worker the socket is bound without `SO_REUSEPORT`.
//!
//! Shutdown: each worker drains its connections for at most the grace period, then waits for
//! the others before its runtime ends: an identity-provider connection opened by one worker
//! may be serving another worker's request. The control plane (admin API, reloads,
//! certificate watcher, invitations) runs on the process's multi-thread runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::proxy::{self, Proxy};

use super::AppError;

/// The connection backlog of each proxy socket (as tokio's own `TcpListener::bind`).
const BACKLOG: i32 = 1024;

/// How long a worker's runtime waits for its blocking tasks (DNS lookups) when it ends.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

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
    let workers = workers.max(1);
    if workers == 1 {
        let socket = listener(addr, false).map_err(err)?;
        let addr = socket.local_addr().map_err(err)?;
        return Ok(ListenerGroup {
            addr,
            sockets: vec![socket],
            tls,
        });
    }
    // Exclusive first: SO_REUSEPORT alone would join whatever already holds the port.
    let probe = new_socket(addr).map_err(err)?;
    probe.bind(&addr.into()).map_err(err)?;
    let bound = probe
        .local_addr()
        .map_err(err)?
        .as_socket()
        .ok_or_else(|| err(std::io::Error::other("not an IP address")))?;
    drop(probe);
    let sockets = (0..workers)
        .map(|_| listener(bound, true))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(err)?;
    Ok(ListenerGroup {
        addr: bound,
        sockets,
        tls,
    })
}

fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's own `TcpListener::bind`: a restart may bind while old connections linger.
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Starts `workers` threads serving `groups` (each group bound for that many workers) until
/// `stop` turns true and their connections drained. Blocking (it builds runtimes and starts
/// threads): call it from `spawn_blocking`. Every runtime and listener is made before any
/// thread starts; should a thread fail to start, those already running end when `stop`'s
/// sender is dropped. Returns, per worker, a receiver that resolves once it has drained — or
/// fails, should its thread die.
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
    let mut ready = Vec::with_capacity(workers);
    for sockets in per_worker {
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
        ready.push((runtime, listeners));
    }
    // Counts the workers still draining; each waits for zero before its runtime ends.
    let (draining, _) = watch::channel(workers);
    let draining = Arc::new(draining);
    let mut ended = Vec::with_capacity(workers);
    for (w, (runtime, listeners)) in ready.into_iter().enumerate() {
        let proxy = proxy.fork();
        let stop = stop.clone();
        let (done, ended_rx) = oneshot::channel();
        let draining = draining.clone();
        std::thread::Builder::new()
            .name(format!("idgate-proxy-{w}"))
            .spawn(move || {
                let mut all_drained = draining.subscribe();
                let left = Left(draining);
                runtime.block_on(async {
                    serve(listeners, proxy, stop).await;
                    drop(left);
                    let _ = all_drained.wait_for(|n| *n == 0).await;
                });
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
                let _ = done.send(());
            })
            .map_err(|e| AppError::Task(format!("data-path thread: {e}")))?;
        ended.push(ended_rx);
    }
    Ok(ended)
}

/// Counts one worker out of the draining ones when dropped (also when its thread panics).
struct Left(Arc<watch::Sender<usize>>);

impl Drop for Left {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
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
