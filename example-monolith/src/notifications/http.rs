//! HTTP endpoints for a user's notifications.
//!
//! ```text
//! GET  /api/notifications            → [notification], newest first
//! POST /api/notifications/{id}/read  → 204
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::outbox::{self, Notification};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::users::auth::CurrentUser;

/// The notification routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/notifications", get(list)).route("/api/notifications/{id}/read", post(mark_read))
}

async fn list(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Json<Vec<Notification>>> {
    Ok(Json(outbox::for_user(&state.pool, user.id).await?))
}

async fn mark_read(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if outbox::mark_read(&state.pool, user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("notification", id))
    }
}
