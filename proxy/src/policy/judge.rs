//! The verdict on a canary step: is the service doing worse than the monolith on the same route?
//! Judged the way automated canary analysis does it (Netflix's Kayenta), not on one number:
//!
//! - **Enough traffic first.** Below `min_requests` answers on either side (and never fewer than
//!   [`MIN_SAMPLES`] for latencies) the verdict is [`Verdict::Inconclusive`]: the rollout waits,
//!   it neither promotes nor rolls back on a handful of requests. The one exception is an error
//!   rate already shown to be too high (below), which does not need more traffic to be shown.
//! - **Error rates with a confidence bound.** The service's errors (5xx and fallbacks) are a
//!   binomial sample; the lower end of its one-sided 95 % Wilson interval is compared with the
//!   monolith's rate plus `max_error_rate_increase`. Above it, the service is worse with 95 %
//!   confidence: rollback, however few requests that took. Otherwise the errors pass once the
//!   sample is large enough.
//! - **Latency by a rank test.** The two latency histograms are compared with the Mann-Whitney
//!   U test (their buckets are ordered categories; ties within a bucket count one half, and the
//!   variance is corrected for them). The service fails only when it is both significantly slower
//!   (one-sided p < 0.05) and materially so (its p99 above the monolith's × `max_p99_ratio` +
//!   `p99_slack`): a statistically certain but tiny shift does not roll back, and one slow
//!   outlier in a small sample does not either.
//! - **Dwell.** A step that passes is held for `dwell`, then the percent moves to the next step;
//!   after a last step of 100 % the route goes to stage `service`.

use std::time::Duration;

use crate::policy::model::{Percent, RolloutPolicy};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Latencies are judged on at least this many answers a side, whatever `min_requests` says.
pub const MIN_SAMPLES: u64 = 100;
/// One-sided 95 %: the z of the error-rate bound.
const Z_ERRORS: f64 = 1.645;
/// One-sided 5 %: the z beyond which the service is significantly slower.
const Z_LATENCY: f64 = 1.645;

/// A snapshot of one target's counters; two snapshots give the traffic between them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Latencies observed (the histogram's own count, which the buckets add up to).
    pub samples: u64,
    /// Cumulative count per bucket of [`LATENCY_BUCKETS`].
    pub buckets: Vec<u64>,
}

impl Tally {
    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            samples: self.samples.saturating_sub(earlier.samples),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The share of 5xx answers (0 when there was no request).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The 99th percentile latency in seconds, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without samples. Above the last bucket it
    /// is the last bound.
    pub fn p99(&self) -> Option<f64> {
        if self.samples == 0 {
            return None;
        }
        let rank = 0.99 * self.samples as f64;
        let mut lower = (0.0, 0u64);
        for (i, &count) in self.buckets.iter().enumerate() {
            let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            if count as f64 >= rank {
                let in_bucket = (count - lower.1) as f64;
                let fraction = if in_bucket == 0.0 { 1.0 } else { (rank - lower.1 as f64) / in_bucket };
                return Some(lower.0 + (upper - lower.0) * fraction);
            }
            lower = (upper, count);
        }
        Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1])
    }

    /// Samples per bucket (not cumulative), the last entry holding those above every bound.
    fn per_bucket(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.buckets.len() + 1);
        let mut before = 0;
        for &c in &self.buckets {
            out.push(c.saturating_sub(before));
            before = c.max(before);
        }
        out.push(self.samples.saturating_sub(before));
        out
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

/// What the rollout does with a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough traffic to judge: wait (the reason says for what).
    Inconclusive(String),
    /// Judged fine, but the step's dwell time is not over: stay.
    Hold(String),
    /// Move to the next step's percent.
    Advance(Percent, String),
    /// The last step is done at 100 %: stage `service`.
    Promote(String),
    /// Back to the monolith.
    Rollback(String),
}

/// The one-sided Wilson score interval of `errors` in `n` at `z`: (lower, upper).
pub fn wilson(errors: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = errors as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let d = 1.0 + z2 / n;
    (((centre - spread) / d).max(0.0), ((centre + spread) / d).min(1.0))
}

