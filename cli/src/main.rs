//! The `ficus` command: argument parsing and printing, nothing else. The work lives in
//! `ficus-analyzer` and `ficus-proxy`.
//!
//! Run with `cargo run -p ficus -- --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ficus_proxy::admin::StageChange;

/// The proxy allocates on every request (Pingora's header maps and futures); mimalloc serves
/// those faster than glibc's allocator (see bench/proxy/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod analyze;

mod proxy;
mod walkthrough;

/// Move a monolith to microservices one endpoint at a time, the way a strangler fig
/// replaces its host: see the service boundaries, route each endpoint to its new
/// service safely and reversibly, and walk through an extraction with a check at
/// every step.
#[derive(Parser)]
#[command(name = "ficus", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Propose service boundaries for the Rust crate or workspace at PATH.
    #[command(
        after_help = "Examples:\n  ficus analyze example-monolith --format text\n  ficus analyze . --format json --out report.json\n  ficus analyze . --format html --out report.html      # the service graph, with a what-if\n  ficus analyze . --check boundaries.toml              # the guard, for CI\n\nRules file (--check):\n  version = 1\n  [[forbid]]\n  from = \"shop::orders\"          # module path, \"service:NAME\" or \"*\"; except = [...] leaves some out\n  touches_table = \"products\"     # or writes_table, calls = \"shop::catalog::repo\", depends_on = \"service:cart\"\n  why = \"orders reads products through the catalog API now\"\n\nExit status: 0 done (every rule holds), 1 a rule is broken or the input was rejected, 2 usage error\nor invalid rules."
    )]
    Analyze {
        /// A crate or workspace directory.
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Aim for this many services.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        services: Option<u32>,
        /// Clustering resolution: above 1 gives more, smaller services; below 1 fewer.
        #[arg(long, value_name = "R", default_value_t = 1.0)]
        resolution: f64,
        /// Also weigh files changed together in the last N git commits (default 1000).
        #[arg(long, value_name = "COMMITS", num_args = 0..=1, default_missing_value = "1000")]
        history: Option<usize>,
        /// Check the code against the rules in this file instead of printing the report:
        /// exit 1 with FILE:LINE for each violation, 2 when a rule is invalid.
        #[arg(long, value_name = "RULES.toml")]
        check: Option<PathBuf>,
        /// Describe this partition (a file the HTML report's what-if exports) instead of
        /// the proposed one.
        #[arg(long, value_name = "FILE")]
        partition: Option<PathBuf>,
    },
    /// Extraction plan for one proposed service, with the proxy routes for it.
    #[command(
        after_help = "Examples:\n  ficus plan example-monolith --service catalog\n  ficus plan example-monolith --service catalog --routes-out ficus.toml\n  ficus plan example-monolith --service catalog --partition edited-partition.json\n\n--routes-out adds the service's [[routes]] to the file (new routes in stage shadow; a route of the\nsame name keeps its stage), keeps its comments, and writes it only if the proxy accepts the result."
    )]
    Plan {
        /// A crate or workspace directory.
        path: PathBuf,
        /// The proposed service to plan.
        #[arg(long)]
        service: String,
        /// Write the service's [[routes]] into this ficus.toml (created when missing).
        #[arg(long, value_name = "FILE")]
        routes_out: Option<PathBuf>,
        /// Plan from this partition (exported by the HTML report's what-if).
        #[arg(long, value_name = "FILE")]
        partition: Option<PathBuf>,
    },
    /// Run the strangler-fig routing proxy.
    #[command(after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus proxy --config ficus.toml\n\n\
