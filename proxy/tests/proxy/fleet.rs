//! Several proxy instances on one PostgreSQL store (`[state] store`): a change through any one
//! holds on all within a second, cohorts land alike everywhere, conflicting writes give one 409,
//! an unreachable store degrades without divergence or loss, and a restart keeps everything.
//! Each test makes its own database (skipped with a message when PostgreSQL is unreachable,
//! required in CI).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TOKEN, TestProxy, Upstream, config_text, eventually};

const ROUTE: &str = "[[routes]]\nname = \"cat\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\n\
                     stage = \"monolith\"\ncohort = \"header:x-user-id\"\n";

/// A TCP relay on port 0 to the PostgreSQL server: cutting it is the store going away for
/// whoever connects through it, without touching the server other tests use.
struct Relay {
    addr: SocketAddr,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let mut r = Relay { addr: "127.0.0.1:0".parse().unwrap(), target: target.to_owned(), task: None };
        r.up().await;
        r
    }

    /// Listens (again, on the same port) and relays every connection.
    async fn up(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every relayed connection.
    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

/// `postgres://user@host:port/db` → (`host:port`, a URL of the same database through `via`).
fn through(url: &str, via: SocketAddr) -> (String, String) {
    let (scheme_user, rest) = url.split_once('@').expect("the test URL names a user");
    let (hostport, db) = rest.split_once('/').expect("the test URL names a database");
    (hostport.to_owned(), format!("{scheme_user}@{via}/{db}"))
}

/// A fleet's config: the two upstreams, the route, the store.
fn fleet_config(mono: SocketAddr, svc: SocketAddr, store: &str, routes: &str) -> String {
    config_text(&[("monolith", mono), ("catalog", svc)], routes)
        .replace("[proxy]\n", &format!("[state]\nstore = \"{store}\"\n\n[proxy]\n"))
}

async fn route_of(p: &TestProxy, name: &str) -> Value {
    let (_, routes) = p.admin(Method::GET, "/routes", None, Some(TOKEN)).await;
    routes["routes"].as_array().and_then(|rs| rs.iter().find(|r| r["name"] == name).cloned()).unwrap_or(Value::Null)
}

/// Whether `p` shows `cat` at (stage, percent) and, for monolith and service, routes by it.
async fn shows(p: &TestProxy, stage: &str, percent: f64) -> bool {
    let r = route_of(p, "cat").await;
    if r["stage"] != stage || (stage == "canary" && r["percent"].as_f64() != Some(percent)) {
        return false;
    }
    match stage {
        "monolith" | "service" => {
            let want = if stage == "service" { "catalog" } else { "monolith" };
            p.get("/api/products/1", &[("x-user-id", "7")]).await.1.as_deref() == Some(want)
        }
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_holds_on_all_three_within_a_second() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let text = fleet_config(mono.addr, svc.addr, &url, ROUTE);
    let fleet = [TestProxy::start(&text).await, TestProxy::start(&text).await, TestProxy::start(&text).await];
    let plan = [("canary", 10.0), ("canary", 40.0), ("service", 0.0), ("monolith", 0.0), ("canary", 25.0)];
    let mut lags = Vec::new();
    for n in 0..100 {
        let (stage, percent) = plan[n % plan.len()];
        let through = &fleet[n % 3];
        let t0 = Instant::now();
        let (status, body) = through.set_stage("cat", stage, (stage == "canary").then_some(percent)).await;
        assert_eq!(status, 200, "change {n} through instance {}: {body}", n % 3);
        let mut pending: Vec<usize> = (0..3).collect();
        while !pending.is_empty() && t0.elapsed() < Duration::from_secs(5) {
            let mut still = Vec::new();
            for &i in &pending {
                if !shows(&fleet[i], stage, percent).await {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(pending.is_empty(), "change {n} ({stage} {percent}) not on instances {pending:?} after 5 s");
        lags.push(t0.elapsed());
    }
    lags.sort();
    let (p50, p99, max) = (lags[49], lags[98], lags[99]);
    eprintln!("fleet: 100 changes, all three instances routing by each: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?}");
    // The audit log is one, whichever instance is asked.
    let (_, audit) = fleet[2].admin(Method::GET, "/audit?route=cat", None, Some(TOKEN)).await;
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(100), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cohorts_land_alike_on_every_instance() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let text = fleet_config(mono.addr, svc.addr, &url, ROUTE);
    let fleet = [TestProxy::start(&text).await, TestProxy::start(&text).await, TestProxy::start(&text).await];
    assert_eq!(fleet[1].set_stage("cat", "canary", Some(40.0)).await.0, 200);
    for p in &fleet {
        assert!(eventually(Duration::from_secs(5), || shows(p, "canary", 40.0)).await);
    }
    use futures::StreamExt;
    let mut sides: Vec<Vec<String>> = Vec::new();
    for p in &fleet {
        let answers: Vec<(usize, String)> = futures::stream::iter(0..10_000usize)
            .map(|uid| async move {
                let r = p.get("/api/products/1", &[("x-user-id", &uid.to_string())]).await;
                (uid, r.1.unwrap_or_default())
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut side = vec![String::new(); 10_000];
        for (uid, who) in answers {
            side[uid] = who;
        }
        sides.push(side);
    }
    let differ = (0..10_000).filter(|&u| sides[0][u] != sides[1][u] || sides[0][u] != sides[2][u]).count();
    let share = sides[0].iter().filter(|s| *s == "catalog").count() as f64 / 10_000.0;
    assert_eq!(differ, 0, "cohorts that differ across instances");
    assert!((share - 0.40).abs() < 0.02, "share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conflicting_writes_give_one_success_and_one_409() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let text = fleet_config(mono.addr, svc.addr, &url, ROUTE);
    let (a, b) = (TestProxy::start(&text).await, TestProxy::start(&text).await);
    for round in 0..10 {
        let version = route_of(&a, "cat").await["version"].as_u64().expect("a version with a shared store");
        assert!(
            eventually(Duration::from_secs(5), || async {
                route_of(&b, "cat").await["version"].as_u64() == Some(version)
            })
            .await
        );
        let body = |percent: f64| json!({"stage": "canary", "percent": percent, "version": version});
        let (ra, rb) = tokio::join!(
            a.admin(Method::PUT, "/routes/cat", Some(body(10.0 + round as f64)), Some(TOKEN)),
            b.admin(Method::PUT, "/routes/cat", Some(body(60.0 + round as f64)), Some(TOKEN))
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {ra:?} {rb:?}");
        let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
        assert!(loser.to_string().contains("changed meanwhile"), "{loser}");
        // The winner's change is what both show: nothing lost, nothing mixed.
        let won = if ra.0 == 200 { 10.0 + round as f64 } else { 60.0 + round as f64 };
        for p in [&a, &b] {
            assert!(eventually(Duration::from_secs(5), || shows(p, "canary", won)).await, "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_degrades_and_nothing_diverges_or_is_lost() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let (server, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let mut relay = Relay::start(&server).await;
    let (_, via_relay) = through(&url, relay.addr);
    // Instance b reaches the store through the relay; a and c directly.
    let a = TestProxy::start(&fleet_config(mono.addr, svc.addr, &url, ROUTE)).await;
    let b = TestProxy::start(&fleet_config(mono.addr, svc.addr, &via_relay, ROUTE)).await;
    let c = TestProxy::start(&fleet_config(mono.addr, svc.addr, &url, ROUTE)).await;

    // b loses the store: it keeps serving its last state, says degraded, refuses changes.
    relay.down();
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.client.get(format!("{}/healthz", b.admin)).send().await.is_ok_and(|r| r.status() == 200)
                && b.client
                    .get(format!("{}/healthz", b.admin))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .starts_with("degraded")
        })
        .await,
        "b says degraded"
    );
    assert_eq!(b.get("/api/products/1", &[("x-user-id", "7")]).await.1.as_deref(), Some("monolith"), "b still serves");
    let (status, body) = b.set_stage("cat", "service", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("unreachable"), "{body}");
    let (_, metrics) = b.admin(Method::GET, "/metrics", None, Some(TOKEN)).await;
    assert!(metrics.as_str().unwrap().contains("ficus_state_store_up 0"), "{metrics}");
    // Meanwhile the others change the route several times (b hears none of it).
    for (stage, percent) in [("canary", 20.0), ("canary", 50.0), ("service", 0.0)] {
        assert_eq!(a.set_stage("cat", stage, (stage == "canary").then_some(percent)).await.0, 200);
    }
    assert!(eventually(Duration::from_secs(5), || shows(&c, "service", 0.0)).await);
    assert!(shows(&b, "monolith", 0.0).await, "b kept its last state");

    // The store returns: b catches up with every change it missed, no notification needed.
    relay.up().await;
    assert!(eventually(Duration::from_secs(10), || shows(&b, "service", 0.0)).await, "b caught up");
    let ok = b.client.get(format!("{}/healthz", b.admin)).send().await.unwrap().text().await.unwrap();
    assert_eq!(ok, "ok\n");
    // And changes through b work again and reach the others.
    assert_eq!(b.set_stage("cat", "canary", Some(33.0)).await.0, 200);
    for p in [&a, &c] {
        assert!(eventually(Duration::from_secs(5), || shows(p, "canary", 33.0)).await);
    }
    let (_, audit) = c.admin(Method::GET, "/audit?route=cat", None, Some(TOKEN)).await;
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(4), "no change lost: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stopped_and_restarted_mid_run_loses_nothing() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let (server, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    // Every instance reaches the store through a relay: cutting them all is the store stopping.
    let mut relays = Vec::new();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let relay = Relay::start(&server).await;
        let (_, via) = through(&url, relay.addr);
        fleet.push(TestProxy::start(&fleet_config(mono.addr, svc.addr, &via, ROUTE)).await);
        relays.push(relay);
    }
    assert_eq!(fleet[0].set_stage("cat", "canary", Some(25.0)).await.0, 200);
    for p in &fleet {
        assert!(eventually(Duration::from_secs(5), || shows(p, "canary", 25.0)).await);
    }
    // Clients keep sending while the store is away; every answer is the same everywhere.
    let clients = {
        let bases: Vec<String> = fleet.iter().map(|p| p.base.clone()).collect();
        let client = fleet[0].client.clone();
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0, 0);
            for round in 0..300usize {
                let mut sides = Vec::new();
                for base in &bases {
                    let r = client
                        .get(format!("{base}/api/products/1"))
                        .header("x-user-id", (round % 50).to_string())
                        .send()
                        .await;
                    sent += 1;
                    match r {
                        Ok(r) if r.status() == 200 => sides
                            .push(r.headers().get("x-ficus-upstream").and_then(|v| v.to_str().ok()).map(str::to_owned)),
                        _ => failed += 1,
                    }
                }
                assert!(sides.windows(2).all(|w| w[0] == w[1]), "round {round}: instances disagree: {sides:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (sent, failed)
        })
    };
    for r in &mut relays {
        r.down();
    }
    for p in &fleet {
        assert!(
            eventually(Duration::from_secs(10), || async { p.set_stage("cat", "service", None).await.0 == 503 }).await
        );
    }
    for r in &mut relays {
        r.up().await;
    }
    // The store is back: a change goes through and every instance takes it.
    assert!(
        eventually(Duration::from_secs(10), || async {
            fleet[1].set_stage("cat", "canary", Some(60.0)).await.0 == 200
        })
        .await
    );
    for p in &fleet {
        assert!(eventually(Duration::from_secs(5), || shows(p, "canary", 60.0)).await);
    }
    let (sent, failed) = clients.await.unwrap();
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while the store was away");
    let (_, audit) = fleet[2].admin(Method::GET, "/audit?route=cat", None, Some(TOKEN)).await;
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(2), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_comes_back_with_what_it_had() {
    let Some((_db, url)) = ficus_e2e::pg::create_database("ficus_fleet").await else { return };
    let (mono, svc) = (Upstream::start("monolith").await, Upstream::start("catalog").await);
    let routes = format!(
        "{ROUTE}\n[[routes]]\nname = \"shadowed\"\npath = \"/api/cart\"\nupstream = \"catalog\"\nstage = \"shadow\"\n\
         shadow_max_per_second = 0\n\n[[routes]]\nname = \"rolled\"\npath = \"/api/orders/{{*rest}}\"\nupstream = \"catalog\"\n\
         stage = \"canary\"\npercent = 10\ncohort = \"header:x-user-id\"\n[routes.rollout]\nsteps = [10, 50, 100]\n\
         dwell_seconds = 3600\nmin_requests = 1000\n"
    );
    let text = fleet_config(mono.addr, svc.addr, &url, &routes);
    let mut first = TestProxy::start(&text).await;
    assert_eq!(first.set_stage("cat", "canary", Some(30.0)).await.0, 200);
    // Shadow comparisons, flushed to the store every second.
    for _ in 0..30 {
        first.get("/api/cart", &[]).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            first.admin(Method::GET, "/diffs?route=shadowed", None, Some(TOKEN)).await.1["compared"].as_u64()
                == Some(30)
        })
        .await
    );
    // One flush after the last comparison (flushes run every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The rollout has started at its first step, some time ago.
    assert!(
        eventually(Duration::from_secs(5), || async { route_of(&first, "rolled").await["rollout"]["step"] == 1 }).await
    );
    let before = route_of(&first, "rolled").await["rollout"]["at_step_seconds"].as_f64().unwrap_or(0.0);
    first.stop();
    drop(first);

    // A new instance on the same store and config comes back with the stage, the shadow totals,
    // the rollout at its step (the time at the step carried over) and the audit log.
    let restarted = Instant::now();
    let second = TestProxy::start(&text).await;
    let cat = route_of(&second, "cat").await;
    assert_eq!((cat["stage"].as_str(), cat["percent"].as_f64()), (Some("canary"), Some(30.0)), "{cat}");
    let (_, diffs) = second.admin(Method::GET, "/diffs?route=shadowed", None, Some(TOKEN)).await;
    assert_eq!(diffs["compared"].as_u64(), Some(30), "{diffs}");
    assert!(
        eventually(Duration::from_secs(5), || async { route_of(&second, "rolled").await["rollout"]["step"] == 1 })
            .await
    );
    let after = route_of(&second, "rolled").await["rollout"]["at_step_seconds"].as_f64().unwrap_or(0.0);
    assert!(
        after >= before && after > restarted.elapsed().as_secs_f64(),
        "the step's time goes on from {before:.1} s, not from the restart: {after:.1} s"
    );
    let (_, audit) = second.admin(Method::GET, "/audit?route=cat", None, Some(TOKEN)).await;
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(1), "{audit}");
}
