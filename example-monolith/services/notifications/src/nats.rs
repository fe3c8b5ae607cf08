//! Consuming the shop's events from NATS JetStream (the production configuration; without
//! it the relay delivers to `POST /internal/events`).
//!
//! A durable pull consumer (`notifications`) on the shop's stream: JetStream remembers what
//! was acknowledged, so a restarted service goes on where it stopped. Each message is
//! handled by the idempotent consumer, then acknowledged: a crash between the two makes
//! JetStream deliver it again, and the consumer ignores it. Messages of one stream are
//! delivered in order with one message in flight (`max_ack_pending = 1`), so an order's
//! events are handled in the order they were recorded.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shop::events::Event;
use shop::events::nats::NatsTarget;

use crate::ServiceState;

/// Consumes until the connection breaks for good (the caller restarts it) or the task is
/// dropped.
pub async fn consume(state: ServiceState, target: NatsTarget) -> Result<(), String> {
    let js = target.connect().await?;
    let stream = js.get_stream(&target.stream).await.map_err(|e| format!("stream {}: {e}", target.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            "notifications",
            consumer::pull::Config {
                durable_name: Some("notifications".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(10),
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer notifications: {e}"))?;
    let mut messages = consumer.messages().await.map_err(|e| format!("pulling messages: {e}"))?;
    tracing::info!(stream = %target.stream, "consuming the shop's events from NATS");
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("receiving: {e}"))?;
        match serde_json::from_slice::<Event>(&message.payload) {
            Ok(event) => {
                let fresh = crate::consumer::consume_one(&state.pool, &event).await.map_err(|e| e.to_string())?;
                let counter = if fresh { &state.stats.processed } else { &state.stats.duplicates };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(subject = %message.subject, "not an event, skipped: {e}"),
        }
        message.ack().await.map_err(|e| format!("acknowledging: {e}"))?;
    }
    Ok(())
}

/// Consumes for as long as the service runs, reconnecting (after a second) when NATS goes away.
pub async fn consume_forever(state: ServiceState, target: NatsTarget) {
    loop {
        if let Err(err) = consume(state.clone(), target.clone()).await {
            tracing::warn!(%err, "NATS consumer stopped; retrying in 1 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Deletes a stream (the walkthrough's and the tests' own, at the end).
pub async fn delete_stream(target: &NatsTarget) -> Result<(), String> {
    let client = async_nats::connect(&target.url).await.map_err(|e| e.to_string())?;
    jetstream::new(client).delete_stream(&target.stream).await.map_err(|e| e.to_string())?;
    Ok(())
}
