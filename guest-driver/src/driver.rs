//! `vfrig-driver run`: the driver's event loop, tying the transport, the
//! adapter core, the TAP and rtnetlink together.
//!
//! One thread, polling (the transport has no interrupts). Each turn of the
//! loop, in order:
//!
//! 1. one control request, if a client is waiting (read now, carried out
//!    at step 4);
//! 2. mailbox frames from the PF → [`Adapter::handle_mailbox`];
//! 3. link messages → [`LinkTracker`] → [`Adapter::handle_netdev`];
//! 4. the control request: switch the watchdog mode, or (manual) run one
//!    watchdog pass;
//! 5. with the automatic watchdog only: [`Adapter::handle_timeout`] when
//!    [`Adapter::poll_timeout`] is due, and [`Adapter::poll_transmit`] →
//!    the mailbox until it has nothing more;
//! 6. [`Adapter::poll_event`] → carrier, MAC, queues, log (the core's
//!    documented drain order), then the control request's reply;
//! 7. frames the kernel sent on the TAP → the PF switch, frames from the
//!    switch → the TAP (a bounded batch each way);
//! 8. one status request, if a client is waiting;
//! 9. if nothing happened, back off ([`Backoff`]): spin, yield, then sleep
//!    up to 4 ms, so an idle driver leaves a TCG guest its CPU.
//!
//! # The watchdog modes
//!
//! [`WatchdogMode::Auto`] (the default) is the loop above: every turn sends
//! whatever the adapter has to send and handles its timers.
//! [`WatchdogMode::Manual`] hands the watchdog to a client of the control
//! socket `/run/vfrig/vfN.ctl` (`vfrig-driver watchdog`), so a replay can
//! order watchdog passes against kernel changes and PF answers exactly:
//! turns still take mailbox frames, link messages and adapter events, but
//! send nothing and handle no timeout (a request the PF holds for long never
//! times out); each `step` request runs one pass ([`watchdog_pass`]). Since
//! the request is read before the turn drains the mailbox and the rtnetlink
//! socket, a pass sees every kernel change made by commands that returned
//! before it was asked for. Switching back to auto resumes the timers where
//! they stand: a request outstanding longer than the reply timeout times
//! out at once.
//!
//! Before the loop, the TAP is created and given the VF's MAC and, with
//! `--enslave MASTER`, made a slave of MASTER at once (see [`run`]): the
//! kernel has already announced the TAP by then, so userspace sees it
//! without a master first, however short the window.
//!
//! SIGTERM and SIGINT are blocked and read from a signalfd between turns;
//! the loop then ends, the TAP is closed (deleting the interface) and the
//! device is reset by the transport's drop.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netlink_packet_route::link::LinkMessage;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use virtchnl::VirtchnlOp;

use crate::core::{Adapter, Config, Event, LogLevel, NetdevEvent, Status, Transmit, VlanFsm};
use crate::netdev::netlink::{self, dump_links, LinkChange, LinkId, LinkListener, LinkTracker};
use crate::netdev::{self, Tap};
use crate::transport::backoff::Backoff;
use crate::transport::pci::{self, VIRTIO_NET_MODERN, VIRTIO_VENDOR};
use crate::transport::{self as transport, PairId, Selector, VfDevice};

/// Where status and control sockets live.
pub const STATUS_DIR: &str = "/run/vfrig";

/// Frames moved each way per turn of the loop, so one busy direction
/// cannot starve the mailbox.
const BATCH: usize = 32;

/// How long a status client may take to read its line.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// How long a control client may take to send its request line once
/// connected, and to read the reply.
const CONTROL_IO_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest control request line read.
const CONTROL_LINE_MAX: u64 = 1024;

/// How long a control client waits for the driver's reply.
const CONTROL_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The VF's number: names the TAP (`vfN`) and the status socket.
    pub vf: u16,
    /// Which PCI function; `None`: the `vf`-th 1af4:1041 function in BDF
    /// order (the rig plugs VF N on root port N, so the orders agree).
    pub bdf: Option<pci::Bdf>,
    /// The VLAN filter state machine.
    pub vlan_fsm: VlanFsm,
    /// A master (bond, bridge, ...) to enslave the TAP to as soon as it
    /// exists, before anything else; a master that does not exist, or
    /// refuses, is a warning and the driver runs unenslaved.
    pub enslave: Option<String>,
}

impl DriverOptions {
    /// The TAP's name.
    pub fn ifname(&self) -> String {
        format!("vf{}", self.vf)
    }
}

/// The status socket of VF `vf`.
pub fn status_path(vf: u16) -> PathBuf {
    Path::new(STATUS_DIR).join(format!("vf{vf}.sock"))
}

/// The control socket of VF `vf` (`vfrig-driver watchdog`).
pub fn control_path(vf: u16) -> PathBuf {
    Path::new(STATUS_DIR).join(format!("vf{vf}.ctl"))
}

/// Who runs the driver's watchdog (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogMode {
    /// Every turn of the loop sends what the adapter has and handles its
    /// timers.
    #[default]
    Auto,
    /// Nothing is sent and no timer handled but in a pass a control client
    /// asks for.
    Manual,
}

