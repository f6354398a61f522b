//! Clerk's error envelope and the JSON body extractor of the admin API.
//!
//! Every non-2xx answer under `/v1` is `{"errors":[{message,long_message,code,meta}]}` with
//! `Content-Type: application/json` (CONTRACT §1). [`ClerkError`] is one error (its status,
//! code and texts live here, in one place); [`ClerkErrors`] is what handlers return, one or more
//! errors answered together (validation collects all of them, as Clerk does).
//!
//! [`ClerkJson`] reads a request body as a JSON object and hands it to a [`FromParams`] type
//! through [`Params`], which records wrong types and reports every key nobody asked for as
//! `form_param_unknown`. Rejections become Clerk errors: 400 `request_body_invalid`,
//! 413 `request_body_too_large`, 415 `unsupported_content_type`, 422 `form_param_*`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::lists::ListKind;

/// One Clerk API error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// `Authorization` present but not `Bearer <key>` (401).
    #[error("invalid Authorization header format")]
    AuthorizationHeaderFormat,
    /// Missing or unknown secret key (401).
    #[error("the secret key is invalid")]
    KeyInvalid,
    /// The body is not a JSON object (400).
    #[error("the request body is invalid")]
    BodyInvalid,
    /// A body with a media type other than JSON (415).
    #[error("content type {0} is unsupported")]
    UnsupportedContentType(String),
    /// A body over the admin body limit (413).
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A body key this endpoint does not know (422).
    #[error("{0} is not a valid parameter for this request")]
    ParamUnknown(String),
    /// A body value of the wrong JSON type (422).
    #[error("`{param}` must be a `{expected}`")]
    ParamTypeInvalid {
        /// The key.
        param: String,
        /// `bool`, `string`, `array of strings`.
        expected: &'static str,
    },
    /// A required body value is absent or empty (422).
    #[error("{0} must be included")]
    ParamMissing(String),
    /// A malformed value, e.g. an identifier (422).
    #[error("{param}: {long_message}")]
    ParamFormatInvalid {
        /// The key.
        param: String,
        /// The full explanation.
        long_message: String,
    },
    /// A value that is well-formed but not allowed (422).
    #[error("{param}: {long_message}")]
    ParamValueInvalid {
        /// The key.
        param: String,
        /// The full explanation.
        long_message: String,
    },
    /// A parameter not allowed together with another one's value (422).
    #[error("{param}: {long_message}")]
    ConditionalParamDisallowed {
        /// The key.
        param: String,
        /// The full explanation.
        long_message: String,
    },
    /// A query parameter that does not parse (400).
    #[error("{param}: {long_message}")]
    QueryValueInvalid {
        /// The query key.
        param: String,
        /// The full explanation.
        long_message: String,
    },
    /// The identifier is already on the list (400).
    #[error("duplicate {list} list identifier: {long_message}")]
    Duplicate {
        /// Which list.
        list: ListKind,
        /// Names the identifier (and where the existing entry comes from).
        long_message: String,
    },
    /// No identifier with this id (404).
    #[error("no identifier was found with id {0}")]
    IdentifierNotFound(String),
    /// Pending invitations exist for these addresses (400 `duplicate_record`,
    /// `meta.email_addresses`).
    #[error("there are already pending invitations for {}", .0.join(", "))]
    DuplicateInvitation(Vec<String>),
    /// No invitation with this id (404).
    #[error("no invitation was found with id {0}")]
    InvitationNotFound(String),
    /// Revoking a revoked invitation (400).
    #[error("invitation is already revoked")]
    InvitationAlreadyRevoked,
    /// Revoking an accepted invitation (400).
    #[error("invitation is already accepted")]
    InvitationAlreadyAccepted,
    /// A bulk call with more items than allowed (422).
    #[error("at most {max} items per call")]
    BulkSizeExceeded {
        /// The most items allowed.
        max: usize,
        /// How many were sent.
        got: usize,
    },
    /// No such endpoint under `/v1` (404).
    #[error("no such endpoint")]
    EndpointNotFound,
    /// The endpoint exists, the method does not (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store failed (500). The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

