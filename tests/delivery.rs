//! Invitation delivery end to end (issue #9): a real SMTP server (aiosmtpd, pinned with hashes
//! in tests/smtp/requirements.txt, installed into `target/smtp-venv`) and a hyper webhook
//! receiver on loopback, invitations created through the admin API, and what the relay or the
//! receiver got checked: recipient, subject, link (its token is the invitation's), headers.
//! The outage test starts the relay only after the invitation is queued; the restart test
//! stops the real binary with SIGTERM mid-queue and starts it again: every email exactly once.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use common::install::{self, no_proxy, root};
use common::{Reply, STANDARD, config_text, eventually, raw, start, write};

const KEY: &str = "sk_test_delivery";
/// Fast retries so the tests do not wait long for a relay that comes back.
const RETRY: &str =
    "  retry:\n    initial_backoff: 100ms\n    max_backoff: 400ms\n  poll_interval: 200ms\n";

// ---------------------------------------------------------------------------------------------
// The SMTP server

/// aiosmtpd's python, installed once per lock-file change.
async fn smtp_python() -> PathBuf {
    let logs = install::target_dir().join("delivery-logs");
    std::fs::create_dir_all(&logs).unwrap();
    tokio::task::spawn_blocking(move || {
        install::venv("smtp-venv", "tests/smtp/requirements.txt", &logs)
    })
    .await
    .unwrap()
}

/// tests/smtp/server.py on 127.0.0.1:`port`, writing each accepted message to `dir`.
struct SmtpServer {
    child: Child,
    dir: PathBuf,
}

