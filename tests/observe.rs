//! What operators see, against a running gate on loopback: `/metrics` scraped over HTTP and
//! parsed (exact deltas for a scripted sequence), shadow mode (forwarded, `would_deny`), the
//! audit log (no clear identifier, a stable HMAC), and the status and check APIs (a broken
//! config edit reported with its line while the gate keeps serving).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use idgate::app::Gate;
use sha2::Sha256;

const KEY: &str = "sk_test_observe";
const AUDIT_KEY: &str = "audit-key-0123456789abcdef";

const BODY: &str = r#"
lists:
  allow: ["*@acme.com", "bob@partner.io"]
  block: ["mallory@acme.com", "*@blocked.org"]
routes:
  - name: sign-up
    path: /api/sign-up
    kind: sign_up
    identifier: [{ json: /email }]
  - name: shadow-up
    path: /api/shadow
    kind: sign_up
    mode: shadow
    identifier: [{ json: /email }]
timeouts:
  upstream_response: 1s
reload:
  debounce: 60s
  interval: 0s
"#;

/// A gate with admin keys and an audit log (`extra` is appended to the config).
async fn start_gate(extra: &str) -> TestGate {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let text = format!(
        "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{}\nadmin:\n  listen: 127.0.0.1:0\n  secret_keys: [\"{KEY}\"]\n{BODY}{extra}",
        upstream.addr
    );
    write(&cfg, &text);
    let gate = Gate::start(&cfg).await.expect("gate starts");
    TestGate {
        addr: gate.proxy_addrs()[0],
        admin: gate.admin_addr(),
        gate: Some(gate),
        dir,
        upstream,
    }
}

