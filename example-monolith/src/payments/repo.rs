//! SQL for the `payments` table.

use crate::db::now;

/// Records a captured charge for an order.
pub async fn record_capture(
    conn: &mut sqlx::AnyConnection,
    order_id: i64,
    amount_cents: i64,
    charge: &super::gateway::Charge,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payments (order_id, amount_cents, status, card_last4, gateway_ref, created_at) \
         VALUES ($1, $2, 'captured', $3, $4, $5)",
    )
    .bind(order_id)
    .bind(amount_cents)
    .bind(&charge.last4)
    .bind(&charge.reference)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an order's captured payments refunded.
pub async fn refund(conn: &mut sqlx::AnyConnection, order_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET status = 'refunded' WHERE order_id = $1 AND status = 'captured'")
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}
