//! HTTP endpoints for the caller's cart.
//!
//! ```text
//! GET    /api/cart                                       → {items, total_cents}
//! POST   /api/cart/items {product_id, quantity}          → 201 cart
//! PUT    /api/cart/items/{product_id} {quantity}         → cart
//! DELETE /api/cart/items/{product_id}                    → cart
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use super::repo::{self, CartLine, MAX_LINE_QUANTITY};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::product_source::ProductSource;
use crate::users::auth::CurrentUser;

/// The cart routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/cart", get(view))
        .route("/api/cart/items", post(add_item))
        .route("/api/cart/items/{product_id}", put(set_quantity).delete(remove_item))
}

/// A cart as clients see it.
#[derive(Serialize)]
pub struct CartView {
    items: Vec<LineView>,
    total_cents: i64,
}

#[derive(Serialize)]
struct LineView {
    #[serde(flatten)]
    line: CartLine,
    line_total_cents: i64,
}

impl CartView {
    /// Totals a cart's lines.
    pub fn from_lines(lines: Vec<CartLine>) -> Self {
        let items: Vec<LineView> = lines
            .into_iter()
            .map(|line| LineView { line_total_cents: line.unit_price_cents * line.quantity, line })
            .collect();
        let total_cents = items.iter().map(|l| l.line_total_cents).sum();
        Self { items, total_cents }
    }
}

async fn load(state: &AppState, user_id: i64) -> ApiResult<Json<CartView>> {
    let lines = match state.catalog.reads() {
        ProductSource::Local => repo::lines(&state.pool, user_id).await?,
        ProductSource::Service(catalog) => catalog
            .priced(&repo::items(&state.pool, user_id).await?)
            .await?
            .into_iter()
            .map(|(product_id, quantity, p)| CartLine {
                product_id,
                name: p.name,
                unit_price_cents: p.price_cents,
                quantity,
            })
            .collect(),
    };
    Ok(Json(CartView::from_lines(lines)))
}

fn check_quantity(quantity: i64) -> ApiResult<()> {
    if (1..=MAX_LINE_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(ApiError::invalid("quantity", format!("quantity must be from 1 to {MAX_LINE_QUANTITY}")))
    }
}

async fn view(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<CartView>> {
    load(&state, user.id).await
}

#[derive(Deserialize)]
struct AddItem {
    product_id: i64,
    quantity: i64,
}

async fn add_item(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<AddItem>,
) -> ApiResult<(StatusCode, Json<CartView>)> {
    check_quantity(body.quantity)?;
    let exists = match state.catalog.reads() {
        ProductSource::Local => repo::product_exists(&state.pool, body.product_id).await?,
        ProductSource::Service(catalog) => catalog.product(body.product_id).await?.is_some(),
    };
    if !exists {
        return Err(ApiError::NotFound {
            message: format!("product {} not found", body.product_id),
            field: Some("product_id"),
        });
    }
    if !repo::add(&state.pool, user.id, body.product_id, body.quantity).await? {
        return Err(ApiError::invalid("quantity", format!("a cart line holds at most {MAX_LINE_QUANTITY} units")));
    }
    Ok((StatusCode::CREATED, load(&state, user.id).await?))
}

#[derive(Deserialize)]
struct SetQuantity {
    quantity: i64,
}

async fn set_quantity(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(product_id): Path<i64>,
    Json(body): Json<SetQuantity>,
) -> ApiResult<Json<CartView>> {
    check_quantity(body.quantity)?;
    if !repo::set_quantity(&state.pool, user.id, product_id, body.quantity).await? {
        return Err(ApiError::not_found("cart item for product", product_id));
    }
    load(&state, user.id).await
}

async fn remove_item(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(product_id): Path<i64>,
) -> ApiResult<Json<CartView>> {
    if !repo::remove(&state.pool, user.id, product_id).await? {
        return Err(ApiError::not_found("cart item for product", product_id));
    }
    load(&state, user.id).await
}
