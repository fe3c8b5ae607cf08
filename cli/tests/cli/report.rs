//! The HTML report in a real browser (headless Chromium through chromedriver, the W3C
//! WebDriver protocol): it loads from `file://`, a click on a service shows its
//! details, a click on a dependency its evidence, and a what-if move recomputes the
//! metrics and dependencies exactly as `ficus analyze --partition` does with the
//! partition the page exports. A screenshot is saved in the test's temp dir.
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped with a message when they are
//! missing, unless `FICUS_REQUIRE_BROWSER=1` (CI) makes them required. `FICUS_SCREENSHOT_DIR`
//! keeps a copy of the screenshot.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The running chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(status.is_success(), "{method} {path} → {status}: {v}");
        v["value"].clone()
    }

    async fn script(&self, js: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": js, "args": []}))).await
    }

    async fn find(&self, css: &str) -> String {
        let v =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        // The W3C element reference is the one value of the object.
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap_or("").to_string()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn ficus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ficus")).args(args).env("NO_COLOR", "1").output().expect("ficus runs")
}

/// (from, to, calls, tables) of each dependency in a report or page view.
fn deps(v: &Value) -> Vec<(String, String, u64, Vec<String>)> {
    let mut out: Vec<_> = v
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            let tables = d["tables"].as_array().expect("tables").iter().map(|t| t.as_str().unwrap_or("").to_string());
            (
                d["from"].as_str().unwrap_or("").to_string(),
                d["to"].as_str().unwrap_or("").to_string(),
                d["calls"].as_u64().unwrap_or(0),
                tables.collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        let required = std::env::var("FICUS_REQUIRE_BROWSER").as_deref() == Ok("1");
        assert!(
            !required,
            "FICUS_REQUIRE_BROWSER=1 but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-monolith");
    let shop = shop.to_str().expect("utf-8");
    let html = dir.path().join("shop.html");
    let o = ficus(&["analyze", shop, "--format", "html", "--out", html.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&html).expect("page");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "the page loads nothing from the network");

    let port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let root = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = match http.get(format!("{root}/status")).send().await {
            Ok(r) => r.json::<Value>().await.map(|v| v["value"]["ready"] == json!(true)).unwrap_or(false),
            Err(_) => false,
        };
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "chromedriver did not become ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = dir.path().join("profile");
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", format!("--user-data-dir={}", profile.display())]}}}});
    let resp: Value =
        http.post(format!("{root}/session")).json(&caps).send().await.expect("session").json().await.expect("json");
    let session = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_string();
    let b = Browser { http, base: format!("{root}/session/{session}") };

    b.call(reqwest::Method::POST, "/url", Some(json!({"url": format!("file://{}", html.display())}))).await;
    let ready = b.script("return document.body.getAttribute('data-ready')").await;
    assert!(ready.is_string(), "the page's script ran: {ready}");
    let names = b.script("return [...document.querySelectorAll('#graph g.svc')].map(g => g.dataset.service)").await;
    for n in ["catalog", "orders", "cart", "users", "payments", "inventory", "notifications"] {
        assert!(names.as_array().expect("names").contains(&json!(n)), "{n} drawn in the graph: {names}");
    }

    // Click a service: its details.
    b.click("#graph g.svc[data-service='catalog'] circle").await;
    assert_eq!(b.text("#detail-title").await, "catalog");
    let details = b.text("#details").await;
    for want in ["/api/products/{id}", "Extraction order: #", "shop::catalog::repo", "Depends on", "Tables: owns"] {
        assert!(details.contains(want), "catalog's panel shows {want:?}:\n{details}");
    }

    // Click a dependency: the call sites behind it.
    let edge = b
        .script(
            "const p = document.querySelector('#graph path.dep[data-from=\"orders\"][data-to=\"catalog\"]');\
             if (!p) return null; p.dispatchEvent(new MouseEvent('click', {bubbles: true})); return p.dataset.to;",
        )
        .await;
    assert_eq!(edge, json!("catalog"), "the orders → catalog dependency is drawn");
    assert_eq!(b.text("#detail-title").await, "orders → catalog");
    let evidence = b.text("#evidence").await;
    assert!(evidence.contains("src/orders/") && evidence.contains(".rs:"), "evidence with file:line: {evidence}");

    // What-if: move the catalog's HTTP unit to inventory.
    let before = b.script("return window.ficus.current().metrics").await;
    b.click("#graph g.svc[data-service='catalog'] circle").await;
    b.click("select.move[data-unit='shop::catalog::http'] option[value='inventory']").await;
    assert!(b.text("#whatif").await.contains("1 move"), "the move is counted");
    let after = b.script("return window.ficus.current()").await;
    assert_ne!(after["metrics"], before, "the metrics are recomputed");
    let shown = b.text("#m-sm").await;
    assert_eq!(shown, after["metrics"]["sm"].to_string(), "the SM shown is the recomputed one");
    b.click("#graph g.svc[data-service='inventory'] circle").await;
    assert!(b.text("#details").await.contains("shop::catalog::http"), "inventory now lists the moved unit");

    // Export the partition; the analyzer computes the same from it.
    b.click("#export").await;
    let exported = b.script("return document.getElementById('partition-json').value").await;
    let file = dir.path().join("partition.json");
    std::fs::write(&file, exported.as_str().expect("partition text")).expect("write partition");
    let o = ficus(&["analyze", shop, "--partition", file.to_str().expect("utf-8"), "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).expect("report");
    assert_eq!(report["metrics"], after["metrics"], "page and analyzer agree on the edited partition's metrics");
    assert_eq!(deps(&report["dependencies"]), deps(&after["dependencies"]), "… and on its dependencies");
    let o = ficus(&["plan", shop, "--service", "inventory", "--partition", file.to_str().expect("utf-8")]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("/api/products/{id}"), "plan from it");

    let png = b.call(reqwest::Method::GET, "/screenshot", None).await;
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("decodes");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = dir.path().join("report-whatif.png");
    std::fs::write(&shot, &png).expect("write screenshot");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
    // FICUS_SCREENSHOT_DIR keeps a copy (the temp dir goes with the test).
    if let Some(keep) = std::env::var_os("FICUS_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, Path::new(&keep).join("report-whatif.png"));
    }
    b.call(reqwest::Method::DELETE, "", None).await;
}
