//! The load generator counts what happened truthfully: no failures against a healthy
//! shop, every acknowledged order found afterwards, and failures when the shop goes away.

use std::time::Duration;

use ficus_walkthrough::load::{Load, LoadConfig};
use shop::{Application, Config, DbLocation};
use tokio::sync::oneshot;

async fn shop() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), DbLocation::SqliteDir(dir.path().into()));
    config.seed = true;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (base, stop, task, dir)
}

/// Waits until the load has sent `n` requests (bounded: fails after 60 s).
async fn until_requests(load: &Load, n: u64) {
    for _ in 0..6000 {
        if load.report().requests >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the load sent only {} requests in 60 s", load.report().requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_shop_serves_the_load_without_failures_and_keeps_every_order() {
    let (base, stop, task, _dir) = shop().await;
    let mut config = LoadConfig::new(&base);
    config.pause = Duration::from_millis(1);
    config.checkout_every = 2;
    let mut load = Load::start(config).await.unwrap();
    until_requests(&load, 300).await;
    let report = load.stop().await;
    assert_eq!(report.failures, 0, "{:?}", report.first_failures);
    assert!(report.orders_acknowledged > 0, "{report:?}");
    let check = load.verify_orders().await.unwrap();
    assert_eq!(check.acknowledged as u64, report.orders_acknowledged);
    assert_eq!(check.found, check.acknowledged);
    // Straight to the shop, no proxy: every catalog read is marked as unrouted.
    assert!(load.catalog_upstreams().values().all(|u| u.iter().eq(["-"])));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_when_the_shop_goes_away() {
    let (base, stop, task, _dir) = shop().await;
    let mut load = Load::start(LoadConfig::new(&base)).await.unwrap();
    until_requests(&load, 20).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let before = load.report().requests;
    until_requests(&load, before + 20).await;
    let report = load.stop().await;
    assert!(report.failures >= 10, "{report:?}");
    assert!(!report.first_failures.is_empty());
}
