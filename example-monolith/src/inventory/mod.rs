//! Inventory: stock levels per product and the reservations checkout takes against them.

pub mod http;
pub mod repo;
