//! The admin listener (loopback by default): an axum router.
//!
//! Routes today:
//!
//! | method | path       | auth | answer |
//! |--------|------------|------|--------|
//! | GET    | `/healthz` | none | 200 while the process serves |
//! | GET    | `/readyz`  | none | 200 while accepting traffic, 503 once shutdown began |
//!
//! The Clerk and Magic list APIs are added here (one file per resource) in later issues. The
//! data path never imports this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::snapshot::SnapshotHandle;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// False once shutdown began (`/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    pub snapshots: SnapshotHandle,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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
    use super::*;
    use crate::snapshot::Snapshot;
    use arc_swap::ArcSwap;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state(ready: bool, snap: Snapshot) -> AdminState {
        AdminState {
            ready: Arc::new(AtomicBool::new(ready)),
            snapshots: Arc::new(ArcSwap::from_pointee(snap)),
        }
    }

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        for (ready, want) in [(true, 200), (false, 503)] {
            let app = router(state(ready, crate::snapshot::tests::minimal()));
            let resp = app
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
}
