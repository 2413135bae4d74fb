//! The rtnetlink link-event recorder ([`Op::RecordStart`] and friends).
//!
//! A NETLINK_ROUTE socket joins RTNLGRP_LINK with NETLINK_LISTEN_ALL_NSID
//! set, so link events from every network namespace that has an id in the
//! agent's namespace arrive; the kernel names the source namespace in a
//! control message, read with `recvmsg`. A thread moves events from the
//! socket into a buffer. [`Recorder::take`] first empties the socket itself,
//! so every event the kernel sent before the take is in its answer.
//!
//! [`Op::RecordStart`]: vfrig_agent::proto::Op::RecordStart

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::constants::NETLINK_LISTEN_ALL_NSID;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use vfrig_agent::proto::{LinkEvent, LinkEventKind};

use super::error::{Error, Result};
use super::netlink::split;
use super::{lock, read_until_stopped};

/// Most events kept between takes; later ones are dropped (and logged once).
pub const MAX_EVENTS: usize = 100_000;

/// Receive buffer asked of the kernel, so bursts of events are not lost.
const SOCKET_BUFFER: usize = 4 << 20;

/// Largest datagram read at once; link messages are a few KiB.
const DATAGRAM: usize = 64 * 1024;

/// Starts, drains and stops recordings; at most one runs at a time.
#[derive(Debug, Default)]
pub struct Recorder {
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    socket: Socket,
    stop: AtomicBool,
    start: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    events: Vec<LinkEvent>,
    next_seq: u64,
    dropped: u64,
    failed: Option<String>,
    buf: Vec<u8>,
}

impl Recorder {
    /// Starts a new recording, discarding any earlier one.
    pub fn start(&self) -> Result<()> {
        let mut running = lock(&self.running);
        if let Some(old) = running.take() {
            old.stop();
        }
        let socket = open_socket()?;
        let shared = Arc::new(Shared {
            socket,
            stop: AtomicBool::new(false),
            start: Instant::now(),
            state: Mutex::new(State {
                events: Vec::new(),
                next_seq: 0,
                dropped: 0,
                failed: None,
                buf: vec![0; DATAGRAM],
            }),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("link recorder".into())
            .spawn(move || thread_shared.read_loop())
            .map_err(|error| Error::Thread { error })?;
        *running = Some(Running {
            shared,
            thread: Some(thread),
        });
        Ok(())
    }

    /// The events recorded since the last take; recording goes on.
    pub fn take(&self) -> Result<Vec<LinkEvent>> {
        let running = lock(&self.running);
        let running = running.as_ref().ok_or(Error::NotRecording)?;
        let mut state = lock(&running.shared.state);
        running.shared.read_available(&mut state);
        if let Some(reason) = state.failed.clone() {
            return Err(Error::RecorderFailed { reason });
        }
        Ok(std::mem::take(&mut state.events))
    }

    /// Stops recording and returns the events not yet taken.
    pub fn stop(&self) -> Result<Vec<LinkEvent>> {
        let running = lock(&self.running).take().ok_or(Error::NotRecording)?;
        let shared = running.stop();
        let mut state = lock(&shared.state);
        shared.read_available(&mut state);
        Ok(std::mem::take(&mut state.events))
    }

    /// Whether a recording is running and healthy.
    pub fn is_recording(&self) -> bool {
        lock(&self.running)
            .as_ref()
            .is_some_and(|r| lock(&r.shared.state).failed.is_none())
    }
}

impl Running {
    fn stop(mut self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread notices within STOP_POLL; a panic in it was logged.
            let _ = thread.join();
        }
        self.shared
    }
}

fn open_socket() -> Result<Socket> {
    let step = |what| move |error| Error::Netlink { what, error };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(step("open a NETLINK_ROUTE socket"))?;
    socket.bind_auto().map_err(step("bind"))?;
    if let Err(e) = socket.set_rx_buf_sz(SOCKET_BUFFER) {
        agent_log!("recorder: SO_RCVBUF {SOCKET_BUFFER}: {e}");
    }
    socket
        .add_membership(libc::RTNLGRP_LINK)
        .map_err(step("join RTNLGRP_LINK"))?;
    socket
        .set_listen_all_namespaces(true)
        .map_err(step("set NETLINK_LISTEN_ALL_NSID"))?;
    Ok(socket)
}

impl Shared {
    fn read_loop(&self) {
        read_until_stopped(
            "link recorder",
            self.socket.as_fd(),
            &self.stop,
            &self.state,
            |state| &mut state.failed,
            |state| self.read_available(state),
        );
    }

    /// Moves every datagram waiting on the socket into `state`.
    fn read_available(&self, state: &mut State) {
        if state.failed.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut state.buf);
        loop {
            let mut cmsg = nix::cmsg_space!(libc::c_int);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let received = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            );
            let (len, netnsid, truncated) = match received {
                Ok(msg) => {
                    let netnsid = msg.cmsgs().ok().and_then(|cmsgs| {
                        cmsgs.into_iter().find_map(|c| match c {
                            ControlMessageOwned::Unknown(u)
                                if u.cmsg_header.cmsg_level == libc::SOL_NETLINK
                                    && u.cmsg_header.cmsg_type == NETLINK_LISTEN_ALL_NSID =>
                            {
                                let bytes = u.data_bytes.get(..4)?;
                                Some(i32::from_ne_bytes(bytes.try_into().ok()?))
                            }
                            _ => None,
                        })
                    });
                    (msg.bytes, netnsid, msg.flags.contains(MsgFlags::MSG_TRUNC))
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    // The kernel dropped events: the socket buffer overran.
                    state.note_dropped(1, "the socket receive buffer overran");
                    continue;
                }
                Err(e) => {
                    state.failed = Some(format!("recvmsg: {e}"));
                    break;
                }
            };
            if truncated {
                state.note_dropped(1, "a datagram was larger than the read buffer");
                continue;
            }
            let t_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            for (kind, link) in parse_datagram(buf.get(..len).unwrap_or_default()) {
                let seq = state.next_seq;
                state.next_seq += 1;
                if state.events.len() >= MAX_EVENTS {
                    state.note_dropped(1, "the buffer is full; take events more often");
                    continue;
                }
                state
                    .events
                    .push(link_event(kind, &link, netnsid, seq, t_ms));
            }
        }
        state.buf = buf;
    }
}

