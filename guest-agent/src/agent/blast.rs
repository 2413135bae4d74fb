//! `vfrig-agent blast`: the same raw Ethernet frame sent on one interface
//! from several threads, as fast as they go, until SIGTERM/SIGINT or a set
//! time.
//!
//! Made for the bonding scenario: while these threads transmit on `bond0`,
//! another loop releases and re-enslaves its slaves, racing
//! `bond_xmit_roundrobin_slave_get` against `bond_enslave` (the slave is on
//! the list before `slave_cnt` counts it). That race needs senders in a tight
//! loop, so a thread never sleeps while its interface exists.
//!
//! Each thread owns a [`PacketSocket`]. A failed send is counted by errno,
//! never fatal: the interface may be down (ENETDOWN), have no slaves
//! (ENOBUFS), be busy (EAGAIN after the socket's send timeout), or be gone
//! (ENXIO, ENODEV). When it is gone the thread looks the name up again every
//! [`RESOLVE_EVERY`] until an interface of that name is back, and sends on
//! that one. Every [`MAC_REFRESH`] a thread reads the interface's address
//! again and sends from the new one if it changed, as the stack would: a
//! bond takes a new address when its last slave goes. The main thread
//! blocks SIGTERM and SIGINT before it starts the senders (which inherit the
//! mask) and waits for them on a signalfd, or for `--duration-ms`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{sysconf, SysconfVar};

use super::error::{Error, Result};
use super::packet::{
    build_frame, header_len, read_mac, FrameSpec, MacAddr, PacketSocket, MAX_FRAME,
};

/// `vfrig-agent blast --help`.
pub const USAGE: &str = "\
usage: vfrig-agent blast --dev IFNAME [--threads N] [--size BYTES] [--vlan VID]
                         [--dst MAC] [--duration-ms MS]
Sends one raw Ethernet frame (EtherType 0x88b5) on IFNAME from N threads in a
tight loop until SIGTERM/SIGINT or MS milliseconds, then prints
`blast: dev=IFNAME threads=N sent=S errors=E` and exits 0.
  --threads N        sending threads (default: the number of online CPUs)
  --size BYTES       frame length without FCS (default 60)
  --vlan VID         add an 802.1Q tag with this VLAN id (0-4094)
  --dst MAC          destination (default ff:ff:ff:ff:ff:ff)
  --duration-ms MS   stop after MS milliseconds (default: at SIGTERM/SIGINT)
";

/// Most sending threads allowed.
pub const MAX_THREADS: usize = 1024;

/// How often a thread whose interface is gone looks for it again.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(10);

/// How often a sender reads its interface's address again.
pub const MAC_REFRESH: Duration = Duration::from_millis(50);

/// Frame length when `--size` is not given.
pub const DEFAULT_SIZE: usize = 60;

/// The longest VLAN id (4095 is reserved).
const MAX_VID: u16 = 4094;

/// What to send, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlastArgs {
    /// `--dev`: the interface.
    pub dev: String,
    /// `--threads`; `None`: one per online CPU.
    pub threads: Option<usize>,
    /// `--size`: frame length without FCS.
    pub size: usize,
    /// `--vlan`: 802.1Q VLAN id.
    pub vlan: Option<u16>,
    /// `--dst`: destination address.
    pub dst: MacAddr,
    /// `--duration-ms`; `None`: until SIGTERM/SIGINT.
    pub duration: Option<Duration>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Send.
    Run(BlastArgs),
    /// `--help`/`-h`: print [`USAGE`].
    Help,
}

fn bad(arg: &str, reason: impl Into<String>) -> Error {
    Error::BadArgument {
        arg: arg.to_owned(),
        reason: reason.into(),
    }
}

fn number<T: std::str::FromStr>(arg: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| bad(arg, format!("{value:?} is not a whole number in range")))
}

