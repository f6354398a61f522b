//! Identifiers from OAuth end to end: the real gate in front of a recording upstream, and an
//! OpenID provider on loopback over HTTPS with a CA made here (discovery, JWKS with key
//! rotation, userinfo, GitHub's `/user/emails`). Tokens are minted with jsonwebtoken; every
//! test asserts what the upstream received (nothing, for a refused token).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use common::{Reply, TestGate, raw};

const HMAC: &str = "an-app-secret-of-at-least-32-bytes!!";

// ---------------------------------------------------------------------------------------------
// The provider

/// A signing key: private PEM for minting, public PEM and JWK for verifying.
struct SigningKey {
    kid: String,
    enc: EncodingKey,
    public_pem: String,
    jwk: Jwk,
}

fn signing_key(kid: &str) -> SigningKey {
    let kp = KeyPair::generate().unwrap(); // ECDSA P-256
    let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    SigningKey {
        kid: kid.to_owned(),
        enc,
        public_pem: kp.public_key_pem(),
        jwk,
    }
}

#[derive(Default)]
struct State {
    issuer: String,
    jwks: Vec<Jwk>,
    /// access token → userinfo answer.
    userinfo: HashMap<String, Value>,
    /// access token → `/user/emails` answer.
    emails: HashMap<String, Value>,
    hits: HashMap<String, usize>,
}

