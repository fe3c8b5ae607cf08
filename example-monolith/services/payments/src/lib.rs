//! The payments service: Ficus Shop's payments capability extracted into a service of its
//! own, with its own database (SQLite by default, PostgreSQL via DATABASE_URL).
//!
//! Checkout calls it synchronously and waits, so it is built to be called through a guard
//! (timeouts, retries, a breaker): every charge carries an idempotency key and a key
//! charges at most once ([`charges`]), and a key can be cancelled for good — a captured
//! charge is refunded, one that arrives later is refused — which is how the shop settles a
//! charge whose answer it never got. [`sync`] copies the shop's payment history here.
//! [`Faults`] lets a drill make the card gateway slow.

pub mod charges;
pub mod http;
pub mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shop::DbLocation;
use shop::db::{DbError, Dialect, Pool};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Opens (creating if needed) and migrates the service's own database.
pub async fn connect(location: &DbLocation, max_connections: u32) -> Result<(Pool, Dialect), DbError> {
    shop::db::connect_migrated(location, "payments.db", max_connections, [&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS])
        .await
}

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where its database is.
    pub db: DbLocation,
    /// Bearer token of its charge endpoints and `/internal/faults`.
    pub admin_token: Option<String>,
}

/// Injected faults, for drills: the card gateway answers after `delay`.
#[derive(Debug, Default)]
pub struct Faults {
    delay_ms: AtomicU64,
}

impl Faults {
    /// The delay before each charge is made.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Sets it (0: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct ServiceState {
    /// The service's own database.
    pub pool: Pool,
    /// Token of the admin endpoints.
    pub admin_token: Option<Arc<str>>,
    /// Injected faults.
    pub faults: Arc<Faults>,
}

/// Why the service could not start.
pub use shop::server::ServiceStartError as StartError;

/// A payments service bound to its address and connected to its database.
pub struct Application {
    listener: TcpListener,
    state: ServiceState,
}

impl Application {
    /// Binds (logging the bound address first), then opens and migrates the database.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = shop::server::bind(config.listen, "payments service").await?;
        let (pool, _) = connect(&config.db, 8).await?;
        let admin_token = config.admin_token.filter(|t| !t.is_empty()).map(Into::into);
        Ok(Self { listener, state: ServiceState { pool, admin_token, faults: Arc::default() } })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The service's state.
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let pool = self.state.pool.clone();
        axum::serve(self.listener, http::router(self.state)).with_graceful_shutdown(shutdown).await?;
        pool.close().await;
        Ok(())
    }
}
