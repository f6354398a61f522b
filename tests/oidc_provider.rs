//! Identifiers from OAuth against a real OpenID provider: `oidc-provider` from npm (pinned in
//! tests/oidc/package-lock.json, installed by the test with `npm ci`), run by
//! tests/oidc/provider.mjs over HTTPS with a CA made here (rcgen), which the gate trusts
//! through its `ca` option. Tokens come from real authorization-code flows (with PKCE) that
//! the tests drive with an HTTPS client: authorization request → login → consent → code →
//! token endpoint. The provider's JWKS, discovery and userinfo endpoints are the real ones;
//! only tokens no real flow can produce (expired, signed with a key the provider never
//! publishes) come from the script's test-only `/test/mint`, signed with the provider's own
//! keys. Every test asserts what the upstream received: the exact bytes, or nothing. No node
//! or no registry is a failure, never a skip.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::install::{self, root};
use common::{Reply, TestGate, raw};

const REDIRECT: &str = "https://app.test/callback";

// ---------------------------------------------------------------------------------------------
// The provider process

/// The test CA and the provider's certificate for 127.0.0.1, as PEM files in `dir`.
#[derive(Clone)]
struct Pki {
    ca: String,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (cert, key) = (dir.join("provider.crt"), dir.join("provider.key"));
    common::write(&cert, &leaf.pem());
    common::write(&key, &leaf_key.serialize_pem());
    Pki {
        ca: ca.pem(),
        cert,
        key,
    }
}

/// `npm ci` in tests/oidc, once per test binary.
fn install(logs: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| install::npm_ci("tests/oidc", "oidc-provider/package.json", logs));
}

/// A running `node tests/oidc/provider.mjs`.
struct Provider {
    child: Child,
    port: u16,
    issuer: String,
    log: PathBuf,
}

