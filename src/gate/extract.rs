//! Identifier extraction from a buffered request, failing closed.
//!
//! [`extract`] finds the identifier in every place an upstream framework (Express,
//! FastAPI/Starlette, Flask/Werkzeug, Rails, Django, Go) might read it — JSON body, form body,
//! multipart body, query string, headers — and refuses with a [`Refusal`] anything the upstream
//! could read differently than the gate: conflicting framing, method overrides, unknown or
//! stacked content codings, content types and charsets we do not read, duplicate or case-variant
//! fields, the field in both query and body, over-deep or malformed bodies, and odd multipart
//! framing. It is pure: no I/O, and it never panics on any input.
//!
//! Submodules: `media` (media type and parameter grammar), `decode` (content codings, bounded),
//! `form` (urlencoded), `json` (strict JSON with a `DeserializeSeed`), `multipart` (strict
//! multipart/form-data).

mod decode;
mod form;
mod json;
mod media;
mod multipart;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

/// What the gate needs to know about a route to extract its identifier (compiled from config).
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Where the identifier may be, in configuration order.
    pub sources: &'a [SourceSpec],
    /// JSON nesting limit (containers); 32 by default.
    pub max_depth: usize,
    /// The most bytes a gzip/deflate body may decode to (the route's body limit).
    pub max_decoded: usize,
}

/// One configured place for the identifier, compiled for matching when it is built (at
/// snapshot build time for a route): JSON pointers are parsed and field names folded once, not
/// per request.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    location: Location,
    /// The expected kind, if the config names one (used by the caller when parsing).
    pub kind: Option<crate::identifier::Kind>,
    compiled: Compiled,
}

impl SourceSpec {
    /// Compiles `location`. An invalid JSON pointer is kept and refused (`invalid_spec`, 500) by
    /// every [`extract`] on the route, as configuration validation should have caught it.
    pub fn new(location: Location, kind: Option<crate::identifier::Kind>) -> Self {
        let compiled = Compiled::new(&location).unwrap_or_else(Compiled::Invalid);
        SourceSpec {
            location,
            kind,
            compiled,
        }
    }

    /// Where in the request this source looks.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The parsed segments of a JSON pointer source.
    fn json_segments(&self) -> Option<&[String]> {
        match &self.compiled {
            Compiled::Json { segments, .. } => Some(segments),
            _ => None,
        }
    }
}

impl PartialEq for SourceSpec {
    fn eq(&self, other: &Self) -> bool {
        // `compiled` is a function of `location`.
        self.location == other.location && self.kind == other.kind
    }
}

impl Eq for SourceSpec {}

/// Where in the request a source looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An RFC 6901 pointer into a JSON body (`application/json`, `application/*+json`).
    Json(String),
    /// A field of an `application/x-www-form-urlencoded` body.
    Form(String),
    /// A field of a `multipart/form-data` body.
    Multipart(String),
    /// A key of the query string.
    Query(String),
    /// A request header.
    Header(HeaderName),
    /// A cookie of the `Cookie` header(s) (token sources). A name sent twice is refused.
    Cookie(String),
}

/// One identifier value found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The value as the upstream will read it (decoded, not normalized).
    pub raw: String,
    /// Index into `spec.sources`.
    pub source: usize,
}

