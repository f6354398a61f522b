//! Hostile connections against the real gate wiring (`Gate::start` on loopback): slow headers
//! (slowloris), slow bodies on a gated route, oversized headers and bodies, and many idle
//! connections. In every case the gate stays up, keeps answering a normal client, and the
//! upstream never sees the hostile request. Loops are bounded; the only deadlines are generous
//! "answered at all" ones.

mod common;

use std::time::Duration;

use common::{TestGate, get, post_json, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Small limits so the hostile cases trip them quickly.
const HOSTILE: &str = r#"
lists:
  allow: ["*@acme.com"]
  block: ["mallory@acme.com"]
restrictions:
  allowlist: auto
routes:
  - name: sign-up
    methods: [POST]
    path: /api/sign-up
    kind: sign_up
    identifier: [{ json: /email }, { form: email }]
limits:
  body: 4KiB
timeouts:
  header_read: 1s
  upstream_response: 5s
  shutdown_grace: 1s
reload:
  debounce: 50ms
  interval: 0s
"#;

async fn start() -> TestGate {
    common::start(HOSTILE).await
}

/// A normal allowed sign-up goes through, and the upstream saw exactly that body.
async fn assert_normal_client_served(g: &TestGate) {
    let body = r#"{"email":"alice@acme.com"}"#;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        post_json(g.addr, "/api/sign-up", body),
    )
    .await
    .expect("a normal client is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = g.upstream.last().expect("upstream called");
    assert_eq!(seen.uri, "/api/sign-up");
    assert_eq!(&seen.body[..], body.as_bytes());
}

/// Reads until EOF (or error) and returns what arrived; `None` if the deadline passed first.
async fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let fut = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(deadline, fut).await.ok()?;
    Some(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_others_are_served() {
    let g = start().await;
    const N: usize = 50;
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    // Dribble one header line per connection a few times; the head is never finished.
    for i in 0..3 {
        for s in &mut conns {
            let _ = s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await;
        }
        assert_normal_client_served(&g).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // After header_read (1s) every one of them is closed by the gate (a 408 or a bare close).
    for s in &mut conns {
        let got = read_until_closed(s, Duration::from_secs(15))
            .await
            .expect("the gate closes a connection whose head never completes");
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408"),
            "unexpected reply to a slow head: {text}"
        );
    }
    let calls = g.upstream.count();
    assert_normal_client_served(&g).await;
    assert_eq!(g.upstream.count(), calls + 1);
    // Only the normal client's requests reached the upstream.
    assert!(
        g.upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| !s.headers.contains_key("x-slow-0"))
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_on_a_gated_route_gets_408_and_never_reaches_upstream() {
    let g = start().await;
    let mut conns = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(
            b"POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
        conns.push(s);
    }
    assert_normal_client_served(&g).await;
    let before = g.upstream.count();
    for s in &mut conns {
        let got = read_until_closed(s, Duration::from_secs(15))
            .await
            .expect("the gate answers a slow body");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "got: {text}");
    }
    assert_eq!(
        g.upstream.count(),
        before,
        "a slow body reached the upstream"
    );
    assert!(
        g.upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.body.len() != 100)
    );
    assert_normal_client_served(&g).await;
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_gate_stays_up() {
    let g = start().await;
    // One huge header value (1 MiB, beyond hyper's read buffer limit) ...
    let mut huge = b"POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(
        b"\r\nContent-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{\"email\":\"alice@acme.com\"}",
    );
    // ... and too many headers (hyper accepts 100).
    let mut many = b"POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(
        b"Content-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{\"email\":\"alice@acme.com\"}",
    );
    for req in [&huge, &many] {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        // The gate may close before the whole request is written; that is an answer too.
        let _ = s.write_all(req).await;
        let got = read_until_closed(&mut s, Duration::from_secs(15))
            .await
            .expect("the gate answers or closes");
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 431"),
            "unexpected reply to oversized headers: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    assert_eq!(
        g.upstream.count(),
        0,
        "an oversized head reached the upstream"
    );
    assert_normal_client_served(&g).await;
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_never_reach_upstream() {
    let g = start().await;
    // Declared larger than the 4 KiB limit.
    let big = format!(
        r#"{{"email":"alice@acme.com","pad":"{}"}}"#,
        "x".repeat(8192)
    );
    let r = post_json(g.addr, "/api/sign-up", &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    // Chunked, with no declared length, growing past the limit.
    let mut req = b"POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..10 {
        req.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(0x400)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(g.addr, &req).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        g.upstream.count(),
        0,
        "an oversized body reached the upstream"
    );
    assert_normal_client_served(&g).await;
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_do_not_starve_a_normal_client() {
    let g = start().await;
    const IDLE: usize = 500;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(g.addr).await.unwrap());
    }
    for _ in 0..5 {
        assert_normal_client_served(&g).await;
        let r = get(g.addr, "/public").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(g.upstream.count(), 10);
    // The gate does not keep idle connections that never send a head beyond header_read.
    let mut closed = 0;
    for s in idle.iter_mut().take(20) {
        if read_until_closed(s, Duration::from_secs(15))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 20,
        "idle connections were not closed after header_read"
    );
    drop(idle);
    assert_normal_client_served(&g).await;
    g.shutdown().await;
}
