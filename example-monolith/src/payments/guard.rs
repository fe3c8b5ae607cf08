//! A guarded call to a dependency that may be slow or down: a timeout per attempt, retries
//! with jittered exponential back-off inside a retry budget, a circuit breaker and a cap on
//! concurrent calls (a bulkhead). Checkout calls the payments service through one [`Guard`].
//!
//! - **Timeout**: each attempt gets `timeout`; a slow answer counts as a failure.
//! - **Retries**: up to `attempts` in all, waiting a random time in `[0, backoff·2ⁱ]` (full
//!   jitter) between them — only for failures the caller marks retryable (the call must be
//!   idempotent: the payments client sends one idempotency key per charge).
//! - **Budget** (Finagle's): every call deposits `budget_ratio` of a retry, and
//!   `budget_floor` retries a second trickle in; a retry spends one. When it is empty,
//!   failures are not retried, so a dependency in trouble never sees more than
//!   `1 + ratio` times the load.
//! - **Breaker**: `failure_threshold` failed calls in a row open it; while open, calls are
//!   refused at once (no request sent); after `open_for` one probe is let through
//!   (half-open): its success closes the breaker, its failure opens it again. A probe that
//!   never reports (its caller went away mid-call) lets another through after `open_for`
//!   plus the longest a call can take, so the breaker cannot stay half-open for good.
//! - **Bulkhead**: at most `max_concurrent` calls at a time; a call that cannot get a slot
//!   within `queue_wait` is refused, so a hung dependency cannot take every task with it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Time allowed to one attempt.
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Base of the back-off between attempts.
    pub backoff: Duration,
    /// Share of calls that may be retried.
    pub budget_ratio: f64,
    /// Retries a second allowed whatever the traffic.
    pub budget_floor: f64,
    /// Failed calls in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before a probe.
    pub open_for: Duration,
    /// Calls at a time.
    pub max_concurrent: usize,
    /// Longest wait for a slot.
    pub queue_wait: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(800),
            attempts: 3,
            backoff: Duration::from_millis(50),
            budget_ratio: 0.2,
            budget_floor: 5.0,
            failure_threshold: 5,
            open_for: Duration::from_secs(2),
            max_concurrent: 16,
            queue_wait: Duration::from_millis(200),
        }
    }
}

/// What one attempt ended with.
pub enum Attempt<T> {
    /// An answer (a decline is an answer: the dependency works).
    Done(T),
    /// A failure worth retrying: no answer, or the dependency said it is unavailable.
    Retryable(String),
    /// A failure worth retrying that certainly did nothing on the other side: the
    /// connection was refused, nothing was sent.
    Unreached(String),
}

/// Why a guarded call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Refused without sending anything: the breaker is open.
    #[error("circuit breaker open")]
    Open,
    /// Refused without sending anything: every slot busy for the whole queue wait.
    #[error("too many calls in flight")]
    Full,
    /// Every attempt failed before anything was sent (connection refused).
    #[error("{0}")]
    Unreachable(String),
    /// Sent, and every attempt failed (the outcome on the other side is unknown).
    #[error("{0}")]
    Failed(String),
}

impl GuardError {
    /// True when nothing was sent, so the other side certainly did nothing.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, GuardError::Open | GuardError::Full | GuardError::Unreachable(_))
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the probe time.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl BreakerState {
    /// Its name in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    failures: u32,
    until: Instant,
}

#[derive(Debug)]
struct Budget {
    tokens: f64,
    at: Instant,
}

/// Counters of a guard, for metrics.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Calls that got an answer.
    pub succeeded: AtomicU64,
    /// Calls sent that got none.
    pub failed: AtomicU64,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries the budget refused.
    pub budget_exhausted: AtomicU64,
    /// Calls refused by the open breaker.
    pub rejected_open: AtomicU64,
    /// Calls refused by the bulkhead.
    pub rejected_full: AtomicU64,
    /// Times the breaker opened.
    pub opened: AtomicU64,
    /// Times it closed again.
    pub closed: AtomicU64,
}

/// One dependency's guard.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    breaker: Mutex<Breaker>,
    budget: Mutex<Budget>,
    slots: Semaphore,
    stats: GuardStats,
}

fn jitter(max: Duration) -> Duration {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(OsRng.next_u64() % nanos) }
}

