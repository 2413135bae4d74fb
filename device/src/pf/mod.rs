//! The PF model: a deterministic, sans-IO emulation of an ice-like PF
//! serving AVF VFs over virtchnl.
//!
//! [`Pf`] owns every VF's filter tables and policy. It does no I/O and reads
//! no clock: the caller passes time in, feeds mailbox frames and host
//! operations, and drains what the PF wants sent. The same code runs in unit
//! tests, in an interleaving explorer and behind the vhost-user daemon.
//!
//! # Methods, by kind
//!
//! - **Getters**: [`Pf::num_vfs`], [`Pf::policy`], [`Pf::role`], [`Pf::phase`],
//!   [`Pf::traffic`], [`Pf::uplink_counters`], [`Pf::tables`] (the view
//!   snapshots are made of).
//! - **Inputs from a VF**: [`Pf::handle_mailbox`] takes one raw mailbox
//!   frame. Nothing a VF sends makes it fail: malformed or refused requests
//!   are answered with the status ice would give.
//! - **Host operations** (what `ip link set PF vf N ...` does on a real PF):
//!   [`Pf::set_policy`] and its shorthands, [`Pf::set_pf_link`],
//!   [`Pf::reset_vf`], [`Pf::begin_reset`]/[`Pf::finish_reset`],
//!   [`Pf::pf_reset`]. These fail only for a bad VF index or bad policy.
//! - **Outputs**: [`Pf::poll_effect`]: call after every input until it
//!   returns `None`, and deliver each [`Effect`] to its VF in order.
//! - **Data path** (the PF switch, rules S1-S7 in `switch.rs`):
//!   [`Pf::switch_from_vf`] and [`Pf::switch_from_uplink`] take one Ethernet
//!   frame and return its [`Delivery`]s at once, to be put on their ports in
//!   order; they queue no effects. [`Pf::count_drop`] records a delivery the
//!   shell could not make. Switching reads the tables and changes only
//!   counters, so it may interleave freely with mailbox input.
//!
//! # VF roles
//!
//! A VF has a [`VfRole`] for its whole life, from [`PfConfig::roles`]. A
//! [`VfRole::Driver`] VF (the default) is driven over the mailbox as
//! described above. A [`VfRole::Kernel`] VF is a plain NIC the guest
//! kernel's virtio_net drives without a mailbox: the host configures it,
//! so after every reset it is ACTIVE with its one queue pair enabled and the
//! host MAC as its MAC filter, and the switch treats it like any other
//! ACTIVE VF. It is sent no events; a mailbox frame from it (which the shell
//! cannot deliver) gets ERR_NOT_SUPPORTED.
//!
//! No timers: the one time-dependent rule (a LEGACY MAC remembered for 3 s,
//! P17) is evaluated when the next request arrives, so there is no
//! `poll_timeout`.
//!
//! # Invariants
//!
//! - Every frame from a known VF gets exactly one reply, except RESET_VF
//!   from a VF with a mailbox, which gets none. Frames for an unknown VF are
//!   dropped (P1).
//! - A kernel-role VF is never sent an event and is ACTIVE whenever it is
//!   not in the middle of a reset.
//! - A refused request leaves the tables unchanged, except where ice itself
//!   applies a prefix of a list before failing (P15, P25).
//! - Reset leaves only host configuration: broadcast, the host MAC, VLAN 0.

mod caps;
pub mod policy;
mod switch;
mod tables;
mod vf;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use tracing::{debug, info, warn};
use virtchnl::{
    validate_request_len, Frame, FrameHeader, PfEvent, PfMessage, Reply, Request, VirtchnlOp,
    VirtchnlStatus,
};

pub use caps::MODELLED_CAPS;
pub use policy::{LinkState, PfConfig, VfPolicy, VfRole, VlanMode};
pub use switch::{Delivery, DropCounters, DropReason, Port, TrafficCounters, UplinkCounters};
pub use tables::{AntiSpoof, Promisc, Queues, Tables, VfTable};
pub use vf::{MailboxCounters, VfPhase, Vlan, VSI_ID};

use crate::{Error, Result};
use vf::{Env, Response, Vf};

/// A VF index on this PF (`vf0`, `vf1`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VfId(pub u16);

/// A VF id is its index on the wire: `0`, not `"vf0"`.
impl serde::Serialize for VfId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for VfId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        <u16 as serde::Deserialize>::deserialize(d).map(VfId)
    }
}

impl fmt::Display for VfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vf{}", self.0)
    }
}

