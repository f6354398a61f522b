//! The data path: accept loops, route matching, body limits, forwarding and the answers the
//! gate gives itself.
//!
//! Per request: load the snapshot once (`load_full`), match the normalized path against the
//! gated routes. Ungated requests stream to the upstream untouched (no buffering). Gated
//! requests are read under the route's body limit, inspected by [`crate::gate::extract`],
//! decided by [`crate::gate::decide`], and either forwarded with the exact bytes received or
//! answered here. Every error maps to a status in one place ([`error::ProxyError::status`]).
//!
//! This module never imports `admin`, `store`, `reload` or axum.

pub mod drain;
pub mod error;
pub mod headers;
pub mod pool;
pub mod timer;

use crate::trigger::stopped;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use smallvec::SmallVec;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{Mode, RouteKind};
use crate::gate::decision::{Reason, decide};
use crate::gate::extract::{self, Spec};
use crate::gate::route::PathMatch;
use crate::identifier::{self, Identifier};
use crate::observe::{Observer, Traffic};
use crate::snapshot::{Route, Snapshot, SnapshotHandle};
use crate::tls::UpstreamConnector;
use crate::tls::client::error_chain;

pub use error::ProxyError;

/// The body sent to the upstream: the client's stream, or the buffered bytes of a gated request.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;
/// The body sent to the client: the upstream's stream, or an answer of the gate's own.
pub type RespBody = Either<pool::UpstreamBody, Full<Bytes>>;

/// Settings fixed for the life of the process (not reloadable).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Time allowed for the TLS handshake on TLS listeners.
    pub tls_handshake_timeout: Duration,
}

