//! The `shop` server: Ficus Shop on SQLite (default) or PostgreSQL.
//!
//! Run with `cargo run -p shop -- --seed`, then:
//!
//! ```text
//! curl 127.0.0.1:3000/api/products?per_page=3
//! curl -X POST 127.0.0.1:3000/api/users -H 'content-type: application/json' \
//!      -d '{"email":"me@example.com","password":"s3cret-pass","name":"Me"}'
//! ```

use anyhow::Context;
use shop::server::{db_location, init_tracing, parse_args};
use shop::{Application, Config};

const USAGE: &str = "\
Ficus Shop, the example monolith.

Usage: shop [--listen ADDR] [--data-dir DIR] [--seed]

Options:
  --listen ADDR     address to serve on (default 127.0.0.1:3000; port 0 picks a free one)
  --data-dir DIR    directory of the SQLite database shop.db (default ./data)
  --seed            load the demo catalogue (200 products, 3 users) into an empty database
  -h, --help        this text

Environment:
  DATABASE_URL      postgres://… to use PostgreSQL instead of SQLite
  SHOP_ADMIN_TOKEN  bearer token for the admin endpoints (without it they refuse everyone)
  SHOP_CATALOG_SERVICE_URL
                    read products from the catalog service at this URL (once the catalog has moved);
                    the local catalogue is then not seeded
  SHOP_CATALOG_RETIRED=1
                    with SHOP_CATALOG_SERVICE_URL: the shop's catalog endpoints answer 410 Gone
  SHOP_INTERNAL_TOKEN
                    token services present to resolve a caller's session (/internal/sessions/resolve)
  SHOP_PAYMENTS_SERVICE_URL
                    charge cards at the payments service at this URL (guarded: timeout, retries,
                    circuit breaker, bulkhead) instead of the in-process gateway;
                    SHOP_PAYMENTS_SERVICE_TOKEN is the bearer token it wants
  SHOP_RELAY_TO     run the outbox relay, delivering events to this consumer's /internal/events
                    (e.g. the notifications service); SHOP_RELAY_TOKEN is its bearer token
  SHOP_RELAY_NATS   run the outbox relay, publishing to NATS JetStream at this URL
                    (e.g. nats://127.0.0.1:4222; stream SHOP_EVENTS, subjects shop.events.*)
  RUST_LOG          log filter (default: info)

Example:
  shop --listen 127.0.0.1:0 --data-dir /tmp/shop --seed
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1), USAGE, "127.0.0.1:3000", &["--seed"], &[])? else {
        print!("{USAGE}");
        return Ok(());
    };
    if let Some(command) = args.command {
        anyhow::bail!("unexpected argument {command:?}\n\n{USAGE}");
    }
    init_tracing();
    let mut config = Config::new(args.listen, db_location(&args.data_dir));
    config.seed = args.has("--seed");
    config.admin_token = std::env::var("SHOP_ADMIN_TOKEN").ok();
    config.catalog_service_url = std::env::var("SHOP_CATALOG_SERVICE_URL").ok();
    config.catalog_retired = std::env::var("SHOP_CATALOG_RETIRED").is_ok_and(|v| v == "1" || v == "true");
    config.internal_token = std::env::var("SHOP_INTERNAL_TOKEN").ok();
    config.payments_service_url = std::env::var("SHOP_PAYMENTS_SERVICE_URL").ok();
    config.payments_service_token = std::env::var("SHOP_PAYMENTS_SERVICE_TOKEN").ok();
    config.relay_to = std::env::var("SHOP_RELAY_TO").ok();
    config.relay_token = std::env::var("SHOP_RELAY_TOKEN").ok();
    config.relay_nats = std::env::var("SHOP_RELAY_NATS").ok();
    let app = Application::build(config).await.context("starting the shop")?;
    app.run_until_stopped(shop::shutdown_signal()).await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
