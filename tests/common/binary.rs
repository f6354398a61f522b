//! The real `idgate` binary as a child process: started on a config file, its bound proxy and
//! admin addresses read from its start-up log line, its log drained so it never blocks on a
//! full pipe, and killed (SIGKILL) on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_idgate");

/// A running `idgate run -c CONFIG`.
pub struct Binary {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Binary {
    /// Starts the binary and waits (up to 30 s) for its "idgate is serving" line.
    pub fn start(config: &Path) -> Binary {
        let mut child = Command::new(BIN)
            .args(["run", "-c", config.to_str().expect("utf-8 path")])
            .env("IDGATE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn idgate");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut line = String::new();
        let (proxy, admin) = loop {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("idgate did not start within 30 s");
            }
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("idgate exited before serving");
            }
            let pick = |tag: &str, end: char| {
                let rest = line.split(tag).nth(1)?;
                rest.split(end).next()?.trim().parse::<SocketAddr>().ok()
            };
            if let (Some(p), Some(a)) = (pick("proxy=[", ']'), pick("admin=", ' ')) {
                break (p, a);
            }
        };
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = err.read_to_end(&mut sink);
        });
        Binary {
            child,
            proxy,
            admin,
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
