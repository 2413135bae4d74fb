//! `vfrig-agent`: PID 1 of the vfrig test VM.
//!
//! With no arguments and running as PID 1 it boots the VM (mounts, modules,
//! loopback) and serves the harness on the virtio-console port
//! [`vfrig_agent::proto::CHANNEL_NAME`]. `vfrig-agent --stdio` serves the
//! same protocol on stdin/stdout without any PID 1 duties, for tests on a
//! host. Everything past argument handling lives in [`agent`].

#![forbid(unsafe_code)]

mod agent;

use std::ffi::OsStr;
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "\
usage: vfrig-agent            run as PID 1 of the test VM
       vfrig-agent --stdio    serve the agent protocol on stdin/stdout
       vfrig-agent --version  print the version
";

fn main() -> ExitCode {
    let started_ms = agent::clock::boottime_ms();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a.as_os_str() == OsStr::new(flag));
    if has("--stdio") {
        return agent::run_stdio(started_ms);
    }
    if std::process::id() == 1 {
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
