//! The admin API (axum, on its own listener and runtime): health, routes, stage changes with
//! write-back, reload, shadow diffs, the audit log and Prometheus metrics. Everything but
//! `/healthz` needs `Authorization: Bearer <token>` when a token is set.
//!
//! Stage changes are audited with the caller's `x-ficus-actor` header (`ficus stage` sends the
//! user's name) and address: the bearer token is shared, so the actor is what the caller says.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::error::ProxyError;
use crate::state::{Change, Reloaded, Shared};

/// Request header naming who asks for a stage change (for the audit log).
pub const ACTOR_HEADER: &str = "x-ficus-actor";

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
}

/// The body of `PUT /routes/{name}`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageChange {
    /// monolith | shadow | canary | service
    pub stage: String,
    /// Share of cohorts for canary (0..=100); unchanged when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Leave shadow even when its comparisons do not allow it yet (logged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With a shared store: make the change only if the route is still at this version (as
    /// `GET /routes` shows it); another change first gives 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The admin API's router.
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    let state = AdminState { shared, token: token.map(Arc::from) };
    let protected = Router::new()
        .route("/routes", get(list_routes))
        .route("/routes/{name}", put(set_stage).get(get_route))
        .route("/reload", post(reload))
        .route("/diffs", get(diffs))
        .route("/audit", get(audit))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new().route("/healthz", get(healthz)).merge(protected).with_state(state)
}

/// 200 while the proxy serves; with a shared store that does not answer, still 200 (the proxy
/// serves its last state, so a load balancer keeps it) but the body says `degraded`.
async fn healthz(State(state): State<AdminState>) -> &'static str {
    match state.shared.store_up() {
        Some(false) => "degraded: the state store is unreachable; serving the last state, changes refused\n",
        _ => "ok\n",
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<AdminState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (FICUS_ADMIN_TOKEN)");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            return r;
        }
    }
    next.run(request).await
}

async fn list_routes(State(state): State<AdminState>) -> Response {
    axum::Json(json!({ "routes": state.shared.routes(), "progress": state.shared.progress() })).into_response()
}

async fn get_route(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.shared.route(&name) {
        Some(r) => axum::Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, ProxyError::UnknownRoute(name)),
    }
}

fn status_of(e: &ProxyError) -> StatusCode {
    match e {
        ProxyError::UnknownRoute(_) => StatusCode::NOT_FOUND,
        ProxyError::InvalidChange(_) => StatusCode::BAD_REQUEST,
        ProxyError::Config(_) | ProxyError::Gate(_) | ProxyError::Conflict(_) => StatusCode::CONFLICT,
        ProxyError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Who asks, as the audit log names it: the `x-ficus-actor` header (printable, at most 64
/// characters) and the caller's address.
fn actor(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    let said = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().filter(|c| !c.is_control()).take(64).collect::<String>())
        .filter(|v| !v.trim().is_empty());
    let from = peer.map_or_else(String::new, |p| format!(" from {}", p.ip()));
    match said {
        Some(who) => format!("{} (admin API{from})", who.trim()),
        None => format!("admin API{from}"),
    }
}

async fn set_stage(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: StageChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body must be {{\"stage\": …, \"percent\": …}}: {e}")),
    };
    let reason = match crate::audit::clean_reason(body.reason.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let change = match Change::parse(&body.stage, body.percent) {
        Ok(c) => c
            .force(body.force)
            .by(actor(&headers, extensions.get::<ConnectInfo<SocketAddr>>().map(|p| p.0)))
            .why(reason)
            .at_version(body.version),
        Err(e) => return error(status_of(&e), e),
    };
    let shared = state.shared.clone();
    // File I/O: off the async threads.
    let result = tokio::task::spawn_blocking(move || shared.set_stage(&name, change)).await;
    match result {
        Ok(Ok(route)) => {
            tracing::info!(route = %route.name, stage = %route.stage, percent = route.percent, "stage changed");
            axum::Json(route).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!("stage change refused: {e}");
            error(status_of(&e), e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn reload(State(state): State<AdminState>) -> Response {
    let shared = state.shared.clone();
    match tokio::task::spawn_blocking(move || shared.reload("POST /reload")).await {
        Ok(Ok(outcome)) => {
            if outcome == Reloaded::Applied {
                tracing::info!("config reloaded (POST /reload)");
            }
            axum::Json(json!({ "reloaded": outcome == Reloaded::Applied })).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!("config refused, keeping the last good one: {e}");
            let status = if matches!(e, ProxyError::Config(_)) { StatusCode::BAD_REQUEST } else { status_of(&e) };
            error(status, e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.shared.render_metrics()).into_response()
}

/// The query of `GET /diffs`.
#[derive(Debug, Deserialize)]
struct DiffsQuery {
    route: Option<String>,
}

async fn diffs(State(state): State<AdminState>, Query(q): Query<DiffsQuery>) -> Response {
    let Some(name) = q.route else {
        return error(StatusCode::BAD_REQUEST, "give the route: GET /diffs?route=NAME");
    };
    match state.shared.diffs(&name) {
        Some(report) => axum::Json(report).into_response(),
        None => error(StatusCode::NOT_FOUND, ProxyError::UnknownRoute(name)),
    }
}

/// The query of `GET /audit`.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    route: Option<String>,
}

/// `GET /audit[?route=NAME]`: the last stage changes, oldest first.
async fn audit(State(state): State<AdminState>, Query(q): Query<AuditQuery>) -> Response {
    let shared = state.shared.clone();
    match tokio::task::spawn_blocking(move || shared.audit_entries(q.route.as_deref())).await {
        Ok(Ok(entries)) => axum::Json(json!({ "entries": entries })).into_response(),
        Ok(Err(e)) => error(status_of(&e), e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
