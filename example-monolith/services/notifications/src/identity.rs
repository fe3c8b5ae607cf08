//! Who is calling: the sessions still live in the shop, so the service resolves a caller's
//! bearer token by asking the shop (`POST /internal/sessions/resolve`, authenticated with
//! the shop's internal token) — the remote authentication of incremental migrations. An
//! answer is cached for at most [`CACHE_FOR`] and never past the session's expiry; an
//! unknown or expired token is a 401, the shop being unreachable a 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use shop::error::ApiError;
use shop::users::auth::{ResolvedSession, bearer};
use shop::users::repo::User;

use crate::ServiceState;

/// Longest time a resolved session is trusted without asking the shop again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

/// Resolved sessions by the SHA-256 of their token, with the time they stop being trusted.
type Cache = HashMap<[u8; 32], (User, Instant)>;

/// The shop's session resolver, with a short cache.
#[derive(Clone)]
pub struct Identity {
    http: reqwest::Client,
    url: Arc<str>,
    token: Option<Arc<str>>,
    cache: Arc<Mutex<Cache>>,
    asked: Arc<std::sync::atomic::AtomicU64>,
}

impl Identity {
    /// A resolver asking the shop at `shop_url`, presenting `token`.
    pub fn new(shop_url: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            http,
            url: format!("{}/internal/sessions/resolve", shop_url.trim_end_matches('/')).into(),
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            cache: Arc::default(),
            asked: Arc::default(),
        }
    }

    /// How many times the shop was asked (cache misses).
    pub fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The user owning the session `token`.
    pub async fn resolve(&self, token: &str) -> Result<User, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some((user, until)) if *until > now => return Ok(user.clone()),
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut req = self.http.post(&*self.url).json(&serde_json::json!({ "token": token }));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unavailable(format!("cannot reach the shop: {e}")))?;
        match resp.status().as_u16() {
            200 => {
                let session: ResolvedSession = resp
                    .json()
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("unexpected answer from the shop: {e}")))?;
                let left = session.expires_at - shop::db::now();
                let keep = CACHE_FOR.min(Duration::from_secs(left.max(0) as u64));
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    cache.retain(|_, (_, until)| *until > now);
                }
                cache.insert(key, (session.user.clone(), now + keep));
                Ok(session.user)
            }
            401 => Err(ApiError::Unauthorized("invalid or expired session token")),
            s => {
                tracing::warn!(status = s, "the shop refused to resolve a session");
                Err(ApiError::Unavailable(format!("the shop answered {s} resolving the session")))
            }
        }
    }
}

/// The logged-in caller, resolved by the shop. Rejects with 401 when the token is missing,
/// unknown or expired.
#[derive(Debug, Clone)]
pub struct Caller(pub User);

impl FromRequestParts<ServiceState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ServiceState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        state.identity.resolve(token).await.map(Caller)
    }
}
