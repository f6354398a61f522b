//! Invitation acceptance and expiry through the real gate (`idgate::app::Gate`) on loopback:
//! invitations created on the admin port, sign-ups sent through the proxy port to a real
//! upstream that answers 200 or 422 by path, statuses read back through the admin API and the
//! SQLite file.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use common::{Reply, eventually, post_json, raw, write};
use idgate::app::Gate;

const KEY: &str = "sk_test_invitations";

/// An upstream that answers `/api/sign-up` with 200 and `/api/sign-up-rejected` with 422,
/// recording the paths it saw.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let rec = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let rec = rec.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let rec = rec.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        rec.lock().unwrap().push(path.clone());
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        if path.ends_with("-rejected") {
                            *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn config(upstream: SocketAddr, db: &Path, mode: &str) -> String {
    format!(
        r#"listen:
  - addr: 127.0.0.1:0
upstream: http://{upstream}
admin:
  listen: 127.0.0.1:0
  secret_keys: ["{KEY}"]
store: {{ sqlite: "{}" }}
lists:
  allow: ["*@acme.com"]
  block: ["*@blocked.org"]
restrictions:
  allowlist: auto
routes:
  - {{ name: up, methods: [POST], path: /api/sign-up, kind: sign_up, mode: {mode}, identifier: [{{ json: /email }}] }}
  - {{ name: up-rejected, methods: [POST], path: /api/sign-up-rejected, kind: sign_up, mode: {mode}, identifier: [{{ json: /email }}] }}
  - {{ name: up-enforced, methods: [POST], path: /api/sign-up-enforced, kind: sign_up, mode: enforce, identifier: [{{ json: /email }}] }}
  - {{ name: in, methods: [POST], path: /api/sign-in, kind: sign_in, identifier: [{{ json: /email }}] }}
reload:
  interval: 0s
"#,
        db.display()
    )
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin.test\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

/// Creates an invitation without sending it; returns its id.
async fn invite(g: &Gate, email: &str) -> String {
    let body = json!({ "email_address": email, "notify": false }).to_string();
    let r = admin(g.admin_addr(), "POST", "/v1/invitations", Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn status(g: &Gate, id: &str) -> String {
    let r = admin(
        g.admin_addr(),
        "GET",
        &format!("/v1/invitations?paginated=true&query={id}"),
        None,
    )
    .await;
    let v: Value = r.json();
    // Revoked ones are hidden without `status`; none of these tests revokes.
    v["data"][0]["status"]
        .as_str()
        .unwrap_or("missing")
        .to_owned()
}

fn sign_up(email: &str) -> String {
    json!({ "email": email }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_2xx_sign_up_accepts_the_invitation_only_then() {
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config(up, &dir.path().join("idgate.db"), "enforce"));
    let g = Gate::start(&cfg).await.expect("gate starts");
    let proxy = g.proxy_addrs()[0];

    let ok = invite(&g, "ann@acme.com").await;
    let rejected = invite(&g, "bo@acme.com").await;
    let denied = invite(&g, "eve@blocked.org").await;
    let signed_in = invite(&g, "cy@acme.com").await;
    let other = invite(&g, "dee@acme.com").await;

    // Upstream 2xx on a sign-up route → accepted (the identifier is canonicalised like the gate).
    let r = post_json(proxy, "/api/sign-up", &sign_up("Ann@ACME.com")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&g, &ok).await == "accepted"
        })
        .await,
        "ann's invitation accepted"
    );

    // Upstream 4xx → still pending.
    let r = post_json(proxy, "/api/sign-up-rejected", &sign_up("bo@acme.com")).await;
    assert_eq!(r.status, 422, "{}", r.text());
    // Denied by the gate → never reaches the upstream, not accepted.
    let r = post_json(proxy, "/api/sign-up", &sign_up("eve@blocked.org")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A sign-in is not a sign-up.
    let r = post_json(proxy, "/api/sign-in", &sign_up("cy@acme.com")).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A later accepted sign-up is a barrier: the acceptance task handles identifiers in order,
    // so once dee's is accepted the earlier requests were handled too.
    let r = post_json(proxy, "/api/sign-up", &sign_up("dee@acme.com")).await;
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&g, &other).await == "accepted"
        })
        .await
    );
    assert_eq!(status(&g, &rejected).await, "pending");
    assert_eq!(status(&g, &denied).await, "pending");
    assert_eq!(status(&g, &signed_in).await, "pending");
    let paths = seen.lock().unwrap().clone();
    assert_eq!(
        paths,
        [
            "/api/sign-up",
            "/api/sign-up-rejected",
            "/api/sign-in",
            "/api/sign-up"
        ],
        "the denied sign-up never reached the upstream"
    );
    // The acceptance is counted.
    let m = raw(
        g.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .text();
    assert!(
        m.contains("idgate_invitation_acceptances_total{outcome=\"accepted\"} 2"),
        "{m}"
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_sign_ups_do_not_accept() {
    let (up, _) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config(up, &dir.path().join("idgate.db"), "shadow"));
    let g = Gate::start(&cfg).await.expect("gate starts");
    let proxy = g.proxy_addrs()[0];
    let id = invite(&g, "ann@acme.com").await;
    let barrier = invite(&g, "bo@acme.com").await;
    let r = post_json(proxy, "/api/sign-up", &sign_up("ann@acme.com")).await;
    assert_eq!(r.status, 200);
    // Acceptance is asynchronous, so first a barrier: an enforce-mode sign-up of another
    // invited address through the same gate. The proxy hands identifiers over before it
    // answers and the acceptance task takes them in order, so once bo's invitation reads
    // accepted, anything ann's shadow sign-up handed over was handled too.
    let r = post_json(proxy, "/api/sign-up-enforced", &sign_up("bo@acme.com")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&g, &barrier).await == "accepted"
        })
        .await,
        "the enforced sign-up (the barrier) was accepted"
    );
    // Shadow mode forwards everything; acceptance follows enforced decisions only.
    assert_eq!(status(&g, &id).await, "pending");
    // The metrics show the proxy handed over the barrier alone (one outcome in all).
    let m = raw(
        g.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .text();
    let outcomes: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("idgate_invitation_acceptances_total{"))
        .collect();
    assert_eq!(
        outcomes,
        ["idgate_invitation_acceptances_total{outcome=\"accepted\"} 1"],
        "{m}"
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_due_invitations_read_expired_are_swept_and_never_accepted() {
    let (up, _) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idgate.db");
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config(up, &db, "enforce"));
    let g = Gate::start(&cfg).await.expect("gate starts");
    let old = invite(&g, "old@acme.com").await;
    let fresh = invite(&g, "new@acme.com").await;
    // Move one invitation's expiry into the past behind the gate's back (another connection;
    // WAL lets it write while the gate runs).
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let n = conn
            .execute(
                "UPDATE invitations SET expires_at = 1000 WHERE id = ?1",
                [&old],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    // Listings never show it as pending, even before the sweep stored it.
    assert_eq!(status(&g, &old).await, "expired");
    let r = admin(
        g.admin_addr(),
        "GET",
        "/v1/invitations?status=pending",
        None,
    )
    .await;
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&fresh));
    // A sign-up does not accept an expired invitation.
    let r = post_json(g.proxy_addrs()[0], "/api/sign-up", &sign_up("old@acme.com")).await;
    assert_eq!(r.status, 200);
    let r = post_json(g.proxy_addrs()[0], "/api/sign-up", &sign_up("new@acme.com")).await;
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&g, &fresh).await == "accepted"
        })
        .await
    );
    assert_eq!(status(&g, &old).await, "expired");
    g.shutdown().await;

    // The sweep at start-up stores `expired`.
    let stored = || -> String {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row(
            "SELECT status FROM invitations WHERE id = ?1",
            [&old],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(stored(), "pending", "stored status before the sweep");
    let g = Gate::start(&cfg).await.expect("gate restarts");
    assert!(
        eventually(Duration::from_secs(10), || async { stored() == "expired" }).await,
        "the start-up sweep stored expired"
    );
    assert_eq!(
        status(&g, &fresh).await,
        "accepted",
        "kept across the restart"
    );
    g.shutdown().await;
}
