//! The catalogue: listing, filters, pagination, detail, categories, admin changes.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestShop, assert_client_error, on_both_databases};

on_both_databases!(
    listing_pages_through_the_whole_seed,
    filters_by_category_text_and_stock,
    bad_listing_parameters_name_the_field,
    product_detail_and_unknown_products,
    categories_are_listed,
    admin_creates_and_updates_products,
    admin_endpoints_refuse_without_the_admin_token,
);

async fn listing_pages_through_the_whole_seed(shop: &TestShop) {
    let (status, first) = shop.get("/api/products", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (first["page"].as_i64(), first["per_page"].as_i64(), first["total"].as_i64()),
        (Some(1), Some(20), Some(200))
    );
    let mut seen = HashSet::new();
    for page in 1..=4 {
        let (_, body) = shop.get(&format!("/api/products?per_page=50&page={page}"), None).await;
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 50);
        for item in items {
            assert!(seen.insert(item["id"].as_i64().unwrap()), "product repeated across pages");
            for key in ["id", "sku", "name", "description", "price_cents", "category"] {
                assert!(!item[key].is_null(), "{key} missing in {item}");
            }
        }
    }
    assert_eq!(seen.len(), 200);
    let (_, past_end) = shop.get("/api/products?per_page=50&page=5", None).await;
    assert_eq!(past_end["items"], json!([]));
    assert_eq!(past_end["total"], 200);
    let (_, empty_params) = shop.get("/api/products?category=&q=&in_stock=&page=&per_page=", None).await;
    assert_eq!(empty_params["total"], 200, "empty parameters mean no filter");
}

async fn filters_by_category_text_and_stock(shop: &TestShop) {
    let (_, books) = shop.get("/api/products?category=books&per_page=100", None).await;
    assert_eq!(books["total"], 20);
    assert!(books["items"].as_array().unwrap().iter().all(|p| p["category"] == "books"));
    let (_, kettles) = shop.get("/api/products?q=KETTLE", None).await;
    assert!(kettles["total"].as_i64().unwrap() >= 1);
    assert!(kettles["items"].as_array().unwrap().iter().all(|p| p["name"].as_str().unwrap().contains("Kettle")));
    let (_, wildcard) = shop.get("/api/products?q=%25", None).await;
    assert_eq!(wildcard["total"], 0, "a literal % matches nothing, it is not a wildcard");
    let (_, in_stock) = shop.get("/api/products?in_stock=true&per_page=100", None).await;
    assert_eq!(in_stock["total"], 180, "the seed has 20 products out of stock");
    for p in in_stock["items"].as_array().unwrap().iter().take(10) {
        assert!(shop.stock(p["id"].as_i64().unwrap()).await > 0);
    }
    let (_, combined) = shop.get("/api/products?category=kitchen&in_stock=1&q=classic", None).await;
    for p in combined["items"].as_array().unwrap() {
        assert_eq!(p["category"], "kitchen");
    }
}

async fn bad_listing_parameters_name_the_field(shop: &TestShop) {
    for (query, field) in [
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("in_stock=maybe", "in_stock"),
    ] {
        assert_client_error(
            &shop.get(&format!("/api/products?{query}"), None).await,
            StatusCode::BAD_REQUEST,
            Some(field),
        );
    }
}