SIGTERM drains in-flight requests and exits; SIGHUP (or POST /reload, or saving the file) reloads\n\
the config. Zero-downtime upgrade: start the new binary with --upgrade, then send SIGQUIT to the\n\
old one; it hands its listening sockets over ([server] upgrade_sock) and drains.")]
    Proxy {
        /// The proxy configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Take the listening sockets over from a running ficus proxy (send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
        /// Log format.
        #[arg(long, value_enum, default_value_t = proxy::LogFormat::Text)]
        log_format: proxy::LogFormat,
    },
    /// List a running proxy's routes, stages and counters.
    #[command(after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus routes --admin http://127.0.0.1:9901")]
    Routes {
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Change a route's migration stage on a running proxy.
    #[command(
        after_help = "Examples:\n  FICUS_ADMIN_TOKEN=secret ficus stage catalog-read canary --percent 25 --reason \"diffs clean for a day\"\n  ficus stage catalog-read monolith --reason \"error spike, see incident 42\"\n\nLeaving shadow needs enough comparisons under the route's mismatch rate; --force overrides.\nA route with a rollout policy, once in canary, is moved through its steps by the proxy itself.\nEvery change is written back to the config file and to the audit log (`ficus audit`)."
    )]
    Stage {
        /// The route's name.
        route: String,
        /// monolith | shadow | canary | service
        stage: String,
        /// Share of cohorts sent to the service in canary (0 to 100).
        #[arg(long)]
        percent: Option<f64>,
        /// Leave shadow even when its comparisons do not allow it yet (see `ficus diffs`).
        #[arg(long)]
        force: bool,
        /// Why, recorded in the audit log (see `ficus audit`).
        #[arg(long)]
        reason: Option<String>,
        /// With a shared state store: change only if the route is still at this version (as
        /// `ficus routes` shows it); a change made first by anyone else refuses this one.
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Show the audit log of stage changes: time, route, from, to, by whom and why.
    #[command(
        after_help = "Examples:\n  ficus audit\n  FICUS_ADMIN_TOKEN=secret ficus audit catalog-read --admin http://127.0.0.1:9901\n\nThe proxy also appends every entry to its audit file (proxy.audit_log, by default\n<config stem>.audit.jsonl beside the config), one JSON object per line."
    )]
    Audit {
        /// Only this route's changes.
        route: Option<String>,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Show how a shadowed route's service answers compare with the monolith's.
    #[command(
        after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus diffs catalog-read --admin http://127.0.0.1:9901"
    )]
    Diffs {
        /// The route's name (in stage shadow).
        route: String,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Extract services from the example shop, step by step, under load: catalog (the default),
    /// notifications (through events), payments (through a guarded call), or all three in order.
    #[command(
        after_help = "Examples:\n  ficus walkthrough                      # the catalog, step by step: Enter goes on, q stops\n  ficus walkthrough --auto --data-dir /tmp/ficus-walk\n  ficus walkthrough notifications --auto # outbox, relay, idempotent consumer, kill drill\n  ficus walkthrough payments --auto      # guarded call: slow and down drills\n  ficus walkthrough all --auto           # the three, in order, on one running shop\n  ficus walkthrough all --auto --shop-database postgres://postgres@127.0.0.1/shop \\\n      --catalog-database postgres://postgres@127.0.0.1/catalog \\\n      --notifications-database postgres://postgres@127.0.0.1/notifications \\\n      --payments-database postgres://postgres@127.0.0.1/payments --nats nats://127.0.0.1:4222"
    )]
    Walkthrough {
        /// Which extraction: catalog, notifications, payments or all.
        #[arg(default_value = "catalog", value_parser = ["catalog", "notifications", "payments", "all"])]
        which: String,
        /// Run every step without waiting for Enter; exit 1 at the first failed check.
        #[arg(long)]
        auto: bool,
        /// Where the walkthrough keeps its databases and files (default: a folder in the temp directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// An empty PostgreSQL database for the shop, instead of SQLite.
        #[arg(long, env = "SHOP_DATABASE_URL")]
        shop_database: Option<String>,
        /// An empty PostgreSQL database for the catalog service, instead of SQLite.
        #[arg(long, env = "CATALOG_DATABASE_URL")]
        catalog_database: Option<String>,
        /// An empty PostgreSQL database for the notifications service, instead of SQLite.
        #[arg(long, env = "NOTIFICATIONS_DATABASE_URL")]
        notifications_database: Option<String>,
        /// An empty PostgreSQL database for the payments service, instead of SQLite.
        #[arg(long, env = "PAYMENTS_DATABASE_URL")]
        payments_database: Option<String>,
        /// NATS with JetStream for the shop's events (default: the relay delivers over HTTP, no broker).
        #[arg(long, env = "FICUS_NATS_URL")]
        nats: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
    Html,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze { path, format, out, services, resolution, history, check, partition } => {
            analyze::analyze(analyze::AnalyzeArgs {
                path,
                format,
                out,
                services,
                resolution,
                history,
                check,
                partition,
            })
        }
        Command::Plan { path, service, routes_out, partition } => {
            analyze::plan(&path, &service, routes_out.as_deref(), partition.as_deref())
        }
        Command::Proxy { config, upgrade, log_format } => proxy::run(config, upgrade, log_format),
        Command::Routes { admin } => proxy::routes(&admin),
        Command::Stage { route, stage, percent, force, reason, if_version, admin } => {
            proxy::stage(&admin, &route, StageChange { stage, percent, force, reason, version: if_version })
        }
        Command::Audit { route, admin } => proxy::audit(&admin, route.as_deref()),
        Command::Diffs { route, admin } => proxy::diffs(&admin, &route),
        Command::Walkthrough {
            which,
            auto,
            data_dir,
            shop_database,
            catalog_database,
            notifications_database,
            payments_database,
            nats,
        } => walkthrough::run_command(walkthrough::Args {
            which,
            auto,
            data_dir,
            shop_database,
            catalog_database,
            notifications_database,
            payments_database,
            nats,
        }),
    }
}
