//! The kernel uevent observer ([`Op::UeventStart`] and friends).
//!
//! It measures the "exposure window" of net_failover and bonding: Linux
//! `register_netdevice()` creates the device's sysfs entry and sends the
//! KOBJ_ADD uevent *before* it calls the NETDEV_REGISTER notifiers that let
//! net_failover (or bonding) make the new device a slave. A program that
//! reacts to the uevent and reads sysfs, as udev rules and cloud-init do,
//! can see a failover primary without `master`. (The rtnetlink recorder
//! cannot show this: its RTM_NEWLINK already carries IFLA_MASTER.)
//!
//! A NETLINK_KOBJECT_UEVENT socket joins multicast group 1, the kernel's
//! own uevents (udev re-sends them on group 2 prefixed `libudev`; such
//! datagrams are skipped should one arrive). For every `add` of a `net`
//! device the code that received the datagram reads
//! `/sys/class/net/IF/master` and `flags` at once, before anything else:
//! the *first look*. The window is 0.75–13.6 ms wide, so nothing may come
//! between receipt and first look. A device without a master at first look
//! goes to one follower thread, which reads `master` every [`FOLLOW_POLL`]
//! until it appears or the give-up time passes; only then is its [`NetAdd`]
//! complete. The reader never waits for the follower.
//!
//! [`UeventObserver::take`] first empties the socket itself (doing the
//! first looks), then waits for the follow-ups of every add received so
//! far, at most the give-up time and [`FOLLOW_MARGIN`], and answers with
//! those adds in `seq` order. So every uevent the kernel sent before the
//! take is in its answer, complete.
//!
//! Scope: the kernel sends a net device's uevents only to sockets of the
//! network namespace that owns the device, and `/sys/class/net` shows the
//! namespace sysfs was mounted in; both are the agent's own.
//!
//! [`Op::UeventStart`]: vfrig_agent::proto::Op::UeventStart

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_sys::protocols::NETLINK_KOBJECT_UEVENT;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{recv, setsockopt, sockopt, MsgFlags};
use vfrig_agent::proto::NetAdd;

use super::error::{Error, Result};
use super::{lock, read_until_stopped};

/// Where the kernel lists network devices.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Most adds kept between takes; later ones are dropped (and logged once).
pub const MAX_ADDS: usize = 100_000;

/// How often the follower reads `master` of the devices it follows.
pub const FOLLOW_POLL: Duration = Duration::from_micros(100);

/// How much longer than the give-up time a take waits for follow-ups
/// (thread wake-ups are slow under TCG).
pub const FOLLOW_MARGIN: Duration = Duration::from_millis(500);

/// The kernel's uevent multicast group (udev's re-broadcasts use 2).
const KERNEL_GROUP: u32 = 1;

/// Receive buffer asked of the kernel, so a burst of uevents (a module
/// load) is not lost.
const SOCKET_BUFFER: usize = 4 << 20;

/// Largest datagram read at once; the kernel caps a uevent at 2 KiB of
/// environment plus the `ACTION@DEVPATH` header.
const DATAGRAM: usize = 16 * 1024;

/// Starts, drains and stops uevent recordings; at most one runs at a time.
#[derive(Debug, Default)]
pub struct UeventObserver {
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    follower: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    socket: Socket,
    /// Tells the reader thread to stop.
    stop: AtomicBool,
    start: Instant,
    give_up: Duration,
    /// `/sys/class/net`, or a stand-in in tests.
    net_dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when `following` gains or loses entries and on `closing`.
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    /// Adds whose `master` has not appeared yet, in `seq` order.
    following: Vec<Following>,
    /// Complete adds not yet taken.
    done: Vec<NetAdd>,
    next_seq: u64,
    dropped: u64,
    failed: Option<String>,
    /// The follower exits once `following` is empty.
    closing: bool,
    buf: Vec<u8>,
}

