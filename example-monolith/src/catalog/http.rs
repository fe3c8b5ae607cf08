//! HTTP endpoints for the catalogue.
//!
//! ```text
//! GET  /api/products?category=&q=&in_stock=&page=&per_page=  → {items, page, per_page, total}
//! GET  /api/products/{id}                                     → product
//! POST /api/products       (admin) {sku, name, description, price_cents, category, stock?} → 201 product
//! PUT  /api/products/{id}  (admin) {name?, description?, price_cents?, category?}            → product
//! GET  /api/categories                                        → [category]
//! POST /api/categories     (admin) {slug, name}               → 201 category
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;

use super::repo::{self, Category, NewProduct, Product, ProductChanges};
use super::search::{self, ProductPage, ProductQuery};
use crate::AppState;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};
use crate::inventory;
use crate::users::auth::Admin;

/// Largest page a listing returns.
pub const MAX_PER_PAGE: i64 = 100;
/// Page size when none is asked for.
pub const DEFAULT_PER_PAGE: i64 = 20;
/// Highest price accepted, in cents.
pub const MAX_PRICE_CENTS: i64 = 100_000_000;

/// The catalog routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/products/{id}", get(get_product).put(update_product))
        .route("/api/categories", get(list_categories).post(create_category))
}

/// The raw query string: every field is text so that `?page=` (empty) means "default"
/// and a bad value gets an error naming its field.
#[derive(Deserialize, Default)]
struct ListParams {
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
    fn validate(self) -> ApiResult<ProductQuery> {
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

async fn list_products(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ProductPage>> {
    Ok(Json(search::search(&state.pool, &params.validate()?).await?))
}

async fn get_product(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Product>> {
    repo::product(&state.pool, id).await?.map(Json).ok_or_else(|| ApiError::not_found("product", id))
}

async fn list_categories(State(state): State<AppState>) -> ApiResult<Json<Vec<Category>>> {
    Ok(Json(repo::categories(&state.pool).await?))
}

#[derive(Deserialize)]
struct CreateProduct {
    sku: String,
    name: String,
    #[serde(default)]
    description: String,
    price_cents: i64,
    category: String,
    #[serde(default)]
    stock: i64,
}

fn check_text(field: &'static str, value: &str, max: usize) -> ApiResult<()> {
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        return Err(ApiError::invalid(field, format!("{field} must be 1 to {max} characters")));
    }
    Ok(())
}

fn check_price(price_cents: i64) -> ApiResult<()> {
    if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(ApiError::invalid("price_cents", format!("price_cents must be from 0 to {MAX_PRICE_CENTS}")));
    }
    Ok(())
}

async fn category_by_slug(state: &AppState, slug: &str) -> ApiResult<i64> {
    repo::category_id(&state.pool, slug.trim())
        .await?
        .ok_or_else(|| ApiError::NotFound { message: format!("category {slug:?} not found"), field: Some("category") })
}

async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    Json(body): Json<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    check_text("sku", &body.sku, 64)?;
    check_text("name", &body.name, 200)?;
    if body.description.chars().count() > 2000 {
        return Err(ApiError::invalid("description", "description is limited to 2000 characters"));
    }
    check_price(body.price_cents)?;
    inventory::repo::check_stock_value(body.stock)?;
    let category_id = category_by_slug(&state, &body.category).await?;
    let mut tx = state.pool.begin().await?;
    let new = NewProduct {
        sku: body.sku.trim(),
        name: body.name.trim(),
        description: body.description.trim(),
        price_cents: body.price_cents,
        category_id,
    };
    let id = repo::insert_product(&mut *tx, &new).await.map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::Conflict { message: format!("sku {:?} already exists", new.sku), field: Some("sku") }
        } else {
            e.into()
        }
    })?;
    inventory::repo::set_stock(&mut *tx, id, body.stock).await?;
    tx.commit().await?;
    let product = repo::product(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    tracing::info!(product_id = id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

#[derive(Deserialize)]
struct UpdateProduct {
    name: Option<String>,
    description: Option<String>,
    price_cents: Option<i64>,
    category: Option<String>,
}

async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    Json(body): Json<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    if let Some(name) = &body.name {
        check_text("name", name, 200)?;
    }
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 2000) {
        return Err(ApiError::invalid("description", "description is limited to 2000 characters"));
    }
    if let Some(price) = body.price_cents {
        check_price(price)?;
    }
    let category_id = match &body.category {
        Some(slug) => Some(category_by_slug(&state, slug).await?),
        None => None,
    };
    let changes = ProductChanges {
        name: body.name.as_deref().map(str::trim),
        description: body.description.as_deref().map(str::trim),
        price_cents: body.price_cents,
        category_id,
    };
    if !repo::update_product(&state.pool, id, &changes).await? {
        return Err(ApiError::not_found("product", id));
    }
    let product = repo::product(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    tracing::info!(product_id = id, "product updated");
    Ok(Json(product))
}

#[derive(Deserialize)]
struct CreateCategory {
    slug: String,
    name: String,
}

async fn create_category(
    State(state): State<AppState>,
    _admin: Admin,
    Json(body): Json<CreateCategory>,
) -> ApiResult<(StatusCode, Json<Category>)> {
    let slug = body.slug.trim();
    if slug.is_empty()
        || slug.len() > 64
        || !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ApiError::invalid("slug", "slug must be 1 to 64 characters of a-z, 0-9 and -"));
    }
    check_text("name", &body.name, 100)?;
    let category = repo::insert_category(&state.pool, slug, body.name.trim()).await.map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::Conflict { message: format!("category {slug:?} already exists"), field: Some("slug") }
        } else {
            e.into()
        }
    })?;
    Ok((StatusCode::CREATED, Json(category)))
}
