//! Charges, one per idempotency key.
//!
//! `charge` and `cancel` both go through the key's unique row, so whichever comes first
//! decides. A charge claims the key first (a `processing` row), then asks the card gateway,
//! then records the answer — only if the row is still `processing`: a cancel that came in
//! between turned it `void`, and the charge is refused (with a real gateway the money would
//! be released there). A cancel after the charge refunds it. A retry of a charge finds the
//! row: the first answer again, or 503 while the first is still being made.

use shop::Pool;
use shop::db::now;
use shop::payments::gateway::{self, PaymentError};
use shop::payments::remote::ChargeRecord;

/// What a charge request ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Captured now (201) or before, under the same key (200).
    Captured {
        /// The charge.
        record: ChargeRecord,
        /// False for a replay.
        new: bool,
    },
    /// The card was declined (now or before, under the same key).
    Declined(String),
    /// The key was cancelled or refunded: nothing is taken.
    Cancelled(ChargeRecord),
    /// A charge under this key is being made right now (ask again).
    InProgress,
}

const COLUMNS: &str = "charge_key AS key, order_id, amount_cents, status, card_last4, reference, created_at";

/// The charge made under `key`, if any.
pub async fn find(pool: &Pool, key: &str) -> sqlx::Result<Option<ChargeRecord>> {
    sqlx::query_as::<_, (String, i64, i64, String, String, String, i64)>(&format!(
        "SELECT {COLUMNS} FROM charges WHERE charge_key = $1"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await
    .map(|row| row.map(record))
}

fn record(
    (key, order_id, amount_cents, status, card_last4, reference, created_at): (
        String,
        i64,
        i64,
        String,
        String,
        String,
        i64,
    ),
) -> ChargeRecord {
    ChargeRecord { key, order_id, amount_cents, status, card_last4, reference, created_at }
}

fn answer(record: ChargeRecord, new: bool) -> Charged {
    match record.status.as_str() {
        "captured" => Charged::Captured { record, new },
        // A declined row keeps the gateway's reason in `reference`.
        "declined" => Charged::Declined(record.reference),
        "processing" => Charged::InProgress,
        _ => Charged::Cancelled(record),
    }
}

/// Inserts a row for `key` unless one exists; true when it was inserted.
async fn insert(
    pool: &Pool,
    key: &str,
    order_id: i64,
    amount: i64,
    status: &str,
    last4: &str,
    reference: &str,
) -> sqlx::Result<bool> {
    let at = now();
    let done = sqlx::query(
        "INSERT INTO charges (charge_key, order_id, amount_cents, status, card_last4, reference, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (charge_key) DO NOTHING",
    )
    .bind(key)
    .bind(order_id)
    .bind(amount)
    .bind(status)
    .bind(last4)
    .bind(reference)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Charges `amount` to `card` for `order_id` under `key`, at most once per key.
pub async fn charge(pool: &Pool, key: &str, order_id: i64, amount: i64, card: &str) -> Result<Charged, ChargeError> {
    let digits = gateway::normalise(card).map_err(|e| ChargeError::Invalid(e.to_string()))?;
    let last4 = digits[digits.len() - 4..].to_string();
    if !insert(pool, key, order_id, amount, "processing", &last4, "").await? {
        let row = find(pool, key).await?.ok_or_else(|| ChargeError::Internal(format!("charge {key} vanished")))?;
        return Ok(answer(row, false));
    }
    let (status, reference) = match gateway::charge(&digits, amount) {
        Ok(c) => ("captured", c.reference),
        Err(PaymentError::Declined(reason)) => ("declined", reason.to_string()),
        Err(e @ PaymentError::InvalidCard) => return Err(ChargeError::Invalid(e.to_string())),
    };
    let recorded = sqlx::query(
        "UPDATE charges SET status = $1, reference = $2, updated_at = $3 WHERE charge_key = $4 AND status = 'processing'",
    )
    .bind(status)
    .bind(&reference)
    .bind(now())
    .bind(key)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        tracing::info!(key, order_id, amount, status, "charge");
    } else {
        tracing::warn!(key, order_id, "the key was cancelled while the gateway answered; charge released");
    }
    let row = find(pool, key).await?.ok_or_else(|| ChargeError::Internal(format!("charge {key} vanished")))?;
    Ok(answer(row, recorded))
}

/// Cancels `key` for good: refunds a captured charge, declares the key void when no
/// charge was made under it. Returns the key's row afterwards.
pub async fn cancel(pool: &Pool, key: &str) -> sqlx::Result<ChargeRecord> {
    let order_id = key.strip_prefix("order-").and_then(|id| id.parse().ok()).unwrap_or(0);
    if !insert(pool, key, order_id, 0, "void", "", "").await? {
        sqlx::query(
            "UPDATE charges SET status = CASE status WHEN 'captured' THEN 'refunded' ELSE 'void' END, \
             updated_at = $1 WHERE charge_key = $2 AND status IN ('captured', 'processing')",
        )
        .bind(now())
        .bind(key)
        .execute(pool)
        .await?;
    }
    tracing::info!(key, "charge key cancelled");
    find(pool, key).await?.ok_or_else(|| sqlx::Error::RowNotFound)
}

/// Why a charge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// Not a card number (400).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Should not happen.
    #[error("{0}")]
    Internal(String),
}

/// Figures for checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// `(status, count)`.
    pub by_status: Vec<(String, i64)>,
    /// Orders with more than one captured charge (must be 0).
    pub orders_charged_twice: i64,
    /// Sum of captured amounts.
    pub captured_cents: i64,
}

/// Counts what the service holds.
pub async fn tally(pool: &Pool) -> sqlx::Result<Tally> {
    let by_status =
        sqlx::query_as("SELECT status, COUNT(*) FROM charges GROUP BY status ORDER BY status").fetch_all(pool).await?;
    let orders_charged_twice = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT order_id FROM charges WHERE status = 'captured' GROUP BY order_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(pool)
    .await?;
    let captured_cents: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(amount_cents) AS BIGINT) FROM charges WHERE status = 'captured'")
            .fetch_one(pool)
            .await?;
    Ok(Tally { by_status, orders_charged_twice, captured_cents: captured_cents.unwrap_or(0) })
}

/// Every captured charge's order id, for reconciliation against the shop's orders.
pub async fn captured_orders(pool: &Pool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("SELECT order_id FROM charges WHERE status = 'captured' ORDER BY order_id").fetch_all(pool).await
}