/// An add whose device had no master at first look.
#[derive(Debug)]
struct Following {
    add: NetAdd,
    received: Instant,
    /// `IFINDEX=` of the uevent, to notice a different device taking the
    /// name.
    ifindex: Option<u32>,
}

impl UeventObserver {
    /// Starts a new recording that waits up to `give_up` for each device's
    /// master, discarding any earlier recording.
    pub fn start(&self, give_up: Duration) -> Result<()> {
        self.start_in(give_up, PathBuf::from(SYS_CLASS_NET))
    }

    /// [`Self::start`] reading devices from `net_dir` instead of
    /// `/sys/class/net`.
    fn start_in(&self, give_up: Duration, net_dir: PathBuf) -> Result<()> {
        let mut running = lock(&self.running);
        if let Some(old) = running.take() {
            old.stop();
        }
        let socket = open_socket()?;
        let shared = Arc::new(Shared {
            socket,
            stop: AtomicBool::new(false),
            start: Instant::now(),
            give_up,
            net_dir,
            state: Mutex::new(State {
                following: Vec::new(),
                done: Vec::new(),
                next_seq: 0,
                dropped: 0,
                failed: None,
                closing: false,
                buf: vec![0; DATAGRAM],
            }),
            changed: Condvar::new(),
        });
        let spawn = |name: &str, body: fn(&Shared)| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&shared))
                .map_err(|error| Error::Thread { error })
        };
        let mut started = Running {
            shared: Arc::clone(&shared),
            reader: None,
            follower: Some(spawn("uevent follower", Shared::follow_loop)?),
        };
        match spawn("uevent reader", Shared::read_loop) {
            Ok(reader) => started.reader = Some(reader),
            Err(e) => {
                started.stop();
                return Err(e);
            }
        }
        *running = Some(started);
        Ok(())
    }

    /// The adds received since the last take, each followed to the end;
    /// recording goes on.
    pub fn take(&self) -> Result<Vec<NetAdd>> {
        // Not holding `running` while waiting keeps status requests quick.
        let shared = {
            let running = lock(&self.running);
            Arc::clone(&running.as_ref().ok_or(Error::NotWatchingUevents)?.shared)
        };
        let mut state = lock(&shared.state);
        shared.read_available(&mut state);
        if let Some(reason) = state.failed.clone() {
            return Err(Error::UeventsFailed { reason });
        }
        let upto = state.next_seq;
        let mut state = shared.wait_followed(state, upto);
        Ok(state.take_done(upto))
    }

    /// Stops recording and returns the adds not yet taken, each followed to
    /// the end.
    pub fn stop(&self) -> Result<Vec<NetAdd>> {
        let running = lock(&self.running)
            .take()
            .ok_or(Error::NotWatchingUevents)?;
        let shared = running.stop();
        let mut state = lock(&shared.state);
        Ok(state.take_done(u64::MAX))
    }

    /// Whether a recording is running and healthy.
    pub fn is_recording(&self) -> bool {
        lock(&self.running)
            .as_ref()
            .is_some_and(|r| lock(&r.shared.state).failed.is_none())
    }

    /// Handles `datagram` as if the socket had just delivered it.
    #[cfg(test)]
    fn inject(&self, datagram: &[u8]) {
        let running = lock(&self.running);
        let shared = &running.as_ref().expect("a recording runs").shared;
        let mut state = lock(&shared.state);
        shared.handle_datagram(&mut state, datagram, Instant::now());
    }
}

impl Running {
    /// Stops the reader, takes what the socket still holds, lets the
    /// follower finish, and hands back the shared state.
    fn stop(mut self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            // It notices within STOP_POLL; a panic in it was logged.
            let _ = reader.join();
        }
        {
            let mut state = lock(&self.shared.state);
            self.shared.read_available(&mut state);
            let mut state = self.shared.wait_followed(state, u64::MAX);
            state.closing = true;
        }
        self.shared.changed.notify_all();
        if let Some(follower) = self.follower.take() {
            // Exits once what it follows is complete, within the give-up time.
            let _ = follower.join();
        }
        self.shared
    }
}

