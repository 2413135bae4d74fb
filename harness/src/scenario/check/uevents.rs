//! What the uevent observer saw: `expect_uevents` and the summary in the
//! result.
//!
//! The observer (in the guest agent) looks at `/sys/class/net/IF/master`
//! the moment a net `add` uevent arrives, then waits up to 100 ms for it.
//! An add "without master" is one where a udev-less program reacting to
//! the uevent (cloud-init, a naive network manager) would have seen the
//! interface free to configure although it was about to be enslaved: the
//! exposure window of the hv_netvsc report.

use serde::Serialize;
use vfrig_agent::proto::NetAdd;

use crate::scenario::format::ExpectUevents;

/// The observer's figures for a run, for the result and the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UeventSummary {
    /// Net `add` uevents seen.
    pub adds: u64,
    /// Of those, adds with no `master` at the first look.
    pub without_master: u64,
    /// Of those, adds that never got a master within the observer's limit.
    pub never_enslaved: u64,
    /// `without_master` over the adds that did get a master: how often a
    /// plug hit the window.
    pub window_hit_rate: f64,
    /// Time from the uevent to the master link, over the adds seen without
    /// a master that got one later, in microseconds.
    pub time_to_master_us: Option<Distribution>,
    /// Per interface name, adds and adds without a master.
    pub per_ifname: Vec<IfnameCount>,
}

/// Adds of one interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IfnameCount {
    /// The name.
    pub ifname: String,
    /// Adds.
    pub adds: u64,
    /// Adds with no master at the first look.
    pub without_master: u64,
    /// Adds never enslaved.
    pub never_enslaved: u64,
}

/// Order statistics of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Distribution {
    /// Sample size.
    pub n: usize,
    /// Smallest.
    pub min: u64,
    /// Median (lower).
    pub p50: u64,
    /// 90th percentile (nearest rank).
    pub p90: u64,
    /// Largest.
    pub max: u64,
}

impl Distribution {
    /// The distribution of `values`; `None` when empty.
    pub fn of(mut values: Vec<u64>) -> Option<Distribution> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let n = values.len();
        let rank = |p: usize| values[((p * n).div_ceil(100)).clamp(1, n) - 1];
        Some(Distribution {
            n,
            min: values[0],
            p50: values[(n - 1) / 2],
            p90: rank(90),
            max: values[n - 1],
        })
    }
}

/// Whether an add had no master at the observer's first look.
fn without_master(add: &NetAdd) -> bool {
    add.master_at_first_look.is_none()
}

/// Summarises the adds seen.
pub fn summary(adds: &[NetAdd]) -> UeventSummary {
    let mut per_ifname: Vec<IfnameCount> = Vec::new();
    for add in adds {
        let i = match per_ifname.iter().position(|c| c.ifname == add.ifname) {
            Some(i) => i,
            None => {
                per_ifname.push(IfnameCount {
                    ifname: add.ifname.clone(),
                    ..IfnameCount::default()
                });
                per_ifname.len() - 1
            }
        };
        let c = &mut per_ifname[i];
        c.adds += 1;
        c.without_master += u64::from(without_master(add));
        c.never_enslaved += u64::from(add.master.is_none());
    }
    per_ifname.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    let count = |f: &dyn Fn(&NetAdd) -> bool| adds.iter().filter(|a| f(a)).count() as u64;
    let never_enslaved = count(&|a| a.master.is_none());
    let hit = count(&|a| without_master(a) && a.master.is_some());
    let enslaved = adds.len() as u64 - never_enslaved;
    let late: Vec<u64> = adds
        .iter()
        .filter(|a| without_master(a))
        .filter_map(|a| a.us_to_master)
        .collect();
    UeventSummary {
        adds: adds.len() as u64,
        without_master: count(&without_master),
        never_enslaved,
        window_hit_rate: if enslaved == 0 {
            0.0
        } else {
            (hit as f64 / enslaved as f64 * 1000.0).round() / 1000.0
        },
        time_to_master_us: Distribution::of(late),
        per_ifname,
    }
}