/// Something the PF sends to a VF's receive mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The answer to a request; `cookie` is the request's.
    Reply {
        /// Destination.
        vf: VfId,
        /// The request's cookie.
        cookie: u32,
        /// The reply.
        reply: Reply,
    },
    /// An unsolicited event (link change, reset impending).
    Event {
        /// Destination.
        vf: VfId,
        /// The event.
        event: PfEvent,
    },
}

impl Effect {
    /// The VF this goes to.
    pub fn vf(&self) -> VfId {
        match self {
            Effect::Reply { vf, .. } | Effect::Event { vf, .. } => *vf,
        }
    }

    /// The mailbox frame to put in the VF's receive queue.
    pub fn to_frame(&self) -> Vec<u8> {
        match self {
            Effect::Reply { cookie, reply, .. } => {
                PfMessage::Reply(reply.clone()).to_frame(*cookie)
            }
            Effect::Event { event, .. } => PfMessage::Event(*event).to_frame(0),
        }
    }
}

/// The emulated PF. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Pf {
    vlan_mode: VlanMode,
    link_up: bool,
    link_speed_mbps: u32,
    queue_pairs: u16,
    true_promisc: bool,
    vfs: Vec<Vf>,
    effects: VecDeque<Effect>,
    dropped_unknown_vf: u64,
    uplink: UplinkCounters,
}

impl Pf {
    /// Builds a PF with `config.num_vfs` VFs, each fresh out of reset.
    pub fn new(config: PfConfig) -> Result<Pf> {
        if config.num_vfs == 0 {
            return Err(Error::BadVfCount(0));
        }
        if config.policies.len() > usize::from(config.num_vfs) {
            return Err(Error::TooManyPolicies {
                count: config.policies.len(),
                num_vfs: config.num_vfs,
            });
        }
        for policy in &config.policies {
            check_policy(policy)?;
        }
        if let Some((&vf, _)) = config.roles.range(VfId(config.num_vfs)..).next() {
            return Err(Error::UnknownVf {
                vf,
                num_vfs: config.num_vfs,
            });
        }
        let mut policies = config.policies.into_iter();
        let vfs: Vec<Vf> = (0..config.num_vfs)
            .map(|i| {
                let role = config.roles.get(&VfId(i)).copied().unwrap_or_default();
                Vf::new(policies.next().unwrap_or_default(), role)
            })
            .collect();
        for (i, vf) in (0u16..).zip(&vfs) {
            if vf.role == VfRole::Kernel && !vf.hw_lan_addr.is_valid_unicast() {
                warn!(
                    vf = %VfId(i),
                    "kernel-role VF without an admin MAC: it has no MAC filter, so only \
                     broadcast reaches it and, with spoofchk on, nothing it sends passes; \
                     set admin_mac to the MAC QEMU gives its virtio-net device"
                );
            }
        }
        Ok(Pf {
            vlan_mode: config.vlan_mode,
            link_up: config.link_up,
            link_speed_mbps: config.link_speed_mbps,
            queue_pairs: config.queue_pairs_per_vf.clamp(1, 16),
            true_promisc: config.true_promisc,
            vfs,
            effects: VecDeque::new(),
            dropped_unknown_vf: 0,
            uplink: UplinkCounters::default(),
        })
    }

    /// How many VFs this PF has.
    pub fn num_vfs(&self) -> u16 {
        u16::try_from(self.vfs.len()).unwrap_or(u16::MAX)
    }

    /// A VF's current policy.
    pub fn policy(&self, vf: VfId) -> Result<&VfPolicy> {
        Ok(&self.vf(vf)?.policy)
    }

    /// Who drives a VF.
    pub fn role(&self, vf: VfId) -> Result<VfRole> {
        Ok(self.vf(vf)?.role)
    }

    /// Where a VF is in its life cycle.
    pub fn phase(&self, vf: VfId) -> Result<VfPhase> {
        Ok(self.vf(vf)?.phase)
    }

    /// Frames addressed to a VF that does not exist, dropped without reply (P1).
    pub fn dropped_unknown_vf(&self) -> u64 {
        self.dropped_unknown_vf
    }

    /// A VF's data-path counters (switch rule S7).
    pub fn traffic(&self, vf: VfId) -> Result<TrafficCounters> {
        Ok(self.vf(vf)?.traffic)
    }

    /// The uplink's side of the switch.
    pub fn uplink_counters(&self) -> UplinkCounters {
        self.uplink
    }

