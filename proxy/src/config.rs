//! `ficus.toml`: parsed raw with serde (keeping source spans), then validated into types that
//! cannot hold an invalid state. Every error names the file and the line to fix.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, ProxyError};
use crate::policy::model::{
    Cohort, DEFAULT_SHADOW_HEADERS, DEFAULT_SHADOW_MAX_PER_SECOND, HeaderMatch, PathTemplate, Percent, RateLimit,
    RolloutPolicy, RouteSpec, Stage,
};

/// Default of a route's `shadow_max_mismatch`.
pub const DEFAULT_SHADOW_MAX_MISMATCH: f64 = 0.01;
/// Default of a route's `shadow_min_compared`.
pub const DEFAULT_SHADOW_MIN_COMPARED: u64 = 100;

/// The only config version this build understands.
pub const CONFIG_VERSION: i64 = 1;

// ---------------------------------------------------------------------------------------------
// Raw form: exactly what the file says.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<Spanned<i64>>,
    listen: Spanned<RawListen>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    default: Option<Spanned<RawDefault>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    state: RawState,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    store: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    idle_timeout_ms: Option<Spanned<i64>>,
    header_timeout_ms: Option<Spanned<i64>>,
    max_connections_per_client: Option<Spanned<i64>>,
    force_token_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    http: Spanned<String>,
    admin: Option<Spanned<String>>,
    https: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    threads: Option<Spanned<i64>>,
    work_stealing: Option<bool>,
    grace_period_seconds: Option<u64>,
    graceful_shutdown_timeout_seconds: Option<u64>,
    upgrade_sock: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    upstream_header: Option<bool>,
    create_ids: Option<bool>,
    force_header: Option<Spanned<bool>>,
    max_header_bytes: Option<Spanned<i64>>,
    health_interval_ms: Option<Spanned<i64>>,
    breaker_failures: Option<Spanned<i64>>,
    breaker_cooldown_ms: Option<Spanned<i64>>,
    audit_log: Option<Spanned<String>>,
    watch_file: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    addrs: Spanned<Vec<Spanned<String>>>,
    health: Option<Spanned<String>>,
    connect_timeout_ms: Option<Spanned<i64>>,
    read_timeout_ms: Option<Spanned<i64>>,
    tls: Option<Spanned<bool>>,
    sni: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    h2: Option<bool>,
    max_concurrent: Option<Spanned<i64>>,
    queue_timeout_ms: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
    resolve_every_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    upstream: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    path: Spanned<String>,
    methods: Option<Spanned<Vec<String>>>,
    header: Option<Spanned<String>>,
    upstream: Spanned<String>,
    stage: Option<Spanned<String>>,
    percent: Option<Spanned<f64>>,
    cohort: Option<Spanned<String>>,
    fallback: Option<bool>,
    shadow_writes: Option<bool>,
    shadow_ignore: Option<Spanned<Vec<String>>>,
    shadow_max_mismatch: Option<Spanned<f64>>,
    shadow_min_compared: Option<Spanned<i64>>,
    shadow_headers: Option<Spanned<Vec<String>>>,
    shadow_max_per_second: Option<Spanned<i64>>,
    rollout: Option<Spanned<RawRollout>>,
    fallback_on_404: Option<Spanned<bool>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: Spanned<i64>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    steps: Spanned<Vec<f64>>,
    dwell_seconds: Option<Spanned<f64>>,
    min_requests: Option<Spanned<i64>>,
    max_error_rate_increase: Option<Spanned<f64>>,
    max_p99_ratio: Option<Spanned<f64>>,
    p99_slack_ms: Option<Spanned<f64>>,
}

// ---------------------------------------------------------------------------------------------
// Validated form.

/// A validated proxy configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the proxy listens.
    pub listen: Listen,
    /// Pingora server settings.
    pub server: ServerOptions,
    /// Behaviour switches of the proxy.
    pub proxy: ProxyOptions,
    /// The upstreams, sorted by name.
    pub upstreams: Vec<UpstreamSpec>,
    /// Index into `upstreams` of the upstream that serves every unmatched request (the monolith).
    pub default_upstream: usize,
    /// The routes in file order.
    pub routes: Vec<RouteSpec>,
    /// What the proxy trusts of its clients.
    pub security: Security,
    /// Where the routes' live state is kept.
    pub state: StateOptions,
}

/// Where the routes' live state (stages, percents, audit log, shadow totals, rollout progress)
/// is kept (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateOptions {
    /// `postgres://…`: shared by every instance that names it; `None`: this config file and the
    /// files beside it (one instance).
    pub store: Option<String>,
}

/// What the proxy trusts of its clients (`[security]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Clients whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are kept (other
    /// proxies in front of this one); everyone else's are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a keep-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// How long a client has to send a whole request head, from its first byte (from the
    /// connection's start for the first request).
    pub header_timeout: Duration,
    /// Open connections allowed from one client address; more are answered 503 and closed.
    pub max_connections_per_client: usize,
    /// The environment variable holding the secret a tester sends in `x-ficus-force-token` for
    /// `x-ficus-force` to be honoured; `None`: forcing is off.
    pub force_token_env: Option<SecretRef>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            trusted_proxies: Vec::new(),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_SECS),
            header_timeout: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            force_token_env: None,
        }
    }
}

/// The default of `security.idle_timeout_ms`, in seconds.
const DEFAULT_IDLE_SECS: u64 = 60;
/// The default of `security.header_timeout_ms` (nginx's `client_header_timeout` is 60 s;
/// a legitimate client sends its head in one packet).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// The default of `security.max_connections_per_client`: far above what a browser (6 per host)
/// or a pooled service client opens, far below what exhausts the proxy's file descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

