//! The whole walkthrough, automatically, on SQLite: ten steps, every check green, no
//! failed request, every acknowledged order found.

use ficus_walkthrough::run::{Options, Reporter, run};

#[derive(Default)]
struct Recorder {
    steps: Vec<u8>,
    checks: Vec<(bool, String, String)>,
}

impl Reporter for Recorder {
    fn step(&mut self, number: u8, title: &str, _why: &str) -> bool {
        eprintln!("step {number}: {title}");
        self.steps.push(number);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_walkthrough_passes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::default();
    let summary = run(Options::new(dir.path().to_path_buf()), &mut recorder).await;
    let failed: Vec<&(bool, String, String)> = recorder.checks.iter().filter(|c| !c.0).collect();
    let summary = summary.unwrap_or_else(|e| panic!("{e}; failed checks: {failed:?}"));
    assert_eq!(recorder.steps, (1..=10).collect::<Vec<u8>>());
    assert!(failed.is_empty());
    assert!(recorder.checks.len() >= 20, "{} checks", recorder.checks.len());
    assert_eq!(summary.load.failures, 0);
    assert!(summary.orders.acknowledged > 0);
    assert_eq!(summary.orders.acknowledged, summary.orders.found);
    assert_eq!(summary.products_moved, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_before_a_step_stops_everything_it_started() {
    struct QuitAt(u8);
    impl Reporter for QuitAt {
        fn step(&mut self, number: u8, _: &str, _: &str) -> bool {
            number < self.0
        }
        fn check(&mut self, _: bool, _: &str, _: &str) {}
        fn note(&mut self, _: &str) {}
    }
    let dir = tempfile::tempdir().unwrap();
    let err = run(Options::new(dir.path().to_path_buf()), &mut QuitAt(4)).await.unwrap_err();
    assert!(matches!(err, ficus_walkthrough::run::WalkError::Stopped(4)), "{err}");
    // The proxy written at step 3 was stopped: its port no longer answers.
    let config = std::fs::read_to_string(dir.path().join("ficus.toml")).unwrap();
    let http = config.lines().find_map(|l| l.strip_prefix("http = ")).unwrap().trim_matches('"').to_string();
    assert!(std::net::TcpStream::connect(&http).is_err(), "the proxy on {http} still answers");
}
