//! The Magic access-control API against the real `idgate` binary, driven by Magic's documented
//! curl calls (host and key swapped), with curl sign-ups through the proxy after every call.

mod common;

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use common::binary::Binary;
const KEY: &str = "sk_live_06FC010DA25ED4F2";
/// The client id of Magic's documentation examples.
const CLIENT: &str = "etjubJsY5Cvn6ukDzJYpd3MEAtgw45oetxxoX1PxvP4=";

/// A running binary (killed on drop) and its addresses.
struct Gate {
    _bin: Binary,
    proxy: String,
    admin: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn start(extra: &str) -> Gate {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(idgate::app::demo::start_app()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\n  secret_keys: [\"{KEY}\"]\n  magic_client_id: \"{CLIENT}\"\nstore:\n  sqlite: {}\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n{extra}",
            dir.path().join("idgate.db").display()
        ),
    )
    .unwrap();
    let bin = Binary::start(&cfg);
    let (proxy, admin) = (bin.proxy.to_string(), bin.admin.to_string());
    Gate {
        _bin: bin,
        proxy,
        admin,
        _dir: dir,
        _rt: rt,
    }
}

/// curl with `args`; (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn sign_up(g: &Gate, email: &str) -> u16 {
    curl(&[
        &format!("http://{}/api/sign-up", g.proxy),
        "-H",
        "content-type: application/json",
        "-d",
        &json!({ "email": email }).to_string(),
    ])
    .0
}

/// Magic's documented call shape: `curl --location --request M URL --header … --data-raw …`.
fn magic(g: &Gate, method: &str, key: &str, data: &str) -> (u16, Value) {
    let url = format!("http://{}/v1/api/magic_client/access_control", g.admin);
    let key = format!("X-Magic-Secret-Key: {key}");
    let mut args = vec![
        "--location",
        "--request",
        method,
        url.as_str(),
        "--header",
        key.as_str(),
        "--header",
        "Content-Type: application/json",
    ];
    if !data.is_empty() {
        args.extend(["--data-raw", data]);
    }
    let (status, body) = curl(&args);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, v)
}