/// Why the gate answers the request itself instead of forwarding it.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    #[error("conflicting message framing: {0}")]
    ConflictingFraming(&'static str),
    #[error("the request has {0} Host headers; exactly one is allowed")]
    DuplicateHost(usize),
    #[error(
        "the Connection header names {0:?}, a header the upstream would not receive; only close, keep-alive and hop-by-hop names are accepted"
    )]
    ConnectionNamesHeader(String),
    #[error("method override ({0}) is not allowed on a gated route")]
    MethodOverride(String),
    #[error("Content-Encoding not supported: {0} (use gzip, deflate or none)")]
    UnsupportedEncoding(String),
    #[error("the {encoding} body could not be decoded: {reason}")]
    BadEncoding {
        encoding: &'static str,
        reason: String,
    },
    #[error("the decoded body is larger than {limit} bytes")]
    DecodedTooLarge { limit: usize },
    #[error("the request has more than one Content-Type header")]
    DuplicateContentType,
    #[error("malformed Content-Type: {0}")]
    BadContentType(String),
    #[error("a request body without Content-Type")]
    MissingContentType,
    #[error("unsupported content type {0}")]
    UnsupportedContentType(String),
    #[error("charset {0:?} is not accepted; send UTF-8")]
    BadCharset(String),
    #[error("a {0} body sent as text/plain; send it with its own content type")]
    TextPlainBody(&'static str),
    #[error("a JSON body sent as a form; send it as application/json")]
    JsonAsForm,
    #[error("the {0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("the JSON body starts with a byte order mark")]
    ByteOrderMark,
    #[error("malformed JSON: {0}")]
    BadJson(String),
    #[error("the JSON body is nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("field {field:?} appears more than once in the {place}")]
    DuplicateField { field: String, place: &'static str },
    #[error("{found:?} looks like the identifier field {field:?} spelled differently")]
    AmbiguousLocation { field: String, found: String },
    #[error("cookie {0:?} is inside another cookie pair, after whitespace or a comma")]
    HiddenCookie(String),
    #[error("the identifier field {field:?} appears in both the query string and the body")]
    FieldInQueryAndBody { field: String },
    #[error("the identifier at {field:?} is {found}, not a string")]
    NotAString { field: String, found: &'static str },
    #[error("the identifier at {field:?} is unusable: {reason}")]
    BadString { field: String, reason: &'static str },
    #[error("malformed form data: {0}")]
    BadForm(String),
    #[error("malformed multipart body: {0}")]
    BadMultipart(String),
    #[error("the identifier field {field:?} is sent as a file upload")]
    FileField { field: String },
    #[error("header {0} has a value that is not visible text")]
    BadHeaderValue(String),
    #[error("the identifier field {field:?} uses {what}")]
    BadFieldEncoding { field: String, what: String },
    #[error("invalid route identifier configuration: {0}")]
    InvalidSpec(String),
}

impl Refusal {
    /// A short, stable machine code for logs and the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ConflictingFraming(_) => "conflicting_framing",
            Refusal::DuplicateHost(_) => "duplicate_host",
            Refusal::ConnectionNamesHeader(_) => "connection_names_header",
            Refusal::MethodOverride(_) => "method_override",
            Refusal::UnsupportedEncoding(_) => "unsupported_encoding",
            Refusal::BadEncoding { .. } => "bad_encoding",
            Refusal::DecodedTooLarge { .. } => "decoded_too_large",
            Refusal::DuplicateContentType => "duplicate_content_type",
            Refusal::BadContentType(_) => "bad_content_type",
            Refusal::MissingContentType => "missing_content_type",
            Refusal::UnsupportedContentType(_) => "unsupported_content_type",
            Refusal::BadCharset(_) => "bad_charset",
            Refusal::TextPlainBody(_) => "text_plain_body",
            Refusal::JsonAsForm => "json_as_form",
            Refusal::BadUtf8(_) => "bad_utf8",
            Refusal::ByteOrderMark => "byte_order_mark",
            Refusal::BadJson(_) => "bad_json",
            Refusal::TooDeep { .. } => "too_deep",
            Refusal::DuplicateField { .. } => "duplicate_field",
            Refusal::AmbiguousLocation { .. } | Refusal::HiddenCookie(_) => "ambiguous_location",
            Refusal::FieldInQueryAndBody { .. } => "field_in_query_and_body",
            Refusal::NotAString { .. } => "not_a_string",
            Refusal::BadString { .. } => "bad_string",
            Refusal::BadForm(_) => "bad_form",
            Refusal::BadMultipart(_) => "bad_multipart",
            Refusal::FileField { .. } => "file_field",
            Refusal::BadHeaderValue(_) => "bad_header_value",
            Refusal::BadFieldEncoding { .. } => "bad_field_encoding",
            Refusal::InvalidSpec(_) => "invalid_spec",
        }
    }

    /// The HTTP status the gate answers with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UnsupportedEncoding(_)
            | Refusal::MissingContentType
            | Refusal::UnsupportedContentType(_) => 415,
            Refusal::DecodedTooLarge { .. } => 413,
            Refusal::InvalidSpec(_) => 500,
            _ => 400,
        }
    }
}

