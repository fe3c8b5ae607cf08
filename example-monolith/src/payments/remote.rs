//! The payments service as checkout sees it: its wire types (shared with the service), a
//! client whose every call goes through the [`Guard`](super::guard::Guard), and the switch
//! an admin flips to move charges from the in-process gateway to the service
//! (`PUT /api/admin/payments`).
//!
//! Every charge carries an idempotency key (`order-{id}`): a retry after a timeout, or a
//! second checkout attempt, can never charge twice. `cancel` settles a key for good: a
//! captured charge is refunded, and a charge that has not arrived yet is refused when it does.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::guard::{Attempt, Guard, GuardConfig, GuardError};

/// A charge as the payments service keeps and answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRecord {
    /// The idempotency key it was made with.
    pub key: String,
    /// The order it pays.
    pub order_id: i64,
    /// Amount in cents.
    pub amount_cents: i64,
    /// `captured`, `declined`, `refunded` or `void` (cancelled before it was made).
    pub status: String,
    /// Last four digits of the card.
    pub card_last4: String,
    /// The gateway's reference.
    pub reference: String,
    /// Seconds since the epoch.
    pub created_at: i64,
}

/// `POST /api/charges` body (with an `Idempotency-Key` header).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The order it pays.
    pub order_id: i64,
    /// Amount in cents.
    pub amount_cents: i64,
    /// The card.
    pub card_number: String,
}

/// The idempotency key of an order's charge.
pub fn charge_key(order_id: i64) -> String {
    format!("order-{order_id}")
}

/// How a charge ended, when the service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money was taken.
    Captured(ChargeRecord),
    /// The card was declined, with the gateway's reason.
    Declined(String),
    /// The key was cancelled before this charge arrived: nothing was taken.
    Cancelled,
    /// The service refused the request itself (a 4xx other than a decline): not retried.
    Rejected(String),
}

/// A client of the payments service.
#[derive(Clone)]
pub struct PaymentsClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    token: Option<Arc<str>>,
    guard: Arc<Guard>,
    cancels: Arc<Guard>,
}

/// A request that got no answer: unreached when the connection was refused (nothing sent).
fn failed<T>(url: &str, e: &reqwest::Error) -> Attempt<T> {
    if e.is_connect() {
        Attempt::Unreached(format!("POST {url}: {e}"))
    } else {
        Attempt::Retryable(format!("POST {url}: {e}"))
    }
}

/// The service's error message, or the status when it gave none.
fn error_of(status: reqwest::StatusCode, body: &serde_json::Value) -> String {
    body["error"].as_str().map_or_else(|| status.to_string(), str::to_string)
}

impl PaymentsClient {
    /// A client of the service at `base_url`, guarded with `config`. Charges and cancels
    /// have a guard each (the same settings): a slow card gateway opens the charges'
    /// breaker, while the quick cancels that settle the abandoned checkouts go on.
    pub fn new(base_url: &str, token: Option<String>, config: GuardConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').into(),
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            guard: Arc::new(Guard::new(config.clone())),
            cancels: Arc::new(Guard::new(config)),
        }
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The charges' guard, for its state and metrics.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The cancels' guard.
    pub fn cancel_guard(&self) -> &Guard {
        &self.cancels
    }

    fn post(&self, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Charges `amount_cents` for `order_id` under the key `key`.
    pub async fn charge(
        &self,
        key: &str,
        order_id: i64,
        amount_cents: i64,
        card_number: &str,
    ) -> Result<ChargeOutcome, GuardError> {
        let url = format!("{}/api/charges", self.base_url);
        let body = ChargeRequest { order_id, amount_cents, card_number: card_number.to_string() };
        self.guard
            .call(|| async {
                let sent = self.post(&url).header("idempotency-key", key).json(&body).send().await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(e) => return failed(&url, &e),
                };
                let status = resp.status();
                let value: serde_json::Value = match resp.json().await {
                    Ok(v) => v,
                    Err(e) => return Attempt::Retryable(format!("POST {url}: {status}, unreadable answer: {e}")),
                };
                match status.as_u16() {
                    200 | 201 => match serde_json::from_value(value) {
                        Ok(charge) => Attempt::Done(ChargeOutcome::Captured(charge)),
                        Err(e) => Attempt::Retryable(format!("POST {url}: unexpected answer: {e}")),
                    },
                    402 => Attempt::Done(ChargeOutcome::Declined(error_of(status, &value))),
                    409 => Attempt::Done(ChargeOutcome::Cancelled),
                    // 503: a charge under this key is still being made; asking again is safe.
                    400..=499 => Attempt::Done(ChargeOutcome::Rejected(format!(
                        "POST {url} answered {status}: {}",
                        error_of(status, &value)
                    ))),
                    _ => Attempt::Retryable(format!("POST {url} answered {status}: {}", error_of(status, &value))),
                }
            })
            .await
    }

    /// Settles `key` for good: a captured charge is refunded, one not made yet never will
    /// be. Returns the key's status after it (`refunded`, `void` or `declined`).
    pub async fn cancel(&self, key: &str) -> Result<String, GuardError> {
        let url = format!("{}/api/charges/{key}/cancel", self.base_url);
        self.cancels
            .call(|| async {
                match self.post(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.json::<ChargeRecord>().await {
                        Ok(c) => Attempt::Done(c.status),
                        Err(e) => Attempt::Retryable(format!("POST {url}: unexpected answer: {e}")),
                    },
                    Ok(r) => Attempt::Retryable(format!("POST {url} answered {}", r.status())),
                    Err(e) => failed(&url, &e),
                }
            })
            .await
    }
}

/// Where checkout charges cards: the in-process gateway (the monolith's own) or the
/// payments service. Changed at run time by an admin.
#[derive(Clone, Default)]
pub struct PaymentsSwitch {
    inner: Arc<RwLock<Switch>>,
}

#[derive(Default)]
struct Switch {
    /// Where charges go now (None: the in-process gateway).
    charges: Option<PaymentsClient>,
    /// The last service charges went to: orders charged there are refunded and settled
    /// there, even after charges went back in-process.
    last: Option<PaymentsClient>,
}

impl PaymentsSwitch {
    /// The service's client when charges go there; None for the in-process gateway.
    pub fn service(&self) -> Option<PaymentsClient> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).charges.clone()
    }

    /// The client of the last service charges went to, for orders charged there.
    pub fn settling(&self) -> Option<PaymentsClient> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).last.clone()
    }

    /// Sends charges to `client`, or back to the in-process gateway with None.
    pub fn set(&self, client: Option<PaymentsClient>) {
        let mut switch = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if client.is_some() {
            switch.last = client.clone();
        }
        switch.charges = client;
    }
}
