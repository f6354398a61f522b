//! Test harness: a recording upstream HTTP server, the real gate wiring on ephemeral loopback
//! ports, and a raw HTTP/1.1 client that sends exactly the bytes a test writes.
#![allow(dead_code)]

pub mod binary;
pub mod install;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use idgate::app::Gate;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A real upstream app on a loopback port that records what reaches it.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let rec = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, rec.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

async fn handle(
    mut req: Request<Incoming>,
    rec: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        // A minimal upgrade: answer 101 and echo bytes back on the raw connection.
        let on = hyper::upgrade::on(&mut req);
        rec.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body: Bytes::new(),
        });
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    rec.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let text = format!(
        "upstream saw {} {} ({} bytes)",
        parts.method,
        parts.uri,
        body.len()
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    resp.headers_mut()
        .insert("connection", "keep-alive, x-hop".parse().unwrap());
    resp.headers_mut()
        .insert("x-hop", "secret".parse().unwrap());
    Ok(resp)
}

/// A gate started from a YAML config (upstream and ports filled in) in a temporary directory.
pub struct TestGate {
    pub gate: Option<Gate>,
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl TestGate {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gate.take() {
            g.shutdown().await;
        }
    }

    pub fn gate(&self) -> &Gate {
        self.gate.as_ref().unwrap()
    }
}

/// The standard test config body (everything after `upstream`/`listen`/`admin`).
pub const STANDARD: &str = r#"
lists:
  allow: ["*@acme.com", "bob@partner.io", "+12025550123", "0x52908400098527886E0F7030069857D2E4169EE7"]
  block: ["mallory@acme.com", "*@blocked.org"]
restrictions:
  allowlist: auto
routes:
  - name: sign-up
    methods: [POST]
    path: /api/sign-up
    kind: sign_up
    identifier: [{ json: /email }, { form: email }, { multipart: email }]
  - name: sign-in
    methods: [POST]
    path: /api/sign-in
    kind: sign_in
    identifier: [{ json: /email }, { form: email }]
limits:
  body: 4KiB
timeouts:
  upstream_response: 1s
  shutdown_grace: 5s
reload:
  debounce: 50ms
  interval: 0s
"#;

pub fn config_text(upstream: SocketAddr, body: &str) -> String {
    format!(
        "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\n{body}"
    )
}

pub fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Starts an upstream and a gate with `body` as the rest of the config.
pub async fn start(body: &str) -> TestGate {
    start_with(body, &[]).await
}

/// Like [`start`], writing `files` (relative path, content) next to the config first.
pub async fn start_with(body: &str, files: &[(&str, &str)]) -> TestGate {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        write(&dir.path().join(rel), text);
    }
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config_text(upstream.addr, body));
    let gate = Gate::start(&cfg).await.expect("gate starts");
    let addr = gate.proxy_addrs()[0];
    let admin = gate.admin_addr();
    TestGate {
        gate: Some(gate),
        dir,
        upstream,
        addr,
        admin,
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes and reads the whole reply (the request should say `Connection: close`).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse_reply(&buf)
}

pub fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A POST with a body and content type, `Connection: close`.
pub async fn post(addr: SocketAddr, path: &str, ctype: &str, body: &[u8]) -> Reply {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).await
}

pub async fn post_json(addr: SocketAddr, path: &str, json: &str) -> Reply {
    post(addr, path, "application/json", json.as_bytes()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Polls until `f` is true or the deadline passes; returns whether it became true.
pub async fn eventually<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
