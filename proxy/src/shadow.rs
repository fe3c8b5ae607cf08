//! The shadow stage: a route in stage `shadow` is served by the monolith, and a copy of each
//! eligible request is sent to the route's service in the background so the two answers can be
//! compared.
//!
//! - The request path only hands a [`Job`] (request copy + the monolith's answer, captured as it
//!   streamed to the client) to the route's bounded queue with `try_send`; a full queue drops the
//!   job and counts it. It never waits on the shadow.
//! - [`WORKERS`] tasks per route, on a thread of their own (`ficus-shadow`, at nice 19, so the
//!   comparisons never run on the proxy's worker threads and get only the CPU they leave), take jobs from the queue, send the copy to the
//!   service (with a timeout) and compare the answers: status, then the bodies — JSON structurally ([`diff_json`]:
//!   key order ignored, numbers by value, arrays by position), anything else byte for byte.
//! - Noise is learnt as Twitter's Diffy does: for the first [`NOISE_FIRST`] jobs of a route and
//!   then one in [`NOISE_EVERY`], the request is also sent to the monolith a second time *before*
//!   the comparison is judged (safe methods only: a write is never sent to the monolith twice); every pointer where the two monolith answers differ (array indices
//!   replaced by `*`) is noise for the route from then on. A comparison whose only differences are
//!   noise or ignored (`shadow_ignore`) counts as matched.
//! - Per-route stats are bounded: counters, the noise set and the last [`SAMPLES`] mismatches.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method};
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// Bodies (request and answers) larger than this are not compared.
pub const BODY_LIMIT: usize = 1 << 20;
/// Jobs waiting per route; more are dropped (with bodies up to [`BODY_LIMIT`], this bounds the
/// memory a route's backlog can hold).
pub const QUEUE: usize = 64;
/// Concurrent comparisons per route.
pub const WORKERS: usize = 4;
/// The first jobs of a route whose request is also sent to the monolith twice (noise learning).
pub const NOISE_FIRST: u64 = 20;
/// After [`NOISE_FIRST`], one job in this many is also sent to the monolith twice.
pub const NOISE_EVERY: u64 = 10;
/// Mismatches kept per route.
pub const SAMPLES: usize = 20;
/// Pointer used for a difference in status code.
pub const STATUS_POINTER: &str = "(status)";
/// Header that marks a shadow copy, so upstreams can tell it apart.
pub const SHADOW_HEADER: &str = "x-ficus-shadow";

/// One answer: status, the route's chosen headers and body (up to [`BODY_LIMIT`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The route's `shadow_headers` the answer carried, each with its values joined by ", ".
    pub headers: Vec<(HeaderName, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl Answer {
    /// An answer without compared headers.
    pub fn new(status: u16, body: Bytes) -> Answer {
        Answer { status, headers: Vec::new(), body }
    }
}

/// The headers of `names` that `map` holds, each with its values joined by ", ".
pub fn chosen_headers(map: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, String)> {
    names
        .iter()
        .filter(|n| map.contains_key(*n))
        .map(|n| {
            let values: Vec<String> =
                map.get_all(n).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
            (n.clone(), values.join(", "))
        })
        .collect()
}

/// Where a shadow call goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://IP:PORT` or `https://NAME:PORT`.
    pub base: Arc<str>,
    /// The client for a TLS upstream (its trust, its names pinned); `None`: the workers' own.
    pub client: Option<reqwest::Client>,
}

/// A request copy and the monolith's answer to it, handed to the route's workers.
#[derive(Debug, Clone)]
pub struct Job {
    /// Method.
    pub method: Method,
    /// Normalised path and query.
    pub path_and_query: String,
    /// Request headers (hop-by-hop ones removed by the workers).
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// What the monolith answered the client.
    pub monolith: Answer,
    /// An address of the monolith (for the noise-learning second call).
    pub monolith_target: Target,
    /// An address of the route's service.
    pub service_target: Target,
    /// Timeout of each shadow call.
    pub timeout: Duration,
    /// The route's `shadow_ignore` patterns.
    pub ignore: Arc<[String]>,
    /// The route's `shadow_headers`.
    pub compared_headers: Arc<[HeaderName]>,
}