fn open_socket() -> Result<Socket> {
    let step = |what| move |error| Error::Netlink { what, error };
    let mut socket = Socket::new(NETLINK_KOBJECT_UEVENT)
        .map_err(step("open a NETLINK_KOBJECT_UEVENT socket"))?;
    // Root may go past net.core.rmem_max; anyone else gets what it allows.
    if setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        if let Err(e) = socket.set_rx_buf_sz(SOCKET_BUFFER) {
            agent_log!("uevent observer: SO_RCVBUF {SOCKET_BUFFER}: {e}");
        }
    }
    socket
        .bind(&SocketAddr::new(0, KERNEL_GROUP))
        .map_err(step("join the kernel uevent group"))?;
    Ok(socket)
}

impl Shared {
    fn read_loop(&self) {
        read_until_stopped(
            "uevent observer",
            self.socket.as_fd(),
            &self.stop,
            &self.state,
            |state| &mut state.failed,
            |state| self.read_available(state),
        );
    }

    /// Handles every datagram waiting on the socket.
    fn read_available(&self, state: &mut State) {
        if state.failed.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut state.buf);
        loop {
            // MSG_TRUNC: the real length comes back, to notice truncation.
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
            let received = recv(self.socket.as_raw_fd(), &mut buf, flags);
            let now = Instant::now();
            match received {
                Ok(len) => match buf.get(..len) {
                    Some(datagram) => self.handle_datagram(state, datagram, now),
                    None => state.note_dropped("a datagram was larger than the read buffer"),
                },
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                // The kernel dropped uevents: the socket buffer overran.
                Err(Errno::ENOBUFS) => state.note_dropped("the socket receive buffer overran"),
                Err(e) => {
                    state.failed = Some(format!("recv: {e}"));
                    break;
                }
            }
        }
        state.buf = buf;
    }

    /// One datagram received at `received`: for a net device add, the first
    /// look at sysfs, then the bookkeeping.
    fn handle_datagram(&self, state: &mut State, datagram: &[u8], received: Instant) {
        let Some(uevent) = parse_uevent(datagram) else {
            return;
        };
        let Some(ifname) = uevent.added_netdev() else {
            return;
        };
        // The first look: nothing may come between receipt and these reads.
        let dir = self.net_dir.join(ifname);
        let master = read_master(&dir);
        let flags = read_flags(&dir);

        let seq = state.next_seq;
        state.next_seq += 1;
        if state.done.len() + state.following.len() >= MAX_ADDS {
            state.note_dropped("the buffer is full; take adds more often");
            return;
        }
        let enslaved = master.is_some();
        let add = NetAdd {
            seq,
            t_ms: millis(received.saturating_duration_since(self.start)),
            ifname: ifname.to_owned(),
            devpath: uevent.devpath.to_owned(),
            master_at_first_look: master.clone(),
            flags_at_first_look: flags,
            us_to_master: enslaved.then_some(0),
            master,
            flags_when_enslaved: if enslaved { flags } else { None },
        };
        // Unreadable flags: the device is already gone, no master can come.
        if enslaved || flags.is_none() {
            state.done.push(add);
            return;
        }
        state.following.push(Following {
            add,
            received,
            ifindex: uevent.ifindex,
        });
        self.changed.notify_all();
    }

    /// Waits until no add with a `seq` below `upto` is being followed, or
    /// the give-up time and [`FOLLOW_MARGIN`] have passed.
    fn wait_followed<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        upto: u64,
    ) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + self.give_up + FOLLOW_MARGIN;
        while state.following.iter().any(|f| f.add.seq < upto) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                agent_log!("uevent observer: follow-ups still running at the take");
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state
    }

    /// The follower thread: reads `master` of every followed device each
    /// [`FOLLOW_POLL`], outside the lock, until the recording closes.
    fn follow_loop(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.following.is_empty() {
                if state.closing {
                    return;
                }
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let watched: Vec<(u64, PathBuf, Option<u32>)> = state
                .following
                .iter()
                .map(|f| (f.add.seq, self.net_dir.join(&f.add.ifname), f.ifindex))
                .collect();
            drop(state);
            let looks: Vec<(u64, Option<Look>)> = watched
                .iter()
                .map(|(seq, dir, ifindex)| (*seq, look_for_master(dir, *ifindex)))
                .collect();
            state = lock(&self.state);
            if self.settle(&mut state, looks, Instant::now()) {
                self.changed.notify_all();
            }
            drop(state);
            std::thread::sleep(FOLLOW_POLL);
            state = lock(&self.state);
        }
    }

    /// Completes the followed adds that `looks` found enslaved or replaced,
    /// and those past the give-up time at `now`. Returns whether any
    /// completed.
    fn settle(&self, state: &mut State, looks: Vec<(u64, Option<Look>)>, now: Instant) -> bool {
        let mut looks = looks.into_iter().peekable();
        let mut completed = false;
        for mut followed in std::mem::take(&mut state.following) {
            // Both lists are in seq order; adds received since have no look.
            while looks.next_if(|(seq, _)| *seq < followed.add.seq).is_some() {}
            let look = looks
                .next_if(|(seq, _)| *seq == followed.add.seq)
                .and_then(|(_, look)| look);
            match look {
                Some(Look::Enslaved { master, flags, at }) => {
                    let us = at.saturating_duration_since(followed.received).as_micros();
                    // Some(0) means "at first look"; this came later.
                    followed.add.us_to_master = Some(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                    followed.add.master = Some(master);
                    followed.add.flags_when_enslaved = flags;
                }
                Some(Look::Replaced) => {}
                None if now.saturating_duration_since(followed.received) >= self.give_up => {}
                None => {
                    state.following.push(followed);
                    continue;
                }
            }
            state.done.push(followed.add);
            completed = true;
        }
        completed
    }
}

