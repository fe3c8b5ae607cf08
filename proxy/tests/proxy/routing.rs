//! Stages, canary shares, stickiness, monotone percent, the force header and the response headers,
//! through the real proxy.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;

use crate::support::{FORCE_TOKEN, FORCE_TOKEN_ENV, TOKEN, TestProxy, Upstream, config_text, send, served_by};

const CANARY: &str = r#"[[routes]]
name = "catalog"
path = "/api/products/{*rest}"
methods = ["GET"]
upstream = "catalog"
stage = "canary"
percent = 30
cohort = "header:x-user-id"
"#;

/// Which upstream serves each user, 32 requests at a time.
async fn pass(p: &TestProxy, users: std::ops::Range<u32>) -> Vec<String> {
    let mut out = Vec::new();
    let ids: Vec<u32> = users.collect();
    for chunk in ids.chunks(32) {
        let mut tasks = Vec::new();
        for u in chunk {
            let req = p.client.get(format!("{}/api/products/1", p.base)).header("x-user-id", u.to_string());
            tasks.push(tokio::spawn(async move { served_by(&send(req).await) }));
        }
        for t in tasks {
            out.push(t.await.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_shares_are_sticky_and_only_grow_towards_the_service() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], CANARY)).await;
    let n = 2000;
    let first = pass(&p, 0..n).await;
    let share = first.iter().filter(|u| *u == "catalog").count() as f64 / f64::from(n);
    assert!((share - 0.30).abs() <= 0.03, "share at 30%: {share}");
    assert_eq!(pass(&p, 0..n).await, first, "the same cohorts get the same upstream");

    let (status, route) = p.set_stage("catalog", "canary", Some(60.0)).await;
    assert_eq!(status, 200, "{route}");
    assert_eq!(route["percent"], 60.0);
    let later = pass(&p, 0..n).await;
    let share60 = later.iter().filter(|u| *u == "catalog").count() as f64 / f64::from(n);
    assert!((share60 - 0.60).abs() <= 0.03, "share at 60%: {share60}");
    let moved_back = first.iter().zip(&later).filter(|(a, b)| *a == "catalog" && *b == "monolith").count();
    assert_eq!(moved_back, 0, "raising the percent moved cohorts back to the monolith");

    // A request without the cohort key goes to the monolith (documented choice).
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "monolith");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_changes_apply_at_once() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let routes = CANARY.replace("stage = \"canary\"", "stage = \"monolith\"");
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], &routes)).await;
    let users: Vec<String> = (0..50).map(|u| u.to_string()).collect();
    let who = |stage_users: &[String]| {
        let p = &p;
        let stage_users = stage_users.to_vec();
        async move {
            let mut seen = HashSet::new();
            for u in &stage_users {
                seen.insert(served_by(&p.get("/api/products/9", &[("x-user-id", u)]).await));
            }
            seen
        }
    };
    assert_eq!(who(&users).await, HashSet::from(["monolith".to_owned()]));
    assert_eq!(p.set_stage("catalog", "service", None).await.0, 200);
    assert_eq!(who(&users).await, HashSet::from(["catalog".to_owned()]));
    assert_eq!(p.set_stage("catalog", "shadow", None).await.0, 200);
    assert_eq!(who(&users).await, HashSet::from(["monolith".to_owned()]), "shadow is served by the monolith");
    let (status, refused) = p.set_stage("catalog", "canary", Some(50.0)).await;
    assert_eq!(status, 409, "leaving shadow needs enough comparisons: {refused}");
    let forced = json!({"stage": "canary", "percent": 50.0, "force": true});
    assert_eq!(p.admin(Method::PUT, "/routes/catalog", Some(forced), Some(TOKEN)).await.0, 200);
    assert_eq!(who(&users).await.len(), 2, "a 50% canary over 50 users reaches both");
    // Only GET is routed: a POST on the same path goes to the monolith.
    let r = send(p.client.post(format!("{}/api/products/9", p.base)).header("x-user-id", "1")).await;
    assert_eq!(served_by(&r), "monolith");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_a_routes_target_was_on_by_default_for_any_client() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let ups = [("monolith", mono.addr), ("catalog", svc.addr)];
    // Every method routed, at 0 %: the service must see nothing unless forced.
    let routes = CANARY.replace("percent = 30", "percent = 0").replace("methods = [\"GET\"]\n", "");
    // No force_token_env: x-ficus-force is ignored, for reads and for writes.
    let p = TestProxy::start(&config_text(&ups, &routes)).await;
    let r = p.get("/api/products/1", &[("x-user-id", "7"), ("x-ficus-force", "service")]).await;
    assert_eq!(served_by(&r), "monolith", "forcing is off unless configured");
    let post = p.client.post(format!("{}/api/products/1", p.base)).header("x-ficus-force", "service");
    assert_eq!(served_by(&send(post).await), "monolith");
    drop(p);

    // With a token configured, only a request carrying it is forced, and the token goes no further.
    let text = config_text(&ups, &routes)
        .replace("[proxy]\n", &format!("[security]\nforce_token_env = \"{FORCE_TOKEN_ENV}\"\n\n[proxy]\n"));
    let p = TestProxy::start(&text).await;
    for wrong in ["", "test-force-token-0124", "test-force-token-012", "test-force-token-01234"] {
        let r = p.get("/api/products/1", &[("x-ficus-force", "service"), ("x-ficus-force-token", wrong)]).await;
        assert_eq!(served_by(&r), "monolith", "wrong token {wrong:?}");
    }
    let r = p.get("/api/products/1", &[("x-ficus-force", "service"), ("x-ficus-force-token", FORCE_TOKEN)]).await;
    assert_eq!(served_by(&r), "catalog");
    assert!(r.2["headers"].get("x-ficus-force-token").is_none(), "the token is not passed on: {}", r.2);
    let r = p.get("/api/products/1", &[("x-ficus-force", "monolith"), ("x-ficus-force-token", FORCE_TOKEN)]).await;
    assert_eq!(served_by(&r), "monolith");
    assert_eq!(served_by(&p.get("/api/products/1", &[("x-user-id", "7")]).await), "monolith");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_token_variable_that_is_not_set_stops_the_start() {
    let text = config_text(&[("monolith", "127.0.0.1:1".parse().unwrap())], "")
        .replace("[proxy]\n", "[security]\nforce_token_env = \"FICUS_NO_SUCH_VARIABLE\"\n\n[proxy]\n");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ficus.toml");
    std::fs::write(&config, &text).unwrap();
    let options = ficus_proxy::StartOptions { config, ..Default::default() };
    let err = ficus_proxy::RunningProxy::start(options).err().expect("refused").to_string();
    let line = text.lines().position(|l| l.starts_with("force_token_env")).unwrap() + 1;
    assert!(err.contains(&format!("ficus.toml:{line}:")) && err.contains("FICUS_NO_SUCH_VARIABLE"), "{err}");
    // The old switch alone is refused with what to do instead.
    let old = config_text(&[("monolith", "127.0.0.1:1".parse().unwrap())], "")
        .replace("[proxy]\n", "[proxy]\nforce_header = true\n");
    let err = ficus_proxy::Config::parse(&old, std::path::Path::new("ficus.toml")).unwrap_err().to_string();
    assert!(err.contains("force_token_env"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_traceparent_are_passed_on_and_created_only_when_asked() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let ups = [("monolith", mono.addr), ("catalog", svc.addr)];
    // By default nothing is created: a request without ids reaches the upstream without them.
    let p = TestProxy::start(&config_text(&ups, CANARY)).await;
    let resp = p.client.get(format!("{}/anything", p.base)).send().await.unwrap();
    assert!(resp.headers().get("x-request-id").is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((body["x-request-id"].as_str(), body["traceparent"].as_str()), (None, None), "{body}");
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = p.get("/anything", &[("x-request-id", "abc-123"), ("traceparent", given)]).await;
    assert_eq!((r.2["x-request-id"].as_str(), r.2["traceparent"].as_str()), (Some("abc-123"), Some(given)));
    drop(p);

    // With create_ids, every request without them gets a new pair.
    let p = TestProxy::start(&config_text(&ups, CANARY).replace("[proxy]\n", "[proxy]\ncreate_ids = true\n")).await;
    let resp = p.client.get(format!("{}/anything", p.base)).send().await.unwrap();
    let echoed = resp.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["x-request-id"], echoed.as_str(), "the created id reaches the upstream and the client");
    let tp = body["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55 && tp.ends_with("-01"), "{tp}");
    assert_eq!(&tp[3..35], echoed, "a created request id is the created trace id");
    let again = p.client.get(format!("{}/anything", p.base)).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), echoed, "every request gets a new id");
    let r = p.get("/anything", &[("x-request-id", "abc-123"), ("traceparent", given)]).await;
    assert_eq!((r.2["x-request-id"].as_str(), r.2["traceparent"].as_str()), (Some("abc-123"), Some(given)));
}
