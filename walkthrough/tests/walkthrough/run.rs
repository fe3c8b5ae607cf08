//! Each extraction, automatically, on SQLite (in this process): every step run in order,
//! every check green, no failed request, every acknowledged order found, and each
//! extraction's own figures.

use ficus_walkthrough::engine::{Extraction, Options, Reporter, Summary, WalkError, run};

#[derive(Default)]
struct Recorder {
    steps: Vec<(u8, String)>,
    checks: Vec<(bool, String, String)>,
}

impl Reporter for Recorder {
    fn step(&mut self, number: u8, name: &str, title: &str, _why: &str) -> bool {
        eprintln!("step {number} {name}: {title}");
        self.steps.push((number, name.to_string()));
        true
    }

    fn check(&mut self, passed: bool, what: &str, evidence: &str) {
        eprintln!("  {} {what}: {evidence}", if passed { "ok" } else { "FAILED" });
        self.checks.push((passed, what.to_string(), evidence.to_string()));
    }

    fn note(&mut self, text: &str) {
        eprintln!("  - {text}");
    }
}

/// Runs `which` on SQLite; checks what every extraction must show and returns the summary
/// and the recorder.
async fn green(which: Extraction) -> (Summary, Recorder) {
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::default();
    let summary = run(&[which], Options::new(dir.path().to_path_buf()), &mut recorder).await;
    let failed: Vec<&(bool, String, String)> = recorder.checks.iter().filter(|c| !c.0).collect();
    let summary = summary.unwrap_or_else(|e| panic!("{e}; failed checks: {failed:?}"));
    let numbers: Vec<u8> = recorder.steps.iter().map(|s| s.0).collect();
    assert_eq!(numbers, (1..=summary.steps).collect::<Vec<u8>>());
    let names: Vec<&str> = recorder.steps.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(names[..3], ["record_golden", "analyze", "proxy_in_front"]);
    assert_eq!(names.last(), Some(&"finish"));
    assert!(failed.is_empty());
    assert_eq!(summary.load.failures, 0);
    assert!(summary.orders.acknowledged > 0);
    assert_eq!(summary.orders.acknowledged, summary.orders.found);
    (summary, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_walkthrough_passes_on_sqlite() {
    let (summary, recorder) = green(Extraction::Catalog).await;
    let names: Vec<&str> = recorder.steps.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        names[3..10],
        ["move_data", "compare", "canary", "cut_over", "rollback_drill", "switch_reads", "retire"]
    );
    assert!(recorder.checks.len() >= 20, "{} checks", recorder.checks.len());
    assert!(summary.figures.iter().any(|f| f.contains("200 products")), "{:?}", summary.figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_walkthrough_passes_on_sqlite() {
    let (summary, recorder) = green(Extraction::Notifications).await;
    let names: Vec<&str> = recorder.steps.iter().map(|s| s.1.as_str()).collect();
    assert!(names.contains(&"kill_drill"), "{names:?}");
    let checked = |what: &str| recorder.checks.iter().any(|c| c.0 && c.1.contains(what));
    assert!(checked("orders placed = events published = notifications stored"));
    assert!(checked("a forged session gets 401"));
    assert!(checked("no shopper was ever shown another's notification"));
    assert!(checked("after both restarts: nothing lost, nothing stored twice"));
    assert!(summary.figures.iter().any(|f| f.contains("0 duplicates, 0 lost")), "{:?}", summary.figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_walkthrough_passes_on_sqlite() {
    let (summary, recorder) = green(Extraction::Payments).await;
    let names: Vec<&str> = recorder.steps.iter().map(|s| s.1.as_str()).collect();
    assert!(names.contains(&"drill_slow") && names.contains(&"drill_down"), "{names:?}");
    let checked = |what: &str| recorder.checks.iter().any(|c| c.0 && c.1.contains(what));
    assert!(checked("the breaker opens"));
    assert!(checked("the breaker closes again"));
    assert!(checked("payments down: checkout answers 503"));
    assert!(checked("orders and charges agree (shoppers stopped)"));
    assert!(summary.load.checkouts_refused > 0, "the drills refused no checkout");
    assert!(summary.figures.iter().any(|f| f.contains("0 orders charged twice")), "{:?}", summary.figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_before_a_step_stops_everything_it_started() {
    struct QuitAt(u8);
    impl Reporter for QuitAt {
        fn step(&mut self, number: u8, _: &str, _: &str, _: &str) -> bool {
            number < self.0
        }
        fn check(&mut self, _: bool, _: &str, _: &str) {}
        fn note(&mut self, _: &str) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let err = run(&[Extraction::Catalog], Options::new(dir.path().to_path_buf()), &mut QuitAt(4)).await.unwrap_err();
    assert!(matches!(err, WalkError::Stopped(ref step) if step == "4 (move_data)"), "{err}");
    // The proxy written at step 3 was stopped: its port no longer answers.
    let config = std::fs::read_to_string(dir.path().join("ficus.toml")).unwrap();
    let http = config.lines().find_map(|l| l.strip_prefix("http = ")).unwrap().trim_matches('"').to_string();
    assert!(std::net::TcpStream::connect(&http).is_err(), "the proxy on {http} still answers");
}
