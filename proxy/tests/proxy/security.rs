//! What a client may not tell an upstream: the proxy's own `x-ficus-*` headers, and
//! forwarding headers unless the client is a trusted proxy (`[security] trusted_proxies`).

use serde_json::Value;

use crate::support::{TestProxy, Upstream, config_text};

const ROUTES: &str =
    "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"service\"\n";

const SPOOFED: [(&str, &str); 8] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "bank.example"),
    ("x-ficus-upstream", "forged"),
    ("x-ficus-shadow", "1"),
    ("x-ficus-whatever", "x"),
];

/// A proxy in front of a monolith and a catalog, with `security` as its `[security]` section.
async fn proxy_with(security: &str) -> (TestProxy, Upstream, Upstream) {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let text = config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)
        .replace("[proxy]\n", &format!("[security]\n{security}\n\n[proxy]\n"));
    (TestProxy::start(&text).await, mono, svc)
}

fn header<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body["headers"][name].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_reached_the_upstream_as_sent() {
    let (p, _mono, _svc) = proxy_with("").await;
    for path in ["/api/products/1", "/unmatched"] {
        let (status, _, body) = p.get(path, &SPOOFED).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&body, "x-forwarded-for"), Some("127.0.0.1"), "{path}: {body}");
        assert_eq!(header(&body, "x-forwarded-proto"), Some("http"), "{path}: {body}");
        let host = header(&body, "x-forwarded-host").unwrap_or_default();
        assert!(host.starts_with("127.0.0.1:"), "{path}: the Host the client sent: {body}");
        for gone in ["forwarded", "x-real-ip", "x-ficus-upstream", "x-ficus-shadow", "x-ficus-whatever"] {
            assert_eq!(header(&body, gone), None, "{path}: {gone} dropped: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_keeps_its_forwarding_headers_and_is_appended() {
    let (p, _mono, _svc) = proxy_with("trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.0/8\"]").await;
    let (status, _, body) = p.get("/api/products/1", &SPOOFED).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&body, "x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"), "{body}");
    assert_eq!(header(&body, "forwarded"), Some("for=6.6.6.6;proto=https"), "{body}");
    assert_eq!(header(&body, "x-real-ip"), Some("6.6.6.6"), "{body}");
    assert_eq!(header(&body, "x-forwarded-proto"), Some("https"), "{body}");
    assert_eq!(header(&body, "x-forwarded-host"), Some("bank.example"), "{body}");
    // Its own headers are still the proxy's alone.
    assert_eq!(header(&body, "x-ficus-upstream"), None, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_ids_and_garbage_trace_contexts_were_passed_on_unchecked() {
    let (p, _mono, _svc) = proxy_with("").await;
    let huge = "i".repeat(10_000);
    let (status, _, body) =
        p.get("/api/products/1", &[("x-request-id", &huge), ("traceparent", "00-garbage-01")]).await;
    assert_eq!(status, 200);
    let id = body["x-request-id"].as_str().unwrap_or_default();
    let trace = body["traceparent"].as_str().unwrap_or_default();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "a new request id: {id:?}");
    assert!(trace.len() == 55 && trace.starts_with("00-") && trace[3..35] == *id, "a new traceparent: {trace:?}");
    // Well-formed ones are passed on as they came.
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, _, body) = p.get("/api/products/1", &[("x-request-id", "req-42"), ("traceparent", good)]).await;
    assert_eq!((body["x-request-id"].as_str(), body["traceparent"].as_str()), (Some("req-42"), Some(good)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_was_held_forever() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (p, _mono, _svc) = proxy_with("idle_timeout_ms = 1000").await;
    let addr = p.proxy.as_ref().unwrap().http_addr();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Read the first answer, then nothing more is sent: the proxy must hang up by itself.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "the first request is answered");
    assert!(closed, "the idle keep-alive connection is closed (idle_timeout_ms = 1000), not held 15 s");
    // Meanwhile, and after, a normal client is served. (A fresh connection: the test's pooled
    // one was idle for over a second too, and a reuse racing the proxy's close would fail.)
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let status = fresh.get(format!("{}/api/products/2", p.base)).send().await.map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(200));
}