/// The client end of one connection, made once per connection by [`serve`] and shared by
/// its requests.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection arrived over TLS (`X-Forwarded-Proto: https`).
    pub secure: bool,
    /// The address's IP as a header value, for `X-Forwarded-For`: formatted once, then
    /// shared by every request on the connection without copying.
    ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, secure: bool) -> Peer {
        Peer {
            addr,
            secure,
            ip: headers::ip_value(addr.ip()),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// How many bytes of gated request bodies may be buffered at once, across all connections,
/// by default. Without a budget, N slow clients each announcing a body at the route limit
/// hold N × limit bytes (10 000 × 64 KiB = 640 MiB).
pub const DEFAULT_BUFFER_BUDGET: usize = 64 << 20;

// A compressed body reserves its received bytes and then its decode limit: at the largest
// route limit both must fit, or such bodies would always be answered `busy`.
const _: () = assert!(crate::config::MAX_BODY_LIMIT as usize * 2 <= DEFAULT_BUFFER_BUDGET);

type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;
type UpstreamConnectorPair = (HttpsConnector<HttpConnector>, HttpsConnector<HttpConnector>);

/// Where allowed, enforced sign-ups go (see [`Proxy::with_acceptance`]).
struct Acceptance {
    tx: tokio::sync::mpsc::Sender<String>,
    wanted: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// The proxy: the snapshot handle and the pooled upstream clients.
///
/// One per data-path worker (see [`Proxy::fork`]): the pool and clients, whose connections
/// are driven by tasks on the runtime that opened them, belong to one worker; everything
/// else is shared.
pub struct Proxy {
    snapshots: SnapshotHandle,
    /// HTTP/1.1, or HTTP/2 when an `https://` upstream offers it by ALPN.
    client: UpstreamClient,
    /// HTTP/1.1 only: protocol upgrades (WebSocket) need an HTTP/1.1 connection.
    client_h1: UpstreamClient,
    /// Plain `http://` upstreams without an upgrade: the lean HTTP/1.1 pool.
    pool: pool::Pool,
    settings: ProxySettings,
    /// Bytes of gated bodies that may be buffered at once; one permit per byte reserved.
    buffers: Arc<Semaphore>,
    budget: usize,
    /// Metrics and the audit log.
    observer: Arc<Observer>,
    /// Where accepted sign-ups go (canonical identifiers), for invitation acceptance.
    accepted: Option<Arc<Acceptance>>,
    /// What the legacy clients connect with (HTTP/2 allowed, HTTP/1.1 only), for [`Proxy::fork`].
    connectors: UpstreamConnectorPair,
    /// The worker's coarse deadlines: HTTP/1.1 header reads, upstream responses, gated bodies.
    deadlines: timer::Deadlines,
}

impl Proxy {
    /// Builds the proxy and its pooled upstream clients; `upstream` adds TLS for `https://`
    /// upstreams (plain `http://` ones pass through it).
    pub fn new(
        snapshots: SnapshotHandle,
        settings: ProxySettings,
        upstream: &UpstreamConnector,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.upstream_connect_timeout));
        // The TLS connector handles the scheme; it hands plain TCP to this one.
        connector.enforce_http(false);
        let connectors = (
            upstream.wrap(connector.clone(), true),
            upstream.wrap(connector, false),
        );
        let (client, client_h1, pool) = upstream_clients(&connectors, &settings);
        Proxy {
            snapshots,
            client,
            client_h1,
            pool,
            settings,
            buffers: Arc::new(Semaphore::new(DEFAULT_BUFFER_BUDGET)),
            budget: DEFAULT_BUFFER_BUDGET,
            observer: Arc::new(Observer::default()),
            accepted: None,
            connectors,
            deadlines: timer::Deadlines::new(),
        }
    }

    /// A proxy for another data-path worker: the same snapshots, settings, buffering budget
    /// (one budget for the process), observer and acceptance channel, with an upstream pool
    /// and clients of its own, so each worker's upstream connections live on its own thread.
    pub fn fork(&self) -> Proxy {
        let (client, client_h1, pool) = upstream_clients(&self.connectors, &self.settings);
        Proxy {
            snapshots: self.snapshots.clone(),
            client,
            client_h1,
            pool,
            settings: self.settings.clone(),
            buffers: self.buffers.clone(),
            budget: self.budget,
            observer: self.observer.clone(),
            accepted: self.accepted.clone(),
            connectors: self.connectors.clone(),
            deadlines: timer::Deadlines::new(),
        }
    }

    /// Sends the canonical identifiers of allowed `sign_up` requests in enforce mode that the
    /// upstream answered 2xx to `tx` (`app` marks their invitations accepted) — those for which
    /// `wanted` says yes: a synchronous pre-check (false only when the identifier certainly
    /// has no pending invitation) that keeps the sign-ups nobody was invited to off the
    /// channel. Never waits: when the channel is full the identifier is dropped with a warning
    /// and `idgate_invitation_acceptances{outcome="dropped"}`.
    pub fn with_acceptance(
        mut self,
        tx: tokio::sync::mpsc::Sender<String>,
        wanted: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.accepted = Some(Arc::new(Acceptance {
            tx,
            wanted: Box::new(wanted),
        }));
        self
    }

    /// Records decisions, refusals and durations into `observer` (default: metrics nobody
    /// reads, no audit log).
    pub fn with_observer(mut self, observer: Arc<Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Sets the buffering budget for gated bodies (bytes, across all connections; see
    /// [`DEFAULT_BUFFER_BUDGET`]). A gated request that cannot reserve its share (its
    /// Content-Length, or the route limit when chunked) is answered 503 at once.
    pub fn with_buffer_budget(mut self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1, u32::MAX as usize);
        self.buffers = Arc::new(Semaphore::new(bytes));
        self.budget = bytes;
        self
    }

    /// Answers one request: forwarded, denied or refused. The request's id (see
    /// [`crate::observe::request_id`]) goes upstream, back on the answer, in the `request`
    /// span of every log line and in the audit log.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<RespBody> {
        let snap = self.snapshots.load_full();
        let ids = &self.observer.request_ids;
        let request_id = ids.assign(req.headers());
        // Ours or checked by `acceptable`: visible ASCII, so `to_str` succeeds.
        let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or(""));
        // For the log line of a refusal: a clone of the URI shares its bytes (no copy).
        let method = req.method().clone();
        let uri = req.uri().clone();
        let started = Instant::now();
        let mut traffic = Traffic::Ungated;
        // The span entered around each poll, as `Instrumented` would, but with the request's
        // future pinned where it is made: `instrument` would move (copy) it once more.
        let result = {
            let mut dispatched =
                std::pin::pin!(self.dispatch(&snap, req, peer, &request_id, &mut traffic));
            std::future::poll_fn(|cx| {
                let _entered = span.enter();
                dispatched.as_mut().poll(cx)
            })
            .await
        };
        let _entered = span.enter();
        let metrics = &self.observer.metrics;
        metrics.request_duration(traffic, started.elapsed());
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                let status = err.status();
                metrics.refusal(err.code(), status.as_u16());
                if let Some(kind) = upstream_kind(&err) {
                    metrics.upstream_error(kind);
                }
                // Only the path: the query may carry tokens (`code`, `access_token`, ...).
                let path = uri.path();
                if status.is_server_error() {
                    tracing::warn!(%method, %path, %peer, status = status.as_u16(), error = %err, "proxy error");
                } else {
                    tracing::info!(%method, %path, %peer, status = status.as_u16(), code = err.code(), error = %err, "request refused");
                }
                err.into_response()
            }
        };
        resp.headers_mut().insert(ids.header().clone(), request_id);
        resp
    }

    async fn dispatch(
        &self,
        snap: &Arc<Snapshot>,
        mut req: Request<Incoming>,
        peer: &Peer,
        request_id: &HeaderValue,
        traffic: &mut Traffic,
    ) -> Result<Response<RespBody>, ProxyError> {
        if req.headers().get_all(header::HOST).iter().count() > 1 {
            return Err(bad("duplicate_host", "more than one Host header"));
        }
        // Request targets an origin server does not take: CONNECT's authority form (it would
        // go up as `CONNECT /` with the client's Host) and `*` other than for OPTIONS.
        if req.method() == Method::CONNECT {
            return Err(bad("connect_refused", "CONNECT is not proxied"));
        }
        if req.uri().path() == "*" && req.method() != Method::OPTIONS {
            return Err(bad(
                "asterisk_form_refused",
                "the request target * is for OPTIONS only",
            ));
        }
        if req.version() == Version::HTTP_2 {
            h2_host(&mut req)?;
        }
        let upgrade = websocket_upgrade(req.headers())?;
        let found = snap.route_table.find(req.uri().path());
        if !matches!(found, PathMatch::Ungated) {
            *traffic = Traffic::Gated;
        }
        match found {
            PathMatch::Ungated => {
                let on_client = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
                let (parts, body) = req.into_parts();
                self.forward(
                    snap,
                    parts,
                    Either::Left(body),
                    peer,
                    request_id,
                    upgrade.zip(on_client),
                )
                .await
            }
            PathMatch::Refused => Err(bad(
                "path_ambiguous",
                "the path uses an encoding (encoded '/' or '\\', NUL, double encoding) that could reach a gated route",
            )),
            PathMatch::Gated(i) => match snap.route_for(i, req.method()) {
                // Boxed: the gated path's state (the buffered body, extraction, token checks)
                // is large, and an ungated request's future would otherwise carry it.
                Some(route) => {
                    Box::pin(self.gated(snap, route, req, peer, request_id, upgrade.is_some()))
                        .await
                }
                None => Err(bad("internal", "route table out of sync")),
            },
        }
    }

    async fn gated(
        &self,
        snap: &Arc<Snapshot>,
        route: &Route,
        req: Request<Incoming>,
        peer: &Peer,
        request_id: &HeaderValue,
        upgrade: bool,
    ) -> Result<Response<RespBody>, ProxyError> {
        let method = req.method();
        let safe = method == Method::GET || method == Method::HEAD;
        // HTTP/2 frames the body without Content-Length: an open stream announces one.
        let has_body = declares_body(req.headers())
            || (req.version() == Version::HTTP_2 && !http_body::Body::is_end_stream(req.body()));
        if safe && has_body {
            return Err(bad(
                "body_not_allowed",
                "a GET or HEAD request with a body is refused on a gated route",
            ));
        }
        // HEAD is gated like GET where the route lists GET (`Route::lists`).
        if !route.lists(method) {
            if safe && route.pass_safe_methods && !upgrade {
                let (parts, body) = req.into_parts();
                extract::check_passthrough(&parts)?;
                return self
                    .forward(snap, parts, Either::Left(body), peer, request_id, None)
                    .await;
            }
            return Err(ProxyError::MethodNotAllowed {
                method: method.to_string(),
                allow: route.allow.clone(),
            });
        }
        if upgrade {
            return Err(bad(
                "upgrade_not_allowed",
                "protocol upgrades are refused on gated routes",
            ));
        }
        let limit = route.body_limit;
        let declared = content_length(req.headers());
        if let Some(len) = declared
            && len > limit as u64
        {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        // Reserve the bytes this body may take before reading it; held until the answer.
        let reserve = |n: usize| match u32::try_from(n) {
            Ok(0) => Ok(None),
            Ok(n) => self
                .buffers
                .clone()
                .try_acquire_many_owned(n)
                .map(Some)
                .map_err(|_| ProxyError::Busy),
            Err(_) => Err(ProxyError::Busy),
        };
        let want = declared
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(limit)
            .min(limit)
            .min(self.budget);
        let _reserved = reserve(want)?;
        let compressed = req.headers().contains_key(header::CONTENT_ENCODING);

        let (mut parts, body) = req.into_parts();
        let collected = self
            .deadlines
            .timeout(snap.body_read_timeout, Limited::new(body, limit).collect())
            .await
            .map_err(|_| ProxyError::BodyReadTimeout)?;
        let bytes = match collected {
            Ok(c) => c.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            Err(e) => return Err(ProxyError::BodyRead(e.to_string())),
        };

        // A compressed body's decoded bytes (up to the limit) are held next to it: reserved once
        // the body has arrived, so a stalled upload holds only its own bytes.
        // The whole limit, which decoding may fill: short of it, the gate is busy.
        let _decoded = if compressed && !bytes.is_empty() {
            reserve(limit)?
        } else {
            None
        };

        let spec = Spec {
            sources: &route.sources,
            max_depth: snap.max_json_depth,
            max_decoded: limit,
        };
        let (mut found, decoded) = extract::extract_decoded(&parts, &bytes, &spec)?;
        verify_tokens(route, &mut found, peer, &*self.observer.metrics).await?;
        let mut ids: Vec<Identifier> = Vec::with_capacity(found.len());
        for f in &found {
            let kind = route.sources.get(f.source).and_then(|s| s.kind);
            match identifier::parse(&f.raw, kind, &snap.identifiers) {
                Ok(id) => {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                Err(e) => {
                    return Err(ProxyError::IdentifierInvalid {
                        // Clipped and escaped: the value is the client's, and it ends up
                        // in logs and in the error body.
                        value: identifier::snippet(&f.raw),
                        error: e.to_string().escape_debug().to_string(),
                    });
                }
            }
        }
        if ids.is_empty() && !route.optional {
            return Err(ProxyError::IdentifierMissing);
        }

        let mut denied: Vec<&str> = Vec::new();
        let mut reason = None;
        for id in &ids {
            let d = decide(snap, route, id);
            if let Some(r) = d.deny {
                denied.push(id.as_str());
                reason.get_or_insert(r);
            }
            tracing::debug!(route = %route.name, allowed = d.is_allowed(), rule = d.rule.describe(), "decision");
            self.observer.decided(
                snap,
                route,
                parts.method.as_str(),
                id,
                &d,
                request_id.to_str().ok(),
            );
        }
        if let Some(reason) = reason {
            if route.mode == Mode::Shadow {
                // Shadow mode: recorded as `would_deny`, forwarded like an allowed request.
                tracing::info!(route = %route.name, reason = reason.as_str(), %peer, "would deny (shadow mode); forwarded");
            } else {
                tracing::info!(route = %route.name, reason = reason.as_str(), %peer, "denied");
                return Ok(denial(snap, &parts, &denied, reason));
            }
        }

        // Forward exactly the bytes the gate read, with an exact length: the bytes received,
        // or, for a compressed body, the decoded bytes without their `Content-Encoding` (an app
        // that does not decode would parse the compressed bytes, which can carry plaintext the
        // gate never read as a field). The length is the client's own Content-Length when it
        // is exactly that number in canonical form (most are; then nothing is rebuilt), else a
        // new one.
        let bytes = match decoded {
            Some(d) => {
                parts.headers.remove(header::CONTENT_ENCODING);
                Bytes::from(d)
            }
            None => bytes,
        };
        parts.headers.remove(header::TRANSFER_ENCODING);
        if !is_exact_length(parts.headers.get(header::CONTENT_LENGTH), bytes.len()) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        let resp = self
            .forward(
                snap,
                parts,
                Either::Right(Full::new(bytes)),
                peer,
                request_id,
                None,
            )
            .await;
        if let (Some(acceptance), Ok(r)) = (&self.accepted, &resp)
            && r.status().is_success()
            && route.kind == RouteKind::SignUp
            && route.mode == Mode::Enforce
        {
            for id in ids.iter().filter(|id| (acceptance.wanted)(id.as_str())) {
                if acceptance.tx.try_send(id.as_str().to_owned()).is_err() {
                    tracing::warn!(route = %route.name, "invitation acceptance queue full; one acceptance dropped");
                    self.observer.metrics.invitation_acceptance("dropped");
                }
            }
        }
        resp
    }

    async fn forward(
        &self,
        snap: &Arc<Snapshot>,
        mut parts: http::request::Parts,
        body: ProxyBody,
        peer: &Peer,
        request_id: &HeaderValue,
        upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
    ) -> Result<Response<RespBody>, ProxyError> {
        let (upgrade, on_client) = match upgrade {
            Some((protocol, on_client)) => (Some(protocol), Some(on_client)),
            None => (None, None),
        };
        let upgrading = upgrade.is_some();
        // Plain upstreams without an upgrade go through the lean pool, which sends the URI
        // as is (origin-form); the legacy client wants it absolute.
        let pooled = !upgrading && snap.upstream.scheme == http::uri::Scheme::HTTP;
        let path_and_query = match parts.uri.path_and_query() {
            Some(pq) => pq.clone(),
            None => PathAndQuery::from_static("/"),
        };
        parts.uri = if pooled {
            Uri::from(path_and_query)
        } else {
            Uri::builder()
                .scheme(snap.upstream.scheme.clone())
                .authority(snap.upstream.authority.clone())
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| bad("bad_uri", &e.to_string()))?
        };
        if parts.version == Version::HTTP_2 {
            headers::join_cookies(&mut parts.headers);
        }
        parts.version = Version::HTTP_11;
        headers::to_upstream(&mut parts.headers, &peer.ip, peer.secure, upgrade);
        // After `to_upstream` (a client's `Connection: x-request-id` would strip it there):
        // the one value, replacing whatever the client sent.
        parts.headers.insert(
            self.observer.request_ids.header().clone(),
            request_id.clone(),
        );
        let mut resp = if pooled {
            if !parts.headers.contains_key(header::HOST) {
                // An HTTP/1.0 client may omit it; HTTP/1.1 upstreams require one.
                let host = HeaderValue::from_str(snap.upstream.authority.as_str())
                    .map_err(|_| bad("bad_uri", "the upstream authority is not a valid Host"))?;
                parts.headers.insert(header::HOST, host);
            }
            let req = Request::from_parts(parts, body);
            // Boxed: its state (the request, hyper's send) would otherwise be carried, and
            // copied, by every future above this one.
            let sent = Box::pin(self.pool.send(&snap.upstream.authority, req));
            match self
                .deadlines
                .timeout(snap.upstream_response_timeout, sent)
                .await
            {
                Err(_) => return Err(ProxyError::UpstreamResponseTimeout),
                Ok(Err(e)) => return Err(classify_pooled(e)),
                Ok(Ok(r)) => r,
            }
        } else {
            let client = if upgrading {
                &self.client_h1
            } else {
                &self.client
            };
            let req = Request::from_parts(parts, body);
            match self
                .deadlines
                .timeout(snap.upstream_response_timeout, client.request(req))
                .await
            {
                Err(_) => return Err(ProxyError::UpstreamResponseTimeout),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(r)) => r.map(pool::UpstreamBody::unpooled),
            }
        };
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched && upgrading {
            if let Some(on_client) = on_client {
                let on_upstream = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(on_client, on_upstream));
            }
        } else if switched {
            return Err(ProxyError::Upstream(
                "the upstream switched protocols without being asked".into(),
            ));
        }
        headers::to_client(resp.headers_mut(), switched);
        Ok(resp.map(Either::Left))
    }

    /// The settings this proxy was built with.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }
}

