//! The PF switch: the VEB that ice's embedded switch forms between the VFs
//! and the uplink, as a pure function of the PF's tables.
//!
//! The shell hands every data-path frame to [`Pf::switch_from_vf`] or
//! [`Pf::switch_from_uplink`] and performs the [`Delivery`]s that come back,
//! in order (VFs by index, the uplink last). A delivery it cannot perform
//! because the VF has no receive buffer it reports with [`Pf::count_drop`].
//! Frames are plain Ethernet frames: no `virtio_net_hdr`, no FCS.
//!
//! The switch keeps no state of its own besides counters: it reads each VF's
//! MAC and VLAN filters, promiscuous flags, queues, phase and policy as the
//! mailbox left them. It reads no clock and allocates nothing per frame but
//! the deliveries; a frame is copied once per port it reaches, never for a
//! port it does not. Each receiver costs two set lookups at most.
//!
//! # Rules
//!
//! Numbered like the mailbox rules (P1..P34) and tested under their number
//! in this module's tests. "ice" means what the hardware does as ice
//! programs it; where the model is simpler, the rule says so.
//!
//! - **S1. Transmit gate and parsing.** A frame from a VF is dropped
//!   [`DropReason::QueuesDisabled`] unless the VF is ACTIVE with a transmit
//!   queue enabled (ice: a disabled queue fetches no descriptors). Then it is
//!   [`DropReason::Malformed`] if shorter than 14 bytes, or if it carries a
//!   VLAN tag but is shorter than 18 (the tag and the inner ethertype). Only
//!   the outermost tag is looked at: TPID 0x8100, plus 0x88A8 and 0x9100 in
//!   double VLAN mode (the outer ethertypes the DVM caps offer). *Simplified:*
//!   in single VLAN mode a 0x88A8 frame is untagged; an inner tag is payload;
//!   there is no MTU check (the shell's buffers bound frames).
//! - **S2. MAC anti-spoof** (`spoofchk`, P29). The source MAC must be a
//!   unicast address the VF has a MAC filter for, else
//!   [`DropReason::AntiSpoofMac`]. ice checks the source against the VSI's
//!   MAC rules; *simplified:* a multicast source always fails.
//! - **S3. VLAN anti-spoof** (Tx VLAN filtering, P23, P26, P29). With it on,
//!   a frame tagged with a non-zero VID that is not one of the VF's VLAN
//!   filters (TPID and VID) is [`DropReason::AntiSpoofVlan`]; untagged and
//!   priority-tagged (VID 0) frames pass, as VLAN 0 is always a filter. A VF
//!   with a port VLAN must send untagged, whatever `spoofchk` says
//!   (`__ice_vsi_set_inner_port_vlan` sets the VSI's Tx mode to
//!   ACCEPTUNTAGGED with INSERT_PVID); a tagged frame, VID 0 included, is
//!   [`DropReason::AntiSpoofVlan`]. The
//!   switch inserts an 802.1Q tag with the port VLAN (PCP 0) after the source
//!   MAC. *Simplified:* the port VLAN's TPID is always 0x8100, and in double
//!   VLAN mode the VF may not send inner tags under it either.
//! - **S4. Receive matching**, for each VF but the sender, in this order:
//!   1. the destination: broadcast always matches (every VF has the broadcast
//!      filter); multicast matches a MAC filter or multicast promiscuous;
//!      unicast matches a MAC filter or unicast promiscuous. No match: the
//!      frame is not for this VF and nothing is counted;
//!   2. the VLAN: a VF with a port VLAN takes only frames tagged 0x8100 with
//!      that VID, and gets them untagged; otherwise untagged and VID 0 frames
//!      match, and a tagged frame matches a VLAN filter, or anything when Rx
//!      VLAN pruning is off. No match: [`DropReason::NoFilterMatch`];
//!   3. the queues: the VF must be ACTIVE with a receive queue enabled, else
//!      [`DropReason::QueuesDisabled`].
//!
//!   A delivered frame keeps its tag otherwise: the switch does not honour V1
//!   VLAN stripping, because a virtio-net header has no field to carry a
//!   stripped tag in (the V2 caps report no stripping for the same reason).
//! - **S5. Where a VF's frame goes.** To every VF that S4 delivers to, never
//!   back to the sender. A unicast frame whose destination is a MAC filter of
//!   any VF, the sender included, is local: it never goes to the uplink, even
//!   when S4 dropped it at that VF (ice programs local unicast MAC rules
//!   without LAN_EN). Every other frame (unknown unicast, multicast,
//!   broadcast) also goes to the uplink, tagged as it is switched. A
//!   promiscuous VF receives copies but does not make a destination local.
//!   *Simplified:* ice without `vf-true-promisc-support` makes a unicast
//!   promiscuous VF the port's default VSI, which sees only frames no other
//!   rule takes; here it sees all unicast.
//! - **S6. From the uplink.** S1's parsing (a malformed frame is counted on the
//!   uplink) and S4 for every VF; no anti-spoof; nothing goes back to the
//!   uplink. The PF's link state is the shell's business: the switch does
//!   not look at it.
//! - **S7. Counters.** [`TrafficCounters`] per VF: transmit counters count
//!   frames the switch accepted from the VF, as the VF sent them; receive
//!   counters count deliveries to the VF, as delivered (so a frame the shell
//!   later reports as [`DropReason::NoRxBuffer`] is in both). A drop is
//!   charged to the VF that sent the frame (anti-spoof, malformed, queues
//!   disabled on transmit) or the one that would have received it (no filter
//!   match, queues disabled on receive, no receive buffer). Counters are the
//!   host's statistics of the VF's VSI: they survive VF and PF resets, which
//!   clear only what the VF configured. GET_STATS reports them as ice's VSI
//!   statistics do (see [`TrafficCounters::eth_stats`]). [`UplinkCounters`]
//!   count the uplink's side.
//!
//! [`Pf::switch_from_vf`]: super::Pf::switch_from_vf
//! [`Pf::switch_from_uplink`]: super::Pf::switch_from_uplink
//! [`Pf::count_drop`]: super::Pf::count_drop

use serde::Serialize;
use tracing::{debug, trace};
use virtchnl::{EthStats, MacAddr, PromiscFlags};

use super::policy::VlanMode;
use super::vf::{Vf, Vlan};
use super::VfId;

/// 802.1Q.
const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (S-tag), an outer tag in double VLAN mode.
const TPID_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ TPID, an outer tag in double VLAN mode.
const TPID_QINQ: u16 = 0x9100;