/// The Mann-Whitney U test of `service` against `baseline` on their latency histograms: the z of
/// "the service is slower" (positive: slower), with ties corrected for. `None` when either side
/// has no samples or every sample is tied.
pub fn mann_whitney_z(service: &Tally, baseline: &Tally) -> Option<f64> {
    let (x, y) = (service.per_bucket(), baseline.per_bucket());
    let (n, m) = (x.iter().sum::<u64>() as f64, y.iter().sum::<u64>() as f64);
    if n == 0.0 || m == 0.0 {
        return None;
    }
    // U: the pairs (service, baseline) in which the service's answer was slower, ties one half.
    let mut u = 0.0;
    let mut baseline_below = 0.0;
    let mut ties = 0.0;
    for i in 0..x.len().max(y.len()) {
        let (xi, yi) = (x.get(i).copied().unwrap_or(0) as f64, y.get(i).copied().unwrap_or(0) as f64);
        u += xi * (baseline_below + 0.5 * yi);
        baseline_below += yi;
        let t = xi + yi;
        ties += t * t * t - t;
    }
    let total = n + m;
    let variance = n * m / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    Some((u - n * m / 2.0) / variance.sqrt())
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

/// Judges the current step (`step`, from 0) of a rollout from the traffic in `w`.
pub fn judge(policy: &RolloutPolicy, step: usize, w: &Window) -> Verdict {
    let (svc, base) = (&w.service, &w.baseline);
    let allowed = base.error_rate() + policy.max_error_rate_increase;
    let (low, _) = wilson(svc.errors, svc.requests, Z_ERRORS);
    if low > allowed {
        return Verdict::Rollback(format!(
            "service error rate {} ({} of {} requests, fallbacks included; at least {} with 95% confidence) \
             is above the monolith's {} + {}",
            pct(svc.error_rate()),
            svc.errors,
            svc.requests,
            pct(low),
            pct(base.error_rate()),
            pct(policy.max_error_rate_increase)
        ));
    }
    let n = policy.min_requests.max(MIN_SAMPLES);
    if svc.samples < n {
        return Verdict::Inconclusive(format!("{} of {n} service requests", svc.samples));
    }
    if base.samples < n {
        return Verdict::Inconclusive(format!("{} of {n} monolith requests for a baseline", base.samples));
    }
    let (Some(svc_p99), Some(base_p99)) = (svc.p99(), base.p99()) else {
        return Verdict::Inconclusive("no latency samples yet".to_owned());
    };
    let z = mann_whitney_z(svc, base).unwrap_or(0.0);
    let bound = base_p99 * policy.max_p99_ratio + policy.p99_slack.as_secs_f64();
    let measured = format!(
        "error rate {} (monolith {}), p99 {} (monolith {}), Mann-Whitney z {z:.2}, {} service requests",
        pct(svc.error_rate()),
        pct(base.error_rate()),
        ms(svc_p99),
        ms(base_p99),
        svc.requests
    );
    if z > Z_LATENCY && svc_p99 > bound {
        return Verdict::Rollback(format!(
            "service is slower (rank test z {z:.2} > {Z_LATENCY}) and its p99 {} is above the monolith's {} × {} + {} \
             ({measured})",
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

/// The step a rollout at `percent` (re)starts at: the last step at or below it (the first when
/// below all), so an operator who lowers the percent is never pushed above it. A last step of
/// 100 % is restarted one step lower: the monolith baseline needs monolith traffic.
pub fn step_for(policy: &RolloutPolicy, percent: Percent) -> usize {
    let at = policy.steps.iter().rposition(|s| *s <= percent).unwrap_or(0);
    if policy.steps[at].basis_points() == 10_000 { at.saturating_sub(1) } else { at }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        spread(requests, errors, &[(seconds, requests)])
    }

    /// Answers with the given latencies (seconds, how many).
    fn spread(requests: u64, errors: u64, latencies: &[(f64, u64)]) -> Tally {
        let samples = latencies.iter().map(|l| l.1).sum();
        let buckets =
            LATENCY_BUCKETS.iter().map(|b| latencies.iter().filter(|l| l.0 <= *b).map(|l| l.1).sum()).collect();
        Tally { requests, errors, samples, buckets }
    }

    fn window(service: Tally, baseline: Tally, secs: u64) -> Window {
        Window { service, baseline, elapsed: Duration::from_secs(secs) }
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Inconclusive(_) => "inconclusive",
            Verdict::Hold(_) => "hold",
            Verdict::Advance(..) => "advance",
            Verdict::Promote(_) => "promote",
            Verdict::Rollback(_) => "rollback",
        }
    }

    #[test]
    fn verdicts_by_traffic() {
        let p = policy();
        let base = tally(2000, 2, 0.004);
        // (what, service, baseline, seconds at the step, step) → verdict
        let cases: Vec<(&str, Tally, Tally, u64, usize, &str)> = vec![
            ("too little service traffic", tally(99, 0, 0.004), base.clone(), 60, 0, "inconclusive"),
            ("too little monolith traffic", tally(200, 0, 0.004), tally(50, 0, 0.004), 60, 0, "inconclusive"),
            ("one error in ten is already too many", tally(10, 1, 0.004), base.clone(), 1, 0, "rollback"),
            ("no error in ten: wait", tally(10, 0, 0.004), base.clone(), 1, 0, "inconclusive"),
            ("3 errors in 200 may be chance", tally(200, 3, 0.004), base.clone(), 60, 0, "advance"),
            ("12 errors in 200 are not", tally(200, 12, 0.004), base.clone(), 60, 0, "rollback"),
            ("healthy, dwell not over", tally(200, 0, 0.004), base.clone(), 9, 0, "hold"),
            ("healthy after dwell", tally(200, 0, 0.004), base.clone(), 10, 0, "advance"),
            ("healthy at the last step of 100", tally(200, 0, 0.004), base.clone(), 10, 2, "promote"),
            ("five times slower", tally(200, 0, 0.02), base.clone(), 60, 0, "rollback"),
            ("slower but within the p99 bound", tally(200, 0, 0.009), base.clone(), 60, 0, "advance"),
        ];
        for (what, svc, baseline, secs, step, want) in cases {
            let v = judge(&p, step, &window(svc, baseline, secs));
            assert_eq!(kind(&v), want, "{what}: {v:?}");
        }
    }

    #[test]
    fn one_slow_outlier_is_not_a_slower_service() {
        // The monolith's latencies spread over a few buckets; the service's the same, but one
        // answer at 2 s: its p99 stays low, and the rank test sees no shift.
        let p = policy();
        let base = spread(2000, 0, &[(0.001, 1000), (0.004, 800), (0.02, 200)]);
        let svc = spread(200, 0, &[(0.001, 100), (0.004, 80), (0.02, 19), (2.0, 1)]);
        let z = mann_whitney_z(&svc, &base).unwrap();
        assert!(z.abs() < 1.0, "{z}");
        assert_eq!(kind(&judge(&p, 0, &window(svc, base.clone(), 60))), "advance");
        // A tail of 5 % at 200 ms moves the p99 past the bound and the ranks with it.
        let svc = spread(200, 0, &[(0.001, 90), (0.004, 80), (0.02, 20), (0.2, 10)]);
        let v = judge(&p, 0, &window(svc, base, 60));
        assert!(matches!(&v, Verdict::Rollback(w) if w.contains("rank test")), "{v:?}");
    }

    #[test]
    fn the_rank_test_sees_direction_and_ties() {
        let fast = tally(300, 0, 0.002);
        let slow = tally(300, 0, 0.02);
        assert!(mann_whitney_z(&slow, &fast).unwrap() > 10.0);
        assert!(mann_whitney_z(&fast, &slow).unwrap() < -10.0);
        // Everything in one bucket on both sides: no information, no verdict.
        assert_eq!(mann_whitney_z(&fast, &tally(100, 0, 0.002)), None);
        assert_eq!(mann_whitney_z(&Tally::default(), &fast), None);
    }

    #[test]
    fn the_error_bound_follows_wilson() {
        let (lo, hi) = wilson(1, 10, Z_ERRORS);
        assert!((lo - 0.0226).abs() < 5e-4 && (hi - 0.3477).abs() < 5e-4, "{lo} {hi}");
        assert_eq!(wilson(0, 0, Z_ERRORS), (0.0, 1.0));
        assert_eq!(wilson(0, 100, Z_ERRORS).0, 0.0);
    }

    #[test]
    fn steps_are_found_from_the_percent() {
        let p = policy();
        let at = |x: f64| step_for(&p, Percent::from_percent(x).unwrap());
        // Steps 5, 50, 100: down to a step, never up past the operator; 100 % restarts at 50 %.
        assert_eq!((at(0.0), at(5.0), at(30.0), at(50.0), at(99.0), at(100.0)), (0, 0, 0, 1, 1, 1));
    }

    #[test]
    fn p99_is_interpolated_in_its_bucket() {
        let t = spread(100, 0, &[(0.004, 98), (0.02, 2)]);
        // The 99th answer is the first of two in (10 ms, 25 ms].
        let p99 = t.p99().unwrap();
        assert!(p99 > 0.01 && p99 < 0.025, "{p99}");
        assert_eq!(Tally::default().p99(), None);
    }
}