/// The legacy clients (HTTP/2 allowed; HTTP/1.1 only) and the lean pool of one proxy.
fn upstream_clients(
    connectors: &UpstreamConnectorPair,
    settings: &ProxySettings,
) -> (UpstreamClient, UpstreamClient, pool::Pool) {
    let build = |connector: &HttpsConnector<HttpConnector>| {
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .timer(TokioTimer::new())
            .build(connector.clone())
    };
    let pool = pool::Pool::new(
        settings.upstream_connect_timeout,
        settings.pool_idle_timeout,
        POOL_MAX_IDLE,
    );
    (build(&connectors.0), build(&connectors.1), pool)
}

/// Turns the value of each `jwt`/`userinfo` source into the identifier its provider vouches
/// for (`oauth`), in place. A refused token is 401, an unreachable provider 503; neither is
/// forwarded, and no token material is logged. An id_token and a userinfo answer in the same
/// request must name the same `sub`.
async fn verify_tokens(
    route: &Route,
    found: &mut [extract::Found],
    peer: &Peer,
    events: &dyn crate::oauth::Events,
) -> Result<(), ProxyError> {
    // The subject each verified token names ("" for none, as GitHub's `/user/emails`).
    let mut subs: SmallVec<[String; 2]> = SmallVec::new();
    for f in found.iter_mut() {
        let Some(Some(check)) = route.tokens.get(f.source) else {
            continue;
        };
        match check.verifier.verify(&f.raw, check.bearer, events).await {
            Ok(v) => {
                subs.push(v.sub);
                f.raw = v.identifier;
            }
            Err(crate::oauth::OAuthError::Invalid(reason)) => {
                tracing::info!(route = %route.name, %peer, reason, "token refused");
                return Err(ProxyError::TokenInvalid(reason));
            }
            Err(crate::oauth::OAuthError::Unavailable(cause)) => {
                tracing::warn!(route = %route.name, %peer, %cause, "identity provider unavailable");
                return Err(ProxyError::ProviderUnavailable);
            }
        }
    }
    // Several tokens in one request must be one account's: each names a subject, the same
    // one (else an id_token of one account would pass with another account's access token,
    // e.g. GitHub's, whose answer names none).
    if subs.len() > 1 {
        if subs.iter().any(String::is_empty) {
            return Err(ProxyError::TokenInvalid(
                "the tokens do not all name a subject to match",
            ));
        }
        if subs.iter().any(|s| *s != subs[0]) {
            return Err(ProxyError::TokenInvalid(
                "the tokens name different subjects",
            ));
        }
    }
    Ok(())
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection closed");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

/// HTTP/2: the `:authority` is the request's host. A `host` header that names another one is
/// refused (the upstream or a framework could route by either); without one, `host` is set
/// from `:authority` so the upstream sees what an HTTP/1.1 client would have sent.
fn h2_host<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(());
    };
    match req.headers().get(header::HOST) {
        Some(host) => {
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
            {
                return Err(bad(
                    "host_mismatch",
                    "the Host header and :authority name different hosts",
                ));
            }
        }
        None => {
            let v = HeaderValue::from_str(authority.as_str())
                .map_err(|_| bad("bad_uri", "the :authority is not a valid Host"))?;
            req.headers_mut().insert(header::HOST, v);
        }
    }
    Ok(())
}

