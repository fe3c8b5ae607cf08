//! The database handle: a SQLite file under the data directory by default, PostgreSQL
//! when `DATABASE_URL` names one. Both are reached through sqlx's `Any` driver with
//! `$n` placeholders, which both dialects accept, so every query is written once.

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The database the shop's tables live in.
pub type Pool = AnyPool;

/// Which SQL dialect a pool speaks; the few statements that differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default.
    Sqlite,
    /// `DATABASE_URL=postgres://…`.
    Postgres,
}

/// Where to find the database.
#[derive(Debug, Clone)]
pub enum DbLocation {
    /// A SQLite file `shop.db` in this directory (created when missing).
    SqliteDir(std::path::PathBuf),
    /// A database URL (`postgres://…` or `sqlite://…`).
    Url(String),
}

/// Errors met while opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("creating data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL names a database this shop does not speak.
    #[error("unsupported database URL {0:?}: use postgres://… or sqlite://…")]
    Unsupported(String),
    /// Connecting failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens (creating if needed) and migrates the shop's database.
pub async fn connect(location: &DbLocation, max_connections: u32) -> Result<(Pool, Dialect), DbError> {
    connect_migrated(location, "shop.db", max_connections, [&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS]).await
}

/// Opens (creating if needed) a database and runs `migrations` on it: the SQLite
/// migrator first, the PostgreSQL one second. A SQLite database is the file
/// `sqlite_file` in the location's directory. Services extracted from the shop open
/// their own databases with their own migrations through this too.
pub async fn connect_migrated(
    location: &DbLocation,
    sqlite_file: &str,
    max_connections: u32,
    [sqlite_migrations, postgres_migrations]: [&Migrator; 2],
) -> Result<(Pool, Dialect), DbError> {
    sqlx::any::install_default_drivers();
    let url = match location {
        DbLocation::SqliteDir(dir) => sqlite_url_in(dir, sqlite_file)?,
        DbLocation::Url(url) => url.clone(),
    };
    let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Dialect::Postgres
    } else if url.starts_with("sqlite:") {
        Dialect::Sqlite
    } else {
        return Err(DbError::Unsupported(redact(&url)));
    };
    let mut options = AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(30));
    if dialect == Dialect::Sqlite {
        options = options.after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers proceed while one writer holds the lock; writers queue
                // on the busy timeout instead of failing at once.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA busy_timeout = 15000").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
    }
    let pool = options.connect(&url).await.map_err(|source| DbError::Connect { url: redact(&url), source })?;
    match dialect {
        Dialect::Sqlite => sqlite_migrations.run(&pool).await?,
        Dialect::Postgres => postgres_migrations.run(&pool).await?,
    }
    Ok((pool, dialect))
}

/// Opens an existing database by URL, without migrating it (to read another
/// program's tables, as the catalog backfill reads the shop's).
pub async fn open_existing(url: &str) -> Result<Pool, DbError> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .map_err(|source| DbError::Connect { url: redact(url), source })
}

/// The sqlx URL of the SQLite file `file` in `dir`, creating the directory.
fn sqlite_url_in(dir: &Path, file: &str) -> Result<String, DbError> {
    std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir { path: dir.display().to_string(), source })?;
    Ok(format!("sqlite://{}?mode=rwc", dir.join(file).display()))
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Seconds since the Unix epoch: the shop stores every timestamp this way.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