impl SmtpServer {
    async fn start(python: &Path, port: u16, dir: &Path, extra: &[&str]) -> SmtpServer {
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/smtp/server.py"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        no_proxy(&mut cmd);
        let mut child = cmd.spawn().expect("start the SMTP server");
        let out = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("the SMTP server did not start within 30 s")
            .unwrap();
        assert!(line.starts_with("READY"), "SMTP server: {line:?}");
        SmtpServer {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Every message received so far (JSON records, in arrival order).
    fn messages(&self) -> Vec<Value> {
        messages(&self.dir)
    }
}

fn messages(dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap())
        .collect()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bound, then closed): nothing listens on it.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A header of a raw RFC 5322 message (unfolded).
fn mail_header(data: &str, name: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The body of a raw message, soft line breaks of quoted-printable undone.
fn mail_body(data: &str) -> String {
    let body = data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if mail_header(data, "Content-Transfer-Encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
    {
        body.replace("=\r\n", "").replace("=3D", "=")
    } else {
        body.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API

async fn admin(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> Reply {
    let body = json.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin.test\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

async fn invite(addr: SocketAddr, email: &str) -> Value {
    let r = admin(
        addr,
        "POST",
        "/v1/invitations",
        Some(&json!({ "email_address": email }).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "create invitation: {}", r.text());
    r.json()
}

async fn deliveries(addr: SocketAddr) -> Value {
    let r = admin(addr, "GET", "/v1/idgate/status", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"].clone()
}

async fn wait_sent(addr: SocketAddr, n: u64) {
    let ok = eventually(Duration::from_secs(30), || async {
        deliveries(addr).await["sent"] == n
    })
    .await;
    assert!(ok, "never {n} sent: {}", deliveries(addr).await);
}

fn gate_body(invitations: &str) -> String {
    format!("  secret_keys: [\"{KEY}\"]\n{STANDARD}invitations:\n{invitations}{RETRY}")
}

// ---------------------------------------------------------------------------------------------
// Certificates for STARTTLS

struct Tls {
    ca: String,
    cert: String,
    key: String,
}

fn tls_for_localhost() -> Tls {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "delivery test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Tls {
        ca: issuer.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn invitation_email_over_starttls_with_auth_carries_the_invitation_link() {
    email_over_tls("starttls").await;
}

#[tokio::test]
async fn invitation_email_over_implicit_tls_with_auth_carries_the_invitation_link() {
    email_over_tls("implicit").await;
}

/// An invitation email through aiosmtpd with a private CA and AUTH; `mode` is the
/// `invitations.email.tls` setting.
async fn email_over_tls(mode: &str) {
    let python = smtp_python().await;
    let tmp = tempfile::tempdir().unwrap();
    let tls = tls_for_localhost();
    for (name, text) in [
        ("ca.pem", &tls.ca),
        ("cert.pem", &tls.cert),
        ("key.pem", &tls.key),
    ] {
        write(&tmp.path().join(name), text);
    }
    let port = closed_port().await;
    let mail = tmp.path().join("mail");
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    let mut args = vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--user",
        "idgate",
        "--password",
        "relay-pw",
    ];
    if mode == "implicit" {
        args.push("--implicit");
    }
    let smtp = SmtpServer::start(&python, port, &mail, &args).await;
    let invitations = format!(
        "  url: \"https://app.example.com/accept?token={{{{token}}}}\"\n  email:\n    host: localhost\n    port: {port}\n    tls: {mode}\n    username: idgate\n    password: relay-pw\n    from: \"Acme <no-reply@acme.com>\"\n    ca: {}\n  email_subject: \"Join Acme, {{{{identifier}}}}\"\n  email_body: \"Accept: {{{{url}}}}\\nExpires {{{{expires_at}}}}\\n\"\n",
        tmp.path().join("ca.pem").display()
    );
    let g = start(&gate_body(&invitations)).await;
    let inv = invite(g.admin, "new.hire@acme.com").await;
    let link = inv["url"].as_str().expect("url on create").to_owned();
    assert!(
        link.starts_with("https://app.example.com/accept?token="),
        "{link}"
    );

    wait_sent(g.admin, 1).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 1, "{got:#?}");
    let m = &got[0];
    assert_eq!(m["rcpt_tos"], json!(["new.hire@acme.com"]));
    assert_eq!(m["mail_from"], "no-reply@acme.com");
    assert_eq!(m["tls"], true, "TLS ({mode}) was used");
    assert_eq!(m["auth_user"], "idgate");
    let data = m["data"].as_str().unwrap();
    assert_eq!(
        mail_header(data, "Subject").as_deref(),
        Some("Join Acme, new.hire@acme.com")
    );
    assert_eq!(
        mail_header(data, "To").as_deref(),
        Some("new.hire@acme.com")
    );
    let id = inv["id"].as_str().unwrap();
    let message_id = mail_header(data, "Message-ID").expect("Message-ID");
    assert!(
        message_id.starts_with(&format!("<idgate.{id}.")) && message_id.ends_with("@acme.com>"),
        "{message_id}"
    );
    let body = mail_body(data);
    assert!(body.contains(&format!("Accept: {link}")), "{body}");
    // The token in the link is the invitation's: the listed invitation with that id is the one.
    let token = link.rsplit('=').next().unwrap();
    assert!(token.len() >= 22, "{token}");
    let listed = admin(g.admin, "GET", "/v1/invitations?status=pending", None).await;
    assert!(listed.text().contains(id), "{}", listed.text());

    let status = deliveries(g.admin).await;
    assert_eq!(
        (status["pending"].clone(), status["failed"].clone()),
        (json!(0), json!(0))
    );
    let metrics = raw(
        g.admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .text();
    assert!(
        metrics.contains(r#"idgate_invitation_deliveries_total{channel="email",outcome="sent"} 1"#),
        "{metrics}"
    );
    g.shutdown().await;
}

/// Records webhook calls; answers 500 to the first, 200 afterwards.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(http::HeaderMap, Value, u16)>>>,
}

impl Receiver {
    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let mut seen = seen.lock().unwrap();
                            let status = if seen.is_empty() { 500 } else { 200 };
                            seen.push((parts.headers, json, status));
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }
}

#[tokio::test]
async fn sms_webhook_is_retried_after_a_500_and_accepted_exactly_once() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let invitations = format!(
        "  url: \"https://app.example.com/i/{{{{token}}}}\"\n  sms:\n    url: http://{addr}/sms\n    bearer_token: hook-secret\n  sms_body: \"Join: {{{{url}}}}\"\n"
    );
    let g = start(&gate_body(&invitations)).await;
    let r = admin(
        g.admin,
        "POST",
        "/v1/allowlist_identifiers",
        Some(r#"{"identifier":"+12025550199","notify":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_sent(g.admin, 1).await;

    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one 500, then one accepted: {seen:#?}");
    assert_eq!(seen.iter().filter(|s| s.2 == 200).count(), 1);
    let keys: Vec<_> = seen
        .iter()
        .map(|s| s.0["idempotency-key"].clone())
        .collect();
    assert_eq!(keys[0], keys[1], "the same Idempotency-Key on the retry");
    for (headers, body, _) in &seen {
        assert_eq!(headers["authorization"], "Bearer hook-secret");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["to"], "+12025550199");
        let id = body["invitation_id"].as_str().unwrap();
        assert!(id.starts_with("inv_"), "{body}");
        assert!(
            keys[0].to_str().unwrap().starts_with(&format!("{id}.")),
            "{keys:?}"
        );
        let text = body["text"].as_str().unwrap();
        assert!(
            text.starts_with("Join: https://app.example.com/i/"),
            "{text}"
        );
    }
    // Sent means done: later polls send nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.seen.lock().unwrap().len(), 2);
    g.shutdown().await;
}

#[tokio::test]
async fn an_invitation_made_while_the_relay_is_down_arrives_once_it_is_up() {
    let python = smtp_python().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port().await;
    let invitations = format!(
        "  url: \"https://app.example.com/accept?token={{{{token}}}}\"\n  email: {{host: 127.0.0.1, port: {port}, tls: none, from: no-reply@acme.com, timeout: 2s}}\n"
    );
    let g = start(&gate_body(&invitations)).await;
    let inv = invite(g.admin, "late@acme.com").await;
    // The relay is down: the delivery waits, with its error recorded.
    let waited = eventually(Duration::from_secs(10), || async {
        let d = deliveries(g.admin).await;
        d["pending"] == 1 && d["sent"] == 0
    })
    .await;
    assert!(waited, "{}", deliveries(g.admin).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deliveries(g.admin).await["pending"],
        1,
        "still waiting, not given up"
    );

    let smtp = SmtpServer::start(&python, port, &tmp.path().join("mail"), &[]).await;
    wait_sent(g.admin, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = smtp.messages();
    assert_eq!(got.len(), 1, "exactly one email: {got:#?}");
    assert_eq!(got[0]["rcpt_tos"], json!(["late@acme.com"]));
    let body = mail_body(got[0]["data"].as_str().unwrap());
    assert!(body.contains(inv["url"].as_str().unwrap()), "{body}");
    g.shutdown().await;
}

/// The real binary with its log (JSON lines) in a file, killed on drop.
struct Logged {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `idgate run -c cfg --log-format json`, stderr appended to `log`; waits for "idgate is
/// serving" (30 s).
fn start_logged(cfg: &Path, log: &Path) -> Logged {
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(common::binary::BIN);
    cmd.args(["--log-format", "json", "run", "-c"])
        .arg(cfg)
        .env("IDGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    no_proxy(&mut cmd);
    let mut child = cmd.spawn().expect("spawn idgate");
    for _ in 0..600 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text[before..]
            .lines()
            .find(|l| l.contains("idgate is serving"))
            .map(str::to_owned);
        if let Some(line) = line {
            let v: Value = serde_json::from_str(&line).unwrap();
            let admin = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
            return Logged { child, admin };
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("idgate exited ({s}) before serving:\n{}", &text[before..]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("idgate did not start within 30 s");
}

/// SIGTERM, then wait for the exit (at most 30 s).
fn terminate(mut b: Logged) -> std::process::ExitStatus {
    let pid = b.child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    for _ in 0..600 {
        if let Some(s) = b.child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("idgate did not stop within 30 s of SIGTERM");
}

fn sent_in_store(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'sent'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn restarting_the_binary_mid_queue_sends_each_email_exactly_once() {
    const N: usize = 8;
    let python = smtp_python().await;
    let upstream = common::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await;
    let invitations = format!(
        "  url: \"https://app.example.com/accept?token={{{{token}}}}\"\n  email: {{host: 127.0.0.1, port: {port}, tls: none, from: no-reply@acme.com, timeout: 5s}}\n"
    );
    let cfg = dir.path().join("config.yaml");
    write(&cfg, &config_text(upstream.addr, &gate_body(&invitations)));
    let db = dir.path().join("data/idgate.db");
    let log = dir.path().join("idgate.log");

    // The relay is down while the invitations are queued.
    let first = tokio::task::spawn_blocking({
        let (cfg, log) = (cfg.clone(), log.clone());
        move || start_logged(&cfg, &log)
    })
    .await
    .unwrap();
    let mut links = Vec::new();
    for i in 0..N {
        links.push(invite(first.admin, &format!("user{i}@acme.com")).await["url"].clone());
    }
    assert_eq!(deliveries(first.admin).await["pending"], N as u64);

    // The relay comes up slow (each message takes a while): stop the gate mid-queue.
    let mail = dir.path().join("mail");
    let smtp = SmtpServer::start(&python, port, &mail, &["--delay", "0.4"]).await;
    let some = eventually(Duration::from_secs(30), || async {
        !smtp.messages().is_empty()
    })
    .await;
    assert!(some, "no email arrived");
    let status = tokio::task::spawn_blocking(move || terminate(first))
        .await
        .unwrap();
    assert!(status.success(), "graceful exit: {status}");
    // The in-flight send finished and was marked before the exit: what arrived is what is
    // marked sent, and something is left for the next start.
    let received = smtp.messages().len();
    assert_eq!(
        sent_in_store(&db),
        received as i64,
        "received vs marked sent"
    );
    assert!(
        received < N,
        "the queue was not drained before the restart ({received})"
    );

    let second = tokio::task::spawn_blocking({
        let (cfg, log) = (cfg.clone(), log.clone());
        move || start_logged(&cfg, &log)
    })
    .await
    .unwrap();
    wait_sent(second.admin, N as u64).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = smtp.messages();
    let mut rcpts: Vec<String> = got
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap().to_owned())
        .collect();
    rcpts.sort();
    let want: Vec<String> = (0..N).map(|i| format!("user{i}@acme.com")).collect();
    assert_eq!(rcpts, want, "each email exactly once");
    let mut message_ids: Vec<String> = got
        .iter()
        .map(|m| mail_header(m["data"].as_str().unwrap(), "Message-ID").unwrap())
        .collect();
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), N);
    drop(second);

    // The log tells the story (failures while the relay was down, each delivery) without a
    // link, a token or a recipient.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("invitation delivery failed; will retry"),
        "{text}"
    );
    assert_eq!(
        text.matches("\"invitation delivered\"").count(),
        N,
        "{text}"
    );
    for link in &links {
        let link = link.as_str().unwrap();
        let token = link.rsplit('=').next().unwrap();
        assert!(!text.contains(token), "a token in the log:\n{text}");
    }
    for i in 0..N {
        assert!(
            !text.contains(&format!("user{i}@acme.com")),
            "a recipient in the log:\n{text}"
        );
    }
}

#[tokio::test]
async fn an_edit_of_invitations_is_refused_on_reload_as_restart_only() {
    let invitations = "  url: \"https://app.example.com/accept?token={{token}}\"\n  email: {host: 127.0.0.1, port: 2525, tls: none, from: no-reply@acme.com}\n";
    let g = start(&gate_body(invitations)).await;
    let text = std::fs::read_to_string(g.config_path())
        .unwrap()
        .replace("app.example.com/accept", "app.example.com/join");
    std::fs::write(g.config_path(), text).unwrap();
    match g.gate().reloader().reload() {
        idgate::reload::Outcome::Rejected(e) => {
            assert!(
                e.to_string()
                    .contains("invitations changed, which needs a restart"),
                "{e}"
            )
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    g.shutdown().await;
}
