//! SMS through an HTTP webhook: `POST {url}` with `{"to", "text", "invitation_id"}` as JSON,
//! `Authorization: Bearer` when configured and an `Idempotency-Key` (stable per delivery, see
//! [`super::render::delivery_key`]), over the project's hyper client and rustls connector
//! (`tls::UpstreamConnector`: webpki roots plus the optional `ca`). Any 2xx is accepted;
//! anything else, or no answer within `timeout`, is tried again later. The answer's body is
//! read (bounded) and dropped, never logged.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::SendError;
use crate::config::{SmsWebhookConfig, UpstreamTls};
use crate::tls::{TlsError, UpstreamConnector};

/// The answer body read before the connection is reused (a webhook answers with a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs SMS requests to the configured webhook.
pub struct WebhookSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    bearer: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The JSON body of one SMS request.
#[derive(Debug, serde::Serialize)]
pub struct SmsRequest<'a> {
    pub to: &'a str,
    pub text: &'a str,
    pub invitation_id: &'a str,
}

impl WebhookSender {
    /// Reads the CA file if any (blocking).
    pub fn new(cfg: &SmsWebhookConfig) -> Result<WebhookSender, TlsError> {
        let opts = UpstreamTls {
            ca: cfg.ca.clone(),
            ..UpstreamTls::default()
        };
        let tls = UpstreamConnector::new(Some(&opts))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .timer(TokioTimer::new())
            .build(tls.wrap(http, false));
        Ok(WebhookSender {
            client,
            url: cfg.url.clone(),
            bearer: cfg.bearer_token.clone(),
            timeout: cfg.timeout,
        })
    }

    /// Sends one SMS request; `Ok` on a 2xx answer.
    pub async fn send(&self, sms: &SmsRequest<'_>, idempotency_key: &str) -> Result<(), SendError> {
        let body = serde_json::to_vec(sms)
            .map_err(|e| SendError::Undeliverable(format!("the request cannot be built: {e}")))?;
        let mut req = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idempotency_key);
        if let Some(t) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| SendError::Undeliverable("the request cannot be built".into()))?;
        let host = self.url.authority().map_or("", |a| a.as_str()).to_owned();
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| {
                SendError::Transient(format!("{host}: {}", crate::tls::client::error_chain(&e)))
            })?;
            let status = resp.status();
            // Read (bounded) so the connection can be reused; the content is not used.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(SendError::Transient(format!("{host} answered {status}")))
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                SendError::Transient(format!("{host}: no answer within {:?}", self.timeout))
            })?
    }
}
