//! The catalog service against a real shop: backfilled from the shop's database, it
//! answers every catalog request exactly as the shop does; parity names rows that
//! differ; the shop's write-through endpoints keep it in step.

use catalog_service::{Application, Config, sync};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::DbLocation;

const ADMIN: &str = "catalog-admin";
const SHOP_ADMIN: &str = "shop-admin";

use ficus_e2e::Server as Running;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Pair {
    shop: Running,
    service: Running,
    shop_pool: shop::Pool,
    service_pool: shop::Pool,
    client: reqwest::Client,
    dialect: shop::Dialect,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _pg: Vec<ficus_e2e::pg::TestDatabase>,
}

/// A seeded shop, and a catalog service backfilled from it that asks it for stock,
/// each on its own database; None when PostgreSQL is asked for and not reachable.
async fn pair(backend: Backend) -> Option<Pair> {
    let (shop_dir, service_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut pg = Vec::new();
    let (shop_db, service_db, dialect) = match backend {
        Backend::Sqlite => (
            DbLocation::SqliteDir(shop_dir.path().into()),
            DbLocation::SqliteDir(service_dir.path().into()),
            shop::Dialect::Sqlite,
        ),
        Backend::Postgres => {
            let (a, shop_url) = ficus_e2e::pg::create_database("catalog_test_shop").await?;
            let (b, service_url) = ficus_e2e::pg::create_database("catalog_test_service").await?;
            pg.extend([a, b]);
            (DbLocation::Url(shop_url), DbLocation::Url(service_url), shop::Dialect::Postgres)
        }
    };
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), shop_db);
    config.seed = true;
    config.admin_token = Some(SHOP_ADMIN.into());
    let shop_app = shop::Application::build(config).await.unwrap();
    let shop_pool = shop_app.pool().clone();
    let shop = Running::spawn(shop_app.local_addr(), |stopped| {
        shop_app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    let service_app = Application::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: service_db,
        admin_token: Some(ADMIN.into()),
        inventory_url: Some(shop.base.clone()),
        inventory_token: Some(SHOP_ADMIN.into()),
    })
    .await
    .unwrap();
    let service_pool = service_app.pool().clone();
    let report = sync::backfill(&shop_pool, &service_pool, dialect).await.unwrap();
    assert_eq!((report.categories, report.products), (10, 200));
    let service = Running::spawn(service_app.local_addr(), |stopped| {
        service_app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    Some(Pair {
        shop,
        service,
        shop_pool,
        service_pool,
        client: reqwest::Client::new(),
        dialect,
        _dirs: (shop_dir, service_dir),
        _pg: pg,
    })
}

/// Runs each named `async fn(Pair)` on SQLite and on PostgreSQL, as two tests.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::pair(super::Backend::Sqlite).await.expect("sqlite")).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(pair) = super::pair(super::Backend::Postgres).await else { return };
                    super::$name(pair).await;
                }
            )*
        }
    };
}

on_both_databases!(
    answers_every_catalog_request_like_the_shop,
    parity_names_every_row_that_differs,
    replication_endpoints_upsert_rows_and_need_the_admin_token,
    in_stock_filter_asks_the_inventory_and_fails_cleanly_without_it,
    write_through_keeps_the_service_in_step_or_refuses_the_write,
    with_reads_switched_to_the_service_the_shop_works_without_its_catalog_tables,
    switches_are_validated_and_admin_only,
);

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let resp = client.get(url).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