/// Shortens client-controlled text for messages (64 chars).
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

/// Case-folds one character the way the most permissive reader does: ASCII lowercase, plus the
/// two non-ASCII letters Go's `encoding/json` (`bytes.EqualFold`) folds onto ASCII ones, the
/// Kelvin sign (`K` → `k`) and the long s (`ſ` → `s`).
fn fold_char(c: char) -> char {
    match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    }
}

/// Case-folds a key (see [`fold_char`]); used when compiling field names.
fn fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

/// `fold(a) == fold(b)`, without allocating.
fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

/// `fold(raw) == folded`, without allocating (`folded` is already folded).
fn fold_is(raw: &str, folded: &str) -> bool {
    raw.chars().map(fold_char).eq(folded.chars())
}

/// How a request key relates to a configured field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameMatch {
    No,
    Exact,
    /// Not the same string, but some framework may read it as the field: a case variant, a
    /// bracket/dot form (`email[]`, `email[0]`, `email.x`, `user` for `user[email]`), padding
    /// whitespace, a NUL cut, PHP's `.`/space → `_` mangling.
    Variant,
}

/// A configured field name prepared for matching request keys against it.
#[derive(Debug, Clone)]
struct FieldName {
    /// The exact name (None: only variants count, e.g. a JSON pointer's full path).
    exact: Option<String>,
    segments: Vec<String>,
    php: Option<String>,
}

/// Splits a key on `[`, `]`, `.` and NUL into trimmed segments, not yet folded. Leading
/// brackets are dropped first and empty segments after the first are skipped, as qs (Express)
/// and Rack read keys: `[email]`, `]email`, `user][email` and `user]email` are `email`,
/// `user[email]` to them.
fn raw_segments(key: &str) -> impl Iterator<Item = &str> {
    let stripped = key.trim_start_matches(['[', ']']);
    let key = if stripped.is_empty() { key } else { stripped };
    key.split(['[', ']', '.', '\0'])
        .map(|s| s.trim_matches(|c: char| c.is_ascii_whitespace()))
        .enumerate()
        .filter(|(i, s)| *i == 0 || !s.is_empty())
        .map(|(_, s)| s)
}

/// [`raw_segments`], case-folded (for compiled field names).
fn segments(key: &str) -> Vec<String> {
    raw_segments(key).map(fold).collect()
}

/// PHP's mangling of a key (`.`, space and `[` → `_`), case-folded, one character at a time.
fn php_chars(key: &str) -> impl Iterator<Item = char> + '_ {
    key.chars().map(|c| match c {
        '.' | ' ' | '[' => '_',
        c => fold_char(c),
    })
}

fn php_mangle(key: &str) -> String {
    php_chars(key).collect()
}

impl FieldName {
    fn new(name: &str) -> Self {
        FieldName {
            exact: Some(name.to_string()),
            segments: segments(name),
            php: Some(php_mangle(name)),
        }
    }

    /// A nested path (JSON pointer segments) as frameworks spell it in keys: `user[email]`.
    fn path(segs: &[String]) -> Self {
        FieldName {
            exact: None,
            segments: segs.iter().flat_map(|s| segments(s)).collect(),
            php: None,
        }
    }

    fn label(&self) -> String {
        match &self.exact {
            Some(e) => clip(e),
            None => clip(&self.segments.join(".")),
        }
    }

    /// How `key` relates to this name; allocation-free (the key is folded as it is compared).
    fn matches(&self, key: &str) -> NameMatch {
        if self.exact.as_deref() == Some(key) {
            return NameMatch::Exact;
        }
        if self.segments.is_empty() || self.segments.iter().all(String::is_empty) {
            return NameMatch::No;
        }
        // One segment list is a prefix of the other: equal over their common length.
        let mut ks = raw_segments(key);
        let mut fs = self.segments.iter();
        loop {
            match (ks.next(), fs.next()) {
                (Some(k), Some(f)) if fold_is(k, f) => {}
                (Some(_), Some(_)) => break,
                _ => return NameMatch::Variant,
            }
        }
        if let Some(php) = &self.php
            && php_chars(key).eq(php.chars())
        {
            return NameMatch::Variant;
        }
        NameMatch::No
    }

