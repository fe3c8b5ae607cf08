//! The walkthrough engine: what every extraction shares, and the named steps they compose.
//!
//! An extraction (the catalog, notifications, payments) is a list of named steps —
//! `record_golden`, `analyze`, `proxy_in_front`, `move_data`, `compare`, `canary`,
//! `cut_over`, `rollback_drill`, `switch_reads`, `retire`, the drills … — run against one
//! [`Walk`]: one shop, one proxy in front of it, one crowd of shoppers that never stops
//! while steps run. Every server runs in this process on a free loopback port (the shop
//! and the services as tasks, the proxy on its own threads), so nothing outlives the
//! walkthrough, whatever happens. A step ends in checks; a failed check stops the
//! walkthrough with [`WalkError::CheckFailed`], never a panic.
//!
//! The routes a service takes over come from `ficus plan` for that service (the analyzer's
//! proposal), and the proxy's config is always checked with the proxy's own parser before
//! it is written. Stage changes, reloads, diffs and the audit log go through
//! [`AdminClient`], the client `ficus stage` and `ficus routes` use.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ficus_analyzer::plan::Plan;
use ficus_proxy::AdminClient;
use ficus_proxy::admin::StageChange;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::load::{COHORT_HEADER, Load, LoadConfig, LoadReport, OrderCheck};

/// What to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extraction {
    /// Products and categories: a read-mostly service, data moved by backfill and write-through.
    Catalog,
    /// Notifications: fed by the shop's events (outbox, relay, idempotent consumer).
    Notifications,
    /// Payments: called by checkout synchronously, through a guard.
    Payments,
}

impl Extraction {
    /// The service's name, as the analyzer proposes it.
    pub fn service(self) -> &'static str {
        match self {
            Extraction::Catalog => "catalog",
            Extraction::Notifications => "notifications",
            Extraction::Payments => "payments",
        }
    }

    /// Parses `catalog`, `notifications`, `payments` or `all`.
    pub fn parse_list(word: &str) -> Option<Vec<Extraction>> {
        match word {
            "catalog" => Some(vec![Extraction::Catalog]),
            "notifications" => Some(vec![Extraction::Notifications]),
            "payments" => Some(vec![Extraction::Payments]),
            "all" => Some(vec![Extraction::Catalog, Extraction::Notifications, Extraction::Payments]),
            _ => None,
        }
    }
}

/// How to run the walkthrough.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the databases and the proxy's config go. Its `shop/`, the services' folders,
    /// `ficus.toml` and the proxy's `ficus.audit.jsonl` are made anew.
    pub data_dir: PathBuf,
    /// The shop's source, for the analyzer.
    pub shop_source: PathBuf,
    /// Background shoppers.
    pub shoppers: usize,
    /// The shop's database URL; None: SQLite under `data_dir/shop`. It must be empty.
    pub shop_database: Option<String>,
    /// The catalog service's database URL; None: SQLite under `data_dir/catalog`.
    pub catalog_database: Option<String>,
    /// The notifications service's database URL; None: SQLite under `data_dir/notifications`.
    pub notifications_database: Option<String>,
    /// The payments service's database URL; None: SQLite under `data_dir/payments`.
    pub payments_database: Option<String>,
    /// NATS with JetStream (`nats://127.0.0.1:4222`) for the shop's events; None: the relay
    /// delivers to the notifications service over HTTP (no broker).
    pub nats_url: Option<String>,
}

impl Options {
    /// Defaults for `data_dir`, with the shop's source where this workspace keeps it.
    pub fn new(data_dir: PathBuf) -> Self {
        let shop_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("example-monolith");
        Self {
            data_dir,
            shop_source,
            shoppers: 4,
            shop_database: None,
            catalog_database: None,
            notifications_database: None,
            payments_database: None,
            nats_url: None,
        }
    }

    /// Where a service keeps its data: the URL given, else SQLite under `data_dir/<name>`.
    pub(crate) fn service_db(&self, name: &str, url: Option<&String>) -> (shop::DbLocation, String) {
        match url {
            Some(url) => (shop::DbLocation::Url(url.clone()), shop::db::redact(url)),
            None => {
                let dir = self.data_dir.join(name);
                let file = dir.join(format!("{name}.db")).display().to_string();
                (shop::DbLocation::SqliteDir(dir), file)
            }
        }
    }
}

