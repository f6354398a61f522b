//! Prometheus metrics (the `prometheus-client` crate): one [`Metrics`] per running gate, shared
//! by the proxy (decisions, refusals, durations, upstream errors), the reloader (reload
//! outcomes), `oauth` (JWKS fetches, userinfo requests and cache hits, through
//! [`crate::oauth::Events`]) and the admin listener, which encodes it at `GET /metrics`.
//!
//! Labels are `&'static str` or the route's `Arc<str>` name (a reference-count bump, no
//! allocation); a family allocates only the first time it sees a label set. The per-request
//! series (request durations, decisions) are held as handles, so recording one costs no
//! SipHash of its labels and no family lock.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

/// A route name as a label value (no copy of the string).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteName(pub Arc<str>);

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// `idgate_decisions_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: RouteName,
    /// `allow`, `deny` or `would_deny` (shadow mode).
    pub outcome: &'static str,
    /// `blocklist`, `allowlist`, `subaddress`, `disposable`, or `none` when allowed.
    pub reason: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    traffic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksFetchLabels {
    trigger: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    list: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// Which traffic a request was: on a gated route, or streamed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Gated,
    Ungated,
}

/// Every metric of the gate, registered once.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    /// The decision series seen so far, found by an Fx hash of their labels instead of the
    /// family's SipHash under its lock (a counter handle shares the family's count).
    decision_series: RwLock<FxHashMap<DecisionLabels, Counter>>,
    refusals: Family<CauseLabels, Counter>,
    /// The two `request_duration_seconds` series, resolved once (the family is in the
    /// registry): no label hashing or family lock per request.
    duration_gated: Histogram,
    duration_ungated: Histogram,
    upstream_errors: Family<KindLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    list_entries: Family<ListLabels, Gauge>,
    generation: Gauge,
    store_ops: Family<OpLabels, Histogram, fn() -> Histogram>,
    audit_dropped: Counter,
    jwks_fetches: Family<JwksFetchLabels, Counter>,
    jwks_refresh_limited: Counter,
    userinfo_requests: Family<OutcomeLabels, Counter>,
    userinfo_cache: Family<CacheLabels, Counter>,
    invitation_deliveries: Family<DeliveryLabels, Counter>,
    invitation_acceptances: Family<OutcomeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~6.5 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `idgate_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("idgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions on gated requests, one per identifier, by route, outcome, reason and mode",
            decisions.clone(),
        );
        let refusals = Family::<CauseLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests the gate answered itself with an error (400, 405, 408, 413, 415, 502, 503, 504) by cause",
            refusals.clone(),
        );
        let duration = Family::<TrafficLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to the response head, gated and ungated traffic",
            duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, connect_timeout, response_timeout, other)",
            upstream_errors.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reloads",
            "Config and list-file reloads by outcome (applied, unchanged, rejected)",
            reloads.clone(),
        );
        let list_entries = Family::<ListLabels, Gauge>::default();
        registry.register(
            "list_entries",
            "Entries per list (allow, block) and source (config, files, store)",
            list_entries.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "snapshot_generation",
            "Generation of the snapshot the gate serves",
            generation.clone(),
        );
        let store_ops = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "store_op_duration_seconds",
            "Admin store operations, from the call to its durable, enforced result",
            store_ops.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped_lines",
            "Audit lines dropped because the writer fell behind",
            audit_dropped.clone(),
        );
        let jwks_fetches = Family::<JwksFetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by trigger (initial, expired, unknown_kid) and outcome (ok, error)",
            jwks_fetches.clone(),
        );
        let jwks_refresh_limited = Counter::default();
        registry.register(
            "jwks_refresh_limited",
            "Unknown kids that did not refetch the JWKS because of jwks_min_refresh",
            jwks_refresh_limited.clone(),
        );
        let userinfo_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "userinfo_requests",
            "Requests to userinfo endpoints by outcome (ok, refused, error)",
            userinfo_requests.clone(),
        );
        let userinfo_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "userinfo_cache_lookups",
            "Userinfo lookups answered from the cache (hit) or not (miss)",
            userinfo_cache.clone(),
        );
        let invitation_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "invitation_deliveries",
            "Invitation delivery attempts by channel (email, sms) and outcome (sent, retry, failed)",
            invitation_deliveries.clone(),
        );
        let invitation_acceptances = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invitation_acceptances",
            "Forwarded sign-ups that may have a pending invitation (the proxy's pre-check passed), by outcome (accepted, none, dropped, error)",
            invitation_acceptances.clone(),
        );
        let duration_gated = duration
            .get_or_create(&TrafficLabels { traffic: "gated" })
            .clone();
        let duration_ungated = duration
            .get_or_create(&TrafficLabels { traffic: "ungated" })
            .clone();
        Metrics {
            registry,
            decisions,
            decision_series: RwLock::default(),
            refusals,
            duration_gated,
            duration_ungated,
            upstream_errors,
            reloads,
            list_entries,
            generation,
            store_ops,
            audit_dropped,
            jwks_fetches,
            jwks_refresh_limited,
            userinfo_requests,
            userinfo_cache,
            invitation_deliveries,
            invitation_acceptances,
        }
    }

    /// One decision on one identifier.
    pub fn decision(&self, labels: &DecisionLabels) {
        // Nothing panics while holding the lock; were it poisoned, the map is still whole.
        let read = self
            .decision_series
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = read.get(labels) {
            c.inc();
            return;
        }
        drop(read);
        let counter = self.decisions.get_or_create(labels).clone();
        counter.inc();
        self.decision_series
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels.clone(), counter);
    }

    /// An answer of the gate's own: `cause` is the error code (`bad_json`, `busy`, …).
    pub fn refusal(&self, cause: &'static str, status: u16) {
        self.refusals
            .get_or_create(&CauseLabels { cause, status })
            .inc();
    }

    /// Time to the response head.
    pub fn request_duration(&self, traffic: Traffic, elapsed: Duration) {
        let histogram = match traffic {
            Traffic::Gated => &self.duration_gated,
            Traffic::Ungated => &self.duration_ungated,
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// `kind`: `connect`, `connect_timeout`, `response_timeout` or `other`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// `outcome`: `applied`, `unchanged` or `rejected`.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Sets a list-size gauge (`list`: allow/block; `source`: config/files/store).
    pub fn list_entries(&self, list: &'static str, source: &'static str, n: usize) {
        self.list_entries
            .get_or_create(&ListLabels { list, source })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The served snapshot's generation.
    pub fn generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// One admin store operation (`op`: e.g. `insert`, `delete`, `bulk`).
    pub fn store_op(&self, op: &'static str, elapsed: Duration) {
        self.store_ops
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    /// One invitation delivery attempt: `channel` `email`/`sms`, `outcome` `sent` (the relay
    /// accepted it), `retry` (failed, tried again later) or `failed` (given up).
    pub fn invitation_delivery(&self, channel: &'static str, outcome: &'static str) {
        self.invitation_deliveries
            .get_or_create(&DeliveryLabels { channel, outcome })
            .inc();
    }

    /// One forwarded sign-up checked for invitations: `accepted` (an invitation became
    /// accepted), `none` (no pending invitation), `dropped` (the queue was full), `error`.
    pub fn invitation_acceptance(&self, outcome: &'static str) {
        self.invitation_acceptances
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// An audit line the writer could not take.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl crate::oauth::Events for Metrics {
    fn jwks_fetch(&self, trigger: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .get_or_create(&JwksFetchLabels { trigger, outcome })
            .inc();
    }

    fn jwks_refresh_limited(&self) {
        self.jwks_refresh_limited.inc();
    }

    fn userinfo_request(&self, outcome: &'static str) {
        self.userinfo_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    fn userinfo_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.userinfo_cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_labels_and_counts() {
        let m = Metrics::new();
        let labels = DecisionLabels {
            route: RouteName(Arc::from("sign-up")),
            outcome: "would_deny",
            reason: "blocklist",
            mode: "shadow",
        };
        m.decision(&labels);
        m.decision(&labels);
        m.refusal("bad_json", 400);
        m.request_duration(Traffic::Gated, Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains(
                r#"idgate_decisions_total{route="sign-up",outcome="would_deny",reason="blocklist",mode="shadow"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"idgate_refusals_total{cause="bad_json",status="400"} 1"#));
        assert!(text.contains(r#"idgate_request_duration_seconds_count{traffic="gated"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn oauth_events_are_counted() {
        use crate::oauth::Events;
        let m = Metrics::new();
        m.jwks_fetch("unknown_kid", false);
        m.jwks_refresh_limited();
        m.jwks_refresh_limited();
        m.userinfo_request("refused");
        m.userinfo_cache(true);
        let text = m.encode();
        for line in [
            r#"idgate_jwks_fetches_total{trigger="unknown_kid",outcome="error"} 1"#,
            "idgate_jwks_refresh_limited_total 2",
            r#"idgate_userinfo_requests_total{outcome="refused"} 1"#,
            r#"idgate_userinfo_cache_lookups_total{result="hit"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }
}
