//! What operators see of the data path: Prometheus [`metrics`], the [`audit`] log and
//! [`request_id`]s, held together by one [`Observer`] per running gate.
//!
//! The proxy records into an `Observer`; the reloader counts reload outcomes in its
//! [`Metrics`]; the admin listener encodes the metrics at `/metrics`. This module belongs to
//! the data path's side of the import rules: it never imports `admin`, `store`, `reload`,
//! `proxy` or axum (`tests/architecture.rs`).

pub mod audit;
pub mod metrics;
pub mod request_id;

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Mode;
use crate::gate::decision::{Decision, explain};
use crate::identifier::Identifier;
use crate::snapshot::{Route, Snapshot};

pub use audit::{AuditError, AuditLog, Pseudonymizer};
pub use metrics::{Metrics, Traffic};
pub use request_id::RequestIds;

/// The decision's outcome as metrics and the audit log name it.
pub fn outcome(d: &Decision, mode: Mode) -> &'static str {
    match (d.deny, mode) {
        (None, _) => "allow",
        (Some(_), Mode::Enforce) => "deny",
        (Some(_), Mode::Shadow) => "would_deny",
    }
}

/// Metrics and (when configured) the audit log.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub audit: Option<AuditLog>,
    /// How each request's id is found or made (`request_id`).
    pub request_ids: RequestIds,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            metrics: Arc::new(Metrics::new()),
            audit: None,
            request_ids: RequestIds::default(),
        }
    }
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, audit: Option<AuditLog>) -> Observer {
        Observer {
            metrics,
            audit,
            request_ids: RequestIds::default(),
        }
    }

    /// Finds or makes request ids as `request_id` configures.
    pub fn with_request_ids(mut self, ids: RequestIds) -> Observer {
        self.request_ids = ids;
        self
    }

    /// Records one identifier's decision on a gated request: the decision counter, and an
    /// audit line (with the matched entry and its source) when the audit log is on.
    pub fn decided(
        &self,
        snap: &Snapshot,
        route: &Route,
        method: &str,
        id: &Identifier,
        d: &Decision,
        request_id: Option<&str>,
    ) {
        let outcome = outcome(d, route.mode);
        self.metrics.decision(&metrics::DecisionLabels {
            route: metrics::RouteName(route.name.clone()),
            outcome,
            reason: d.deny.map_or("none", |r| r.as_str()),
            mode: route.mode.as_str(),
        });
        let Some(audit) = &self.audit else {
            return;
        };
        // The entry is looked up again only for the audit line (off the decision's path).
        let (_, e) = explain(snap, route, id);
        let pseudo = audit.pseudonymizer();
        let (entry, source) = match e.entry {
            Some((entry, source)) => (Some(pseudo.entry(&entry)), Some(source)),
            None => (None, None),
        };
        audit.write(&audit::Record {
            time: audit::rfc3339(SystemTime::now()),
            request_id,
            route: &route.name,
            method,
            outcome,
            reason: e.reason,
            rule: e.rule,
            kind: id.kind().as_str(),
            identifier: pseudo.apply(id.as_str()),
            entry,
            source,
            mode: route.mode.as_str(),
        });
    }
}
