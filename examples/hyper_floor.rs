//! The floor under idgate's ungated path: the least a proxy built on hyper and tokio can do
//! per request. Each client connection gets one upstream connection of its own (no pool, no
//! routing, no headers touched, no request ids, metrics or timeouts); hyper's server parses
//! the request and its client writes it upstream. Threads as idgate's (`app::workers`): one
//! current-thread runtime per CPU, each accepting on its own `SO_REUSEPORT` socket.
//! `benches/load/run.py --floor` runs it beside idgate and nginx, so the gap between idgate
//! and nginx splits into what hyper + tokio cost and what idgate adds on top.
//!
//! Usage: `cargo run --release --example hyper_floor -- LISTEN UPSTREAM [THREADS]`
//! (e.g. `127.0.0.1:8090 127.0.0.1:8080`; THREADS defaults to the CPU count).

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: hyper_floor LISTEN UPSTREAM [THREADS]".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let threads = match args.next() {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut running = Vec::new();
    for _ in 0..threads {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            socket.listen(1024)?
        };
        running.push(std::thread::spawn(move || {
            runtime.block_on(accept(listener, upstream))
        }));
    }
    for t in running {
        t.join().map_err(|_| "a thread panicked")??;
    }
    Ok(())
}

async fn accept(listener: TcpListener, upstream: SocketAddr) -> Result<(), Error> {
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = relay(sock, upstream).await {
                eprintln!("hyper_floor: {e}");
            }
        });
    }
}

/// Serves one client connection over one upstream connection of its own.
async fn relay(sock: TcpStream, upstream: SocketAddr) -> Result<(), Error> {
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (sender, conn) = client::handshake::<_, Incoming>(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    let sender = std::sync::Arc::new(Mutex::new(sender));
    let svc = service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            let resp: Response<Incoming> = sender.send_request(req).await?;
            Ok::<_, hyper::Error>(resp)
        }
    });
    server::Builder::new()
        .serve_connection(TokioIo::new(sock), svc)
        .await?;
    Ok(())
}
