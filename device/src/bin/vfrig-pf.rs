//! `vfrig-pf`: the emulated PF as a vhost-user daemon.
//!
//! ```text
//! vfrig-pf --dir /tmp/pf --vfs 2 [--policy policy.toml] [--seed N] [--kernel-vf N]...
//! ```
//!
//! Serves `DIR/vf0.sock`... to QEMU (`-netdev vhost-user,...,queues=2`;
//! `queues=1` and `virtio-net-pci,mq=off,failover=on` for a `--kernel-vf`)
//! and `DIR/control.sock` to the harness. Logs go to stderr (`RUST_LOG`, default
//! `info`). SIGINT or SIGTERM stops it and removes the sockets.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use vfrig_device::daemon::{Daemon, DaemonConfig};

/// The emulated AVF-like PF, serving each VF as a vhost-user virtio-net device.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory for vfN.sock and control.sock (created mode 0700 if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Number of VFs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    vfs: u16,
    /// Policy file (TOML): [pf] and [vfN] tables with trust, spoofchk, admin_mac, ...
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Write frames the PF switch sends to the uplink to this pcap file.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Use this host TAP interface as the uplink too (created if missing; needs root).
    #[arg(long)]
    tap: Option<String>,
    /// Seed for probabilistic fault rules.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Serve VF N to the guest kernel's virtio_net (one queue pair, no
    /// mailbox; the host configures it) instead of a virtchnl driver.
    /// Repeatable; N must be below --vfs.
    #[arg(long = "kernel-vf", value_name = "N")]
    kernel_vfs: Vec<u16>,
}

// The one place the error chain is printed for a person.
#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("vfrig-pf: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and only the wait below receives them.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGINT);
    stop_signals.add(Signal::SIGTERM);
    stop_signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM")?;

    let daemon = Daemon::start(DaemonConfig {
        dir: args.dir.clone(),
        vfs: args.vfs,
        policy: args.policy,
        pcap: args.pcap,
        tap: args.tap,
        seed: args.seed,
        kernel_vfs: args.kernel_vfs.into_iter().collect::<BTreeSet<u16>>(),
    })
    .with_context(|| format!("starting the PF daemon in {}", args.dir.display()))?;
    for vf in 0..daemon.vfs() {
        let role = daemon.role(vf).unwrap_or_default();
        tracing::info!(vf, ?role, socket = %daemon.vf_socket(vf).display(), "VF ready");
    }
    tracing::info!(socket = %daemon.control_socket().display(), "control socket ready");

    let signal = stop_signals
        .wait()
        .context("waiting for SIGINT or SIGTERM")?;
    tracing::info!(?signal, "stopping");
    daemon.shutdown();
    Ok(())
}
