//! Orders: checkout and the order history. Checkout is the monolith's biggest tangle:
//! one transaction that reads the cart and product prices directly, reserves stock,
//! charges the card, writes the order and its payment, queues a notification and
//! empties the cart (see TANGLES.md).

pub mod checkout;
pub mod http;
pub mod repo;
