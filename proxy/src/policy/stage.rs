//! Which stage changes are allowed. One rule set for every path into a stage: the admin API,
//! `ficus stage`, the rollout controller, and a reload of an edited config file.
//!
//! - **The expected position.** A change may say where it expects the route to be (the rollout
//!   controller always does): if the route moved meanwhile, the change is refused, so an
//!   operator's change in between wins.
//! - **The shadow gate.** A route that is in `shadow`, or has been shadowed before, may not go
//!   to `canary` or `service` until its shadow comparisons allow it: at least
//!   `shadow_min_compared` comparisons with a mismatch rate under `shadow_max_mismatch`. Going
//!   back through `monolith` does not reset that (otherwise shadow → monolith → service would
//!   skip it). A route already serving (canary or service) moves freely between them. `force`
//!   is the one way past the gate, and the change then says so (for the audit log).

use crate::policy::model::{Percent, RouteSpec, Stage};

/// Where a route is: its stage and its canary percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The stage.
    pub stage: Stage,
    /// The canary percent (kept in the other stages, for the next canary).
    pub percent: Percent,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stage {
            Stage::Canary => write!(f, "canary {}%", self.percent.as_percent()),
            s => f.write_str(s.as_str()),
        }
    }
}

/// A requested move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Move {
    /// The stage asked for.
    pub stage: Stage,
    /// The percent asked for; unchanged when `None`.
    pub percent: Option<Percent>,
    /// Past the shadow gate even when the comparisons do not allow it.
    pub force: bool,
    /// Only if the route is still here.
    pub expect: Option<Position>,
}

/// What a route's shadow has shown, fleet-wide: the shadow gate's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowRecord {
    /// The route has been in stage shadow (its comparisons are on record).
    pub shadowed: bool,
    /// Comparisons made.
    pub compared: u64,
    /// Of which with a difference that is not noise.
    pub mismatched: u64,
}

/// What to do with an allowed move.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    /// The route is already there: nothing to write, nothing to audit.
    Unchanged,
    /// Move it; `forced` holds the gate's reason when `force` took it past the gate.
    To {
        /// Where it goes.
        position: Position,
        /// Why the gate would have refused, when forced past it.
        forced: Option<String>,
    },
}

/// Why a move is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The route is no longer where the move expected it.
    Moved {
        /// Where it is now.
        now: Position,
    },
    /// The shadow gate: the reason.
    Gate(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Moved { now } => write!(f, "the route moved to {now} meanwhile"),
            Refused::Gate(reason) => {
                write!(f, "its shadow comparisons do not allow it yet: {reason} (force overrides)")
            }
        }
    }
}

/// Whether `route`, now at `from`, may make `m`, given what its shadow has shown.
pub fn decide(route: &RouteSpec, from: Position, m: &Move, shadow: &ShadowRecord) -> Result<Allowed, Refused> {
    if let Some(expected) = m.expect
        && expected != from
    {
        return Err(Refused::Moved { now: from });
    }
    let to = Position { stage: m.stage, percent: m.percent.unwrap_or(from.percent) };
    if to == from {
        return Ok(Allowed::Unchanged);
    }
    let serving_already = matches!(from.stage, Stage::Canary | Stage::Service);
    let was_shadowed = from.stage == Stage::Shadow || shadow.shadowed;
    let mut forced = None;
    if was_shadowed
        && !serving_already
        && matches!(to.stage, Stage::Canary | Stage::Service)
        && let Some(reason) = gate(shadow, route.shadow_min_compared, route.shadow_max_mismatch)
    {
        if !m.force {
            return Err(Refused::Gate(reason));
        }
        forced = Some(reason);
    }
    Ok(Allowed::To { position: to, forced })
}

