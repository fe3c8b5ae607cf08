//! The catalogue's HTTP contract: request bodies and query strings, their validation,
//! and the page shape. The monolith's catalog handlers and the extracted catalog service
//! both use it, so the two answer the same requests with the same JSON and errors.

use serde::{Deserialize, Serialize};

use super::repo::Product;
use crate::error::{ApiError, ApiResult};

/// Largest page a listing returns.
pub const MAX_PER_PAGE: i64 = 100;
/// Page size when none is asked for.
pub const DEFAULT_PER_PAGE: i64 = 20;
/// Highest price accepted, in cents.
pub const MAX_PRICE_CENTS: i64 = 100_000_000;

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
#[derive(Debug, Serialize, Deserialize)]
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

/// The raw listing query string: every field is text so that `?page=` (empty) means
/// "default" and a bad value gets an error naming its field.
#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    category: Option<String>,
    q: Option<String>,
    in_stock: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn int_param(
    field: &'static str,
    v: Option<String>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<i64> {
    let Some(text) = non_empty(v) else { return Ok(default) };
    match text.parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            field,
            format!("{field} must be an integer from {} to {}", range.start(), range.end()),
        )),
    }
}

impl ListParams {
    /// Checks every parameter; the error names the first bad one.
    pub fn validate(self) -> ApiResult<ProductQuery> {
        let in_stock = match non_empty(self.in_stock).as_deref() {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(_) => return Err(ApiError::invalid("in_stock", "in_stock must be true or false")),
        };
        let text = non_empty(self.q);
        if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return Err(ApiError::invalid("q", "search text is limited to 200 characters"));
        }
        Ok(ProductQuery {
            category: non_empty(self.category),
            text,
            in_stock,
            page: int_param("page", self.page, 1, 1..=100_000)?,
            per_page: int_param("per_page", self.per_page, DEFAULT_PER_PAGE, 1..=MAX_PER_PAGE)?,
        })
    }
}

/// A LIKE pattern matching `text` anywhere, lower-cased, with its own wildcards escaped
/// (used with `ESCAPE '\\'`).
pub fn like_pattern(text: &str) -> String {
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

/// `POST /api/products`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateProduct {
    /// Unique stock-keeping unit.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description (may be empty).
    #[serde(default)]
    pub description: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Category slug.
    pub category: String,
    /// Initial stock.
    #[serde(default)]
    pub stock: i64,
}

impl CreateProduct {
    /// Checks every field but the category (which needs the database) and the stock
    /// (which the inventory owns); trims the text fields.
    pub fn validate(mut self) -> ApiResult<Self> {
        check_text("sku", &self.sku, 64)?;
        check_text("name", &self.name, 200)?;
        check_description(&self.description)?;
        check_price(self.price_cents)?;
        for field in [&mut self.sku, &mut self.name, &mut self.description, &mut self.category] {
            *field = field.trim().to_string();
        }
        Ok(self)
    }
}

/// `PUT /api/products/{id}`: fields not sent keep their value.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UpdateProduct {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New price in cents.
    pub price_cents: Option<i64>,
    /// New category slug.
    pub category: Option<String>,
}

impl UpdateProduct {
    /// Checks the fields sent; trims the text fields.
    pub fn validate(mut self) -> ApiResult<Self> {
        if let Some(name) = &self.name {
            check_text("name", name, 200)?;
        }
        if let Some(d) = &self.description {
            check_description(d)?;
        }
        if let Some(price) = self.price_cents {
            check_price(price)?;
        }
        for field in [&mut self.name, &mut self.description, &mut self.category].into_iter().flatten() {
            *field = field.trim().to_string();
        }
        Ok(self)
    }
}

/// `POST /api/categories`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateCategory {
    /// URL-safe key.
    pub slug: String,
    /// Display name.
    pub name: String,
}

impl CreateCategory {
    /// Checks the slug's alphabet and the name's length; trims both.
    pub fn validate(self) -> ApiResult<Self> {
        let slug = self.slug.trim();
        if slug.is_empty()
            || slug.len() > 64
            || !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ApiError::invalid("slug", "slug must be 1 to 64 characters of a-z, 0-9 and -"));
        }
        check_text("name", &self.name, 100)?;
        Ok(Self { slug: slug.to_string(), name: self.name.trim().to_string() })
    }
}

fn check_text(field: &'static str, value: &str, max: usize) -> ApiResult<()> {
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        return Err(ApiError::invalid(field, format!("{field} must be 1 to {max} characters")));
    }
    Ok(())
}

fn check_description(value: &str) -> ApiResult<()> {
    if value.chars().count() > 2000 {
        return Err(ApiError::invalid("description", "description is limited to 2000 characters"));
    }
    Ok(())
}

fn check_price(price_cents: i64) -> ApiResult<()> {
    if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(ApiError::invalid("price_cents", format!("price_cents must be from 0 to {MAX_PRICE_CENTS}")));
    }
    Ok(())
}

/// The error every catalog endpoint answers for an unknown category slug.
pub fn unknown_category(slug: &str) -> ApiError {
    ApiError::NotFound { message: format!("category {slug:?} not found"), field: Some("category") }
}

/// The error for a duplicate SKU.
pub fn duplicate_sku(sku: &str) -> ApiError {
    ApiError::Conflict { message: format!("sku {sku:?} already exists"), field: Some("sku") }
}

/// The error for a duplicate category slug.
pub fn duplicate_category(slug: &str) -> ApiError {
    ApiError::Conflict { message: format!("category {slug:?} already exists"), field: Some("slug") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("Oak"), "%oak%");
        assert_eq!(like_pattern("50%_off"), "%50\\%\\_off%");
    }

    #[test]
    fn empty_parameters_mean_defaults() {
        let q = ListParams { page: Some(String::new()), ..Default::default() }.validate().unwrap();
        assert_eq!((q.page, q.per_page, q.in_stock), (1, DEFAULT_PER_PAGE, false));
    }
}