/// One difference between two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// RFC 6901 JSON pointer ("" for a whole non-JSON body, [`STATUS_POINTER`] for the status).
    pub pointer: String,
    /// The monolith's value (null when absent).
    pub monolith: Value,
    /// The service's value (null when absent).
    pub service: Value,
    /// The pointer with array indices replaced by `*` (how noise is remembered).
    #[serde(skip)]
    pub pattern: String,
}

/// A mismatch kept as a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The differences that were not noise nor ignored.
    pub diff: Vec<Difference>,
}

/// What `GET /diffs?route=NAME` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    /// The route.
    pub route: String,
    /// Comparisons made.
    pub compared: u64,
    /// Comparisons with no difference but noise or ignored fields.
    pub matched: u64,
    /// Comparisons with a real difference.
    pub mismatched: u64,
    /// Jobs dropped because the route's queue was full.
    pub dropped: u64,
    /// Shadow calls that failed (service down, timeout) and were not compared.
    #[serde(default)]
    pub failed: u64,
    /// Requests not compared because a body exceeded the limit.
    #[serde(default)]
    pub skipped: u64,
    /// Requests not mirrored because the route had mirrored `shadow_max_per_second` already.
    #[serde(default)]
    pub sampled_out: u64,
    /// Pointer patterns found to differ between two monolith answers to the same request.
    pub noise: Vec<String>,
    /// The last mismatches, oldest first.
    pub samples: Vec<Sample>,
}

impl DiffReport {
    /// The report of a route with no comparison yet.
    pub fn empty(route: &str) -> DiffReport {
        DiffReport {
            route: route.to_owned(),
            compared: 0,
            matched: 0,
            mismatched: 0,
            dropped: 0,
            failed: 0,
            skipped: 0,
            sampled_out: 0,
            noise: Vec::new(),
            samples: Vec::new(),
        }
    }
}

/// Prometheus counters of one route's shadow.
#[derive(Clone)]
pub struct ShadowCounters {
    /// Comparisons made.
    pub compared: IntCounter,
    /// Comparisons with a real difference.
    pub mismatched: IntCounter,
    /// Jobs dropped (queue full).
    pub dropped: IntCounter,
}

#[derive(Default)]
struct Learnt {
    noise: BTreeSet<String>,
    samples: VecDeque<Sample>,
}

/// One route's shadow: its queue, counters, noise and samples.
pub struct RouteShadow {
    name: String,
    tx: mpsc::Sender<Job>,
    seen: AtomicU64,
    compared: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    sampled_out: AtomicU64,
    /// The cap's theoretical arrival time, in microseconds since `epoch`.
    next_admission_us: AtomicU64,
    epoch: std::time::Instant,
    learnt: Mutex<Learnt>,
    counters: ShadowCounters,
}

impl RouteShadow {
    /// Whether to mirror one more request: at most `max_per_second` a second, in bursts of at most
    /// a second's worth (0: no limit), and not when the queue is full (counted as dropped, before
    /// anything is copied).
    pub fn admit(&self, max_per_second: u64) -> bool {
        if self.tx.capacity() == 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.inc();
            return false;
        }
        if max_per_second == 0 {
            return true;
        }
        // A token bucket (GCRA): up to a second's worth at once, then max_per_second a second.
        let interval = 1_000_000 / max_per_second.min(1_000_000);
        let window = interval * max_per_second.min(1_000_000);
        let now = self.epoch.elapsed().as_micros() as u64;
        loop {
            let tat = self.next_admission_us.load(Ordering::Relaxed);
            let next = tat.max(now) + interval;
            if next > now + window {
                self.sampled_out.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if self.next_admission_us.compare_exchange(tat, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return true;
            }
        }
    }

