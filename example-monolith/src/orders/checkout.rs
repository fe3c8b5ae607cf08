//! Checkout: turns the caller's cart into a paid order in one database transaction.
//!
//! Order of work, and why:
//! 1. touch the cart row — the first statement is a write, so on SQLite the
//!    transaction takes the write lock at once (no deadlock-prone read→write upgrade)
//!    and on PostgreSQL concurrent checkouts of one cart queue on the row lock;
//! 2. replay: an order already made with the same `Idempotency-Key` is returned as is;
//! 3. price the cart from `products` (or the catalog service, see `product_source`), reserve stock with conditional updates (never
//!    below zero), write the order, charge the fake gateway, record the payment, queue
//!    the confirmation, empty the cart;
//! 4. commit. Any failure — out of stock, a declined card — rolls everything back, so a
//!    failed checkout leaves no order and holds no stock.

use super::repo::{self, Order, OrderItem};
use crate::AppState;
use crate::cart;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::inventory;
use crate::notifications;
use crate::payments::{self, gateway::PaymentError};
use crate::product_source::ProductSource;

/// How a checkout ended well.
pub enum Outcome {
    /// A new order was created.
    Created(Order),
    /// The idempotency key had already created this order; nothing new was done.
    Replayed(Order),
}

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Checks out the user's cart, charging `card_number`.
pub async fn checkout(state: &AppState, user_id: i64, card_number: &str, key: Option<&str>) -> ApiResult<Outcome> {
    payments::gateway::normalise(card_number).map_err(|e| ApiError::invalid("card_number", e.to_string()))?;
    if let Some(key) = key {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} bytes"),
            ));
        }
        if let Some(order) = existing(state, user_id, key).await? {
            return Ok(Outcome::Replayed(order));
        }
    }
    match attempt(state, user_id, card_number, key).await {
        // A concurrent retry with the same key won the race: answer with its order.
        Err(ApiError::Database(e)) if key.is_some() && is_unique_violation(&e) => {
            let key = key.unwrap_or_default();
            existing(state, user_id, key)
                .await?
                .map(Outcome::Replayed)
                .ok_or_else(|| ApiError::Internal("idempotency key conflict without an order".into()))
        }
        other => other,
    }
}

async fn existing(state: &AppState, user_id: i64, key: &str) -> ApiResult<Option<Order>> {
    match repo::id_for_key(&state.pool, user_id, key).await? {
        Some(id) => Ok(repo::find(&state.pool, user_id, id).await?),
        None => Ok(None),
    }
}

async fn attempt(state: &AppState, user_id: i64, card_number: &str, key: Option<&str>) -> ApiResult<Outcome> {
    let mut tx = state.pool.begin().await?;
    cart::repo::touch(&mut tx, user_id).await?;
    if let Some(key) = key
        && let Some(id) = repo::id_for_key(&mut *tx, user_id, key).await?
    {
        drop(tx);
        let order = repo::find(&state.pool, user_id, id).await?.ok_or_else(|| ApiError::not_found("order", id))?;
        return Ok(Outcome::Replayed(order));
    }
    let items = match state.catalog.reads() {
        ProductSource::Local => repo::priced_cart(&mut tx, user_id).await?,
        ProductSource::Service(catalog) => catalog
            .priced(&cart::repo::items(&mut *tx, user_id).await?)
            .await?
            .into_iter()
            .map(|(product_id, quantity, p)| OrderItem {
                product_id,
                name: p.name,
                unit_price_cents: p.price_cents,
                quantity,
            })
            .collect(),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("cart", "the cart is empty"));
    }
    let total: i64 = items.iter().map(|i| i.unit_price_cents * i.quantity).sum();
    let order_id = repo::insert(&mut tx, user_id, "pending", &items, key).await?;
    for item in &items {
        if !inventory::repo::reserve(&mut tx, order_id, item.product_id, item.quantity).await? {
            return Err(ApiError::Conflict {
                message: format!("not enough stock for product {} ({})", item.product_id, item.name),
                field: Some("product_id"),
            });
        }
    }
    let charge = payments::gateway::charge(card_number, total).map_err(|e| match e {
        PaymentError::InvalidCard => ApiError::invalid("card_number", e.to_string()),
        PaymentError::Declined(reason) => ApiError::PaymentDeclined(reason.to_string()),
    })?;
    payments::repo::record_capture(&mut tx, order_id, total, &charge).await?;
    repo::transition(&mut tx, user_id, order_id, "pending", "paid").await?;
    notifications::outbox::enqueue(
        &mut *tx,
        user_id,
        "order_confirmed",
        &format!("Order #{order_id} confirmed"),
        &format!(
            "We received your order #{order_id}: {} item(s), {}.",
            items.iter().map(|i| i.quantity).sum::<i64>(),
            money(total)
        ),
    )
    .await?;
    cart::repo::clear(&mut tx, user_id).await?;
    tx.commit().await?;
    tracing::info!(order_id, user_id, total_cents = total, "order placed");
    let order =
        repo::find(&state.pool, user_id, order_id).await?.ok_or_else(|| ApiError::not_found("order", order_id))?;
    Ok(Outcome::Created(order))
}

/// Cancels a paid order: puts its stock back, refunds the payment, tells the user.
pub async fn cancel(state: &AppState, user_id: i64, order_id: i64) -> ApiResult<Order> {
    let mut tx = state.pool.begin().await?;
    if !repo::transition(&mut tx, user_id, order_id, "paid", "cancelled").await? {
        drop(tx);
        return match repo::find(&state.pool, user_id, order_id).await? {
            Some(order) => Err(ApiError::Conflict {
                message: format!("order {order_id} is {} and cannot be cancelled", order.status),
                field: None,
            }),
            None => Err(ApiError::not_found("order", order_id)),
        };
    }
    inventory::repo::release(&mut tx, order_id).await?;
    payments::repo::refund(&mut tx, order_id).await?;
    notifications::outbox::enqueue(
        &mut *tx,
        user_id,
        "order_cancelled",
        &format!("Order #{order_id} cancelled"),
        &format!("Your order #{order_id} was cancelled and refunded."),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(order_id, user_id, "order cancelled");
    repo::find(&state.pool, user_id, order_id).await?.ok_or_else(|| ApiError::not_found("order", order_id))
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}