impl WatchdogMode {
    /// The name the control protocol and the status use.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogMode::Auto => "auto",
            WatchdogMode::Manual => "manual",
        }
    }
}

impl fmt::Display for WatchdogMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a control client asks of the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogCommand {
    /// Switch to [`WatchdogMode::Manual`].
    Manual,
    /// Switch to [`WatchdogMode::Auto`].
    Auto,
    /// Run one watchdog pass (manual mode only).
    Step,
}

impl std::str::FromStr for WatchdogCommand {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "manual" => Ok(WatchdogCommand::Manual),
            "auto" => Ok(WatchdogCommand::Auto),
            "step" => Ok(WatchdogCommand::Step),
            other => Err(format!("`{other}`: expected manual, auto or step")),
        }
    }
}

/// A control request: one JSON line, `{"watchdog":"step"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// What to do.
    pub watchdog: WatchdogCommand,
}

/// The driver's reply to a control request: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ControlReply {
    /// The request failed: `{"error":"..."}`.
    Error {
        /// What went wrong and what to do.
        error: String,
    },
    /// The watchdog mode now: `{"mode":"manual"}`.
    Mode {
        /// The mode.
        mode: WatchdogMode,
    },
    /// What one watchdog pass sent: `{"sent":"ADD_VLAN_V2"}`, or
    /// `{"sent":null}` when it sent nothing.
    Step {
        /// The opcode of the pass's request by its kernel name
        /// (`VirtchnlOp`'s `Display`); RESET_VF when the pass asked for a
        /// reset.
        #[serde(deserialize_with = "Option::deserialize")]
        sent: Option<String>,
        /// A second request of the same pass: only after a RESET_VF, which
        /// the adapter follows with nothing today.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<String>,
    },
}

impl ControlReply {
    /// The reply for a pass that sent `ops`, in order.
    pub fn step(ops: &[VirtchnlOp]) -> ControlReply {
        let mut names = ops.iter().map(ToString::to_string);
        ControlReply::Step {
            sent: names.next(),
            then: names.next(),
        }
    }
}

/// One watchdog pass, as the manual mode runs it: one
/// [`Adapter::poll_transmit`], and a second one after a RESET_VF (which is
/// never answered, so the adapter may have its next request ready). Each
/// request goes to `send` in order; returns their opcodes.
pub fn watchdog_pass<E>(
    adapter: &mut Adapter,
    now: Instant,
    mut send: impl FnMut(&Transmit) -> Result<(), E>,
) -> Result<Vec<VirtchnlOp>, E> {
    let mut sent = Vec::new();
    while let Some(tx) = adapter.poll_transmit(now) {
        send(&tx)?;
        sent.push(tx.op());
        if tx.op() != VirtchnlOp::ResetVf || sent.len() == 2 {
            break;
        }
    }
    Ok(sent)
}

/// Why the driver stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No function to open.
    #[error("there is no VF {vf}: only {found} virtio-net (1af4:1041) functions; `ls /sys/bus/pci/devices` lists them")]
    NoSuchVf {
        /// The VF asked for.
        vf: u16,
        /// How many functions there are.
        found: usize,
    },
    /// The transport failed.
    #[error("VF transport: {step}")]
    Transport {
        /// What the driver was doing.
        step: &'static str,
        /// The error.
        #[source]
        source: transport::Error,
    },
    /// The netdev shell failed.
    #[error(transparent)]
    Netdev(#[from] netdev::Error),
    /// Signals could not be set up.
    #[error("cannot block SIGTERM and SIGINT or open a signalfd: {0}")]
    Signals(nix::errno::Errno),
    /// The status socket failed.
    #[error("status socket {}", path.display())]
    Status {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The control socket failed.
    #[error("control socket {}", path.display())]
    Control {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a control request to a running driver failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nobody listens on the socket.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The exchange broke off.
    #[error("no reply from the driver on {}", path.display())]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The driver closed the connection without a reply.
    #[error(
        "the driver closed {} without replying; it may have stopped (see its log)",
        path.display()
    )]
    NoReply {
        /// The socket.
        path: PathBuf,
    },
    /// The reply is not one this client knows.
    #[error("the driver's reply `{line}` is not understood ({error}); is the driver the same version as this command?")]
    BadReply {
        /// The line.
        line: String,
        /// The decoding error.
        error: String,
    },
}

/// What became of `--enslave MASTER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnslaveStatus {
    /// The master asked for.
    pub master: String,
    /// Whether the kernel made the TAP its slave. What happens to the TAP
    /// later (released, moved) is the adapter's `netdev.enslaved`.
    pub done: bool,
    /// Why not, when not.
    #[serde(default)]
    pub error: Option<String>,
}