/// Parses the arguments after `blast`: `--opt VALUE` or `--opt=VALUE`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed> {
    let mut dev = None;
    let mut threads = None;
    let mut size = None;
    let mut vlan = None;
    let mut dst = None;
    let mut duration = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| bad(&a.to_string_lossy(), "not UTF-8"))?;
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let known = [
            "--dev",
            "--threads",
            "--size",
            "--vlan",
            "--dst",
            "--duration-ms",
        ];
        if !known.contains(&name) {
            return Err(bad(name, "unknown option; see `vfrig-agent blast --help`"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| bad(name, "needs a value"))?
                .into_string()
                .map_err(|v| bad(name, format!("{:?} is not UTF-8", v.to_string_lossy())))?,
        };
        let twice = || bad(name, "given twice");
        match name {
            "--dev" => {
                let plain = !value.is_empty()
                    && !value.starts_with('-')
                    && value.len() < libc::IFNAMSIZ
                    && !value.contains('/')
                    && value != "."
                    && value != "..";
                if !plain {
                    return Err(bad(name, format!("{value:?} is not an interface name")));
                }
                dev.replace(value).map_or(Ok(()), |_| Err(twice()))?;
            }
            "--threads" => {
                let n: usize = number(name, &value)?;
                if !(1..=MAX_THREADS).contains(&n) {
                    return Err(bad(name, format!("{n} is not between 1 and {MAX_THREADS}")));
                }
                threads.replace(n).map_or(Ok(()), |_| Err(twice()))?;
            }
            "--size" => {
                size.replace(number::<usize>(name, &value)?)
                    .map_or(Ok(()), |_| Err(twice()))?;
            }
            "--vlan" => {
                let vid: u16 = number(name, &value)?;
                if vid > MAX_VID {
                    return Err(bad(name, format!("{vid} is not a VLAN id (0-{MAX_VID})")));
                }
                vlan.replace(vid).map_or(Ok(()), |_| Err(twice()))?;
            }
            "--dst" => {
                let mac: MacAddr = value.parse().map_err(|e: String| bad(name, e))?;
                dst.replace(mac).map_or(Ok(()), |_| Err(twice()))?;
            }
            _ => {
                let ms = number(name, &value)?;
                duration
                    .replace(Duration::from_millis(ms))
                    .map_or(Ok(()), |_| Err(twice()))?;
            }
        }
    }
    let dev = dev.ok_or_else(|| bad("--dev", "missing; name the interface to send on"))?;
    let size = size.unwrap_or(DEFAULT_SIZE);
    let header = header_len(vlan.is_some());
    if !(header..=MAX_FRAME).contains(&size) {
        return Err(bad(
            "--size",
            format!("{size} is not between the {header}-byte header and {MAX_FRAME}"),
        ));
    }
    Ok(Parsed::Run(BlastArgs {
        dev,
        threads,
        size,
        vlan,
        dst: dst.unwrap_or(MacAddr::BROADCAST),
        duration,
    }))
}

/// The outcome of a run; its `Display` is the one line `blast` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The interface.
    pub dev: String,
    /// Sending threads.
    pub threads: usize,
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Sends that failed.
    pub errors: u64,
    /// The failures by errno.
    pub errors_by_errno: BTreeMap<i32, u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blast: dev={} threads={} sent={} errors={}",
            self.dev, self.threads, self.sent, self.errors
        )
    }
}

impl Summary {
    /// The failures by errno name, like `ENOBUFS=12 ENETDOWN=3`; empty when
    /// there were none.
    pub fn errors_detail(&self) -> String {
        let parts: Vec<String> = self
            .errors_by_errno
            .iter()
            .map(|(&errno, n)| format!("{:?}={n}", Errno::from_raw(errno)))
            .collect();
        parts.join(" ")
    }

    fn add(&mut self, counts: Counts) {
        self.sent = self.sent.saturating_add(counts.sent);
        self.errors = self.errors.saturating_add(counts.errors);
        for (errno, n) in counts.by_errno {
            let total = self.errors_by_errno.entry(errno).or_default();
            *total = total.saturating_add(n);
        }
    }
}

/// One thread's tally.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    errors: u64,
    by_errno: BTreeMap<i32, u64>,
}

