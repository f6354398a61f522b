//! The Magic API's answers: the envelope `{"data", "error_code", "message", "status"}` and
//! every error it can carry (status, code and message live here, in one place).
//!
//! Success: `{"data": …, "error_code": "", "message": "", "status": "ok"}` with 200.
//! Failure: a non-2xx status, `"status": "failed"`, an `error_code` in Magic's upper-snake
//! style and a human `message`; `data` carries the details a client can act on (the
//! offending entries), or `{}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One refused Magic API call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MagicError {
    /// No `X-Magic-Secret-Key` header (401).
    #[error("missing X-Magic-Secret-Key")]
    MissingSecretKey,
    /// The key matches none of `admin.secret_keys` (401).
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// `admin.magic_client_id` is not set, so no call can name this instance (403).
    #[error("admin.magic_client_id is not configured")]
    ClientIdNotConfigured,
    /// `target_client_id` is absent (400).
    #[error("target_client_id is missing")]
    MissingClientId,
    /// `target_client_id` is not this instance's (403).
    #[error("target_client_id does not match")]
    WrongClientId(String),
    /// The body is not the JSON object this call takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// A body that is not JSON (415).
    #[error("content type {0} is unsupported")]
    UnsupportedMediaType(String),
    /// A body over the limit (413).
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// Malformed entries (422); `data.rejected` lists every one.
    #[error("{message}")]
    MalformedEntries {
        /// Names the first offenders.
        message: String,
        /// `[{list, position, entry, error}]`, all of them.
        rejected: Vec<Value>,
    },
    /// The call would put a list over `lists.max_entries` (422).
    #[error("{message}")]
    LimitExceeded {
        /// Names the list, the counts and the first entries over the limit.
        message: String,
        /// `{list, total, limit, over}`.
        details: Value,
    },
    /// A DELETE names entries that come from the config or list files (409).
    #[error("{message}")]
    ManagedElsewhere {
        /// Names the entries and their sources.
        message: String,
        /// `[{list, entry, source}]`.
        entries: Vec<Value>,
    },
    /// Not GET, PUT, PATCH or DELETE (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store failed (500); the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MagicError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use MagicError as E;
        match self {
            E::MissingSecretKey | E::InvalidSecretKey => StatusCode::UNAUTHORIZED,
            E::ClientIdNotConfigured | E::WrongClientId(_) => StatusCode::FORBIDDEN,
            E::MissingClientId | E::BadRequest(_) => StatusCode::BAD_REQUEST,
            E::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            E::MalformedEntries { .. } | E::LimitExceeded { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::ManagedElsewhere { .. } => StatusCode::CONFLICT,
            E::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error_code`.
    pub fn code(&self) -> &'static str {
        use MagicError as E;
        match self {
            E::MissingSecretKey => "MISSING_SECRET_KEY",
            E::InvalidSecretKey => "INVALID_SECRET_KEY",
            E::ClientIdNotConfigured => "MAGIC_CLIENT_ID_NOT_CONFIGURED",
            E::MissingClientId => "MISSING_TARGET_CLIENT_ID",
            E::WrongClientId(_) => "INVALID_TARGET_CLIENT_ID",
            E::BadRequest(_) => "BAD_REQUEST",
            E::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            E::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            E::MalformedEntries { .. } => "MALFORMED_ENTRIES",
            E::LimitExceeded { .. } => "LIST_LIMIT_EXCEEDED",
            E::ManagedElsewhere { .. } => "MANAGED_IN_CONFIG",
            E::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            E::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The human `message`.
    pub fn message(&self) -> String {
        use MagicError as E;
        match self {
            E::MissingSecretKey => {
                "The X-Magic-Secret-Key header is missing; send one of admin.secret_keys.".into()
            }
            E::InvalidSecretKey => "The secret key in X-Magic-Secret-Key is invalid.".into(),
            E::ClientIdNotConfigured => "The Magic access-control API is off: admin.magic_client_id is not set in the idgate config. Set it to the target_client_id your calls send.".into(),
            E::MissingClientId => "target_client_id is missing (body field, or query parameter on GET).".into(),
            E::WrongClientId(got) => format!(
                "target_client_id {got:?} does not match this idgate instance's admin.magic_client_id; nothing was changed."
            ),
            E::BadRequest(m) | E::MalformedEntries { message: m, .. } | E::LimitExceeded { message: m, .. } | E::ManagedElsewhere { message: m, .. } => m.clone(),
            E::UnsupportedMediaType(got) => {
                format!("Content-Type {got} is unsupported; send application/json.")
            }
            E::TooLarge(limit) => format!(
                "The request body is larger than {limit} bytes; send the list in several PATCH calls."
            ),
            E::MethodNotAllowed => {
                "This endpoint supports GET, PUT, PATCH and DELETE.".into()
            }
            E::Internal(_) => "The admin store is unavailable; nothing was changed. See the idgate log for details.".into(),
        }
    }

    fn data(&self) -> Value {
        match self {
            MagicError::MalformedEntries { rejected, .. } => json!({ "rejected": rejected }),
            MagicError::LimitExceeded { details, .. } => details.clone(),
            MagicError::ManagedElsewhere { entries, .. } => json!({ "entries": entries }),
            _ => json!({}),
        }
    }
}

impl IntoResponse for MagicError {
    fn into_response(self) -> Response {
        if let MagicError::Internal(detail) = &self {
            tracing::error!("Magic API: {detail}");
        }
        let body = json!({
            "data": self.data(),
            "error_code": self.code(),
            "message": self.message(),
            "status": "failed",
        });
        (self.status(), Json(body)).into_response()
    }
}

/// A success envelope around `data`.
pub fn ok(data: Value) -> Response {
    Json(json!({
        "data": data,
        "error_code": "",
        "message": "",
        "status": "ok",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_non_2xx_with_a_code_and_a_message() {
        let all = [
            MagicError::MissingSecretKey,
            MagicError::InvalidSecretKey,
            MagicError::ClientIdNotConfigured,
            MagicError::MissingClientId,
            MagicError::WrongClientId("x".into()),
            MagicError::BadRequest("b".into()),
            MagicError::UnsupportedMediaType("text/plain".into()),
            MagicError::TooLarge(1),
            MagicError::MalformedEntries {
                message: "m".into(),
                rejected: vec![],
            },
            MagicError::LimitExceeded {
                message: "l".into(),
                details: json!({}),
            },
            MagicError::ManagedElsewhere {
                message: "c".into(),
                entries: vec![],
            },
            MagicError::MethodNotAllowed,
            MagicError::Internal("secret detail".into()),
        ];
        let mut codes = std::collections::HashSet::new();
        for e in all {
            assert!(!e.status().is_success(), "{e:?}");
            assert!(codes.insert(e.code()), "duplicate code {}", e.code());
            assert!(!e.message().is_empty());
            assert!(!e.message().contains("secret detail"));
        }
    }
}
