//! SQL for the `users` and `sessions` tables.

use serde::Serialize;

use crate::db::{Pool, now};

/// A user as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct User {
    /// Account id.
    pub id: i64,
    /// Login email, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
}

/// Creates an account; a duplicate email fails with a unique violation.
pub async fn insert_user<'c, E>(executor: E, email: &str, password_hash: &str, name: &str) -> sqlx::Result<User>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query_as::<_, User>(
        "INSERT INTO users (email, password_hash, name, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, email, name",
    )
    .bind(email)
    .bind(password_hash)
    .bind(name)
    .bind(now())
    .fetch_one(executor)
    .await
}

/// The user and stored password hash for an email.
pub async fn find_credentials(pool: &Pool, email: &str) -> sqlx::Result<Option<(i64, String)>> {
    sqlx::query_as::<_, (i64, String)>("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// Changes a user's display name.
pub async fn update_name(pool: &Pool, user_id: i64, name: &str) -> sqlx::Result<User> {
    sqlx::query_as::<_, User>("UPDATE users SET name = $1 WHERE id = $2 RETURNING id, email, name")
        .bind(name)
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// Stores a session under the hash of its token.
pub async fn insert_session(pool: &Pool, token_hash: &str, user_id: i64, expires_at: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(now())
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// The user owning an unexpired session.
pub async fn user_for_session(pool: &Pool, token_hash: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as::<_, User>(
        "SELECT u.id, u.email, u.name FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2",
    )
    .bind(token_hash)
    .bind(now())
    .fetch_optional(pool)
    .await
}

/// The user owning an unexpired session, with the session's expiry.
pub async fn session(pool: &Pool, token_hash: &str) -> sqlx::Result<Option<(User, i64)>> {
    let row: Option<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT u.id, u.email, u.name, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2",
    )
    .bind(token_hash)
    .bind(now())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, email, name, expires_at)| (User { id, email, name }, expires_at)))
}

/// Ends a session.
pub async fn delete_session(pool: &Pool, token_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await?;
    Ok(())
}

/// Removes a user's expired sessions (called at login so the table does not grow forever).
pub async fn delete_expired_sessions(pool: &Pool, user_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2")
        .bind(user_id)
        .bind(now())
        .execute(pool)
        .await?;
    Ok(())
}
