//! The notifications' extraction: a service fed by the shop's events.
//!
//! The shop writes an event (UserRegistered, OrderPlaced, OrderCancelled) into its outbox
//! in the same transaction as the change; the relay publishes the outbox, in order, at
//! least once; the notifications service acts on each event once (processed event ids in
//! its own table) and serves the notification endpoints, asking the shop who the caller is.
//! Data moves by replaying the outbox from its start (`move_data`); the endpoints move
//! through the proxy (shadow, canary, cut-over); the relay and the service are killed and
//! restarted under load (`kill_drill`); at the end orders placed = events published =
//! notifications stored, none twice, none lost, each order's in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::events::nats::{NatsPublisher, NatsTarget};
use shop::events::relay::{HttpPublisher, Publisher, Relay, RelayStats};
use tokio::sync::oneshot;

use crate::engine::{Extraction, Isolated, Serving, Walk, WalkError, routes_from_plan};
use crate::load::Load;

/// A product the walkthrough's own customers buy (kept in stock).
const NOTIFY_PRODUCT: i64 = 23;
/// Demo customers whose notifications are the golden answers.
const CUSTOMERS: usize = 3;

/// What the notifications' steps share.
#[derive(Default)]
pub(crate) struct NotificationsState {
    /// The demo customers' tokens and the notification lists the shop gave them.
    golden: Vec<(String, Value)>,
    service: Option<Isolated>,
    relay: Option<(tokio::task::JoinHandle<()>, oneshot::Sender<()>)>,
    relay_stats: Vec<Arc<RelayStats>>,
    reads: Vec<String>,
    writes: Vec<String>,
    /// Redeliveries the service ignored before it was restarted (its counters start at 0).
    ignored_before_restart: u64,
    /// The JetStream stream of this run, when the events go through NATS.
    nats: Option<NatsTarget>,
}

impl NotificationsState {
    /// Stops the relay and the service, and deletes this run's JetStream stream.
    pub(crate) async fn stop(&mut self) {
        if let Some((task, stop)) = self.relay.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
        if let Some(target) = self.nats.take()
            && let Err(err) = notifications_service::nats::delete_stream(&target).await
        {
            tracing::warn!(%err, stream = %target.stream, "could not delete the walkthrough's stream");
        }
    }
}

/// The notifications as a customer sees them, without what each side numbers or stamps
/// on its own (ids, times): kind, subject, body, status.
fn content(list: &Value) -> Vec<(String, String, String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (field("kind"), field("subject"), field("body"), field("status"))
        })
        .collect()
}

