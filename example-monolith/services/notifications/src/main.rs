//! The `notifications` service: Ficus Shop's notifications on their own database, fed by
//! the shop's events.
//!
//! ```text
//! SHOP_INTERNAL_TOKEN=int SHOP_RELAY_TO=http://127.0.0.1:3102 SHOP_RELAY_TOKEN=ev \
//!   cargo run -p shop -- --seed --listen 127.0.0.1:3000 --data-dir /tmp/shop
//! NOTIFICATIONS_EVENTS_TOKEN=ev SHOP_INTERNAL_TOKEN=int \
//!   cargo run -p notifications-service -- --listen 127.0.0.1:3102 --data-dir /tmp/notifications --shop http://127.0.0.1:3000
//! curl -H "authorization: Bearer $TOKEN" 127.0.0.1:3102/api/notifications
//! ```

use anyhow::Context;
use notifications_service::{Application, Config};
use shop::server::{db_location, init_tracing, parse_args};

const USAGE: &str = "\
The notifications service: Ficus Shop's notifications on their own database, fed by the shop's events.

Usage:
  notifications [--listen ADDR] [--data-dir DIR] --shop URL

Options:
  --listen ADDR     address to serve on (default 127.0.0.1:3102; port 0 picks a free one)
  --data-dir DIR    directory of the SQLite database notifications.db (default ./data)
  --shop URL        the shop, which resolves callers' sessions (e.g. http://127.0.0.1:3000)
  --nats URL        also consume the shop's events from NATS JetStream (stream SHOP_EVENTS)
  -h, --help        this text

Environment:
  DATABASE_URL                 postgres://… for the service's own database instead of SQLite
  NOTIFICATIONS_EVENTS_TOKEN   bearer token the outbox relay must send to /internal/events
  SHOP_INTERNAL_TOKEN          the token the shop wants on /internal/sessions/resolve
  RUST_LOG                     log filter (default: info)
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1), USAGE, "127.0.0.1:3102", &[], &["--shop", "--nats"])? else {
        print!("{USAGE}");
        return Ok(());
    };
    if let Some(command) = args.command {
        anyhow::bail!("unexpected argument {command:?}\n\n{USAGE}");
    }
    init_tracing();
    let shop_url = args.values.get("--shop").cloned().context("--shop URL is required (the shop resolves sessions)")?;
    let config = Config {
        listen: args.listen,
        db: db_location(&args.data_dir),
        events_token: std::env::var("NOTIFICATIONS_EVENTS_TOKEN").ok(),
        shop_url,
        shop_token: std::env::var("SHOP_INTERNAL_TOKEN").ok(),
        nats: args.values.get("--nats").map(|url| shop::events::nats::NatsTarget::new(url)),
    };
    let app = Application::build(config).await.context("starting the notifications service")?;
    app.run_until_stopped(shop::shutdown_signal()).await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
