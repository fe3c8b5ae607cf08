//! The `ficus` command: argument parsing and printing, nothing else. The work lives in
//! `ficus-analyzer` and `ficus-proxy`.
//!
//! Run with `cargo run -p ficus -- --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
    #[command(after_help = "Example:\n  ficus analyze example-monolith --format text\n  ficus analyze . --format json --out report.json")]
    Analyze {
        /// A crate or workspace directory.
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Extraction plan for one proposed service, with the proxy routes for it.
    #[command(after_help = "Example:\n  ficus plan example-monolith --service catalog")]
    Plan {
        /// A crate or workspace directory.
        path: PathBuf,
        /// The proposed service to plan.
        #[arg(long)]
        service: String,
    },
    /// Run the strangler-fig routing proxy.
    #[command(after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus proxy --config ficus.toml")]
    Proxy {
        /// The proxy configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// List a running proxy's routes, stages and counters.
    #[command(after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus routes --admin http://127.0.0.1:9901")]
    Routes {
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Change a route's migration stage on a running proxy.
    #[command(after_help = "Example:\n  FICUS_ADMIN_TOKEN=secret ficus stage catalog-read canary --percent 25")]
    Stage {
        /// The route's name.
        route: String,
        /// monolith | shadow | canary | service
        stage: String,
        /// Share of cohorts sent to the service in canary.
        #[arg(long)]
        percent: Option<u8>,
        /// The proxy's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Extract the catalog service from the example shop, step by step.
    #[command(after_help = "Example:\n  ficus walkthrough --auto --data-dir /tmp/ficus-walk")]
    Walkthrough {
        /// Run every step without waiting for Enter.
        #[arg(long)]
        auto: bool,
        /// Where the walkthrough keeps its databases and files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
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

/// Exit status of a usage error, and of a command not built yet.
const USAGE: u8 = 2;

fn not_built(command: &str, issue: &str) -> ExitCode {
    eprintln!("ficus {command}: not built yet ({issue} issue)");
    ExitCode::from(USAGE)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze { .. } => not_built("analyze", "analyzer"),
        Command::Plan { .. } => not_built("plan", "analyzer"),
        Command::Proxy { .. } => not_built("proxy", "proxy"),
        Command::Routes { .. } => not_built("routes", "proxy"),
        Command::Stage { .. } => not_built("stage", "proxy"),
        Command::Walkthrough { .. } => not_built("walkthrough", "walkthrough"),
    }
}
