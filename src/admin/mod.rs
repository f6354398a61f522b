//! The admin listener (loopback by default): an axum router.
//!
//! Routes:
//!
//! | method | path | auth | answer |
//! |--------|------|------|--------|
//! | GET    | `/healthz` | none | 200 while the process serves |
//! | GET    | `/readyz`  | none | 200 while accepting traffic, 503 once shutdown began |
//! | GET, POST | `/v1/allowlist_identifiers` | Bearer | Clerk: list, create |
//! | DELETE | `/v1/allowlist_identifiers/{id}` | Bearer | Clerk: delete |
//! | GET, POST | `/v1/blocklist_identifiers` | Bearer | Clerk: list, create |
//! | DELETE | `/v1/blocklist_identifiers/{id}` | Bearer | Clerk: delete |
//! | GET, PATCH | `/v1/instance` | Bearer | Clerk: instance (PATCH: 204, nothing stored) |
//! | PATCH  | `/v1/instance/restrictions` | Bearer | Clerk: restrictions |
//! | PATCH  | `/v1/beta_features/instance_settings` | Bearer | Clerk: `restricted_to_allowlist` |
//! | GET | `/v1/idgate/status` | Bearer | idgate: snapshot, last reload, lists, store ([`idgate`]) |
//! | POST | `/v1/idgate/check` | Bearer | idgate: the decision for an identifier ([`idgate`]) |
//! | GET | `/metrics` | none | Prometheus metrics ([`idgate`]) |
//! | GET, PUT, PATCH, DELETE | `/v1/api/magic_client/access_control` | `X-Magic-Secret-Key` | Magic access control ([`magic`]) |
//!
//! Everything else under `/v1` passes [`auth`] (also unknown paths, which answer 404
//! `resource_not_found` only once authenticated), a body limit of [`BODY_LIMIT`] (413 in
//! Clerk's envelope), and answers errors in Clerk's envelope ([`error`]). Every request is
//! traced in a span with method, path and status; headers (and so keys) are never logged.
//! The data path never imports this module.

pub mod auth;
pub mod clerk;
pub mod error;
pub mod idgate;
pub mod magic;
#[cfg(test)]
pub(crate) mod testkit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::snapshot::SnapshotHandle;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// False once shutdown began (`/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    /// The current snapshot (config/file entries in `allow`/`block`, the effective policy).
    pub snapshots: SnapshotHandle,
    /// Durable API-managed entries and restriction overrides.
    pub store: Arc<crate::store::Store>,
    /// Applies committed store changes to the live gate before a write is answered.
    pub reloader: Arc<crate::reload::Reloader>,
    /// Metrics (served at `/metrics`) and the audit log.
    pub observer: Arc<crate::observe::Observer>,
    /// The `invitations:` section (restart-only); `None` = invitations cannot be delivered.
    pub invitations: Option<Arc<crate::config::InvitationsConfig>>,
}

/// Largest request body the admin API reads (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let v1 = clerk::routes()
        .merge(idgate::routes())
        .fallback(|| async { error::ClerkError::EndpointNotFound.into_response() })
        .method_not_allowed_fallback(|| async {
            error::ClerkError::MethodNotAllowed.into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_secret_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(magic::routes())
        .merge(idgate::metrics_routes())
        .nest("/v1", v1)
        .layer(middleware::from_fn(trace))
        .with_state(state)
}

/// One span per request: method, path (no query, no headers), status.
async fn trace(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "admin",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    async move {
        let resp = next.run(req).await;
        let status = resp.status().as_u16();
        tracing::Span::current().record("status", status);
        tracing::debug!(status, "admin request");
        resp
    }
    .instrument(span)
    .await
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(st): State<AdminState>) -> impl IntoResponse {
    let generation = st.snapshots.load().generation;
    if st.ready.load(Ordering::Acquire) {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "generation": generation })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down", "generation": generation })),
        )
    }
}

