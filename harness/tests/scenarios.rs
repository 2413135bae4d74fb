//! Every scenario in `harness/scenarios/` as its own test, each booting a
//! real VM (QEMU 10 and the guest image, built on first use, like `vm.rs`).
//!
//! A scenario with `expect_fail` passes when it fails with its symptom: the
//! legacy counterparts prove the rig catches the bugs of the iavf report.
//! A scenario with `expect_fail_on` is one test per VLAN state machine, its
//! own and each one it names (`explored/foo [fixed]`, `explored/foo
//! [legacy]`), run with that machine: it must fail with the symptom where
//! one is named and pass elsewhere. Snapshots are compared with
//! `snapshots/`; with `INSTA_UPDATE=no` (CI) a changed table fails (and are
//! skipped for a machine other than the scenario's own).
//!
//! Soaks: `VFRIG_REPEAT_SCALE=N` multiplies every `repeat` count and
//! `VFRIG_SEED` seeds the PF's probabilistic faults (`just nightly`).

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};
use vfrig_harness::scenario::{self, RunOptions, Scenario, VlanFsm};

fn env_number(name: &str) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(0),
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let dir = scenario::library_dir();
    let files = match scenario::find(&dir) {
        Ok(files) => files,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("cannot list {}: {err}", dir.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let mut trials = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .with_extension("")
            .display()
            .to_string();
        let s = match scenario::load(&path) {
            Ok(s) => s,
            Err(e) => {
                // Listed all the same, so the mistake fails a test by name.
                let message = e.to_string();
                trials.push(Trial::test(name, move || Err(message.into())).with_kind("scenario"));
                continue;
            }
        };
        if s.expect_fail_on.is_empty() {
            trials.push(trial(name, s, None));
        } else {
            for fsm in s.machines() {
                trials.push(trial(format!("{name} [{fsm}]"), s.clone(), Some(fsm)));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// One run of `s`, with `fsm` overriding its VLAN state machine.
fn trial(name: String, s: Scenario, fsm: Option<VlanFsm>) -> Trial {
    Trial::test(name, move || -> Result<(), Failed> {
        let opts = RunOptions {
            vlan_fsm: fsm,
            seed: env_number("VFRIG_SEED")?,
            repeat_scale: u32::try_from(env_number("VFRIG_REPEAT_SCALE")?)
                .map_err(|e| e.to_string())?,
            ..RunOptions::default()
        };
        let result = scenario::run(&s, &opts).map_err(|e| format!("{e:#}"))?;
        #[allow(clippy::print_stderr)]
        {
            eprint!("{}", scenario::report::text(&result));
        }
        if result.passed {
            Ok(())
        } else {
            Err(scenario::report::text(&result).into())
        }
    })
    .with_kind("scenario")
}
