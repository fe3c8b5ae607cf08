//! The gateway's duties, with real upstreams on port 0: rate limits, bulkheads, DNS names that
//! change their answer, retries inside a budget, and falling back on a 404.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;

use crate::support::{TOKEN, TestProxy, Upstream, config_text, eventually};

/// An upstream whose answer to every request is chosen by `answer(n)` (n counts from 0).
async fn scripted(answer: impl Fn(usize) -> StatusCode + Send + Sync + 'static) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, answer) = (hits.clone(), Arc::new(answer));
    let app = axum::Router::new().fallback(move || {
        let (h, answer) = (h.clone(), answer.clone());
        async move {
            let n = h.fetch_add(1, Ordering::Relaxed);
            (answer(n), axum::Json(serde_json::json!({"upstream": "scripted", "n": n})))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

/// An upstream that accepts connections and never answers.
async fn hung() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

fn route(extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"cat\"\npath = \"/api/products/{{*rest}}\"\nupstream = \"catalog\"\nstage = \"service\"\n{extra}\n"
    )
}

async fn metric(p: &TestProxy, line_start: &str) -> u64 {
    let (_, m) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_within_ten_percent() {
    const LIMIT: f64 = 50.0;
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let text = config_text(
        &[("monolith", mono.addr), ("catalog", svc.addr)],
        &route("rate_limit = { per_second = 50, key = \"header:x-api-key\" }"),
    );
    let p = TestProxy::start(&text).await;
    let url = format!("{}/api/products/1", p.base);
    // One client floods for three seconds, eight requests at a time.
    let started = Instant::now();
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (client, url, admitted, refused) = (p.client.clone(), url.clone(), admitted.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(3) {
                let r = client.get(&url).header("x-api-key", "a").send().await.unwrap();
                if r.status() == 429 {
                    assert_eq!(r.headers()["retry-after"], "1");
                    refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_eq!(r.status(), 200);
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Another key is not held back meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.get("/api/products/2", &[("x-api-key", "b")]).await.0, 200);
    for f in flood {
        f.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let expected = LIMIT * elapsed;
    eprintln!(
        "rate limit: {admitted} admitted in {elapsed:.2} s (limit {LIMIT}/s: {expected:.0}), {} refused",
        refused.load(Ordering::Relaxed)
    );
    assert!((admitted - expected).abs() <= expected * 0.1, "{admitted} admitted, {expected:.0} expected");
    assert!(refused.load(Ordering::Relaxed) > 0);
    assert_eq!(metric(&p, "ficus_rate_limited_total{route=\"cat\"} ").await, refused.load(Ordering::Relaxed) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_service_does_not_starve_the_monoliths_routes() {
    let mono = Upstream::start("monolith").await;
    let svc = hung().await;
    let text = config_text(&[("monolith", mono.addr), ("catalog", svc)], &route("")).replace(
        "connect_timeout_ms = 500\n\n# where",
        "connect_timeout_ms = 500\nread_timeout_ms = 10000\nmax_concurrent = 4\nqueue_timeout_ms = 50\n\n# where",
    );
    assert!(text.contains("max_concurrent = 4"), "{text}");
    let p = TestProxy::start(&text).await;
    // Forty requests pile up on the hung service: four hold its places, the rest are refused
    // after a 50 ms wait, not queued behind them.
    let mut piled = Vec::new();
    for _ in 0..40 {
        let (client, url) = (p.client.clone(), format!("{}/api/products/1", p.base));
        piled.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = client.get(&url).timeout(Duration::from_secs(30)).send().await.map(|r| r.status().as_u16());
            (status.unwrap_or(0), t.elapsed())
        }));
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&p, "ficus_bulkhead_rejected_total{upstream=\"catalog\"} ").await >= 36
        })
        .await
    );
    // Meanwhile the monolith's routes answer as ever.
    for i in 0..20 {
        let t = Instant::now();
        assert_eq!(p.get(&format!("/api/orders/{i}"), &[]).await.0, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "the monolith's route waited {:?}", t.elapsed());
    }
    let mut refused = 0;
    for t in piled.drain(..) {
        if let Ok((503, took)) =
            tokio::time::timeout(Duration::from_millis(100), t).await.unwrap_or(Ok((0, Duration::ZERO)))
        {
            assert!(took < Duration::from_secs(2), "refused after {took:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 36, "all but the four in flight were refused at once");
}

/// A resolver whose answer a test changes.
struct TestResolver(Mutex<SocketAddr>);

impl ficus_proxy::upstream::Resolve for TestResolver {
    fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(host, "catalog.internal");
        Ok(vec![*self.0.lock().unwrap()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_that_changes_its_answer_is_followed() {
    let mono = Upstream::start("monolith").await;
    let (first, second) = (Upstream::start("first").await, Upstream::start("second").await);
    let resolver = Arc::new(TestResolver(Mutex::new(first.addr)));
    let text = config_text(&[("monolith", mono.addr)], &route("")).replace(
        "# where unmatched requests go\n",
        "[upstreams.catalog]\naddrs = [\"catalog.internal:80\"]\nresolve_every_ms = 200\n\n# where unmatched requests go\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ficus.toml");
    std::fs::write(&config, &text).unwrap();
    let options = ficus_proxy::StartOptions {
        config: config.clone(),
        admin_token: Some(TOKEN.to_owned()),
        resolver: ficus_proxy::Resolver(resolver.clone()),
        ..Default::default()
    };
    let proxy = ficus_proxy::RunningProxy::start(options).unwrap();
    let base = format!("http://{}", proxy.http_addr());
    let client = reqwest::Client::new();
    let who = || async {
        let r = client.get(format!("{base}/api/products/1")).send().await;
        match r {
            Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| v["upstream"].as_str().map(str::to_owned)),
            Err(_) => None,
        }
    };
    assert!(eventually(Duration::from_secs(5), || async { who().await.as_deref() == Some("first") }).await);
    // The name now answers another address: followed within its period, no reload.
    *resolver.0.lock().unwrap() = second.addr;
    assert!(eventually(Duration::from_secs(5), || async { who().await.as_deref() == Some("second") }).await);
    let reloads = client
        .get(format!("http://{}/metrics", proxy.admin_addr().unwrap()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(reloads.contains("ficus_config_reloads_total{result=\"ok\"} 1\n"), "one load, no reload: {reloads}");
    proxy.stop(ficus_proxy::Stop::Fast);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_inside_a_budget() {
    let mono = Upstream::start("monolith").await;
    // Every other answer is a 503.
    let (flaky, flaky_hits) =
        scripted(|n| if n % 2 == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }).await;
    let text = config_text(&[("monolith", mono.addr), ("catalog", flaky)], &route(""))
        .replace("connect_timeout_ms = 500\n\n# where", "connect_timeout_ms = 500\nretries = 2\n\n# where");
    let p = TestProxy::start(&text).await;
    for _ in 0..10 {
        assert_eq!(p.get("/api/products/1", &[]).await.0, 200, "a GET's 503 is retried");
    }
    // A POST is not retried: its 503 reaches the client when it gets one.
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(p.client.post(format!("{}/api/products/1", p.base)).send().await.unwrap().status().as_u16());
    }
    assert!(posts.contains(&503), "{posts:?}");
    assert!(metric(&p, "ficus_retries_total{upstream=\"catalog\"} ").await >= 10);
    drop(p);

    // A service that always fails: retries stay inside the budget (10 a second, plus a fifth of
    // the requests), so 100 requests cost at most about 130 calls, not 300.
    let (down, down_hits) = scripted(|_| StatusCode::SERVICE_UNAVAILABLE).await;
    let text = config_text(&[("monolith", mono.addr), ("catalog", down)], &route(""))
        .replace("connect_timeout_ms = 500\n\n# where", "connect_timeout_ms = 500\nretries = 2\n\n# where");
    let p = TestProxy::start(&text).await;
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(p.get("/api/products/1", &[]).await.0, 503);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let calls = down_hits.load(Ordering::Relaxed) as f64;
    let bound = 100.0 + 20.0 + 10.0 * (seconds + 1.0);
    assert!(calls <= bound, "{calls} calls for 100 requests in {seconds} s (budget bound {bound})");
    assert!(calls > 100.0, "some retries were made");
    let _ = flaky_hits;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_from_the_service_can_fall_back_to_the_monolith() {
    let mono = Upstream::start("monolith").await;
    let (svc, _) = scripted(|_| StatusCode::NOT_FOUND).await;
    let ups = [("monolith", mono.addr), ("catalog", svc)];
    let p = TestProxy::start(&config_text(&ups, &route("fallback = true\nfallback_on_404 = true"))).await;
    let r = p.get("/api/products/new-thing", &[]).await;
    assert_eq!(
        (r.0, r.1.as_deref()),
        (200, Some("monolith")),
        "not implemented by the service yet: the monolith serves it"
    );
    drop(p);
    // Without it, the service's 404 is the answer.
    let p = TestProxy::start(&config_text(&ups, &route("fallback = true"))).await;
    assert_eq!(p.get("/api/products/new-thing", &[]).await.0, 404);
    // And it is refused without fallback.
    let err = ficus_proxy::Config::parse(
        &config_text(&ups, &route("fallback_on_404 = true")),
        std::path::Path::new("f.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs fallback = true"), "{err}");
}