    /// Like `matches`, also trying a percent-decoded spelling of `key`.
    fn matches_decoded(&self, key: &str) -> NameMatch {
        match self.matches(key) {
            NameMatch::No if key.contains('%') => {
                match form::decode(key.replace('+', "%2B").as_bytes(), "field name") {
                    Ok(d) if d != key && self.matches(&d) != NameMatch::No => NameMatch::Variant,
                    _ => NameMatch::No,
                }
            }
            m => m,
        }
    }
}

const OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// `Connection` options that name no end-to-end header: `close`, and headers the proxy drops
/// anyway. Any other name would make the proxy strip a header the gate has read (a
/// `Content-Type`, `Content-Encoding`, `Host` or an identifier header), so the upstream would
/// read the body differently than the gate did.
const CONNECTION_OPTIONS: [&str; 9] = [
    "close",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "proxy-connection",
    "proxy-authorization",
];

/// The `_method` override field, compiled once.
fn method_field() -> &'static FieldName {
    static METHOD: std::sync::LazyLock<FieldName> =
        std::sync::LazyLock::new(|| FieldName::new("_method"));
    &METHOD
}

/// Framing and override checks on the request head.
fn check_head(headers: &HeaderMap) -> Result<(), Refusal> {
    // One pass over the header lines (a lookup per name would hash each of them); the
    // refusals are then checked in a fixed order, whatever order the lines came in.
    let (mut lengths, mut codings, mut hosts) = (0usize, 0usize, 0usize);
    let mut length_is_number = true;
    let mut only_chunked = true;
    let mut connection_names: Option<String> = None;
    // The first of OVERRIDE_HEADERS present, in the list's order.
    let mut overridden: Option<usize> = None;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            lengths += 1;
            length_is_number &=
                !value.is_empty() && value.as_bytes().iter().all(u8::is_ascii_digit);
        } else if name == TRANSFER_ENCODING {
            codings += 1;
            only_chunked &= value.as_bytes().eq_ignore_ascii_case(b"chunked");
        } else if name == CONNECTION {
            if connection_names.is_none() {
                connection_names = names_a_header(value);
            }
        } else if name == HOST {
            hosts += 1;
        } else if let Some(i) = OVERRIDE_HEADERS.iter().position(|h| h == name) {
            overridden = Some(overridden.map_or(i, |j| j.min(i)));
        }
    }
    if lengths > 1 {
        return Err(Refusal::ConflictingFraming(
            "more than one Content-Length header",
        ));
    }
    if !length_is_number {
        return Err(Refusal::ConflictingFraming(
            "Content-Length is not a single number",
        ));
    }
    if codings > 0 {
        if lengths > 0 {
            return Err(Refusal::ConflictingFraming(
                "Content-Length together with Transfer-Encoding",
            ));
        }
        if codings > 1 || !only_chunked {
            return Err(Refusal::ConflictingFraming(
                "Transfer-Encoding other than exactly \"chunked\"",
            ));
        }
    }
    if let Some(token) = connection_names {
        return Err(Refusal::ConnectionNamesHeader(clip(&token)));
    }
    if hosts > 1 {
        return Err(Refusal::DuplicateHost(hosts));
    }
    if let Some(i) = overridden {
        return Err(Refusal::MethodOverride(format!(
            "header {}",
            OVERRIDE_HEADERS[i]
        )));
    }
    Ok(())
}

/// The first option of a `Connection` value that is not in [`CONNECTION_OPTIONS`].
fn names_a_header(value: &HeaderValue) -> Option<String> {
    let text = String::from_utf8_lossy(value.as_bytes());
    text.split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .find(|token| {
            !token.is_empty()
                && !CONNECTION_OPTIONS
                    .iter()
                    .any(|ok| token.eq_ignore_ascii_case(ok))
        })
        .map(str::to_owned)
}