impl Provider {
    /// Starts an instance on `port` (0: any) publishing the keys `kids` (kept in `dir/keys`,
    /// so two instances or a restart with the same kid share the key). Blocking.
    fn start(dir: &Path, name: &str, port: u16, kids: &[&str], pki: &Pki) -> Provider {
        install(dir);
        let accounts = json!({
            "alice": {"email": "alice@acme.com", "email_verified": true},
            "mallory": {"email": "mallory@acme.com", "email_verified": true},
            "carol": {"email": "carol@acme.com", "email_verified": false},
        });
        let client = |id: &str| {
            json!({"client_id": id, "client_secret": format!("secret-of-{id}"),
                   "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"],
                   "response_types": ["code"], "token_endpoint_auth_method": "client_secret_post"})
        };
        // A hybrid client whose callback gets the id_token by form_post.
        let mut form_post_client = client("client-3");
        form_post_client["response_types"] = json!(["code id_token"]);
        form_post_client["grant_types"] = json!(["authorization_code", "implicit"]);
        let cfg = json!({
            "port": port, "cert": pki.cert, "key": pki.key, "keys_dir": dir.join("keys"),
            "kids": kids,
            "clients": [client("client-1"), client("client-2"), form_post_client],
            "accounts": accounts,
        });
        let cfg_path = dir.join(format!("{name}.json"));
        common::write(&cfg_path, &cfg.to_string());
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("node");
        cmd.arg(root().join("tests/oidc/provider.mjs"))
            .arg(&cfg_path)
            .current_dir(root().join("tests/oidc"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        install::no_proxy(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (install Node.js >= 20.19): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the provider did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Provider {
            child,
            port: u16::try_from(ready["port"].as_u64().unwrap()).unwrap(),
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            log,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// The browser / relying party: an HTTPS client that trusts the test CA and keeps cookies

struct Browser {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    jar: HashMap<String, String>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The redirect target, made absolute against `origin` when it is a path.
    fn location(&self, origin: &str) -> String {
        assert!(
            self.status.is_redirection(),
            "{}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let to = self.headers[header::LOCATION].to_str().unwrap();
        if to.starts_with('/') {
            format!("{origin}{to}")
        } else {
            to.to_owned()
        }
    }
}

impl Browser {
    fn new(ca_pem: &str) -> Browser {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Browser {
            client: Client::builder(TokioExecutor::new()).build(https),
            jar: HashMap::new(),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(url);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, cookies.join("; "));
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let body = match body {
            Some((ctype, b)) => {
                req = req.header(header::CONTENT_TYPE, ctype);
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            self.client.request(req.body(body).unwrap()),
        )
        .await
        .expect("the provider answers in time")
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        let (parts, body) = resp.into_parts();
        for c in parts.headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty()
                || attrs
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970")
            {
                self.jar.remove(k.trim());
            } else {
                self.jar.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&mut self, url: &str) -> Answer {
        self.send(Method::GET, url, &[], None).await
    }
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in s.bytes() {
        let v = A.iter().position(|a| *a == ch).expect("base64url") as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n & 0xff) as u8);
        }
    }
    out
}

/// A JWT's header or payload (`part` 0 or 1).
fn part(token: &str, part: usize) -> Value {
    serde_json::from_slice(&unb64(token.split('.').nth(part).unwrap())).unwrap()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What a code flow ends with.
struct Tokens {
    id_token: String,
    access_token: String,
}

/// Sends the authorization request (`query`) and goes through the login (as `account`) and
/// consent interactions; returns the provider's last answer: the redirect to [`REDIRECT`],
/// or the `form_post` page.
async fn authorize(b: &mut Browser, p: &Provider, query: &str, account: &str) -> Answer {
    let iss = &p.issuer;
    let mut a = b.get(&format!("{iss}/auth?{query}")).await;
    for _ in 0..10 {
        if !a.status.is_redirection() {
            return a;
        }
        let url = a.location(iss);
        if url.starts_with(REDIRECT) {
            return a;
        }
        a = if url.contains("/interaction/") {
            let prompt = b.get(&url).await.json()["prompt"]
                .as_str()
                .unwrap()
                .to_owned();
            let (action, form) = match prompt.as_str() {
                "login" => ("login", format!("login={account}")),
                "consent" => ("confirm", String::new()),
                other => panic!("unexpected prompt {other}"),
            };
            let to = format!("{url}/{action}");
            b.send(Method::POST, &to, &[], Some((FORM, form))).await
        } else {
            b.get(&url).await
        };
    }
    panic!("the flow does not end\n{}", p.log());
}

/// A real authorization-code flow with PKCE for `account` at `client`: the authorization
/// request, the login and consent interactions, the code at the redirect URI, the token
/// endpoint (client_secret_post).
async fn code_flow(p: &Provider, ca: &str, client: &str, account: &str) -> Tokens {
    let mut b = Browser::new(ca);
    let iss = &p.issuer;
    let verifier = format!("verifier-{}-{}-0123456789abcdefghijklmnop", account, client);
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    let state = format!("state-{account}");
    let auth: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("nonce", "n-0S6_WzA2Mj")
        .finish();
    let url = authorize(&mut b, p, &auth, account).await.location(iss);
    assert_eq!(query_param(&url, "state").as_deref(), Some(state.as_str()));
    assert_eq!(query_param(&url, "iss").as_deref(), Some(iss.as_str()));
    let code = query_param(&url, "code").unwrap_or_else(|| panic!("no code in {url}"));
    let secret = format!("secret-of-{client}");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client)
        .append_pair("client_secret", &secret)
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_verifier", &verifier)
        .finish();
    let t = b
        .send(
            Method::POST,
            &format!("{iss}/token"),
            &[],
            Some(("application/x-www-form-urlencoded", form)),
        )
        .await;
    assert_eq!(t.status, 200, "{}", String::from_utf8_lossy(&t.body));
    let t = t.json();
    Tokens {
        id_token: t["id_token"].as_str().unwrap().to_owned(),
        access_token: t["access_token"].as_str().unwrap().to_owned(),
    }
}

/// A token the provider script signs with its first key (or with a key it never publishes).
async fn mint(p: &Provider, ca: &str, claims: &Value, unpublished: bool) -> String {
    let a = Browser::new(ca)
        .send(
            Method::POST,
            &format!("{}/test/mint", p.issuer),
            &[],
            Some((
                "application/json",
                json!({"claims": claims, "unpublished": unpublished}).to_string(),
            )),
        )
        .await;
    assert_eq!(a.status, 200);
    a.json()["token"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// The gate

fn config(iss: &str) -> String {
    format!(
        r#"
lists:
  allow: ["*@acme.com"]
  block: ["mallory@acme.com"]
routes:
  - name: one-tap
    path: /api/one-tap
    kind: sign_up
    identifier:
      - jwt: {{ from: {{ form: credential }}, issuer: "{iss}", audience: client-1, ca: ca.pem, jwks_min_refresh: 100ms }}
  - name: bearer
    path: /api/bearer
    kind: sign_in
    identifier:
      - jwt: {{ from: {{ header: authorization }}, issuer: "{iss}", audience: client-1, jwks_uri: "{iss}/jwks", ca: ca.pem, jwks_min_refresh: 1h }}
  - name: oidc-callback
    path: /api/oidc/callback
    kind: sign_up
    identifier:
      - jwt: {{ from: {{ form: id_token }}, issuer: "{iss}", audience: client-3, ca: ca.pem }}
  - name: late
    path: /api/late
    kind: sign_in
    identifier:
      - jwt: {{ from: {{ header: authorization }}, issuer: "{iss}", audience: client-1, jwks_uri: "{iss}/jwks", ca: ca.pem, jwks_min_refresh: 1h }}
  - name: userinfo
    path: /api/userinfo
    kind: sign_in
    identifier:
      - userinfo: {{ from: {{ header: authorization }}, issuer: "{iss}", ca: ca.pem }}  # verified by default: /email_verified
timeouts:
  upstream_response: 2s
reload:
  interval: 0s
"#
    )
}

/// One tempdir for the provider's files, the CA, and a gate trusting it.
struct Env {
    dir: tempfile::TempDir,
    pki: Pki,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        Env { dir, pki }
    }

    async fn provider(&self, name: &str, port: u16, kids: &[&str]) -> Provider {
        let dir = self.dir.path().to_path_buf();
        let pki = self.pki.clone();
        let name = name.to_owned();
        let kids: Vec<String> = kids.iter().map(|k| (*k).to_owned()).collect();
        blocking(move || {
            let kids: Vec<&str> = kids.iter().map(String::as_str).collect();
            Provider::start(&dir, &name, port, &kids, &pki)
        })
        .await
    }

    async fn gate(&self, p: &Provider) -> TestGate {
        common::start_with(&config(&p.issuer), &[("ca.pem", &self.pki.ca)]).await
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn send(addr: SocketAddr, path: &str, headers: &str, ctype: &str, body: &str) -> Reply {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n{headers}Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

fn one_tap_body(token: &str) -> String {
    format!("credential={token}&g_csrf_token=c5rf")
}

async fn one_tap(g: &TestGate, token: &str) -> Reply {
    send(g.addr, "/api/one-tap", "", FORM, &one_tap_body(token)).await
}

async fn bearer(g: &TestGate, path: &str, token: &str) -> Reply {
    send(
        g.addr,
        path,
        &format!("Authorization: Bearer {token}\r\n"),
        "application/json",
        "",
    )
    .await
}

/// Asserts the request passed and the upstream received exactly `body` at `path`.
fn passed(g: &TestGate, before: usize, r: &Reply, path: &str, body: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(g.upstream.count(), before + 1, "{what}: forwarded once");
    let seen = g.upstream.last().unwrap();
    assert_eq!(seen.method, "POST", "{what}");
    assert_eq!(seen.uri, path, "{what}");
    assert_eq!(seen.body, body.as_bytes(), "{what}: byte for byte");
}

/// Asserts a refusal with `status`, `code` and (when given) the reason in the message, that
/// never reached the upstream and does not echo the token.
fn refused(
    g: &TestGate,
    before: usize,
    r: &Reply,
    status: u16,
    code: &str,
    reason: &str,
    what: &str,
) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let e = &r.json()["errors"][0];
    assert_eq!(e["code"], code, "{what}");
    assert!(
        e["long_message"]
            .as_str()
            .unwrap_or_default()
            .contains(reason),
        "{what}: expected {reason:?} in {e}"
    );
    assert_eq!(g.upstream.count(), before, "{what}: nothing forwarded");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_id_tokens_pass_only_when_every_check_holds() {
    let env = Env::new();
    let ca = env.pki.ca.clone();
    let mut p = env.provider("a", 0, &["k1"]).await;
    let g = env.gate(&p).await;
    let n0 = g.upstream.count();

    // A verified allowlisted email passes; the upstream receives the exact bytes.
    let alice = code_flow(&p, &ca, "client-1", "alice").await;
    assert_eq!(part(&alice.id_token, 0)["kid"], "k1");
    assert_eq!(part(&alice.id_token, 1)["email"], "alice@acme.com");
    let r = one_tap(&g, &alice.id_token).await;
    passed(
        &g,
        n0,
        &r,
        "/api/one-tap",
        &one_tap_body(&alice.id_token),
        "alice",
    );
    let n = g.upstream.count();

    // Blocked, and email_verified: false (the provider's account says so).
    let mallory = code_flow(&p, &ca, "client-1", "mallory").await;
    let r = one_tap(&g, &mallory.id_token).await;
    refused(&g, n, &r, 403, "not_allowed_access", "", "blocked");
    assert_eq!(
        r.json()["errors"][0]["meta"]["identifiers"][0],
        "mallory@acme.com"
    );
    let carol = code_flow(&p, &ca, "client-1", "carol").await;
    assert_eq!(part(&carol.id_token, 1)["email_verified"], false);
    let r = one_tap(&g, &carol.id_token).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "does not say the identifier is verified",
        "unverified",
    );

    // Wrong audience: a real token of the second client.
    let other = code_flow(&p, &ca, "client-2", "alice").await;
    assert_eq!(part(&other.id_token, 1)["aud"], "client-2");
    let r = one_tap(&g, &other.id_token).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "another audience",
        "wrong audience",
    );

    // Wrong issuer: a second provider instance with the same signing key, so only `iss`
    // differs.
    let b = env.provider("b", 0, &["k1"]).await;
    let foreign = code_flow(&b, &ca, "client-1", "alice").await;
    assert_eq!(part(&foreign.id_token, 0)["kid"], "k1");
    assert_eq!(part(&foreign.id_token, 1)["iss"], b.issuer.as_str());
    let r = one_tap(&g, &foreign.id_token).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "another issuer",
        "wrong issuer",
    );
    drop(b);

    // Expired: alice's claims with exp an hour ago, signed with the provider's own key.
    let mut claims = part(&alice.id_token, 1);
    let now = claims["iat"].as_i64().unwrap();
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let expired = mint(&p, &ca, &claims, false).await;
    assert_eq!(part(&expired, 0)["kid"], "k1");
    let r = one_tap(&g, &expired).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "expired",
        "expired",
    );

    // Tampered: alice's signature under mallory's payload; one flipped signature byte.
    let a: Vec<&str> = alice.id_token.split('.').collect();
    let m: Vec<&str> = mallory.id_token.split('.').collect();
    let spliced = format!("{}.{}.{}", a[0], m[1], a[2]);
    let r = one_tap(&g, &spliced).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "signature does not verify",
        "spliced",
    );
    let mut sig = unb64(a[2]);
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", a[0], a[1], b64(&sig));
    let r = one_tap(&g, &flipped).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "signature does not verify",
        "flipped",
    );

    // alg none, with the provider's kid.
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes()),
        a[1]
    );
    let r = one_tap(&g, &none).await;
    refused(&g, n, &r, 401, "authentication_invalid", "", "alg none");

    // HS256 signed with the provider's public key (its PEM, as published).
    let keys = Browser::new(&ca)
        .get(&format!("{}/test/keys", p.issuer))
        .await
        .json();
    assert_eq!(keys[0]["kid"], "k1");
    let pem = keys[0]["pem"].as_str().unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = encode(
        &h,
        &part(&alice.id_token, 1),
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    let r = one_tap(&g, &confused).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "alg is not the key's algorithm",
        "HS256 with the public key",
    );

    // A jku header pointing at an attacker's JWKS (served, and counted, by the provider
    // script) with the attacker's key: the header is never followed.
    let attacker = KeyPair::generate().unwrap();
    let enc = EncodingKey::from_ec_pem(attacker.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("attacker".into());
    let evil = format!("{}/test/evil-jwks", p.issuer);
    let set = Browser::new(&ca)
        .send(
            Method::POST,
            &evil,
            &[],
            Some(("application/json", json!({"keys": [jwk]}).to_string())),
        )
        .await;
    assert_eq!(set.status, 200);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("attacker".into());
    h.jku = Some(evil.clone());
    let jku = encode(&h, &part(&alice.id_token, 1), &enc).unwrap();
    let r = one_tap(&g, &jku).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "no key of the provider matches",
        "jku",
    );
    let hits = Browser::new(&ca)
        .get(&format!("{}/test/hits", p.issuer))
        .await
        .json();
    assert_eq!(hits["evil_jwks"], 0, "the jku URL is never fetched");

    // An unknown kid: signed by the provider script with a key it never publishes.
    let unknown = mint(&p, &ca, &part(&alice.id_token, 1), true).await;
    past_min_refresh().await;
    let r = one_tap(&g, &unknown).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "no key of the provider matches",
        "unknown kid",
    );

