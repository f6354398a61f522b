//! The real `idgate` binary: check-config, check, run (with curl as the client, SIGHUP and
//! SIGTERM), and the demo's printed curl lines.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idgate");

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn idgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .expect("curl is installed (see .ci/run)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_json(url: &str, email: &str) -> String {
    curl(&[
        url,
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"email":"{email}"}}"#),
    ])
}

#[test]
fn check_config_accepts_the_example_and_names_line_and_column_of_errors() {
    let (code, out, err) = idgate(&[
        "check-config",
        "-c",
        repo("config.example.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen:\n  - addr: 127.0.0.1:8080\nupstream: http://127.0.0.1:3000\nroutes:\n  - name: x\n    path: /a\n    kind: sign_up\n    identifier: [{ json: /email }]\n    colour: blue\n").unwrap();
    let (code, _, err) = idgate(&["check-config", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.yaml:9:"),
        "error names file and line: {err}"
    );
    assert!(err.contains("colour"), "{err}");

    let (code, _, err) = idgate(&[
        "check-config",
        "-c",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn check_explains_decisions_with_their_source() {
    let cfg = repo("config.example.yaml");
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = idgate(&["check", "alice@acme.com", "--route", "sign-up", "-c", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ALLOW") && out.contains("*@acme.com") && out.contains("allow.txt:"),
        "{out}"
    );

    let (code, out, _) = idgate(&["check", "mallory@acme.com", "--route", "sign-up", "-c", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DENY") && out.contains("blocklist") && out.contains("block.txt:"),
        "{out}"
    );

    let (code, out, _) = idgate(&["check", "someone@elsewhere.net", "-c", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("allowlist"), "{out}");

    let (code, out, _) = idgate(&["check", "not-an-email@", "-c", cfg]);
    assert_eq!(code, 3, "{out}");

    let (code, _, err) = idgate(&["check", "a@acme.com", "--route", "nope", "-c", cfg]);
    assert_eq!(code, 3, "{err}");

    let (code, out, _) = idgate(&[
        "check",
        "mallory@acme.com",
        "--json",
        "--route",
        "sign-up",
        "-c",
        cfg,
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["reason"], "blocklist");
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads lines from the child's stream until `pick` returns Some or the time runs out.
fn wait_line<R: BufRead>(r: &mut R, pick: impl Fn(&str) -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(v) = pick(&line) {
            return v;
        }
    }
    panic!("expected line not printed");
}

/// `idgate run -c cfg`, logging at info to a pipe.
fn run_binary(cfg: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(["run", "-c", cfg.to_str().unwrap()])
            .env("IDGATE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The proxy address from the "idgate is serving" line.
fn proxy_addr<R: BufRead>(err: &mut R) -> String {
    wait_line(err, |l| {
        let l = l.split("proxy=[").nth(1)?;
        Some(l.split(']').next()?.to_owned())
    })
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn run_serves_curl_reloads_on_sighup_and_stops_on_sigterm() {
    // A real upstream HTTP server (the demo app) on a loopback port.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(idgate::app::demo::start_app()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let text = |allow: &str| {
        format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\nlists:\n  allow: [\"{allow}\"]\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n"
        )
    };
    std::fs::write(&cfg, text("*@acme.com")).unwrap();
    let mut child = run_binary(&cfg);
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let addr = proxy_addr(&mut err);
    let url = format!("http://{addr}/api/sign-up");
    assert_eq!(curl_json(&url, "alice@acme.com"), "201");
    assert_eq!(curl_json(&url, "zed@beta.io"), "403");

    // Rewrite with the watcher effectively racing; SIGHUP must apply it regardless.
    std::fs::write(&cfg, text("*@beta.io")).unwrap();
    signal(&child.0, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while curl_json(&url, "zed@beta.io") != "201" {
        assert!(Instant::now() < deadline, "SIGHUP reload not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl_json(&url, "alice@acme.com"), "403");

    signal(&child.0, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "idgate did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A SIGHUP while the gate is still reading its lists (a deploy hook, `systemctl reload`
/// right after a start) is a reload once it serves, not the end of the process (SIGHUP's
/// default action).
#[test]
fn sighup_during_start_up_reloads_instead_of_ending_the_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(idgate::app::demo::start_app()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let list = dir.path().join("allow.txt");
    // Big enough that reading it takes a while: the signal lands in the middle.
    let mut entries = String::from("*@acme.com\n");
    for i in 0..200_000 {
        entries.push_str(&format!("user{i}@example{}.com\n", i % 977));
    }
    std::fs::write(&list, entries).unwrap();
    let text = |inline: &str| {
        format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\nlists:\n  allow: [\"{inline}\"]\n  max_entries: 300000\n  files: {{ allow: [\"{}\"] }}\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n",
            list.display()
        )
    };
    std::fs::write(&cfg, text("bob@acme.com")).unwrap();
    let mut child = run_binary(&cfg);
    // Once the list file is open, start-up is under way and not done.
    let fds = format!("/proc/{}/fd", child.0.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = std::fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == list));
        if open {
            break;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "idgate ended during start-up"
        );
        assert!(Instant::now() < deadline, "the list file was never opened");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A change the file watcher (not started yet) cannot see; only the reload applies it.
    std::fs::write(&cfg, text("*@beta.io")).unwrap();
    signal(&child.0, "-HUP");
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let addr = proxy_addr(&mut err);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "idgate ended on SIGHUP"
    );
    let url = format!("http://{addr}/api/sign-up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl_json(&url, "zed@beta.io") != "201" {
        assert!(
            Instant::now() < deadline,
            "the SIGHUP during start-up was not answered by a reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl_json(&url, "user5@example5.com"), "201");
}

/// One gate per store: a second `idgate run` on the same database (another port, a
/// blue/green deploy) refuses to start, naming the lock, and the first keeps serving; once
/// the first stops, it starts.
#[test]
fn a_second_gate_on_the_same_store_refuses_to_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(idgate::app::demo::start_app()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n"
        ),
    )
    .unwrap();
    let mut first = run_binary(&cfg);
    let mut err = BufReader::new(first.0.stderr.take().unwrap());
    let addr = proxy_addr(&mut err);
    let second = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("IDGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second gate started on the store"
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another idgate process uses this store") && said.contains(".lock"),
        "{said}"
    );
    let url = format!("http://{addr}/api/sign-up");
    assert_eq!(curl_json(&url, "alice@acme.com"), "201");
    signal(&first.0, "-TERM");
    assert!(first.0.wait().unwrap().success());
    let mut again = run_binary(&cfg);
    let mut err = BufReader::new(again.0.stderr.take().unwrap());
    let _ = proxy_addr(&mut err);
    assert!(again.0.try_wait().unwrap().is_none());
}

#[test]
fn demo_prints_curl_lines_that_behave_as_documented() {
    let mut child = Proc(
        Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env("IDGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut curls = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while curls.len() < 4 && Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.trim_start().starts_with("curl ") {
            curls.push(line.trim().to_owned());
        }
    }
    assert_eq!(curls.len(), 4, "the demo prints four curl lines");
    let expected = ["201", "403", "403", "400"];
    for (cmd, want) in curls.iter().zip(expected) {
        let cmd = cmd.replacen("curl -i", "curl -s -o /dev/null -w %{http_code}", 1);
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{cmd}");
    }
}
