//! The shop's events through NATS JetStream: the production configuration.
//!
//! Events go to the stream `stream` on subjects `{prefix}.{Topic}` (`shop.events.OrderPlaced`
//! …), one message per event, with the event id as `Nats-Msg-Id`: JetStream drops a message
//! whose id it has seen within the stream's duplicate window, so a relay that publishes a
//! batch again after a crash is deduplicated by the broker before any consumer — and the
//! consumer's own dedupe covers what falls outside the window. A batch counts as published
//! when JetStream has acknowledged (stored) every message of it.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::Event;
use super::relay::Publisher;

/// Where the events go in NATS.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream (created when missing).
    pub stream: String,
    /// Subjects are `{prefix}.{Topic}`.
    pub prefix: String,
}

impl NatsTarget {
    /// The shop's defaults on `url`: stream `SHOP_EVENTS`, subjects `shop.events.*`.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_string(), stream: "SHOP_EVENTS".into(), prefix: "shop.events".into() }
    }

    /// Connects and makes sure the stream exists; returns the JetStream context.
    pub async fn connect(&self) -> Result<jetstream::Context, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .connect(&self.url)
            .await
            .map_err(|e| format!("connecting to NATS at {}: {e}", self.url))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the JetStream stream {}: {e}", self.stream))?;
        Ok(js)
    }
}

/// Publishes events to JetStream.
pub struct NatsPublisher {
    js: jetstream::Context,
    target: NatsTarget,
}

impl NatsPublisher {
    /// Connects to `target` (creating its stream when missing).
    pub async fn connect(target: NatsTarget) -> Result<Self, String> {
        Ok(Self { js: target.connect().await?, target })
    }
}

#[async_trait::async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), String> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.event_id.as_str());
            let body = serde_json::to_vec(e).map_err(|err| err.to_string())?;
            let subject = format!("{}.{}", self.target.prefix, e.payload.topic());
            let ack = self
                .js
                .publish_with_headers(subject, headers, body.into())
                .await
                .map_err(|err| format!("publishing {}: {err}", e.event_id))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|err| format!("JetStream did not store an event: {err}"))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("NATS {} stream {}", self.target.url, self.target.stream)
    }
}
