//! Installing a test's pinned packages and running child processes: `npm ci` from a
//! package-lock.json and a venv with a hash-pinned requirements.txt under the target directory,
//! each skipped when the lock file is unchanged since the last successful install. A missing
//! tool or registry is a failure, never a skip.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one install step may take.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| root().join("target"), Path::to_path_buf)
}

/// The outcome of a finished child process, with everything it printed.
pub struct Run {
    pub what: String,
    pub ok: bool,
    pub status: String,
    pub output: String,
}

impl Run {
    pub fn assert_ok(&self) {
        assert!(
            self.ok,
            "{} failed ({}):\n{}",
            self.what, self.status, self.output
        );
    }
}

/// Removes the proxy variables: children talk to loopback (and the registries' own clients
/// read their own config).
pub fn no_proxy(cmd: &mut Command) {
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
}

/// Runs `cmd` to completion (killing it after `timeout`), stdout and stderr into `log`.
/// Blocking.
pub fn run(mut cmd: Command, what: &str, log: &Path, timeout: Duration) -> Run {
    let file = File::create(log).expect("create log file");
    let err = file.try_clone().expect("clone log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    no_proxy(&mut cmd);
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
pub fn up_to_date(lock: &Path, stamp: &Path) -> bool {
    match (std::fs::read(lock), std::fs::read(stamp)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `npm ci` in `dir` (relative to the crate root) unless node_modules matches its
/// package-lock.json already; `probe` is a path under node_modules that must exist.
pub fn npm_ci(dir: &str, probe: &str, logs: &Path) {
    let dir = root().join(dir);
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.idgate-installed-lock");
    if up_to_date(&lock, &stamp) && dir.join("node_modules").join(probe).exists() {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    run(
        cmd,
        &format!("npm ci ({})", dir.display()),
        &logs.join("npm-ci.log"),
        INSTALL_TIMEOUT,
    )
    .assert_ok();
    std::fs::copy(&lock, &stamp).expect("write the install stamp");
}

/// A venv at `<target>/<venv>` with `requirements` (relative to the crate root; hashes
/// required, no dependency resolution) installed; returns its python.
pub fn venv(venv: &str, requirements: &str, logs: &Path) -> PathBuf {
    let reqs = root().join(requirements);
    let venv = target_dir().join(venv);
    let python = venv.join("bin/python");
    let stamp = venv.join("idgate-installed-requirements.txt");
    if up_to_date(&reqs, &stamp) && python.is_file() {
        return python;
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv", "--clear"]).arg(&venv);
    run(
        cmd,
        &format!("python3 -m venv {}", venv.display()),
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
        &format!("pip install -r {requirements}"),
        &logs.join("pip.log"),
        INSTALL_TIMEOUT,
    )
    .assert_ok();
    std::fs::copy(&reqs, &stamp).expect("write the install stamp");
    python
}
