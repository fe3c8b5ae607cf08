//! The outbox relay: publishes the outbox's events in order, at least once.
//!
//! Each round reads a batch of unpublished events (lowest outbox id first), hands the whole
//! batch to the [`Publisher`], and only then marks it published. A crash (or a kill) between
//! the two leaves the batch unpublished, so it is published again on the next round:
//! consumers dedupe on the event id. A failed publish ends the round and the relay backs off
//! (up to 2 s). Events of one order are published in the order they were recorded (a
//! cancellation commits after its order's placement); across orders, on PostgreSQL, ids are
//! handed out at insert and transactions commit in another order, so an event may be
//! published before one with a lower id that commits later. Run one relay per outbox: two
//! would publish the same events (harmless for consumers, but twice the traffic).
//!
//! Two publishers: [`HttpPublisher`] posts to a consumer's `/internal/events` (the default,
//! no broker) and [`NatsPublisher`](super::nats::NatsPublisher), JetStream.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Event;

/// Where the relay sends events.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `events` in order; Ok only when all of them were accepted.
    async fn publish(&self, events: &[Event]) -> Result<(), String>;
    /// For logs: where it publishes.
    fn describe(&self) -> String;
}

/// Posts batches of events as a JSON array to `{url}/internal/events`, with a bearer token.
pub struct HttpPublisher {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl HttpPublisher {
    /// A publisher to the consumer at `base_url`.
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self { http, url: format!("{}/internal/events", base_url.trim_end_matches('/')), token }
    }
}

#[async_trait::async_trait]
impl Publisher for HttpPublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), String> {
        let mut req = self.http.post(&self.url).json(events);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("POST {}: {e}", self.url))?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("POST {} answered {}", self.url, resp.status())) }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// What the relay has done since it started.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Events published (a redelivery counts again).
    pub published: AtomicU64,
    /// Rounds that failed to publish.
    pub failures: AtomicU64,
}

/// The relay: the shop's outbox and a publisher.
#[derive(Clone)]
pub struct Relay {
    pool: crate::Pool,
    publisher: Arc<dyn Publisher>,
    /// Events per round.
    pub batch: i64,
    /// Pause when the outbox is empty.
    pub idle: Duration,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// A relay of the outbox in `pool` to `publisher`.
    pub fn new(pool: crate::Pool, publisher: Arc<dyn Publisher>) -> Self {
        Self { pool, publisher, batch: 100, idle: Duration::from_millis(50), stats: Arc::default() }
    }

    /// Its counters (shared by its clones).
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// One round: publishes up to a batch of events and marks them published. Returns how
    /// many were published (0: nothing to do).
    pub async fn run_once(&self) -> Result<usize, String> {
        let events =
            super::unpublished(&self.pool, self.batch).await.map_err(|e| format!("reading the outbox: {e}"))?;
        if events.is_empty() {
            return Ok(0);
        }
        self.publisher.publish(&events).await?;
        self.stats.published.fetch_add(events.len() as u64, Ordering::Relaxed);
        super::mark_published(&self.pool, &events).await.map_err(|e| format!("marking events published: {e}"))?;
        Ok(events.len())
    }

    /// Publishes until `stop` resolves: rounds back to back while there is work, a pause
    /// when there is none, a growing back-off (to 2 s) while publishing fails.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) {
        tracing::info!(to = %self.publisher.describe(), "outbox relay started");
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.run_once().await {
                Ok(0) => self.idle,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    Duration::ZERO
                }
                Err(err) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "outbox relay: publish failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    wait
                }
            };
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }
}
