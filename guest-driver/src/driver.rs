//! `vfrig-driver run`: the driver's event loop, tying the transport, the
//! adapter core, the TAP and rtnetlink together.
//!
//! One thread, polling (the transport has no interrupts). Each turn of the
//! loop, in order:
//!
//! 1. mailbox frames from the PF → [`Adapter::handle_mailbox`];
//! 2. link messages → [`LinkTracker`] → [`Adapter::handle_netdev`];
//! 3. [`Adapter::handle_timeout`] when [`Adapter::poll_timeout`] is due;
//! 4. [`Adapter::poll_transmit`] → the mailbox, then
//!    [`Adapter::poll_event`] → carrier, MAC, queues, log (the core's
//!    documented drain order);
//! 5. frames the kernel sent on the TAP → the PF switch, frames from the
//!    switch → the TAP (a bounded batch each way);
//! 6. one status request, if a client is waiting;
//! 7. if nothing happened, back off ([`Backoff`]): spin, yield, then sleep
//!    up to 4 ms, so an idle driver leaves a TCG guest its CPU.
//!
//! Before the loop, the TAP is created and given the VF's MAC and, with
//! `--enslave MASTER`, made a slave of MASTER at once (see [`run`]): the
//! kernel has already announced the TAP by then, so userspace sees it
//! without a master first, however short the window.
//!
//! SIGTERM and SIGINT are blocked and read from a signalfd between turns;
//! the loop then ends, the TAP is closed (deleting the interface) and the
//! device is reset by the transport's drop.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netlink_packet_route::link::LinkMessage;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use crate::core::{Adapter, Config, Event, LogLevel, NetdevEvent, Status, VlanFsm};
use crate::netdev::netlink::{self, dump_links, LinkChange, LinkId, LinkListener, LinkTracker};
use crate::netdev::{self, Tap};
use crate::transport::backoff::Backoff;
use crate::transport::pci::{self, VIRTIO_NET_MODERN, VIRTIO_VENDOR};
use crate::transport::{self as transport, PairId, Selector, VfDevice};

/// Where status sockets live.
pub const STATUS_DIR: &str = "/run/vfrig";

/// Frames moved each way per turn of the loop, so one busy direction
/// cannot starve the mailbox.
const BATCH: usize = 32;

/// How long a status client may take to read its line.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

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

impl StatusServer {
    fn bind(path: PathBuf) -> Result<StatusServer, DriverError> {
        let err = |source| DriverError::Status {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(&path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(StatusServer { listener, path })
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
    counters: DriverCounters,
    queues: bool,
    /// [`LinkListener::overruns`] when last caught up.
    overruns_seen: u64,
    frame: Vec<u8>,
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
        let mut work = false;
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
        if self.adapter.poll_timeout().is_some_and(|due| due <= now) {
            self.adapter.handle_timeout(now);
            work = true;
        }
        while let Some(tx) = self.adapter.poll_transmit(now) {
            tracing::debug!(op = %tx.op(), cookie = tx.cookie, "mailbox request");
            self.dev
                .send_mailbox(&tx.to_frame())
                .map_err(transport("sending to the mailbox"))?;
            self.counters.mailbox_sent += 1;
            work = true;
        }
        while let Some(event) = self.adapter.poll_event() {
            self.apply(now, event)?;
            work = true;
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
