//! Notifications: an outbox of messages to users (welcome, order confirmation,
//! cancellation). Other capabilities write to it inside their own transactions.

pub mod http;
pub mod outbox;
