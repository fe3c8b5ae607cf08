//! The notifications service: Ficus Shop's notifications capability extracted into a
//! service of its own, with its own database (SQLite by default, PostgreSQL via
//! DATABASE_URL).
//!
//! It never reads the shop's tables. Its data comes from the shop's events — UserRegistered,
//! OrderPlaced, OrderCancelled — which the shop's outbox relay delivers over HTTP
//! (`POST /internal/events`) or through NATS JetStream ([`nats`]); the [`consumer`] acts on
//! each event exactly once, remembering processed event ids in its own table. It serves the
//! shop's notification endpoints with the same contract; who is calling it learns from the
//! shop, which still holds the sessions ([`identity`]).

pub mod consumer;
pub mod http;
pub mod identity;
pub mod nats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use shop::DbLocation;
use shop::db::{DbError, Dialect, Pool};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Opens (creating if needed) and migrates the service's own database.
pub async fn connect(location: &DbLocation, max_connections: u32) -> Result<(Pool, Dialect), DbError> {
    shop::db::connect_migrated(
        location,
        "notifications.db",
        max_connections,
        [&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS],
    )
    .await
}

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where its database is.
    pub db: DbLocation,
    /// Bearer token of `/internal/events` (what the relay sends).
    pub events_token: Option<String>,
    /// The shop's base URL, which resolves callers' sessions.
    pub shop_url: String,
    /// The token the shop wants on `/internal/sessions/resolve`.
    pub shop_token: Option<String>,
    /// Consume the shop's events from NATS JetStream too (besides `POST /internal/events`).
    pub nats: Option<shop::events::nats::NatsTarget>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct ServiceState {
    /// The service's own database.
    pub pool: Pool,
    /// Token of `/internal/events`.
    pub events_token: Option<Arc<str>>,
    /// Who is calling.
    pub identity: identity::Identity,
    /// The consumer's counters.
    pub stats: Arc<consumer::Stats>,
}

/// Why the service could not start.
pub use shop::server::ServiceStartError as StartError;

/// A notifications service bound to its address and connected to its database.
pub struct Application {
    listener: TcpListener,
    state: ServiceState,
    nats: Option<shop::events::nats::NatsTarget>,
}

impl Application {
    /// Binds (logging the bound address first), then opens and migrates the database.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = shop::server::bind(config.listen, "notifications service").await?;
        let (pool, _) = connect(&config.db, 8).await?;
        let state = ServiceState {
            pool,
            events_token: config.events_token.filter(|t| !t.is_empty()).map(Into::into),
            identity: identity::Identity::new(&config.shop_url, config.shop_token),
            stats: Arc::default(),
        };
        Ok(Self { listener, state, nats: config.nats })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The service's state (its database, its consumer's counters).
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let pool = self.state.pool.clone();
        let consumer = self.nats.map(|target| tokio::spawn(nats::consume_forever(self.state.clone(), target)));
        let served = axum::serve(self.listener, http::router(self.state)).with_graceful_shutdown(shutdown).await;
        if let Some(consumer) = consumer {
            consumer.abort();
        }
        pool.close().await;
        served
    }
}
