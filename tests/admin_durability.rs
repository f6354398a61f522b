//! The admin API's durability with the real binary: what the API acknowledged survives a
//! restart and a `kill -9` mid-stream, and nothing unacknowledged shows up half-written.

mod common;

use std::io::{Read, Write};

use common::binary::Binary;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "sk_test_durability";

fn config(dir: &Path, upstream: SocketAddr) {
    let text = format!(
        "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\n  secret_keys: [\"{KEY}\"]\nrestrictions:\n  allowlist: false\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n"
    );
    std::fs::write(dir.join("config.yaml"), text).unwrap();
}

fn start(dir: &Path) -> Binary {
    Binary::start(&dir.join("config.yaml"))
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Every identifier in the blocklist, through the API's pagination.
fn blocklist(admin: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/v1/blocklist_identifiers?limit=500&offset={offset}"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        let page = v["data"].as_array().unwrap();
        for e in page {
            assert_eq!(e["object"], "blocklist_identifier");
            assert!(e["id"].as_str().unwrap().starts_with("blid_"));
            out.push(e["identifier"].as_str().unwrap().to_owned());
        }
        offset += page.len();
        if page.is_empty() || offset >= v["total_count"].as_u64().unwrap() as usize {
            return out;
        }
    }
}

fn sign_up(proxy: SocketAddr, email: &str) -> u16 {
    let mut s = TcpStream::connect(proxy).unwrap();
    let body = format!(r#"{{"email":"{email}"}}"#);
    let req = format!(
        "POST /api/sign-up HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn upstream() -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(idgate::app::demo::start_app()).unwrap();
    (rt, addr)
}

#[test]
fn writes_and_restrictions_survive_a_restart() {
    let (_rt, up) = upstream();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), up);
    let g = start(dir.path());
    assert_eq!(sign_up(g.proxy, "eve@evil.test"), 201);
    let (s, b) = http(
        g.admin,
        "POST",
        "/v1/blocklist_identifiers",
        Some(r#"{"identifier":"*@evil.test"}"#),
    );
    assert_eq!(s, 200, "{b}");
    // Read-your-writes: enforced as soon as the API answered.
    assert_eq!(sign_up(g.proxy, "eve@evil.test"), 403);
    let (s, b) = http(
        g.admin,
        "POST",
        "/v1/allowlist_identifiers",
        Some(r#"{"identifier":"ann@good.test"}"#),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = http(
        g.admin,
        "PATCH",
        "/v1/instance/restrictions",
        Some(r#"{"allowlist":true}"#),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["allowlist"], true);
    assert_eq!(
        sign_up(g.proxy, "bob@other.test"),
        403,
        "allowlist now enforced"
    );
    assert_eq!(sign_up(g.proxy, "ann@good.test"), 201);
    drop(g);

    let g = start(dir.path());
    assert_eq!(blocklist(g.admin), vec!["*@evil.test".to_owned()]);
    assert_eq!(sign_up(g.proxy, "eve@evil.test"), 403);
    assert_eq!(
        sign_up(g.proxy, "bob@other.test"),
        403,
        "restriction survived"
    );
    assert_eq!(sign_up(g.proxy, "ann@good.test"), 201);
}

#[test]
fn kill_dash_nine_mid_stream_loses_no_acknowledged_write() {
    let (_rt, up) = upstream();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), up);
    let g = start(dir.path());

    // Four writers stream creates; each records what was acknowledged and what was in flight.
    let admin = g.admin;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut in_flight = None;
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let ident = format!("w{w}n{i}@crash.test");
                    in_flight = Some(ident.clone());
                    let body = format!(r#"{{"identifier":"{ident}"}}"#);
                    let result = std::panic::catch_unwind(|| {
                        http(admin, "POST", "/v1/blocklist_identifiers", Some(&body))
                    });
                    match result {
                        Ok((200, _)) => acked.push(ident),
                        _ => break, // the process died under us
                    }
                }
                (acked, in_flight)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL: no chance to flush anything.
    let mut g = g;
    g.child.kill().unwrap();
    g.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut maybe = Vec::new();
    for w in writers {
        let (a, f) = w.join().unwrap();
        acked.extend(a);
        maybe.extend(f);
    }
    assert!(
        acked.len() > 20,
        "too few writes acknowledged to mean anything: {}",
        acked.len()
    );

    let g = start(dir.path());
    let listed = blocklist(g.admin);
    let listed_set: std::collections::HashSet<_> = listed.iter().cloned().collect();
    for a in &acked {
        assert!(
            listed_set.contains(a),
            "acknowledged {a} lost after kill -9"
        );
    }
    let acked_set: std::collections::HashSet<_> = acked.iter().cloned().collect();
    for l in &listed {
        assert!(
            acked_set.contains(l) || maybe.contains(l),
            "{l} is listed but was never sent"
        );
    }
    // The gate enforces every surviving entry.
    assert_eq!(sign_up(g.proxy, &acked[0]), 403);
    assert_eq!(sign_up(g.proxy, &acked[acked.len() - 1]), 403);
}
