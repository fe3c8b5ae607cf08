//! The service's HTTP API.
//!
//! ```text
//! POST /api/charges {order_id, amount_cents, card_number}  Idempotency-Key: K
//!        → 201 charge (200: the same key again) | 402 declined | 409 key cancelled | 400 not a card
//! GET  /api/charges/{key}                                   → charge | 404
//! POST /api/charges/{key}/cancel                            → charge (refunded | void | declined)
//! GET  /internal/stats                                      → {by_status, orders_charged_twice, captured_cents}
//! PUT  /internal/faults {"delay_ms": N}                     the card gateway answers N ms late
//! GET  /healthz
//! ```
//!
//! Every endpoint but `/healthz` and `/internal/stats` wants the service's bearer token
//! (`PAYMENTS_ADMIN_TOKEN`; with none set they refuse everyone): charge keys are guessable
//! (`order-{id}`), and only the shop may charge or refund.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use shop::error::{ApiError, ApiResult};
use shop::extract::{Json, Path};
use shop::payments::remote::{ChargeRecord, ChargeRequest};
use shop::users::auth::check_admin;

use crate::ServiceState;
use crate::charges::{self, ChargeError, Charged};

/// Every route of the service.
pub fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/charges", post(charge))
        .route("/api/charges/{key}", get(find))
        .route("/api/charges/{key}/cancel", post(cancel))
        .route("/internal/stats", get(stats))
        .route("/internal/faults", put(faults))
        .fallback(shop::server::no_endpoint)
        .with_state(state)
}

async fn healthz(State(state): State<ServiceState>) -> (StatusCode, &'static str) {
    shop::server::healthz(&state.pool).await
}

const MAX_KEY_LEN: usize = 255;

async fn charge(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Json(body): Json<ChargeRequest>,
) -> ApiResult<(StatusCode, Json<ChargeRecord>)> {
    check_admin(&headers, state.admin_token.as_deref())?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| ApiError::invalid("Idempotency-Key", "every charge needs an Idempotency-Key of 1 to 255 bytes"))?
        .to_string();
    if body.amount_cents <= 0 {
        return Err(ApiError::invalid("amount_cents", "amount_cents must be positive"));
    }
    let delay = state.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match charges::charge(&state.pool, &key, body.order_id, body.amount_cents, &body.card_number).await {
        Ok(Charged::Captured { record, new }) => {
            Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(record)))
        }
        Ok(Charged::Declined(reason)) => Err(ApiError::PaymentDeclined(reason)),
        Ok(Charged::InProgress) => {
            Err(ApiError::Unavailable(format!("a charge under key {key} is being made; ask again")))
        }
        Ok(Charged::Cancelled(record)) => Err(ApiError::Conflict {
            message: format!("charge key {key} is {}: nothing is charged", record.status),
            field: None,
        }),
        Err(ChargeError::Invalid(m)) => Err(ApiError::invalid("card_number", m)),
        Err(ChargeError::Database(e)) => Err(e.into()),
        Err(ChargeError::Internal(m)) => Err(ApiError::Internal(m)),
    }
}

async fn find(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<Json<ChargeRecord>> {
    check_admin(&headers, state.admin_token.as_deref())?;
    charges::find(&state.pool, &key).await?.map(Json).ok_or_else(|| ApiError::not_found("charge", &key))
}

async fn cancel(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<Json<ChargeRecord>> {
    check_admin(&headers, state.admin_token.as_deref())?;
    Ok(Json(charges::cancel(&state.pool, &key).await?))
}

async fn stats(State(state): State<ServiceState>) -> ApiResult<Json<Value>> {
    let t = charges::tally(&state.pool).await?;
    Ok(Json(json!({
        "by_status": t.by_status.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
        "orders_charged_twice": t.orders_charged_twice,
        "captured_cents": t.captured_cents,
        "delay_ms": state.faults.delay().as_millis() as u64,
    })))
}

#[derive(Deserialize)]
struct SetFaults {
    delay_ms: u64,
}

async fn faults(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Json(body): Json<SetFaults>,
) -> ApiResult<Json<Value>> {
    check_admin(&headers, state.admin_token.as_deref())?;
    state.faults.set_delay(Duration::from_millis(body.delay_ms.min(60_000)));
    tracing::warn!(delay_ms = body.delay_ms, "fault injected: charges answer late");
    Ok(Json(json!({"delay_ms": state.faults.delay().as_millis() as u64})))
}
