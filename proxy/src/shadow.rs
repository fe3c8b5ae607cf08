//! The shadow stage: a route in stage `shadow` is served by the monolith, and a copy of each
//! eligible request is sent to the route's service in the background so the two answers can be
//! compared.
//!
//! - The request path only hands a [`Job`] (request copy + the monolith's answer, captured as it
//!   streamed to the client) to the route's bounded queue with `try_send`; a full queue drops the
//!   job and counts it. It never waits on the shadow.
//! - [`WORKERS`] tasks per route, on a thread of their own (`ficus-shadow`, at nice 19, so the
//!   comparisons never run on the proxy's worker threads and get only the CPU they leave), take jobs from the queue, send the copy to the
//!   service (with a timeout) and compare the answers: status, then the bodies — JSON structurally ([`crate::policy::diff::diff_json`]:
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
use tokio::sync::mpsc;

use crate::policy::diff::{Answer, Difference, chosen_headers, compare, pattern_matches};

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
/// Header that marks a shadow copy, so upstreams can tell it apart.
pub const SHADOW_HEADER: &str = "x-ficus-shadow";

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