/// Driver-side counters, served next to the adapter's status, and what
/// became of `--enslave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriverCounters {
    /// Frames read from the TAP and sent to the PF switch.
    pub frames_to_pf: u64,
    /// Frames read from the TAP while the queues were disabled, or that the
    /// transmit queue had no room for.
    pub frames_to_pf_dropped: u64,
    /// Frames from the PF switch written to the TAP.
    pub frames_from_pf: u64,
    /// Frames from the PF switch the kernel did not take.
    pub frames_from_pf_dropped: u64,
    /// Mailbox frames sent.
    pub mailbox_sent: u64,
    /// Mailbox frames received.
    pub mailbox_received: u64,
    /// Link messages received (dump included).
    pub netlink_messages: u64,
    /// Netdev events given to the adapter.
    pub netdev_events: u64,
    /// Netdev events the adapter refused.
    pub netdev_refused: u64,
    /// Status requests served.
    pub status_requests: u64,
    /// Who runs the watchdog.
    #[serde(default)]
    pub watchdog: WatchdogMode,
    /// Watchdog passes run on request (manual mode).
    #[serde(default)]
    pub watchdog_steps: u64,
    /// The `--enslave` attempt; absent without `--enslave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enslave: Option<EnslaveStatus>,
}

/// One status line: the adapter's view plus the driver's.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The VF number.
    pub vf: u16,
    /// The PCI function.
    pub bdf: String,
    /// The TAP.
    pub ifname: String,
    /// Where the interface is now (`None` once lost).
    pub link: Option<LinkId>,
    /// The adapter core's status.
    pub adapter: Status,
    /// The driver's counters.
    pub driver: DriverCounters,
}

/// Resolves the PCI function for `opts`.
fn selector(opts: &DriverOptions) -> Result<Selector, DriverError> {
    if let Some(bdf) = &opts.bdf {
        return Ok(Selector::Bdf(bdf.clone()));
    }
    let all =
        pci::list(VIRTIO_VENDOR, VIRTIO_NET_MODERN).map_err(|source| DriverError::Transport {
            step: "listing PCI functions",
            source,
        })?;
    all.get(usize::from(opts.vf))
        .cloned()
        .map(Selector::Bdf)
        .ok_or(DriverError::NoSuchVf {
            vf: opts.vf,
            found: all.len(),
        })
}

/// SIGTERM and SIGINT, read from a non-blocking signalfd.
#[derive(Debug)]
struct Signals(SignalFd);

impl Signals {
    fn block() -> Result<Signals, DriverError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().map_err(DriverError::Signals)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(DriverError::Signals)?;
        Ok(Signals(fd))
    }

    /// The signal that arrived, if one did.
    fn pending(&self) -> Option<i32> {
        match self.0.read_signal() {
            Ok(Some(info)) => i32::try_from(info.ssi_signo).ok(),
            _ => None,
        }
    }
}

/// The status socket: one JSON line per connection.
#[derive(Debug)]
struct StatusServer {
    listener: UnixListener,
    path: PathBuf,
}

/// A non-blocking listener on `path`, replacing a stale socket there.
fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl StatusServer {
    fn bind(path: PathBuf) -> Result<StatusServer, DriverError> {
        match listen(&path) {
            Ok(listener) => Ok(StatusServer { listener, path }),
            Err(source) => Err(DriverError::Status { path, source }),
        }
    }

    /// Serves one waiting client, if any; true if one was served.
    fn serve(&self, report: impl FnOnce() -> StatusReport) -> bool {
        let stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) => {
                tracing::warn!(%err, "status socket accept failed");
                return false;
            }
        };
        if let Err(err) = Self::answer(stream, &report()) {
            tracing::debug!(%err, "status client went away");
        }
        true
    }

    fn answer(mut stream: UnixStream, report: &StatusReport) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(STATUS_WRITE_TIMEOUT))?;
        let mut line = serde_json::to_vec(report).map_err(io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line)
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The control socket: one JSON request line in, one JSON reply line out,
/// per connection.
#[derive(Debug)]
struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

/// A control client that sent its request and waits for the reply.
#[derive(Debug)]
struct PendingControl {
    stream: UnixStream,
    /// The request, or why it is not one.
    request: Result<WatchdogCommand, String>,
}

impl ControlServer {
    fn bind(path: PathBuf) -> Result<ControlServer, DriverError> {
        match listen(&path) {
            Ok(listener) => Ok(ControlServer { listener, path }),
            Err(source) => Err(DriverError::Control { path, source }),
        }
    }

    /// The request of a waiting client, if one is waiting and sent a line.
    fn accept(&self) -> Option<PendingControl> {
        let stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(err) => {
                tracing::warn!(%err, "control socket accept failed");
                return None;
            }
        };
        let read = || -> io::Result<String> {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(CONTROL_IO_TIMEOUT))?;
            stream.set_write_timeout(Some(CONTROL_IO_TIMEOUT))?;
            let mut line = String::new();
            BufReader::new(&stream)
                .take(CONTROL_LINE_MAX)
                .read_line(&mut line)?;
            Ok(line)
        };
        let request = match read() {
            Ok(line) => serde_json::from_str::<ControlRequest>(line.trim())
                .map(|r| r.watchdog)
                .map_err(|err| {
                    format!(
                        "bad control request `{}`: {err}; send {{\"watchdog\":\"manual\"|\"auto\"|\"step\"}}",
                        line.trim()
                    )
                }),
            Err(err) => {
                tracing::debug!(%err, "control client sent no request");
                return None;
            }
        };
        Some(PendingControl { stream, request })
    }
}

