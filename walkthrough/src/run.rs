//! The ten steps of the catalog's extraction from Ficus Shop, each run and checked.
//!
//! Every server runs in this process on a free loopback port — the shop and the catalog
//! service as tasks, the proxy on its own threads — so nothing outlives the walkthrough,
//! whatever happens. What a person would see goes through [`Reporter`]; printing is
//! the command line's job.
//!
//! The data's path, and why no change is lost: from step 4 the shop writes every
//! catalog change through to the service inside its own transaction (write-through);
//! the catalog's reads move to the service route by route through the proxy (canary,
//! then cut-over); at step 9 the shop itself starts reading products from the service
//! (branch by abstraction), the catalog's writes move to the service, write-through
//! ends, and the shop's own catalog tables are renamed away. A price change made
//! through the proxy after steps 4, 7 and 9 must be seen by every read and charged by
//! checkout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::golden::{self, CATALOG_REQUESTS, Recorded};
use crate::load::{COHORT_HEADER, Load, LoadConfig, LoadReport, OrderCheck};

/// How to run the walkthrough.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the shop's and the service's databases and the proxy's config go. Its
    /// `shop/`, `catalog/`, `ficus.toml` and the proxy's `ficus.audit.jsonl` are made anew.
    pub data_dir: PathBuf,
    /// The shop's source, for the analyzer.
    pub shop_source: PathBuf,
    /// Background shoppers.
    pub shoppers: usize,
    /// The shop's database URL; None: SQLite under `data_dir/shop`. It must be empty.
    pub shop_database: Option<String>,
    /// The catalog service's database URL; None: SQLite under `data_dir/catalog`. It must be empty.
    pub catalog_database: Option<String>,
}

impl Options {
    /// Defaults for `data_dir`, with the shop's source where this workspace keeps it.
    pub fn new(data_dir: PathBuf) -> Self {
        let shop_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("example-monolith");
        Self { data_dir, shop_source, shoppers: 4, shop_database: None, catalog_database: None }
    }
}

/// Where the walkthrough tells what it does.
pub trait Reporter: Send {
    /// Step `number` begins. False stops the walkthrough here (an interactive "q").
    fn step(&mut self, number: u8, title: &str, why: &str) -> bool;
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
        /// The step.
        step: u8,
        /// The check.
        what: String,
    },
    /// Something could not be done at all (a server did not start, a request could not be sent).
    #[error("step {step}: {message}")]
    Broken {
        /// The step.
        step: u8,
        /// What went wrong.
        message: String,
    },
    /// The person running it stopped before this step.
    #[error("stopped before step {0}")]
    Stopped(u8),
}

/// What moved, and how the shoppers fared.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The load over the whole run.
    pub load: LoadReport,
    /// Acknowledged orders against orders found afterwards.
    pub orders: OrderCheck,
    /// Catalog routes at stage `service` on the proxy at the end.
    pub endpoints_moved: usize,
    /// Product rows now owned by the service.
    pub products_moved: i64,
    /// Category rows now owned by the service.
    pub categories_moved: i64,
}

/// The product whose price the walkthrough changes to check no change is lost.
const PRICE_PRODUCT: i64 = 17;
/// The catalog's read routes (moved by canary) and write routes (moved at step 9).
const READ_ROUTES: [(&str, &str, &str); 3] = [
    ("catalog-list", "/api/products", "GET"),
    ("catalog-detail", "/api/products/{id}", "GET"),
    ("catalog-categories", "/api/categories", "GET"),
];
/// The guard of the retire step (`ficus analyze --check` syntax): once the catalog's
/// tables are retired, only the code left to delete may touch them.
const CATALOG_GUARD: &str = r#"version = 1

[[forbid]]
from = "*"
except = ["shop::catalog", "shop::cart::repo", "shop::orders::repo", "shop::seed"]
touches_table = "products"
why = "the catalog service owns products now"

[[forbid]]
from = "*"
except = ["shop::catalog", "shop::seed"]
touches_table = "categories"
why = "the catalog service owns categories now"
"#;

const WRITE_ROUTES: [(&str, &str, &str); 3] = [
    ("catalog-create", "/api/products", "POST"),
    ("catalog-update", "/api/products/{id}", "PUT"),
    ("catalog-categories-create", "/api/categories", "POST"),
];

/// A server running as a task of this process.
struct Task {
    base: String,
    pool: shop::Pool,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Task {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.task.await;
    }
}

struct Walk<'r> {
    reporter: &'r mut dyn Reporter,
    opts: Options,
    step: u8,
    client: reqwest::Client,
    admin_token: String,
    shop: Option<Task>,
    service: Option<Task>,
    proxy: Option<ficus_proxy::RunningProxy>,
    proxy_base: String,
    admin_base: String,
    load: Option<Load>,
    golden: Vec<Recorded>,
    service_dialect: shop::Dialect,
}

