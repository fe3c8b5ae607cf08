//! The catalog service: Ficus Shop's catalog capability extracted into a service of its
//! own, with its own database (a SQLite file by default, PostgreSQL via DATABASE_URL).
//!
//! It answers the shop's catalog endpoints with the same contract — the request and
//! error types of `shop::catalog::contract`, the row types and SQL of
//! `shop::catalog::repo` run against its own tables — so a client cannot tell which
//! side served it. What it cannot do alone it asks the owner: product search's
//! "in stock only" filter, a join on the monolith's `inventory` table in the shop,
//! becomes one call to the inventory API ([`inventory`]). [`sync`] copies the catalog
//! rows from the shop's database and checks the two copies agree.

pub mod http;
pub mod inventory;
pub mod repo;
pub mod sync;

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
    shop::db::connect_migrated(location, "catalog.db", max_connections, [&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS])
        .await
}

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where its database is.
    pub db: DbLocation,
    /// Bearer token of its admin and replication endpoints.
    pub admin_token: Option<String>,
    /// Base URL of the inventory API (the shop, until inventory is extracted too).
    pub inventory_url: Option<String>,
    /// Bearer token the inventory API wants for stock changes.
    pub inventory_token: Option<String>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct ServiceState {
    /// The service's own database.
    pub pool: Pool,
    /// Its dialect.
    pub dialect: Dialect,
    /// Token of the admin and replication endpoints.
    pub admin_token: Option<Arc<str>>,
    /// The inventory API.
    pub inventory: inventory::Inventory,
}

/// Why the service could not start.
pub use shop::server::ServiceStartError as StartError;

/// A catalog service bound to its address and connected to its database.
pub struct Application {
    listener: TcpListener,
    state: ServiceState,
}

impl Application {
    /// Binds (logging the bound address first), then opens and migrates the database.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = shop::server::bind(config.listen, "catalog service").await?;
        let (pool, dialect) = connect(&config.db, 16).await?;
        let inventory = inventory::Inventory::new(config.inventory_url, config.inventory_token);
        let admin_token = config.admin_token.filter(|t| !t.is_empty()).map(Into::into);
        Ok(Self { listener, state: ServiceState { pool, dialect, admin_token, inventory } })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The service's database.
    pub fn pool(&self) -> &Pool {
        &self.state.pool
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let pool = self.state.pool.clone();
        axum::serve(self.listener, http::router(self.state)).with_graceful_shutdown(shutdown).await?;
        pool.close().await;
        Ok(())
    }
}
