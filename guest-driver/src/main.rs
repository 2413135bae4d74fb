//! `vfrig-driver`: the VF driver process in the guest.
//!
//! Subcommands:
//! - `selftest [--bdf BDF] [--timeout-ms MS] [--listen-ms MS]`: open a VF
//!   from userspace, run the VERSION / GET_VF_RESOURCES / ENABLE_QUEUES
//!   exchange with the PF, send one broadcast frame, optionally listen for
//!   data frames, and print a JSON report on stdout.
//!
//! - `run --vf N [--bdf BDF] [--vlan-fsm fixed|legacy] [--enslave MASTER]`:
//!   the driver: opens VF N (the N-th 1af4:1041 function in BDF order unless
//!   `--bdf` names one), creates the TAP `vfN` (and, with `--enslave`, makes
//!   it a slave of MASTER at once, as hv_netvsc does with its VF), follows
//!   what the kernel does to it and serves its status on
//!   `/run/vfrig/vfN.sock` until SIGTERM or SIGINT.
//! - `status --vf N`: prints the running driver's status (one JSON line).
//! - `watchdog --vf N manual|auto|step`: hands the running driver's
//!   watchdog to the caller (`manual`: nothing is sent to the PF and no
//!   reply times out until asked) or gives it back (`auto`), printing
//!   `{"mode":"manual"}`; or, in manual mode, runs one watchdog pass and
//!   prints what it sent, `{"sent":"ADD_VLAN_V2"}` or `{"sent":null}`.
//!   Talks to the driver over `/run/vfrig/vfN.ctl`.
//!
//! Logs go to stderr (`RUST_LOG`, default `warn`). Exit status 0 on
//! success, 1 on failure (the error and its causes on stderr), 2 on a bad
//! command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vfrig_guest_driver::core::VlanFsm;
use vfrig_guest_driver::driver::{self, ControlReply, DriverOptions, WatchdogCommand};
use vfrig_guest_driver::netdev;
use vfrig_guest_driver::transport::selftest::{self, SelftestOptions};
use vfrig_guest_driver::transport::{Bdf, Selector};

#[derive(Debug, Parser)]
#[command(name = "vfrig-driver", version, about = "vfrig's userspace VF driver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open a VF, talk to the PF over the mailbox, send one frame, and
    /// print what happened as JSON.
    Selftest(SelftestArgs),
    /// Run the driver for one VF until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Print a running driver's status as one JSON line.
    Status(StatusArgs),
    /// Take over a running driver's watchdog (manual), give it back (auto),
    /// or run one watchdog pass (step); prints one JSON line.
    Watchdog(WatchdogArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The VF's number: the TAP is `vfN`, the status socket
    /// /run/vfrig/vfN.sock.
    #[arg(long)]
    vf: u16,
    /// PCI address of the VF (default: the N-th 1af4:1041 function in BDF
    /// order).
    #[arg(long, value_parser = parse_bdf)]
    bdf: Option<Bdf>,
    /// The VLAN filter state machine.
    #[arg(long, default_value_t = VlanFsm::Fixed)]
    vlan_fsm: VlanFsm,
    /// Make `vfN` a slave of this master (a bond, ...) as soon as it exists,
    /// before anything else. A master that does not exist or refuses is a
    /// warning: the driver runs on without; `status` shows the outcome.
    #[arg(long, value_name = "MASTER", value_parser = parse_ifname)]
    enslave: Option<String>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The VF's number.
    #[arg(long)]
    vf: u16,
}

#[derive(Debug, Args)]
struct WatchdogArgs {
    /// The VF's number.
    #[arg(long)]
    vf: u16,
    /// `manual`: the driver sends nothing to the PF and lets no reply time
    /// out but in a pass asked for; `auto`: its loop runs the watchdog
    /// again (the default); `step`: one watchdog pass (manual mode only),
    /// after everything the kernel and the PF did before it was asked for.
    #[arg(value_name = "manual|auto|step", value_parser = parse_watchdog)]
    action: WatchdogCommand,
}

#[derive(Debug, Args)]
struct SelftestArgs {
    /// PCI address of the VF (default: the first 1af4:1041 function not
    /// held by another vfrig-driver).
    #[arg(long, value_parser = parse_bdf)]
    bdf: Option<Bdf>,
    /// How long each PF reply may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// After sending, keep receiving data frames this long and list them.
    #[arg(long, default_value_t = 0)]
    listen_ms: u64,
}

fn parse_bdf(text: &str) -> Result<Bdf, String> {
    Bdf::parse(text).map_err(|err| err.to_string())
}

fn parse_ifname(text: &str) -> Result<String, String> {
    netdev::check_ifname(text)
        .map(|()| text.to_owned())
        .map_err(|err| err.to_string())
}

