//! `cargo rig explore`: runs the interleaving explorer (`vfrig-explorer`)
//! over one or both PF flavours, shrinks what it finds, prints the traces
//! and writes them as scenario files that `cargo rig run` replays in a VM.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};
use vfrig_explorer::{
    counterpart, explore, render, replay, scenario, shrink, Bounds, Exploration, Input, Kind,
    Model, Step, Strategy, VlanOps,
};

use crate::scenario::VlanFsm;

/// What to explore and how.
#[derive(Debug, Clone)]
pub struct ExploreOptions {
    /// The models, one per PF flavour.
    pub models: Vec<Model>,
    /// The search.
    pub strategy: Strategy,
    /// Its bounds.
    pub bounds: Bounds,
    /// Where to write the shrunk traces as scenario files (`None`: nowhere).
    pub write: Option<PathBuf>,
}

/// The machine as the explorer's driver core names it.
pub fn core_fsm(fsm: VlanFsm) -> vfrig_guest_driver::core::VlanFsm {
    match fsm {
        VlanFsm::Fixed => vfrig_guest_driver::core::VlanFsm::Fixed,
        VlanFsm::Legacy => vfrig_guest_driver::core::VlanFsm::Legacy,
    }
}

/// One finding, shrunk.
#[derive(Debug, Clone, Serialize)]
pub struct Shrunk {
    /// The failure kind.
    pub kind: String,
    /// The invariant broken.
    pub invariant: String,
    /// The violation in words.
    pub detail: String,
    /// Inputs in the trace as found.
    pub found_len: usize,
    /// States expanded when it was found.
    pub after_states: u64,
    /// Seconds spent when it was found.
    pub after_s: f64,
    /// The shrunk trace, replayed.
    pub steps: Vec<Step>,
    /// The scenario files written: the trace on its machine and, for a
    /// legacy finding, the same schedule on the fixed machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<PathBuf>,
    /// Why no scenario was written, if none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_written: Option<String>,
}

/// One exploration and its shrunk findings.
#[derive(Debug, Clone)]
pub struct Explored {
    /// What the search did.
    pub exploration: Exploration,
    /// Its findings, shrunk, in kind order.
    pub findings: Vec<Shrunk>,
}

/// Runs the explorations, shrinks every finding and writes the scenarios.
pub fn run(opts: &ExploreOptions) -> anyhow::Result<Vec<Explored>> {
    let mut out = Vec::new();
    for model in &opts.models {
        crate::ui::say(format!(
            "exploring the {} VLAN state machine against a {} PF: {}, depth {}, budget {} states",
            model.fsm,
            model.vlan_ops.describe(),
            strategy_name(opts.strategy),
            opts.bounds.depth,
            opts.bounds.budget,
        ));
        let exploration = explore(model, opts.strategy, opts.bounds).map_err(anyhow::Error::msg)?;
        let mut findings = Vec::new();
        for (kind, finding) in &exploration.findings {
            let small = shrink(model, &finding.trace, *kind);
            let steps = replay(model, &small)
                .map_err(|e| anyhow::anyhow!("the shrunk {kind} trace does not replay: {e}"))?;
            let mut shrunk = Shrunk {
                kind: kind.to_string(),
                invariant: finding.violation.invariant.to_string(),
                detail: finding.violation.detail.clone(),
                found_len: finding.trace.len(),
                after_states: finding.after_states,
                after_s: finding.after.as_secs_f64(),
                steps,
                scenarios: Vec::new(),
                not_written: None,
            };
            if let Some(dir) = &opts.write {
                match write_scenarios(model, *kind, &small, &shrunk.steps, dir) {
                    Ok(paths) => shrunk.scenarios = paths,
                    Err(why) => shrunk.not_written = Some(why),
                }
            }
            findings.push(shrunk);
        }
        out.push(Explored {
            exploration,
            findings,
        });
    }
    Ok(out)
}

/// The scenario's name: the kind, `-v1` for a V1-only PF (unless the kind
/// says so), and `-legacy` on the legacy machine, like the library's
/// counterparts.
pub fn scenario_name(model: &Model, kind: Kind) -> String {
    let mut name = kind.name().to_owned();
    if model.vlan_ops == VlanOps::V1 && !name.starts_with("v1-") {
        name.push_str("-v1");
    }
    if model.fsm == vfrig_guest_driver::core::VlanFsm::Legacy {
        name.push_str("-legacy");
    }
    name
}

