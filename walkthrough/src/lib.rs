//! `ficus walkthrough`: extractions from Ficus Shop, step by step, while shoppers keep
//! shopping. [`engine`] holds what every extraction shares (the shop, the proxy, the named
//! steps they compose, the checks); [`catalog`], [`notifications`] and [`payments`] hold
//! each extraction's own steps; [`load`] the background shoppers; [`golden`] the recorded
//! catalog answers and their diff.

pub mod catalog;
pub mod engine;
pub mod golden;
pub mod load;
pub mod notifications;
pub mod payments;
