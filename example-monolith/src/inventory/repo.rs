//! SQL for the `inventory` and `reservations` tables. Stock is only ever decremented by
//! a conditional update (`… WHERE stock >= $n`), so concurrent checkouts cannot drive it
//! below zero whatever the database's isolation level.

use crate::db::now;
use crate::error::{ApiError, ApiResult};

/// Highest stock level accepted.
pub const MAX_STOCK: i64 = 1_000_000;

/// Rejects a stock level outside 0..=[`MAX_STOCK`].
pub fn check_stock_value(stock: i64) -> ApiResult<()> {
    if (0..=MAX_STOCK).contains(&stock) {
        Ok(())
    } else {
        Err(ApiError::invalid("stock", format!("stock must be from 0 to {MAX_STOCK}")))
    }
}

/// The stock of a product, if it has an inventory row.
pub async fn stock<'c, E>(executor: E, product_id: i64) -> sqlx::Result<Option<i64>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_scalar::<_, i64>("SELECT stock FROM inventory WHERE product_id = $1")
        .bind(product_id)
        .fetch_optional(executor)
        .await
}

/// Every product's stock, by product id; only products with stock when `in_stock_only`.
pub async fn levels(pool: &crate::Pool, in_stock_only: bool) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as("SELECT product_id, stock FROM inventory WHERE ($1 = 0 OR stock > 0) ORDER BY product_id")
        .bind(i64::from(in_stock_only))
        .fetch_all(pool)
        .await
}

/// Sets a product's stock, creating its inventory row when missing.
pub async fn set_stock<'c, E>(executor: E, product_id: i64, stock: i64) -> sqlx::Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO inventory (product_id, stock, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (product_id) DO UPDATE SET stock = excluded.stock, updated_at = excluded.updated_at",
    )
    .bind(product_id)
    .bind(stock)
    .bind(now())
    .execute(executor)
    .await?;
    Ok(())
}

/// Takes `quantity` units of a product for an order. False, and nothing changed, when
/// there are not that many in stock.
pub async fn reserve(
    conn: &mut sqlx::AnyConnection,
    order_id: i64,
    product_id: i64,
    quantity: i64,
) -> sqlx::Result<bool> {
    let t = now();
    let taken =
        sqlx::query("UPDATE inventory SET stock = stock - $1, updated_at = $2 WHERE product_id = $3 AND stock >= $1")
            .bind(quantity)
            .bind(t)
            .bind(product_id)
            .execute(&mut *conn)
            .await?;
    if taken.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO reservations (order_id, product_id, quantity, status, created_at) VALUES ($1, $2, $3, 'held', $4)",
    )
    .bind(order_id)
    .bind(product_id)
    .bind(quantity)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Puts back every unit an order holds and marks its reservations released.
pub async fn release(conn: &mut sqlx::AnyConnection, order_id: i64) -> sqlx::Result<()> {
    let held: Vec<(i64, i64)> =
        sqlx::query_as("SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND status = 'held'")
            .bind(order_id)
            .fetch_all(&mut *conn)
            .await?;
    let t = now();
    for (product_id, quantity) in held {
        sqlx::query("UPDATE inventory SET stock = stock + $1, updated_at = $2 WHERE product_id = $3")
            .bind(quantity)
            .bind(t)
            .bind(product_id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE reservations SET status = 'released' WHERE order_id = $1 AND status = 'held'")
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
