//! SQL for the `carts` and `cart_items` tables, and the product lookups the cart makes
//! directly against the catalog's tables.

use serde::Serialize;

use crate::db::{Pool, now};

/// Most units of one product a cart line may hold.
pub const MAX_LINE_QUANTITY: i64 = 99;

/// A cart line with the product's current name and price.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CartLine {
    /// The product.
    pub product_id: i64,
    /// Its current name.
    pub name: String,
    /// Its current price in cents.
    pub unit_price_cents: i64,
    /// Units in the cart.
    pub quantity: i64,
}

/// The lines of a user's cart, with product data read from `products` (the local
/// implementation of the product reads, see `product_source`).
pub async fn lines<'c, E>(executor: E, user_id: i64) -> sqlx::Result<Vec<CartLine>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as::<_, CartLine>(
        "SELECT ci.product_id, p.name, p.price_cents AS unit_price_cents, ci.quantity \
         FROM cart_items ci JOIN products p ON p.id = ci.product_id \
         WHERE ci.user_id = $1 ORDER BY ci.product_id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await
}

/// The user's cart as (product_id, quantity), from the cart's own table only.
pub async fn items<'c, E>(executor: E, user_id: i64) -> sqlx::Result<Vec<(i64, i64)>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as("SELECT product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY product_id")
        .bind(user_id)
        .fetch_all(executor)
        .await
}

/// True when the product exists (read straight from the catalog's table).
pub async fn product_exists(pool: &Pool, product_id: i64) -> sqlx::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM products WHERE id = $1").bind(product_id).fetch_optional(pool).await?;
    Ok(found.is_some())
}

/// Creates the user's cart row or touches it. As the first statement of a transaction
/// it takes the write lock (SQLite) or the row lock (PostgreSQL) that serialises
/// concurrent changes to one cart, checkout included.
pub async fn touch(conn: &mut sqlx::AnyConnection, user_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO carts (user_id, updated_at) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at",
    )
    .bind(user_id)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds units to a line (creating it). False when the line would exceed [`MAX_LINE_QUANTITY`].
pub async fn add(pool: &Pool, user_id: i64, product_id: i64, quantity: i64) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    touch(&mut tx, user_id).await?;
    let done = sqlx::query(
        "INSERT INTO cart_items (user_id, product_id, quantity, added_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + excluded.quantity \
         WHERE cart_items.quantity + excluded.quantity <= $5",
    )
    .bind(user_id)
    .bind(product_id)
    .bind(quantity)
    .bind(now())
    .bind(MAX_LINE_QUANTITY)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Sets a line's quantity; false when the user has no such line.
pub async fn set_quantity(pool: &Pool, user_id: i64, product_id: i64, quantity: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE cart_items SET quantity = $1 WHERE user_id = $2 AND product_id = $3")
        .bind(quantity)
        .bind(user_id)
        .bind(product_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a line; false when the user has no such line.
pub async fn remove(pool: &Pool, user_id: i64, product_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
        .bind(user_id)
        .bind(product_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Empties a cart (after a successful checkout).
pub async fn clear(conn: &mut sqlx::AnyConnection, user_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM cart_items WHERE user_id = $1").bind(user_id).execute(conn).await?;
    Ok(())
}
