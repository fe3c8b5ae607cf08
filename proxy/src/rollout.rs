//! Progressive rollout: a route in stage `canary` with a `rollout` policy has its percent raised
//! step by step, and goes back to the monolith when the service does worse than the monolith.
//!
//! The controller ([`run`]) looks at every such route every [`TICK`]. For the current step it
//! takes the traffic since the step began (two snapshots of the route's counters, so nothing is
//! added to the request path) and [`judge`]s it against the monolith's traffic on the same route
//! since the rollout began:
//! - the service's error rate counts its 5xx answers and the requests that fell back to the
//!   monolith because it failed; it may exceed the monolith's by `max_error_rate_increase`. The
//!   rollout is rolled back as soon as the errors seen already exceed what `min_requests` allow,
//!   so a burst of errors does not wait for the sample to fill up;
//! - the service's p99 latency may be at most the monolith's × `max_p99_ratio` + `p99_slack`
//!   (both estimated from the latency histogram's buckets, as Prometheus's `histogram_quantile`
//!   does), judged once each side has `min_requests` requests, and at least
//!   [`P99_MIN_SAMPLES`];
//! - after `dwell` and `min_requests` service requests within bounds, the percent moves to the
//!   next step; after the last step, if it is 100 %, the route moves to stage `service`.
//!
//! Every change goes through [`Shared::set_stage`], so it is written back to the config file and
//! to the audit log with its measurements as the reason. The change is conditional on the route
//! still being where the controller saw it, so an operator's change in between wins. Progress
//! lives in memory: after a restart a rollout resumes at the percent in the file, with a fresh
//! window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Percent, RolloutPolicy, Stage};
use crate::metrics::{RouteMetrics, Tally};
use crate::state::{Change, Shared};

/// How often the controller looks at the routes.
pub const TICK: Duration = Duration::from_millis(250);
/// Latencies are judged on at least this many answers a side, whatever `min_requests` says.
pub const P99_MIN_SAMPLES: u64 = 100;
/// Who the audit log names for the controller's changes.
pub const BY: &str = "rollout";

/// The counters of one route at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests the service answered.
    pub service: Tally,
    /// Requests the monolith answered.
    pub monolith: Tally,
    /// Requests that fell back from the service to the monolith.
    pub fallbacks: u64,
}

impl Snapshot {
    /// Reads a route's counters.
    pub fn of(m: &RouteMetrics) -> Snapshot {
        Snapshot { service: m.service.tally(), monolith: m.monolith.tally(), fallbacks: m.fallbacks.get() }
    }
}

/// The traffic a judgement looks at.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The service's attempts during the step: its answers, plus fallbacks counted as errors.
    pub service: Tally,
    /// The monolith's answers on the route since the rollout began.
    pub baseline: Tally,
    /// Time at the current step.
    pub elapsed: Duration,
}

impl Window {
    /// The window between snapshots: the step's start, the rollout's start, and now.
    pub fn between(step_start: &Snapshot, rollout_start: &Snapshot, now: &Snapshot, elapsed: Duration) -> Window {
        let mut service = now.service.since(&step_start.service);
        let fallbacks = now.fallbacks.saturating_sub(step_start.fallbacks);
        service.requests += fallbacks;
        service.errors += fallbacks;
        Window { service, baseline: now.monolith.since(&rollout_start.monolith), elapsed }
    }
}

/// What the controller does with a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Stay at this step; the reason says what it waits for.
    Hold(String),
    /// Move to the next step's percent.
    Advance(Percent, String),
    /// The last step is done at 100 %: stage `service`.
    Promote(String),
    /// Back to the monolith.
    Rollback(String),
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

