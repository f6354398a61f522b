//! idgate's own operator endpoints on the admin listener:
//!
//! | method | path | auth | answer |
//! |--------|------|------|--------|
//! | GET  | `/v1/idgate/status` | Bearer | snapshot generation, when and from what it was built, the last reload's outcome and error (with file:line), routes and their mode, list sizes by source, store health, invitation deliveries (pending/sent/failed, oldest pending) |
//! | POST | `/v1/idgate/check`  | Bearer | `{identifier, route?}` → per route: decision, reason, rule, matched entry and source, mode — `gate::explain`, as `idgate check` prints it |
//! | GET  | `/metrics`          | none   | Prometheus/OpenMetrics text ([`crate::observe::Metrics`]) |
//!
//! `/metrics` is unauthenticated like `/healthz` (a scraper should not hold a key that can
//! write lists); it carries counts and route names, never identifiers.

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AdminState;
use super::error::{ClerkError, ClerkErrors, ClerkJson, FromParams, Params};
use crate::gate::explain;
use crate::lists::ListKind;
use crate::observe::audit::rfc3339;
use crate::snapshot::Snapshot;

/// `/idgate/status` and `/idgate/check`, nested under `/v1` (behind Bearer auth).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/idgate/status", get(status))
        .route("/idgate/check", post(check))
}

/// `/metrics`, at the root of the admin listener.
pub fn metrics_routes() -> Router<AdminState> {
    Router::new().route("/metrics", get(metrics))
}

/// Entries per list and source: `(list, config, files, store)`.
fn list_sizes(snap: &Snapshot) -> [(&'static str, usize, usize, usize); 2] {
    [ListKind::Allow, ListKind::Block].map(|list| {
        let (config, files) = snap.config_list(list).len_by_source();
        let store = snap.store.read(list).len();
        let name = match list {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        };
        (name, config, files, store)
    })
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let snap = st.snapshots.load_full();
    let m = &st.observer.metrics;
    for (list, config, files, store) in list_sizes(&snap) {
        m.list_entries(list, "config", config);
        m.list_entries(list, "files", files);
        m.list_entries(list, "store", store);
    }
    m.generation(snap.generation);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn status(State(st): State<AdminState>) -> Response {
    let snap = st.snapshots.load_full();
    let reload = st.reloader.status();
    let lists: serde_json::Map<String, Value> = list_sizes(&snap)
        .into_iter()
        .map(|(list, config, files, store)| {
            (
                list.to_owned(),
                json!({ "config": config, "files": files, "store": store, "total": config + files + store }),
            )
        })
        .collect();
    // Store health: one cheap read through the writer's connection pool, timed.
    let started = Instant::now();
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        st.store.list(ListKind::Allow, Some(1), 0),
    )
    .await;
    st.observer.metrics.store_op("health", started.elapsed());
    let store = match probe {
        Ok(Ok(_)) => {
            json!({ "healthy": true, "latency_ms": started.elapsed().as_secs_f64() * 1000.0 })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store health check failed");
            json!({ "healthy": false, "error": "the store could not be read (see the gate's log)" })
        }
        Err(_) => json!({ "healthy": false, "error": "the store did not answer within 5s" }),
    };
    // The invitation outbox: what waits, what went out, what was given up.
    let deliveries = match st.store.delivery_counts().await {
        Ok(c) => json!({
            "pending": c.pending,
            "sent": c.sent,
            "failed": c.failed,
            "oldest_pending_created_at": c.oldest_pending_created_at,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "reading invitation delivery counts failed");
            json!({ "error": "the store could not be read (see the gate's log)" })
        }
    };
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| {
            json!({ "name": &*r.name, "path": r.path, "kind": kind_name(r.kind), "mode": r.mode.as_str() })
        })
        .collect();
    Json(json!({
        "generation": snap.generation,
        "built_at": rfc3339(snap.built_at),
        "config": st.reloader.config_path().display().to_string(),
        "last_reload": {
            "generation": reload.generation,
            "applied_at": rfc3339(reload.applied_at),
            "outcome": if reload.last_error.is_some() { "rejected" } else { "applied" },
            "error": reload.last_error,
        },
        "routes": routes,
        "lists": lists,
        "store": store,
        "deliveries": deliveries,
        "warnings": snap.warnings,
    }))
    .into_response()
}

fn kind_name(k: crate::config::RouteKind) -> &'static str {
    match k {
        crate::config::RouteKind::SignUp => "sign_up",
        crate::config::RouteKind::SignIn => "sign_in",
    }
}

/// `{identifier, route?}`.
#[derive(Debug)]
struct CheckBody {
    identifier: String,
    route: Option<String>,
}

impl FromParams for CheckBody {
    fn from_params(p: &mut Params) -> Self {
        CheckBody {
            identifier: p.required_string("identifier").unwrap_or_default(),
            route: p.opt_string("route"),
        }
    }
}

async fn check(
    State(st): State<AdminState>,
    ClerkJson(body): ClerkJson<CheckBody>,
) -> Result<Response, ClerkErrors> {
    let snap = st.snapshots.load_full();
    let routes: Vec<_> = snap
        .routes
        .iter()
        .filter(|r| body.route.as_deref().is_none_or(|name| &*r.name == name))
        .collect();
    if routes.is_empty() {
        return Err(ClerkError::ParamValueInvalid {
            param: "route".into(),
            long_message: match &body.route {
                Some(name) => format!("no route is named `{}`", crate::identifier::snippet(name)),
                None => "the configuration has no routes".into(),
            },
        }
        .into());
    }
    let id = crate::identifier::parse(&body.identifier, None, &snap.identifiers).map_err(|e| {
        ClerkError::ParamFormatInvalid {
            param: "identifier".into(),
            long_message: e.to_string(),
        }
    })?;
    let mut allowed = true;
    let results: Vec<Value> = routes
        .iter()
        .map(|r| {
            let (d, e) = explain(&snap, r, &id);
            allowed &= d.is_allowed();
            json!({
                "route": &*r.name,
                "kind": kind_name(r.kind),
                "mode": r.mode.as_str(),
                "outcome": crate::observe::outcome(&d, r.mode),
                "allowed": e.allowed,
                "reason": e.reason,
                "rule": e.rule,
                "entry": e.entry.as_ref().map(|(entry, _)| entry),
                "source": e.entry.as_ref().map(|(_, source)| source),
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({
            "identifier": id.as_str(),
            "type": id.kind().as_str(),
            "generation": snap.generation,
            "allowed": allowed,
            "results": results,
        })),
    )
        .into_response())
}