impl State {
    fn note_dropped(&mut self, n: u64, why: &str) {
        if self.dropped == 0 {
            agent_log!("link recorder dropping events: {why}");
        }
        self.dropped = self.dropped.saturating_add(n);
    }
}

/// The link messages in one datagram; other messages, and ones that do not
/// parse, are skipped.
pub fn parse_datagram(datagram: &[u8]) -> Vec<(LinkEventKind, LinkMessage)> {
    split(datagram)
        .into_iter()
        .filter_map(|bytes| NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok())
        .filter_map(|message| match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                Some((LinkEventKind::New, link))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                Some((LinkEventKind::Del, link))
            }
            _ => None,
        })
        .collect()
}

/// Normalises one link message.
pub fn link_event(
    kind: LinkEventKind,
    link: &LinkMessage,
    netnsid: Option<i32>,
    seq: u64,
    t_ms: u64,
) -> LinkEvent {
    let mut event = LinkEvent {
        seq,
        t_ms,
        kind,
        ifindex: link.header.index,
        name: String::new(),
        flags: link.header.flags.bits(),
        link_kind: None,
        master: None,
        netnsid,
        new_netnsid: None,
        new_ifindex: None,
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => event.name.clone_from(name),
            LinkAttribute::Controller(master) => event.master = Some(*master),
            LinkAttribute::NewNetnsId(id) => event.new_netnsid = Some(*id),
            LinkAttribute::NewIfIndex(index) => event.new_ifindex = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                event.link_kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::netlink::serialize;
    use crate::agent::netlink::tests::enter_new_netns;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::link::{InfoKind, LinkFlags};

    fn link(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up | LinkFlags::Running;
        link.attributes = attributes;
        link
    }

    #[test]
    fn converts_a_hand_built_datagram() {
        let new = link(
            7,
            vec![
                LinkAttribute::IfName("vf0".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vlan)]),
                LinkAttribute::Controller(3),
            ],
        );
        let del = link(
            7,
            vec![
                LinkAttribute::IfName("vf0".into()),
                LinkAttribute::NewNetnsId(2),
                LinkAttribute::NewIfIndex(9),
            ],
        );
        let mut datagram = serialize(NetlinkHeader::default(), RouteNetlinkMessage::NewLink(new));
        datagram.extend(serialize(
            NetlinkHeader::default(),
            RouteNetlinkMessage::NewAddress(Default::default()),
        ));
        datagram.extend(serialize(
            NetlinkHeader::default(),
            RouteNetlinkMessage::DelLink(del),
        ));

        let events: Vec<LinkEvent> = parse_datagram(&datagram)
            .into_iter()
            .enumerate()
            .map(|(i, (kind, link))| link_event(kind, &link, Some(4), i as u64, 10))
            .collect();
        let flags = 0x1 | 0x40; // IFF_UP | IFF_RUNNING
        assert_eq!(
            events,
            vec![
                LinkEvent {
                    seq: 0,
                    t_ms: 10,
                    kind: LinkEventKind::New,
                    ifindex: 7,
                    name: "vf0".into(),
                    flags,
                    link_kind: Some("vlan".into()),
                    master: Some(3),
                    netnsid: Some(4),
                    new_netnsid: None,
                    new_ifindex: None,
                },
                LinkEvent {
                    seq: 1,
                    t_ms: 10,
                    kind: LinkEventKind::Del,
                    ifindex: 7,
                    name: "vf0".into(),
                    flags,
                    link_kind: None,
                    master: None,
                    netnsid: Some(4),
                    new_netnsid: Some(2),
                    new_ifindex: Some(9),
                },
            ]
        );
    }

    #[test]
    fn garbage_yields_no_events() {
        assert!(parse_datagram(&[]).is_empty());
        assert!(parse_datagram(&[0xab; 40]).is_empty());
    }

    #[test]
    fn requests_without_a_recording_are_errors() {
        let recorder = Recorder::default();
        assert!(matches!(recorder.take(), Err(Error::NotRecording)));
        assert!(matches!(recorder.stop(), Err(Error::NotRecording)));
        assert!(!recorder.is_recording());
    }

    #[test]
    fn records_loopback_going_up_in_a_fresh_netns() {
        std::thread::spawn(|| {
            if !enter_new_netns() {
                return;
            }
            let recorder = Recorder::default();
            recorder.start().unwrap();
            assert!(recorder.is_recording());
            crate::agent::netlink::set_link_up(1).unwrap();
            let events = recorder.take().unwrap();
            let lo = events
                .iter()
                .find(|e| e.name == "lo" && e.flags & 0x1 != 0)
                .unwrap_or_else(|| panic!("no lo up event in {events:?}"));
            assert_eq!(
                (lo.seq, lo.kind, lo.ifindex, lo.netnsid),
                (0, LinkEventKind::New, 1, None)
            );
            assert!(recorder.stop().unwrap().iter().all(|e| e.seq > lo.seq));
            assert!(!recorder.is_recording());
        })
        .join()
        .unwrap();
    }
}
