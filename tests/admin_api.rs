//! The Clerk admin API against the real wiring (`idgate::app::Gate`) on loopback: raw HTTP/1.1
//! clients on the admin port and the proxy port, a real upstream, the real SQLite store.

mod common;

use std::net::SocketAddr;

use common::*;
use idgate::app::Gate;
use serde_json::Value;

const KEY: &str = "sk_test_admin_api";

/// `STANDARD` plus the admin key (the indented line continues `admin:` in `config_text`).
fn body(extra: &str) -> String {
    format!("  secret_keys: [\"{KEY}\"]\n{STANDARD}{extra}")
}

async fn admin(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> Reply {
    admin_with(addr, method, path, json, Some(&format!("Bearer {KEY}"))).await
}

async fn admin_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    auth: Option<&str>,
) -> Reply {
    let body = json.unwrap_or("");
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin.test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

fn sign_up(email: &str) -> String {
    serde_json::json!({ "email": email }).to_string()
}

#[tokio::test]
async fn a_blocklist_200_blocks_the_very_next_sign_up_and_a_delete_reopens() {
    let g = start(&body("")).await;
    let who = "eve@acme.com";
    let r = post_json(g.addr, "/api/sign-up", &sign_up(who)).await;
    assert_eq!(r.status, 200, "allowed before: {}", r.text());
    let before = g.upstream.count();

    let r = admin(
        g.admin,
        "POST",
        "/v1/blocklist_identifiers",
        Some(r#"{"identifier":"Eve@ACME.com"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();

    // No polling: the 200 came after the gate started enforcing it.
    let r = post_json(g.addr, "/api/sign-up", &sign_up(who)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["meta"]["reason"], "blocklist");
    assert_eq!(
        g.upstream.count(),
        before,
        "a denied sign-up reached the upstream"
    );

    let r = admin(
        g.admin,
        "DELETE",
        &format!("/v1/blocklist_identifiers/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], true);
    let r = post_json(g.addr, "/api/sign-up", &sign_up(who)).await;
    assert_eq!(
        r.status,
        200,
        "forwarded right after the delete: {}",
        r.text()
    );
    g.shutdown().await;
}

#[tokio::test]
async fn the_allowlist_switch_applies_before_the_answer() {
    let g = start(&body("")).await;
    let r = admin(
        g.admin,
        "POST",
        "/v1/allowlist_identifiers",
        Some(r#"{"identifier":"*@partner.io","notify":false}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(g.addr, "/api/sign-up", &sign_up("zoe@partner.io")).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = admin(
        g.admin,
        "PATCH",
        "/v1/instance/restrictions",
        Some(r#"{"blocklist":false,"block_email_subaddresses":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["allowlist"], true, "auto with entries is enforced: {j}");
    assert_eq!(j["blocklist"], false);
    let r = post_json(g.addr, "/api/sign-up", &sign_up("zoe+tag@partner.io")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["meta"]["reason"], "subaddress");
    // blocklist off: a config block entry no longer denies (acme.com is allowlisted).
    let r = post_json(g.addr, "/api/sign-up", &sign_up("mallory@acme.com")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    g.shutdown().await;
}

#[tokio::test]
async fn writes_and_restrictions_survive_a_restart() {
    let mut g = start(&body("")).await;
    let r = admin(
        g.admin,
        "POST",
        "/v1/blocklist_identifiers",
        Some(r#"{"identifier":"*@*.spam.example"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let blocked_id = r.json()["id"].as_str().unwrap().to_owned();
    let r = admin(
        g.admin,
        "PATCH",
        "/v1/instance/restrictions",
        Some(r#"{"block_email_subaddresses":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let instance = admin(g.admin, "GET", "/v1/instance", None).await.json()["id"].clone();

    g.gate.take().unwrap().shutdown().await;
    let gate = Gate::start(&g.config_path()).await.expect("restarts");
    g.addr = gate.proxy_addrs()[0];
    g.admin = gate.admin_addr();
    g.gate = Some(gate);

    let r = admin(g.admin, "GET", "/v1/blocklist_identifiers", None).await;
    let j = r.json();
    assert_eq!(j["data"][0]["id"], blocked_id.as_str(), "{j}");
    assert_eq!(j["data"][0]["identifier"], "*@*.spam.example");
    assert_eq!(j["total_count"], 3, "one stored + two config entries: {j}");
    let r = admin(g.admin, "PATCH", "/v1/instance/restrictions", Some("{}")).await;
    assert_eq!(r.json()["block_email_subaddresses"], true);
    assert_eq!(
        admin(g.admin, "GET", "/v1/instance", None).await.json()["id"],
        instance
    );
    let r = post_json(g.addr, "/api/sign-up", &sign_up("x@a.spam.example")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    g.shutdown().await;
}

#[tokio::test]
async fn listings_include_config_entries_that_cannot_be_deleted() {
    let g = start(&body("")).await;
    let r = admin(g.admin, "GET", "/v1/allowlist_identifiers", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let arr = r.json();
    let arr = arr.as_array().expect("a bare array without paginated=true");
    assert_eq!(arr.len(), 4);
    let r = admin(
        g.admin,
        "GET",
        "/v1/allowlist_identifiers?paginated=true&limit=1",
        None,
    )
    .await;
    let j = r.json();
    assert_eq!(j["total_count"], 4);
    assert_eq!(j["data"].as_array().map(Vec::len), Some(1));
    let id = j["data"][0]["id"].as_str().unwrap().to_owned();
    let r = admin(
        g.admin,
        "DELETE",
        &format!("/v1/allowlist_identifiers/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let e: &Value = &r.json()["errors"][0];
    assert_eq!(e["code"], "form_param_value_invalid");
    assert!(
        e["long_message"].as_str().unwrap().contains("config file"),
        "{e}"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn auth_over_the_socket() {
    let g = start(&body("")).await;
    for (auth, status, code) in [
        (None, 401, "clerk_key_invalid"),
        (Some("Bearer wrong"), 401, "clerk_key_invalid"),
        (Some(KEY), 401, "authorization_header_format_invalid"),
    ] {
        let r = admin_with(g.admin, "GET", "/v1/blocklist_identifiers", None, auth).await;
        assert_eq!(r.status, status, "{auth:?}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.json()["errors"][0]["code"], code, "{auth:?}");
    }
    let r = admin_with(g.admin, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    g.shutdown().await;
}

/// `admin.secret_keys` reload like the rest of the config: after a reload that rotates the
/// key, the old one is refused and the new one works, on the Clerk API and the Magic API.
#[tokio::test]
async fn a_reload_rotates_the_admin_keys() {
    const NEW: &str = "sk_test_rotated";
    let g = start(&format!(
        "  secret_keys: [\"{KEY}\"]\n  magic_client_id: c1\n{STANDARD}"
    ))
    .await;
    let list = "/v1/allowlist_identifiers";
    let magic = |key: &str| {
        format!(
            "GET /v1/api/magic_client/access_control?target_client_id=c1 HTTP/1.1\r\nHost: a\r\nX-Magic-Secret-Key: {key}\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(admin(g.admin, "GET", list, None).await.status, 200);
    assert_eq!(raw(g.admin, magic(KEY).as_bytes()).await.status, 200);

    let text = std::fs::read_to_string(g.config_path()).unwrap();
    assert!(text.contains(KEY));
    std::fs::write(g.config_path(), text.replace(KEY, NEW)).unwrap();
    let outcome = g.gate().reloader().reload();
    assert!(
        matches!(outcome, idgate::reload::Outcome::Applied { .. }),
        "{outcome:?}"
    );

    let old = admin(g.admin, "GET", list, None).await;
    assert_eq!(
        old.status,
        401,
        "the removed key still works: {}",
        old.text()
    );
    assert_eq!(old.json()["errors"][0]["code"], "clerk_key_invalid");
    let new = admin_with(g.admin, "GET", list, None, Some(&format!("Bearer {NEW}"))).await;
    assert_eq!(new.status, 200, "{}", new.text());
    assert_eq!(raw(g.admin, magic(KEY).as_bytes()).await.status, 401);
    assert_eq!(raw(g.admin, magic(NEW).as_bytes()).await.status, 200);
    g.shutdown().await;
}

/// The Magic API checks the key before it reads a body: a caller without one gets 401 at
/// once, without sending the 16 MiB it announced (the gate would otherwise wait for it).
#[tokio::test]
async fn magic_refuses_a_keyless_caller_before_reading_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = start(&format!(
        "  secret_keys: [\"{KEY}\"]\n  magic_client_id: c1\n{STANDARD}"
    ))
    .await;
    for key in ["", "X-Magic-Secret-Key: wrong\r\n"] {
        let head = format!(
            "PUT /v1/api/magic_client/access_control HTTP/1.1\r\nHost: a\r\n{key}Content-Type: application/json\r\nContent-Length: 16000000\r\n\r\n"
        );
        let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let answered = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "{key:?}: no answer before the body was sent"
        );
        assert_eq!(parse_reply(&buf).status, 401, "{key:?}");
    }
    g.shutdown().await;
}

/// Scripts that post forms (`curl -d identifier=…`), as Clerk's server accepts: the fields
/// are read as the JSON ones would be, booleans included; a bad value is Clerk's 422 and
/// writes nothing; the bulk endpoint, which takes a JSON array, stays JSON-only.
#[tokio::test]
async fn form_bodies_are_read_like_json_ones() {
    let g = start(&body("")).await;
    let form = |method: &str, path: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: admin.test\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let r = raw(
        g.admin,
        form(
            "POST",
            "/v1/blocklist_identifiers",
            "identifier=Eve%40ACME.com",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identifier"], "eve@acme.com");
    assert_eq!(
        post_json(g.addr, "/api/sign-up", &sign_up("eve@acme.com"))
            .await
            .status,
        403
    );

    let r = raw(
        g.admin,
        form(
            "POST",
            "/v1/allowlist_identifiers",
            "identifier=zed%40beta.io&notify=false",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identifier"], "zed@beta.io");

    let before = admin(g.admin, "GET", "/v1/allowlist_identifiers", None).await;
    let r = raw(
        g.admin,
        form(
            "POST",
            "/v1/allowlist_identifiers",
            "identifier=kim%40beta.io&notify=perhaps",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "form_param_type_invalid");
    let after = admin(g.admin, "GET", "/v1/allowlist_identifiers", None).await;
    assert_eq!(
        before.json(),
        after.json(),
        "a refused form wrote something"
    );

    let r = raw(
        g.admin,
        form("POST", "/v1/invitations/bulk", "email_address=a%40b.io").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "unsupported_content_type");
    g.shutdown().await;
}

/// An id that does not decode to UTF-8 is Clerk's 404 in Clerk's envelope (axum's own answer
/// was plain text, which the SDKs cannot read as an error).
#[tokio::test]
async fn an_undecodable_id_is_a_clerk_404() {
    let g = start(&body("")).await;
    for (method, path, code) in [
        (
            "DELETE",
            "/v1/allowlist_identifiers/%FF",
            "resource_not_found",
        ),
        (
            "DELETE",
            "/v1/blocklist_identifiers/alid_%C3%28",
            "resource_not_found",
        ),
        ("POST", "/v1/invitations/%FF/revoke", "resource_not_found"),
    ] {
        let r = admin(g.admin, method, path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(r.json()["errors"][0]["code"], code, "{path}");
    }
    g.shutdown().await;
}
