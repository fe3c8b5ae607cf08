//! Domain events and the transactional outbox.
//!
//! A capability that changes something other services care about (an order placed or
//! cancelled, a user registered) writes an [`Event`] into the `outbox` table *in the same
//! transaction* as the change ([`record`]), so an event exists exactly when its change
//! committed. The [`relay`] publishes the outbox afterwards, in order, at least once:
//! a consumer may see an event twice (after a relay crash between publishing and marking
//! it published) and dedupes on [`Event::event_id`].

pub mod nats;
pub mod relay;

use serde::{Deserialize, Serialize};

use crate::db::now;

/// What happened, with the facts a consumer needs (no consumer reads the shop's tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Payload {
    /// A new account.
    UserRegistered {
        /// The user.
        user_id: i64,
        /// Their display name.
        name: String,
    },
    /// A checkout succeeded: the order is paid.
    OrderPlaced {
        /// The order.
        order_id: i64,
        /// Its owner.
        user_id: i64,
        /// Units bought.
        items: i64,
        /// What was charged, in cents.
        total_cents: i64,
    },
    /// A paid order was cancelled and refunded.
    OrderCancelled {
        /// The order.
        order_id: i64,
        /// Its owner.
        user_id: i64,
    },
}

impl Payload {
    /// The topic: the event's type name (`OrderPlaced` …), also its NATS subject's last part.
    pub fn topic(&self) -> &'static str {
        match self {
            Payload::UserRegistered { .. } => "UserRegistered",
            Payload::OrderPlaced { .. } => "OrderPlaced",
            Payload::OrderCancelled { .. } => "OrderCancelled",
        }
    }

    /// The entity the event is about (an order id, or a user id for user events): events
    /// of one aggregate are published in the order they were recorded.
    pub fn aggregate_id(&self) -> i64 {
        match self {
            Payload::UserRegistered { user_id, .. } => *user_id,
            Payload::OrderPlaced { order_id, .. } | Payload::OrderCancelled { order_id, .. } => *order_id,
        }
    }

    /// The user the event concerns.
    pub fn user_id(&self) -> i64 {
        match self {
            Payload::UserRegistered { user_id, .. }
            | Payload::OrderPlaced { user_id, .. }
            | Payload::OrderCancelled { user_id, .. } => *user_id,
        }
    }
}

/// One event as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and stable across redeliveries: what consumers dedupe on.
    pub event_id: String,
    /// Its outbox id: increasing in the order events were inserted (for one order, the
    /// order they committed in).
    pub seq: i64,
    /// Seconds since the epoch.
    pub occurred_at: i64,
    /// What happened.
    #[serde(flatten)]
    pub payload: Payload,
}

/// A new event id: `evt_` and 128 random bits in hex.
fn new_event_id() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().fold(String::from("evt_"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

/// Writes `payload` into the outbox, in the caller's transaction.
pub async fn record(conn: &mut sqlx::AnyConnection, payload: &Payload) -> sqlx::Result<()> {
    let json = serde_json::to_string(payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (event_id, topic, aggregate_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_event_id())
        .bind(payload.topic())
        .bind(payload.aggregate_id())
        .bind(json)
        .bind(now())
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    event_id: String,
    payload: String,
    created_at: i64,
}

impl Row {
    fn event(self) -> sqlx::Result<Event> {
        let payload = serde_json::from_str(&self.payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Event { event_id: self.event_id, seq: self.id, occurred_at: self.created_at, payload })
    }
}

/// Up to `limit` events not yet published, oldest first.
pub async fn unpublished(pool: &crate::Pool, limit: i64) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as::<_, Row>(
        "SELECT id, event_id, payload, created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Row::event)
    .collect()
}

/// Every event recorded, published or not, oldest first (for checks and replays).
pub async fn all(pool: &crate::Pool) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as::<_, Row>("SELECT id, event_id, payload, created_at FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Row::event)
        .collect()
}

/// Marks events published (one transaction).
pub async fn mark_published(pool: &crate::Pool, events: &[Event]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let at = now();
    for e in events {
        sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2").bind(at).bind(e.seq).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Counts of the outbox: (recorded, published), per topic.
pub async fn counts(pool: &crate::Pool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as("SELECT topic, COUNT(*), COUNT(published_at) FROM outbox GROUP BY topic ORDER BY topic")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_flat_with_their_type() {
        let e = Event {
            event_id: "evt_1".into(),
            seq: 7,
            occurred_at: 1,
            payload: Payload::OrderPlaced { order_id: 3, user_id: 2, items: 1, total_cents: 999 },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "OrderPlaced");
        assert_eq!(v["order_id"], 3);
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        assert_eq!(e.payload.topic(), "OrderPlaced");
        assert_eq!(e.payload.aggregate_id(), 3);
        assert_ne!(new_event_id(), new_event_id());
    }
}
