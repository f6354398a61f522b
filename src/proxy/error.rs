//! Every answer the proxy gives itself, and the one map from error to status.
//!
//! Bodies use Clerk's error envelope (`{"errors":[{message,long_message,code,meta}]}`) with
//! `Content-Type: application/json`, so Clerk-aware frontends render them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use serde_json::{Value, json};

use crate::gate::extract::Refusal;

use super::RespBody;

/// Why the proxy answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "the request could not be forwarded: the upstream refused the connection or failed ({0})"
    )]
    UpstreamConnect(String),
    #[error("connecting to the upstream timed out")]
    UpstreamConnectTimeout,
    #[error("the upstream did not answer in time")]
    UpstreamResponseTimeout,
    #[error("the upstream connection failed: {0}")]
    Upstream(String),
    #[error("the request body is larger than the limit of {limit} bytes for this route")]
    BodyTooLarge { limit: usize },
    #[error("too many sign-up requests are being received at once; try again shortly")]
    Busy,
    #[error("the request body was not received in time")]
    BodyReadTimeout,
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("method {method} is not allowed on this route; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("no identifier was found in the request; this route requires one")]
    IdentifierMissing,
    #[error("{value:?} is not a valid identifier: {error}")]
    IdentifierInvalid { value: String, error: String },
    /// A `jwt`/`userinfo` token failed a check (a fixed reason, no token material).
    #[error("the sign-in token was refused: {0}")]
    TokenInvalid(&'static str),
    /// The identity provider could not vouch for a token (the cause is logged, not sent).
    #[error("the identity provider could not be reached; try again shortly")]
    ProviderUnavailable,
}

impl ProxyError {
    /// The status for this error: the single error → status map.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamConnect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Busy | ProxyError::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TokenInvalid(_) => StatusCode::UNAUTHORIZED,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Refused(r) => {
                StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::BodyRead(_)
            | ProxyError::BadRequest { .. }
            | ProxyError::IdentifierMissing
            | ProxyError::IdentifierInvalid { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The Clerk-style error code.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamConnectTimeout
            | ProxyError::UpstreamResponseTimeout
            | ProxyError::Upstream(_) => "upstream_unavailable",
            ProxyError::BodyTooLarge { .. } => "request_body_too_large",
            ProxyError::BodyReadTimeout => "request_timeout",
            ProxyError::Busy => "busy",
            ProxyError::BodyRead(_) => "request_body_invalid",
            ProxyError::Refused(r) => r.code(),
            ProxyError::BadRequest { code, .. } => code,
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::IdentifierMissing => "form_param_missing",
            ProxyError::IdentifierInvalid { .. } => "form_param_format_invalid",
            ProxyError::TokenInvalid(_) => "authentication_invalid",
            ProxyError::ProviderUnavailable => "identity_provider_unavailable",
        }
    }

    fn short(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_GATEWAY => "Bad gateway",
            StatusCode::GATEWAY_TIMEOUT => "Gateway timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::UNAUTHORIZED => "Invalid authentication",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported content type",
            _ => "Request refused",
        }
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<RespBody> {
        let status = self.status();
        let mut resp = envelope(
            status,
            self.short(),
            &self.to_string(),
            self.code(),
            json!({}),
        );
        if let ProxyError::MethodNotAllowed { allow, .. } = &self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        if let ProxyError::Busy = &self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ProxyError::ProviderUnavailable = &self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::BAD_REQUEST
            || status == StatusCode::PAYLOAD_TOO_LARGE
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::UNAUTHORIZED
        {
            // The body may not have been read to the end: don't reuse the connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A Clerk error envelope with one error.
pub fn envelope(
    status: StatusCode,
    message: &str,
    long_message: &str,
    code: &str,
    meta: Value,
) -> Response<RespBody> {
    let body = json!({
        "errors": [{
            "message": message,
            "long_message": long_message,
            "code": code,
            "meta": meta,
        }]
    });
    json_response(status, &body)
}

/// A JSON response with exactly `Content-Type: application/json`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<RespBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_map() {
        let cases = [
            (ProxyError::UpstreamConnect("x".into()), 502),
            (ProxyError::Upstream("x".into()), 502),
            (ProxyError::UpstreamConnectTimeout, 504),
            (ProxyError::UpstreamResponseTimeout, 504),
            (ProxyError::BodyTooLarge { limit: 1 }, 413),
            (ProxyError::BodyReadTimeout, 408),
            (ProxyError::Busy, 503),
            (ProxyError::BodyRead("x".into()), 400),
            (
                ProxyError::MethodNotAllowed {
                    method: "GET".into(),
                    allow: "POST".into(),
                },
                405,
            ),
            (ProxyError::IdentifierMissing, 400),
            (ProxyError::TokenInvalid("x"), 401),
            (ProxyError::ProviderUnavailable, 503),
            (
                ProxyError::IdentifierInvalid {
                    value: "x".into(),
                    error: "y".into(),
                },
                400,
            ),
        ];
        for (err, want) in cases {
            let code = err.code();
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), want, "{code}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