const INVITATION_REVOKED: &str = "Invitation is already revoked.";
const INVITATION_ACCEPTED: &str = "Invitation is already accepted, try signing in instead.";

const KEY_INVALID: &str =
    "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.";

impl ClerkError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use ClerkError as E;
        match self {
            E::AuthorizationHeaderFormat | E::KeyInvalid => StatusCode::UNAUTHORIZED,
            E::BodyInvalid
            | E::QueryValueInvalid { .. }
            | E::Duplicate { .. }
            | E::DuplicateInvitation(_)
            | E::InvitationAlreadyRevoked
            | E::InvitationAlreadyAccepted => StatusCode::BAD_REQUEST,
            E::UnsupportedContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::ParamUnknown(_)
            | E::ParamTypeInvalid { .. }
            | E::ParamMissing(_)
            | E::ParamFormatInvalid { .. }
            | E::ParamValueInvalid { .. }
            | E::ConditionalParamDisallowed { .. }
            | E::BulkSizeExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::IdentifierNotFound(_) | E::InvitationNotFound(_) | E::EndpointNotFound => {
                StatusCode::NOT_FOUND
            }
            E::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Clerk's machine-readable code.
    pub fn code(&self) -> &'static str {
        use ClerkError as E;
        match self {
            E::AuthorizationHeaderFormat => "authorization_header_format_invalid",
            E::KeyInvalid => "clerk_key_invalid",
            E::BodyInvalid => "request_body_invalid",
            E::UnsupportedContentType(_) => "unsupported_content_type",
            E::BodyTooLarge { .. } => "request_body_too_large",
            E::ParamUnknown(_) => "form_param_unknown",
            E::ParamTypeInvalid { .. } => "form_param_type_invalid",
            E::ParamMissing(_) => "form_param_missing",
            E::ParamFormatInvalid { .. } => "form_param_format_invalid",
            E::ParamValueInvalid { .. } => "form_param_value_invalid",
            E::ConditionalParamDisallowed { .. } => "form_conditional_param_disallowed",
            E::QueryValueInvalid { .. } => "invalid_query_parameter_value",
            E::Duplicate { .. } | E::DuplicateInvitation(_) => "duplicate_record",
            E::IdentifierNotFound(_) | E::InvitationNotFound(_) | E::EndpointNotFound => {
                "resource_not_found"
            }
            E::InvitationAlreadyRevoked => "invitation_already_revoked",
            E::InvitationAlreadyAccepted => "invitation_already_accepted",
            E::BulkSizeExceeded { .. } => "bulk_size_exceeded",
            E::MethodNotAllowed => "request_method_not_allowed",
            E::Internal(_) => "internal_clerk_error",
        }
    }

    /// The short message.
    pub fn message(&self) -> String {
        use ClerkError as E;
        match self {
            E::AuthorizationHeaderFormat => "Invalid Authorization header format".into(),
            E::KeyInvalid => KEY_INVALID.into(),
            E::BodyInvalid => "Request body invalid".into(),
            E::UnsupportedContentType(_) => "Unsupported content type".into(),
            E::BodyTooLarge { .. } => "Request body too large".into(),
            E::ParamUnknown(_) => "is unknown".into(),
            E::ParamTypeInvalid { .. }
            | E::ParamFormatInvalid { .. }
            | E::ParamValueInvalid { .. }
            | E::QueryValueInvalid { .. } => "is invalid".into(),
            E::ParamMissing(_) => "is missing".into(),
            E::ConditionalParamDisallowed { .. } => "is not allowed".into(),
            E::Duplicate { list, .. } => format!("duplicate {}list identifier", list.as_str()),
            E::IdentifierNotFound(_) => "Identifier not found".into(),
            E::DuplicateInvitation(_) => "duplicate invitation".into(),
            E::InvitationNotFound(_) => "not found".into(),
            E::InvitationAlreadyRevoked => INVITATION_REVOKED.into(),
            E::InvitationAlreadyAccepted => INVITATION_ACCEPTED.into(),
            E::BulkSizeExceeded { .. } => "too many items".into(),
            E::EndpointNotFound => "Resource not found".into(),
            E::MethodNotAllowed => "Method not allowed".into(),
            E::Internal(_) => "Oops, an unexpected error occurred".into(),
        }
    }

    /// The full explanation (always present; Python's SDK requires it).
    pub fn long_message(&self) -> String {
        use ClerkError as E;
        match self {
            E::AuthorizationHeaderFormat => {
                "Invalid Authorization header format. Must be \"Bearer <YOUR_API_KEY>\"".into()
            }
            E::KeyInvalid => KEY_INVALID.into(),
            E::BodyInvalid => "The request body is invalid. Please consult the API documentation for more information.".into(),
            E::UnsupportedContentType(got) => {
                format!("Content-Type {got} is unsupported. You should use application/json instead.")
            }
            E::BodyTooLarge { limit } => {
                format!("The request body is larger than the limit of {limit} bytes.")
            }
            E::ParamUnknown(key) => format!("{key} is not a valid parameter for this request."),
            E::ParamTypeInvalid { param, expected } => format!("`{param}` must be a `{expected}`."),
            E::ParamMissing(key) => format!("{key} must be included."),
            E::ParamFormatInvalid { long_message, .. }
            | E::ParamValueInvalid { long_message, .. }
            | E::ConditionalParamDisallowed { long_message, .. }
            | E::QueryValueInvalid { long_message, .. }
            | E::Duplicate { long_message, .. } => long_message.clone(),
            E::IdentifierNotFound(id) => format!("No identifier was found with id {id}"),
            E::DuplicateInvitation(addresses) => format!(
                "There are already pending invitations for the following email addresses: {}",
                addresses.join(", ")
            ),
            E::InvitationNotFound(id) => format!("No invitation was found with id {id}."),
            E::InvitationAlreadyRevoked => INVITATION_REVOKED.into(),
            E::InvitationAlreadyAccepted => INVITATION_ACCEPTED.into(),
            E::BulkSizeExceeded { max, got } => {
                format!("You can create at most {max} invitations per bulk call; this one has {got}.")
            }
            E::EndpointNotFound => {
                "The requested resource does not exist on this admin server.".into()
            }
            E::MethodNotAllowed => "This endpoint does not support this HTTP method.".into(),
            E::Internal(_) => "The admin store is unavailable; the change was not made. See the idgate log for details.".into(),
        }
    }

    /// `meta`: `param_name` for parameter errors, else empty.
    pub fn meta(&self) -> Map<String, Value> {
        use ClerkError as E;
        let mut meta = Map::new();
        match self {
            E::ParamUnknown(p) | E::ParamMissing(p) => {
                meta.insert("param_name".into(), Value::String(p.clone()));
            }
            E::ParamTypeInvalid { param, .. }
            | E::ParamFormatInvalid { param, .. }
            | E::ParamValueInvalid { param, .. }
            | E::ConditionalParamDisallowed { param, .. }
            | E::QueryValueInvalid { param, .. } => {
                meta.insert("param_name".into(), Value::String(param.clone()));
            }
            E::DuplicateInvitation(addresses) => {
                meta.insert(
                    "email_addresses".into(),
                    Value::Array(addresses.iter().cloned().map(Value::String).collect()),
                );
            }
            _ => {}
        }
        meta
    }

    fn to_json(&self) -> Value {
        json!({
            "message": self.message(),
            "long_message": self.long_message(),
            "code": self.code(),
            "meta": self.meta(),
        })
    }
}