impl Guard {
    /// A guard with `config`, breaker closed, budget full for one second of the floor.
    pub fn new(config: GuardConfig) -> Self {
        let now = Instant::now();
        Self {
            breaker: Mutex::new(Breaker { state: BreakerState::Closed, failures: 0, until: now }),
            budget: Mutex::new(Budget { tokens: config.budget_floor, at: now }),
            slots: Semaphore::new(config.max_concurrent),
            stats: GuardStats::default(),
            config,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// The breaker's state now (an open breaker past its time reads as half-open).
    pub fn state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if b.state == BreakerState::Open && Instant::now() >= b.until { BreakerState::HalfOpen } else { b.state }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.config.max_concurrent - self.slots.available_permits()
    }

    fn admit(&self) -> Result<(), GuardError> {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match b.state {
            BreakerState::Closed => Ok(()),
            // Time for a probe; or the last probe never reported back.
            BreakerState::Open | BreakerState::HalfOpen if now >= b.until => {
                b.state = BreakerState::HalfOpen;
                b.until = now + self.config.open_for + self.longest_call();
                Ok(())
            }
            BreakerState::Open | BreakerState::HalfOpen => {
                self.stats.rejected_open.fetch_add(1, Ordering::Relaxed);
                Err(GuardError::Open)
            }
        }
    }

    /// The longest one call can take: every attempt timing out, the back-off between them,
    /// the wait for a slot.
    fn longest_call(&self) -> Duration {
        let attempts = self.config.attempts.max(1);
        let backoff: Duration = (1..attempts).map(|i| self.backoff(i)).sum();
        self.config.timeout * attempts + backoff + self.config.queue_wait
    }

    /// The back-off before attempt `i` (1-based retries): `backoff · 2^(i-1)`, capped.
    fn backoff(&self, i: u32) -> Duration {
        self.config.backoff.saturating_mul(1u32 << (i - 1).min(16))
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            b.failures = 0;
            if b.state != BreakerState::Closed {
                b.state = BreakerState::Closed;
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("circuit breaker closed");
            }
            return;
        }
        b.failures += 1;
        let trips = b.state == BreakerState::HalfOpen || b.failures >= self.config.failure_threshold;
        if trips && b.state != BreakerState::Open {
            b.state = BreakerState::Open;
            b.until = Instant::now().checked_add(self.config.open_for).unwrap_or_else(Instant::now);
            self.stats.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(failures = b.failures, "circuit breaker opened");
        }
    }

