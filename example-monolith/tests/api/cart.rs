//! The cart: adding, changing, removing, limits, and that it is the caller's alone.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestShop, assert_client_error, on_both_databases};

on_both_databases!(cart_lifecycle, bad_cart_input_changes_nothing, carts_are_private);

async fn cart_lifecycle(shop: &TestShop) {
    let token = shop.user("cart@example.com").await;
    let (status, empty) = shop.get("/api/cart", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"items": [], "total_cents": 0}));
    shop.add_to_cart(&token, 1, 2).await;
    shop.add_to_cart(&token, 1, 1).await;
    shop.add_to_cart(&token, 2, 1).await;
    let (_, cart) = shop.get("/api/cart", Some(&token)).await;
    let items = cart["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["quantity"], 3, "adding the same product sums the quantity");
    let p1 = shop.get("/api/products/1", None).await.1["price_cents"].as_i64().unwrap();
    let p2 = shop.get("/api/products/2", None).await.1["price_cents"].as_i64().unwrap();
    assert_eq!(items[0]["line_total_cents"].as_i64().unwrap(), 3 * p1);
    assert_eq!(cart["total_cents"].as_i64().unwrap(), 3 * p1 + p2);
    let (status, cart) = shop.put("/api/cart/items/1", Some(&token), json!({"quantity": 5})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["items"][0]["quantity"], 5);
    let (status, cart) = shop.delete("/api/cart/items/2", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    assert_client_error(&shop.delete("/api/cart/items/2", Some(&token)).await, StatusCode::NOT_FOUND, None);
}

async fn bad_cart_input_changes_nothing(shop: &TestShop) {
    let token = shop.user("badcart@example.com").await;
    shop.add_to_cart(&token, 3, 1).await;
    let before = shop.get("/api/cart", Some(&token)).await.1;
    for quantity in [0, -1, 100, i64::MAX] {
        let got = shop.post("/api/cart/items", Some(&token), json!({"product_id": 3, "quantity": quantity})).await;
        assert_client_error(&got, StatusCode::BAD_REQUEST, Some("quantity"));
    }
    let over = shop.post("/api/cart/items", Some(&token), json!({"product_id": 3, "quantity": 99})).await;
    assert_client_error(&over, StatusCode::BAD_REQUEST, Some("quantity"));
    let unknown = shop.post("/api/cart/items", Some(&token), json!({"product_id": 999999, "quantity": 1})).await;
    assert_client_error(&unknown, StatusCode::NOT_FOUND, Some("product_id"));
    let wrong_type = shop.post("/api/cart/items", Some(&token), json!({"product_id": "three", "quantity": 1})).await;
    assert!(wrong_type.0.is_client_error());
    let malformed = shop
        .client
        .post(shop.url("/api/cart/items"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_client_error(
        &shop.put("/api/cart/items/3", Some(&token), json!({"quantity": 0})).await,
        StatusCode::BAD_REQUEST,
        Some("quantity"),
    );
    assert_client_error(
        &shop.put("/api/cart/items/4", Some(&token), json!({"quantity": 1})).await,
        StatusCode::NOT_FOUND,
        None,
    );
    let anonymous = shop.post("/api/cart/items", None, json!({"product_id": 3, "quantity": 1})).await;
    assert_client_error(&anonymous, StatusCode::UNAUTHORIZED, None);
    assert_eq!(shop.get("/api/cart", Some(&token)).await.1, before);
}

async fn carts_are_private(shop: &TestShop) {
    let ann = shop.user("ann.cart@example.com").await;
    let bob = shop.user("bob.cart@example.com").await;
    shop.add_to_cart(&ann, 5, 2).await;
    assert_eq!(shop.get("/api/cart", Some(&bob)).await.1["items"], json!([]));
    assert_client_error(&shop.delete("/api/cart/items/5", Some(&bob)).await, StatusCode::NOT_FOUND, None);
    assert_client_error(
        &shop.put("/api/cart/items/5", Some(&bob), json!({"quantity": 1})).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_eq!(shop.get("/api/cart", Some(&ann)).await.1["items"][0]["quantity"], 2);
}
