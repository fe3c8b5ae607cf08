//! Progressive rollout, automatic rollback, the audit log and the migration's progress, with real
//! upstreams: the controller in the running proxy moves the route, the config file and the audit
//! file show it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TOKEN, TestProxy, Upstream, config_text, served_by};

fn canary_route(rollout: &str) -> String {
    format!(
        "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{{*rest}}\"\nupstream = \"svc\"\nstage = \"canary\"\npercent = 0\ncohort = \"header:x-user-id\"\nfallback = true\n\n[routes.rollout]\n{rollout}\n"
    )
}

async fn route(p: &TestProxy) -> Value {
    let (status, v) = p.admin(Method::GET, "/routes/catalog", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn audit(p: &TestProxy) -> Vec<Value> {
    let (status, v) = p.admin(Method::GET, "/audit?route=catalog", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// `GET /routes`'s progress once it has counted `(total, service)` requests. A request is counted
/// once its answer has been written, so the last one may be counted just after its client read it:
/// the counts must become exact, soon (5 s).
async fn progress_counting(p: &TestProxy, want: impl Fn() -> (u64, u64)) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, routes) = p.admin(Method::GET, "/routes", None, Some(TOKEN)).await;
        let progress = routes["progress"].clone();
        let (total, service) = want();
        let counted = (progress["requests_total"].as_u64(), progress["requests_service"].as_u64());
        if counted == (Some(total), Some(service)) {
            return progress;
        }
        assert!(Instant::now() < deadline, "counted {counted:?}, want ({total}, {service}): {progress}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends GETs from ever new cohorts until `done(route)` holds; every answer must be a 200 (a
/// failing service is hidden by fallback). Bounded: 30,000 requests or 60 s.
async fn drive_until(p: &TestProxy, done: impl Fn(&Value) -> bool) -> (Value, usize) {
    let start = Instant::now();
    let mut sent = 0;
    loop {
        for _ in 0..50 {
            let user = sent.to_string();
            let r = p.get(&format!("/api/products/{}", sent % 17), &[("x-user-id", user.as_str())]).await;
            served_by(&r);
            sent += 1;
        }
        let now = route(p).await;
        if done(&now) {
            return (now, sent);
        }
        assert!(sent < 30_000 && start.elapsed() < Duration::from_secs(60), "not reached after {sent}: {now}");
    }
}

fn stage_and_percent(e: &Value, side: &str) -> (String, f64) {
    (e[side]["stage"].as_str().unwrap().to_owned(), e[side]["percent"].as_f64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_rollout_steps_up_to_the_service_and_every_step_is_audited() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("svc").await;
    let policy = "steps = [10, 50, 100]\ndwell_seconds = 0.2\nmin_requests = 30\np99_slack_ms = 100";
    let text = config_text(&[("monolith", mono.addr), ("svc", svc.addr)], &canary_route(policy));
    let p = TestProxy::start(&text).await;

    let (done, _) = drive_until(&p, |r| r["stage"] == "service").await;
    assert!(done.get("rollout").is_none(), "a finished rollout is no longer shown: {done}");
    let file = std::fs::read_to_string(&p.config).unwrap();
    assert!(file.contains("stage = \"service\""), "{file}");
    assert!(file.contains("[routes.rollout]\nsteps = [10, 50, 100]"), "the policy and its layout stay: {file}");

    let entries = audit(&p).await;
    let moves: Vec<((String, f64), (String, f64))> =
        entries.iter().map(|e| (stage_and_percent(e, "from"), stage_and_percent(e, "to"))).collect();
    let c = |p: f64| ("canary".to_owned(), p);
    assert_eq!(
        moves,
        [(c(0.0), c(10.0)), (c(10.0), c(50.0)), (c(50.0), c(100.0)), (c(100.0), ("service".to_owned(), 100.0))],
        "{entries:?}"
    );
    assert!(entries.iter().all(|e| e["by"] == "rollout"), "{entries:?}");
    assert!(entries[0]["why"].as_str().unwrap().starts_with("rollout starts at step 1 of 3 (10%)"), "{entries:?}");
    let held = entries[1]["why"].as_str().unwrap();
    assert!(held.starts_with("step 10% held: error rate 0.00% (monolith 0.00%), p99 "), "{held}");
    assert!(entries[3]["why"].as_str().unwrap().starts_with("last step 100% held"), "{entries:?}");
    for e in &entries {
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let lines = std::fs::read_to_string(p.dir.path().join("ficus.audit.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4, "{lines}");

    // Everything now goes to the service, and the progress says so.
    let (_, routes) = p.admin(Method::GET, "/routes", None, Some(TOKEN)).await;
    let progress = &routes["progress"];
    assert_eq!((progress["routes"].as_u64(), progress["service"].as_u64()), (Some(1), Some(1)), "{routes}");
    assert_eq!(progress["endpoint_share"].as_f64(), Some(1.0));
    // Every request the upstreams saw went through the proxy (readiness probes included).
    let hits = |u: &Upstream| u.hits.load(std::sync::atomic::Ordering::Relaxed) as u64;
    progress_counting(&p, || (hits(&mono) + hits(&svc), hits(&svc))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_service_errors_rolls_back_to_the_monolith_and_the_file_shows_it() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("svc").await;
    // A dwell of an hour: this rollout can only go back.
    let policy = "steps = [50, 100]\ndwell_seconds = 3600\nmin_requests = 40";
    let text = config_text(&[("monolith", mono.addr), ("svc", svc.addr)], &canary_route(policy));
    let p = TestProxy::start(&text).await;
    let (at_50, _) = drive_until(&p, |r| r["percent"] == 50.0 && r["rollout"]["step"] == 1).await;
    assert_eq!(at_50["rollout"]["steps"], json!([50.0, 100.0]), "{at_50}");

    svc.fail_with_500(true);
    let (back, _) = drive_until(&p, |r| r["stage"] == "monolith").await;
    assert_eq!(back["percent"], 0.0, "{back}");
    let file = std::fs::read_to_string(&p.config).unwrap();
    assert!(file.contains("stage = \"monolith\"\npercent = 0\n"), "{file}");

    let entries = audit(&p).await;
    let last = entries.last().unwrap();
    assert_eq!((stage_and_percent(last, "from"), last["by"].as_str()), (("canary".to_owned(), 50.0), Some("rollout")));
    let why = last["why"].as_str().unwrap();
    assert!(why.starts_with("rollback: service error rate "), "{why}");
    assert!(why.contains("with 95% confidence) is above the monolith's 0.00% + 1.00%"), "{why}");
    // Clients never saw the errors: fallback served them (drive_until checks each answer), and
    // they were counted.
    let (_, metrics) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    let fallbacks: u64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ficus_fallbacks_total{route=\"catalog\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(fallbacks > 0, "{metrics}");
    // After the rollback everything goes to the monolith.
    for user in 0..20 {
        let u = user.to_string();
        assert_eq!(served_by(&p.get("/api/products/1", &[("x-user-id", u.as_str())]).await), "monolith");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_changes_are_audited_with_who_and_why_and_survive_a_restart() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("svc").await;
    let route =
        "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"svc\"\nstage = \"shadow\"\n";
    let mut p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("svc", svc.addr)], route)).await;

    // Forced past the gate, with a reason and a name.
    let body = json!({"stage": "canary", "percent": 5, "force": true, "reason": "load test"});
    let resp = p
        .client
        .put(format!("{}/routes/catalog", p.admin))
        .bearer_auth(TOKEN)
        .header("x-ficus-actor", "alice")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The same stage again changes nothing and is not audited.
    assert_eq!(p.set_stage("catalog", "canary", Some(5.0)).await.0, 200);
    // A reload of a hand-edited file is audited too.
    let text = std::fs::read_to_string(&p.config).unwrap().replace("stage = \"canary\"", "stage = \"monolith\"");
    std::fs::write(&p.config, text).unwrap();
    assert_eq!(p.admin(Method::POST, "/reload", None, Some(TOKEN)).await.0, 200);

    let entries = audit(&p).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["by"], "alice (admin API from 127.0.0.1)");
    let why = entries[0]["why"].as_str().unwrap();
    assert!(why.starts_with("load test; forced past the shadow gate (0 comparisons so far, 100 needed)"), "{why}");
    assert_eq!(stage_and_percent(&entries[0], "to"), ("canary".to_owned(), 5.0));
    assert_eq!(entries[1]["why"], "reload: POST /reload");
    assert!(entries[1]["by"].as_str().unwrap().starts_with("config file "), "{entries:?}");
    assert_eq!(stage_and_percent(&entries[1], "to"), ("monolith".to_owned(), 5.0));

    // The history is read back from the file after a restart.
    p.stop();
    let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    let p = TestProxy::start_from(dir, p.config.clone()).await;
    assert_eq!(audit(&p).await, entries);
    let (_, all) = p.admin(Method::GET, "/audit", None, Some(TOKEN)).await;
    assert_eq!(all["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(p.admin(Method::GET, "/audit", None, None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_routes_and_traffic_served_by_the_new_services() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("svc").await;
    let routes = "[[routes]]\nname = \"moved\"\npath = \"/moved\"\nupstream = \"svc\"\nstage = \"service\"\n\n\
                  [[routes]]\nname = \"half\"\npath = \"/half\"\nupstream = \"svc\"\nstage = \"canary\"\npercent = 50\ncohort = \"header:x-user-id\"\n\n\
                  [[routes]]\nname = \"stays\"\npath = \"/stays\"\nupstream = \"svc\"\n";
    let p = TestProxy::start(&config_text(&[("monolith", mono.addr), ("svc", svc.addr)], routes)).await;
    let mut on_service = 0;
    for i in 0..300 {
        let path = ["/moved", "/half", "/stays", "/elsewhere"][i % 4];
        let user = i.to_string();
        if served_by(&p.get(path, &[("x-user-id", user.as_str())]).await) == "svc" {
            on_service += 1;
        }
    }
    // The readiness probes went to the monolith through the proxy too.
    let total = || (mono.hits.load(std::sync::atomic::Ordering::Relaxed) + on_service) as u64;
    let pr = &progress_counting(&p, || (total(), on_service as u64)).await;
    let total = total();
    assert!(total > 300, "{total}");
    assert_eq!(
        [
            pr["routes"].as_u64(),
            pr["monolith"].as_u64(),
            pr["shadow"].as_u64(),
            pr["canary"].as_u64(),
            pr["service"].as_u64()
        ],
        [Some(3), Some(1), Some(0), Some(1), Some(1)],
        "{pr}"
    );
    assert_eq!(pr["endpoint_share"].as_f64(), Some(0.5), "(1 + 0.5) / 3: {pr}");
    let share = on_service as f64 / total as f64;
    assert_eq!(pr["traffic_share"].as_f64(), Some(share));
    let (_, metrics) = p.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        "ficus_migration_routes{stage=\"service\"} 1",
        "ficus_migration_routes{stage=\"canary\"} 1",
        "ficus_migration_endpoint_share 0.5",
        "ficus_route_service_share{route=\"half\"} 0.5",
        "ficus_route_service_share{route=\"stays\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(metrics.contains(&format!("ficus_migration_traffic_share {share}")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_change_takes_a_pending_edit_first_and_never_waits_for_a_broken_file() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("svc").await;
    let routes = "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"svc\"\n\n\
                  [[routes]]\nname = \"cart\"\npath = \"/api/cart\"\nupstream = \"svc\"\n";
    // No file watcher: only the stage change can see the edit.
    let text = config_text(&[("monolith", mono.addr), ("svc", svc.addr)], routes)
        .replace("[proxy]\n", "[proxy]\nwatch_file = false\n");
    assert!(text.contains("watch_file = false"), "{text}");
    let p = TestProxy::start(&text).await;
    let edited = std::fs::read_to_string(&p.config).unwrap().replace(
        "name = \"cart\"\npath = \"/api/cart\"\nupstream = \"svc\"\n",
        "name = \"cart\"\npath = \"/api/cart\"\nupstream = \"svc\"\nstage = \"service\"\n",
    );
    std::fs::write(&p.config, &edited).unwrap();
    assert_eq!(p.set_stage("catalog", "service", None).await.0, 200);
    let (_, cart) = p.admin(Method::GET, "/routes/cart", None, Some(TOKEN)).await;
    assert_eq!(cart["stage"], "service", "the pending edit is live: {cart}");
    let (_, all) = p.admin(Method::GET, "/audit", None, Some(TOKEN)).await;
    let entries = all["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        (entries[0]["route"].as_str(), entries[0]["why"].as_str()),
        (Some("cart"), Some("reload: the file changed, seen at a stage change"))
    );
    assert_eq!(entries[1]["route"], "catalog");
    let file = std::fs::read_to_string(&p.config).unwrap();
    assert!(
        file.contains("name = \"cart\"\npath = \"/api/cart\"\nupstream = \"svc\"\nstage = \"service\"\n"),
        "{file}"
    );

    // A broken file: the change is live and written (on the last good config), and the
    // operator's broken edit is set aside beside the file, not lost.
    std::fs::write(&p.config, "version = 1\n[listen\n").unwrap();
    let (status, route) = p.set_stage("catalog", "monolith", None).await;
    assert_eq!((status, route["stage"].as_str()), (200, Some("monolith")), "{route}");
    let file = std::fs::read_to_string(&p.config).unwrap();
    let reloaded = ficus_proxy::Config::parse(&file, &p.config).expect("the file holds a valid config again");
    assert_eq!(reloaded.routes.iter().find(|r| r.name == "catalog").map(|r| r.stage.as_str()), Some("monolith"));
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(p.dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ficus.toml.invalid-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), "version = 1\n[listen\n");
    let (_, all) = p.admin(Method::GET, "/audit?route=catalog", None, Some(TOKEN)).await;
    let why = all["entries"].as_array().unwrap().last().unwrap()["why"].as_str().unwrap().to_owned();
    assert!(why.contains("the file's invalid edit was set aside as"), "{why}");
}
