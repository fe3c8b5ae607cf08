//! Payments: a fake card gateway (with the test cards real gateways document) and the
//! record of every charge and refund.

pub mod gateway;
pub mod repo;