/// A port of the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// A VF's data receive queue.
    Vf(VfId),
    /// The wire.
    Uplink,
}

/// A frame the shell must put on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where it goes.
    pub to: Port,
    /// The Ethernet frame, tagged as the port should see it.
    pub frame: Vec<u8>,
}

/// Why the switch (or the shell) dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The source MAC is not one of the sending VF's MAC filters (S2).
    AntiSpoofMac,
    /// The sending VF may not use the frame's VLAN (S3).
    AntiSpoofVlan,
    /// The receiving VF's VLAN filters do not take the frame (S4).
    NoFilterMatch,
    /// The VF is not ACTIVE or its queue is disabled (S1 on transmit, S4 on receive).
    QueuesDisabled,
    /// The VF had no receive buffer for a delivery; only the shell sees this.
    NoRxBuffer,
    /// Too short for its Ethernet header or VLAN tag (S1).
    Malformed,
}

/// Frames the switch dropped, by reason, charged to one VF (S7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DropCounters {
    /// Sent with a source MAC the VF has no filter for.
    pub anti_spoof_mac: u64,
    /// Sent on a VLAN the VF may not use.
    pub anti_spoof_vlan: u64,
    /// Sent too short for the headers.
    pub malformed: u64,
    /// Sent while not ACTIVE or with no transmit queue enabled.
    pub tx_queues_disabled: u64,
    /// Addressed to the VF but on a VLAN its filters do not take.
    pub no_filter_match: u64,
    /// For the VF while not ACTIVE or with no receive queue enabled.
    pub rx_queues_disabled: u64,
    /// Delivered while the VF had no receive buffer (counted by the shell).
    pub no_rx_buffer: u64,
}

impl DropCounters {
    /// Counts one drop; `on_transmit` says which side a
    /// [`DropReason::QueuesDisabled`] is on.
    fn count(&mut self, reason: DropReason, on_transmit: bool) {
        let counter = match reason {
            DropReason::AntiSpoofMac => &mut self.anti_spoof_mac,
            DropReason::AntiSpoofVlan => &mut self.anti_spoof_vlan,
            DropReason::Malformed => &mut self.malformed,
            DropReason::QueuesDisabled if on_transmit => &mut self.tx_queues_disabled,
            DropReason::QueuesDisabled => &mut self.rx_queues_disabled,
            DropReason::NoFilterMatch => &mut self.no_filter_match,
            DropReason::NoRxBuffer => &mut self.no_rx_buffer,
        };
        *counter += 1;
    }
}

/// One VF's traffic through the switch (S7). Survives VF and PF resets.
///
/// `*_frames` count every frame; `*_multicast` excludes broadcast, and
/// unicast is what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TrafficCounters {
    /// Frames the switch accepted from the VF.
    pub tx_frames: u64,
    /// Their bytes, as the VF sent them (before a port VLAN tag is inserted).
    pub tx_bytes: u64,
    /// Of `tx_frames`, multicast.
    pub tx_multicast: u64,
    /// Of `tx_frames`, broadcast.
    pub tx_broadcast: u64,
    /// Frames delivered to the VF.
    pub rx_frames: u64,
    /// Their bytes, as delivered (after a port VLAN tag is stripped).
    pub rx_bytes: u64,
    /// Of `rx_frames`, multicast.
    pub rx_multicast: u64,
    /// Of `rx_frames`, broadcast.
    pub rx_broadcast: u64,
    /// Frames dropped, by reason.
    pub drops: DropCounters,
}

impl TrafficCounters {
    /// The GET_STATS answer (P34), laid out like ice's VSI statistics
    /// (`ice_update_eth_stats`): receive discards are the receive-side drops
    /// (ice's GLV_RDPC); anti-spoof and malformed drops are transmit errors
    /// (GLV_TEPC counts anti-spoof drops); transmit discards, which ice leaves
    /// at zero, count frames sent with no transmit queue enabled.
    pub fn eth_stats(&self) -> EthStats {
        let d = &self.drops;
        EthStats {
            rx_bytes: self.rx_bytes,
            rx_unicast: self.rx_frames - self.rx_multicast - self.rx_broadcast,
            rx_multicast: self.rx_multicast,
            rx_broadcast: self.rx_broadcast,
            rx_discards: d.no_filter_match + d.rx_queues_disabled + d.no_rx_buffer,
            rx_unknown_protocol: 0,
            tx_bytes: self.tx_bytes,
            tx_unicast: self.tx_frames - self.tx_multicast - self.tx_broadcast,
            tx_multicast: self.tx_multicast,
            tx_broadcast: self.tx_broadcast,
            tx_discards: d.tx_queues_disabled,
            tx_errors: d.anti_spoof_mac + d.anti_spoof_vlan + d.malformed,
        }
    }

    fn count_tx(&mut self, cast: Cast, len: usize) {
        self.tx_frames += 1;
        self.tx_bytes += len as u64;
        match cast {
            Cast::Unicast => {}
            Cast::Multicast => self.tx_multicast += 1,
            Cast::Broadcast => self.tx_broadcast += 1,
        }
    }

    fn count_rx(&mut self, cast: Cast, len: usize) {
        self.rx_frames += 1;
        self.rx_bytes += len as u64;
        match cast {
            Cast::Unicast => {}
            Cast::Multicast => self.rx_multicast += 1,
            Cast::Broadcast => self.rx_broadcast += 1,
        }
    }

    /// Counts a drop the shell saw (the VF as a receiver).
    pub(crate) fn count_shell_drop(&mut self, reason: DropReason) {
        self.drops.count(reason, false);
    }
}

/// The uplink's side of the switch (S6, S7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct UplinkCounters {
    /// Frames that came from the wire, malformed ones included.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames sent to the wire.
    pub tx_frames: u64,
    /// Their bytes, as sent (port VLAN tag included).
    pub tx_bytes: u64,
    /// Frames from the wire too short for their headers.
    pub malformed: u64,
}

/// How a destination address is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cast {
    Unicast,
    Multicast,
    Broadcast,
}

impl Cast {
    fn of(dst: MacAddr) -> Self {
        if dst.is_broadcast() {
            Cast::Broadcast
        } else if dst.is_multicast() {
            Cast::Multicast
        } else {
            Cast::Unicast
        }
    }
}

