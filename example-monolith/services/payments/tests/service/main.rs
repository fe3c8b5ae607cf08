//! The payments service, alone (one charge per key, cancel, declines) and called by a real
//! shop through its guard: payments slow, down and back, each a drill with its checks.

use std::time::{Duration, Instant};

use payments_service::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::DbLocation;

const TOKEN: &str = "payments-admin";

use ficus_e2e::Server as Running;

async fn payments(listen: std::net::SocketAddr, dir: &std::path::Path) -> (Running, shop::Pool) {
    let app =
        Application::build(Config { listen, db: DbLocation::SqliteDir(dir.into()), admin_token: Some(TOKEN.into()) })
            .await
            .unwrap();
    let pool = app.state().pool.clone();
    let server = Running::spawn(app.local_addr(), |stopped| {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    (server, pool)
}

async fn charge(client: &reqwest::Client, base: &str, key: &str, card: &str) -> (StatusCode, Value) {
    let r = client
        .post(format!("{base}/api/charges"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(&json!({"order_id": 7, "amount_cents": 1500, "card_number": card}))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_charges_once_however_many_times_and_however_concurrently_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, pool) = payments("127.0.0.1:0".parse().unwrap(), dir.path()).await;
    let client = reqwest::Client::new();
    let answers = futures_join(&client, &svc.base, "order-7", 10).await;
    // One is made (201); the others get it again (200) or, while it is being made, 503
    // (ask again), never a second charge.
    let created = answers.iter().filter(|a| a.0 == StatusCode::CREATED).count();
    let other = answers.iter().filter(|a| a.0 != StatusCode::OK && a.0 != StatusCode::CREATED);
    assert!(other.clone().all(|a| a.0 == StatusCode::SERVICE_UNAVAILABLE), "{answers:?}");
    assert_eq!(created, 1, "{answers:?}");
    let again = charge(&client, &svc.base, "order-7", "4242424242424242").await;
    assert_eq!(again.0, StatusCode::OK);
    let refs: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|a| a.0.is_success())
        .chain(std::iter::once(&again))
        .map(|a| a.1["reference"].to_string())
        .collect();
    assert_eq!(refs.len(), 1);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM charges").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1);
    // No key, a bad card: refused, nothing recorded.
    let bare = client
        .post(format!("{}/api/charges", svc.base))
        .bearer_auth(TOKEN)
        .json(&json!({"order_id": 8, "amount_cents": 100, "card_number": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    assert_eq!(charge(&client, &svc.base, "order-9", "1234").await.0, StatusCode::BAD_REQUEST);
    // A decline is remembered under its key.
    assert_eq!(charge(&client, &svc.base, "order-10", "4000000000000002").await.0, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(charge(&client, &svc.base, "order-10", "4242424242424242").await.0, StatusCode::PAYMENT_REQUIRED);
    svc.stop().await;
}

async fn futures_join(client: &reqwest::Client, base: &str, key: &str, n: usize) -> Vec<(StatusCode, Value)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, base, key) = (client.clone(), base.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move { charge(&client, &base, &key, "4242424242424242").await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_key_refunds_its_charge_or_refuses_the_late_one() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = payments("127.0.0.1:0".parse().unwrap(), dir.path()).await;
    let client = reqwest::Client::new();
    let cancel =
        |key: &'static str| client.post(format!("{}/api/charges/{key}/cancel", svc.base)).bearer_auth(TOKEN).send();
    // Without the token: refused, nothing cancelled.
    let anonymous = client.post(format!("{}/api/charges/order-1/cancel", svc.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Charged, then cancelled: refunded.
    assert_eq!(charge(&client, &svc.base, "order-1", "4242424242424242").await.0, StatusCode::CREATED);
    let refunded: Value = cancel("order-1").await.unwrap().json().await.unwrap();
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(charge(&client, &svc.base, "order-1", "4242424242424242").await.0, StatusCode::CONFLICT);
    // Cancelled first (the shop gave up waiting), the charge arrives late: refused.
    let void: Value = cancel("order-2").await.unwrap().json().await.unwrap();
    assert_eq!(void["status"], "void");
    assert_eq!(charge(&client, &svc.base, "order-2", "4242424242424242").await.0, StatusCode::CONFLICT);
    // Cancelling twice changes nothing.
    let again: Value = cancel("order-2").await.unwrap().json().await.unwrap();
    assert_eq!(again["status"], "void");
    let stats: Value = client.get(format!("{}/internal/stats", svc.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["orders_charged_twice"], 0);
    svc.stop().await;
}

/// A shop whose checkout calls the payments service through its guard (quick settings).
struct Shop {
    base: String,
    pool: shop::Pool,
    server: Running,
    client: reqwest::Client,
    token: String,
}

impl Shop {
    async fn start(dir: &std::path::Path, payments: &str) -> Shop {
        let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), DbLocation::SqliteDir(dir.into()));
        config.seed = true;
        config.admin_token = Some(TOKEN.into());
        let app = shop::Application::build(config).await.unwrap();
        let (pool, base) = (app.pool().clone(), format!("http://{}", app.local_addr()));
        let server = Running::spawn(app.local_addr(), |stopped| {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        let switch = json!({"via": "service", "url": payments, "token": TOKEN, "timeout_ms": 300, "attempts": 2,
                            "failure_threshold": 3, "open_for_ms": 500, "max_concurrent": 8});
        let r = client.put(format!("{base}/api/admin/payments")).bearer_auth(TOKEN).json(&switch).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = client.put(format!("{base}/api/inventory/3")).bearer_auth(TOKEN).json(&json!({"stock": 1000}));
        assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
        let creds = json!({"email": "drills@example.com", "password": "s3cret-pass", "name": "Drills"});
        client.post(format!("{base}/api/users")).json(&creds).send().await.unwrap();
        let session: Value =
            client.post(format!("{base}/api/sessions")).json(&creds).send().await.unwrap().json().await.unwrap();
        let token = session["token"].as_str().unwrap().to_string();
        Shop { base, pool, server, client, token }
    }

    /// One unit in the cart, then a checkout: (status, time it took).
    async fn checkout(&self) -> (StatusCode, Duration) {
        let cart = self.client.put(format!("{}/api/cart/items/3", self.base)).bearer_auth(&self.token);
        if cart.json(&json!({"quantity": 1})).send().await.unwrap().status() != StatusCode::OK {
            self.client
                .post(format!("{}/api/cart/items", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"product_id": 3, "quantity": 1}))
                .send()
                .await
                .unwrap();
        }
        let t = Instant::now();
        let r = self
            .client
            .post(format!("{}/api/orders", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"card_number": "4242424242424242"}))
            .send()
            .await
            .unwrap();
        (r.status(), t.elapsed())
    }

    async fn breaker(&self) -> String {
        let v: Value = self
            .client
            .get(format!("{}/api/admin/payments", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["breaker"].as_str().unwrap_or_default().to_string()
    }

    async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// Checks out until the breaker is `state` (bounded); returns the statuses seen.
    async fn until_breaker(&self, state: &str) -> Vec<StatusCode> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.breaker().await != state {
            assert!(Instant::now() < deadline, "the breaker never became {state}; answers {seen:?}");
            seen.push(self.checkout().await.0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// The books: every paid order has exactly one captured charge and every captured charge a
/// paid order; nothing is left pending or unsettled.
async fn books_balance(shop: &shop::Pool, payments: &shop::Pool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = "SELECT COUNT(*) FROM orders WHERE status IN ('pending', 'unsettled', 'cancelling')";
    while sqlx::query_scalar::<_, i64>(waiting).fetch_one(shop).await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "checkouts left unsettled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paid: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM orders WHERE status = 'paid' ORDER BY id").fetch_all(shop).await.unwrap();
    let captured = payments_service::charges::captured_orders(payments).await.unwrap();
    assert_eq!(paid, captured, "paid orders and captured charges differ");
    assert_eq!(payments_service::charges::tally(payments).await.unwrap().orders_charged_twice, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_survives_payments_slow_then_down_then_back() {
    let (pay_dir, shop_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (svc, _) = payments("127.0.0.1:0".parse().unwrap(), pay_dir.path()).await;
    // The service's database as a checker sees it (its own pool closes when it stops).
    let (pay_pool, _) = payments_service::connect(&DbLocation::SqliteDir(pay_dir.path().into()), 2).await.unwrap();
    let shop = Shop::start(shop_dir.path(), &svc.base).await;
    assert_eq!(shop.checkout().await.0, StatusCode::CREATED);

    // Slow: the gateway answers after 1 s, over the 300 ms timeout.
    let faults = shop.client.put(format!("{}/internal/faults", svc.base)).bearer_auth(TOKEN);
    assert_eq!(faults.json(&json!({"delay_ms": 1000})).send().await.unwrap().status(), StatusCode::OK);
    let slow = shop.until_breaker("open").await;
    assert!(!slow.is_empty() && slow.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE), "{slow:?}");
    let (status, took) = shop.checkout().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_millis(300), "an open breaker answers at once, took {took:?}");
    assert!(shop.metrics().await.contains("shop_payments_breaker_transitions_total{to=\"open\"} 1"));
    let faults = shop.client.put(format!("{}/internal/faults", svc.base)).bearer_auth(TOKEN);
    assert_eq!(faults.json(&json!({"delay_ms": 0})).send().await.unwrap().status(), StatusCode::OK);
    shop.until_breaker("closed").await;
    assert_eq!(shop.checkout().await.0, StatusCode::CREATED);
    books_balance(&shop.pool, &pay_pool).await;

    // Down: the service stops; checkouts are refused, browsing goes on.
    let addr = svc.addr;
    svc.stop().await;
    let down = shop.until_breaker("open").await;
    assert!(down.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE), "{down:?}");
    let products = shop.client.get(format!("{}/api/products/3", shop.base)).send().await.unwrap();
    assert_eq!(products.status(), StatusCode::OK);
    // A cancellation while payments is down changes nothing: 503, the order still paid.
    let paid: i64 =
        sqlx::query_scalar("SELECT MAX(id) FROM orders WHERE status = 'paid'").fetch_one(&shop.pool).await.unwrap();
    let cancel = || shop.client.post(format!("{}/api/orders/{paid}/cancel", shop.base)).bearer_auth(&shop.token).send();
    assert_eq!(cancel().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let status: String =
        sqlx::query_scalar("SELECT status FROM orders WHERE id = $1").bind(paid).fetch_one(&shop.pool).await.unwrap();
    assert_eq!(status, "paid");

    // Back on the same address: the breaker closes on a probe, checkouts succeed.
    let (svc, _) = payments(addr, pay_dir.path()).await;
    shop.until_breaker("closed").await;
    assert_eq!(shop.checkout().await.0, StatusCode::CREATED);
    // Now the cancellation goes through: refunded at the service, cancelled in the shop.
    let cancelled: Value = cancel().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let charge = payments_service::charges::find(&pay_pool, &format!("order-{paid}")).await.unwrap().unwrap();
    assert_eq!(charge.status, "refunded");
    books_balance(&shop.pool, &pay_pool).await;
    let metrics = shop.metrics().await;
    assert!(metrics.contains("shop_payments_breaker_transitions_total{to=\"closed\"} 2"), "{metrics}");
    // The customer sees only paid orders.
    let orders: Value = shop
        .client
        .get(format!("{}/api/orders", shop.base))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(orders.as_array().unwrap().iter().all(|o| o["status"] == "paid" || o["id"] == paid), "{orders}");
    // The two checkouts above, the first one, and the probes that closed the breaker.
    assert!(orders.as_array().unwrap().len() >= 3, "{orders}");
    shop.stop().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_moves_once_and_in_parity() {
    let (pay_dir, shop_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), DbLocation::SqliteDir(shop_dir.path().into()));
    config.seed = true;
    let app = shop::Application::build(config).await.unwrap();
    let shop_pool = app.pool().clone();
    // Two local charges made straight into the shop's table, one refunded.
    for (order, status) in [(1, "captured"), (2, "refunded")] {
        sqlx::query("INSERT INTO users (email, password_hash, name, created_at) VALUES ($1, 'x', 'n', 0)")
            .bind(format!("h{order}@example.com"))
            .execute(&shop_pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO orders (user_id, status, total_cents, created_at) VALUES (1, 'paid', 100, 0)")
            .execute(&shop_pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO payments (order_id, amount_cents, status, card_last4, gateway_ref, created_at) \
             VALUES ($1, 100, $2, '4242', 'ch_x', 0)",
        )
        .bind(order)
        .bind(status)
        .execute(&shop_pool)
        .await
        .unwrap();
    }
    let (pay_pool, _) = payments_service::connect(&DbLocation::SqliteDir(pay_dir.path().into()), 2).await.unwrap();
    let first = payments_service::sync::backfill(&shop_pool, &pay_pool).await.unwrap();
    let second = payments_service::sync::backfill(&shop_pool, &pay_pool).await.unwrap();
    assert_eq!((first.read, first.copied, second.copied), (2, 2, 0));
    assert!(payments_service::sync::parity(&shop_pool, &pay_pool).await.unwrap().is_empty());
    sqlx::query("UPDATE charges SET status = 'captured' WHERE charge_key = 'order-2'")
        .execute(&pay_pool)
        .await
        .unwrap();
    let differ = payments_service::sync::parity(&shop_pool, &pay_pool).await.unwrap();
    assert_eq!(differ, [(2, "refunded".to_string(), "captured".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_click_while_the_charge_is_on_its_way_cannot_pay_for_the_cart_again() {
    let (pay_dir, shop_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (svc, _) = payments("127.0.0.1:0".parse().unwrap(), pay_dir.path()).await;
    let (pay_pool, _) = payments_service::connect(&DbLocation::SqliteDir(pay_dir.path().into()), 2).await.unwrap();
    let shop = Shop::start(shop_dir.path(), &svc.base).await;
    // The gateway answers in 150 ms (under the 300 ms timeout): long enough to click twice.
    let faults = shop.client.put(format!("{}/internal/faults", svc.base)).bearer_auth(TOKEN);
    assert_eq!(faults.json(&json!({"delay_ms": 150})).send().await.unwrap().status(), StatusCode::OK);
    let add = shop.client.post(format!("{}/api/cart/items", shop.base)).bearer_auth(&shop.token);
    assert_eq!(add.json(&json!({"product_id": 3, "quantity": 2})).send().await.unwrap().status(), StatusCode::CREATED);
    let click = || {
        shop.client
            .post(format!("{}/api/orders", shop.base))
            .bearer_auth(&shop.token)
            .json(&json!({"card_number": "4242424242424242"}))
            .send()
    };
    let (a, b) = tokio::join!(click(), click());
    let mut codes = [a.unwrap().status(), b.unwrap().status()];
    codes.sort();
    assert_eq!(codes, [StatusCode::CREATED, StatusCode::BAD_REQUEST], "one order; the other finds the cart empty");
    let captured = payments_service::charges::captured_orders(&pay_pool).await.unwrap();
    assert_eq!(captured.len(), 1);
    // A checkout given up puts its lines back: payments down, the cart is kept.
    let add = shop.client.post(format!("{}/api/cart/items", shop.base)).bearer_auth(&shop.token);
    assert_eq!(add.json(&json!({"product_id": 3, "quantity": 1})).send().await.unwrap().status(), StatusCode::CREATED);
    svc.stop().await;
    assert_eq!(click().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let cart: Value = shop
        .client
        .get(format!("{}/api/cart", shop.base))
        .bearer_auth(&shop.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"][0]["quantity"], 1, "{cart}");
    shop.stop().await;
}