    /// Hands a job to the workers without waiting; a full or closed queue drops it (counted).
    pub fn submit(&self, job: Job) {
        if self.tx.try_send(job).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.inc();
        }
    }

    /// Counts a request that was not compared because a body was over the limit.
    pub fn skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// The route's report.
    pub fn report(&self) -> DiffReport {
        let learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
        DiffReport {
            route: self.name.clone(),
            compared: self.compared.load(Ordering::Relaxed),
            matched: self.matched.load(Ordering::Relaxed),
            mismatched: self.mismatched.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            sampled_out: self.sampled_out.load(Ordering::Relaxed),
            noise: learnt.noise.iter().cloned().collect(),
            samples: learnt.samples.iter().cloned().collect(),
        }
    }

    fn learn_noise(&self, diffs: &[Difference]) {
        if diffs.is_empty() {
            return;
        }
        let mut learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
        for d in diffs {
            if learnt.noise.insert(d.pattern.clone()) {
                tracing::info!(route = %self.name, pointer = %d.pattern, "shadow: noise found (two monolith answers differ)");
            }
        }
    }

    fn judge(&self, job: &Job, diffs: Vec<Difference>) {
        let mut learnt = self.learnt.lock().unwrap_or_else(|p| p.into_inner());
        let real: Vec<Difference> = diffs
            .into_iter()
            .filter(|d| {
                !job.ignore.iter().any(|p| pattern_matches(p, &d.pointer))
                    && !learnt.noise.iter().any(|p| pattern_matches(p, &d.pointer))
            })
            .collect();
        self.compared.fetch_add(1, Ordering::Relaxed);
        self.counters.compared.inc();
        if real.is_empty() {
            self.matched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.mismatched.fetch_add(1, Ordering::Relaxed);
        self.counters.mismatched.inc();
        if learnt.samples.len() == SAMPLES {
            learnt.samples.pop_front();
        }
        learnt.samples.push_back(Sample {
            method: job.method.to_string(),
            path: job.path_and_query.clone(),
            diff: real,
        });
    }
}

/// The thread the shadow's workers run on, apart from the proxy's worker threads and at the lowest
/// CPU priority, so that calling the service and comparing answers take spare CPU, not the time
/// of client requests.
struct ShadowThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ShadowThread {
    fn start() -> std::io::Result<ShadowThread> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("ficus-shadow".into()).spawn(move || {
            // Nice 19: under load the comparisons get the CPU the proxy leaves, and the queue
            // drops what they cannot keep up with.
            if let Err(e) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
                tracing::warn!("shadow: cannot lower the priority of its thread: {e:?}");
            }
            let _ = rt.block_on(stopped);
        })?;
        Ok(ShadowThread { handle, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for ShadowThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The runtime (and the workers' tasks) is dropped on its own thread.
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// Every route's shadow, by route name; kept across reloads.
#[derive(Default)]
pub struct Shadows {
    routes: Mutex<HashMap<String, Arc<RouteShadow>>>,
    thread: std::sync::OnceLock<Option<ShadowThread>>,
}

impl Shadows {
    /// The route's shadow, created (and its workers spawned on the shadow thread) on first use.
    /// `None` when the shadow thread cannot be started (logged once).
    pub fn get_or_start(&self, route: &str, counters: impl FnOnce() -> ShadowCounters) -> Option<Arc<RouteShadow>> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = routes.get(route)
            && !s.tx.is_closed()
        {
            return Some(s.clone());
        }
        let thread = self.thread.get_or_init(|| {
            ShadowThread::start().map_err(|e| tracing::error!("shadow: cannot start its thread: {e}")).ok()
        });
        let handle = thread.as_ref()?.handle.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        let old = routes.get(route);
        let shadow = Arc::new(RouteShadow {
            name: route.to_owned(),
            tx,
            seen: AtomicU64::new(old.map_or(0, |o| o.seen.load(Ordering::Relaxed))),
            compared: AtomicU64::new(old.map_or(0, |o| o.compared.load(Ordering::Relaxed))),
            matched: AtomicU64::new(old.map_or(0, |o| o.matched.load(Ordering::Relaxed))),
            mismatched: AtomicU64::new(old.map_or(0, |o| o.mismatched.load(Ordering::Relaxed))),
            dropped: AtomicU64::new(old.map_or(0, |o| o.dropped.load(Ordering::Relaxed))),
            failed: AtomicU64::new(old.map_or(0, |o| o.failed.load(Ordering::Relaxed))),
            skipped: AtomicU64::new(old.map_or(0, |o| o.skipped.load(Ordering::Relaxed))),
            sampled_out: AtomicU64::new(old.map_or(0, |o| o.sampled_out.load(Ordering::Relaxed))),
            next_admission_us: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            learnt: Mutex::new(Learnt::default()),
            counters: counters(),
        });
        let client = match reqwest::Client::builder().pool_max_idle_per_host(WORKERS).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(route, "shadow: cannot build an HTTP client: {e}");
                return None;
            }
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WORKERS {
            let (rx, shadow, client) = (rx.clone(), shadow.clone(), client.clone());
            handle.spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some(job) = job else { break };
                    work(&shadow, &client, job).await;
                }
            });
        }
        routes.insert(route.to_owned(), shadow.clone());
        Some(shadow)
    }

    /// The route's report; `None` when it was never shadowed.
    pub fn report(&self, route: &str) -> Option<DiffReport> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(route).map(|s| s.report())
    }
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

