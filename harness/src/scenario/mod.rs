//! Scenarios: what users of the rig write, often straight from a bug
//! report, and run with `cargo rig run FILE`.
//!
//! - [`format`]: the TOML format, parsed and checked with file, line and
//!   column in every error;
//! - [`check`]: the `expect` and `consistent` checks, pure functions over
//!   the PF tables, the drivers' status and the guest's links;
//! - [`snapshot`]: the deterministic view of the PF tables that `insta`
//!   compares with `snapshots/`;
//! - [`runner`]: boots the VM, runs the steps, and reports.

pub mod check;
pub mod format;
pub mod report;
pub mod runner;
pub mod snapshot;

use std::path::{Path, PathBuf};

pub use format::{load, parse, Action, ParseError, Scenario, Step, VlanFsm};
pub use runner::{run, Failure, RunOptions, ScenarioResult};

/// The scenario library shipped with the rig: `harness/scenarios/`.
pub fn library_dir() -> PathBuf {
    crate::paths::workspace_root()
        .join("harness")
        .join("scenarios")
}

/// The `.toml` files in `dir` and its subdirectories, sorted.
pub fn find(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_library_scenario_parses_and_names_itself_after_its_file() {
        let files = super::find(&super::library_dir()).expect("the library directory");
        assert!(files.len() >= 10, "{files:?}");
        for path in files {
            let s = super::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            assert_eq!(s.name, stem, "{}: name and file differ", path.display());
            // The legacy machine has the bugs: a scenario run with it
            // (its own machine, or one `expect_fail_on` names) names the
            // symptom it must fail with there, through `expect_fail` or
            // `expect_fail_on.legacy`.
            if s.machines().contains(&super::VlanFsm::Legacy) {
                assert!(
                    s.expected_failure(super::VlanFsm::Legacy).is_some(),
                    "{}: a legacy counterpart names the symptom it must fail with",
                    path.display()
                );
            }
        }
    }
}
