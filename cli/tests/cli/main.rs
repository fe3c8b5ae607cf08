//! Tests of the `ficus` binary, run as a user would run it.

mod allocator;
mod analyze;
mod proxy;
mod report;
