//! The benchmark's floor: the smallest useful Pingora proxy (one upstream, no routing, no
//! metrics), built with the same profile and settings as ficus.
//!
//! Run with `cargo run --release -p ficus-proxy --example bare -- LISTEN UPSTREAM THREADS`,
//! e.g. `... -- 127.0.0.1:8081 127.0.0.1:3000 1`, then `curl 127.0.0.1:8081/`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// The same allocator as the `ficus` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: bare LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: threads.parse().expect("THREADS is a number"),
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let addr: std::net::SocketAddr = upstream.parse().expect("UPSTREAM is IP:port");
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
    // The same peer timeouts as ficus's defaults (connect_timeout_ms, read_timeout_ms), unless
    // BARE_NO_TIMEOUTS is set: the floor should do the same I/O work per request.
    if std::env::var_os("BARE_NO_TIMEOUTS").is_none() {
        peer.options.connection_timeout = Some(std::time::Duration::from_secs(1));
        peer.options.read_timeout = Some(std::time::Duration::from_secs(30));
    }
    let mut service = http_proxy_service(&server.configuration, Bare { peer });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
