//! The notifications service against a real shop: the shop's outbox, its relay (over HTTP
//! and through NATS JetStream), the idempotent consumer, and the caller resolved by the shop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notifications_service::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::DbLocation;
use shop::events::relay::{HttpPublisher, Publisher, Relay};
use shop::events::{Event, Payload};

const TOKEN: &str = "internal-token";

use ficus_e2e::Server as Running;

struct Pair {
    shop: Running,
    service: Running,
    shop_pool: shop::Pool,
    service_state: notifications_service::ServiceState,
    client: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A shop (sessions lasting `session_ttl` seconds) and a notifications service that asks it
/// who calls, each on its own SQLite database; the service also consumes `nats` when given.
async fn pair(session_ttl: i64, nats: Option<shop::events::nats::NatsTarget>) -> Pair {
    let (shop_dir, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), DbLocation::SqliteDir(shop_dir.path().into()));
    config.seed = true;
    config.admin_token = Some(TOKEN.into());
    config.internal_token = Some(TOKEN.into());
    config.session_ttl_secs = session_ttl;
    let shop_app = shop::Application::build(config).await.unwrap();
    let shop_pool = shop_app.pool().clone();
    let shop = Running::spawn(shop_app.local_addr(), |stopped| {
        shop_app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    let app = Application::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: DbLocation::SqliteDir(service_dir.path().into()),
        events_token: Some(TOKEN.into()),
        shop_url: shop.base.clone(),
        shop_token: Some(TOKEN.into()),
        nats,
    })
    .await
    .unwrap();
    let service_state = app.state().clone();
    let service = Running::spawn(app.local_addr(), |stopped| {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    Pair { shop, service, shop_pool, service_state, client: reqwest::Client::new(), _dirs: (shop_dir, service_dir) }
}

impl Pair {
    /// Registers, logs in and buys one product; returns the session token and the order id.
    async fn customer(&self, email: &str) -> (String, i64) {
        let creds = json!({"email": email, "password": "s3cret-pass", "name": "Customer"});
        let r = self.client.post(format!("{}/api/users", self.shop.base)).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let session: Value = self
            .client
            .post(format!("{}/api/sessions", self.shop.base))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["token"].as_str().unwrap().to_string();
        self.client
            .post(format!("{}/api/cart/items", self.shop.base))
            .bearer_auth(&token)
            .json(&json!({"product_id": 5, "quantity": 2}))
            .send()
            .await
            .unwrap();
        let order: Value = self
            .client
            .post(format!("{}/api/orders", self.shop.base))
            .bearer_auth(&token)
            .json(&json!({"card_number": "4242424242424242"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (token, order["id"].as_i64().expect("an order"))
    }

    async fn notifications(&self, token: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}/api/notifications", self.service.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn stats(&self) -> Value {
        self.client.get(format!("{}/internal/stats", self.service.base)).send().await.unwrap().json().await.unwrap()
    }

    fn relay(&self, publisher: Arc<dyn Publisher>) -> Relay {
        Relay::new(self.shop_pool.clone(), publisher)
    }

    async fn stop(self) {
        self.service.stop().await;
        self.shop.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_one_event_per_change_written_with_it() {
    let p = pair(3600, None).await;
    let (token, order) = p.customer("outbox@example.com").await;
    let cancel =
        p.client.post(format!("{}/api/orders/{order}/cancel", p.shop.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let events = shop::events::all(&p.shop_pool).await.unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.payload.topic()).collect();
    assert_eq!(topics, ["UserRegistered", "OrderPlaced", "OrderCancelled"]);
    assert!(matches!(events[1].payload, Payload::OrderPlaced { order_id, items: 2, .. } if order_id == order));
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    // A checkout that fails (out of stock) leaves no event: the event commits with the change.
    let mut set = p.client.put(format!("{}/api/inventory/6", p.shop.base)).bearer_auth(TOKEN);
    set = set.json(&json!({"stock": 0}));
    assert_eq!(set.send().await.unwrap().status(), StatusCode::OK);
    p.client
        .post(format!("{}/api/cart/items", p.shop.base))
        .bearer_auth(&token)
        .json(&json!({"product_id": 6, "quantity": 1}))
        .send()
        .await
        .unwrap();
    let refused = p
        .client
        .post(format!("{}/api/orders", p.shop.base))
        .bearer_auth(&token)
        .json(&json!({"card_number": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(shop::events::all(&p.shop_pool).await.unwrap().len(), 3);
    p.stop().await;
}

/// A publisher that delivers, then reports a failure the first time: the relay "crashed"
/// between publishing and marking the batch published.
struct CrashAfterPublish {
    inner: HttpPublisher,
    crashed: AtomicBool,
}

#[async_trait::async_trait]
impl Publisher for CrashAfterPublish {
    async fn publish(&self, events: &[Event]) -> Result<(), String> {
        self.inner.publish(events).await?;
        if !self.crashed.swap(true, Ordering::SeqCst) {
            return Err("crashed before marking the batch published".into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "crash-once".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_again_after_a_relay_crash_is_stored_once() {
    let p = pair(3600, None).await;
    for k in 0..3 {
        p.customer(&format!("crash{k}@example.com")).await;
    }
    let publisher = CrashAfterPublish {
        inner: HttpPublisher::new(&p.service.base, Some(TOKEN.into())),
        crashed: AtomicBool::new(false),
    };
    let relay = p.relay(Arc::new(publisher));
    assert!(relay.run_once().await.is_err(), "the first round crashes after publishing");
    assert_eq!(shop::events::unpublished(&p.shop_pool, 100).await.unwrap().len(), 6, "nothing marked published");
    assert_eq!(relay.run_once().await.unwrap(), 6, "the same six events are published again");
    assert_eq!(relay.run_once().await.unwrap(), 0);
    let stats = p.stats().await;
    assert_eq!(stats["processed_events"], 6);
    assert_eq!(stats["deliveries_duplicate"], 6, "{stats}");
    assert_eq!(stats["duplicated_events"], 0);
    assert_eq!(stats["out_of_order"], 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_acts_on_each_event_once_and_needs_the_events_token() {
    let p = pair(3600, None).await;
    let (token, _) = p.customer("once@example.com").await;
    let events = shop::events::all(&p.shop_pool).await.unwrap();
    let post = |auth: Option<&'static str>| {
        let mut req = p.client.post(format!("{}/internal/events", p.service.base)).json(&events);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(post(Some("wrong")).await.unwrap().status(), StatusCode::FORBIDDEN);
    let first: Value = post(Some(TOKEN)).await.unwrap().json().await.unwrap();
    let again: Value = post(Some(TOKEN)).await.unwrap().json().await.unwrap();
    assert_eq!((first["processed"].as_u64(), first["duplicates"].as_u64()), (Some(2), Some(0)));
    assert_eq!((again["processed"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(2)));
    let (_, list) = p.notifications(&token).await;
    let kinds: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["order_confirmed", "welcome"], "newest first, each once");
    // The same words as the shop's own notifications.
    let shop_list: Value = p
        .client
        .get(format!("{}/api/notifications", p.shop.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (a, b) in list.as_array().unwrap().iter().zip(shop_list.as_array().unwrap()) {
        assert_eq!((&a["kind"], &a["subject"], &a["body"]), (&b["kind"], &b["subject"], &b["body"]));
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_resolved_by_the_shop_and_see_only_their_own_notifications() {
    // Sessions last 2 s, so one expires during the test.
    let p = pair(2, None).await;
    let (alice, alice_order) = p.customer("alice.notified@example.com").await;
    let (bob, bob_order) = p.customer("bob.notified@example.com").await;
    let relay = p.relay(Arc::new(HttpPublisher::new(&p.service.base, Some(TOKEN.into()))));
    relay.run_once().await.unwrap();
    let (status, list) = p.notifications(&alice).await;
    assert_eq!(status, StatusCode::OK);
    let subjects: Vec<String> =
        list.as_array().unwrap().iter().map(|n| n["subject"].as_str().unwrap().to_string()).collect();
    assert!(subjects.contains(&format!("Order #{alice_order} confirmed")), "{subjects:?}");
    assert!(!subjects.iter().any(|s| s.contains(&format!("#{bob_order} "))), "alice sees bob's: {subjects:?}");
    // Bob cannot mark Alice's notification read.
    let id = list[0]["id"].as_i64().unwrap();
    let url = format!("{}/api/notifications/{id}/read", p.service.base);
    assert_eq!(p.client.post(&url).bearer_auth(&bob).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(p.client.post(&url).bearer_auth(&alice).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    // A forged token, no token: 401.
    assert_eq!(p.notifications("forged-token").await.0, StatusCode::UNAUTHORIZED);
    let bare = p.client.get(format!("{}/api/notifications", p.service.base)).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    // An expired session: 401, the cache never outlives the session.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(p.notifications(&alice).await.0, StatusCode::UNAUTHORIZED);
    // The shop refuses to resolve sessions for a caller without its internal token.
    let r = p
        .client
        .post(format!("{}/internal/sessions/resolve", p.shop.base))
        .json(&json!({"token": bob}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_jetstream_are_consumed_once_in_order() {
    let Some(url) = ficus_e2e::nats::url().await else { return };
    let run = format!("{}_{}", std::process::id(), shop::db::now());
    let target = shop::events::nats::NatsTarget {
        url,
        stream: format!("TEST_EVENTS_{run}"),
        prefix: format!("test.{run}.events"),
    };
    let p = pair(3600, Some(target.clone())).await;
    for k in 0..3 {
        p.customer(&format!("nats{k}@example.com")).await;
    }
    let publisher = Arc::new(shop::events::nats::NatsPublisher::connect(target.clone()).await.unwrap());
    let relay = p.relay(publisher.clone());
    assert_eq!(relay.run_once().await.unwrap(), 6);
    // Published again (a relay restarted from an older position): JetStream drops them.
    publisher.publish(&shop::events::all(&p.shop_pool).await.unwrap()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.stats().await["processed_events"] != 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stats = p.stats().await;
    assert_eq!(stats["processed_events"], 6, "{stats}");
    assert_eq!(stats["duplicated_events"], 0);
    assert_eq!(stats["out_of_order"], 0);
    let tally = notifications_service::consumer::tally(&p.service_state.pool).await.unwrap();
    assert_eq!(tally.by_kind, [("order_confirmed".to_string(), 3), ("welcome".to_string(), 3)]);
    p.stop().await;
    notifications_service::nats::delete_stream(&target).await.unwrap();
}