fn bad(code: &'static str, message: &str) -> ProxyError {
    ProxyError::BadRequest {
        code,
        message: message.to_owned(),
    }
}

/// `Some(protocol)` for a WebSocket upgrade; `h2c` and other protocols are refused.
fn websocket_upgrade(headers: &http::HeaderMap) -> Result<Option<HeaderValue>, ProxyError> {
    let mut values = headers.get_all(header::UPGRADE).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("upgrade_refused", "more than one Upgrade header"));
    }
    let v = first.to_str().unwrap_or("").trim();
    if v.eq_ignore_ascii_case("websocket") {
        Ok(Some(first.clone()))
    } else if v.to_ascii_lowercase().contains("h2c") {
        Err(bad("upgrade_refused", "Upgrade: h2c is refused"))
    } else {
        Err(bad(
            "upgrade_refused",
            "only WebSocket upgrades are passed through",
        ))
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `value` is `len` in canonical decimal (digits only, no leading zero, no spaces).
fn is_exact_length(value: Option<&HeaderValue>, len: usize) -> bool {
    let Some(v) = value.map(HeaderValue::as_bytes) else {
        return false;
    };
    let canonical = v.len() == 1 || v.first() != Some(&b'0');
    canonical
        && v.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            == Some(len)
}

/// Whether the request announces a body (chunked, or a non-zero length).
fn declares_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The `idgate_upstream_errors_total` kind of an upstream failure.
fn upstream_kind(e: &ProxyError) -> Option<&'static str> {
    match e {
        ProxyError::UpstreamConnect(_) => Some("connect"),
        ProxyError::UpstreamConnectTimeout => Some("connect_timeout"),
        ProxyError::UpstreamResponseTimeout => Some("response_timeout"),
        ProxyError::Upstream(_) => Some("other"),
        _ => None,
    }
}

