//! Entry ids: KSUID-like, sortable by creation time, Clerk's shape (`alid_…`, `blid_…`,
//! later `inv_…`).
//!
//! An id is a prefix followed by 27 base62 characters (`0-9A-Za-z`, in ASCII order) encoding a
//! 160-bit big-endian number: 4 bytes of seconds since the KSUID epoch (1 400 000 000 Unix
//! seconds, 2014-05-13T16:53:20Z) and 16 random bytes from the OS (`getrandom`). Because the
//! alphabet is in ASCII order and the text is zero-padded, comparing two ids as strings
//! compares their times first.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds of the KSUID epoch.
pub const KSUID_EPOCH: u64 = 1_400_000_000;

/// Length of the base62 part of an id.
pub const ENCODED_LEN: usize = 27;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new id: `prefix` + 27 base62 characters (time first, then 16 random bytes).
pub fn new_id(prefix: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts = u32::try_from(secs.saturating_sub(KSUID_EPOCH)).unwrap_or(u32::MAX);
    encode(prefix, ts, &random_payload())
}

/// Whether `s` is `prefix` followed by 27 base62 characters.
pub fn is_valid_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == ENCODED_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// `prefix` + the base62 form of `ts ‖ payload` (big-endian), zero-padded to 27 characters.
pub(crate) fn encode(prefix: &str, ts: u32, payload: &[u8; 16]) -> String {
    let mut words = [0u32; 5];
    words[0] = ts;
    for (w, chunk) in words[1..].iter_mut().zip(payload.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(chunk);
        *w = u32::from_be_bytes(b);
    }
    let mut digits = [b'0'; ENCODED_LEN];
    for slot in digits.iter_mut().rev() {
        if words.iter().all(|&w| w == 0) {
            break;
        }
        // Long division of the 160-bit number by 62, most significant word first.
        let mut rem: u64 = 0;
        for w in words.iter_mut() {
            let acc = (rem << 32) | u64::from(*w);
            *w = u32::try_from(acc / 62).unwrap_or(u32::MAX);
            rem = acc % 62;
        }
        *slot = ALPHABET.get(rem as usize).copied().unwrap_or(b'0');
    }
    let mut out = String::with_capacity(prefix.len() + ENCODED_LEN);
    out.push_str(prefix);
    out.extend(digits.iter().map(|&b| char::from(b)));
    out
}

/// 16 random bytes from the OS. Should the OS source fail (it practically never does), falls
/// back to std's per-process random hasher keys mixed with the clock and a counter, so ids stay
/// unique rather than the call failing.
fn random_payload() -> [u8; 16] {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf).is_ok() {
        return buf;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u64(n);
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn shape_and_alphabet() {
        for prefix in ["alid_", "blid_", "inv_", ""] {
            let id = new_id(prefix);
            assert!(id.starts_with(prefix), "{id}");
            assert_eq!(id.len(), prefix.len() + ENCODED_LEN, "{id}");
            assert!(is_valid_id(prefix, &id), "{id}");
        }
    }

    #[test]
    fn encode_known_values() {
        let cases: &[(u32, [u8; 16], &str)] = &[
            (0, [0; 16], "000000000000000000000000000"),
            (0, one(), "000000000000000000000000001"),
            (0, val(61), "00000000000000000000000000z"),
            (0, val(62), "000000000000000000000000010"),
            // 2^160 - 1, the largest KSUID, from the KSUID reference implementation.
            (u32::MAX, [0xff; 16], "aWgEPTl1tmebfsQzFP4bxwgy80V"),
        ];
        for (ts, payload, want) in cases {
            assert_eq!(encode("", *ts, payload), *want, "ts={ts}");
        }
    }

    fn val(v: u8) -> [u8; 16] {
        let mut p = [0u8; 16];
        p[15] = v;
        p
    }

    fn one() -> [u8; 16] {
        val(1)
    }

    #[test]
    fn sortable_by_time() {
        // A later second sorts after an earlier one whatever the random part.
        let pairs = [(0u32, 1u32), (1, 2), (100, 101), (123_456_789, 123_456_790)];
        for (a, b) in pairs {
            let early = encode("blid_", a, &[0xff; 16]);
            let late = encode("blid_", b, &[0; 16]);
            assert!(early < late, "{early} !< {late}");
        }
        // And new ids carry the current time: at least that of an id encoded a second ago.
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ts = u32::try_from(secs - KSUID_EPOCH - 1).unwrap_or(0);
        assert!(encode("alid_", ts, &[0xff; 16]) < new_id("alid_"));
    }

    #[test]
    fn valid_id_rejects() {
        let cases = [
            ("alid_", "blid_000000000000000000000000001", false),
            ("alid_", "alid_00000000000000000000000001", false),
            ("alid_", "alid_0000000000000000000000000001", false),
            ("alid_", "alid_00000000000000000000000000-", false),
            ("alid_", "alid_000000000000000000000000z", false),
            ("alid_", "alid_00000000000000000000000000z", true),
        ];
        for (prefix, s, want) in cases {
            assert_eq!(is_valid_id(prefix, s), want, "{s}");
        }
    }

    #[test]
    fn unique_over_100k() {
        let ids: HashSet<String> = (0..100_000).map(|_| new_id("alid_")).collect();
        assert_eq!(ids.len(), 100_000);
    }
}