/// Why a route may not leave shadow yet; `None` when its comparisons allow it.
pub fn gate(shadow: &ShadowRecord, min_compared: u64, max_mismatch: f64) -> Option<String> {
    if shadow.compared < min_compared {
        return Some(format!("{} comparisons so far, {min_compared} needed", shadow.compared));
    }
    let rate = if shadow.compared == 0 { 0.0 } else { shadow.mismatched as f64 / shadow.compared as f64 };
    if shadow.compared > 0 && rate >= max_mismatch {
        return Some(format!(
            "mismatch rate {:.2}% ({} of {}) is not under {:.2}%",
            rate * 100.0,
            shadow.mismatched,
            shadow.compared,
            max_mismatch * 100.0
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route() -> RouteSpec {
        let text = "version = 1\n[listen]\nhttp = \"127.0.0.1:0\"\n[upstreams.monolith]\naddrs = [\"127.0.0.1:1\"]\n\
                    [upstreams.svc]\naddrs = [\"127.0.0.1:2\"]\n[default]\nupstream = \"monolith\"\n[[routes]]\n\
                    name = \"r\"\npath = \"/r\"\nupstream = \"svc\"\nshadow_min_compared = 100\nshadow_max_mismatch = 0.01\n";
        Config::parse(text, std::path::Path::new("t.toml")).unwrap().routes.remove(0)
    }

    fn at(stage: Stage, percent: f64) -> Position {
        Position { stage, percent: Percent::from_percent(percent).unwrap() }
    }

    fn to(stage: Stage) -> Move {
        Move { stage, percent: None, force: false, expect: None }
    }

    #[test]
    fn moves_by_where_the_route_is_and_what_its_shadow_showed() {
        use Stage::*;
        let r = route();
        let never = ShadowRecord::default();
        let too_few = ShadowRecord { shadowed: true, compared: 99, mismatched: 0 };
        let too_different = ShadowRecord { shadowed: true, compared: 200, mismatched: 2 };
        let clean = ShadowRecord { shadowed: true, compared: 200, mismatched: 1 };
        // (what, from, move, shadow) → allowed?
        type Case<'a> = (&'a str, Position, Move, ShadowRecord, Result<(), &'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("never shadowed: straight to canary", at(Monolith, 0.0), to(Canary), never, Ok(())),
            ("from shadow, too few comparisons", at(Shadow, 0.0), to(Canary), too_few, Err("99 comparisons")),
            (
                "from shadow, too many mismatches",
                at(Shadow, 0.0),
                to(Service),
                too_different,
                Err("mismatch rate 1.00%"),
            ),
            ("from shadow, clean", at(Shadow, 0.0), to(Canary), clean, Ok(())),
            (
                "shadow → monolith → service skips nothing",
                at(Monolith, 0.0),
                to(Service),
                too_few,
                Err("99 comparisons"),
            ),
            ("back to monolith is always allowed", at(Shadow, 0.0), to(Monolith), too_few, Ok(())),
            ("into shadow is always allowed", at(Monolith, 0.0), to(Shadow), never, Ok(())),
            ("serving already: canary → service", at(Canary, 50.0), to(Service), too_few, Ok(())),
            ("force goes past the gate", at(Shadow, 0.0), Move { force: true, ..to(Service) }, too_few, Ok(())),
            (
                "the route moved meanwhile",
                at(Canary, 25.0),
                Move { expect: Some(at(Canary, 10.0)), ..to(Canary) },
                never,
                Err("moved to canary 25%"),
            ),
        ];
        for (what, from, m, shadow, want) in cases {
            let got = decide(&r, from, &m, &shadow);
            match (want, &got) {
                (Ok(()), Ok(_)) => {}
                (Err(part), Err(refused)) => assert!(refused.to_string().contains(part), "{what}: {refused}"),
                _ => panic!("{what}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_shadow_gate_needs_enough_comparisons_under_the_rate() {
        let mut r = ShadowRecord { shadowed: true, compared: 0, mismatched: 0 };
        assert!(gate(&r, 100, 0.01).unwrap().contains("0 comparisons so far, 100 needed"));
        (r.compared, r.mismatched) = (200, 2);
        assert!(gate(&r, 100, 0.01).unwrap().contains("mismatch rate 1.00% (2 of 200)"));
        r.mismatched = 1;
        assert_eq!(gate(&r, 100, 0.01), None);
        assert_eq!(gate(&ShadowRecord::default(), 0, 0.01), None);
    }

    #[test]
    fn a_move_to_where_the_route_is_changes_nothing_and_force_is_noted() {
        let r = route();
        let from = at(Stage::Canary, 25.0);
        assert_eq!(decide(&r, from, &to(Stage::Canary), &ShadowRecord::default()), Ok(Allowed::Unchanged));
        let m = Move { percent: Percent::from_percent(50.0), ..to(Stage::Canary) };
        assert_eq!(
            decide(&r, from, &m, &ShadowRecord::default()),
            Ok(Allowed::To { position: at(Stage::Canary, 50.0), forced: None })
        );
        let forced =
            decide(&r, at(Stage::Shadow, 0.0), &Move { force: true, ..to(Stage::Service) }, &ShadowRecord::default());
        assert!(
            matches!(forced, Ok(Allowed::To { forced: Some(ref why), .. }) if why.contains("0 comparisons so far"))
        );
    }
}
