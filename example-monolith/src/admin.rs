//! The shop's operations endpoints: the payments switch (where checkout charges cards)
//! and the metrics.
//!
//! ```text
//! GET /api/admin/payments                                   → {via, url, breaker, in_flight}
//! PUT /api/admin/payments {"via": "service", "url": "…"}   → charges go to the payments service
//! PUT /api/admin/payments {"via": "local"}                  → back to the in-process gateway
//! GET /metrics                                              → Prometheus text: the payments guard, the outbox
//! ```
//!
//! The guard's settings can be given with the switch (`timeout_ms` 1–60000, `attempts`
//! 1–10, `failure_threshold` 1–1000, `open_for_ms` 1–3600000, `max_concurrent` 1–10000);
//! the defaults are [`GuardConfig::default`]. `token` is the bearer token the payments
//! service wants.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::payments::guard::GuardConfig;
use crate::payments::remote::PaymentsClient;
use crate::users::auth::Admin;

/// The payments switch and `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/payments", get(show).put(switch)).route("/metrics", get(metrics))
}

#[derive(Deserialize)]
struct Switch {
    via: String,
    url: Option<String>,
    token: Option<String>,
    timeout_ms: Option<u64>,
    attempts: Option<u32>,
    failure_threshold: Option<u32>,
    open_for_ms: Option<u64>,
    max_concurrent: Option<usize>,
}

fn view(state: &AppState) -> Value {
    match state.payments.service() {
        None => json!({"via": "local"}),
        Some(c) => {
            let cfg = c.guard().config();
            json!({
                "via": "service",
                "url": c.base_url(),
                "breaker": c.guard().state().as_str(),
                "in_flight": c.guard().in_flight(),
                "timeout_ms": cfg.timeout.as_millis() as u64,
                "attempts": cfg.attempts,
                "failure_threshold": cfg.failure_threshold,
                "open_for_ms": cfg.open_for.as_millis() as u64,
                "max_concurrent": cfg.max_concurrent,
            })
        }
    }
}

async fn show(State(state): State<AppState>, _admin: Admin) -> Json<Value> {
    Json(view(&state))
}

async fn switch(State(state): State<AppState>, _admin: Admin, Json(body): Json<Switch>) -> ApiResult<Json<Value>> {
    match body.via.as_str() {
        "local" => state.payments.set(None),
        "service" => {
            let url = body.url.filter(|u| !u.is_empty()).ok_or_else(|| ApiError::invalid("url", "url is required"))?;
            let d = GuardConfig::default();
            let within = |field: &'static str, v: u64, lo: u64, hi: u64| {
                if (lo..=hi).contains(&v) {
                    Ok(v)
                } else {
                    Err(ApiError::invalid(field, format!("{field} must be {lo} to {hi}")))
                }
            };
            let config = GuardConfig {
                timeout: match body.timeout_ms {
                    Some(ms) => Duration::from_millis(within("timeout_ms", ms, 1, 60_000)?),
                    None => d.timeout,
                },
                attempts: match body.attempts {
                    Some(n) => within("attempts", n.into(), 1, 10)? as u32,
                    None => d.attempts,
                },
                failure_threshold: match body.failure_threshold {
                    Some(n) => within("failure_threshold", n.into(), 1, 1_000)? as u32,
                    None => d.failure_threshold,
                },
                open_for: match body.open_for_ms {
                    Some(ms) => Duration::from_millis(within("open_for_ms", ms, 1, 3_600_000)?),
                    None => d.open_for,
                },
                max_concurrent: match body.max_concurrent {
                    Some(n) => within("max_concurrent", n as u64, 1, 10_000)? as usize,
                    None => d.max_concurrent,
                },
                ..d
            };
            state.payments.set(Some(PaymentsClient::new(&url, body.token, config)));
            tracing::info!(%url, "charges now go to the payments service");
        }
        other => return Err(ApiError::invalid("via", format!("via must be \"local\" or \"service\", not {other:?}"))),
    }
    Ok(Json(view(&state)))
}

async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut out = String::new();
    if let Some(c) = state.payments.service() {
        out += &c.guard().render_metrics("shop_payments");
        out += &c.cancel_guard().render_metrics("shop_payments_cancel");
    }
    out += "# TYPE shop_outbox_events gauge\n";
    for (topic, recorded, published) in crate::events::counts(&state.pool).await? {
        out += &format!("shop_outbox_events{{topic=\"{topic}\",state=\"published\"}} {published}\n");
        out += &format!("shop_outbox_events{{topic=\"{topic}\",state=\"pending\"}} {}\n", recorded - published);
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