async fn product_detail_and_unknown_products(shop: &TestShop) {
    let (status, p) = shop.get("/api/products/1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["id"], 1);
    assert_eq!(p["name"], "Classic Kettle");
    assert_client_error(&shop.get("/api/products/99999999", None).await, StatusCode::NOT_FOUND, None);
    assert_client_error(&shop.get("/api/products/abc", None).await, StatusCode::BAD_REQUEST, None);
    assert_client_error(&shop.get("/api/no/such/endpoint", None).await, StatusCode::NOT_FOUND, None);
}

async fn categories_are_listed(shop: &TestShop) {
    let (status, cats) = shop.get("/api/categories", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = cats.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 10);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

async fn admin_creates_and_updates_products(shop: &TestShop) {
    let new = json!({"sku": "NEW-1", "name": "Test Lamp", "description": "Bright", "price_cents": 1234, "category": "office", "stock": 7});
    let (status, created) = shop.post("/api/products", Some(ADMIN_TOKEN), new.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["category"], "office");
    assert_eq!(shop.stock(id).await, 7);
    assert_client_error(&shop.post("/api/products", Some(ADMIN_TOKEN), new).await, StatusCode::CONFLICT, Some("sku"));
    let bad_category = json!({"sku": "NEW-2", "name": "X", "price_cents": 1, "category": "nope"});
    assert_client_error(
        &shop.post("/api/products", Some(ADMIN_TOKEN), bad_category).await,
        StatusCode::NOT_FOUND,
        Some("category"),
    );
    let negative = json!({"sku": "NEW-3", "name": "X", "price_cents": -1, "category": "office"});
    assert_client_error(
        &shop.post("/api/products", Some(ADMIN_TOKEN), negative).await,
        StatusCode::BAD_REQUEST,
        Some("price_cents"),
    );
    let (status, updated) =
        shop.put(&format!("/api/products/{id}"), Some(ADMIN_TOKEN), json!({"price_cents": 999})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["price_cents"], 999);
    assert_eq!(updated["name"], "Test Lamp", "fields not sent are kept");
    assert_eq!(shop.get(&format!("/api/products/{id}"), None).await.1["price_cents"], 999);
    assert_client_error(
        &shop.put("/api/products/99999999", Some(ADMIN_TOKEN), json!({"price_cents": 1})).await,
        StatusCode::NOT_FOUND,
        None,
    );
    let (status, cat) =
        shop.post("/api/categories", Some(ADMIN_TOKEN), json!({"slug": "music", "name": "Music"})).await;
    assert_eq!(status, StatusCode::CREATED, "{cat}");
    assert_client_error(
        &shop.post("/api/categories", Some(ADMIN_TOKEN), json!({"slug": "Bad Slug", "name": "X"})).await,
        StatusCode::BAD_REQUEST,
        Some("slug"),
    );
}

async fn admin_endpoints_refuse_without_the_admin_token(shop: &TestShop) {
    let user = shop.user("notadmin@example.com").await;
    let body = json!({"sku": "HACK-1", "name": "X", "price_cents": 1, "category": "office"});
    assert_client_error(&shop.post("/api/products", None, body.clone()).await, StatusCode::UNAUTHORIZED, None);
    assert_client_error(&shop.post("/api/products", Some(&user), body.clone()).await, StatusCode::FORBIDDEN, None);
    assert_client_error(
        &shop.put("/api/products/1", Some(&user), json!({"price_cents": 1})).await,
        StatusCode::FORBIDDEN,
        None,
    );
    assert_client_error(&shop.put("/api/inventory/1", None, json!({"stock": 1})).await, StatusCode::UNAUTHORIZED, None);
    assert_client_error(
        &shop.put("/api/inventory/1", Some(&user), json!({"stock": 1})).await,
        StatusCode::FORBIDDEN,
        None,
    );
    assert_eq!(shop.get("/api/products/1", None).await.1["price_cents"], 199, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_off_without_a_configured_token() {
    let shop = TestShop::start_with(crate::support::Backend::Sqlite, |c| c.admin_token = None).await.unwrap();
    let got = shop.put("/api/inventory/1", Some("anything"), json!({"stock": 1})).await;
    assert_client_error(&got, StatusCode::FORBIDDEN, None);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_catalog_service_is_where_product_reads_go_from_the_start() {
    let shop = TestShop::start_with(crate::support::Backend::Sqlite, |c| {
        c.catalog_service_url = Some("http://127.0.0.1:9".into());
    })
    .await
    .unwrap();
    let (status, view) = shop.get("/api/admin/catalog", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((view["reads"].as_str(), view["url"].as_str()), (Some("service"), Some("http://127.0.0.1:9")));
    // Nothing listens there: adding to a cart cannot check the product and says so.
    let token = shop.user("configured@example.com").await;
    let got = shop.post("/api/cart/items", Some(&token), json!({"product_id": 1, "quantity": 1})).await;
    assert_client_error(&got, StatusCode::SERVICE_UNAVAILABLE, None);
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM products").await, 0, "the local catalogue is not seeded");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_restarted_after_the_move_keeps_its_catalog_retired_without_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let location = shop::DbLocation::SqliteDir(dir.path().into());
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), location.clone());
    config.seed = true;
    let first = shop::Application::build(config).await.unwrap();
    for sql in
        ["ALTER TABLE products RENAME TO products_retired", "ALTER TABLE categories RENAME TO categories_retired"]
    {
        sqlx::query(sql).execute(first.pool()).await.unwrap();
    }
    first.pool().close().await;
    drop(first);
    let mut config = shop::Config::new("127.0.0.1:0".parse().unwrap(), location);
    config.seed = true;
    config.catalog_service_url = Some("http://127.0.0.1:9".into());
    config.catalog_retired = true;
    let again = shop::Application::build(config).await.expect("starts without the catalog tables");
    let base = format!("http://{}", again.local_addr());
    let task = tokio::spawn(again.run_until_stopped(std::future::pending()));
    let status = reqwest::get(format!("{base}/api/products/1")).await.unwrap().status();
    assert_eq!(status, StatusCode::GONE);
    task.abort();
}
