//! Progressive rollout: a route in stage `canary` with a `rollout` policy has its percent raised
//! step by step, and goes back to the monolith when the service does worse than the monolith.
//!
//! The controller ([`run`]) looks at every such route every [`TICK`]. For the current step it
//! takes the traffic since the step began (two snapshots of the route's counters, so nothing is
//! added to the request path; the service's fallbacks count as its errors) and hands it, with
//! the monolith's traffic on the same route since the rollout began, to
//! [`crate::policy::judge::judge`]: inconclusive below the minimum sample (wait), rollback on an
//! error rate shown too high (a confidence bound) or a latency both significantly and
//! materially worse (a rank test and the p99 bound), advance after `dwell`; after the last
//! step, if it is 100 %, the route moves to stage `service`.
//!
//! Every change goes through [`Shared::set_stage`], so it is kept by the store (the config file,
//! or the shared store) with its audit record, with its measurements as the reason. The change is conditional on the route
//! still being where the controller saw it, so an operator's change in between wins. With a
//! shared store the step and when it began are kept there, so a restarted instance resumes the
//! rollout at its step with the dwell already served (the counters' window starts afresh);
//! with the config file, progress lives in memory and a rollout resumes from the file's
//! percent with a fresh window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::RouteMetrics;
use crate::policy::judge::{Tally, Verdict, Window, judge, step_for};
use crate::policy::model::{Percent, Stage};
use crate::state::{Change, RolloutStatus, Shared};
use crate::store::RolloutRecord;

/// How often the controller looks at the routes.
pub const TICK: Duration = Duration::from_millis(250);
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

/// The window between snapshots: the step's start, the rollout's start, and now. The service's
/// fallbacks count as its errors.
pub fn window(step_start: &Snapshot, rollout_start: &Snapshot, now: &Snapshot, elapsed: Duration) -> Window {
    let mut service = now.service.since(&step_start.service);
    let fallbacks = now.fallbacks.saturating_sub(step_start.fallbacks);
    service.requests += fallbacks;
    service.errors += fallbacks;
    Window { service, baseline: now.monolith.since(&rollout_start.monolith), elapsed }
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
    /// Rollouts kept by a shared store before this controller started (a restart resumes them).
    saved: Mutex<HashMap<String, RolloutRecord>>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Keeps where a route's rollout is (with a shared store): the step begun now.
fn save(shared: &Shared, route: &str, step: usize, percent: Percent) {
    shared.save_rollout(route, Some(RolloutRecord { step, percent, step_started_ms: unix_ms() }));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rollouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        lock(&self.routes)
    }

    /// Tells the shared state where each rollout is, for the admin API.
    fn publish(&self, shared: &Shared) {
        let rt = shared.current();
        let board = self
            .lock()
            .iter()
            .filter_map(|(name, p)| {
                let policy = rt.config.routes.iter().find(|r| &r.name == name)?.rollout.as_ref()?;
                Some((
                    name.clone(),
                    RolloutStatus {
                        steps: policy.steps.iter().map(|s| s.as_percent()).collect(),
                        step: p.step + 1,
                        status: p.status.clone(),
                        at_step_seconds: p.step_started.elapsed().as_secs_f64(),
                    },
                ))
            })
            .collect();
        shared.publish_rollouts(board);
    }
}

/// One pass over the routes (called every [`TICK`] by [`run`]; blocking: it may write files).
pub fn tick(shared: &Shared, rollouts: &Rollouts) {
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
        let restart = match rollouts.lock().get(&route.name) {
            Some(p) if p.percent == route.percent && policy.steps.get(p.step) == Some(&p.percent) => None,
            Some(p) => Some(Some(p.rollout_start.clone())),
            None => Some(None),
        };
        // A rollout this controller has not seen but the store kept, still at its step's percent:
        // resumed at that step, its dwell counted from when the step began.
        let resumed =
            restart.as_ref().is_some_and(Option::is_none).then(|| lock(&rollouts.saved).remove(&route.name)).flatten();
        if let Some(r) = resumed.filter(|r| r.percent == route.percent && policy.steps.get(r.step) == Some(&r.percent))
        {
            let age = Duration::from_millis(unix_ms().saturating_sub(r.step_started_ms));
            rollouts.lock().insert(
                route.name.clone(),
                Progress {
                    step: r.step,
                    percent: r.percent,
                    step_started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                    step_start: now.clone(),
                    rollout_start: now.clone(),
                    status: format!("resumed at step {} after a restart", r.step + 1),
                },
            );
            continue;
        }
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
            save(shared, &route.name, step, target);
            rollouts.lock().insert(
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
        let mut progress = rollouts.lock();
        let Some(p) = progress.get_mut(&route.name) else { continue };
        let window = window(&p.step_start, &p.rollout_start, &now, p.step_started.elapsed());
        let verdict = judge(policy, p.step, &window);
        let (change, next) = match &verdict {
            Verdict::Hold(why) | Verdict::Inconclusive(why) => {
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
        drop(progress);
        match shared.set_stage(&route.name, change) {
            Ok(view) => {
                if let Verdict::Rollback(why) = &verdict {
                    tracing::error!(route = %route.name, "rollout rolled back to the monolith: {why}");
                }
                let mut progress = rollouts.lock();
                match next {
                    Some(step) => {
                        let percent = policy.steps[step];
                        save(shared, &route.name, step, percent);
                        progress.insert(
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
                        progress.remove(&route.name);
                        shared.save_rollout(&route.name, None);
                    }
                }
            }
            Err(e) => tracing::warn!(route = %route.name, "rollout change not applied: {e}"),
        }
    }
    let ended: Vec<String> = rollouts.lock().keys().filter(|name| !live.contains(name)).cloned().collect();
    for name in ended {
        rollouts.lock().remove(&name);
        shared.save_rollout(&name, None);
    }
    rollouts.publish(shared);
}

/// The counters of the route named `name` in the live runtime (the one `set_stage` just swapped in,
/// whose route order may differ from the runtime a tick started with).
fn snapshot_of(shared: &Shared, name: &str) -> Option<Snapshot> {
    let rt = shared.current();
    rt.config.routes.iter().position(|r| r.name == name).map(|i| Snapshot::of(&rt.route_metrics[i]))
}

/// The controller: a [`tick`] every [`TICK`], off the async threads, until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    // The controller owns the rollouts' progress; the shared state only shows it.
    let rollouts = Arc::new(Rollouts::default());
    let s = shared.clone();
    if let Ok(saved) = tokio::task::spawn_blocking(move || s.saved_rollouts()).await {
        *lock(&rollouts.saved) = saved;
    }
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let (s, r) = (shared.clone(), rollouts.clone());
        let _ = tokio::task::spawn_blocking(move || tick(&s, &r)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::judge::LATENCY_BUCKETS;

    fn tally(requests: u64, errors: u64, seconds: f64) -> Tally {
        let buckets = LATENCY_BUCKETS.iter().map(|b| if seconds <= *b { requests } else { 0 }).collect();
        Tally { requests, errors, samples: requests, buckets }
    }

    #[test]
    fn windows_count_fallbacks_as_service_errors() {
        let start = Snapshot { service: tally(10, 1, 0.001), monolith: tally(100, 0, 0.001), fallbacks: 2 };
        let now = Snapshot { service: tally(30, 2, 0.001), monolith: tally(150, 1, 0.001), fallbacks: 5 };
        let w = window(&start, &start, &now, Duration::ZERO);
        assert_eq!((w.service.requests, w.service.errors), (23, 4));
        assert_eq!((w.baseline.requests, w.baseline.errors), (50, 1));
    }
}
