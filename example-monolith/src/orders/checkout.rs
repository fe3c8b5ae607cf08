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
//!
//! Once charges go to the payments service (`PUT /api/admin/payments`), a remote call
//! cannot sit inside a database transaction, and checkout becomes a short saga:
//! 1. one transaction writes the order `pending` with its charge key (`order-{id}`) and
//!    holds the stock;
//! 2. the charge goes to the service through the guard (timeout, retries under a
//!    budget, breaker, bulkhead) with that key, so no retry charges twice;
//! 3. captured → a second transaction marks the order `paid`, records OrderPlaced and the
//!    confirmation, empties the cart; declined → the stock is released and the order
//!    marked `declined` (402); no answer → the key is cancelled at the service (a charge
//!    that went through is refunded, one still on its way is refused), the stock released
//!    and the order marked `abandoned` (503). If even the cancel cannot reach the service, the
//!    order is left `unsettled` and [`settle`] finishes the job when the service is back.
//!
//! So every `paid` order has exactly one captured charge, and every captured charge a
//! `paid` order; customers only ever see `paid`, `cancelling` and `cancelled` orders.

use super::repo::{self, Order, OrderItem};
use crate::AppState;
use crate::cart;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::events::{self, Payload};
use crate::inventory;
use crate::notifications;
use crate::payments::remote::{ChargeOutcome, PaymentsClient, charge_key};
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
            existing(state, user_id, key).await?.map(Outcome::Replayed).ok_or_else(still_settling)
        }
        other => other,
    }
}

async fn existing(state: &AppState, user_id: i64, key: &str) -> ApiResult<Option<Order>> {
    match repo::id_for_key(&state.pool, user_id, key).await? {
        Some(id) => repo::find(&state.pool, user_id, id).await?.map(Some).ok_or_else(still_settling),
        None => Ok(None),
    }
}

/// The answer to a retry of a checkout that is still being paid.
fn still_settling() -> ApiError {
    ApiError::Unavailable("a checkout with this Idempotency-Key is still being settled; try again".into())
}

