//! Starting and stopping a proxy: the seam that lets a test run the real thing in-process on
//! port 0, and `ficus proxy` run it until a signal.
//!
//! Pingora's `Server::run` blocks its thread and binds its own listeners, so the seam is:
//! - the listeners are bound here first (port 0 allowed, errors reported before anything starts)
//!   and handed to Pingora through its listen-fd table — the same table its graceful upgrade
//!   uses, so with `--upgrade` the sockets inherited from the old process are taken instead;
//! - Pingora runs in its own thread with a shutdown watch that listens to Unix signals (for the
//!   command) and to a channel (for tests), so `RunningProxy::stop` ends it from the outside;
//! - the admin API, the config-file watcher, SIGHUP, the rollout controller and the health checks
//!   run on a small tokio runtime in a second thread.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::Service as ServiceTrait;
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::conn::Guard;
use crate::error::ProxyError;
use crate::service::FicusProxy;
use crate::state::{Environment, Resolver, Secrets, Shared};
use crate::tls::CertStore;
use pingora::listeners::tls::TlsSettings;

/// How to start a proxy.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The config file.
    pub config: PathBuf,
    /// The admin API's bearer token (`FICUS_ADMIN_TOKEN`); `None` leaves the API open.
    pub admin_token: Option<String>,
    /// Take the listening sockets over from a running proxy (Pingora's graceful upgrade).
    pub upgrade: bool,
    /// Handle SIGTERM (drain), SIGINT (fast), SIGQUIT (hand sockets to an upgrading process) and
    /// SIGHUP (reload). Off for in-process tests.
    pub handle_signals: bool,
    /// Where the secrets the config names by environment variable come from (default: the
    /// environment).
    pub secrets: Secrets,
    /// How upstream names resolve (default: the system's resolver).
    pub resolver: Resolver,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, let in-flight requests finish for the grace period, then exit.
    Graceful,
    /// Exit now.
    Fast,
    /// Hand the listening sockets to a process started with `upgrade` (over the config's
    /// `upgrade_sock`), then stop like `Graceful`: what SIGQUIT does.
    Upgrade,
}

/// A running proxy: its bound addresses and the handles to stop it.
pub struct RunningProxy {
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<Option<Stop>>,
    pingora: Option<JoinHandle<()>>,
    admin_stop: watch::Sender<bool>,
    admin: Option<JoinHandle<()>>,
}

