//! HTTP endpoints for stock.
//!
//! ```text
//! GET /api/inventory?in_stock=true                 → [{product_id, stock}] (all, or only in stock)
//! GET /api/inventory/{product_id}                  → {product_id, stock}
//! PUT /api/inventory/{product_id}  (admin) {stock} → {product_id, stock}
//! ```

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::repo;
use crate::AppState;
use crate::catalog;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::product_source::ProductSource;
use crate::users::auth::Admin;

/// The inventory routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/inventory", get(list_stock))
        .route("/api/inventory/{product_id}", get(get_stock).put(set_stock))
}

#[derive(Deserialize)]
struct ListParams {
    in_stock: Option<String>,
}

/// Stock levels in bulk: what the catalog service asks instead of joining the table.
async fn list_stock(State(state): State<AppState>, Query(params): Query<ListParams>) -> ApiResult<Json<Vec<Stock>>> {
    let in_stock_only = match params.in_stock.as_deref().map(str::trim) {
        None | Some("" | "false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(_) => return Err(ApiError::invalid("in_stock", "in_stock must be true or false")),
    };
    let levels = repo::levels(&state.pool, in_stock_only).await?;
    Ok(Json(levels.into_iter().map(|(product_id, stock)| Stock { product_id, stock }).collect()))
}

#[derive(Serialize)]
struct Stock {
    product_id: i64,
    stock: i64,
}

async fn get_stock(State(state): State<AppState>, Path(product_id): Path<i64>) -> ApiResult<Json<Stock>> {
    let stock =
        repo::stock(&state.pool, product_id).await?.ok_or_else(|| ApiError::not_found("product", product_id))?;
    Ok(Json(Stock { product_id, stock }))
}

#[derive(Deserialize)]
struct SetStock {
    stock: i64,
}

async fn set_stock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(product_id): Path<i64>,
    Json(body): Json<SetStock>,
) -> ApiResult<Json<Stock>> {
    repo::check_stock_value(body.stock)?;
    let exists = match state.catalog.reads() {
        ProductSource::Local => catalog::repo::product(&state.pool, product_id).await?.is_some(),
        ProductSource::Service(catalog) => catalog.product(product_id).await?.is_some(),
    };
    if !exists {
        return Err(ApiError::not_found("product", product_id));
    }
    repo::set_stock(&state.pool, product_id, body.stock).await?;
    tracing::info!(product_id, stock = body.stock, "stock adjusted");
    Ok(Json(Stock { product_id, stock: body.stock }))
}
