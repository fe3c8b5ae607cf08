//! The service's HTTP API: the shop's notification endpoints, same contract, and the
//! endpoint the outbox relay delivers events to.
//!
//! ```text
//! GET  /api/notifications              → [notification], newest first (the caller's only)
//! POST /api/notifications/{id}/read    → 204
//! POST /internal/events  [event, …]    → {processed, duplicates}   (events token)
//! GET  /internal/stats                 → {by_kind, processed_events, duplicated_events, out_of_order, …}
//! GET  /healthz
//! ```

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shop::error::{ApiError, ApiResult};
use shop::events::Event;
use shop::extract::{Json, Path};
use shop::notifications::outbox::Notification;
use shop::users::auth::check_admin;

use crate::ServiceState;
use crate::consumer;
use crate::identity::Caller;

/// Every route of the service.
pub fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/notifications", get(list))
        .route("/api/notifications/{id}/read", post(mark_read))
        .route("/internal/events", post(events))
        .route("/internal/stats", get(stats))
        .fallback(shop::server::no_endpoint)
        .with_state(state)
}

async fn healthz(State(state): State<ServiceState>) -> (StatusCode, &'static str) {
    shop::server::healthz(&state.pool).await
}

async fn list(State(state): State<ServiceState>, Caller(user): Caller) -> ApiResult<Json<Vec<Notification>>> {
    let rows = sqlx::query_as::<_, Notification>(
        "SELECT id, kind, subject, body, status, created_at FROM notifications WHERE user_id = $1 ORDER BY id DESC",
    )
    .bind(user.id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

async fn mark_read(
    State(state): State<ServiceState>,
    Caller(user): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query("UPDATE notifications SET status = 'read' WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user.id)
        .execute(&state.pool)
        .await?;
    if done.rows_affected() == 1 { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found("notification", id)) }
}

async fn events(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    Json(batch): Json<Vec<Event>>,
) -> ApiResult<Json<consumer::Consumed>> {
    check_admin(&headers, state.events_token.as_deref())?;
    Ok(Json(consumer::consume(&state.pool, &state.stats, &batch).await?))
}

async fn stats(State(state): State<ServiceState>) -> ApiResult<Json<Value>> {
    let tally = consumer::tally(&state.pool).await?;
    Ok(Json(json!({
        "by_kind": tally.by_kind.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
        "processed_events": tally.processed_events,
        "duplicated_events": tally.duplicated_events,
        "out_of_order": tally.out_of_order,
        "deliveries_processed": state.stats.processed.load(Ordering::Relaxed),
        "deliveries_duplicate": state.stats.duplicates.load(Ordering::Relaxed),
        "sessions_resolved_by_the_shop": state.identity.asked(),
    })))
}
