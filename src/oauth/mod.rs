//! oauth: identifiers vouched for by an identity provider — verified OIDC id_tokens and other
//! signed JWTs ([`jwt`], keys static or from a cached JWKS, [`jwks`]) and access tokens looked
//! up at a userinfo endpoint ([`userinfo`], cached by token hash). Providers are reached over
//! HTTPS with the `tls` client ([`http`]).
//!
//! Failure is closed: a token that fails any check is [`OAuthError::Invalid`] (the proxy
//! answers 401, never forwards); a provider that is unreachable, slow or answers nonsense is
//! [`OAuthError::Unavailable`] (503 with `Retry-After`). Neither error, nor any log line,
//! carries token material. This module never imports `admin`, `store` or `reload`.

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
    /// `Authorization` header and must read `Bearer <token>`.
    pub async fn verify(&self, value: &str, bearer: bool) -> Result<Verified, OAuthError> {
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
            Verifier::Jwt(v) => v.verify(token).await,
            Verifier::Userinfo(v) => v.verify(token).await,
        }
    }

    pub fn is_jwt(&self) -> bool {
        matches!(self, Verifier::Jwt(_))
    }
}