async fn call(client: &reqwest::Client, target: &Target, job: &Job) -> Result<Answer, CallError> {
    let client = target.client.as_ref().unwrap_or(client);
    let url = format!("{}{}", target.base, job.path_and_query);
    let mut headers = job.headers.clone();
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    headers.insert(SHADOW_HEADER, http::HeaderValue::from_static("1"));
    let resp = client
        .request(job.method.clone(), url)
        .headers(headers)
        .body(job.body.clone())
        .timeout(job.timeout)
        .send()
        .await
        .map_err(|e| CallError::Failed(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = chosen_headers(resp.headers(), &job.compared_headers);
    // Read in chunks and stop at the limit: an answer of any size costs at most the limit.
    if resp.content_length().is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(CallError::TooLarge);
    }
    let mut resp = resp;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| CallError::Failed(e.to_string()))? {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, headers, body: body.freeze() })
}

/// Why a shadow call gave no answer to compare.
#[derive(Debug)]
enum CallError {
    /// The body was over [`BODY_LIMIT`] (not read further).
    TooLarge,
    /// The call failed (refused, timed out, cut off).
    Failed(String),
}

async fn work(shadow: &RouteShadow, client: &reqwest::Client, job: Job) {
    let n = shadow.seen.fetch_add(1, Ordering::Relaxed);
    // Never send a write to the monolith twice.
    let safe = matches!(job.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let learn = safe && (n < NOISE_FIRST || n.is_multiple_of(NOISE_EVERY));
    let service = call(client, &job.service_target, &job);
    let (service, again) = if learn {
        let again = call(client, &job.monolith_target, &job);
        let (s, a) = tokio::join!(service, again);
        (s, Some(a))
    } else {
        (service.await, None)
    };
    // Learn noise before judging, so the first comparisons already benefit.
    if let Some(Ok(again)) = again {
        shadow.learn_noise(&compare(&job.monolith, &again));
    }
    match service {
        Ok(answer) => shadow.judge(&job, compare(&job.monolith, &answer)),
        Err(CallError::TooLarge) => shadow.skip(),
        Err(CallError::Failed(e)) => {
            shadow.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route = %shadow.name, "shadow call failed: {e}");
        }
    }
}

/// Compares the monolith's answer with another: status, the chosen headers, then bodies (JSON
/// structurally when both parse as JSON, bytes otherwise).
pub fn compare(monolith: &Answer, other: &Answer) -> Vec<Difference> {
    let mut out = Vec::new();
    if monolith.status != other.status {
        out.push(Difference {
            pointer: STATUS_POINTER.to_owned(),
            monolith: Value::from(monolith.status),
            service: Value::from(other.status),
            pattern: STATUS_POINTER.to_owned(),
        });
    }
    let names: BTreeSet<&str> = monolith.headers.iter().chain(&other.headers).map(|(n, _)| n.as_str()).collect();
    for name in names {
        let value = |a: &Answer| {
            a.headers.iter().find(|(n, _)| n.as_str() == name).map_or(Value::Null, |(_, v)| Value::from(v.as_str()))
        };
        let (m, o) = (value(monolith), value(other));
        if m != o {
            let pointer = format!("(header {name})");
            out.push(Difference { pointer: pointer.clone(), monolith: m, service: o, pattern: pointer });
        }
    }
    if monolith.body == other.body {
        return out;
    }
    match (serde_json::from_slice::<Value>(&monolith.body), serde_json::from_slice::<Value>(&other.body)) {
        (Ok(a), Ok(b)) => out.extend(diff_json(&a, &b)),
        _ => out.push(Difference {
            pointer: String::new(),
            monolith: Value::String(String::from_utf8_lossy(&monolith.body).into_owned()),
            service: Value::String(String::from_utf8_lossy(&other.body).into_owned()),
            pattern: String::new(),
        }),
    }
    out
}