/// Pingora's shutdown watch: a channel, fed by [`RunningProxy::stop`] and by the Unix signals
/// (which the admin runtime listens to from before the proxy says it is listening, so that a
/// signal sent at once is never lost nor fatal).
struct ShutdownSource {
    rx: watch::Receiver<Option<Stop>>,
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownSource {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.rx.clone();
        loop {
            if let Some(stop) = *rx.borrow_and_update() {
                return match stop {
                    Stop::Graceful => ShutdownSignal::GracefulTerminate,
                    Stop::Fast => ShutdownSignal::FastShutdown,
                    Stop::Upgrade => ShutdownSignal::GracefulUpgrade,
                };
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The signals `ficus proxy` handles, registered with the runtime that listens to them.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Wraps Pingora's proxy service to put our pre-bound listeners into its listen-fd table.
struct PreBound<S> {
    inner: S,
    listeners: Vec<(String, std::net::TcpListener)>,
}

#[async_trait]
impl<S: ServiceTrait> ServiceTrait for PreBound<S> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        if let Some(fds) = &fds {
            let mut table = fds.lock();
            for (addr, listener) in self.listeners.drain(..) {
                if table.get(&addr).is_none() {
                    table.add(addr, listener.into_raw_fd());
                }
            }
        }
        self.inner.start_service(fds, shutdown, listeners_per_fd).await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// Binds a listener for Pingora. TCP_NODELAY is set on the listening socket so that every
/// accepted connection inherits it: Pingora writes a response head and body separately, and with
/// Nagle on, a client's delayed ACK would add 40 ms to every small response.
fn bind_std(addr: SocketAddr) -> Result<std::net::TcpListener, ProxyError> {
    use socket2::{Domain, Socket, Type};
    let bind_err = |source| ProxyError::Bind { addr: addr.to_string(), source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.set_tcp_nodelay(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(65535).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
}

impl RunningProxy {
    /// Loads the config, binds the listeners and starts serving. Returns once both listeners are
    /// bound (requests may be sent at once).
    pub fn start(options: StartOptions) -> Result<RunningProxy, ProxyError> {
        if options.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ProxyError::Server(
                "the admin token is empty: set FICUS_ADMIN_TOKEN to a secret, or unset it to run the admin API without authentication"
                    .to_owned(),
            ));
        }
        let env = Environment { secrets: options.secrets.clone(), resolver: options.resolver.clone() };
        let shared = Arc::new(Shared::load_in(&options.config, env)?);
        shared.follow_store();
        let config = shared.current().config.clone();
        crate::state::log_shadow_routes(&config);

        // The HTTP listener: bound here unless it is inherited from the process being upgraded.
        let (http_addr, prebound) = if options.upgrade {
            (config.listen.http, Vec::new())
        } else {
            let l = bind_std(config.listen.http)?;
            let addr =
                l.local_addr().map_err(|source| ProxyError::Bind { addr: config.listen.http.to_string(), source })?;
            (addr, vec![(addr.to_string(), l)])
        };

        let conf = ServerConf {
            threads: config
                .server
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            work_stealing: config.server.work_stealing,
            grace_period_seconds: Some(config.server.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
            upgrade_sock: config.server.upgrade_sock.clone(),
            max_retries: 4,
            ..ServerConf::default()
        };
        let opt = Opt { upgrade: options.upgrade, ..Opt::default() };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        // With --upgrade this receives the old process's listening sockets over `upgrade_sock`.
        server.bootstrap();
        // Pingora's HTTP proxy, run behind the connection guard (per-address cap, head deadline).
        let http = pingora::proxy::http_proxy(&server.configuration, FicusProxy::new(shared.clone()));
        let mut proxy = Service::new("ficus proxy".to_owned(), Guard::new(http, shared.clone()));
        proxy.add_tcp(&http_addr.to_string());
        // The TLS listener, with the certificate store as its resolver (reloaded below).
        let mut prebound = prebound;
        let (https_addr, certs) = match &config.listen.https {
            None => (None, None),
            Some(h) => {
                let certs = Arc::new(
                    CertStore::load(&h.cert, &h.key)
                        .map_err(|e| ProxyError::Server(format!("listen.tls_cert / listen.tls_key: {e}")))?,
                );
                let addr = if options.upgrade {
                    h.addr
                } else {
                    let l = bind_std(h.addr)?;
                    let addr =
                        l.local_addr().map_err(|source| ProxyError::Bind { addr: h.addr.to_string(), source })?;
                    prebound.push((addr.to_string(), l));
                    addr
                };
                let mut settings = TlsSettings::intermediate("", "")
                    .map_err(|e| ProxyError::Server(format!("cannot set up TLS: {e}")))?;
                settings.set_cert_resolver(certs.clone());
                settings.enable_h2();
                proxy.add_tls_with_settings(&addr.to_string(), None, settings);
                (Some(addr), Some(certs))
            }
        };
        server.add_service(PreBound { inner: proxy, listeners: prebound });

        // The admin runtime (API, file watcher, SIGHUP, health checks) in its own thread, which
        // binds the admin listener and reports the outcome before start() goes on.
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let admin_shared = shared.clone();
        let token = options.admin_token.clone();
        let handle_signals = options.handle_signals;
        let admin_listen = config.listen.admin;
        let (stop_tx, stop_rx) = watch::channel(None);
        let signal_stop = stop_tx.clone();
        let admin = std::thread::Builder::new()
            .name("ficus-admin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(ProxyError::Server(format!("cannot start the admin runtime: {e}"))));
                        return;
                    }
                };
                let listener = match admin_listen.map(|a| rt.block_on(bind_admin(a))).transpose() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let signals = if handle_signals {
                    match rt.block_on(async { Signals::register() }) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            let _ = bound_tx.send(Err(ProxyError::Server(format!("cannot handle signals: {e}"))));
                            return;
                        }
                    }
                } else {
                    None
                };
                let _ = bound_tx.send(Ok(listener.as_ref().and_then(|l| l.local_addr().ok())));
                rt.block_on(admin_main(admin_shared, listener, token, signals, signal_stop, admin_stop_rx, certs));
            })
            .map_err(|e| ProxyError::Server(format!("cannot start the admin thread: {e}")))?;
        let admin_addr =
            bound_rx.recv().map_err(|_| ProxyError::Server("the admin thread died while starting".to_owned()))??;
        if let Some(addr) = admin_addr
            && options.admin_token.is_none()
        {
            if addr.ip().is_loopback() {
                tracing::info!("admin API on {addr} without a token (FICUS_ADMIN_TOKEN is not set)");
            } else {
                tracing::warn!(
                    "ADMIN API ON {addr} IS OPEN TO ANYONE WHO CAN REACH IT: set FICUS_ADMIN_TOKEN, or listen on 127.0.0.1"
                );
            }
        }

        let signals = ShutdownSource { rx: stop_rx };
        let pingora = std::thread::Builder::new()
            .name("ficus-pingora".into())
            .spawn(move || server.run(RunArgs { shutdown_signal: Box::new(signals) }))
            .map_err(|e| ProxyError::Server(format!("cannot start the proxy thread: {e}")))?;

        let admin_shown = admin_addr.map_or_else(|| "none".to_owned(), |a| a.to_string());
        let https_shown = https_addr.map_or_else(|| "none".to_owned(), |a| a.to_string());
        tracing::info!(http = %http_addr, https = %https_shown, admin = %admin_shown, config = %shared.config_path().display(), "ficus proxy listening");
        Ok(RunningProxy {
            http_addr,
            https_addr,
            admin_addr,
            shared,
            stop_tx,
            pingora: Some(pingora),
            admin_stop,
            admin: Some(admin),
        })
    }