/// One or more errors answered together; the status is the first error's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClerkErrors(pub Vec<ClerkError>);

impl From<ClerkError> for ClerkErrors {
    fn from(e: ClerkError) -> Self {
        ClerkErrors(vec![e])
    }
}

impl ClerkErrors {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.0
            .first()
            .map(ClerkError::status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ClerkErrors {
    fn into_response(self) -> Response {
        for e in &self.0 {
            if let ClerkError::Internal(detail) = e {
                tracing::error!("admin API: {detail}");
            }
        }
        let errors: Vec<Value> = self.0.iter().map(ClerkError::to_json).collect();
        (self.status(), Json(json!({ "errors": errors }))).into_response()
    }
}

impl IntoResponse for ClerkError {
    fn into_response(self) -> Response {
        ClerkErrors::from(self).into_response()
    }
}

/// A JSON request body's keys, taken one at a time by a [`FromParams`] type.
///
/// Absent and `null` both read as `None` (CONTRACT §1: "leave unchanged"). A value of the
/// wrong type records `form_param_type_invalid`; keys left over at [`Params::finish`] are
/// `form_param_unknown`.
#[derive(Debug, Default)]
pub struct Params {
    map: Map<String, Value>,
    errors: Vec<ClerkError>,
    /// Read from a form body: every value is a string (or, for a repeated key, an array of
    /// them), which booleans and integers are parsed from, as Clerk's server does.
    form: bool,
}

impl Params {
    /// Wraps a parsed JSON object.
    pub fn new(map: Map<String, Value>) -> Params {
        Params {
            map,
            errors: Vec::new(),
            form: false,
        }
    }

    /// Wraps the fields of a form body (see [`parse_form`]).
    pub fn from_form(map: Map<String, Value>) -> Params {
        Params {
            form: true,
            ..Params::new(map)
        }
    }

    fn wrong(&mut self, key: &str, expected: &'static str) {
        self.errors.push(ClerkError::ParamTypeInvalid {
            param: key.to_owned(),
            expected,
        });
    }

    /// An optional, nullable boolean.
    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            // Go's `strconv.ParseBool`, which Clerk's form decoding uses.
            Some(Value::String(s)) if self.form => match s.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
                _ => {
                    self.wrong(key, "bool");
                    None
                }
            },
            Some(_) => {
                self.wrong(key, "bool");
                None
            }
        }
    }

    /// An optional, nullable string.
    pub fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.wrong(key, "string");
                None
            }
        }
    }

    /// An optional, nullable array of strings.
    pub fn opt_strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            // A form key given once.
            Some(Value::String(s)) if self.form => Some(vec![s]),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s),
                        _ => {
                            self.wrong(key, "array of strings");
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.wrong(key, "array of strings");
                None
            }
        }
    }

    /// An optional, nullable JSON object.
    pub fn opt_object(&mut self, key: &str) -> Option<Map<String, Value>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                self.wrong(key, "object");
                None
            }
        }
    }

    /// An optional, nullable integer.
    pub fn opt_i64(&mut self, key: &str) -> Option<i64> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(Value::String(s)) if self.form && s.parse::<i64>().is_ok() => s.parse().ok(),
            Some(_) => {
                self.wrong(key, "integer");
                None
            }
        }
    }

    /// A required, non-empty string: `form_param_missing` when absent, null or empty.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let present = matches!(self.map.get(key), Some(v) if !v.is_null());
        match self.opt_string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.errors.push(ClerkError::ParamMissing(key.to_owned()));
                None
            }
            None => {
                if !present {
                    self.errors.push(ClerkError::ParamMissing(key.to_owned()));
                }
                None
            }
        }
    }

    /// Records an error found while reading (e.g. a bad enum value).
    pub fn push(&mut self, e: ClerkError) {
        self.errors.push(e);
    }

    /// Every recorded error, then one `form_param_unknown` per key nobody read.
    pub fn finish(self) -> Result<(), ClerkErrors> {
        let mut errors = self.errors;
        errors.extend(
            self.map
                .into_iter()
                .map(|(k, _)| ClerkError::ParamUnknown(k)),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ClerkErrors(errors))
        }
    }
}