/// Writes the finding's scenario and, for a legacy finding, the same
/// schedule on the fixed machine, which must end consistent. Returns the
/// paths, or why nothing was written.
fn write_scenarios(
    model: &Model,
    kind: Kind,
    trace: &[Input],
    steps: &[Step],
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let about = format!("Found by `cargo rig explore`: {kind}, {}.", kind.about());
    let mut files = vec![(
        scenario_name(model, kind),
        scenario(model, &scenario_name(model, kind), steps, &about)?,
    )];
    if model.fsm == vfrig_guest_driver::core::VlanFsm::Legacy {
        let fixed = vfrig_guest_driver::core::VlanFsm::Fixed;
        let (other, schedule) = counterpart(model, fixed, trace).map_err(|e| e.to_string())?;
        let other_steps = replay(&other, &schedule).map_err(|e| e.to_string())?;
        let name = scenario_name(&other, kind);
        let about = format!(
            "The schedule of {}-legacy ({kind}: {}) on the fixed VLAN state machine: the \
             same kernel operations and PF decisions in the same order, with the watchdog \
             passes and answers the fixed machine needs.",
            name,
            kind.about()
        );
        files.push((name.clone(), scenario(&other, &name, &other_steps, &about)?));
    }
    let mut paths = Vec::new();
    for (name, text) in files {
        let path = dir.join(format!("{name}.toml"));
        write(&path, &text).map_err(|e| format!("{e:#}"))?;
        paths.push(path);
    }
    Ok(paths)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn strategy_name(s: Strategy) -> String {
    match s {
        Strategy::Bfs => "breadth-first".into(),
        Strategy::Dfs => "depth-first".into(),
        Strategy::Random { seed } => format!("random walks (seed {seed})"),
    }
}

/// The report in words: per exploration the figures, then each shrunk trace.
pub fn text(explored: &[Explored]) -> String {
    let mut out = String::new();
    for e in explored {
        let x = &e.exploration;
        let _ = writeln!(
            out,
            "{} machine, {} PF, {}: {} states expanded ({} distinct, {} transitions) in {:.2} s, \
             {:.0} states/s, {}",
            x.model.fsm,
            x.model.vlan_ops.describe(),
            strategy_name(x.strategy),
            x.states,
            x.distinct,
            x.transitions,
            x.elapsed.as_secs_f64(),
            x.states_per_second(),
            if x.complete {
                format!("every ordering up to depth {} covered", x.bounds.depth)
            } else {
                "stopped by the budget".into()
            }
        );
        if e.findings.is_empty() {
            let _ = writeln!(out, "  no invariant broken\n");
            continue;
        }
        let names: Vec<&str> = x.invariants.iter().map(|i| i.name()).collect();
        let _ = writeln!(
            out,
            "  {} kind(s) of failure, {} invariant(s) broken: {}",
            e.findings.len(),
            names.len(),
            names.join(", ")
        );
        for f in &e.findings {
            let _ = writeln!(
                out,
                "  {:<26} {:<24} {} inputs (found with {} after {} states, {:.3} s)",
                f.kind,
                f.invariant,
                f.steps.len(),
                f.found_len,
                f.after_states,
                f.after_s
            );
        }
        let _ = writeln!(out);
        for f in &e.findings {
            let _ = writeln!(out, "{} ({}): {}", f.kind, f.invariant, f.detail);
            out.push_str(&render(&f.steps));
            for path in &f.scenarios {
                let _ = writeln!(
                    out,
                    "  scenario: {} (replay in a VM: cargo rig run {})",
                    path.display(),
                    path.display()
                );
            }
            if let Some(why) = &f.not_written {
                let _ = writeln!(out, "  no scenario: {why}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// The report as JSON.
pub fn json(explored: &[Explored]) -> Value {
    let list: Vec<Value> = explored
        .iter()
        .map(|e| {
            let x = &e.exploration;
            json!({
                "model": x.model,
                "strategy": x.strategy,
                "bounds": x.bounds,
                "states": x.states,
                "distinct_states": x.distinct,
                "transitions": x.transitions,
                "complete": x.complete,
                "elapsed_s": x.elapsed.as_secs_f64(),
                "states_per_second": x.states_per_second(),
                "invariants_violated": x.invariants.iter().map(|i| i.name()).collect::<Vec<_>>(),
                "findings": e.findings,
            })
        })
        .collect();
    json!({ "explorations": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfrig_guest_driver::core::VlanFsm as CoreFsm;

    /// The explored scenarios in the library are what the explorer writes
    /// today: a change to the cores or the explorer that changes a trace
    /// shows up here, not as a puzzling VM failure.
    #[test]
    fn the_library_s_explored_scenarios_are_what_the_explorer_writes() {
        let library = crate::scenario::library_dir().join("explored");
        let out = std::env::temp_dir().join(format!("vfrig-explored-{}", std::process::id()));
        let opts = ExploreOptions {
            models: vec![
                Model::new(CoreFsm::Legacy, VlanOps::V2),
                Model::new(CoreFsm::Legacy, VlanOps::V1),
            ],
            strategy: Strategy::Bfs,
            bounds: Bounds {
                depth: 12,
                budget: 2_000_000,
            },
            write: Some(out.clone()),
        };
        let explored = run(&opts).expect("the explorer runs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&library)
            .expect("harness/scenarios/explored")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 6, "{files:?}");
        for file in files {
            let name = file.file_name().expect("a file name");
            let fresh = std::fs::read_to_string(out.join(name)).unwrap_or_else(|_| {
                panic!(
                    "the explorer no longer writes {}: {}",
                    name.to_string_lossy(),
                    text(&explored)
                )
            });
            let shipped = std::fs::read_to_string(&file).expect("readable");
            assert_eq!(
                shipped,
                fresh,
                "{} differs from what `cargo rig explore --write DIR` writes now; if the \
                 change is intended, copy the new file over it and run it in a VM",
                file.display()
            );
            crate::scenario::parse(&shipped, &file).expect("the written scenario parses");
        }
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn scenario_names_say_the_pf_flavour_and_the_machine() {
        let legacy_v1 = Model::new(CoreFsm::Legacy, VlanOps::V1);
        let fixed_v2 = Model::new(CoreFsm::Fixed, VlanOps::V2);
        assert_eq!(
            scenario_name(&legacy_v1, Kind::NetnsMoveLeak),
            "netns-move-leak-v1-legacy"
        );
        assert_eq!(
            scenario_name(&legacy_v1, Kind::V1AddStuck),
            "v1-add-stuck-legacy"
        );
        assert_eq!(
            scenario_name(&fixed_v2, Kind::DelFreedThenRejected),
            "del-freed-then-rejected"
        );
    }
}
