//! Upstream pools: the addresses of one upstream, each with its health (pingora-load-balancing's
//! active checks, copied into an atomic after each pass), a passive circuit breaker, and a
//! ready-made `HttpPeer`, so that picking a peer on the request path costs a few atomic loads
//! and a clone: no lock, no hashing, no allocation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{ProxyOptions, UpstreamAddr, UpstreamSpec};
use crate::error::ConfigError;
use pingora::protocols::ALPN;

/// A passive circuit breaker for one address: after `threshold` consecutive failures it opens
/// for `cooldown`; then one request at a time is let through as a probe until one succeeds.
#[derive(Debug)]
pub struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker stays open.
    open_until_ms: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
    epoch: Instant,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            threshold,
            cooldown_ms: cooldown.as_millis() as u64,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a request may use this address now. When the cooldown has passed, the first caller
    /// becomes the probe and the breaker re-arms for another cooldown.
    pub fn allows(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) < self.threshold {
            return true;
        }
        let now = self.now_ms();
        let until = self.open_until_ms.load(Ordering::Relaxed);
        now >= until
            && self
                .open_until_ms
                .compare_exchange(until, now + self.cooldown_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the breaker is open (the address is out).
    pub fn is_open(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= self.threshold
    }

    /// Records a success: the breaker closes.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; the one that reaches the threshold opens the breaker.
    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.threshold {
            self.open_until_ms.store(self.now_ms() + self.cooldown_ms, Ordering::Relaxed);
        }
    }
}

/// One address of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    /// The address.
    pub addr: SocketAddr,
    /// Where a shadow call to it goes: `http://IP:PORT`, or `https://NAME:PORT` for TLS (the
    /// pool's shadow client resolves NAME to this address).
    pub shadow_base: Arc<str>,
    /// The peer template handed to Pingora.
    pub peer: HttpPeer,
    /// Its breaker.
    pub breaker: Breaker,
    /// The last active health check's verdict (healthy until a check says otherwise).
    healthy: AtomicBool,
}

/// One upstream: load balancer, health, breakers and precomputed peers.
pub struct UpstreamPool {
    /// The validated spec it was built from (pools are reused across reloads when it is unchanged).
    pub spec: UpstreamSpec,
    /// The `x-ficus-upstream` value.
    pub header_value: HeaderValue,
    /// The addresses, in config order.
    pub endpoints: Vec<Endpoint>,
    /// Runs the active health checks (its own selection is not used on the request path).
    lb: LoadBalancer<RoundRobin>,
    /// Round-robin position.
    next: AtomicUsize,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    /// For a TLS upstream, the client the shadow calls use (the same trust as the peers).
    pub shadow_client: Option<reqwest::Client>,
    /// The bulkhead: places for requests in flight (`max_concurrent`).
    pub bulkhead: Option<Arc<tokio::sync::Semaphore>>,
    /// What retries to it may spend.
    pub retry_budget: RetryBudget,
    /// When its names were last resolved.
    resolved_at: std::sync::Mutex<Instant>,
}

