//! Integration tests of ficus-proxy: real upstreams (axum on port 0) and the real proxy started
//! in-process on port 0, driven over HTTP.

mod admin;
mod bypass;
mod fallback;
mod fleet;
mod fuzz;
mod gateway;
mod lifecycle;
mod reload;
mod rollout;
mod routing;
mod security;
mod shadow;
mod support;
mod tls;