impl Walk<'_> {
    /// The notifications' steps, after the shared ones.
    pub(crate) async fn extract_notifications(&mut self) -> Result<(), WalkError> {
        self.move_notifications_data().await?;
        self.compare_notifications().await?;
        self.canary_notifications().await?;
        self.cut_over_notifications().await?;
        self.kill_drill_notifications().await?;
        self.retire_notifications().await
    }

    fn notifications_base(&self) -> Result<String, WalkError> {
        self.notifications
            .service
            .as_ref()
            .map(|s| s.base.clone())
            .ok_or_else(|| self.broken("the service is not running"))
    }

    /// Demo customers register, buy, and one cancels; their notification lists are recorded.
    pub(crate) async fn record_notifications_golden(&mut self) -> Result<(), WalkError> {
        let shop = self.shop().base.clone();
        self.admin_put(format!("{shop}/api/inventory/{NOTIFY_PRODUCT}"), json!({"stock": 100_000})).await?;
        let mut golden = Vec::new();
        for k in 0..CUSTOMERS {
            let token = self.new_user(&shop, &format!("notified-{k}-{}@walkthrough.example", self.admin_token)).await?;
            let (status, order) = self.buy(&shop, &token, NOTIFY_PRODUCT).await?;
            if status != StatusCode::CREATED {
                return Err(self.broken(format!("a demo checkout answered {status}: {order}")));
            }
            if k == 0 {
                let url = format!("{shop}/api/orders/{}/cancel", order["id"]);
                self.send(reqwest::Method::POST, url, None, Some(&token)).await?;
            }
            let (_, list) =
                self.send(reqwest::Method::GET, format!("{shop}/api/notifications"), None, Some(&token)).await?;
            golden.push((token, list));
        }
        let counts: Vec<usize> = golden.iter().map(|(_, l)| content(l).len()).collect();
        self.notifications.golden = golden;
        self.check(
            counts == [3, 2, 2],
            "notifications: golden responses recorded",
            format!("{CUSTOMERS} customers registered and bought (one cancelled); they hold {counts:?} notifications (welcome, confirmation, cancellation)"),
        )
    }

    /// What the analyzer says of notifications.
    pub(crate) async fn analyze_notifications(&mut self) -> Result<(), WalkError> {
        let plan = self.plan(Extraction::Notifications)?;
        let owns = plan.service.tables.owns.clone();
        let endpoints: Vec<String> =
            plan.service.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
        let callers: Vec<String> = plan.incoming.iter().map(|d| format!("{} ({} calls)", d.from, d.calls)).collect();
        self.check(
            owns.iter().any(|t| t == "notifications")
                && endpoints.iter().any(|e| e == "GET /api/notifications")
                && endpoints.iter().any(|e| e == "POST /api/notifications/{id}/read"),
            "the notifications boundary holds its table and endpoints",
            format!(
                "owns {}; endpoints {}; called by {} — calls the events replace",
                owns.join(", "),
                endpoints.join(", "),
                if callers.is_empty() { "nobody".to_string() } else { callers.join(", ") }
            ),
        )
    }

    /// The golden notification lists, read through the proxy, are unchanged.
    pub(crate) async fn notifications_golden_through_proxy(&mut self) -> Result<(), WalkError> {
        let mut same = 0;
        for (token, list) in self.notifications.golden.clone() {
            let url = format!("{}/api/notifications", self.proxy_base);
            let (_, now) = self.send(reqwest::Method::GET, url, None, Some(&token)).await?;
            same += usize::from(now == list);
        }
        self.check(
            same == CUSTOMERS,
            "notifications: golden responses are unchanged through the proxy",
            format!("{same} of {CUSTOMERS} customers' lists identical"),
        )
    }

    /// Starts (or restarts, on the same address) the notifications service.
    async fn start_notifications_service(&mut self, addr: std::net::SocketAddr) -> Result<(), WalkError> {
        let (db, database) = self.opts.service_db("notifications", self.opts.notifications_database.as_ref());
        let config = notifications_service::Config {
            listen: addr,
            db,
            events_token: Some(self.admin_token.clone()),
            shop_url: self.shop().base.clone(),
            shop_token: Some(self.admin_token.clone()),
            nats: self.notifications.nats.clone(),
        };
        let service = Isolated::start(move |stopped| async move {
            let app = notifications_service::Application::build(config).await.map_err(|e| e.to_string())?;
            let addr = app.local_addr();
            let serving: Serving = Box::pin(app.run_until_stopped(async {
                let _ = stopped.await;
            }));
            Ok((addr, serving))
        })
        .await
        .map_err(|e| self.broken(format!("starting the notifications service: {e}")))?;
        self.note(format!("notifications service listening on {}, database {database}", service.base));
        self.notifications.service = Some(service);
        Ok(())
    }

    /// The relay's publisher: JetStream when the walkthrough runs with NATS, else HTTP to
    /// the service's `/internal/events`.
    async fn publisher(&self) -> Result<Arc<dyn Publisher>, WalkError> {
        Ok(match &self.notifications.nats {
            Some(target) => Arc::new(NatsPublisher::connect(target.clone()).await.map_err(|e| self.broken(e))?),
            None => Arc::new(HttpPublisher::new(&self.notifications_base()?, Some(self.admin_token.clone()))),
        })
    }

    /// Starts the outbox relay, delivering to the notifications service.
    async fn start_relay(&mut self) -> Result<(), WalkError> {
        let publisher = self.publisher().await?;
        let relay = Relay::new(self.shop().pool.clone(), publisher.clone());
        self.notifications.relay_stats.push(relay.stats());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run_until_stopped(async {
            let _ = stopped.await;
        }));
        self.notifications.relay = Some((task, stop));
        Ok(())
    }

    /// The service's counters (`GET /internal/stats`).
    async fn notifications_stats(&self) -> Result<Value, WalkError> {
        let url = format!("{}/internal/stats", self.notifications_base()?);
        let (status, stats) = self.send(reqwest::Method::GET, url, None, None).await?;
        if status != StatusCode::OK {
            return Err(self.broken(format!("GET /internal/stats answered {status}")));
        }
        Ok(stats)
    }

    /// Waits (bounded) until the relay has published the whole outbox and the service has
    /// processed every event; returns (recorded, published, processed).
    async fn outbox_drained(&mut self, within: Duration) -> Result<(i64, i64, i64), WalkError> {
        let deadline = Instant::now() + within;
        loop {
            let counts = shop::events::counts(&self.shop().pool).await.map_err(|e| self.broken(e))?;
            let recorded: i64 = counts.iter().map(|c| c.1).sum();
            let published: i64 = counts.iter().map(|c| c.2).sum();
            let processed = self.notifications_stats().await?["processed_events"].as_i64().unwrap_or(-1);
            if (recorded == published && published == processed) || Instant::now() > deadline {
                return Ok((recorded, published, processed));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn move_notifications_data(&mut self) -> Result<(), WalkError> {
        self.begin("move_data", "Start the notifications service and replay the outbox into it", "The service gets its own database and never reads the shop's. Every change the shop made since it started is an event in its outbox; the relay publishes them from the first, and the service builds its notifications from them, each event once.")?;
        if let Some(url) = self.opts.nats_url.clone() {
            let run = self.admin_token.trim_start_matches("walkthrough-").to_string();
            let target = NatsTarget { url, stream: format!("SHOP_EVENTS_{run}"), prefix: format!("shop.{run}.events") };
            self.note(format!(
                "events through NATS JetStream at {}: stream {}, subjects {}.*, deduplicated by event id",
                target.url, target.stream, target.prefix
            ));
            self.notifications.nats = Some(target);
        } else {
            self.note("events over HTTP: the relay posts the outbox to the service's /internal/events (no broker)");
        }
        self.start_notifications_service("127.0.0.1:0".parse().expect("address")).await?;
        self.start_relay().await?;
        let (recorded, published, processed) = self.outbox_drained(Duration::from_secs(60)).await?;
        self.check(
            recorded == published && published == processed && recorded > 0,
            "every event recorded is published and processed",
            format!("{recorded} events in the outbox, {published} published by the relay, {processed} processed by the service"),
        )?;
        // The service answers each demo customer like the monolith (the caller resolved by the shop).
        let base = self.notifications_base()?;
        let mut differ = Vec::new();
        for (k, (token, list)) in self.notifications.golden.clone().iter().enumerate() {
            let (_, theirs) =
                self.send(reqwest::Method::GET, format!("{base}/api/notifications"), None, Some(token)).await?;
            if content(&theirs) != content(list) {
                differ.push(format!("customer {k}: {theirs}"));
            }
        }
        self.check(
            differ.is_empty(),
            "parity: the service holds what the monolith holds",
            if differ.is_empty() {
                format!("{CUSTOMERS} customers' notifications identical (kind, subject, body, status)")
            } else {
                differ.join("; ")
            },
        )?;
        let (forged, _) = self
            .send(reqwest::Method::GET, format!("{base}/api/notifications"), None, Some("forged-session-token"))
            .await?;
        let (anonymous, _) = self.send(reqwest::Method::GET, format!("{base}/api/notifications"), None, None).await?;
        self.check(
            forged == StatusCode::UNAUTHORIZED && anonymous == StatusCode::UNAUTHORIZED,
            "the service learns who calls from the shop; a forged session gets 401",
            format!("forged token → {forged}, no token → {anonymous}; sessions resolved by the shop over an authenticated internal call, cached 5 s at most"),
        )?;
        let routes = routes_from_plan(self.plan(Extraction::Notifications)?);
        self.notifications.reads = routes.iter().filter(|r| r.reads()).map(|r| r.name.clone()).collect();
        self.notifications.writes = routes.iter().filter(|r| !r.reads()).map(|r| r.name.clone()).collect();
        let mut routes = routes;
        for r in routes.iter_mut().filter(|r| r.reads()) {
            // Each side numbers and stamps notifications its own way.
            r.extra.push("shadow_ignore = [\"/*/id\", \"/*/created_at\"]".into());
            r.extra.push("shadow_min_compared = 60".into());
        }
        let addr = self.notifications.service.as_ref().map(|s| s.addr.to_string()).unwrap_or_default();
        self.add_service_routes("notifications", &addr, routes).await?;
        self.load_keeps_flowing(50, "while the events moved").await
    }

    async fn compare_notifications(&mut self) -> Result<(), WalkError> {
        self.begin("compare", "Compare in shadow", "The read route goes to shadow: the proxy sends each request to the monolith, which answers, and mirrors it to the service, whose answer it diffs (ids and times aside). The service must answer exactly like the monolith before it takes any traffic.")?;
        const ENOUGH: u64 = 60;
        let reads = self.notifications.reads.clone();
        self.stage(&reads, "shadow", None).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut figures = Vec::new();
        loop {
            for (token, _) in self.notifications.golden.clone() {
                let url = format!("{}/api/notifications", self.proxy_base);
                self.send(reqwest::Method::GET, url, None, Some(&token)).await?;
            }
            figures.clear();
            let mut done = true;
            for name in &reads {
                let d = self.admin().diffs(name).await.map_err(|e| self.broken(format!("ficus diffs {name}: {e}")))?;
                done &= d.compared >= ENOUGH;
                figures.push((name.clone(), d.compared, d.mismatched));
            }
            if done || Instant::now() > deadline {
                break;
            }
        }
        let ok = figures.iter().all(|(_, compared, mismatched)| *compared >= ENOUGH && *mismatched == 0);
        let evidence: Vec<String> =
            figures.iter().map(|(n, c, m)| format!("{n}: {c} compared, {m} mismatched")).collect();
        self.check(ok, "shadow traffic: the service answers like the monolith", evidence.join("; "))?;
        self.load_keeps_flowing(50, "in shadow").await
    }

    async fn canary_notifications(&mut self) -> Result<(), WalkError> {
        self.begin("canary", "Canary: 50 % of cohorts", "Half of the cohorts read their notifications from the service; the shoppers now read theirs after every round and check each one is about their own orders. A cohort always lands on the same side.")?;
        let reads = self.notifications.reads.clone();
        self.stage(&reads, "canary", Some(50)).await?;
        self.load().read_notifications(true);
        let token = self.notifications.golden[1].0.clone();
        let mut sides: BTreeMap<String, usize> = BTreeMap::new();
        let mut wobbly = 0;
        for k in 0..100 {
            let cohort = format!("probe-{k}");
            let first = self.upstream_for("/api/notifications", &cohort, Some(&token)).await?;
            if self.upstream_for("/api/notifications", &cohort, Some(&token)).await? != first {
                wobbly += 1;
            }
            *sides.entry(first).or_default() += 1;
        }
        let on_service = sides.get("notifications").copied().unwrap_or(0);
        self.check(
            wobbly == 0 && (35..=65).contains(&on_service),
            "50 %: cohorts sticky, share near 50 %",
            format!("{on_service} of 100 probe cohorts on the service; {wobbly} changed side on a second look"),
        )?;
        self.load_keeps_flowing(150, "at 50 %").await?;
        let report = self.load().report();
        self.check(
            report.foreign_notifications == 0 && report.notification_reads > 0,
            "no shopper is shown another's notification",
            format!(
                "{} notification lists read by shoppers, {} about someone else's order",
                report.notification_reads, report.foreign_notifications
            ),
        )
    }

    async fn cut_over_notifications(&mut self) -> Result<(), WalkError> {
        self.begin("cut_over", "Cut over", "All notification reads and writes go to the service: the list and the 'mark read' (whose ids are the service's own, so both move together).")?;
        let routes: Vec<String> = self.notifications.reads.iter().chain(&self.notifications.writes).cloned().collect();
        self.stage(&routes, "service", None).await?;
        let proxy = self.proxy_base.clone();
        let (mine, theirs) = (self.notifications.golden[1].0.clone(), self.notifications.golden[2].0.clone());
        let (_, list) =
            self.send(reqwest::Method::GET, format!("{proxy}/api/notifications"), None, Some(&mine)).await?;
        let id = list[0]["id"].as_i64().ok_or_else(|| self.broken(format!("no notification to mark: {list}")))?;
        let (other, _) = self
            .send(reqwest::Method::POST, format!("{proxy}/api/notifications/{id}/read"), None, Some(&theirs))
            .await?;
        let (marked, _) =
            self.send(reqwest::Method::POST, format!("{proxy}/api/notifications/{id}/read"), None, Some(&mine)).await?;
        let (_, after) =
            self.send(reqwest::Method::GET, format!("{proxy}/api/notifications"), None, Some(&mine)).await?;
        let upstream = self.upstream_for("/api/notifications", "walkthrough", Some(&mine)).await?;
        self.check(
            other == StatusCode::NOT_FOUND
                && marked == StatusCode::NO_CONTENT
                && after[0]["status"] == "read"
                && upstream == "notifications",
            "the service serves the list and marks read; another customer's notification cannot be touched",
            format!(
                "served by {upstream}; another customer marking #{id} → {other}; its owner → {marked}, then {}",
                after[0]["status"]
            ),
        )?;
        self.load_keeps_flowing(100, "after the cut-over").await
    }

    async fn kill_drill_notifications(&mut self) -> Result<(), WalkError> {
        self.begin("kill_drill", "Kill the relay, then the service, under load", "The relay is killed mid-work and restarted: whatever it published without marking is published again, and the service ignores it. The service is killed (its runtime dropped mid-request) and restarted on its address: meanwhile the proxy falls back to the monolith for reads, events wait in the outbox, and nothing is lost.")?;
        let orders_before = self.load().report().orders_acknowledged;
        if let Some((task, _)) = self.notifications.relay.take() {
            task.abort();
            let _ = task.await;
        }
        self.note("relay killed");
        self.orders_keep_coming(2, "while the relay is down").await?;
        self.start_relay().await?;
        self.note("relay restarted");
        // A relay restarted from an older position publishes again what was delivered: the
        // last 20 events, sent again, must change nothing.
        let all = shop::events::all(&self.shop().pool).await.map_err(|e| self.broken(e))?;
        let again = &all[all.len().saturating_sub(20)..];
        let publisher = self.publisher().await?;
        publisher.publish(again).await.map_err(|e| self.broken(format!("redelivering: {e}")))?;
        let stats = self.notifications_stats().await?;
        let who = if self.notifications.nats.is_some() {
            "JetStream dropped those whose Nats-Msg-Id it had stored, the service ignores the rest".to_string()
        } else {
            format!("the service has ignored {} redeliveries so far", stats["deliveries_duplicate"])
        };
        self.check(
            stats["duplicated_events"] == 0,
            "events delivered again are recognised and ignored",
            format!("{} events published again; {who}; 0 stored twice", again.len()),
        )?;
        self.notifications.ignored_before_restart += stats["deliveries_duplicate"].as_u64().unwrap_or(0);
        let service = self.notifications.service.take().ok_or_else(|| self.broken("no service"))?;
        let addr = service.addr;
        service.kill().await;
        self.note(format!("notifications service killed ({addr})"));
        self.orders_keep_coming(2, "while the service is down").await?;
        self.load_keeps_flowing(50, "while the service is down (reads fall back to the monolith)").await?;
        self.start_notifications_service(addr).await?;
        self.note("notifications service restarted on the same address");
        let token = self.notifications.golden[2].0.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut upstream = String::new();
        while Instant::now() < deadline {
            upstream = self.upstream_for("/api/notifications", "walkthrough", Some(&token)).await?;
            if upstream == "notifications" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.check(
            upstream == "notifications",
            "the proxy sends reads to the service again once its health check passes",
            format!("x-ficus-upstream: {upstream}"),
        )?;
        let (recorded, published, processed) = self.outbox_drained(Duration::from_secs(60)).await?;
        let stats = self.notifications_stats().await?;
        self.check(
            recorded == published && published == processed && stats["duplicated_events"] == 0,
            "after both restarts: nothing lost, nothing stored twice",
            format!(
                "{recorded} events recorded, {published} published, {processed} processed; 0 stored twice; orders acknowledged {orders_before} → {}",
                self.load().report().orders_acknowledged
            ),
        )?;
        self.load_keeps_flowing(50, "after the restarts").await
    }

    async fn retire_notifications(&mut self) -> Result<(), WalkError> {
        self.begin("retire", "The service owns notifications", "Every notification request is served by the service, and the proxy's audit log holds every stage change of the extraction.")?;
        let token = self.notifications.golden[2].0.clone();
        let mut sides = std::collections::BTreeSet::new();
        for k in 0..30 {
            sides.insert(self.upstream_for("/api/notifications", &format!("probe-{k}"), Some(&token)).await?);
        }
        self.check(
            sides.len() == 1 && sides.contains("notifications"),
            "the service serves every notification read",
            format!("upstreams seen: {sides:?}"),
        )?;
        let routes: Vec<String> = self.notifications.reads.iter().chain(&self.notifications.writes).cloned().collect();
        self.audit_is_complete("notifications", &routes).await?;
        self.load_keeps_flowing(50, "with notifications extracted").await
    }

    /// After the shoppers stopped: orders placed = events published = notifications stored.
    pub(crate) async fn notifications_final(&mut self, load: &Load) -> Result<(), WalkError> {
        let (recorded, published, processed) = self.outbox_drained(Duration::from_secs(60)).await?;
        let placed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status IN ('paid', 'cancelled')")
            .fetch_one(&self.shop().pool)
            .await
            .map_err(|e| self.broken(e))?;
        let counts = shop::events::counts(&self.shop().pool).await.map_err(|e| self.broken(e))?;
        let placed_events = counts.iter().find(|c| c.0 == "OrderPlaced").map(|c| (c.1, c.2)).unwrap_or((0, 0));
        let stats = self.notifications_stats().await?;
        let stored = stats["by_kind"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kind"] == "order_confirmed")
            .and_then(|k| k["count"].as_i64())
            .unwrap_or(0);
        let (twice, out_of_order) =
            (stats["duplicated_events"].as_i64().unwrap_or(-1), stats["out_of_order"].as_i64().unwrap_or(-1));
        let redelivered =
            stats["deliveries_duplicate"].as_u64().unwrap_or(0) + self.notifications.ignored_before_restart;
        let relayed: u64 =
            self.notifications.relay_stats.iter().map(|s| s.published.load(std::sync::atomic::Ordering::Relaxed)).sum();
        self.check(
            placed == placed_events.0 && placed_events.0 == placed_events.1 && placed_events.1 == stored && twice == 0 && out_of_order == 0 && recorded == processed && published == processed,
            "orders placed = events published = notifications stored; none twice, none lost, in order",
            format!(
                "{placed} orders placed, {} OrderPlaced events published, {stored} order confirmations stored; {recorded} events in all, {processed} processed; 0 stored twice, {out_of_order} out of order; {redelivered} redeliveries ignored",
                placed_events.1
            ),
        )?;
        let report = load.report();
        self.check(
            report.foreign_notifications == 0,
            "no shopper was ever shown another's notification",
            format!(
                "{} lists read by shoppers, {} about someone else's order",
                report.notification_reads, report.foreign_notifications
            ),
        )?;
        self.figures.push(format!("notifications: {placed} orders placed, {} events published, {stored} notifications of them stored, 0 duplicates, 0 lost", placed_events.1));
        self.figures.push(format!("notifications: the relay published {relayed} times (restarts included); {redelivered} redeliveries ignored by the service"));
        Ok(())
    }
}
