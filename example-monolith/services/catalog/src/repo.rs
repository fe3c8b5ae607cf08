//! The service's own SQL. Single-row reads and admin writes reuse the shop's catalog
//! repository (`shop::catalog::repo`), which runs unchanged on these tables; what is
//! here is what differs: search without the inventory join, and whole-row reads and
//! upserts by id for replication and backfill.

use shop::catalog::contract::{ProductPage, ProductQuery, like_pattern};
use shop::catalog::repo::{Category, Product, ProductRow};
use shop::db::{Dialect, Pool};

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The product listing. `only_ids` (the products in stock, from the inventory API)
/// stands in for the shop's join on its `inventory` table.
pub async fn search(pool: &Pool, q: &ProductQuery, only_ids: Option<&[i64]>) -> sqlx::Result<ProductPage> {
    let category = q.category.clone().unwrap_or_default();
    let pattern = q.text.as_deref().map(like_pattern).unwrap_or_default();
    let filter = |first: usize| match only_ids {
        None => "1 = 1".to_string(),
        Some([]) => "1 = 0".to_string(),
        Some(ids) => format!("p.id IN ({})", placeholders(first, ids.len())),
    };
    let count_sql = format!(
        "SELECT COUNT(*) FROM products p JOIN categories c ON c.id = p.category_id \
         WHERE ($1 = '' OR c.slug = $1) \
         AND ($2 = '' OR LOWER(p.name) LIKE $2 ESCAPE '\\' OR LOWER(p.description) LIKE $2 ESCAPE '\\') \
         AND {}",
        filter(3)
    );
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql).bind(&category).bind(&pattern);
    for id in only_ids.unwrap_or_default() {
        count = count.bind(*id);
    }
    let total = count.fetch_one(pool).await?;
    let items_sql = format!(
        "SELECT p.id, p.sku, p.name, p.description, p.price_cents, c.slug AS category \
         FROM products p JOIN categories c ON c.id = p.category_id \
         WHERE ($1 = '' OR c.slug = $1) \
         AND ($2 = '' OR LOWER(p.name) LIKE $2 ESCAPE '\\' OR LOWER(p.description) LIKE $2 ESCAPE '\\') \
         AND {} ORDER BY p.id LIMIT $3 OFFSET $4",
        filter(5)
    );
    let mut items = sqlx::query_as::<_, Product>(&items_sql)
        .bind(&category)
        .bind(&pattern)
        .bind(q.per_page)
        .bind((q.page - 1) * q.per_page);
    for id in only_ids.unwrap_or_default() {
        items = items.bind(*id);
    }
    Ok(ProductPage { items: items.fetch_all(pool).await?, page: q.page, per_page: q.per_page, total })
}

/// Writes a category row as given, keyed by id.
pub async fn upsert_category(conn: &mut sqlx::AnyConnection, row: &Category) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO categories (id, slug, name) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET slug = excluded.slug, name = excluded.name",
    )
    .bind(row.id)
    .bind(&row.slug)
    .bind(&row.name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a product row as given, keyed by id.
pub async fn upsert_product(conn: &mut sqlx::AnyConnection, row: &ProductRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO products (id, sku, name, description, price_cents, category_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, name = excluded.name, description = excluded.description, \
         price_cents = excluded.price_cents, category_id = excluded.category_id, created_at = excluded.created_at, \
         updated_at = excluded.updated_at",
    )
    .bind(row.id)
    .bind(&row.sku)
    .bind(&row.name)
    .bind(&row.description)
    .bind(row.price_cents)
    .bind(row.category_id)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// After rows were written with explicit ids, moves PostgreSQL's identity sequences
/// past them so the service's own inserts do not collide. (SQLite's AUTOINCREMENT
/// already follows the largest id.)
pub async fn advance_id_sequences(conn: &mut sqlx::AnyConnection, dialect: Dialect) -> sqlx::Result<()> {
    if dialect == Dialect::Postgres {
        for table in ["categories", "products"] {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), 1))"
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
