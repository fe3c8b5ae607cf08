//! HTTP endpoints for accounts and sessions.
//!
//! ```text
//! POST   /api/users      {email, password, name} → 201 {id, email, name}
//! POST   /api/sessions   {email, password}       → 201 {token, expires_at}
//! DELETE /api/sessions                           → 204 (logout)
//! GET    /api/users/me                           → {id, email, name}
//! PUT    /api/users/me   {name}                  → {id, email, name}
//! POST   /internal/sessions/resolve {token}          → {user, expires_at} (internal token)
//! ```
//!
//! `/internal/sessions/resolve` is how services extracted from the shop learn who calls
//! them while the sessions still live here (remote authentication, as the ASP.NET
//! System.Web adapters do it): the service passes on the caller's bearer token over an
//! authenticated internal call and caches the answer briefly.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::{self, CurrentUser, token_hash};
use super::{password, repo};
use crate::AppState;
use crate::db::now;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::Json;
use crate::{events, notifications};

/// The users routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/me", get(me).put(update_me))
        .route("/api/sessions", post(login).delete(logout))
        .route("/internal/sessions/resolve", post(resolve_session))
}

#[derive(Deserialize)]
struct Resolve {
    token: String,
}

/// Resolves a caller's session token for a service: 200 with the user and when the
/// session expires, 401 when the token is unknown or expired. The calling service must
/// present the shop's internal token.
async fn resolve_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Resolve>,
) -> ApiResult<Json<auth::ResolvedSession>> {
    auth::check_admin(&headers, state.internal_token.as_deref())?;
    repo::session(&state.pool, &token_hash(body.token.trim()))
        .await?
        .map(|(user, expires_at)| Json(auth::ResolvedSession { user, expires_at }))
        .ok_or(ApiError::Unauthorized("invalid or expired session token"))
}

#[derive(Deserialize)]
struct Register {
    email: String,
    password: String,
    name: String,
}

fn valid_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok { Ok(email) } else { Err(ApiError::invalid("email", "a valid email address is required")) }
}

fn valid_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "name must be 1 to 100 characters"));
    }
    // NUL, ESC, newlines and the like break logs, terminals and other systems' parsers.
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "name must not contain control characters"));
    }
    Ok(name.to_string())
}

async fn register(
    State(state): State<AppState>,
    Json(body): Json<Register>,
) -> ApiResult<(StatusCode, Json<repo::User>)> {
    let email = valid_email(&body.email)?;
    let name = valid_name(&body.name)?;
    let len = body.password.chars().count();
    if !(8..=128).contains(&len) {
        return Err(ApiError::invalid("password", "password must be 8 to 128 characters"));
    }
    let hash = password::hash(body.password).await?;
    // The account, its welcome message and its UserRegistered event commit together.
    let mut tx = state.pool.begin().await?;
    let user = repo::insert_user(&mut *tx, &email, &hash, &name).await.map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::Conflict { message: "an account with this email already exists".into(), field: Some("email") }
        } else {
            e.into()
        }
    })?;
    let event = events::Payload::UserRegistered { user_id: user.id, name: user.name.clone() };
    notifications::outbox::enqueue_for(&mut *tx, &event).await?;
    events::record(&mut tx, &event).await?;
    tx.commit().await?;
    tracing::info!(user_id = user.id, "registered");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct SessionCreated {
    token: String,
    expires_at: i64,
}

async fn login(
    State(state): State<AppState>,
    Json(body): Json<Login>,
) -> ApiResult<(StatusCode, Json<SessionCreated>)> {
    const WRONG: ApiError = ApiError::Unauthorized("wrong email or password");
    let email = body.email.trim().to_lowercase();
    let Some((user_id, stored)) = repo::find_credentials(&state.pool, &email).await? else {
        password::burn(body.password).await;
        return Err(WRONG);
    };
    if !password::verify(body.password, stored).await? {
        return Err(WRONG);
    }
    repo::delete_expired_sessions(&state.pool, user_id).await?;
    let token = auth::new_token();
    let expires_at = now() + state.session_ttl_secs;
    repo::insert_session(&state.pool, &token_hash(&token), user_id, expires_at).await?;
    Ok((StatusCode::CREATED, Json(SessionCreated { token, expires_at })))
}

async fn logout(State(state): State<AppState>, _user: CurrentUser, headers: HeaderMap) -> ApiResult<StatusCode> {
    repo::delete_session(&state.pool, &token_hash(auth::bearer(&headers)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(CurrentUser(user): CurrentUser) -> Json<repo::User> {
    Json(user)
}

#[derive(Deserialize)]
struct UpdateMe {
    name: String,
}

async fn update_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<UpdateMe>,
) -> ApiResult<Json<repo::User>> {
    let name = valid_name(&body.name)?;
    Ok(Json(repo::update_name(&state.pool, user.id, &name).await?))
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(valid_email(" Bob@Example.com ").unwrap(), "bob@example.com");
        for bad in ["", "bob", "@example.com", "bob@", "bob@example", "bo b@example.com", "bob@.com"] {
            assert!(valid_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
