//! ficus-proxy: the strangler-fig routing proxy on Pingora.
//!
//! Not built yet: see the proxy issue. `ficus proxy` says so and exits 2.
