//! The differential suite (issue #7): every attack vector in `tests/frameworks/vectors/*.vec`
//! is sent through the real gate (`idgate::app::Gate`) to each real upstream framework —
//! Express 5 (`tests/frameworks/js`, pinned by package-lock.json, installed with `npm ci`),
//! FastAPI/Starlette under uvicorn, Flask/Werkzeug and Django (`tests/frameworks/py`, pinned with
//! hashes, installed into `target/frameworks-venv`). Each app reads the identifier the way its
//! framework does and records every read; the test fetches that record from the app directly
//! after each vector and asserts:
//!
//! - the gate refused or denied the request, answered itself, and no handler was called; or
//! - the framework read exactly the identifier the gate decided on (canonically equal to the
//!   vector's expected identifier), and the gate's decision on what the framework read is
//!   "allow" — whatever way the app reads the field (body, query, merged values);
//! - and, whatever the vector expects, no handler ever reads an identifier that the gate would
//!   refuse or deny.
//!
//! Installing is part of the test: no network, node or python3 is a failure, never a skip.
//!
//! Vector file format: one vector per line, six fields separated by ` | `:
//! `name | expect | request line | headers | body | why`. `expect` is `forward ID` (every
//! framework's handler reads ID), `forward? ID` (forwarded; a framework may read nothing, but
//! what it reads is ID), `deny` (403 not_allowed_access), `refuse` / `refuse CODE` /
//! `refuse STATUS` (the gate's own 4xx/5xx, or the connection refused at the HTTP layer), or
//! `unrouted` (no handler may be called, whatever the status). The request line is
//! `METHOD TARGET` (` HTTP/1.1` appended unless a version is given), or `RAW` to send the body
//! field as the whole request. Headers are separated by `\n`; `json`, `form`, `mp` (multipart,
//! boundary `XB`) and `text` are shorthands for a Content-Type, `-` is none. `Host`,
//! `Content-Length` (unless `Transfer-Encoding` or `!nocl` is given) and `Connection: close`
//! (unless a `Connection` header is given) are added. Headers and body take the escapes `\r`,
//! `\n`, `\t`, `\0`, `\\` and `\xHH`; other backslashes are literal.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::install;
use idgate::app::Gate;
use idgate::gate::decision::decide;
use idgate::identifier::{self, Identifier};
use idgate::snapshot::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VECTOR_DIR: &str = "tests/frameworks/vectors";
const REPLY_TIMEOUT: Duration = Duration::from_secs(8);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The families the issue lists; each has a file, and the suite has at least 150 vectors.
const FAMILIES: [&str; 14] = [
    "json",
    "content_type",
    "encoding",
    "form",
    "query",
    "multipart",
    "path",
    "method",
    "smuggling",
    "upgrade",
    "hop_by_hop",
    "email",
    "phone",
    "wallet",
];
const MIN_VECTORS: usize = 150;

