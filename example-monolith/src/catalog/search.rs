//! Product listing: category filter, text search, pagination and the "in stock only"
//! filter, which joins the inventory capability's `inventory` table directly.

use super::contract::{ProductPage, ProductQuery, like_pattern};
use super::repo::Product;
use crate::db::Pool;

/// Runs a listing query. Both statements carry the whole filter as one literal, so each
/// can be read (and analysed) on its own.
pub async fn search(pool: &Pool, q: &ProductQuery) -> sqlx::Result<ProductPage> {
    let category = q.category.clone().unwrap_or_default();
    let pattern = q.text.as_deref().map(like_pattern).unwrap_or_default();
    let in_stock = i64::from(q.in_stock);
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM products p JOIN categories c ON c.id = p.category_id \
         LEFT JOIN inventory i ON i.product_id = p.id \
         WHERE ($1 = '' OR c.slug = $1) \
         AND ($2 = '' OR LOWER(p.name) LIKE $2 ESCAPE '\\' OR LOWER(p.description) LIKE $2 ESCAPE '\\') \
         AND ($3 = 0 OR COALESCE(i.stock, 0) > 0)",
    )
    .bind(&category)
    .bind(&pattern)
    .bind(in_stock)
    .fetch_one(pool)
    .await?;
    let items = sqlx::query_as::<_, Product>(
        "SELECT p.id, p.sku, p.name, p.description, p.price_cents, c.slug AS category \
         FROM products p JOIN categories c ON c.id = p.category_id \
         LEFT JOIN inventory i ON i.product_id = p.id \
         WHERE ($1 = '' OR c.slug = $1) \
         AND ($2 = '' OR LOWER(p.name) LIKE $2 ESCAPE '\\' OR LOWER(p.description) LIKE $2 ESCAPE '\\') \
         AND ($3 = 0 OR COALESCE(i.stock, 0) > 0) \
         ORDER BY p.id LIMIT $4 OFFSET $5",
    )
    .bind(&category)
    .bind(&pattern)
    .bind(in_stock)
    .bind(q.per_page)
    .bind((q.page - 1) * q.per_page)
    .fetch_all(pool)
    .await?;
    Ok(ProductPage { items, page: q.page, per_page: q.per_page, total })
}
