//! Accounts and sessions: registration, login, the caller, bad input, token storage.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{PASSWORD, TestShop, assert_client_error, on_both_databases};

on_both_databases!(
    register_login_and_me,
    duplicate_email_is_a_conflict,
    wrong_credentials_are_refused,
    bad_registrations_name_the_field,
    missing_or_bad_tokens_are_refused,
    logout_ends_the_session,
    passwords_and_tokens_are_stored_hashed,
);

async fn register_login_and_me(shop: &TestShop) {
    let (status, body) =
        shop.post("/api/users", None, json!({"email": "Ann@Example.com", "password": PASSWORD, "name": " Ann "})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "ann@example.com");
    assert_eq!(body["name"], "Ann");
    assert!(body["id"].as_i64().is_some());
    assert!(body.get("password_hash").is_none());
    let (status, session) =
        shop.post("/api/sessions", None, json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = session["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "a 256-bit hex token");
    assert!(session["expires_at"].as_i64().unwrap() > 0);
    let (status, me) = shop.get("/api/users/me", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, body);
    let (status, renamed) = shop.put("/api/users/me", Some(token), json!({"name": "Ann B"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["name"], "Ann B");
    let (_, welcome) = shop.get("/api/notifications", Some(token)).await;
    assert_eq!(welcome[0]["kind"], "welcome");
}

async fn duplicate_email_is_a_conflict(shop: &TestShop) {
    shop.user("dup@example.com").await;
    let again =
        shop.post("/api/users", None, json!({"email": "DUP@example.com", "password": PASSWORD, "name": "X"})).await;
    assert_client_error(&again, StatusCode::CONFLICT, Some("email"));
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM users WHERE email = 'dup@example.com'").await, 1);
}

async fn wrong_credentials_are_refused(shop: &TestShop) {
    shop.user("cred@example.com").await;
    let wrong =
        shop.post("/api/sessions", None, json!({"email": "cred@example.com", "password": "wrong-password"})).await;
    assert_client_error(&wrong, StatusCode::UNAUTHORIZED, None);
    let unknown = shop.post("/api/sessions", None, json!({"email": "nobody@example.com", "password": PASSWORD})).await;
    assert_client_error(&unknown, StatusCode::UNAUTHORIZED, None);
    assert_eq!(wrong.1, unknown.1, "the answer must not tell which emails exist");
}

async fn bad_registrations_name_the_field(shop: &TestShop) {
    let users_before = shop.scalar("SELECT COUNT(*) FROM users").await;
    for (body, field) in [
        (json!({"email": "not-an-email", "password": PASSWORD, "name": "X"}), "email"),
        (json!({"email": "short@example.com", "password": "short", "name": "X"}), "password"),
        (json!({"email": "long@example.com", "password": "x".repeat(129), "name": "X"}), "password"),
        (json!({"email": "noname@example.com", "password": PASSWORD, "name": "  "}), "name"),
        // Control characters in a name (NUL, ESC, a newline) were accepted and stored.
        (json!({"email": "nul@example.com", "password": PASSWORD, "name": "Ann\u{0}"}), "name"),
        (json!({"email": "esc@example.com", "password": PASSWORD, "name": "\u{1b}[31mAnn"}), "name"),
        (json!({"email": "nl@example.com", "password": PASSWORD, "name": "Ann\nBob"}), "name"),
    ] {
        let got = shop.post("/api/users", None, body).await;
        assert_client_error(&got, StatusCode::BAD_REQUEST, Some(field));
    }
    let missing = shop.post("/api/users", None, json!({"email": "x@example.com"})).await;
    assert!(missing.0.is_client_error(), "missing fields → {}", missing.0);
    let malformed = shop
        .client
        .post(shop.url("/api/users"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    assert_eq!(shop.scalar("SELECT COUNT(*) FROM users").await, users_before, "bad input changed nothing");
}

async fn missing_or_bad_tokens_are_refused(shop: &TestShop) {
    assert_client_error(&shop.get("/api/users/me", None).await, StatusCode::UNAUTHORIZED, None);
    assert_client_error(
        &shop.get("/api/users/me", Some("0".repeat(64).as_str())).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    let basic = shop.client.get(shop.url("/api/users/me")).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

async fn logout_ends_the_session(shop: &TestShop) {
    let token = shop.user("bye@example.com").await;
    let (status, _) = shop.delete("/api/sessions", Some(&token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_client_error(&shop.get("/api/users/me", Some(&token)).await, StatusCode::UNAUTHORIZED, None);
}

async fn passwords_and_tokens_are_stored_hashed(shop: &TestShop) {
    let token = shop.user("hash@example.com").await;
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'hash@example.com'")
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    let raw: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE token_hash = $1")
        .bind(&token)
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(raw, 0, "the raw token must not be stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire() {
    let shop = TestShop::start_with(crate::support::Backend::Sqlite, |c| c.session_ttl_secs = 0).await.unwrap();
    let token = shop.user("expired@example.com").await;
    assert_client_error(&shop.get("/api/users/me", Some(&token)).await, StatusCode::UNAUTHORIZED, None);
    shop.stop().await;
}
