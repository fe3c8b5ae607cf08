//! Path spellings cannot reach or avoid a route's upstream; malformed heads get a clean 4xx.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestProxy, Upstream, config_text};

async fn raw(p: &TestProxy, target: &[u8], extra: &[u8]) -> (u16, Option<String>, String) {
    let addr = p.proxy.as_ref().unwrap().http_addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    let _ = s.write_all(&req).await;
    let mut data = Vec::new();
    let _ = s.read_to_end(&mut data).await;
    let text = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head = head.to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let upstream = head.lines().find_map(|l| l.strip_prefix("x-ficus-upstream:")).map(|v| v.trim().to_owned());
    let path = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["path"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, upstream, path)
}

const ROUTES: &str = r#"[[routes]]
name = "catalog"
path = "/api/products/{*rest}"
upstream = "catalog"
stage = "service"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_neither_reach_nor_avoid_a_route() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    let cases: &[(&[u8], &str, &str)] = &[
        (b"/api/products/1", "catalog", "/api/products/1"),
        (b"//api/products/1", "catalog", "/api/products/1"),
        (b"/api//products/1?q=a", "catalog", "/api/products/1?q=a"),
        (b"/api/%70roducts/1", "catalog", "/api/products/1"),
        (b"/api/./products/1", "catalog", "/api/products/1"),
        (b"/api/x/../products/1", "catalog", "/api/products/1"),
        (b"/api/products/../orders", "monolith", "/api/orders"),
        (b"/api/products/%2e%2e/orders", "monolith", "/api/orders"),
        (b"/api/products/%2E%2e/orders", "monolith", "/api/orders"),
        (b"/API/products/1", "monolith", "/API/products/1"),
        (b"http://x/api/products/1", "catalog", "/api/products/1"),
    ];
    for (target, want_upstream, want_path) in cases {
        let (status, upstream, path) = raw(&p, target, b"").await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!((status, upstream.as_deref()), (200, Some(*want_upstream)), "{shown}");
        assert_eq!(path, *want_path, "{shown}: the normalised path is forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_a_clean_4xx_and_the_proxy_lives_on() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(200_000));
    let cases: &[(&[u8], &[u8])] = &[
        (b"/api/products/1", big.as_bytes()),
        (b"/api/products/\x01", b""),
        (b"/api/products%2F1", b""),
        (b"/api%2fproducts/1", b""),
        (b"/api/products/%zz", b""),
        (b"no-slash", b""),
        (b"*", b""),
    ];
    for (target, extra) in cases {
        let (status, _, _) = raw(&p, target, extra).await;
        let shown = String::from_utf8_lossy(&target[..target.len().min(30)]);
        assert!(status == 0 || (400..500).contains(&status), "{shown} → {status}");
    }
    assert_eq!(svc.hits.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing malformed reached the service");
    let (status, upstream, _) = raw(&p, b"/api/products/1", b"").await;
    assert_eq!((status, upstream.as_deref()), (200, Some("catalog")));
    // Refusals are counted (in Pingora's logging phase, just after the answer: poll, bounded).
    let counted = "ficus_requests_total{class=\"4xx\",route=\"_rejected\",upstream=\"none\"}";
    for _ in 0..100 {
        let (_, m) = p.admin(reqwest::Method::GET, "/metrics", None, Some(crate::support::TOKEN)).await;
        if m.as_str().unwrap().contains(counted) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("refused requests are not counted");
}

/// A raw HTTP/1.1 server on port 0 that answers 200 and records each request's head as received.
async fn recording_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                kept.lock().unwrap().push(String::from_utf8_lossy(&buf).into_owned());
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });
    (addr, seen)
}

/// Sends `head` as is and returns the status.
async fn send_head(p: &TestProxy, head: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(p.proxy.as_ref().unwrap().http_addr()).await.unwrap();
    let _ = s.write_all(head).await;
    let mut data = Vec::new();
    let _ = s.read_to_end(&mut data).await;
    String::from_utf8_lossy(&data).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_targets_were_forwarded_verbatim_and_hostless_requests_accepted() {
    let (mono, seen) = recording_upstream().await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono), ("catalog", svc.addr)], ROUTES)).await;
    let status = send_head(
        &p,
        b"GET http://elsewhere.example:8080/api/orders?x=1 HTTP/1.1\r\nHost: elsewhere.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let head = seen.lock().unwrap().iter().rev().find(|h| h.contains("/api/orders")).cloned().unwrap_or_default();
    let first = head.lines().next().unwrap_or_default();
    assert_eq!(first, "GET /api/orders?x=1 HTTP/1.1", "origin-form upstream: {head}");
    let host: Vec<&str> = head.lines().filter(|l| l.to_ascii_lowercase().starts_with("host:")).collect();
    assert_eq!(host, vec!["Host: elsewhere.example:8080"], "the authority is the Host: {head}");
    for (head, why) in [
        (&b"GET /api/orders HTTP/1.1\r\nConnection: close\r\n\r\n"[..], "HTTP/1.1 without Host"),
        (
            b"GET http://a.example/api/orders HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            "an authority that is not the Host",
        ),
    ] {
        let before = seen.lock().unwrap().len();
        assert_eq!(send_head(&p, head).await, 400, "{why}");
        assert_eq!(seen.lock().unwrap().len(), before, "{why}: nothing forwarded");
    }
    // HTTP/1.0 has no Host requirement.
    assert_eq!(send_head(&p, b"GET /api/orders HTTP/1.0\r\n\r\n").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_space_in_the_target_was_accepted_and_re_encoded() {
    let (mono, seen) = recording_upstream().await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono), ("catalog", svc.addr)], ROUTES)).await;
    for head in [
        &b"GET /api/orders/1 2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/orders /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/orders\t/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let before = seen.lock().unwrap().len();
        assert_eq!(send_head(&p, head).await, 400, "{}", String::from_utf8_lossy(head));
        assert_eq!(seen.lock().unwrap().len(), before, "nothing forwarded: {}", String::from_utf8_lossy(head));
    }
    // The second request on a connection: the first is served, the second refused.
    let (first, second) = (
        b"GET /api/orders HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/orders 2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let mut s = tokio::net::TcpStream::connect(p.proxy.as_ref().unwrap().http_addr()).await.unwrap();
    s.write_all(first).await.unwrap();
    // Wait for the first answer before sending the second head (not pipelined).
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&data).contains("\r\n\r\nok") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the first request is answered");
        data.extend_from_slice(&buf[..n]);
    }
    s.write_all(second).await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&rest));
    // An encoded space is a legal target: routed and forwarded as sent.
    assert_eq!(send_head(&p, b"GET /api/orders/a%20b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await, 200);
    let head = seen.lock().unwrap().last().cloned().unwrap_or_default();
    assert!(head.starts_with("GET /api/orders/a%20b HTTP/1.1"), "{head}");
}