    /// Switches one Ethernet frame `vf` transmitted (no virtio-net header).
    ///
    /// Returns where it goes, VFs by index and the uplink last; empty when it
    /// was dropped, which is counted (rules S1-S5). Fails only for a VF that
    /// does not exist: the shell named it, not the guest.
    #[must_use = "the deliveries are the frame's only copies"]
    pub fn switch_from_vf(&mut self, vf: VfId, frame: &[u8]) -> Result<Vec<Delivery>> {
        let index = self.index_or_err(vf)?;
        Ok(switch::from_vf(
            &mut self.vfs,
            &mut self.uplink,
            self.vlan_mode,
            index,
            frame,
        ))
    }

    /// Switches one Ethernet frame from the wire (rule S6): to VFs only.
    #[must_use = "the deliveries are the frame's only copies"]
    pub fn switch_from_uplink(&mut self, frame: &[u8]) -> Vec<Delivery> {
        switch::from_uplink(&mut self.vfs, &mut self.uplink, self.vlan_mode, frame)
    }

    /// Counts a drop only the shell sees, against `vf` as a receiver:
    /// [`DropReason::NoRxBuffer`] when a delivery found no receive buffer
    /// ([`DropReason::QueuesDisabled`] counts as a receive-side drop too).
    pub fn count_drop(&mut self, vf: VfId, reason: DropReason) -> Result<()> {
        let index = self.index_or_err(vf)?;
        self.vfs[index].traffic.count_shell_drop(reason);
        Ok(())
    }