/// A secret the config names by its environment variable (secrets stay out of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The variable's name.
    pub env: String,
    /// The config line naming it, for errors.
    pub line: usize,
}

/// A secret from the environment: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps a secret's bytes.
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(bytes.into())
    }

    /// Whether `candidate` is the secret. The time taken depends on the lengths only, not on
    /// where the bytes first differ, so a client cannot find the secret a byte at a time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.len() != self.0.len() {
            return false;
        }
        let diff = self.0.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An address block, `10.0.0.0/8` or `::1/128` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `ADDR/PREFIX` or `ADDR`.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (a, p) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let addr: std::net::IpAddr =
            a.trim().parse().map_err(|_| format!("`{text}` is not an address or ADDR/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be a number from 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Listen addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Proxied traffic.
    pub http: SocketAddr,
    /// The admin API; none when absent from the file.
    pub admin: Option<SocketAddr>,
    /// Proxied traffic over TLS (HTTP/1.1 and HTTP/2 by ALPN); none when absent.
    pub https: Option<HttpsListen>,
}

/// The TLS listener: its address and the certificate it serves (reloaded when the files change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsListen {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The certificate chain (PEM), leaf first; relative paths are taken from the config's folder.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// Settings passed to Pingora's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Worker threads; `None` means the number of cores.
    pub threads: Option<usize>,
    /// Tokio work stealing between worker threads.
    pub work_stealing: bool,
    /// On SIGTERM, how long to keep serving in-flight requests before the runtimes stop.
    pub grace_period: Duration,
    /// After the grace period, how long the runtimes get to finish.
    pub graceful_shutdown_timeout: Duration,
    /// Unix socket used to hand the listening sockets to a new process (`--upgrade`).
    pub upgrade_sock: String,
}

/// Behaviour switches of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Add `x-ficus-upstream` to every response.
    pub upstream_header: bool,
    /// Create an `x-request-id` and a W3C `traceparent` for a request that has none (malformed
    /// ones are replaced either way).
    pub create_ids: bool,
    /// Request heads larger than this are refused with 431.
    pub max_header_bytes: usize,
    /// Period of the active health checks.
    pub health_interval: Duration,
    /// Consecutive failures that open an address's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps the address out before one probe request is let through.
    pub breaker_cooldown: Duration,
    /// The audit log file as written in the config (relative to the config's directory); `None`:
    /// `<config stem>.audit.jsonl` beside the config.
    pub audit_log: Option<String>,
    /// Reload when the file's content changes (checked every 500 ms); off: only on SIGHUP and
    /// `POST /reload`.
    pub watch_file: bool,
}

/// One upstream: a named set of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Its name, as routes and `x-ficus-upstream` give it.
    pub name: String,
    /// Its addresses (at least one).
    pub addrs: Vec<UpstreamAddr>,
    /// Path of its HTTP health check; without one a TCP connect is the check.
    pub health: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout (time to first byte and between reads).
    pub read_timeout: Duration,
    /// Reached over TLS; `None`: plain HTTP.
    pub tls: Option<UpstreamTls>,
    /// The bulkhead: at most this many requests in flight to it; `None`: no cap.
    pub max_concurrent: Option<usize>,
    /// How long a request waits for a place under `max_concurrent` before it gets 503.
    pub queue_timeout: Duration,
    /// Retries of an idempotent request that failed before an answer (or got 502/503), with
    /// jittered backoff, inside the upstream's retry budget.
    pub retries: u32,
    /// How often names among its addresses are resolved again.
    pub resolve_every: Duration,
    /// The line of its `[upstreams.NAME]` table, for errors found later (an address that does
    /// not resolve, an unreadable CA file).
    pub line: usize,
}