/// Judges the current step of a rollout (pure: the controller and the tests call it).
pub fn judge(policy: &RolloutPolicy, step: usize, w: &Window) -> Verdict {
    let svc = &w.service;
    let base = &w.baseline;
    let allowed = base.error_rate() + policy.max_error_rate_increase;
    let n = policy.min_requests;
    // Errors beyond what min_requests allow cannot be made good by later successes.
    if svc.errors as f64 > allowed * n.max(svc.requests) as f64 {
        return Verdict::Rollback(format!(
            "service error rate {} ({} of {} requests, fallbacks included) is above the monolith's {} + {}",
            pct(svc.error_rate()),
            svc.errors,
            svc.requests,
            pct(base.error_rate()),
            pct(policy.max_error_rate_increase)
        ));
    }
    // A p99 of fewer than P99_MIN_SAMPLES answers is little more than their maximum.
    let n = n.max(P99_MIN_SAMPLES);
    if svc.samples < n {
        return Verdict::Hold(format!("{} of {n} service requests", svc.samples));
    }
    if base.samples < n {
        return Verdict::Hold(format!("{} of {n} monolith requests for a baseline", base.samples));
    }
    let (Some(svc_p99), Some(base_p99)) = (svc.p99(), base.p99()) else {
        return Verdict::Hold("no latency samples yet".to_owned());
    };
    let bound = base_p99 * policy.max_p99_ratio + policy.p99_slack.as_secs_f64();
    let measured = format!(
        "error rate {} (monolith {}), p99 {} (monolith {}), {} service requests",
        pct(svc.error_rate()),
        pct(base.error_rate()),
        ms(svc_p99),
        ms(base_p99),
        svc.requests
    );
    if svc_p99 > bound {
        return Verdict::Rollback(format!(
            "service p99 {} is above the monolith's {} × {} + {} ({measured})",
            ms(svc_p99),
            ms(base_p99),
            policy.max_p99_ratio,
            ms(policy.p99_slack.as_secs_f64())
        ));
    }
    if w.elapsed < policy.dwell {
        return Verdict::Hold(format!(
            "{:.0} s of {:.0} s at this step; {measured}",
            w.elapsed.as_secs_f64(),
            policy.dwell.as_secs_f64()
        ));
    }
    let at = policy.steps[step].as_percent();
    match policy.steps.get(step + 1) {
        Some(next) => Verdict::Advance(*next, format!("step {at}% held: {measured}")),
        None if policy.steps[step].basis_points() == 10_000 => {
            Verdict::Promote(format!("last step {at}% held: {measured}"))
        }
        None => Verdict::Hold(format!("rollout complete at its last step {at}%; {measured}")),
    }
}

/// Where a route's rollout is, for the admin API and `ficus routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The policy's steps.
    pub steps: Vec<f64>,
    /// The current step, from 1.
    pub step: usize,
    /// What the controller last decided.
    pub status: String,
}

/// A route's rollout in progress.
struct Progress {
    step: usize,
    percent: Percent,
    step_started: Instant,
    step_start: Snapshot,
    rollout_start: Snapshot,
    status: String,
}

/// The rollouts in progress, by route name.
#[derive(Default)]
pub struct Rollouts {
    routes: Mutex<HashMap<String, Progress>>,
}

impl Rollouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A route's rollout, if one is in progress.
    pub fn status(&self, route: &str, policy: &RolloutPolicy) -> Option<RolloutStatus> {
        self.lock().get(route).map(|p| RolloutStatus {
            steps: policy.steps.iter().map(|s| s.as_percent()).collect(),
            step: p.step + 1,
            status: p.status.clone(),
        })
    }
}

/// The step a rollout at `percent` (re)starts at: the last step at or below it (the first when
/// below all), so an operator who lowers the percent is never pushed above it. A last step of
/// 100 % is restarted one step lower: the monolith baseline needs monolith traffic.
fn step_for(policy: &RolloutPolicy, percent: Percent) -> usize {
    let at = policy.steps.iter().rposition(|s| *s <= percent).unwrap_or(0);
    if policy.steps[at].basis_points() == 10_000 { at.saturating_sub(1) } else { at }
}

