//! The HTTPS client `oauth` uses to reach identity providers: the rustls connector of
//! [`crate::tls::UpstreamConnector`] (webpki roots plus an optional extra CA), HTTPS only, a
//! timeout per request, a cap on the response size and a `User-Agent` (GitHub requires one).
//! Errors never carry token material.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::OAuthError;
use crate::config::UpstreamTls;
use crate::tls::UpstreamConnector;

/// Responses larger than this are refused (a JWKS or userinfo document is a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// Sent with every request to a provider.
const USER_AGENT: &str = concat!("idgate/", env!("CARGO_PKG_VERSION"));

/// A pooled HTTPS client with a per-request timeout.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What came back: the status and the (bounded) body.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
    /// The answer says the client is rate-limited (`Retry-After`, or `X-RateLimit-Remaining:
    /// 0` as GitHub sends with its 403s): the provider's state, not the token's.
    pub rate_limited: bool,
}

impl Fetcher {
    /// Reads `ca` (blocking); no runtime needed until the first request.
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        let opts = UpstreamTls {
            ca: ca.map(Path::to_path_buf),
            ..UpstreamTls::default()
        };
        let tls = UpstreamConnector::new(Some(&opts)).map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .build(tls.wrap(http, false));
        Ok(Fetcher { client, timeout })
    }

    /// GETs `url` (which must be `https://`), with `Authorization: Bearer` when `bearer` is
    /// given. Any transport failure or timeout is [`OAuthError::Unavailable`].
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Fetched, OAuthError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| OAuthError::Unavailable(format!("bad provider URL {url:?}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(OAuthError::Unavailable(format!(
                "provider URL {url:?} is not https://"
            )));
        }
        // GitHub's API refuses requests without a User-Agent (403, which would read as a
        // refused token).
        let mut req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|_| OAuthError::Invalid("the token cannot be sent in a header"))?;
        let host = req.uri().host().unwrap_or_default().to_owned();
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| {
                OAuthError::Unavailable(format!("{host}: {}", crate::tls::client::error_chain(&e)))
            })?;
            let status = resp.status();
            let h = resp.headers();
            let rate_limited = h.contains_key(header::RETRY_AFTER)
                || h.get("x-ratelimit-remaining")
                    .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| OAuthError::Unavailable(format!("{host}: reading the answer: {e}")))?
                .to_bytes();
            Ok(Fetched {
                status,
                body,
                rate_limited,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                OAuthError::Unavailable(format!("{host} did not answer in {:?}", self.timeout))
            })?
    }
}