fn parse_watchdog(text: &str) -> Result<WatchdogCommand, String> {
    text.parse()
}

fn selftest(args: SelftestArgs) -> Result<(), String> {
    let opts = SelftestOptions {
        selector: args.bdf.map_or(Selector::FirstUnused, Selector::Bdf),
        timeout: Duration::from_millis(args.timeout_ms),
        listen: Duration::from_millis(args.listen_ms),
    };
    let report = selftest::run(&opts)
        .map_err(|err| format!("selftest failed: {}", driver::error_chain(&err)))?;
    let json = serde_json::to_string_pretty(&report)
        .map_err(|err| format!("cannot serialise the report: {err}"))?;
    writeln!(std::io::stdout().lock(), "{json}")
        .map_err(|err| format!("cannot write the report: {err}"))
}

fn run(args: RunArgs) -> Result<(), String> {
    let opts = DriverOptions {
        vf: args.vf,
        bdf: args.bdf,
        vlan_fsm: args.vlan_fsm,
        enslave: args.enslave,
    };
    driver::run(&opts).map_err(|err| {
        format!(
            "driver for VF {} failed: {}",
            args.vf,
            driver::error_chain(&err)
        )
    })
}

fn status(args: StatusArgs) -> Result<(), String> {
    let text = driver::read_status(args.vf).map_err(|err| {
        format!(
            "cannot read {}: {err}; is `vfrig-driver run --vf {}` running?",
            driver::status_path(args.vf).display(),
            args.vf
        )
    })?;
    write!(std::io::stdout().lock(), "{text}")
        .map_err(|err| format!("cannot write the status: {err}"))
}

fn watchdog(args: WatchdogArgs) -> Result<(), String> {
    let reply = driver::control(args.vf, args.action).map_err(|err| {
        format!(
            "{}; is `vfrig-driver run --vf {}` running?",
            driver::error_chain(&err),
            args.vf
        )
    })?;
    if let ControlReply::Error { error } = reply {
        return Err(error);
    }
    let line =
        serde_json::to_string(&reply).map_err(|err| format!("cannot encode the reply: {err}"))?;
    writeln!(std::io::stdout().lock(), "{line}")
        .map_err(|err| format!("cannot write the reply: {err}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Selftest(args) => selftest(args),
        Command::Run(args) => run(args),
        Command::Status(args) => status(args),
        Command::Watchdog(args) => watchdog(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr().lock(), "vfrig-driver: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use vfrig_guest_driver::driver::WatchdogCommand;

    use super::{Cli, Command, RunArgs, WatchdogArgs};

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["vfrig-driver", "run"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(args),
            other => panic!("not `run`: {other:?}"),
        }
    }

    fn watchdog_args(args: &[&str]) -> Result<WatchdogArgs, clap::Error> {
        let argv = ["vfrig-driver", "watchdog"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Watchdog(args) => Ok(args),
            other => panic!("not `watchdog`: {other:?}"),
        }
    }

    #[test]
    fn watchdog_takes_a_vf_and_manual_auto_or_step() {
        for (word, command) in [
            ("manual", WatchdogCommand::Manual),
            ("auto", WatchdogCommand::Auto),
            ("step", WatchdogCommand::Step),
        ] {
            let args = watchdog_args(&["--vf", "2", word]).expect(word);
            assert_eq!((args.vf, args.action), (2, command));
        }
        let err = watchdog_args(&["--vf", "0", "pause"]).expect_err("not a command");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("manual, auto or step"), "{err}");
        let err = watchdog_args(&["step"]).expect_err("no VF");
        assert!(err.to_string().contains("--vf"), "{err}");
        let err = watchdog_args(&["--vf", "0"]).expect_err("no command");
        assert!(err.to_string().contains("manual|auto|step"), "{err}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_an_optional_master_to_enslave_to() {
        assert_eq!(run_args(&["--vf", "0"]).expect("valid").enslave, None);
        let args = run_args(&["--vf", "2", "--enslave", "bond0"]).expect("valid");
        assert_eq!((args.vf, args.enslave.as_deref()), (2, Some("bond0")));
    }

    #[test]
    fn a_master_name_the_kernel_would_refuse_is_a_usage_error() {
        for bad in ["", "bond/0", "a-name-too-long-0"] {
            let err = run_args(&["--vf", "0", "--enslave", bad]).expect_err(bad);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(err.to_string().contains("1 to 15 bytes"), "{err}");
        }
        let err = run_args(&["--vf", "0", "--enslave"]).expect_err("no value");
        assert!(err.to_string().contains("MASTER"), "{err}");
    }
}
