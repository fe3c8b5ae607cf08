//! Background shoppers: a small load generator that browses the catalogue, adds to
//! its cart and checks out, through whatever base URL it is given (the proxy, in the
//! walkthrough). It counts every request and every failure — a transport error, or a
//! status the shop's contract does not give for that request — keeps the first few
//! failures for the report, remembers every order the shop acknowledged so they can
//! be looked up afterwards, and which upstream (`x-ficus-upstream`) answered each
//! shopper's catalog reads, to check that canary cohorts are sticky.
//!
//! Each shopper sends `x-user-id: shopper-N`, the cohort key the walkthrough's proxy
//! routes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

/// How many shoppers, where, how fast.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the shop (or of the proxy in front of it).
    pub base_url: String,
    /// Concurrent shoppers.
    pub shoppers: usize,
    /// Pause between two steps of one shopper.
    pub pause: Duration,
    /// Checkout every this many rounds of browsing.
    pub checkout_every: u64,
    /// A checkout may answer 503 (the payments drills: the shop's documented answer while
    /// payments is down); such answers are counted as refused, not as failures.
    pub checkout_may_be_refused: bool,
}

impl LoadConfig {
    /// A light, steady load on `base_url`: 4 shoppers, a step every 20 ms each.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            shoppers: 4,
            pause: Duration::from_millis(20),
            checkout_every: 3,
            checkout_may_be_refused: false,
        }
    }
}

/// The header carrying a shopper's cohort key.
pub const COHORT_HEADER: &str = "x-user-id";

/// What the load has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Orders the shop answered 201 for.
    pub orders_acknowledged: u64,
    /// Checkouts answered 503 while that was allowed (payments down).
    pub checkouts_refused: u64,
    /// Notification lists read.
    pub notification_reads: u64,
    /// Notifications a shopper was shown about an order that is not theirs.
    pub foreign_notifications: u64,
    /// The first failures, described.
    pub first_failures: Vec<String>,
}

/// Acknowledged orders against the orders the shop lists afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCheck {
    /// Orders acknowledged with a 201.
    pub acknowledged: usize,
    /// Of those, the ones the shop still lists.
    pub found: usize,
}

/// Why the load could not start or be checked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Setting up a shopper (register, log in) failed.
    #[error("setting up shopper {shopper}: {reason}")]
    Setup {
        /// Which shopper.
        shopper: usize,
        /// What went wrong.
        reason: String,
    },
    /// Looking up the orders afterwards failed.
    #[error("checking the orders of shopper {shopper}: {reason}")]
    Verify {
        /// Which shopper.
        shopper: usize,
        /// What went wrong.
        reason: String,
    },
}

const MAX_KEPT_FAILURES: usize = 10;
const PASSWORD: &str = "walkthrough-shopper";

#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    failures: AtomicU64,
    failure_samples: Mutex<Vec<String>>,
    orders: Mutex<Vec<(usize, i64)>>,
    upstreams: Mutex<BTreeMap<String, BTreeSet<String>>>,
    refused: AtomicU64,
    read_notifications: std::sync::atomic::AtomicBool,
    notification_reads: AtomicU64,
    foreign_notifications: AtomicU64,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.failure_samples.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_KEPT_FAILURES {
            kept.push(what);
        }
    }
}

#[derive(Clone)]
struct Shopper {
    n: usize,
    cohort: String,
    token: String,
}

/// A running load. Stop it with [`Load::stop`]; dropping it stops the shoppers too.
pub struct Load {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shoppers: Vec<Shopper>,
    client: reqwest::Client,
    base_url: String,
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn setup(client: &reqwest::Client, base: &str, n: usize, run: u128) -> Result<Shopper, LoadError> {
    let err = |reason: String| LoadError::Setup { shopper: n, reason };
    let email = format!("shopper{n}.{run}@walkthrough.example");
    let body = json!({"email": email, "password": PASSWORD, "name": format!("Shopper {n}")});
    let created = client.post(format!("{base}/api/users")).json(&body).send().await.map_err(|e| err(e.to_string()))?;
    if created.status() != StatusCode::CREATED {
        return Err(err(format!("register answered {}", created.status())));
    }
    let session =
        client.post(format!("{base}/api/sessions")).json(&body).send().await.map_err(|e| err(e.to_string()))?;
    if session.status() != StatusCode::CREATED {
        return Err(err(format!("login answered {}", session.status())));
    }
    let session: Value = session.json().await.map_err(|e| err(e.to_string()))?;
    let token = session["token"].as_str().ok_or_else(|| err("login gave no token".into()))?.to_string();
    Ok(Shopper { n, cohort: format!("shopper-{n}"), token })
}

impl Load {
    /// Registers the shoppers, then sets them shopping until [`Load::stop`].
    pub async fn start(config: LoadConfig) -> Result<Self, LoadError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client without TLS always builds");
        let base = config.base_url.trim_end_matches('/').to_string();
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut shoppers = Vec::with_capacity(config.shoppers);
        for n in 0..config.shoppers {
            shoppers.push(setup(&client, &base, n, run).await?);
        }
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        let tasks = shoppers
            .iter()
            .map(|shopper| {
                let agent = Agent {
                    shopper: shopper.clone(),
                    client: client.clone(),
                    base: base.clone(),
                    shared: shared.clone(),
                };
                tokio::spawn(agent.shop_until_stopped(stopped.clone(), config.clone()))
            })
            .collect();
        Ok(Self { shared, stop, tasks, shoppers, client, base_url: base })
    }