/// A frame split at its outer tag (S1). The parts borrow the input.
#[derive(Debug, Clone, Copy)]
struct Parsed<'a> {
    dst: MacAddr,
    src: MacAddr,
    /// Destination and source MACs.
    macs: &'a [u8; 12],
    /// The outer tag: TPID and TCI, as on the wire.
    tag: Option<&'a [u8; 4]>,
    /// Everything after the tag, from the (inner) ethertype on.
    rest: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Splits `frame`, or `None` when it is malformed (S1).
    fn new(frame: &'a [u8], mode: VlanMode) -> Option<Self> {
        let (dst, after_dst) = frame.split_first_chunk::<6>()?;
        let (src, _) = after_dst.split_first_chunk::<6>()?;
        let (macs, after_macs) = frame.split_first_chunk::<12>()?;
        let (ethertype, _) = after_macs.split_first_chunk::<2>()?;
        let tpid = u16::from_be_bytes(*ethertype);
        let is_tag = match mode {
            VlanMode::Single => tpid == TPID_8021Q,
            VlanMode::Double => matches!(tpid, TPID_8021Q | TPID_8021AD | TPID_QINQ),
        };
        let (tag, rest) = if is_tag {
            let (tag, rest) = after_macs.split_first_chunk::<4>()?;
            rest.split_first_chunk::<2>()?;
            (Some(tag), rest)
        } else {
            (None, after_macs)
        };
        Some(Parsed {
            dst: MacAddr(*dst),
            src: MacAddr(*src),
            macs,
            tag,
            rest,
        })
    }

    /// The tag's VLAN, `None` when untagged or priority-tagged (VID 0).
    fn vlan(&self) -> Option<Vlan> {
        let [t0, t1, c0, c1] = *self.tag?;
        let vid = u16::from_be_bytes([c0, c1]) & 0x0fff;
        (vid != 0).then_some(Vlan {
            tpid: u16::from_be_bytes([t0, t1]),
            vid,
        })
    }
}

/// A frame inside the switch: its parts, and the VLAN it is switched in.
#[derive(Debug, Clone, Copy)]
struct Transit<'a> {
    dst: MacAddr,
    cast: Cast,
    macs: &'a [u8; 12],
    /// The outer tag the frame leaves with when not stripped.
    tag: Option<[u8; 4]>,
    rest: &'a [u8],
    /// The VLAN the frame is switched in (`None`: untagged or VID 0).
    vlan: Option<Vlan>,
}

impl<'a> Transit<'a> {
    fn new(parsed: Parsed<'a>) -> Self {
        Transit {
            dst: parsed.dst,
            cast: Cast::of(parsed.dst),
            macs: parsed.macs,
            tag: parsed.tag.copied(),
            rest: parsed.rest,
            vlan: parsed.vlan(),
        }
    }

    /// Adds the port VLAN tag to an untagged frame (S3).
    fn insert_port_vlan(&mut self, vid: u16) {
        let [t0, t1] = TPID_8021Q.to_be_bytes();
        let [c0, c1] = vid.to_be_bytes();
        self.tag = Some([t0, t1, c0, c1]);
        self.vlan = Some(Vlan::dot1q(vid));
    }

    /// The frame with its tag, if any.
    fn tagged(&self) -> Vec<u8> {
        let tag: &[u8] = self.tag.as_ref().map_or(&[], |t| t);
        let mut out = Vec::with_capacity(12 + tag.len() + self.rest.len());
        out.extend_from_slice(self.macs);
        out.extend_from_slice(tag);
        out.extend_from_slice(self.rest);
        out
    }

    /// The frame without its outer tag.
    fn untagged(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.rest.len());
        out.extend_from_slice(self.macs);
        out.extend_from_slice(self.rest);
        out
    }
}

/// What S4 decides for one receiver.
enum Verdict {
    /// The frame is not addressed to this VF.
    NotForIt,
    /// Addressed to it, but dropped.
    Drop(DropReason),
    /// Deliver, without the outer tag when `strip`.
    Deliver { strip: bool },
}

/// S4 for receiver `vf`; `exact` says whether `vf` has a MAC filter for the destination.
fn receive_verdict(vf: &Vf, frame: &Transit<'_>, exact: bool) -> Verdict {
    let addressed = exact
        || match frame.cast {
            Cast::Broadcast => true,
            Cast::Multicast => vf.promisc.contains(PromiscFlags::MULTICAST),
            Cast::Unicast => vf.promisc.contains(PromiscFlags::UNICAST),
        };
    if !addressed {
        return Verdict::NotForIt;
    }
    let (vlan_ok, strip) = match (vf.policy.port_vlan, frame.vlan) {
        (Some(pvid), vlan) => (vlan == Some(Vlan::dot1q(pvid)), true),
        (None, None) => (true, false),
        (None, Some(vlan)) => (!vf.vlan_pruning || vf.vlans.contains(&vlan), false),
    };
    if !vlan_ok {
        return Verdict::Drop(DropReason::NoFilterMatch);
    }
    if !vf.is_active() || vf.rx_queues == 0 {
        return Verdict::Drop(DropReason::QueuesDisabled);
    }
    Verdict::Deliver { strip }
}

fn vf_id(index: usize) -> VfId {
    VfId(u16::try_from(index).unwrap_or(u16::MAX))
}

/// S4 for every VF but `sender`, pushing deliveries to `out`. Returns
/// whether the destination is a local unicast address (S5).
fn deliver_to_vfs(
    vfs: &mut [Vf],
    sender: Option<usize>,
    frame: &Transit<'_>,
    out: &mut Vec<Delivery>,
) -> bool {
    let mut local = false;
    for (index, vf) in vfs.iter_mut().enumerate() {
        let exact = match frame.cast {
            Cast::Broadcast => true,
            Cast::Multicast | Cast::Unicast => vf.macs.contains(&frame.dst),
        };
        local |= exact && frame.cast == Cast::Unicast;
        if Some(index) == sender {
            continue;
        }
        match receive_verdict(vf, frame, exact) {
            Verdict::NotForIt => {}
            Verdict::Drop(reason) => {
                debug!(vf = index, ?reason, "frame dropped at receiver");
                vf.traffic.drops.count(reason, false);
            }
            Verdict::Deliver { strip } => {
                let bytes = if strip {
                    frame.untagged()
                } else {
                    frame.tagged()
                };
                vf.traffic.count_rx(frame.cast, bytes.len());
                out.push(Delivery {
                    to: Port::Vf(vf_id(index)),
                    frame: bytes,
                });
            }
        }
    }
    local
}