async fn attempt(state: &AppState, user_id: i64, card_number: &str, key: Option<&str>) -> ApiResult<Outcome> {
    let mut tx = state.pool.begin().await?;
    cart::repo::touch(&mut tx, user_id).await?;
    if let Some(key) = key
        && let Some(id) = repo::id_for_key(&mut *tx, user_id, key).await?
    {
        drop(tx);
        let order = repo::find(&state.pool, user_id, id).await?.ok_or_else(still_settling)?;
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
    let Some(service) = state.payments.service() else {
        let charge = payments::gateway::charge(card_number, total).map_err(|e| match e {
            PaymentError::InvalidCard => ApiError::invalid("card_number", e.to_string()),
            PaymentError::Declined(reason) => ApiError::PaymentDeclined(reason.to_string()),
        })?;
        payments::repo::record_capture(&mut tx, order_id, total, &charge).await?;
        placed(&mut tx, user_id, order_id, &items, total).await?;
        cart::repo::clear(&mut tx, user_id).await?;
        tx.commit().await?;
        return created(state, user_id, order_id, total).await;
    };
    // The cart is emptied with the order's creation, so a second click (or a retry without an
    // Idempotency-Key) while the charge is on its way finds it empty and cannot pay for it
    // again; a checkout given up puts its lines back.
    let key = charge_key(order_id);
    repo::set_payment_key(&mut tx, order_id, &key).await?;
    cart::repo::clear(&mut tx, user_id).await?;
    tx.commit().await?;
    match service.charge(&key, order_id, total, card_number).await {
        Ok(ChargeOutcome::Captured(_)) => {
            let mut tx = state.pool.begin().await?;
            if let Err(err) = placed(&mut tx, user_id, order_id, &items, total).await {
                // The settle loop claimed the order meanwhile (it took over a minute): it
                // reverses the charge and gives the order up.
                tracing::warn!(order_id, %err, "charged, but the order was being settled");
                return Err(ApiError::Unavailable("the payment took too long and is being reversed; try again".into()));
            }
            tx.commit().await?;
            created(state, user_id, order_id, total).await
        }
        Ok(ChargeOutcome::Declined(reason)) => {
            give_up(state, order_id, "declined").await?;
            Err(ApiError::PaymentDeclined(reason))
        }
        Ok(ChargeOutcome::Cancelled) => {
            give_up(state, order_id, "abandoned").await?;
            Err(ApiError::Unavailable("the payment was cancelled; you have not been charged".into()))
        }
        Ok(ChargeOutcome::Rejected(why)) => {
            give_up(state, order_id, "abandoned").await?;
            Err(ApiError::Internal(format!("the payments service rejected the charge: {why}")))
        }
        Err(err) => {
            tracing::warn!(order_id, %err, "payments service gave no answer");
            // Nothing sent: nothing to undo. Sent without an answer: cancel the key first.
            let settled = err.nothing_sent() || settle_one(state, &service, order_id).await;
            if err.nothing_sent() {
                give_up(state, order_id, "abandoned").await?;
            } else if !settled {
                mark_unsettled(state, order_id).await?;
            }
            Err(ApiError::Unavailable(if err.nothing_sent() || settled {
                format!("payments unavailable ({err}); you have not been charged, try again shortly")
            } else {
                format!("payments unavailable ({err}); any charge will be reversed, try again shortly")
            }))
        }
    }
}

/// The order is paid: mark it, record the event and the confirmation.
async fn placed(
    tx: &mut sqlx::AnyConnection,
    user_id: i64,
    order_id: i64,
    items: &[OrderItem],
    total: i64,
) -> ApiResult<()> {
    if !repo::transition(&mut *tx, user_id, order_id, "pending", "paid").await? {
        return Err(ApiError::Internal(format!("order {order_id} was no longer pending")));
    }
    let event =
        Payload::OrderPlaced { order_id, user_id, items: items.iter().map(|i| i.quantity).sum(), total_cents: total };
    notifications::outbox::enqueue_for(&mut *tx, &event).await?;
    events::record(&mut *tx, &event).await?;
    Ok(())
}

async fn created(state: &AppState, user_id: i64, order_id: i64, total: i64) -> ApiResult<Outcome> {
    tracing::info!(order_id, user_id, total_cents = total, "order placed");
    let order =
        repo::find(&state.pool, user_id, order_id).await?.ok_or_else(|| ApiError::not_found("order", order_id))?;
    Ok(Outcome::Created(order))
}

/// A checkout that will not complete: its stock and its cart lines go back and the order
/// ends `status` (hidden from the customer), its idempotency key free for another attempt.
async fn give_up(state: &AppState, order_id: i64, status: &str) -> ApiResult<()> {
    let mut tx = state.pool.begin().await?;
    if repo::settle(&mut tx, order_id, status).await? {
        inventory::repo::release(&mut tx, order_id).await?;
        repo::restore_cart(&mut tx, order_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn mark_unsettled(state: &AppState, order_id: i64) -> ApiResult<()> {
    let mut tx = state.pool.begin().await?;
    repo::mark_unsettled(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Cancels an order's charge key at the service and gives the order up; false when the
/// service could not be reached.
async fn settle_one(state: &AppState, service: &PaymentsClient, order_id: i64) -> bool {
    match service.cancel(&charge_key(order_id)).await {
        Ok(status) => {
            tracing::info!(order_id, %status, "charge key cancelled; order given up");
            if let Err(err) = give_up(state, order_id, "abandoned").await {
                tracing::warn!(order_id, %err, "could not give the order up");
                return false;
            }
            true
        }
        Err(err) => {
            tracing::warn!(order_id, %err, "could not cancel the charge key; left unsettled");
            false
        }
    }
}

/// Settles every order a checkout left `unsettled` (the payments service could not be
/// reached to cancel its charge), every `pending` one older than a minute (a crash between
/// the two transactions) and every cancellation left waiting for its refund over a minute.
/// Returns how many were settled.
pub async fn settle(state: &AppState) -> ApiResult<usize> {
    // Orders charged at the service are settled there, even after charges went back to
    // the in-process gateway.
    let Some(service) = state.payments.settling() else { return Ok(0) };
    let mut done = 0;
    for order_id in repo::unsettled(&state.pool, 60).await? {
        // Claimed first, so a checkout whose charge answers now cannot mark it paid.
        let mut tx = state.pool.begin().await?;
        let claimed = repo::mark_unsettled(&mut tx, order_id).await?;
        tx.commit().await?;
        if !claimed {
            continue;
        }
        if !settle_one(state, &service, order_id).await {
            return Ok(done);
        }
        done += 1;
    }
    for (order_id, user_id) in repo::stuck_cancellations(&state.pool, 60).await? {
        match service.cancel(&charge_key(order_id)).await {
            Ok(_) => {
                finish_cancel(state, user_id, order_id).await?;
                done += 1;
            }
            Err(err) => {
                tracing::warn!(order_id, %err, "cancellation still waiting for its refund");
                break;
            }
        }
    }
    Ok(done)
}

/// Cancels a paid order: refunds the payment, puts its stock back, tells the user.
///
/// With the in-process gateway this is one transaction. With the payments service it is
/// three steps, so no order ends `cancelled` with its charge still captured nor `paid`
/// with its charge refunded: the order becomes `cancelling`; the charge key is cancelled
/// at the service (refunded); the order becomes `cancelled`. If the service refuses at once
/// (breaker open, no slot), the order goes back to `paid` and the answer is 503; if it was
/// asked and did not answer, the order stays `cancelling` (503) and [`settle`] completes it.
pub async fn cancel(state: &AppState, user_id: i64, order_id: i64) -> ApiResult<Order> {
    // Where the order was charged decides where it is refunded, not where charges go now.
    let charged_remotely = repo::payment_key(&state.pool, order_id).await?.is_some();
    let service = match (charged_remotely, state.payments.service(), state.payments.settling()) {
        (false, None, _) => return cancel_locally(state, user_id, order_id).await,
        // Charged in-process, but its history has moved to the service: refund it there.
        (false, Some(service), _) | (true, _, Some(service)) => service,
        (true, _, None) => {
            return Err(ApiError::Unavailable(format!(
                "order {order_id} was charged by the payments service, which is not configured"
            )));
        }
    };
    let mut tx = state.pool.begin().await?;
    let claimed = repo::begin_cancel(&mut tx, user_id, order_id).await?;
    tx.commit().await?;
    if !claimed {
        return Err(cannot_cancel(state, user_id, order_id).await);
    }
    match service.cancel(&charge_key(order_id)).await {
        Ok(_) => finish_cancel(state, user_id, order_id).await,
        Err(err) if err.nothing_sent() => {
            let mut tx = state.pool.begin().await?;
            repo::transition(&mut tx, user_id, order_id, "cancelling", "paid").await?;
            tx.commit().await?;
            Err(ApiError::Unavailable(format!("payments unavailable ({err}); the order is unchanged")))
        }
        Err(err) => Err(ApiError::Unavailable(format!(
            "payments did not answer ({err}); the order is cancelling and completes when payments is back"
        ))),
    }
}

/// The order's refund is done: it becomes `cancelled`, its stock goes back, the user is told.
async fn finish_cancel(state: &AppState, user_id: i64, order_id: i64) -> ApiResult<Order> {
    let mut tx = state.pool.begin().await?;
    if repo::transition(&mut tx, user_id, order_id, "cancelling", "cancelled").await? {
        inventory::repo::release(&mut tx, order_id).await?;
        // A charge made in-process before the move keeps the shop's own record in step.
        payments::repo::refund(&mut tx, order_id).await?;
        record_cancelled(&mut tx, user_id, order_id).await?;
        tx.commit().await?;
        tracing::info!(order_id, user_id, "order cancelled");
    }
    repo::find(&state.pool, user_id, order_id).await?.ok_or_else(|| ApiError::not_found("order", order_id))
}

async fn cancel_locally(state: &AppState, user_id: i64, order_id: i64) -> ApiResult<Order> {
    let mut tx = state.pool.begin().await?;
    if !repo::transition(&mut tx, user_id, order_id, "paid", "cancelled").await? {
        drop(tx);
        return Err(cannot_cancel(state, user_id, order_id).await);
    }
    inventory::repo::release(&mut tx, order_id).await?;
    payments::repo::refund(&mut tx, order_id).await?;
    record_cancelled(&mut tx, user_id, order_id).await?;
    tx.commit().await?;
    tracing::info!(order_id, user_id, "order cancelled");
    repo::find(&state.pool, user_id, order_id).await?.ok_or_else(|| ApiError::not_found("order", order_id))
}

/// The cancellation message and the OrderCancelled event, in the caller's transaction.
async fn record_cancelled(tx: &mut sqlx::AnyConnection, user_id: i64, order_id: i64) -> ApiResult<()> {
    let event = Payload::OrderCancelled { order_id, user_id };
    notifications::outbox::enqueue_for(&mut *tx, &event).await?;
    events::record(tx, &event).await?;
    Ok(())
}

/// Why an order cannot be cancelled: 409 with its status, or 404.
async fn cannot_cancel(state: &AppState, user_id: i64, order_id: i64) -> ApiError {
    match repo::find(&state.pool, user_id, order_id).await {
        Ok(Some(order)) => ApiError::Conflict {
            message: format!("order {order_id} is {} and cannot be cancelled", order.status),
            field: None,
        },
        Ok(None) => ApiError::not_found("order", order_id),
        Err(e) => e.into(),
    }
}
