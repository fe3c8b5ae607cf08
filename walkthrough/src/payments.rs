//! The payments' extraction: a service checkout calls and waits for, through a guard.
//!
//! Payments has no endpoints of its own in the shop: checkout calls it. So nothing moves
//! through the proxy; what moves is the call. The payment history is copied to the
//! service (`move_data`), the shop's switch sends charges there (`cut_over`), and under
//! load the service is made slow, then taken down, then brought back (the drills):
//! checkout answers a clean 503 meanwhile, the breaker opens and closes (the shop's
//! `/metrics` shows it), and at the end every paid order has exactly one captured charge
//! and every captured charge a paid order.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::engine::{Extraction, Isolated, Serving, Walk, WalkError};

/// A product the walkthrough's own customers buy (kept in stock).
const PAY_PRODUCT: i64 = 31;
/// The guard's per-attempt timeout the walkthrough sets, and the slow drill's delay (over it).
const TIMEOUT_MS: u64 = 500;
const SLOW_MS: u64 = 1_500;

/// What the payments' steps share.
#[derive(Default)]
pub(crate) struct PaymentsState {
    pub(crate) service: Option<Isolated>,
    /// The service's database, opened from this runtime for the checks.
    pool: Option<shop::Pool>,
    customer: Option<String>,
}

