//! Test support: named upstream servers, proxies started from config text, and a few HTTP helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use ficus_proxy::{RunningProxy, StartOptions, Stop};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// An HTTP server that answers every request with JSON naming itself, the path and the body.
pub struct Upstream {
    pub addr: SocketAddr,
    fail: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct UpState {
    name: &'static str,
    fail: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn answer(State(s): State<UpState>, req: Request) -> Response {
    s.hits.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    if parts.uri.path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let out = json!({
        "upstream": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "body": String::from_utf8_lossy(&body),
        "x-request-id": header("x-request-id"),
        "traceparent": header("traceparent"),
        "headers": parts.headers.keys().map(|k| {
            let all: Vec<&str> = parts.headers.get_all(k).iter().filter_map(|v| v.to_str().ok()).collect();
            (k.as_str().to_owned(), Value::from(all.join(", ")))
        }).collect::<serde_json::Map<String, Value>>(),
    });
    let status = if s.fail.load(Ordering::Relaxed) && parts.uri.path() != "/healthz" {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        axum::http::StatusCode::OK
    };
    (status, axum::Json(out)).into_response()
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = UpState { name, fail: Arc::default(), hits: Arc::default() };
        let (fail, hits) = (state.fail.clone(), state.hits.clone());
        let app = axum::Router::new().fallback(answer).with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Upstream { addr, fail, hits, stop: Some(stop), task: Some(task) }
    }

    /// Answer 500 to everything (but /healthz) from now on.
    pub fn fail_with_500(&self, on: bool) {
        self.fail.store(on, Ordering::Relaxed);
    }

    /// Stops listening and closes idle connections; returns once the server is gone.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// A config with the given upstreams (the first is the default) and route tables appended.
pub fn config_text(upstreams: &[(&str, SocketAddr)], routes: &str) -> String {
    let ups: Vec<(&str, Vec<SocketAddr>)> = upstreams.iter().map(|(n, a)| (*n, vec![*a])).collect();
    config_text_multi(&ups, routes)
}

/// Like [`config_text`], with several addresses per upstream.
pub fn config_text_multi(upstreams: &[(&str, Vec<SocketAddr>)], routes: &str) -> String {
    let mut s = String::from(
        "version = 1\n\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[server]\nthreads = 2\ngrace_period_seconds = 2\n\n[proxy]\nhealth_interval_ms = 200\n\n",
    );
    for (name, addrs) in upstreams {
        let addrs: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!("[upstreams.{name}]\naddrs = [{}]\nconnect_timeout_ms = 500\n\n", addrs.join(", ")));
    }
    s.push_str(&format!("# where unmatched requests go\n[default]\nupstream = \"{}\"\n\n{routes}", upstreams[0].0));
    s
}

pub const TOKEN: &str = "test-token";
/// The variable a config's `force_token_env` may name in tests, and the secret it holds.
pub const FORCE_TOKEN_ENV: &str = "FICUS_FORCE_TOKEN";
pub const FORCE_TOKEN: &str = "test-force-token-0123";

/// A proxy running in-process from a config file in a temporary directory.
pub struct TestProxy {
    pub proxy: Option<RunningProxy>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

impl TestProxy {
    pub async fn start(text: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ficus.toml");
        std::fs::write(&config, text).unwrap();
        Self::start_from(dir, config).await
    }

    pub async fn start_from(dir: tempfile::TempDir, config: PathBuf) -> TestProxy {
        let options = StartOptions {
            config: config.clone(),
            admin_token: Some(TOKEN.to_owned()),
            upgrade: false,
            handle_signals: false,
            secrets: ficus_proxy::Secrets::fixed([(FORCE_TOKEN_ENV.to_owned(), FORCE_TOKEN.to_owned())]),
            ..Default::default()
        };
        let proxy = RunningProxy::start(options).expect("proxy starts");
        let base = format!("http://{}", proxy.http_addr());
        let admin = format!("http://{}", proxy.admin_addr().expect("admin listener"));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let t = TestProxy { proxy: Some(proxy), dir, config, base, admin, client };
        t.wait_healthy().await;
        t
    }

    /// Polls the admin API's and the proxy's readiness (no fixed sleep).
    async fn wait_healthy(&self) {
        for _ in 0..500 {
            let admin_ok =
                self.client.get(format!("{}/healthz", self.admin)).send().await.is_ok_and(|r| r.status() == 200);
            let proxy_ok = self.client.get(format!("{}/__ready", self.base)).send().await.is_ok();
            if admin_ok && proxy_ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("proxy did not become ready");
    }

    /// Stops the proxy at once and keeps its directory (for restarts).
    pub fn stop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.stop(Stop::Fast);
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(req).await
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn set_stage(&self, route: &str, stage: &str, percent: Option<f64>) -> (u16, Value) {
        let mut body = json!({ "stage": stage });
        if let Some(p) = percent {
            body["percent"] = json!(p);
        }
        self.admin(reqwest::Method::PUT, &format!("/routes/{route}"), Some(body), Some(TOKEN)).await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a request; returns (status, x-ficus-upstream, JSON body or Null).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = req.send().await.expect("proxy answers");
    let status = resp.status().as_u16();
    let upstream = resp.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Bytes = resp.bytes().await.unwrap_or_default();
    (status, upstream, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Which upstream answered, checking that the header and the body agree.
pub fn served_by(r: &(u16, Option<String>, Value)) -> String {
    assert_eq!(r.0, 200, "status of {r:?}");
    let body = r.2["upstream"].as_str().expect("upstream in body").to_owned();
    assert_eq!(r.1.as_deref(), Some(body.as_str()), "x-ficus-upstream names who answered");
    body
}

/// Polls `check` every 20 ms until it holds or `within` has passed; whether it held (callers
/// assert on it, so a wait that runs out fails the test).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
