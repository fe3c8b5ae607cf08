//! SQL for the `orders` and `order_items` tables, and the priced cart that checkout
//! reads straight from the cart's and the catalog's tables.

use serde::Serialize;

use crate::db::{Pool, now};

/// An order as clients see it: `paid`, `cancelling` (waiting for its refund) or
/// `cancelled`. Orders still being paid (`pending`, `unsettled`) and checkouts that did not
/// complete (`declined`, `abandoned`) are never shown.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    /// Order id.
    pub id: i64,
    /// `paid`, `cancelling` or `cancelled`.
    pub status: String,
    /// What was charged, in cents.
    pub total_cents: i64,
    /// The lines bought, with the name and price at the time of purchase.
    pub items: Vec<OrderItem>,
    /// Seconds since the epoch.
    pub created_at: i64,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderItem {
    /// The product.
    pub product_id: i64,
    /// Its name when bought.
    pub name: String,
    /// Its price when bought, in cents.
    pub unit_price_cents: i64,
    /// Units bought.
    pub quantity: i64,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    status: String,
    total_cents: i64,
    created_at: i64,
}

/// The caller's cart lines priced from `products`, read inside checkout's transaction
/// (the local implementation of the product reads, see `product_source`).
pub async fn priced_cart(conn: &mut sqlx::AnyConnection, user_id: i64) -> sqlx::Result<Vec<OrderItem>> {
    sqlx::query_as::<_, OrderItem>(
        "SELECT ci.product_id, p.name, p.price_cents AS unit_price_cents, ci.quantity \
         FROM cart_items ci JOIN products p ON p.id = ci.product_id \
         WHERE ci.user_id = $1 ORDER BY ci.product_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The id of the user's order created with this idempotency key, if any.
pub async fn id_for_key<'c, E>(executor: E, user_id: i64, key: &str) -> sqlx::Result<Option<i64>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND idempotency_key = $2")
        .bind(user_id)
        .bind(key)
        .fetch_optional(executor)
        .await
}

/// Creates an order and its lines; returns its id.
pub async fn insert(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    status: &str,
    items: &[OrderItem],
    idempotency_key: Option<&str>,
) -> sqlx::Result<i64> {
    let total: i64 = items.iter().map(|i| i.unit_price_cents * i.quantity).sum();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (user_id, status, total_cents, idempotency_key, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user_id)
    .bind(status)
    .bind(total)
    .bind(idempotency_key)
    .bind(now())
    .fetch_one(&mut *conn)
    .await?;
    for item in items {
        sqlx::query(
            "INSERT INTO order_items (order_id, product_id, name, unit_price_cents, quantity) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(item.product_id)
        .bind(&item.name)
        .bind(item.unit_price_cents)
        .bind(item.quantity)
        .execute(&mut *conn)
        .await?;
    }
    Ok(id)
}

/// Moves one of the user's orders from one status to another; false when it is not
/// theirs or was not in `from`.
pub async fn transition(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    order_id: i64,
    from: &str,
    to: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE orders SET status = $1 WHERE id = $2 AND user_id = $3 AND status = $4")
        .bind(to)
        .bind(order_id)
        .bind(user_id)
        .bind(from)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the idempotency key of the order's charge at the payments service.
pub async fn set_payment_key(conn: &mut sqlx::AnyConnection, order_id: i64, key: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE orders SET payment_key = $1 WHERE id = $2").bind(key).bind(order_id).execute(conn).await?;
    Ok(())
}

/// Ends a checkout that will not complete: a `pending` or `unsettled` order becomes
/// `status` and frees its idempotency key for another attempt. False when it was neither.
pub async fn settle(conn: &mut sqlx::AnyConnection, order_id: i64, status: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE orders SET status = $1, idempotency_key = NULL WHERE id = $2 AND status IN ('pending', 'unsettled')",
    )
    .bind(status)
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a `pending` order whose charge could not be settled `unsettled` (also how the
/// settle loop claims one). True when the order is now `unsettled`.
pub async fn mark_unsettled(conn: &mut sqlx::AnyConnection, order_id: i64) -> sqlx::Result<bool> {
    let done =
        sqlx::query("UPDATE orders SET status = 'unsettled' WHERE id = $1 AND status IN ('pending', 'unsettled')")
            .bind(order_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The charge key of an order charged at the payments service.
pub async fn payment_key(pool: &Pool, order_id: i64) -> sqlx::Result<Option<String>> {
    let key: Option<Option<String>> =
        sqlx::query_scalar("SELECT payment_key FROM orders WHERE id = $1").bind(order_id).fetch_optional(pool).await?;
    Ok(key.flatten())
}

/// Puts a given-up order's lines back in its owner's cart (added to what is there now).
pub async fn restore_cart(conn: &mut sqlx::AnyConnection, order_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cart_items (user_id, product_id, quantity, added_at) \
         SELECT o.user_id, oi.product_id, oi.quantity, $2 FROM order_items oi JOIN orders o ON o.id = oi.order_id \
         WHERE oi.order_id = $1 \
         ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity",
    )
    .bind(order_id)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

/// Starts cancelling a paid order whose charge is at the payments service: `paid` →
/// `cancelling`, timed. False when it is not the user's or not paid.
pub async fn begin_cancel(conn: &mut sqlx::AnyConnection, user_id: i64, order_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'cancelling', status_at = $1 WHERE id = $2 AND user_id = $3 AND status = 'paid'",
    )
    .bind(now())
    .bind(order_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Cancellations left waiting for their refund longer than `older_than_secs`: (order, user).
pub async fn stuck_cancellations(pool: &Pool, older_than_secs: i64) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as("SELECT id, user_id FROM orders WHERE status = 'cancelling' AND status_at < $1 ORDER BY id")
        .bind(now() - older_than_secs)
        .fetch_all(pool)
        .await
}

/// Orders waiting to be settled with the payments service: `unsettled` ones, and
/// `pending` ones with a charge key older than `older_than_secs`, oldest first.
pub async fn unsettled(pool: &Pool, older_than_secs: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = 'unsettled' \
         OR (status = 'pending' AND payment_key IS NOT NULL AND created_at < $1) ORDER BY id",
    )
    .bind(now() - older_than_secs)
    .fetch_all(pool)
    .await
}

/// One of the user's orders (None when it does not exist or belongs to someone else).
pub async fn find(pool: &Pool, user_id: i64, order_id: i64) -> sqlx::Result<Option<Order>> {
    let row = sqlx::query_as::<_, OrderRow>(
        "SELECT id, status, total_cents, created_at FROM orders \
         WHERE id = $1 AND user_id = $2 AND status IN ('paid', 'cancelling', 'cancelled')",
    )
    .bind(order_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let items = sqlx::query_as::<_, OrderItem>(
        "SELECT product_id, name, unit_price_cents, quantity FROM order_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(Order { id: row.id, status: row.status, total_cents: row.total_cents, items, created_at: row.created_at }))
}

/// All of the user's orders, newest first, with their lines.
pub async fn for_user(pool: &Pool, user_id: i64) -> sqlx::Result<Vec<Order>> {
    let rows = sqlx::query_as::<_, OrderRow>(
        "SELECT id, status, total_cents, created_at FROM orders WHERE user_id = $1 AND status IN ('paid', 'cancelling', 'cancelled') \
         ORDER BY id DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let items: Vec<(i64, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT oi.order_id, oi.product_id, oi.name, oi.unit_price_cents, oi.quantity \
         FROM order_items oi JOIN orders o ON o.id = oi.order_id WHERE o.user_id = $1 \
         ORDER BY oi.order_id, oi.product_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let mut by_order: std::collections::HashMap<i64, Vec<OrderItem>> = std::collections::HashMap::new();
    for (order_id, product_id, name, unit_price_cents, quantity) in items {
        by_order.entry(order_id).or_default().push(OrderItem { product_id, name, unit_price_cents, quantity });
    }
    Ok(rows
        .into_iter()
        .map(|r| Order {
            items: by_order.remove(&r.id).unwrap_or_default(),
            id: r.id,
            status: r.status,
            total_cents: r.total_cents,
            created_at: r.created_at,
        })
        .collect())
}
