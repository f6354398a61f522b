//! TLS and HTTP/2 end to end on loopback: certificates made here with rcgen, the real gate
//! wiring, real clients (`curl --http1.1`/`--http2`, `h2load` from nghttp2-client, hyper's
//! HTTP/2 client over tokio-rustls), and an HTTPS upstream with a private CA and mutual TLS.
//! Every test asserts what the upstream received.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Upstream, eventually, write};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use idgate::app::Gate;

// ---------------------------------------------------------------------------------------------
// Certificates

/// A private CA that issues server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM key.
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

impl Pair {
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .unwrap()
            .to_vec()
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names`, usable as server and as client certificate.
    fn issue(&self, names: &[&str]) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn write_pair(dir: &Path, name: &str, p: &Pair) {
    write(&dir.join(format!("certs/{name}.key")), &p.key);
    write(&dir.join(format!("certs/{name}.pem")), &p.cert);
}

// ---------------------------------------------------------------------------------------------
// Clients

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni}: {e}"))
}

fn leaf(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The leaf certificate a new connection with SNI `sni` is served.
async fn served_leaf(addr: SocketAddr, sni: &str, ca: &str) -> Vec<u8> {
    leaf(&tls_connect(addr, sni, client_config(ca, &[b"h2"])).await)
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_client(s: TlsStream<TcpStream>) -> H2 {
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_send(send: &mut H2, req: Request<Full<Bytes>>) -> (u16, String) {
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Runs `curl` with `args`; returns status, HTTP version and body. A missing curl fails.
async fn curl(args: Vec<String>) -> (u16, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("curl");
        common::install::no_proxy(&mut cmd);
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(&args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("curl must be installed (scripts/test does): {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut it = last.split_whitespace();
        let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = it.next().unwrap_or("").to_owned();
        assert!(
            out.status.success() || status != 0,
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (status, version, body.to_owned())
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Gates

const ROUTES: &str = r#"
lists:
  allow: ["*@acme.com"]
  block: ["mallory@acme.com"]
routes:
  - name: sign-up
    methods: [POST]
    path: /api/sign-up
    kind: sign_up
    identifier: [{ json: /email }, { form: email }]
limits:
  body: 4KiB
timeouts:
  upstream_response: 5s
  shutdown_grace: 2s
  tls_handshake: 1s
reload:
  debounce: 50ms
  interval: 0s
"#;

struct TlsGate {
    gate: Gate,
    dir: tempfile::TempDir,
    upstream: Upstream,
    ca: Ca,
    /// Listener 0: TLS; listener 1: plain.
    tls: SocketAddr,
    plain: SocketAddr,
}

impl TlsGate {
    async fn start() -> TlsGate {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("idgate test CA");
        write_pair(dir.path(), "gate", &ca.issue(&["app.test", "localhost"]));
        write_pair(dir.path(), "other", &ca.issue(&["*.other.test"]));
        let cfg = format!(
            "listen:\n  - addr: 127.0.0.1:0\n    tls:\n      cert: certs/gate.pem\n      key: certs/gate.key\n      sni: [{{ cert: certs/other.pem, key: certs/other.key }}]\n  - addr: 127.0.0.1:0\n\
             upstream: http://{}\nadmin:\n  listen: 127.0.0.1:0\n  tls: {{ cert: certs/gate.pem, key: certs/gate.key }}\n{ROUTES}",
            upstream.addr
        );
        write(&dir.path().join("config.yaml"), &cfg);
        let gate = Gate::start(&dir.path().join("config.yaml"))
            .await
            .expect("gate starts");
        let (tls, plain) = (gate.proxy_addrs()[0], gate.proxy_addrs()[1]);
        TlsGate {
            gate,
            dir,
            upstream,
            ca,
            tls,
            plain,
        }
    }

    fn ca_file(&self) -> String {
        let p = self.dir.path().join("ca.pem");
        std::fs::write(&p, self.ca.pem()).unwrap();
        p.display().to_string()
    }

    fn curl_args(&self, version: &str, port: u16, rest: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            version.into(),
            "--cacert".into(),
            self.ca_file(),
            "--resolve".into(),
            format!("app.test:{port}:127.0.0.1"),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http1_and_http2_allowed_denied_refused() {
    let g = TlsGate::start().await;
    let port = g.tls.port();
    let url = |p: &str| format!("https://app.test:{port}{p}");
    for (flag, want_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let before = g.upstream.count();
        // Ungated GET streams through.
        let (s, v, _) = curl(g.curl_args(flag, port, &[&url("/hello?a=1")])).await;
        assert_eq!((s, v.as_str()), (200, want_version), "{flag} GET");
        let seen = g.upstream.last().unwrap();
        assert_eq!(seen.uri, "/hello?a=1");
        assert_eq!(seen.headers["host"], format!("app.test:{port}"), "{flag}");
        assert_eq!(seen.headers["x-forwarded-proto"], "https", "{flag}");

        // An allowed sign-up arrives byte for byte.
        let body = r#"{"email":"alice@acme.com","password":"pw"}"#;
        let (s, v, text) = curl(g.curl_args(
            flag,
            port,
            &[
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
                &url("/api/sign-up"),
            ],
        ))
        .await;
        assert_eq!((s, v.as_str()), (200, want_version), "{flag}: {text}");
        let seen = g.upstream.last().unwrap();
        assert_eq!(seen.method, "POST");
        assert_eq!(&seen.body[..], body.as_bytes(), "{flag}");
        assert_eq!(seen.headers["content-length"], body.len().to_string());

        // Denied (block list), not allowlisted, and malformed: answered by the gate.
        for (body, status, code) in [
            (r#"{"email":"mallory@acme.com"}"#, 403, "not_allowed_access"),
            (
                r#"{"email":"eve@elsewhere.net"}"#,
                403,
                "not_allowed_access",
            ),
            (
                r#"{"email":"not-an-email"}"#,
                400,
                "form_param_format_invalid",
            ),
            (
                r#"{"email":"a@acme.com","email":"b@acme.com"}"#,
                400,
                "duplicate_field",
            ),
        ] {
            let (s, v, text) = curl(g.curl_args(
                flag,
                port,
                &[
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    body,
                    // A path spelling that routes to the same handler is gated too.
                    &url("//API/sign-up/"),
                ],
            ))
            .await;
            assert_eq!(
                (s, v.as_str()),
                (status, want_version),
                "{flag} {body}: {text}"
            );
            let j: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(j["errors"][0]["code"], code, "{flag} {body}");
        }
        assert_eq!(
            g.upstream.count(),
            before + 2,
            "{flag}: only GET and the allowed POST"
        );
    }

    // The admin listener speaks TLS too (HTTP/1.1).
    let (s, v, _) = curl(g.curl_args(
        "--http1.1",
        g.gate.admin_addr().port(),
        &[&format!(
            "https://app.test:{}/healthz",
            g.gate.admin_addr().port()
        )],
    ))
    .await;
    assert_eq!((s, v.as_str()), (200, "1.1"));
    g.gate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_are_gated_like_http1_and_plain_listeners_stay_http1() {
    let g = TlsGate::start().await;
    let cfg = client_config(&g.ca.pem(), &[b"h2"]);
    let mut h2 = h2_client(tls_connect(g.tls, "app.test", cfg).await).await;
    let before = g.upstream.count();

    // A host header that disagrees with :authority is refused.
    let req = Request::post("https://app.test/api/sign-up")
        .header("host", "evil.test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"email":"alice@acme.com"}"#,
        )))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("host_mismatch"), "{text}");

    // A gated POST without Content-Length (HTTP/2 framing) is collected and decided.
    let req = Request::post("https://app.test/api/sign-up")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"email":"mallory@acme.com"}"#,
        )))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 403, "{text}");
    // Over the limit: 413, per stream.
    let big = format!(
        r#"{{"email":"alice@acme.com","pad":"{}"}}"#,
        "x".repeat(8192)
    );
    let req = Request::post("https://app.test/api/sign-up")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(big)))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 413, "{text}");
    // Encoded slash under the gated prefix: refused like HTTP/1.
    let req = Request::post("https://app.test/api%2Fsign-up")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 400, "{text}");
    // A GET with a body on a gated route: refused.
    let req = Request::get("https://app.test/api/sign-up")
        .body(Full::new(Bytes::from_static(b"email=alice@acme.com")))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 400, "{text}");
    assert_eq!(
        g.upstream.count(),
        before,
        "nothing refused reached the upstream"
    );

    // Allowed: Host is set from :authority, the body arrives with an exact length.
    let body = br#"{"email":"alice@acme.com"}"#;
    let req = Request::post("https://app.test:443/api/sign-up")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 200, "{text}");
    let seen = g.upstream.last().unwrap();
    assert_eq!(&seen.body[..], &body[..]);
    assert_eq!(seen.headers["host"], "app.test:443");
    assert_eq!(seen.headers["content-length"], body.len().to_string());
    assert_eq!(seen.uri, "/api/sign-up");

    // The plain listener does not speak HTTP/2 (no h2c, no prior knowledge).
    let tcp = TcpStream::connect(g.plain).await.unwrap();
    let refused = match hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    {
        Err(_) => true,
        Ok((mut send, conn)) => {
            tokio::spawn(conn);
            send.send_request(
                Request::get("http://app.test/")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .map(|r| eprintln!("plain listener answered h2: {r:?}"))
            .is_err()
        }
    };
    assert!(refused, "the plain listener answered HTTP/2");

    // A client that never finishes the handshake is dropped after timeouts.tls_handshake.
    let mut idle = TcpStream::connect(g.tls).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle handshake was not closed: {read:?}"
    );
    g.gate.shutdown().await;
}

/// Runs h2load; returns its output. A missing h2load fails (scripts/test installs it).
async fn h2load(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("h2load");
        common::install::no_proxy(&mut cmd);
        let out = cmd.args(&args).output().unwrap_or_else(|e| {
            panic!("h2load must be installed (Debian nghttp2-client; scripts/test does): {e}")
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "h2load {args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    })
    .await
    .unwrap()
}

/// `(succeeded, 2xx, 4xx)` from h2load's summary.
fn h2load_counts(out: &str) -> (u64, u64, u64) {
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
            .to_owned()
    };
    let num_before = |l: &str, word: &str| -> u64 {
        let words: Vec<&str> = l.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word).unwrap();
        words[i - 1].parse().unwrap()
    };
    let req = line("requests:");
    let codes = line("status codes:");
    (
        num_before(&req, "succeeded"),
        num_before(&codes, "2xx"),
        num_before(&codes, "4xx"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_concurrent_streams_on_one_connection() {
    let g = TlsGate::start().await;
    let base = format!("https://127.0.0.1:{}", g.tls.port());
    let allowed = g.dir.path().join("allowed.json");
    let denied = g.dir.path().join("denied.json");
    std::fs::write(&allowed, br#"{"email":"alice@acme.com"}"#).unwrap();
    std::fs::write(&denied, br#"{"email":"mallory@acme.com"}"#).unwrap();
    let run = |data: Option<&Path>, path: &str| {
        let mut v: Vec<String> = ["-n", "2000", "-c", "1", "-m", "100"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(d) = data {
            v.extend([
                "-d".into(),
                d.display().to_string(),
                "-H".into(),
                "content-type: application/json".into(),
            ]);
        }
        v.push(format!("{base}{path}"));
        v
    };

    // Gated POSTs, 100 streams at a time on one connection: all forwarded, bodies intact.
    let before = g.upstream.count();
    let out = h2load(run(Some(&allowed), "/api/sign-up")).await;
    assert!(out.contains("Application protocol: h2"), "{out}");
    assert_eq!(h2load_counts(&out), (2000, 2000, 0), "{out}");
    {
        let seen = g.upstream.seen.lock().unwrap();
        assert_eq!(seen.len(), before + 2000);
        assert!(
            seen[before..]
                .iter()
                .all(|s| &s.body[..] == br#"{"email":"alice@acme.com"}"#)
        );
    }
    // Denied POSTs: all 403, none forwarded.
    let before = g.upstream.count();
    let out = h2load(run(Some(&denied), "/api/sign-up")).await;
    // h2load counts only 2xx and 3xx answers as "succeeded".
    assert_eq!(h2load_counts(&out), (0, 0, 2000), "{out}");
    assert_eq!(g.upstream.count(), before);
    // Ungated GETs stream through.
    let out = h2load(run(None, "/assets/app.js")).await;
    assert_eq!(h2load_counts(&out), (2000, 2000, 0), "{out}");
    assert_eq!(g.upstream.count(), before + 2000);
    g.gate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_rotation_and_broken_writes_keep_the_last_good_pair() {
    let g = TlsGate::start().await;
    let dir = g.dir.path();
    let ca = g.ca.pem();
    let gate_pem = || std::fs::read_to_string(dir.join("certs/gate.pem")).unwrap();
    let original = Pair {
        cert: gate_pem(),
        key: std::fs::read_to_string(dir.join("certs/gate.key")).unwrap(),
    };
    let other = std::fs::read_to_string(dir.join("certs/other.pem")).unwrap();
    let other_der = Pair {
        cert: other,
        key: String::new(),
    }
    .der();

    // SNI picks the certificate; no match (or no SNI) gets the first one.
    assert_eq!(served_leaf(g.tls, "app.test", &ca).await, original.der());
    assert_eq!(served_leaf(g.tls, "x.other.test", &ca).await, other_der);
    assert_eq!(served_leaf(g.tls, "localhost", &ca).await, original.der());

    // A connection opened before the rotation.
    let old = tls_connect(g.tls, "app.test", client_config(&ca, &[b"h2"])).await;
    assert_eq!(leaf(&old), original.der());
    let mut old = h2_client(old).await;

    // Rotate: new connections get the new certificate without a restart.
    let rotated = g.ca.issue(&["app.test"]);
    write_pair(dir, "gate", &rotated);
    let store = g.gate.certificates()[0].clone();
    let want = rotated.der();
    let seen_new = eventually(Duration::from_secs(15), || {
        let (ca, want) = (ca.clone(), want.clone());
        async move { served_leaf(g.tls, "app.test", &ca).await == want }
    })
    .await;
    assert!(
        seen_new,
        "the rotated certificate was not served: {:?}",
        store.status()
    );
    // The old connection still works.
    let req = Request::get("https://app.test/after-rotation")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut old, req).await.0, 200);
    assert_eq!(g.upstream.last().unwrap().uri, "/after-rotation");

    // A broken certificate write: logged, the last good pair keeps serving.
    let checks = store.status().checks;
    write(
        &dir.join("certs/gate.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    );
    let rejected = eventually(Duration::from_secs(15), || {
        let s = store.status();
        async move { s.checks > checks && s.last_error.is_some() }
    })
    .await;
    assert!(
        rejected,
        "the broken write was not noticed: {:?}",
        store.status()
    );
    assert_eq!(served_leaf(g.tls, "app.test", &ca).await, rotated.der());

    // A mismatched pair (a new certificate with the old key): rejected the same way.
    let next = g.ca.issue(&["app.test"]);
    let checks = store.status().checks;
    write(&dir.join("certs/gate.pem"), &next.cert);
    let mismatch = eventually(Duration::from_secs(15), || {
        let s = store.status();
        async move {
            s.checks > checks
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("does not belong"))
        }
    })
    .await;
    assert!(
        mismatch,
        "the mismatched pair was not rejected: {:?}",
        store.status()
    );
    assert_eq!(served_leaf(g.tls, "app.test", &ca).await, rotated.der());
    let h2 = tls_connect(g.tls, "app.test", client_config(&ca, &[b"h2"])).await;
    let mut h2 = h2_client(h2).await;
    let req = Request::get("https://app.test/still-serving")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut h2, req).await.0, 200);

    // The matching key arrives: the new pair is taken.
    write(&dir.join("certs/gate.key"), &next.key);
    let want = next.der();
    let taken = eventually(Duration::from_secs(15), || {
        let (ca, want) = (ca.clone(), want.clone());
        async move { served_leaf(g.tls, "app.test", &ca).await == want }
    })
    .await;
    assert!(
        taken,
        "the completed pair was not taken: {:?}",
        store.status()
    );
    assert_eq!(store.status().last_error, None);
    g.gate.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS upstream

/// What the TLS upstream saw: HTTP version, path, body, and whether a client certificate
/// was presented.
type Seen = (Version, String, Bytes, bool);

/// An HTTPS upstream offering h2 and http/1.1, requiring a client certificate from `client_ca`
/// when given.
async fn tls_upstream(pair: &Pair, client_ca: Option<&str>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rec = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, rec) = (acceptor.clone(), rec.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let rec = rec.clone();
                    async move {
                        let version = req.version();
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        rec.lock().unwrap().push((version, path, body, client_cert));
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"tls upstream"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn gate_to(upstream: SocketAddr, upstream_tls: &str, dir: &Path) -> Result<Gate, String> {
    let cfg = format!(
        "listen:\n  - addr: 127.0.0.1:0\nupstream: https://{upstream}\n{upstream_tls}\nadmin:\n  listen: 127.0.0.1:0\n{ROUTES}"
    );
    write(&dir.join("config.yaml"), &cfg);
    Gate::start(&dir.join("config.yaml"))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_private_ca_mutual_tls_and_h2() {
    let server_ca = Ca::new("upstream CA");
    let client_ca = Ca::new("client CA");
    let server = server_ca.issue(&["upstream.internal"]);
    let (addr, seen) = tls_upstream(&server, Some(&client_ca.pem())).await;
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("tls/ca.pem"), &server_ca.pem());
    let client = client_ca.issue(&["idgate.client"]);
    write(&dir.path().join("tls/client.pem"), &client.cert);
    write(&dir.path().join("tls/client.key"), &client.key);

    // Private CA + client certificate + server name: allowed sign-ups arrive over HTTP/2.
    let gate = gate_to(
        addr,
        "upstream_tls:\n  ca: tls/ca.pem\n  client_cert: tls/client.pem\n  client_key: tls/client.key\n  server_name: upstream.internal",
        dir.path(),
    )
    .await
    .unwrap();
    let proxy = gate.proxy_addrs()[0];
    let body = br#"{"email":"alice@acme.com"}"#;
    for _ in 0..3 {
        let r = common::post(proxy, "/api/sign-up", "application/json", body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tls upstream");
    }
    let r = common::post_json(proxy, "/api/sign-up", r#"{"email":"mallory@acme.com"}"#).await;
    assert_eq!(r.status, 403);
    let r = common::get(proxy, "/page").await;
    assert_eq!(r.status, 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        for (version, _, _, client_cert) in seen.iter() {
            assert_eq!(*version, Version::HTTP_2, "the upstream offered h2 by ALPN");
            assert!(client_cert, "the client certificate was presented");
        }
        assert_eq!(&seen[0].2[..], &body[..]);
        assert_eq!(seen[3].1, "/page");
    }
    gate.shutdown().await;

    // Without the client certificate the upstream refuses the handshake: 502, nothing seen.
    let gate = gate_to(
        addr,
        "upstream_tls:\n  ca: tls/ca.pem\n  server_name: upstream.internal",
        dir.path(),
    )
    .await
    .unwrap();
    let r = common::post_json(
        gate.proxy_addrs()[0],
        "/api/sign-up",
        r#"{"email":"alice@acme.com"}"#,
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    gate.shutdown().await;

    // Without the private CA (webpki roots only) the upstream is not trusted: 502.
    let gate = gate_to(
        addr,
        "upstream_tls:\n  client_cert: tls/client.pem\n  client_key: tls/client.key\n  server_name: upstream.internal",
        dir.path(),
    )
    .await
    .unwrap();
    let r = common::get(gate.proxy_addrs()[0], "/page").await;
    assert_eq!(r.status, 502, "{}", r.text());
    gate.shutdown().await;
    // Without the server name the certificate (for upstream.internal) does not match 127.0.0.1.
    let gate = gate_to(
        addr,
        "upstream_tls:\n  ca: tls/ca.pem\n  client_cert: tls/client.pem\n  client_key: tls/client.key",
        dir.path(),
    )
    .await
    .unwrap();
    let r = common::get(gate.proxy_addrs()[0], "/page").await;
    assert_eq!(r.status, 502, "{}", r.text());
    gate.shutdown().await;
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "no refused connection got a request through"
    );

    // A key that does not belong to its certificate stops the start with a clear error.
    write(&dir.path().join("tls/client.key"), &server.key);
    let err = gate_to(
        addr,
        "upstream_tls:\n  ca: tls/ca.pem\n  client_cert: tls/client.pem\n  client_key: tls/client.key",
        dir.path(),
    )
    .await
    .err()
    .expect("a mismatched client pair is refused");
    assert!(err.contains("does not belong"), "{err}");
}

/// An HTTP/2 client's cookies in several fields reach an HTTP/1.1 upstream as one `Cookie`
/// joined with "; " (RFC 9113 §8.2.3), not as lines a server would join with ",".
#[tokio::test]
async fn h2_cookie_fields_are_joined_for_an_http1_upstream() {
    let g = TlsGate::start().await;
    let cfg = client_config(&g.ca.pem(), &[b"h2"]);
    let mut h2 = h2_client(tls_connect(g.tls, "app.test", cfg).await).await;
    let req = Request::get("https://app.test/public")
        .header("cookie", "a=1")
        .header("cookie", "session=T")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, text) = h2_send(&mut h2, req).await;
    assert_eq!(s, 200, "{text}");
    let seen = g.upstream.last().unwrap();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; session=T"]);
}