/// Reads `n` responses with a content-length from `s`; fewer when the connection ends first.
async fn read_responses(s: &mut tokio::net::TcpStream, n: usize) -> Vec<(u16, Value)> {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < n {
        // Parse every complete response at the front of `data`.
        while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() < end + 4 + len {
                break;
            }
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let body = serde_json::from_slice(&data[end + 4..end + 4 + len]).unwrap_or(Value::Null);
            out.push((status, body));
            data.drain(..end + 4 + len);
        }
        if out.len() >= n {
            break;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => data.extend_from_slice(&buf[..k]),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_after_the_first_were_dropped() {
    use tokio::io::AsyncWriteExt;
    let (p, _mono, _svc) = proxy_with("").await;
    let addr = p.proxy.as_ref().unwrap().http_addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Four requests in one write, to both upstreams, one with a body.
    let batch = b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /api/orders/2 HTTP/1.1\r\nHost: x\r\n\r\n\
POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /api/products/4 HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(batch).await.unwrap();
    let answers = read_responses(&mut s, 4).await;
    let got: Vec<(u16, &str, &str)> = answers
        .iter()
        .map(|(status, b)| (*status, b["upstream"].as_str().unwrap_or("?"), b["path"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        got,
        vec![
            (200, "catalog", "/api/products/1"),
            (200, "monolith", "/api/orders/2"),
            (200, "monolith", "/api/orders"),
            (200, "catalog", "/api/products/4"),
        ],
        "every pipelined request answered, in order"
    );
    assert_eq!(answers[2].1["body"], "hello");
    // The connection is still usable afterwards.
    s.write_all(b"GET /api/products/5 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_responses(&mut s, 1).await.first().map(|r| r.0), Some(200));
}

/// A connection from `from` to `to` (loopback addresses other than 127.0.0.1 stand for other clients).
async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_held_connections_forever() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 120;
    const CAP: usize = 40;
    let (p, _mono, _svc) =
        proxy_with(&format!("header_timeout_ms = 600\nidle_timeout_ms = 5000\nmax_connections_per_client = {CAP}"))
            .await;
    let addr = p.proxy.as_ref().unwrap().http_addr();
    let started = std::time::Instant::now();
    // SLOW connections from one address, each sending its head a byte every 100 ms.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(tokio::spawn(async move {
            let mut s = connect_from("127.0.0.2", addr).await;
            let head = b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let mut answer = Vec::new();
            for &b in head {
                if s.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::select! {
                    r = s.read_to_end(&mut answer) => { let _ = r; break; }
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut answer)).await;
            (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
        }));
    }
    // Meanwhile a normal client (another address) is served, again and again, on one keep-alive
    // connection of its own: a pooling HTTP client may open a spare connection it never sends on,
    // which the head deadline rightly closes and would be counted below.
    let mut normal = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut served = 0;
    while slow.iter().any(|t| !t.is_finished()) && started.elapsed() < std::time::Duration::from_secs(20) {
        normal.write_all(b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_responses(&mut normal, 1).await;
        assert_eq!(answer.first().map(|r| r.0), Some(200), "a normal client stays served");
        served += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served > 5, "the normal client was served {served} times meanwhile");
    let mut refused = 0;
    let mut timed_out = 0;
    for t in slow {
        let (answer, at) = t.await.unwrap();
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            assert!(answer.is_empty(), "a slow head is never answered: {answer:?}");
            timed_out += 1;
        }
        // The whole head takes 7 s at this pace; the deadline cuts every one well before.
        assert!(at < std::time::Duration::from_secs(5), "closed after {at:?}");
    }
    assert_eq!((refused, timed_out), (SLOW - CAP, CAP), "over the cap refused at once, the rest cut by the deadline");
    let metrics = p.admin(reqwest::Method::GET, "/metrics", None, Some(crate::support::TOKEN)).await.1;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!("ficus_connections_closed_total{{reason=\"header_timeout\"}} {CAP}")),
        "{metrics}"
    );
    let refused_line = format!("ficus_connections_closed_total{{reason=\"too_many_from_client\"}} {}", SLOW - CAP);
    assert!(metrics.contains(&refused_line), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_does_not_count_the_idle_wait_between_requests() {
    use tokio::io::AsyncWriteExt;
    let (p, _mono, _svc) = proxy_with("header_timeout_ms = 300\nidle_timeout_ms = 5000").await;
    let mut s = tokio::net::TcpStream::connect(p.proxy.as_ref().unwrap().http_addr()).await.unwrap();
    s.write_all(b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_responses(&mut s, 1).await.first().map(|r| r.0), Some(200));
    // Idle for longer than the head deadline, then a head sent at once: served.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    s.write_all(b"GET /api/products/2 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_responses(&mut s, 1).await.first().map(|r| r.0), Some(200));
    // A head sent in two parts within the deadline: served.
    s.write_all(b"GET /api/products/3 HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.write_all(b"Host: x\r\n\r\n").await.unwrap();
    assert_eq!(read_responses(&mut s, 1).await.first().map(|r| r.0), Some(200));
}
