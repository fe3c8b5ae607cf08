//! Ficus Shop: a small e-commerce monolith written the way many real ones are — one
//! axum + sqlx binary whose seven capability modules (users, catalog, cart, orders,
//! payments, inventory, notifications) share one database and reach into each other's
//! tables. `TANGLES.md` lists those shortcuts: they are what Ficus must find and undo.
//!
//! [`Application`] is the seam tests and the binary share: build it on any address
//! (port 0 included), read the port it bound, run it until a shutdown future resolves.

pub mod admin;
pub mod cart;
pub mod catalog;
pub mod db;
pub mod error;
pub mod events;
pub mod extract;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod product_source;
pub mod seed;
pub mod server;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

pub use db::{DbLocation, Dialect, Pool};

/// Everything the shop needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the database is.
    pub db: DbLocation,
    /// Load the deterministic catalogue when the database has no products.
    pub seed: bool,
    /// Bearer token that admin endpoints require; with none set they refuse everyone.
    pub admin_token: Option<String>,
    /// How long a login session lasts, in seconds.
    pub session_ttl_secs: i64,
    /// Size of the database connection pool.
    pub max_connections: u32,
    /// Read products from the catalog service at this URL from the start (what
    /// `PUT /api/admin/catalog {"reads": "service"}` switches to at run time), so a
    /// restart keeps reading from the service once the catalog has moved.
    pub catalog_service_url: Option<String>,
    /// With `catalog_service_url`: the shop's own catalog endpoints stay retired (410).
    pub catalog_retired: bool,
    /// Token services present to resolve a caller's session (`/internal/sessions/resolve`);
    /// with none set, that endpoint refuses everyone.
    pub internal_token: Option<String>,
    /// Charge cards at the payments service at this URL from the start (what
    /// `PUT /api/admin/payments` switches to at run time).
    pub payments_service_url: Option<String>,
    /// The bearer token the payments service wants.
    pub payments_service_token: Option<String>,
    /// Run the outbox relay in the shop, delivering events to this consumer over HTTP.
    pub relay_to: Option<String>,
    /// Bearer token the relay sends to the consumer.
    pub relay_token: Option<String>,
    /// Run the outbox relay in the shop, publishing to NATS JetStream at this URL (stream
    /// `SHOP_EVENTS`) instead of over HTTP.
    pub relay_nats: Option<String>,
}

impl Config {
    /// Defaults for a SQLite database in `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, db: DbLocation) -> Self {
        Self {
            listen,
            db,
            seed: false,
            admin_token: None,
            session_ttl_secs: 24 * 3600,
            max_connections: 16,
            catalog_service_url: None,
            catalog_retired: false,
            internal_token: None,
            payments_service_url: None,
            payments_service_token: None,
            relay_to: None,
            relay_token: None,
            relay_nats: None,
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The shop's database.
    pub pool: Pool,
    /// Its dialect, for the few statements that differ.
    pub dialect: Dialect,
    /// Token admin endpoints require.
    pub admin_token: Option<std::sync::Arc<str>>,
    /// Session lifetime in seconds.
    pub session_ttl_secs: i64,
    /// Where product reads go and whether catalog writes go through to the service.
    pub catalog: product_source::CatalogSwitches,
    /// Token of `/internal/sessions/resolve`.
    pub internal_token: Option<std::sync::Arc<str>>,
    /// Where checkout charges cards.
    pub payments: payments::remote::PaymentsSwitch,
}

/// Why the shop could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Seeding failed.
    #[error("seeding the catalogue: {0}")]
    Seed(#[source] sqlx::Error),
    /// The outbox relay's broker could not be reached.
    #[error("outbox relay: {0}")]
    Relay(String),
}

/// A shop bound to its address and connected to its database, ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Option<events::relay::Relay>,
}