async fn admin(addr: SocketAddr, method: &str, path: &str, auth: bool, body: &str) -> Reply {
    let auth = if auth {
        format!("Authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

/// One sample: metric name and its labels, sorted.
type Key = (String, BTreeMap<String, String>);

/// Parses the text exposition format (OpenMetrics / Prometheus 0.0.4) into samples.
fn parse_exposition(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                // Values here never hold `,` or `"` (route names and &'static str labels).
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted");
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        assert!(
            out.insert((name, labels), value).is_none(),
            "duplicate sample {line}"
        );
    }
    out
}

async fn scrape(addr: SocketAddr) -> BTreeMap<Key, f64> {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{}",
        r.head
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse_exposition(&text)
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn delta(before: &BTreeMap<Key, f64>, after: &BTreeMap<Key, f64>, k: &Key) -> f64 {
    after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
}

fn decision(route: &str, outcome: &str, reason: &str, mode: &str) -> Key {
    key(
        "idgate_decisions_total",
        &[
            ("route", route),
            ("outcome", outcome),
            ("reason", reason),
            ("mode", mode),
        ],
    )
}

async fn sign_up(addr: SocketAddr, path: &str, email: &str) -> u16 {
    post_json(addr, path, &format!(r#"{{"email":"{email}"}}"#))
        .await
        .status
}

#[tokio::test]
async fn metrics_change_by_exactly_the_scripted_amounts() {
    let g = start_gate("").await;
    let before = scrape(g.admin).await;

    // Gated: 2 allowed, 2 denied (block, allow list), 1 shadow would-deny (forwarded),
    // 2 refused (bad JSON, no identifier).
    assert_eq!(sign_up(g.addr, "/api/sign-up", "alice@acme.com").await, 200);
    assert_eq!(sign_up(g.addr, "/api/sign-up", "bob@partner.io").await, 200);
    assert_eq!(
        sign_up(g.addr, "/api/sign-up", "mallory@acme.com").await,
        403
    );
    assert_eq!(sign_up(g.addr, "/api/sign-up", "erin@other.io").await, 403);
    assert_eq!(
        sign_up(g.addr, "/api/shadow", "mallory@acme.com").await,
        200
    );
    assert_eq!(
        post_json(g.addr, "/api/sign-up", r#"{"email":"#)
            .await
            .status,
        400
    );
    assert_eq!(post_json(g.addr, "/api/sign-up", "{}").await.status, 400);
    // Ungated: one forwarded, one that times out upstream (504).
    assert_eq!(get(g.addr, "/home").await.status, 200);
    assert_eq!(get(g.addr, "/slow").await.status, 504);
    // Two admin writes: the store times each op the caller waited for.
    let created = admin(
        g.admin,
        "POST",
        "/v1/allowlist_identifiers",
        true,
        r#"{"identifier":"zoe@partner.io"}"#,
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = admin(
        g.admin,
        "DELETE",
        &format!("/v1/allowlist_identifiers/{id}"),
        true,
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    // A reload with nothing changed.
    let reloader = g.gate().reloader().clone();
    tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap();

    let after = scrape(g.admin).await;
    let want: &[(Key, f64)] = &[
        (decision("sign-up", "allow", "none", "enforce"), 2.0),
        (decision("sign-up", "deny", "blocklist", "enforce"), 1.0),
        (decision("sign-up", "deny", "allowlist", "enforce"), 1.0),
        (
            decision("shadow-up", "would_deny", "blocklist", "shadow"),
            1.0,
        ),
        (decision("shadow-up", "deny", "blocklist", "shadow"), 0.0),
        (
            key(
                "idgate_refusals_total",
                &[("cause", "bad_json"), ("status", "400")],
            ),
            1.0,
        ),
        (
            key(
                "idgate_refusals_total",
                &[("cause", "form_param_missing"), ("status", "400")],
            ),
            1.0,
        ),
        (
            key(
                "idgate_refusals_total",
                &[("cause", "upstream_unavailable"), ("status", "504")],
            ),
            1.0,
        ),
        (
            key(
                "idgate_upstream_errors_total",
                &[("kind", "response_timeout")],
            ),
            1.0,
        ),
        (
            key(
                "idgate_request_duration_seconds_count",
                &[("traffic", "gated")],
            ),
            7.0,
        ),
        (
            key(
                "idgate_request_duration_seconds_count",
                &[("traffic", "ungated")],
            ),
            2.0,
        ),
        (
            key("idgate_reloads_total", &[("outcome", "unchanged")]),
            1.0,
        ),
        (key("idgate_reloads_total", &[("outcome", "rejected")]), 0.0),
        (
            key(
                "idgate_store_op_duration_seconds_count",
                &[("op", "insert")],
            ),
            1.0,
        ),
        (
            key(
                "idgate_store_op_duration_seconds_count",
                &[("op", "delete")],
            ),
            1.0,
        ),
    ];
    for (k, n) in want {
        assert_eq!(delta(&before, &after, k), *n, "{k:?}");
    }
    // Nothing else moved: every decision and refusal series is accounted for above.
    for (k, v) in &after {
        if k.0 == "idgate_decisions_total" || k.0 == "idgate_refusals_total" {
            let expected = want.iter().find(|(w, _)| w == k).map_or(0.0, |(_, n)| *n);
            assert_eq!(delta(&before, &after, k), expected, "{k:?} = {v}");
        }
    }
    // List sizes by list and source; the generation.
    let entries = |list: &str, source: &str| {
        after[&key("idgate_list_entries", &[("list", list), ("source", source)])]
    };
    assert_eq!(entries("allow", "config"), 2.0);
    assert_eq!(entries("block", "config"), 2.0);
    assert_eq!(entries("block", "files"), 0.0);
    assert_eq!(entries("block", "store"), 0.0);
    assert_eq!(after[&key("idgate_snapshot_generation", &[])], 1.0);
    g.shutdown().await;
}

#[tokio::test]
async fn shadow_mode_forwards_what_enforce_denies_and_says_would_deny() {
    let g = start_gate("").await;
    let body = r#"{"email":"mallory@acme.com"}"#;
    let enforced = post_json(g.addr, "/api/sign-up", body).await;
    assert_eq!(enforced.status, 403);
    assert_eq!(g.upstream.count(), 0, "enforce mode forwarded a denial");

    let shadowed = post_json(g.addr, "/api/shadow", body).await;
    assert_eq!(shadowed.status, 200, "{}", shadowed.text());
    let seen = g.upstream.last().expect("shadow mode forwards");
    assert_eq!(seen.uri, "/api/shadow");
    assert_eq!(&seen.body[..], body.as_bytes(), "forwarded byte for byte");

    // Refusals are answered in shadow mode too: nothing unreadable is forwarded.
    assert_eq!(post_json(g.addr, "/api/shadow", "{}").await.status, 400);
    assert_eq!(g.upstream.count(), 1);

    // The check API says which mode applies and what it would do.
    let r = admin(
        g.admin,
        "POST",
        "/v1/idgate/check",
        true,
        r#"{"identifier":"Mallory@ACME.com"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["identifier"], "mallory@acme.com");
    assert_eq!(v["allowed"], false);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["route"], "sign-up");
    assert_eq!(results[0]["mode"], "enforce");
    assert_eq!(results[0]["outcome"], "deny");
    assert_eq!(results[0]["reason"], "blocklist");
    assert_eq!(results[0]["entry"], "mallory@acme.com");
    assert_eq!(results[0]["source"], "config (lists.block)");
    assert_eq!(results[1]["route"], "shadow-up");
    assert_eq!(results[1]["mode"], "shadow");
    assert_eq!(results[1]["outcome"], "would_deny");

    // One route, an allowed identifier.
    let r = admin(
        g.admin,
        "POST",
        "/v1/idgate/check",
        true,
        r#"{"identifier":"alice@acme.com","route":"sign-up"}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(v["results"][0]["outcome"], "allow");
    assert_eq!(v["results"][0]["entry"], "*@acme.com");

    // Bad input: a Clerk error; no key: 401.
    let r = admin(
        g.admin,
        "POST",
        "/v1/idgate/check",
        true,
        r#"{"identifier":"a@"}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = admin(
        g.admin,
        "POST",
        "/v1/idgate/check",
        true,
        r#"{"identifier":"a@acme.com","route":"nope"}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = admin(
        g.admin,
        "POST",
        "/v1/idgate/check",
        false,
        r#"{"identifier":"a@acme.com"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    g.shutdown().await;
}

fn hmac_hex(key: &str, id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("hmac-sha256:{hex}")
}

async fn audit_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let ok = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= n)
    })
    .await;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(ok, "wanted {n} audit lines, got:\n{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn audit_log_holds_no_clear_identifier_and_the_hmac_is_stable() {
    let g = start_gate(&format!(
        "audit:\n  output: audit.log\n  hmac_key: \"{AUDIT_KEY}\"\n"
    ))
    .await;
    let log = g.path("audit.log");
    assert_eq!(sign_up(g.addr, "/api/sign-up", "alice@acme.com").await, 200);
    assert_eq!(sign_up(g.addr, "/api/sign-up", "Alice@Acme.com").await, 200);
    assert_eq!(
        sign_up(g.addr, "/api/sign-up", "mallory@acme.com").await,
        403
    );
    assert_eq!(
        sign_up(g.addr, "/api/shadow", "mallory@acme.com").await,
        200
    );
    // Refused requests are not decisions: no line.
    assert_eq!(post_json(g.addr, "/api/sign-up", "{}").await.status, 400);
    let lines = audit_lines(&log, 4).await;
    assert_eq!(lines.len(), 4);

    let text = std::fs::read_to_string(&log).unwrap();
    for clear in ["alice", "Alice", "mallory", "Bearer", KEY, AUDIT_KEY] {
        assert!(!text.contains(clear), "{clear} in the audit log:\n{text}");
    }
    let alice = hmac_hex(AUDIT_KEY, "alice@acme.com");
    let mallory = hmac_hex(AUDIT_KEY, "mallory@acme.com");
    // Same identifier (any spelling) → same HMAC, and it is HMAC-SHA256 with the key.
    assert_eq!(lines[0]["identifier"], alice.as_str());
    assert_eq!(lines[1]["identifier"], alice.as_str());
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(
        lines[0]["entry"], "*@acme.com",
        "domain patterns stay readable"
    );
    assert_eq!(lines[0]["source"], "config (lists.allow)");
    assert_eq!(lines[0]["route"], "sign-up");
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(lines[0]["kind"], "email");
    assert_eq!(lines[0]["mode"], "enforce");
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));

    assert_eq!(lines[2]["identifier"], mallory.as_str());
    assert_eq!(lines[2]["outcome"], "deny");
    assert_eq!(lines[2]["reason"], "blocklist");
    // An entry naming one address is hashed like the identifier (it is the same person).
    assert_eq!(lines[2]["entry"], mallory.as_str());
    assert_eq!(lines[3]["outcome"], "would_deny");
    assert_eq!(lines[3]["mode"], "shadow");
    assert_eq!(lines[3]["identifier"], mallory.as_str());
    g.shutdown().await;
}

#[tokio::test]
async fn audit_log_in_clear_only_when_asked() {
    let g = start_gate("audit:\n  output: audit.log\n  identifiers: clear\n").await;
    assert_eq!(sign_up(g.addr, "/api/sign-up", "Alice@Acme.com").await, 200);
    let lines = audit_lines(&g.path("audit.log"), 1).await;
    assert_eq!(lines[0]["identifier"], "alice@acme.com");
    g.shutdown().await;

    // Without a key and without `identifiers: clear`, the config is refused.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    write(
        &cfg,
        &format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://127.0.0.1:1\n{BODY}audit:\n  output: audit.log\n"
        ),
    );
    let err = idgate::config::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("audit.hmac_key"), "{err}");
}

#[tokio::test]
async fn status_reports_a_broken_edit_with_its_line_while_the_gate_keeps_serving() {
    let g = start_gate("").await;
    let r = admin(g.admin, "GET", "/v1/idgate/status", true, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["last_reload"]["outcome"], "applied");
    assert_eq!(v["last_reload"]["error"], serde_json::Value::Null);
    assert_eq!(v["lists"]["allow"]["config"], 2);
    assert_eq!(v["lists"]["block"]["total"], 2);
    assert_eq!(v["store"]["healthy"], true);
    assert_eq!(v["routes"][1]["mode"], "shadow");
    assert!(v["config"].as_str().unwrap().ends_with("config.yaml"));
    assert_eq!(
        admin(g.admin, "GET", "/v1/idgate/status", false, "")
            .await
            .status,
        401
    );

    // A broken edit: an invalid deny status on a known line.
    let good = std::fs::read_to_string(g.config_path()).unwrap();
    let line = good.lines().count() + 2;
    std::fs::write(g.config_path(), format!("{good}deny:\n  status: 99\n")).unwrap();
    let reloader = g.gate().reloader().clone();
    tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap();

    let v = admin(g.admin, "GET", "/v1/idgate/status", true, "")
        .await
        .json();
    assert_eq!(v["last_reload"]["outcome"], "rejected");
    let err = v["last_reload"]["error"].as_str().unwrap();
    assert!(
        err.contains(&format!(":{line}:")) && err.contains("deny.status"),
        "line {line} not in: {err}"
    );
    assert_eq!(v["generation"], 1, "the last good snapshot keeps serving");
    // The gate keeps serving with the last good config.
    assert_eq!(sign_up(g.addr, "/api/sign-up", "alice@acme.com").await, 200);
    assert_eq!(
        sign_up(g.addr, "/api/sign-up", "mallory@acme.com").await,
        403
    );
    let m = scrape(g.admin).await;
    assert_eq!(
        m[&key("idgate_reloads_total", &[("outcome", "rejected")])],
        1.0
    );

    // Fixed: applied, error cleared.
    std::fs::write(g.config_path(), &good).unwrap();
    std::fs::write(
        g.config_path(),
        good.replace(
            "\"bob@partner.io\"",
            "\"bob@partner.io\", \"erin@other.io\"",
        ),
    )
    .unwrap();
    let reloader = g.gate().reloader().clone();
    tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap();
    let v = admin(g.admin, "GET", "/v1/idgate/status", true, "")
        .await
        .json();
    assert_eq!(v["last_reload"]["outcome"], "applied");
    assert_eq!(v["generation"], 2);
    assert_eq!(sign_up(g.addr, "/api/sign-up", "erin@other.io").await, 200);
    g.shutdown().await;
}

/// A POST to the proxy with extra header lines (each ending in `\r\n`).
async fn post_with(addr: SocketAddr, target: &str, headers: &str, body: &str) -> Reply {
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: app\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

fn is_generated_id(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn every_request_gets_an_id_upstream_on_the_answer_and_in_the_audit_log() {
    let g = start_gate("audit:\n  output: audit.log\n  identifiers: clear\n").await;
    // Forwarded: the upstream sees the id the client gets back; a client's id is replaced.
    let ok = post_with(
        g.addr,
        "/api/sign-up",
        "X-Request-Id: forged\r\n",
        r#"{"email":"alice@acme.com"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let id = ok.header("x-request-id").expect("id on a forwarded answer");
    assert!(is_generated_id(&id), "{id}");
    let seen = g.upstream.last().unwrap();
    let upstream_ids: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
    assert_eq!(upstream_ids.len(), 1, "{:?}", seen.headers);
    assert_eq!(upstream_ids[0], id.as_str());

    // The gate's own answers carry one too: a denial and a refusal.
    let denied = post_json(g.addr, "/api/sign-up", r#"{"email":"mallory@acme.com"}"#).await;
    assert_eq!(denied.status, 403);
    let denied_id = denied.header("x-request-id").expect("id on a denial");
    assert!(is_generated_id(&denied_id));
    assert_ne!(denied_id, id, "ids are per request");
    let refused = post_json(g.addr, "/api/sign-up", "{}").await;
    assert_eq!(refused.status, 400);
    assert!(is_generated_id(
        &refused.header("x-request-id").expect("id on a refusal")
    ));
    // Ungated traffic too, and `Connection` cannot strip the id on the way upstream.
    let plain = raw(
        g.addr,
        b"GET /home HTTP/1.1\r\nHost: app\r\nX-Request-Id: forged\r\nConnection: X-Request-Id, close\r\n\r\n",
    )
    .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let plain_id = plain.header("x-request-id").expect("ungated");
    assert!(is_generated_id(&plain_id));
    assert_eq!(
        g.upstream
            .last()
            .unwrap()
            .headers
            .get("x-request-id")
            .unwrap(),
        plain_id.as_str()
    );

    // The audit log names the same ids.
    let lines = audit_lines(&g.path("audit.log"), 2).await;
    assert_eq!(lines[0]["request_id"], id.as_str());
    assert_eq!(lines[1]["request_id"], denied_id.as_str());
    g.shutdown().await;
}

#[tokio::test]
async fn a_trusted_header_is_reused_and_checked() {
    let g = start_gate(
        "request_id:\n  header: X-Trace\n  trust: true\naudit:\n  output: audit.log\n  identifiers: clear\n",
    )
    .await;
    let r = post_with(
        g.addr,
        "/api/sign-up",
        "X-Trace: lb-42.abc\r\n",
        r#"{"email":"alice@acme.com"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-trace").as_deref(), Some("lb-42.abc"));
    assert_eq!(
        g.upstream.last().unwrap().headers.get("x-trace").unwrap(),
        "lb-42.abc"
    );
    // A value that could forge a log line is replaced, even from a trusted proxy.
    let r = post_with(
        g.addr,
        "/api/sign-up",
        "X-Trace: a\"b c\r\n",
        r#"{"email":"alice@acme.com"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let id = r.header("x-trace").unwrap();
    assert!(is_generated_id(&id), "{id}");
    assert_eq!(
        g.upstream.last().unwrap().headers.get("x-trace").unwrap(),
        id.as_str()
    );
    let lines = audit_lines(&g.path("audit.log"), 2).await;
    assert_eq!(lines[0]["request_id"], "lb-42.abc");
    assert_eq!(lines[1]["request_id"], id.as_str());
    g.shutdown().await;
}

/// A log sink. The test installs it as the process's global subscriber (a thread-local one
/// misses events whose callsite interest another test's thread cached first); only this test
/// does, and its assertions hold whatever other tests log.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_carry_the_request_id_and_no_credentials_or_token_parameters() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("idgate=trace"))
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other test sets one");

    let g = start_gate("").await;
    let secrets = [
        "AUTHSECRET1",
        "COOKIESECRET2",
        "PROXYSECRET3",
        "ATSECRET4",
        "IDTSECRET5",
        "CODESECRET6",
        "TOKSECRET7",
        "CREDSECRET8",
    ];
    let headers = "Authorization: Bearer AUTHSECRET1\r\nCookie: session=COOKIESECRET2\r\nProxy-Authorization: Basic PROXYSECRET3\r\n";
    let query = "?access_token=ATSECRET4&id_token=IDTSECRET5&code=CODESECRET6&token=TOKSECRET7&credential=CREDSECRET8";
    // Refused (logged with its path), denied, allowed, and ungated.
    let refused = post_with(g.addr, &format!("/api/sign-up{query}"), headers, "{}").await;
    assert_eq!(refused.status, 400);
    let refused_id = refused.header("x-request-id").unwrap();
    let denied = post_with(
        g.addr,
        &format!("/api/sign-up{query}"),
        headers,
        r#"{"email":"mallory@acme.com"}"#,
    )
    .await;
    assert_eq!(denied.status, 403);
    let denied_id = denied.header("x-request-id").unwrap();
    let ok = post_with(
        g.addr,
        &format!("/api/sign-up{query}"),
        headers,
        r#"{"email":"alice@acme.com"}"#,
    )
    .await;
    assert_eq!(ok.status, 200);
    // The upstream still gets the query untouched: redaction is for logs only.
    assert!(g.upstream.last().unwrap().uri.ends_with(query));
    let plain = raw(
        g.addr,
        format!("GET /home{query} HTTP/1.1\r\nHost: app\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(plain.status, 200);
    g.shutdown().await;

    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    for s in secrets {
        assert!(!text.contains(s), "{s} in the logs:\n{text}");
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let with_id = |id: &str, msg: &str| {
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == id && l["fields"]["message"].as_str() == Some(msg))
    };
    assert!(with_id(&refused_id, "request refused"), "{text}");
    assert!(with_id(&denied_id, "denied"), "{text}");
}
