//! Payments: a fake card gateway (with the test cards real gateways document), the record
//! of every charge and refund, and — for the extraction of payments — the guarded client
//! of the payments service and the switch that sends charges there.

pub mod gateway;
pub mod guard;
pub mod remote;
pub mod repo;
