//! rtnetlink: what the guest kernel does to the VF's interface.
//!
//! Two halves. [`LinkTracker`] is pure: it is fed parsed link messages
//! (RTM_NEWLINK / RTM_DELLINK, with the network namespace id they came
//! from) and returns the adapter core's [`NetdevEvent`]s for one interface.
//! [`LinkListener`] is the thin socket part: a NETLINK_ROUTE socket in
//! RTNLGRP_LINK with NETLINK_LISTEN_ALL_NSID, so that the interface is
//! still seen after it moves to another namespace (the kernel names the
//! source namespace in a control message), plus an RTM_GETLINK dump for the
//! state at start. [`enslave`] is the one change the shell makes over
//! rtnetlink: `ip link set dev IF master MASTER`, on a request socket of its
//! own like the dump.
//!
//! # Identity
//!
//! A link is a [`LinkId`]: the namespace id as seen from the driver's own
//! namespace (`None` for the driver's own) and the ifindex there. When the
//! interface moves, the kernel sends RTM_DELLINK with IFLA_NEW_NETNSID and
//! IFLA_NEW_IFINDEX in the old namespace; from then on the tracker follows
//! the new identity. The new namespace id is relative to the old
//! namespace, so only moves out of the driver's own namespace can be
//! followed; a move out of another one is reported and the interface is
//! then lost to the tracker.
//!
//! # VLANs
//!
//! A VLAN of the interface is a `vlan` link whose lower device (IFLA_LINK,
//! in IFLA_LINK_NETNSID's namespace if present, else the upper's own) is
//! the interface or the master it is enslaved to (a bond passes its VLANs to
//! every slave). The tracker keeps every VLAN link it has seen with its
//! lower device, recomputes the interface's VLAN set after each message and
//! reports the difference, so enslaving, releasing and deleting all come
//! out right. A netns move does not delete the uppers: the kernel leaves
//! them in the old namespace, linked across, with their VIDs still
//! registered on the moved device. The tracker re-points them to the
//! interface's new identity, so they stay its VLANs until deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, VlanProtocol,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::constants::NETLINK_LISTEN_ALL_NSID;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde::Serialize;
use virtchnl::MacAddr;

use super::{Error, Result};
use crate::core::{NetdevEvent, Vlan};

/// A link, wherever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LinkId {
    /// The namespace's id in the driver's namespace; `None` for the driver's
    /// own.
    pub nsid: Option<i32>,
    /// The ifindex in that namespace.
    pub ifindex: u32,
}

/// Which kind of link message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// RTM_NEWLINK: created or changed (also every dump entry).
    New,
    /// RTM_DELLINK: deleted, or moved to another namespace.
    Del,
}

/// A VLAN link and the device it sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VlanLink {
    /// `None` when the lower device is in a namespace the tracker cannot
    /// name.
    lower: Option<LinkId>,
    vlan: Vlan,
}

/// Turns link messages into [`NetdevEvent`]s for one interface. Pure: no
/// sockets, no clock.
#[derive(Debug, Clone)]
pub struct LinkTracker {
    me: Option<LinkId>,
    up: bool,
    promisc: bool,
    allmulti: bool,
    master: Option<u32>,
    /// The MAC last applied by the shell or reported; `None` until the
    /// shell sets one, so the TAP's random first MAC is not reported.
    mac: Option<MacAddr>,
    vlan_links: BTreeMap<LinkId, VlanLink>,
    /// The VLANs reported to the core.
    vlans: BTreeSet<Vlan>,
}

impl LinkTracker {
    /// Tracks the interface `me`, assumed down, not promiscuous, without a
    /// master or VLANs (a new TAP); the first message about it reports any
    /// difference.
    pub fn new(me: LinkId) -> LinkTracker {
        LinkTracker {
            me: Some(me),
            up: false,
            promisc: false,
            allmulti: false,
            master: None,
            mac: None,
            vlan_links: BTreeMap::new(),
            vlans: BTreeSet::new(),
        }
    }

    /// The interface's identity now; `None` once it was lost (moved out of
    /// a namespace other than the driver's, or deleted).
    pub fn me(&self) -> Option<LinkId> {
        self.me
    }