async fn answers_every_catalog_request_like_the_shop(p: Pair) {
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

async fn parity_names_every_row_that_differs(p: Pair) {
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
    sync::backfill(&p.shop_pool, &p.service_pool, p.dialect).await.unwrap();
    assert!(sync::parity(&p.shop_pool, &p.service_pool).await.unwrap().in_parity());
    p.service.stop().await;
    p.shop.stop().await;
}

async fn replication_endpoints_upsert_rows_and_need_the_admin_token(p: Pair) {
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

async fn in_stock_filter_asks_the_inventory_and_fails_cleanly_without_it(p: Pair) {
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

async fn set_switches(p: &Pair, body: Value) -> (StatusCode, Value) {
    let resp = p
        .client
        .put(format!("{}/api/admin/catalog", p.shop.base))
        .bearer_auth(SHOP_ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

async fn shop_user(p: &Pair, email: &str) -> String {
    let body = json!({"email": email, "password": "correct-horse", "name": "T"});
    let created = p.client.post(format!("{}/api/users", p.shop.base)).json(&body).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let session: Value =
        p.client.post(format!("{}/api/sessions", p.shop.base)).json(&body).send().await.unwrap().json().await.unwrap();
    session["token"].as_str().unwrap().to_string()
}

async fn write_through_keeps_the_service_in_step_or_refuses_the_write(p: Pair) {
    let (status, view) =
        set_switches(&p, json!({"reads": "local", "write_through": true, "url": p.service.base, "token": ADMIN})).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["write_through"], true);
    let update = |id: i64, price: i64| {
        let c = p.client.clone();
        let url = format!("{}/api/products/{id}", p.shop.base);
        async move { c.put(url).bearer_auth(SHOP_ADMIN).json(&json!({"price_cents": price})).send().await.unwrap().status() }
    };
    assert_eq!(update(3, 777).await, StatusCode::OK);
    assert_eq!(get(&p.client, format!("{}/api/products/3", p.service.base)).await.1["price_cents"], 777);
    let new = json!({"sku": "WT-1", "name": "Through", "price_cents": 5, "category": "pets", "stock": 2});
    let created =
        p.client.post(format!("{}/api/products", p.shop.base)).bearer_auth(SHOP_ADMIN).json(&new).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(get(&p.client, format!("{}/api/products/{id}", p.service.base)).await.1["sku"], "WT-1");
    let cat = p
        .client
        .post(format!("{}/api/categories", p.shop.base))
        .bearer_auth(SHOP_ADMIN)
        .json(&json!({"slug": "music", "name": "Music"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cat.status(), StatusCode::CREATED);
    assert!(sync::parity(&p.shop_pool, &p.service_pool).await.unwrap().in_parity(), "every write reached the service");
    // With the service down, a write is refused whole rather than lost on one side.
    p.service.stop().await;
    assert_eq!(update(3, 888).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&p.client, format!("{}/api/products/3", p.shop.base)).await.1["price_cents"], 777);
    p.shop.stop().await;
}

async fn with_reads_switched_to_the_service_the_shop_works_without_its_catalog_tables(p: Pair) {
    let (status, _) = set_switches(&p, json!({"reads": "service", "url": p.service.base})).await;
    assert_eq!(status, StatusCode::OK);
    for sql in
        ["ALTER TABLE products RENAME TO products_retired", "ALTER TABLE categories RENAME TO categories_retired"]
    {
        sqlx::query(sql).execute(&p.shop_pool).await.unwrap();
    }
    let token = shop_user(&p, "switched@example.com").await;
    let add = p
        .client
        .post(format!("{}/api/cart/items", p.shop.base))
        .bearer_auth(&token)
        .json(&json!({"product_id": 2, "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), StatusCode::CREATED);
    let unknown = p
        .client
        .post(format!("{}/api/cart/items", p.shop.base))
        .bearer_auth(&token)
        .json(&json!({"product_id": 99999, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // A price change made at the service is what the cart shows and checkout charges.
    let changed = p
        .client
        .put(format!("{}/api/products/2", p.service.base))
        .bearer_auth(ADMIN)
        .json(&json!({"price_cents": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let cart: Value = p
        .client
        .get(format!("{}/api/cart", p.shop.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["total_cents"], 3000);
    let order = p
        .client
        .post(format!("{}/api/orders", p.shop.base))
        .bearer_auth(&token)
        .json(&json!({"card_number": "4242424242424242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), StatusCode::CREATED);
    assert_eq!(order.json::<Value>().await.unwrap()["total_cents"], 3000);
    let stock = p
        .client
        .put(format!("{}/api/inventory/2", p.shop.base))
        .bearer_auth(SHOP_ADMIN)
        .json(&json!({"stock": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(stock.status(), StatusCode::OK, "inventory checks products through the service");
    p.service.stop().await;
    p.shop.stop().await;
}

async fn switches_are_validated_and_admin_only(p: Pair) {
    assert_eq!(set_switches(&p, json!({"reads": "sideways"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(set_switches(&p, json!({"reads": "service"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(set_switches(&p, json!({"reads": "local", "write_through": true})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(set_switches(&p, json!({"reads": "local", "url": "ftp://x"})).await.0, StatusCode::BAD_REQUEST);
    let anonymous = p
        .client
        .put(format!("{}/api/admin/catalog", p.shop.base))
        .json(&json!({"reads": "local"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, view) = set_switches(&p, json!({"reads": "local"})).await;
    assert_eq!(
        (status, view),
        (StatusCode::OK, json!({"reads": "local", "write_through": false, "url": null, "retired": false}))
    );
    assert_eq!(set_switches(&p, json!({"reads": "local", "retired": true})).await.0, StatusCode::BAD_REQUEST);
    let (status, view) = set_switches(&p, json!({"reads": "service", "url": p.service.base, "retired": true})).await;
    assert_eq!((status, view["retired"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = get(&p.client, format!("{}/api/products/1", p.shop.base)).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(get(&p.client, format!("{}/api/categories", p.shop.base)).await.0, StatusCode::GONE);
    assert_eq!(
        get(&p.client, format!("{}/api/inventory/1", p.shop.base)).await.0,
        StatusCode::OK,
        "only the catalog retires"
    );
    p.service.stop().await;
    p.shop.stop().await;
}
