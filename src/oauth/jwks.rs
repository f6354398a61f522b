//! Remote signing keys: a JWKS fetched from `jwks_uri` (explicit, or discovered from the
//! issuer's `/.well-known/openid-configuration`), cached, refetched after `max_age`, and
//! refetched when a token names an unknown `kid` — at most one attempt per `min_refresh`,
//! failed attempts included, so a flood of made-up kids cannot hammer the provider, working or
//! not. Each key's algorithm comes from the JWKS (its `alg`, or its key type and curve);
//! symmetric (`oct`) and encryption keys are never used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

use super::http::Fetcher;
use super::{Events, OAuthError};

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// Where the JWKS URL comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Uri(String),
    Discovery { issuer: String },
}

struct State {
    keys: Option<Arc<Vec<Key>>>,
    /// When `keys` were fetched.
    fetched: Option<Instant>,
    /// The last attempt, and why it failed (`None`: it succeeded).
    attempt: Option<(Instant, Option<String>)>,
    jwks_uri: Option<String>,
}

/// A cached JWKS.
pub struct Jwks {
    source: JwksSource,
    fetcher: Fetcher,
    max_age: Duration,
    min_refresh: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    pub fn new(
        source: JwksSource,
        fetcher: Fetcher,
        max_age: Duration,
        min_refresh: Duration,
    ) -> Jwks {
        Jwks {
            source,
            fetcher,
            max_age,
            min_refresh,
            state: Mutex::new(State {
                keys: None,
                fetched: None,
                attempt: None,
                jwks_uri: None,
            }),
        }
    }

    /// The key for `kid` (or the only signing key when the token names none). Fetches,
    /// and refreshes refused by `min_refresh`, are reported to `events`.
    pub async fn key(&self, kid: Option<&str>, events: &dyn Events) -> Result<Key, OAuthError> {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        let fresh = st
            .fetched
            .is_some_and(|t| now.duration_since(t) < self.max_age);
        if fresh && let Some(k) = st.keys.as_deref().and_then(|ks| pick(ks, kid)) {
            return Ok(k);
        }
        // Stale, missing, or an unknown kid: refetch unless we just tried (successfully or
        // not: a provider that fails must not be hammered either).
        let trigger = match st.fetched {
            None => "initial",
            Some(_) if !fresh => "expired",
            Some(_) => "unknown_kid",
        };
        let recent = st
            .attempt
            .as_ref()
            .is_some_and(|(t, _)| now.duration_since(*t) < self.min_refresh);
        if recent {
            events.jwks_refresh_limited();
            if let Some(k) = st.keys.as_deref().and_then(|ks| pick(ks, kid)) {
                return Ok(k);
            }
            if let Some((_, Some(e))) = &st.attempt {
                return Err(OAuthError::Unavailable(format!(
                    "{e} (not retried before jwks_min_refresh)"
                )));
            }
        } else {
            let fetched = self.fetch(&mut st).await;
            events.jwks_fetch(trigger, fetched.is_ok());
            match fetched {
                Ok(keys) => {
                    st.keys = Some(Arc::new(keys));
                    st.fetched = Some(Instant::now());
                    st.attempt = Some((Instant::now(), None));
                }
                Err(e) => {
                    let cause = match &e {
                        OAuthError::Unavailable(c) => c.clone(),
                        OAuthError::Invalid(r) => (*r).to_owned(),
                    };
                    st.attempt = Some((Instant::now(), Some(cause)));
                    // A stale set still holds the provider's keys: use it for known kids.
                    if let Some(k) = st.keys.as_deref().and_then(|ks| pick(ks, kid)) {
                        tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys");
                        return Ok(k);
                    }
                    return Err(e);
                }
            }
        }
        st.keys
            .as_deref()
            .and_then(|ks| pick(ks, kid))
            .ok_or(OAuthError::Invalid(
                "no key of the provider matches the token's kid",
            ))
    }

    async fn fetch(&self, st: &mut State) -> Result<Vec<Key>, OAuthError> {
        let uri = match (&self.source, &st.jwks_uri) {
            (JwksSource::Uri(u), _) => u.clone(),
            (JwksSource::Discovery { .. }, Some(u)) => u.clone(),
            (JwksSource::Discovery { issuer }, None) => {
                let meta = discover(&self.fetcher, issuer).await?;
                let u = meta
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        OAuthError::Unavailable(format!("{issuer}: discovery has no jwks_uri"))
                    })?
                    .to_owned();
                st.jwks_uri = Some(u.clone());
                u
            }
        };
        let got = self.fetcher.get(&uri, None).await?;
        if !got.status.is_success() {
            return Err(OAuthError::Unavailable(format!(
                "JWKS {uri}: status {}",
                got.status
            )));
        }
        let set: JwkSet = serde_json::from_slice(&got.body)
            .map_err(|e| OAuthError::Unavailable(format!("JWKS {uri}: {e}")))?;
        let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
        tracing::info!(jwks = %uri, keys = keys.len(), "fetched JWKS");
        Ok(keys)
    }
}

/// Fetches the issuer's discovery document; its `issuer` must be exactly the configured one.
pub async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<serde_json::Value, OAuthError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let got = fetcher.get(&url, None).await?;
    if !got.status.is_success() {
        return Err(OAuthError::Unavailable(format!(
            "{url}: status {}",
            got.status
        )));
    }
    let meta: serde_json::Value = serde_json::from_slice(&got.body)
        .map_err(|e| OAuthError::Unavailable(format!("{url}: {e}")))?;
    if meta.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(OAuthError::Unavailable(format!(
            "{url}: the document names another issuer"
        )));
    }
    Ok(meta)
}

fn pick(keys: &[Key], kid: Option<&str>) -> Option<Key> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
        None => match keys {
            [only] => Some(only.clone()),
            _ => None,
        },
    }
}

/// A signing key with its algorithm, or `None` (encryption keys, `oct` keys, unknown types).
fn usable(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let from_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => from_type,
        Some(a) => {
            let a = match a {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            // The named algorithm must fit the key type.
            if a.family() != from_type.family() {
                return None;
            }
            a
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}
