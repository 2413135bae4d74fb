//! `vfrig-agent`: PID 1 of the vfrig test VM.
//!
//! With no arguments and running as PID 1 it boots the VM (mounts, modules,
//! loopback) and serves the harness on the virtio-console port
//! [`vfrig_agent::proto::CHANNEL_NAME`]. `vfrig-agent --stdio` serves the
//! same protocol on stdin/stdout without any PID 1 duties, for tests on a
//! host. `vfrig-agent blast ...` is a transmit load generator that guest
//! shell commands run ([`agent::blast`]). Everything past argument handling
//! lives in [`agent`].

#![forbid(unsafe_code)]

mod agent;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::process::ExitCode;

use agent::blast::{self, Parsed};

const USAGE: &str = "\
usage: vfrig-agent            run as PID 1 of the test VM
       vfrig-agent --stdio    serve the agent protocol on stdin/stdout
       vfrig-agent blast ...  send raw frames in a tight loop (blast --help)
       vfrig-agent --version  print the version
";

fn main() -> ExitCode {
    let started_ms = agent::clock::boottime_ms();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a.as_os_str() == OsStr::new(flag));
    let pid1 = std::process::id() == 1;
    // A subcommand is the first word; PID 1 never takes one (the kernel
    // could pass any word from its command line).
    if let Some((first, rest)) = args.split_first().filter(|_| !pid1) {
        if first == "blast" {
            return run_blast(rest);
        }
    }
    if has("--stdio") {
        return agent::run_stdio(started_ms);
    }
    if pid1 {
        // The kernel passes unknown command-line words to init as
        // arguments, so PID 1 ignores whatever else it was given.
        agent::run_pid1(started_ms);
    }
    if has("--version") {
        let line = format!("vfrig-agent {}\n", env!("CARGO_PKG_VERSION"));
        // Nothing useful is left to do if stdout is gone.
        let _ = std::io::stdout().write_all(line.as_bytes());
        return ExitCode::SUCCESS;
    }
    let _ = std::io::stderr().write_all(
        format!("vfrig-agent: not running as PID 1; use --stdio to serve on stdin/stdout\n{USAGE}")
            .as_bytes(),
    );
    ExitCode::from(2)
}

/// `vfrig-agent blast ARGS`: 0 after a run, 2 for bad arguments, 1 when
/// the run could not start.
fn run_blast(args: &[OsString]) -> ExitCode {
    let say = |line: String| {
        let _ = std::io::stderr().write_all(line.as_bytes());
    };
    let args = match blast::parse_args(args.iter().cloned()) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            let _ = std::io::stdout().write_all(blast::USAGE.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say(format!("vfrig-agent blast: {e}\n{}", blast::USAGE));
            return ExitCode::from(2);
        }
    };
    match blast::run(&args) {
        Ok(summary) => {
            let _ = std::io::stdout().write_all(format!("{summary}\n").as_bytes());
            if summary.errors > 0 {
                say(format!(
                    "blast: errors by errno: {}\n",
                    summary.errors_detail()
                ));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(format!("vfrig-agent blast: {e}\n"));
            ExitCode::FAILURE
        }
    }
}