/// What a body's media type asks us to parse.
enum BodyKind {
    Json,
    Form,
    Multipart(String),
}

/// The first byte of `body` that is not ASCII whitespace, after a UTF-8 byte-order mark (JSON
/// readers skip one: Python's `json.loads` detects `utf-8-sig`). A NUL among the first four
/// bytes counts as `{`: `json.loads` reads such bytes as UTF-16 or UTF-32 JSON.
fn first_visible(body: &[u8]) -> Option<u8> {
    if body.iter().take(4).any(|&b| b == 0) {
        return Some(b'{');
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn classify(headers: &HeaderMap, body: &[u8]) -> Result<BodyKind, Refusal> {
    let value = headers
        .get(CONTENT_TYPE)
        .ok_or(Refusal::MissingContentType)?;
    let text = value
        .to_str()
        .map_err(|_| Refusal::BadContentType("not visible ASCII".into()))?;
    let mt = media::parse_media_type(text).map_err(Refusal::BadContentType)?;
    let utf8_only = |mt: &media::MediaType<'_>| match mt.param("charset") {
        Some(c) if !c.eq_ignore_ascii_case("utf-8") => Err(Refusal::BadCharset(clip(c))),
        _ => Ok(()),
    };
    match (&*mt.kind, &*mt.subtype) {
        ("application", s) if s == "json" || s.ends_with("+json") => {
            utf8_only(&mt)?;
            Ok(BodyKind::Json)
        }
        ("application", "x-www-form-urlencoded") => {
            utf8_only(&mt)?;
            // Apps that parse any body as JSON (`json.loads(request.body)`,
            // `get_json(force=True)`) would read a JSON document where the gate reads a form.
            if matches!(first_visible(body), Some(b'{' | b'[')) {
                return Err(Refusal::JsonAsForm);
            }
            Ok(BodyKind::Form)
        }
        ("multipart", "form-data") => {
            // Starlette and Django decode the fields with the request's charset.
            utf8_only(&mt)?;
            match mt.param("boundary") {
                Some(b) if multipart::valid_boundary(b) => Ok(BodyKind::Multipart(b.to_string())),
                Some(_) => Err(Refusal::BadContentType("invalid multipart boundary".into())),
                None => Err(Refusal::BadContentType(
                    "multipart without a boundary".into(),
                )),
            }
        }
        ("text", "plain") => {
            if matches!(first_visible(body), Some(b'{' | b'[')) {
                Err(Refusal::TextPlainBody("JSON"))
            } else if body.contains(&b'=') {
                Err(Refusal::TextPlainBody("form"))
            } else {
                Err(Refusal::UnsupportedContentType("text/plain".into()))
            }
        }
        (t, s) => Err(Refusal::UnsupportedContentType(clip(&format!("{t}/{s}")))),
    }
}

/// A source compiled for matching, built once by [`SourceSpec::new`].
#[derive(Debug, Clone)]
enum Compiled {
    Json {
        segments: Vec<String>,
        last: Option<FieldName>,
        path: FieldName,
    },
    Form(FieldName),
    Multipart(FieldName),
    Query(FieldName),
    Header(HeaderName),
    Cookie(String),
    /// A location that cannot be read (a malformed JSON pointer): refused on use.
    Invalid(Refusal),
}

impl Compiled {
    fn new(location: &Location) -> Result<Self, Refusal> {
        Ok(match location {
            Location::Json(p) => {
                let segments = json::parse_pointer(p)?;
                let last = segments.last().map(|l| FieldName::new(l));
                let path = FieldName::path(&segments);
                Compiled::Json {
                    segments,
                    last,
                    path,
                }
            }
            Location::Form(f) => Compiled::Form(FieldName::new(f)),
            Location::Multipart(f) => Compiled::Multipart(FieldName::new(f)),
            Location::Query(f) => Compiled::Query(FieldName::new(f)),
            Location::Header(h) => Compiled::Header(h.clone()),
            Location::Cookie(c) => Compiled::Cookie(c.clone()),
        })
    }
}

/// Finds the one item whose key is exactly `field`; refuses variants and repeats.
fn pick<'k, T>(
    field: &FieldName,
    items: &'k [T],
    key: impl Fn(&T) -> &str,
    place: &'static str,
    decoded_names: bool,
) -> Result<Option<&'k T>, Refusal> {
    let mut hit = None;
    for item in items {
        let k = key(item);
        let m = if decoded_names {
            field.matches_decoded(k)
        } else {
            field.matches(k)
        };
        match m {
            NameMatch::No => {}
            NameMatch::Variant => {
                return Err(Refusal::AmbiguousLocation {
                    field: field.label(),
                    found: clip(k),
                });
            }
            NameMatch::Exact if hit.is_some() => {
                return Err(Refusal::DuplicateField {
                    field: field.label(),
                    place,
                });
            }
            NameMatch::Exact => hit = Some(item),
        }
    }
    Ok(hit)
}