/// One pass over the routes (called every [`TICK`] by [`run`]; blocking: it may write files).
pub fn tick(shared: &Shared) {
    let rt = shared.current();
    let mut live = Vec::new();
    for (i, route) in rt.config.routes.iter().enumerate() {
        let Some(policy) = &route.rollout else { continue };
        if route.stage != Stage::Canary {
            continue;
        }
        live.push(route.name.clone());
        let now = Snapshot::of(&rt.route_metrics[i]);
        // None: still where the controller left it, under the same steps. Otherwise a new
        // rollout (Some(None)), or the percent or the policy's steps changed by someone else
        // (Some(Some(start))): (re)start at the step that percent is at.
        let restart = match shared.rollouts.lock().get(&route.name) {
            Some(p) if p.percent == route.percent && policy.steps.get(p.step) == Some(&p.percent) => None,
            Some(p) => Some(Some(p.rollout_start.clone())),
            None => Some(None),
        };
        if let Some(previous_start) = restart {
            let step = step_for(policy, route.percent);
            let target = policy.steps[step];
            let rollout_start = previous_start.unwrap_or_else(|| now.clone());
            if target != route.percent {
                let why =
                    format!("rollout starts at step {} of {} ({}%)", step + 1, policy.steps.len(), target.as_percent());
                let change =
                    Change::new(Stage::Canary, Some(target)).by(BY).why(why).expecting(Stage::Canary, route.percent);
                if let Err(e) = shared.set_stage(&route.name, change) {
                    tracing::warn!(route = %route.name, "rollout could not start: {e}");
                    continue;
                }
            }
            shared.rollouts.lock().insert(
                route.name.clone(),
                Progress {
                    step,
                    percent: target,
                    step_started: Instant::now(),
                    step_start: now.clone(),
                    rollout_start,
                    status: "starting".to_owned(),
                },
            );
            continue;
        }
        let mut rollouts = shared.rollouts.lock();
        let Some(p) = rollouts.get_mut(&route.name) else { continue };
        let window = Window::between(&p.step_start, &p.rollout_start, &now, p.step_started.elapsed());
        let verdict = judge(policy, p.step, &window);
        let (change, next) = match &verdict {
            Verdict::Hold(why) => {
                p.status = why.clone();
                continue;
            }
            Verdict::Advance(to, why) => (Change::new(Stage::Canary, Some(*to)).why(why), Some(p.step + 1)),
            Verdict::Promote(why) => (Change::new(Stage::Service, None).why(why), None),
            Verdict::Rollback(why) => {
                (Change::new(Stage::Monolith, Some(Percent::default())).why(format!("rollback: {why}")), None)
            }
        };
        let change = change.by(BY).expecting(Stage::Canary, p.percent);
        let rollout_start = p.rollout_start.clone();
        drop(rollouts);
        match shared.set_stage(&route.name, change) {
            Ok(view) => {
                if let Verdict::Rollback(why) = &verdict {
                    tracing::error!(route = %route.name, "rollout rolled back to the monolith: {why}");
                }
                let mut rollouts = shared.rollouts.lock();
                match next {
                    Some(step) => {
                        let percent = policy.steps[step];
                        rollouts.insert(
                            route.name.clone(),
                            Progress {
                                step,
                                percent,
                                step_started: Instant::now(),
                                step_start: snapshot_of(shared, &route.name).unwrap_or_default(),
                                rollout_start,
                                status: format!("at {}% since the last step held", view.percent),
                            },
                        );
                    }
                    None => {
                        rollouts.remove(&route.name);
                    }
                }
            }
            Err(e) => tracing::warn!(route = %route.name, "rollout change not applied: {e}"),
        }
    }
    shared.rollouts.lock().retain(|name, _| live.contains(name));
}

/// The counters of the route named `name` in the live runtime (the one `set_stage` just swapped in,
/// whose route order may differ from the runtime a tick started with).
fn snapshot_of(shared: &Shared, name: &str) -> Option<Snapshot> {
    let rt = shared.current();
    rt.config.routes.iter().position(|r| r.name == name).map(|i| Snapshot::of(&rt.route_metrics[i]))
}

