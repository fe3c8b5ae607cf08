//! The admin API: auth, validation, write-back that keeps comments and survives a restart, bad
//! files refused with file:line while the last good config stays live, metrics.

use reqwest::Method;
use serde_json::json;

use crate::support::{TOKEN, TestProxy, Upstream, config_text, served_by};

const ROUTES: &str = r#"# the catalog moves first
[[routes]]
name = "catalog"
path = "/api/products/{*rest}"
upstream = "catalog"
stage = "monolith"   # flipped by the admin API
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    assert_eq!(p.admin(Method::GET, "/healthz", None, None).await.0, 200);
    for (method, path) in [(Method::GET, "/routes"), (Method::POST, "/reload"), (Method::GET, "/metrics")] {
        assert_eq!(p.admin(method.clone(), path, None, None).await.0, 401, "{method} {path}");
        assert_eq!(p.admin(method.clone(), path, None, Some("wrong")).await.0, 401, "{method} {path}");
        assert_eq!(p.admin(method.clone(), path, None, Some(TOKEN)).await.0, 200, "{method} {path}");
    }
    let put = p.admin(Method::PUT, "/routes/catalog", Some(json!({"stage": "service"})), None).await;
    assert_eq!(put.0, 401);
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "monolith", "a refused PUT changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stage_changes_are_refused() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    let before = std::fs::read_to_string(&p.config).unwrap();
    assert_eq!(p.set_stage("catalog", "sideways", None).await.0, 400);
    assert_eq!(p.set_stage("catalog", "canary", Some(150.0)).await.0, 400);
    assert_eq!(p.set_stage("catalog", "canary", Some(-1.0)).await.0, 400);
    assert_eq!(p.set_stage("nope", "service", None).await.0, 404);
    let garbage = p.admin(Method::PUT, "/routes/catalog", Some(json!({"stage": 5})), Some(TOKEN)).await;
    assert_eq!(garbage.0, 400);
    assert_eq!(std::fs::read_to_string(&p.config).unwrap(), before, "the file is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_changes_are_written_back_and_survive_a_restart() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let mut p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    let (status, route) = p.set_stage("catalog", "canary", Some(12.5)).await;
    assert_eq!(status, 200, "{route}");
    assert_eq!((route["stage"].as_str(), route["percent"].as_f64()), (Some("canary"), Some(12.5)));
    let (status, _) = p.set_stage("catalog", "service", None).await;
    assert_eq!(status, 200);
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "catalog");
    let text = std::fs::read_to_string(&p.config).unwrap();
    assert!(text.contains("# the catalog moves first"), "{text}");
    assert!(text.contains("stage = \"service\"   # flipped by the admin API"), "{text}");
    assert!(text.contains("percent = 12.5"), "{text}");
    assert!(text.contains("# where unmatched requests go"), "{text}");

    p.stop();
    let dir = tempfile::tempdir().unwrap();
    let old_dir = std::mem::replace(&mut p.dir, dir);
    let restarted = TestProxy::start_from(old_dir, p.config.clone()).await;
    assert_eq!(served_by(&restarted.get("/api/products/1", &[]).await), "catalog", "the restart kept the stage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_with_its_line_and_the_last_good_config_stays() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let text = config_text(
        &[("monolith", mono.addr), ("catalog", svc.addr)],
        &ROUTES.replace("\"monolith\"   #", "\"service\" #"),
    );
    let p = TestProxy::start(&text).await;
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "catalog");
    let lines = text.lines().count();
    std::fs::write(&p.config, format!("{text}\n[[routes]]\nname = \"x\"\npath = \"/x\"\nupstream = \"nowhere\"\n"))
        .unwrap();
    let (status, body) = p.admin(Method::POST, "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(&format!("ficus.toml:{}: ", lines + 5)), "{message}");
    assert!(message.contains("unknown upstream `nowhere`"), "{message}");
    std::fs::write(&p.config, format!("{text}\n[[routes]]\nname = 1\nstage = [\n")).unwrap();
    let (status, body) = p.admin(Method::POST, "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(served_by(&p.get("/api/products/1", &[]).await), "catalog", "the last good config stays live");
    let (status, body) = p.set_stage("catalog", "monolith", None).await;
    assert_eq!(status, 409, "a stage change on a broken file is refused: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_and_upstream() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    for _ in 0..3 {
        p.get("/api/products/1", &[]).await;
    }
    // A request is counted when Pingora's logging phase runs, just after its response is sent:
    // poll (bounded) instead of racing it.
    let want = "ficus_requests_total{class=\"2xx\",route=\"catalog\",upstream=\"monolith\"} 3";
    let mut text = String::new();
    for _ in 0..100 {
        let (status, body) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
        assert_eq!(status, 200);
        text = body.as_str().unwrap().to_owned();
        if text.contains(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(text.contains(want), "{text}");
    assert!(text.contains("ficus_request_duration_seconds_bucket{route=\"catalog\",upstream=\"monolith\""), "{text}");
    let (_, routes) = p.admin(Method::GET, "/routes", None, Some(TOKEN)).await;
    assert_eq!(routes["routes"][0]["requests_monolith"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reason_is_refused_and_newlines_cannot_forge_log_lines() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], ROUTES)).await;
    let before = std::fs::read_to_string(&p.config).unwrap();
    let huge = "abc\n".repeat(300_000); // 1.2 M characters, 1.5 MB of JSON (under the body limit)
    let (status, body) =
        p.admin(Method::PUT, "/routes/catalog", Some(json!({"stage": "service", "reason": huge})), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("at most 500"), "{body}");
    assert_eq!(std::fs::read_to_string(&p.config).unwrap(), before, "nothing changed");
    let forged = "ok\n2026-01-01T00:00:00Z  INFO stage changed route=all by=root\u{1b}[2J";
    let (status, _) =
        p.admin(Method::PUT, "/routes/catalog", Some(json!({"stage": "service", "reason": forged})), Some(TOKEN)).await;
    assert_eq!(status, 200);
    let (_, audit) = p.admin(Method::GET, "/audit", None, Some(TOKEN)).await;
    let why = audit["entries"].as_array().and_then(|a| a.last()).map(|e| e["why"].clone()).unwrap_or_default();
    let why = why.as_str().unwrap_or_default().to_owned();
    assert!(!why.chars().any(char::is_control), "control characters escaped: {why:?}");
    assert!(why.starts_with("ok\\n2026-01-01") && why.contains("\\u{1b}[2J"), "{why:?}");
    let file = std::fs::read_to_string(p.config.with_extension("audit.jsonl")).unwrap_or_default();
    assert_eq!(file.lines().count(), 1, "one line per change in the audit file: {file}");
}
