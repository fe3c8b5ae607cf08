//! HTTP endpoints for checkout and order history.
//!
//! ```text
//! POST /api/orders {card_number}  (optional Idempotency-Key) → 201 order | 402 declined | 409 out of stock
//! GET  /api/orders                                           → [order], newest first
//! GET  /api/orders/{id}                                      → order (the caller's only)
//! POST /api/orders/{id}/cancel                               → order, stock back, payment refunded
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::checkout::{self, Outcome};
use super::repo::{self, Order};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::users::auth::CurrentUser;

/// The order routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(place).get(list))
        .route("/api/orders/{id}", get(detail))
        .route("/api/orders/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
struct PlaceOrder {
    card_number: String,
}

async fn place(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "Idempotency-Key must be ASCII"))?),
        None => None,
    };
    Ok(match checkout::checkout(&state, user.id, &body.card_number, key).await? {
        Outcome::Created(order) => (StatusCode::CREATED, Json(order)).into_response(),
        Outcome::Replayed(order) => {
            let mut response = (StatusCode::CREATED, Json(order)).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            response
        }
    })
}

async fn list(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<Vec<Order>>> {
    Ok(Json(repo::for_user(&state.pool, user.id).await?))
}

async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Order>> {
    repo::find(&state.pool, user.id, id).await?.map(Json).ok_or_else(|| ApiError::not_found("order", id))
}

async fn cancel(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Order>> {
    Ok(Json(checkout::cancel(&state, user.id, id).await?))
}