/// The controller: a [`tick`] every [`TICK`], off the async threads, until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || tick(&s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LATENCY_BUCKETS;

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            steps: [5.0, 50.0, 100.0].iter().map(|p| Percent::from_percent(*p).unwrap()).collect(),
            dwell: Duration::from_secs(10),
            min_requests: 100,
            max_error_rate_increase: 0.01,
            max_p99_ratio: 1.5,
            p99_slack: Duration::from_millis(5),
        }
    }

    /// `requests` answers, `errors` of them 5xx, all with the latency `seconds`.
    fn tally(requests: u64, errors: u64, seconds: f64) -> Tally {
        let buckets = LATENCY_BUCKETS.iter().map(|b| if seconds <= *b { requests } else { 0 }).collect();
        Tally { requests, errors, samples: requests, buckets }
    }

    fn window(service: Tally, baseline: Tally, secs: u64) -> Window {
        Window { service, baseline, elapsed: Duration::from_secs(secs) }
    }

    #[test]
    fn a_healthy_step_advances_after_its_dwell_and_sample() {
        let p = policy();
        let ok = |n, secs| judge(&p, 0, &window(tally(n, 0, 0.002), tally(2000, 1, 0.002), secs));
        assert!(matches!(ok(99, 60), Verdict::Hold(w) if w.contains("99 of 100 service requests")));
        assert!(matches!(ok(100, 9), Verdict::Hold(w) if w.contains("9 s of 10 s")));
        assert_eq!(ok(100, 10), Verdict::Advance(Percent::from_percent(50.0).unwrap(), ok_reason(&p)));
        let last = judge(&p, 2, &window(tally(100, 0, 0.002), tally(2000, 0, 0.002), 10));
        assert!(matches!(last, Verdict::Promote(w) if w.starts_with("last step 100% held")));
    }

    fn ok_reason(p: &RolloutPolicy) -> String {
        match judge(p, 0, &window(tally(100, 0, 0.002), tally(2000, 1, 0.002), 10)) {
            Verdict::Advance(_, why) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_burst_of_errors_rolls_back_before_the_sample_is_full() {
        let p = policy();
        // The monolith fails 1 in 1000: 1.1 % of 100 requests is 1.1 errors allowed.
        let base = tally(1000, 1, 0.002);
        assert!(matches!(judge(&p, 0, &window(tally(10, 1, 0.002), base.clone(), 1)), Verdict::Hold(_)));
        let v = judge(&p, 0, &window(tally(10, 2, 0.002), base.clone(), 1));
        assert!(
            matches!(&v, Verdict::Rollback(w) if w.contains("service error rate 20.00% (2 of 10 requests")),
            "{v:?}"
        );
        // With a full sample the rate itself decides: 3 of 200 is 1.5 % > 1.1 %.
        assert!(matches!(judge(&p, 0, &window(tally(200, 3, 0.002), base.clone(), 60)), Verdict::Rollback(_)));
        assert!(matches!(judge(&p, 0, &window(tally(200, 2, 0.002), base, 60)), Verdict::Advance(..)));
    }

    #[test]
    fn a_slow_service_rolls_back_and_small_jitter_does_not() {
        let p = policy();
        let base = tally(1000, 0, 0.004);
        // 4 ms × 1.5 + 5 ms = 11 ms allowed.
        let v = judge(&p, 0, &window(tally(100, 0, 0.02), base.clone(), 60));
        assert!(matches!(&v, Verdict::Rollback(w) if w.contains("service p99")), "{v:?}");
        assert!(matches!(judge(&p, 0, &window(tally(100, 0, 0.009), base, 60)), Verdict::Advance(..)));
    }

    #[test]
    fn a_step_waits_for_a_monolith_baseline() {
        let v = judge(&policy(), 0, &window(tally(100, 0, 0.002), tally(50, 0, 0.002), 60));
        assert!(matches!(&v, Verdict::Hold(w) if w.contains("50 of 100 monolith requests")), "{v:?}");
    }

    #[test]
    fn latencies_need_a_hundred_answers_whatever_min_requests_says() {
        let p = RolloutPolicy { min_requests: 20, ..policy() };
        // One slow answer in 30 would be their p99: not judged yet.
        let v = judge(&p, 0, &window(tally(30, 0, 0.5), tally(2000, 0, 0.002), 60));
        assert!(matches!(&v, Verdict::Hold(w) if w.contains("30 of 100 service requests")), "{v:?}");
        // Errors are still judged at once against min_requests: 1 % of 20 is 0.2 errors, so the
        // second error rolls back (and so would the first).
        assert!(matches!(judge(&p, 0, &window(tally(5, 2, 0.002), tally(2000, 0, 0.002), 1)), Verdict::Rollback(_)));
    }

    #[test]
    fn steps_are_found_from_the_percent() {
        let p = policy();
        let at = |x: f64| step_for(&p, Percent::from_percent(x).unwrap());
        // Steps 5, 50, 100: down to a step, never up past the operator; 100 % restarts at 50 %.
        assert_eq!((at(0.0), at(5.0), at(30.0), at(50.0), at(99.0), at(100.0)), (0, 0, 0, 1, 1, 1));
    }

    #[test]
    fn windows_count_fallbacks_as_service_errors() {
        let start = Snapshot { service: tally(10, 1, 0.001), monolith: tally(100, 0, 0.001), fallbacks: 2 };
        let now = Snapshot { service: tally(30, 2, 0.001), monolith: tally(150, 1, 0.001), fallbacks: 5 };
        let w = Window::between(&start, &start, &now, Duration::ZERO);
        assert_eq!((w.service.requests, w.service.errors), (23, 4));
        assert_eq!((w.baseline.requests, w.baseline.errors), (50, 1));
    }
}