fn no_nul(field: &FieldName, value: &str) -> Result<(), Refusal> {
    if value.contains('\0') {
        return Err(Refusal::BadString {
            field: field.label(),
            reason: "NUL in the identifier",
        });
    }
    Ok(())
}

/// Refuses body keys that are `_method` or a configured query field.
fn check_body_keys<'k>(
    keys: impl Iterator<Item = &'k str>,
    sources: &[SourceSpec],
    decoded_names: bool,
) -> Result<(), Refusal> {
    let method = method_field();
    for k in keys {
        let hit = |f: &FieldName| {
            if decoded_names {
                f.matches_decoded(k) != NameMatch::No
            } else {
                f.matches(k) != NameMatch::No
            }
        };
        if hit(method) {
            return Err(Refusal::MethodOverride(format!("body field {:?}", clip(k))));
        }
        for s in sources {
            if let Compiled::Query(f) = &s.compiled
                && hit(f)
            {
                return Err(Refusal::FieldInQueryAndBody { field: f.label() });
            }
        }
    }
    Ok(())
}

/// The checks for a bodiless GET/HEAD that a route lets through unread (`pass_safe_methods`):
/// framing, `Connection` options, Host, and method overrides in headers or the query, so
/// the request cannot turn into a POST on the way to the handler.
pub fn check_passthrough(parts: &Parts) -> Result<(), Refusal> {
    check_head(&parts.headers)?;
    let query = form::parse(parts.uri.query().unwrap_or_default().as_bytes(), "query")?;
    let method = method_field();
    match query
        .iter()
        .find(|p| method.matches(&p.key) != NameMatch::No)
    {
        Some(p) => Err(Refusal::MethodOverride(format!(
            "query key {:?}",
            clip(&p.key)
        ))),
        None => Ok(()),
    }
}

/// Finds every identifier value in the request, or refuses it. See the module docs.
pub fn extract(parts: &Parts, body: &[u8], spec: &Spec<'_>) -> Result<Vec<Found>, Refusal> {
    extract_decoded(parts, body, spec).map(|(found, _)| found)
}

