//! The HTTP/1.1 connection pool to plain `http://` upstreams.
//!
//! hyper-util's legacy client spends a task and a channel hop per request to hand connections
//! back to its pool. This pool is leaner: connections are made with hyper's own
//! `client::conn::http1` (TCP_NODELAY set), each driven by one task for its whole life, and the
//! idle ones wait on a stack behind a mutex (never held across an `.await`). A connection goes
//! back on the stack when the client's response body has ended (see [`UpstreamBody`]), not
//! when the response head arrives, so a long download never holds up another request.
//!
//! A request sent on a pooled connection that the upstream closed in the meantime is retried
//! on another connection only when hyper hands it back unsent (the body was not polled); a
//! request that may have reached the upstream is never replayed. Idle connections are closed
//! after the idle timeout (checked on every checkout and by a sweeper task) and at most
//! `max_idle` are kept.
//!
//! `https://` upstreams (TLS, HTTP/2 by ALPN) and protocol upgrades keep using the legacy
//! client in [`super::Proxy`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProxyBody;

/// Why a request could not be sent or answered through the pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("the HTTP/1.1 handshake with the upstream failed: {0}")]
    Handshake(hyper::Error),
    #[error("{0}")]
    Request(hyper::Error),
}

/// Pooled HTTP/1.1 connections to plain upstreams (cheap to clone: one shared stack).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Most recently used on top; the oldest at index 0.
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Whether the sweeper task runs (started with the first connection, inside a runtime).
    sweeping: std::sync::atomic::AtomicBool,
}

struct Idle {
    key: Authority,
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool whose connections are made within `connect_timeout`, closed after
    /// `idle_timeout` unused, with at most `max_idle` kept.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::new()),
                connect_timeout,
                idle_timeout,
                max_idle,
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// How many idle connections wait in the pool.
    pub fn idle_count(&self) -> usize {
        self.inner.lock().len()
    }

    /// Sends `req` (origin-form URI, a Host header) to `key` over a pooled or new connection.
    /// The response body hands the connection back when it ends.
    pub async fn send(
        &self,
        key: &Authority,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        loop {
            let (mut sender, fresh) = match self.inner.checkout(key) {
                Some(s) => (s, false),
                // Boxed: connecting is rare, and its state would otherwise be carried (and
                // moved) in every request's future.
                None => (Box::pin(self.connect(key)).await?, true),
            };
            // A pooled connection becomes ready once hyper has finished the previous
            // exchange; an error here means the upstream closed it while idle.
            if !fresh && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let back = Checkin {
                        pool: Arc::downgrade(&self.inner),
                        key: key.clone(),
                        sender,
                    };
                    return Ok(resp.map(|body| UpstreamBody::pooled(body, back)));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (hyper gives it back untouched): safe to try elsewhere.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self, key: &Authority) -> Result<SendRequest<ProxyBody>, PoolError> {
        self.start_sweeper();
        let host = key.host();
        // `[::1]` in an authority; the resolver wants `::1`.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = key.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.inner.connect_timeout, connect_any(host, port))
            .await
            .map_err(|_| PoolError::ConnectTimeout)??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Closes idle connections past the idle timeout, every half timeout, while the pool
    /// lives.
    fn start_sweeper(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let every = (self.inner.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let timeout = inner.idle_timeout;
                inner
                    .lock()
                    .retain(|i| i.since.elapsed() < timeout && !i.sender.is_closed());
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing panics while holding the lock; a poisoned stack is still a valid stack.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live connection to `key`. Connections to another upstream
    /// (left over from before a reload) and expired or closed ones are dropped on the way.
    fn checkout(&self, key: &Authority) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        while let Some(i) = idle.pop() {
            if i.key == *key && !i.sender.is_closed() && i.since.elapsed() < self.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    fn checkin(&self, key: Authority, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            // Full: the oldest goes.
            idle.remove(0);
        }
        idle.push(Idle {
            key,
            sender,
            since: Instant::now(),
        });
    }
}

async fn connect_any(host: &str, port: u16) -> Result<TcpStream, PoolError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| PoolError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, source)) => PoolError::Connect {
            addr: addr.to_string(),
            source,
        },
        None => PoolError::Connect {
            addr: format!("{host}:{port}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
        },
    })
}

/// A connection waiting for its response body to end before going back to the pool.
struct Checkin {
    pool: Weak<Inner>,
    key: Authority,
    sender: SendRequest<ProxyBody>,
}

impl Checkin {
    /// Hands the connection back once hyper can take another request on it. The response can
    /// end before the request body was sent (an app that answers without reading it): lent
    /// out then, the connection would keep the next client waiting for a body that a stalled
    /// client may never finish. Such a connection goes back when that body is done, or is
    /// closed after the idle timeout.
    fn put_back(mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.sender.is_ready() {
            pool.checkin(self.key, self.sender);
            return;
        }
        drop(pool);
        if self.sender.is_closed() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let Some(wait) = self.pool.upgrade().map(|p| p.idle_timeout) else {
                return;
            };
            if let Ok(Ok(())) = tokio::time::timeout(wait, self.sender.ready()).await
                && let Some(pool) = self.pool.upgrade()
            {
                pool.checkin(self.key, self.sender);
            }
        });
    }
}

