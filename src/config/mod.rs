//! config: the YAML config file format and its validated form.
//!
//! Owns reading the config file (the only I/O here), `${ENV}` expansion ([`env`] rules: `$${`
//! is a literal `${`, unset variables are errors), parsing with serde-saphyr into file structs
//! that reject unknown fields, and validation that reports **all** problems at once, each with
//! its path (`routes[1].identifier[0].json`) and, where known, line and column. The result is a
//! [`Config`] of plain typed values (addresses, URIs, durations, byte counts) that
//! `snapshot::compile` turns into the compiled form the data path reads. List entries are
//! checked by `lists`, not here; list file paths are resolved against the config file's
//! directory but not opened.
//!
//! TLS settings (`listen[].tls`, `admin.tls`, `upstream_tls`) are validated here as paths and
//! names only; `tls` reads and checks the PEM files. `jwt`/`userinfo` identifier sources
//! ([`token`]) are checked for completeness here and verified by `oauth`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::identifier::Kind;

mod env;
pub mod invitations;
mod raw;
pub mod token;
mod units;
mod validate;

pub use invitations::{InvitationsConfig, Retry, SmsWebhookConfig, SmtpConfig, SmtpTls};
pub use token::{Fetch, JwtKeys, JwtSource, TokenSource, UserinfoFormat, UserinfoSource};
pub use validate::MAX_BODY_LIMIT;

/// A validated config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Proxy listeners; at least one, addresses unique.
    pub listen: Vec<Listener>,
    /// `workers`: threads serving the proxy listeners; `None` (`auto`, the default) is one
    /// per CPU the process may use. Restart-only.
    pub workers: Option<usize>,
    /// The upstream app: `http://host[:port]` or `https://host[:port]` with an empty or `/` path.
    pub upstream: http::Uri,
    /// Trust and client-certificate settings for an `https://` upstream.
    pub upstream_tls: Option<UpstreamTls>,
    pub admin: Admin,
    pub lists: Lists,
    pub precedence: Precedence,
    pub restrictions: Restrictions,
    pub identifiers: Identifiers,
    /// Gated routes; may be empty (the gate then only proxies).
    pub routes: Vec<Route>,
    pub deny: Deny,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub reload: Reload,
    pub store: Store,
    /// `mode`: the default for routes that set none (`enforce`).
    pub mode: Mode,
    /// `audit`: one JSON line per gated decision (off unless `audit.output` is set).
    pub audit: Audit,
    /// `request_id`: the header carrying each request's id, and whether a client's value is
    /// trusted (process setting; not reloaded).
    pub request_id: RequestId,
    /// `invitations`: delivery of invitations (email over SMTP, SMS through a webhook), the
    /// link and message templates; `None` when the section is absent. Restart-only.
    pub invitations: Option<InvitationsConfig>,
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Terminate TLS on this listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<ServerTls>,
}

/// Certificates of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// At least one. The first is served to clients without SNI or whose SNI matches no
    /// certificate; the others are chosen when the SNI matches one of their DNS names.
    pub certificates: Vec<TlsFiles>,
}

/// Settings for talking TLS to the upstream. Without them, an `https://` upstream is verified
/// against the webpki (Mozilla) roots and the upstream's host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM file of CA certificates trusted in addition to the webpki roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key presented to the upstream (mutual TLS).
    pub client_cert: Option<TlsFiles>,
    /// The name sent as SNI and verified in the upstream's certificate, instead of the host
    /// of `upstream`.
    pub server_name: Option<String>,
}
/// PEM files for a TLS listener, resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener. `Debug` never shows the secret keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// Default `127.0.0.1:9090`; must differ from every proxy listener.
    pub listen: SocketAddr,
    /// Accepted as `Authorization: Bearer` (Clerk API) and `X-Magic-Secret-Key` (Magic API).
    pub secret_keys: Vec<String>,
    /// The `target_client_id` the Magic API accepts.
    pub magic_client_id: Option<String>,
    /// Serve the admin API over TLS (HTTP/1.1).
    pub tls: Option<ServerTls>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            secret_keys: Vec::new(),
            magic_client_id: None,
            tls: None,
        }
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.secret_keys.len();
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("secret_keys", &format_args!("[redacted; {n} keys]"))
            .field("magic_client_id", &self.magic_client_id)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Inline list entries (checked by `lists`) and list files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lists {
    pub allow: Vec<String>,
    pub block: Vec<String>,
    pub files: ListFiles,
    /// Per list; default 20000, at least 1.
    pub max_entries: usize,
}

impl Default for Lists {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            block: Vec::new(),
            files: ListFiles::default(),
            max_entries: 20_000,
        }
    }
}