impl Application {
    /// Binds the listener (logging the bound address first), opens and migrates the
    /// database, and seeds it when asked.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        tracing::info!("shop listening on http://{addr}");
        let (pool, dialect) = db::connect(&config.db, config.max_connections).await?;
        tracing::info!(?dialect, "database ready");
        // Once the catalog lives in the service, the local catalogue is not seeded (its
        // tables may be gone).
        if config.seed && config.catalog_service_url.is_some() {
            tracing::info!("catalog served by the catalog service; seed skipped");
        } else if config.seed {
            match seed::seed_if_empty(&pool).await.map_err(StartError::Seed)? {
                Some(report) => tracing::info!(
                    categories = report.categories,
                    products = report.products,
                    users = report.users,
                    "seeded the catalogue"
                ),
                None => tracing::info!("database already has products; seed skipped"),
            }
        }
        let state = AppState {
            pool,
            dialect,
            admin_token: config.admin_token.filter(|t| !t.is_empty()).map(Into::into),
            session_ttl_secs: config.session_ttl_secs,
            catalog: product_source::CatalogSwitches::default(),
            internal_token: config.internal_token.filter(|t| !t.is_empty()).map(Into::into),
            payments: payments::remote::PaymentsSwitch::default(),
        };
        if let Some(url) = config.payments_service_url.filter(|u| !u.is_empty()) {
            tracing::info!(%url, "charges go to the payments service");
            let client = payments::remote::PaymentsClient::new(
                &url,
                config.payments_service_token.clone(),
                payments::guard::GuardConfig::default(),
            );
            state.payments.set(Some(client));
        }
        let publisher: Option<std::sync::Arc<dyn events::relay::Publisher>> =
            match (config.relay_nats.filter(|u| !u.is_empty()), config.relay_to.filter(|u| !u.is_empty())) {
                (Some(nats), _) => {
                    let target = events::nats::NatsTarget::new(&nats);
                    Some(std::sync::Arc::new(
                        events::nats::NatsPublisher::connect(target).await.map_err(StartError::Relay)?,
                    ))
                }
                (None, Some(url)) => {
                    Some(std::sync::Arc::new(events::relay::HttpPublisher::new(&url, config.relay_token.clone())))
                }
                (None, None) => None,
            };
        let relay = publisher.map(|p| events::relay::Relay::new(state.pool.clone(), p));
        if let Some(url) = config.catalog_service_url.filter(|u| !u.is_empty()) {
            tracing::info!(%url, "product reads go to the catalog service");
            let client = product_source::CatalogClient::new(&url, None);
            state.catalog.set(product_source::ProductSource::Service(client), None, config.catalog_retired);
        }
        Ok(Self { listener, state, relay })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The database pool, for tests and tools that inspect the shop's state.
    pub fn pool(&self) -> &Pool {
        &self.state.pool
    }

    /// The shared state (database, switches), for tools that drive the shop in-process.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and returns.
    /// Beside the server run the settling of checkouts the payments service left
    /// unsettled and, when configured, the outbox relay.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let pool = self.state.pool.clone();
        let settler = tokio::spawn(settle_forever(self.state.clone()));
        let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = self.relay.map(|r| {
            tokio::spawn(r.run_until_stopped(async {
                let _ = relay_stopped.await;
            }))
        });
        let served = axum::serve(self.listener, router(self.state)).with_graceful_shutdown(shutdown).await;
        settler.abort();
        let _ = stop_relay.send(());
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        pool.close().await;
        served
    }
}

/// Settles, every second, the checkouts the payments service left unsettled.
async fn settle_forever(state: AppState) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        match orders::checkout::settle(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "settled checkouts left unsettled"),
            Err(err) => tracing::warn!(%err, "settling unsettled checkouts"),
        }
    }
}

/// The whole HTTP API: every capability's routes on one router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(users::http::routes())
        .merge(catalog::http::routes(state.clone()))
        .merge(cart::http::routes())
        .merge(orders::http::routes())
        .merge(inventory::http::routes())
        .merge(notifications::http::routes())
        .merge(admin::routes())
        .merge(product_source::routes())
        .fallback(server::no_endpoint)
        .with_state(state)
}

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> (StatusCode, &'static str) {
    server::healthz(&state.pool).await
}

/// Resolves on SIGTERM or Ctrl-C: the shutdown signal every server binary here uses.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
