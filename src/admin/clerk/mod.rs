//! The Clerk Backend API v1 subset idgate speaks (`../shared/clerk/CONTRACT.md`).
//!
//! | method | path | file |
//! |--------|------|------|
//! | GET, POST | `/v1/allowlist_identifiers` | [`allowlist`] |
//! | DELETE | `/v1/allowlist_identifiers/{id}` | [`allowlist`] |
//! | GET, POST | `/v1/blocklist_identifiers` | [`blocklist`] |
//! | DELETE | `/v1/blocklist_identifiers/{id}` | [`blocklist`] |
//! | GET, PATCH | `/v1/instance` | [`instance`] |
//! | PATCH | `/v1/instance/restrictions` | [`instance`] |
//! | PATCH | `/v1/beta_features/instance_settings` | [`instance`] |
//! | GET, POST | `/v1/invitations` | [`invitations`] |
//! | POST | `/v1/invitations/bulk`, `/v1/invitations/{id}/revoke` | [`invitations`] |
//! | DELETE | `/v1/invitations/{id}` | [`invitations`] |
//!
//! The list logic shared by both lists lives in [`identifiers`]. This file holds what every
//! resource needs: ids, timestamps and the mapping of store errors.

pub mod allowlist;
pub mod blocklist;
pub mod identifiers;
pub mod instance;
pub mod invitations;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;

use super::AdminState;
use super::error::ClerkError;
use crate::lists::ListKind;
use crate::store::{Store, StoreError};

/// Every `/v1` route (without auth; [`super::router`] adds it).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .merge(allowlist::routes())
        .merge(blocklist::routes())
        .merge(instance::routes())
        .merge(invitations::routes())
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `prefix` + 27 base62 digits of a stable 128-bit hash of `parts` (joined with NUL).
///
/// Ids built this way start with `00000` (a 128-bit value needs at most 22 of the 27 digits),
/// so they never collide with the store's KSUID-like ids, whose first digit is the time.
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Fnv128::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.write(&[0]);
        }
        h.write(p.as_bytes());
    }
    let mut n = h.0;
    let mut digits = [b'0'; 27];
    for d in digits.iter_mut().rev() {
        let rem = usize::try_from(n % 62).unwrap_or(0);
        *d = BASE62.get(rem).copied().unwrap_or(b'0');
        n /= 62;
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.extend(digits.iter().map(|&b| char::from(b)));
    out
}

/// FNV-1a, 128 bits: stable across builds and platforms (unlike `DefaultHasher`).
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Fnv128(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// The instance id: `ins_` + a hash of where the store keeps its data (the instance *is* its
/// data), so it stays the same across restarts of one deployment and differs between
/// deployments with different stores.
pub fn instance_id(store: &Store) -> String {
    let location = match store.as_sqlite() {
        Some(s) => format!("sqlite:{}", s.path().display()),
        None => "store".to_owned(),
    };
    derived_id("ins_", &["idgate-instance", &location])
}

impl AdminState {
    /// This deployment's `ins_…` id (see [`instance_id`]).
    pub fn instance_id(&self) -> String {
        instance_id(&self.store)
    }
}

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub use crate::store::id_prefix;

/// `allowlist_identifier` / `blocklist_identifier`.
pub fn object_name(list: ListKind) -> &'static str {
    match list {
        ListKind::Allow => "allowlist_identifier",
        ListKind::Block => "blocklist_identifier",
    }
}

/// Store failures as Clerk errors. Duplicates and unknown ids are handled by the callers
/// (they know the identifier); here they still map to the right codes.
pub fn store_error(list: ListKind, e: StoreError) -> ClerkError {
    match e {
        StoreError::Duplicate { existing, .. } => ClerkError::Duplicate {
            list,
            long_message: format!("the identifier {existing} already exists"),
        },
        StoreError::NotFound(id) => ClerkError::IdentifierNotFound(crate::identifier::snippet(&id)),
        other => ClerkError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_well_formed() {
        let a = derived_id("alid_", &["config", "a@x.com"]);
        assert_eq!(a, derived_id("alid_", &["config", "a@x.com"]));
        assert_ne!(a, derived_id("alid_", &["config", "b@x.com"]));
        assert_ne!(a, derived_id("alid_", &["lists/a.txt", "a@x.com"]));
        // The separator matters: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            derived_id("x_", &["ab", "c"]),
            derived_id("x_", &["a", "bc"])
        );
        for id in [
            &a,
            &derived_id("blid_", &[]),
            &derived_id("ins_", &["\u{10ffff}"]),
        ] {
            let (_, digits) = id.split_once('_').unwrap();
            assert_eq!(digits.len(), 27, "{id}");
            assert!(digits.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
            assert!(digits.starts_with("00000"), "{id}");
        }
        // Pinned: ids must not change between releases (clients keep them).
        assert_eq!(derived_id("alid_", &[""]), derived_id("alid_", &[]));
        assert_eq!(Fnv128::OFFSET, {
            let mut h = Fnv128::new();
            h.write(b"");
            h.0
        });
    }

    #[test]
    fn fnv128_known_vector() {
        // FNV-1a 128 of "a" (reference value from the FNV specification's test suite).
        let mut h = Fnv128::new();
        h.write(b"a");
        assert_eq!(h.0, 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn instance_id_depends_on_the_store_location() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open_sqlite(&dir.path().join("a.db")).unwrap();
        let b = Store::open_sqlite(&dir.path().join("b.db")).unwrap();
        let again = Store::open_sqlite(&dir.path().join("a.db"));
        let one = instance_id(&a);
        assert!(one.starts_with("ins_") && one.len() == 31, "{one}");
        assert_ne!(one, instance_id(&b));
        drop(a);
        assert_eq!(one, instance_id(&again.unwrap()));
    }

    #[test]
    fn unix_ms_table() {
        use std::time::Duration;
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(
            unix_ms(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            1_700_000_000_123
        );
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
