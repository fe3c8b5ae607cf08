//! Prometheus metrics of one proxy instance (its own registry, so several proxies can live in one
//! test process). Per-route handles are resolved when a config is loaded, so the request path
//! only increments atomics.

use crate::policy::judge::{LATENCY_BUCKETS, Tally};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

/// Route label of requests no route matched.
pub const UNMATCHED: &str = "_default";
/// Route label of requests refused before routing (bad path, oversized head).
pub const REJECTED: &str = "_rejected";

/// Status classes, in the order of [`TargetMetrics::by_class`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    fallbacks: IntCounterVec,
    fallback_impossible: IntCounterVec,
    /// Upstream health: 1 healthy, 0 not, by upstream and address.
    pub upstream_healthy: IntGaugeVec,
    /// Open circuit breakers by upstream and address.
    pub breaker_open: IntGaugeVec,
    /// Config reloads by result (`ok` / `error`).
    pub reloads: IntCounterVec,
    shadow_compared: IntCounterVec,
    shadow_mismatched: IntCounterVec,
    shadow_dropped: IntCounterVec,
    /// Routes per stage.
    pub migration_routes: IntGaugeVec,
    /// Share of the routes served by the new services (canary counted by its percent).
    pub migration_endpoint_share: Gauge,
    /// Share of the requests since start answered by the new services.
    pub migration_traffic_share: Gauge,
    /// Per route: the share of its traffic its stage gives the service (0, the canary percent, 1).
    pub route_service_share: GaugeVec,
    /// Client connections the proxy closed to protect itself, by reason (`header_timeout`,
    /// `too_many_from_client`).
    pub connections_closed: IntCounterVec,
    /// Reloads of the TLS listener's certificate by result (`ok` / `error`).
    pub tls_reloads: IntCounterVec,
    /// 1 while the route state's store answers (always 1 for the config file), 0 when this
    /// instance serves its last state without it.
    pub state_store_up: prometheus::IntGauge,
    /// Requests refused by a route's rate limit (429), by route.
    pub rate_limited: IntCounterVec,
    /// Requests refused because an upstream's bulkhead stayed full (503), by upstream.
    pub bulkhead_rejected: IntCounterVec,
    /// Retries made, by upstream.
    pub retries: IntCounterVec,
}

/// Handles for one (route, upstream) pair.
#[derive(Clone)]
pub struct TargetMetrics {
    by_class: [IntCounter; 5],
    latency: Histogram,
}

impl TargetMetrics {
    /// Records one finished request.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }

    /// Requests counted so far.
    pub fn total(&self) -> u64 {
        self.by_class.iter().map(IntCounter::get).sum()
    }

    /// The counts so far: requests, 5xx answers and the latency histogram's buckets.
    pub fn tally(&self) -> Tally {
        use prometheus::core::Metric;
        let m = self.latency.metric();
        let h = m.get_histogram();
        let buckets = h.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        Tally { requests: self.total(), errors: self.by_class[4].get(), samples: h.get_sample_count(), buckets }
    }
}

/// Handles for one route: its service and monolith sides, and its fallbacks.
#[derive(Clone)]
pub struct RouteMetrics {
    /// Requests served by the route's service.
    pub service: TargetMetrics,
    /// Requests served by the monolith.
    pub monolith: TargetMetrics,
    /// Requests that fell back from the service to the monolith.
    pub fallbacks: IntCounter,
    /// Requests that would have fallen back but could not: their body was over the retry
    /// buffer ([`FALLBACK_BODY_LIMIT`]).
    pub fallback_impossible: IntCounter,
    /// Requests refused by the route's rate limit.
    pub rate_limited: IntCounter,
}

/// Pingora keeps this much of a request body to send it again (a fixed size in Pingora
/// 0.9): a request with a bigger body cannot fall back once its body has started to go to
/// the service.
pub const FALLBACK_BODY_LIMIT: usize = 64 * 1024;

