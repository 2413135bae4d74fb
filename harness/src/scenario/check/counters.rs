//! `sample` and `expect_grew`: counters of the guest's interfaces and of
//! the PF, compared across steps.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::scenario::format::ExpectGrew;

/// Prints `IF.STAT VALUE` for every interface of the guest's root
/// namespace and every file of its `statistics/`.
pub const GUEST_COUNTERS_CMD: &str = "for d in /sys/class/net/*; do n=${d##*/}; \
     for f in $d/statistics/*; do echo \"$n.${f##*/} $(cat $f)\"; done; done";

/// Counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// `IF.STAT` of the guest's interfaces.
    pub guest: BTreeMap<String, u64>,
    /// The PF's tables per VF, as serialised (`vf0.traffic.tx_frames`).
    pub pf: Value,
}

impl Sample {
    /// Parses [`GUEST_COUNTERS_CMD`]'s output; lines that are not
    /// `NAME NUMBER` (a counter the driver does not implement) are skipped.
    pub fn parse_guest(text: &str) -> BTreeMap<String, u64> {
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.trim().split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The value of a counter named as in [`ExpectGrew::counters`].
    pub fn get(&self, name: &str) -> Option<u64> {
        match name.strip_prefix("pf.") {
            Some(rest) => {
                let mut parts = rest.split('.');
                let vf = parts.next()?;
                let mut at = self.pf.get(vf)?.get("traffic")?;
                for part in parts {
                    at = at.get(part)?;
                }
                at.as_u64()
            }
            None => self.guest.get(name).copied(),
        }
    }
}

/// One counter across an `expect_grew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterDelta {
    /// The sample it is compared with.
    pub since: String,
    /// The counter.
    pub name: String,
    /// Its value in the sample.
    pub before: Option<u64>,
    /// Its value now.
    pub after: Option<u64>,
}

impl CounterDelta {
    /// Whether it grew.
    pub fn grew(&self) -> bool {
        matches!((self.before, self.after), (Some(b), Some(a)) if a > b)
    }
}

/// Compares the counters of `e` between `before` and `now`: the deltas,
/// and one line per counter that did not grow or does not exist.
pub fn expect_grew(
    e: &ExpectGrew,
    before: &Sample,
    now: &Sample,
) -> (Vec<CounterDelta>, Vec<String>) {
    let mut deltas = Vec::new();
    let mut problems = Vec::new();
    for name in &e.counters {
        let d = CounterDelta {
            since: e.since.clone(),
            name: name.clone(),
            before: before.get(name),
            after: now.get(name),
        };
        match (d.before, d.after) {
            (None, _) | (_, None) => problems.push(format!(
                "counter {name} does not exist (no such interface or statistic, or no such \
                 PF counter)"
            )),
            (Some(b), Some(a)) if a <= b => problems.push(format!(
                "{name} did not grow since `{}`: {b} then, {a} now",
                e.since
            )),
            _ => {}
        }
        deltas.push(d);
    }
    (deltas, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(guest: &[(&str, u64)], vf0_tx: u64) -> Sample {
        Sample {
            guest: guest.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            pf: serde_json::json!({"vf0": {"traffic": {"tx_frames": vf0_tx,
                "drops": {"no_filter_match": 0}}}}),
        }
    }

    #[test]
    fn guest_counters_parse_and_skip_junk() {
        let text = "bond0.tx_dropped 12\nlo.rx_packets 0\nvf0.weird cat: x: Invalid\n";
        let parsed = Sample::parse_guest(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["bond0.tx_dropped"], 12);
    }

    #[test]
    fn pf_and_guest_counters_resolve() {
        let s = sample(&[("bond0.tx_dropped", 3)], 7);
        assert_eq!(s.get("bond0.tx_dropped"), Some(3));
        assert_eq!(s.get("pf.vf0.tx_frames"), Some(7));
        assert_eq!(s.get("pf.vf0.drops.no_filter_match"), Some(0));
        assert_eq!(s.get("pf.vf1.tx_frames"), None);
        assert_eq!(s.get("bond1.tx_dropped"), None);
    }

    #[test]
    fn only_growth_passes() {
        let e = ExpectGrew {
            since: "before".into(),
            counters: vec![
                "bond0.tx_dropped".into(),
                "pf.vf0.tx_frames".into(),
                "nope.x".into(),
            ],
        };
        let before = sample(&[("bond0.tx_dropped", 3)], 7);
        let now = sample(&[("bond0.tx_dropped", 9)], 7);
        let (deltas, problems) = expect_grew(&e, &before, &now);
        assert!(deltas[0].grew() && !deltas[1].grew());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("pf.vf0.tx_frames did not grow since `before`: 7 then, 7 now"));
        assert!(problems[1].contains("nope.x does not exist"));
    }
}
