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
    // Meanwhile, and after, a normal client is served.
    assert_eq!(p.get("/api/products/2", &[]).await.0, 200);
}
