//! The idempotent consumer: acts on each of the shop's events exactly once.
//!
//! Delivery is at least once (the relay republishes a batch it could not mark published),
//! so every event is handled in one transaction that first claims its id in
//! `processed_events` (`INSERT … ON CONFLICT DO NOTHING`): a second delivery claims
//! nothing and changes nothing. The claim and the notification commit together, so a crash
//! in between leaves neither, and the redelivery does the work.

use std::sync::atomic::{AtomicU64, Ordering};

use shop::Pool;
use shop::db::now;
use shop::events::{Event, Payload};
use shop::notifications::outbox::message;

/// What the consumer has done since the service started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events acted on.
    pub processed: AtomicU64,
    /// Deliveries of an event already processed, ignored.
    pub duplicates: AtomicU64,
}

/// The result of consuming a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Consumed {
    /// Events acted on now.
    pub processed: u64,
    /// Events seen before, ignored.
    pub duplicates: u64,
}

/// Handles `events` in order, each at most once.
pub async fn consume(pool: &Pool, stats: &Stats, events: &[Event]) -> sqlx::Result<Consumed> {
    let mut out = Consumed::default();
    for event in events {
        if consume_one(pool, event).await? {
            out.processed += 1;
        } else {
            out.duplicates += 1;
        }
    }
    stats.processed.fetch_add(out.processed, Ordering::Relaxed);
    stats.duplicates.fetch_add(out.duplicates, Ordering::Relaxed);
    Ok(out)
}

/// Handles one event; false when it had been handled before.
pub async fn consume_one(pool: &Pool, event: &Event) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO processed_events (event_id, topic, seq, processed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(event.payload.topic())
    .bind(event.seq)
    .bind(now())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        return Ok(false);
    }
    let order_id = match &event.payload {
        Payload::OrderPlaced { order_id, .. } | Payload::OrderCancelled { order_id, .. } => Some(*order_id),
        Payload::UserRegistered { .. } => None,
    };
    let (kind, subject, body) = message(&event.payload);
    sqlx::query(
        "INSERT INTO notifications (user_id, order_id, kind, subject, body, status, created_at, event_id, event_seq) \
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8)",
    )
    .bind(event.payload.user_id())
    .bind(order_id)
    .bind(kind)
    .bind(subject)
    .bind(body)
    .bind(event.occurred_at)
    .bind(&event.event_id)
    .bind(event.seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Figures for checks: notifications by kind, events processed, and orders whose
/// notifications were stored out of the order their events were recorded in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// `(kind, count)`.
    pub by_kind: Vec<(String, i64)>,
    /// Rows in `processed_events`.
    pub processed_events: i64,
    /// Notifications stored twice: the same kind for the same user and order (for an order,
    /// one confirmation and at most one cancellation; one welcome per user). Must be 0; it
    /// would not be if the same change reached the service as two events.
    pub duplicated_events: i64,
    /// Orders with a notification stored before one recorded earlier.
    pub out_of_order: i64,
}

/// Counts what the service holds.
pub async fn tally(pool: &Pool) -> sqlx::Result<Tally> {
    let by_kind =
        sqlx::query_as("SELECT kind, COUNT(*) FROM notifications GROUP BY kind ORDER BY kind").fetch_all(pool).await?;
    let processed_events = sqlx::query_scalar("SELECT COUNT(*) FROM processed_events").fetch_one(pool).await?;
    let duplicated_events = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT user_id, kind, COALESCE(order_id, 0) AS o FROM notifications \
         GROUP BY user_id, kind, COALESCE(order_id, 0) HAVING COUNT(*) > 1) d",
    )
    .fetch_one(pool)
    .await?;
    let out_of_order = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications a JOIN notifications b \
         ON a.order_id = b.order_id AND a.id < b.id AND a.event_seq > b.event_seq",
    )
    .fetch_one(pool)
    .await?;
    Ok(Tally { by_kind, processed_events, duplicated_events, out_of_order })
}