    fn deposit(&self) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let cap = self.config.budget_floor.max(1.0) * 10.0;
        let trickle = now.duration_since(budget.at).as_secs_f64() * self.config.budget_floor;
        budget.tokens = (budget.tokens + trickle + self.config.budget_ratio).min(cap);
        budget.at = now;
    }

    fn withdraw(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Runs `attempt` under the guard: admitted by the breaker and the bulkhead, each try
    /// bounded by the timeout, retried with back-off while the budget allows.
    pub async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, GuardError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        self.admit()?;
        let slot = match tokio::time::timeout(self.config.queue_wait, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                // A half-open probe that never ran must not keep the breaker half-open.
                let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
                if b.state == BreakerState::HalfOpen {
                    b.state = BreakerState::Open;
                }
                return Err(GuardError::Full);
            }
        };
        self.deposit();
        let mut last = String::new();
        let mut reached = false;
        for i in 0..self.config.attempts.max(1) {
            if i > 0 {
                if !self.withdraw() {
                    break;
                }
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(jitter(self.backoff(i))).await;
            }
            match tokio::time::timeout(self.config.timeout, attempt()).await {
                Ok(Attempt::Done(answer)) => {
                    drop(slot);
                    self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                    self.record(true);
                    return Ok(answer);
                }
                Ok(Attempt::Retryable(why)) => {
                    reached = true;
                    last = why;
                }
                Ok(Attempt::Unreached(why)) => last = why,
                Err(_) => {
                    reached = true;
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    last = format!("no answer within {} ms", self.config.timeout.as_millis());
                }
            }
        }
        drop(slot);
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.record(false);
        Err(if reached { GuardError::Failed(last) } else { GuardError::Unreachable(last) })
    }

    /// The guard's state and counters in Prometheus' text format, named `{prefix}_…`.
    pub fn render_metrics(&self, prefix: &str) -> String {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let state = self.state();
        let mut out = format!("# TYPE {prefix}_breaker_state gauge\n");
        for st in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            out += &format!("{prefix}_breaker_state{{state=\"{}\"}} {}\n", st.as_str(), u8::from(st == state));
        }
        out += &format!("# TYPE {prefix}_breaker_transitions_total counter\n");
        out += &format!("{prefix}_breaker_transitions_total{{to=\"open\"}} {}\n", n(&s.opened));
        out += &format!("{prefix}_breaker_transitions_total{{to=\"closed\"}} {}\n", n(&s.closed));
        out += &format!("# TYPE {prefix}_calls_total counter\n");
        out += &format!("{prefix}_calls_total{{outcome=\"answered\"}} {}\n", n(&s.succeeded));
        out += &format!("{prefix}_calls_total{{outcome=\"failed\"}} {}\n", n(&s.failed));
        out += &format!("{prefix}_calls_total{{outcome=\"refused_open\"}} {}\n", n(&s.rejected_open));
        out += &format!("{prefix}_calls_total{{outcome=\"refused_full\"}} {}\n", n(&s.rejected_full));
        out += &format!("# TYPE {prefix}_timeouts_total counter\n{prefix}_timeouts_total {}\n", n(&s.timeouts));
        out += &format!("# TYPE {prefix}_retries_total counter\n{prefix}_retries_total {}\n", n(&s.retries));
        out += &format!(
            "# TYPE {prefix}_retry_budget_exhausted_total counter\n{prefix}_retry_budget_exhausted_total {}\n",
            n(&s.budget_exhausted)
        );
        out += &format!("# TYPE {prefix}_in_flight gauge\n{prefix}_in_flight {}\n", self.in_flight());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn quick() -> GuardConfig {
        GuardConfig {
            timeout: Duration::from_millis(50),
            attempts: 3,
            backoff: Duration::from_millis(1),
            budget_ratio: 0.2,
            budget_floor: 100.0,
            failure_threshold: 3,
            open_for: Duration::from_millis(100),
            max_concurrent: 2,
            queue_wait: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn a_failure_is_retried_then_answered() {
        let guard = Guard::new(quick());
        let tries = AtomicU32::new(0);
        let answer = guard
            .call(|| async {
                if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                    Attempt::Retryable("503".into())
                } else {
                    Attempt::Done(7)
                }
            })
            .await;
        assert_eq!(answer, Ok(7));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(guard.stats().retries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let guard = Guard::new(GuardConfig { attempts: 1, ..quick() });
        let answer = guard
            .call(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Attempt::Done(1)
            })
            .await;
        assert!(matches!(answer, Err(GuardError::Failed(ref m)) if m.contains("within 50 ms")), "{answer:?}");
        assert_eq!(guard.stats().timeouts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_breaker_opens_refuses_then_closes_on_a_good_probe() {
        let guard = Guard::new(quick());
        for _ in 0..3 {
            let r: Result<(), _> = guard.call(|| async { Attempt::Retryable("down".into()) }).await;
            assert!(matches!(r, Err(GuardError::Failed(_))));
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let sent = AtomicU32::new(0);
        let refused = guard
            .call(|| async {
                sent.fetch_add(1, Ordering::SeqCst);
                Attempt::Done(())
            })
            .await;
        assert_eq!(refused, Err(GuardError::Open));
        assert_eq!(sent.load(Ordering::SeqCst), 0, "nothing is sent while open");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(guard.state(), BreakerState::HalfOpen);
        // A failed probe opens it again at once.
        let r: Result<(), _> = guard.call(|| async { Attempt::Retryable("still down".into()) }).await;
        assert!(r.is_err());
        assert_eq!(guard.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(guard.call(|| async { Attempt::Done(1) }).await, Ok(1));
        assert_eq!(guard.state(), BreakerState::Closed);
        assert_eq!(guard.stats().opened.load(Ordering::SeqCst), 2);
        assert_eq!(guard.stats().closed.load(Ordering::SeqCst), 1);
        assert!(guard.render_metrics("p").contains("p_breaker_state{state=\"closed\"} 1"));
    }

    #[tokio::test]
    async fn a_probe_whose_caller_went_away_does_not_keep_the_breaker_half_open() {
        let guard = Guard::new(GuardConfig { attempts: 1, ..quick() });
        for _ in 0..3 {
            let _: Result<(), _> = guard.call(|| async { Attempt::Retryable("down".into()) }).await;
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The probe is admitted, then its caller drops it mid-call.
        let probe = guard.call(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Attempt::Done(())
        });
        assert!(tokio::time::timeout(Duration::from_millis(10), probe).await.is_err());
        assert_eq!(guard.call(|| async { Attempt::Done(()) }).await, Err(GuardError::Open));
        // After open_for plus the longest a call can take, another probe goes through.
        tokio::time::sleep(Duration::from_millis(100 + 50 + 20 + 30)).await;
        assert_eq!(guard.call(|| async { Attempt::Done(()) }).await, Ok(()));
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn the_bulkhead_refuses_beyond_its_slots() {
        let guard = Arc::new(Guard::new(GuardConfig { timeout: Duration::from_secs(5), ..quick() }));
        let release = Arc::new(Semaphore::new(0));
        let mut held = Vec::new();
        for _ in 0..2 {
            let (g, r) = (guard.clone(), release.clone());
            held.push(tokio::spawn(async move {
                g.call(|| {
                    let r = r.clone();
                    async move {
                        let _ = r.acquire().await;
                        Attempt::Done(())
                    }
                })
                .await
            }));
        }
        while guard.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(guard.call(|| async { Attempt::Done(()) }).await, Err(GuardError::Full));
        release.add_permits(2);
        for h in held {
            let _ = h.await;
        }
    }

    #[tokio::test]
    async fn the_budget_caps_retries() {
        let guard = Guard::new(GuardConfig { budget_floor: 0.0, failure_threshold: 1000, ..quick() });
        let tries = AtomicU32::new(0);
        for _ in 0..50 {
            let _: Result<(), _> = guard
                .call(|| async {
                    tries.fetch_add(1, Ordering::SeqCst);
                    Attempt::Retryable("503".into())
                })
                .await;
        }
        // 50 calls deposit 0.2 each: at most 10 retries, not 100.
        let tries = tries.load(Ordering::SeqCst);
        assert!((50..=60).contains(&tries), "{tries} attempts");
        assert!(guard.stats().budget_exhausted.load(Ordering::SeqCst) > 0);
    }
}
