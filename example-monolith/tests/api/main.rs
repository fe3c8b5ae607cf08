//! The shop's HTTP API end to end: a real server on port 0, real requests, on SQLite
//! and on PostgreSQL. Each test is named after the behaviour it pins down.

mod cart;
mod catalog;
mod orders;
mod support;
mod users;
