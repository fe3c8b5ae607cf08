//! Rate limits per route and client key (`rate_limit = { per_second, key }`), on
//! pingora-limits' `Rate`: a count per key in fixed one-second windows, of which the last
//! complete window and the current one give a sliding estimate (Cloudflare's: the previous
//! window weighted by how much of it still overlaps the last second, plus the current one).
//! A request is admitted while that estimate is under the limit, and only admitted requests are
//! counted, so a client over the limit gets exactly the limit through, not zero.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_limits::rate::Rate;

use crate::policy::model::RateLimit;
use crate::policy::route::{RequestHead, StableHasher, cohort_key};

/// One route's limiter.
pub struct RouteLimiter {
    rate: Rate,
    spec: RateLimit,
}

impl RouteLimiter {
    fn new(spec: &RateLimit) -> RouteLimiter {
        RouteLimiter { rate: Rate::new(Duration::from_secs(1)), spec: spec.clone() }
    }

    /// Admits the request (and counts it), or says after how many seconds to retry.
    pub fn admit(&self, head: &RequestHead<'_>) -> Result<(), u64> {
        // The client's key; a request without it is counted by its address.
        let mut h = StableHasher::default();
        let keyed = cohort_key(&self.spec.key, head, |k| h.write(k)).is_some();
        if !keyed {
            match head.client_ip {
                Some(std::net::IpAddr::V4(ip)) => h.write(&ip.octets()),
                Some(std::net::IpAddr::V6(ip)) => h.write(&ip.octets()),
                None => {}
            }
        }
        let key = h.finish();
        let estimate = self
            .rate
            .rate_with(&key, |c| c.prev_samples as f64 * (1.0 - c.current_interval_fraction) + c.curr_samples as f64);
        if estimate >= self.spec.per_second as f64 {
            return Err(1);
        }
        self.rate.observe(&key, 1);
        Ok(())
    }
}

/// The limiters by route name, kept across reloads while a route's limit is unchanged.
#[derive(Default)]
pub struct Limiters {
    routes: Mutex<HashMap<String, Arc<RouteLimiter>>>,
}

impl Limiters {
    /// The limiter of a route with `spec`.
    pub fn get(&self, route: &str, spec: &RateLimit) -> Arc<RouteLimiter> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        match routes.get(route) {
            Some(l) if l.spec == *spec => l.clone(),
            _ => {
                let l = Arc::new(RouteLimiter::new(spec));
                routes.insert(route.to_owned(), l.clone());
                l
            }
        }
    }
}
