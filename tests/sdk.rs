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
/// sign-up route reading the JSON field `email`.
fn config(upstream: std::net::SocketAddr) -> String {
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
"#
    )
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
        common::write(&cfg, &config(upstream.addr));
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
        r.output.contains("pass 6") && r.output.contains("fail 0"),
        "expected 6 passing node tests:\n{}",
        r.output
    );
    env.assert_upstream_reached();
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
        r.output.contains("Ran 6 tests") && r.output.contains("\nOK"),
        "expected 6 passing Python tests:\n{}",
        r.output
    );
    env.assert_upstream_reached();
    env.gate.shutdown().await;
}