/// What the follower saw of a device without a master so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    /// `master` exists now.
    Enslaved {
        /// Its basename.
        master: String,
        /// `flags` read right after.
        flags: Option<u32>,
        /// When `master` was read.
        at: Instant,
    },
    /// The name belongs to another device now (a different ifindex): the
    /// one the uevent announced is gone.
    Replaced,
}

/// Reads `master` in the device directory `dir`; `None` while it has none.
fn look_for_master(dir: &Path, ifindex: Option<u32>) -> Option<Look> {
    let master = read_master(dir)?;
    let at = Instant::now();
    let flags = read_flags(dir);
    match (ifindex, read_ifindex(dir)) {
        (Some(want), Some(now)) if want != now => Some(Look::Replaced),
        _ => Some(Look::Enslaved { master, flags, at }),
    }
}

impl State {
    fn note_dropped(&mut self, why: &str) {
        if self.dropped == 0 {
            agent_log!("uevent observer dropping uevents: {why}");
        }
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Removes and returns the complete adds with a `seq` below `upto`, in
    /// `seq` order.
    fn take_done(&mut self, upto: u64) -> Vec<NetAdd> {
        let (mut taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.done)
            .into_iter()
            .partition(|add| add.seq < upto);
        self.done = kept;
        taken.sort_by_key(|add| add.seq);
        taken
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The basename of `dir/master`, the symlink to a device's master.
fn read_master(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join("master")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// `dir/flags` of a device.
fn read_flags(dir: &Path) -> Option<u32> {
    parse_flags(&std::fs::read_to_string(dir.join("flags")).ok()?)
}

/// `dir/ifindex` of a device.
fn read_ifindex(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Parses a sysfs `flags` attribute: hexadecimal, as the kernel writes it
/// (`0x1003\n`); the `0x` is optional.
pub fn parse_flags(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// One kernel uevent, borrowed from its datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent<'a> {
    /// `ACTION=` (`add`, `remove`, `move`, ...), else the header's action.
    pub action: &'a str,
    /// `DEVPATH=`, else the header's path: the device under /sys.
    pub devpath: &'a str,
    /// `SUBSYSTEM=` (`net`, `pci`, ...).
    pub subsystem: Option<&'a str>,
    /// `INTERFACE=`: a network device's name.
    pub interface: Option<&'a str>,
    /// `IFINDEX=`: a network device's index.
    pub ifindex: Option<u32>,
}

impl Uevent<'_> {
    /// The device's name when this announces a network device being added
    /// and the name is a single path component (as kernel names are).
    pub fn added_netdev(&self) -> Option<&str> {
        if self.action != "add" || self.subsystem != Some("net") {
            return None;
        }
        self.interface.filter(|name| {
            !name.is_empty()
                && name.len() < libc::IFNAMSIZ
                && *name != "."
                && *name != ".."
                && !name.contains('/')
        })
    }
}

/// Parses a kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`.
///
/// `None` for udev's own messages (they start with `libudev`) and for
/// anything without a NUL-terminated `ACTION@/path` header. Fields that are
/// not UTF-8 `KEY=VALUE`, and a last field without its NUL (a truncated
/// datagram), are skipped. Never panics.
pub fn parse_uevent(datagram: &[u8]) -> Option<Uevent<'_>> {
    if datagram.starts_with(b"libudev") {
        return None;
    }
    let header_end = datagram.iter().position(|&b| b == 0)?;
    let header = std::str::from_utf8(datagram.get(..header_end)?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut uevent = Uevent {
        action,
        devpath,
        subsystem: None,
        interface: None,
        ifindex: None,
    };
    let body = datagram.get(header_end + 1..).unwrap_or_default();
    let complete = match body.iter().rposition(|&b| b == 0) {
        Some(end) => body.get(..end).unwrap_or_default(),
        None => &[],
    };
    for field in complete.split(|&b| b == 0) {
        let Some((key, value)) = std::str::from_utf8(field)
            .ok()
            .and_then(|f| f.split_once('='))
        else {
            continue;
        };
        match key {
            "ACTION" => uevent.action = value,
            "DEVPATH" => uevent.devpath = value,
            "SUBSYSTEM" => uevent.subsystem = Some(value),
            "INTERFACE" => uevent.interface = Some(value),
            "IFINDEX" => uevent.ifindex = value.parse().ok(),
            _ => {}
        }
    }
    Some(uevent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::netlink::tests::enter_new_netns;
    use crate::agent::test_util::Scratch;

    /// A kernel uevent datagram as the kernel builds it.
    fn datagram(action: &str, devpath: &str, keys: &[&str]) -> Vec<u8> {
        let mut bytes = format!("{action}@{devpath}\0").into_bytes();
        for key in keys {
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(0);
        }
        bytes
    }

    fn net_add(ifname: &str, ifindex: u32) -> Vec<u8> {
        let devpath = format!("/devices/pci0000:00/0000:00:1c.1/0000:02:00.0/net/{ifname}");
        datagram(
            "add",
            &devpath,
            &[
                "ACTION=add",
                &format!("DEVPATH={devpath}"),
                "SUBSYSTEM=net",
                &format!("INTERFACE={ifname}"),
                &format!("IFINDEX={ifindex}"),
                "SEQNUM=2841",
            ],
        )
    }

    #[test]
    fn parses_a_kernel_net_add() {
        let bytes = net_add("eth1", 4);
        let uevent = parse_uevent(&bytes).unwrap();
        assert_eq!(
            uevent,
            Uevent {
                action: "add",
                devpath: "/devices/pci0000:00/0000:00:1c.1/0000:02:00.0/net/eth1",
                subsystem: Some("net"),
                interface: Some("eth1"),
                ifindex: Some(4),
            }
        );
        assert_eq!(uevent.added_netdev(), Some("eth1"));
    }

    #[test]
    fn only_net_adds_with_plain_names_count() {
        let check = |bytes: &[u8], want: Option<&str>| {
            let uevent = parse_uevent(bytes).unwrap();
            assert_eq!(uevent.added_netdev(), want, "{uevent:?}");
        };
        let keys = |action: &str, subsystem: &str, name: &str| {
            datagram("add", "/devices/virtual/net/x", &[action, subsystem, name])
        };
        check(
            &keys("ACTION=remove", "SUBSYSTEM=net", "INTERFACE=eth1"),
            None,
        );
        check(
            &keys("ACTION=add", "SUBSYSTEM=queues", "INTERFACE=eth1"),
            None,
        );
        check(
            &keys("ACTION=add", "SUBSYSTEM=net", "INTERFACE=../../x"),
            None,
        );
        check(&keys("ACTION=add", "SUBSYSTEM=net", "INTERFACE=.."), None);
        check(&keys("ACTION=add", "SUBSYSTEM=net", "INTERFACE="), None);
        check(
            &keys("ACTION=add", "SUBSYSTEM=net", "INTERFACE=name_far_too_long"),
            None,
        );
        check(&keys("ACTION=add", "SUBSYSTEM=net", "X=1"), None);
        check(
            &keys("ACTION=add", "SUBSYSTEM=net", "INTERFACE=dummy0"),
            Some("dummy0"),
        );
        // The header alone: no subsystem, so not a net add.
        check(&datagram("add", "/devices/virtual/net/lo", &[]), None);
    }

    #[test]
    fn keys_override_the_header_and_odd_fields_are_skipped() {
        let mut bytes = datagram(
            "change",
            "/devices/a",
            &["ACTION=add", "DEVPATH=/devices/b"],
        );
        bytes.extend_from_slice(b"\xff\xfe=x\0no-equals-sign\0SUBSYSTEM=net\0INTERFACE=eth2");
        let uevent = parse_uevent(&bytes).unwrap();
        assert_eq!((uevent.action, uevent.devpath), ("add", "/devices/b"));
        assert_eq!(uevent.subsystem, Some("net"));
        // The last field lacks its NUL: truncated, skipped.
        assert_eq!(uevent.interface, None);
    }

    #[test]
    fn udev_messages_and_garbage_are_not_uevents() {
        let mut udev = b"libudev\0\xfe\xed\xca\xfe".to_vec();
        udev.extend_from_slice(&[0; 32]);
        udev.extend_from_slice(b"ACTION=add\0SUBSYSTEM=net\0INTERFACE=eth1\0");
        for bytes in [
            &udev[..],
            b"",
            b"\0",
            b"add@/devices/virtual/net/du",
            b"add/devices/x\0SUBSYSTEM=net\0",
            b"@/devices/x\0",
            b"add@devices/x\0",
            b"\xffadd@/devices/x\0",
            &[0xab; 64],
        ] {
            assert_eq!(parse_uevent(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"add@/=\0SUBSYSTEMnetINTERFACEIFINDEX0123456789\xff";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Some(uevent) = parse_uevent(&bytes) {
                let _ = uevent.added_netdev();
            }
        }
    }

    #[test]
    fn flags_parse_as_sysfs_writes_them() {
        assert_eq!(parse_flags("0x1002\n"), Some(0x1002));
        assert_eq!(parse_flags("0X1003"), Some(0x1003));
        assert_eq!(parse_flags("11043"), Some(0x11043));
        assert_eq!(parse_flags(" 0xffffffff "), Some(u32::MAX));
        for bad in ["", "0x", "0x1_0", "+5", "0x100000000", "eth0", "0x12 34"] {
            assert_eq!(parse_flags(bad), None, "{bad:?}");
        }
    }

    /// A stand-in for /sys/class/net.
    struct FakeSysfs(Scratch);

    impl FakeSysfs {
        fn new(test: &str) -> Self {
            Self(Scratch::new(test))
        }

        fn net_dir(&self) -> PathBuf {
            self.0.path().to_owned()
        }

        fn device(&self, name: &str, ifindex: u32, flags: &str) {
            let dir = self.0.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("flags"), format!("{flags}\n")).unwrap();
            std::fs::write(dir.join("ifindex"), format!("{ifindex}\n")).unwrap();
        }

        fn enslave(&self, name: &str, master: &str) {
            let link = self.0.path().join(name).join("master");
            std::os::unix::fs::symlink(format!("../../../virtual/net/{master}"), link).unwrap();
        }
    }

    #[test]
    fn first_look_follow_up_and_give_up() {
        // A network namespace of its own, so that no uevent of the host's
        // devices reaches the socket.
        std::thread::spawn(|| {
            if enter_new_netns() {
                follow_fake_devices();
            }
        })
        .join()
        .unwrap();
    }

    fn follow_fake_devices() {
        let sysfs = FakeSysfs::new("uevent-follow");
        sysfs.device("eth0", 2, "0x1003");
        sysfs.device("sb0", 3, "0x1003");
        sysfs.enslave("sb0", "eth0");
        sysfs.device("pr0", 4, "0x1002");
        sysfs.device("lone0", 5, "0x1002");
        let observer = UeventObserver::default();
        observer
            .start_in(Duration::from_millis(500), sysfs.net_dir())
            .unwrap();
        assert!(observer.is_recording());
        observer.inject(&net_add("sb0", 3));
        observer.inject(&net_add("pr0", 4));
        observer.inject(&net_add("lone0", 5));
        observer.inject(&net_add("gone0", 6));
        // pr0 gets its master after the first look (flags first: the
        // follower reads them once it sees `master`).
        std::fs::write(sysfs.net_dir().join("pr0/flags"), "0x1803\n").unwrap();
        sysfs.enslave("pr0", "eth0");
        let adds = observer.take().unwrap();
        let brief: Vec<_> = adds
            .iter()
            .map(|a| {
                (
                    a.seq,
                    a.ifname.as_str(),
                    a.master_at_first_look.as_deref(),
                    a.flags_at_first_look,
                    a.us_to_master.map(|us| us > 0),
                    a.master.as_deref(),
                    a.flags_when_enslaved,
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (
                    0,
                    "sb0",
                    Some("eth0"),
                    Some(0x1003),
                    Some(false),
                    Some("eth0"),
                    Some(0x1003)
                ),
                (
                    1,
                    "pr0",
                    None,
                    Some(0x1002),
                    Some(true),
                    Some("eth0"),
                    Some(0x1803)
                ),
                (2, "lone0", None, Some(0x1002), None, None, None),
                (3, "gone0", None, None, None, None, None),
            ]
        );
        assert!(adds[1].devpath.ends_with("/net/pr0"), "{:?}", adds[1]);
        assert!(observer.take().unwrap().is_empty());

        // A name taken over by another device is not the announced one.
        sysfs.device("vf0", 7, "0x1002");
        observer.inject(&net_add("vf0", 7));
        std::fs::remove_dir_all(sysfs.net_dir().join("vf0")).unwrap();
        sysfs.device("vf0", 8, "0x1002");
        sysfs.enslave("vf0", "eth0");
        let rest = observer.stop().unwrap();
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert_eq!((rest[0].seq, rest[0].master.as_deref()), (4, None));
        assert!(!observer.is_recording());
    }

    #[test]
    fn requests_without_a_recording_are_errors() {
        let observer = UeventObserver::default();
        assert!(matches!(observer.take(), Err(Error::NotWatchingUevents)));
        assert!(matches!(observer.stop(), Err(Error::NotWatchingUevents)));
        assert!(!observer.is_recording());
    }
}