/// Sends until SIGTERM/SIGINT or the duration, and sums up.
pub fn run(args: &BlastArgs) -> Result<Summary> {
    let signals = catch_stop_signals()?;
    let spec = FrameSpec {
        dst: args.dst,
        src: read_mac(&args.dev)?,
        vlan: args.vlan,
        size: args.size,
    };
    let threads = args.threads.unwrap_or_else(online_cpus);
    // All sockets first, so a missing permission fails before any thread runs.
    let sockets = (0..threads)
        .map(|_| PacketSocket::open(&args.dev))
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders: Vec<JoinHandle<Counts>> = Vec::with_capacity(threads);
    let mut spawn_error = None;
    for (i, socket) in sockets.into_iter().enumerate() {
        let (spec, dev, stop) = (spec.clone(), args.dev.clone(), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name(format!("blast {i}"))
            .spawn(move || send_loop(Some(socket), spec, &dev, &stop));
        match spawned {
            Ok(sender) => senders.push(sender),
            Err(error) => {
                spawn_error = Some(Error::Thread { error });
                break;
            }
        }
    }
    let waited = match spawn_error {
        Some(e) => Err(e),
        None => wait_for_stop(&signals, args.duration),
    };
    stop.store(true, Ordering::Relaxed);
    let mut summary = Summary {
        dev: args.dev.clone(),
        threads,
        sent: 0,
        errors: 0,
        errors_by_errno: BTreeMap::new(),
    };
    for sender in senders {
        // A sender cannot panic short of a bug; its count is then lost.
        if let Ok(counts) = sender.join() {
            summary.add(counts);
        }
    }
    waited.map(|()| summary)
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts)
/// and returns a signalfd that reports them.
fn catch_stop_signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    let error = |e: Errno| Error::Signals { error: e.into() };
    mask.thread_block().map_err(error)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(error)
}

/// Waits for SIGTERM/SIGINT on `signals`, or until `duration` passed.
fn wait_for_stop(signals: &SignalFd, duration: Option<Duration>) -> Result<()> {
    let deadline = duration.map(|d| Instant::now() + d);
    loop {
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(1),
        };
        if left.is_zero() {
            return Ok(());
        }
        let slice = left.min(Duration::from_secs(1));
        let timeout = PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(Error::Signals { error: e.into() }),
        }
    }
}

