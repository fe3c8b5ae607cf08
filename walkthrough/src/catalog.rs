//! The catalog's extraction from Ficus Shop, each step run and checked.
//!
//! The data's path, and why no change is lost: once the service runs (`move_data`) the
//! shop writes every catalog change through to it inside its own transaction
//! (write-through); the catalog's reads move to the service route by route through the
//! proxy (shadow, canary, then cut-over); at `switch_reads` the shop itself starts reading
//! products from the service (branch by abstraction), the catalog's writes move to the
//! service, write-through ends, and the shop's own catalog tables are renamed away. A price
//! change made through the proxy after `move_data`, `cut_over` and `switch_reads` must be
//! seen by every read and charged by checkout.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::engine::{Extraction, Task, Walk, WalkError, names_or_none, routes_from_plan};
use crate::golden::{self, CATALOG_REQUESTS, Recorded};
use crate::load::COHORT_HEADER;

/// What the catalog's steps share.
#[derive(Default)]
pub(crate) struct CatalogState {
    /// The catalog answers recorded before anything moved.
    golden: Vec<Recorded>,
    /// The catalog service, once started.
    pub(crate) service: Option<Task>,
    service_dialect: Option<shop::Dialect>,
    /// The catalog's read routes (moved by canary) and write routes (moved with the reads' switch).
    reads: Vec<String>,
    writes: Vec<String>,
    /// Price changes made so far (each new price differs).
    price_changes: i64,
    /// The shop's catalog tables have been renamed away.
    tables_retired: bool,
}

/// The product whose price the walkthrough changes to check no change is lost.
const PRICE_PRODUCT: i64 = 17;
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

