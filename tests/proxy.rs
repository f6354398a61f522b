//! The gate end to end on loopback: a real upstream, the real wiring, raw HTTP/1.1 clients.
//! Every denied or refused request is checked to have reached the upstream not at all.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn allowed_sign_up_is_forwarded_byte_for_byte() {
    let g = start(STANDARD).await;
    let body = br#"{"email":"Alice@ACME.com","password":"hunter2"}"#;
    let r = post(g.addr, "/api/sign-up?x=1", "application/json", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream").as_deref(), Some("yes"));
    assert!(
        r.header("x-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    let seen = g.upstream.last().expect("upstream called");
    assert_eq!(&seen.body[..], &body[..]);
    assert_eq!(seen.uri, "/api/sign-up?x=1");
    assert_eq!(seen.headers["host"], "app.test");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "app.test");
    assert!(seen.headers.get("connection").is_none_or(|v| v != "close"));
    g.shutdown().await;
}

#[tokio::test]
async fn a_compressed_sign_up_is_forwarded_as_the_gate_read_it() {
    use std::io::Write;
    let g = start(STANDARD).await;
    let plain = br#"{"email":"alice@acme.com","password":"hunter2"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain).unwrap();
    let gz = gz.finish().unwrap();
    let mut req = format!(
        "POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    req.extend_from_slice(&gz);
    let r = raw(g.addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = g.upstream.last().expect("upstream called");
    assert_eq!(&seen.body[..], &plain[..], "the decoded body is forwarded");
    assert!(seen.headers.get("content-encoding").is_none());
    assert_eq!(
        seen.headers["content-length"],
        plain.len().to_string().as_str()
    );
    g.shutdown().await;
}

#[tokio::test]
async fn denials_use_clerks_envelope_and_never_reach_the_upstream() {
    let g = start(STANDARD).await;
    let cases = [
        (r#"{"email":"mallory@acme.com"}"#, "blocklist"),
        (r#"{"email":"Mallory+x@ACME.com"}"#, "blocklist"),
        (r#"{"email":"eve@blocked.org"}"#, "blocklist"),
        (r#"{"email":"eve@sub.blocked.org"}"#, "blocklist"),
        (r#"{"email":"carol@elsewhere.net"}"#, "allowlist"),
        (r#"{"email":"x@eng.acme.com"}"#, "allowlist"),
    ];
    for (body, reason) in cases {
        let r = post_json(g.addr, "/api/sign-up", body).await;
        assert_eq!(r.status, 403, "{body}: {}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let j = r.json();
        let e = &j["errors"][0];
        assert_eq!(e["code"], "not_allowed_access", "{body}");
        assert_eq!(e["message"], "Access not allowed.");
        assert_eq!(e["meta"]["reason"], reason, "{body}");
        assert!(
            e["long_message"]
                .as_str()
                .unwrap()
                .contains("is not allowed to access")
        );
        assert_eq!(e["meta"]["identifiers"].as_array().unwrap().len(), 1);
    }
    assert_eq!(
        g.upstream.count(),
        0,
        "a denied request reached the upstream"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn phones_wallets_forms_and_multipart() {
    let g = start(STANDARD).await;
    let ok = [
        ("application/x-www-form-urlencoded", "email=bob%40partner.io&name=Bob".to_string()),
        ("application/json", r#"{"email":"+1 (202) 555-0123"}"#.to_string()),
        ("application/json", r#"{"email":"0x52908400098527886e0f7030069857d2e4169ee7"}"#.to_string()),
        (
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nbob@partner.io\r\n--XyZ--\r\n".to_string(),
        ),
    ];
    for (ctype, body) in &ok {
        let r = post(g.addr, "/api/sign-up", ctype, body.as_bytes()).await;
        assert_eq!(r.status, 200, "{ctype} {body}: {}", r.text());
        assert_eq!(&g.upstream.last().unwrap().body[..], body.as_bytes());
    }
    let n = g.upstream.count();
    let r = post(
        g.addr,
        "/api/sign-up",
        "application/x-www-form-urlencoded",
        b"email=mallory%40acme.com",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(g.upstream.count(), n);
    g.shutdown().await;
}

#[tokio::test]
async fn malformed_missing_and_ambiguous_requests_are_refused() {
    let g = start(STANDARD).await;
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":"not-an-email"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":"a@b@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":"\"a\"@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"name":"no email"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":"a@acme.com","email":"mallory@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":"a@acme.com","Email":"mallory@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up?email=mallory@acme.com",
            "application/json",
            br#"{"email":"a@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            br#"{"email":["a@acme.com"]}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            b"{\"email\":\"a@acme.com\"".to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json; charset=utf-16",
            br#"{"email":"a@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/json",
            b"\xEF\xBB\xBF{\"email\":\"a@acme.com\"}".to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "text/plain",
            br#"{"email":"a@acme.com"}"#.to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/x-www-form-urlencoded",
            b"email=a%40acme.com&email=mallory%40acme.com".to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/x-www-form-urlencoded",
            b"email=a%40acme.com&EMAIL=mallory%40acme.com".to_vec(),
            400,
        ),
        (
            "/api/sign-up",
            "application/xml",
            b"<email>a@acme.com</email>".to_vec(),
            415,
        ),
    ];
    for (path, ctype, body, want) in &cases {
        let r = post(g.addr, path, ctype, body).await;
        assert_eq!(
            r.status,
            *want,
            "{path} {ctype} {}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        let j = r.json();
        assert!(j["errors"][0]["code"].is_string(), "{}", r.text());
        assert!(j["errors"][0]["long_message"].is_string());
    }
    assert_eq!(
        g.upstream.count(),
        0,
        "a refused request reached the upstream"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn framing_methods_and_limits() {
    let g = start(STANDARD).await;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Wrong method on a gated path.
        (b"GET /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(), 405),
        // GET with a body.
        (b"GET /api/sign-up HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(), 400),
        // Method override headers.
        (b"POST /api/sign-up HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: PUT\r\nContent-Type: application/json\r\nContent-Length: 22\r\nConnection: close\r\n\r\n{\"email\":\"a@acme.com\"}".to_vec(), 400),
        // Two Host headers.
        (b"POST /api/sign-up HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 22\r\nConnection: close\r\n\r\n{\"email\":\"a@acme.com\"}".to_vec(), 400),
        // Over the 4 KiB limit by Content-Length.
        (format!("POST /api/sign-up HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}", "x".repeat(5000)).into_bytes(), 413),
        // Over the limit while chunked.
        (format!("POST /api/sign-up HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1388\r\n{}\r\n0\r\n\r\n", "x".repeat(5000)).into_bytes(), 413),
        // Upgrade on a gated route, and h2c anywhere.
        (b"POST /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        (b"GET /anything HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec(), 400),
        // Encoded slash that could reach the gated route.
        (b"POST /api%2Fsign-up HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), 400),
    ];
    for (req, want) in &cases {
        let r = raw(g.addr, req).await;
        assert_eq!(
            r.status,
            *want,
            "{}: {}",
            String::from_utf8_lossy(&req[..60.min(req.len())]),
            r.text()
        );
    }
    let r = raw(
        g.addr,
        b"GET /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    assert_eq!(g.upstream.count(), 0);

    // A chunked body under the limit is checked and forwarded with its exact bytes.
    let r = raw(g.addr, b"POST /api/sign-up HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n9\r\n{\"email\":\r\nd\r\n\"a@acme.com\"}\r\n0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = g.upstream.last().unwrap();
    assert_eq!(&seen.body[..], br#"{"email":"a@acme.com"}"#);
    assert_eq!(seen.headers["content-length"], "22");
    assert!(seen.headers.get("transfer-encoding").is_none());
    g.shutdown().await;
}

#[tokio::test]
async fn path_variants_are_gated_like_the_route() {
    let g = start(STANDARD).await;
    for path in [
        "/api/sign-up",
        "/API/Sign-Up",
        "/api/sign-up/",
        "//api//sign-up",
        "/api/./sign-up",
        "/x/../api/sign-up",
        "/api/sign-up;jsessionid=1",
        "/api/sign-up.json",
        "/api/sign%2Dup",
    ] {
        let r = post_json(g.addr, path, r#"{"email":"mallory@acme.com"}"#).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    assert_eq!(g.upstream.count(), 0);
    g.shutdown().await;
}

#[tokio::test]
async fn ungated_traffic_streams_through_untouched() {
    let g = start(STANDARD).await;
    let r = get(g.addr, "/static/app.js?v=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(g.upstream.last().unwrap().uri, "/static/app.js?v=1");

    // A body far over the gated limit passes on an ungated route (streamed, not buffered).
    let big = vec![b'a'; 3 << 20];
    let r = post(g.addr, "/upload", "application/octet-stream", &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(g.upstream.last().unwrap().body.len(), big.len());

    // Path-override headers are stripped so the app cannot be steered to a gated handler.
    let r = raw(g.addr, b"POST /other HTTP/1.1\r\nHost: a\r\nX-Original-URL: /api/sign-up\r\nX-Rewrite-URL: /api/sign-up\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 200);
    let seen = g.upstream.last().unwrap();
    assert!(seen.headers.get("x-original-url").is_none());
    assert!(seen.headers.get("x-rewrite-url").is_none());

    // CONNECT and `*` other than for OPTIONS are refused, never sent up.
    let n = g.upstream.count();
    for req in [
        &b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\nConnection: close\r\n\r\n"[..],
        b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(g.addr, req).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(g.upstream.count(), n);

    // X-Forwarded-For sent on two lines reaches the upstream as one list, in order, with the
    // client's address last.
    let r = raw(g.addr, b"GET /other HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 200);
    let seen = g.upstream.last().unwrap();
    let xff: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
    g.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_pass_on_ungated_routes() {
    let g = start(STANDARD).await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut echoed = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping over the tunnel");
    g.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let g = start(STANDARD).await;
    let r = get(g.addr, "/slow").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "upstream_unavailable");
    g.shutdown().await;

    // An upstream port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config_text(closed, STANDARD));
    let gate = idgate::app::Gate::start(&cfg).await.unwrap();
    let r = get(gate.proxy_addrs()[0], "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let r = post_json(
        gate.proxy_addrs()[0],
        "/api/sign-up",
        r#"{"email":"a@acme.com"}"#,
    )
    .await;
    assert_eq!(r.status, 502, "allowed sign-up to a dead upstream");
    gate.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let body = STANDARD.replace("upstream_response: 1s", "upstream_response: 10s");
    let g = start(&body).await;
    let addr = g.addr;
    let admin = g.admin;
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    assert!(eventually(Duration::from_secs(5), || async { g.upstream.count() == 1 }).await);
    assert_eq!(get(admin, "/readyz").await.status, 200);
    let TestGate { gate, upstream, .. } = g;
    let shutdown = tokio::spawn(gate.unwrap().shutdown());
    // During the drain: /readyz says 503 and new connections are refused.
    assert!(
        eventually(Duration::from_secs(2), || async {
            tokio::net::TcpStream::connect(admin).await.is_ok()
                && get(admin, "/readyz").await.status == 503
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the proxy listener should close at shutdown"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    shutdown.await.unwrap();
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn html_form_denials_can_redirect() {
    let body = format!("{STANDARD}deny:\n  status: 451\n  redirect: /denied\n");
    let g = start(&body).await;
    let form = b"email=mallory%40acme.com";
    let mut req = format!(
        "POST /api/sign-up HTTP/1.1\r\nHost: a\r\nAccept: text/html,*/*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        form.len()
    )
    .into_bytes();
    req.extend_from_slice(form);
    let r = raw(g.addr, &req).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/denied"));
    // An API client (JSON) gets the configured status and the envelope instead.
    let r = post_json(g.addr, "/api/sign-up", r#"{"email":"mallory@acme.com"}"#).await;
    assert_eq!(r.status, 451);
    assert_eq!(r.json()["errors"][0]["code"], "not_allowed_access");
    assert_eq!(g.upstream.count(), 0);
    g.shutdown().await;
}

/// hyper applies RFC 9112 §6.3 before the gate sees a request: with both Content-Length and
/// `Transfer-Encoding: chunked`, the chunked framing wins and Content-Length is dropped. The
/// gate decides on that body and the upstream receives exactly it, re-framed: no desync.
#[tokio::test]
async fn content_length_with_chunked_cannot_desync_gate_and_upstream() {
    let g = start(STANDARD).await;
    let chunked = |path: &str, ctype: &str, chunk: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {ctype}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
    };
    let r = raw(
        g.addr,
        chunked("/ungated", "text/plain", "hello world").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&g.upstream.last().unwrap().body[..], b"hello world");

    let blocked = chunked(
        "/api/sign-up",
        "application/json",
        r#"{"email":"mallory@acme.com"}"#,
    );
    assert_eq!(raw(g.addr, blocked.as_bytes()).await.status, 403);
    let allowed = chunked(
        "/api/sign-up",
        "application/json",
        r#"{"email":"al@acme.com"}"#,
    );
    let r = raw(g.addr, allowed.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = g.upstream.last().unwrap();
    assert_eq!(&seen.body[..], br#"{"email":"al@acme.com"}"#);
    assert_eq!(seen.headers["content-length"], "23");
    assert_eq!(g.upstream.count(), 2);
    g.shutdown().await;
}

/// A header the gate reads must reach the upstream as the gate read it. `Connection` may name
/// end-to-end headers, and the proxy strips what it names: with `Connection: Content-Type` the
/// upstream got a JSON body without a content type, which Rack parses as a form
/// (`email=mallory@acme.com` hidden in a JSON string) after the gate read `al@acme.com`.
#[tokio::test]
async fn connection_cannot_strip_headers_the_gate_read() {
    let g = start(STANDARD).await;
    let body = r#"{"a":"&email=mallory@acme.com&","email":"al@acme.com"}"#;
    for listed in [
        "Content-Type",
        "keep-alive, content-type",
        "Content-Encoding",
        "Content-Length",
        "Host",
        "x-forwarded-host",
    ] {
        let req = format!(
            "POST /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: {listed}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "Connection: {listed}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "connection_names_header");
    }
    assert_eq!(g.upstream.count(), 0, "the upstream saw a stripped request");

    // The usual tokens still pass, and the body arrives with its content type.
    for listed in ["keep-alive", "close", "Keep-Alive, TE", "Upgrade"] {
        let req = format!(
            "POST /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: {listed}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(r.status, 200, "Connection: {listed}: {}", r.text());
        let seen = g.upstream.last().unwrap();
        assert_eq!(seen.headers["content-type"], "application/json");
    }
    g.shutdown().await;
}

/// `pass_safe_methods` lets a bodiless GET through unread; it must not carry a method override
/// that turns it into a POST at the handler, nor a `Connection` that strips headers.
#[tokio::test]
async fn safe_method_passthrough_refuses_overrides() {
    let body = STANDARD.replace(
        "    kind: sign_up\n",
        "    kind: sign_up\n    pass_safe_methods: true\n",
    );
    let g = start(&body).await;
    let refused = [
        "GET /api/sign-up HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: POST\r\nConnection: close\r\n\r\n",
        "GET /api/sign-up?_method=POST&email=mallory%40acme.com HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "HEAD /api/sign-up HTTP/1.1\r\nHost: a\r\nX-Method-Override: POST\r\nConnection: close\r\n\r\n",
        "GET /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: close, content-type\r\n\r\n",
    ];
    for req in refused {
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req}: {}", r.text());
    }
    assert_eq!(g.upstream.count(), 0, "an override reached the upstream");
    let r = get(g.addr, "/api/sign-up?next=%2Fhome").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(g.upstream.count(), 1);
    g.shutdown().await;
}

/// A route that gates GET gates HEAD the same way, even with `pass_safe_methods`: frameworks
/// run the GET handler for a HEAD request.
#[tokio::test]
async fn head_is_gated_where_get_is() {
    let body = STANDARD.replace(
        "routes:\n",
        "routes:\n  - name: magic-link\n    methods: [GET]\n    path: /api/magic-link\n    kind: sign_in\n    pass_safe_methods: true\n    identifier: [{ query: email }]\n",
    );
    let g = start(&body).await;
    for method in ["GET", "HEAD"] {
        let req = format!(
            "{method} /api/magic-link?email=mallory%40acme.com HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(r.status, 403, "{method}: {}", r.text());
        let req =
            format!("{method} /api/magic-link HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(
            r.status,
            400,
            "{method} without an identifier: {}",
            r.text()
        );
    }
    assert_eq!(
        g.upstream.count(),
        0,
        "a denied request reached the upstream"
    );
    let r = raw(
        g.addr,
        b"HEAD /api/magic-link?email=alice%40acme.com HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(g.upstream.count(), 1);
    g.shutdown().await;
}

/// Two routes may gate one path for different methods; each request goes to the route that
/// lists its method.
#[tokio::test]
async fn routes_sharing_a_path_each_gate_their_methods() {
    let body = STANDARD.replace(
        "  - name: sign-in\n",
        "  - name: sign-up-link\n    methods: [GET, PUT]\n    path: /API/Sign-Up/\n    kind: sign_up\n    identifier: [{ query: email }]\n  - name: sign-in\n",
    );
    let g = start(&body).await;
    for method in ["GET", "HEAD", "PUT"] {
        let req = format!(
            "{method} /api/sign-up?email=mallory%40acme.com HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let r = raw(g.addr, req.as_bytes()).await;
        assert_eq!(r.status, 403, "{method}: {}", r.text());
    }
    let r = post_json(g.addr, "/api/sign-up", r#"{"email":"mallory@acme.com"}"#).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = raw(
        g.addr,
        b"DELETE /api/sign-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow").as_deref(), Some("POST, GET, PUT, HEAD"));
    assert_eq!(
        g.upstream.count(),
        0,
        "a denied request reached the upstream"
    );
    let r = get(g.addr, "/api/sign-up?email=alice%40acme.com").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(g.addr, "/api/sign-up", r#"{"email":"alice@acme.com"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(g.upstream.count(), 2);
    g.shutdown().await;
}

/// A safe method no route of a path gates passes unread only when every route of the path
/// lets it (`pass_safe_methods`), whatever their order.
#[tokio::test]
async fn a_safe_method_passes_a_shared_path_only_if_every_route_lets_it() {
    let body = STANDARD.replace(
        "    kind: sign_up\n",
        "    kind: sign_up\n    pass_safe_methods: true\n",
    );
    let shared = body.replace(
        "  - name: sign-in\n",
        "  - name: sign-up-put\n    methods: [PUT]\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{ json: /email }]\n  - name: sign-in\n",
    );
    let g = start(&shared).await;
    let r = get(g.addr, "/api/sign-up").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(g.upstream.count(), 0);
    g.shutdown().await;
    // The path's only route lets it: it passes.
    let g = start(&body).await;
    let r = get(g.addr, "/api/sign-up").await;
    assert_eq!(r.status, 200, "{}", r.text());
    g.shutdown().await;
}

/// The invalid value is echoed clipped and escaped: no 64 KiB reflections, no raw newlines
/// in the error body or the log line.
#[tokio::test]
async fn invalid_identifiers_are_echoed_clipped_and_escaped() {
    let g = start(STANDARD).await;
    let long = format!(r#"{{"email":"{}@acme..com"}}"#, "a".repeat(3000));
    let r = post_json(g.addr, "/api/sign-up", &long).await;
    assert_eq!(r.status, 400);
    let msg = r.json()["errors"][0]["long_message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.len() < 400, "long_message is {} bytes", msg.len());
    let r = post_json(g.addr, "/api/sign-up", r#"{"email":"no\nsuch\u0000thing"}"#).await;
    assert_eq!(r.status, 400);
    let msg = r.json()["errors"][0]["long_message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!msg.contains('\n') && !msg.contains('\0'), "{msg:?}");
    assert_eq!(g.upstream.count(), 0);
    g.shutdown().await;
}

/// Gated bodies are buffered under one budget (64 MiB) shared by all connections: slow
/// clients that announce big bodies cannot make the gate hold unbounded memory. The next one
/// is answered 503 at once, and the budget comes back when a slow client goes away.
#[tokio::test]
async fn gated_buffering_has_a_global_budget() {
    // The largest body limit (32 MiB): two slow uploads hold the whole 64 MiB budget.
    let body = STANDARD.replace("  body: 4KiB", "  body: 32MiB");
    let g = start(&body).await;
    let head = "POST /api/sign-up HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 33554432\r\n\r\n{\"email\":";
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = raw(g.addr, head.as_bytes()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.json()["errors"][0]["code"], "busy");

    drop(slow);
    assert!(
        eventually(Duration::from_secs(5), || async {
            post_json(g.addr, "/api/sign-up", r#"{"email":"al@acme.com"}"#)
                .await
                .status
                == 200
        })
        .await,
        "the budget was not returned"
    );
    assert_eq!(g.upstream.count(), 1);
    g.shutdown().await;
}

/// `workers: 3`, then `workers: 1`: one socket per worker on the listener's address
/// (SO_REUSEPORT), the kernel spreading connections across them. Many connections at once all
/// get answered — a socket no worker served would leave about a third of them hanging — on
/// both ungated and gated routes; a second gate cannot take the port (the exclusive bind
/// first), and after the shutdown every socket is closed.
#[tokio::test]
async fn every_worker_serves_its_socket_and_the_port_stays_exclusive() {
    for workers in [3, 1] {
        workers_serve_and_hold_the_port(workers).await;
    }
}

async fn workers_serve_and_hold_the_port(workers: usize) {
    let g = start(&format!("workers: {workers}\n{STANDARD}")).await;
    let addr = g.addr;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..48 {
        clients.spawn(async move {
            let reply = if i % 2 == 0 {
                get(addr, &format!("/static/{i}.js")).await
            } else {
                post_json(addr, "/api/sign-up", r#"{"email":"ann@acme.com"}"#).await
            };
            (i, reply.status)
        });
    }
    let answered = tokio::time::timeout(Duration::from_secs(20), clients.join_all())
        .await
        .expect("every connection is answered");
    assert_eq!(answered.len(), 48);
    assert!(
        answered.iter().all(|(_, s)| *s == 200),
        "{workers}: {answered:?}"
    );
    assert_eq!(g.upstream.count(), 48);

    // Another gate on the same address: refused, never a silent share of the port.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(
        &cfg,
        &format!(
            "listen:\n  - addr: {addr}\nupstream: http://{}\nadmin:\n  listen: 127.0.0.1:0\n",
            g.upstream.addr
        ),
    );
    match idgate::app::Gate::start(&cfg).await {
        Err(idgate::app::AppError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(e) => panic!("expected an address-in-use error, got {e}"),
        Ok(_) => panic!("a second gate started on a port the first one holds"),
    }
    let r = get(addr, "/still/served").await;
    assert_eq!(r.status, 200);

    g.shutdown().await;
    // Every worker's socket is closed: the port can be bound exclusively again.
    std::net::TcpListener::bind(addr).expect("the port is free after shutdown");
}

/// An upstream may answer before it has read the request body. A connection whose request
/// body is still on its way (here, stalled by its client) is not lent to the next client,
/// who would wait for that body until `upstream_response` ran out.
#[tokio::test]
async fn a_connection_still_sending_a_stalled_body_is_not_lent_to_the_next_client() {
    // Answers every request head at once with a 404, without reading bodies.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config_text(up, &format!("workers: 1\n{STANDARD}")));
    let gate = idgate::app::Gate::start(&cfg).await.expect("gate starts");
    let addr = gate.proxy_addrs()[0];

    // A client starts a 100 kB upload on an ungated path, sends 3 bytes and stalls; the
    // upstream has answered already.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stalled.read(&mut byte).await.unwrap(),
            1,
            "answer cut short"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // The next client is answered by the upstream, not left waiting (504) on that connection.
    for _ in 0..2 {
        let r = get(addr, "/public").await;
        assert_eq!(r.status, 404, "{}", r.text());
    }
    drop(stalled);
    gate.shutdown().await;
}