    /// The bound proxy address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound TLS address, if the config has one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The bound admin address, if the config has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The live state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Blocks until the proxy has stopped (after a signal, or [`RunningProxy::stop`] elsewhere).
    pub fn wait(mut self) {
        self.join();
    }

    /// Stops the proxy and waits for it.
    pub fn stop(mut self, how: Stop) {
        let _ = self.stop_tx.send(Some(how));
        self.join();
    }

    fn join(&mut self) {
        if let Some(p) = self.pingora.take() {
            let _ = p.join();
        }
        let _ = self.admin_stop.send(true);
        if let Some(a) = self.admin.take() {
            let _ = a.join();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if self.pingora.is_some() {
            let _ = self.stop_tx.send(Some(Stop::Fast));
            self.join();
        }
    }
}

/// Binds the admin listener. SO_REUSEPORT lets a process started with `--upgrade` bind it while
/// the old process still holds it; a second proxy started by mistake on the same ports still
/// fails, on the proxy port, which is bound first and without it.
async fn bind_admin(addr: SocketAddr) -> Result<tokio::net::TcpListener, ProxyError> {
    let bind_err = |source| ProxyError::Bind { addr: addr.to_string(), source };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.set_reuseport(true).map_err(bind_err)?;
    socket.bind(addr).map_err(bind_err)?;
    socket.listen(128).map_err(bind_err)
}

/// Runs `work` every `period` on a blocking thread (it may do file or network I/O), until the
/// task set is dropped.
fn every(tasks: &mut tokio::task::JoinSet<()>, period: Duration, work: impl Fn() + Send + Sync + 'static) {
    let work = Arc::new(work);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let w = work.clone();
            let _ = tokio::task::spawn_blocking(move || w()).await;
        }
    });
}