/// An upstream address: an IP address or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamAddr {
    /// The host: an IP address (IPv6 without brackets) or a name.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl UpstreamAddr {
    /// The IP address, when the host is one (no lookup needed).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }

    /// Parses `HOST:PORT` or `[IPV6]:PORT`.
    pub fn parse(text: &str) -> Option<UpstreamAddr> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Some(UpstreamAddr { host: a.ip().to_string(), port: a.port() });
        }
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        name_ok.then(|| UpstreamAddr { host: host.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// How an upstream is reached over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent by SNI and verified against the certificate; `None`: each address's host
    /// (an IP address is verified against the certificate's IP addresses).
    pub sni: Option<String>,
    /// Trust only the CAs in this PEM file; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (used when the upstream speaks it, so gRPC passes through).
    pub h2: bool,
}

impl Config {
    /// The audit log's path: `proxy.audit_log` relative to the config's directory, or
    /// `<config stem>.audit.jsonl` beside it.
    pub fn audit_path(&self, config_path: &Path) -> PathBuf {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        match &self.proxy.audit_log {
            Some(p) => dir.join(p),
            None => {
                let stem = config_path.file_stem().map_or_else(|| "ficus".into(), |s| s.to_string_lossy().into_owned());
                dir.join(format!("{stem}.audit.jsonl"))
            }
        }
    }

    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<(Config, String), ProxyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProxyError::Io { path: path.to_owned(), source })?;
        let config = Config::parse(&text, path)?;
        Ok((config, text))
    }

    /// Parses and validates config text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let v = Validator { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| v.line(s.start)).unwrap_or(1);
            v.err_line(line, e.message().trim().to_owned())
        })?;
        v.validate(raw)
    }

    /// The upstream with this name.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn err_line(&self, line: usize, reason: String) -> ConfigError {
        ConfigError { file: self.file.to_owned(), line, reason }
    }

    fn err(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        self.err_line(self.line(span.start), reason.into())
    }

    /// A file name given in the config (not checked here: the config is parsed without I/O).
    fn file_name(&self, v: &Spanned<String>, what: &str) -> Result<PathBuf, ConfigError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.err(v.span(), format!("{what} must name a file")));
        }
        Ok(PathBuf::from(v.get_ref()))
    }

    fn positive(&self, v: &Option<Spanned<i64>>, what: &str, default: i64, max: i64) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if (1..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(s.span(), format!("{what} must be between 1 and {max}"))),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        match &raw.version {
            None => return Err(self.err_line(1, format!("missing `version = {CONFIG_VERSION}` at the top"))),
            Some(v) if *v.get_ref() != CONFIG_VERSION => {
                return Err(self.err(
                    v.span(),
                    format!("unsupported config version {}; this ficus reads version {CONFIG_VERSION}", v.get_ref()),
                ));
            }
            Some(_) => {}
        }
        let listen_span = raw.listen.span();
        let raw_listen = raw.listen.into_inner();
        let addr = |s: &Spanned<String>, what: &str| -> Result<SocketAddr, ConfigError> {
            s.get_ref()
                .parse()
                .map_err(|_| self.err(s.span(), format!("{what} `{}` is not an IP:port address", s.get_ref())))
        };
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let https = match (&raw_listen.https, &raw_listen.tls_cert, &raw_listen.tls_key) {
            (None, None, None) => None,
            (Some(a), Some(cert), Some(key)) => Some(HttpsListen {
                addr: addr(a, "listen.https")?,
                cert: dir.join(self.file_name(cert, "listen.tls_cert")?),
                key: dir.join(self.file_name(key, "listen.tls_key")?),
            }),
            _ => {
                return Err(self.err(
                    listen_span.clone(),
                    "listen.https needs listen.tls_cert and listen.tls_key (PEM files), and they need listen.https",
                ));
            }
        };
        let listen = Listen {
            http: addr(&raw_listen.http, "listen.http")?,
            admin: raw_listen.admin.as_ref().map(|a| addr(a, "listen.admin")).transpose()?,
            https,
        };
        if Some(listen.http) == listen.admin && listen.http.port() != 0 {
            return Err(self.err(listen_span, "listen.http and listen.admin must differ"));
        }

        let threads = raw
            .server
            .threads
            .as_ref()
            .map(|t| {
                if (1..=1024).contains(t.get_ref()) {
                    Ok(*t.get_ref() as usize)
                } else {
                    Err(self.err(t.span(), "server.threads must be between 1 and 1024"))
                }
            })
            .transpose()?;
        let server = ServerOptions {
            threads,
            work_stealing: raw.server.work_stealing.unwrap_or(true),
            grace_period: Duration::from_secs(raw.server.grace_period_seconds.unwrap_or(3)),
            graceful_shutdown_timeout: Duration::from_secs(raw.server.graceful_shutdown_timeout_seconds.unwrap_or(5)),
            upgrade_sock: raw.server.upgrade_sock.unwrap_or_else(|| "/tmp/ficus_upgrade.sock".to_owned()),
        };
        let proxy = ProxyOptions {
            upstream_header: raw.proxy.upstream_header.unwrap_or(true),
            create_ids: raw.proxy.create_ids.unwrap_or(false),
            max_header_bytes: self.positive(
                &raw.proxy.max_header_bytes,
                "proxy.max_header_bytes",
                64 * 1024,
                1 << 20,
            )? as usize,
            health_interval: Duration::from_millis(self.positive(
                &raw.proxy.health_interval_ms,
                "proxy.health_interval_ms",
                1000,
                3_600_000,
            )? as u64),
            breaker_failures: self.positive(&raw.proxy.breaker_failures, "proxy.breaker_failures", 5, 1_000_000)?
                as u32,
            breaker_cooldown: Duration::from_millis(self.positive(
                &raw.proxy.breaker_cooldown_ms,
                "proxy.breaker_cooldown_ms",
                2000,
                3_600_000,
            )? as u64),
            audit_log: match &raw.proxy.audit_log {
                Some(a) if a.get_ref().trim().is_empty() => {
                    return Err(self.err(a.span(), "proxy.audit_log must name a file (every stage change is audited)"));
                }
                Some(a) => Some(a.get_ref().clone()),
                None => None,
            },
            watch_file: raw.proxy.watch_file.unwrap_or(true),
        };

        let mut upstreams = Vec::new();
        for (name, spanned) in &raw.upstreams {
            let span = spanned.span();
            let u = spanned.get_ref();
            if !valid_name(name) {
                return Err(self.err(span, format!("upstream name `{name}` may hold only letters, digits, - and _")));
            }
            if u.addrs.get_ref().is_empty() {
                return Err(self.err(u.addrs.span(), format!("upstream `{name}` needs at least one address")));
            }
            let mut addrs = Vec::new();
            let mut schemes = HashSet::new();
            for a in u.addrs.get_ref() {
                let text = a.get_ref().as_str();
                let (scheme, rest) = match text.split_once("://") {
                    Some((s @ ("http" | "https"), rest)) => (Some(s == "https"), rest),
                    Some(_) => {
                        return Err(self.err(
                            a.span(),
                            format!("upstream `{name}`: `{text}`: the scheme may only be http:// or https://"),
                        ));
                    }
                    None => (None, text),
                };
                schemes.insert(scheme);
                let parsed = UpstreamAddr::parse(rest.trim_end_matches('/')).ok_or_else(|| {
                    self.err(
                        a.span(),
                        format!("upstream `{name}` address `{text}` is not HOST:PORT (an IP address or a DNS name)"),
                    )
                })?;
                if addrs.contains(&parsed) {
                    return Err(self.err(a.span(), format!("upstream `{name}` lists {parsed} twice")));
                }
                addrs.push(parsed);
            }
            if schemes.contains(&Some(true)) && schemes.len() > 1 {
                return Err(self.err(
                    u.addrs.span(),
                    format!("upstream `{name}` mixes https:// addresses with others: one upstream is all TLS or none"),
                ));
            }
            let tls = match (u.tls.as_ref().map(|t| *t.get_ref()), schemes.contains(&Some(true))) {
                (Some(false), true) => {
                    return Err(self.err(
                        u.addrs.span(),
                        format!("upstream `{name}`: tls = false but its addresses are https://"),
                    ));
                }
                (Some(true), _) | (None, true) => Some(UpstreamTls {
                    sni: match &u.sni {
                        Some(s) if UpstreamAddr::parse(&format!("{}:1", s.get_ref())).is_some() => {
                            Some(s.get_ref().to_ascii_lowercase())
                        }
                        Some(s) => {
                            return Err(self.err(
                                s.span(),
                                format!("upstream `{name}`: sni `{}` is not a DNS name or IP address", s.get_ref()),
                            ));
                        }
                        None => None,
                    },
                    ca_file: u
                        .ca_file
                        .as_ref()
                        .map(|c| self.file_name(c, "ca_file").map(|f| dir.join(f)))
                        .transpose()?,
                    h2: u.h2.unwrap_or(true),
                }),
                _ => {
                    if let Some(field) = u.sni.as_ref().or(u.ca_file.as_ref()) {
                        return Err(self.err(
                            field.span(),
                            format!("upstream `{name}`: sni and ca_file need tls = true (or https:// addresses)"),
                        ));
                    }
                    None
                }
            };
            let health = match &u.health {
                Some(h) if h.get_ref().starts_with('/') && h.get_ref().bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(h.get_ref().clone())
                }
                Some(h) => {
                    return Err(self.err(h.span(), format!("upstream `{name}`: health must be a path like /healthz")));
                }
                None => None,
            };
            upstreams.push(UpstreamSpec {
                name: name.clone(),
                addrs,
                health,
                tls,
                line: self.line(span.start),
                connect_timeout: Duration::from_millis(self.positive(
                    &u.connect_timeout_ms,
                    "connect_timeout_ms",
                    1000,
                    600_000,
                )? as u64),
                read_timeout: Duration::from_millis(self.positive(
                    &u.read_timeout_ms,
                    "read_timeout_ms",
                    30_000,
                    3_600_000,
                )? as u64),
                max_concurrent: u
                    .max_concurrent
                    .as_ref()
                    .map(|_| self.positive(&u.max_concurrent, "max_concurrent", 1, 1_000_000).map(|n| n as usize))
                    .transpose()?,
                queue_timeout: Duration::from_millis(self.positive(
                    &u.queue_timeout_ms,
                    "queue_timeout_ms",
                    100,
                    60_000,
                )? as u64),
                retries: match &u.retries {
                    None => 0,
                    Some(r) if (0..=10).contains(r.get_ref()) => *r.get_ref() as u32,
                    Some(r) => return Err(self.err(r.span(), format!("upstream `{name}`: retries must be 0 to 10"))),
                },
                resolve_every: Duration::from_millis(self.positive(
                    &u.resolve_every_ms,
                    "resolve_every_ms",
                    5_000,
                    86_400_000,
                )? as u64),
            });
        }
        let upstream_index = |s: &Spanned<String>| -> Result<usize, ConfigError> {
            upstreams.iter().position(|u| &u.name == s.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.err(s.span(), format!("unknown upstream `{}` (known: {})", s.get_ref(), known.join(", ")))
            })
        };
        let Some(default) = raw.default.as_ref() else {
            return Err(self.err_line(1, "missing [default] upstream = \"…\" (where unmatched requests go)".to_owned()));
        };
        let default_upstream = upstream_index(&default.get_ref().upstream)?;

        let mut routes = Vec::new();
        let mut names = HashSet::new();
        for spanned in &raw.routes {
            let line = self.line(spanned.span().start);
            let r = spanned.get_ref();
            let name = r.name.get_ref();
            if !valid_name(name) {
                return Err(
                    self.err(r.name.span(), format!("route name `{name}` may hold only letters, digits, - and _"))
                );
            }
            if !names.insert(name.clone()) {
                return Err(self.err(r.name.span(), format!("route name `{name}` is used twice")));
            }
            let path = PathTemplate::parse(r.path.get_ref())
                .map_err(|e| self.err(r.path.span(), format!("route `{name}`: {e}")))?;
            let methods = match &r.methods {
                None => None,
                Some(m) => {
                    if m.get_ref().is_empty() {
                        return Err(
                            self.err(m.span(), format!("route `{name}`: methods is empty; leave it out for all"))
                        );
                    }
                    let mut out = Vec::new();
                    for s in m.get_ref() {
                        let up = s.to_ascii_uppercase();
                        let method = Method::from_bytes(up.as_bytes())
                            .map_err(|_| self.err(m.span(), format!("route `{name}`: `{s}` is not an HTTP method")))?;
                        out.push(method);
                    }
                    Some(out)
                }
            };
            let header = match &r.header {
                None => None,
                Some(h) => Some(parse_header_match(h.get_ref()).ok_or_else(|| {
                    self.err(h.span(), format!("route `{name}`: header must be `NAME` or `NAME: VALUE`"))
                })?),
            };
            let upstream = upstream_index(&r.upstream)?;
            let stage = match &r.stage {
                None => Stage::Monolith,
                Some(s) => Stage::parse(s.get_ref()).ok_or_else(|| {
                    self.err(
                        s.span(),
                        format!(
                            "route `{name}`: stage `{}` is not one of monolith, shadow, canary, service",
                            s.get_ref()
                        ),
                    )
                })?,
            };
            let percent = match &r.percent {
                None => Percent::default(),
                Some(p) => Percent::from_percent(*p.get_ref())
                    .ok_or_else(|| self.err(p.span(), format!("route `{name}`: percent must be between 0 and 100")))?,
            };
            let cohort = match &r.cohort {
                None => Cohort::Ip,
                Some(c) => Cohort::parse(c.get_ref()).ok_or_else(|| {
                    self.err(c.span(), format!("route `{name}`: cohort must be header:NAME, cookie:NAME or ip"))
                })?,
            };
            let shadow_ignore = match &r.shadow_ignore {
                None => Vec::new(),
                Some(list) => {
                    if let Some(bad) = list.get_ref().iter().find(|p| !crate::policy::diff::valid_pattern(p)) {
                        return Err(self.err(
                            list.span(),
                            format!(
                                "route `{name}`: shadow_ignore entry `{bad}` must be a JSON pointer starting with /"
                            ),
                        ));
                    }
                    list.get_ref().clone()
                }
            };
            let shadow_max_mismatch = match &r.shadow_max_mismatch {
                None => DEFAULT_SHADOW_MAX_MISMATCH,
                Some(m) if (0.0..=1.0).contains(m.get_ref()) => *m.get_ref(),
                Some(m) => {
                    return Err(
                        self.err(m.span(), format!("route `{name}`: shadow_max_mismatch must be between 0 and 1"))
                    );
                }
            };
            let shadow_min_compared = match &r.shadow_min_compared {
                None => DEFAULT_SHADOW_MIN_COMPARED,
                Some(n) => u64::try_from(*n.get_ref()).map_err(|_| {
                    self.err(n.span(), format!("route `{name}`: shadow_min_compared must not be negative"))
                })?,
            };
            let shadow_headers = match &r.shadow_headers {
                None => DEFAULT_SHADOW_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect(),
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|h| {
                        HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                            self.err(
                                list.span(),
                                format!("route `{name}`: shadow_headers entry `{h}` is not a header name"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let shadow_max_per_second = match &r.shadow_max_per_second {
                None => DEFAULT_SHADOW_MAX_PER_SECOND,
                Some(n) => u64::try_from(*n.get_ref()).map_err(|_| {
                    self.err(n.span(), format!("route `{name}`: shadow_max_per_second must not be negative"))
                })?,
            };
            let rollout = r.rollout.as_ref().map(|p| self.rollout(name, p)).transpose()?;
            let fallback_on_404 = match &r.fallback_on_404 {
                Some(f) if *f.get_ref() && !r.fallback.unwrap_or(false) => {
                    return Err(self.err(
                        f.span(),
                        format!("route `{name}`: fallback_on_404 needs fallback = true (it is a kind of fallback)"),
                    ));
                }
                Some(f) => *f.get_ref(),
                None => false,
            };
            let rate_limit = match &r.rate_limit {
                None => None,
                Some(rl) => {
                    let raw = rl.get_ref();
                    let per_second = *raw.per_second.get_ref();
                    if !(1..=10_000_000).contains(&per_second) {
                        return Err(self.err(
                            raw.per_second.span(),
                            format!("route `{name}`: rate_limit.per_second must be 1 to 10000000"),
                        ));
                    }
                    let key = match &raw.key {
                        None => Cohort::Ip,
                        Some(k) => Cohort::parse(k.get_ref()).ok_or_else(|| {
                            self.err(
                                k.span(),
                                format!("route `{name}`: rate_limit.key must be header:NAME, cookie:NAME or ip"),
                            )
                        })?,
                    };
                    Some(RateLimit { per_second: per_second as u64, key })
                }
            };
            routes.push(RouteSpec {
                name: name.clone(),
                path,
                methods,
                header,
                upstream,
                stage,
                percent,
                cohort,
                fallback: r.fallback.unwrap_or(false),
                shadow_writes: r.shadow_writes.unwrap_or(false),
                shadow_ignore,
                shadow_max_mismatch,
                shadow_min_compared,
                shadow_headers,
                shadow_max_per_second,
                rollout,
                fallback_on_404,
                rate_limit,
                line,
            });
        }
        let mut trusted_proxies = Vec::new();
        for t in raw.security.trusted_proxies.as_ref().map(|v| v.get_ref().as_slice()).unwrap_or_default() {
            let net =
                IpNet::parse(t.get_ref()).map_err(|e| self.err(t.span(), format!("security.trusted_proxies: {e}")))?;
            trusted_proxies.push(net);
        }
        let idle_ms = self.positive(
            &raw.security.idle_timeout_ms,
            "security.idle_timeout_ms",
            DEFAULT_IDLE_SECS as i64 * 1000,
            86_400_000,
        )?;
        // Pingora counts keep-alive in whole seconds: round up, at least 1.
        let idle_timeout = Duration::from_secs((idle_ms as u64).div_ceil(1000).max(1));
        let header_ms = self.positive(
            &raw.security.header_timeout_ms,
            "security.header_timeout_ms",
            DEFAULT_HEADER_TIMEOUT_MS as i64,
            3_600_000,
        )?;
        let max_connections_per_client = self.positive(
            &raw.security.max_connections_per_client,
            "security.max_connections_per_client",
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT as i64,
            1_000_000,
        )? as usize;
        let force_token_env = self.force_token_env(&raw.security.force_token_env, raw.proxy.force_header.as_ref())?;
        let security = Security {
            trusted_proxies,
            idle_timeout,
            header_timeout: Duration::from_millis(header_ms as u64),
            max_connections_per_client,
            force_token_env,
        };
        let store = match &raw.state.store {
            Some(s) if s.get_ref().starts_with("postgres://") || s.get_ref().starts_with("postgresql://") => {
                Some(s.get_ref().clone())
            }
            Some(s) => {
                return Err(self.err(
                    s.span(),
                    "state.store must be a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE); leave it out to keep \
                     the state in this file",
                ));
            }
            None => None,
        };
        Ok(Config {
            listen,
            server,
            proxy,
            upstreams,
            default_upstream,
            routes,
            security,
            state: StateOptions { store },
        })
    }
}

impl Validator<'_> {
    /// Where the force token comes from: the environment variable `force_token_env` names
    /// (read when the state is built, see `state::Secrets`). Forcing a route's target is off
    /// without one: it lets a request reach a service whose route is still on the monolith.
    fn force_token_env(
        &self,
        env: &Option<Spanned<String>>,
        force_header: Option<&Spanned<bool>>,
    ) -> Result<Option<SecretRef>, ConfigError> {
        if let Some(f) = force_header.filter(|f| *f.get_ref()) {
            return Err(self.err(
                f.span(),
                "proxy.force_header = true is no longer enough: forcing needs a secret. Set \
                 [security] force_token_env = \"FICUS_FORCE_TOKEN\" (the variable holding it) and \
                 remove force_header",
            ));
        }
        let Some(env) = env else { return Ok(None) };
        let name = env.get_ref();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(self.err(env.span(), "security.force_token_env must name an environment variable"));
        }
        // force_header = false keeps forcing off whatever the token.
        Ok(force_header.is_none().then(|| SecretRef { env: name.clone(), line: self.line(env.span().start) }))
    }

    fn rollout(&self, name: &str, spanned: &Spanned<RawRollout>) -> Result<RolloutPolicy, ConfigError> {
        let p = spanned.get_ref();
        let steps_err = |reason: &str| self.err(p.steps.span(), format!("route `{name}`: rollout.steps {reason}"));
        if p.steps.get_ref().is_empty() {
            return Err(steps_err("must list at least one percent, e.g. [5, 25, 50, 100]"));
        }
        let mut steps: Vec<Percent> = Vec::new();
        for &s in p.steps.get_ref() {
            let percent = Percent::from_percent(s)
                .filter(|p| p.basis_points() > 0)
                .ok_or_else(|| steps_err(&format!("holds {s}: each step must be above 0 and at most 100")))?;
            if steps.last().is_some_and(|last| *last >= percent) {
                return Err(steps_err("must be strictly ascending"));
            }
            steps.push(percent);
        }
        if steps[0].basis_points() == 10_000 {
            return Err(steps_err("must start below 100: the monolith's answers at the lower steps are the baseline"));
        }
        let fraction = |v: &Option<Spanned<f64>>, what: &str, default: f64| match v {
            None => Ok(default),
            Some(x) if (0.0..=1.0).contains(x.get_ref()) => Ok(*x.get_ref()),
            Some(x) => Err(self.err(x.span(), format!("route `{name}`: rollout.{what} must be between 0 and 1"))),
        };
        let non_negative = |v: &Option<Spanned<f64>>, what: &str, default: f64, max: f64| match v {
            None => Ok(default),
            Some(x) if (0.0..=max).contains(x.get_ref()) => Ok(*x.get_ref()),
            Some(x) => Err(self.err(x.span(), format!("route `{name}`: rollout.{what} must be between 0 and {max}"))),
        };
        let max_p99_ratio = match &p.max_p99_ratio {
            None => 1.5,
            Some(x) if (1.0..=100.0).contains(x.get_ref()) => *x.get_ref(),
            Some(x) => {
                return Err(
                    self.err(x.span(), format!("route `{name}`: rollout.max_p99_ratio must be between 1 and 100"))
                );
            }
        };
        Ok(RolloutPolicy {
            steps,
            dwell: Duration::from_secs_f64(non_negative(&p.dwell_seconds, "dwell_seconds", 60.0, 86_400.0)?),
            min_requests: self.positive(&p.min_requests, "rollout.min_requests", 100, 1_000_000_000)? as u64,
            max_error_rate_increase: fraction(&p.max_error_rate_increase, "max_error_rate_increase", 0.01)?,
            max_p99_ratio,
            p99_slack: Duration::from_secs_f64(non_negative(&p.p99_slack_ms, "p99_slack_ms", 5.0, 60_000.0)? / 1000.0),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_header_match(s: &str) -> Option<HeaderMatch> {
    let (name, value) = match s.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (s.trim(), None),
    };
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let value = value.map(HeaderValue::from_str).transpose().ok()?;
    Some(HeaderMatch { name, value })
}

/// The config file's path made absolute, so reloads do not depend on the working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"version = 1

[listen]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.monolith]
addrs = ["127.0.0.1:3000"]

[upstreams.catalog]
addrs = ["127.0.0.1:3101", "127.0.0.1:3102"]
health = "/healthz"

[default]
upstream = "monolith"

[[routes]]
name = "catalog-read"
path = "/api/products/{*rest}"
methods = ["GET"]
upstream = "catalog"
stage = "canary"
percent = 25
cohort = "header:x-user-id"
fallback = true
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("ficus.toml"))
    }

    #[test]
    fn tls_listener_and_tls_upstreams_are_read_and_checked() {
        let text = GOOD
            .replace("admin = \"127.0.0.1:0\"\n", "admin = \"127.0.0.1:0\"\nhttps = \"0.0.0.0:8443\"\ntls_cert = \"certs/c.pem\"\ntls_key = \"/etc/k.pem\"\n")
            .replace(
                "addrs = [\"127.0.0.1:3101\", \"127.0.0.1:3102\"]",
                "addrs = [\"https://catalog.internal:443\", \"https://[::1]:8443\"]\nca_file = \"ca.pem\"",
            );
        let c = Config::parse(&text, Path::new("/srv/ficus/ficus.toml")).unwrap();
        let https = c.listen.https.as_ref().unwrap();
        assert_eq!(https.addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(
            (https.cert.as_path(), https.key.as_path()),
            (Path::new("/srv/ficus/certs/c.pem"), Path::new("/etc/k.pem"))
        );
        let catalog = &c.upstreams[c.upstream_index("catalog").unwrap()];
        let addrs: Vec<String> = catalog.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["catalog.internal:443", "[::1]:8443"]);
        let tls = catalog.tls.as_ref().unwrap();
        assert_eq!(
            (tls.sni.as_deref(), tls.ca_file.as_deref(), tls.h2),
            (None, Some(Path::new("/srv/ficus/ca.pem")), true)
        );
        assert!(c.upstreams[c.upstream_index("monolith").unwrap()].tls.is_none());

        let catalog = "addrs = [\"127.0.0.1:3101\", \"127.0.0.1:3102\"]";
        for (from, to, why) in [
            (
                "admin = \"127.0.0.1:0\"\n",
                "admin = \"127.0.0.1:0\"\nhttps = \"0.0.0.0:8443\"\n",
                "needs listen.tls_cert",
            ),
            (catalog, "addrs = [\"https://a:1\", \"http://b:2\"]", "mixes https://"),
            (catalog, "addrs = [\"ftp://a:1\"]", "the scheme may only be"),
            (catalog, "addrs = [\"https://a:1\"]\ntls = false", "tls = false"),
            (catalog, "addrs = [\"a b:1\"]", "is not HOST:PORT"),
            (catalog, "addrs = [\"a:1\"]\nsni = \"x\"", "need tls = true"),
            (catalog, "addrs = [\"a:1\"]\ntls = true\nsni = \"not a name\"", "is not a DNS name"),
        ] {
            let err = parse(&GOOD.replace(from, to)).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        // `tls = true` on plain addresses, with an SNI for IP addresses.
        let c = parse(
            &GOOD.replace(catalog, "addrs = [\"10.0.0.1:443\"]\ntls = true\nsni = \"Catalog.Internal\"\nh2 = false"),
        )
        .unwrap();
        let tls = c.upstreams[c.upstream_index("catalog").unwrap()].tls.clone().unwrap();
        assert_eq!((tls.sni.as_deref(), tls.h2), (Some("catalog.internal"), false));
    }

    #[test]
    fn connection_limits_and_the_force_token_variable_are_read() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.security, Security::default());
        let text = GOOD.replace(
            "[default]",
            "[security]\nheader_timeout_ms = 2500\nmax_connections_per_client = 7\nforce_token_env = \"MY_TOKEN\"\n\n[default]",
        );
        let s = parse(&text).unwrap().security;
        assert_eq!((s.header_timeout, s.max_connections_per_client), (Duration::from_millis(2500), 7));
        let line = text.lines().position(|l| l.starts_with("force_token_env")).unwrap() + 1;
        assert_eq!(s.force_token_env, Some(SecretRef { env: "MY_TOKEN".into(), line }));
        let bad = GOOD.replace("[default]", "[security]\nforce_token_env = \"NOT A NAME\"\n\n[default]");
        assert!(parse(&bad).unwrap_err().to_string().contains("must name an environment variable"));
        let off = GOOD
            .replace("[default]", "[proxy]\nforce_header = false\n\n[security]\nforce_token_env = \"T\"\n\n[default]");
        assert_eq!(parse(&off).unwrap().security.force_token_env, None, "force_header = false keeps forcing off");
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[c.default_upstream].name, "monolith");
        let r = &c.routes[0];
        assert_eq!(r.stage, Stage::Canary);
        assert_eq!(r.percent.basis_points(), 2500);
        assert_eq!(r.cohort, Cohort::Header(HeaderName::from_static("x-user-id")));
        assert_eq!(r.line, 17);
        assert!(r.fallback);
    }

    #[test]
    fn trusted_proxies_are_address_blocks() {
        let c = parse(&format!("{GOOD}\n[security]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.168.1.7\"]\n"))
            .unwrap();
        let t = &c.security.trusted_proxies;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(t[0].contains(ip("10.200.3.4")) && !t[0].contains(ip("11.0.0.1")));
        assert!(t[0].contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 counts as IPv4");
        assert!(t[1].contains(ip("::1")) && !t[1].contains(ip("::2")) && !t[1].contains(ip("127.0.0.1")));
        assert!(t[2].contains(ip("192.168.1.7")) && !t[2].contains(ip("192.168.1.8")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(IpNet::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        for (bad, why) in [("10.0.0.0/33", "prefix must be a number from 0 to 32"), ("ten", "not an address")] {
            let err = parse(&format!("{GOOD}\n[security]\ntrusted_proxies = [\"{bad}\"]\n")).expect_err(bad);
            assert!(err.reason.contains(why) && err.reason.starts_with("security.trusted_proxies"), "{err}");
            assert_eq!(err.line, 28, "{err}");
        }
        assert!(parse(GOOD).unwrap().security.trusted_proxies.is_empty(), "nobody is trusted by default");
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("bad stage", "stage = \"canary\"", 22, "stage `sideways`"),
            ("bad percent", "percent = 25", 23, "percent must be between 0 and 100"),
            ("unknown upstream", "upstream = \"catalog\"\nstage", 21, "unknown upstream `nope`"),
            ("bad cohort", "cohort = \"header:x-user-id\"", 24, "cohort must be"),
        ];
        let replacements =
            ["stage = \"sideways\"", "percent = 250", "upstream = \"nope\"\nstage", "cohort = \"elsewhere\""];
        for ((what, from, line, reason), to) in cases.iter().zip(replacements) {
            let text = GOOD.replace(from, to);
            let err = parse(&text).expect_err(what);
            assert_eq!(err.line, *line, "{what}: {err}");
            assert!(err.reason.contains(reason), "{what}: {err}");
            assert!(err.to_string().starts_with(&format!("ficus.toml:{line}: ")), "{err}");
        }
    }

    #[test]
    fn shadow_options_are_parsed_and_checked() {
        let c = parse(&GOOD.replace(
            "cohort = \"header:x-user-id\"",
            "cohort = \"header:x-user-id\"\nshadow_writes = true\nshadow_ignore = [\"/created_at\", \"/items/*/id\"]",
        ))
        .unwrap();
        assert!(c.routes[0].shadow_writes);
        assert_eq!(c.routes[0].shadow_ignore, ["/created_at", "/items/*/id"]);
        assert!(!parse(GOOD).unwrap().routes[0].shadow_writes);
        assert_eq!(parse(GOOD).unwrap().routes[0].shadow_max_mismatch, DEFAULT_SHADOW_MAX_MISMATCH);
        assert_eq!(parse(GOOD).unwrap().routes[0].shadow_min_compared, DEFAULT_SHADOW_MIN_COMPARED);
        let err = parse(
            &GOOD.replace("cohort = \"header:x-user-id\"", "cohort = \"header:x-user-id\"\nshadow_max_mismatch = 2.0"),
        )
        .unwrap_err();
        assert!(err.reason.contains("shadow_max_mismatch must be between 0 and 1"), "{err}");
        let err = parse(
            &GOOD.replace("cohort = \"header:x-user-id\"", "cohort = \"header:x-user-id\"\nshadow_ignore = [\"name\"]"),
        )
        .unwrap_err();
        assert_eq!(err.line, 25, "{err}");
        assert!(err.reason.contains("shadow_ignore entry `name`"), "{err}");
    }

    #[test]
    fn rollout_policies_are_checked() {
        let with = |policy: &str| parse(&format!("{GOOD}\n[routes.rollout]\n{policy}\n"));
        let p = with("steps = [5, 50, 100]\ndwell_seconds = 0.5").unwrap().routes[0].rollout.clone().unwrap();
        assert_eq!(p.steps.iter().map(|s| s.basis_points()).collect::<Vec<_>>(), [500, 5000, 10_000]);
        assert_eq!((p.dwell, p.min_requests, p.max_p99_ratio), (Duration::from_millis(500), 100, 1.5));
        for (policy, reason) in [
            ("steps = []", "at least one percent"),
            ("steps = [50, 25]", "strictly ascending"),
            ("steps = [0, 50]", "above 0"),
            ("steps = [100]", "must start below 100"),
            ("steps = [5]\nmax_p99_ratio = 0.5", "max_p99_ratio must be between 1 and 100"),
        ] {
            let err = with(policy).unwrap_err();
            assert!(err.reason.contains(reason), "{policy}: {err}");
            assert!(err.line >= 27, "{policy}: {err}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = format!("{GOOD}\n[[routes]]\nname = 1\nstage = [\n");
        let err = parse(&text).unwrap_err();
        assert!(err.line >= 28, "{err}");
    }

    #[test]
    fn version_is_required() {
        let err = parse(&GOOD.replace("version = 1", "")).unwrap_err();
        assert!(err.reason.contains("version"), "{err}");
        let err = parse(&GOOD.replace("version = 1", "version = 2")).unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn duplicate_route_names_are_refused() {
        let dup = format!("{GOOD}\n[[routes]]\nname = \"catalog-read\"\npath = \"/x\"\nupstream = \"catalog\"\n");
        let err = parse(&dup).unwrap_err();
        assert!(err.reason.contains("used twice"), "{err}");
        assert_eq!(err.line, 28);
    }

    #[test]
    fn path_templates() {
        assert!(PathTemplate::parse("/api/{id}/x/{*rest}").is_ok());
        assert!(PathTemplate::parse("/").is_ok());
        for bad in ["api", "/a/{*rest}/b", "/a/{}", "/a/x{id}", "/a//b", "/a/../b", "/a/%70"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_is_in_basis_points() {
        assert_eq!(Percent::from_percent(12.5).unwrap().basis_points(), 1250);
        assert_eq!(Percent::from_percent(100.0).unwrap().basis_points(), 10_000);
        assert!(Percent::from_percent(-1.0).is_none());
        assert!(Percent::from_percent(100.5).is_none());
        assert!(Percent::from_percent(f64::NAN).is_none());
    }
}
