//! The one client of the admin API: `ficus routes`, `ficus stage`, `ficus diffs`,
//! `ficus audit` and `ficus walkthrough` all use it. Async calls that return typed answers
//! or the server's error message; the CLI runs them on a small runtime of its own.

use crate::admin::{ACTOR_HEADER, StageChange};
use crate::audit::Entry;
use crate::error::ProxyError;
use crate::shadow::DiffReport;
use crate::state::{Progress, RouteView};

/// A client of one proxy's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    actor: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// `base` is like `http://127.0.0.1:9901`; `token` is sent as a bearer token.
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client without TLS always builds");
        AdminClient { base: base.trim_end_matches('/').to_owned(), token, actor: None, http }
    }

    /// Names who makes the calls (sent as `x-ficus-actor`, recorded in the audit log).
    pub fn actor(mut self, actor: Option<String>) -> AdminClient {
        self.actor = actor;
        self
    }

    fn unexpected(&self, path: &str, e: serde_json::Error) -> ProxyError {
        ProxyError::Server(format!("unexpected answer from {}{path}: {e}", self.base))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProxyError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: reqwest::Error| ProxyError::Unreachable { url: url.clone(), message: e.to_string() };
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = &self.actor {
            req = req.header(ACTOR_HEADER, a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        if status.is_success() {
            Ok(value)
        } else {
            let message = value.get("error").and_then(|e| e.as_str()).map(str::to_owned).unwrap_or(text);
            Err(ProxyError::Admin { status: status.as_u16(), message })
        }
    }

    /// `GET /routes`: the routes and the migration's progress.
    pub async fn routes(&self) -> Result<(Vec<RouteView>, Progress), ProxyError> {
        let v = self.call(reqwest::Method::GET, "/routes", None).await?;
        let routes = serde_json::from_value(v.get("routes").cloned().unwrap_or_default())
            .map_err(|e| self.unexpected("/routes", e))?;
        let progress = serde_json::from_value(v.get("progress").cloned().unwrap_or_default())
            .map_err(|e| self.unexpected("/routes", e))?;
        Ok((routes, progress))
    }

    /// `PUT /routes/{name}`.
    pub async fn set_stage(&self, route: &str, change: &StageChange) -> Result<RouteView, ProxyError> {
        let body = serde_json::to_value(change).map_err(|e| ProxyError::Server(e.to_string()))?;
        let path = format!("/routes/{}", encode(route));
        let v = self.call(reqwest::Method::PUT, &path, Some(body)).await?;
        serde_json::from_value(v).map_err(|e| self.unexpected(&path, e))
    }

    /// `GET /audit[?route=NAME]`: the last stage changes, oldest first.
    pub async fn audit(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError> {
        let path = route.map_or_else(|| "/audit".to_owned(), |r| format!("/audit?route={}", encode(r)));
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        serde_json::from_value(v.get("entries").cloned().unwrap_or_default()).map_err(|e| self.unexpected(&path, e))
    }

    /// `GET /diffs?route=NAME`: the shadow comparison report of a route.
    pub async fn diffs(&self, route: &str) -> Result<DiffReport, ProxyError> {
        let path = format!("/diffs?route={}", encode(route));
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        serde_json::from_value(v).map_err(|e| self.unexpected(&path, e))
    }

    /// `POST /reload`.
    pub async fn reload(&self) -> Result<bool, ProxyError> {
        let v = self.call(reqwest::Method::POST, "/reload", None).await?;
        Ok(v.get("reloaded").and_then(|r| r.as_bool()).unwrap_or(false))
    }
}

/// Percent-encodes a route name for a path segment or a query value.
fn encode(route: &str) -> String {
    route
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
