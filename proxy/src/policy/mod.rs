//! The proxy's rules, in one place and as plain functions: no Pingora, no tokio, no file or
//! network I/O, so each is tested table by table without sockets, and every instance of a fleet
//! decides alike from the same inputs.
//!
//! - [`model`]: what a route is (template, stage, percent, cohort, shadow and rollout settings).
//! - [`route`]: the routing decision, [`route::select`], with what it decides about fallback
//!   and mirroring.
//! - [`stage`]: which stage changes are allowed (the shadow gate, the expected position).
//! - [`judge`]: the verdict on a canary step, comparing the service with the monolith as
//!   automated canary analysis does.
//! - [`diff`]: comparing two answers (status, headers, JSON bodies) for the shadow stage.

pub mod diff;
pub mod judge;
pub mod model;
pub mod route;
pub mod stage;
