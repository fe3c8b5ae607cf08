//! The catalog service against a real shop: backfilled from the shop's database, it
//! answers every catalog request exactly as the shop does; parity names rows that
//! differ; the shop's write-through endpoints keep it in step.

use catalog_service::{Application, Config, sync};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::DbLocation;
use tokio::sync::oneshot;

const ADMIN: &str = "catalog-admin";
const SHOP_ADMIN: &str = "shop-admin";

/// A server task and the sender that stops it.
struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.expect("task").expect("server ran cleanly");
    }
}

fn spawn<F>(addr: std::net::SocketAddr, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel();
    Running { base: format!("http://{addr}"), stop: Some(stop), task: tokio::spawn(run(stopped)) }
}

struct Pair {
    shop: Running,
    service: Running,
    shop_pool: shop::Pool,
    service_pool: shop::Pool,
    client: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A seeded shop, and a catalog service backfilled from it that asks it for stock.
async fn pair() -> Pair {
    let (shop_dir, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), DbLocation::SqliteDir(shop_dir.path().into()));
    config.seed = true;
    config.admin_token = Some(SHOP_ADMIN.into());
    let shop_app = shop::Application::build(config).await.unwrap();
    let shop_pool = shop_app.pool().clone();
    let shop = spawn(shop_app.local_addr(), |stopped| {
        shop_app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    let service_app = Application::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: DbLocation::SqliteDir(service_dir.path().into()),
        admin_token: Some(ADMIN.into()),
        inventory_url: Some(shop.base.clone()),
        inventory_token: Some(SHOP_ADMIN.into()),
    })
    .await
    .unwrap();
    let service_pool = service_app.pool().clone();
    let report = sync::backfill(&shop_pool, &service_pool, shop::Dialect::Sqlite).await.unwrap();
    assert_eq!((report.categories, report.products), (10, 200));
    let service = spawn(service_app.local_addr(), |stopped| {
        service_app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    Pair { shop, service, shop_pool, service_pool, client: reqwest::Client::new(), _dirs: (shop_dir, service_dir) }
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let resp = client.get(url).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_every_catalog_request_like_the_shop() {
    let p = pair().await;
    let requests = [
        "/api/products",
        "/api/products?per_page=100&page=2",
        "/api/products?category=books",
        "/api/products?q=kettle",
        "/api/products?q=%25",
        "/api/products?in_stock=true&per_page=100",
        "/api/products?in_stock=true&category=toys&q=classic",
        "/api/products?category=&q=&in_stock=&page=&per_page=",
        "/api/products?per_page=0",
        "/api/products?page=abc",
        "/api/products?in_stock=maybe",
        "/api/products/1",
        "/api/products/200",
        "/api/products/999999",
        "/api/products/abc",
        "/api/categories",
    ];
    for path in requests {
        let from_shop = get(&p.client, format!("{}{path}", p.shop.base)).await;
        let from_service = get(&p.client, format!("{}{path}", p.service.base)).await;
        assert_eq!(from_shop, from_service, "{path} differs");
    }
    p.service.stop().await;
    p.shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_names_every_row_that_differs() {
    let p = pair().await;
    assert!(sync::parity(&p.shop_pool, &p.service_pool).await.unwrap().in_parity());
    sqlx::query("UPDATE products SET price_cents = price_cents + 1 WHERE id = 7")
        .execute(&p.service_pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM products WHERE id = 9").execute(&p.service_pool).await.unwrap();
    sqlx::query("UPDATE products SET name = 'Renamed' WHERE id = 11").execute(&p.shop_pool).await.unwrap();
    let report = sync::parity(&p.shop_pool, &p.service_pool).await.unwrap();
    assert_eq!(report.products, (200, 199));
    let named: Vec<(i64, &str)> = report
        .differences
        .iter()
        .map(|d| {
            let kind = match d.difference {
                sync::Difference::MissingInService => "missing",
                sync::Difference::MissingInShop => "extra",
                sync::Difference::Differs { .. } => "differs",
            };
            (d.id, kind)
        })
        .collect();
    assert_eq!(named, [(7, "differs"), (9, "missing"), (11, "differs")]);
    // A second backfill converges the copies.
    sync::backfill(&p.shop_pool, &p.service_pool, shop::Dialect::Sqlite).await.unwrap();
    assert!(sync::parity(&p.shop_pool, &p.service_pool).await.unwrap().in_parity());
    p.service.stop().await;
    p.shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_endpoints_upsert_rows_and_need_the_admin_token() {
    let p = pair().await;
    let (_, mut row) = get(&p.client, format!("{}/api/products/5", p.service.base)).await;
    assert_eq!(row["id"], 5);
    let full = json!({"id": 5, "sku": "KIT-0005", "name": "Replicated", "description": "d", "price_cents": 4321,
                      "category_id": 1, "created_at": 1, "updated_at": 2});
    let url = format!("{}/internal/products/5", p.service.base);
    let refused = p.client.put(&url).json(&full).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong = p
        .client
        .put(format!("{}/internal/products/6", p.service.base))
        .bearer_auth(ADMIN)
        .json(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "path and body ids must agree");
    let ok = p.client.put(&url).bearer_auth(ADMIN).json(&full).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    row = get(&p.client, format!("{}/api/products/5", p.service.base)).await.1;
    assert_eq!((row["name"].as_str(), row["price_cents"].as_i64()), (Some("Replicated"), Some(4321)));
    let new_row = json!({"id": 500, "sku": "NEW-500", "name": "New", "description": "", "price_cents": 1,
                         "category_id": 2, "created_at": 1, "updated_at": 1});
    let created = p
        .client
        .put(format!("{}/internal/products/500", p.service.base))
        .bearer_auth(ADMIN)
        .json(&new_row)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&p.client, format!("{}/api/products/500", p.service.base)).await.1["sku"], "NEW-500");
    p.service.stop().await;
    p.shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stock_filter_asks_the_inventory_and_fails_cleanly_without_it() {
    let p = pair().await;
    let stock = |id: i64| {
        let c = p.client.clone();
        let base = p.shop.base.clone();
        async move {
            c.put(format!("{base}/api/inventory/{id}"))
                .bearer_auth(SHOP_ADMIN)
                .json(&json!({"stock": 0}))
                .send()
                .await
                .unwrap()
        }
    };
    assert!(stock(1).await.status().is_success());
    let (_, page) = get(&p.client, format!("{}/api/products?in_stock=true&per_page=100", p.service.base)).await;
    assert_eq!(page["total"], 179, "a stock change in the shop is seen at once");
    assert_ne!(page["items"][0]["id"], 1);
    p.shop.stop().await;
    let (status, body) = get(&p.client, format!("{}/api/products?in_stock=true", p.service.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("inventory"));
    let (status, _) = get(&p.client, format!("{}/api/products", p.service.base)).await;
    assert_eq!(status, StatusCode::OK, "everything else still works");
    p.service.stop().await;
}