impl Metrics {
    /// Creates and registers the families.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("ficus_requests_total", "Proxied requests by route, upstream and status class"),
            &["route", "upstream", "class"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("ficus_request_duration_seconds", "Time from request head to the end of the response")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "upstream"],
        )
        .expect("valid metric");
        let fallbacks = IntCounterVec::new(
            Opts::new("ficus_fallbacks_total", "Requests served by the monolith because the service failed"),
            &["route"],
        )
        .expect("valid metric");
        let fallback_impossible = IntCounterVec::new(
            Opts::new(
                "ficus_fallback_impossible_total",
                "Requests that could not fall back to the monolith: their body was over the 64 KB retry buffer",
            ),
            &["route"],
        )
        .expect("valid metric");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new("ficus_upstream_healthy", "1 when the active health check passes"),
            &["upstream", "addr"],
        )
        .expect("valid metric");
        let breaker_open = IntGaugeVec::new(
            Opts::new("ficus_upstream_breaker_open", "1 when the passive circuit breaker keeps the address out"),
            &["upstream", "addr"],
        )
        .expect("valid metric");
        let reloads =
            IntCounterVec::new(Opts::new("ficus_config_reloads_total", "Config loads by result"), &["result"])
                .expect("valid metric");
        let shadow =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
        let shadow_compared =
            shadow("ficus_shadow_compared_total", "Shadow comparisons of the monolith's and the service's answers");
        let shadow_mismatched =
            shadow("ficus_shadow_mismatched_total", "Shadow comparisons with a difference that is not noise");
        let shadow_dropped = shadow("ficus_shadow_dropped_total", "Shadow copies dropped because the queue was full");
        let migration_routes =
            IntGaugeVec::new(Opts::new("ficus_migration_routes", "Routes per migration stage"), &["stage"])
                .expect("valid metric");
        let migration_endpoint_share = Gauge::new(
            "ficus_migration_endpoint_share",
            "Share of the routes served by the new services (a canary route counts by its percent)",
        )
        .expect("valid metric");
        let migration_traffic_share = Gauge::new(
            "ficus_migration_traffic_share",
            "Share of the requests since the proxy started that the new services answered",
        )
        .expect("valid metric");
        let route_service_share = GaugeVec::new(
            Opts::new("ficus_route_service_share", "Share of a route's traffic its stage sends to the service"),
            &["route"],
        )
        .expect("valid metric");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "ficus_connections_closed_total",
                "Client connections closed by the proxy's limits (head deadline, connections per address)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new("ficus_tls_reloads_total", "Reloads of the TLS certificate after its files changed, by result"),
            &["result"],
        )
        .expect("valid metric");
        let state_store_up = prometheus::IntGauge::new(
            "ficus_state_store_up",
            "1 while the route state's store answers; 0: degraded, serving the last state, changes refused",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let rate_limited =
            counter("ficus_rate_limited_total", "Requests refused by the route's rate limit (429)", "route");
        let bulkhead_rejected = counter(
            "ficus_bulkhead_rejected_total",
            "Requests refused because the upstream's max_concurrent places stayed taken (503)",
            "upstream",
        );
        let retries =
            counter("ficus_retries_total", "Retries of idempotent requests, inside the retry budget", "upstream");
        for c in [
            Box::new(connections_closed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rate_limited.clone()),
            Box::new(bulkhead_rejected.clone()),
            Box::new(retries.clone()),
            Box::new(state_store_up.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(fallbacks.clone()),
            Box::new(fallback_impossible.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(breaker_open.clone()),
            Box::new(reloads.clone()),
            Box::new(shadow_compared.clone()),
            Box::new(shadow_mismatched.clone()),
            Box::new(shadow_dropped.clone()),
            Box::new(migration_routes.clone()),
            Box::new(migration_endpoint_share.clone()),
            Box::new(migration_traffic_share.clone()),
            Box::new(route_service_share.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            fallbacks,
            fallback_impossible,
            upstream_healthy,
            breaker_open,
            reloads,
            shadow_compared,
            shadow_mismatched,
            shadow_dropped,
            migration_routes,
            migration_endpoint_share,
            migration_traffic_share,
            route_service_share,
            connections_closed,
            tls_reloads,
            state_store_up,
            rate_limited,
            bulkhead_rejected,
            retries,
        }
    }

    /// Shadow counters of a route.
    pub fn shadow(&self, route: &str) -> crate::shadow::ShadowCounters {
        crate::shadow::ShadowCounters {
            compared: self.shadow_compared.with_label_values(&[route]),
            mismatched: self.shadow_mismatched.with_label_values(&[route]),
            dropped: self.shadow_dropped.with_label_values(&[route]),
        }
    }

    /// Handles for a (route, upstream) pair.
    pub fn target(&self, route: &str, upstream: &str) -> TargetMetrics {
        TargetMetrics {
            by_class: CLASSES.map(|c| self.requests.with_label_values(&[route, upstream, c])),
            latency: self.latency.with_label_values(&[route, upstream]),
        }
    }

    /// Handles for a route.
    pub fn route(&self, route: &str, service: &str, monolith: &str) -> RouteMetrics {
        RouteMetrics {
            service: self.target(route, service),
            monolith: self.target(route, monolith),
            fallbacks: self.fallbacks.with_label_values(&[route]),
            fallback_impossible: self.fallback_impossible.with_label_values(&[route]),
            rate_limited: self.rate_limited.with_label_values(&[route]),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