/// Checks an `expect_uevents` step; one line per problem.
pub fn expect_uevents(e: &ExpectUevents, adds: &[NetAdd]) -> Vec<String> {
    let mine: Vec<NetAdd> = adds
        .iter()
        .filter(|a| e.ifname.as_ref().is_none_or(|name| *name == a.ifname))
        .cloned()
        .collect();
    let s = summary(&mine);
    let who = e.ifname.as_deref().unwrap_or("net devices");
    let mut out = Vec::new();
    let mut exact = |what: &str, want: Option<u64>, have: u64| {
        if let Some(want) = want {
            if want != have {
                out.push(format!(
                    "{who}: {what} {have} time(s) in the uevents, expected {want}"
                ));
            }
        }
    };
    exact("added", e.adds, s.adds);
    exact(
        "added without a master at first look",
        e.without_master,
        s.without_master,
    );
    exact(
        "never enslaved (no master within the observer's limit)",
        e.never_enslaved,
        s.never_enslaved,
    );
    if let Some(least) = e.without_master_at_least {
        if s.without_master < least {
            out.push(format!(
                "{who}: added without a master at first look {} time(s) in {} add(s), \
                 expected at least {least}: the observer never saw the window",
                s.without_master, s.adds
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ifname: &str, first: Option<&str>, us: Option<u64>) -> NetAdd {
        NetAdd {
            seq: 0,
            t_ms: 0,
            ifname: ifname.into(),
            devpath: format!("/devices/x/net/{ifname}"),
            master_at_first_look: first.map(Into::into),
            flags_at_first_look: Some(0x1002),
            us_to_master: us,
            master: us.map(|_| "eth0".to_owned()),
            flags_when_enslaved: us.map(|_| 0x1802),
        }
    }

    #[test]
    fn the_summary_counts_the_window_and_its_width() {
        let adds = vec![
            add("eth1", Some("eth0"), Some(0)),
            add("eth1", None, Some(750)),
            add("eth1", None, Some(13_600)),
            add("eth1", None, Some(2_000)),
            add("vf0", None, None),
        ];
        let s = summary(&adds);
        assert_eq!((s.adds, s.without_master, s.never_enslaved), (5, 4, 1));
        assert_eq!(s.window_hit_rate, 0.75, "3 of the 4 enslaved adds");
        assert_eq!(
            s.time_to_master_us,
            Some(Distribution {
                n: 3,
                min: 750,
                p50: 2_000,
                p90: 13_600,
                max: 13_600
            })
        );
        assert_eq!(s.per_ifname.len(), 2);
        assert_eq!(s.per_ifname[1].never_enslaved, 1);
    }

    #[test]
    fn expectations_filter_by_name_and_say_what_was_seen() {
        let adds = vec![
            add("eth1", Some("eth0"), Some(0)),
            add("eth1", Some("eth0"), Some(0)),
            add("vf0", None, Some(40)),
        ];
        let e = ExpectUevents {
            ifname: Some("eth1".into()),
            adds: Some(2),
            never_enslaved: Some(0),
            without_master_at_least: Some(1),
            ..ExpectUevents::default()
        };
        let problems = expect_uevents(&e, &adds);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("never saw the window"), "{problems:?}");
        let all = ExpectUevents {
            adds: Some(3),
            without_master: Some(1),
            ..ExpectUevents::default()
        };
        assert!(expect_uevents(&all, &adds).is_empty());
    }

    #[test]
    fn distributions_of_small_samples() {
        assert_eq!(Distribution::of(Vec::new()), None);
        let one = Distribution::of(vec![5]).unwrap();
        assert_eq!((one.min, one.p50, one.p90, one.max), (5, 5, 5, 5));
        let ten = Distribution::of((1..=10).collect()).unwrap();
        assert_eq!((ten.p50, ten.p90), (5, 9));
    }
}