/// Escapes one pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_segment(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64().zip(b.as_f64()).is_some_and(|(x, y)| x == y),
    }
}

/// Structural difference of two JSON values: key order ignored, numbers compared by value,
/// arrays by position. Each difference names its RFC 6901 pointer.
pub fn diff_json(a: &Value, b: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(a, b, &mut String::new(), &mut String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, pointer: &mut String, pattern: &mut String, out: &mut Vec<Difference>) {
    let at = (pointer.len(), pattern.len());
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let seg = escape_segment(k);
                pointer.push('/');
                pointer.push_str(&seg);
                pattern.push('/');
                pattern.push_str(&seg);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, pointer, pattern, out),
                    (va, vb) => out.push(absent_on_one_side(pointer, pattern, va, vb)),
                }
                pointer.truncate(at.0);
                pattern.truncate(at.1);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                pattern.push_str("/*");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, pointer, pattern, out),
                    (va, vb) => out.push(absent_on_one_side(pointer, pattern, va, vb)),
                }
                pointer.truncate(at.0);
                pattern.truncate(at.1);
            }
        }
        (Value::Number(x), Value::Number(y)) if numbers_equal(x, y) => {}
        _ if a == b => {}
        _ => out.push(Difference {
            pointer: pointer.clone(),
            monolith: a.clone(),
            service: b.clone(),
            pattern: pattern.clone(),
        }),
    }
}

/// A member or element present on one side only (the other shows `null`).
fn absent_on_one_side(pointer: &str, pattern: &str, monolith: Option<&Value>, service: Option<&Value>) -> Difference {
    Difference {
        pointer: pointer.to_owned(),
        monolith: monolith.cloned().unwrap_or(Value::Null),
        service: service.cloned().unwrap_or(Value::Null),
        pattern: pattern.to_owned(),
    }
}

/// Whether a pointer pattern (`*` matches any one segment) matches `pointer` or one of its
/// ancestors, so ignoring `/meta` also ignores `/meta/at`. `""` matches everything.
pub fn pattern_matches(pattern: &str, pointer: &str) -> bool {
    // `(status)` and `(header NAME)` match only themselves.
    if pattern.starts_with('(') || pointer.starts_with('(') {
        return pattern == pointer;
    }
    if pattern.is_empty() {
        return true;
    }
    let (Some(p), Some(q)) = (pattern.strip_prefix('/'), pointer.strip_prefix('/')) else { return false };
    let mut ps = p.split('/');
    let mut qs = q.split('/');
    loop {
        match (ps.next(), qs.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if unescape_segment(a) == unescape_segment(b) => {}
            _ => return false,
        }
    }
}

