//! Bearer authentication of the Clerk API (`/v1/*`).
//!
//! `Authorization: Bearer <key>` is compared in constant time against **every** configured
//! `admin.secret_keys` entry (no early exit, so timing does not reveal which key, or whether
//! any, matched), as SHA-256 digests (equal lengths, so nor does it reveal a key's length).
//! The keys are the current snapshot's: a reload that rotates or removes one applies to the
//! next request. Failures are 401 with Clerk's codes (CONTRACT §1): a header that is not
//! `Bearer <key>` → `authorization_header_format_invalid`; a missing header or an unknown key
//! → `clerk_key_invalid`. With no keys configured every `/v1` request is refused. Keys are
//! never logged.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use super::AdminState;
use super::error::ClerkError;
use crate::snapshot::AdminKeys;

/// Checks the presented `Authorization` header value against `keys`.
pub fn check(header: Option<&[u8]>, keys: &AdminKeys) -> Result<(), ClerkError> {
    let Some(value) = header else {
        return Err(ClerkError::KeyInvalid);
    };
    let presented = bearer_token(value).ok_or(ClerkError::AuthorizationHeaderFormat)?;
    if key_matches(presented, keys) {
        Ok(())
    } else {
        Err(ClerkError::KeyInvalid)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, one or more spaces, non-empty
/// token without whitespace).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let rest = value.get(7..)?;
    let token = rest.trim_ascii();
    if token.is_empty()
        || token
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return None;
    }
    Some(token)
}

/// Compares the digest of `presented` with every key's, accumulating the result without
/// branching on it. Shared by the Clerk Bearer check and the Magic API's `X-Magic-Secret-Key`.
pub(crate) fn key_matches(presented: &[u8], keys: &AdminKeys) -> bool {
    let presented = AdminKeys::digest(presented);
    let mut any = Choice::from(0u8);
    for key in keys.digests() {
        any |= key.ct_eq(&presented);
    }
    bool::from(any)
}

/// Middleware guarding `/v1`.
pub async fn require_secret_key(
    State(st): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // Checked before the request runs: the snapshot is not held while it does.
    let checked = check(value, &st.snapshots.load().admin_keys);
    match checked {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_table() {
        let keys = AdminKeys::new(&[
            "sk_test_one".to_owned(),
            "sk_live_two".to_owned(),
            String::new(),
        ]);
        let cases: &[(Option<&str>, Result<(), &str>)] = &[
            (Some("Bearer sk_test_one"), Ok(())),
            (Some("bearer sk_live_two"), Ok(())),
            (Some("Bearer  sk_live_two "), Ok(())),
            (Some("Bearer sk_test_on"), Err("clerk_key_invalid")),
            (Some("Bearer sk_test_one1"), Err("clerk_key_invalid")),
            (Some("Bearer SK_TEST_ONE"), Err("clerk_key_invalid")),
            (None, Err("clerk_key_invalid")),
            (
                Some("sk_test_one"),
                Err("authorization_header_format_invalid"),
            ),
            (
                Some("Basic sk_test_one"),
                Err("authorization_header_format_invalid"),
            ),
            (Some("Bearer"), Err("authorization_header_format_invalid")),
            (Some("Bearer "), Err("authorization_header_format_invalid")),
            (
                Some("Bearer a b"),
                Err("authorization_header_format_invalid"),
            ),
            (Some(""), Err("authorization_header_format_invalid")),
        ];
        for (header, want) in cases {
            let got = check(header.map(str::as_bytes), &keys).map_err(|e| e.code());
            assert_eq!(&got, want, "{header:?}");
        }
    }

    #[test]
    fn no_keys_refuses_everything_and_empty_keys_never_match() {
        assert_eq!(
            check(Some(b"Bearer x"), &AdminKeys::default()).unwrap_err(),
            ClerkError::KeyInvalid
        );
        assert!(!key_matches(b"", &AdminKeys::new(&[String::new()])));
        let two = AdminKeys::new(&["a".into(), "b".into()]);
        assert!(key_matches(b"b", &two));
        assert!(key_matches(b"a", &two));
        assert!(!key_matches(b"", &two));
        assert_eq!(format!("{two:?}"), "AdminKeys(2 keys)");
    }
}