impl Walk<'_> {
    /// The catalog's steps, after the shared ones.
    pub(crate) async fn extract_catalog(&mut self) -> Result<(), WalkError> {
        self.move_catalog_data().await?;
        self.compare_catalog().await?;
        self.canary_catalog().await?;
        self.cut_over_catalog().await?;
        self.rollback_drill_catalog().await?;
        self.switch_catalog_reads().await?;
        self.retire_catalog().await
    }

    fn catalog_service(&self) -> &Task {
        self.catalog.service.as_ref().expect("the catalog service starts in move_data")
    }

    async fn set_catalog_switches(&self, body: Value) -> Result<Value, WalkError> {
        self.admin_put(format!("{}/api/admin/catalog", self.shop().base), body).await
    }

    /// Changes a product's price through the proxy and checks every later read and a
    /// checkout see it, whichever side serves them.
    async fn price_change_is_seen_everywhere(&mut self) -> Result<(), WalkError> {
        let proxy = self.proxy_base.clone();
        let (_, before) =
            self.send(reqwest::Method::GET, format!("{proxy}/api/products/{PRICE_PRODUCT}"), None, None).await?;
        let old =
            before["price_cents"].as_i64().ok_or_else(|| self.broken(format!("product {PRICE_PRODUCT}: {before}")))?;
        self.catalog.price_changes += 1;
        let new = old + 100 + self.catalog.price_changes;
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
        let mut sides = vec![("proxy", proxy.clone()), ("catalog service", self.catalog_service().base.clone())];
        if !self.catalog.tables_retired {
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
        let email = format!("price-check-{}-{}@walkthrough.example", self.catalog.price_changes, self.admin_token);
        let token = self.new_user(&proxy, &email).await?;
        let (status, order) = self.buy(&proxy, &token, PRICE_PRODUCT).await?;
        self.check(
            status == StatusCode::CREATED && order["total_cents"].as_i64() == Some(new),
            "checkout charges the new price",
            format!("order {} for {} cents ({status})", order["id"], order["total_cents"]),
        )
    }

    // ---- the steps -----------------------------------------------------------------

    /// The catalog's golden answers, recorded from the shop before anything moves.
    pub(crate) async fn record_catalog_golden(&mut self) -> Result<(), WalkError> {
        let base = self.shop().base.clone();
        // The price-check product never runs out, so its checkouts always succeed.
        self.admin_put(format!("{base}/api/inventory/{PRICE_PRODUCT}"), json!({"stock": 100_000})).await?;
        self.catalog.golden = golden::record(&self.client, &base).await.map_err(|e| self.broken(e))?;
        let recorded = self.catalog.golden.len();
        let ok = self.catalog.golden.iter().filter(|r| r.status == 200).count();
        let total = self.catalog.golden.first().and_then(|r| r.body["total"].as_i64()).unwrap_or(0);
        self.check(
            recorded == CATALOG_REQUESTS.len() && ok >= 10 && total == 200,
            "catalog: golden responses recorded",
            format!("{recorded} requests, {ok} answered 200, the rest the contract's errors; {total} products"),
        )
    }

    /// What the analyzer says of the catalog: its endpoints, its tables, and the tangles
    /// (other services reading its tables) the next steps undo.
    pub(crate) async fn analyze_catalog(&mut self, report: &ficus_analyzer::Report) -> Result<(), WalkError> {
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
            .map(|t| {
                format!("{} (written by {}, read by {})", t.table, names_or_none(&t.writers), names_or_none(&t.readers))
            })
            .collect();
        for dep in report.dependencies.iter().filter(|d| d.from == name || d.to == name) {
            let example =
                dep.evidence.first().map(|e| format!(" e.g. {}:{} {}", e.file, e.line, e.what)).unwrap_or_default();
            let tables =
                if dep.tables.is_empty() { String::new() } else { format!(", tables {}", dep.tables.join(", ")) };
            self.note(format!("dependency {} → {}: {} calls{tables};{example}", dep.from, dep.to, dep.calls));
        }
        self.check(
            tangles.iter().any(|t| t.starts_with("products ")),
            "the tangles are found: other services read the catalog's tables",
            tangles.join("; "),
        )
    }

    /// The recorded catalog answers, replayed through the proxy, are unchanged.
    pub(crate) async fn catalog_golden_through_proxy(&mut self) -> Result<(), WalkError> {
        let replay = golden::record(&self.client, &self.proxy_base).await.map_err(|e| self.broken(e))?;
        let diffs: Vec<String> =
            self.catalog.golden.iter().zip(&replay).filter_map(|(a, b)| golden::difference(a, b)).collect();
        self.check(
            diffs.is_empty(),
            "catalog: golden responses are unchanged through the proxy",
            if diffs.is_empty() { format!("{} of {} identical", replay.len(), replay.len()) } else { diffs.join("; ") },
        )
    }

    async fn move_catalog_data(&mut self) -> Result<(), WalkError> {
        self.begin("move_data", "Start the catalog service and move its data", "The service gets its own database. The shop writes every catalog change through to it from now on, the backfill copies what exists, and the parity check compares every row.")?;
        let (location, database) = self.opts.service_db("catalog", self.opts.catalog_database.as_ref());
        let app = catalog_service::Application::build(catalog_service::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            db: location,
            admin_token: Some(self.admin_token.clone()),
            inventory_url: Some(self.shop().base.clone()),
            inventory_token: Some(self.admin_token.clone()),
        })
        .await
        .map_err(|e| self.broken(format!("starting the catalog service: {e}")))?;
        let postgres = self.opts.catalog_database.as_deref().is_some_and(|u| u.starts_with("postgres"));
        self.catalog.service_dialect = Some(if postgres { shop::Dialect::Postgres } else { shop::Dialect::Sqlite });
        let task = Task::spawn(app.local_addr(), app.pool().clone(), |stopped| {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
        });
        let base = task.base.clone();
        self.note(format!("catalog service listening on {base}, database {database}"));
        self.catalog.service = Some(task);
        self.set_catalog_switches(
            json!({"reads": "local", "write_through": true, "url": base, "token": self.admin_token}),
        )
        .await?;
        self.note("shop: catalog writes now go through to the service");
        let dialect = self.catalog.service_dialect.unwrap_or(shop::Dialect::Sqlite);
        let report = catalog_service::sync::backfill(&self.shop().pool, &self.catalog_service().pool, dialect)
            .await
            .map_err(|e| self.broken(format!("backfill: {e}")))?;
        self.note(format!("backfill copied {} categories and {} products", report.categories, report.products));
        let parity = catalog_service::sync::parity(&self.shop().pool, &self.catalog_service().pool)
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
        let routes = routes_from_plan(self.plan(Extraction::Catalog)?);
        self.catalog.reads = routes.iter().filter(|r| r.reads()).map(|r| r.name.clone()).collect();
        self.catalog.writes = routes.iter().filter(|r| !r.reads()).map(|r| r.name.clone()).collect();
        let addr = self.catalog_service().addr().to_string();
        self.add_service_routes("catalog", &addr, routes).await?;
        self.price_change_is_seen_everywhere().await?;
        self.load_keeps_flowing(50, "while the data moved").await
    }

    async fn compare_catalog(&mut self) -> Result<(), WalkError> {
        self.begin("compare", "Compare the monolith and the service", "Replay the recorded requests against both and diff the answers; then put the catalog's reads in shadow, where the proxy mirrors live requests to the service and diffs its answers, while clients are still served by the monolith. The service must answer exactly like the monolith before it takes any traffic.")?;
        let (shop, service) = (self.shop().base.clone(), self.catalog_service().base.clone());
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
        let reads = self.catalog.reads.clone();
        self.stage(&reads, "shadow", None).await?;
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
            for name in &reads {
                let d = self.admin().diffs(name).await.map_err(|e| self.broken(format!("ficus diffs {name}: {e}")))?;
                let (compared, mismatched) = (d.compared, d.mismatched);
                let sample = serde_json::to_value(&d.samples).unwrap_or_default()[0]["diff"][0]["pointer"]
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

    async fn canary_catalog(&mut self) -> Result<(), WalkError> {
        self.begin("canary", "Canary: 10 %, then 50 % of cohorts", "Leaving shadow is gated on the diff result: the proxy refuses the canary unless enough comparisons matched. Each shopper is a cohort (x-user-id); a cohort always lands on the same side, and raising the percent only moves cohorts to the service, never back.")?;
        const PROBES: usize = 300;
        let mut on_service_before: Vec<bool> = vec![false; PROBES];
        let reads = self.catalog.reads.clone();
        for percent in [10u8, 50] {
            self.stage(&reads, "canary", Some(percent)).await?;
            let mut first = Vec::with_capacity(PROBES);
            for k in 0..PROBES {
                first.push(self.upstream_for("/api/products/1", &format!("probe-{k}"), None).await? == "catalog");
            }
            let mut changed = 0;
            for (k, was) in first.iter().enumerate() {
                if (self.upstream_for("/api/products/1", &format!("probe-{k}"), None).await? == "catalog") != *was {
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
            // The phase starts after the probes: a shopper's request routed before the
            // change may still be answered after it, and must not count for the new percent.
            self.load().begin_phase();
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

    async fn cut_over_catalog(&mut self) -> Result<(), WalkError> {
        self.begin("cut_over", "Cut over", "All catalog reads go to the service. The monolith still owns the writes (and writes through), so it can take the reads back at any moment.")?;
        let reads = self.catalog.reads.clone();
        self.stage(&reads, "service", None).await?;
        let mut sides = std::collections::BTreeSet::new();
        for k in 0..50 {
            sides.insert(self.upstream_for("/api/products/1", &format!("probe-{k}"), None).await?);
            sides.insert(self.upstream_for("/api/categories", &format!("probe-{k}"), None).await?);
        }
        self.check(
            sides.len() == 1 && sides.contains("catalog"),
            "the service serves every catalog read",
            format!("upstreams seen: {sides:?}"),
        )?;
        self.price_change_is_seen_everywhere().await?;
        self.load_keeps_flowing(100, "after the cut-over").await
    }

    async fn rollback_drill_catalog(&mut self) -> Result<(), WalkError> {
        self.begin("rollback_drill", "Rollback drill", "Back to the monolith and forward again, live: no restart, every request served. This is what makes every step safe to take.")?;
        let reads = self.catalog.reads.clone();
        for (stage, want) in [("monolith", "monolith"), ("service", "catalog")] {
            self.stage(&reads, stage, None).await?;
            let mut sides = std::collections::BTreeSet::new();
            for k in 0..30 {
                sides.insert(self.upstream_for("/api/products/1", &format!("probe-{k}"), None).await?);
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
        let (routes, _) = self.admin().routes().await.map_err(|e| self.broken(format!("GET /routes: {e}")))?;
        let detail = routes.iter().find(|r| r.path == "/api/products/{id}" && reads.contains(&r.name));
        let name = detail.map(|r| r.name.clone()).unwrap_or_default();
        let (monolith, service) = detail.map(|r| (r.requests_monolith, r.requests_service)).unwrap_or((0, 0));
        self.check(
            monolith > 0 && service > 0,
            "no restart: one proxy process served both sides through the drill",
            format!("{name} since the proxy started: {monolith} from the monolith, {service} from the service"),
        )
    }

    async fn switch_catalog_reads(&mut self) -> Result<(), WalkError> {
        self.begin("switch_reads", "Switch the monolith's product reads to the service", "Branch by abstraction: cart, orders and inventory read products through one interface; flip it to the service, move the catalog's writes there, end write-through, and rename the monolith's catalog tables away to prove nothing needs them.")?;
        let service = self.catalog_service().base.clone();
        let shown = self
            .set_catalog_switches(
                json!({"reads": "service", "write_through": true, "url": service, "token": self.admin_token}),
            )
            .await?;
        self.note(format!("shop: product reads from {}", shown["url"].as_str().unwrap_or("?")));
        let writes = self.catalog.writes.clone();
        self.stage(&writes, "service", None).await?;
        self.set_catalog_switches(json!({"reads": "service", "write_through": false, "url": service})).await?;
        for sql in
            ["ALTER TABLE products RENAME TO products_retired", "ALTER TABLE categories RENAME TO categories_retired"]
        {
            sqlx::query(sql).execute(&self.shop().pool).await.map_err(|e| self.broken(format!("{sql}: {e}")))?;
            self.note(format!("shop database: {sql}"));
        }
        self.catalog.tables_retired = true;
        self.load_keeps_flowing(100, "without the monolith's catalog tables").await?;
        self.orders_keep_coming(1, "without the monolith's catalog tables").await?;
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

    async fn retire_catalog(&mut self) -> Result<(), WalkError> {
        self.begin("retire", "Retire the monolith's catalog routes", "The shop's own catalog endpoints now answer 410 Gone; the proxy serves all catalog traffic from the service, and its audit log holds every stage change the extraction made.")?;
        let service = self.catalog_service().base.clone();
        self.set_catalog_switches(json!({"reads": "service", "url": service, "retired": true})).await?;
        let (status, _) =
            self.send(reqwest::Method::GET, format!("{}/api/products/1", self.shop().base), None, None).await?;
        self.check(
            status == StatusCode::GONE,
            "the monolith's catalog endpoints are retired",
            format!("GET shop /api/products/1 → {status}"),
        )?;
        let mut off = Vec::new();
        for (path, recorded) in CATALOG_REQUESTS.iter().zip(&self.catalog.golden.clone()) {
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
        let (routes, progress) = self.admin().routes().await.map_err(|e| self.broken(format!("GET /routes: {e}")))?;
        let names: Vec<String> = self.catalog.reads.iter().chain(&self.catalog.writes).cloned().collect();
        let moved = routes.iter().filter(|r| names.contains(&r.name) && r.stage == "service").count();
        self.check(
            moved == names.len() && progress.requests_service > 0,
            "the proxy reports the migration's progress",
            format!(
                "{moved} of {} catalog routes on their service; {} of {} routes in all ({:.0} % of endpoints); {:.1} % of all requests answered by a service ({} of {})",
                names.len(),
                progress.service,
                progress.routes,
                progress.endpoint_share * 100.0,
                progress.traffic_share * 100.0,
                progress.requests_service,
                progress.requests_total
            ),
        )?;
        self.audit_is_complete("catalog", &names).await?;
        let count = |table: &'static str| {
            let pool = self.catalog_service().pool.clone();
            async move { sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&pool).await }
        };
        let products = count("products").await.map_err(|e| self.broken(e))?;
        let categories = count("categories").await.map_err(|e| self.broken(e))?;
        self.figures.push(format!("catalog: {moved} endpoints now served by the catalog service"));
        self.figures.push(format!(
            "catalog: {products} products and {categories} categories in the service's own database; the monolith's copies renamed away"
        ));
        Ok(())
    }
}
