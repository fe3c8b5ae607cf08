//! A bounded, seeded fuzz of the proxy's front door: malformed request heads, bodies and chunked
//! framing, sent over raw sockets. After every batch the proxy must still answer a good request,
//! and it never answers 500 (the class of its own internal errors).
//!
//! `FICUS_FUZZ_SEED` and `FICUS_FUZZ_CASES` change the seed and the number of cases; a failure
//! names the seed and the case, so it can be replayed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestProxy, Upstream, config_text};

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Well-formed requests the mutations start from.
const SEEDS: &[&[u8]] = &[
    b"GET /api/products/1 HTTP/1.1\r\nHost: x\r\nx-user-id: 7\r\n\r\n",
    b"GET /api/orders?page=2 HTTP/1.1\r\nHost: x\r\nCookie: uid=3\r\n\r\n",
    b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"card\":\"4\"}\n",
    b"PUT /api/products/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /api/products/1 HTTP/1.0\r\n\r\n",
    b"HEAD /api/products/2 HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\n\r\n",
];

/// Fragments that framing and parsing bugs are made of.
const PIECES: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b"%",
    b"%2F",
    b"%00",
    b"/../",
    b"//",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: 3, 4\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Host: y\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    b"x-ficus-force: service\r\n",
    b"traceparent: 00-zz\r\n",
    b"fffffffffffffffff\r\n",
    b"zz\r\n",
    b"5;ext=1\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HTTP/2.0",
    b"HTTP/1.1",
    b"\xff\xfe",
    b"http://a.example/",
    b"CONNECT a.example:443 HTTP/1.1\r\n",
];

/// Header lines that are well-formed one by one and trouble together (framing, smuggling).
const HEADERS: &[&[u8]] = &[
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 13, 13\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: keep-alive, close\r\n",
    b"x-ficus-force: service\r\n",
    b"x-ficus-upstream: forged\r\n",
    b"x-request-id: \x7f\r\n",
    b"Cookie: uid=\r\n",
    b"x-user-id: \r\n",
    b"Host: a.example\r\n",
];

/// Bodies and chunk sequences, right and wrong.
const BODIES: &[&[u8]] = &[
    b"",
    b"hello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhel",
    b"3\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\nx\r\n",
    b"-1\r\nx\r\n0\r\n\r\n",
    b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
    b"0\r\n\r\nGET /api/products/1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"hello world, more than announced",
];

/// One request with a well-formed request line, troublesome headers and a body that may not
/// match them: the framing cases.
fn framing_case(rng: &mut Rng) -> Vec<u8> {
    let seed = rng.pick(SEEDS);
    let head_end = seed.windows(4).position(|w| w == b"\r\n\r\n").map_or(seed.len(), |p| p + 2);
    let mut bytes = seed[..head_end].to_vec();
    for _ in 0..1 + rng.below(2) {
        let header = *rng.pick(HEADERS);
        bytes.extend_from_slice(header);
    }
    bytes.extend_from_slice(b"\r\n");
    let body = *rng.pick(BODIES);
    bytes.extend_from_slice(body);
    bytes
}

/// One malformed request: a framing case, or a seed with a few byte-level mutations.
fn case(rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) == 0 {
        return framing_case(rng);
    }
    let mut bytes = rng.pick(SEEDS).to_vec();
    for _ in 0..1 + rng.below(3) {
        // Half the time at the start of a line (a header more, a chunk more), else anywhere.
        let line_starts: Vec<usize> = (1..bytes.len()).filter(|&i| bytes[i - 1] == b'\n').collect();
        let at = if rng.below(2) == 0 && !line_starts.is_empty() {
            *rng.pick(&line_starts)
        } else {
            rng.below(bytes.len() + 1)
        };
        match rng.below(7) {
            // Insert a fragment.
            0 | 1 => {
                let piece = rng.pick(PIECES);
                bytes.splice(at..at, piece.iter().copied());
            }
            // Overwrite a byte with anything.
            2 => {
                if at < bytes.len() {
                    bytes[at] = rng.next() as u8;
                }
            }
            // Delete a range.
            3 => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            // Truncate.
            4 => bytes.truncate(at),
            // Repeat a range (duplicated headers, doubled chunks).
            5 => {
                let end = (at + 1 + rng.below(40)).min(bytes.len());
                let copy = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, copy);
            }
            // Something long: a huge header, target or chunk.
            _ => {
                let n = [100, 5_000, 70_000][rng.below(3)];
                let fill = rng.pick(b"a/ 0f");
                bytes.splice(at..at, std::iter::repeat_n(*fill, n));
            }
        }
    }
    bytes
}

