//! The `payments` service: Ficus Shop's payments on their own database.
//!
//! ```text
//! cargo run -p payments-service -- --listen 127.0.0.1:3103 --data-dir /tmp/payments
//! SHOP_PAYMENTS_SERVICE_URL=http://127.0.0.1:3103 cargo run -p shop -- --seed --data-dir /tmp/shop
//! cargo run -p payments-service -- backfill --from sqlite:///tmp/shop/shop.db --data-dir /tmp/payments
//! ```

use std::process::ExitCode;

use anyhow::Context;
use payments_service::{Application, Config, sync};
use shop::server::{ServerArgs, db_location, init_tracing, parse_args};

const USAGE: &str = "\
The payments service: Ficus Shop's payments on their own database, charged by idempotency key.

Usage:
  payments [--listen ADDR] [--data-dir DIR]               serve
  payments backfill --from SHOP_DB_URL [--data-dir DIR]   copy the shop's payment history here

Options:
  --listen ADDR     address to serve on (default 127.0.0.1:3103; port 0 picks a free one)
  --data-dir DIR    directory of the SQLite database payments.db (default ./data)
  --from URL        the shop's database: sqlite:///path/to/shop.db or postgres://…
  -h, --help        this text

Environment:
  DATABASE_URL           postgres://… for the service's own database instead of SQLite
  PAYMENTS_ADMIN_TOKEN   bearer token of the charge endpoints and /internal/faults (the shop's
                         SHOP_PAYMENTS_SERVICE_TOKEN); without it they refuse everyone
  RUST_LOG               log filter (default: info)
";

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Some(args) = parse_args(std::env::args().skip(1), USAGE, "127.0.0.1:3103", &[], &["--from"])? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    init_tracing();
    match args.command.as_deref() {
        None => {
            let config = Config {
                listen: args.listen,
                db: db_location(&args.data_dir),
                admin_token: std::env::var("PAYMENTS_ADMIN_TOKEN").ok(),
            };
            let app = Application::build(config).await.context("starting the payments service")?;
            app.run_until_stopped(shop::shutdown_signal()).await.context("serving")?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some("backfill") => backfill(&args).await,
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

async fn backfill(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let from = args.values.get("--from").context("--from SHOP_DB_URL is required")?;
    let shop = shop::db::open_existing(from)
        .await
        .with_context(|| format!("opening the shop's database {}", shop::db::redact(from)))?;
    let (service, _) =
        payments_service::connect(&db_location(&args.data_dir), 4).await.context("opening the service's database")?;
    let done = sync::backfill(&shop, &service).await.context("copying the payment history")?;
    println!("read {} payments, copied {}", done.read, done.copied);
    let differ = sync::parity(&shop, &service).await.context("comparing")?;
    println!("{} orders differ", differ.len());
    Ok(if differ.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
