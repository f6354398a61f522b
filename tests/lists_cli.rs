//! `idgate lists import|export|clear` (the real binary) against a running gate (the real
//! binary), with sign-ups hitting the proxy the whole time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::binary::{BIN, Binary};
const KEY: &str = "sk_test_lists_cli";
const CLIENT: &str = "lists-cli-client";

struct Gate {
    _bin: Binary,
    proxy: String,
    admin: String,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

/// National phone numbers need the region they are written for: without `--phone-region`
/// they are rejected (never read as US numbers), with it they are stored in E.164; numbers
/// written with spaces after their `+` are one entry.
#[test]
fn import_reads_national_phone_numbers_only_with_a_region() {
    let g = start();
    let file = g.dir.path().join("phones.txt");
    std::fs::write(&file, "3123456789\n+44 20 7946 0958\n").unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = lists(&g, &["import", "--block", path, "--no-progress"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 added"), "{out}");
    assert!(format!("{out}{err}").contains("line 1"), "{out}{err}");
    let (code, out, err) = lists(
        &g,
        &[
            "import",
            "--block",
            path,
            "--phone-region",
            "IT",
            "--no-progress",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = lists(&g, &["export", "--list", "block"]);
    let rows: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rows, ["+442079460958", "+393123456789"], "{out}");
}

fn start() -> Gate {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(idgate::app::demo::start_app()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  - addr: 127.0.0.1:0\nupstream: http://{upstream}\nadmin:\n  listen: 127.0.0.1:0\n  secret_keys: [\"{KEY}\"]\n  magic_client_id: {CLIENT}\nstore:\n  sqlite: {}\nlists:\n  block: [\"*@config.example\"]\n  max_entries: 200000\nroutes:\n  - name: sign-up\n    path: /api/sign-up\n    kind: sign_up\n    identifier: [{{ json: /email }}]\nreload:\n  interval: 0s\n",
            dir.path().join("idgate.db").display()
        ),
    )
    .unwrap();
    let bin = Binary::start(&cfg);
    let (proxy, admin) = (bin.proxy.to_string(), bin.admin.to_string());
    Gate {
        _bin: bin,
        proxy,
        admin,
        dir,
        _rt: rt,
    }
}

/// `idgate lists …` with the connection in the environment; (exit code, stdout, stderr).
fn lists(g: &Gate, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("lists")
        .args(args)
        .env("IDGATE_ADMIN_URL", format!("http://{}", g.admin))
        .env("IDGATE_SECRET_KEY", KEY)
        .env("IDGATE_MAGIC_CLIENT_ID", CLIENT)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A JSON sign-up through the proxy; the status (0 if the exchange failed).
fn sign_up(proxy: &str, email: &str) -> u16 {
    let body = format!(r#"{{"email":"{email}"}}"#);
    let Ok(mut s) = TcpStream::connect(proxy) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "POST /api/sign-up HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn import_100k_csv_while_serving_then_export_and_clear() {
    let g = start();
    // A CRM export: a header, 100,000 addresses, a few malformed lines, a few duplicates.
    let mut csv = String::from("email\n");
    let mut bad_lines = Vec::new();
    for i in 0..100_000u32 {
        let line = i + 2;
        match i {
            10 => {
                csv.push_str("not-an-email\n");
                bad_lines.push(line);
            }
            5_000 => {
                csv.push_str("\"bad@@example.com\"\n");
                bad_lines.push(line);
            }
            77_777 => {
                csv.push_str("*@*\n");
                bad_lines.push(line);
            }
            20_000 | 20_001 => csv.push_str("User7@Import.Example\n"),
            _ => csv.push_str(&format!("user{i}@import.example\n")),
        }
    }
    let file = g.dir.path().join("crm.csv");
    std::fs::write(&file, &csv).unwrap();

    // Sign-ups keep flowing during the import; every one must be answered by the gate.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, answered, proxy) = (stop.clone(), answered.clone(), g.proxy.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let s = sign_up(&proxy, "someone@else.example");
                if s == 201 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.push(s);
                }
            }
            bad
        })
    };
    let started = Instant::now();
    let (code, out, err) = lists(
        &g,
        &[
            "import",
            "--block",
            file.to_str().unwrap(),
            "--chunk-size",
            "5000",
        ],
    );
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let bad = traffic.join().unwrap();
    println!(
        "imported 100,000-line CSV in {took:?} (debug build) while {} sign-ups were answered",
        answered.load(Ordering::Relaxed)
    );
    println!("{out}");
    assert!(bad.is_empty(), "sign-ups failed during the import: {bad:?}");
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(code, 1, "malformed lines → exit 1\n{out}\n{err}");
    // 100,000 entries: 3 malformed, user7 appears 3 times (lines 9, 20002, 20003).
    assert!(
        out.contains("100000 entries read, 99995 added, 0 already present, 2 duplicates in the file ignored, 3 rejected"),
        "{out}\n{err}"
    );
    for line in &bad_lines {
        assert!(
            out.contains(&format!("  line {line}: `")),
            "line {line}: {out}"
        );
    }
    assert!(out.contains("`bad@@example.com`"), "{out}");

