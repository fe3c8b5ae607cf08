//! The `catalog` service: Ficus Shop's catalog on its own database.
//!
//! Run it next to a shop (which answers its inventory calls), copy the catalogue over,
//! and compare:
//!
//! ```text
//! cargo run -p shop -- --seed --listen 127.0.0.1:3000 --data-dir /tmp/shop
//! cargo run -p catalog-service -- backfill --from sqlite:///tmp/shop/shop.db --data-dir /tmp/catalog
//! cargo run -p catalog-service -- --listen 127.0.0.1:3101 --data-dir /tmp/catalog --inventory http://127.0.0.1:3000
//! curl '127.0.0.1:3101/api/products?in_stock=true&per_page=3'
//! cargo run -p catalog-service -- parity --from sqlite:///tmp/shop/shop.db --data-dir /tmp/catalog
//! ```

use std::process::ExitCode;

use anyhow::Context;
use catalog_service::{Application, Config, sync};
use shop::server::{ServerArgs, db_location, init_tracing, parse_args};

const USAGE: &str = "\
The catalog service: Ficus Shop's catalog capability on its own database.

Usage:
  catalog [--listen ADDR] [--data-dir DIR] [--inventory URL]   serve
  catalog backfill --from SHOP_DB_URL [--data-dir DIR]         copy the shop's catalog rows here
  catalog parity --from SHOP_DB_URL [--data-dir DIR]           compare the two copies (exit 1 when they differ)

Options:
  --listen ADDR     address to serve on (default 127.0.0.1:3101; port 0 picks a free one)
  --data-dir DIR    directory of the SQLite database catalog.db (default ./data)
  --inventory URL   the inventory API, for the in-stock filter (the shop, e.g. http://127.0.0.1:3000)
  --from URL        the shop's database: sqlite:///path/to/shop.db or postgres://…
  -h, --help        this text

Environment:
  DATABASE_URL          postgres://… for the service's own database instead of SQLite
  CATALOG_ADMIN_TOKEN   bearer token of the admin and replication endpoints
  INVENTORY_TOKEN       bearer token for stock changes on the inventory API
  RUST_LOG              log filter (default: info)
";

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Some(args) = parse_args(std::env::args().skip(1), USAGE, "127.0.0.1:3101", &[], &["--inventory", "--from"])?
    else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    init_tracing();
    match args.command.as_deref() {
        None => serve(args).await,
        Some("backfill") => {
            let (shop, service, dialect) = open_both(&args).await?;
            let report = sync::backfill(&shop, &service, dialect).await.context("backfilling the catalog")?;
            println!("copied {} categories and {} products", report.categories, report.products);
            Ok(ExitCode::SUCCESS)
        }
        Some("parity") => {
            let (shop, service, _) = open_both(&args).await?;
            let report = sync::parity(&shop, &service).await.context("comparing the catalogs")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.in_parity() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = Config {
        listen: args.listen,
        db: db_location(&args.data_dir),
        admin_token: std::env::var("CATALOG_ADMIN_TOKEN").ok(),
        inventory_url: args.values.get("--inventory").cloned(),
        inventory_token: std::env::var("INVENTORY_TOKEN").ok(),
    };
    let app = Application::build(config).await.context("starting the catalog service")?;
    app.run_until_stopped(shop::shutdown_signal()).await.context("serving")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn open_both(args: &ServerArgs) -> anyhow::Result<(shop::Pool, shop::Pool, shop::Dialect)> {
    let from = args.values.get("--from").context("--from SHOP_DB_URL is required")?;
    let shop = shop::db::open_existing(from)
        .await
        .with_context(|| format!("opening the shop's database {}", shop::db::redact(from)))?;
    let (service, dialect) =
        catalog_service::connect(&db_location(&args.data_dir), 4).await.context("opening the service's database")?;
    Ok((shop, service, dialect))
}