/// S1..S5: a frame VF `sender` transmitted.
pub(crate) fn from_vf(
    vfs: &mut [Vf],
    uplink: &mut UplinkCounters,
    mode: VlanMode,
    sender: usize,
    bytes: &[u8],
) -> Vec<Delivery> {
    let Some(vf) = vfs.get_mut(sender) else {
        return Vec::new();
    };
    let transit = match admit(vf, mode, bytes) {
        Ok(transit) => transit,
        Err(reason) => {
            debug!(
                vf = sender,
                ?reason,
                len = bytes.len(),
                "frame dropped at sender"
            );
            vf.traffic.drops.count(reason, true);
            return Vec::new();
        }
    };
    vf.traffic.count_tx(transit.cast, bytes.len());
    let mut out = Vec::new();
    let local = deliver_to_vfs(vfs, Some(sender), &transit, &mut out);
    if !local {
        let frame = transit.tagged();
        uplink.tx_frames += 1;
        uplink.tx_bytes += frame.len() as u64;
        out.push(Delivery {
            to: Port::Uplink,
            frame,
        });
    }
    trace!(
        vf = sender,
        len = bytes.len(),
        deliveries = out.len(),
        "frame switched"
    );
    out
}

/// S1..S3: whether the switch takes `bytes` from `vf`, and as what.
fn admit<'a>(vf: &Vf, mode: VlanMode, bytes: &'a [u8]) -> Result<Transit<'a>, DropReason> {
    if !vf.is_active() || vf.tx_queues == 0 {
        return Err(DropReason::QueuesDisabled);
    }
    let parsed = Parsed::new(bytes, mode).ok_or(DropReason::Malformed)?;
    if vf.policy.spoofchk && !(parsed.src.is_valid_unicast() && vf.macs.contains(&parsed.src)) {
        return Err(DropReason::AntiSpoofMac);
    }
    let mut transit = Transit::new(parsed);
    if let Some(pvid) = vf.policy.port_vlan {
        if parsed.tag.is_some() {
            return Err(DropReason::AntiSpoofVlan);
        }
        transit.insert_port_vlan(pvid);
    } else if let Some(vlan) = transit.vlan {
        if vf.vlan_antispoof && !vf.vlans.contains(&vlan) {
            return Err(DropReason::AntiSpoofVlan);
        }
    }
    Ok(transit)
}