async fn admin_main(
    shared: Arc<Shared>,
    listener: Option<tokio::net::TcpListener>,
    token: Option<String>,
    signals: Option<Signals>,
    stop_proxy: watch::Sender<Option<Stop>>,
    mut stop: watch::Receiver<bool>,
    certs: Option<Arc<CertStore>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    // The listener's certificate: new files are served from the next handshake on.
    if let Some(certs) = certs {
        let metrics = shared.metrics.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let c = certs.clone();
                match tokio::task::spawn_blocking(move || c.reload_if_changed()).await {
                    Ok(Some(Ok(()))) => {
                        metrics.tls_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!("TLS certificate reloaded (its files changed)");
                    }
                    Ok(Some(Err(e))) => {
                        metrics.tls_reloads.with_label_values(&["error"]).inc();
                        tracing::error!("TLS certificate refused, keeping the last good one: {e}");
                    }
                    _ => {}
                }
            }
        });
    }
    if let Some(listener) = listener {
        let app = crate::admin::router(shared.clone(), token);
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("admin API stopped: {e}");
            }
        });
    }
    // The config file watcher: a content comparison every 500 ms (cheap for a small file, and
    // immune to coarse mtimes and editors that replace the file), unless `watch_file = false`.
    let watched = shared.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !watched.current().config.proxy.watch_file {
                continue;
            }
            let s = watched.clone();
            match tokio::task::spawn_blocking(move || s.reload_if_changed()).await {
                Ok(Some(Ok(_))) => tracing::info!("config reloaded (file changed)"),
                Ok(Some(Err(e))) => tracing::error!("config refused, keeping the last good one: {e}"),
                _ => {}
            }
        }
    });
    if let Some(Signals { mut term, mut int, mut quit, mut hup }) = signals {
        let s = shared.clone();
        tasks.spawn(async move {
            loop {
                let how = tokio::select! {
                    _ = term.recv() => Stop::Graceful,
                    _ = int.recv() => Stop::Fast,
                    _ = quit.recv() => Stop::Upgrade,
                    _ = hup.recv() => {
                        let s = s.clone();
                        match tokio::task::spawn_blocking(move || s.reload("SIGHUP")).await {
                            Ok(Ok(_)) => tracing::info!("config reloaded (SIGHUP)"),
                            Ok(Err(e)) => tracing::error!("config refused, keeping the last good one: {e}"),
                            Err(_) => {}
                        }
                        continue;
                    }
                };
                tracing::info!("{how:?} stop asked by a signal");
                let _ = stop_proxy.send(Some(how));
            }
        });
    }
    // With a shared store: this instance's shadow counts go to the fleet's totals every second.
    if shared.store_up().is_some() {
        let s = shared.clone();
        every(&mut tasks, Duration::from_secs(1), move || s.flush_shadow_totals());
    }
    // Upstream names resolved again on their period (each upstream's resolve_every_ms).
    let s = shared.clone();
    every(&mut tasks, Duration::from_millis(250), move || s.refresh_dns());
    // Progressive rollouts of the routes in canary that have a policy.
    tasks.spawn(crate::rollout::run(shared.clone()));
    // Active health checks of every upstream of the live config.
    let checked = shared.clone();
    tasks.spawn(async move {
        loop {
            let rt = checked.current();
            for pool in &rt.pools {
                pool.run_health_check().await;
                for (i, e) in pool.endpoints.iter().enumerate() {
                    let labels = [pool.name(), &e.addr.to_string()];
                    let healthy = pool.healthy(i);
                    checked.metrics.upstream_healthy.with_label_values(&labels).set(i64::from(healthy));
                    checked.metrics.breaker_open.with_label_values(&labels).set(i64::from(e.breaker.is_open()));
                }
            }
            let interval = rt.config.proxy.health_interval;
            drop(rt);
            tokio::time::sleep(interval).await;
        }
    });
    let _ = stop.wait_for(|s| *s).await;
    // Let the admin server finish its graceful shutdown, then drop the endless tasks.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if let Some(r) = tasks.join_next().await {
            drop(r);
        }
    })
    .await;
    tasks.abort_all();
}
