//! Integration tests of ficus-analyzer: fixture crates in, reports out; the metric,
//! clustering, SQL and history code against values worked out by hand.

mod cluster;
mod fixtures;
mod guard;
mod history;
mod metrics;
mod plan;
mod shop;
mod sql;
