//! The route model: what a route is (its template, stage, percent, cohort, shadow and rollout
//! settings), as validated from the config file. Plain data and parsing of its small values; no
//! I/O. `config` builds it from the file; everything else reads it.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

/// A route's migration stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Everything goes to the monolith.
    Monolith,
    /// Served by the monolith; eligible requests are mirrored to the service and compared.
    Shadow,
    /// A sticky share of cohorts goes to the service.
    Canary,
    /// Everything goes to the service.
    Service,
}

impl Stage {
    /// Parses `monolith | shadow | canary | service`.
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "monolith" => Some(Stage::Monolith),
            "shadow" => Some(Stage::Shadow),
            "canary" => Some(Stage::Canary),
            "service" => Some(Stage::Service),
            _ => None,
        }
    }

    /// The name used in the file and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Monolith => "monolith",
            Stage::Shadow => "shadow",
            Stage::Canary => "canary",
            Stage::Service => "service",
        }
    }
}

/// A share in basis points (0..=10 000), so that `percent = 12.5` is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u16);

impl Percent {
    /// Builds from a percentage in 0..=100 with at most two decimals.
    pub fn from_percent(p: f64) -> Option<Percent> {
        if !(0.0..=100.0).contains(&p) {
            return None;
        }
        let bp = (p * 100.0).round();
        Some(Percent(bp as u16))
    }

    /// Basis points, 0..=10 000.
    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// As a percentage.
    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// Where a route's sticky cohort key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cohort {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// The client's IP address.
    Ip,
}

impl Cohort {
    /// Parses `header:NAME | cookie:NAME | ip`.
    pub fn parse(s: &str) -> Option<Cohort> {
        if s == "ip" {
            return Some(Cohort::Ip);
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes()).ok().map(Cohort::Header);
        }
        if let Some(name) = s.strip_prefix("cookie:") {
            let name = name.trim();
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"=;,".contains(&b)) {
                return Some(Cohort::Cookie(name.to_owned()));
            }
        }
        None
    }
}

impl std::fmt::Display for Cohort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cohort::Header(h) => write!(f, "header:{h}"),
            Cohort::Cookie(c) => write!(f, "cookie:{c}"),
            Cohort::Ip => f.write_str("ip"),
        }
    }
}

/// A header a request must carry for a route to match: `NAME` (present) or `NAME: VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// The exact value, or any value when `None`.
    pub value: Option<HeaderValue>,
}

impl std::fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}: {}", self.name, v.to_str().unwrap_or("?")),
            None => write!(f, "{}", self.name),
        }
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Static(String),
    /// `{name}`: one segment.
    Param,
    /// `{*name}`: the rest of the path (one or more characters), last only.
    CatchAll,
}

/// A validated path template: `/exact`, `{param}` segments and a final `{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses and validates a template.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path `{text}` must start with '/'"));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (catch_all, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("path `{text}`: `{part}` is not a valid {{param}} or {{*rest}} segment"));
                }
                if catch_all && !last {
                    return Err(format!("path `{text}`: {{*{name}}} must be the last segment"));
                }
                segments.push(if catch_all { Segment::CatchAll } else { Segment::Param });
            } else {
                if part.contains(['{', '}']) {
                    return Err(format!(
                        "path `{text}`: a segment is either literal text or a whole {{param}} / {{*rest}}"
                    ));
                }
                if part.is_empty() && !last {
                    return Err(format!("path `{text}` has an empty segment (`//`)"));
                }
                if *part == "." || *part == ".." {
                    return Err(format!("path `{text}` has a dot segment; paths are matched after normalisation"));
                }
                if crate::normalize::normalize_path(&format!("/{part}"))
                    .map(|p| p.len() != part.len() + 1)
                    .unwrap_or(true)
                {
                    return Err(format!("path `{text}`: segment `{part}` is not in normal form"));
                }
                segments.push(Segment::Static((*part).to_owned()));
            }
        }
        Ok(PathTemplate { text: text.to_owned(), segments })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Unique name.
    pub name: String,
    /// The path template.
    pub path: PathTemplate,
    /// Methods it matches; `None` = all.
    pub methods: Option<Vec<Method>>,
    /// A header the request must carry.
    pub header: Option<HeaderMatch>,
    /// Index into the config's upstreams of the new service.
    pub upstream: usize,
    /// Migration stage.
    pub stage: Stage,
    /// Share of cohorts for the service in canary.
    pub percent: Percent,
    /// Sticky cohort key.
    pub cohort: Cohort,
    /// Serve idempotent requests from the monolith when the service fails before answering.
    pub fallback: bool,
    /// In stage shadow, mirror non-idempotent methods too (off: only GET and HEAD).
    pub shadow_writes: bool,
    /// JSON pointers (`*` = any one segment) the shadow comparison skips.
    pub shadow_ignore: Vec<String>,
    /// Leaving shadow for canary or service needs a mismatch rate under this (0..=1).
    pub shadow_max_mismatch: f64,
    /// Leaving shadow for canary or service needs at least this many comparisons.
    pub shadow_min_compared: u64,
    /// Response headers the shadow comparison looks at (lower case).
    pub shadow_headers: Vec<HeaderName>,
    /// At most this many requests a second are mirrored (0: no limit).
    pub shadow_max_per_second: u64,
    /// The progressive rollout policy of the canary stage, if any.
    pub rollout: Option<RolloutPolicy>,
    /// Serve from the monolith when the service answers 404 (a path it does not implement
    /// yet); needs `fallback`.
    pub fallback_on_404: bool,
    /// At most this many requests a second per client key; more get 429.
    pub rate_limit: Option<RateLimit>,
    /// Line of the route's `[[routes]]` table in the file.
    pub line: usize,
}

/// A route's rate limit: requests a second per key (a header, a cookie, or the client address).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests a second per key.
    pub per_second: u64,
    /// What a client is counted by (a request without it is counted by its address).
    pub key: Cohort,
}

/// Default of a route's `shadow_max_per_second`.
pub const DEFAULT_SHADOW_MAX_PER_SECOND: u64 = 200;

/// Default of a route's `shadow_headers`.
pub const DEFAULT_SHADOW_HEADERS: [&str; 1] = ["content-type"];

/// A route's progressive rollout in the canary stage: the percent goes up step by step while the
/// service's answers stay within bounds of the monolith's, and the route goes back to the
/// monolith when they do not (see [`crate::rollout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// The canary percents, strictly ascending; after the last, if it is 100, the route moves to
    /// stage `service`.
    pub steps: Vec<Percent>,
    /// Minimum time at each step.
    pub dwell: Duration,
    /// Minimum requests the service answers at each step before it may advance.
    pub min_requests: u64,
    /// The service's error rate (5xx and fallbacks) may exceed the monolith's by this much (0..=1).
    pub max_error_rate_increase: f64,
    /// The service's p99 latency may be at most the monolith's times this, plus `p99_slack`.
    pub max_p99_ratio: f64,
    /// Absolute allowance added to the p99 bound, so sub-millisecond jitter cannot fail a step.
    pub p99_slack: Duration,
}
