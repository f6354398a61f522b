//! oauth: identifiers vouched for by an identity provider — verified OIDC id_tokens and other
//! signed JWTs ([`jwt`], keys static or from a cached JWKS, [`jwks`]) and access tokens looked
//! up at a userinfo endpoint ([`userinfo`], cached by token hash). Providers are reached over
//! HTTPS with the `tls` client ([`http`]).
//!
//! Failure is closed: a token that fails any check is [`OAuthError::Invalid`] (the proxy
//! answers 401, never forwards); a provider that is unreachable, slow or answers nonsense is
//! [`OAuthError::Unavailable`] (503 with `Retry-After`). Neither error, nor any log line,
//! carries token material. This module never imports `admin`, `store` or `reload`.
//!
//! What it does at the providers (JWKS fetches, userinfo requests, cache hits) is reported
//! through [`Events`], which `observe::Metrics` implements; the proxy passes its metrics to
//! [`Verifier::verify`].

pub mod http;
pub mod jwks;
pub mod jwt;
pub mod userinfo;

use crate::config::TokenSource;

pub use jwt::{JwtVerifier, Verified};
pub use userinfo::UserinfoVerifier;

/// Why a token gave no identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The token is not acceptable (a fixed reason, no token material).
    #[error("the token was refused: {0}")]
    Invalid(&'static str),
    /// The provider could not be asked (the cause, for logs).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// What a verifier reports about its traffic with the provider. Every method is called once
/// per event; implementations must be cheap (they run on the request path).
pub trait Events: Send + Sync {
    /// One JWKS fetch (with discovery, when the source discovers its `jwks_uri`). `trigger`:
    /// `initial` (nothing cached), `expired` (older than `jwks_max_age`) or `unknown_kid`;
    /// `ok`: a key set came back.
    fn jwks_fetch(&self, trigger: &'static str, ok: bool);
    /// A token named a kid the cached JWKS lacks, and the JWKS was not refetched because the
    /// last fetch is younger than `jwks_min_refresh`.
    fn jwks_refresh_limited(&self);
    /// One request to a userinfo (or `/user/emails`) endpoint: `ok` (2xx), `refused` (400,
    /// 401, 403: the token is not good) or `error` (unreachable, slow, other status, not JSON).
    fn userinfo_request(&self, outcome: &'static str);
    /// A userinfo lookup answered from the cache (`hit`) or not (`miss`).
    fn userinfo_cache(&self, hit: bool);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl Events for NoEvents {
    fn jwks_fetch(&self, _: &'static str, _: bool) {}
    fn jwks_refresh_limited(&self) {}
    fn userinfo_request(&self, _: &'static str) {}
    fn userinfo_cache(&self, _: bool) {}
}

/// A compiled token source.
#[derive(Debug)]
pub enum Verifier {
    Jwt(Box<JwtVerifier>),
    Userinfo(Box<UserinfoVerifier>),
}

impl Verifier {
    /// Builds the verifier (parses static keys, reads the CA file). `bearer`: the token is
    /// the `Authorization` header, whose value must be `Bearer <token>`.
    pub fn new(source: &TokenSource) -> Result<Verifier, String> {
        Ok(match source {
            TokenSource::Jwt(j) => Verifier::Jwt(Box::new(JwtVerifier::new(j)?)),
            TokenSource::Userinfo(u) => Verifier::Userinfo(Box::new(UserinfoVerifier::new(u)?)),
        })
    }

    /// Whether this verifier was built from `source` (a reload keeps its caches then).
    pub fn built_from(&self, source: &TokenSource) -> bool {
        match (self, source) {
            (Verifier::Jwt(v), TokenSource::Jwt(s)) => v.config() == s,
            (Verifier::Userinfo(v), TokenSource::Userinfo(s)) => v.config() == s,
            _ => false,
        }
    }

    /// Verifies the value found in the request. With `bearer`, the value is an
    /// `Authorization` header and must read `Bearer <token>`. Provider traffic is reported to
    /// `events`.
    pub async fn verify(
        &self,
        value: &str,
        bearer: bool,
        events: &dyn Events,
    ) -> Result<Verified, OAuthError> {
        let token = if bearer {
            match value.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                _ => {
                    return Err(OAuthError::Invalid(
                        "the Authorization header is not `Bearer <token>`",
                    ));
                }
            }
        } else {
            value.trim()
        };
        if token.is_empty() {
            return Err(OAuthError::Invalid("empty token"));
        }
        match self {
            Verifier::Jwt(v) => v.verify(token, events).await,
            Verifier::Userinfo(v) => v.verify(token, events).await,
        }
    }

    pub fn is_jwt(&self) -> bool {
        matches!(self, Verifier::Jwt(_))
    }
}