/// S6: a frame from the wire.
pub(crate) fn from_uplink(
    vfs: &mut [Vf],
    uplink: &mut UplinkCounters,
    mode: VlanMode,
    bytes: &[u8],
) -> Vec<Delivery> {
    uplink.rx_frames += 1;
    uplink.rx_bytes += bytes.len() as u64;
    let Some(parsed) = Parsed::new(bytes, mode) else {
        debug!(len = bytes.len(), "malformed frame from the uplink dropped");
        uplink.malformed += 1;
        return Vec::new();
    };
    let mut out = Vec::new();
    deliver_to_vfs(vfs, None, &Transit::new(parsed), &mut out);
    trace!(
        len = bytes.len(),
        deliveries = out.len(),
        "uplink frame switched"
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use virtchnl::{
        EtherAddr, EtherAddrList, EtherAddrType, PromiscInfo, QueueSelect, Reply, ReplyBody,
        Request, VersionInfo, VfCapFlags, VirtchnlStatus, VirtchnlVlan, VlanFilterListV2,
        VlanFilterV2,
    };

    use super::*;
    use crate::pf::{Effect, Pf, PfConfig, VfPolicy, VSI_ID};

    /// Everything a current iavf asks for (as in `pf/tests.rs`).
    const IAVF_CAPS: VfCapFlags = VfCapFlags(0xb3ff_8cf9 | VfCapFlags::VLAN.0);

    const BCAST: &str = "ff:ff:ff:ff:ff:ff";
    const STRANGER: &str = "02:00:00:00:99:99";

    /// The MAC `bring_up` gives VF `vf`.
    fn mac_of(vf: u16) -> String {
        format!("02:00:00:00:00:{:02x}", vf + 1)
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("valid MAC in test")
    }

    /// A PF driven through its public API, like `pf/tests.rs`'s `Rig`.
    struct Rig {
        pf: Pf,
        now: Instant,
        cookie: u32,
    }

    impl Rig {
        fn new(num_vfs: u16, policies: Vec<VfPolicy>) -> Self {
            Self::with_config(PfConfig {
                num_vfs,
                policies,
                ..PfConfig::default()
            })
        }

        fn with_config(config: PfConfig) -> Self {
            Rig {
                pf: Pf::new(config).expect("valid config"),
                now: Instant::now(),
                cookie: 0,
            }
        }

        /// Sends a request and returns its reply; events are dropped.
        fn call(&mut self, vf: u16, req: Request) -> Reply {
            self.cookie += 1;
            self.pf
                .handle_mailbox(self.now, VfId(vf), &req.to_frame(self.cookie));
            let mut reply = None;
            while let Some(effect) = self.pf.poll_effect() {
                if let Effect::Reply { reply: r, .. } = effect {
                    reply = Some(r);
                }
            }
            reply.expect("one reply")
        }

        fn ok(&mut self, vf: u16, req: Request) {
            let op = req.op();
            let status = self.call(vf, req).status;
            assert_eq!(status, VirtchnlStatus::Success, "{op} on vf{vf}");
        }

        /// iavf's init (VERSION, GET_VF_RESOURCES, GET_OFFLOAD_VLAN_V2_CAPS,
        /// ENABLE_QUEUES), then the VF's primary MAC [`mac_of`] and `vlans`.
        fn bring_up(&mut self, vf: u16, vlans: &[u16]) {
            self.ok(vf, Request::Version(VersionInfo::V1_1));
            self.ok(
                vf,
                Request::GetVfResources {
                    caps: Some(IAVF_CAPS),
                },
            );
            self.ok(vf, Request::GetOffloadVlanV2Caps);
            self.ok(vf, Request::EnableQueues(queues(1)));
            self.add_mac(vf, EtherAddrType::Primary, &mac_of(vf));
            if !vlans.is_empty() {
                self.add_vlans(vf, vlans);
            }
        }

        fn add_mac(&mut self, vf: u16, kind: EtherAddrType, addr: &str) {
            let list = EtherAddrList {
                vsi_id: VSI_ID,
                addrs: vec![EtherAddr {
                    addr: mac(addr),
                    kind,
                }],
            };
            self.ok(vf, Request::AddEthAddr(list));
        }

        fn add_vlans(&mut self, vf: u16, vids: &[u16]) {
            self.ok(vf, Request::AddVlanV2(v2(0x8100, vids, false)));
        }

        fn promisc(&mut self, vf: u16, flags: PromiscFlags) {
            let info = PromiscInfo {
                vsi_id: VSI_ID,
                flags,
            };
            self.ok(vf, Request::ConfigPromiscuousMode(info));
        }

        /// A frame from `vf`, as (port, frame) pairs.
        fn send(&mut self, vf: u16, frame: &[u8]) -> Vec<(Port, Vec<u8>)> {
            let out = self.pf.switch_from_vf(VfId(vf), frame).expect("VF exists");
            out.into_iter().map(|d| (d.to, d.frame)).collect()
        }

        /// Where a frame from `vf` went.
        fn ports(&mut self, vf: u16, frame: &[u8]) -> Vec<Port> {
            self.send(vf, frame).into_iter().map(|(p, _)| p).collect()
        }

        fn uplink(&mut self, frame: &[u8]) -> Vec<(Port, Vec<u8>)> {
            let out = self.pf.switch_from_uplink(frame);
            out.into_iter().map(|d| (d.to, d.frame)).collect()
        }

        fn traffic(&self, vf: u16) -> TrafficCounters {
            self.pf.traffic(VfId(vf)).expect("VF exists")
        }

        fn drops(&self, vf: u16) -> DropCounters {
            self.traffic(vf).drops
        }
    }

    fn queues(bits: u32) -> QueueSelect {
        QueueSelect {
            vsi_id: VSI_ID,
            rx_queues: bits,
            tx_queues: bits,
        }
    }

    /// V2 filters with TPID `tpid`, in the outer tag (`outer`, DVM) or the inner one (SVM).
    fn v2(tpid: u16, vids: &[u16], outer: bool) -> VlanFilterListV2 {
        VlanFilterListV2 {
            vport_id: VSI_ID,
            filters: vids
                .iter()
                .map(|&vid| VlanFilterV2::single(VirtchnlVlan::new(tpid, vid), outer))
                .collect(),
        }
    }

    /// An IPv4-ethertype frame of `len` bytes before tagging, with an
    /// optional (TPID, TCI) tag.
    fn eth(dst: &str, src: &str, tag: Option<(u16, u16)>, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&mac(dst).0);
        f.extend_from_slice(&mac(src).0);
        if let Some((tpid, tci)) = tag {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let body = len.saturating_sub(14);
        f.extend((0..body).map(|i| i as u8));
        f
    }

    fn dot1q(vid: u16) -> Option<(u16, u16)> {
        Some((0x8100, vid))
    }

    /// Two VFs up with VLAN 100, the usual pair for VF-to-VF tests.
    fn pair() -> Rig {
        let mut rig = Rig::new(2, vec![]);
        rig.bring_up(0, &[100]);
        rig.bring_up(1, &[100]);
        rig
    }

    // ---- S1: transmit gate and parsing ------------------------------------

    #[test]
    fn s1_frames_shorter_than_their_headers_are_malformed() {
        let mut rig = pair();
        let ok = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        for bad in [&ok[..0], &ok[..13], &ok[..16], &ok[..17]] {
            assert_eq!(rig.send(0, bad), vec![], "{} bytes", bad.len());
        }
        assert_eq!(rig.drops(0).malformed, 4);
        assert_eq!(rig.traffic(0).tx_frames, 0);
        // 18 bytes: a tag and an ethertype, no payload, is a frame.
        assert_eq!(rig.ports(0, &ok[..18]), vec![Port::Vf(VfId(1))]);

        let before = rig.pf.uplink_counters();
        assert_eq!(rig.uplink(&ok[..13]), vec![]);
        assert_eq!(rig.pf.uplink_counters().malformed, before.malformed + 1);
    }

    #[test]
    fn s1_a_vf_without_enabled_tx_queues_sends_nothing() {
        let mut rig = pair();
        rig.ok(0, Request::DisableQueues(queues(1)));
        let frame = eth(&mac_of(1), &mac_of(0), None, 64);
        assert_eq!(rig.send(0, &frame), vec![]);
        rig.pf.reset_vf(VfId(1), false).expect("VF exists");
        assert_eq!(rig.send(1, &frame), vec![], "INIT, not ACTIVE");
        assert_eq!(rig.drops(0).tx_queues_disabled, 1);
        assert_eq!(rig.drops(1).tx_queues_disabled, 1);
        assert_eq!(rig.drops(1).malformed, 0, "the gate comes before parsing");
    }

    #[test]
    fn s1_single_vlan_mode_treats_an_88a8_frame_as_untagged() {
        let mut rig = pair();
        // Untagged for the switch, so VLAN anti-spoof and pruning do not apply.
        let frame = eth(&mac_of(1), &mac_of(0), Some((0x88a8, 300)), 64);
        assert_eq!(rig.send(0, &frame), vec![(Port::Vf(VfId(1)), frame)]);
    }

    #[test]
    fn s1_double_vlan_mode_switches_on_an_88a8_outer_tag() {
        let mut rig = Rig::with_config(PfConfig {
            num_vfs: 2,
            vlan_mode: VlanMode::Double,
            ..PfConfig::default()
        });
        for vf in 0..2 {
            rig.bring_up(vf, &[]);
            rig.ok(vf, Request::AddVlanV2(v2(0x88a8, &[300], true)));
        }
        let frame = eth(&mac_of(1), &mac_of(0), Some((0x88a8, 300)), 64);
        assert_eq!(rig.send(0, &frame), vec![(Port::Vf(VfId(1)), frame)]);
        // 0x8100 VLAN 300 is a different filter: outer anti-spoof drops it.
        let other = eth(&mac_of(1), &mac_of(0), dot1q(300), 64);
        assert_eq!(rig.send(0, &other), vec![]);
        assert_eq!(rig.drops(0).anti_spoof_vlan, 1);
    }

    // ---- S2: MAC anti-spoof -------------------------------------------------

    #[test]
    fn s2_mac_anti_spoof_drops_a_source_the_vf_has_no_filter_for() {
        let mut rig = pair();
        let forged = eth(BCAST, STRANGER, None, 64);
        assert_eq!(rig.send(0, &forged), vec![]);
        let multicast_src = eth(BCAST, "33:33:00:00:00:01", None, 64);
        assert_eq!(rig.send(0, &multicast_src), vec![]);
        assert_eq!(rig.drops(0).anti_spoof_mac, 2);
        assert_eq!(rig.traffic(1).rx_frames, 0);
        assert_eq!(rig.traffic(0).tx_frames, 0);

        // An extra unicast filter is a legitimate source.
        rig.add_mac(0, EtherAddrType::Extra, STRANGER);
        assert_eq!(rig.ports(0, &forged), vec![Port::Vf(VfId(1)), Port::Uplink]);
    }

    #[test]
    fn s2_spoofchk_off_lets_any_source_through() {
        let mut rig = pair();
        rig.pf.set_spoofchk(VfId(0), false).expect("VF exists");
        let forged = eth(BCAST, STRANGER, None, 64);
        assert_eq!(rig.ports(0, &forged), vec![Port::Vf(VfId(1)), Port::Uplink]);
        assert_eq!(rig.drops(0), DropCounters::default());
    }

    // ---- S3: VLAN anti-spoof and port VLAN ------------------------------------

    #[test]
    fn s3_vlan_anti_spoof_drops_traffic_for_a_vlan_not_yet_re_added() {
        // The iavf bug-report symptom: after a reset the VF re-adds its VLANs
        // one by one; once the first is back, Tx VLAN filtering is on again
        // and traffic on the others is dropped until they are re-added.
        let mut rig = Rig::new(2, vec![]);
        rig.bring_up(0, &[100, 200]);
        rig.bring_up(1, &[100, 200]);
        let on_200 = eth(&mac_of(1), &mac_of(0), dot1q(200), 64);
        assert_eq!(rig.ports(0, &on_200), vec![Port::Vf(VfId(1))]);

        rig.pf.reset_vf(VfId(0), true).expect("VF exists");
        rig.bring_up(0, &[100]);
        assert_eq!(rig.send(0, &on_200), vec![]);
        assert_eq!(rig.drops(0).anti_spoof_vlan, 1);
        let on_100 = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.ports(0, &on_100), vec![Port::Vf(VfId(1))]);

        rig.add_vlans(0, &[200]);
        assert_eq!(rig.ports(0, &on_200), vec![Port::Vf(VfId(1))]);
        assert_eq!(rig.drops(0).anti_spoof_vlan, 1);
    }

    #[test]
    fn s3_untagged_and_priority_tagged_frames_pass_vlan_anti_spoof() {
        let mut rig = pair();
        let untagged = eth(&mac_of(1), &mac_of(0), None, 64);
        let priority = eth(&mac_of(1), &mac_of(0), dot1q(0x6000), 64);
        assert_eq!(rig.ports(0, &untagged), vec![Port::Vf(VfId(1))]);
        assert_eq!(rig.send(0, &priority), vec![(Port::Vf(VfId(1)), priority)]);
        assert_eq!(rig.drops(0), DropCounters::default());
    }

    #[test]
    fn s3_vlan_anti_spoof_is_off_with_spoofchk_off() {
        let mut rig = Rig::new(
            2,
            vec![VfPolicy {
                spoofchk: false,
                ..VfPolicy::default()
            }],
        );
        rig.bring_up(0, &[100]);
        rig.bring_up(1, &[200]);
        let on_200 = eth(&mac_of(1), &mac_of(0), dot1q(200), 64);
        assert_eq!(rig.ports(0, &on_200), vec![Port::Vf(VfId(1))]);
        assert_eq!(rig.drops(0), DropCounters::default());
    }

    #[test]
    fn s3_port_vlan_is_inserted_on_transmit_and_stripped_on_receive() {
        let port_vlan = |vid| VfPolicy {
            port_vlan: Some(vid),
            ..VfPolicy::default()
        };
        let mut rig = Rig::new(3, vec![port_vlan(10), port_vlan(10)]);
        rig.bring_up(0, &[]);
        rig.bring_up(1, &[]);
        rig.bring_up(2, &[10]);

        let untagged = eth(BCAST, &mac_of(0), None, 64);
        let tagged = eth(BCAST, &mac_of(0), dot1q(10), 64);
        assert_eq!(tagged.len(), untagged.len() + 4);
        assert_eq!(
            rig.send(0, &untagged),
            vec![
                (Port::Vf(VfId(1)), untagged.clone()),
                (Port::Vf(VfId(2)), tagged.clone()),
                (Port::Uplink, tagged.clone()),
            ]
        );
        assert_eq!(rig.traffic(0).tx_bytes, 64, "as the VF sent it");
        assert_eq!(rig.traffic(1).rx_bytes, 64, "as delivered");
        assert_eq!(rig.traffic(2).rx_bytes, 68);

        // The VF must send untagged, whatever the tag.
        let own_tag = eth(BCAST, &mac_of(0), dot1q(10), 64);
        let priority = eth(BCAST, &mac_of(0), dot1q(0), 64);
        assert_eq!(rig.send(0, &own_tag), vec![]);
        assert_eq!(rig.send(0, &priority), vec![]);
        assert_eq!(rig.drops(0).anti_spoof_vlan, 2);

        // From the wire: only VLAN 10 reaches the port-VLAN VFs, untagged.
        let from_wire = eth(BCAST, STRANGER, dot1q(10), 64);
        let stripped = eth(BCAST, STRANGER, None, 64);
        assert_eq!(
            rig.uplink(&from_wire),
            vec![
                (Port::Vf(VfId(0)), stripped.clone()),
                (Port::Vf(VfId(1)), stripped),
                (Port::Vf(VfId(2)), from_wire),
            ]
        );
        let plain = eth(BCAST, STRANGER, None, 64);
        assert_eq!(rig.uplink(&plain), vec![(Port::Vf(VfId(2)), plain)]);
        assert_eq!(rig.drops(0).no_filter_match, 1);
    }

    #[test]
    fn s3_port_vlan_applies_without_spoofchk() {
        let mut rig = Rig::new(
            2,
            vec![VfPolicy {
                port_vlan: Some(10),
                spoofchk: false,
                ..VfPolicy::default()
            }],
        );
        rig.bring_up(0, &[]);
        rig.bring_up(1, &[]);
        let tagged = eth(BCAST, &mac_of(0), dot1q(20), 64);
        assert_eq!(rig.send(0, &tagged), vec![]);
        assert_eq!(rig.drops(0).anti_spoof_vlan, 1);
    }

    // ---- S4: receive matching -------------------------------------------------

    #[test]
    fn s4_vf_to_vf_unicast_on_a_shared_vlan_is_delivered() {
        let mut rig = pair();
        let frame = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.send(0, &frame), vec![(Port::Vf(VfId(1)), frame)]);
        assert_eq!(rig.traffic(0).tx_frames, 1);
        assert_eq!(rig.traffic(1).rx_frames, 1);
        assert_eq!(rig.pf.uplink_counters().tx_frames, 0);
    }

    #[test]
    fn s4_a_vlan_the_receiver_lacks_counts_no_filter_match() {
        let mut rig = Rig::new(
            2,
            vec![VfPolicy {
                spoofchk: false,
                ..VfPolicy::default()
            }],
        );
        rig.bring_up(0, &[]);
        rig.bring_up(1, &[100]);
        let frame = eth(&mac_of(1), &mac_of(0), dot1q(200), 64);
        assert_eq!(
            rig.send(0, &frame),
            vec![],
            "local unicast: not to the uplink"
        );
        assert_eq!(rig.drops(1).no_filter_match, 1);
        // A frame for someone else is not a filter miss.
        let other = eth(STRANGER, &mac_of(0), dot1q(200), 64);
        assert_eq!(rig.ports(0, &other), vec![Port::Uplink]);
        assert_eq!(rig.drops(1).no_filter_match, 1);
    }

    #[test]
    fn s4_a_receiver_without_vlan_pruning_takes_any_vlan() {
        let mut rig = Rig::new(
            2,
            vec![
                VfPolicy::default(),
                VfPolicy {
                    trust: true,
                    ..VfPolicy::default()
                },
            ],
        );
        rig.bring_up(0, &[300]);
        rig.bring_up(1, &[]);
        // Trusted promiscuous mode turns pruning off (P30).
        rig.promisc(1, PromiscFlags::MULTICAST);
        let frame = eth(&mac_of(1), &mac_of(0), dot1q(300), 64);
        assert_eq!(rig.ports(0, &frame), vec![Port::Vf(VfId(1))]);
    }

    #[test]
    fn s4_a_receiver_with_queues_disabled_counts_the_drop() {
        let mut rig = pair();
        rig.ok(1, Request::DisableQueues(queues(1)));
        let frame = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.send(0, &frame), vec![]);
        assert_eq!(rig.drops(1).rx_queues_disabled, 1);
        assert_eq!(rig.traffic(1).rx_frames, 0);
        assert_eq!(
            rig.traffic(0).tx_frames,
            1,
            "the sender's frame was accepted"
        );

        rig.ok(1, Request::EnableQueues(queues(1)));
        assert_eq!(rig.ports(0, &frame), vec![Port::Vf(VfId(1))]);
    }

    #[test]
    fn s4_multicast_reaches_filters_and_allmulti_only() {
        let mut rig = Rig::new(
            3,
            vec![
                VfPolicy::default(),
                VfPolicy::default(),
                VfPolicy {
                    trust: true,
                    ..VfPolicy::default()
                },
            ],
        );
        for vf in 0..3 {
            rig.bring_up(vf, &[]);
        }
        rig.add_mac(1, EtherAddrType::Extra, "33:33:00:00:00:01");
        rig.promisc(2, PromiscFlags::MULTICAST);
        let group = eth("33:33:00:00:00:01", &mac_of(0), None, 64);
        assert_eq!(
            rig.ports(0, &group),
            vec![Port::Vf(VfId(1)), Port::Vf(VfId(2)), Port::Uplink]
        );
        let other = eth("33:33:00:00:00:02", &mac_of(0), None, 64);
        assert_eq!(rig.ports(0, &other), vec![Port::Vf(VfId(2)), Port::Uplink]);
        assert_eq!(rig.traffic(0).tx_multicast, 2);
        assert_eq!(rig.traffic(2).rx_multicast, 2);
    }

    #[test]
    fn s4_a_promiscuous_receiver_gets_unicast_for_others() {
        let trusted = VfPolicy {
            trust: true,
            ..VfPolicy::default()
        };
        let mut rig = Rig::new(3, vec![VfPolicy::default(), VfPolicy::default(), trusted]);
        for vf in 0..3 {
            rig.bring_up(vf, &[100]);
        }
        rig.promisc(2, PromiscFlags::UNICAST | PromiscFlags::MULTICAST);
        let to_vf1 = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        assert_eq!(
            rig.ports(0, &to_vf1),
            vec![Port::Vf(VfId(1)), Port::Vf(VfId(2))],
            "a local destination stays local"
        );
        let unknown = eth(STRANGER, &mac_of(0), dot1q(100), 64);
        assert_eq!(
            rig.ports(0, &unknown),
            vec![Port::Vf(VfId(2)), Port::Uplink]
        );
        let from_wire = eth(STRANGER, "02:00:00:00:88:88", None, 64);
        assert_eq!(rig.uplink(&from_wire), vec![(Port::Vf(VfId(2)), from_wire)]);
    }

    #[test]
    fn s4_an_untrusted_vf_asking_for_promiscuous_mode_gets_nothing_more() {
        let mut rig = pair();
        rig.promisc(1, PromiscFlags::UNICAST); // P30: SUCCESS, nothing changes.
        let unknown = eth(STRANGER, &mac_of(0), None, 64);
        assert_eq!(rig.ports(0, &unknown), vec![Port::Uplink]);
    }

    // ---- S5: forwarding -----------------------------------------------------------

    #[test]
    fn s5_unknown_unicast_goes_to_the_uplink_only() {
        let mut rig = pair();
        let frame = eth(STRANGER, &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.send(0, &frame), vec![(Port::Uplink, frame)]);
        let counters = rig.pf.uplink_counters();
        assert_eq!((counters.tx_frames, counters.tx_bytes), (1, 68));
        assert_eq!(rig.traffic(1), TrafficCounters::default());
    }

    #[test]
    fn s5_broadcast_reaches_every_matching_vf_and_the_uplink_but_never_the_sender() {
        let mut rig = Rig::new(4, vec![]);
        for vf in 0..3 {
            rig.bring_up(vf, &[]);
        }
        // vf3 is never brought up: it would have matched, so it counts a drop.
        let frame = eth(BCAST, &mac_of(1), None, 60);
        assert_eq!(
            rig.send(1, &frame),
            vec![
                (Port::Vf(VfId(0)), frame.clone()),
                (Port::Vf(VfId(2)), frame.clone()),
                (Port::Uplink, frame),
            ]
        );
        assert_eq!(rig.traffic(1).rx_frames, 0);
        assert_eq!(rig.traffic(1).tx_broadcast, 1);
        assert_eq!(rig.traffic(0).rx_broadcast, 1);
        assert_eq!(rig.drops(3).rx_queues_disabled, 1);
    }

    #[test]
    fn s5_a_frame_to_the_senders_own_address_goes_nowhere() {
        let mut rig = pair();
        let frame = eth(&mac_of(0), &mac_of(0), None, 64);
        assert_eq!(rig.send(0, &frame), vec![]);
        assert_eq!(rig.traffic(0).tx_frames, 1);
    }

    // ---- S6: from the uplink ------------------------------------------------------

    #[test]
    fn s6_uplink_frames_are_matched_without_anti_spoof() {
        let mut rig = pair();
        let frame = eth(&mac_of(1), &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.uplink(&frame), vec![(Port::Vf(VfId(1)), frame)]);
        let unknown = eth(STRANGER, &mac_of(0), dot1q(100), 64);
        assert_eq!(rig.uplink(&unknown), vec![], "never back to the uplink");
        let counters = rig.pf.uplink_counters();
        assert_eq!((counters.rx_frames, counters.rx_bytes), (2, 136));
        assert_eq!(counters.tx_frames, 0);
    }

    // ---- S7: counters ------------------------------------------------------------

    #[test]
    fn s7_get_stats_reports_the_counters() {
        let mut rig = pair();
        rig.send(0, &eth(&mac_of(1), &mac_of(0), dot1q(100), 100));
        rig.send(0, &eth(BCAST, &mac_of(0), None, 60));
        rig.send(0, &eth("01:00:5e:00:00:01", &mac_of(0), None, 70));
        rig.send(0, &eth(BCAST, STRANGER, None, 60));
        rig.send(1, &eth(&mac_of(0), &mac_of(1), dot1q(200), 80));
        rig.send(1, &eth(&mac_of(0), &mac_of(1), None, 80));
        rig.pf
            .count_drop(VfId(0), DropReason::NoRxBuffer)
            .expect("VF exists");

        let stats = |rig: &mut Rig, vf| match rig.call(vf, Request::GetStats(queues(0))).body {
            ReplyBody::Stats(s) => s,
            other => panic!("GET_STATS body: {other:?}"),
        };
        let vf0 = stats(&mut rig, 0);
        assert_eq!(
            vf0,
            EthStats {
                rx_bytes: 80,
                rx_unicast: 1,
                rx_multicast: 0,
                rx_broadcast: 0,
                rx_discards: 1,
                rx_unknown_protocol: 0,
                tx_bytes: 234,
                tx_unicast: 1,
                tx_multicast: 1,
                tx_broadcast: 1,
                tx_discards: 0,
                tx_errors: 1,
            }
        );
        let vf1 = stats(&mut rig, 1);
        assert_eq!(
            (
                vf1.rx_bytes,
                vf1.rx_unicast,
                vf1.rx_broadcast,
                vf1.rx_multicast
            ),
            (164, 1, 1, 0),
            "the multicast has no filter on vf1"
        );
        assert_eq!((vf1.tx_unicast, vf1.tx_errors), (1, 1));
        assert_eq!(vf1.rx_discards, 0);
    }

    #[test]
    fn s7_counters_survive_vf_and_pf_resets() {
        let mut rig = pair();
        rig.send(0, &eth(&mac_of(1), &mac_of(0), dot1q(100), 64));
        rig.send(0, &eth(BCAST, STRANGER, None, 64));
        let (vf0, vf1) = (rig.traffic(0), rig.traffic(1));
        assert_eq!((vf0.tx_frames, vf0.drops.anti_spoof_mac), (1, 1));

        // A reset the VF asks for, one the host makes, then a PF reset.
        let reset = Request::ResetVf.to_frame(99);
        rig.pf.handle_mailbox(rig.now, VfId(0), &reset);
        assert_eq!(rig.traffic(0), vf0);
        rig.pf.reset_vf(VfId(0), true).expect("VF exists");
        assert_eq!(rig.traffic(0), vf0);
        rig.pf.pf_reset();
        assert_eq!((rig.traffic(0), rig.traffic(1)), (vf0, vf1));
        rig.bring_up(0, &[]);
        let stats = rig.call(0, Request::GetStats(queues(0)));
        assert_eq!(stats.body, ReplyBody::Stats(vf0.eth_stats()));
    }

    #[test]
    fn s7_the_shell_counts_drops_it_sees() {
        let mut rig = pair();
        rig.pf
            .count_drop(VfId(1), DropReason::NoRxBuffer)
            .expect("VF exists");
        rig.pf
            .count_drop(VfId(1), DropReason::QueuesDisabled)
            .expect("VF exists");
        let drops = rig.drops(1);
        assert_eq!((drops.no_rx_buffer, drops.rx_queues_disabled), (1, 1));
        assert!(rig.pf.count_drop(VfId(2), DropReason::NoRxBuffer).is_err());
        assert!(rig.pf.switch_from_vf(VfId(2), &[0; 64]).is_err());
    }

    #[test]
    fn s7_drop_reasons_serialise_in_snake_case() {
        let names = serde_json::to_string(&[
            DropReason::AntiSpoofMac,
            DropReason::AntiSpoofVlan,
            DropReason::NoFilterMatch,
            DropReason::QueuesDisabled,
            DropReason::NoRxBuffer,
            DropReason::Malformed,
        ])
        .expect("serialises");
        assert_eq!(
            names,
            r#"["anti_spoof_mac","anti_spoof_vlan","no_filter_match","queues_disabled","no_rx_buffer","malformed"]"#
        );
    }

    #[test]
    fn tables_after_switching() {
        let mut rig = pair();
        rig.send(0, &eth(&mac_of(1), &mac_of(0), dot1q(100), 64));
        rig.send(0, &eth(BCAST, &mac_of(0), None, 60));
        rig.send(0, &eth(BCAST, &mac_of(0), dot1q(300), 64));
        rig.send(1, &eth(BCAST, STRANGER, None, 60));
        rig.uplink(&eth(&mac_of(0), STRANGER, dot1q(200), 64));
        rig.uplink(&[0; 10]);
        rig.pf
            .count_drop(VfId(1), DropReason::NoRxBuffer)
            .expect("VF exists");
        insta::assert_yaml_snapshot!(rig.pf.tables());
    }
}
