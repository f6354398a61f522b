//! `idgate demo`: the gate with the example config in front of a small built-in sign-up app.
//!
//! The example config and list files are compiled into the binary and written to a fresh
//! temporary directory (so the demo works on a fresh machine and its list files can be edited
//! to watch hot reload); only `upstream:` is pointed at the built-in app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The example configuration shipped at the top of the repository.
pub const EXAMPLE_CONFIG: &str = include_str!("../../config.example.yaml");
const EXAMPLE_ALLOW: &str = include_str!("../../lists/allow.txt");
const EXAMPLE_BLOCK: &str = include_str!("../../lists/block.txt");
const EXAMPLE_UPSTREAM: &str = "upstream: http://127.0.0.1:3000";
const EXAMPLE_LISTEN: &str = "addr: 127.0.0.1:8080";
const EXAMPLE_ADMIN: &str = "listen: 127.0.0.1:9090";

/// Why the demo could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot write the demo files under {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the example config no longer contains `{0}`; update app/demo.rs")]
    ExampleChanged(&'static str),
    #[error("cannot start the demo app: {0}")]
    App(std::io::Error),
}

/// Writes the demo config (upstream, listen and admin addresses replaced) and list files into
/// `dir`.
pub fn write_files(
    dir: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<PathBuf, DemoError> {
    for needle in [EXAMPLE_UPSTREAM, EXAMPLE_LISTEN, EXAMPLE_ADMIN] {
        if !EXAMPLE_CONFIG.contains(needle) {
            return Err(DemoError::ExampleChanged(needle));
        }
    }
    let config = EXAMPLE_CONFIG
        .replacen(EXAMPLE_UPSTREAM, &format!("upstream: http://{upstream}"), 1)
        .replacen(EXAMPLE_LISTEN, &format!("addr: {listen}"), 1)
        .replacen(EXAMPLE_ADMIN, &format!("listen: {admin}"), 1);
    let write = |rel: &str, text: &str| -> Result<(), DemoError> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DemoError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| DemoError::Write { path, source })
    };
    write("config.yaml", &config)?;
    write("lists/allow.txt", EXAMPLE_ALLOW)?;
    write("lists/block.txt", EXAMPLE_BLOCK)?;
    Ok(dir.join("config.yaml"))
}

/// Starts the demo sign-up app on a free loopback port; returns its address.
pub async fn start_app() -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::App)?;
    let addr = listener.local_addr().map_err(DemoError::App)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(app))
                    .await;
            });
        }
    });
    Ok(addr)
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>idgate demo</title>
<h1>Demo sign-up</h1>
<form method="post" action="/api/sign-up">
<input name="email" placeholder="you@acme.com"> <button>Sign up</button>
</form>
<p>idgate checks the email against its allow and block lists before this app sees it.</p>
"#;

async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (status, ctype, text) = match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/") => (StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned()),
        (&Method::POST, "/api/sign-up") | (&Method::POST, "/api/sign-in") => {
            let received = String::from_utf8_lossy(&body);
            (
                StatusCode::CREATED,
                "application/json",
                serde_json::json!({
                    "ok": true,
                    "message": "the demo app accepted the request",
                    "path": parts.uri.path(),
                    "received": received,
                })
                .to_string(),
            )
        }
        _ => (
            StatusCode::OK,
            "application/json",
            serde_json::json!({ "ok": true, "path": parts.uri.path(), "note": "not gated" })
                .to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// The curl lines the demo prints.
pub fn curl_lines(gate: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
    let url = format!("http://{gate}/api/sign-up");
    let post = |email: &str| {
        format!(
            "  curl -i {url} -H 'content-type: application/json' -d '{{\"email\":\"{email}\"}}'"
        )
    };
    format!(
        "idgate demo: the gate listens on http://{gate}, in front of a built-in sign-up app.\n\
         \n\
         Allowed (matches *@acme.com in lists/allow.txt) -> 201 from the app:\n{}\n\
         Blocked (mallory@acme.com is in lists/block.txt) -> 403 not_allowed_access, reason blocklist:\n{}\n\
         Not on the allow list -> 403 not_allowed_access, reason allowlist:\n{}\n\
         Malformed identifier -> 400, never forwarded:\n{}\n\
         \n\
         Edit {}/lists/allow.txt or block.txt and the change applies within a second.\n\
         Open http://{gate}/ for an HTML form; health on http://{admin}/readyz. Ctrl-C stops.",
        post("alice@acme.com"),
        post("mallory@acme.com"),
        post("someone@elsewhere.net"),
        post("not-an-email"),
        dir.display(),
    )
}
