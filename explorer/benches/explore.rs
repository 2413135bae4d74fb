//! Explorer figures: states per second on one core, the time to the first
//! violation of each failure kind on the legacy machine, and the states the
//! fixed machine is explored through at the same bound.
//!
//! `cargo bench -p vfrig-explorer --bench explore [-- DEPTH]` (default 12,
//! the depth `cargo rig explore` uses). One thread: the search is serial.

#![allow(clippy::print_stdout)]

use vfrig_explorer::{explore, Bounds, Kind, Model, Strategy, VlanOps};
use vfrig_guest_driver::core::VlanFsm;

fn main() {
    let depth = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(12);
    let bounds = Bounds {
        depth,
        budget: 50_000_000,
    };
    println!("breadth-first, depth {depth}, alphabet: VLANs 10 and 20, down/up, netns move; PF may refuse VLAN adds and deletes");
    println!(
        "{:<8} {:<4} {:>10} {:>10} {:>9} {:>12}  first violation per kind",
        "machine", "PF", "states", "distinct", "seconds", "states/s"
    );
    for fsm in [VlanFsm::Legacy, VlanFsm::Fixed] {
        for ops in [VlanOps::V2, VlanOps::V1] {
            let e =
                explore(&Model::new(fsm, ops), Strategy::Bfs, bounds).expect("the model starts");
            let firsts: Vec<String> = Kind::REPORTED
                .iter()
                .filter_map(|k| {
                    e.findings.get(k).map(|f| {
                        format!(
                            "{k} {:.1} ms ({} states)",
                            f.after.as_secs_f64() * 1e3,
                            f.after_states
                        )
                    })
                })
                .collect();
            println!(
                "{:<8} {:<4} {:>10} {:>10} {:>9.3} {:>12.0}  {}",
                format!("{fsm:?}").to_lowercase(),
                ops.to_string(),
                e.states,
                e.distinct,
                e.elapsed.as_secs_f64(),
                e.states_per_second(),
                if firsts.is_empty() {
                    format!("none ({} kinds found in all)", e.findings.len())
                } else {
                    firsts.join(", ")
                }
            );
        }
    }
    let walks = explore(
        &Model::new(VlanFsm::Legacy, VlanOps::V2),
        Strategy::Random { seed: 1 },
        Bounds {
            depth: 60,
            budget: 1_000_000,
        },
    )
    .expect("the model starts");
    println!(
        "random walks (seed 1, depth 60): {} inputs in {:.3} s, {:.0} inputs/s, {} kinds found",
        walks.transitions,
        walks.elapsed.as_secs_f64(),
        walks.transitions as f64 / walks.elapsed.as_secs_f64().max(1e-9),
        walks.findings.len()
    );
}
