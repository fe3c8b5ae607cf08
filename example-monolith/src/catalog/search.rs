//! Product listing: category filter, text search, pagination and the "in stock only"
//! filter, which joins the inventory capability's `inventory` table directly.

use serde::Serialize;

use super::repo::Product;
use crate::db::Pool;

/// What a listing asks for, already validated.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    /// Only this category (slug).
    pub category: Option<String>,
    /// Words that must appear in the name or description (case-insensitive).
    pub text: Option<String>,
    /// Only products with stock.
    pub in_stock: bool,
    /// 1-based page.
    pub page: i64,
    /// Items per page.
    pub per_page: i64,
}

/// One page of products.
#[derive(Debug, Serialize)]
pub struct ProductPage {
    /// The products on this page, by id.
    pub items: Vec<Product>,
    /// The page number.
    pub page: i64,
    /// Items per page.
    pub per_page: i64,
    /// Products matching the query over all pages.
    pub total: i64,
}

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

/// A LIKE pattern matching `text` anywhere, lower-cased, with its own wildcards escaped.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("Oak"), "%oak%");
        assert_eq!(like_pattern("50%_off"), "%50\\%\\_off%");
    }
}