    /// The VLANs the interface has, as reported.
    pub fn vlans(&self) -> &BTreeSet<Vlan> {
        &self.vlans
    }

    /// The shell gave the interface `mac`: when the kernel echoes it, it is
    /// not a change.
    pub fn note_mac(&mut self, mac: MacAddr) {
        self.mac = Some(mac);
    }

    /// One link message from namespace `nsid` (`None`: the driver's own).
    /// Returns the events for the tracked interface, in the order the core
    /// should see them.
    pub fn handle(
        &mut self,
        change: LinkChange,
        nsid: Option<i32>,
        link: &LinkMessage,
    ) -> Vec<NetdevEvent> {
        let id = LinkId {
            nsid,
            ifindex: link.header.index,
        };
        let mut events = Vec::new();
        if Some(id) == self.me {
            match change {
                LinkChange::New => self.own_link(link, &mut events),
                LinkChange::Del => {
                    self.own_removal(link, &mut events);
                    return events;
                }
            }
        } else if let Some(vlan) = vlan_of(nsid, link) {
            match change {
                LinkChange::New => {
                    self.vlan_links.insert(id, vlan);
                }
                LinkChange::Del => {
                    self.vlan_links.remove(&id);
                }
            }
        } else if change == LinkChange::Del {
            self.vlan_links.remove(&id);
        }
        self.update_vlans(&mut events);
        events
    }

    fn own_link(&mut self, link: &LinkMessage, events: &mut Vec<NetdevEvent>) {
        let flags = link.header.flags;
        let up = flags.contains(LinkFlags::Up);
        let promisc = flags.contains(LinkFlags::Promisc);
        let allmulti = flags.contains(LinkFlags::Allmulti);
        if self.up && !up {
            events.push(NetdevEvent::Down);
        }
        let master = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(m) if *m != 0 => Some(*m),
            _ => None,
        });
        if master != self.master {
            if self.master.is_some() {
                events.push(NetdevEvent::Released);
            }
            if master.is_some() {
                events.push(NetdevEvent::Enslaved);
            }
            self.master = master;
        }
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => Some(MacAddr(bytes.as_slice().try_into().ok()?)),
            _ => None,
        });
        if let (Some(new), Some(old)) = (mac, self.mac) {
            if new != old {
                events.push(NetdevEvent::MacChanged(new));
                self.mac = Some(new);
            }
        }
        if (promisc, allmulti) != (self.promisc, self.allmulti) {
            events.push(NetdevEvent::RxModeChanged { promisc, allmulti });
            self.promisc = promisc;
            self.allmulti = allmulti;
        }
        if !self.up && up {
            events.push(NetdevEvent::Up);
        }
        self.up = up;
    }

    fn own_removal(&mut self, link: &LinkMessage, events: &mut Vec<NetdevEvent>) {
        let mut new_nsid = None;
        let mut new_ifindex = None;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::NewNetnsId(id) => new_nsid = Some(*id),
                LinkAttribute::NewIfIndex(index) => new_ifindex = u32::try_from(*index).ok(),
                _ => {}
            }
        }
        let Some(new_nsid) = new_nsid else {
            self.me = None;
            events.push(NetdevEvent::Removed);
            return;
        };
        let old = self.me;
        // The new id is relative to the old namespace: comparable with
        // ours only when the old namespace is the driver's own.
        self.me = match (old.and_then(|me| me.nsid), new_ifindex) {
            (None, Some(ifindex)) => Some(LinkId {
                nsid: Some(new_nsid),
                ifindex,
            }),
            _ => None,
        };
        if self.master.take().is_some() {
            events.push(NetdevEvent::Released);
        }
        // The kernel closes the interface on the way; in the new namespace
        // it starts down. Its VLAN uppers stay behind, linked across: they
        // now name the new identity as their lower device.
        self.up = false;
        self.promisc = false;
        self.allmulti = false;
        match (old, self.me) {
            (Some(old), Some(new)) => {
                for v in self.vlan_links.values_mut() {
                    if v.lower == Some(old) {
                        v.lower = Some(new);
                    }
                }
            }
            _ => self.vlans.clear(),
        }
        events.push(NetdevEvent::NetnsMoved);
    }

    /// Reports the difference between the VLANs on the interface (or its
    /// master) and those reported so far.
    fn update_vlans(&mut self, events: &mut Vec<NetdevEvent>) {
        let Some(me) = self.me else {
            return;
        };
        let master = self.master.map(|ifindex| LinkId {
            nsid: me.nsid,
            ifindex,
        });
        let now: BTreeSet<Vlan> = self
            .vlan_links
            .values()
            .filter(|v| v.lower == Some(me) || (master.is_some() && v.lower == master))
            .map(|v| v.vlan)
            .filter(|v| v.vid != 0)
            .collect();
        events.extend(
            self.vlans
                .difference(&now)
                .map(|&v| NetdevEvent::VlanRemoved(v)),
        );
        events.extend(
            now.difference(&self.vlans)
                .map(|&v| NetdevEvent::VlanAdded(v)),
        );
        self.vlans = now;
    }
}

