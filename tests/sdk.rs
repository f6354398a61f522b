//! The admin API driven by the official Clerk SDKs against a real gate: `@clerk/backend`
//! (tests/sdk/js, pinned by package-lock.json, installed with `npm ci`) and `clerk-backend-api`
//! (tests/sdk/py, pinned with hashes in requirements.txt, installed into `target/sdk-venv`).
//! Each test starts its own upstream and gate (fresh store), runs one SDK's test script as a
//! child process with ADMIN_URL / SECRET_KEY / PROXY_URL, and fails with the script's output
//! when it fails. Installing is part of the test: no network or no node/python3 is a failure,
//! never a skip. Installs are skipped when the lock file is unchanged since the last one.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Upstream;
use common::install::{self, root, run};
use idgate::app::Gate;

const SECRET_KEY: &str = "sk_test_idgate_sdk_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
const SIGN_UP_PATH: &str = "/api/sign-up";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The gate's config: no lists from the file, the allowlist off, the blocklist on, one gated
/// sign-up route reading the JSON field `email`, and invitations delivered through an SMTP
/// relay on `smtp_port`, a closed loopback port: deliveries wait in the outbox.
fn config(upstream: std::net::SocketAddr, smtp_port: u16) -> String {
    format!(
        r#"listen:
  - addr: 127.0.0.1:0
upstream: http://{upstream}
admin:
  listen: 127.0.0.1:0
  secret_keys: ["{SECRET_KEY}"]
store:
  sqlite: data/idgate.db
restrictions:
  allowlist: false
  blocklist: true
routes:
  - name: sign-up
    methods: [POST]
    path: {SIGN_UP_PATH}
    kind: sign_up
    identifier: [{{ json: /email }}]
timeouts:
  upstream_response: 5s
  shutdown_grace: 2s
reload:
  interval: 0s
invitations:
  url: "https://app.test/accept?token={{{{token}}}}"
  email: {{ host: 127.0.0.1, port: {smtp_port}, tls: none, from: "idgate <invites@app.test>" }}
"#
    )
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A fresh upstream and gate (empty store) in a temporary directory.
struct Env {
    gate: Gate,
    dir: tempfile::TempDir,
    upstream: Upstream,
}

impl Env {
    async fn start() -> Env {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        common::write(&cfg, &config(upstream.addr, closed_port()));
        let gate = Gate::start(&cfg).await.expect("gate starts");
        Env {
            gate,
            dir,
            upstream,
        }
    }

    /// Sets the variables the SDK scripts read.
    fn apply(&self, cmd: &mut Command) {
        cmd.env("ADMIN_URL", format!("http://{}", self.gate.admin_addr()))
            .env("SECRET_KEY", SECRET_KEY)
            .env(
                "PROXY_URL",
                format!("http://{}", self.gate.proxy_addrs()[0]),
            )
            .env("SIGN_UP_PATH", SIGN_UP_PATH)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
    }

    /// The outbox after a script: every delivery of `recipients` is still `pending` (the relay
    /// is down) and none was sent; returns how many rows there are.
    fn assert_deliveries_waiting(&self, recipients: &[&str]) {
        let db = self.dir.path().join("data/idgate.db");
        let conn = rusqlite::Connection::open(&db).expect("open the store");
        for who in recipients {
            let states: Vec<String> = conn
                .prepare("SELECT state FROM deliveries WHERE recipient = ?1")
                .and_then(|mut s| {
                    s.query_map([who], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .expect("read deliveries");
            assert_eq!(states, ["pending"], "deliveries of {who}");
        }
        let sent: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'sent'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(
            sent, 0,
            "nothing can have been sent: the relay port is closed"
        );
    }

    /// The upstream must have seen sign-ups (the scripts' forwarded cases) and only allowed
    /// ones; the scripts check each reply themselves.
    fn assert_upstream_reached(&self) {
        assert!(
            self.upstream.count() > 0,
            "no sign-up reached the upstream: the script's forwarding checks did not run"
        );
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_js_sdk_drives_the_admin_api() {
    let env = Env::start().await;
    let logs = env.dir.path().to_path_buf();
    {
        let logs = logs.clone();
        blocking(move || install::npm_ci("tests/sdk/js", "@clerk/backend", &logs)).await;
    }
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec", "clerk.test.mjs"])
        .current_dir(root().join("tests/sdk/js"))
        .env("NO_COLOR", "1");
    env.apply(&mut cmd);
    let r = blocking(move || {
        run(
            cmd,
            "node --test tests/sdk/js/clerk.test.mjs",
            &logs.join("node.log"),
            RUN_TIMEOUT,
        )
    })
    .await;
    r.assert_ok();
    assert!(
        r.output.contains("pass 8") && r.output.contains("fail 0"),
        "expected 8 passing node tests:\n{}",
        r.output
    );
    env.assert_upstream_reached();
    env.assert_deliveries_waiting(&["invitee-js@example.com", "friend-js@example.com"]);
    env.gate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_python_sdk_drives_the_admin_api() {
    let env = Env::start().await;
    let logs = env.dir.path().to_path_buf();
    let python = {
        let logs = logs.clone();
        blocking(move || install::venv("sdk-venv", "tests/sdk/py/requirements.txt", &logs)).await
    };
    let mut cmd = Command::new(python);
    cmd.args(["-m", "unittest", "-v", "test_clerk"])
        .current_dir(root().join("tests/sdk/py"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    env.apply(&mut cmd);
    let r = blocking(move || {
        run(
            cmd,
            "python -m unittest tests/sdk/py/test_clerk.py",
            &logs.join("python.log"),
            RUN_TIMEOUT,
        )
    })
    .await;
    r.assert_ok();
    assert!(
        r.output.contains("Ran 8 tests") && r.output.contains("\nOK"),
        "expected 8 passing Python tests:\n{}",
        r.output
    );
    env.assert_upstream_reached();
    env.assert_deliveries_waiting(&["invitee-py@example.com"]);
    env.gate.shutdown().await;
}
