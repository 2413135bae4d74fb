//! Every scenario in `harness/scenarios/` as its own test, each booting a
//! real VM (QEMU 10 and the guest image, built on first use, like `vm.rs`).
//!
//! A scenario with `expect_fail` passes when it fails with its symptom: the
//! legacy counterparts prove the rig catches the bugs of the iavf report.
//! Snapshots are compared with `snapshots/`; with `INSTA_UPDATE=no` (CI) a
//! changed table fails.
//!
//! Soaks: `VFRIG_REPEAT_SCALE=N` multiplies every `repeat` count and
//! `VFRIG_SEED` seeds the PF's probabilistic faults (`just nightly`).

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};
use vfrig_harness::scenario::{self, RunOptions};

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
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&dir)
                .unwrap_or(&path)
                .with_extension("")
                .display()
                .to_string();
            Trial::test(name, move || -> Result<(), Failed> {
                let s = scenario::load(&path).map_err(|e| e.to_string())?;
                let opts = RunOptions {
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
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
