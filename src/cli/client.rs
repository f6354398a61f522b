//! The `idgate lists` HTTP client: HTTP/1.1 over hyper-util's pooled legacy client, to the
//! Magic access-control endpoint of a running gate's admin API. Every call carries
//! `X-Magic-Secret-Key` and `target_client_id`; an answer is unwrapped from Magic's envelope
//! (`status: ok` → `data`, anything else → [`CliError::Api`]).

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{CliError, Connection};
use crate::admin::magic::{KEY_HEADER, PATH};
use crate::tls::client::error_chain;

/// A client for one admin API.
pub struct AdminClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    key: String,
    client_id: String,
}

impl AdminClient {
    /// Checks the URL (`http://host[:port]`, no path beyond `/`) and builds the client.
    pub fn new(conn: &Connection) -> Result<AdminClient, CliError> {
        let bad = |reason: &str| CliError::Url {
            url: conn.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = conn.url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(
                "only http:// is supported (the admin API listens on loopback)",
            ));
        }
        if uri.authority().is_none() {
            return Err(bad("no host"));
        }
        if conn.key.trim().is_empty() {
            return Err(CliError::Usage(
                "the secret key is empty (--key or IDGATE_SECRET_KEY)".into(),
            ));
        }
        Ok(AdminClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base: conn.url.trim_end_matches('/').to_owned(),
            key: conn.key.trim().to_owned(),
            client_id: conn.client_id.clone(),
        })
    }

    /// GET: the answer's `data`.
    pub async fn get(&self) -> Result<Value, CliError> {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("target_client_id", &self.client_id)
            .finish();
        self.call(
            Method::GET,
            &format!("{}{PATH}?{q}", self.base),
            Bytes::new(),
        )
        .await
    }

    /// PUT/PATCH/DELETE with `emails`: the answer's `data`.
    pub async fn send(&self, method: &str, emails: &Value) -> Result<Value, CliError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| CliError::Usage(format!("bad method: {e}")))?;
        let body = json!({ "target_client_id": self.client_id, "emails": emails });
        let body = serde_json::to_vec(&body).map_err(|e| CliError::Protocol(e.to_string()))?;
        self.call(method, &format!("{}{PATH}", self.base), Bytes::from(body))
            .await
    }

    async fn call(&self, method: Method, url: &str, body: Bytes) -> Result<Value, CliError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(KEY_HEADER, &self.key);
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CliError::Usage(format!("cannot build the request: {e}")))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| CliError::Connect {
                url: self.base.clone(),
                message: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Connect {
                url: self.base.clone(),
                message: e.to_string(),
            })?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            CliError::Protocol(format!(
                "HTTP {status} with a body that is not JSON: {}",
                crate::identifier::snippet(&String::from_utf8_lossy(&bytes))
            ))
        })?;
        if (200..300).contains(&status) && v["status"] == "ok" {
            return Ok(v["data"].clone());
        }
        Err(CliError::Api {
            status,
            code: v["error_code"].as_str().unwrap_or("").to_owned(),
            message: v["message"].as_str().unwrap_or("").to_owned(),
        })
    }
}