/// List files, resolved against the config file's directory (not opened here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFiles {
    pub allow: Vec<PathBuf>,
    pub block: Vec<PathBuf>,
}

/// Which list wins when an identifier matches both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// Block wins (Magic's rule).
    #[default]
    Block,
    /// Allow wins (Clerk's documented rule).
    Allow,
    /// An exact address beats a domain; ties go to block.
    MostSpecific,
}

/// When the allow list is enforced. YAML: `auto`, `true` or `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AllowlistMode {
    /// Enforced when the allow list is non-empty.
    #[default]
    Auto,
    /// Enforced even when empty (nobody passes).
    On,
    /// Never enforced.
    Off,
}

/// Rules beyond list matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restrictions {
    pub allowlist: AllowlistMode,
    /// Default true.
    pub blocklist: bool,
    pub block_email_subaddresses: bool,
    pub block_disposable_email_domains: bool,
    pub allowlist_blocklist_disabled_on_sign_in: bool,
}

impl Default for Restrictions {
    fn default() -> Self {
        Self {
            allowlist: AllowlistMode::Auto,
            blocklist: true,
            block_email_subaddresses: false,
            block_disposable_email_domains: false,
            allowlist_blocklist_disabled_on_sign_in: false,
        }
    }
}

/// Identifier parsing options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    /// Two uppercase ASCII letters (e.g. `US`) for numbers not in E.164 form; `None` (the
    /// default) means such numbers are malformed.
    pub default_phone_region: Option<String>,
}

impl Config {
    /// Legal but suspicious settings, for `check-config` and the startup log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.routes.is_empty() {
            out.push("no routes are configured: the gate only proxies and checks nothing".into());
        }
        let no_allow_entries = self.lists.allow.is_empty() && self.lists.files.allow.is_empty();
        if self.restrictions.allowlist == AllowlistMode::On && no_allow_entries {
            out.push(
                "restrictions.allowlist is true and the config has no allow entries: \
                 only entries added through the admin API can pass"
                    .into(),
            );
        }
        if let Some(inv) = &self.invitations
            && inv.email.is_none()
            && inv.sms.is_none()
        {
            out.push(
                "invitations has neither email nor sms: invitations can be created with \
                 notify: false only, and nothing is sent"
                    .into(),
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.optional {
                out.push(format!(
                    "routes[{i}] ({}): optional is true, requests without an identifier are forwarded",
                    r.name
                ));
            }
        }
        out
    }
}

/// One gated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique, `[a-z0-9_-]+`.
    pub name: String,
    /// Uppercased tokens, no duplicates; default `[POST]`.
    pub methods: Vec<http::Method>,
    /// Starts with `/`; no `?`, `#`, `*`, `%`, `;`, `\`, blanks, empty or dot segments.
    pub path: String,
    pub kind: RouteKind,
    /// At least one.
    pub identifier: Vec<IdentifierSource>,
    /// When true, a request without an identifier is forwarded (fail-closed opt-out).
    pub optional: bool,
    /// When true, GET/HEAD without a body are forwarded unchecked.
    pub pass_safe_methods: bool,
    /// Overrides `limits.body` for this route.
    pub body_limit: Option<u64>,
    /// Overrides the global `mode` for this route.
    pub mode: Option<Mode>,
}

impl Route {
    /// The body limit in bytes for this route.
    pub fn body_limit_or(&self, limits: &Limits) -> u64 {
        self.body_limit.unwrap_or(limits.body)
    }
}

/// What the gate does with a denial: answer it (`enforce`), or record it as `would_deny` and
/// forward the request anyway (`shadow`, for rolling out a list). Refusals (400, 405, 413, …)
/// are answered in both modes: a request the gate cannot read is never forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    /// The config spelling (`enforce`, `shadow`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// How the audit log writes identifiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditIdentifiers {
    /// HMAC-SHA256 with `audit.hmac_key`, hex (default): correlatable, not readable.
    #[default]
    Hmac,
    /// The canonical identifier in clear text (explicit opt-in).
    Clear,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Stdout,
    /// A file, appended to (relative paths are resolved against the config's directory).
    File(PathBuf),
}

/// `request_id: { header, trust }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// Read (when trusted), set on the request to the upstream and on every answer.
    /// Default `x-request-id`.
    pub header: http::HeaderName,
    /// Reuse the incoming value (a trusted proxy in front sets it). Default `false`: every
    /// request gets a fresh id and a client's value is replaced.
    pub trust: bool,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header: http::HeaderName::from_static("x-request-id"),
            trust: false,
        }
    }
}