/// [`extract`], and the body as the gate read it when that is not `body` itself: a
/// `Content-Encoding` was removed. The proxy forwards those decoded bytes (without the
/// coding), never the encoded ones: an app that does not decode request bodies would
/// otherwise parse the compressed bytes, and a gzip header field or a stored deflate block can
/// carry any plaintext the gate never saw as a field.
pub fn extract_decoded(
    parts: &Parts,
    body: &[u8],
    spec: &Spec<'_>,
) -> Result<(Vec<Found>, Option<Vec<u8>>), Refusal> {
    let headers = &parts.headers;
    check_head(headers)?;
    let coding = decode::coding(headers)?;
    if headers.get_all(CONTENT_TYPE).iter().count() > 1 {
        return Err(Refusal::DuplicateContentType);
    }
    if let Some(Compiled::Invalid(r)) = spec
        .sources
        .iter()
        .map(|s| &s.compiled)
        .find(|c| matches!(c, Compiled::Invalid(_)))
    {
        return Err(r.clone());
    }
    let mut found = Vec::new();

    // Query: its own sources, `_method`, and body fields that frameworks merge with the query.
    let query = form::parse(parts.uri.query().unwrap_or_default().as_bytes(), "query")?;
    let method = method_field();
    if let Some(p) = query
        .iter()
        .find(|p| method.matches(&p.key) != NameMatch::No)
    {
        return Err(Refusal::MethodOverride(format!(
            "query key {:?}",
            clip(&p.key)
        )));
    }
    let in_query = |f: &FieldName| query.iter().any(|p| f.matches(&p.key) != NameMatch::No);
    for (i, s) in spec.sources.iter().enumerate() {
        let (first, second) = match &s.compiled {
            Compiled::Query(f) => {
                if let Some(pair) = pick(f, &query, |p| &p.key, "query", false)? {
                    no_nul(f, &pair.value)?;
                    found.push(Found {
                        raw: pair.value.clone(),
                        source: i,
                    });
                }
                continue;
            }
            Compiled::Header(name) => {
                let dashed = |h: &str| h.replace('_', "-");
                if let Some(other) = headers
                    .keys()
                    .find(|k| *k != name && dashed(k.as_str()) == dashed(name.as_str()))
                {
                    // CGI/WSGI map `-` and `_` to the same variable.
                    return Err(Refusal::AmbiguousLocation {
                        field: name.to_string(),
                        found: clip(other.as_str()),
                    });
                }
                let mut values = headers.get_all(name).iter();
                if let Some(v) = values.next() {
                    if values.next().is_some() {
                        return Err(Refusal::DuplicateField {
                            field: name.to_string(),
                            place: "headers",
                        });
                    }
                    let text = std::str::from_utf8(v.as_bytes())
                        .ok()
                        .filter(|t| !t.chars().any(char::is_control))
                        .ok_or_else(|| Refusal::BadHeaderValue(name.to_string()))?;
                    found.push(Found {
                        raw: text.to_string(),
                        source: i,
                    });
                }
                continue;
            }
            Compiled::Cookie(name) => {
                if let Some(raw) = cookie(headers, name)? {
                    found.push(Found { raw, source: i });
                }
                continue;
            }
            Compiled::Json { last, path, .. } => (last.as_ref(), Some(path)),
            Compiled::Form(f) | Compiled::Multipart(f) => (Some(f), None),
            Compiled::Invalid(_) => continue,
        };
        for f in first.into_iter().chain(second) {
            if in_query(f) {
                return Err(Refusal::FieldInQueryAndBody { field: f.label() });
            }
        }
    }

    let body = decode::decode(body, coding, spec.max_decoded)?;
    if !body.is_empty() {
        read_body(headers, &body, spec, &mut found)?;
    }
    found.sort_by_key(|f| f.source);
    let decoded = match body {
        Cow::Owned(d) => Some(d),
        Cow::Borrowed(_) => None,
    };
    Ok((found, decoded))
}

/// The value of cookie `name` across every `Cookie` header (HTTP/2 may send several). A name
/// sent twice, or a cookie header that is not visible text, is refused: frameworks disagree on
/// which of two cookies wins. So is the name hidden inside another pair: Python's
/// `SimpleCookie` (aiohttp, Bottle) also splits pairs at whitespace, and old RFC 2965 parsers
/// at commas, so `x=1 session=T` carries a cookie `session` to them and none to the gate.
fn cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, Refusal> {
    let mut found = None;
    for v in headers.get_all(http::header::COOKIE) {
        let text = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|t| !t.chars().any(char::is_control))
            .ok_or_else(|| Refusal::BadHeaderValue("cookie".into()))?;
        for pair in text.split(';') {
            let hidden = pair
                .split([' ', '\t', ','])
                .filter(|piece| !piece.is_empty())
                .skip(1)
                .any(|piece| piece.split_once('=').map_or(piece, |(k, _)| k) == name);
            if hidden {
                // Not the pair itself: its value may be the token.
                return Err(Refusal::HiddenCookie(clip(name)));
            }
            let (k, value) = pair.split_once('=').unwrap_or((pair, ""));
            if k.trim() == name {
                if found.is_some() {
                    return Err(Refusal::DuplicateField {
                        field: clip(name),
                        place: "cookies",
                    });
                }
                found = Some(value.trim().to_owned());
            }
        }
    }
    Ok(found)
}