/// Where the walkthrough tells what it does.
pub trait Reporter: Send {
    /// Step `number`, named `name`, begins. False stops the walkthrough here (an interactive "q").
    fn step(&mut self, number: u8, name: &str, title: &str, why: &str) -> bool;
    /// A check and its evidence.
    fn check(&mut self, passed: bool, what: &str, evidence: &str);
    /// Anything else worth showing.
    fn note(&mut self, text: &str);
}

/// Why the walkthrough stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A check failed.
    #[error("step {step}: check failed: {what}")]
    CheckFailed {
        /// The step (its number and name).
        step: String,
        /// The check.
        what: String,
    },
    /// Something could not be done at all (a server did not start, a request could not be sent).
    #[error("step {step}: {message}")]
    Broken {
        /// The step (its number and name).
        step: String,
        /// What went wrong.
        message: String,
    },
    /// The person running it stopped before this step.
    #[error("stopped before step {0}")]
    Stopped(String),
}

/// How the shoppers fared, and what each extraction moved.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The load over the whole run.
    pub load: LoadReport,
    /// Acknowledged orders against orders found afterwards.
    pub orders: OrderCheck,
    /// What moved, one line per figure.
    pub figures: Vec<String>,
    /// Steps run, all green.
    pub steps: u8,
}

/// A server running as a task of this process.
pub(crate) struct Task {
    pub(crate) base: String,
    pub(crate) pool: shop::Pool,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Task {
    /// Runs a server (`run` gets the future that says when to stop) as a task.
    pub(crate) fn spawn<F>(
        addr: std::net::SocketAddr,
        pool: shop::Pool,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Task
    where
        F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Task { base: format!("http://{addr}"), pool, stop: Some(stop), task: tokio::spawn(run(stopped)) }
    }

    /// The address it serves on (`127.0.0.1:port`).
    pub(crate) fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Stops it gracefully: in-flight requests finish.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.task.await;
    }
}

/// The future that serves until it is told to stop.
pub(crate) type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>;