/// Sends one case in a few writes and returns the head of the answer (empty when the proxy
/// closed without one). A case still waiting after a second (an unfinished body, say) is
/// half-closed: the proxy then sees the client go.
async fn send_case(addr: std::net::SocketAddr, bytes: Vec<u8>, split: usize) -> Vec<u8> {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return Vec::new() };
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = split.clamp(1, rest.len());
        if s.write_all(&rest[..n]).await.is_err() {
            break;
        }
        rest = &rest[n..];
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut half_closed = false;
    loop {
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            return answer;
        }
        let wait = if half_closed { Duration::from_secs(10) } else { Duration::from_secs(1) };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            Ok(_) => return answer,
            Err(_) if !half_closed => {
                let _ = s.shutdown().await;
                half_closed = true;
            }
            Err(_) => return answer,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_bodies_and_chunked_framing_never_take_the_proxy_down() {
    let seed: u64 = std::env::var("FICUS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f1c5);
    let cases: usize = std::env::var("FICUS_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let routes = "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"canary\"\npercent = 50\ncohort = \"header:x-user-id\"\nfallback = true\n";
    let text = config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], routes)
        .replace("[proxy]\n", "[security]\nheader_timeout_ms = 1000\n\n[proxy]\n");
    let p = TestProxy::start(&text).await;
    let addr = p.proxy.as_ref().unwrap().http_addr();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    const BATCH: usize = 40;
    for batch in 0..cases.div_ceil(BATCH) {
        let mut sent = Vec::new();
        for _ in 0..BATCH {
            let bytes = case(&mut rng);
            let split = [usize::MAX, 1, 7, 64][rng.below(4)];
            sent.push((bytes.clone(), tokio::spawn(send_case(addr, bytes, split))));
        }
        for (i, (bytes, task)) in sent.into_iter().enumerate() {
            let answer = task.await.unwrap();
            let shown = || format!("seed {seed}, case {}: {:?}", batch * BATCH + i, String::from_utf8_lossy(&bytes));
            let text = String::from_utf8_lossy(&answer);
            let status = if answer.is_empty() {
                "closed".to_owned()
            } else {
                assert!(text.starts_with("HTTP/1."), "not an HTTP answer: {text:?} to {}", shown());
                text.split_whitespace().nth(1).unwrap_or("?").to_owned()
            };
            assert_ne!(status, "500", "an internal error of the proxy: {text:?} to {}", shown());
            *statuses.entry(status).or_default() += 1;
        }
        // The proxy lives on, and answers a good request.
        let good = p.get("/api/products/1", &[("x-user-id", "7")]).await;
        assert_eq!(good.0, 200, "after batch {batch} (seed {seed}): {good:?}");
    }
    let total: usize = statuses.values().sum();
    assert_eq!(total, cases.div_ceil(BATCH) * BATCH);
    eprintln!("fuzz: seed {seed}, {total} cases, answers {statuses:?}");
    // The mutations reach both sides of the parser: some cases are refused, some pass.
    assert!(statuses.get("400").copied().unwrap_or(0) > total / 20, "{statuses:?}");
    assert!(statuses.get("200").copied().unwrap_or(0) > total / 20, "{statuses:?}");
}