/// Checks a `shadow_ignore` entry: `""`, a pointer starting with `/`, `(status)` or
/// `(header NAME)`.
pub fn valid_pattern(pattern: &str) -> bool {
    pattern.is_empty()
        || pattern.starts_with('/')
        || pattern == STATUS_POINTER
        || pattern
            .strip_prefix("(header ")
            .and_then(|p| p.strip_suffix(')'))
            .is_some_and(|n| HeaderName::from_bytes(n.as_bytes()).is_ok_and(|h| h.as_str() == n))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointers(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.pointer.as_str()).collect()
    }

    #[test]
    fn json_diff_ignores_key_order_and_compares_numbers_by_value() {
        let a = json!({"a": 1, "b": {"c": 2.0, "d": [1, 2]}});
        let b = json!({"b": {"d": [1, 2], "c": 2}, "a": 1.0});
        assert!(diff_json(&a, &b).is_empty());
        assert!(diff_json(&json!(1), &json!(2)).len() == 1);
        assert!(diff_json(&json!(1), &json!("1")).len() == 1);
    }

    #[test]
    fn json_diff_names_each_difference_with_an_escaped_pointer() {
        let a = json!({"a/b": 1, "m~n": [1, {"x": true}], "gone": null, "same": "s"});
        let b = json!({"a/b": 2, "m~n": [1, {"x": false}, 3], "new": 1, "same": "s"});
        let d = diff_json(&a, &b);
        assert_eq!(pointers(&d), ["/a~1b", "/gone", "/m~0n/1/x", "/m~0n/2", "/new"]);
        assert_eq!(d[0].monolith, json!(1));
        assert_eq!(d[0].service, json!(2));
        assert_eq!(d[2].pattern, "/m~0n/*/x");
        assert_eq!(d[3].service, json!(3));
        assert_eq!(d[3].monolith, Value::Null);
    }

    #[test]
    fn non_json_bodies_compare_byte_for_byte_and_status_counts() {
        let a = Answer::new(200, Bytes::from_static(b"hello"));
        let b = Answer::new(200, Bytes::from_static(b"hellO"));
        assert_eq!(pointers(&compare(&a, &b)), [""]);
        assert!(compare(&a, &a.clone()).is_empty());
        let c = Answer::new(404, Bytes::from_static(b"hello"));
        assert_eq!(pointers(&compare(&a, &c)), [STATUS_POINTER]);
        let j1 = Answer::new(200, Bytes::from_static(br#"{"a":1,"b":2}"#));
        let j2 = Answer::new(200, Bytes::from_static(br#"{"b":2, "a":1}"#));
        assert!(compare(&j1, &j2).is_empty());
    }

    #[test]
    fn chosen_headers_are_compared_by_value() {
        let names = [HeaderName::from_static("content-type"), HeaderName::from_static("cache-control")];
        let mut m = HeaderMap::new();
        m.insert("content-type", http::HeaderValue::from_static("application/json"));
        m.insert("date", http::HeaderValue::from_static("now"));
        let mut s = m.clone();
        s.insert("date", http::HeaderValue::from_static("later"));
        let answer = |h: &HeaderMap| Answer { status: 200, headers: chosen_headers(h, &names), body: Bytes::new() };
        // `date` is not chosen: no difference.
        assert!(compare(&answer(&m), &answer(&s)).is_empty());
        s.insert("content-type", http::HeaderValue::from_static("text/plain"));
        s.append("cache-control", http::HeaderValue::from_static("no-store"));
        let d = compare(&answer(&m), &answer(&s));
        assert_eq!(pointers(&d), ["(header cache-control)", "(header content-type)"]);
        assert_eq!((d[0].monolith.clone(), d[0].service.clone()), (Value::Null, json!("no-store")));
        assert_eq!(d[1].service, json!("text/plain"));
        assert!(pattern_matches("(header content-type)", &d[1].pointer));
        assert!(!pattern_matches("", &d[1].pointer));
        assert!(valid_pattern("(header etag)") && !valid_pattern("(header Bad Name)"));
    }

    #[test]
    fn patterns_match_with_wildcards_and_ancestors() {
        assert!(pattern_matches("/created_at", "/created_at"));
        assert!(pattern_matches("/items/*/id", "/items/3/id"));
        assert!(!pattern_matches("/items/*/id", "/items/3/name"));
        assert!(!pattern_matches("/items/*/id", "/items/3"));
        assert!(pattern_matches("/meta", "/meta/at/0"));
        assert!(!pattern_matches("/meta", "/metadata"));
        assert!(pattern_matches("/a~1b", "/a~1b"));
        assert!(!pattern_matches("/a~1b", "/a/b"));
        assert!(pattern_matches("", "/anything"));
        assert!(!pattern_matches("/x", STATUS_POINTER));
        assert!(pattern_matches(STATUS_POINTER, STATUS_POINTER));
        assert!(valid_pattern("/x") && valid_pattern("") && !valid_pattern("x"));
    }
}
