//! Checkout and orders: the one transaction, declines, stock limits, idempotency,
//! concurrency, privacy, cancellation.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestShop, assert_client_error, on_both_databases};

const CARD: &str = "4242424242424242";
const DECLINED: &str = "4000000000000002";

on_both_databases!(
    checkout_writes_order_stock_payment_notification_and_empties_the_cart,
    declined_card_creates_nothing_and_keeps_the_stock,
    out_of_stock_is_a_conflict,
    bad_checkouts_are_refused,
    idempotency_key_makes_one_order,
    concurrent_retries_with_one_key_make_one_order,
    fifty_concurrent_checkouts_for_five_in_stock,
    orders_are_private,
    cancel_restocks_and_refunds,
);

fn checkout_body(card: &str) -> serde_json::Value {
    json!({ "card_number": card })
}

async fn checkout_writes_order_stock_payment_notification_and_empties_the_cart(shop: &TestShop) {
    let token = shop.user("buyer@example.com").await;
    let (s1, s2) = (shop.stock(1).await, shop.stock(2).await);
    shop.add_to_cart(&token, 1, 2).await;
    shop.add_to_cart(&token, 2, 1).await;
    let cart_total = shop.get("/api/cart", Some(&token)).await.1["total_cents"].as_i64().unwrap();
    let (status, order) = shop.post("/api/orders", Some(&token), checkout_body(CARD)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "paid");
    assert_eq!(order["total_cents"].as_i64().unwrap(), cart_total);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!((shop.stock(1).await, shop.stock(2).await), (s1 - 2, s2 - 1));
    assert_eq!(shop.get("/api/cart", Some(&token)).await.1["items"], json!([]));
    let id = order["id"].as_i64().unwrap();
    let payments =
        shop.scalar(&format!("SELECT COUNT(*) FROM payments WHERE order_id = {id} AND status = 'captured'")).await;
    assert_eq!(payments, 1);
    let notes = shop.get("/api/notifications", Some(&token)).await.1;
    assert_eq!(notes[0]["kind"], "order_confirmed");
    let (status, listed) = shop.get("/api/orders", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!([order.clone()]));
    assert_eq!(shop.get(&format!("/api/orders/{id}"), Some(&token)).await.1, order);
}

async fn declined_card_creates_nothing_and_keeps_the_stock(shop: &TestShop) {
    let token = shop.user("declined@example.com").await;
    let before = shop.stock(7).await;
    shop.add_to_cart(&token, 7, 2).await;
    let got = shop.post("/api/orders", Some(&token), checkout_body(DECLINED)).await;
    assert_client_error(&got, StatusCode::PAYMENT_REQUIRED, None);
    assert_eq!(shop.stock(7).await, before, "stock released");
    assert_eq!(shop.get("/api/orders", Some(&token)).await.1, json!([]));
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM reservations").await, 0);
    assert_eq!(shop.get("/api/cart", Some(&token)).await.1["items"][0]["quantity"], 2, "the cart is kept for a retry");
    let (status, _) = shop.post("/api/orders", Some(&token), checkout_body(CARD)).await;
    assert_eq!(status, StatusCode::CREATED, "a good card then succeeds");
}

async fn out_of_stock_is_a_conflict(shop: &TestShop) {
    let token = shop.user("oos@example.com").await;
    shop.set_stock(9, 1).await;
    shop.add_to_cart(&token, 8, 1).await;
    shop.add_to_cart(&token, 9, 2).await;
    let s8 = shop.stock(8).await;
    let got = shop.post("/api/orders", Some(&token), checkout_body(CARD)).await;
    assert_client_error(&got, StatusCode::CONFLICT, Some("product_id"));
    assert_eq!((shop.stock(8).await, shop.stock(9).await), (s8, 1), "no partial reservation survives");
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM orders").await, 0);
}

async fn bad_checkouts_are_refused(shop: &TestShop) {
    let token = shop.user("badpay@example.com").await;
    assert_client_error(
        &shop.post("/api/orders", Some(&token), checkout_body(CARD)).await,
        StatusCode::BAD_REQUEST,
        Some("cart"),
    );
    shop.add_to_cart(&token, 10, 1).await;
    for card in ["", "1234", "4242424242424241", "4242-abcd-4242-4242"] {
        let got = shop.post("/api/orders", Some(&token), checkout_body(card)).await;
        assert_client_error(&got, StatusCode::BAD_REQUEST, Some("card_number"));
    }
    assert_client_error(&shop.post("/api/orders", None, checkout_body(CARD)).await, StatusCode::UNAUTHORIZED, None);
    assert_client_error(&shop.post("/api/orders", Some(&token), json!({})).await, StatusCode::BAD_REQUEST, None);
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM orders").await, 0);
}