    /// Handles one mailbox frame sent by `vf` at time `now`.
    ///
    /// Queues exactly one reply (none for RESET_VF or an unknown VF) and any
    /// events that follow it; drain them with [`Pf::poll_effect`].
    pub fn handle_mailbox(&mut self, now: Instant, vf: VfId, bytes: &[u8]) {
        let env = self.env();
        let Some(index) = self.index(vf) else {
            warn!(%vf, len = bytes.len(), "mailbox frame for a VF that does not exist; dropped");
            self.dropped_unknown_vf += 1;
            return;
        };
        let _span = tracing::debug_span!("vf", id = vf.0).entered();
        self.vfs[index].counters.requests += 1;

        let header = match FrameHeader::parse(bytes) {
            Ok(header) => header,
            Err(err) => {
                warn!(%err, "malformed mailbox frame");
                self.vfs[index].counters.malformed += 1;
                let reply = Reply::empty(VirtchnlOp::Unspecified, VirtchnlStatus::ErrParam);
                return self.push_reply(vf, 0, reply);
            }
        };
        let (op, cookie) = (header.op, header.cookie);
        let refuse = |status| Reply::empty(op, status);
        // A kernel-role VF has no mailbox: whatever this is, refuse it.
        if !self.vfs[index].has_mailbox() {
            warn!(%op, "mailbox frame from a kernel-role VF, which has no mailbox; refused");
            return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrNotSupported));
        }
        let frame = match Frame::parse(bytes) {
            Ok(frame) => frame,
            Err(err) => {
                warn!(%err, "malformed mailbox frame");
                self.vfs[index].counters.malformed += 1;
                return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrParam));
            }
        };
        let state = &self.vfs[index];
        // P2: a VF being reset gets ERR_PARAM for everything.
        if state.phase == VfPhase::Resetting {
            debug!(%op, "request during reset");
            return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrParam));
        }
        // P2: the kernel's length check, before the allowlist.
        if let Err(err) = validate_request_len(op, frame.payload, state.version) {
            warn!(%err, "request failed the length check");
            self.vfs[index].counters.malformed += 1;
            return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrParam));
        }
        // P3: the opcode allowlist.
        if !caps::is_allowed(op, state.caps) {
            debug!(%op, "opcode not allowed for this VF");
            return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrNotSupported));
        }
        let request = match Request::decode(op, frame.payload) {
            Ok(request) => request,
            // P4: allowed, but the model has no handler for it.
            Err(virtchnl::Error::Unsupported { .. }) => {
                return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrNotSupported))
            }
            Err(err) => {
                warn!(%err, "request passed the length check but did not decode");
                self.vfs[index].counters.malformed += 1;
                return self.push_reply(vf, cookie, refuse(VirtchnlStatus::ErrParam));
            }
        };
        debug!(?request, "request");
        if request == Request::ResetVf {
            // P10: no reply; a reset only when INIT is set (it is: not Resetting here).
            info!("VF requested reset");
            return self.reset_index(index, false);
        }
        match self.vfs[index].handle(&env, now, request) {
            Response::Reply(status, body) => {
                self.push_reply(vf, cookie, Reply { op, status, body })
            }
            Response::ReplyThenLink(status, body) => {
                self.push_reply(vf, cookie, Reply { op, status, body });
                if status.is_success() {
                    self.notify_link(index);
                }
            }
        }
    }

    /// Replaces a VF's policy, applying it as the host's `ip link set` would.
    ///
    /// Changing trust, the admin MAC or the port VLAN resets the VF with
    /// RESET_IMPENDING first (P12, P31). Spoof checking applies at once (P29).
    /// A link override sends a LINK_CHANGE. Limits and `vlan_v2` apply to
    /// the next request and the next GET_VF_RESOURCES.
    pub fn set_policy(&mut self, vf: VfId, policy: VfPolicy) -> Result<()> {
        check_policy(&policy)?;
        let index = self.index_or_err(vf)?;
        let old = std::mem::replace(&mut self.vfs[index].policy, policy.clone());
        let needs_reset = old.trust != policy.trust
            || old.admin_mac != policy.admin_mac
            || old.port_vlan != policy.port_vlan;
        if old.admin_mac != policy.admin_mac {
            let mac = policy.admin_mac.unwrap_or(virtchnl::MacAddr::ZERO);
            let state = &mut self.vfs[index];
            state.hw_lan_addr = mac;
            state.dev_lan_addr = mac;
        }
        if old.spoofchk != policy.spoofchk {
            self.vfs[index].apply_spoofchk();
        }
        info!(%vf, ?policy, "policy changed");
        if needs_reset {
            self.reset_index(index, true);
        } else if old.link != policy.link {
            self.notify_link(index);
        }
        Ok(())
    }

    /// `ip link set PF vf N trust on|off`.
    pub fn set_trust(&mut self, vf: VfId, trust: bool) -> Result<()> {
        self.update_policy(vf, |p| p.trust = trust)
    }

    /// `ip link set PF vf N spoofchk on|off`.
    pub fn set_spoofchk(&mut self, vf: VfId, spoofchk: bool) -> Result<()> {
        self.update_policy(vf, |p| p.spoofchk = spoofchk)
    }

    /// `ip link set PF vf N mac ADDR` (`None`: the zero MAC, which clears it).
    pub fn set_admin_mac(&mut self, vf: VfId, mac: Option<virtchnl::MacAddr>) -> Result<()> {
        self.update_policy(vf, |p| p.admin_mac = mac.filter(|m| !m.is_zero()))
    }

    /// `ip link set PF vf N vlan VID` (`None` or 0 removes it).
    pub fn set_port_vlan(&mut self, vf: VfId, vid: Option<u16>) -> Result<()> {
        self.update_policy(vf, |p| p.port_vlan = vid.filter(|&v| v != 0))
    }

    /// `ip link set PF vf N state auto|enable|disable`.
    pub fn set_link_state(&mut self, vf: VfId, link: LinkState) -> Result<()> {
        self.update_policy(vf, |p| p.link = link)
    }

    /// The PF's own link went up or down: every VF past reset hears of it (P32).
    pub fn set_pf_link(&mut self, up: bool) {
        self.link_up = up;
        for index in 0..self.vfs.len() {
            if self.vfs[index].phase != VfPhase::Resetting {
                self.notify_link(index);
            }
        }
    }

    /// Resets a VF as the host would; `notify` sends RESET_IMPENDING first (P11).
    pub fn reset_vf(&mut self, vf: VfId, notify: bool) -> Result<()> {
        let index = self.index_or_err(vf)?;
        self.reset_index(index, notify);
        Ok(())
    }

    /// Starts a reset and leaves the VF in [`VfPhase::Resetting`] until
    /// [`Pf::finish_reset`], so requests that arrive meanwhile can be tested.
    pub fn begin_reset(&mut self, vf: VfId, notify: bool) -> Result<()> {
        let index = self.index_or_err(vf)?;
        if notify {
            self.push_event(index, PfEvent::reset_impending());
        }
        self.vfs[index].begin_reset();
        info!(%vf, "VF reset started");
        Ok(())
    }

    /// Completes a reset started with [`Pf::begin_reset`] (or starts and completes one).
    pub fn finish_reset(&mut self, vf: VfId) -> Result<()> {
        let index = self.index_or_err(vf)?;
        self.vfs[index].rebuild();
        info!(%vf, "VF reset done");
        Ok(())
    }

    /// A PF reset: RESET_IMPENDING to every VF past reset, then all VFs reset (P12).
    pub fn pf_reset(&mut self) {
        for index in 0..self.vfs.len() {
            if self.vfs[index].phase != VfPhase::Resetting {
                self.push_event(index, PfEvent::reset_impending());
            }
        }
        for vf in &mut self.vfs {
            vf.begin_reset();
            vf.rebuild();
        }
        info!("PF reset");
    }

    /// Feeds the PF's state to `h`: equal fingerprints answer every later
    /// input alike. Counters, policies and the time a LEGACY MAC was added
    /// are left out, as are queued effects: drain [`Pf::poll_effect`] first.
    /// For an interleaving explorer's visited set.
    pub fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (self.vlan_mode, self.link_up, self.link_speed_mbps).hash(h);
        for vf in &self.vfs {
            vf.fingerprint(h);
        }
    }

    /// The next message for a VF. Call after every input until `None`, and
    /// deliver in this order: the order is the PF's.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// All VF tables and counters, deterministically ordered: what a snapshot shows.
    pub fn tables(&self) -> Tables {
        let env = self.env();
        Tables::new(
            self.vlan_mode,
            self.link_up,
            self.uplink,
            self.vfs.iter().map(|vf| VfTable::new(vf, &env)),
        )
    }

    fn env(&self) -> Env {
        Env {
            vlan_mode: self.vlan_mode,
            link_up: self.link_up,
            link_speed_mbps: self.link_speed_mbps,
            queue_pairs: self.queue_pairs,
            true_promisc: self.true_promisc,
        }
    }

    fn index(&self, vf: VfId) -> Option<usize> {
        let index = usize::from(vf.0);
        (index < self.vfs.len()).then_some(index)
    }

    fn index_or_err(&self, vf: VfId) -> Result<usize> {
        self.index(vf).ok_or(Error::UnknownVf {
            vf,
            num_vfs: self.num_vfs(),
        })
    }

    fn vf(&self, vf: VfId) -> Result<&Vf> {
        Ok(&self.vfs[self.index_or_err(vf)?])
    }

    fn update_policy(&mut self, vf: VfId, change: impl FnOnce(&mut VfPolicy)) -> Result<()> {
        let mut policy = self.policy(vf)?.clone();
        change(&mut policy);
        self.set_policy(vf, policy)
    }

    fn reset_index(&mut self, index: usize, notify: bool) {
        if notify {
            self.push_event(index, PfEvent::reset_impending());
        }
        let vf = &mut self.vfs[index];
        vf.begin_reset();
        vf.rebuild();
        info!(vf = index, notify, "VF reset");
    }

    fn notify_link(&mut self, index: usize) {
        let env = self.env();
        let vf = &mut self.vfs[index];
        if !vf.has_mailbox() {
            return;
        }
        let up = vf.link_up(&env);
        let speed = vf.link_speed_field(&env, up);
        vf.link_reported = Some(up);
        self.push_event(index, PfEvent::link(speed, up));
    }

    fn push_event(&mut self, index: usize, event: PfEvent) {
        let vf = VfId(u16::try_from(index).unwrap_or(u16::MAX));
        if !self.vfs[index].has_mailbox() {
            debug!(%vf, ?event, "no mailbox to send an event to (kernel role)");
            return;
        }
        self.vfs[index].counters.events += 1;
        debug!(%vf, ?event, "event");
        self.effects.push_back(Effect::Event { vf, event });
    }

    fn push_reply(&mut self, vf: VfId, cookie: u32, reply: Reply) {
        if let Some(state) = self.index(vf).map(|i| &mut self.vfs[i]) {
            if reply.status.is_success() {
                state.counters.replies_ok += 1;
            } else {
                state.counters.replies_err += 1;
            }
        }
        debug!(%vf, op = %reply.op, status = %reply.status, "reply");
        self.effects.push_back(Effect::Reply { vf, cookie, reply });
    }
}

fn check_policy(policy: &VfPolicy) -> Result<()> {
    if let Some(vid) = policy.port_vlan {
        if vid == 0 || vid >= 4095 {
            return Err(Error::BadPortVlan(vid));
        }
    }
    if let Some(mac) = policy.admin_mac {
        if !mac.is_valid_unicast() {
            return Err(Error::BadAdminMac(mac));
        }
    }
    Ok(())
}
