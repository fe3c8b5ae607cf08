//! A real shop on port 0 for each test, on SQLite (a temporary directory) or on
//! PostgreSQL (a database created for the test and dropped after it).
//!
//! PostgreSQL comes from `FICUS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the
//! PostgreSQL variants are skipped with a message — unless `FICUS_REQUIRE_PG` is set
//! (CI sets it), in which case they fail.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shop::{Application, Config, DbLocation, Pool};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PASSWORD: &str = "correct-horse-battery";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running shop and a client for it.
pub struct TestShop {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub pool: Pool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    _pg: Option<ficus_e2e::pg::TestDatabase>,
}

impl TestShop {
    /// A seeded shop, or None when the backend is unavailable here (PostgreSQL only).
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestShop::start`], with a chance to change the configuration.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (pg, db) = match backend {
            Backend::Sqlite => (None, DbLocation::SqliteDir(dir.path().to_path_buf())),
            Backend::Postgres => {
                let (pg, url) = ficus_e2e::pg::create_database("shop_test").await?;
                (Some(pg), DbLocation::Url(url))
            }
        };
        let mut config = Config::new("127.0.0.1:0".parse().expect("addr"), db);
        config.seed = true;
        config.admin_token = Some(ADMIN_TOKEN.into());
        tweak(&mut config);
        let app = Application::build(config).await.expect("shop starts");
        let addr = app.local_addr();
        let pool = app.pool().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let shop =
            Self { addr, client: reqwest::Client::new(), pool, stop: Some(stop), task: Some(task), _dir: dir, _pg: pg };
        let (status, _) = shop.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK, "shop not healthy");
        Some(shop)
    }

    /// Stops the server and waits for it to finish in-flight requests.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; the answer's status and JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Registers `email` and logs in; the session token.
    pub async fn user(&self, email: &str) -> String {
        let (status, body) =
            self.post("/api/users", None, json!({"email": email, "password": PASSWORD, "name": "Test User"})).await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        self.login(email).await
    }

    pub async fn login(&self, email: &str) -> String {
        let (status, body) = self.post("/api/sessions", None, json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::CREATED, "login {email}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    pub async fn stock(&self, product_id: i64) -> i64 {
        let (status, body) = self.get(&format!("/api/inventory/{product_id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        body["stock"].as_i64().expect("stock")
    }

    pub async fn set_stock(&self, product_id: i64, stock: i64) {
        let (status, body) =
            self.put(&format!("/api/inventory/{product_id}"), Some(ADMIN_TOKEN), json!({"stock": stock})).await;
        assert_eq!(status, StatusCode::OK, "set stock: {body}");
    }

    pub async fn add_to_cart(&self, token: &str, product_id: i64, quantity: i64) {
        let (status, body) =
            self.post("/api/cart/items", Some(token), json!({"product_id": product_id, "quantity": quantity})).await;
        assert_eq!(status, StatusCode::CREATED, "add to cart: {body}");
    }

    /// A scalar from the shop's database (for checks the API does not expose).
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool).await.expect(sql)
    }
}

/// Asserts a 4xx JSON error, optionally naming `field`.
#[track_caller]
pub fn assert_client_error(got: &(StatusCode, Value), status: StatusCode, field: Option<&str>) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert!(got.1["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message in {}", got.1);
    if let Some(field) = field {
        assert_eq!(got.1["field"], json!(field), "body: {}", got.1);
    }
}

/// Runs each named `async fn(TestShop)` on SQLite and on PostgreSQL, as two tests.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let shop = crate::support::TestShop::start(crate::support::Backend::Sqlite).await.expect("sqlite");
                    super::$name(&shop).await;
                    shop.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(shop) = crate::support::TestShop::start(crate::support::Backend::Postgres).await else { return };
                    super::$name(&shop).await;
                    shop.stop().await;
                }
            )*
        }
    };
}
pub(crate) use on_both_databases;