/// A request body type read through [`Params`].
pub trait FromParams: Sized {
    /// Takes every key this type knows from `p`. Errors go into `p`; the value returned is
    /// only used when `p` finishes without errors.
    fn from_params(p: &mut Params) -> Self;
}

/// A JSON object body, validated into `T`, with rejections as Clerk errors.
///
/// An empty body reads as `{}` whatever the `Content-Type` (the JS SDK sends
/// `Content-Type: application/json` on bodiless requests).
#[derive(Debug)]
pub struct ClerkJson<T>(pub T);

impl<S: Send + Sync, T: FromParams> FromRequest<S> for ClerkJson<T> {
    type Rejection = ClerkErrors;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read_body(req, state).await?;
        let form = content_type.as_deref().is_some_and(is_form);
        let mut params = if form && !bytes.iter().all(u8::is_ascii_whitespace) {
            Params::from_form(parse_form(&bytes)?)
        } else {
            Params::new(parse_body(content_type.as_deref(), &bytes)?)
        };
        let value = T::from_params(&mut params);
        params.finish()?;
        Ok(ClerkJson(value))
    }
}

/// The id in a resource's path (`/v1/allowlist_identifiers/{id}`, `/v1/invitations/{id}`).
/// An id that does not percent-decode to UTF-8 is Clerk's 404 for an unknown id of the kind
/// (`INVITATION`: an invitation, else an identifier), in Clerk's envelope, not axum's plain
/// text.
#[derive(Debug)]
pub struct ClerkId<const INVITATION: bool>(pub String);

