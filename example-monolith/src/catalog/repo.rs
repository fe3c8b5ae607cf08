//! SQL for the `products` and `categories` tables.

use serde::{Deserialize, Serialize};

use crate::db::{Pool, now};

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    /// Product id.
    pub id: i64,
    /// Stock-keeping unit, unique.
    pub sku: String,
    /// Name shown in listings.
    pub name: String,
    /// Longer text.
    pub description: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Category slug.
    pub category: String,
}

/// A category, as clients see it and as the catalog's copies exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Category {
    /// Category id.
    pub id: i64,
    /// URL-safe key, used by the product filter.
    pub slug: String,
    /// Display name.
    pub name: String,
}

/// One product by id.
pub async fn product(pool: &Pool, id: i64) -> sqlx::Result<Option<Product>> {
    sqlx::query_as::<_, Product>(
        "SELECT p.id, p.sku, p.name, p.description, p.price_cents, c.slug AS category \
         FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every category, by name.
pub async fn categories(pool: &Pool) -> sqlx::Result<Vec<Category>> {
    sqlx::query_as::<_, Category>("SELECT id, slug, name FROM categories ORDER BY name, id").fetch_all(pool).await
}

/// A category's id by its slug.
pub async fn category_id(pool: &Pool, slug: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM categories WHERE slug = $1").bind(slug).fetch_optional(pool).await
}

/// Creates a category.
pub async fn insert_category<'c, E>(executor: E, slug: &str, name: &str) -> sqlx::Result<Category>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as::<_, Category>("INSERT INTO categories (slug, name) VALUES ($1, $2) RETURNING id, slug, name")
        .bind(slug)
        .bind(name)
        .fetch_one(executor)
        .await
}

/// The fields of a new product.
pub struct NewProduct<'a> {
    /// Unique SKU.
    pub sku: &'a str,
    /// Name.
    pub name: &'a str,
    /// Description.
    pub description: &'a str,
    /// Price in cents.
    pub price_cents: i64,
    /// Category id.
    pub category_id: i64,
}

/// Inserts a product and returns its id.
pub async fn insert_product<'c, E>(executor: E, p: &NewProduct<'_>) -> sqlx::Result<i64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let t = now();
    sqlx::query_scalar::<_, i64>(
        "INSERT INTO products (sku, name, description, price_cents, category_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
    )
    .bind(p.sku)
    .bind(p.name)
    .bind(p.description)
    .bind(p.price_cents)
    .bind(p.category_id)
    .bind(t)
    .fetch_one(executor)
    .await
}

/// The fields an update may change; `None` keeps the current value.
#[derive(Default)]
pub struct ProductChanges<'a> {
    /// New name.
    pub name: Option<&'a str>,
    /// New description.
    pub description: Option<&'a str>,
    /// New price in cents.
    pub price_cents: Option<i64>,
    /// New category id.
    pub category_id: Option<i64>,
}

/// Applies changes to a product; false when it does not exist.
pub async fn update_product<'c, E>(executor: E, id: i64, c: &ProductChanges<'_>) -> sqlx::Result<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE products SET name = COALESCE($1, name), description = COALESCE($2, description), \
         price_cents = COALESCE($3, price_cents), category_id = COALESCE($4, category_id), updated_at = $5 \
         WHERE id = $6",
    )
    .bind(c.name)
    .bind(c.description)
    .bind(c.price_cents)
    .bind(c.category_id)
    .bind(now())
    .bind(id)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A `products` row, every column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProductRow {
    /// Id, the same in every copy.
    pub id: i64,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Category id.
    pub category_id: i64,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Seconds since the epoch.
    pub updated_at: i64,
}

/// Every category row, by id.
pub async fn all_categories<'c, E>(executor: E) -> sqlx::Result<Vec<Category>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as("SELECT id, slug, name FROM categories ORDER BY id").fetch_all(executor).await
}

/// Every product row, by id.
pub async fn all_products<'c, E>(executor: E) -> sqlx::Result<Vec<ProductRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as(
        "SELECT id, sku, name, description, price_cents, category_id, created_at, updated_at FROM products ORDER BY id",
    )
    .fetch_all(executor)
    .await
}

/// One product row, every column (what write-through sends).
pub async fn product_row<'c, E>(executor: E, id: i64) -> sqlx::Result<Option<ProductRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as(
        "SELECT id, sku, name, description, price_cents, category_id, created_at, updated_at FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}