/// Runs the ten steps. Stops at the first failed check.
pub async fn run(opts: Options, reporter: &mut dyn Reporter) -> Result<Summary, WalkError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client without TLS always builds");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut walk = Walk {
        reporter,
        opts,
        step: 0,
        client,
        admin_token: format!("walkthrough-{nanos:x}"),
        shop: None,
        service: None,
        proxy: None,
        proxy_base: String::new(),
        admin_base: String::new(),
        load: None,
        golden: Vec::new(),
        service_dialect: shop::Dialect::Sqlite,
    };
    let result = walk.all_steps().await;
    walk.teardown().await;
    result
}

impl Walk<'_> {
    fn begin(&mut self, number: u8, title: &str, why: &str) -> Result<(), WalkError> {
        self.step = number;
        if self.reporter.step(number, title, why) { Ok(()) } else { Err(WalkError::Stopped(number)) }
    }

    fn check(&mut self, passed: bool, what: &str, evidence: impl AsRef<str>) -> Result<(), WalkError> {
        self.reporter.check(passed, what, evidence.as_ref());
        if passed { Ok(()) } else { Err(WalkError::CheckFailed { step: self.step, what: what.to_string() }) }
    }

    fn broken(&self, message: impl std::fmt::Display) -> WalkError {
        WalkError::Broken { step: self.step, message: message.to_string() }
    }

    fn shop(&self) -> &Task {
        self.shop.as_ref().expect("the shop starts at step 1")
    }

    fn service(&self) -> &Task {
        self.service.as_ref().expect("the service starts at step 4")
    }

    fn load(&self) -> &Load {
        self.load.as_ref().expect("the load starts at step 3")
    }

    async fn all_steps(&mut self) -> Result<Summary, WalkError> {
        self.step_1().await?;
        self.step_2().await?;
        self.step_3().await?;
        self.step_4().await?;
        self.step_5().await?;
        self.step_6().await?;
        self.step_7().await?;
        self.step_8().await?;
        self.step_9().await?;
        self.step_10().await
    }

    async fn teardown(&mut self) {
        if let Some(mut load) = self.load.take() {
            load.stop().await;
        }
        if let Some(proxy) = self.proxy.take() {
            let _ = tokio::task::spawn_blocking(move || proxy.stop(ficus_proxy::Stop::Fast)).await;
        }
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
        if let Some(shop) = self.shop.take() {
            shop.stop().await;
        }
    }

    // ---- helpers -------------------------------------------------------------------

    async fn send(
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

    async fn admin_put(&self, url: String, body: Value) -> Result<Value, WalkError> {
        let (status, answer) =
            self.send(reqwest::Method::PUT, url.clone(), Some(body), Some(&self.admin_token)).await?;
        if !status.is_success() {
            return Err(self.broken(format!("PUT {url} answered {status}: {answer}")));
        }
        Ok(answer)
    }

    async fn set_catalog_switches(&self, body: Value) -> Result<Value, WalkError> {
        self.admin_put(format!("{}/api/admin/catalog", self.shop().base), body).await
    }

    /// Sets the stage of `routes` through the proxy's admin API, as `ficus stage` does.
    async fn stage(
        &mut self,
        routes: &[(&str, &str, &str)],
        stage: &str,
        percent: Option<u8>,
    ) -> Result<(), WalkError> {
        for (name, _, _) in routes {
            let mut body = json!({ "stage": stage, "reason": "ficus walkthrough" });
            if let Some(p) = percent {
                body["percent"] = json!(p);
            }
            self.admin_put(format!("{}/routes/{name}", self.admin_base), body).await?;
        }
        let names: Vec<&str> = routes.iter().map(|r| r.0).collect();
        let at = percent.map(|p| format!(" at {p} %")).unwrap_or_default();
        self.reporter.note(&format!("ficus stage {} {stage}{at}", names.join(", ")));
        Ok(())
    }

    /// Which upstream serves `path` for `cohort` now.
    async fn upstream_for(&self, path: &str, cohort: &str) -> Result<String, WalkError> {
        let url = format!("{}{path}", self.proxy_base);
        let resp = self
            .client
            .get(&url)
            .header(COHORT_HEADER, cohort)
            .send()
            .await
            .map_err(|e| self.broken(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(self.broken(format!("GET {url} answered {}", resp.status())));
        }
        Ok(resp.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string())
    }

    /// Waits (bounded) until the load has sent `more` requests beyond now, then checks
    /// that none of them failed.
    async fn load_keeps_flowing(&mut self, more: u64, during: &str) -> Result<(), WalkError> {
        let start = self.load().report().requests;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.load().report().requests < start + more && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = self.load().report();
        // The failure count ends the line, so no other figure reads as one.
        let evidence = format!(
            "{} orders acknowledged, {} requests sent, {} failed{}",
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

    /// Changes a product's price through the proxy and checks every later read and a
    /// checkout see it, whichever side serves them.
    async fn price_change_is_seen_everywhere(&mut self) -> Result<(), WalkError> {
        let proxy = self.proxy_base.clone();
        let (_, before) =
            self.send(reqwest::Method::GET, format!("{proxy}/api/products/{PRICE_PRODUCT}"), None, None).await?;
        let old =
            before["price_cents"].as_i64().ok_or_else(|| self.broken(format!("product {PRICE_PRODUCT}: {before}")))?;
        let new = old + 100 + i64::from(self.step);
        let (status, answer) = self
            .send(
                reqwest::Method::PUT,
                format!("{proxy}/api/products/{PRICE_PRODUCT}"),
                Some(json!({"price_cents": new})),
                Some(&self.admin_token),
            )
            .await?;
        self.check(
            status == StatusCode::OK,
            "a price change through the proxy is accepted",
            format!("PUT /api/products/{PRICE_PRODUCT} {old} → {new}: {status} {answer}"),
        )?;
        let mut seen = Vec::new();
        let mut sides = vec![("proxy", proxy.clone()), ("catalog service", self.service().base.clone())];
        if !self.load_reads_from_service_only() {
            sides.push(("monolith", self.shop().base.clone()));
        }
        for (side, base) in &sides {
            let (_, p) =
                self.send(reqwest::Method::GET, format!("{base}/api/products/{PRICE_PRODUCT}"), None, None).await?;
            seen.push(format!("{side} {}", p["price_cents"]));
        }
        let all_new = seen.iter().all(|s| s.ends_with(&new.to_string()));
        self.check(all_new, "every side reads the new price", seen.join(", "))?;
        // A checkout through the proxy charges it.
        let email = format!("price-check-{}-{}@walkthrough.example", self.step, self.admin_token);
        let creds = json!({"email": email, "password": "walkthrough-pass", "name": "Price Check"});
        self.send(reqwest::Method::POST, format!("{proxy}/api/users"), Some(creds.clone()), None).await?;
        let (_, session) = self.send(reqwest::Method::POST, format!("{proxy}/api/sessions"), Some(creds), None).await?;
        let token = session["token"].as_str().unwrap_or_default().to_string();
        self.send(
            reqwest::Method::POST,
            format!("{proxy}/api/cart/items"),
            Some(json!({"product_id": PRICE_PRODUCT, "quantity": 1})),
            Some(&token),
        )
        .await?;
        let (status, order) = self
            .send(
                reqwest::Method::POST,
                format!("{proxy}/api/orders"),
                Some(json!({"card_number": "4242424242424242"})),
                Some(&token),
            )
            .await?;
        self.check(
            status == StatusCode::CREATED && order["total_cents"].as_i64() == Some(new),
            "checkout charges the new price",
            format!("order {} for {} cents ({status})", order["id"], order["total_cents"]),
        )
    }

    /// True once the shop's own catalog tables are gone (step 9 on).
    fn load_reads_from_service_only(&self) -> bool {
        self.step >= 9
    }

    fn proxy_config(&self, with_catalog: bool, read_stage: &str) -> String {
        let shop_addr = self.shop().base.trim_start_matches("http://").to_string();
        let mut toml = format!(
            "# Written by `ficus walkthrough`: the proxy in front of Ficus Shop.\nversion = 1\n\n[listen]\nhttp = \"{}\"\nadmin = \"{}\"\n\n[upstreams.monolith]\naddrs = [\"{shop_addr}\"]\n",
            self.proxy_base.trim_start_matches("http://"),
            self.admin_base.trim_start_matches("http://"),
        );
        if with_catalog {
            let service_addr = self.service().base.trim_start_matches("http://").to_string();
            toml += &format!("\n[upstreams.catalog]\naddrs = [\"{service_addr}\"]\nhealth = \"/healthz\"\n");
        }
        toml += "\n[default]\nupstream = \"monolith\"\n";
        if with_catalog {
            for (routes, stage) in [(READ_ROUTES, read_stage), (WRITE_ROUTES, "monolith")] {
                for (name, path, method) in routes {
                    toml += &format!(
                        "\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nmethods = [\"{method}\"]\nupstream = \"catalog\"\nstage = \"{stage}\"\ncohort = \"header:{COHORT_HEADER}\"\nfallback = {}\n",
                        method == "GET"
                    );
                }
            }
        }
        toml
    }

    fn config_path(&self) -> PathBuf {
        self.opts.data_dir.join("ficus.toml")
    }

    // ---- the steps -----------------------------------------------------------------

    async fn step_1(&mut self) -> Result<(), WalkError> {
        self.begin(1, "Start the monolith and record golden responses", "Ficus Shop runs on SQLite with its demo catalogue. What its catalog endpoints answer now is the contract every later step must keep.")?;
        let dir = self.opts.data_dir.clone();
        for old in ["shop", "catalog"] {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        for old in ["ficus.toml", "ficus.audit.jsonl"] {
            let _ = std::fs::remove_file(dir.join(old));
        }
        std::fs::create_dir_all(&dir).map_err(|e| self.broken(format!("creating {}: {e}", dir.display())))?;
        let mut config =
            shop::Config::new("127.0.0.1:0".parse().expect("address"), shop::DbLocation::SqliteDir(dir.join("shop")));
        config.seed = true;
        config.admin_token = Some(self.admin_token.clone());
        let app = shop::Application::build(config).await.map_err(|e| self.broken(format!("starting the shop: {e}")))?;
        let base = format!("http://{}", app.local_addr());
        let pool = app.pool().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        self.reporter
            .note(&format!("shop listening on {base}, database {}", dir.join("shop").join("shop.db").display()));
        self.shop = Some(Task { base: base.clone(), pool, stop: Some(stop), task });
        // The price-check product never runs out, so its checkouts always succeed.
        self.admin_put(format!("{base}/api/inventory/{PRICE_PRODUCT}"), json!({"stock": 100_000})).await?;
        self.golden = golden::record(&self.client, &base).await.map_err(|e| self.broken(e))?;
        let ok = self.golden.iter().filter(|r| r.status == 200).count();
        let total = self.golden.first().and_then(|r| r.body["total"].as_i64()).unwrap_or(0);
        self.check(
            self.golden.len() == CATALOG_REQUESTS.len() && ok >= 10 && total == 200,
            "golden responses recorded",
            format!(
                "{} requests, {ok} answered 200, the rest the contract's errors; {total} products",
                self.golden.len()
            ),
        )
    }

    async fn step_2(&mut self) -> Result<(), WalkError> {
        self.begin(2, "Analyze the monolith", "The analyzer reads the shop's source and proposes services. The catalog is the first to extract; its tangles are what the next steps undo.")?;
        let source = self.opts.shop_source.clone();
        let report =
            tokio::task::spawn_blocking(move || ficus_analyzer::analyze(&source, &ficus_analyzer::Options::default()))
                .await
                .map_err(|e| self.broken(e))?
                .map_err(|e| self.broken(format!("analyzing {}: {e}", self.opts.shop_source.display())))?;
        let catalog = report.services.iter().find(|s| s.units.iter().any(|u| u.id.starts_with("shop::catalog")));
        let Some(catalog) = catalog else {
            return self.check(
                false,
                "the analyzer proposes a catalog service",
                format!("services: {:?}", report.services.iter().map(|s| &s.name).collect::<Vec<_>>()),
            );
        };
        let endpoints: Vec<String> = catalog.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
        self.check(
            ["GET /api/products", "GET /api/products/{id}", "GET /api/categories"]
                .iter()
                .all(|e| endpoints.iter().any(|x| x == e)),
            "the catalog boundary holds its endpoints",
            format!("service {:?}: {}", catalog.name, endpoints.join(", ")),
        )?;
        let owns = catalog.tables.owns.clone();
        self.check(
            owns.iter().any(|t| t == "products") && owns.iter().any(|t| t == "categories"),
            "the catalog owns its tables",
            format!("owns {}; reads {}", owns.join(", "), catalog.tables.reads.join(", ")),
        )?;
        let name = catalog.name.clone();
        let tangles: Vec<String> = report
            .shared_tables
            .iter()
            .filter(|t| t.writers.contains(&name) || t.readers.contains(&name))
            .map(|t| format!("{} (written by {}, read by {})", t.table, names(&t.writers), names(&t.readers)))
            .collect();
        for dep in report.dependencies.iter().filter(|d| d.from == name || d.to == name) {
            let example =
                dep.evidence.first().map(|e| format!(" e.g. {}:{} {}", e.file, e.line, e.what)).unwrap_or_default();
            let tables =
                if dep.tables.is_empty() { String::new() } else { format!(", tables {}", dep.tables.join(", ")) };
            self.reporter.note(&format!("dependency {} → {}: {} calls{tables};{example}", dep.from, dep.to, dep.calls));
        }
        self.check(
            tangles.iter().any(|t| t.starts_with("products ")),
            "the tangles are found: other services read the catalog's tables",
            tangles.join("; "),
        )
    }

    async fn step_3(&mut self) -> Result<(), WalkError> {
        self.begin(3, "Put the proxy in front", "Every request now passes through ficus proxy; with no routes, all of it goes to the monolith, and nothing may change for clients. The shoppers start here and shop until the end.")?;
        self.proxy_base = "http://127.0.0.1:0".into();
        self.admin_base = "http://127.0.0.1:0".into();
        let path = self.config_path();
        std::fs::write(&path, self.proxy_config(false, "monolith"))
            .map_err(|e| self.broken(format!("writing {}: {e}", path.display())))?;
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
        // Write the bound ports back, so the file says where the proxy really is.
        std::fs::write(&path, self.proxy_config(false, "monolith")).map_err(|e| self.broken(e))?;
        self.reporter.note(&format!(
            "proxy on {}, admin API on {}, config {}",
            self.proxy_base,
            self.admin_base,
            path.display()
        ));
        let replay = golden::record(&self.client, &self.proxy_base).await.map_err(|e| self.broken(e))?;
        let diffs: Vec<String> =
            self.golden.iter().zip(&replay).filter_map(|(a, b)| golden::difference(a, b)).collect();
        self.check(
            diffs.is_empty(),
            "golden responses are unchanged through the proxy",
            if diffs.is_empty() { format!("{} of {} identical", replay.len(), replay.len()) } else { diffs.join("; ") },
        )?;
        let upstream = self.upstream_for("/api/products/1", "walkthrough").await?;
        self.check(upstream == "monolith", "the monolith serves everything", format!("x-ficus-upstream: {upstream}"))?;
        let mut config = LoadConfig::new(&self.proxy_base);
        config.shoppers = self.opts.shoppers;
        let load = Load::start(config).await.map_err(|e| self.broken(format!("starting the shoppers: {e}")))?;
        self.load = Some(load);
        self.load_keeps_flowing(50, "while the shoppers start").await
    }

    async fn step_4(&mut self) -> Result<(), WalkError> {
        self.begin(4, "Start the catalog service and move its data", "The service gets its own database. The shop writes every catalog change through to it from now on, the backfill copies what exists, and the parity check compares every row.")?;
        let dir = self.opts.data_dir.join("catalog");
        let (location, database) = match &self.opts.catalog_database {
            Some(url) => (shop::DbLocation::Url(url.clone()), shop::db::redact(url)),
            None => (shop::DbLocation::SqliteDir(dir.clone()), dir.join("catalog.db").display().to_string()),
        };
        let app = catalog_service::Application::build(catalog_service::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            db: location,
            admin_token: Some(self.admin_token.clone()),
            inventory_url: Some(self.shop().base.clone()),
            inventory_token: Some(self.admin_token.clone()),
        })
        .await
        .map_err(|e| self.broken(format!("starting the catalog service: {e}")))?;
        let base = format!("http://{}", app.local_addr());
        let pool = app.pool().clone();
        let postgres = self.opts.catalog_database.as_deref().is_some_and(|u| u.starts_with("postgres"));
        self.service_dialect = if postgres { shop::Dialect::Postgres } else { shop::Dialect::Sqlite };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        self.reporter.note(&format!("catalog service listening on {base}, database {database}"));
        self.service = Some(Task { base: base.clone(), pool, stop: Some(stop), task });
        self.set_catalog_switches(
            json!({"reads": "local", "write_through": true, "url": base, "token": self.admin_token}),
        )
        .await?;
        self.reporter.note("shop: catalog writes now go through to the service");
        let report = catalog_service::sync::backfill(&self.shop().pool, &self.service().pool, self.service_dialect)
            .await
            .map_err(|e| self.broken(format!("backfill: {e}")))?;
        self.reporter
            .note(&format!("backfill copied {} categories and {} products", report.categories, report.products));
        let parity = catalog_service::sync::parity(&self.shop().pool, &self.service().pool)
            .await
            .map_err(|e| self.broken(format!("parity: {e}")))?;
        let named: Vec<String> = parity.differences.iter().map(|d| format!("{} {}", d.table, d.id)).collect();
        self.check(
            parity.in_parity(),
            "parity: both copies hold the same rows",
            format!(
                "products {}/{}, categories {}/{} (shop/service), every row's checksum equal{}",
                parity.products.0,
                parity.products.1,
                parity.categories.0,
                parity.categories.1,
                if named.is_empty() { String::new() } else { format!("; differing: {}", named.join(", ")) }
            ),
        )?;
        let path = self.config_path();
        std::fs::write(&path, self.proxy_config(true, "monolith")).map_err(|e| self.broken(e))?;
        let (status, answer) = self
            .send(reqwest::Method::POST, format!("{}/reload", self.admin_base), None, Some(&self.admin_token))
            .await?;
        let routes = self
            .send(reqwest::Method::GET, format!("{}/routes", self.admin_base), None, Some(&self.admin_token))
            .await?
            .1;
        let listed = routes["routes"].as_array().cloned().unwrap_or_default();
        let on_monolith = listed.iter().filter(|r| r["stage"] == "monolith").count();
        self.check(
            status.is_success() && listed.len() == 6 && on_monolith == 6,
            "the proxy reloads with the catalog's six routes, all on the monolith",
            format!("POST /reload: {status} {answer}; {} routes, {on_monolith} at stage monolith", listed.len()),
        )?;
        self.price_change_is_seen_everywhere().await?;
        self.load_keeps_flowing(50, "while the data moved").await
    }

    async fn step_5(&mut self) -> Result<(), WalkError> {
        self.begin(5, "Compare the monolith and the service", "Replay the recorded requests against both and diff the answers; then put the catalog's reads in shadow, where the proxy mirrors live requests to the service and diffs its answers, while clients are still served by the monolith. The service must answer exactly like the monolith before it takes any traffic.")?;
        let (shop, service) = (self.shop().base.clone(), self.service().base.clone());
        let mut diffs = Vec::new();
        for path in CATALOG_REQUESTS {
            // Shoppers change stock between two requests now and then; a real difference
            // persists over three tries, a race does not.
            let mut last = None;
            for _ in 0..3 {
                let a = golden::fetch(&self.client, &shop, path).await.map_err(|e| self.broken(e))?;
                let b = golden::fetch(&self.client, &service, path).await.map_err(|e| self.broken(e))?;
                last = golden::difference(&a, &b);
                if last.is_none() {
                    break;
                }
            }
            diffs.extend(last);
        }
        self.check(
            diffs.is_empty(),
            "zero differences",
            if diffs.is_empty() {
                format!("{} requests, identical answers", CATALOG_REQUESTS.len())
            } else {
                diffs.join("; ")
            },
        )?;
        self.shadow_compare().await
    }

    /// The same comparison on live traffic: the read routes go to stage `shadow`, the
    /// proxy mirrors their requests to the service and diffs its answers against the
    /// monolith's, until every read route has enough comparisons for the gate that
    /// step 6 must pass to leave shadow.
    async fn shadow_compare(&mut self) -> Result<(), WalkError> {
        const ENOUGH: u64 = 120;
        self.stage(&READ_ROUTES, "shadow", None).await?;
        let proxy = self.proxy_base.clone();
        // Replay the recorded reads (not the stock-dependent ones, which shoppers change
        // between the two answers) until every route has been compared often enough.
        let replay: Vec<&str> = CATALOG_REQUESTS.iter().copied().filter(|p| !p.contains("in_stock")).collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut figures = Vec::new();
        loop {
            for path in &replay {
                golden::fetch(&self.client, &proxy, path).await.map_err(|e| self.broken(e))?;
            }
            figures.clear();
            let mut done = true;
            for (name, _, _) in READ_ROUTES {
                let url = format!("{}/diffs?route={name}", self.admin_base);
                let (_, d) = self.send(reqwest::Method::GET, url, None, Some(&self.admin_token)).await?;
                let (compared, mismatched) =
                    (d["compared"].as_u64().unwrap_or(0), d["mismatched"].as_u64().unwrap_or(0));
                let sample = d["samples"][0]["diff"][0]["pointer"]
                    .as_str()
                    .map(|p| format!(" (e.g. at {p})"))
                    .unwrap_or_default();
                figures.push((name, compared, mismatched, sample));
                done &= compared >= ENOUGH;
            }
            if done || Instant::now() > deadline {
                break;
            }
        }
        let all_compared = figures.iter().all(|(_, compared, _, _)| *compared >= ENOUGH);
        let all_matched = figures.iter().all(|(_, _, mismatched, _)| *mismatched == 0);
        let evidence: Vec<String> = figures
            .iter()
            .map(|(name, compared, mismatched, sample)| {
                format!("{name}: {compared} compared, {mismatched} mismatched{sample}")
            })
            .collect();
        self.check(
            all_compared && all_matched,
            "shadow traffic: the service answers like the monolith",
            evidence.join("; "),
        )?;
        self.load_keeps_flowing(50, "in shadow").await
    }

    async fn step_6(&mut self) -> Result<(), WalkError> {
        self.begin(6, "Canary: 10 %, then 50 % of cohorts", "Leaving shadow is gated on the diff result: the proxy refuses the canary unless enough comparisons matched. Each shopper is a cohort (x-user-id); a cohort always lands on the same side, and raising the percent only moves cohorts to the service, never back.")?;
        const PROBES: usize = 300;
        let mut on_service_before: Vec<bool> = vec![false; PROBES];
        for percent in [10u8, 50] {
            self.stage(&READ_ROUTES, "canary", Some(percent)).await?;
            self.load().begin_phase();
            let mut first = Vec::with_capacity(PROBES);
            for k in 0..PROBES {
                first.push(self.upstream_for("/api/products/1", &format!("probe-{k}")).await? == "catalog");
            }
            let mut changed = 0;
            for (k, was) in first.iter().enumerate() {
                if (self.upstream_for("/api/products/1", &format!("probe-{k}")).await? == "catalog") != *was {
                    changed += 1;
                }
            }
            let moved_back = first.iter().zip(&on_service_before).filter(|(now, before)| **before && !**now).count();
            let share = first.iter().filter(|s| **s).count() as f64 * 100.0 / PROBES as f64;
            self.check(
                changed == 0 && moved_back == 0 && (share - f64::from(percent)).abs() <= 8.0,
                &format!("{percent} %: cohorts sticky and monotone, share near {percent} %"),
                format!("{share:.1} % of {PROBES} probe cohorts on the service; {changed} changed side on a second pass; {moved_back} moved back"),
            )?;
            on_service_before = first;
            self.load_keeps_flowing(100, &format!("at {percent} %")).await?;
            let seen = self.load().catalog_upstreams();
            let wobbly: Vec<String> =
                seen.iter().filter(|(_, u)| u.len() != 1).map(|(c, u)| format!("{c}: {u:?}")).collect();
            let sides: Vec<String> =
                seen.iter().map(|(c, u)| format!("{c}→{}", u.iter().cloned().collect::<Vec<_>>().join("/"))).collect();
            self.check(wobbly.is_empty(), "every shopper's cohort stays on one side", sides.join(", "))?;
        }
        Ok(())
    }

    async fn step_7(&mut self) -> Result<(), WalkError> {
        self.begin(7, "Cut over", "All catalog reads go to the service. The monolith still owns the writes (and writes through), so it can take the reads back at any moment.")?;
        self.stage(&READ_ROUTES, "service", None).await?;
        let mut sides = std::collections::BTreeSet::new();
        for k in 0..50 {
            sides.insert(self.upstream_for("/api/products/1", &format!("probe-{k}")).await?);
            sides.insert(self.upstream_for("/api/categories", &format!("probe-{k}")).await?);
        }
        self.check(
            sides.len() == 1 && sides.contains("catalog"),
            "the service serves every catalog read",
            format!("upstreams seen: {sides:?}"),
        )?;
        self.price_change_is_seen_everywhere().await?;
        self.load_keeps_flowing(100, "after the cut-over").await
    }

    async fn step_8(&mut self) -> Result<(), WalkError> {
        self.begin(8, "Rollback drill", "Back to the monolith and forward again, live: no restart, every request served. This is what makes every step safe to take.")?;
        for (stage, want) in [("monolith", "monolith"), ("service", "catalog")] {
            self.stage(&READ_ROUTES, stage, None).await?;
            let mut sides = std::collections::BTreeSet::new();
            for k in 0..30 {
                sides.insert(self.upstream_for("/api/products/1", &format!("probe-{k}")).await?);
            }
            self.check(
                sides.len() == 1 && sides.contains(want),
                &format!("{stage}: every read served by the {want}"),
                format!("upstreams seen: {sides:?}"),
            )?;
            self.load_keeps_flowing(60, &format!("while switching to {stage}")).await?;
        }
        // The proxy's counters run since it started: one process that served the detail
        // route from both sides across the drill was never restarted.
        let routes = self
            .send(reqwest::Method::GET, format!("{}/routes", self.admin_base), None, Some(&self.admin_token))
            .await?
            .1;
        let detail = routes["routes"].as_array().into_iter().flatten().find(|r| r["name"] == "catalog-detail").cloned();
        let (monolith, service) = detail
            .map(|r| (r["requests_monolith"].as_u64().unwrap_or(0), r["requests_service"].as_u64().unwrap_or(0)))
            .unwrap_or((0, 0));
        self.check(
            monolith > 0 && service > 0,
            "no restart: one proxy process served both sides through the drill",
            format!("catalog-detail since the proxy started: {monolith} from the monolith, {service} from the service"),
        )
    }

    async fn step_9(&mut self) -> Result<(), WalkError> {
        self.begin(9, "Switch the monolith's product reads to the service", "Branch by abstraction: cart, orders and inventory read products through one interface; flip it to the service, move the catalog's writes there, end write-through, and rename the monolith's catalog tables away to prove nothing needs them.")?;
        let service = self.service().base.clone();
        let shown = self
            .set_catalog_switches(
                json!({"reads": "service", "write_through": true, "url": service, "token": self.admin_token}),
            )
            .await?;
        self.reporter.note(&format!("shop: product reads from {}", shown["url"].as_str().unwrap_or("?")));
        self.stage(&WRITE_ROUTES, "service", None).await?;
        self.set_catalog_switches(json!({"reads": "service", "write_through": false, "url": service})).await?;
        for sql in
            ["ALTER TABLE products RENAME TO products_retired", "ALTER TABLE categories RENAME TO categories_retired"]
        {
            sqlx::query(sql).execute(&self.shop().pool).await.map_err(|e| self.broken(format!("{sql}: {e}")))?;
            self.reporter.note(&format!("shop database: {sql}"));
        }
        self.load_keeps_flowing(100, "without the monolith's catalog tables").await?;
        let orders_before = self.load().report().orders_acknowledged;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.load().report().orders_acknowledged == orders_before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let orders_after = self.load().report().orders_acknowledged;
        self.check(
            orders_after > orders_before,
            "browsing, carts and checkout still work",
            format!("orders acknowledged {orders_before} → {orders_after}"),
        )?;
        self.price_change_is_seen_everywhere().await?;
        self.guard_holds_the_retired_tables().await
    }

    /// The guard (`ficus analyze --check`) on the shop's source: outside the local
    /// implementation left to delete (the catalog module, the local product reads of cart
    /// and orders, the seed that fills the local tables), nothing touches the catalog's
    /// tables any more.
    async fn guard_holds_the_retired_tables(&mut self) -> Result<(), WalkError> {
        let rules =
            ficus_analyzer::guard::Rules::parse(CATALOG_GUARD).map_err(|e| self.broken(format!("rules: {e}")))?;
        let source = self.opts.shop_source.clone();
        let analysis = tokio::task::spawn_blocking(move || {
            ficus_analyzer::analysis(&source, &ficus_analyzer::Options::default(), &|_| {})
        })
        .await
        .map_err(|e| self.broken(e))?
        .map_err(|e| self.broken(format!("analyzing: {e}")))?;
        let verdict = rules.check(&analysis);
        let left: usize = analysis
            .report
            .tables
            .iter()
            .filter(|t| t.name == "products" || t.name == "categories")
            .map(|t| t.readers.len() + t.writers.len())
            .sum();
        let (held, detail) = match &verdict {
            Ok(v) if v.is_empty() => (
                left > 0,
                format!(
                    "{} guard rules hold; {left} unit accesses left, all in the local implementation to delete",
                    rules.forbid.len()
                ),
            ),
            Ok(v) => (false, v.iter().take(5).map(ToString::to_string).collect::<Vec<_>>().join("; ")),
            Err(e) => (false, format!("the rules name something the shop does not have: {e}")),
        };
        self.check(
            held,
            "the guard holds: only the local implementation, left to delete, touches the catalog's tables",
            detail,
        )
    }

    async fn step_10(&mut self) -> Result<Summary, WalkError> {
        self.begin(10, "Retire the monolith's catalog routes", "The shop's own catalog endpoints now answer 410 Gone; the proxy serves all catalog traffic from the service. Then the shoppers stop and every order they were told about is looked up.")?;
        let service = self.service().base.clone();
        self.set_catalog_switches(json!({"reads": "service", "url": service, "retired": true})).await?;
        let (status, _) =
            self.send(reqwest::Method::GET, format!("{}/api/products/1", self.shop().base), None, None).await?;
        self.check(
            status == StatusCode::GONE,
            "the monolith's catalog endpoints are retired",
            format!("GET shop /api/products/1 → {status}"),
        )?;
        let mut off = Vec::new();
        for (path, recorded) in CATALOG_REQUESTS.iter().zip(&self.golden.clone()) {
            let resp = self
                .client
                .get(format!("{}{path}", self.proxy_base))
                .header(COHORT_HEADER, "walkthrough")
                .send()
                .await
                .map_err(|e| self.broken(e))?;
            let upstream =
                resp.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            if upstream != "catalog" || resp.status().as_u16() != recorded.status {
                off.push(format!("{path} → {} from {upstream}", resp.status()));
            }
        }
        self.check(
            off.is_empty(),
            "the proxy serves all catalog traffic from the service",
            if off.is_empty() {
                format!(
                    "{} catalog requests, all from the catalog service with the recorded statuses",
                    CATALOG_REQUESTS.len()
                )
            } else {
                off.join("; ")
            },
        )?;
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
        let routes = self
            .send(reqwest::Method::GET, format!("{}/routes", self.admin_base), None, Some(&self.admin_token))
            .await?
            .1;
        let moved = routes["routes"].as_array().into_iter().flatten().filter(|r| r["stage"] == "service").count();
        let progress = &routes["progress"];
        let share = |k: &str| progress[k].as_f64().unwrap_or(0.0) * 100.0;
        let catalog_routes = (READ_ROUTES.len() + WRITE_ROUTES.len()) as u64;
        self.check(
            progress["service"].as_u64() == Some(catalog_routes)
                && progress["endpoint_share"].as_f64() == Some(1.0)
                && progress["requests_service"].as_u64() > Some(0),
            "the proxy reports the migration's progress",
            format!(
                "{} of {} routes on their service ({:.0} % of endpoints); {:.1} % of all requests answered by the service ({} of {})",
                progress["service"],
                progress["routes"],
                share("endpoint_share"),
                share("traffic_share"),
                progress["requests_service"],
                progress["requests_total"]
            ),
        )?;
        self.audit_is_complete(&routes).await?;
        let count = |table: &'static str| {
            let pool = self.service().pool.clone();
            async move { sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&pool).await }
        };
        let products = count("products").await.map_err(|e| self.broken(e))?;
        let categories = count("categories").await.map_err(|e| self.broken(e))?;
        Ok(Summary {
            load: report,
            orders,
            endpoints_moved: moved,
            products_moved: products,
            categories_moved: categories,
        })
    }

    /// The proxy's audit log holds every stage change of the catalog routes as an unbroken
    /// chain: each entry starts where the one before ended, and the last ends where the route is
    /// now (`routes`: the answer of `GET /routes`).
    async fn audit_is_complete(&mut self, routes: &Value) -> Result<(), WalkError> {
        let url = format!("{}/audit", self.admin_base);
        let (_, audit) = self.send(reqwest::Method::GET, url, None, Some(&self.admin_token)).await?;
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        let mut broken = Vec::new();
        let mut changes = 0;
        for (name, _, _) in READ_ROUTES.iter().chain(&WRITE_ROUTES) {
            let mine: Vec<&Value> = entries.iter().filter(|e| e["route"] == *name).collect();
            changes += mine.len();
            // The chain starts where the walkthrough's config put the route: at the monolith.
            let first = mine.first().map(|e| e["from"]["stage"].clone()).unwrap_or(Value::Null);
            if first != "monolith" && first != "(new route)" {
                broken.push(format!("{name}: the first audited change starts at {first}"));
            }
            for pair in mine.windows(2) {
                if pair[0]["to"] != pair[1]["from"] {
                    broken.push(format!("{name}: {} then {}", pair[0]["to"], pair[1]["from"]));
                }
            }
            let now = routes["routes"].as_array().into_iter().flatten().find(|r| r["name"] == *name);
            let now = now.map(|r| r["stage"].clone()).unwrap_or(Value::Null);
            let last = mine.last().map(|e| e["to"]["stage"].clone()).unwrap_or(Value::Null);
            if last != now {
                broken.push(format!("{name}: the last audited stage is {last}, the route is at {now}"));
            }
        }
        let walked = entries.iter().filter(|e| e["why"] == "ficus walkthrough").count();
        self.check(
            broken.is_empty() && walked > 0,
            "every stage change is in the proxy's audit log",
            if broken.is_empty() {
                format!("{changes} changes of the catalog routes, each with its time, from, to, why and by whom; {walked} made by this walkthrough")
            } else {
                broken.join("; ")
            },
        )
    }
}

/// Service names joined for a person, or "none".
fn names(list: &[String]) -> String {
    if list.is_empty() { "none".to_string() } else { list.join("/") }
}