/// The id of an allowlist or blocklist identifier.
pub type IdentifierId = ClerkId<false>;
/// The id of an invitation.
pub type InvitationId = ClerkId<true>;

impl<S: Send + Sync, const INVITATION: bool> FromRequestParts<S> for ClerkId<INVITATION> {
    type Rejection = ClerkErrors;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(Path(id)) = Path::<String>::from_request_parts(parts, state).await {
            return Ok(ClerkId(id));
        }
        // As sent, still percent-encoded (ASCII).
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|p| p.iter().next().map(|(_, v)| v.to_owned()))
            .unwrap_or_default();
        Err(ClerkErrors(vec![if INVITATION {
            ClerkError::InvitationNotFound(raw)
        } else {
            ClerkError::IdentifierNotFound(raw)
        }]))
    }
}

/// A non-empty JSON body of any shape (the bulk endpoints take an array), with the same
/// rejections as [`ClerkJson`]: 413 `request_body_too_large` over the admin body limit, 415,
/// 400 — all as Clerk's JSON errors, never axum's plain-text ones.
#[derive(Debug)]
pub struct ClerkJsonValue(pub Value);

impl<S: Send + Sync> FromRequest<S> for ClerkJsonValue {
    type Rejection = ClerkErrors;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read_body(req, state).await?;
        Ok(ClerkJsonValue(parse_body_value(
            content_type.as_deref(),
            &bytes,
        )?))
    }
}

/// The `Content-Type` and the whole body (within the router's body limit).
async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(Option<String>, Bytes), ClerkError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ClerkError::BodyTooLarge {
                limit: super::BODY_LIMIT,
            }
        } else {
            ClerkError::BodyInvalid
        }
    })?;
    Ok((content_type, bytes))
}

/// The body as a JSON object (empty body: `{}`).
pub(crate) fn parse_body(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Map<String, Value>, ClerkError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match parse_body_value(content_type, bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(ClerkError::BodyInvalid),
    }
}