/// A retry budget, as Finagle keeps one: every request deposits a fifth of a retry, a retry
/// withdraws one, and ten retries a second are always allowed, so retries add at most 20 % to
/// the load (plus 10/s) and a failing upstream never gets a retry storm.
#[derive(Debug)]
pub struct RetryBudget {
    /// In thousandths of a retry.
    balance: AtomicI64,
    /// The last time the floor was topped up, in ms since `epoch`.
    topped_ms: AtomicU64,
    epoch: Instant,
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget { balance: AtomicI64::new(Self::FLOOR), topped_ms: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl RetryBudget {
    /// A request's deposit: a fifth of a retry.
    const DEPOSIT: i64 = 200;
    /// A retry's cost.
    const RETRY: i64 = 1000;
    /// Ten retries, always available each second.
    const FLOOR: i64 = 10 * Self::RETRY;
    /// The most that can be saved up.
    const CAP: i64 = 100 * Self::RETRY;

    /// A request was sent.
    pub fn deposit(&self) {
        if self.balance.load(Ordering::Relaxed) < Self::CAP {
            self.balance.fetch_add(Self::DEPOSIT, Ordering::Relaxed);
        }
    }

    /// Whether a retry may be made now (and spends it).
    pub fn withdraw(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.topped_ms.load(Ordering::Relaxed);
        if now >= last + 1000
            && self.topped_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // A new second: the floor is there again.
            let _ = self.balance.fetch_max(Self::FLOOR, Ordering::Relaxed);
        }
        if self.balance.fetch_sub(Self::RETRY, Ordering::Relaxed) >= Self::RETRY {
            true
        } else {
            self.balance.fetch_add(Self::RETRY, Ordering::Relaxed);
            false
        }
    }
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// Builds a pool for an upstream: resolves its names, loads its TLS trust. An error says
    /// what failed, at the upstream's line.
    pub fn new(
        spec: &UpstreamSpec,
        options: &ProxyOptions,
        resolver: &dyn Resolve,
    ) -> Result<UpstreamPool, ConfigError> {
        let err = |reason: String| ConfigError {
            file: std::path::PathBuf::new(),
            line: spec.line,
            reason: format!("upstream `{}`: {reason}", spec.name),
        };
        let resolved = resolve(&spec.addrs, resolver).map_err(err)?;
        Self::with_addresses(spec, options, resolved).map_err(err)
    }

    /// Builds a pool for an upstream at addresses already resolved.
    pub fn with_addresses(
        spec: &UpstreamSpec,
        options: &ProxyOptions,
        resolved: Vec<(SocketAddr, String)>,
    ) -> Result<UpstreamPool, String> {
        let err = |reason: String| reason;
        let trust = spec
            .tls
            .as_ref()
            .map(|t| crate::tls::UpstreamTrust::load(t.ca_file.as_deref()))
            .transpose()
            .map_err(err)?;
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(resolved.iter().map(|(a, _)| *a))
            .map_err(|e| err(format!("cannot set up its health checks: {e}")))?;
        // The name a TLS peer is verified against: `sni`, else the address's host.
        let server_name = |host: &str| spec.tls.as_ref().and_then(|t| t.sni.clone()).unwrap_or_else(|| host.to_owned());
        match &spec.health {
            Some(path) => {
                let host = server_name(resolved.first().map_or("localhost", |(_, h)| h.as_str()));
                let mut hc = HttpHealthCheck::new(&host, spec.tls.is_some());
                if let Ok(req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) {
                    let mut req = req;
                    let _ = req.append_header("Host", if spec.tls.is_some() { host.as_str() } else { "localhost" });
                    hc.req = req;
                }
                hc.peer_template.options.connection_timeout = Some(spec.connect_timeout.min(Duration::from_secs(1)));
                hc.peer_template.options.read_timeout = Some(Duration::from_secs(1));
                if let Some(trust) = &trust {
                    hc.peer_template.options.ca = trust.peer_ca.clone();
                }
                lb.set_health_check(Box::new(hc));
            }
            None => {
                let mut hc = TcpHealthCheck::new();
                hc.peer_template.options.connection_timeout = Some(spec.connect_timeout.min(Duration::from_secs(1)));
                lb.set_health_check(hc);
            }
        }
        let endpoints = resolved
            .iter()
            .map(|(addr, host)| {
                let (peer, shadow_base) = match (&spec.tls, &trust) {
                    (Some(tls), Some(trust)) => {
                        let name = server_name(host);
                        let mut peer = HttpPeer::new(*addr, true, name.clone());
                        peer.options.alpn = if tls.h2 { ALPN::H2H1 } else { ALPN::H1 };
                        peer.options.ca = trust.peer_ca.clone();
                        let shown = if name.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{name}]") } else { name };
                        (peer, Arc::from(format!("https://{shown}:{}", addr.port())))
                    }
                    _ => (HttpPeer::new(*addr, false, String::new()), Arc::from(format!("http://{addr}"))),
                };
                let mut peer = peer;
                peer.options.connection_timeout = Some(spec.connect_timeout);
                peer.options.read_timeout = Some(spec.read_timeout);
                peer.options.idle_timeout = Some(Duration::from_secs(60));
                Endpoint {
                    addr: *addr,
                    shadow_base,
                    peer,
                    breaker: Breaker::new(options.breaker_failures, options.breaker_cooldown),
                    healthy: AtomicBool::new(true),
                }
            })
            .collect::<Vec<_>>();
        let shadow_client = match (&spec.tls, &trust) {
            (Some(tls), Some(trust)) => Some(shadow_client(tls, trust, &resolved, &server_name).map_err(err)?),
            _ => None,
        };
        Ok(UpstreamPool {
            spec: spec.clone(),
            header_value: HeaderValue::from_str(&spec.name).expect("upstream names are validated"),
            endpoints,
            lb,
            next: AtomicUsize::new(0),
            breaker_failures: options.breaker_failures,
            breaker_cooldown: options.breaker_cooldown,
            shadow_client,
            bulkhead: spec.max_concurrent.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            retry_budget: RetryBudget::default(),
            resolved_at: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Time since its names were last resolved.
    pub fn since_resolved(&self) -> Duration {
        self.resolved_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Its names were just resolved (to what it has, or not at all).
    pub fn mark_resolved(&self) {
        *self.resolved_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Whether this pool can serve `spec` with `options` unchanged (so a reload keeps it).
    pub fn same_as(&self, spec: &UpstreamSpec, options: &ProxyOptions) -> bool {
        &self.spec == spec
            && self.breaker_failures == options.breaker_failures
            && self.breaker_cooldown == options.breaker_cooldown
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Picks an address that is healthy and whose breaker allows it (round robin).
    pub fn pick(&self) -> Option<usize> {
        let n = self.endpoints.len();
        let start = if n == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % n };
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let e = &self.endpoints[i];
            e.healthy.load(Ordering::Relaxed) && e.breaker.allows()
        })
    }

    /// Picks any address, healthy or not: the last resort when no fallback exists.
    pub fn pick_any(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()
    }

    /// Whether the active health check currently counts this address healthy.
    pub fn healthy(&self, endpoint: usize) -> bool {
        self.endpoints[endpoint].healthy.load(Ordering::Relaxed)
    }

    /// Runs one active health-check pass over the pool's addresses and publishes the verdicts.
    pub async fn run_health_check(&self) {
        let backends = self.lb.backends();
        backends.run_health_check(true).await;
        for e in &self.endpoints {
            let ready = pingora::lb::Backend::new(&e.addr.to_string()).is_ok_and(|b| backends.ready(&b));
            e.healthy.store(ready, Ordering::Relaxed);
        }
    }
}

/// How upstream names become addresses: the system's resolver, or (for tests and embedders)
/// another.
pub trait Resolve: Send + Sync {
    /// The addresses `host` has now, for `port`.
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`: /etc/hosts, then DNS).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// The addresses to connect to, each with the host it was given as: an IP address as it is, a
/// name looked up (every address it resolves to, in the resolver's order, without repeats).
pub fn resolve(addrs: &[UpstreamAddr], resolver: &dyn Resolve) -> Result<Vec<(SocketAddr, String)>, String> {
    let mut out: Vec<(SocketAddr, String)> = Vec::new();
    for a in addrs {
        let found: Vec<SocketAddr> = match a.ip() {
            Some(ip) => vec![SocketAddr::new(ip, a.port)],
            None => resolver.resolve(&a.host, a.port).map_err(|e| format!("cannot resolve `{}`: {e}", a.host))?,
        };
        if found.is_empty() {
            return Err(format!("`{}` resolves to no address", a.host));
        }
        for addr in found {
            if !out.iter().any(|(o, _)| *o == addr) {
                out.push((addr, a.host.clone()));
            }
        }
    }
    Ok(out)
}

/// The client of the shadow calls to a TLS upstream: its names pinned to the resolved addresses,
/// its certificate verified against the same roots as the proxy's own connections.
fn shadow_client(
    tls: &crate::config::UpstreamTls,
    trust: &crate::tls::UpstreamTrust,
    resolved: &[(SocketAddr, String)],
    server_name: &dyn Fn(&str) -> String,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .https_only(true)
        .pool_max_idle_per_host(crate::shadow::WORKERS);
    if !tls.h2 {
        builder = builder.http1_only();
    }
    for der in &trust.roots {
        if let Ok(cert) = reqwest::Certificate::from_der(der) {
            builder = builder.add_root_certificate(cert);
        }
    }
    for (addr, host) in resolved {
        let name = server_name(host);
        if name.parse::<std::net::IpAddr>().is_err() {
            builder = builder.resolve(&name, *addr);
        }
    }
    builder.build().map_err(|e| format!("cannot build the shadow calls' TLS client: {e}"))
}

/// The pools of a config, reusing the previous pools whose spec did not change, so that a reload
/// keeps health state, breakers and in-flight peers.
pub fn build_pools(
    specs: &[UpstreamSpec],
    options: &ProxyOptions,
    previous: &[Arc<UpstreamPool>],
    resolver: &dyn Resolve,
) -> Result<Vec<Arc<UpstreamPool>>, ConfigError> {
    specs
        .iter()
        .map(|spec| match previous.iter().find(|p| p.same_as(spec, options)) {
            Some(p) => Ok(p.clone()),
            None => UpstreamPool::new(spec, options, resolver).map(Arc::new),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_millis(0));
        assert!(b.allows());
        b.failure();
        b.failure();
        assert!(b.allows() && !b.is_open());
        b.failure();
        assert!(b.is_open());
        // Cooldown 0: a probe is allowed at once, the breaker re-arms.
        assert!(b.allows());
        b.success();
        assert!(!b.is_open() && b.allows());
    }

    fn pool(addrs: &[&str]) -> UpstreamPool {
        let spec = UpstreamSpec {
            name: "u".into(),
            addrs: addrs.iter().map(|a| UpstreamAddr::parse(a).unwrap()).collect(),
            health: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            tls: None,
            max_concurrent: None,
            queue_timeout: Duration::from_millis(100),
            retries: 0,
            resolve_every: Duration::from_secs(5),
            line: 1,
        };
        let options = ProxyOptions {
            upstream_header: true,
            create_ids: false,
            max_header_bytes: 1024,
            health_interval: Duration::from_secs(1),
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(3600),
            audit_log: None,
            watch_file: true,
        };
        UpstreamPool::new(&spec, &options, &SystemResolver).unwrap()
    }

    #[test]
    fn picks_go_round_robin_over_healthy_addresses_with_closed_breakers() {
        let p = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let picks: Vec<usize> = (0..6).filter_map(|_| p.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        p.endpoints[1].healthy.store(false, Ordering::Relaxed);
        p.endpoints[2].breaker.failure();
        p.endpoints[2].breaker.failure();
        assert!((0..6).all(|_| p.pick() == Some(0)));
        p.endpoints[0].healthy.store(false, Ordering::Relaxed);
        assert_eq!(p.pick(), None);
        assert!(p.pick_any() < 3);
    }

    #[test]
    fn the_retry_budget_allows_a_fifth_of_the_requests_beyond_its_floor() {
        let b = RetryBudget::default();
        // The floor: ten retries at once.
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // Then one retry per five requests.
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        assert!(!b.withdraw());
    }

    #[test]
    fn an_open_breaker_refuses_during_its_cooldown() {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.failure();
        assert!(!b.allows());
        assert!(!b.allows());
    }
}
