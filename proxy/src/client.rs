//! A small client of the admin API, for `ficus routes`, `ficus stage` and `ficus diffs`: blocking calls that
//! return typed routes or the server's error message.

use serde_json::json;

use crate::error::ProxyError;
use crate::shadow::DiffReport;
use crate::state::RouteView;

/// A client of one proxy's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// `base` is like `http://127.0.0.1:9901`; `token` is sent as a bearer token.
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient { base: base.trim_end_matches('/').to_owned(), token }
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProxyError> {
        let url = format!("{}{path}", self.base);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ProxyError::Server(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async {
            let unreachable = |e: reqwest::Error| ProxyError::Unreachable { url: url.clone(), message: e.to_string() };
            let client =
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(unreachable)?;
            let mut req = client.request(method, &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.map_err(unreachable)?;
            let status = resp.status();
            let text = resp.text().await.map_err(unreachable)?;
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            if status.is_success() {
                Ok(value)
            } else {
                let message = value.get("error").and_then(|e| e.as_str()).map(str::to_owned).unwrap_or(text);
                Err(ProxyError::Admin { status: status.as_u16(), message })
            }
        })
    }

    /// `GET /routes`.
    pub fn routes(&self) -> Result<Vec<RouteView>, ProxyError> {
        let v = self.call(reqwest::Method::GET, "/routes", None)?;
        serde_json::from_value(v.get("routes").cloned().unwrap_or_default())
            .map_err(|e| ProxyError::Server(format!("unexpected answer from {}/routes: {e}", self.base)))
    }

    /// `PUT /routes/{name}`; `force` leaves shadow even when its comparisons do not allow it.
    pub fn set_stage(
        &self,
        route: &str,
        stage: &str,
        percent: Option<f64>,
        force: bool,
    ) -> Result<RouteView, ProxyError> {
        let mut body = json!({ "stage": stage });
        if force {
            body["force"] = json!(true);
        }
        if let Some(p) = percent {
            body["percent"] = json!(p);
        }
        let v = self.call(reqwest::Method::PUT, &format!("/routes/{route}"), Some(body))?;
        serde_json::from_value(v).map_err(|e| ProxyError::Server(format!("unexpected answer from {}: {e}", self.base)))
    }

    /// `GET /diffs?route=NAME`: the shadow comparison report of a route.
    pub fn diffs(&self, route: &str) -> Result<DiffReport, ProxyError> {
        let encoded: String = route
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let v = self.call(reqwest::Method::GET, &format!("/diffs?route={encoded}"), None)?;
        serde_json::from_value(v).map_err(|e| ProxyError::Server(format!("unexpected answer from {}: {e}", self.base)))
    }

    /// `POST /reload`.
    pub fn reload(&self) -> Result<bool, ProxyError> {
        let v = self.call(reqwest::Method::POST, "/reload", None)?;
        Ok(v.get("reloaded").and_then(|r| r.as_bool()).unwrap_or(false))
    }
}