    /// What the load has seen so far.
    pub fn report(&self) -> LoadReport {
        LoadReport {
            requests: self.shared.requests.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            orders_acknowledged: self.shared.orders.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            checkouts_refused: self.shared.refused.load(Ordering::Relaxed),
            notification_reads: self.shared.notification_reads.load(Ordering::Relaxed),
            foreign_notifications: self.shared.foreign_notifications.load(Ordering::Relaxed),
            first_failures: self.shared.failure_samples.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// From now on (or no longer), each round a shopper also reads its notifications and
    /// checks that every one it is shown is about its own orders.
    pub fn read_notifications(&self, on: bool) {
        self.shared.read_notifications.store(on, Ordering::Relaxed);
    }

    /// The orders acknowledged so far, as (shopper, order id).
    pub fn acknowledged(&self) -> Vec<(usize, i64)> {
        self.shared.orders.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets which upstreams answered, to observe a new phase (a new canary percent).
    pub fn begin_phase(&self) {
        self.shared.upstreams.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// For each cohort and catalog route (`"shopper-0 list"`, `"shopper-0 detail"`), the
    /// upstreams that answered in this phase (`-` when a response carried no
    /// `x-ficus-upstream`). Sticky cohorts see one upstream per route.
    pub fn catalog_upstreams(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.shared.upstreams.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the shoppers (each finishes the request it is in) and reports.
    pub async fn stop(&mut self) -> LoadReport {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.report()
    }

    /// Looks up, as each shopper, the orders the shop lists, and counts how many of the
    /// acknowledged ones are there.
    pub async fn verify_orders(&self) -> Result<OrderCheck, LoadError> {
        let acknowledged = self.shared.orders.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut listed = BTreeSet::new();
        for s in &self.shoppers {
            let err = |reason: String| LoadError::Verify { shopper: s.n, reason };
            let resp = self
                .client
                .get(format!("{}/api/orders", self.base_url))
                .bearer_auth(&s.token)
                .header(COHORT_HEADER, &s.cohort)
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            if resp.status() != StatusCode::OK {
                return Err(err(format!("GET /api/orders answered {}", resp.status())));
            }
            let orders: Vec<Value> = resp.json().await.map_err(|e| err(e.to_string()))?;
            listed.extend(orders.iter().filter_map(|o| o["id"].as_i64()).map(|id| (s.n, id)));
        }
        let found = acknowledged.iter().filter(|o| listed.contains(o)).count();
        Ok(OrderCheck { acknowledged: acknowledged.len(), found })
    }
}

/// One shopper's requests.
struct Agent {
    shopper: Shopper,
    client: reqwest::Client,
    base: String,
    shared: Arc<Shared>,
}

/// A request and the statuses the contract allows for it.
struct Req {
    method: Method,
    path: String,
    body: Option<Value>,
    idempotency_key: Option<String>,
    expected: &'static [StatusCode],
    catalog_read: Option<&'static str>,
}

const OK: &[StatusCode] = &[StatusCode::OK];

impl Req {
    fn new(method: Method, path: String, expected: &'static [StatusCode]) -> Self {
        Self { method, path, body: None, idempotency_key: None, expected, catalog_read: None }
    }

    /// A catalog read: its upstream is recorded, under `route`, for the stickiness check.
    fn catalog(path: String, route: &'static str) -> Self {
        Self { catalog_read: Some(route), ..Self::new(Method::GET, path, OK) }
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

impl Agent {
    /// Sends one request; Some(status, body) when the status is one the request
    /// expects, else the failure is recorded and None returned.
    async fn send(&self, req: Req) -> Option<(StatusCode, Value)> {
        let shared = &self.shared;
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{}", self.base, req.path);
        let method = req.method;
        let mut builder = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.shopper.token)
            .header(COHORT_HEADER, &self.shopper.cohort);
        if let Some(body) = req.body {
            builder = builder.json(&body);
        }
        if let Some(key) = req.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let resp = match builder.send().await {
            Ok(resp) => resp,
            Err(e) => {
                shared.fail(format!("{method} {url}: {e}"));
                return None;
            }
        };
        let status = resp.status();
        if let Some(route) = req.catalog_read {
            let upstream =
                resp.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let mut seen = shared.upstreams.lock().unwrap_or_else(|e| e.into_inner());
            seen.entry(format!("{} {route}", self.shopper.cohort)).or_default().insert(upstream);
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                shared.fail(format!("{method} {url}: reading the body: {e}"));
                return None;
            }
        };
        if !req.expected.contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            shared.fail(format!("{method} {url} → {status}: {}", text.chars().take(160).collect::<String>()));
            return None;
        }
        Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn shop_until_stopped(self, mut stopped: watch::Receiver<bool>, config: LoadConfig) {
        let mut round: u64 = 0;
        while !*stopped.borrow() {
            round += 1;
            // A deterministic walk over pages and products, different per shopper.
            let seed = round.wrapping_mul(2_654_435_761).wrapping_add(self.shopper.n as u64 * 97);
            let page = 1 + seed % 10;
            if let Some((_, listing)) =
                self.send(Req::catalog(format!("/api/products?page={page}&per_page=20"), "list")).await
            {
                let ids: Vec<i64> =
                    listing["items"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_i64()).collect();
                if let Some(&id) = ids.get((seed / 10) as usize % ids.len().max(1)) {
                    self.send(Req::catalog(format!("/api/products/{id}"), "detail")).await;
                    let add = Req::new(Method::POST, "/api/cart/items".into(), &[StatusCode::CREATED]);
                    self.send(add.body(json!({"product_id": id, "quantity": 1}))).await;
                }
                if round.is_multiple_of(config.checkout_every.max(1)) {
                    self.checkout(round, config.checkout_may_be_refused).await;
                }
                if self.shared.read_notifications.load(Ordering::Relaxed) {
                    self.read_notifications().await;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(config.pause) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Reads the shopper's notifications; one about an order of someone else's is counted.
    async fn read_notifications(&self) {
        let Some((_, list)) = self.send(Req::new(Method::GET, "/api/notifications".into(), OK)).await else { return };
        self.shared.notification_reads.fetch_add(1, Ordering::Relaxed);
        let mine: BTreeSet<i64> = self
            .shared
            .orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(n, _)| *n == self.shopper.n)
            .map(|(_, id)| *id)
            .collect();
        for n in list.as_array().into_iter().flatten() {
            let order = n["subject"]
                .as_str()
                .and_then(|s| s.strip_prefix("Order #"))
                .and_then(|rest| rest.split(' ').next().and_then(|id| id.parse::<i64>().ok()));
            if let Some(id) = order
                && !mine.contains(&id)
            {
                self.shared.foreign_notifications.fetch_add(1, Ordering::Relaxed);
                self.shared.fail(format!("{} was shown a notification about order {id}", self.shopper.cohort));
            }
        }
    }

    async fn checkout(&self, round: u64, may_be_refused: bool) {
        const ANSWERS: &[StatusCode] = &[StatusCode::CREATED, StatusCode::CONFLICT];
        const OR_REFUSED: &[StatusCode] = &[StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE];
        let mut req = Req::new(Method::POST, "/api/orders".into(), if may_be_refused { OR_REFUSED } else { ANSWERS })
            .body(json!({"card_number": "4242424242424242"}));
        req.idempotency_key = Some(format!("{}-{round}", self.shopper.cohort));
        match self.send(req).await {
            Some((StatusCode::CREATED, order)) => {
                if let Some(id) = order["id"].as_i64() {
                    self.shared.orders.lock().unwrap_or_else(|e| e.into_inner()).push((self.shopper.n, id));
                }
            }
            // Payments unavailable: the cart is kept; the next checkout tries again.
            Some((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            // Out of stock is a normal answer: empty the cart and shop on.
            Some(_) => {
                if let Some((_, cart)) = self.send(Req::new(Method::GET, "/api/cart".into(), OK)).await {
                    for id in cart["items"].as_array().into_iter().flatten().filter_map(|l| l["product_id"].as_i64()) {
                        self.send(Req::new(Method::DELETE, format!("/api/cart/items/{id}"), OK)).await;
                    }
                }
            }
            None => {}
        }
    }
}