/// A server in a runtime of its own, on a thread of its own, as a separate process would
/// be: [`Isolated::kill`] drops that runtime mid-work — every connection, every
/// transaction — the way a crash does; [`Isolated::stop`] shuts it down gracefully.
pub(crate) struct Isolated {
    pub(crate) base: String,
    pub(crate) addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Isolated {
    /// Starts a server: `build` gets the future that asks for a graceful stop and returns
    /// the bound address and the serving future.
    pub(crate) async fn start<B, Fut>(build: B) -> Result<Isolated, String>
    where
        B: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(std::net::SocketAddr, Serving), String>> + 'static,
    {
        let (ready, is_ready) = oneshot::channel::<Result<std::net::SocketAddr, String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot start a runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match build(stopped).await {
                    Ok((addr, serving)) => {
                        let _ = ready.send(Ok(addr));
                        tokio::select! {
                            _ = serving => {}
                            _ = killed => {}
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
            // Everything still running in it (connections, transactions) is dropped here.
            runtime.shutdown_background();
        });
        let addr = is_ready.await.map_err(|_| "the server's thread ended before it started".to_string())??;
        Ok(Isolated { base: format!("http://{addr}"), addr, stop: Some(stop), kill: Some(kill), thread: Some(thread) })
    }

    async fn end(mut self, graceful: bool) {
        let signal = if graceful { self.stop.take() } else { self.kill.take() };
        let _ = signal.map(|s| s.send(()));
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Stops it gracefully: in-flight requests finish.
    pub(crate) async fn stop(self) {
        self.end(true).await;
    }

    /// Kills it mid-work.
    pub(crate) async fn kill(self) {
        self.end(false).await;
    }
}

/// A route of the proxy's config, as the walkthrough writes it.
#[derive(Debug, Clone)]
pub(crate) struct RouteCfg {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) methods: Vec<String>,
    pub(crate) upstream: String,
    pub(crate) stage: String,
    pub(crate) fallback: bool,
    /// More `key = value` lines (e.g. `shadow_ignore`).
    pub(crate) extra: Vec<String>,
}

impl RouteCfg {
    /// True for a route of reads only.
    pub(crate) fn reads(&self) -> bool {
        !self.methods.is_empty() && self.methods.iter().all(|m| m == "GET" || m == "HEAD")
    }
}

/// The proxy routes for a service, from its plan: each planned route's reads (GET, HEAD)
/// and writes become separate routes, so reads can move first; a route of one kind keeps
/// its planned name, the writes of a mixed one are named `<name>-write`.
pub(crate) fn routes_from_plan(plan: &Plan) -> Vec<RouteCfg> {
    let mut out = Vec::new();
    for r in &plan.routes {
        let methods =
            if r.methods.is_empty() { vec!["GET".to_string(), "POST".to_string()] } else { r.methods.clone() };
        let (reads, writes): (Vec<String>, Vec<String>) = methods.into_iter().partition(|m| m == "GET" || m == "HEAD");
        let route = |name: String, methods: Vec<String>| RouteCfg {
            name,
            path: r.path.clone(),
            fallback: methods.iter().all(|m| m == "GET" || m == "HEAD"),
            methods,
            upstream: plan.service.name.clone(),
            stage: "monolith".into(),
            extra: Vec::new(),
        };
        match (reads.is_empty(), writes.is_empty()) {
            (false, false) => {
                out.push(route(r.name.clone(), reads));
                out.push(route(format!("{}-write", r.name), writes));
            }
            (false, true) => out.push(route(r.name.clone(), reads)),
            _ => out.push(route(r.name.clone(), writes)),
        }
    }
    out
}

fn toml_list(items: &[String]) -> String {
    items.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ")
}

/// Everything running, and what the steps share.
pub(crate) struct Walk<'r> {
    pub(crate) reporter: &'r mut dyn Reporter,
    pub(crate) opts: Options,
    pub(crate) extractions: Vec<Extraction>,
    step: u8,
    step_name: String,
    pub(crate) client: reqwest::Client,
    pub(crate) admin_token: String,
    pub(crate) shop: Option<Task>,
    pub(crate) proxy: Option<ficus_proxy::RunningProxy>,
    pub(crate) proxy_base: String,
    pub(crate) admin_base: String,
    pub(crate) admin: Option<AdminClient>,
    pub(crate) load: Option<Load>,
    /// Upstreams of the proxy besides the monolith: (name, address).
    pub(crate) upstreams: Vec<(String, String)>,
    /// The proxy's routes.
    pub(crate) routes: Vec<RouteCfg>,
    /// Each extraction's plan, from `ficus plan`.
    pub(crate) plans: Vec<Plan>,
    pub(crate) catalog: crate::catalog::CatalogState,
    pub(crate) notifications: crate::notifications::NotificationsState,
    pub(crate) payments: crate::payments::PaymentsState,
    pub(crate) figures: Vec<String>,
}

/// Runs the extractions in order on one shop, shoppers shopping throughout. Stops at the
/// first failed check.
pub async fn run(extractions: &[Extraction], opts: Options, reporter: &mut dyn Reporter) -> Result<Summary, WalkError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client without TLS always builds");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut walk = Walk {
        reporter,
        opts,
        extractions: extractions.to_vec(),
        step: 0,
        step_name: String::new(),
        client,
        admin_token: format!("walkthrough-{nanos:x}"),
        shop: None,
        proxy: None,
        proxy_base: String::new(),
        admin_base: String::new(),
        admin: None,
        load: None,
        upstreams: Vec::new(),
        routes: Vec::new(),
        plans: Vec::new(),
        catalog: Default::default(),
        notifications: Default::default(),
        payments: Default::default(),
        figures: Vec::new(),
    };
    let result = walk.all_steps().await;
    walk.teardown().await;
    result
}

