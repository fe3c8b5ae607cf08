//! Moving the shop's payment history here: every row of the shop's `payments` table
//! becomes a charge under its order's key (`order-{id}`), so the service answers for
//! every order, old or new. Idempotent: run it again and nothing is copied twice.

use shop::Pool;
use shop::payments::remote::charge_key;

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backfill {
    /// Rows read from the shop.
    pub read: usize,
    /// Charges created here.
    pub copied: usize,
}

/// Copies the shop's payments (`shop`) into the service's charges (`service`).
pub async fn backfill(shop: &Pool, service: &Pool) -> sqlx::Result<Backfill> {
    let rows: Vec<(i64, i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT order_id, amount_cents, status, card_last4, gateway_ref, created_at FROM payments ORDER BY id",
    )
    .fetch_all(shop)
    .await?;
    let mut copied = 0;
    for (order_id, amount, status, last4, reference, created_at) in &rows {
        let done = sqlx::query(
            "INSERT INTO charges (charge_key, order_id, amount_cents, status, card_last4, reference, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (charge_key) DO NOTHING",
        )
        .bind(charge_key(*order_id))
        .bind(order_id)
        .bind(amount)
        .bind(status)
        .bind(last4)
        .bind(reference)
        .bind(created_at)
        .execute(service)
        .await?;
        copied += done.rows_affected() as usize;
    }
    Ok(Backfill { read: rows.len(), copied })
}

/// Orders whose payment the shop recorded and the service does not hold the same way:
/// `(order_id, shop status, service status or "missing")`.
pub async fn parity(shop: &Pool, service: &Pool) -> sqlx::Result<Vec<(i64, String, String)>> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT order_id, status FROM payments ORDER BY id").fetch_all(shop).await?;
    let mut differ = Vec::new();
    for (order_id, status) in rows {
        let theirs: Option<String> = sqlx::query_scalar("SELECT status FROM charges WHERE charge_key = $1")
            .bind(charge_key(order_id))
            .fetch_optional(service)
            .await?;
        if theirs.as_deref() != Some(status.as_str()) {
            differ.push((order_id, status, theirs.unwrap_or_else(|| "missing".into())));
        }
    }
    Ok(differ)
}