struct Provider {
    issuer: String,
    ca_pem: String,
    state: Arc<Mutex<State>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Provider {
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
        let chain = vec![CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("https://127.0.0.1:{}", addr.port());
        let state = Arc::new(Mutex::new(State {
            issuer: issuer.clone(),
            jwks: keys.iter().map(|k| k.jwk.clone()).collect(),
            ..State::default()
        }));
        let st = state.clone();
        // Connections live in a JoinSet owned by the accept task: aborting it stops them all.
        let server = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| answer(req, st.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Provider {
            issuer,
            ca_pem: ca.pem(),
            state,
            server: Some(server),
        }
    }

    fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut st = st.lock().unwrap();
    let path = req.uri().path().to_owned();
    *st.hits.entry(path.clone()).or_default() += 1;
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let iss = st.issuer.clone();
    let (status, body) = match path.as_str() {
        "/.well-known/openid-configuration" => (
            200,
            json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks"),
                   "userinfo_endpoint": format!("{iss}/userinfo")}),
        ),
        "/jwks" => (
            200,
            serde_json::to_value(JwkSet {
                keys: st.jwks.clone(),
            })
            .unwrap(),
        ),
        "/evil-jwks" => (200, json!({"keys": []})),
        "/userinfo" => match st.userinfo.get(&bearer) {
            Some(v) => (200, v.clone()),
            None => (401, json!({"error": "invalid_token"})),
        },
        "/user/emails" => match st.emails.get(&bearer) {
            Some(v) => (200, v.clone()),
            None => (401, json!({"message": "Bad credentials"})),
        },
        _ => (404, json!({})),
    };
    // GitHub's rate limit: a 403 that says so in its headers.
    let limited = bearer == "at-rate-limited";
    let status = if limited { 403 } else { status };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    if limited {
        resp.headers_mut()
            .insert("x-ratelimit-remaining", "0".parse().unwrap());
    }
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn claims(iss: &str, email: &str) -> Value {
    json!({"iss": iss, "aud": "client-1", "sub": format!("sub-{email}"), "email": email,
           "email_verified": true, "iat": now(), "exp": now() + 300})
}

fn mint(key: &SigningKey, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    encode(&h, claims, &key.enc).unwrap()
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

/// A token with `header` and `claims`, signed with `sig` (raw bytes, possibly empty).
fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

// ---------------------------------------------------------------------------------------------
// The gate

fn config(p: &Provider, static_pem: &str) -> String {
    let iss = &p.issuer;
    let pem = static_pem.trim_end().replace('\n', "\n            ");
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
      - jwt: {{ from: {{ header: authorization }}, issuer: "{iss}", audience: [client-1, client-2], jwks_uri: "{iss}/jwks", ca: ca.pem, jwks_min_refresh: 1h }}
  - name: app-session
    path: /api/session
    kind: sign_in
    identifier:
      - jwt: {{ from: {{ cookie: session }}, issuer: app, audience: app, hmac_secret: "{HMAC}" }}
  - name: static
    path: /api/static
    kind: sign_up
    identifier:
      - jwt:
          from: {{ json: /id_token }}
          issuer: "{iss}"
          audience: client-1
          public_key: |
            {pem}
  - name: userinfo
    path: /api/userinfo
    kind: sign_in
    identifier:
      - userinfo: {{ from: {{ header: authorization }}, issuer: "{iss}", verified_field: /email_verified, ca: ca.pem }}
  - name: paired
    path: /api/paired
    kind: sign_in
    identifier:
      - jwt: {{ from: {{ form: id_token }}, issuer: "{iss}", audience: client-1, ca: ca.pem }}
      - userinfo: {{ from: {{ header: authorization }}, issuer: "{iss}", ca: ca.pem }}
      - userinfo: {{ from: {{ form: access_token }}, url: "{iss}/user/emails", format: github_emails, ca: ca.pem }}
  - name: github
    path: /api/github
    kind: sign_up
    identifier:
      - userinfo: {{ from: {{ form: access_token }}, url: "{iss}/user/emails", format: github_emails, ca: ca.pem }}
timeouts:
  upstream_response: 2s
reload:
  interval: 0s
"#
    )
}

async fn gate(p: &Provider, static_pem: &str) -> TestGate {
    common::start_with(&config(p, static_pem), &[("ca.pem", &p.ca_pem)]).await
}

async fn send(addr: SocketAddr, path: &str, headers: &str, ctype: &str, body: &str) -> Reply {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n{headers}Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

async fn one_tap(g: &TestGate, token: &str) -> Reply {
    send(
        g.addr,
        "/api/one-tap",
        "",
        "application/x-www-form-urlencoded",
        &format!("credential={token}&g_csrf_token=x"),
    )
    .await
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

/// Asserts a refusal with `status` and `code` that never reached the upstream.
fn refused(g: &TestGate, before: usize, r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], code, "{what}");
    assert_eq!(g.upstream.count(), before, "{what}: nothing forwarded");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_are_verified_before_the_lists_decide() {
    let k1 = signing_key("k1");
    let mut p = Provider::start(&[&k1]).await;
    let g = gate(&p, &k1.public_pem).await;
    let iss = p.issuer.clone();

    // A verified allowlisted email passes: the upstream gets exactly what was sent.
    let ok = mint(&k1, &claims(&iss, "alice@acme.com"));
    let r = one_tap(&g, &ok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = g.upstream.last().unwrap();
    assert_eq!(seen.body, format!("credential={ok}&g_csrf_token=x"));
    assert_eq!(p.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(p.hits("/jwks"), 1);

    let n = g.upstream.count();
    // Blocked, and not allowlisted: the lists decide on the token's email.
    let r = one_tap(&g, &mint(&k1, &claims(&iss, "mallory@acme.com"))).await;
    refused(&g, n, &r, 403, "not_allowed_access", "blocked");
    assert_eq!(
        r.json()["errors"][0]["meta"]["identifiers"][0],
        "mallory@acme.com"
    );
    let r = one_tap(&g, &mint(&k1, &claims(&iss, "eve@other.org"))).await;
    refused(&g, n, &r, 403, "not_allowed_access", "not allowlisted");

    let variant = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&iss, "alice@acme.com");
        f(&mut c);
        c
    };
    let bad: Vec<(&str, String)> = vec![
        (
            "email_verified false",
            mint(&k1, &variant(&|c| c["email_verified"] = json!(false))),
        ),
        (
            "email_verified \"true\"",
            mint(&k1, &variant(&|c| c["email_verified"] = json!("true"))),
        ),
        (
            "no email_verified",
            mint(
                &k1,
                &variant(&|c| {
                    c.as_object_mut().unwrap().remove("email_verified");
                }),
            ),
        ),
        (
            "expired",
            mint(&k1, &variant(&|c| c["exp"] = json!(now() - 3600))),
        ),
        (
            "not yet valid",
            mint(&k1, &variant(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "wrong audience",
            mint(&k1, &variant(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong issuer",
            mint(&k1, &variant(&|c| c["iss"] = json!("https://evil.example"))),
        ),
        (
            "no sub",
            mint(
                &k1,
                &variant(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
        ),
        (
            "no aud",
            mint(
                &k1,
                &variant(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "no exp",
            mint(
                &k1,
                &variant(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "azp of another client",
            mint(&k1, &variant(&|c| c["azp"] = json!("client-9"))),
        ),
        (
            "several audiences without azp",
            mint(&k1, &variant(&|c| c["aud"] = json!(["client-1", "x"]))),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in &bad {
        let r = one_tap(&g, token).await;
        refused(&g, n, &r, 401, "authentication_invalid", what);
        assert!(
            !r.text().contains(token.as_str()),
            "{what}: the token is not echoed"
        );
    }

    // Tampered: the payload of a valid token swapped for another email.
    let parts: Vec<&str> = ok.split('.').collect();
    let evil = b64(variant(&|c| c["email"] = json!("bob@acme.com"))
        .to_string()
        .as_bytes());
    let r = one_tap(&g, &format!("{}.{evil}.{}", parts[0], parts[2])).await;
    refused(&g, n, &r, 401, "authentication_invalid", "tampered");

    // alg none.
    let c = claims(&iss, "alice@acme.com");
    let r = one_tap(&g, &forge(&json!({"alg": "none", "kid": "k1"}), &c, b"")).await;
    refused(&g, n, &r, 401, "authentication_invalid", "alg none");

    // HS256 signed with the public key (the classic key-confusion attack), on the static key
    // route and on the JWKS route.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = encode(&h, &c, &EncodingKey::from_secret(k1.public_pem.as_bytes())).unwrap();
    let r = one_tap(&g, &confused).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "HS256 with the public key (JWKS)",
    );
    let r = send(
        g.addr,
        "/api/static",
        "",
        "application/json",
        &json!({"id_token": confused}).to_string(),
    )
    .await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "HS256 with the public key (PEM)",
    );
    let r = send(
        g.addr,
        "/api/static",
        "",
        "application/json",
        &json!({"id_token": ok}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "static PEM key: {}", r.text());
    let n = g.upstream.count();

    // A jku header pointing elsewhere, with a key the provider never published: never fetched.
    let attacker = signing_key("attacker");
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("attacker".into());
    h.jku = Some(format!("{iss}/evil-jwks"));
    let r = one_tap(&g, &encode(&h, &c, &attacker.enc).unwrap()).await;
    refused(&g, n, &r, 401, "authentication_invalid", "jku elsewhere");
    assert_eq!(p.hits("/evil-jwks"), 0, "jku is never followed");

    // Rotation: a token under a new kid is refused until the provider publishes the key, then
    // the unknown kid triggers a refetch and it passes.
    let k2 = signing_key("k2");
    let rotated = mint(&k2, &claims(&iss, "alice@acme.com"));
    let r = one_tap(&g, &rotated).await;
    refused(&g, n, &r, 401, "authentication_invalid", "unknown kid");
    p.state.lock().unwrap().jwks = vec![k2.jwk.clone()];
    // Past `jwks_min_refresh` (100ms, the least allowed) since the refused kid's fetch.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let r = one_tap(&g, &rotated).await;
    assert_eq!(r.status, 200, "rotated key picked up: {}", r.text());

    // Authorization: Bearer, several audiences with azp: passes. A flood of unknown kids on
    // a source with a 1 h refresh limit fetches the JWKS once.
    let mut multi = claims(&iss, "alice@acme.com");
    multi["aud"] = json!(["client-2", "client-1"]);
    multi["azp"] = json!("client-2");
    let before = p.hits("/jwks");
    let multi_token = mint(&k2, &multi);
    let r = bearer(&g, "/api/bearer", &multi_token).await;
    assert_eq!(r.status, 200, "bearer: {}", r.text());
    assert_eq!(
        g.upstream.last().unwrap().headers["authorization"],
        format!("Bearer {multi_token}").as_str()
    );
    for i in 0..20 {
        let bogus = signing_key(&format!("bogus-{i}"));
        let r = bearer(&g, "/api/bearer", &mint(&bogus, &multi)).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(p.hits("/jwks"), before + 1, "unknown kids are rate-limited");
    let r = send(
        g.addr,
        "/api/bearer",
        "Authorization: Basic eDp5\r\n",
        "application/json",
        "",
    )
    .await;
    assert_eq!(r.status, 401, "not a Bearer header");

    // The app's own HMAC session cookie.
    let session = encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "app", "aud": "app", "sub": "u1", "email": "alice@acme.com",
                "email_verified": true, "exp": now() + 60}),
        &EncodingKey::from_secret(HMAC.as_bytes()),
    )
    .unwrap();
    let r = send(
        g.addr,
        "/api/session",
        &format!("Cookie: theme=dark; session={session}\r\n"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "cookie: {}", r.text());
    let n = g.upstream.count();
    let r = send(
        g.addr,
        "/api/session",
        &format!("Cookie: session={session}; session=x\r\n"),
        "application/json",
        "",
    )
    .await;
    refused(&g, n, &r, 400, "duplicate_field", "two session cookies");
    // The name hidden inside another pair, where parsers that split at whitespace or commas
    // find it: refused, with or without a visible one beside it.
    for cookie in [
        format!("theme=dark session={session}"),
        format!("theme=dark,session={session}"),
        format!("theme session={session}"),
        format!("session={session}; theme=dark session=x"),
    ] {
        let n = g.upstream.count();
        let r = send(
            g.addr,
            "/api/session",
            &format!("Cookie: {cookie}\r\n"),
            "application/json",
            "",
        )
        .await;
        assert!(!r.text().contains(&session), "the token was echoed");
        refused(&g, n, &r, 400, "ambiguous_location", &cookie);
    }

    // The provider stops: cached keys still verify (signatures are offline), but an unknown
    // kid needs the provider → 503 with Retry-After, nothing forwarded.
    p.stop();
    let r = one_tap(&g, &rotated).await;
    assert_eq!(r.status, 200, "cached key: {}", r.text());
    let n = g.upstream.count();
    let k3 = signing_key("k3");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let r = one_tap(&g, &mint(&k3, &claims(&iss, "alice@acme.com"))).await;
    refused(
        &g,
        n,
        &r,
        503,
        "identity_provider_unavailable",
        "provider stopped",
    );
    assert!(r.header("retry-after").is_some());
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_lookups_are_cached_and_fail_closed() {
    let k1 = signing_key("k1");
    let mut p = Provider::start(&[&k1]).await;
    {
        let mut st = p.state.lock().unwrap();
        st.userinfo.insert(
            "at-alice".into(),
            json!({"sub": "s1", "email": "alice@acme.com", "email_verified": true}),
        );
        st.userinfo.insert(
            "at-mallory".into(),
            json!({"sub": "s2", "email": "mallory@acme.com", "email_verified": true}),
        );
        st.userinfo.insert(
            "at-unverified".into(),
            json!({"sub": "s3", "email": "carol@acme.com", "email_verified": false}),
        );
        st.emails.insert(
            "gh-alice".into(),
            json!([
            {"email": "alice@gmail.com", "primary": false, "verified": true},
            {"email": "alice@acme.com", "primary": true, "verified": true}]),
        );
        st.emails.insert(
            "gh-unverified".into(),
            json!([
            {"email": "dave@acme.com", "primary": true, "verified": false}]),
        );
    }
    let g = gate(&p, &k1.public_pem).await;

    let r = bearer(&g, "/api/userinfo", "at-alice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        g.upstream.last().unwrap().headers["authorization"],
        "Bearer at-alice"
    );
    let r = bearer(&g, "/api/userinfo", "at-alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        p.hits("/userinfo"),
        1,
        "the second lookup is served from the cache"
    );

    let n = g.upstream.count();
    let r = bearer(&g, "/api/userinfo", "at-mallory").await;
    refused(&g, n, &r, 403, "not_allowed_access", "blocked");
    let r = bearer(&g, "/api/userinfo", "at-unverified").await;
    refused(&g, n, &r, 401, "authentication_invalid", "unverified");
    let r = bearer(&g, "/api/userinfo", "at-invalid").await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "invalid access token",
    );

    // A rate-limited 403 is the provider's state, not the token's: 503, and asked again next
    // time (not cached as a refusal).
    let before = p.hits("/userinfo");
    for _ in 0..2 {
        let r = bearer(&g, "/api/userinfo", "at-rate-limited").await;
        refused(
            &g,
            n,
            &r,
            503,
            "identity_provider_unavailable",
            "rate-limited",
        );
    }
    assert_eq!(p.hits("/userinfo"), before + 2);

    // An id_token with a userinfo token: both must name the same subject. GitHub's answer
    // names none, so it cannot be paired with an id_token.
    let form = "application/x-www-form-urlencoded";
    p.state.lock().unwrap().userinfo.insert(
        "at-alice-paired".into(),
        json!({"sub": "sub-alice@acme.com", "email": "alice@acme.com", "email_verified": true}),
    );
    let id_token = mint(
        &k1,
        &claims(&p.state.lock().unwrap().issuer, "alice@acme.com"),
    );
    let paired = |at: &str, form_extra: &str| {
        (
            format!("Authorization: Bearer {at}\r\n"),
            format!("id_token={id_token}{form_extra}"),
        )
    };
    let (h, b) = paired("at-alice-paired", "");
    let r = send(g.addr, "/api/paired", &h, form, &b).await;
    assert_eq!(r.status, 200, "same subject: {}", r.text());
    let n = g.upstream.count();
    let (h, b) = paired("at-alice", "");
    let r = send(g.addr, "/api/paired", &h, form, &b).await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "different subjects",
    );
    let r = send(
        g.addr,
        "/api/paired",
        "",
        form,
        &format!("id_token={id_token}&access_token=gh-alice"),
    )
    .await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "GitHub names no subject",
    );
    // A third token from another account, beside a matching pair: refused too.
    let (h, b) = paired("at-alice-paired", "&access_token=gh-alice");
    let r = send(g.addr, "/api/paired", &h, form, &b).await;
    refused(&g, n, &r, 401, "authentication_invalid", "a third token");

    let r = send(g.addr, "/api/github", "", form, "access_token=gh-alice").await;
    assert_eq!(r.status, 200, "github: {}", r.text());
    let n = g.upstream.count();
    let r = send(
        g.addr,
        "/api/github",
        "",
        form,
        "access_token=gh-unverified",
    )
    .await;
    refused(
        &g,
        n,
        &r,
        401,
        "authentication_invalid",
        "no primary verified email",
    );

    p.stop();
    let r = bearer(&g, "/api/userinfo", "at-new").await;
    refused(
        &g,
        n,
        &r,
        503,
        "identity_provider_unavailable",
        "provider stopped",
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    g.shutdown().await;
}