/// The VLAN a `vlan` link carries and its lower device; `None` for other
/// kinds of link.
fn vlan_of(nsid: Option<i32>, link: &LinkMessage) -> Option<VlanLink> {
    let mut is_vlan = false;
    let mut vid = None;
    let mut tpid = Vlan::TPID_8021Q;
    let mut lower_index = None;
    let mut lower_nsid = None;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Link(index) => lower_index = Some(*index),
            LinkAttribute::LinkNetNsId(id) => lower_nsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vlan) => is_vlan = true,
                        LinkInfo::Data(InfoData::Vlan(data)) => {
                            for item in data {
                                match item {
                                    InfoVlan::Id(id) => vid = Some(*id),
                                    InfoVlan::Protocol(VlanProtocol::Ieee8021Ad) => {
                                        tpid = Vlan::TPID_8021AD;
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !is_vlan {
        return None;
    }
    // IFLA_LINK_NETNSID is relative to the upper's namespace, so it can be
    // named when the upper is in the driver's own namespace (a VLAN left
    // behind when its lower device moved away).
    let lower = match (lower_index, lower_nsid, nsid) {
        (Some(ifindex), None, _) => Some(LinkId { nsid, ifindex }),
        (Some(ifindex), Some(lower_nsid), None) => Some(LinkId {
            nsid: Some(lower_nsid),
            ifindex,
        }),
        _ => None,
    };
    Some(VlanLink {
        lower,
        vlan: Vlan { tpid, vid: vid? },
    })
}

/// Receive buffer asked of the kernel, so bursts of events are not lost.
const SOCKET_BUFFER: usize = 1 << 20;

/// Largest datagram read at once; link messages are a few KiB.
const DATAGRAM: usize = 64 * 1024;

/// One link message as received.
pub type Received = (LinkChange, Option<i32>, LinkMessage);

/// The socket half: link messages from every namespace with an id.
#[derive(Debug)]
pub struct LinkListener {
    socket: Socket,
    buf: Vec<u8>,
    overruns: u64,
}

impl LinkListener {
    /// Opens a non-blocking NETLINK_ROUTE socket in RTNLGRP_LINK with
    /// NETLINK_LISTEN_ALL_NSID.
    pub fn open() -> Result<LinkListener> {
        let step = |what| move |source| Error::Netlink { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(step("open a NETLINK_ROUTE socket"))?;
        socket.bind_auto().map_err(step("bind"))?;
        if let Err(err) = socket.set_rx_buf_sz(SOCKET_BUFFER) {
            tracing::debug!(%err, "SO_RCVBUF not raised");
        }
        socket
            .add_membership(libc::RTNLGRP_LINK)
            .map_err(step("join RTNLGRP_LINK"))?;
        socket
            .set_listen_all_namespaces(true)
            .map_err(step("set NETLINK_LISTEN_ALL_NSID"))?;
        socket
            .set_non_blocking(true)
            .map_err(step("make the socket non-blocking"))?;
        Ok(LinkListener {
            socket,
            buf: vec![0; DATAGRAM],
            overruns: 0,
        })
    }

    /// Times the kernel dropped messages because the socket buffer was full
    /// (the caller should dump again).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Every link message waiting on the socket, without blocking.
    pub fn recv(&mut self) -> Result<Vec<Received>> {
        let mut out = Vec::new();
        loop {
            let mut cmsg = nix::cmsg_space!(libc::c_int);
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            let received = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            );
            let (len, nsid) = match received {
                Ok(msg) => {
                    let nsid = msg.cmsgs().ok().and_then(|cmsgs| {
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
                    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                        tracing::warn!("an rtnetlink datagram was larger than the read buffer");
                        continue;
                    }
                    (msg.bytes, nsid)
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    self.overruns += 1;
                    tracing::warn!("rtnetlink socket overran; link messages were lost");
                    continue;
                }
                Err(errno) => {
                    return Err(Error::Netlink {
                        what: "receive link messages",
                        source: io::Error::from(errno),
                    })
                }
            };
            let datagram = self.buf.get(..len).unwrap_or_default();
            out.extend(
                parse_datagram(datagram)
                    .into_iter()
                    .map(|(change, link)| (change, nsid, link)),
            );
        }
        Ok(out)
    }
}

/// A NETLINK_ROUTE socket for one request, connected to the kernel and in
/// no multicast group, so only the answers to its own requests arrive.
fn request_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// The bytes of one request: `message` with `flags` and sequence number `seq`.
fn encode_request(message: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut request = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut request);
    request
}

/// Every link in the caller's namespace (RTM_GETLINK dump), on a socket of
/// its own.
pub fn dump_links() -> Result<Vec<LinkMessage>> {
    let step = |what| move |source| Error::Netlink { what, source };
    let socket = request_socket().map_err(step("open a NETLINK_ROUTE socket"))?;
    let request = encode_request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
    );
    socket.send(&request, 0).map_err(step("send RTM_GETLINK"))?;
    let mut links = Vec::new();
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(step("receive the link dump"))?;
        for bytes in split(buf.get(..n).unwrap_or_default()) {
            let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else {
                continue;
            };
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::Netlink {
                        what: "dump links",
                        source: e.to_io(),
                    })
                }
                NetlinkPayload::Error(_) => return Ok(links),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    links.push(link);
                }
                _ => {}
            }
        }
    }
}

