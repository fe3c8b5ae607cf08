//! What every server binary of the example shop shares: its command-line flags
//! (`--listen`, `--data-dir`, and a few of its own), tracing set-up, and where its
//! database is (`DATABASE_URL`, else a SQLite file under the data directory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::DbLocation;

/// Parsed command line of a server binary.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// A leading word that is not a flag (a subcommand), if any.
    pub command: Option<String>,
    /// `--listen ADDR`.
    pub listen: SocketAddr,
    /// `--data-dir DIR`.
    pub data_dir: PathBuf,
    /// Boolean flags given (from the binary's own list).
    pub switches: Vec<String>,
    /// Flags with a value given (from the binary's own list).
    pub values: BTreeMap<String, String>,
}

impl ServerArgs {
    /// True when the boolean flag `name` (with its dashes) was given.
    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

/// Parses `args` (without the program name). `switches` and `valued` are the binary's
/// own flags, with their dashes. None when `-h`/`--help` was asked for.
pub fn parse_args(
    args: impl IntoIterator<Item = String>,
    usage: &str,
    default_listen: &str,
    switches: &[&str],
    valued: &[&str],
) -> anyhow::Result<Option<ServerArgs>> {
    let mut out = ServerArgs {
        command: None,
        listen: default_listen.parse().context("default listen address")?,
        data_dir: PathBuf::from("data"),
        switches: Vec::new(),
        values: BTreeMap::new(),
    };
    let mut it = args.into_iter().peekable();
    if let Some(first) = it.peek()
        && !first.starts_with('-')
    {
        out.command = it.next();
    }
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                out.listen =
                    v.parse().with_context(|| format!("--listen {v:?} is not an address like 127.0.0.1:3000"))?;
            }
            "--data-dir" => out.data_dir = PathBuf::from(value()?),
            "-h" | "--help" => return Ok(None),
            f if switches.contains(&f) => out.switches.push(f.to_string()),
            f if valued.contains(&f) => {
                let v = value()?;
                out.values.insert(f.to_string(), v);
            }
            other => bail!("unknown argument {other:?}\n\n{usage}"),
        }
    }
    Ok(Some(out))
}

/// Why a service extracted from the shop could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceStartError {
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
    Db(#[from] crate::db::DbError),
}

/// Binds `addr` and logs `{what} listening on http://ADDR` (the real port when 0 was asked):
/// the first log line of every server binary.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, ServiceStartError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServiceStartError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServiceStartError::Bind { addr, source })?;
    tracing::info!("{what} listening on http://{bound}");
    Ok(listener)
}

/// `GET /healthz` of every server: 200 when its database answers, else 503.
pub async fn healthz(pool: &crate::Pool) -> (axum::http::StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(pool).await {
        Ok(_) => (axum::http::StatusCode::OK, "ok"),
        Err(err) => {
            tracing::warn!(%err, "health check failed");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// The fallback of every server's router: the JSON 404 of the error contract.
pub async fn no_endpoint(uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::NotFound { message: format!("no endpoint at {}", uri.path()), field: None }
}

/// Logs to standard output, filtered by `RUST_LOG` (default `info`), without colour
/// when `NO_COLOR` is set.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .init();
}

/// `DATABASE_URL` when set, else the SQLite file under `data_dir`.
pub fn db_location(data_dir: &std::path::Path) -> DbLocation {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => DbLocation::Url(url),
        _ => DbLocation::SqliteDir(data_dir.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_values_and_a_subcommand() {
        let a = parse_args(
            args(&["backfill", "--from=x", "--listen", "127.0.0.1:0", "--seed"]),
            "",
            "127.0.0.1:1",
            &["--seed"],
            &["--from"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.command.as_deref(), Some("backfill"));
        assert_eq!(a.listen.port(), 0);
        assert!(a.has("--seed"));
        assert_eq!(a.values["--from"], "x");
        assert!(parse_args(args(&["--bogus"]), "", "127.0.0.1:1", &[], &[]).is_err());
        assert!(parse_args(args(&["--listen", "nope"]), "", "127.0.0.1:1", &[], &[]).is_err());
        assert!(parse_args(args(&["--help"]), "", "127.0.0.1:1", &[], &[]).unwrap().is_none());
    }
}