/// Idle connections kept per proxy for plain upstreams (and per legacy client and host).
pub const POOL_MAX_IDLE: usize = 256;

fn classify_pooled(e: pool::PoolError) -> ProxyError {
    match e {
        pool::PoolError::ConnectTimeout => ProxyError::UpstreamConnectTimeout,
        pool::PoolError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::TimedOut =>
        {
            ProxyError::UpstreamConnectTimeout
        }
        e @ (pool::PoolError::Connect { .. } | pool::PoolError::Handshake(_)) => {
            ProxyError::UpstreamConnect(error_chain(&e))
        }
        pool::PoolError::Request(e) => ProxyError::Upstream(error_chain(&e)),
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut timed_out = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        source = s.source();
    }
    let detail = error_chain(e);
    if e.is_connect() {
        if timed_out {
            ProxyError::UpstreamConnectTimeout
        } else {
            ProxyError::UpstreamConnect(detail)
        }
    } else {
        ProxyError::Upstream(detail)
    }
}

/// The denial: Clerk's `not_allowed_access` envelope, or a redirect for HTML form posts.
fn denial(
    snap: &Snapshot,
    parts: &http::request::Parts,
    identifiers: &[&str],
    reason: Reason,
) -> Response<RespBody> {
    if let Some(location) = &snap.deny.redirect
        && is_html_form(parts)
    {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::SEE_OTHER;
        resp.headers_mut()
            .insert(header::LOCATION, location.clone());
        return resp;
    }
    let long = format!(
        "{} is not allowed to access this application.",
        identifiers.join(", ")
    );
    error::envelope(
        snap.deny.status,
        "Access not allowed.",
        &long,
        "not_allowed_access",
        json!({ "identifiers": identifiers, "reason": reason.as_str() }),
    )
}