fn read_body(
    headers: &HeaderMap,
    body: &[u8],
    spec: &Spec<'_>,
    found: &mut Vec<Found>,
) -> Result<(), Refusal> {
    let kind = classify(headers, body)?;
    let sources = spec.sources;
    let has = |want: fn(&Compiled) -> bool| sources.iter().any(|s| want(&s.compiled));
    match kind {
        BodyKind::Json => {
            if !has(|c| matches!(c, Compiled::Json { .. })) {
                return Err(Refusal::UnsupportedContentType("JSON".into()));
            }
            if body.starts_with(b"\xef\xbb\xbf") {
                return Err(Refusal::ByteOrderMark);
            }
            let text = std::str::from_utf8(body).map_err(|_| Refusal::BadUtf8("JSON body"))?;
            let root = json::parse(text, spec.max_depth, sources)?;
            check_body_keys(json::top_level_keys(&root), sources, false)?;
            for (i, source) in sources.iter().enumerate() {
                if let (Compiled::Json { segments, .. }, Location::Json(pointer)) =
                    (&source.compiled, &source.location)
                    && let Some(raw) = json::resolve(&root, segments, pointer)?
                {
                    found.push(Found { raw, source: i });
                }
            }
        }
        BodyKind::Form => {
            if !has(|c| matches!(c, Compiled::Form(_))) {
                return Err(Refusal::UnsupportedContentType(
                    "application/x-www-form-urlencoded".into(),
                ));
            }
            let pairs = form::parse(body, "form body")?;
            check_body_keys(pairs.iter().map(|p| p.key.as_str()), sources, false)?;
            for (i, s) in sources.iter().enumerate() {
                if let Compiled::Form(f) = &s.compiled
                    && let Some(pair) = pick(f, &pairs, |p| &p.key, "form body", false)?
                {
                    no_nul(f, &pair.value)?;
                    found.push(Found {
                        raw: pair.value.clone(),
                        source: i,
                    });
                }
            }
        }
        BodyKind::Multipart(boundary) => {
            if !has(|c| matches!(c, Compiled::Multipart(_))) {
                return Err(Refusal::UnsupportedContentType(
                    "multipart/form-data".into(),
                ));
            }
            let parts = multipart::parse(body, &boundary)?;
            check_body_keys(parts.iter().map(|p| p.name.as_str()), sources, true)?;
            for (i, s) in sources.iter().enumerate() {
                if let Compiled::Multipart(f) = &s.compiled
                    && let Some(part) = pick(f, &parts, |p| &p.name, "multipart body", true)?
                {
                    let raw = identifier_part(f, part)?;
                    found.push(Found { raw, source: i });
                }
            }
        }
    }
    Ok(())
}

/// Checks the part holding the identifier and returns its text.
fn identifier_part(f: &FieldName, part: &multipart::Part<'_>) -> Result<String, Refusal> {
    if part.has_filename {
        return Err(Refusal::FileField { field: f.label() });
    }
    if let Some(ct) = &part.content_type {
        let mt = media::parse_media_type(ct)
            .map_err(|e| Refusal::BadMultipart(format!("part Content-Type: {e}")))?;
        if (&*mt.kind, &*mt.subtype) != ("text", "plain") {
            return Err(Refusal::BadFieldEncoding {
                field: f.label(),
                what: format!("Content-Type {}/{}", clip(&mt.kind), clip(&mt.subtype)),
            });
        }
        if let Some(c) = mt.param("charset")
            && !c.eq_ignore_ascii_case("utf-8")
        {
            return Err(Refusal::BadCharset(clip(c)));
        }
    }
    if let Some(cte) = &part.transfer_encoding
        && !["7bit", "8bit", "binary"]
            .iter()
            .any(|ok| cte.eq_ignore_ascii_case(ok))
    {
        return Err(Refusal::BadFieldEncoding {
            field: f.label(),
            what: format!("Content-Transfer-Encoding {:?}", clip(cte)),
        });
    }
    let text = std::str::from_utf8(part.body)
        .map_err(|_| Refusal::BadUtf8("multipart identifier field"))?;
    no_nul(f, text)?;
    Ok(text.to_string())
}
