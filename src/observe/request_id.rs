//! Request ids: one per proxied request, taken from a trusted proxy's header
//! (`request_id: { header, trust: true }`) or generated (16 random bytes, hex), set on the
//! request passed upstream, returned on every answer, and written in log lines (a `request`
//! span field) and in the audit log's `request_id`.
//!
//! A client's value is reused only with `trust: true`, and only when it is 1 to
//! [`MAX_LEN`] characters of `[A-Za-z0-9._:+/=-]`: anything else (control bytes, quotes,
//! spaces, a value that could forge a log line) is replaced by a generated id.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::RequestId;

/// The longest id accepted from a trusted header.
pub const MAX_LEN: usize = 128;

/// How the proxy finds or makes a request's id.
#[derive(Debug, Clone)]
pub struct RequestIds {
    header: HeaderName,
    trust: bool,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new(&RequestId::default())
    }
}

impl RequestIds {
    pub fn new(cfg: &RequestId) -> RequestIds {
        RequestIds {
            header: cfg.header.clone(),
            trust: cfg.trust,
        }
    }

    /// The header that carries the id (in both directions).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The request's id: the trusted header's value when acceptable (and sent once), else a
    /// fresh one. The caller sets it, as the one value of [`RequestIds::header`], on what goes
    /// upstream and on the answer, replacing whatever the client sent.
    pub fn assign(&self, headers: &HeaderMap) -> HeaderValue {
        if self.trust
            && let Some(v) = single(headers, &self.header)
            && acceptable(v.as_bytes())
        {
            return v.clone();
        }
        generate()
    }
}

/// The header's value when it appears exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// Whether a client-supplied id is safe to reuse (and to write in logs as is).
pub fn acceptable(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+/=-".contains(b))
}

/// A fresh id: 16 bytes from the OS's random source, as 32 lowercase hex digits. Should the
/// source fail (it does not on supported systems), the id comes from a process-wide counter
/// mixed with the time, so a request is never refused for want of an id.
pub fn generate() -> HeaderValue {
    let mut raw = [0u8; 16];
    if !random_bytes(&mut raw) {
        fallback(&mut raw);
    }
    let mut hex = [0u8; 32];
    for (i, b) in raw.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    // Hex digits are always a valid header value.
    let mut id = HeaderValue::from_maybe_shared(in_arena(&hex))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    // Never indexed by HTTP/2 header compression: a unique value only fills the table, and an
    // entry there would keep the id's arena alive as long as the connection.
    id.set_sensitive(true);
    id
}

/// Bytes of this thread's id arena taken for ids before a new one is allocated.
const ARENA: usize = 4 << 10;

thread_local! {
    static IDS: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// `text` copied into this thread's arena: one allocation per [`ARENA`] bytes of ids instead
/// of one per id, and a clone (the id goes upstream and back to the client) shares the
/// bytes instead of copying them. An arena is freed once the last id cut from it is.
fn in_arena(text: &[u8]) -> Bytes {
    IDS.with(|cell| {
        let Ok(mut arena) = cell.try_borrow_mut() else {
            return Bytes::copy_from_slice(text);
        };
        if arena.capacity() < text.len() {
            *arena = BytesMut::with_capacity(ARENA.max(text.len()));
        }
        arena.extend_from_slice(text);
        arena.split().freeze()
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Ids drawn from one `getrandom` call (per thread): one syscall per 256 requests instead
/// of one per request. The bytes are the OS's, used once each.
const BATCH: usize = 256 * 16;

struct Batch {
    bytes: [u8; BATCH],
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<Batch> = const {
        std::cell::RefCell::new(Batch { bytes: [0; BATCH], used: BATCH })
    };
}

/// Fills `out` (at most [`BATCH`] bytes) from this thread's batch of OS randomness,
/// refilling it when used up; false when the OS source failed.
fn random_bytes(out: &mut [u8]) -> bool {
    if out.len() > BATCH {
        return getrandom::fill(out).is_ok();
    }
    RANDOM.with(|cell| {
        let Ok(mut b) = cell.try_borrow_mut() else {
            return getrandom::fill(out).is_ok();
        };
        if b.used + out.len() > BATCH {
            if getrandom::fill(&mut b.bytes).is_err() {
                return false;
            }
            b.used = 0;
        }
        let start = b.used;
        out.copy_from_slice(&b.bytes[start..start + out.len()]);
        // Never handed out twice.
        b.bytes[start..start + out.len()].fill(0);
        b.used += out.len();
        true
    })
}

fn fallback(raw: &mut [u8; 16]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    raw[..8].copy_from_slice(&n.to_be_bytes());
    raw[8..].copy_from_slice(&t.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(trust: bool) -> RequestIds {
        RequestIds::new(&RequestId {
            header: HeaderName::from_static("x-request-id"),
            trust,
        })
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn untrusted_header_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("client-chosen"));
        let id = ids(false).assign(&h);
        assert_ne!(id, "client-chosen");
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn trusted_header_is_reused_when_acceptable() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("lb-1234.abc"));
        assert_eq!(ids(true).assign(&h), "lb-1234.abc");
        assert_eq!(h.get("x-request-id").unwrap(), "lb-1234.abc");
    }

    #[test]
    fn trusted_header_with_bad_value_or_duplicates_is_replaced() {
        for bad in ["a b", "x\"y", "", "é", &"a".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert("x-request-id", v);
            }
            let id = ids(true).assign(&h);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.append("x-request-id", HeaderValue::from_static("one"));
        h.append("x-request-id", HeaderValue::from_static("two"));
        let id = ids(true).assign(&h);
        assert_eq!(id.len(), 32);
    }
}