fn is_html_form(parts: &http::request::Parts) -> bool {
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let accepts_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    (ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/form-data"))
        && accepts_html
}

/// How many requests one HTTP/2 connection may have in flight.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Accepts connections until `stop` turns true, then drains in-flight requests for at most
/// the shutdown grace period. The listener is closed as soon as `stop` fires.
///
/// Without `tls` the listener speaks HTTP/1.1 only (no h2c). With `tls`, the handshake runs on
/// the connection's own task under `tls_handshake_timeout`, and the protocol follows ALPN:
/// `h2` gets HTTP/2, anything else HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection is enrolled: `raise` asks them to finish, and `wait` resolves once
    // the last one is gone.
    let drain = Arc::new(drain::Drain::default());
    // hyper's own per-protocol builders: hyper-util's `auto::Builder::http1_only()` is
    // ignored by `serve_connection_with_upgrades`, which would accept HTTP/2 prior knowledge.
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(proxy.deadlines.clone())
        .header_read_timeout(proxy.settings.header_read_timeout)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let (h1, h2) = (Arc::new(h1), Arc::new(h2));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshake_timeout = proxy.settings.tls_handshake_timeout;
    let local = listener.local_addr().ok();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let proxy = proxy.clone();
                    let client = Arc::new(Peer::new(peer, acceptor.is_some()));
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (proxy, client) = (proxy.clone(), client.clone());
                        async move { Ok::<_, Infallible>(proxy.handle(req, &client).await) }
                    });
                    // Enrolled now, so a shutdown also waits for handshakes in progress.
                    let enrolled = drain.enroll();
                    let Some(acceptor) = acceptor.clone() else {
                        let conn = h1
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades();
                        let conn = drive(conn, |c| c.graceful_shutdown(), enrolled);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, %peer, "connection ended with an error");
                            }
                        });
                        continue;
                    };
                    let (h1, h2) = (h1.clone(), h2.clone());
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let io = TokioIo::new(stream);
                        let ended = if io.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
                            drive(h2.serve_connection(io, svc), |c| c.graceful_shutdown(), enrolled)
                                .await
                        } else {
                            let conn = h1.serve_connection(io, svc).with_upgrades();
                            drive(conn, |c| c.graceful_shutdown(), enrolled).await
                        };
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    drain.raise();
    tracing::info!(addr = ?local, connections = drain.live(), "listener closed; draining");
    if tokio::time::timeout(proxy.settings.shutdown_grace, drain.wait())
        .await
        .is_err()
    {
        tracing::warn!(addr = ?local, "drain timed out; closing remaining connections");
    }
}

/// Serves one connection until it ends; once the drain is raised, asks it to finish the
/// requests in flight and close (`shutdown` is the connection's `graceful_shutdown`).
async fn drive<C, E>(
    conn: C,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
    mut enrolled: drain::Enrolled,
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = Some(shutdown);
    std::future::poll_fn(|cx| {
        if shutdown.is_some()
            && enrolled.raised(cx)
            && let Some(shutdown) = shutdown.take()
        {
            shutdown(conn.as_mut());
        }
        conn.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_canonical_content_length_is_kept() {
        let v = |t: &'static str| Some(HeaderValue::from_static(t));
        assert!(is_exact_length(v("120").as_ref(), 120));
        assert!(is_exact_length(v("0").as_ref(), 0));
        for (value, len) in [
            ("0120", 120),
            (" 120", 120),
            ("120 ", 120),
            ("+120", 120),
            ("121", 120),
            ("", 0),
            ("00", 0),
        ] {
            assert!(
                !is_exact_length(v(value).as_ref(), len),
                "{value:?} kept for {len}"
            );
        }
        assert!(!is_exact_length(None, 0));
    }
}
