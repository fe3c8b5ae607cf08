//! ficus-proxy: the strangler-fig routing proxy on Pingora. It stands in front of the monolith
//! and sends each endpoint to the monolith or to its new service according to the endpoint's
//! migration stage.
//!
//! Map: [`policy`] (the rules as plain functions: the route model, the routing decision
//! `select`, stage changes and the shadow gate, the rollout's judge, the answers' diff),
//! [`config`] (ficus.toml, raw → validated), [`conn`] (client connections: per-address cap,
//! head deadline, idle timeout), [`normalize`] (request paths), [`upstream`] (pools, health
//! checks, circuit breakers, bulkheads, retry budgets), [`limit`] (rate limits), [`tls`]
//! (rustls at both ends), [`service`] (Pingora's `ProxyHttp` hooks), [`state`] (the live state),
//! [`store`] (where it is kept: the config file, or PostgreSQL for a fleet), [`admin`] (the admin
//! API), [`server`] (start and stop, in-process or from the command line), [`metrics`]
//! (Prometheus), [`shadow`] (the shadow stage's mirroring and comparisons), [`rollout`]
//! (progressive canary steps and automatic rollback), [`audit`] (the log of every stage change),
//! [`client`] (the admin API's client for the command line).

pub mod admin;
pub mod audit;
pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod normalize;
pub mod policy;
pub mod rollout;
pub mod server;
pub mod service;
pub mod shadow;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;

pub use client::AdminClient;
pub use config::Config;
pub use error::{ConfigError, ProxyError};
pub use policy::route::{Decision, RequestHead, RouteTable, select};
pub use server::{RunningProxy, StartOptions, Stop};
pub use state::{Change, Environment, Progress, Resolver, RouteView, Secrets, Shared};