/// The audit log settings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// `None`: no audit log.
    pub output: Option<AuditOutput>,
    pub identifiers: AuditIdentifiers,
    /// The HMAC key (required when `output` is set and `identifiers` is `hmac`). Never logged.
    pub hmac_key: Option<String>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("output", &self.output)
            .field("identifiers", &self.identifiers)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Whether a route creates accounts or signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    SignUp,
    SignIn,
}

/// Where to find the identifier in a request, and optionally what kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierSource {
    pub location: Location,
    /// `None`: detect email, phone or wallet from the value.
    pub kind: Option<Kind>,
    /// `jwt`/`userinfo`: the value at `location` is a token that `oauth` turns into the
    /// identifier.
    pub token: Option<TokenSource>,
}

/// A place in the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A JSON pointer (RFC 6901) starting with `/`.
    Json(String),
    /// An `application/x-www-form-urlencoded` field name.
    Form(String),
    /// A `multipart/form-data` field name.
    Multipart(String),
    /// A query parameter name.
    Query(String),
    /// A header name, lowercased. For tokens, `authorization` means `Authorization: Bearer`.
    Header(String),
    /// A cookie name (token sources only).
    Cookie(String),
}

/// How denials are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// 400..=599; default 403.
    pub status: http::StatusCode,
    /// An absolute path (`/denied`) or an `http(s)://` URL; HTML form posts get 303 to it.
    pub redirect: Option<String>,
}

impl Default for Deny {
    fn default() -> Self {
        Self {
            status: http::StatusCode::FORBIDDEN,
            redirect: None,
        }
    }
}

/// Request limits for gated routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes; default 64 KiB; at least 1.
    pub body: u64,
    /// Default 32; 1..=128.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body: 64 * 1024,
            max_json_depth: 32,
        }
    }
}

/// The most `workers` a config may ask for.
pub const MAX_WORKERS: usize = 512;

/// Timeouts; all but `shutdown_grace` are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub shutdown_grace: Duration,
    /// Time allowed for a TLS handshake on a TLS listener; default 10s.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// The durable store for entries and restrictions managed through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// SQLite database file, relative to the config file's directory; default `data/idgate.db`
    /// (the directory is created).
    pub sqlite: PathBuf,
}

/// Reload timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Quiet time after a file event before re-reading; default 200ms.
    pub debounce: Duration,
    /// Periodic re-read; `None` when configured as `0s`; default 30s.
    pub interval: Option<Duration>,
}

impl Default for Reload {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            interval: Some(Duration::from_secs(30)),
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Config path like `routes[1].identifier[0].json`, `${NAME}` for environment variables,
    /// or empty when no path applies.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", Position(path, *line, *column))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Display: one line per error, `config.yaml:12:7: routes[1].path: must start with '/'`.
    #[error("{}", InvalidLines(path, errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

/// `file`, `file:line` or `file:line:column`.
struct Position<'a>(&'a Path, Option<usize>, Option<usize>);

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())?;
        if let Some(line) = self.1 {
            write!(f, ":{line}")?;
            if let Some(column) = self.2 {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

struct InvalidLines<'a>(&'a Path, &'a [FieldError]);

impl fmt::Display for InvalidLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {e}", Position(self.0, e.line, e.column))?;
        }
        Ok(())
    }
}

/// Reads, expands `${ENV}`, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path)
}

/// Like [`load`] for text already read; `origin` names the file in errors and is the base for
/// relative paths.
pub fn from_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    from_str_with_env(text, origin, &env::process_env)
}

/// Like [`from_str`] with `lookup` instead of the process environment (for tests and tools).
pub fn from_str_with_env(
    text: &str,
    origin: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let expanded = env::expand(text, lookup).map_err(|errors| ConfigError::Invalid {
        path: origin.to_path_buf(),
        errors,
    })?;
    let raw: raw::RawConfig = serde_saphyr::from_str(&expanded.text).map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0);
        let line = location.and_then(|l| usize::try_from(l.line()).ok());
        let column = location
            .and_then(|l| usize::try_from(l.column()).ok())
            .zip(line)
            .map(|(c, l)| expanded.columns.original(l, c));
        ConfigError::Parse {
            path: origin.to_path_buf(),
            line,
            column,
            message: parse_message(&e),
        }
    })?;
    let base = origin.parent().unwrap_or_else(|| Path::new(""));
    validate::validate(raw, base).map_err(|mut errors| {
        for e in &mut errors {
            if let (Some(line), Some(column)) = (e.line, e.column) {
                e.column = Some(expanded.columns.original(line, column));
            }
        }
        ConfigError::Invalid {
            path: origin.to_path_buf(),
            errors,
        }
    })
}

/// The parser's message without location suffix or snippet, on one line.
fn parse_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    let message = serde_saphyr::UserMessageFormatter.format_message(e.without_snippet());
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