    // Key rotation: the provider restarts (same port, same issuer) with a new key first in
    // its JWKS; its new id_tokens name k2 and the gate picks the key up on the unknown kid.
    // Tokens signed with k1 still verify.
    let port = p.port;
    p.stop();
    let p2 = env.provider("a-rotated", port, &["k2", "k1"]).await;
    assert_eq!(p2.issuer, p.issuer);
    let rotated = code_flow(&p2, &ca, "client-1", "alice").await;
    assert_eq!(part(&rotated.id_token, 0)["kid"], "k2");
    past_min_refresh().await;
    let r = one_tap(&g, &rotated.id_token).await;
    passed(
        &g,
        n,
        &r,
        "/api/one-tap",
        &one_tap_body(&rotated.id_token),
        "rotated key",
    );
    let r = one_tap(&g, &alice.id_token).await;
    passed(
        &g,
        n + 1,
        &r,
        "/api/one-tap",
        &one_tap_body(&alice.id_token),
        "old key",
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_with_real_access_tokens_and_a_stopped_provider() {
    let env = Env::new();
    let ca = env.pki.ca.clone();
    let mut p = env.provider("p", 0, &["k1"]).await;
    let g = env.gate(&p).await;

    // An opaque access token from a real code flow, looked up at the real userinfo endpoint.
    let alice = code_flow(&p, &ca, "client-1", "alice").await;
    assert_eq!(alice.access_token.split('.').count(), 1, "opaque");
    let n = g.upstream.count();
    let r = bearer(&g, "/api/userinfo", &alice.access_token).await;
    passed(&g, n, &r, "/api/userinfo", "", "valid access token");
    assert_eq!(
        g.upstream.last().unwrap().headers["authorization"],
        format!("Bearer {}", alice.access_token).as_str()
    );
    let n = g.upstream.count();
    let r = bearer(&g, "/api/userinfo", "definitely-not-an-access-token").await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "refused the access token",
        "invalid access token",
    );
    let mallory = code_flow(&p, &ca, "client-1", "mallory").await;
    let r = bearer(&g, "/api/userinfo", &mallory.access_token).await;
    refused(
        &g,
        n,
        &r,
        403,
        "not_allowed_access",
        "",
        "blocked via userinfo",
    );
    let carol = code_flow(&p, &ca, "client-1", "carol").await;
    let r = bearer(&g, "/api/userinfo", &carol.access_token).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "does not say the identifier is verified",
        "unverified via userinfo",
    );

