//! ficus-analyzer: reads a Rust monolith's source and proposes service boundaries.
//!
//! Not built yet: see the analyzer issue. `ficus analyze` says so and exits 2.