fn lists(g: &Gate) -> Value {
    let (status, v) = magic(
        g,
        "GET",
        KEY,
        &json!({ "target_client_id": CLIENT }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    v["data"]["emails"].clone()
}

#[test]
fn magics_documented_calls_work_as_written_and_the_proxy_follows_each() {
    let g = start("");
    assert_eq!(sign_up(&g, "anyone@example.com"), 201);

    let (status, v) = magic(
        &g,
        "PUT",
        KEY,
        &format!(
            r#"{{
    "target_client_id": "{CLIENT}",
    "emails": {{
        "allow_list": ["alice@acme.com", "*@partner.io"],
        "block_list": ["mallory@partner.io"]
    }}
}}"#
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["status"], &v["error_code"], &v["message"]),
        (&json!("ok"), &json!(""), &json!(""))
    );
    assert_eq!(
        lists(&g),
        json!({ "allow_list": ["alice@acme.com", "*@partner.io"], "block_list": ["mallory@partner.io"] })
    );
    assert_eq!(sign_up(&g, "alice@acme.com"), 201);
    assert_eq!(sign_up(&g, "bob@partner.io"), 201);
    assert_eq!(sign_up(&g, "mallory@partner.io"), 403, "block wins");
    assert_eq!(
        sign_up(&g, "anyone@example.com"),
        403,
        "allow list now enforced"
    );

    // A pasted CRM export works as the list value.
    let (status, v) = magic(
        &g,
        "PATCH",
        KEY,
        &json!({ "target_client_id": CLIENT, "emails": { "allow_list": "email\nbob@beta.io\n\"carol@beta.io\"\n" } })
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["allow_list"]["added"],
        json!(["bob@beta.io", "carol@beta.io"])
    );
    assert_eq!(sign_up(&g, "carol@beta.io"), 201);

    let (status, v) = magic(
        &g,
        "DELETE",
        KEY,
        &json!({ "target_client_id": CLIENT, "emails": { "allow_list": ["*@partner.io"], "block_list": ["mallory@partner.io"] } })
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        lists(&g),
        json!({ "allow_list": ["alice@acme.com", "bob@beta.io", "carol@beta.io"], "block_list": [] })
    );
    assert_eq!(sign_up(&g, "bob@partner.io"), 403);
    assert_eq!(sign_up(&g, "alice@acme.com"), 201);

    // GET with the client id in the query, no body.
    let (status, body) = curl(&[
        "--location",
        "--request",
        "GET",
        &format!(
            "http://{}/v1/api/magic_client/access_control?target_client_id={}",
            g.admin,
            CLIENT.replace('=', "%3D")
        ),
        "--header",
        &format!("X-Magic-Secret-Key: {KEY}"),
    ]);
    assert_eq!(status, 200, "{body}");

    // Emptying the allow list lets everyone in again (restrictions.allowlist: auto).
    let (status, _) = magic(
        &g,
        "PUT",
        KEY,
        &json!({ "target_client_id": CLIENT, "emails": { "allow_list": [] } }).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(sign_up(&g, "anyone@example.com"), 201);
}

#[test]
fn refused_calls_change_nothing() {
    let g = start("lists:\n  max_entries: 3\n");
    let put = |emails: Value| json!({ "target_client_id": CLIENT, "emails": emails }).to_string();
    let (status, v) = magic(
        &g,
        "PUT",
        KEY,
        &put(json!({ "block_list": ["a@x.com", "b@x.com"] })),
    );
    assert_eq!(status, 200, "{v}");
    let before = lists(&g);

    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "PUT",
            "sk_live_wrong",
            put(json!({ "block_list": [] })),
            401,
            "INVALID_SECRET_KEY",
        ),
        (
            "PUT",
            KEY,
            json!({ "target_client_id": "someone-else", "emails": { "block_list": [] } })
                .to_string(),
            403,
            "INVALID_TARGET_CLIENT_ID",
        ),
        (
            "PATCH",
            KEY,
            put(json!({ "block_list": ["c@x.com", "not an email", "d@@x.com"] })),
            422,
            "MALFORMED_ENTRIES",
        ),
        (
            "PATCH",
            KEY,
            put(json!({ "block_list": ["c@x.com", "d@x.com"] })),
            422,
            "LIST_LIMIT_EXCEEDED",
        ),
        (
            "PUT",
            KEY,
            put(json!({ "block_list": ["1@x.com", "2@x.com", "3@x.com", "4@x.com"] })),
            422,
            "LIST_LIMIT_EXCEEDED",
        ),
    ];
    for (method, key, data, status, code) in &cases {
        let (got, v) = magic(&g, method, key, data);
        assert_eq!(
            (got, v["error_code"].as_str().unwrap()),
            (*status, *code),
            "{v}"
        );
        assert_eq!(v["status"], "failed");
        assert!(!v["message"].as_str().unwrap().is_empty());
        assert_eq!(lists(&g), before, "{method} {code} changed the lists");
        assert_eq!(sign_up(&g, "a@x.com"), 403);
        assert_eq!(sign_up(&g, "c@x.com"), 201);
    }
    let (_, v) = magic(
        &g,
        "PATCH",
        KEY,
        &put(json!({ "block_list": "c@x.com\nnot an email" })),
    );
    assert!(v["message"].as_str().unwrap().contains("line 2"), "{v}");
}

#[test]
fn a_put_of_20000_entries_is_enforced_on_the_next_request() {
    let g = start("");
    let allow: Vec<String> = (0..20_000)
        .map(|i| format!("user{i}@big.example"))
        .collect();
    let data = json!({ "target_client_id": CLIENT, "emails": { "allow_list": allow } }).to_string();
    let file = g._dir.path().join("put.json");
    std::fs::write(&file, &data).unwrap();
    let url = format!("http://{}/v1/api/magic_client/access_control", g.admin);
    let started = Instant::now();
    let (status, body) = curl(&[
        "--request",
        "PUT",
        &url,
        "--header",
        &format!("X-Magic-Secret-Key: {KEY}"),
        "--header",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
    ]);
    let took = started.elapsed();
    assert_eq!(status, 200, "{}", &body[..body.len().min(500)]);
    println!("PUT of 20,000 allow-list entries answered in {took:?} (debug build, curl included)");
    // The very next requests: no polling.
    assert_eq!(sign_up(&g, "user19999@big.example"), 201);
    assert_eq!(sign_up(&g, "user0@big.example"), 201);
    assert_eq!(sign_up(&g, "stranger@big.example"), 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["allow_list"]["total"], 20_000);
    // One more is over the default limit (20,000, as Magic) and changes nothing.
    let (status, v) = magic(
        &g,
        "PATCH",
        KEY,
        &json!({ "target_client_id": CLIENT, "emails": { "allow_list": ["one@more.example"] } })
            .to_string(),
    );
    assert_eq!(
        (status, v["error_code"].as_str().unwrap()),
        (422, "LIST_LIMIT_EXCEEDED")
    );
    assert_eq!(sign_up(&g, "one@more.example"), 403);
}
