//! Start, drain and stop; several addresses per upstream with health checks and retries.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use ficus_proxy::Stop;

use crate::support::{TOKEN, TestProxy, Upstream, config_text, config_text_multi, served_by};

const ROUTES: &str =
    "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"service\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_in_flight_requests_finish() {
    let mono = Upstream::start("monolith").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr)], "")).await;
    let slow = tokio::spawn(p.client.get(format!("{}/slow", p.base)).send());
    // Wait until the request is at the upstream (bounded), then stop.
    let t0 = Instant::now();
    while mono.hits.load(std::sync::atomic::Ordering::Relaxed) < 2 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut p = p;
    let proxy = p.proxy.take().unwrap();
    let addr = proxy.http_addr();
    let stopping = tokio::task::spawn_blocking(move || proxy.stop(Stop::Graceful));
    let resp = slow.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(resp.status(), 200);
    stopping.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed after the stop");
}

fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_is_skipped_and_reported_unhealthy() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let dead = dead_addr();
    let ups = [("monolith", vec![mono.addr]), ("catalog", vec![dead, svc.addr])];
    let p = TestProxy::start(&config_text_multi(&ups, ROUTES)).await;
    for i in 0..40 {
        assert_eq!(served_by(&p.get(&format!("/api/products/{i}"), &[]).await), "catalog", "request {i}");
    }
    let gauge = format!("ficus_upstream_healthy{{addr=\"{dead}\",upstream=\"catalog\"}} 0");
    let t0 = Instant::now();
    loop {
        let (_, m) = p.admin(reqwest::Method::GET, "/metrics", None, Some(TOKEN)).await;
        if m.as_str().unwrap().contains(&gauge) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "health check never marked {dead} down: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_hands_the_socket_over_without_failing_a_request() {
    let mono = Upstream::start("monolith").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let base_text = config_text(&[("monolith", mono.addr)], "").replace(
        "grace_period_seconds = 2",
        &format!("grace_period_seconds = 1\nupgrade_sock = \"{}\"", sock.display()),
    );
    let config = dir.path().join("ficus.toml");
    std::fs::write(&config, &base_text).unwrap();
    let old = ficus_proxy::RunningProxy::start(ficus_proxy::StartOptions {
        config: config.clone(),
        admin_token: None,
        upgrade: false,
        handle_signals: false,
        ..Default::default()
    })
    .unwrap();
    let addr = old.http_addr();
    // The new process must name the address the old one listens on.
    std::fs::write(&config, base_text.replace("http = \"127.0.0.1:0\"", &format!("http = \"{addr}\""))).unwrap();
    // New connections only: an idle keep-alive connection that the draining proxy closes can race
    // with a request sent on it, which clients retry (an idempotent request on a closed idle
    // connection); that race is the client's, not the handover's, so this test leaves it out.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            // Bounded: stops on the flag or after 20,000 requests.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failed < 20_000 {
                match client.get(format!("http://{addr}/x")).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    other => {
                        eprintln!("failed during the upgrade: {other:?}");
                        failed += 1;
                    }
                }
            }
            (ok, failed)
        })
    };
    let new_config = config.clone();
    let new = std::thread::spawn(move || {
        ficus_proxy::RunningProxy::start(ficus_proxy::StartOptions {
            config: new_config,
            admin_token: None,
            upgrade: true,
            handle_signals: false,
            ..Default::default()
        })
    });
    // The new proxy waits on the upgrade socket; the old one hands its listener over and drains.
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::spawn_blocking(move || old.stop(Stop::Upgrade)).await.unwrap();
    let new = new.join().unwrap().expect("the new proxy starts with the inherited socket");
    assert_eq!(new.http_addr(), addr);
    let r = client.get(format!("http://{addr}/after")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the new proxy serves on the same address");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    // Pingora (0.9, `HttpProxy::handle_new_request`) drops a connection that is still waiting for
    // its request head when shutdown starts. A connection the old process accepted in the instant
    // before its shutdown, whose request it had not read yet, is closed: a window of microseconds,
    // hit about once in several thousand requests on a loaded 2-core machine. Everything else
    // must succeed.
    assert!(failed <= 2, "{failed} requests failed during the upgrade ({ok} ok)");
    assert!(ok > 10, "{ok}");
    new.stop(Stop::Fast);
}
