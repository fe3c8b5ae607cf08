//! Reloads (file change and POST /reload) under load fail no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{TOKEN, TestProxy, Upstream, config_text};

fn routes(percent: u32) -> String {
    format!(
        "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{{*rest}}\"\nupstream = \"catalog\"\nstage = \"canary\"\npercent = {percent}\ncohort = \"header:x-user-id\"\n"
    )
}

fn write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let ups = [("monolith", mono.addr), ("catalog", svc.addr)];
    let p = TestProxy::start(&config_text(&ups, &routes(20))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for k in 0..6 {
        let (client, base, stop, ok, failed) =
            (p.client.clone(), p.base.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            // Bounded: stops on the flag or after 20,000 requests.
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                i += 1;
                let r =
                    client.get(format!("{base}/api/products/{i}")).header("x-user-id", format!("{k}-{i}")).send().await;
                match r {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for n in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        write(&p.config, &config_text(&ups, &routes(if n % 2 == 1 { 80 } else { 20 })));
        if n % 3 == 0 {
            let (status, body) = p.admin(reqwest::Method::POST, "/reload", None, Some(TOKEN)).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} requests failed ({ok} ok)");
    assert!(ok > 200, "too little load to show anything: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_being_asked() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let ups = [("monolith", mono.addr), ("catalog", svc.addr)];
    let p = TestProxy::start(&config_text(&ups, &routes(0))).await;
    assert_eq!(p.get("/api/products/1", &[("x-user-id", "1")]).await.1.as_deref(), Some("monolith"));
    write(&p.config, &config_text(&ups, &routes(100)));
    // The watcher polls every 500 ms: wait for the change, bounded.
    for _ in 0..100 {
        if p.get("/api/products/1", &[("x-user-id", "1")]).await.1.as_deref() == Some("catalog") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the file change was not picked up within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_and_reloading_skipped_the_shadow_gate() {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let ups = [("monolith", mono.addr), ("catalog", svc.addr)];
    let route = |stage: &str| {
        format!(
            "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{{*rest}}\"\nupstream = \"catalog\"\nstage = \"{stage}\"\nshadow_min_compared = 1000\n"
        )
    };
    let p =
        TestProxy::start(&config_text(&ups, &route("shadow")).replace("[proxy]\n", "[proxy]\nwatch_file = false\n"))
            .await;
    let first = p.get("/api/products/1", &[]).await;
    assert_eq!(first.1.as_deref(), Some("monolith"));
    // The file now says service, past the gate (1000 comparisons needed): the reload keeps the
    // route in shadow, and says so; the rest of the file (a new route) is taken.
    let edited = config_text(
        &ups,
        &format!(
            "{}[[routes]]\nname = \"other\"\npath = \"/other\"\nupstream = \"catalog\"\nstage = \"service\"\n",
            route("service")
        ),
    )
    .replace("[proxy]\n", "[proxy]\nwatch_file = false\n");
    write(&p.config, &edited);
    let (status, _) = p.admin(reqwest::Method::POST, "/reload", None, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let (_, routes) = p.admin(reqwest::Method::GET, "/routes", None, Some(TOKEN)).await;
    let stage_of = |name: &str| {
        routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).map(|r| r["stage"].clone())
    };
    assert_eq!(stage_of("catalog"), Some("shadow".into()), "{routes}");
    assert_eq!(stage_of("other"), Some("service".into()), "{routes}");
    assert_eq!(p.get("/api/products/1", &[]).await.1.as_deref(), Some("monolith"));
    // Nor does going back through monolith open it: shadow → monolith → service is refused.
    write(&p.config, &config_text(&ups, &route("monolith")).replace("[proxy]\n", "[proxy]\nwatch_file = false\n"));
    assert_eq!(p.admin(reqwest::Method::POST, "/reload", None, Some(TOKEN)).await.0, 200);
    let (status, body) = p.set_stage("catalog", "service", None).await;
    assert_eq!(status, 409, "{body}");
    // Force is the one way through, and it is audited.
    let forced = serde_json::json!({"stage": "service", "force": true, "reason": "tested elsewhere"});
    assert_eq!(p.admin(reqwest::Method::PUT, "/routes/catalog", Some(forced), Some(TOKEN)).await.0, 200);
    assert_eq!(p.get("/api/products/1", &[]).await.1.as_deref(), Some("catalog"));
    let (_, audit) = p.admin(reqwest::Method::GET, "/audit?route=catalog", None, Some(TOKEN)).await;
    let last = audit["entries"].as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert!(last["why"].as_str().unwrap_or_default().contains("forced past the shadow gate"), "{audit}");
}
