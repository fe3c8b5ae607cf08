//! SQL for the `notifications` table: the outbox other modules enqueue into.

use serde::Serialize;

use crate::db::now;
use crate::events::Payload;

/// A message to a user.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notification {
    /// Notification id.
    pub id: i64,
    /// What it is about: `welcome`, `order_confirmed`, `order_cancelled`.
    pub kind: String,
    /// Subject line.
    pub subject: String,
    /// Text.
    pub body: String,
    /// `queued` until the user marks it `read`.
    pub status: String,
    /// Seconds since the epoch.
    pub created_at: i64,
}

/// Queues a message for a user, in the caller's transaction when given one.
pub async fn enqueue<'c, E>(executor: E, user_id: i64, kind: &str, subject: &str, body: &str) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO notifications (user_id, kind, subject, body, status, created_at) VALUES ($1, $2, $3, $4, 'queued', $5)",
    )
    .bind(user_id)
    .bind(kind)
    .bind(subject)
    .bind(body)
    .bind(now())
    .execute(executor)
    .await?;
    Ok(())
}

/// The message a user gets for an event: (kind, subject, body). The shop and the
/// notifications service word their messages with this one function.
pub fn message(event: &Payload) -> (&'static str, String, String) {
    match event {
        Payload::UserRegistered { name, .. } => {
            ("welcome", "Welcome to Ficus Shop".into(), format!("Hello {name}, your account is ready."))
        }
        Payload::OrderPlaced { order_id, items, total_cents, .. } => (
            "order_confirmed",
            format!("Order #{order_id} confirmed"),
            format!(
                "We received your order #{order_id}: {items} item(s), ${}.{:02}.",
                total_cents / 100,
                total_cents % 100
            ),
        ),
        Payload::OrderCancelled { order_id, .. } => (
            "order_cancelled",
            format!("Order #{order_id} cancelled"),
            format!("Your order #{order_id} was cancelled and refunded."),
        ),
    }
}

/// Queues the message for `event` to the user it concerns, in the caller's transaction.
pub async fn enqueue_for<'c, E>(executor: E, event: &Payload) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let (kind, subject, body) = message(event);
    enqueue(executor, event.user_id(), kind, &subject, &body).await
}

/// A user's messages, newest first.
pub async fn for_user(pool: &crate::Pool, user_id: i64) -> sqlx::Result<Vec<Notification>> {
    sqlx::query_as::<_, Notification>(
        "SELECT id, kind, subject, body, status, created_at FROM notifications WHERE user_id = $1 ORDER BY id DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Marks one of the user's messages read; false when it is not theirs or does not exist.
pub async fn mark_read(pool: &crate::Pool, user_id: i64, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE notifications SET status = 'read' WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
