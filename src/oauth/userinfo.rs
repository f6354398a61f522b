//! Userinfo lookups: the access token is sent as `Authorization: Bearer` to the provider's
//! userinfo endpoint (configured, or discovered from the issuer) and the identifier read from
//! the answer — at a JSON pointer with an optional verified flag, or GitHub's `/user/emails`
//! list (the primary verified address). Answers are cached by the SHA-256 of the token (never
//! the token itself) for `cache_ttl`, in a cache (moka) bounded to `cache_size` entries; a
//! provider that refused the token is cached too, an unreachable provider never. Concurrent
//! lookups of one token share one request to the provider.

use aws_lc_rs::digest;
use moka::future::Cache;
use serde_json::Value;
use tokio::sync::Mutex;

use super::http::Fetcher;
use super::jwks::discover;
use super::jwt::Verified;
use super::{Events, OAuthError};
use crate::config::{UserinfoFormat, UserinfoSource};

/// A provider's answer: the identifier it vouches for, or why it refused the token.
type Cached = Result<Verified, &'static str>;

/// Looks up access tokens for one `userinfo` source.
pub struct UserinfoVerifier {
    config: UserinfoSource,
    fetcher: Fetcher,
    endpoint: Mutex<Option<String>>,
    /// By the token's SHA-256; `None` when `cache_size` is 0.
    cache: Option<Cache<[u8; 32], Cached>>,
}

impl std::fmt::Debug for UserinfoVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserinfoVerifier")
            .field("url", &self.config.url)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl UserinfoVerifier {
    pub fn new(config: &UserinfoSource) -> Result<UserinfoVerifier, String> {
        Ok(UserinfoVerifier {
            fetcher: Fetcher::new(config.fetch.ca.as_deref(), config.fetch.timeout)?,
            endpoint: Mutex::new(config.url.clone()),
            cache: (config.cache_size > 0).then(|| {
                Cache::builder()
                    .max_capacity(u64::try_from(config.cache_size).unwrap_or(u64::MAX))
                    .time_to_live(config.cache_ttl)
                    .build()
            }),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &UserinfoSource {
        &self.config
    }

    /// Looks `token` up (or answers from the cache); requests and cache hits go to `events`.
    /// Concurrent lookups of one token wait for a single request to the provider.
    pub async fn verify(&self, token: &str, events: &dyn Events) -> Result<Verified, OAuthError> {
        let Some(cache) = &self.cache else {
            events.userinfo_cache(false);
            return self.lookup(token, events).await;
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        // A refusal is an answer and is cached; an unreachable provider is an error and is
        // not (the next request asks again).
        let entry = cache
            .entry(hash)
            .or_try_insert_with(async {
                match self.lookup(token, events).await {
                    Ok(v) => Ok(Ok(v)),
                    Err(OAuthError::Invalid(r)) => Ok(Err(r)),
                    Err(OAuthError::Unavailable(cause)) => Err(cause),
                }
            })
            .await;
        // A hit: the answer was cached, or another request's lookup was awaited. A miss:
        // this call asked the provider, or the provider could not be asked.
        events.userinfo_cache(entry.as_ref().is_ok_and(|e| !e.is_fresh()));
        entry
            .map_err(|cause| OAuthError::Unavailable((*cause).clone()))?
            .into_value()
            .map_err(OAuthError::Invalid)
    }

    async fn endpoint(&self) -> Result<String, OAuthError> {
        let mut ep = self.endpoint.lock().await;
        if let Some(u) = ep.as_ref() {
            return Ok(u.clone());
        }
        let issuer = self.config.issuer.as_deref().unwrap_or_default();
        let meta = discover(&self.fetcher, issuer).await?;
        let u = meta
            .get("userinfo_endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OAuthError::Unavailable(format!("{issuer}: discovery has no userinfo_endpoint"))
            })?
            .to_owned();
        *ep = Some(u.clone());
        Ok(u)
    }

    async fn lookup(&self, token: &str, events: &dyn Events) -> Result<Verified, OAuthError> {
        if token.is_empty() || token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(OAuthError::Invalid("malformed access token"));
        }
        let answer = self.request(token).await;
        events.userinfo_request(match &answer {
            Ok(_) => "ok",
            Err(OAuthError::Invalid(_)) => "refused",
            Err(OAuthError::Unavailable(_)) => "error",
        });
        read(&self.config, &answer?)
    }

    /// Asks the endpoint: the JSON answer, [`OAuthError::Invalid`] when the provider refused
    /// the token, [`OAuthError::Unavailable`] for everything else that went wrong.
    async fn request(&self, token: &str) -> Result<Value, OAuthError> {
        let url = self.endpoint().await?;
        let got = self.fetcher.get(&url, Some(token)).await?;
        match got.status.as_u16() {
            200..=299 => {}
            // A rate-limited 403 (GitHub's) says nothing about the token: unavailable, so it
            // is not cached as a refusal.
            403 if got.rate_limited => {
                return Err(OAuthError::Unavailable(format!(
                    "userinfo {url}: rate-limited (403)"
                )));
            }
            400 | 401 | 403 => {
                return Err(OAuthError::Invalid("the provider refused the access token"));
            }
            s => {
                return Err(OAuthError::Unavailable(format!(
                    "userinfo {url}: status {s}"
                )));
            }
        }
        serde_json::from_slice(&got.body)
            .map_err(|e| OAuthError::Unavailable(format!("userinfo {url}: {e}")))
    }
}

/// Reads the identifier (and `sub`, if any) out of a userinfo answer.
pub fn read(c: &UserinfoSource, body: &Value) -> Result<Verified, OAuthError> {
    let sub = match body.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let identifier = match c.format {
        UserinfoFormat::GithubEmails => {
            let list = body
                .as_array()
                .ok_or(OAuthError::Invalid("the emails answer is not a list"))?;
            list.iter()
                .find(|e| {
                    e.get("primary") == Some(&Value::Bool(true))
                        && e.get("verified") == Some(&Value::Bool(true))
                })
                .and_then(|e| e.get("email"))
                .and_then(Value::as_str)
                .ok_or(OAuthError::Invalid(
                    "the account has no primary verified email",
                ))?
                .to_owned()
        }
        UserinfoFormat::Object => {
            let id = match body.pointer(&c.field) {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(OAuthError::Invalid("the userinfo answer has no identifier")),
            };
            if let Some(f) = &c.verified_field
                && body.pointer(f) != Some(&Value::Bool(true))
            {
                return Err(OAuthError::Invalid(
                    "the provider does not say the identifier is verified",
                ));
            }
            id
        }
    };
    Ok(Verified { identifier, sub })
}