/// An upstream response body. A pooled connection returns to its pool when the body has
/// been read to its end (or is dropped after its last byte); dropped earlier, the
/// connection is closed.
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.checkin.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// A body from a connection not owned by the pool (the legacy client).
    pub fn unpooled(inner: Incoming) -> UpstreamBody {
        UpstreamBody {
            inner,
            checkin: None,
        }
    }

    fn pooled(inner: Incoming, checkin: Checkin) -> UpstreamBody {
        UpstreamBody {
            inner,
            checkin: Some(checkin),
        }
    }

    fn finish(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.put_back();
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD, Content-Length: 0) is never polled: it ended already.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            // A broken body: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Either, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 upstream: answers each request head with `ok`; after `per_conn`
    /// answers on a connection it closes it (without saying so). Returns its address, the
    /// count of accepted connections and the request lines received.
    async fn upstream(per_conn: usize) -> (Authority, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (conns.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = l.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    while answered < per_conn {
                        let mut chunk = [0u8; 4096];
                        let n = match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            buf.drain(..end + 4);
                            s.lock()
                                .unwrap()
                                .push(head.lines().next().unwrap().to_owned());
                            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                            answered += 1;
                        }
                    }
                    // Closed without `Connection: close`: the pool finds out on its own.
                });
            }
        });
        (format!("{addr}").parse().unwrap(), conns, seen)
    }

    fn get(path: &str) -> Request<ProxyBody> {
        Request::builder()
            .uri(path)
            .header("host", "app.test")
            .body(Either::Right(Full::new(Bytes::new())))
            .unwrap()
    }

    fn pool() -> Pool {
        Pool::new(Duration::from_secs(2), Duration::from_secs(30), 4)
    }

    async fn send(pool: &Pool, key: &Authority, path: &str) -> Bytes {
        let resp = pool.send(key, get(path)).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_body_ended() {
        let (key, conns, seen) = upstream(usize::MAX).await;
        let pool = pool();
        for i in 0..5 {
            assert_eq!(send(&pool, &key, &format!("/r{i}")).await, "ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(seen.lock().unwrap().len(), 5);
        assert_eq!(seen.lock().unwrap()[4], "GET /r4 HTTP/1.1");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (key, conns, _) = upstream(usize::MAX).await;
        let pool = pool();
        let resp = pool.send(&key, get("/a")).await.unwrap();
        // Content-Length: 2 and nothing read: the connection cannot be reused.
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(send(&pool, &key, "/b").await, "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_upstream_closed_goes_on_a_new_one() {
        // One answer per connection, then a silent close.
        let (key, conns, seen) = upstream(1).await;
        let pool = pool();
        for i in 0..3 {
            assert_eq!(send(&pool, &key, &format!("/r{i}")).await, "ok");
            // Give the close time to reach the idle connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        // Each request reached the upstream exactly once.
        assert_eq!(
            *seen.lock().unwrap(),
            ["GET /r0 HTTP/1.1", "GET /r1 HTTP/1.1", "GET /r2 HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_and_expire() {
        let (key, conns, _) = upstream(usize::MAX).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_millis(200), 2);
        // Three responses held at once need three connections; only two stay idle.
        let held: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| pool.send(&key, get("/"))))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        for r in held {
            r.into_body().collect().await.unwrap();
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(send(&pool, &key, "/later").await, "ok");
        assert_eq!(
            conns.load(Ordering::SeqCst),
            4,
            "expired connections are not reused"
        );
    }

    /// A hyper upstream: `/echo` answers the request body, `/204` answers 204 No Content,
    /// `/slow` answers after 30 s. Returns its address and the count of connections.
    async fn hyper_upstream() -> (Authority, Arc<AtomicUsize>) {
        use hyper::service::service_fn;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = l.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match path.as_str() {
                            "/204" => 204,
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                200
                            }
                            _ => 200,
                        };
                        let body = if status == 204 { Bytes::new() } else { body };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        (format!("{addr}").parse().unwrap(), conns)
    }

    fn post(path: &str, body: Bytes) -> Request<ProxyBody> {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "app.test")
            .body(Either::Right(Full::new(body)))
            .unwrap()
    }

    /// Fails instead of hanging when nothing drives the connection.
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("the exchange stalled")
    }

    #[tokio::test]
    async fn large_bodies_stream_both_ways_on_a_reused_connection() {
        let (key, conns) = hyper_upstream().await;
        let pool = pool();
        // Far beyond the socket buffers: the upload and the echoed download each take many
        // turns of the connection.
        let big = Bytes::from(
            (0..8 << 20)
                .map(|i: u32| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        for _ in 0..2 {
            let resp = within(pool.send(&key, post("/echo", big.clone())))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let got = within(resp.into_body().collect()).await.unwrap().to_bytes();
            assert_eq!(got.len(), big.len());
            assert!(got == big, "the echoed body differs");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "the connection was reused");
    }

    #[tokio::test]
    async fn an_answer_without_a_body_hands_its_connection_back() {
        let (key, conns) = hyper_upstream().await;
        let pool = pool();
        for _ in 0..3 {
            let resp = within(pool.send(&key, post("/204", Bytes::from_static(b"x"))))
                .await
                .unwrap();
            assert_eq!(resp.status(), 204);
            // Dropped unread, as hyper's server does with an empty body.
            drop(resp);
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_is_not_lent_while_an_abandoned_request_holds_it() {
        let (key, conns) = hyper_upstream().await;
        let pool = pool();
        let sent = pool.send(&key, get("/slow"));
        // The proxy's response timeout drops the request future like this.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), sent)
                .await
                .is_err()
        );
        assert_eq!(
            pool.idle_count(),
            0,
            "a connection with a request in flight"
        );
        let resp = within(pool.send(&key, post("/echo", Bytes::from_static(b"next"))))
            .await
            .unwrap();
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, "next");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_errors_are_typed() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let key: Authority = closed.to_string().parse().unwrap();
        match pool().send(&key, get("/")).await {
            Err(PoolError::Connect { .. }) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
