//! Prometheus metrics of one proxy instance (its own registry, so several proxies can live in one
//! test process). Per-route handles are resolved when a config is loaded, so the request path
//! only increments atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
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
    /// Upstream health: 1 healthy, 0 not, by upstream and address.
    pub upstream_healthy: IntGaugeVec,
    /// Open circuit breakers by upstream and address.
    pub breaker_open: IntGaugeVec,
    /// Config reloads by result (`ok` / `error`).
    pub reloads: IntCounterVec,
    shadow_compared: IntCounterVec,
    shadow_mismatched: IntCounterVec,
    shadow_dropped: IntCounterVec,
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
}

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
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route", "upstream"],
        )
        .expect("valid metric");
        let fallbacks = IntCounterVec::new(
            Opts::new("ficus_fallbacks_total", "Requests served by the monolith because the service failed"),
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(fallbacks.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(breaker_open.clone()),
            Box::new(reloads.clone()),
            Box::new(shadow_compared.clone()),
            Box::new(shadow_mismatched.clone()),
            Box::new(shadow_dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            fallbacks,
            upstream_healthy,
            breaker_open,
            reloads,
            shadow_compared,
            shadow_mismatched,
            shadow_dropped,
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
