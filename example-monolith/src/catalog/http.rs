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

use super::contract::{
    CreateCategory, CreateProduct, ListParams, ProductPage, UpdateProduct, duplicate_category, duplicate_sku,
    unknown_category,
};
use super::repo::{self, Category, NewProduct, Product, ProductChanges};
use super::search;
use crate::AppState;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};
use crate::inventory;
use crate::users::auth::Admin;

/// The catalog routes.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/products/{id}", get(get_product).put(update_product))
        .route("/api/categories", get(list_categories).post(create_category))
        .route_layer(axum::middleware::from_fn_with_state(state, refuse_when_retired))
}

/// Once the catalog has moved out (`retired` switch), every catalog endpoint of the
/// shop answers 410 Gone instead of touching tables that are no longer its own.
async fn refuse_when_retired(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.catalog.retired() {
        return ApiError::Gone("the catalog has moved to the catalog service".into()).into_response();
    }
    next.run(request).await
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

async fn category_by_slug(state: &AppState, slug: &str) -> ApiResult<i64> {
    repo::category_id(&state.pool, slug).await?.ok_or_else(|| unknown_category(slug))
}

async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    Json(body): Json<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let body = body.validate()?;
    inventory::repo::check_stock_value(body.stock)?;
    let category_id = category_by_slug(&state, &body.category).await?;
    let mut tx = state.pool.begin().await?;
    let new = NewProduct {
        sku: &body.sku,
        name: &body.name,
        description: &body.description,
        price_cents: body.price_cents,
        category_id,
    };
    let id = repo::insert_product(&mut *tx, &new)
        .await
        .map_err(|e| if is_unique_violation(&e) { duplicate_sku(&body.sku) } else { e.into() })?;
    inventory::repo::set_stock(&mut *tx, id, body.stock).await?;
    write_through_product(&state, &mut tx, id).await?;
    tx.commit().await?;
    let product = repo::product(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    tracing::info!(product_id = id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    Json(body): Json<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    let body = body.validate()?;
    let category_id = match &body.category {
        Some(slug) => Some(category_by_slug(&state, slug).await?),
        None => None,
    };
    let changes = ProductChanges {
        name: body.name.as_deref(),
        description: body.description.as_deref(),
        price_cents: body.price_cents,
        category_id,
    };
    let mut tx = state.pool.begin().await?;
    if !repo::update_product(&mut *tx, id, &changes).await? {
        return Err(ApiError::not_found("product", id));
    }
    write_through_product(&state, &mut tx, id).await?;
    tx.commit().await?;
    let product = repo::product(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    tracing::info!(product_id = id, "product updated");
    Ok(Json(product))
}

async fn create_category(
    State(state): State<AppState>,
    _admin: Admin,
    Json(body): Json<CreateCategory>,
) -> ApiResult<(StatusCode, Json<Category>)> {
    let body = body.validate()?;
    let mut tx = state.pool.begin().await?;
    let category = repo::insert_category(&mut *tx, &body.slug, &body.name)
        .await
        .map_err(|e| if is_unique_violation(&e) { duplicate_category(&body.slug) } else { e.into() })?;
    if let Some(service) = state.catalog.write_through() {
        service.push_category(&category).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(category)))
}

/// While the catalog service holds a copy, every product write goes through to it
/// inside the local transaction: when the service does not take it, the local write is
/// rolled back too and the client gets a 503, so the service never misses a change.
/// The one gap: a local commit that fails after the push leaves the service ahead;
/// the parity check names such a row and a backfill repairs it. (The push holds the
/// shop's write lock for its duration, at most the client's 5 s timeout.)
async fn write_through_product(
    state: &AppState,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
) -> ApiResult<()> {
    if let Some(service) = state.catalog.write_through() {
        let row = repo::product_row(&mut **tx, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
        service.push_product(&row).await?;
    }
    Ok(())
}
