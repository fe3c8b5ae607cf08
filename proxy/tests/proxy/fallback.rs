//! Fallback to the monolith when the service fails before answering: idempotent requests only,
//! counted; others get the service's error.

use crate::support::{TOKEN, TestProxy, Upstream, config_text, send, served_by};

const ROUTES: &str = r#"[[routes]]
name = "catalog"
path = "/api/products/{*rest}"
upstream = "catalog"
stage = "service"
fallback = true

[[routes]]
name = "orders"
path = "/api/orders/{*rest}"
upstream = "catalog"
stage = "service"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_service_down_idempotent_requests_are_served_by_the_monolith() {
    let mono = Upstream::start("monolith").await;
    let mut svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "catalog");
    svc.stop().await;
    for i in 0..50 {
        assert_eq!(served_by(&p.get(&format!("/api/products/{i}"), &[]).await), "monolith", "request {i}");
    }
    let head = p.client.head(format!("{}/api/products/1", p.base)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    // A POST is not retried elsewhere: the client gets a 502.
    let post = send(p.client.post(format!("{}/api/products/1", p.base)).body("x")).await;
    assert_eq!(post.0, 502);
    // With an Idempotency-Key it is, body and all.
    let keyed =
        send(p.client.post(format!("{}/api/products/1", p.base)).header("idempotency-key", "k1").body("payload")).await;
    assert_eq!(served_by(&keyed), "monolith");
    assert_eq!(keyed.2["body"], "payload");
    // A route without fallback answers 502 too.
    assert_eq!(p.get("/api/orders/1", &[]).await.0, 502);
    // Fallbacks are counted.
    let (_, routes) = p.admin(reqwest::Method::GET, "/routes", None, Some(TOKEN)).await;
    let catalog = routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == "catalog").unwrap();
    assert!(catalog["fallbacks"].as_u64().unwrap() >= 50, "{catalog}");
    let (_, metrics) = p.admin(reqwest::Method::GET, "/metrics", None, Some(TOKEN)).await;
    assert!(metrics.as_str().unwrap().contains("ficus_fallbacks_total{route=\"catalog\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_from_the_service_before_any_byte_falls_back_for_idempotent_requests() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    svc.fail_with_500(true);
    for _ in 0..10 {
        assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "monolith");
    }
    let post = send(p.client.post(format!("{}/api/products/1", p.base)).body("x")).await;
    assert_eq!((post.0, post.1.as_deref()), (500, Some("catalog")), "the service's own error");
    let keyed = send(p.client.put(format!("{}/api/products/1", p.base)).header("idempotency-key", "k").body("b")).await;
    assert_eq!((served_by(&keyed), keyed.2["body"].as_str()), ("monolith".to_owned(), Some("b")));
    // Without fallback, the service's 500 is passed on.
    let r = p.get("/api/orders/1", &[]).await;
    assert_eq!((r.0, r.1.as_deref()), (500, Some("catalog")));
    svc.fail_with_500(false);
}

/// A service that reads a request's head and part of its body, then hangs up unanswered.
async fn hangs_up_mid_body() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_kb_idempotent_post_silently_could_not_fall_back() {
    let mono = Upstream::start("monolith").await;
    let svc = hangs_up_mid_body().await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc)], ROUTES)).await;
    let post = |body: Vec<u8>| {
        send(p.client.post(format!("{}/api/products/1", p.base)).header("idempotency-key", "k").body(body))
    };
    // Under the 64 KB retry buffer: served by the monolith, body and all.
    let small = post(vec![b's'; 10 * 1024]).await;
    assert_eq!(served_by(&small), "monolith", "{small:?}");
    assert_eq!(small.2["body"].as_str().map(str::len), Some(10 * 1024));
    // Over it: the service's failure reaches the client, and is counted.
    let big = post(vec![b'b'; 200 * 1024]).await;
    assert_eq!(big.0, 502, "{big:?}");
    let (_, metrics) = p.admin(reqwest::Method::GET, "/metrics", None, Some(TOKEN)).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("ficus_fallback_impossible_total{route=\"catalog\"} 1"), "{text}");
    assert!(text.contains("ficus_fallbacks_total{route=\"catalog\"} 1"), "{text}");
}