    // Made while the provider runs, used after it stopped.
    let fresh = code_flow(&p, &ca, "client-1", "alice").await;
    let unknown = mint(&p, &ca, &part(&alice.id_token, 1), true).await;
    p.stop();

    // A lookup the cache cannot answer, and an unknown kid: 503 with Retry-After, nothing
    // forwarded.
    let r = bearer(&g, "/api/userinfo", &fresh.access_token).await;
    refused(
        &g,
        n,
        &r,
        503,
        "identity_provider_unavailable",
        "",
        "userinfo, provider stopped",
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    past_min_refresh().await;
    let r = one_tap(&g, &unknown).await;
    refused(
        &g,
        n,
        &r,
        503,
        "identity_provider_unavailable",
        "",
        "JWKS, provider stopped",
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    // The first use of the bearer route needs the JWKS too.
    let r = bearer(&g, "/api/bearer", &alice.id_token).await;
    refused(
        &g,
        n,
        &r,
        503,
        "identity_provider_unavailable",
        "",
        "first JWKS, provider stopped",
    );
    g.shutdown().await;
}

/// Sign-ins that arrive together with one access token cost the provider one userinfo
/// request: the others wait for its answer, as they would read it from the cache after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_token_ask_the_provider_once() {
    let env = Env::new();
    let ca = env.pki.ca.clone();
    let p = env.provider("p", 0, &["k1"]).await;
    let g = env.gate(&p).await;
    let alice = code_flow(&p, &ca, "client-1", "alice").await;
    let hits = || async {
        Browser::new(&ca)
            .get(&format!("{}/test/hits", p.issuer))
            .await
            .json()["userinfo"]
            .as_u64()
            .unwrap()
    };
    let set = Browser::new(&ca)
        .send(
            Method::POST,
            &format!("{}/test/userinfo-delay", p.issuer),
            &[],
            Some(("application/json", json!({"ms": 500}).to_string())),
        )
        .await;
    assert_eq!(set.status, 200);
    let before = hits().await;
    let n = g.upstream.count();
    // All eight are in flight while the provider holds the first lookup for 500 ms.
    let sent: Vec<_> = (0..8)
        .map(|_| {
            let (addr, token) = (g.addr, alice.access_token.clone());
            tokio::spawn(async move {
                send(
                    addr,
                    "/api/userinfo",
                    &format!("Authorization: Bearer {token}\r\n"),
                    "application/json",
                    "",
                )
                .await
            })
        })
        .collect();
    for r in sent {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(g.upstream.count(), n + 8, "each sign-in is forwarded");
    assert_eq!(
        hits().await - before,
        1,
        "one userinfo request for eight sign-ins"
    );
    g.shutdown().await;
}

/// The hidden inputs of a `form_post` page and its action, HTML entities decoded.
fn form_inputs(html: &str) -> (String, Vec<(String, String)>) {
    let unescape = |v: &str| {
        v.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let action = html
        .split_once("<form method=\"post\" action=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(a, _)| unescape(a))
        .expect("a form");
    let inputs = html
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|i| {
            let (name, rest) = i.split_once("\" value=\"").unwrap();
            let (value, _) = rest.split_once('"').unwrap();
            (unescape(name), unescape(value))
        })
        .collect();
    (action, inputs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_callback_is_gated_on_its_id_token() {
    let env = Env::new();
    let ca = env.pki.ca.clone();
    let p = env.provider("p", 0, &["k1"]).await;
    let g = env.gate(&p).await;
    for (account, status) in [("alice", 200), ("mallory", 403), ("carol", 401)] {
        let mut b = Browser::new(&ca);
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "client-3")
            .append_pair("response_type", "code id_token")
            .append_pair("response_mode", "form_post")
            .append_pair("scope", "openid email")
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", account)
            .append_pair("nonce", "n-0S6_WzA2Mj")
            .finish();
        let page = authorize(&mut b, &p, &query, account).await;
        assert_eq!(page.status, 200, "{}", p.log());
        let (action, inputs) = form_inputs(&String::from_utf8_lossy(&page.body));
        assert_eq!(action, REDIRECT);
        let names: Vec<&str> = inputs.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"id_token") && names.contains(&"code"),
            "{names:?}"
        );
        // What the browser posts to the app's callback.
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&inputs)
            .finish();
        let n = g.upstream.count();
        let r = send(g.addr, "/api/oidc/callback", "", FORM, &body).await;
        match status {
            200 => passed(&g, n, &r, "/api/oidc/callback", &body, account),
            403 => refused(&g, n, &r, 403, "not_allowed_access", "", account),
            _ => refused(
                &g,
                n,
                &r,
                401,
                "authentication_invalid",
                "does not say the identifier is verified",
                account,
            ),
        }
    }
    g.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `/metrics` as `name{labels}` → value (counters and gauges; what the exposition prints).
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let r = common::get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_and_userinfo_metrics_change_by_exactly_the_expected_amounts() {
    let env = Env::new();
    let ca = env.pki.ca.clone();
    let mut p = env.provider("p", 0, &["k1"]).await;
    let g = env.gate(&p).await;
    let alice = code_flow(&p, &ca, "client-1", "alice").await;
    let unknown = mint(&p, &ca, &part(&alice.id_token, 1), true).await;
    let before = scrape(g.admin).await;

    // one-tap (discovery, min refresh 100 ms): the first token fetches, the second is cached.
    assert_eq!(one_tap(&g, &alice.id_token).await.status, 200);
    assert_eq!(one_tap(&g, &alice.id_token).await.status, 200);
    // bearer (jwks_uri, min refresh 1 h): the first token fetches; three unknown kids after
    // it are refused without a fetch; a known kid is still served from the cache.
    assert_eq!(bearer(&g, "/api/bearer", &alice.id_token).await.status, 200);
    for _ in 0..3 {
        assert_eq!(bearer(&g, "/api/bearer", &unknown).await.status, 401);
    }
    assert_eq!(bearer(&g, "/api/bearer", &alice.id_token).await.status, 200);
    // one-tap, unknown kid: refetched once the min refresh (100 ms) has passed, still unknown.
    past_min_refresh().await;
    assert_eq!(one_tap(&g, &unknown).await.status, 401);
    // userinfo: a miss then a hit; a refused token is cached too.
    for _ in 0..2 {
        assert_eq!(
            bearer(&g, "/api/userinfo", &alice.access_token)
                .await
                .status,
            200
        );
        assert_eq!(bearer(&g, "/api/userinfo", "not-a-token").await.status, 401);
    }
    // The provider stops: a new access token and an unknown kid on one-tap fail to fetch.
    let fresh = code_flow(&p, &ca, "client-1", "alice").await;
    p.stop();
    assert_eq!(
        bearer(&g, "/api/userinfo", &fresh.access_token)
            .await
            .status,
        503
    );
    past_min_refresh().await;
    assert_eq!(one_tap(&g, &unknown).await.status, 503);
    // A source whose first fetch fails does not retry before its min refresh (1 h): the
    // second request is refused as unavailable without asking.
    assert_eq!(bearer(&g, "/api/late", &alice.id_token).await.status, 503);
    assert_eq!(bearer(&g, "/api/late", &alice.id_token).await.status, 503);
    let forwarded = g.upstream.count();

    let after = scrape(g.admin).await;
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let expect = [
        (
            r#"idgate_jwks_fetches_total{trigger="initial",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"idgate_jwks_fetches_total{trigger="unknown_kid",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"idgate_jwks_fetches_total{trigger="unknown_kid",outcome="error"}"#,
            1.0,
        ),
        (
            r#"idgate_jwks_fetches_total{trigger="expired",outcome="ok"}"#,
            0.0,
        ),
        (
            r#"idgate_jwks_fetches_total{trigger="initial",outcome="error"}"#,
            1.0,
        ),
        ("idgate_jwks_refresh_limited_total", 4.0),
        (r#"idgate_userinfo_requests_total{outcome="ok"}"#, 1.0),
        (r#"idgate_userinfo_requests_total{outcome="refused"}"#, 1.0),
        (r#"idgate_userinfo_requests_total{outcome="error"}"#, 1.0),
        (r#"idgate_userinfo_cache_lookups_total{result="hit"}"#, 2.0),
        (r#"idgate_userinfo_cache_lookups_total{result="miss"}"#, 3.0),
        (
            r#"idgate_refusals_total{cause="authentication_invalid",status="401"}"#,
            6.0,
        ),
        (
            r#"idgate_refusals_total{cause="identity_provider_unavailable",status="503"}"#,
            4.0,
        ),
    ];
    for (k, want) in expect {
        assert_eq!(
            delta(k),
            want,
            "{k}\n{}",
            common::get(g.admin, "/metrics").await.text()
        );
    }
    assert_eq!(forwarded, 6, "the six 200s, and nothing else");
    g.shutdown().await;
}

/// Waits out the one-tap source's `jwks_min_refresh` (100 ms, the least allowed), so its next
/// unknown kid refetches the JWKS.
async fn past_min_refresh() {
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
}
