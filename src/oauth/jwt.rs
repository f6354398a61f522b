//! Verifying a JWT and reading the identifier from its claims.
//!
//! The algorithm comes from the key, never from the token: a static key has one algorithm
//! (configured, or its type's default), a JWKS key has its own, and jsonwebtoken refuses a
//! header `alg` that differs — so `none`, HS256 signed with a public key, and every algorithm
//! swap fail. Header `jku`, `x5u`, `jwk` and `x5c` are never read. `exp`, `iss`, `aud` and
//! `sub` are required; `nbf` is checked when present; `azp` must be one of our audiences when
//! present, and present when the token has several audiences.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use super::http::Fetcher;
use super::jwks::{Jwks, JwksSource, Key};
use super::{Events, OAuthError};
use crate::config::{JwtKeys, JwtSource};

/// What a valid token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The identifier read at the configured claim.
    pub identifier: String,
    /// The token's subject.
    pub sub: String,
}

enum Keys {
    Static(Key),
    Remote(Box<Jwks>),
}

/// A PEM parser of jsonwebtoken.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// Verifies tokens for one `jwt` source.
pub struct JwtVerifier {
    config: JwtSource,
    keys: Keys,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    name.parse().ok()
}

impl JwtVerifier {
    /// Parses static keys now; remote keys are fetched on first use.
    pub fn new(config: &JwtSource) -> Result<JwtVerifier, String> {
        let keys = match &config.keys {
            JwtKeys::Hmac {
                secret,
                algorithm: alg,
            } => {
                let alg = alg.as_deref().map_or(Some(Algorithm::HS256), algorithm);
                Keys::Static(Key {
                    kid: None,
                    alg: alg.ok_or("unknown algorithm")?,
                    key: DecodingKey::from_secret(secret.as_bytes()),
                })
            }
            JwtKeys::PublicKey {
                pem,
                algorithm: alg,
            } => {
                let named = match alg.as_deref() {
                    Some(a) => Some(algorithm(a).ok_or("unknown algorithm")?),
                    None => None,
                };
                let tries: [(Algorithm, PemParser); 3] = [
                    (Algorithm::RS256, DecodingKey::from_rsa_pem),
                    (Algorithm::ES256, DecodingKey::from_ec_pem),
                    (Algorithm::EdDSA, DecodingKey::from_ed_pem),
                ];
                let (default, key) = tries
                    .iter()
                    .filter(|(a, _)| named.is_none_or(|n| n.family() == a.family()))
                    .find_map(|(a, f)| f(pem.as_bytes()).ok().map(|k| (*a, k)))
                    .ok_or(
                        "public_key: not a PEM RSA, EC or Ed25519 public key (for this algorithm)",
                    )?;
                let alg = named.unwrap_or(default);
                if key.family() != alg.family() {
                    return Err("public_key does not fit the algorithm".into());
                }
                Keys::Static(Key {
                    kid: None,
                    alg,
                    key,
                })
            }
            JwtKeys::JwksUri(u) => Keys::Remote(Box::new(Jwks::new(
                JwksSource::Uri(u.clone()),
                Fetcher::new(config.fetch.ca.as_deref(), config.fetch.timeout)?,
                config.fetch.max_age,
                config.fetch.min_refresh,
            ))),
            JwtKeys::Discovery => Keys::Remote(Box::new(Jwks::new(
                JwksSource::Discovery {
                    issuer: config.issuer.clone(),
                },
                Fetcher::new(config.fetch.ca.as_deref(), config.fetch.timeout)?,
                config.fetch.max_age,
                config.fetch.min_refresh,
            ))),
        };
        Ok(JwtVerifier {
            config: config.clone(),
            keys,
        })
    }

    /// The config this verifier was built from (a reload reuses it, and its key cache, when
    /// unchanged).
    pub fn config(&self) -> &JwtSource {
        &self.config
    }

    /// Verifies `token` and reads the identifier.
    pub async fn verify(&self, token: &str, events: &dyn Events) -> Result<Verified, OAuthError> {
        let header = decode_header(token)
            .map_err(|_| OAuthError::Invalid("malformed token or unsupported alg"))?;
        let key = match &self.keys {
            Keys::Static(k) => k.clone(),
            Keys::Remote(jwks) => jwks.key(header.kid.as_deref(), events).await?,
        };
        self.check(token, &key)
    }

    fn check(&self, token: &str, key: &Key) -> Result<Verified, OAuthError> {
        let c = &self.config;
        let mut v = Validation::new(key.alg);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_issuer(&[&c.issuer]);
        v.set_audience(&c.audiences);
        v.leeway = c.leeway.as_secs();
        v.validate_nbf = true;
        let data =
            decode::<Value>(token, &key.key, &v).map_err(|e| OAuthError::Invalid(reason(&e)))?;
        let claims = data.claims;
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(OAuthError::Invalid("`sub` is not a non-empty string")),
        };
        let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match claims.get("azp") {
            Some(Value::String(azp)) if c.audiences.iter().any(|a| a == azp) => {}
            Some(_) => {
                return Err(OAuthError::Invalid(
                    "`azp` is not one of the accepted audiences",
                ));
            }
            None if several => {
                return Err(OAuthError::Invalid(
                    "a token with several audiences has no `azp`",
                ));
            }
            None => {}
        }
        let identifier = match claims.pointer(&c.claim) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(OAuthError::Invalid("the identifier claim is not a string")),
            None => return Err(OAuthError::Invalid("the token has no identifier claim")),
        };
        if c.require_verified {
            let flag = format!("{}_verified", c.claim);
            if claims.pointer(&flag) != Some(&Value::Bool(true)) {
                return Err(OAuthError::Invalid(
                    "the provider does not say the identifier is verified",
                ));
            }
        }
        Ok(Verified { identifier, sub })
    }
}

/// A fixed description of why jsonwebtoken refused a token (no token material).
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet (nbf)",
        K::InvalidIssuer => "the token is from another issuer",
        K::InvalidAudience => "the token is for another audience",
        K::InvalidSignature => "the token's signature does not verify",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
            "the token's alg is not the key's algorithm"
        }
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud, sub)",
        K::InvalidSubject => "the token's subject is not accepted",
        _ => "malformed token",
    }
}
