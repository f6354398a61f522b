//! The file format as written: serde structs with `deny_unknown_fields`, values kept as
//! written (strings for addresses, sizes, durations) and wrapped in [`Spanned`] so that
//! validation can name the line and column of a bad value. `validate` turns these into the
//! public types.

use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_saphyr::Spanned;

use super::units::RawSize;
use super::{AllowlistMode, AuditIdentifiers, Mode, Precedence, RouteKind};
use crate::identifier::Kind;

pub(super) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: S<Vec<S<RawListener>>>,
    pub workers: Option<S<RawWorkers>>,
    pub upstream: S<String>,
    pub upstream_tls: Option<S<RawUpstreamTls>>,
    pub admin: Option<RawAdmin>,
    pub lists: Option<RawLists>,
    pub precedence: Option<Precedence>,
    pub restrictions: Option<RawRestrictions>,
    pub identifiers: Option<RawIdentifiers>,
    pub routes: Option<Vec<S<RawRoute>>>,
    pub deny: Option<RawDeny>,
    pub limits: Option<RawLimits>,
    pub timeouts: Option<RawTimeouts>,
    pub reload: Option<RawReload>,
    pub store: Option<RawStore>,
    pub mode: Option<Mode>,
    pub audit: Option<RawAudit>,
    pub request_id: Option<S<RawRequestId>>,
    pub invitations: Option<S<super::invitations::RawInvitations>>,
}

/// `workers`: `auto` or a thread count, as written (checked in `validate`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawWorkers {
    Count(i64),
    Other(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub addr: S<String>,
    pub tls: Option<S<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
    /// More certificates, each served to clients whose SNI names one of its DNS names.
    pub sni: Option<Vec<S<RawCertPair>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertPair {
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub ca: Option<S<String>>,
    pub client_cert: Option<S<String>>,
    pub client_key: Option<S<String>>,
    pub server_name: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<S<String>>,
    pub secret_keys: Option<Vec<S<String>>>,
    pub magic_client_id: Option<S<String>>,
    pub tls: Option<S<RawTls>>,
}

impl std::fmt::Debug for RawAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.secret_keys.as_ref().map_or(0, Vec::len);
        f.debug_struct("RawAdmin")
            .field("listen", &self.listen)
            .field("secret_keys", &format_args!("[redacted; {n} keys]"))
            .field("magic_client_id", &self.magic_client_id)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLists {
    pub allow: Option<S<Vec<String>>>,
    pub block: Option<S<Vec<String>>>,
    pub files: Option<RawListFiles>,
    pub max_entries: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListFiles {
    pub allow: Option<Vec<S<String>>>,
    pub block: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestrictions {
    pub allowlist: Option<AllowlistMode>,
    pub blocklist: Option<bool>,
    pub block_email_subaddresses: Option<bool>,
    pub block_disposable_email_domains: Option<bool>,
    pub allowlist_blocklist_disabled_on_sign_in: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentifiers {
    pub default_phone_region: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: S<String>,
    pub methods: Option<S<Vec<S<String>>>>,
    pub path: S<String>,
    pub kind: RouteKind,
    pub identifier: S<Vec<S<RawSource>>>,
    pub optional: Option<bool>,
    pub pass_safe_methods: Option<bool>,
    pub body_limit: Option<S<RawSize>>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub json: Option<S<String>>,
    pub form: Option<S<String>>,
    pub multipart: Option<S<String>>,
    pub query: Option<S<String>>,
    pub header: Option<S<String>>,
    /// An OIDC id_token or other signed JWT (`oauth`).
    pub jwt: Option<S<RawJwt>>,
    /// An OAuth access token looked up at a userinfo endpoint (`oauth`).
    pub userinfo: Option<S<RawUserinfo>>,
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
}

/// Where a token is in the request: one of these.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFrom {
    pub json: Option<S<String>>,
    pub form: Option<S<String>>,
    pub multipart: Option<S<String>>,
    pub query: Option<S<String>>,
    pub header: Option<S<String>>,
    pub cookie: Option<S<String>>,
}

/// A string or a list of strings (`audience: x` or `audience: [x, y]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    pub from: S<RawFrom>,
    pub issuer: Option<S<String>>,
    pub audience: Option<S<OneOrMany>>,
    pub jwks_uri: Option<S<String>>,
    pub public_key: Option<S<String>>,
    pub hmac_secret: Option<S<String>>,
    pub algorithm: Option<S<String>>,
    pub claim: Option<S<String>>,
    pub require_verified: Option<bool>,
    pub leeway: Option<S<String>>,
    pub jwks_max_age: Option<S<String>>,
    pub jwks_min_refresh: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUserinfo {
    pub from: S<RawFrom>,
    pub url: Option<S<String>>,
    pub issuer: Option<S<String>>,
    pub field: Option<S<String>>,
    pub verified_field: Option<S<String>>,
    pub require_verified: Option<S<bool>>,
    /// `github_emails`: the response is a list of `{email, primary, verified}`.
    pub format: Option<S<String>>,
    pub cache_ttl: Option<S<String>>,
    pub cache_size: Option<S<u64>>,
    pub timeout: Option<S<String>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeny {
    pub status: Option<S<u64>>,
    pub redirect: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub body: Option<S<RawSize>>,
    pub max_json_depth: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub header_read: Option<S<String>>,
    pub upstream_connect: Option<S<String>>,
    pub upstream_response: Option<S<String>>,
    pub shutdown_grace: Option<S<String>>,
    pub tls_handshake: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub sqlite: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub output: Option<S<String>>,
    pub identifiers: Option<AuditIdentifiers>,
    pub hmac_key: Option<S<String>>,
}

impl std::fmt::Debug for RawAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAudit")
            .field("output", &self.output)
            .field("identifiers", &self.identifiers)
            .field("hmac_key", &format_args!("[redacted]"))
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequestId {
    pub header: Option<S<String>>,
    pub trust: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub debounce: Option<S<String>>,
    pub interval: Option<S<String>>,
}

impl<'de> Deserialize<'de> for AllowlistMode {
    /// Accepts YAML booleans and the strings `auto`, `on`, `off`, `true`, `false`.
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AllowlistMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto`, `true` or `false`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AllowlistMode, E> {
                Ok(if v {
                    AllowlistMode::On
                } else {
                    AllowlistMode::Off
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AllowlistMode, E> {
                match v {
                    "auto" => Ok(AllowlistMode::Auto),
                    "true" | "on" => Ok(AllowlistMode::On),
                    "false" | "off" => Ok(AllowlistMode::Off),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}
