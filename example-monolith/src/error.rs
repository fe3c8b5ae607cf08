//! The shop's one error type: every failure a handler can meet, mapped to a status
//! code and the JSON body clients rely on (`{"error": "…", "field": …}`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to the client. Database and internal errors are logged with
/// their detail and answered with a generic 500, so nothing internal leaks.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range (400).
    #[error("{message}")]
    BadRequest {
        /// What is wrong, for a person.
        message: String,
        /// The offending field, when there is one.
        field: Option<&'static str>,
    },
    /// No credentials, or credentials that are wrong or expired (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Credentials are valid but do not allow this (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The thing asked for does not exist, or is not the caller's (404).
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
        /// The field that named it, when it came from a body.
        field: Option<&'static str>,
    },
    /// The request conflicts with the current state: duplicate email, not enough stock (409).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The field involved, when there is one.
        field: Option<&'static str>,
    },
    /// The payment gateway declined the card (402).
    #[error("{0}")]
    PaymentDeclined(String),
    /// The endpoint has moved away for good (410).
    #[error("{0}")]
    Gone(String),
    /// Something this server depends on is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A database error; logged, answered as 500.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that should not happen; logged, answered as 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the field at fault.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), field: Some(field) }
    }

    /// A 404 for a thing named by its kind and id.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound { message: format!("{what} {id} not found"), field: None }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Gone(_) => StatusCode::GONE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest { field, .. } | Self::NotFound { field, .. } | Self::Conflict { field, .. } => *field,
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
            "internal server error".to_string()
        } else {
            self.to_string()
        };
        let body = ErrorBody { error: &message, field: self.field() };
        (status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::BadRequest { message: format!("invalid JSON body: {}", rejection.body_text()), field: None }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest { message: format!("invalid path: {}", rejection.body_text()), field: None }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest { message: format!("invalid query string: {}", rejection.body_text()), field: None }
    }
}

/// A result whose error is answered to the client.
pub type ApiResult<T> = Result<T, ApiError>;

/// True when a database error is a unique-constraint violation (both SQLite and PostgreSQL).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