fn gate_config(upstream: SocketAddr) -> String {
    format!(
        r#"listen:
  - addr: 127.0.0.1:0
upstream: http://{upstream}
admin:
  listen: 127.0.0.1:0
lists:
  allow: ["*@acme.com", "*@xn--bcher-kva.example", "+12025550123", "0x52908400098527886e0f7030069857d2e4169ee7"]
  block: ["mallory@acme.com", "*@blocked.org", "+12025550199"]
restrictions:
  allowlist: auto
  blocklist: true
identifiers:
  default_phone_region: US
routes:
  - name: sign-up
    methods: [POST]
    path: /api/sign-up
    kind: sign_up
    identifier: [{{ json: /email }}, {{ form: email }}, {{ multipart: email }}]
  - name: sign-in
    methods: [POST]
    path: /api/sign-in
    kind: sign_in
    identifier: [{{ json: /email }}, {{ form: email }}, {{ multipart: email }}]
  - name: phone
    methods: [POST]
    path: /api/phone
    kind: sign_up
    identifier: [{{ json: /phone, type: phone }}, {{ form: phone, type: phone }}]
  - name: wallet
    methods: [POST]
    path: /api/wallet
    kind: sign_up
    identifier: [{{ json: /web3_wallet, type: wallet }}, {{ form: web3_wallet, type: wallet }}]
limits:
  body: 16KiB
timeouts:
  header_read: 2s
  upstream_response: 5s
  shutdown_grace: 1s
reload:
  interval: 0s
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Forwarded; `must_read`: every framework's handler reads `id`.
    Forward {
        id: String,
        must_read: bool,
    },
    Deny,
    /// The gate's own answer; a code (`bad_json`) or a status (`405`) when given.
    Refuse(Option<String>),
    /// No handler may be called.
    Unrouted,
}

#[derive(Debug, Clone)]
struct Vector {
    family: String,
    line: usize,
    name: String,
    expect: Expect,
    request: Vec<u8>,
    why: String,
}

impl Vector {
    fn label(&self) -> String {
        format!("{}:{} {}", self.family, self.line, self.name)
    }
}

/// Applies the escapes `\r \n \t \0 \\ \xHH`; any other backslash is kept.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = s.get(i + 2..i + 4).ok_or("short \\x escape")?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|e| format!("\\x{hex}: {e}"))?);
                    i += 4;
                    continue;
                }
                _ => {
                    out.push(b'\\');
                    i += 1;
                    continue;
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn parse_expect(s: &str) -> Result<Expect, String> {
    let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
    let rest = rest.trim();
    match word {
        "forward" | "forward?" if !rest.is_empty() => Ok(Expect::Forward {
            id: rest.to_owned(),
            must_read: word == "forward",
        }),
        "deny" if rest.is_empty() => Ok(Expect::Deny),
        "refuse" => Ok(Expect::Refuse((!rest.is_empty()).then(|| rest.to_owned()))),
        "unrouted" if rest.is_empty() => Ok(Expect::Unrouted),
        _ => Err(format!("unknown expectation {s:?}")),
    }
}

fn build_request(reqline: &str, headers: &str, body: &str) -> Result<Vec<u8>, String> {
    let body = if body == "-" {
        Vec::new()
    } else {
        unescape(body)?
    };
    if reqline == "RAW" {
        return Ok(body);
    }
    let mut out = unescape(reqline)?;
    if !reqline.contains(" HTTP/") {
        out.extend_from_slice(b" HTTP/1.1");
    }
    out.extend_from_slice(b"\r\n");
    let mut names: Vec<String> = Vec::new();
    let mut no_cl = false;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    if headers != "-" {
        let text = unescape(headers)?;
        for raw in text.split(|&c| c == b'\n') {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line: Vec<u8> = match raw {
                b"json" => b"Content-Type: application/json".to_vec(),
                b"form" => b"Content-Type: application/x-www-form-urlencoded".to_vec(),
                b"mp" => b"Content-Type: multipart/form-data; boundary=XB".to_vec(),
                b"text" => b"Content-Type: text/plain".to_vec(),
                b"!nocl" => {
                    no_cl = true;
                    continue;
                }
                b"" => continue,
                other => other.to_vec(),
            };
            let name = line
                .split(|&c| c == b':')
                .next()
                .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
                .unwrap_or_default();
            names.push(name);
            lines.push(line);
        }
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    if !has("host") {
        out.extend_from_slice(b"Host: app.test\r\n");
    }
    for l in &lines {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    if !no_cl && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Ok(out)
}

fn load_vectors() -> Vec<Vector> {
    let dir = install::root().join(VECTOR_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "vec"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let family = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("read vector file");
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(6, " | ").collect();
            let parsed = (|| {
                let [name, expect, reqline, headers, body, why] = fields[..] else {
                    return Err(format!("{} fields, want 6", fields.len()));
                };
                if why.trim().is_empty() {
                    return Err("no reason given".into());
                }
                Ok(Vector {
                    family: family.clone(),
                    line: line_no,
                    name: name.trim().to_owned(),
                    expect: parse_expect(expect.trim())?,
                    request: build_request(reqline.trim(), headers.trim(), body)?,
                    why: why.trim().to_owned(),
                })
            })();
            match parsed {
                Ok(v) => out.push(v),
                Err(e) => errors.push(format!("{}:{line_no}: {e}", file.display())),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "bad vector lines:\n{}",
        errors.join("\n")
    );
    out
}

#[test]
fn vectors_are_well_formed_and_cover_every_family() {
    let vectors = load_vectors();
    assert!(
        vectors.len() >= MIN_VECTORS,
        "{} vectors, want at least {MIN_VECTORS}",
        vectors.len()
    );
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &vectors {
        *per.entry(v.family.as_str()).or_default() += 1;
    }
    for f in FAMILIES {
        assert!(per.get(f).copied().unwrap_or(0) > 0, "no vectors for {f}");
    }
    let mut names = std::collections::HashSet::new();
    for v in &vectors {
        assert!(
            names.insert((v.family.clone(), v.name.clone())),
            "duplicate vector name {}",
            v.label()
        );
    }
    // Every expectation kind is exercised, and hostile vectors outnumber the controls.
    let forwards = vectors
        .iter()
        .filter(|v| matches!(v.expect, Expect::Forward { .. }))
        .count();
    assert!(
        forwards > 10 && forwards * 2 < vectors.len(),
        "{forwards} forward vectors"
    );
}

// ---------------------------------------------------------------------------------------------
// Frameworks
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framework {
    Express,
    FastApi,
    Flask,
    Django,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::Express => "express",
            Framework::FastApi => "fastapi",
            Framework::Flask => "flask",
            Framework::Django => "django",
        }
    }
}

static NPM: Mutex<bool> = Mutex::new(false);
static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

fn logs_dir(fw: Framework) -> PathBuf {
    let dir = install::target_dir()
        .join("differential-logs")
        .join(fw.name());
    std::fs::create_dir_all(&dir).expect("create the log directory");
    dir
}

/// Installs (once per test binary) what `fw` needs and returns the command that starts it.
fn command(fw: Framework, logs: &Path) -> Command {
    match fw {
        Framework::Express => {
            let mut done = NPM.lock().unwrap_or_else(|p| p.into_inner());
            if !*done {
                install::npm_ci("tests/frameworks/js", "express/package.json", logs);
                *done = true;
            }
            let mut cmd = Command::new("node");
            cmd.arg("app.mjs")
                .current_dir(install::root().join("tests/frameworks/js"));
            cmd
        }
        _ => {
            let mut venv = VENV.lock().unwrap_or_else(|p| p.into_inner());
            let python = venv
                .get_or_insert_with(|| {
                    install::venv(
                        "frameworks-venv",
                        "tests/frameworks/py/requirements.txt",
                        logs,
                    )
                })
                .clone();
            let mut cmd = Command::new(python);
            cmd.arg("apps.py")
                .arg(fw.name())
                .current_dir(install::root().join("tests/frameworks/py"))
                .env("PYTHONDONTWRITEBYTECODE", "1");
            cmd
        }
    }
}

/// A running framework app; killed on drop (and it exits by itself when its stdin closes).
struct App {
    child: Child,
    _stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
    port: u16,
    log: PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    fn start(fw: Framework) -> App {
        let logs = logs_dir(fw);
        let mut cmd = command(fw, &logs);
        install::no_proxy(&mut cmd);
        let log = logs.join("app.log");
        let err = std::fs::File::create(&log).expect("create the app log");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", fw.name()));
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not start (printed {line:?}):\n{}",
                    fw.name(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        App {
            child,
            _stdin: stdin,
            _stdout: stdout,
            port,
            log,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Returns and clears what the app's handlers read since the last call.
    async fn take_reads(&self) -> Result<Vec<serde_json::Value>, String> {
        let req = format!(
            "GET /__reads HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let reply = send(self.addr(), req.as_bytes()).await?;
        serde_json::from_slice::<Vec<serde_json::Value>>(&reply.body).map_err(|e| {
            format!(
                "the app's /__reads is not a JSON array ({e}): {}",
                String::from_utf8_lossy(&reply.body)
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The gate's error code (`errors[0].code`), if the body is its envelope.
    fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.pointer("/errors/0/code")?.as_str().map(str::to_owned)
    }
}

/// Skips interim (1xx) responses other than 101.
fn skip_interim(mut buf: &[u8]) -> &[u8] {
    while buf.starts_with(b"HTTP/1.1 1") && !buf.starts_with(b"HTTP/1.1 101") {
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => buf = &buf[end + 4..],
            None => break,
        }
    }
    buf
}

/// Whether `buf` holds one complete final response (by Content-Length or chunked framing).
fn complete(buf: &[u8]) -> bool {
    let buf = skip_interim(buf);
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let body = &buf[split + 4..];
    if head.contains("\r\ntransfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(n) => body.len() >= n,
        None => head.starts_with("http/1.1 1") || head.starts_with("http/1.1 204"),
    }
}

/// Sends raw bytes, reads one response (until it is complete or the peer closes).
async fn send(addr: SocketAddr, bytes: &[u8]) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    // The gate may answer and close before reading everything: not an error here.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if complete(&buf) {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(REPLY_TIMEOUT, read).await;
    let buf = skip_interim(&buf);
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(format!(
            "no response (got {:?})",
            String::from_utf8_lossy(buf)
        ));
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(Reply { status, head, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = b.get(eol + 4 + size..).unwrap_or_default();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Checking one vector
// ---------------------------------------------------------------------------------------------

fn route_name(handler: &str) -> Option<&'static str> {
    match handler {
        "/api/sign-up" => Some("sign-up"),
        "/api/sign-in" => Some("sign-in"),
        "/api/phone" => Some("phone"),
        "/api/wallet" => Some("wallet"),
        _ => None,
    }
}

/// Parses `raw` as the route's identifier kind, as the gate would.
fn canonical(snap: &Snapshot, route: &str, raw: &str) -> Result<Identifier, String> {
    let route = snap
        .routes
        .iter()
        .find(|r| &*r.name == route)
        .ok_or_else(|| format!("no route {route}"))?;
    let kind = route.sources.first().and_then(|s| s.kind);
    identifier::parse(raw, kind, &snap.identifiers).map_err(|e| e.to_string())
}

/// Everything wrong with one vector's outcome on one framework.
fn check(
    v: &Vector,
    reply: &Result<Reply, String>,
    reads: &[serde_json::Value],
    snap: &Snapshot,
) -> Vec<String> {
    let mut errors = Vec::new();
    // The invariant, whatever the vector expects: a handler only ever reads an identifier the
    // gate allows on its route, and a request reaches a handler at most once.
    if reads.len() > 1 {
        errors.push(format!("{} handler calls for one request", reads.len()));
    }
    let mut values: Vec<(String, String)> = Vec::new();
    for entry in reads {
        let handler = entry["handler"].as_str().unwrap_or("");
        let Some(route) = route_name(handler) else {
            errors.push(format!("unknown handler in {entry}"));
            continue;
        };
        let Some(map) = entry["reads"].as_object() else {
            errors.push(format!("no reads in {entry}"));
            continue;
        };
        for (way, value) in map {
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => {
                    match canonical(snap, route, s) {
                        Ok(id) => {
                            let r = snap.routes.iter().find(|r| &*r.name == route);
                            if let Some(r) = r
                                && let Some(deny) = decide(snap, r, &id).deny
                            {
                                errors.push(format!(
                                    "the {way} read {s:?}, which the gate denies ({})",
                                    deny.as_str()
                                ));
                            }
                        }
                        Err(e) => errors
                            .push(format!("the {way} read {s:?}, which the gate refuses: {e}")),
                    }
                    values.push((way.clone(), s.clone()));
                }
                other => errors.push(format!("the {way} read a non-string: {other}")),
            }
        }
    }
    let from_app = reply.as_ref().ok().and_then(|r| r.header("x-app"));
    let summary = match reply {
        Ok(r) => format!(
            "status {} from {} ({})",
            r.status,
            from_app.as_deref().unwrap_or("the gate"),
            r.code()
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(120).collect())
        ),
        Err(e) => e.clone(),
    };
    match &v.expect {
        Expect::Forward { id, must_read } => {
            if from_app.is_none() {
                errors.push(format!("expected it forwarded; got {summary}"));
            }
            let route = reads
                .first()
                .and_then(|e| e["handler"].as_str())
                .and_then(route_name)
                .unwrap_or("sign-up");
            match canonical(snap, route, id) {
                Err(e) => errors.push(format!("the vector's identifier {id:?} is invalid: {e}")),
                Ok(want) => {
                    for (way, s) in &values {
                        if canonical(snap, route, s).ok().as_ref() != Some(&want) {
                            errors
                                .push(format!("the {way} read {s:?}, the gate decided on {id:?}"));
                        }
                    }
                    if *must_read && values.is_empty() {
                        errors.push(format!("no handler read the identifier; got {summary}"));
                    }
                }
            }
        }
        Expect::Deny => {
            let ok = reply.as_ref().is_ok_and(|r| {
                r.status == 403
                    && from_app.is_none()
                    && r.code().as_deref() == Some("not_allowed_access")
            });
            if !ok {
                errors.push(format!("expected a denial; got {summary}"));
            }
            if !reads.is_empty() {
                errors.push("denied, but a handler was called".into());
            }
        }
        Expect::Refuse(want) => {
            match reply {
                Ok(r) => {
                    let status_ok = r.status >= 400 && r.status != 403 && from_app.is_none();
                    let want_ok = match want {
                        None => true,
                        Some(w) if w.bytes().all(|c| c.is_ascii_digit()) => {
                            r.status.to_string() == *w
                        }
                        Some(w) => r.code().as_deref() == Some(w.as_str()),
                    };
                    if !status_ok || !want_ok {
                        errors.push(format!(
                            "expected a refusal{}; got {summary}",
                            want.as_deref()
                                .map(|w| format!(" ({w})"))
                                .unwrap_or_default()
                        ));
                    }
                }
                Err(_) if want.is_none() => {}
                Err(e) => errors.push(format!("expected a refusal ({want:?}); got {e}")),
            }
            if !reads.is_empty() {
                errors.push("refused, but a handler was called".into());
            }
        }
        Expect::Unrouted => {
            if !reads.is_empty() {
                errors.push(format!("a handler was called ({summary})"));
            }
        }
    }
    if !errors.is_empty() && !values.is_empty() {
        errors.push(format!("reads: {values:?}"));
    }
    errors
}

async fn differential(fw: Framework) {
    let vectors = load_vectors();
    let app = {
        let started = tokio::task::spawn_blocking(move || App::start(fw));
        tokio::time::timeout(START_TIMEOUT * 10, started)
            .await
            .expect("the framework starts in time")
            .expect("start task")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    common::write(&cfg, &gate_config(app.addr()));
    let gate = Gate::start(&cfg).await.expect("gate starts");
    let addr = gate.proxy_addrs()[0];
    let snap: Arc<Snapshot> = gate.snapshots().load_full();

    // The app is up and reachable through the gate before the vectors run.
    let ready =
        common::eventually(START_TIMEOUT, || async { app.take_reads().await.is_ok() }).await;
    assert!(ready, "{} does not answer /__reads", fw.name());

    let mut failures = Vec::new();
    let mut reads_seen = 0usize;
    for v in &vectors {
        let reply = send(addr, &v.request).await;
        let reads = match app.take_reads().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", v.label()));
                continue;
            }
        };
        reads_seen += reads.len();
        let errors = check(v, &reply, &reads, &snap);
        if !errors.is_empty() {
            failures.push(format!(
                "{} — {}\n    {}\n    request: {:?}",
                v.label(),
                v.why,
                errors.join("\n    "),
                String::from_utf8_lossy(&v.request)
            ));
        }
    }
    gate.shutdown().await;
    assert!(
        failures.is_empty(),
        "{}: {} of {} vectors failed (app log: {}):\n{}",
        fw.name(),
        failures.len(),
        vectors.len(),
        app.log.display(),
        failures.join("\n")
    );
    assert!(
        reads_seen > 10,
        "{}: only {reads_seen} handler calls: the app is not reading requests",
        fw.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_reads_what_the_gate_decided() {
    differential(Framework::Express).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_reads_what_the_gate_decided() {
    differential(Framework::FastApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_reads_what_the_gate_decided() {
    differential(Framework::Flask).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_reads_what_the_gate_decided() {
    differential(Framework::Django).await;
}
