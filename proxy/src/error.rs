//! The errors of ficus-proxy: one enum for the library, and the config error that names the file
//! and line a user has to fix.

use std::path::PathBuf;

/// An invalid configuration file: where and why. Displays as `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending item.
    pub line: usize,
    /// What is wrong and, where it helps, what to do.
    pub reason: String,
}

/// Everything that can go wrong in ficus-proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A route name that the config does not have.
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    /// A stage change that is not valid (bad stage or percent).
    #[error("{0}")]
    InvalidChange(String),
    /// A stage change refused because the route's shadow comparisons do not allow it yet.
    #[error("{0}")]
    Gate(String),
    /// A stage change refused because another change was made first (compare-and-set on the
    /// route's version in the shared store).
    #[error("{0}")]
    Conflict(String),
    /// The shared state store cannot be reached: changes are refused until it returns.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The admin API answered with an error (client side).
    #[error("admin API answered {status}: {message}")]
    Admin {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The admin API could not be reached (client side).
    #[error("cannot reach the admin API at {url}: {message}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The cause.
        message: String,
    },
    /// Starting or running the proxy failed.
    #[error("{0}")]
    Server(String),
}
