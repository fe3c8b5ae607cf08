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
