//! `ficus proxy`, `ficus routes` and `ficus stage`: argument handling and printing around
//! ficus-proxy's `RunningProxy` and `AdminClient`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use ficus_proxy::{AdminClient, ProxyError, RouteView, RunningProxy, StartOptions};

/// Log line format of `ficus proxy`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

const TOKEN_VAR: &str = "FICUS_ADMIN_TOKEN";

fn token() -> Option<String> {
    std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FICUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => {
            builder.with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()).try_init()
        }
    };
}

/// Runs the proxy until SIGTERM (drain, then exit), SIGINT (exit now) or SIGQUIT (hand the
/// listening sockets to a process started with `--upgrade`, then drain and exit).
pub fn run(config: PathBuf, upgrade: bool, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
    let options = StartOptions { config, admin_token: token(), upgrade, handle_signals: true };
    match RunningProxy::start(options) {
        Ok(proxy) => {
            proxy.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ficus proxy: {e}");
            ExitCode::from(1)
        }
    }
}

fn fail(command: &str, e: &ProxyError) -> ExitCode {
    eprintln!("ficus {command}: {e}");
    ExitCode::from(1)
}

fn print_routes(routes: &[RouteView]) {
    let rows: Vec<[String; 6]> = routes
        .iter()
        .map(|r| {
            let methods = if r.methods.is_empty() { "*".to_owned() } else { r.methods.join(",") };
            let stage = if r.stage == "canary" { format!("canary {}%", r.percent) } else { r.stage.clone() };
            [
                r.name.clone(),
                format!("{methods} {}", r.path),
                r.upstream.clone(),
                stage,
                format!("{}/{}", r.requests_service, r.requests_monolith),
                r.fallbacks.to_string(),
            ]
        })
        .collect();
    let header = ["ROUTE", "MATCH", "SERVICE", "STAGE", "REQS SVC/MONO", "FALLBACKS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `ficus routes`.
pub fn routes(admin: &str) -> ExitCode {
    match AdminClient::new(admin, token()).routes() {
        Ok(routes) => {
            print_routes(&routes);
            ExitCode::SUCCESS
        }
        Err(e) => fail("routes", &e),
    }
}

/// `ficus stage ROUTE STAGE [--percent N]`.
pub fn stage(admin: &str, route: &str, stage: &str, percent: Option<f64>) -> ExitCode {
    match AdminClient::new(admin, token()).set_stage(route, stage, percent) {
        Ok(r) => {
            print_routes(std::slice::from_ref(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail("stage", &e),
    }
}