/// A non-empty JSON body of any shape (the bulk endpoints take an array).
pub(crate) fn parse_body_value(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Value, ClerkError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ClerkError::BodyInvalid);
    }
    let ct = content_type.unwrap_or("");
    if !is_json(ct) {
        let shown = if ct.is_empty() {
            "(none)".to_owned()
        } else {
            crate::identifier::snippet(ct)
        };
        return Err(ClerkError::UnsupportedContentType(shown));
    }
    serde_json::from_slice::<Value>(bytes).map_err(|_| ClerkError::BodyInvalid)
}

/// The fields of a form body (`application/x-www-form-urlencoded`, which Clerk's server also
/// takes; CONTRACT §1): each key's value as a string, a key given more than once (or as
/// `key[]`) as an array of strings. Bytes that do not decode to UTF-8 are
/// `request_body_invalid`.
pub(crate) fn parse_form(bytes: &[u8]) -> Result<Map<String, Value>, ClerkError> {
    let mut map = Map::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        // The decoder replaces bad UTF-8 with U+FFFD: refused rather than guessed at.
        if k.contains('\u{fffd}') || v.contains('\u{fffd}') {
            return Err(ClerkError::BodyInvalid);
        }
        let key = k.strip_suffix("[]").unwrap_or(&k).to_owned();
        let value = Value::String(v.into_owned());
        match map.get_mut(&key) {
            None if k.ends_with("[]") => {
                map.insert(key, Value::Array(vec![value]));
            }
            None => {
                map.insert(key, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = first.take();
                map.insert(key, Value::Array(vec![first, value]));
            }
        }
    }
    Ok(map)
}

/// `application/x-www-form-urlencoded`, optionally with `charset=utf-8`.
fn is_form(ct: &str) -> bool {
    media_type_is(ct, "application/x-www-form-urlencoded")
}

/// `application/json`, optionally with `charset=utf-8`.
fn is_json(ct: &str) -> bool {
    media_type_is(ct, "application/json")
}