impl Walk<'_> {
    async fn all_steps(&mut self) -> Result<Summary, WalkError> {
        self.record_golden().await?;
        self.analyze().await?;
        self.proxy_in_front().await?;
        for e in self.extractions.clone() {
            match e {
                Extraction::Catalog => self.extract_catalog().await?,
                Extraction::Notifications => self.extract_notifications().await?,
                Extraction::Payments => self.extract_payments().await?,
            }
        }
        self.finish().await
    }

    async fn teardown(&mut self) {
        if let Some(mut load) = self.load.take() {
            load.stop().await;
        }
        if let Some(proxy) = self.proxy.take() {
            let _ = tokio::task::spawn_blocking(move || proxy.stop(ficus_proxy::Stop::Fast)).await;
        }
        self.notifications.stop().await;
        if let Some(task) = self.catalog.service.take() {
            task.stop().await;
        }
        if let Some(service) = self.payments.service.take() {
            service.stop().await;
        }
        if let Some(shop) = self.shop.take() {
            shop.stop().await;
        }
    }

    pub(crate) fn has(&self, e: Extraction) -> bool {
        self.extractions.contains(&e)
    }

    // ---- step bookkeeping -------------------------------------------------------------

    /// Step `name` begins.
    pub(crate) fn begin(&mut self, name: &str, title: &str, why: &str) -> Result<(), WalkError> {
        self.step += 1;
        self.step_name = format!("{} ({name})", self.step);
        if self.reporter.step(self.step, name, title, why) {
            Ok(())
        } else {
            Err(WalkError::Stopped(self.step_name.clone()))
        }
    }

    pub(crate) fn check(&mut self, passed: bool, what: &str, evidence: impl AsRef<str>) -> Result<(), WalkError> {
        self.reporter.check(passed, what, evidence.as_ref());
        if passed {
            Ok(())
        } else {
            Err(WalkError::CheckFailed { step: self.step_name.clone(), what: what.to_string() })
        }
    }

    pub(crate) fn broken(&self, message: impl std::fmt::Display) -> WalkError {
        WalkError::Broken { step: self.step_name.clone(), message: message.to_string() }
    }

    pub(crate) fn note(&mut self, text: impl AsRef<str>) {
        self.reporter.note(text.as_ref());
    }

    pub(crate) fn shop(&self) -> &Task {
        self.shop.as_ref().expect("the shop starts in the first step")
    }

    pub(crate) fn load(&self) -> &Load {
        self.load.as_ref().expect("the load starts with the proxy")
    }

    pub(crate) fn admin(&self) -> &AdminClient {
        self.admin.as_ref().expect("the proxy starts before any stage change")
    }

    pub(crate) fn plan(&self, e: Extraction) -> Result<&Plan, WalkError> {
        self.plans
            .iter()
            .find(|p| p.service.name == e.service())
            .ok_or_else(|| self.broken(format!("no plan for {}", e.service())))
    }

    // ---- HTTP ---------------------------------------------------------------------------

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Value), WalkError> {
        let mut req = self.client.request(method, &url).header(COHORT_HEADER, "walkthrough");
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| self.broken(format!("{url}: {e}")))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.broken(format!("{url}: {e}")))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// An admin PUT that must succeed.
    pub(crate) async fn admin_put(&self, url: String, body: Value) -> Result<Value, WalkError> {
        let (status, answer) =
            self.send(reqwest::Method::PUT, url.clone(), Some(body), Some(&self.admin_token)).await?;
        if !status.is_success() {
            return Err(self.broken(format!("PUT {url} answered {status}: {answer}")));
        }
        Ok(answer)
    }

    /// Registers and logs in a user through the proxy (or the shop before it); returns
    /// the session token.
    pub(crate) async fn new_user(&self, base: &str, email: &str) -> Result<String, WalkError> {
        let creds = serde_json::json!({"email": email, "password": "walkthrough-pass", "name": "Walkthrough"});
        let (status, answer) =
            self.send(reqwest::Method::POST, format!("{base}/api/users"), Some(creds.clone()), None).await?;
        if status != StatusCode::CREATED {
            return Err(self.broken(format!("registering {email}: {status} {answer}")));
        }
        let (_, session) = self.send(reqwest::Method::POST, format!("{base}/api/sessions"), Some(creds), None).await?;
        session["token"].as_str().map(str::to_string).ok_or_else(|| self.broken(format!("no token for {email}")))
    }

    /// Puts `product` in the cart of `token` and checks out through `base`: (status, order).
    pub(crate) async fn buy(&self, base: &str, token: &str, product: i64) -> Result<(StatusCode, Value), WalkError> {
        let item = serde_json::json!({"product_id": product, "quantity": 1});
        self.send(reqwest::Method::POST, format!("{base}/api/cart/items"), Some(item), Some(token)).await?;
        let card = serde_json::json!({"card_number": "4242424242424242"});
        self.send(reqwest::Method::POST, format!("{base}/api/orders"), Some(card), Some(token)).await
    }

    /// Which upstream serves `path` for `cohort` now.
    pub(crate) async fn upstream_for(
        &self,
        path: &str,
        cohort: &str,
        token: Option<&str>,
    ) -> Result<String, WalkError> {
        let url = format!("{}{path}", self.proxy_base);
        let mut req = self.client.get(&url).header(COHORT_HEADER, cohort);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.broken(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(self.broken(format!("GET {url} answered {}", resp.status())));
        }
        Ok(resp.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string())
    }

    // ---- the proxy ------------------------------------------------------------------------

    pub(crate) fn config_path(&self) -> PathBuf {
        self.opts.data_dir.join("ficus.toml")
    }

    /// The proxy's config from the walkthrough's upstreams and routes, checked with the
    /// proxy's own parser.
    pub(crate) fn proxy_config(&self) -> Result<String, WalkError> {
        let mut toml = format!(
            "# Written by `ficus walkthrough`: the proxy in front of Ficus Shop.\nversion = 1\n\n[listen]\nhttp = \"{}\"\nadmin = \"{}\"\n\n[upstreams.monolith]\naddrs = [\"{}\"]\n",
            self.proxy_base.trim_start_matches("http://"),
            self.admin_base.trim_start_matches("http://"),
            self.shop().addr(),
        );
        for (name, addr) in &self.upstreams {
            toml += &format!("\n[upstreams.{name}]\naddrs = [\"{addr}\"]\nhealth = \"/healthz\"\n");
        }
        toml += "\n[default]\nupstream = \"monolith\"\n";
        for r in &self.routes {
            toml += &format!(
                "\n[[routes]]\nname = \"{}\"\npath = \"{}\"\nmethods = [{}]\nupstream = \"{}\"\nstage = \"{}\"\ncohort = \"header:{COHORT_HEADER}\"\nfallback = {}\n",
                r.name,
                r.path,
                toml_list(&r.methods),
                r.upstream,
                r.stage,
                r.fallback
            );
            for line in &r.extra {
                toml += line;
                toml.push('\n');
            }
        }
        ficus_proxy::Config::parse(&toml, &self.config_path())
            .map_err(|e| self.broken(format!("the proxy refuses the walkthrough's config: {e}")))?;
        Ok(toml)
    }

    /// Writes the config and has the proxy reload it; returns the routes it then lists.
    pub(crate) async fn reload_proxy(&mut self) -> Result<Vec<ficus_proxy::RouteView>, WalkError> {
        let path = self.config_path();
        let text = self.proxy_config()?;
        std::fs::write(&path, text).map_err(|e| self.broken(format!("writing {}: {e}", path.display())))?;
        let reloaded = self.admin().reload().await.map_err(|e| self.broken(format!("POST /reload: {e}")))?;
        if !reloaded {
            return Err(self.broken("the proxy did not take the new config"));
        }
        let (routes, _) = self.admin().routes().await.map_err(|e| self.broken(format!("GET /routes: {e}")))?;
        Ok(routes)
    }

    /// Adds a service's upstream and its routes (all at the monolith) and reloads; checks the
    /// proxy lists them.
    pub(crate) async fn add_service_routes(
        &mut self,
        upstream: &str,
        addr: &str,
        routes: Vec<RouteCfg>,
    ) -> Result<Vec<String>, WalkError> {
        self.upstreams.push((upstream.to_string(), addr.to_string()));
        let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        self.routes.extend(routes);
        let listed = self.reload_proxy().await?;
        let mine: Vec<_> = listed.iter().filter(|r| names.contains(&r.name)).collect();
        let on_monolith = mine.iter().filter(|r| r.stage == "monolith").count();
        let described: Vec<String> = self
            .routes
            .iter()
            .filter(|r| names.contains(&r.name))
            .map(|r| format!("{} ({} {})", r.name, r.methods.join(","), r.path))
            .collect();
        self.check(
            mine.len() == names.len() && on_monolith == names.len(),
            &format!("the proxy reloads with the {upstream} routes from `ficus plan`, all on the monolith"),
            format!("{} routes, checked by the proxy's config parser: {}", names.len(), described.join(", ")),
        )?;
        Ok(names)
    }

    /// Sets the stage of `routes` through the admin API, as `ficus stage` does.
    pub(crate) async fn stage(&mut self, routes: &[String], stage: &str, percent: Option<u8>) -> Result<(), WalkError> {
        for name in routes {
            let change = StageChange {
                stage: stage.to_string(),
                percent: percent.map(f64::from),
                reason: Some("ficus walkthrough".into()),
                ..Default::default()
            };
            self.admin()
                .set_stage(name, &change)
                .await
                .map_err(|e| self.broken(format!("ficus stage {name} {stage}: {e}")))?;
            if let Some(r) = self.routes.iter_mut().find(|r| &r.name == name) {
                r.stage = stage.to_string();
            }
        }
        let at = percent.map(|p| format!(" at {p} %")).unwrap_or_default();
        self.note(format!("ficus stage {} {stage}{at}", routes.join(", ")));
        Ok(())
    }

    /// The proxy's audit log holds every stage change of `routes` as an unbroken chain: each
    /// entry starts where the one before ended, the first where the walkthrough's config put
    /// the route (the monolith), and the last ends where the route is now.
    pub(crate) async fn audit_is_complete(&mut self, service: &str, routes: &[String]) -> Result<(), WalkError> {
        let entries = self.admin().audit(None).await.map_err(|e| self.broken(format!("GET /audit: {e}")))?;
        let (now, _) = self.admin().routes().await.map_err(|e| self.broken(format!("GET /routes: {e}")))?;
        let mut broken = Vec::new();
        let mut changes = 0;
        for name in routes {
            let mine: Vec<_> = entries.iter().filter(|e| &e.route == name).collect();
            changes += mine.len();
            let first = mine.first().map(|e| e.from.stage.as_str()).unwrap_or("none");
            if first != "monolith" && first != "(new route)" {
                broken.push(format!("{name}: the first audited change starts at {first}"));
            }
            for pair in mine.windows(2) {
                if pair[0].to != pair[1].from {
                    broken.push(format!("{name}: {} then {}", pair[0].to, pair[1].from));
                }
            }
            let at = now.iter().find(|r| &r.name == name).map(|r| r.stage.as_str()).unwrap_or("none");
            let last = mine.last().map(|e| e.to.stage.as_str()).unwrap_or("none");
            if last != at {
                broken.push(format!("{name}: the last audited stage is {last}, the route is at {at}"));
            }
        }
        let walked = entries.iter().filter(|e| e.why == "ficus walkthrough").count();
        self.check(
            broken.is_empty() && walked > 0,
            "every stage change is in the proxy's audit log",
            if broken.is_empty() {
                format!("{changes} changes of the {service} routes, each with its time, from, to, why and by whom; {walked} made by this walkthrough")
            } else {
                broken.join("; ")
            },
        )
    }

    // ---- the shoppers ---------------------------------------------------------------------

    /// Waits (bounded) until the load has sent `more` requests beyond now, then checks
    /// that none of them failed.
    pub(crate) async fn load_keeps_flowing(&mut self, more: u64, during: &str) -> Result<(), WalkError> {
        let start = self.load().report().requests;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.load().report().requests < start + more && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = self.load().report();
        // The failure count ends the line, so no other figure reads as one.
        let refused = if report.checkouts_refused > 0 {
            format!(", {} checkouts refused with 503 while payments was slow or down", report.checkouts_refused)
        } else {
            String::new()
        };
        let evidence = format!(
            "{} orders acknowledged{refused}, {} requests sent, {} failed{}",
            report.orders_acknowledged,
            report.requests,
            report.failures,
            report.first_failures.first().map(|f| format!("\n      first: {f}")).unwrap_or_default()
        );
        self.check(
            report.failures == 0 && report.requests >= start + more,
            &format!("every request succeeds {during}"),
            evidence,
        )
    }

    /// Waits (bounded) until the shoppers have had `more` more orders acknowledged.
    pub(crate) async fn orders_keep_coming(&mut self, more: u64, during: &str) -> Result<(), WalkError> {
        let before = self.load().report().orders_acknowledged;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.load().report().orders_acknowledged < before + more && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = self.load().report().orders_acknowledged;
        self.check(
            after >= before + more,
            &format!("shoppers keep checking out {during}"),
            format!("orders acknowledged {before} → {after}"),
        )
    }

    // ---- the steps every extraction shares ----------------------------------------------------

    /// Starts the shop (SQLite with its demo catalogue, or the database given) and records
    /// what each extraction must keep unchanged.
    async fn record_golden(&mut self) -> Result<(), WalkError> {
        self.begin("record_golden", "Start the monolith and record golden responses", "Ficus Shop runs with its demo catalogue. What the endpoints about to move answer now is the contract every later step must keep.")?;
        let dir = self.opts.data_dir.clone();
        for old in ["shop", "catalog", "notifications", "payments"] {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        for old in ["ficus.toml", "ficus.audit.jsonl"] {
            let _ = std::fs::remove_file(dir.join(old));
        }
        std::fs::create_dir_all(&dir).map_err(|e| self.broken(format!("creating {}: {e}", dir.display())))?;
        let (location, database) = match &self.opts.shop_database {
            Some(url) => (shop::DbLocation::Url(url.clone()), shop::db::redact(url)),
            None => {
                (shop::DbLocation::SqliteDir(dir.join("shop")), dir.join("shop").join("shop.db").display().to_string())
            }
        };
        let mut config = shop::Config::new("127.0.0.1:0".parse().expect("address"), location);
        config.seed = true;
        config.admin_token = Some(self.admin_token.clone());
        config.internal_token = Some(self.admin_token.clone());
        let app = shop::Application::build(config).await.map_err(|e| self.broken(format!("starting the shop: {e}")))?;
        let pool = app.pool().clone();
        let task = Task::spawn(app.local_addr(), pool, |stopped| {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
        });
        self.note(format!("shop listening on {}, database {database}", task.base));
        self.shop = Some(task);
        if self.has(Extraction::Catalog) {
            self.record_catalog_golden().await?;
        }
        if self.has(Extraction::Notifications) {
            self.record_notifications_golden().await?;
        }
        if self.has(Extraction::Payments) {
            self.record_payments_golden().await?;
        }
        Ok(())
    }

    /// Runs the analyzer on the shop's source and plans each extraction.
    async fn analyze(&mut self) -> Result<(), WalkError> {
        let names: Vec<&str> = self.extractions.iter().map(|e| e.service()).collect();
        self.begin("analyze", "Analyze the monolith and plan the extraction", &format!("The analyzer reads the shop's source and proposes services; `ficus plan` for {} gives the endpoints to route, the tables to move and the dependencies to cut. The next steps take their routes from it.", names.join(", ")))?;
        let source = self.opts.shop_source.clone();
        let report =
            tokio::task::spawn_blocking(move || ficus_analyzer::analyze(&source, &ficus_analyzer::Options::default()))
                .await
                .map_err(|e| self.broken(e))?
                .map_err(|e| self.broken(format!("analyzing {}: {e}", self.opts.shop_source.display())))?;
        for e in self.extractions.clone() {
            let plan = match ficus_analyzer::plan::plan(&report, e.service()) {
                Ok(plan) => plan,
                Err(err) => {
                    return self.check(
                        false,
                        &format!("the analyzer proposes a {} service", e.service()),
                        err.to_string(),
                    );
                }
            };
            let routes: Vec<String> =
                plan.routes.iter().map(|r| format!("{} {}", r.methods.join(","), r.path)).collect();
            self.note(format!(
                "ficus plan example-monolith --service {}: owns {}; routes {}",
                e.service(),
                names_or_none(&plan.service.tables.owns),
                if routes.is_empty() {
                    "none (it has no HTTP endpoints of its own)".to_string()
                } else {
                    routes.join(", ")
                }
            ));
            self.plans.push(plan);
            match e {
                Extraction::Catalog => self.analyze_catalog(&report).await?,
                Extraction::Notifications => self.analyze_notifications().await?,
                Extraction::Payments => self.analyze_payments().await?,
            }
        }
        Ok(())
    }

    /// Starts the proxy in front of the shop, with no routes; the shoppers start.
    async fn proxy_in_front(&mut self) -> Result<(), WalkError> {
        self.begin("proxy_in_front", "Put the proxy in front", "Every request now passes through ficus proxy; with no routes, all of it goes to the monolith, and nothing may change for clients. The shoppers start here and shop until the end.")?;
        self.proxy_base = "http://127.0.0.1:0".into();
        self.admin_base = "http://127.0.0.1:0".into();
        let path = self.config_path();
        let text = self.proxy_config()?;
        std::fs::write(&path, text).map_err(|e| self.broken(format!("writing {}: {e}", path.display())))?;
        let options = ficus_proxy::StartOptions {
            config: path.clone(),
            admin_token: Some(self.admin_token.clone()),
            upgrade: false,
            handle_signals: false,
            ..Default::default()
        };
        let proxy = tokio::task::spawn_blocking(move || ficus_proxy::RunningProxy::start(options))
            .await
            .map_err(|e| self.broken(e))?
            .map_err(|e| self.broken(format!("starting the proxy: {e}")))?;
        self.proxy_base = format!("http://{}", proxy.http_addr());
        self.admin_base =
            format!("http://{}", proxy.admin_addr().ok_or_else(|| self.broken("the proxy has no admin listener"))?);
        self.proxy = Some(proxy);
        self.admin = Some(AdminClient::new(&self.admin_base, Some(self.admin_token.clone())));
        // Write the bound ports back, so the file says where the proxy really is.
        let text = self.proxy_config()?;
        std::fs::write(&path, text).map_err(|e| self.broken(e))?;
        self.note(format!("proxy on {}, admin API on {}, config {}", self.proxy_base, self.admin_base, path.display()));
        if self.has(Extraction::Catalog) {
            self.catalog_golden_through_proxy().await?;
        }
        if self.has(Extraction::Notifications) {
            self.notifications_golden_through_proxy().await?;
        }
        let upstream = self.upstream_for("/api/products/1", "walkthrough", None).await?;
        self.check(upstream == "monolith", "the monolith serves everything", format!("x-ficus-upstream: {upstream}"))?;
        let mut config = LoadConfig::new(&self.proxy_base);
        config.shoppers = self.opts.shoppers;
        config.checkout_may_be_refused = self.has(Extraction::Payments);
        let load = Load::start(config).await.map_err(|e| self.broken(format!("starting the shoppers: {e}")))?;
        self.load = Some(load);
        self.load_keeps_flowing(50, "while the shoppers start").await
    }

    /// The shoppers stop; every order they were told about is looked up.
    async fn finish(&mut self) -> Result<Summary, WalkError> {
        self.begin("finish", "Stop the shoppers and count", "The shoppers stop; every order the shop acknowledged is looked up through the proxy, and each extraction's figures are checked one last time.")?;
        let mut load = self.load.take().expect("the load runs");
        let report = load.stop().await;
        let orders = load.verify_orders().await.map_err(|e| self.broken(e))?;
        self.check(
            report.failures == 0,
            "every shopper request succeeded",
            format!("{} requests sent, {} failed", report.requests, report.failures),
        )?;
        self.check(
            orders.acknowledged == orders.found,
            "every acknowledged order is in the database",
            format!("{} orders acknowledged, {} found", orders.acknowledged, orders.found),
        )?;
        if self.has(Extraction::Notifications) {
            self.notifications_final(&load).await?;
        }
        if self.has(Extraction::Payments) {
            self.payments_final(&report).await?;
        }
        Ok(Summary { load: report, orders, figures: std::mem::take(&mut self.figures), steps: self.step })
    }
}

/// Names joined for a person, or "none".
pub(crate) fn names_or_none(list: &[String]) -> String {
    if list.is_empty() { "none".to_string() } else { list.join(", ") }
}
