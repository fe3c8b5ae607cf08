//! The shadow stage: clients get only the monolith's answers; copies go to the service in the
//! background and the differences are reported by `GET /diffs` with their JSON pointers; noise
//! (a field that differs between two monolith answers) is learnt, not counted; a dead service
//! changes nothing for clients; writes are not mirrored unless the route says so.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support::{TOKEN, TestProxy, config_text};

/// How a document server answers `GET /api/products/{id}`.
#[derive(Clone, Copy)]
struct Kind {
    /// Renames `name` on ids ending in 7 and changes `/tags/1` of id 5.
    differs: bool,
    /// Adds `served_at`, a nanosecond timestamp, to every answer.
    timestamp: bool,
    /// Adds `meta: [{"v": …}]` whose value depends on `differs`.
    meta: bool,
    /// Answers `content-type: application/json; charset=utf-8` instead of `application/json`.
    charset: bool,
}

#[derive(Clone)]
struct DocState {
    kind: Kind,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

/// A JSON document server on port 0 that records (method, path, body) of every request.
struct DocServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    _stop: oneshot::Sender<()>,
}

async fn doc(State(s): State<DocState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if path != "/healthz" {
        s.seen.lock().unwrap().push((
            parts.method.to_string(),
            path.clone(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    let id: u64 = path.rsplit('/').next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let mut out = json!({
        "id": id,
        "name": format!("product {id}"),
        "price_cents": 100 + id,
        "tags": ["a", "b"],
    });
    if s.kind.differs && id % 10 == 7 {
        out["name"] = json!("renamed");
    }
    if s.kind.differs && id == 5 {
        out["tags"][1] = json!("c");
    }
    if s.kind.timestamp {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        out["served_at"] = json!(nanos.to_string());
    }
    if s.kind.meta {
        out["meta"] = json!([{ "v": if s.kind.differs { 2 } else { 1 } }]);
    }
    let mut resp = axum::Json(out).into_response();
    if s.kind.charset {
        resp.headers_mut().insert("content-type", "application/json; charset=utf-8".parse().unwrap());
    }
    resp
}

impl DocServer {
    async fn start(kind: Kind) -> DocServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(doc).with_state(DocState { kind, seen: seen.clone() });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        DocServer { addr, seen, _stop: stop }
    }

    fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

const PLAIN: Kind = Kind { differs: false, timestamp: false, meta: false, charset: false };

fn route(extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{{id}}\"\nupstream = \"catalog\"\nstage = \"shadow\"\n{extra}\n"
    )
}

async fn diffs(p: &TestProxy) -> Value {
    let (status, v) = p.admin(Method::GET, "/diffs?route=catalog", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Polls `/diffs` until `done` holds (bounded: 10 s).
async fn diffs_until(p: &TestProxy, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = diffs(p).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached; last /diffs: {last}");
}

/// GETs `/api/products/{id}` and checks the client got the monolith's document.
async fn get_from_monolith(p: &TestProxy, id: u64) {
    let resp = p.client.get(format!("{}/api/products/{id}", p.base)).send().await.expect("proxy answers");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["name"], json!(format!("product {id}")), "the client sees the monolith's answer");
}

fn sample_pointers(d: &Value) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = d["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ptrs =
                s["diff"].as_array().unwrap().iter().map(|x| x["pointer"].as_str().unwrap().to_owned()).collect();
            (s["path"].as_str().unwrap().to_owned(), ptrs)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_answers_give_no_mismatch_and_diffs_has_its_shape() {
    let mono = DocServer::start(PLAIN).await;
    let svc = DocServer::start(PLAIN).await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &route(""))).await;
    for id in 0..30 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["compared"] == 30).await;
    assert_eq!((d["matched"].as_u64(), d["mismatched"].as_u64(), d["dropped"].as_u64()), (Some(30), Some(0), Some(0)));
    for key in ["route", "compared", "matched", "mismatched", "dropped", "noise", "samples"] {
        assert!(d.get(key).is_some(), "{key} in {d}");
    }
    assert_eq!((d["route"].as_str(), d["noise"].as_array().map(Vec::len)), (Some("catalog"), Some(0)));
    assert_eq!(d["samples"], json!([]));
    assert_eq!(p.admin(Method::GET, "/diffs", None, Some(TOKEN)).await.0, 400);
    assert_eq!(p.admin(Method::GET, "/diffs?route=nope", None, Some(TOKEN)).await.0, 404);
    assert_eq!(p.admin(Method::GET, "/diffs?route=catalog", None, None).await.0, 401);
    let (_, metrics) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(metrics.contains("ficus_shadow_compared_total{route=\"catalog\"} 30"), "{metrics}");
    assert!(metrics.contains("ficus_shadow_mismatched_total{route=\"catalog\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differences_are_reported_with_their_pointers_and_ignored_fields_skipped() {
    let mono = DocServer::start(Kind { meta: true, ..PLAIN }).await;
    let svc = DocServer::start(Kind { differs: true, meta: true, ..PLAIN }).await;
    let routes = route("shadow_ignore = [\"/meta/*/v\"]");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &routes)).await;
    for id in 0..30 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["compared"] == 30).await;
    assert_eq!((d["mismatched"].as_u64(), d["matched"].as_u64()), (Some(4), Some(26)), "{d}");
    let expected: Vec<(String, Vec<String>)> = vec![
        ("/api/products/17".into(), vec!["/name".into()]),
        ("/api/products/27".into(), vec!["/name".into()]),
        ("/api/products/5".into(), vec!["/tags/1".into()]),
        ("/api/products/7".into(), vec!["/name".into()]),
    ];
    assert_eq!(sample_pointers(&d), expected);
    let seven = d["samples"].as_array().unwrap().iter().find(|s| s["path"] == "/api/products/7").unwrap();
    assert_eq!(seven["method"], "GET");
    assert_eq!(seven["diff"][0], json!({"pointer": "/name", "monolith": "product 7", "service": "renamed"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_response_headers_are_compared() {
    let mono = DocServer::start(PLAIN).await;
    let svc = DocServer::start(Kind { charset: true, ..PLAIN }).await;
    // content-type is compared by default.
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &route(""))).await;
    for id in 0..10 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["compared"] == 10).await;
    assert_eq!(d["mismatched"].as_u64(), Some(10), "{d}");
    assert_eq!(
        d["samples"][0]["diff"],
        json!([{"pointer": "(header content-type)", "monolith": "application/json", "service": "application/json; charset=utf-8"}])
    );
    drop(p);
    // A route that chooses other headers does not see it.
    let routes = route("shadow_headers = [\"cache-control\"]");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &routes)).await;
    for id in 0..10 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["compared"] == 10).await;
    assert_eq!(d["mismatched"].as_u64(), Some(0), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_is_capped_per_second() {
    let mono = DocServer::start(PLAIN).await;
    let svc = DocServer::start(PLAIN).await;
    let routes = route("shadow_max_per_second = 2");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &routes)).await;
    let start = std::time::Instant::now();
    for id in 0..40 {
        get_from_monolith(&p, id).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    // Every request is either mirrored and compared or sampled out; at most 2 a second are mirrored.
    let d =
        diffs_until(&p, |d| d["compared"].as_u64().unwrap_or(0) + d["sampled_out"].as_u64().unwrap_or(0) == 40).await;
    let compared = d["compared"].as_u64().unwrap();
    // A burst of 2, then 2 a second.
    assert!(compared >= 1 && compared as f64 <= 2.0 + 2.0 * seconds, "{compared} compared in {seconds} s: {d}");
    assert_eq!(svc.seen().len() as u64, compared, "the service saw only the mirrored requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_that_differs_between_monolith_answers_is_noise() {
    let mono = DocServer::start(Kind { timestamp: true, ..PLAIN }).await;
    let svc = DocServer::start(Kind { differs: true, timestamp: true, ..PLAIN }).await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &route(""))).await;
    for id in 0..60 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["compared"] == 60).await;
    assert_eq!(d["noise"], json!(["/served_at"]), "{d}");
    // 7, 17, …, 57 and 5: only the real differences count, served_at never does.
    assert_eq!(d["mismatched"].as_u64(), Some(7), "{d}");
    for (_, pointers) in sample_pointers(&d) {
        assert!(!pointers.contains(&"/served_at".to_owned()), "{d}");
    }
    // Noise learning sends some requests to the monolith twice (the first 20, then 1 in 10).
    let monolith_calls = mono.seen().len();
    assert!((60 + 20..=60 + 20 + 5).contains(&monolith_calls), "{monolith_calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_service_changes_nothing_for_clients() {
    let mono = DocServer::start(PLAIN).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", dead)], &route(""))).await;
    for id in 0..20 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["failed"] == 20).await;
    assert_eq!((d["compared"].as_u64(), d["mismatched"].as_u64()), (Some(0), Some(0)), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_mirrored_only_when_the_route_says_so() {
    let mono = DocServer::start(PLAIN).await;
    let svc = DocServer::start(PLAIN).await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &route(""))).await;
    for id in 0..5 {
        let resp = p.client.post(format!("{}/api/products/{id}", p.base)).body("x").send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // A GET afterwards: once it is compared, every earlier request has been handed over too.
    get_from_monolith(&p, 1).await;
    diffs_until(&p, |d| d["compared"] == 1).await;
    let seen = svc.seen();
    assert!(seen.iter().all(|(m, _, _)| m == "GET"), "the service saw a write: {seen:?}");
    assert_eq!(mono.seen().iter().filter(|(m, _, _)| m == "POST").count(), 5);
    drop(p);

    let mono = DocServer::start(PLAIN).await;
    let svc = DocServer::start(PLAIN).await;
    let routes = route("shadow_writes = true");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &routes)).await;
    let resp = p.client.post(format!("{}/api/products/3?x=1", p.base)).body("payload").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let d = diffs_until(&p, |d| d["compared"] == 1).await;
    assert_eq!(d["mismatched"].as_u64(), Some(0), "{d}");
    let posts: Vec<_> = svc.seen().into_iter().filter(|(m, _, _)| m == "POST").collect();
    assert_eq!(posts, vec![("POST".to_owned(), "/api/products/3".to_owned(), "payload".to_owned())]);
    let monolith_posts = mono.seen().iter().filter(|(m, _, _)| m == "POST").count();
    assert_eq!(monolith_posts, 1, "a write is never sent to the monolith twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_shadow_needs_enough_comparisons_under_the_mismatch_rate() {
    let mono = DocServer::start(PLAIN).await;
    let same = DocServer::start(PLAIN).await;
    let routes = route("shadow_min_compared = 20\nshadow_max_mismatch = 0.05");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", same.addr)], &routes)).await;
    let (status, body) = p.set_stage("catalog", "canary", Some(10.0)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("0 comparisons so far, 20 needed"), "{body}");
    for id in 0..20 {
        get_from_monolith(&p, id).await;
    }
    diffs_until(&p, |d| d["compared"] == 20).await;
    let (status, body) = p.set_stage("catalog", "canary", Some(10.0)).await;
    assert_eq!(status, 200, "20 identical comparisons open the gate: {body}");
    drop(p);

    let mono = DocServer::start(PLAIN).await;
    let differs = DocServer::start(Kind { differs: true, ..PLAIN }).await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", differs.addr)], &routes)).await;
    for id in 0..20 {
        get_from_monolith(&p, id).await;
    }
    diffs_until(&p, |d| d["compared"] == 20).await;
    let (status, body) = p.set_stage("catalog", "service", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mismatch rate 15.00% (3 of 20)"), "{body}");
    assert!(std::fs::read_to_string(&p.config).unwrap().contains("stage = \"shadow\""), "the file is untouched");
    // Going through monolith does not skip the gate.
    assert_eq!(p.set_stage("catalog", "monolith", None).await.0, 200);
    let (status, body) = p.set_stage("catalog", "canary", Some(5.0)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mismatch rate 15.00% (3 of 20)"), "{body}");
    let forced = json!({"stage": "service", "force": true});
    assert_eq!(p.admin(Method::PUT, "/routes/catalog", Some(forced), Some(TOKEN)).await.0, 200);
    assert_eq!(p.admin(Method::GET, "/routes/catalog", None, Some(TOKEN)).await.1["stage"], "service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_service_neither_slows_clients_nor_grows_the_queue() {
    let mono = DocServer::start(PLAIN).await;
    // Accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    let text = config_text(&[("monolith", mono.addr), ("catalog", hang_addr)], &route(""))
        .replace("connect_timeout_ms = 500\n\n# where", "connect_timeout_ms = 500\nread_timeout_ms = 5000\n\n# where");
    assert!(text.contains("read_timeout_ms = 5000"), "{text}");
    let p = TestProxy::start(&text).await;
    for id in 0..80 {
        let start = std::time::Instant::now();
        get_from_monolith(&p, id).await;
        assert!(start.elapsed() < Duration::from_secs(1), "request {id} took {:?}", start.elapsed());
    }
    // 4 copies wait on the service, 64 in the queue: at least 12 of 80 are dropped, not queued.
    let d = diffs_until(&p, |d| d["dropped"].as_u64().unwrap_or(0) >= 12).await;
    assert_eq!(d["compared"].as_u64(), Some(0), "{d}");
    let (_, metrics) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    let dropped = format!("ficus_shadow_dropped_total{{route=\"catalog\"}} {}", d["dropped"]);
    assert!(metrics.as_str().unwrap_or_default().contains(&dropped), "{metrics}");
}

/// Peak resident memory of this process (`VmHWM`), in MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answering_100_mb_to_a_shadowed_get_grew_the_proxys_memory() {
    let mono = DocServer::start(PLAIN).await;
    // Answers 100 MB, streamed from one shared 1 MB chunk (so serving it costs ~1 MB): with a
    // content-length on even ids, chunked on odd ones.
    let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
    let app = axum::Router::new().fallback(move |req: Request| {
        let chunk = chunk.clone();
        async move {
            let odd = req.uri().path().ends_with(['1', '3', '5', '7', '9']);
            let stream = futures::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            let mut resp = axum::body::Body::from_stream(stream).into_response();
            if !odd {
                resp.headers_mut().insert("content-length", (100u64 << 20).into());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let huge = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", huge)], &route(""))).await;
    get_from_monolith(&p, 0).await;
    diffs_until(&p, |d| d["skipped"] == 1).await;
    let before = peak_rss_mb();
    for id in 1..=8 {
        get_from_monolith(&p, id).await;
    }
    let d = diffs_until(&p, |d| d["skipped"] == 9).await;
    assert_eq!((d["compared"].as_u64(), d["failed"].as_u64()), (Some(0), Some(0)), "skipped, not failed: {d}");
    let grown = peak_rss_mb().saturating_sub(before);
    // Each answer is read at most to the 1 MB limit: nothing like 8 × 100 MB.
    assert!(grown < 64, "peak memory grew {grown} MB over 8 answers of 100 MB");
}
