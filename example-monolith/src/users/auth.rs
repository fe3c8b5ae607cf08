//! Who is calling: session tokens (random, 256 bits, stored only as a SHA-256 hash,
//! expiring) and the admin bearer token. Handlers take [`CurrentUser`] or [`Admin`]
//! as an argument and never see a request without them.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::repo::{self, User};
use crate::AppState;
use crate::error::ApiError;

/// A new session token: 32 random bytes, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The form a token is stored in: its SHA-256, hex-encoded. A leaked database does not
/// hand out live sessions.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized("malformed authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthorized("authorization must be a bearer token"))?
        .trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("empty bearer token"));
    }
    Ok(token)
}

/// The logged-in caller. Rejects with 401 when the token is missing, unknown or expired.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        repo::user_for_session(&state.pool, &token_hash(token))
            .await?
            .map(CurrentUser)
            .ok_or(ApiError::Unauthorized("invalid or expired session token"))
    }
}

/// A session resolved for a service (`POST /internal/sessions/resolve`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedSession {
    /// Whose session it is.
    pub user: User,
    /// When it expires, in seconds since the epoch.
    pub expires_at: i64,
}

/// An admin caller: the request carries `Authorization: Bearer $SHOP_ADMIN_TOKEN`.
/// With no admin token configured, every admin request is refused.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        check_admin(&parts.headers, state.admin_token.as_deref())
    }
}

/// Accepts a request carrying the admin bearer token `expected`; with no token
/// configured, refuses everyone. Shared with the services extracted from the shop.
pub fn check_admin(headers: &HeaderMap, expected: Option<&str>) -> Result<Admin, ApiError> {
    let token = bearer(headers)?;
    let expected = expected.ok_or(ApiError::Forbidden("admin API disabled: no admin token set"))?;
    if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(Admin)
    } else {
        Err(ApiError::Forbidden("admin token required"))
    }
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_hex_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(token_hash(&a), a);
        assert_eq!(token_hash(&a), token_hash(&a));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
