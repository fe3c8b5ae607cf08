//! The `shop` server: Ficus Shop on SQLite (default) or PostgreSQL.
//!
//! Run with `cargo run -p shop -- --seed`, then:
//!
//! ```text
//! curl 127.0.0.1:3000/api/products?per_page=3
//! curl -X POST 127.0.0.1:3000/api/users -H 'content-type: application/json' \
//!      -d '{"email":"me@example.com","password":"s3cret-pass","name":"Me"}'
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use shop::{Application, Config, DbLocation};

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
  RUST_LOG          log filter (default: info)

Example:
  shop --listen 127.0.0.1:0 --data-dir /tmp/shop --seed
";

struct Args {
    listen: SocketAddr,
    data_dir: PathBuf,
    seed: bool,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args { listen: "127.0.0.1:3000".parse()?, data_dir: PathBuf::from("data"), seed: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| it.next()).with_context(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen =
                    v.parse().with_context(|| format!("--listen {v:?} is not an address like 127.0.0.1:3000"))?;
            }
            "--data-dir" => args.data_dir = PathBuf::from(value("--data-dir")?),
            "--seed" => args.seed = true,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else {
        print!("{USAGE}");
        return Ok(());
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
    let db = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => DbLocation::Url(url),
        _ => DbLocation::SqliteDir(args.data_dir.clone()),
    };
    let mut config = Config::new(args.listen, db);
    config.seed = args.seed;
    config.admin_token = std::env::var("SHOP_ADMIN_TOKEN").ok();
    let app = Application::build(config).await.context("starting the shop")?;
    app.run_until_stopped(shop::shutdown_signal()).await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
