//! The explorer's promise: on the legacy VLAN state machine it finds every
//! failure of the iavf report and names it; on the fixed machine the same
//! bounds find nothing; and every trace it reports replays, shrinks and
//! still breaks the same way.

use vfrig_explorer::{
    explore, replay, scenario, shrink, Bounds, Exploration, Invariant, Kind, Model, Strategy,
    VlanOps,
};
use vfrig_guest_driver::core::VlanFsm;

/// Deep enough for every reported failure (the longest, DISABLE
/// overwriting a REMOVE, takes 11 inputs), small enough for a test.
const BOUNDS: Bounds = Bounds {
    depth: 12,
    budget: 2_000_000,
};

fn run(fsm: VlanFsm, ops: VlanOps, strategy: Strategy) -> Exploration {
    explore(&Model::new(fsm, ops), strategy, BOUNDS).expect("the model starts")
}

#[test]
fn legacy_breaks_in_every_way_the_report_describes() {
    let v2 = run(VlanFsm::Legacy, VlanOps::V2, Strategy::Bfs);
    let v1 = run(VlanFsm::Legacy, VlanOps::V1, Strategy::Bfs);
    assert!(
        v2.complete && v1.complete,
        "the bound was searched to the end"
    );
    for kind in Kind::REPORTED {
        let found = v2.findings.get(&kind).or_else(|| v1.findings.get(&kind));
        let f = found.unwrap_or_else(|| panic!("{kind} not found: {:#?}", v2.findings.keys()));
        assert!(f.trace.len() <= BOUNDS.depth);
    }
    // Which invariant each breaks, as the VM's check will name it.
    let invariant = |e: &Exploration, k: Kind| e.findings[&k].violation.invariant;
    assert_eq!(invariant(&v1, Kind::V1AddStuck), Invariant::NoStuckFilter);
    assert_eq!(
        invariant(&v2, Kind::DelFreedThenRejected),
        Invariant::NoUntrackedPfFilter
    );
    assert_eq!(
        invariant(&v2, Kind::LostAcrossDownUp),
        Invariant::PfMatchesIntent
    );
    assert_eq!(
        invariant(&v2, Kind::DisableOverwroteRemove),
        Invariant::DriverMatchesIntent
    );
    assert_eq!(
        invariant(&v2, Kind::NetnsMoveLeak),
        Invariant::DriverMatchesIntent
    );
    // V1 without the VLAN_V2 machinery never reaches IS_NEW → ACTIVE.
    assert!(!v2.findings.contains_key(&Kind::V1AddStuck));
}

#[test]
fn fixed_survives_the_same_bounds() {
    for ops in [VlanOps::V2, VlanOps::V1] {
        let e = run(VlanFsm::Fixed, ops, Strategy::Bfs);
        assert!(e.complete, "{ops}: the bound was searched to the end");
        assert!(e.states > 10_000, "{ops}: only {} states", e.states);
        assert!(
            e.findings.is_empty(),
            "{ops}: {:#?}",
            e.findings
                .values()
                .map(|f| &f.violation)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn depth_first_and_random_walks_find_the_same_failures() {
    let dfs = run(VlanFsm::Legacy, VlanOps::V2, Strategy::Dfs);
    assert!(dfs.complete);
    for kind in [
        Kind::LostAcrossDownUp,
        Kind::DisableOverwroteRemove,
        Kind::DelFreedThenRejected,
        Kind::NetnsMoveLeak,
    ] {
        assert!(dfs.findings.contains_key(&kind), "DFS missed {kind}");
    }
    let walks = explore(
        &Model::new(VlanFsm::Legacy, VlanOps::V2),
        Strategy::Random { seed: 7 },
        Bounds {
            depth: 40,
            budget: 200_000,
        },
    )
    .expect("the model starts");
    assert!(walks.findings.contains_key(&Kind::DelFreedThenRejected));
    let again = explore(
        &Model::new(VlanFsm::Legacy, VlanOps::V2),
        Strategy::Random { seed: 7 },
        Bounds {
            depth: 40,
            budget: 200_000,
        },
    )
    .expect("the model starts");
    let traces = |e: &Exploration| {
        e.findings
            .iter()
            .map(|(k, f)| (*k, f.trace.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        traces(&walks),
        traces(&again),
        "a seed walks the same walks"
    );
}

#[test]
fn shrunk_traces_still_break_the_same_way_and_are_no_longer() {
    let model = Model::new(VlanFsm::Legacy, VlanOps::V2);
    let walks = explore(
        &model,
        Strategy::Random { seed: 3 },
        Bounds {
            depth: 60,
            budget: 100_000,
        },
    )
    .expect("the model starts");
    assert!(!walks.findings.is_empty());
    for (kind, f) in &walks.findings {
        let small = shrink(&model, &f.trace, *kind);
        assert!(small.len() <= f.trace.len(), "{kind}");
        let steps = replay(&model, &small).expect("a shrunk trace replays");
        let last = steps.last().expect("not empty");
        assert!(
            last.violations.iter().any(|v| v.kind == *kind),
            "{kind}: {:#?}",
            last.violations
        );
        // No single input can go: the trace is 1-minimal.
        for i in 0..small.len() {
            let mut shorter = small.clone();
            shorter.remove(i);
            let still = replay(&model, &shorter).ok().and_then(|s| {
                s.last()
                    .map(|l| l.violations.iter().any(|v| v.kind == *kind))
            });
            assert_ne!(still, Some(true), "{kind}: input {} is not needed", i + 1);
        }
    }
}

#[test]
fn a_trace_becomes_a_scenario_that_replays_each_input() {
    let model = Model::new(VlanFsm::Legacy, VlanOps::V2);
    let e = explore(&model, Strategy::Bfs, BOUNDS).expect("the model starts");
    let f = &e.findings[&Kind::DelFreedThenRejected];
    let steps = replay(&model, &f.trace).expect("replays");
    let toml = scenario(&model, "explored-test", &steps, "about").expect("a scenario");
    assert!(toml.contains("expect_fail = \"no-untracked-pf-filter\""));
    assert!(toml.contains("release = { vf = 0, status = \"ERR_PARAM\" }"));
    assert!(toml.contains("watchdog = { vf = 0, expect = \"DEL_VLAN_V2\" }"));
    assert!(toml.contains("fault = { vf = 0, op = \"DEL_VLAN_V2\", action = \"hold\" }"));
    assert!(toml.trim_end().ends_with("consistent = true"));
    let inputs = f.trace.len();
    let commented = toml
        .lines()
        .filter(|l| l.starts_with("# ") && l.contains(". "))
        .count();
    assert_eq!(commented, inputs, "one commented block per input:\n{toml}");
}