impl PendingControl {
    fn answer(mut self, reply: &ControlReply) {
        let mut line = match serde_json::to_vec(reply) {
            Ok(line) => line,
            Err(err) => serde_json::json!({ "error": format!("cannot encode the reply: {err}") })
                .to_string()
                .into_bytes(),
        };
        line.push(b'\n');
        if let Err(err) = self.stream.write_all(&line) {
            tracing::debug!(%err, "control client went away");
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one control request to VF `vf`'s running driver and returns its
/// reply (which may be [`ControlReply::Error`]).
pub fn control(vf: u16, command: WatchdogCommand) -> Result<ControlReply, ControlError> {
    control_at(&control_path(vf), command)
}

/// [`control`] on the socket at `path`.
pub fn control_at(path: &Path, command: WatchdogCommand) -> Result<ControlReply, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let exchange = |source| ControlError::Exchange {
        path: path.to_owned(),
        source,
    };
    stream
        .set_read_timeout(Some(CONTROL_REPLY_TIMEOUT))
        .map_err(exchange)?;
    let mut line = serde_json::to_vec(&ControlRequest { watchdog: command })
        .map_err(|err| exchange(io::Error::other(err)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(exchange)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(exchange)?;
    if reply.is_empty() {
        return Err(ControlError::NoReply {
            path: path.to_owned(),
        });
    }
    serde_json::from_str(reply.trim()).map_err(|err| ControlError::BadReply {
        line: reply.trim().to_owned(),
        error: err.to_string(),
    })
}

/// Reads VF `vf`'s status line from its socket.
pub fn read_status(vf: u16) -> io::Result<String> {
    let mut stream = UnixStream::connect(status_path(vf))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// Everything the loop owns.
#[derive(Debug)]
struct Driver {
    vf: u16,
    dev: VfDevice,
    adapter: Adapter,
    tap: Tap,
    listener: LinkListener,
    tracker: LinkTracker,
    status: StatusServer,
    control: ControlServer,
    counters: DriverCounters,
    queues: bool,
    /// [`LinkListener::overruns`] when last caught up.
    overruns_seen: u64,
    frame: Vec<u8>,
}

/// Puts one request on the mailbox.
fn send_request(
    dev: &mut VfDevice,
    counters: &mut DriverCounters,
    tx: &Transmit,
) -> Result<(), DriverError> {
    tracing::debug!(op = %tx.op(), cookie = tx.cookie, "mailbox request");
    dev.send_mailbox(&tx.to_frame())
        .map_err(|source| DriverError::Transport {
            step: "sending to the mailbox",
            source,
        })?;
    counters.mailbox_sent += 1;
    Ok(())
}

/// Enslaves the interface `name` (index `ifindex`) to `master` (see
/// [`netlink::enslave`]); a failure is logged and recorded, never fatal.
fn enslave(name: &str, ifindex: u32, master: &str) -> EnslaveStatus {
    match netlink::enslave(name, ifindex, master) {
        Ok(master_index) => {
            tracing::info!(master, master_index, "enslaved");
            EnslaveStatus {
                master: master.to_owned(),
                done: true,
                error: None,
            }
        }
        Err(err) => {
            let error = error_chain(&err);
            tracing::warn!(
                master,
                %error,
                "not enslaved; the driver runs with its interface on its own"
            );
            EnslaveStatus {
                master: master.to_owned(),
                done: false,
                error: Some(error),
            }
        }
    }
}

/// An error with its causes, `: `-separated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs the driver until SIGTERM or SIGINT.
///
/// With [`DriverOptions::enslave`], the TAP is enslaved right after it is
/// created and given its MAC, before the status socket, the link dump and
/// the loop. The messages about its creation are fed to the tracker first,
/// so the enslave's own link message reaches it in the loop, as a change:
/// the adapter sees [`NetdevEvent::Enslaved`] (and a bond's MAC and
/// opening the slave) as it would for `ip link set vfN master MASTER`.
pub fn run(opts: &DriverOptions) -> Result<(), DriverError> {
    let signals = Signals::block()?;
    let selector = selector(opts)?;
    let span = tracing::info_span!("vf", id = opts.vf);
    let _span = span.enter();
    let dev = VfDevice::open(&selector).map_err(|source| DriverError::Transport {
        step: "opening the VF",
        source,
    })?;
    let mut config = Config::with_fsm(opts.vlan_fsm);
    if dev.mac().is_valid_unicast() {
        config.fallback_mac = dev.mac();
    }
    let mac = config.fallback_mac;
    let adapter = Adapter::new(config);

    // Listen before creating the TAP and dumping, so nothing is missed.
    let mut listener = LinkListener::open()?;
    let tap = Tap::create(&opts.ifname())?;
    tap.set_mac(mac)?;
    let me = LinkId {
        nsid: None,
        ifindex: tap.ifindex()?,
    };
    let mut tracker = LinkTracker::new(me);
    // The TAP's creation and the MAC change are already queued on the
    // listener (the kernel notifies inside the ioctl). Feed them before the
    // tracker knows the MAC, so the kernel's random first MAC is not taken
    // for a change the user made.
    let mut early = 0;
    for (change, nsid, link) in listener.recv()? {
        early += 1;
        for event in tracker.handle(change, nsid, &link) {
            tracing::debug!(?event, "netdev event before start, dropped");
        }
    }
    tracker.note_mac(mac);
    let enslaved = opts
        .enslave
        .as_deref()
        .map(|master| enslave(tap.name(), me.ifindex, master));
    let status = StatusServer::bind(status_path(opts.vf))?;
    let control = ControlServer::bind(control_path(opts.vf))?;
    tracing::info!(
        bdf = %dev.bdf(),
        ifname = tap.name(),
        ifindex = me.ifindex,
        %mac,
        fsm = %opts.vlan_fsm,
        "driver started"
    );
    let mut driver = Driver {
        vf: opts.vf,
        dev,
        adapter,
        tap,
        listener,
        tracker,
        status,
        control,
        counters: DriverCounters {
            netlink_messages: early,
            enslave: enslaved,
            ..DriverCounters::default()
        },
        queues: false,
        overruns_seen: 0,
        frame: vec![0; 65536],
    };
    for link in dump_links()? {
        driver.counters.netlink_messages += 1;
        driver.netdev(LinkChange::New, None, &link);
    }
    let mut backoff = Backoff::default();
    loop {
        if let Some(signo) = signals.pending() {
            tracing::info!(signo, "stopping");
            break;
        }
        if driver.turn(Instant::now())? {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
    Ok(())
}

impl Driver {
    /// One turn of the loop; true if anything happened.
    fn turn(&mut self, now: Instant) -> Result<bool, DriverError> {
        let transport = |step| move |source| DriverError::Transport { step, source };
        // The control request first: whatever happened before it was asked
        // for is in the mailbox and the rtnetlink socket by now, and is
        // handled below before the request is carried out.
        let control = self.control.accept();
        let mut work = control.is_some();
        while let Some(frame) = self
            .dev
            .recv_mailbox()
            .map_err(transport("receiving from the mailbox"))?
        {
            self.counters.mailbox_received += 1;
            self.adapter.handle_mailbox(now, &frame);
            work = true;
        }
        for (change, nsid, link) in self.listener.recv()? {
            self.counters.netlink_messages += 1;
            self.netdev(change, nsid, &link);
            work = true;
        }
        if self.listener.overruns() != self.overruns_seen {
            // Link messages were lost: catch up from a dump (of the
            // driver's own namespace only; see `netdev::netlink`).
            self.overruns_seen = self.listener.overruns();
            for link in dump_links()? {
                self.counters.netlink_messages += 1;
                self.netdev(LinkChange::New, None, &link);
            }
            work = true;
        }
        let reply = match control.as_ref().map(|c| c.request.clone()) {
            Some(Ok(command)) => Some(self.control_command(now, command)?),
            Some(Err(error)) => Some(ControlReply::Error { error }),
            None => None,
        };
        if self.counters.watchdog == WatchdogMode::Auto {
            if self.adapter.poll_timeout().is_some_and(|due| due <= now) {
                self.adapter.handle_timeout(now);
                work = true;
            }
            while let Some(tx) = self.adapter.poll_transmit(now) {
                send_request(&mut self.dev, &mut self.counters, &tx)?;
                work = true;
            }
        }
        while let Some(event) = self.adapter.poll_event() {
            self.apply(now, event)?;
            work = true;
        }
        if let (Some(client), Some(reply)) = (control, reply) {
            client.answer(&reply);
        }
        work |= self.move_frames()?;
        let served = self.status.serve(|| StatusReport {
            vf: self.vf,
            bdf: self.dev.bdf().to_string(),
            ifname: self.tap.name().to_owned(),
            link: self.tracker.me(),
            adapter: self.adapter.status(),
            driver: DriverCounters {
                status_requests: self.counters.status_requests + 1,
                ..self.counters.clone()
            },
        });
        if served {
            self.counters.status_requests += 1;
            work = true;
        }
        Ok(work)
    }

    /// Carries out a control request (after the turn took the mailbox and
    /// the link messages, before the adapter's events are drained).
    fn control_command(
        &mut self,
        now: Instant,
        command: WatchdogCommand,
    ) -> Result<ControlReply, DriverError> {
        let mode = match command {
            WatchdogCommand::Manual => WatchdogMode::Manual,
            WatchdogCommand::Auto => WatchdogMode::Auto,
            WatchdogCommand::Step => {
                if self.counters.watchdog == WatchdogMode::Auto {
                    return Ok(ControlReply::Error {
                        error: format!(
                            "the watchdog of vf{} runs by itself (auto); switch it to manual \
                             first: `vfrig-driver watchdog --vf {} manual`",
                            self.vf, self.vf
                        ),
                    });
                }
                let (dev, counters) = (&mut self.dev, &mut self.counters);
                let sent =
                    watchdog_pass(&mut self.adapter, now, |tx| send_request(dev, counters, tx))?;
                self.counters.watchdog_steps += 1;
                tracing::info!(?sent, "watchdog pass");
                return Ok(ControlReply::step(&sent));
            }
        };
        if self.counters.watchdog != mode {
            tracing::info!(%mode, "watchdog mode");
        }
        self.counters.watchdog = mode;
        Ok(ControlReply::Mode { mode })
    }

    /// Feeds one link message to the tracker and its events to the adapter.
    fn netdev(&mut self, change: LinkChange, nsid: Option<i32>, link: &LinkMessage) {
        for event in self.tracker.handle(change, nsid, link) {
            self.counters.netdev_events += 1;
            tracing::info!(?event, "netdev event");
            if let Err(refused) = self.adapter.handle_netdev(event) {
                self.counters.netdev_refused += 1;
                tracing::warn!(?event, %refused, "netdev change refused");
            }
            if event == NetdevEvent::Removed {
                tracing::warn!("the interface was deleted");
            }
        }
    }

    /// Acts on one adapter event.
    fn apply(&mut self, now: Instant, event: Event) -> Result<(), DriverError> {
        match event {
            Event::MacAddress(mac) => {
                self.tap.set_mac(mac)?;
                self.tracker.note_mac(mac);
                tracing::info!(%mac, "MAC set");
            }
            Event::Carrier(on) => {
                self.tap.set_carrier(on)?;
                tracing::info!(on, "carrier");
            }
            Event::Queues(on) => {
                self.queues = on;
                tracing::info!(on, "queues");
            }
            Event::ResetStarted(reason) => {
                // The transport has no VFGEN_RSTAT: the mailbox queues stay
                // usable across a VF reset, and a PF still resetting answers
                // ERR_PARAM, which the core retries (`init_retry` apart).
                // So the device is reported ready at once.
                tracing::warn!(?reason, "reset");
                self.adapter.handle_device_ready(now);
            }
            Event::Log(line) => match line.level {
                LogLevel::Debug => tracing::debug!(target: "vfrig::adapter", "{}", line.message),
                LogLevel::Info => tracing::info!(target: "vfrig::adapter", "{}", line.message),
                LogLevel::Warn => tracing::warn!(target: "vfrig::adapter", "{}", line.message),
                LogLevel::Error => tracing::error!(target: "vfrig::adapter", "{}", line.message),
            },
            other => tracing::info!(event = ?other, "adapter event"),
        }
        Ok(())
    }

    /// Moves a batch of frames each way; true if any moved.
    fn move_frames(&mut self) -> Result<bool, DriverError> {
        let transport = |step| move |source| DriverError::Transport { step, source };
        let mut moved = false;
        self.dev
            .reclaim_tx(PairId::Data)
            .map_err(transport("reclaiming transmit buffers"))?;
        for _ in 0..BATCH {
            let Some(len) = self.tap.recv(&mut self.frame)? else {
                break;
            };
            moved = true;
            let frame = self.frame.get(..len).unwrap_or_default();
            if !self.queues {
                self.counters.frames_to_pf_dropped += 1;
                continue;
            }
            match self.dev.send_frame(frame) {
                Ok(()) => self.counters.frames_to_pf += 1,
                Err(transport::Error::QueueFull { .. } | transport::Error::FrameTooLong { .. }) => {
                    self.counters.frames_to_pf_dropped += 1;
                }
                Err(source) => {
                    return Err(DriverError::Transport {
                        step: "sending a frame",
                        source,
                    })
                }
            }
        }
        for _ in 0..BATCH {
            let Some(frame) = self
                .dev
                .recv_frame()
                .map_err(transport("receiving a frame"))?
            else {
                break;
            };
            moved = true;
            if self.tap.send(&frame)? {
                self.counters.frames_from_pf += 1;
            } else {
                self.counters.frames_from_pf_dropped += 1;
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            vf: 3,
            bdf: "0000:04:00.0".into(),
            ifname: "vf3".into(),
            link: Some(LinkId {
                nsid: None,
                ifindex: 7,
            }),
            adapter: Adapter::new(Config::default()).status(),
            driver: DriverCounters::default(),
        }
    }

    #[test]
    fn names_follow_the_vf_number() {
        let opts = DriverOptions {
            vf: 3,
            bdf: None,
            vlan_fsm: VlanFsm::Fixed,
            enslave: None,
        };
        assert_eq!(opts.ifname(), "vf3");
        assert_eq!(status_path(3), Path::new("/run/vfrig/vf3.sock"));
        assert_eq!(control_path(3), Path::new("/run/vfrig/vf3.ctl"));
    }

    #[test]
    fn the_status_says_who_runs_the_watchdog() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["driver"]["watchdog"], "auto");
        let mut manual = report();
        manual.driver.watchdog = WatchdogMode::Manual;
        let json = serde_json::to_value(&manual).unwrap();
        assert_eq!(json["driver"]["watchdog"], "manual");
        // A line from before the watchdog modes reads as auto.
        let mut old = json["driver"].clone();
        let fields = old.as_object_mut().unwrap();
        fields.remove("watchdog");
        fields.remove("watchdog_steps");
        let counters: DriverCounters = serde_json::from_value(old).unwrap();
        assert_eq!(counters.watchdog, WatchdogMode::Auto);
    }

    #[test]
    fn control_requests_and_replies_are_one_json_line_each() {
        for (command, line) in [
            (WatchdogCommand::Manual, r#"{"watchdog":"manual"}"#),
            (WatchdogCommand::Auto, r#"{"watchdog":"auto"}"#),
            (WatchdogCommand::Step, r#"{"watchdog":"step"}"#),
        ] {
            let request = ControlRequest { watchdog: command };
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
            assert_eq!(
                serde_json::from_str::<ControlRequest>(line).unwrap(),
                request
            );
            let name = line.split('"').nth(3).unwrap();
            assert_eq!(name.parse::<WatchdogCommand>(), Ok(command));
        }
        assert!("steps"
            .parse::<WatchdogCommand>()
            .unwrap_err()
            .contains("manual, auto or step"));
        assert!(serde_json::from_str::<ControlRequest>(r#"{"watchdog":"step","vf":0}"#).is_err());

        let replies = [
            (
                ControlReply::Mode {
                    mode: WatchdogMode::Manual,
                },
                r#"{"mode":"manual"}"#,
            ),
            (
                ControlReply::step(&[VirtchnlOp::AddVlanV2]),
                r#"{"sent":"ADD_VLAN_V2"}"#,
            ),
            (ControlReply::step(&[]), r#"{"sent":null}"#),
            (
                ControlReply::step(&[VirtchnlOp::ResetVf, VirtchnlOp::Version]),
                r#"{"sent":"RESET_VF","then":"VERSION"}"#,
            ),
            (
                ControlReply::Error { error: "no".into() },
                r#"{"error":"no"}"#,
            ),
        ];
        for (reply, line) in replies {
            assert_eq!(serde_json::to_string(&reply).unwrap(), line);
            assert_eq!(
                serde_json::from_str::<ControlReply>(line).unwrap(),
                reply,
                "{line}"
            );
        }
        // Something else is not taken for a pass that sent nothing.
        assert!(serde_json::from_str::<ControlReply>(r#"{"released":1}"#).is_err());
    }

    /// A PF model answering an adapter's requests in memory.
    struct Pf(vfrig_device::pf::Pf);

    impl Pf {
        fn new() -> Pf {
            let config = vfrig_device::pf::PfConfig {
                num_vfs: 1,
                ..vfrig_device::pf::PfConfig::default()
            };
            Pf(vfrig_device::pf::Pf::new(config).unwrap())
        }

        /// Hands `tx` to the PF and its replies and events to `adapter`.
        fn answer(&mut self, adapter: &mut Adapter, now: Instant, tx: &Transmit) {
            let vf = vfrig_device::pf::VfId(0);
            self.0.handle_mailbox(now, vf, &tx.to_frame());
            while let Some(effect) = self.0.poll_effect() {
                adapter.handle_mailbox(now, &effect.to_frame());
            }
        }
    }

    #[test]
    fn a_watchdog_pass_sends_at_most_the_one_request_the_adapter_has() {
        let now = Instant::now();
        let mut adapter = Adapter::new(Config::default());
        let mut pf = Pf::new();
        let mut sent = Vec::new();
        let pass = |adapter: &mut Adapter, sent: &mut Vec<Transmit>| {
            watchdog_pass(adapter, now, |tx| {
                sent.push(tx.clone());
                Ok::<(), ()>(())
            })
            .unwrap()
        };
        assert_eq!(pass(&mut adapter, &mut sent), vec![VirtchnlOp::Version]);
        assert_eq!(
            pass(&mut adapter, &mut sent),
            vec![],
            "VERSION waits for its reply"
        );
        pf.answer(&mut adapter, now, &sent[0]);
        assert_eq!(
            pass(&mut adapter, &mut sent),
            vec![VirtchnlOp::GetVfResources]
        );
        assert_eq!(sent.len(), 2);
        // A send that fails ends the pass with its error.
        pf.answer(&mut adapter, now, &sent[1]);
        let err = watchdog_pass(&mut adapter, now, |_| Err("mailbox full"));
        assert_eq!(err, Err("mailbox full"));
    }

    #[test]
    fn a_pass_that_asks_for_a_reset_sends_reset_vf_alone() {
        let start = Instant::now();
        let mut adapter = Adapter::new(Config::default());
        let mut pf = Pf::new();
        // Negotiate, answering everything, until the adapter is idle.
        for _ in 0..16 {
            let mut sent = Vec::new();
            watchdog_pass(&mut adapter, start, |tx| {
                sent.push(tx.clone());
                Ok::<(), ()>(())
            })
            .unwrap();
            let Some(tx) = sent.pop() else { break };
            pf.answer(&mut adapter, start, &tx);
        }
        assert_eq!(
            adapter.phase(),
            crate::core::Phase::Down,
            "{:?}",
            adapter.status()
        );
        adapter.handle_netdev(NetdevEvent::Up).unwrap();
        let mut ops = Vec::new();
        let first = watchdog_pass(&mut adapter, start, |tx| {
            ops.push(tx.op());
            Ok::<(), ()>(())
        });
        assert_eq!(first.unwrap().len(), 1, "{ops:?}");
        // The PF never answers; the reply timer runs out.
        let late = start + adapter.config().reply_timeout + Duration::from_secs(1);
        adapter.handle_timeout(late);
        let reset = watchdog_pass(&mut adapter, late, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(reset, vec![VirtchnlOp::ResetVf]);
        assert_eq!(
            ControlReply::step(&reset),
            ControlReply::Step {
                sent: Some("RESET_VF".into()),
                then: None
            }
        );
    }

    #[test]
    fn the_control_server_answers_one_request_per_connection() {
        let dir = std::env::temp_dir().join(format!("vfrig-control-{}", std::process::id()));
        let path = dir.join("vf3.ctl");
        let server = ControlServer::bind(path.clone()).unwrap();
        assert!(server.accept().is_none(), "nobody is waiting yet");
        let wait_for_client = |server: &ControlServer| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(pending) = server.accept() {
                    return pending;
                }
                assert!(Instant::now() < deadline, "the client never connected");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        for (command, reply) in [
            (
                WatchdogCommand::Manual,
                ControlReply::Mode {
                    mode: WatchdogMode::Manual,
                },
            ),
            (
                WatchdogCommand::Step,
                ControlReply::step(&[VirtchnlOp::DelVlanV2]),
            ),
        ] {
            let client = {
                let path = path.clone();
                std::thread::spawn(move || control_at(&path, command))
            };
            let pending = wait_for_client(&server);
            assert_eq!(pending.request, Ok(command));
            pending.answer(&reply);
            assert_eq!(client.join().unwrap().unwrap(), reply);
        }

        // A line that is not a request gets an error reply.
        let client = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut stream = UnixStream::connect(&path).unwrap();
                stream.write_all(b"{\"watchdog\":\"nap\"}\n").unwrap();
                let mut text = String::new();
                stream.read_to_string(&mut text).unwrap();
                text
            })
        };
        let pending = wait_for_client(&server);
        let error = pending.request.clone().unwrap_err();
        assert!(
            error.contains("nap") && error.contains("\"step\""),
            "{error}"
        );
        pending.answer(&ControlReply::Error { error });
        let text = client.join().unwrap();
        assert!(
            text.starts_with("{\"error\":") && text.ends_with("}\n"),
            "{text}"
        );

        // A client whose driver goes away without a reply is told so.
        let client = {
            let path = path.clone();
            std::thread::spawn(move || control_at(&path, WatchdogCommand::Step))
        };
        drop(wait_for_client(&server));
        let err = client.join().unwrap().unwrap_err();
        assert!(matches!(err, ControlError::NoReply { .. }), "{err}");

        drop(server);
        assert!(!path.exists(), "the socket is removed on drop");
        let err = control_at(&path, WatchdogCommand::Auto).unwrap_err();
        assert!(err.to_string().starts_with("cannot connect to"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_enslave_outcome_is_in_the_status_only_when_asked_for() {
        let json = serde_json::to_value(report()).unwrap();
        assert!(json["driver"].get("enslave").is_none(), "{json}");

        let mut with = report();
        with.driver.enslave = Some(EnslaveStatus {
            master: "bond0".into(),
            done: true,
            error: None,
        });
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(
            json["driver"]["enslave"],
            serde_json::json!({"master": "bond0", "done": true, "error": null})
        );
        assert_eq!(
            json["driver"]["frames_to_pf"], 0,
            "counters stay where they were"
        );

        // A consumer built before `enslave` existed, or reading an old line.
        let old = serde_json::to_value(report()).unwrap();
        let counters: DriverCounters = serde_json::from_value(old["driver"].clone()).unwrap();
        assert_eq!(counters.enslave, None);
        let new: DriverCounters = serde_json::from_value(json["driver"].clone()).unwrap();
        assert_eq!(new.enslave, with.driver.enslave);
    }

    #[test]
    fn a_master_that_does_not_exist_is_recorded_not_fatal() {
        let status = enslave("vf9", 0, "vfrig-nomaster");
        assert_eq!(
            (status.master.as_str(), status.done),
            ("vfrig-nomaster", false)
        );
        let error = status.error.expect("a reason");
        assert!(
            error.contains("vfrig-nomaster") && error.contains("does not exist"),
            "{error}"
        );
    }

    #[test]
    fn the_status_server_answers_one_json_line_per_connection() {
        let dir = std::env::temp_dir().join(format!("vfrig-status-{}", std::process::id()));
        let path = dir.join("sub").join("vf3.sock");
        let server = StatusServer::bind(path.clone()).unwrap();
        assert!(!server.serve(report), "nobody is waiting yet");
        for _ in 0..2 {
            let mut client = UnixStream::connect(&path).unwrap();
            assert!(server.serve(report));
            let mut text = String::new();
            client.read_to_string(&mut text).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["ifname"], "vf3");
            assert_eq!(json["link"]["ifindex"], 7);
            assert_eq!(json["adapter"]["phase"], "init");
            assert_eq!(json["driver"]["frames_to_pf"], 0);
        }
        drop(server);
        assert!(!path.exists(), "the socket is removed on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