/// Sequence number of the RTM_SETLINK [`enslave`] sends.
const SET_MASTER_SEQ: u32 = 1;

/// Makes the interface `name` (index `ifindex`, in the driver's namespace) a
/// slave of the link named `master`, as `ip link set dev NAME master MASTER`
/// does: an RTM_SETLINK with IFLA_MASTER, answered by the kernel's
/// acknowledgement. Returns the master's index.
///
/// Fails with [`Error::NoMaster`] when there is no link `master` in the
/// driver's namespace, and with [`Error::Enslave`] when the kernel refuses
/// (a bond takes only slaves that are down; net_failover takes none this
/// way).
pub fn enslave(name: &str, ifindex: u32, master: &str) -> Result<u32> {
    let refused = |source| Error::Enslave {
        name: name.to_owned(),
        master: master.to_owned(),
        source,
    };
    let master_index = match nix::net::if_::if_nametoindex(master) {
        Ok(index) => index,
        Err(Errno::ENODEV) => {
            return Err(Error::NoMaster {
                master: master.to_owned(),
            })
        }
        Err(errno) => return Err(refused(io::Error::from(errno))),
    };
    let socket = request_socket().map_err(refused)?;
    let request = set_master_request(ifindex, master_index, SET_MASTER_SEQ);
    socket.send(&request, 0).map_err(refused)?;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0).map_err(refused)?;
        if let Some(answer) = ack_of(buf.get(..n).unwrap_or_default(), SET_MASTER_SEQ) {
            return answer.map(|()| master_index).map_err(refused);
        }
    }
}

/// RTM_SETLINK for link `ifindex` with IFLA_MASTER `master`, asking for an
/// acknowledgement.
fn set_master_request(ifindex: u32, master: u32, seq: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Controller(master));
    encode_request(
        RouteNetlinkMessage::SetLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// The kernel's answer to request `seq` in one datagram, if it is there:
/// `Ok` for an acknowledgement, the errno for a refusal.
fn ack_of(datagram: &[u8], seq: u32) -> Option<io::Result<()>> {
    split(datagram).into_iter().find_map(|bytes| {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
        match message.payload {
            NetlinkPayload::Error(e) if message.header.sequence_number == seq => {
                Some(match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                })
            }
            _ => None,
        }
    })
}