/// `ct` is `essence`, with no parameter but `charset=utf-8`.
fn media_type_is(ct: &str, want: &str) -> bool {
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(want) {
        return false;
    }
    parts.all(|p| {
        let p = p.trim();
        p.is_empty() || {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_status_code_and_long_message() {
        let list = ListKind::Allow;
        let cases: Vec<(ClerkError, u16, &str)> = vec![
            (
                ClerkError::AuthorizationHeaderFormat,
                401,
                "authorization_header_format_invalid",
            ),
            (ClerkError::KeyInvalid, 401, "clerk_key_invalid"),
            (ClerkError::BodyInvalid, 400, "request_body_invalid"),
            (
                ClerkError::UnsupportedContentType("text/plain".into()),
                415,
                "unsupported_content_type",
            ),
            (
                ClerkError::BodyTooLarge { limit: 1 },
                413,
                "request_body_too_large",
            ),
            (
                ClerkError::ParamUnknown("x".into()),
                422,
                "form_param_unknown",
            ),
            (
                ClerkError::ParamTypeInvalid {
                    param: "x".into(),
                    expected: "bool",
                },
                422,
                "form_param_type_invalid",
            ),
            (
                ClerkError::ParamMissing("x".into()),
                422,
                "form_param_missing",
            ),
            (
                ClerkError::ParamFormatInvalid {
                    param: "x".into(),
                    long_message: "m".into(),
                },
                422,
                "form_param_format_invalid",
            ),
            (
                ClerkError::ParamValueInvalid {
                    param: "x".into(),
                    long_message: "m".into(),
                },
                422,
                "form_param_value_invalid",
            ),
            (
                ClerkError::ConditionalParamDisallowed {
                    param: "x".into(),
                    long_message: "m".into(),
                },
                422,
                "form_conditional_param_disallowed",
            ),
            (
                ClerkError::QueryValueInvalid {
                    param: "x".into(),
                    long_message: "m".into(),
                },
                400,
                "invalid_query_parameter_value",
            ),
            (
                ClerkError::Duplicate {
                    list,
                    long_message: "m".into(),
                },
                400,
                "duplicate_record",
            ),
            (
                ClerkError::IdentifierNotFound("alid_1".into()),
                404,
                "resource_not_found",
            ),
            (ClerkError::EndpointNotFound, 404, "resource_not_found"),
            (
                ClerkError::DuplicateInvitation(vec!["a@x.com".into()]),
                400,
                "duplicate_record",
            ),
            (
                ClerkError::InvitationNotFound("inv_1".into()),
                404,
                "resource_not_found",
            ),
            (
                ClerkError::InvitationAlreadyRevoked,
                400,
                "invitation_already_revoked",
            ),
            (
                ClerkError::InvitationAlreadyAccepted,
                400,
                "invitation_already_accepted",
            ),
            (
                ClerkError::BulkSizeExceeded { max: 10, got: 11 },
                422,
                "bulk_size_exceeded",
            ),
            (
                ClerkError::MethodNotAllowed,
                405,
                "request_method_not_allowed",
            ),
            (
                ClerkError::Internal("disk".into()),
                500,
                "internal_clerk_error",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
            assert!(!e.message().is_empty(), "{e:?}");
            assert!(!e.long_message().is_empty(), "{e:?}");
            assert!(
                !e.long_message().contains("disk"),
                "internal detail leaked: {e:?}"
            );
        }
    }

    #[test]
    fn contract_texts() {
        assert_eq!(
            ClerkError::ParamUnknown("foo".into()).long_message(),
            "foo is not a valid parameter for this request."
        );
        assert_eq!(
            ClerkError::ParamTypeInvalid {
                param: "allowlist".into(),
                expected: "bool"
            }
            .long_message(),
            "`allowlist` must be a `bool`."
        );
        assert_eq!(
            ClerkError::IdentifierNotFound("alid_x".into()).long_message(),
            "No identifier was found with id alid_x"
        );
        assert_eq!(
            ClerkError::Duplicate {
                list: ListKind::Block,
                long_message: String::new()
            }
            .message(),
            "duplicate blocklist identifier"
        );
        assert_eq!(
            ClerkError::ParamMissing("identifier".into())
                .meta()
                .get("param_name"),
            Some(&Value::String("identifier".into()))
        );
        assert!(ClerkError::KeyInvalid.meta().is_empty());
        let dup = ClerkError::DuplicateInvitation(vec!["a@b.co".into(), "c@d.co".into()]);
        assert_eq!(dup.message(), "duplicate invitation");
        assert_eq!(
            dup.long_message(),
            "There are already pending invitations for the following email addresses: a@b.co, c@d.co"
        );
        assert_eq!(dup.meta()["email_addresses"], json!(["a@b.co", "c@d.co"]));
        assert_eq!(
            ClerkError::InvitationNotFound("inv_x".into()).long_message(),
            "No invitation was found with id inv_x."
        );
        assert_eq!(
            ClerkError::InvitationAlreadyAccepted.long_message(),
            "Invitation is already accepted, try signing in instead."
        );
    }

    #[test]
    fn params_collect_types_missing_and_unknown_keys() {
        let body = json!({
            "a": true, "b": "yes", "c": null, "s": "x", "arr": ["1", 2],
            "zzz": 1, "yyy": 2, "req": ""
        });
        let Value::Object(map) = body else { panic!() };
        let mut p = Params::new(map);
        assert_eq!(p.opt_bool("a"), Some(true));
        assert_eq!(p.opt_bool("b"), None);
        assert_eq!(p.opt_bool("c"), None);
        assert_eq!(p.opt_bool("absent"), None);
        assert_eq!(p.opt_string("s"), Some("x".into()));
        assert_eq!(p.opt_strings("arr"), None);
        assert_eq!(p.required_string("req"), None);
        assert_eq!(p.required_string("nothing"), None);
        let errs = p.finish().unwrap_err().0;
        let codes: Vec<_> = errs.iter().map(|e| (e.code(), e.meta())).collect();
        let names: Vec<String> = codes
            .iter()
            .map(|(c, m)| {
                format!(
                    "{c}:{}",
                    m.get("param_name").and_then(Value::as_str).unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "form_param_type_invalid:b",
                "form_param_type_invalid:arr",
                "form_param_missing:req",
                "form_param_missing:nothing",
                "form_param_unknown:yyy",
                "form_param_unknown:zzz",
            ]
        );
    }

    #[test]
    fn body_parsing_table() {
        let ok = |ct: Option<&str>, body: &str| parse_body(ct, body.as_bytes());
        assert_eq!(ok(None, "").unwrap().len(), 0);
        assert_eq!(ok(Some("application/json"), "  ").unwrap().len(), 0);
        assert_eq!(ok(Some("text/plain"), "").unwrap().len(), 0);
        assert_eq!(ok(Some("application/json"), r#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(
            ok(Some("Application/JSON; charset=UTF-8"), "{}")
                .unwrap()
                .len(),
            0
        );
        for (ct, body, code) in [
            (Some("application/json"), "{", "request_body_invalid"),
            (Some("application/json"), "[1]", "request_body_invalid"),
            (Some("application/json"), "\"x\"", "request_body_invalid"),
            (
                Some("application/json; charset=latin1"),
                "{}",
                "unsupported_content_type",
            ),
            (
                Some("application/x-www-form-urlencoded"),
                "a=1",
                "unsupported_content_type",
            ),
            (Some("text/plain"), "{}", "unsupported_content_type"),
            (None, "{}", "unsupported_content_type"),
        ] {
            assert_eq!(ok(ct, body).unwrap_err().code(), code, "{ct:?} {body}");
        }
    }

    #[test]
    fn form_fields_and_their_types() {
        let map = parse_form(b"identifier=a%40x.com&notify=t&tags=a&tags=b&ids[]=x&n=5").unwrap();
        assert_eq!(map["identifier"], "a@x.com");
        assert_eq!(map["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(map["ids"], serde_json::json!(["x"]));
        let mut p = Params::from_form(map);
        assert_eq!(p.opt_bool("notify"), Some(true));
        assert_eq!(p.opt_strings("tags"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(p.opt_strings("ids"), Some(vec!["x".into()]));
        assert_eq!(p.opt_i64("n"), Some(5));
        assert_eq!(p.opt_string("identifier").as_deref(), Some("a@x.com"));
        assert!(p.finish().is_ok());
        // A key given twice is not one string; a form has no objects.
        let mut p = Params::from_form(parse_form(b"a=1&a=2&m=x&b=yes").unwrap());
        assert_eq!(p.opt_string("a"), None);
        assert_eq!(p.opt_object("m"), None);
        assert_eq!(p.opt_bool("b"), None);
        assert_eq!(p.finish().unwrap_err().0.len(), 3);
        // JSON strings are not parsed as booleans.
        let mut p = Params::new(
            serde_json::json!({"b": "true"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        assert_eq!(p.opt_bool("b"), None);
        assert_eq!(
            parse_form(b"identifier=%ff").unwrap_err(),
            ClerkError::BodyInvalid
        );
    }

    #[tokio::test]
    async fn envelope_shape_and_content_type() {
        let resp = ClerkErrors(vec![
            ClerkError::ParamUnknown("a".into()),
            ClerkError::ParamUnknown("b".into()),
        ])
        .into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"errors": [
                {"message": "is unknown", "long_message": "a is not a valid parameter for this request.",
                 "code": "form_param_unknown", "meta": {"param_name": "a"}},
                {"message": "is unknown", "long_message": "b is not a valid parameter for this request.",
                 "code": "form_param_unknown", "meta": {"param_name": "b"}},
            ]})
        );
    }
}
