//! Tests of the `ficus` binary, run as a user would run it.

mod analyze;
mod proxy;