/// The link messages in one datagram; other messages, and ones that do not
/// parse, are skipped.
pub fn parse_datagram(datagram: &[u8]) -> Vec<(LinkChange, LinkMessage)> {
    split(datagram)
        .into_iter()
        .filter_map(|bytes| NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok())
        .filter_map(|message| match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                Some((LinkChange::New, link))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                Some((LinkChange::Del, link))
            }
            _ => None,
        })
        .collect()
}

/// The netlink messages in one datagram. Stops at the first malformed
/// header.
fn split(datagram: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let len = buffer.length() as usize;
        let Some(message) = rest.get(..len) else {
            break;
        };
        messages.push(message);
        // Messages are 4-byte aligned; the last one may lack padding.
        let next = len.saturating_add(3) & !3;
        rest = rest.get(next..).unwrap_or_default();
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    const VF0: LinkId = LinkId {
        nsid: None,
        ifindex: 5,
    };
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0x10, 0]);

    fn own(flags: LinkFlags, extra: Vec<LinkAttribute>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = VF0.ifindex;
        link.header.flags = flags;
        link.attributes = vec![
            LinkAttribute::IfName("vf0".into()),
            LinkAttribute::Address(MAC.0.to_vec()),
        ];
        link.attributes.extend(extra);
        link
    }

    fn vlan(ifindex: u32, lower: u32, vid: u16, protocol: VlanProtocol) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes = vec![
            LinkAttribute::IfName(format!("vlan{vid}")),
            LinkAttribute::Link(lower),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![
                    InfoVlan::Id(vid),
                    InfoVlan::Protocol(protocol),
                ])),
            ]),
        ];
        link
    }

    fn bond(ifindex: u32) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes = vec![
            LinkAttribute::IfName("bond0".into()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bond)]),
        ];
        link
    }

    /// Feeds `steps` to a fresh tracker (which knows the MAC) and returns
    /// the events of each step.
    fn check(steps: &[(LinkChange, Option<i32>, LinkMessage)]) -> Vec<Vec<NetdevEvent>> {
        let mut tracker = LinkTracker::new(VF0);
        tracker.note_mac(MAC);
        steps
            .iter()
            .map(|(change, nsid, link)| tracker.handle(*change, *nsid, link))
            .collect()
    }

    use LinkChange::{Del, New};
    use NetdevEvent::*;

    #[test]
    fn up_down_and_rx_mode_are_reported_once_each() {
        let up = LinkFlags::Up | LinkFlags::Running;
        let events = check(&[
            (New, None, own(LinkFlags::empty(), vec![])),
            (New, None, own(up, vec![])),
            (New, None, own(up, vec![])),
            (New, None, own(up | LinkFlags::Promisc, vec![])),
            (New, None, own(LinkFlags::Allmulti, vec![])),
        ]);
        assert_eq!(
            events,
            vec![
                vec![],
                vec![Up],
                vec![],
                vec![RxModeChanged {
                    promisc: true,
                    allmulti: false
                }],
                vec![
                    Down,
                    RxModeChanged {
                        promisc: false,
                        allmulti: true
                    }
                ],
            ]
        );
    }

    #[test]
    fn a_mac_change_is_reported_but_not_the_echo_of_one_the_shell_set() {
        let other = MacAddr([2, 0, 0, 0, 0x20, 1]);
        let mut tracker = LinkTracker::new(VF0);
        let mut link = own(LinkFlags::empty(), vec![]);
        link.attributes[1] = LinkAttribute::Address(vec![0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        assert_eq!(
            tracker.handle(New, None, &link),
            vec![],
            "the TAP's random MAC is not the VF's"
        );
        tracker.note_mac(MAC);
        assert_eq!(
            tracker.handle(New, None, &own(LinkFlags::empty(), vec![])),
            vec![]
        );
        link.attributes[1] = LinkAttribute::Address(other.0.to_vec());
        assert_eq!(tracker.handle(New, None, &link), vec![MacChanged(other)]);
    }

    #[test]
    fn vlan_uppers_come_and_go() {
        let events = check(&[
            (
                New,
                None,
                vlan(10, VF0.ifindex, 100, VlanProtocol::Ieee8021Q),
            ),
            (
                New,
                None,
                vlan(11, VF0.ifindex, 200, VlanProtocol::Ieee8021Ad),
            ),
            (New, None, vlan(12, 99, 300, VlanProtocol::Ieee8021Q)),
            (
                New,
                Some(3),
                vlan(13, VF0.ifindex, 400, VlanProtocol::Ieee8021Q),
            ),
            (
                New,
                None,
                vlan(10, VF0.ifindex, 100, VlanProtocol::Ieee8021Q),
            ),
            (
                Del,
                None,
                vlan(10, VF0.ifindex, 100, VlanProtocol::Ieee8021Q),
            ),
        ]);
        assert_eq!(
            events,
            vec![
                vec![VlanAdded(Vlan::dot1q(100))],
                vec![VlanAdded(Vlan::dot1ad(200))],
                vec![],
                vec![],
                vec![],
                vec![VlanRemoved(Vlan::dot1q(100))],
            ]
        );
    }

    #[test]
    fn a_bonds_vlans_belong_to_its_slave_while_enslaved() {
        let enslaved = own(LinkFlags::Up, vec![LinkAttribute::Controller(7)]);
        let released = own(LinkFlags::Up, vec![]);
        let events = check(&[
            (New, None, bond(7)),
            (New, None, vlan(20, 7, 50, VlanProtocol::Ieee8021Q)),
            (New, None, enslaved.clone()),
            (New, None, vlan(21, 7, 60, VlanProtocol::Ieee8021Q)),
            (Del, None, vlan(20, 7, 50, VlanProtocol::Ieee8021Q)),
            (New, None, released),
        ]);
        assert_eq!(
            events,
            vec![
                vec![],
                vec![],
                vec![Enslaved, Up, VlanAdded(Vlan::dot1q(50))],
                vec![VlanAdded(Vlan::dot1q(60))],
                vec![VlanRemoved(Vlan::dot1q(50))],
                vec![Released, VlanRemoved(Vlan::dot1q(60))],
            ]
        );
    }

    #[test]
    fn a_netns_move_is_followed_to_the_new_identity() {
        let moved = {
            let mut link = own(
                LinkFlags::empty(),
                vec![LinkAttribute::NewNetnsId(2), LinkAttribute::NewIfIndex(9)],
            );
            link.header.index = VF0.ifindex;
            link
        };
        let mut in_ns1 = own(LinkFlags::Up, vec![]);
        in_ns1.header.index = 9;
        // The VLAN left behind names its lower device in the other netns.
        let mut left_behind = vlan(10, 9, 100, VlanProtocol::Ieee8021Q);
        left_behind.attributes.push(LinkAttribute::LinkNetNsId(2));
        let events = check(&[
            (New, None, own(LinkFlags::Up, vec![])),
            (
                New,
                None,
                vlan(10, VF0.ifindex, 100, VlanProtocol::Ieee8021Q),
            ),
            (Del, None, moved),
            (New, None, left_behind.clone()),
            (Del, None, left_behind),
            (New, Some(2), in_ns1.clone()),
            (New, Some(2), vlan(3, 9, 200, VlanProtocol::Ieee8021Q)),
            (New, None, vlan(11, 9, 300, VlanProtocol::Ieee8021Q)),
        ]);
        assert_eq!(
            events,
            vec![
                vec![Up],
                vec![VlanAdded(Vlan::dot1q(100))],
                // The upper stays, linked across: still our VLAN.
                vec![NetnsMoved],
                vec![],
                // Deleting it (or its namespace) is the kill_vid.
                vec![VlanRemoved(Vlan::dot1q(100))],
                vec![Up],
                vec![VlanAdded(Vlan::dot1q(200))],
                vec![],
            ]
        );
    }

    /// The start of `vfrig-driver run --enslave bond0`: the TAP's creation
    /// and its MAC are fed before the tracker knows the MAC (events
    /// dropped); the enslave comes after, in messages as bonding sends them
    /// (a MAC change on the slave, the slave opened, then IFLA_MASTER).
    #[test]
    fn an_enslave_right_after_start_reaches_the_adapter_as_changes() {
        let bond_mac = MacAddr([2, 0, 0, 0, 0xb0, 0]);
        let mut tracker = LinkTracker::new(VF0);
        let mut created = own(LinkFlags::empty(), vec![]);
        created.attributes[1] = LinkAttribute::Address(vec![0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        for link in [created, own(LinkFlags::empty(), vec![])] {
            tracker.handle(New, None, &link);
        }
        tracker.note_mac(MAC);
        let mut bond_mac_set = own(LinkFlags::empty(), vec![]);
        bond_mac_set.attributes[1] = LinkAttribute::Address(bond_mac.0.to_vec());
        let mut opened = bond_mac_set.clone();
        opened.header.flags = LinkFlags::Up;
        let mut enslaved = opened.clone();
        enslaved.attributes.push(LinkAttribute::Controller(7));
        let events: Vec<_> = [bond(7), bond_mac_set, opened, enslaved]
            .iter()
            .map(|link| tracker.handle(New, None, link))
            .collect();
        assert_eq!(
            events,
            vec![vec![], vec![MacChanged(bond_mac)], vec![Up], vec![Enslaved]]
        );
    }

    #[test]
    fn the_enslave_request_is_a_setlink_with_the_master_asking_for_an_ack() {
        let bytes = set_master_request(5, 7, 42);
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(message.header.sequence_number, 42);
        assert_eq!(message.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(link)) = message.payload
        else {
            panic!("not RTM_SETLINK: {:?}", message.payload);
        };
        assert_eq!(link.header.index, 5);
        assert_eq!(link.attributes, vec![LinkAttribute::Controller(7)]);
    }

    /// An NLMSG_ERROR answering request `seq` with `errno` (0: an ack).
    fn answer(seq: u32, errno: i32) -> Vec<u8> {
        let mut error = netlink_packet_core::ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-errno);
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut packet =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    #[test]
    fn the_kernels_answer_is_an_ack_or_its_errno() {
        assert!(matches!(ack_of(&answer(1, 0), 1), Some(Ok(()))));
        let refused = ack_of(&answer(1, libc::EPERM), 1).expect("an answer");
        assert_eq!(
            refused.expect_err("a refusal").raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(
            ack_of(&answer(2, 0), 1).is_none(),
            "another request's answer"
        );
        assert!(ack_of(&[], 1).is_none());
    }

    #[test]
    fn enslaving_to_a_missing_master_names_it() {
        let err = enslave("vf9", 0, "vfrig-nomaster").expect_err("no such master");
        assert!(matches!(err, Error::NoMaster { .. }), "{err:?}");
        assert!(err.to_string().contains("vfrig-nomaster"), "{err}");
    }

    #[test]
    fn deleting_the_interface_removes_it() {
        let mut tracker = LinkTracker::new(VF0);
        let link = own(LinkFlags::empty(), vec![]);
        assert_eq!(tracker.handle(Del, None, &link), vec![Removed]);
        assert_eq!(tracker.me(), None);
        assert_eq!(tracker.handle(New, None, &link), vec![]);
    }

    #[test]
    fn datagrams_round_trip_through_the_parser() {
        let mut datagram = Vec::new();
        for message in [
            RouteNetlinkMessage::NewLink(own(LinkFlags::Up, vec![])),
            RouteNetlinkMessage::NewAddress(Default::default()),
            RouteNetlinkMessage::DelLink(vlan(10, 5, 100, VlanProtocol::Ieee8021Q)),
        ] {
            let mut packet = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::InnerMessage(message),
            );
            packet.finalize();
            let mut buf = vec![0u8; packet.buffer_len()];
            packet.serialize(&mut buf);
            datagram.extend(buf);
        }
        let parsed = parse_datagram(&datagram);
        assert_eq!(parsed.len(), 2);
        let mut tracker = LinkTracker::new(VF0);
        tracker.note_mac(MAC);
        let events: Vec<_> = parsed
            .iter()
            .flat_map(|(change, link)| tracker.handle(*change, None, link))
            .collect();
        assert_eq!(events, vec![Up]);
        assert!(parse_datagram(&[0xff; 8]).is_empty());
    }
}