/// A counter of the shop's `/metrics`, 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Walk<'_> {
    /// The payments' steps, after the shared ones.
    pub(crate) async fn extract_payments(&mut self) -> Result<(), WalkError> {
        self.move_payments_data().await?;
        self.cut_over_payments().await?;
        self.drill_slow_payments().await?;
        self.drill_down_payments().await?;
        self.reconcile_payments().await
    }

    fn payments_base(&self) -> Result<String, WalkError> {
        self.payments.service.as_ref().map(|s| s.base.clone()).ok_or_else(|| self.broken("the service is not running"))
    }

    fn payments_pool(&self) -> Result<&shop::Pool, WalkError> {
        self.payments.pool.as_ref().ok_or_else(|| self.broken("the service's database is not open"))
    }

    /// A demo customer checks out through the in-process gateway, and a declined card is refused.
    pub(crate) async fn record_payments_golden(&mut self) -> Result<(), WalkError> {
        let shop = self.shop().base.clone();
        self.admin_put(format!("{shop}/api/inventory/{PAY_PRODUCT}"), json!({"stock": 100_000})).await?;
        let token = self.new_user(&shop, &format!("payer-{}@walkthrough.example", self.admin_token)).await?;
        let (paid, order) = self.buy(&shop, &token, PAY_PRODUCT).await?;
        let declined = self.checkout_with(&shop, &token, "4000000000000002").await?;
        self.payments.customer = Some(token);
        self.check(
            paid == StatusCode::CREATED && declined.0 == StatusCode::PAYMENT_REQUIRED,
            "payments: golden answers recorded",
            format!(
                "checkout {paid} (order {} for {} cents); declined card {} {}",
                order["id"], order["total_cents"], declined.0, declined.1["error"]
            ),
        )
    }

    /// Puts the product in the cart and checks out with `card`.
    async fn checkout_with(&self, base: &str, token: &str, card: &str) -> Result<(StatusCode, Value), WalkError> {
        let item = json!({"product_id": PAY_PRODUCT, "quantity": 1});
        self.send(reqwest::Method::POST, format!("{base}/api/cart/items"), Some(item), Some(token)).await?;
        self.send(reqwest::Method::POST, format!("{base}/api/orders"), Some(json!({"card_number": card})), Some(token))
            .await
    }

    /// What the analyzer says of payments.
    pub(crate) async fn analyze_payments(&mut self) -> Result<(), WalkError> {
        let plan = self.plan(Extraction::Payments)?;
        let owns = plan.service.tables.owns.clone();
        let callers: Vec<String> = plan.incoming.iter().map(|d| format!("{} ({} calls)", d.from, d.calls)).collect();
        let endpoints = plan.service.endpoints.len();
        self.check(
            owns.iter().any(|t| t == "payments") && plan.incoming.iter().any(|d| d.from == "orders"),
            "the payments boundary owns its table; orders calls it",
            format!(
                "owns {}; {endpoints} endpoints to route; called by {} — a synchronous call that must survive payments being slow or down",
                owns.join(", "),
                callers.join(", ")
            ),
        )
    }

    /// Starts (or restarts, on the same address) the payments service.
    async fn start_payments_service(&mut self, addr: std::net::SocketAddr) -> Result<(), WalkError> {
        let (db, database) = self.opts.service_db("payments", self.opts.payments_database.as_ref());
        let config = payments_service::Config { listen: addr, db, admin_token: Some(self.admin_token.clone()) };
        let service = Isolated::start(move |stopped| async move {
            let app = payments_service::Application::build(config).await.map_err(|e| e.to_string())?;
            let addr = app.local_addr();
            let serving: Serving = Box::pin(app.run_until_stopped(async {
                let _ = stopped.await;
            }));
            Ok((addr, serving))
        })
        .await
        .map_err(|e| self.broken(format!("starting the payments service: {e}")))?;
        self.note(format!("payments service listening on {}, database {database}", service.base));
        self.payments.service = Some(service);
        Ok(())
    }

    /// The shop's payments switch (`GET /api/admin/payments`).
    async fn payments_switch(&self) -> Result<Value, WalkError> {
        let url = format!("{}/api/admin/payments", self.shop().base);
        Ok(self.send(reqwest::Method::GET, url, None, Some(&self.admin_token)).await?.1)
    }

    /// The shop's `/metrics`.
    async fn shop_metrics(&self) -> Result<String, WalkError> {
        let url = format!("{}/metrics", self.shop().base);
        let resp = self.client.get(&url).send().await.map_err(|e| self.broken(format!("{url}: {e}")))?;
        resp.text().await.map_err(|e| self.broken(format!("{url}: {e}")))
    }

    /// Waits (bounded) until the breaker is in `state`.
    async fn breaker_becomes(&self, state: &str, within: Duration) -> Result<bool, WalkError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.payments_switch().await?["breaker"] == state {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    async fn move_payments_data(&mut self) -> Result<(), WalkError> {
        self.begin("move_data", "Start the payments service and move the payment history", "The service gets its own database. Charges go to it from now on (the shop's switch, with the guard's settings); then the history of charges the shop made itself is copied over, each under its order's idempotency key, and compared.")?;
        self.start_payments_service("127.0.0.1:0".parse().expect("address")).await?;
        let (db, _) = self.opts.service_db("payments", self.opts.payments_database.as_ref());
        let (pool, _) = payments_service::connect(&db, 2).await.map_err(|e| self.broken(e))?;
        self.payments.pool = Some(pool);
        let url = self.payments_base()?;
        let switched = self
            .admin_put(
                format!("{}/api/admin/payments", self.shop().base),
                json!({"via": "service", "url": url, "token": self.admin_token, "timeout_ms": TIMEOUT_MS, "attempts": 3, "failure_threshold": 5, "open_for_ms": 1500, "max_concurrent": 16}),
            )
            .await?;
        self.note(format!(
            "shop: charges go to {} (timeout {} ms per attempt, {} attempts, breaker after {} calls in a row, {} at a time)",
            switched["url"].as_str().unwrap_or("?"),
            switched["timeout_ms"],
            switched["attempts"],
            switched["failure_threshold"],
            switched["max_concurrent"]
        ));
        // Checkouts that began before the switch finish on the in-process gateway: copy
        // until a pass finds nothing new.
        let mut copied = 0;
        let mut read = 0;
        for _ in 0..5 {
            let done = payments_service::sync::backfill(&self.shop().pool, self.payments_pool()?)
                .await
                .map_err(|e| self.broken(format!("backfill: {e}")))?;
            copied += done.copied;
            read = done.read;
            if done.copied == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let differ = payments_service::sync::parity(&self.shop().pool, self.payments_pool()?)
            .await
            .map_err(|e| self.broken(format!("parity: {e}")))?;
        self.check(
            differ.is_empty() && read > 0,
            "parity: every payment the shop made is a charge in the service",
            format!(
                "{read} payments in the shop, {copied} copied, {} differ{}",
                differ.len(),
                differ.first().map(|d| format!(" (e.g. order {}: {} vs {})", d.0, d.1, d.2)).unwrap_or_default()
            ),
        )?;
        self.load_keeps_flowing(50, "while the history moved").await
    }

    async fn cut_over_payments(&mut self) -> Result<(), WalkError> {
        self.begin("cut_over", "Checkout charges through the service", "Every checkout now calls the payments service with an idempotency key per charge; a retry of the same key is answered with the same charge, never a second one.")?;
        self.orders_keep_coming(3, "with charges at the service").await?;
        let proxy = self.proxy_base.clone();
        let token = self.payments.customer.clone().unwrap_or_default();
        let (status, order) = self.buy(&proxy, &token, PAY_PRODUCT).await?;
        let id = order["id"].as_i64().unwrap_or(0);
        let charge = payments_service::charges::find(self.payments_pool()?, &shop::payments::remote::charge_key(id))
            .await
            .map_err(|e| self.broken(e))?;
        self.check(
            status == StatusCode::CREATED
                && charge
                    .as_ref()
                    .is_some_and(|c| c.status == "captured" && Some(c.amount_cents) == order["total_cents"].as_i64()),
            "a checkout through the proxy is charged by the service",
            format!(
                "order {id} {status}; charge {}",
                charge
                    .map(|c| format!("{} {} cents, {}", c.key, c.amount_cents, c.status))
                    .unwrap_or_else(|| "missing".into())
            ),
        )?;
        // The same key twice: one charge.
        let base = self.payments_base()?;
        let body = json!({"order_id": 999_999_999, "amount_cents": 1234, "card_number": "4242424242424242"});
        let mut answers = Vec::new();
        for _ in 0..3 {
            let resp = self
                .client
                .post(format!("{base}/api/charges"))
                .bearer_auth(&self.admin_token)
                .header("idempotency-key", "walkthrough-retry")
                .json(&body)
                .send()
                .await
                .map_err(|e| self.broken(e))?;
            let status = resp.status();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            answers.push((status, value["reference"].clone()));
        }
        let references: BTreeSet<String> = answers.iter().map(|a| a.1.to_string()).collect();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM charges WHERE order_id = 999999999")
            .fetch_one(self.payments_pool()?)
            .await
            .map_err(|e| self.broken(e))?;
        // The test charge is refunded, so the books below hold only real orders.
        let url = format!("{base}/api/charges/walkthrough-retry/cancel");
        let (refunded, record) = self.send(reqwest::Method::POST, url, None, Some(&self.admin_token)).await?;
        if refunded != StatusCode::OK || record["status"] != "refunded" {
            return Err(self.broken(format!("refunding the test charge: {refunded} {record}")));
        }
        self.check(
            answers[0].0 == StatusCode::CREATED
                && answers[1..].iter().all(|a| a.0 == StatusCode::OK)
                && references.len() == 1
                && rows == 1,
            "the same idempotency key three times: one charge",
            format!(
                "answers {:?}; {} reference; {rows} charge row (then refunded: it paid no order)",
                answers.iter().map(|a| a.0.as_u16()).collect::<Vec<_>>(),
                references.len()
            ),
        )?;
        let (declined, _) = self.checkout_with(&proxy, &token, "4000000000000002").await?;
        self.check(
            declined == StatusCode::PAYMENT_REQUIRED,
            "a declined card is still a 402",
            format!("POST /api/orders with a declining card → {declined}"),
        )?;
        // Empty the cart the declined checkout left.
        self.send(reqwest::Method::DELETE, format!("{proxy}/api/cart/items/{PAY_PRODUCT}"), None, Some(&token)).await?;
        self.load_keeps_flowing(50, "with charges at the service").await
    }

    async fn drill_slow_payments(&mut self) -> Result<(), WalkError> {
        self.begin("drill_slow", "Drill: payments slow", &format!("The card gateway behind the service answers after {SLOW_MS} ms, over the shop's {TIMEOUT_MS} ms timeout. Checkouts time out, are retried within the budget, then answered 503; after five in a row the breaker opens and checkouts are refused at once, without waiting. Nothing is charged for them: each charge key is cancelled."))?;
        let before = self.shop_metrics().await?;
        let url = format!("{}/internal/faults", self.payments_base()?);
        self.admin_put(url.clone(), json!({"delay_ms": SLOW_MS})).await?;
        let refused_before = self.load().report().checkouts_refused;
        let opened = self.breaker_becomes("open", Duration::from_secs(60)).await?;
        let metrics = self.shop_metrics().await?;
        let name = "shop_payments_breaker_transitions_total{to=\"open\"}";
        self.check(
            opened && metric(&metrics, name) > metric(&before, name),
            "the breaker opens",
            format!(
                "{name} {} → {}; timeouts {}; retries {}",
                metric(&before, name),
                metric(&metrics, name),
                metric(&metrics, "shop_payments_timeouts_total"),
                metric(&metrics, "shop_payments_retries_total")
            ),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.load().report().checkouts_refused < refused_before + 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.load_keeps_flowing(50, "while payments is slow (checkouts answered 503)").await?;
        self.admin_put(url, json!({"delay_ms": 0})).await?;
        self.note("the gateway is fast again");
        let closed = self.breaker_becomes("closed", Duration::from_secs(30)).await?;
        let after = self.shop_metrics().await?;
        let name = "shop_payments_breaker_transitions_total{to=\"closed\"}";
        self.check(
            closed && metric(&after, name) > metric(&before, name),
            "the breaker closes again on a good probe",
            format!("{name} {} → {}", metric(&before, name), metric(&after, name)),
        )?;
        self.orders_keep_coming(2, "once payments is fast again").await
    }

    async fn drill_down_payments(&mut self) -> Result<(), WalkError> {
        self.begin("drill_down", "Drill: payments down, then back", "The service stops. Checkouts are answered 503 at once (the breaker opens, nothing waits), browsing and carts go on; checkouts whose charge was in flight are settled when the service is back. Then it starts again on its address and the breaker closes.")?;
        let service = self.payments.service.take().ok_or_else(|| self.broken("no service"))?;
        let addr = service.addr;
        service.stop().await;
        self.note(format!("payments service stopped ({addr})"));
        let refused_before = self.load().report().checkouts_refused;
        let opened = self.breaker_becomes("open", Duration::from_secs(60)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.load().report().checkouts_refused < refused_before + 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = self.load().report().checkouts_refused - refused_before;
        self.check(
            opened && refused >= 3,
            "payments down: checkout answers 503, the breaker is open",
            format!(
                "{refused} checkouts refused with 503 while the service was down; breaker {}",
                self.payments_switch().await?["breaker"]
            ),
        )?;
        self.load_keeps_flowing(50, "while payments is down (browsing and carts)").await?;
        self.start_payments_service(addr).await?;
        self.note("payments service back on the same address");
        let closed = self.breaker_becomes("closed", Duration::from_secs(30)).await?;
        self.check(
            closed,
            "payments back: the breaker closes",
            format!("breaker {}", self.payments_switch().await?["breaker"]),
        )?;
        self.orders_keep_coming(3, "once payments is back").await?;
        self.load_keeps_flowing(50, "once payments is back").await
    }

    /// Every paid order has exactly one captured charge and every captured charge a paid
    /// order; no checkout is left unsettled. Under load (`quiet` false) a checkout may be in
    /// flight between its charge and its order's update: the orders are read first, then the
    /// charges, and a captured charge whose order was still `pending` (or did not exist yet)
    /// then is counted as in flight, not as a charge without an order. Returns the figures.
    async fn payments_reconciled(&mut self, what: &str, quiet: bool) -> Result<String, WalkError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = if quiet { "('pending', 'unsettled', 'cancelling')" } else { "('unsettled')" };
        let mut unsettled: i64;
        loop {
            unsettled = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM orders WHERE status IN {waiting}"))
                .fetch_one(&self.shop().pool)
                .await
                .map_err(|e| self.broken(e))?;
            if unsettled == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let orders: Vec<(i64, String)> = sqlx::query_as("SELECT id, status FROM orders")
            .fetch_all(&self.shop().pool)
            .await
            .map_err(|e| self.broken(e))?;
        let pool = self.payments_pool()?.clone();
        let captured: BTreeSet<i64> =
            payments_service::charges::captured_orders(&pool).await.map_err(|e| self.broken(e))?.into_iter().collect();
        let with = |wanted: &[&str]| -> BTreeSet<i64> {
            orders.iter().filter(|(_, s)| wanted.contains(&s.as_str())).map(|(id, _)| *id).collect()
        };
        // A cancelled order's charge is refunded, so it is not captured any more.
        let should = with(&["paid"]);
        let in_flight = with(&["pending", "unsettled", "cancelling"]);
        let newest = orders.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let (unpaid_charges, flying): (Vec<i64>, Vec<i64>) =
            captured.difference(&should).copied().partition(|id| !in_flight.contains(id) && *id <= newest);
        let unpaid_charges: Vec<i64> =
            if quiet { captured.difference(&should).copied().collect() } else { unpaid_charges };
        let uncharged_orders: Vec<i64> = should.difference(&captured).copied().collect();
        let tally = payments_service::charges::tally(&pool).await.map_err(|e| self.broken(e))?;
        let mut statuses: std::collections::BTreeMap<String, i64> = Default::default();
        for (_, status) in &orders {
            *statuses.entry(status.clone()).or_default() += 1;
        }
        let statuses: Vec<(String, i64)> = statuses.into_iter().collect();
        let by_status =
            |list: &[(String, i64)]| list.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
        let twice = tally.orders_charged_twice;
        self.check(
            unsettled == 0 && unpaid_charges.is_empty() && uncharged_orders.is_empty() && twice == 0,
            what,
            format!(
                "orders: {}; charges: {}; {} paid orders, {} captured charges ({} of them for checkouts in flight); {} orders charged twice, {} charges without a paid order, {} paid orders without a charge, {unsettled} left unsettled",
                by_status(&statuses),
                by_status(&tally.by_status),
                should.len(),
                captured.len(),
                if quiet { 0 } else { flying.len() },
                twice,
                unpaid_charges.len(),
                uncharged_orders.len()
            ),
        )?;
        Ok(format!(
            "payments: {} charges captured ({} cents), {}; {} orders charged twice",
            captured.len(),
            tally.captured_cents,
            by_status(&tally.by_status),
            twice
        ))
    }

    async fn reconcile_payments(&mut self) -> Result<(), WalkError> {
        self.begin("reconcile", "Reconcile orders and charges", "Every checkout the drills interrupted is settled (its charge key cancelled, its stock released); then every paid order must have exactly one captured charge, and every captured charge a paid order.")?;
        self.payments_reconciled("orders and charges agree (under load)", false).await?;
        self.load_keeps_flowing(50, "after the drills").await
    }

    /// After the shoppers stopped: the books balance, and the figures.
    pub(crate) async fn payments_final(&mut self, load: &crate::load::LoadReport) -> Result<(), WalkError> {
        let line = self.payments_reconciled("orders and charges agree (shoppers stopped)", true).await?;
        let metrics = self.shop_metrics().await?;
        self.figures.push(line);
        self.figures.push(format!(
            "payments: breaker opened {} times and closed {} times; {} checkouts refused with 503 while payments was slow or down",
            metric(&metrics, "shop_payments_breaker_transitions_total{to=\"open\"}"),
            metric(&metrics, "shop_payments_breaker_transitions_total{to=\"closed\"}"),
            load.checkouts_refused
        ));
        Ok(())
    }
}