/// Serves the admin router until `stop` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("admin server failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{KEY, kit};
    use super::*;
    use axum::body::Body;
    use axum::http::header;
    use tower::ServiceExt;

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        let k = kit("", "", "");
        for (ready, want) in [(true, 200), (false, 503)] {
            k.state.ready.store(ready, Ordering::Release);
            let resp = k
                .app
                .clone()
                .oneshot(
                    axum::http::Request::get("/readyz")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), want);
        }
    }

    #[tokio::test]
    async fn v1_auth_table() {
        let k = kit("", "", "");
        let key = format!("Bearer {KEY}");
        let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
            (
                "GET",
                "/v1/blocklist_identifiers",
                Some(key.as_str()),
                200,
                "",
            ),
            (
                "GET",
                "/v1/blocklist_identifiers",
                Some("Bearer sk_test_other"),
                200,
                "",
            ),
            (
                "GET",
                "/v1/blocklist_identifiers",
                None,
                401,
                "clerk_key_invalid",
            ),
            (
                "GET",
                "/v1/blocklist_identifiers",
                Some("Bearer nope"),
                401,
                "clerk_key_invalid",
            ),
            (
                "GET",
                "/v1/blocklist_identifiers",
                Some(KEY),
                401,
                "authorization_header_format_invalid",
            ),
            (
                "POST",
                "/v1/allowlist_identifiers",
                Some("Token x"),
                401,
                "authorization_header_format_invalid",
            ),
            (
                "DELETE",
                "/v1/allowlist_identifiers/alid_1",
                None,
                401,
                "clerk_key_invalid",
            ),
            (
                "PATCH",
                "/v1/instance/restrictions",
                Some("Bearer x"),
                401,
                "clerk_key_invalid",
            ),
            // Unknown paths under /v1 are authenticated first, then 404 in the envelope.
            ("GET", "/v1/users", None, 401, "clerk_key_invalid"),
            (
                "GET",
                "/v1/users",
                Some(key.as_str()),
                404,
                "resource_not_found",
            ),
            (
                "PUT",
                "/v1/blocklist_identifiers",
                Some(key.as_str()),
                405,
                "request_method_not_allowed",
            ),
            // Health endpoints need no key.
            ("GET", "/healthz", None, 200, ""),
        ];
        for (method, path, auth, status, code) in cases {
            let a = k.call_with(method, path, None, *auth, true).await;
            assert_eq!(a.status, *status, "{method} {path} {auth:?}: {a:?}");
            assert_eq!(a.code(), *code, "{method} {path} {auth:?}");
            if *status >= 400 {
                assert_eq!(a.content_type.as_deref(), Some("application/json"));
                assert!(!a.long_message().is_empty());
            }
        }
        let a = k
            .call_with("GET", "/v1/blocklist_identifiers", None, Some(KEY), true)
            .await;
        assert_eq!(
            a.long_message(),
            "Invalid Authorization header format. Must be \"Bearer <YOUR_API_KEY>\""
        );
        let a = k.call_with("GET", "/v1/instance", None, None, false).await;
        assert_eq!(
            a.json["errors"][0]["message"],
            "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct."
        );
    }

    #[tokio::test]
    async fn no_keys_configured_refuses_every_v1_request() {
        let k = kit("", "", "");
        // The kit's config without its keys, reloaded.
        let path = k._dir.path().join("idgate.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let keyless = text.replace(
            r#"secret_keys: ["sk_test_kit", "sk_test_other"]"#,
            "secret_keys: []",
        );
        assert_ne!(keyless, text);
        std::fs::write(&path, keyless).unwrap();
        let outcome = k.state.reloader.reload();
        assert!(
            matches!(outcome, crate::reload::Outcome::Applied { .. }),
            "{outcome:?}"
        );
        let app = router(k.state.clone());
        for auth in ["Bearer ", "Bearer x", "Bearer sk_test_kit"] {
            let resp = app
                .clone()
                .oneshot(
                    axum::http::Request::get("/v1/instance")
                        .header(header::AUTHORIZATION, auth)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{auth}");
        }
    }

    #[tokio::test]
    async fn body_limit_and_media_type() {
        let k = kit("", "", "");
        let big = format!("{{\"identifier\":\"{}@x.com\"}}", "a".repeat(BODY_LIMIT));
        let a = k
            .call("POST", "/v1/blocklist_identifiers", Some(&big))
            .await;
        assert_eq!(
            (a.status, a.code()),
            (413, "request_body_too_large"),
            "{a:?}"
        );

        let req = axum::http::Request::post("/v1/blocklist_identifiers")
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "text/csv")
            .body(Body::from("identifier\na@x.com"))
            .unwrap();
        let a = k.send(req).await;
        assert_eq!(
            (a.status, a.code()),
            (415, "unsupported_content_type"),
            "{a:?}"
        );
        assert!(a.long_message().contains("text/csv"));

        let a = k
            .call("POST", "/v1/blocklist_identifiers", Some("{nope"))
            .await;
        assert_eq!((a.status, a.code()), (400, "request_body_invalid"), "{a:?}");
        assert_eq!(a.json["errors"][0]["message"], "Request body invalid");
    }
}
