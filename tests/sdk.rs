//! The admin API driven by the official Clerk SDKs against a real gate: `@clerk/backend`
//! (tests/sdk/js, pinned by package-lock.json, installed with `npm ci`) and `clerk-backend-api`
//! (tests/sdk/py, pinned with hashes in requirements.txt, installed into `target/sdk-venv`).
//! Each test starts its own upstream and gate (fresh store), runs one SDK's test script as a
//! child process with ADMIN_URL / SECRET_KEY / PROXY_URL, and fails with the script's output
//! when it fails. Installing is part of the test: no network or no node/python3 is a failure,
//! never a skip. Installs are skipped when the lock file is unchanged since the last one.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Upstream;
use idgate::app::Gate;

const SECRET_KEY: &str = "sk_test_idgate_sdk_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
const SIGN_UP_PATH: &str = "/api/sign-up";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| root().join("target"), Path::to_path_buf)
}

/// The outcome of a finished child process, with everything it printed.
struct Run {
    what: String,
    ok: bool,
    status: String,
    output: String,
}

impl Run {
    fn assert_ok(&self) {
        assert!(
            self.ok,
            "{} failed ({}):\n{}",
            self.what, self.status, self.output
        );
    }
}

/// Runs `cmd` to completion (killing it after `timeout`), stdout and stderr into one log file.
/// Blocking: call it from `spawn_blocking` so the gate keeps serving.
fn run(mut cmd: Command, what: &str, log: &Path, timeout: Duration) -> Run {
    let file = File::create(log).expect("create log file");
    let err = file.try_clone().expect("clone log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    // The children talk to loopback only: never through a proxy from the environment.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Run {
                what: what.to_owned(),
                ok: false,
                status: format!("could not start: {e}"),
                output: String::new(),
            };
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break format!("{s}"),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed after {timeout:?}");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break format!("wait failed: {e}"),
        }
    };
    let ok = status == "exit status: 0";
    let output = std::fs::read_to_string(log).unwrap_or_default();
    Run {
        what: what.to_owned(),
        ok,
        status,
        output,
    }
}

/// Whether `stamp` holds exactly the bytes of `lock` (the last successful install used it).
fn up_to_date(lock: &Path, stamp: &Path) -> bool {
    match (std::fs::read(lock), std::fs::read(stamp)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `npm ci` in tests/sdk/js unless node_modules matches package-lock.json already.
fn install_js(logs: &Path) {
    let dir = root().join("tests/sdk/js");
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.idgate-installed-lock");
    if up_to_date(&lock, &stamp) && dir.join("node_modules/@clerk/backend").is_dir() {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    run(
        cmd,
        "npm ci (tests/sdk/js)",
        &logs.join("npm-ci.log"),
        INSTALL_TIMEOUT,
    )
    .assert_ok();
    std::fs::copy(&lock, &stamp).expect("write the install stamp");
}

/// A venv at target/sdk-venv with requirements.txt installed (hashes required); returns its
/// python.
fn install_py(logs: &Path) -> PathBuf {
    let reqs = root().join("tests/sdk/py/requirements.txt");
    let venv = target_dir().join("sdk-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("idgate-installed-requirements.txt");
    if up_to_date(&reqs, &stamp) && python.is_file() {
        return python;
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv", "--clear"]).arg(&venv);
    run(
        cmd,
        "python3 -m venv target/sdk-venv",
        &logs.join("venv.log"),
        INSTALL_TIMEOUT,
    )
    .assert_ok();
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--require-hashes",
        "--no-deps",
        "-r",
    ])
    .arg(&reqs);
    run(
        cmd,
        "pip install -r tests/sdk/py/requirements.txt",
        &logs.join("pip.log"),
        INSTALL_TIMEOUT,
    )
    .assert_ok();
    std::fs::copy(&reqs, &stamp).expect("write the install stamp");
    python
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
        blocking(move || install_js(&logs)).await;
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
        blocking(move || install_py(&logs)).await
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