    // Enforced: an imported address is refused, others pass.
    assert_eq!(sign_up(&g.proxy, "user99999@import.example"), 403);
    assert_eq!(sign_up(&g.proxy, "USER7@import.example"), 403);
    assert_eq!(sign_up(&g.proxy, "someone@else.example"), 201);

    // Importing again: everything already present, nothing added.
    let small = g.dir.path().join("again.txt");
    std::fs::write(
        &small,
        "user1@import.example, user2@import.example\n*@config.example\nnew@import.example\n",
    )
    .unwrap();
    let (code, out, err) = lists(
        &g,
        &[
            "import",
            "--block",
            small.to_str().unwrap(),
            "--no-progress",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("4 entries read, 1 added, 3 already present"),
        "{out}"
    );

    // Export: the API-managed entries (the config's are not), re-importable as is.
    let exported = g.dir.path().join("out.csv");
    let (code, out, err) = lists(
        &g,
        &[
            "export",
            "--format",
            "csv",
            "--list",
            "block",
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&exported).unwrap();
    let mut rows = text.lines();
    assert_eq!(rows.next(), Some("identifier"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 99_996);
    assert_eq!(rows[0], "user0@import.example");
    assert!(rows.contains(&"new@import.example"));
    assert!(!rows.contains(&"*@config.example"));

    // Clear needs --yes, then empties the API-managed lists; the config entry stays.
    let (code, _, err) = lists(&g, &["clear"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(sign_up(&g.proxy, "user99999@import.example"), 403);
    let (code, out, err) = lists(&g, &["clear", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("block list: 99996 API-managed entries removed"),
        "{out}"
    );
    assert_eq!(sign_up(&g.proxy, "user99999@import.example"), 201);
    assert_eq!(sign_up(&g.proxy, "x@config.example"), 403);
    let (_, out, _) = lists(&g, &["export"]);
    assert_eq!(out, "# allow list\n# block list\n");
}

#[test]
fn wrong_key_or_unreachable_gate_fail_clearly() {
    let g = start();
    let file = g.dir.path().join("a.txt");
    std::fs::write(&file, "a@x.com\n").unwrap();
    let out = Command::new(BIN)
        .args(["lists", "import", "--allow", file.to_str().unwrap()])
        .env("IDGATE_ADMIN_URL", format!("http://{}", g.admin))
        .env("IDGATE_SECRET_KEY", "sk_wrong")
        .env("IDGATE_MAGIC_CLIENT_ID", CLIENT)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("INVALID_SECRET_KEY"), "{err}");
    assert_eq!(sign_up(&g.proxy, "a@x.com"), 201, "nothing was added");

    let out = Command::new(BIN)
        .args([
            "lists",
            "export",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            KEY,
            "--client-id",
            CLIENT,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
}