/// The number of online CPUs (at least 1).
fn online_cpus() -> usize {
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => usize::try_from(n).unwrap_or(1),
        _ => std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// One sender: the frame of `spec` on `socket` until `stop`, re-resolving
/// `dev` when its interface is gone and its address every [`MAC_REFRESH`].
fn send_loop(
    mut socket: Option<PacketSocket>,
    mut spec: FrameSpec,
    dev: &str,
    stop: &AtomicBool,
) -> Counts {
    let mut counts = Counts::default();
    let mut last_lookup: Option<Instant> = None;
    let mut frame = build_frame(&spec);
    let mut mac_read = Instant::now();
    let mut attempts: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        attempts = attempts.wrapping_add(1);
        if attempts % 256 == 0 && mac_read.elapsed() >= MAC_REFRESH {
            mac_read = Instant::now();
            if let Ok(src) = read_mac(dev) {
                if src != spec.src {
                    spec.src = src;
                    frame = build_frame(&spec);
                }
            }
        }
        let Some(open) = &socket else {
            if let Some(last) = last_lookup {
                std::thread::sleep(RESOLVE_EVERY.saturating_sub(last.elapsed()));
            }
            last_lookup = Some(Instant::now());
            socket = PacketSocket::open(dev).ok();
            continue;
        };
        match open.send(&frame) {
            Ok(_) => counts.sent += 1,
            Err(Errno::EINTR) => {}
            Err(errno) => {
                counts.errors += 1;
                *counts.by_errno.entry(errno as i32).or_default() += 1;
                if matches!(errno, Errno::ENXIO | Errno::ENODEV) {
                    // The interface is gone; look it up again right away,
                    // then every RESOLVE_EVERY.
                    socket = None;
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Parsed> {
        parse_args(args.split_whitespace().map(OsString::from))
    }

    fn check(args: &str, want: BlastArgs) {
        match parse(args) {
            Ok(Parsed::Run(got)) => assert_eq!(got, want, "{args}"),
            other => panic!("{args}: {other:?}"),
        }
    }

    fn check_bad(args: &str, want_arg: &str, want_reason: &str) {
        match parse(args) {
            Err(Error::BadArgument { arg, reason }) => {
                assert_eq!(arg, want_arg, "{args}: {reason}");
                assert!(reason.contains(want_reason), "{args}: {reason:?}");
            }
            other => panic!("{args}: {other:?}"),
        }
    }

    fn defaults(dev: &str) -> BlastArgs {
        BlastArgs {
            dev: dev.into(),
            threads: None,
            size: DEFAULT_SIZE,
            vlan: None,
            dst: MacAddr::BROADCAST,
            duration: None,
        }
    }

    #[test]
    fn arguments_parse_with_defaults() {
        check("--dev bond0", defaults("bond0"));
        check(
            "--threads 2 --dev=bond0 --size=1514 --vlan 100 --dst 52:54:0:12:34:56 --duration-ms 250",
            BlastArgs {
                threads: Some(2),
                size: 1514,
                vlan: Some(100),
                dst: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                duration: Some(Duration::from_millis(250)),
                ..defaults("bond0")
            },
        );
        check(
            "--dev eth0 --vlan 0 --size 18",
            BlastArgs {
                vlan: Some(0),
                size: 18,
                ..defaults("eth0")
            },
        );
        assert_eq!(parse("--dev x --help").unwrap(), Parsed::Help);
        assert_eq!(parse("-h").unwrap(), Parsed::Help);
    }

    #[test]
    fn bad_arguments_are_named() {
        check_bad("", "--dev", "missing");
        check_bad("--threads 2", "--dev", "missing");
        check_bad("--dev", "--dev", "needs a value");
        check_bad("--dev --threads 2", "--dev", "not an interface name");
        check_bad("--dev ../x", "--dev", "not an interface name");
        check_bad(
            "--dev a_name_much_too_long",
            "--dev",
            "not an interface name",
        );
        check_bad("--dev a --dev b", "--dev", "given twice");
        check_bad("--dev a --threads 0", "--threads", "between 1 and");
        check_bad("--dev a --threads many", "--threads", "not a whole number");
        check_bad("--dev a --threads -1", "--threads", "not a whole number");
        check_bad("--dev a --size 13", "--size", "14-byte header");
        check_bad("--dev a --size 17 --vlan 5", "--size", "18-byte header");
        check_bad("--dev a --size 65536", "--size", "65535");
        check_bad("--dev a --vlan 4095", "--vlan", "not a VLAN id");
        check_bad("--dev a --vlan 70000", "--vlan", "not a whole number");
        check_bad("--dev a --dst ff:ff", "--dst", "not a MAC address");
        check_bad(
            "--dev a --duration-ms soon",
            "--duration-ms",
            "not a whole number",
        );
        check_bad("--dev a --rate 5", "--rate", "unknown option");
        check_bad("--dev a bond0", "bond0", "unknown option");
        let err = parse_args([OsString::from("--dev"), OsString::from("a"), {
            use std::os::unix::ffi::OsStringExt;
            OsString::from_vec(vec![0xff])
        }])
        .unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn the_summary_line_is_stable() {
        let mut summary = Summary {
            dev: "bond0".into(),
            threads: 2,
            sent: 0,
            errors: 0,
            errors_by_errno: BTreeMap::new(),
        };
        summary.add(Counts {
            sent: 10,
            errors: 3,
            by_errno: BTreeMap::from([(libc::ENOBUFS, 2), (libc::ENETDOWN, 1)]),
        });
        summary.add(Counts {
            sent: 5,
            errors: 1,
            by_errno: BTreeMap::from([(libc::ENOBUFS, 1)]),
        });
        assert_eq!(
            summary.to_string(),
            "blast: dev=bond0 threads=2 sent=15 errors=4"
        );
        assert_eq!(summary.errors_detail(), "ENETDOWN=1 ENOBUFS=3");
    }
}