async fn place_with_key(shop: &TestShop, token: &str, key: &str) -> (StatusCode, serde_json::Value) {
    let resp = shop
        .client
        .post(shop.url("/api/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&checkout_body(CARD))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn idempotency_key_makes_one_order(shop: &TestShop) {
    let token = shop.user("idem@example.com").await;
    shop.add_to_cart(&token, 11, 1).await;
    let stock = shop.stock(11).await;
    let (s1, first) = place_with_key(shop, &token, "order-1").await;
    let (s2, again) = place_with_key(shop, &token, "order-1").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, again);
    assert_eq!(shop.get("/api/orders", Some(&token)).await.1.as_array().unwrap().len(), 1);
    assert_eq!(shop.stock(11).await, stock - 1, "charged and reserved once");
    // Another user may use the same key: keys are per user.
    let other = shop.user("idem2@example.com").await;
    shop.add_to_cart(&other, 11, 1).await;
    let (status, theirs) = place_with_key(shop, &other, "order-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(theirs["id"], first["id"]);
}

async fn concurrent_retries_with_one_key_make_one_order(shop: &TestShop) {
    let token = shop.user("retry@example.com").await;
    shop.add_to_cart(&token, 12, 1).await;
    let results = join_all((0..8).map(|_| place_with_key(shop, &token, "same-key"))).await;
    let ids: std::collections::HashSet<i64> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "all retries answer with the one order");
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM orders").await, 1);
}

async fn fifty_concurrent_checkouts_for_five_in_stock(shop: &TestShop) {
    const BUYERS: usize = 50;
    let product = 13;
    shop.set_stock(product, 5).await;
    let tokens = join_all((0..BUYERS).map(|i| async move {
        let token = shop.user(&format!("race{i}@example.com")).await;
        shop.add_to_cart(&token, product, 1).await;
        token
    }))
    .await;
    let statuses =
        join_all(tokens.iter().map(|t| async move { shop.post("/api/orders", Some(t), checkout_body(CARD)).await.0 }))
            .await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (5, BUYERS - 5), "statuses: {statuses:?}");
    assert_eq!(shop.stock(product).await, 0);
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM orders").await, 5);
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM reservations").await, 5);
}

async fn orders_are_private(shop: &TestShop) {
    let ann = shop.user("ann.orders@example.com").await;
    let bob = shop.user("bob.orders@example.com").await;
    shop.add_to_cart(&ann, 16, 1).await;
    let id = shop.post("/api/orders", Some(&ann), checkout_body(CARD)).await.1["id"].as_i64().unwrap();
    assert_client_error(&shop.get(&format!("/api/orders/{id}"), Some(&bob)).await, StatusCode::NOT_FOUND, None);
    assert_client_error(
        &shop.post(&format!("/api/orders/{id}/cancel"), Some(&bob), json!({})).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_eq!(shop.get("/api/orders", Some(&bob)).await.1, json!([]));
    assert!(
        shop.get("/api/notifications", Some(&bob)).await.1.as_array().unwrap().iter().all(|n| n["kind"] == "welcome")
    );
    assert_eq!(
        shop.get(&format!("/api/orders/{id}"), Some(&ann)).await.1["status"],
        "paid",
        "bob's attempt changed nothing"
    );
}

async fn cancel_restocks_and_refunds(shop: &TestShop) {
    let token = shop.user("cancel@example.com").await;
    let before = shop.stock(15).await;
    shop.add_to_cart(&token, 15, 3).await;
    let id = shop.post("/api/orders", Some(&token), checkout_body(CARD)).await.1["id"].as_i64().unwrap();
    assert_eq!(shop.stock(15).await, before - 3);
    let (status, order) = shop.post(&format!("/api/orders/{id}/cancel"), Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "cancelled");
    assert_eq!(shop.stock(15).await, before);
    assert_eq!(
        shop.scalar(&format!("SELECT COUNT(*) FROM payments WHERE order_id = {id} AND status = 'refunded'")).await,
        1
    );
    let again = shop.post(&format!("/api/orders/{id}/cancel"), Some(&token), json!({})).await;
    assert_client_error(&again, StatusCode::CONFLICT, None);
    assert_eq!(shop.stock(15).await, before, "a second cancel does not restock twice");
}
