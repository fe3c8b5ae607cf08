//! The service's HTTP API: the shop's catalog endpoints, same contract, plus the
//! replication endpoints the shop writes through while both copies exist.
//!
//! ```text
//! GET  /api/products?category=&q=&in_stock=&page=&per_page=   → {items, page, per_page, total}
//! GET  /api/products/{id} · GET /api/categories
//! POST /api/products · PUT /api/products/{id} · POST /api/categories        (admin)
//! PUT  /internal/categories/{id} {id, slug, name}                          (admin) upsert as given
//! PUT  /internal/products/{id} {id, sku, name, description, price_cents, category_id, created_at, updated_at}
//! GET  /healthz
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use shop::catalog::contract::{
    CreateCategory, CreateProduct, ListParams, ProductPage, UpdateProduct, duplicate_category, duplicate_sku,
    unknown_category,
};
use shop::catalog::repo::{self as shared, Category, NewProduct, Product, ProductChanges, ProductRow};
use shop::error::{ApiError, ApiResult, is_unique_violation};
use shop::extract::{Json, Path, Query};
use shop::inventory::repo::check_stock_value;
use shop::users::auth::check_admin;

use crate::ServiceState;
use crate::repo;

/// Every route of the service.
pub fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/products/{id}", get(get_product).put(update_product))
        .route("/api/categories", get(list_categories).post(create_category))
        .route("/internal/categories/{id}", put(replicate_category))
        .route("/internal/products/{id}", put(replicate_product))
        .fallback(shop::server::no_endpoint)
        .with_state(state)
}

async fn healthz(State(state): State<ServiceState>) -> (StatusCode, &'static str) {
    shop::server::healthz(&state.pool).await
}

fn admin(state: &ServiceState, headers: &HeaderMap) -> ApiResult<()> {
    check_admin(headers, state.admin_token.as_deref()).map(|_| ())
}

async fn list_products(
    State(state): State<ServiceState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ProductPage>> {
    let query = params.validate()?;
    let in_stock = if query.in_stock { Some(state.inventory.in_stock_ids().await?) } else { None };
    Ok(Json(repo::search(&state.pool, &query, in_stock.as_deref()).await?))
}

async fn get_product(State(state): State<ServiceState>, Path(id): Path<i64>) -> ApiResult<Json<Product>> {
    shared::product(&state.pool, id).await?.map(Json).ok_or_else(|| ApiError::not_found("product", id))
}

async fn list_categories(State(state): State<ServiceState>) -> ApiResult<Json<Vec<Category>>> {
    Ok(Json(shared::categories(&state.pool).await?))
}

async fn category_by_slug(state: &ServiceState, slug: &str) -> ApiResult<i64> {
    shared::category_id(&state.pool, slug).await?.ok_or_else(|| unknown_category(slug))
}

async fn create_product(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Json(body): Json<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    admin(&state, &headers)?;
    let body = body.validate()?;
    check_stock_value(body.stock)?;
    let category_id = category_by_slug(&state, &body.category).await?;
    let mut tx = state.pool.begin().await?;
    let new = NewProduct {
        sku: &body.sku,
        name: &body.name,
        description: &body.description,
        price_cents: body.price_cents,
        category_id,
    };
    let id = shared::insert_product(&mut *tx, &new)
        .await
        .map_err(|e| if is_unique_violation(&e) { duplicate_sku(&body.sku) } else { e.into() })?;
    // The stock row lives with inventory: create it before committing, so a product
    // never exists here without one there.
    state.inventory.set_stock(id, body.stock).await?;
    tx.commit().await?;
    let product = shared::product(&state.pool, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    Ok((StatusCode::CREATED, Json(product)))
}

async fn update_product(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    admin(&state, &headers)?;
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
    if !shared::update_product(&state.pool, id, &changes).await? {
        return Err(ApiError::not_found("product", id));
    }
    shared::product(&state.pool, id).await?.map(Json).ok_or_else(|| ApiError::not_found("product", id))
}

async fn create_category(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Json(body): Json<CreateCategory>,
) -> ApiResult<(StatusCode, Json<Category>)> {
    admin(&state, &headers)?;
    let body = body.validate()?;
    let category = shared::insert_category(&state.pool, &body.slug, &body.name)
        .await
        .map_err(|e| if is_unique_violation(&e) { duplicate_category(&body.slug) } else { e.into() })?;
    Ok((StatusCode::CREATED, Json(category)))
}

fn same_id(path_id: i64, body_id: i64) -> ApiResult<()> {
    if path_id == body_id { Ok(()) } else { Err(ApiError::invalid("id", "the body's id differs from the path's")) }
}

async fn replicate_category(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(row): Json<Category>,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    same_id(id, row.id)?;
    let mut tx = state.pool.begin().await?;
    repo::upsert_category(&mut tx, &row).await?;
    repo::advance_id_sequences(&mut tx, state.dialect).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replicate_product(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(row): Json<ProductRow>,
) -> ApiResult<StatusCode> {
    admin(&state, &headers)?;
    same_id(id, row.id)?;
    let mut tx = state.pool.begin().await?;
    repo::upsert_product(&mut tx, &row).await?;
    repo::advance_id_sequences(&mut tx, state.dialect).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
