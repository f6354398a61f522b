//! The audit log: one JSON line per gated decision, written by a dedicated thread to stdout or
//! an append-only file.
//!
//! Identifiers are written as `hmac-sha256:<hex>` (HMAC-SHA256 of the canonical identifier
//! with `audit.hmac_key`) unless `audit.identifiers: clear` asks for clear text; a matched
//! list entry that names one address, phone or wallet is treated the same way (domain
//! patterns like `*@acme.com` stay readable). Tokens, keys, headers and bodies are never
//! written. The request path never blocks on the writer: lines go through a bounded queue and
//! a full queue drops the line and counts it (`idgate_audit_dropped_lines_total`).

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::metrics::Metrics;
use crate::config::{Audit, AuditIdentifiers, AuditOutput};

/// Lines that may wait for the writer before new ones are dropped.
pub const QUEUE: usize = 16 * 1024;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit.output {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("audit.hmac_key is required (and must be usable) to write identifiers as HMACs")]
    NoKey,
    #[error("cannot start the audit writer thread: {0}")]
    Thread(std::io::Error),
}

/// How identifiers are written.
#[derive(Clone)]
pub enum Pseudonymizer {
    Hmac(Hmac<Sha256>),
    Clear,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pseudonymizer::Hmac(_) => "Hmac([redacted])",
            Pseudonymizer::Clear => "Clear",
        })
    }
}

impl Pseudonymizer {
    /// HMAC-SHA256 with `key` (HMAC accepts any key length; the config asks for 16 bytes).
    pub fn hmac(key: &[u8]) -> Result<Pseudonymizer, AuditError> {
        Hmac::<Sha256>::new_from_slice(key)
            .map(Pseudonymizer::Hmac)
            .map_err(|_| AuditError::NoKey)
    }

    /// The identifier as the audit log writes it.
    pub fn apply(&self, canonical: &str) -> String {
        match self {
            Pseudonymizer::Clear => canonical.to_owned(),
            Pseudonymizer::Hmac(mac) => {
                let mut mac = mac.clone();
                mac.update(canonical.as_bytes());
                let tag = mac.finalize().into_bytes();
                let mut out = String::with_capacity(12 + 64);
                out.push_str("hmac-sha256:");
                for b in tag {
                    out.push(HEX[usize::from(b >> 4)] as char);
                    out.push(HEX[usize::from(b & 15)] as char);
                }
                out
            }
        }
    }

    /// A matched list entry: patterns over domains stay readable; an entry naming one address,
    /// phone number or wallet is written like an identifier.
    pub fn entry(&self, entry: &str) -> String {
        if names_one_person(entry) {
            self.apply(entry)
        } else {
            entry.to_owned()
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `user@x`, `+1…`, `0x…`: one person. `*@x`, `*@*.x`, `x.com`: a domain pattern.
fn names_one_person(entry: &str) -> bool {
    match entry.split_once('@') {
        Some((local, _)) => local != "*",
        None => entry.starts_with('+') || entry.starts_with("0x") || entry.starts_with("0X"),
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    /// `allow`, `deny` or `would_deny`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub rule: &'static str,
    /// `email`, `phone` or `wallet`.
    pub kind: &'static str,
    /// `hmac-sha256:<hex>`, or the canonical identifier with `identifiers: clear`.
    pub identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `enforce` or `shadow`.
    pub mode: &'static str,
}

/// The audit log: a queue to its writer thread.
pub struct AuditLog {
    tx: SyncSender<String>,
    pseudo: Pseudonymizer,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("pseudo", &self.pseudo)
            .finish()
    }
}

impl AuditLog {
    /// Opens the output and starts the writer; `None` when `audit.output` is not set.
    pub fn start(cfg: &Audit, metrics: Arc<Metrics>) -> Result<Option<AuditLog>, AuditError> {
        let Some(output) = &cfg.output else {
            return Ok(None);
        };
        let pseudo = match cfg.identifiers {
            AuditIdentifiers::Clear => Pseudonymizer::Clear,
            AuditIdentifiers::Hmac => match &cfg.hmac_key {
                Some(k) => Pseudonymizer::hmac(k.as_bytes())?,
                None => return Err(AuditError::NoKey),
            },
        };
        let out: Box<dyn Write + Send> = match output {
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::Open {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("idgate-audit".into())
            .spawn(move || write_loop(rx, out))
            .map_err(AuditError::Thread)?;
        Ok(Some(AuditLog {
            tx,
            pseudo,
            metrics,
        }))
    }

    /// How identifiers are written.
    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.pseudo
    }

    /// Queues one line; never blocks (a full queue drops it and counts the drop).
    pub fn write(&self, record: &Record<'_>) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.audit_dropped();
            }
        }
    }
}

/// Writes lines as they come; flushes whenever the queue is empty. Ends when every sender is
/// gone (the gate stopped).
fn write_loop(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = rx.recv() {
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            tracing::warn!("audit log write failed");
        }
    }
    let _ = out.flush();
}

/// RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hmac_is_stable_keyed_and_hides_the_identifier() {
        let a = Pseudonymizer::hmac(b"0123456789abcdef-key").unwrap();
        let b = Pseudonymizer::hmac(b"another-key-0123456789").unwrap();
        let h = a.apply("alice@acme.com");
        assert_eq!(h, a.apply("alice@acme.com"));
        assert_ne!(h, b.apply("alice@acme.com"));
        assert_ne!(h, a.apply("bob@acme.com"));
        assert!(h.starts_with("hmac-sha256:") && h.len() == 12 + 64, "{h}");
        assert!(!h.contains("alice"));
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            Pseudonymizer::hmac(b"Jefe")
                .unwrap()
                .apply("what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            Pseudonymizer::Clear.apply("alice@acme.com"),
            "alice@acme.com"
        );
    }

    #[test]
    fn entries_naming_one_person_are_hashed() {
        let p = Pseudonymizer::hmac(b"0123456789abcdef-key").unwrap();
        for e in ["mallory@acme.com", "+12025550123", "0xabc"] {
            assert!(p.entry(e).starts_with("hmac-sha256:"), "{e}");
        }
        for e in ["*@acme.com", "*@*.acme.com", "gmail.com"] {
            assert_eq!(p.entry(e), e);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }
}
