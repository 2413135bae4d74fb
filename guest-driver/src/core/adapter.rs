//! [`Adapter`]: the iavf-like VF state machine. See the [core docs](super).

use std::collections::{BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use tracing::{debug, error, info, warn};
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, EventKind, LinkSpeed, MacAddr, PfEvent, PfMessage,
    PromiscFlags, PromiscInfo, QueueSelect, Reply, ReplyBody, Request, VersionInfo, VfCapFlags,
    VirtchnlOp, VirtchnlStatus, VirtchnlVlan, VlanCaps, VlanFilterList, VlanFilterListV2,
    VlanFilterV2, VlanSupport,
};

use super::config::Config;
use super::flags::AqFlags;
use super::io::{Event, FilterOp, LogLevel, LogLine, NetdevEvent, Refused, ResetReason, Transmit};
use super::mac::{MacFilters, MacState};
use super::status::{
    Counters, MacFilterStatus, NetdevStatus, Outstanding, Phase, Status, VlanFilterStatus,
};
use super::vlan::{Notice, Vlan, VlanFilters, VlanState};

/// `VLAN_N_VID`: the V1 limit iavf applies (none, in practice).
const VLAN_N_VID: u16 = 4096;

/// The sans-IO VF adapter. See the [core docs](super) for the methods by
/// kind, the order in which to drain the polls, and the state machines.
#[derive(Debug, Clone)]
pub struct Adapter {
    config: Config,
    state: State,
    /// What the last negotiation granted (`adapter->vf_res`, `vlan_v2_caps`);
    /// kept through a reset until the next negotiation replaces it.
    negotiated: Option<Negotiated>,
    netdev: Netdev,
    /// `adapter->hw.mac.addr`: the VF's MAC as the adapter knows it.
    hw_mac: Option<MacAddr>,
    /// The MAC a pending user change replaced, to roll back to if the PF refuses.
    mac_before_change: Option<MacAddr>,
    macs: MacFilters,
    vlans: VlanFilters,
    /// `adapter->aq_required`.
    aq: AqFlags,
    /// `adapter->current_op`, with what the request carried.
    in_flight: Option<InFlight>,
    /// RESET_VF waits to be sent (it is never answered and never outstanding).
    send_reset_vf: bool,
    next_cookie: u32,
    /// `__IAVF_RUNNING`: the open path has run since the last down or reset.
    running: bool,
    link_up: bool,
    link_speed_mbps: Option<u32>,
    carrier: bool,
    queues_enabled: bool,
    /// `current_netdev_promisc_flags`: what the PF was last asked for.
    pf_promisc: PromiscFlags,
    events: VecDeque<Event>,
    counters: Counters,
}

/// The adapter's life cycle; each state holds only what is valid in it.
#[derive(Debug, Clone)]
enum State {
    /// Negotiating.
    Init(Init),
    /// Negotiated; the netdev is down or up (`running`).
    Ready,
    /// Reset in progress: nothing is sent until the device is back.
    WaitDevice {
        /// When to stop waiting and try anyway.
        deadline: Instant,
    },
    /// Gave up; only a device reset brings it back.
    Failed,
    /// The netdev is gone.
    Removed,
}

/// Negotiation in progress: iavf's init states, one step per request.
#[derive(Debug, Clone)]
struct Init {
    step: InitStep,
    /// Failed attempts so far.
    failures: u32,
    /// After a failure, nothing is sent before this.
    retry_at: Option<Instant>,
    /// The PF's VERSION answer.
    pf_version: Option<VersionInfo>,
    /// Built from the resources reply, completed by the VLAN V2 caps.
    negotiated: Option<Negotiated>,
    /// This negotiation follows a reset.
    after_reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum InitStep {
    /// `__IAVF_STARTUP`: send VERSION.
    Version,
    /// `__IAVF_INIT_GET_RESOURCES`: send GET_VF_RESOURCES.
    Resources,
    /// `__IAVF_INIT_EXTENDED_CAPS`: send GET_OFFLOAD_VLAN_V2_CAPS.
    VlanCaps,
}

impl Init {
    fn new(after_reset: bool) -> Self {
        Init {
            step: InitStep::Version,
            failures: 0,
            retry_at: None,
            pf_version: None,
            negotiated: None,
            after_reset,
        }
    }
}

/// What the PF granted.
#[derive(Debug, Clone, Hash)]
struct Negotiated {
    vsi_id: u16,
    caps: VfCapFlags,
    vlan_caps: Option<VlanCaps>,
    queue_mask: u32,
}

impl Negotiated {
    /// `VLAN_ALLOWED`: V1 opcodes (iavf prefers them when both were granted).
    fn vlan_v1(&self) -> bool {
        self.caps.contains(VfCapFlags::VLAN)
    }

    /// `VLAN_V2_ALLOWED`.
    fn vlan_v2(&self) -> bool {
        !self.vlan_v1() && self.caps.contains(VfCapFlags::VLAN_V2)
    }

    /// The side V2 filters go on (outer if the PF filters there) and what it supports.
    fn v2_side(&self) -> (bool, VlanSupport) {
        let support = self
            .vlan_caps
            .map(|c| c.filtering.filtering_support)
            .unwrap_or_default();
        if support.outer != VlanSupport::empty() {
            (true, support.outer)
        } else {
            (false, support.inner)
        }
    }

    /// `VLAN_FILTERING_ALLOWED`.
    fn filtering_allowed(&self) -> bool {
        self.vlan_v1() || (self.vlan_v2() && self.v2_side().1 != VlanSupport::empty())
    }

    fn supports_tpid(&self, tpid: u16) -> bool {
        if self.vlan_v1() {
            return tpid == Vlan::TPID_8021Q;
        }
        let side = self.v2_side().1;
        VlanSupport::ethertype_for_tpid(tpid).is_some_and(|e| side.contains(e))
    }

    /// iavf_get_max_vlans_allowed.
    fn max_vlans(&self) -> u16 {
        if self.vlan_v1() {
            VLAN_N_VID
        } else {
            self.vlan_caps.map_or(0, |c| c.filtering.max_filters)
        }
    }

    fn queues(&self) -> QueueSelect {
        QueueSelect {
            vsi_id: self.vsi_id,
            rx_queues: self.queue_mask,
            tx_queues: self.queue_mask,
        }
    }

    fn vlan_request(&self, add: bool, vlans: &[Vlan]) -> Request {
        if self.vlan_v1() {
            let list = VlanFilterList {
                vsi_id: self.vsi_id,
                vids: vlans.iter().map(|v| v.vid).collect(),
            };
            return if add {
                Request::AddVlan(list)
            } else {
                Request::DelVlan(list)
            };
        }
        let outer = self.v2_side().0;
        let filters = vlans
            .iter()
            .map(|v| VlanFilterV2::single(VirtchnlVlan::new(v.tpid, v.vid), outer))
            .collect();
        let list = VlanFilterListV2 {
            vport_id: self.vsi_id,
            filters,
        };
        if add {
            Request::AddVlanV2(list)
        } else {
            Request::DelVlanV2(list)
        }
    }
}

/// The request waiting for its reply (`current_op`).
#[derive(Debug, Clone)]
struct InFlight {
    op: VirtchnlOp,
    cookie: u32,
    deadline: Instant,
    /// The VLANs an ADD/DEL_VLAN(_V2) carried.
    vlans: Vec<Vlan>,
}

/// The netdev as the kernel last described it.
#[derive(Debug, Clone, Default, Hash)]
struct Netdev {
    up: bool,
    promisc: bool,
    allmulti: bool,
    enslaved: bool,
    /// The MAC the netdev has (what the shell was told or reported).
    mac: Option<MacAddr>,
    /// VLANs the kernel added and has not removed, as accepted here.
    vlans: BTreeSet<Vlan>,
}

impl Adapter {
    /// A new adapter, about to negotiate with the PF: the first
    /// [`Adapter::poll_transmit`] returns VERSION.
    pub fn new(config: Config) -> Self {
        let vlans = VlanFilters::new(config.vlan_fsm);
        Adapter {
            config,
            state: State::Init(Init::new(false)),
            negotiated: None,
            netdev: Netdev::default(),
            hw_mac: None,
            mac_before_change: None,
            macs: MacFilters::default(),
            vlans,
            aq: AqFlags::empty(),
            in_flight: None,
            send_reset_vf: false,
            next_cookie: 1,
            running: false,
            link_up: false,
            link_speed_mbps: None,
            carrier: false,
            queues_enabled: false,
            pf_promisc: PromiscFlags::empty(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    // ----- getters -------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the adapter is in its life.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Init(_) => Phase::Init,
            State::Ready if self.running => Phase::Running,
            State::Ready => Phase::Down,
            State::WaitDevice { .. } => Phase::Resetting,
            State::Failed => Phase::Failed,
            State::Removed => Phase::Removed,
        }
    }

    /// The VF's MAC, once the PF told it (or the fallback was taken).
    pub fn mac(&self) -> Option<MacAddr> {
        self.hw_mac
    }

    /// The netdev's carrier as the adapter set it.
    pub fn carrier(&self) -> bool {
        self.carrier
    }

    /// A VLAN filter's state, if the adapter has one.
    pub fn vlan_state(&self, vlan: Vlan) -> Option<VlanState> {
        self.vlans.get(vlan)
    }

    /// Every VLAN filter with its state, sorted.
    pub fn vlan_filters(&self) -> impl Iterator<Item = (Vlan, VlanState)> + '_ {
        self.vlans.iter()
    }

    /// VLANs the adapter believes the PF has programmed (state ACTIVE).
    pub fn active_vlans(&self) -> BTreeSet<Vlan> {
        self.vlans
            .iter()
            .filter(|(_, s)| *s == VlanState::Active)
            .map(|(v, _)| v)
            .collect()
    }

    /// Whether nothing is outstanding or pending: no request waits for a
    /// reply and the watchdog has nothing left to send.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.aq.is_empty() && !self.send_reset_vf
    }

    /// Feeds what decides the adapter's future behaviour to `h`: two
    /// adapters with equal fingerprints answer every later input alike.
    /// Cookies, counters, deadlines and the configuration are left out, so
    /// an interleaving explorer can tell equivalent states apart from merely
    /// different histories. Drain [`Adapter::poll_event`] first: queued
    /// events are not part of it.
    pub fn fingerprint<H: Hasher>(&self, h: &mut H) {
        match &self.state {
            State::Init(init) => {
                0u8.hash(h);
                init.step.hash(h);
                init.failures.hash(h);
                init.retry_at.is_some().hash(h);
                init.pf_version.hash(h);
                init.negotiated.hash(h);
                init.after_reset.hash(h);
            }
            State::Ready => 1u8.hash(h),
            State::WaitDevice { .. } => 2u8.hash(h),
            State::Failed => 3u8.hash(h),
            State::Removed => 4u8.hash(h),
        }
        self.negotiated.hash(h);
        self.netdev.hash(h);
        self.hw_mac.hash(h);
        self.mac_before_change.hash(h);
        for (mac, filter) in self.macs.iter() {
            (mac, filter.primary, filter.state as u8).hash(h);
        }
        self.vlans.fingerprint(h);
        self.aq.bits().hash(h);
        match &self.in_flight {
            Some(f) => (1u8, f.op, &f.vlans).hash(h),
            None => 0u8.hash(h),
        }
        (
            self.send_reset_vf,
            self.running,
            self.link_up,
            self.link_speed_mbps,
            self.carrier,
            self.queues_enabled,
            self.pf_promisc,
        )
            .hash(h);
    }

    /// Everything the adapter believes, for comparison with the PF tables.
    pub fn status(&self) -> Status {
        let negotiated = self.negotiated.as_ref();
        let vlan_ops = match negotiated {
            Some(n) if n.vlan_v1() => "v1",
            Some(n) if n.vlan_v2() => "v2",
            _ => "none",
        };
        Status {
            vlan_fsm: self.config.vlan_fsm,
            phase: self.phase(),
            netdev: NetdevStatus {
                up: self.netdev.up,
                promisc: self.netdev.promisc,
                allmulti: self.netdev.allmulti,
                enslaved: self.netdev.enslaved,
                vlans: self.netdev.vlans.iter().copied().collect(),
            },
            mac: self.hw_mac,
            caps: negotiated
                .map(|n| n.caps.names().collect())
                .unwrap_or_default(),
            vlan_ops,
            link_up: self.link_up,
            link_speed_mbps: self.link_speed_mbps,
            carrier: self.carrier,
            queues_enabled: self.queues_enabled,
            macs: self
                .macs
                .iter()
                .map(|(mac, f)| MacFilterStatus {
                    mac,
                    primary: f.primary,
                    state: f.state,
                })
                .collect(),
            vlans: self
                .vlans
                .iter()
                .map(|(v, state)| VlanFilterStatus {
                    tpid: v.tpid,
                    vid: v.vid,
                    state,
                })
                .collect(),
            pending: self.aq.names(),
            outstanding: self.in_flight.as_ref().map(|f| Outstanding {
                op: f.op,
                cookie: f.cookie,
            }),
            counters: self.counters.clone(),
        }
    }

    // ----- inputs: the netdev ------------------------------------------------

    /// A change to the netdev (an `ndo_*` call). Nothing is sent here: the
    /// change is recorded and the watchdog sends what it implies from the
    /// next [`Adapter::poll_transmit`] on.
    ///
    /// Fails as the `ndo_*` call would (a VLAN over the PF's limit, a bad
    /// MAC); the netdev shell should then undo the change in the kernel.
    pub fn handle_netdev(&mut self, event: NetdevEvent) -> Result<(), Refused> {
        if matches!(self.state, State::Removed) {
            return Err(Refused::Removed);
        }
        debug!(?event, "netdev event");
        match event {
            NetdevEvent::Up => self.set_up(true),
            NetdevEvent::Down => self.set_up(false),
            NetdevEvent::MacChanged(mac) => return self.set_mac(mac),
            NetdevEvent::VlanAdded(vlan) => return self.add_vlan(vlan),
            NetdevEvent::VlanRemoved(vlan) => self.del_vlan(vlan),
            NetdevEvent::RxModeChanged { promisc, allmulti } => {
                self.netdev.promisc = promisc;
                self.netdev.allmulti = allmulti;
                if matches!(self.state, State::Ready) {
                    self.aq.insert(AqFlags::CONFIGURE_PROMISC_MODE);
                }
            }
            NetdevEvent::Enslaved => {
                self.netdev.enslaved = true;
                self.log(LogLevel::Info, "enslaved to a master device".to_owned());
            }
            NetdevEvent::Released => {
                self.netdev.enslaved = false;
                self.log(LogLevel::Info, "released from its master device".to_owned());
            }
            NetdevEvent::NetnsMoved => {
                self.log(
                    LogLevel::Info,
                    "moved to another network namespace".to_owned(),
                );
                // The kernel closes the device on the way. Its VLAN uppers
                // stay registered (they remain in the old namespace, linked
                // across), so no filter goes: kill_vid comes only when an
                // upper is deleted, as its own event.
                self.set_up(false);
            }
            NetdevEvent::Removed => self.remove(),
        }
        Ok(())
    }

    fn set_up(&mut self, up: bool) {
        if self.netdev.up == up {
            return;
        }
        self.netdev.up = up;
        // Before negotiation finishes the change waits: finish_init opens.
        if !matches!(self.state, State::Ready) {
            return;
        }
        if up {
            self.open();
        } else if self.running {
            self.down();
        }
    }

    /// iavf_open: the primary MAC filter (re-read from the PF), legacy's
    /// filter restore, ENABLE_QUEUES, and the rx mode.
    fn open(&mut self) {
        self.running = true;
        if let Some(mac) = self.hw_mac {
            if self.macs.add(mac, true) {
                self.aq.insert(AqFlags::ADD_MAC_FILTER);
            }
        }
        let flags = self.vlans.on_up();
        self.aq.insert(flags);
        self.aq.insert(AqFlags::ENABLE_QUEUES);
        if self.promisc_wanted() != self.pf_promisc {
            self.aq.insert(AqFlags::CONFIGURE_PROMISC_MODE);
        }
        self.log(LogLevel::Info, "interface up".to_owned());
    }

    /// iavf_down: carrier off, the primary MAC filter removed, legacy's
    /// VLAN DISABLE, DISABLE_QUEUES. The outstanding request, unlike in
    /// iavf, is not cancelled: its reply is still wanted.
    fn down(&mut self) {
        self.running = false;
        self.set_carrier(false);
        if let Some(mac) = self.hw_mac {
            if self.macs.del_keeping_type(mac) {
                self.aq.insert(AqFlags::DEL_MAC_FILTER);
            }
        }
        let flags = self.vlans.on_down();
        self.aq.insert(flags);
        self.aq.remove(AqFlags::ENABLE_QUEUES);
        self.aq.insert(AqFlags::DISABLE_QUEUES);
        self.log(LogLevel::Info, "interface down".to_owned());
    }

    /// `ndo_set_mac_address` (iavf_set_mac, iavf_replace_primary_mac).
    fn set_mac(&mut self, mac: MacAddr) -> Result<(), Refused> {
        if !mac.is_valid_unicast() {
            return Err(Refused::InvalidMac { mac });
        }
        self.netdev.mac = Some(mac);
        if self.hw_mac == Some(mac) {
            return Ok(());
        }
        if !matches!(self.state, State::Ready) {
            return Err(Refused::NotReady);
        }
        let old = self.hw_mac;
        if let Some(old) = old {
            if self.macs.del(old) {
                self.aq.insert(AqFlags::DEL_MAC_FILTER);
            }
        }
        if self.macs.add(mac, true) {
            self.aq.insert(AqFlags::ADD_MAC_FILTER);
        }
        self.hw_mac = Some(mac);
        self.mac_before_change = old;
        Ok(())
    }

    /// `ndo_vlan_rx_add_vid` (iavf_vlan_rx_add_vid).
    fn add_vlan(&mut self, vlan: Vlan) -> Result<(), Refused> {
        if vlan.vid == 0 {
            return Ok(());
        }
        if vlan.vid >= VLAN_N_VID {
            return Err(Refused::BadVid { vid: vlan.vid });
        }
        let Some(negotiated) = &self.negotiated else {
            return Err(Refused::NotReady);
        };
        if !negotiated.filtering_allowed() {
            return Err(Refused::VlanFilteringNotAllowed);
        }
        if !negotiated.supports_tpid(vlan.tpid) {
            return Err(Refused::UnsupportedTpid { tpid: vlan.tpid });
        }
        let limit = negotiated.max_vlans();
        if self.vlans.get(vlan).is_none() && self.vlans.len() >= usize::from(limit) {
            self.log(
                LogLevel::Error,
                format!("max allowed VLAN filters {limit}; remove existing VLANs first"),
            );
            return Err(Refused::VlanLimit { limit });
        }
        self.netdev.vlans.insert(vlan);
        let flags = self.vlans.user_add(vlan);
        self.aq.insert(flags);
        Ok(())
    }

    /// `ndo_vlan_rx_kill_vid` (iavf_vlan_rx_kill_vid): never fails.
    fn del_vlan(&mut self, vlan: Vlan) {
        if vlan.vid == 0 {
            return;
        }
        self.netdev.vlans.remove(&vlan);
        let flags = self.vlans.user_del(vlan);
        self.aq.insert(flags);
    }

    /// iavf_remove: ask the PF to reset the VF, then stop.
    fn remove(&mut self) {
        self.log(LogLevel::Info, "removing the VF".to_owned());
        self.set_carrier(false);
        self.running = false;
        self.in_flight = None;
        self.aq = AqFlags::empty();
        self.send_reset_vf = true;
        self.state = State::Removed;
    }

    // ----- inputs: the transport and the PF --------------------------------

    /// The transport reports the device usable again after a reset (iavf:
    /// VFGEN_RSTAT reads VFACTIVE). Negotiation starts over. Ignored unless
    /// the adapter is resetting or has failed.
    pub fn handle_device_ready(&mut self, _now: Instant) {
        match self.state {
            State::WaitDevice { .. } | State::Failed => {
                info!("device ready after reset");
                self.state = State::Init(Init::new(true));
            }
            _ => debug!("device ready while not resetting; ignored"),
        }
    }

    /// One mailbox frame from the PF. Never fails: a frame that does not
    /// decode is counted and logged.
    pub fn handle_mailbox(&mut self, now: Instant, bytes: &[u8]) {
        match PfMessage::from_frame(bytes) {
            Ok((header, msg)) => self.handle_pf_message(now, header.cookie, msg),
            Err(err) => {
                self.counters.malformed += 1;
                self.log(
                    LogLevel::Warn,
                    format!("malformed mailbox message from the PF: {err}"),
                );
            }
        }
    }

    /// One decoded message from the PF; `cookie` is the frame's (0 for events).
    pub fn handle_pf_message(&mut self, now: Instant, cookie: u32, msg: PfMessage) {
        match msg {
            PfMessage::Event(event) => self.handle_event(now, event),
            PfMessage::Reply(reply) => self.handle_reply(now, cookie, reply),
        }
    }

    /// Timers: a reply overdue, a reset that never finished, an
    /// initialisation retry due. Call at [`Adapter::poll_timeout`] (calling
    /// early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = self.in_flight.as_ref().filter(|f| f.deadline <= now) {
            let op = f.op;
            self.in_flight = None;
            self.counters.timeouts += 1;
            self.log(
                LogLevel::Warn,
                format!("no reply from the PF to {op} in time"),
            );
            match self.state {
                State::Init(_) => self.init_failed(now, "request timed out"),
                State::Ready => self.begin_reset(now, ResetReason::ReplyTimeout { op }, true),
                _ => {}
            }
        }
        match &mut self.state {
            State::WaitDevice { deadline } if *deadline <= now => {
                self.state = State::Init(Init::new(true));
                self.log(
                    LogLevel::Warn,
                    "reset never finished; initialising anyway".to_owned(),
                );
            }
            State::Init(init) if init.retry_at.is_some_and(|t| t <= now) => {
                init.retry_at = None;
            }
            _ => {}
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The next request to send, if any: one watchdog step.
    ///
    /// While a request waits for its reply this returns `None` (one request
    /// in flight, as iavf), except for RESET_VF, which is never answered.
    /// Call after every input until it returns `None`, and send each request
    /// in order.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.send_reset_vf {
            self.send_reset_vf = false;
            return Some(self.transmit(now, Request::ResetVf, Vec::new(), false));
        }
        if self.in_flight.is_some() {
            return None;
        }
        let (request, vlans) = match &self.state {
            State::Init(init) if init.retry_at.is_none() => (self.init_request(init), Vec::new()),
            State::Ready => self.process_aq_command()?,
            _ => return None,
        };
        Some(self.transmit(now, request, vlans, true))
    }

    /// The next event for the netdev shell. Drain after every input and
    /// after [`Adapter::poll_transmit`].
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Adapter::handle_timeout`] is next due, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reply = self.in_flight.as_ref().map(|f| f.deadline);
        let state = match &self.state {
            State::WaitDevice { deadline } => Some(*deadline),
            State::Init(init) => init.retry_at,
            _ => None,
        };
        [reply, state].into_iter().flatten().min()
    }

    // ----- the watchdog ----------------------------------------------------

    fn init_request(&self, init: &Init) -> Request {
        match init.step {
            InitStep::Version => Request::Version(VersionInfo::V1_1),
            InitStep::Resources => Request::GetVfResources {
                caps: init
                    .pf_version
                    .is_none_or(VersionInfo::sends_caps)
                    .then_some(self.config.caps),
            },
            InitStep::VlanCaps => Request::GetOffloadVlanV2Caps,
        }
    }

    /// iavf_process_aq_command: the first pending flag, in iavf's order,
    /// that has something to send. Flags with nothing to send are cleared.
    fn process_aq_command(&mut self) -> Option<(Request, Vec<Vlan>)> {
        for (flag, _) in AqFlags::ORDER {
            if !self.aq.contains(flag) {
                continue;
            }
            if let Some(out) = self.build(flag) {
                return Some(out);
            }
            self.aq.remove(flag);
        }
        None
    }

    /// Builds the request for one flag and moves the filters it carries;
    /// clears the flag unless more remains for another message.
    fn build(&mut self, flag: AqFlags) -> Option<(Request, Vec<Vlan>)> {
        let negotiated = self.negotiated.clone()?;
        let vsi_id = negotiated.vsi_id;
        let request = if flag == AqFlags::DISABLE_QUEUES {
            self.aq.remove(flag);
            Request::DisableQueues(negotiated.queues())
        } else if flag == AqFlags::ENABLE_QUEUES {
            self.aq.remove(flag);
            Request::EnableQueues(negotiated.queues())
        } else if flag == AqFlags::ADD_MAC_FILTER || flag == AqFlags::DEL_MAC_FILTER {
            let add = flag == AqFlags::ADD_MAC_FILTER;
            let batch = if add {
                self.macs.take_add(EtherAddrList::MAX_PER_MESSAGE)
            } else {
                self.macs.take_del(EtherAddrList::MAX_PER_MESSAGE)
            };
            if batch.is_empty() {
                return None;
            }
            let more = self
                .macs
                .has(if add { MacState::Add } else { MacState::Remove });
            if !more {
                self.aq.remove(flag);
            }
            let list = EtherAddrList {
                vsi_id,
                addrs: batch
                    .into_iter()
                    .map(|(addr, primary)| EtherAddr {
                        addr,
                        kind: if primary {
                            EtherAddrType::Primary
                        } else {
                            EtherAddrType::Extra
                        },
                    })
                    .collect(),
            };
            if add {
                Request::AddEthAddr(list)
            } else {
                Request::DelEthAddr(list)
            }
        } else if flag == AqFlags::ADD_VLAN_FILTER || flag == AqFlags::DEL_VLAN_FILTER {
            let add = flag == AqFlags::ADD_VLAN_FILTER;
            let allowed = negotiated.filtering_allowed();
            let max = if negotiated.vlan_v1() {
                VlanFilterList::MAX_PER_MESSAGE
            } else {
                VlanFilterListV2::MAX_PER_MESSAGE
            };
            let batch = if add {
                if !allowed {
                    return None;
                }
                self.vlans.take_add(max)
            } else {
                self.vlans.take_del(max, allowed)
            };
            if batch.is_empty() {
                return None;
            }
            let more = if add {
                self.vlans.has_pending_add()
            } else {
                self.vlans.has_pending_del()
            };
            if !more {
                self.aq.remove(flag);
            }
            let request = negotiated.vlan_request(add, &batch);
            return Some((request, batch));
        } else if flag == AqFlags::CONFIGURE_PROMISC_MODE {
            self.aq.remove(flag);
            let flags = self.promisc_wanted();
            if flags == self.pf_promisc {
                return None;
            }
            self.pf_promisc = flags;
            Request::ConfigPromiscuousMode(PromiscInfo { vsi_id, flags })
        } else {
            return None;
        };
        Some((request, Vec::new()))
    }

    fn transmit(
        &mut self,
        now: Instant,
        request: Request,
        vlans: Vec<Vlan>,
        track: bool,
    ) -> Transmit {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1).max(1);
        let op = request.op();
        debug!(%op, cookie, ?request, "request");
        self.counters.requests_sent += 1;
        *self.counters.requests.entry(op.to_string()).or_default() += 1;
        if track {
            self.in_flight = Some(InFlight {
                op,
                cookie,
                deadline: now + self.config.reply_timeout,
                vlans,
            });
        }
        Transmit { cookie, request }
    }

    /// iavf_set_promiscuous's mapping of IFF_PROMISC / IFF_ALLMULTI.
    fn promisc_wanted(&self) -> PromiscFlags {
        if self.netdev.promisc {
            PromiscFlags::UNICAST | PromiscFlags::MULTICAST
        } else if self.netdev.allmulti {
            PromiscFlags::MULTICAST
        } else {
            PromiscFlags::empty()
        }
    }

    // ----- PF messages ---------------------------------------------------------

    fn handle_event(&mut self, now: Instant, event: PfEvent) {
        self.counters.events += 1;
        debug!(?event, "PF event");
        match event.kind {
            EventKind::LinkChange {
                link_speed,
                link_up,
            } => self.handle_link(link_speed, link_up),
            EventKind::ResetImpending => {
                self.log(
                    LogLevel::Info,
                    "reset indication received from the PF".to_owned(),
                );
                self.begin_reset(now, ResetReason::ResetImpending, false);
            }
            EventKind::PfDriverClose => {
                self.log(LogLevel::Warn, "the PF driver is closing".to_owned());
                self.begin_reset(now, ResetReason::PfDriverClose, false);
            }
            EventKind::Unknown(code) => {
                self.log(LogLevel::Warn, format!("unknown event {code} from the PF"));
            }
        }
    }

    /// VIRTCHNL_EVENT_LINK_CHANGE: a link-up is ignored unless the netdev is
    /// running with its queues enabled (another comes after ENABLE_QUEUES).
    fn handle_link(&mut self, link_speed: u32, up: bool) {
        let adv = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.caps.contains(VfCapFlags::ADV_LINK_SPEED));
        self.link_speed_mbps = if !up {
            None
        } else if adv {
            Some(link_speed)
        } else {
            legacy_speed_mbps(LinkSpeed::from(link_speed))
        };
        if self.link_up == up {
            return;
        }
        if up && !(matches!(self.state, State::Ready) && self.running && self.queues_enabled) {
            debug!("link up before the queues are enabled; ignored");
            return;
        }
        self.link_up = up;
        self.log(
            LogLevel::Info,
            format!("NIC link is {}", if up { "up" } else { "down" }),
        );
        self.set_carrier(up && self.queues_enabled);
    }

    fn handle_reply(&mut self, now: Instant, cookie: u32, reply: Reply) {
        *self
            .counters
            .replies
            .entry(reply.status.to_string())
            .or_default() += 1;
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.op == reply.op && f.cookie == cookie);
        let Some(sent) = self.in_flight.take_if(|_| matches) else {
            self.counters.replies_ignored += 1;
            let expected = self
                .in_flight
                .as_ref()
                .map_or("nothing".to_owned(), |f| f.op.to_string());
            // Replies to requests a reset made the adapter forget are expected.
            let level = match self.state {
                State::Ready | State::Init(_) => LogLevel::Warn,
                _ => LogLevel::Debug,
            };
            self.log(
                level,
                format!(
                    "expected response {expected} from the PF, received {} (cookie {cookie}); ignored",
                    reply.op
                ),
            );
            return;
        };
        let ok = reply.status.is_success();
        debug!(op = %reply.op, status = %reply.status, cookie, "reply");
        if !ok {
            self.log_error_reply(&reply);
        }
        match reply.op {
            VirtchnlOp::Version => self.on_version(now, ok, reply.body),
            VirtchnlOp::GetVfResources => self.on_resources(now, ok, reply.body),
            VirtchnlOp::GetOffloadVlanV2Caps => self.on_vlan_caps(now, ok, reply.body),
            VirtchnlOp::EnableQueues if ok => {
                self.queues_enabled = true;
                self.events.push_back(Event::Queues(true));
                if self.link_up && self.running {
                    self.set_carrier(true);
                }
            }
            VirtchnlOp::DisableQueues if ok => {
                self.queues_enabled = false;
                self.events.push_back(Event::Queues(false));
            }
            VirtchnlOp::AddEthAddr => self.on_mac_add_reply(ok),
            VirtchnlOp::AddVlan | VirtchnlOp::AddVlanV2 => {
                let v2 = reply.op == VirtchnlOp::AddVlanV2;
                let notices = self.vlans.on_add_reply(v2, ok, &sent.vlans);
                self.report(notices);
            }
            VirtchnlOp::DelVlan | VirtchnlOp::DelVlanV2 => {
                let notices = self.vlans.on_del_reply(ok, &sent.vlans);
                self.report(notices);
            }
            _ => {}
        }
        // Everything sent once negotiated is allowed by what was granted: a
        // PF that no longer supports it has reset the VF without notice.
        if reply.status == VirtchnlStatus::ErrNotSupported && matches!(self.state, State::Ready) {
            let reason = ResetReason::RequestRefused { op: reply.op };
            self.begin_reset(now, reason, true);
        }
    }

    /// The iavf error messages, per opcode.
    fn log_error_reply(&mut self, reply: &Reply) {
        let what = match reply.op {
            VirtchnlOp::AddVlan | VirtchnlOp::AddVlanV2 => "failed to add VLAN filter",
            VirtchnlOp::DelVlan | VirtchnlOp::DelVlanV2 => "failed to delete VLAN filter",
            VirtchnlOp::AddEthAddr => "failed to add MAC filter",
            VirtchnlOp::DelEthAddr => "failed to delete MAC filter",
            op => {
                let line = format!("PF returned error {} to our request {op}", reply.status);
                return self.log(LogLevel::Warn, line);
            }
        };
        self.log(LogLevel::Warn, format!("{what}, error {}", reply.status));
    }

    fn report(&mut self, notices: Vec<Notice>) {
        for notice in notices {
            match notice {
                Notice::Committed(vlan) => debug!(%vlan, "VLAN filter committed"),
                Notice::Removed(vlan) => debug!(%vlan, "VLAN filter removed"),
                Notice::Rejected(vlan, op) => {
                    let what = match op {
                        FilterOp::Add => "add",
                        FilterOp::Remove => "removal",
                    };
                    self.log(
                        LogLevel::Warn,
                        format!("the PF refused the {what} of VLAN {vlan}"),
                    );
                    self.events.push_back(Event::VlanRejected { vlan, op });
                }
            }
        }
    }

    fn on_version(&mut self, now: Instant, ok: bool, body: ReplyBody) {
        let ReplyBody::Version(v) = body else {
            return self.init_failed(now, "no version in the VERSION reply");
        };
        if !ok {
            return self.init_failed(now, "VERSION refused");
        }
        if v.major > VersionInfo::MAJOR
            || (v.major == VersionInfo::MAJOR && v.minor > VersionInfo::MINOR)
        {
            let why = format!("PF API version {}.{} is newer than 1.1", v.major, v.minor);
            return self.init_failed(now, &why);
        }
        if let State::Init(init) = &mut self.state {
            init.pf_version = Some(v);
            init.step = InitStep::Resources;
        }
    }

    fn on_resources(&mut self, now: Instant, ok: bool, body: ReplyBody) {
        let res = match body {
            ReplyBody::VfResource(res) if ok => res,
            _ => return self.init_failed(now, "GET_VF_RESOURCES refused"),
        };
        let Some(vsi) = res.vsi_res.first().copied() else {
            return self.init_failed(now, "no VSI in the resources reply");
        };
        let pairs = u32::from(res.num_queue_pairs.min(vsi.num_queue_pairs).clamp(1, 16));
        let negotiated = Negotiated {
            vsi_id: vsi.vsi_id,
            caps: res.vf_cap_flags,
            vlan_caps: None,
            queue_mask: (1u32 << pairs) - 1,
        };
        if vsi.default_mac_addr.is_valid_unicast() {
            self.hw_mac = Some(vsi.default_mac_addr);
        } else if self.hw_mac.is_none() {
            self.hw_mac = Some(self.config.fallback_mac);
        }
        let wants_caps = negotiated.vlan_v2();
        if let State::Init(init) = &mut self.state {
            init.negotiated = Some(negotiated);
            if wants_caps {
                init.step = InitStep::VlanCaps;
                return;
            }
        }
        self.finish_init();
    }

    fn on_vlan_caps(&mut self, now: Instant, ok: bool, body: ReplyBody) {
        let caps = match body {
            ReplyBody::VlanCaps(caps) if ok => caps,
            _ => return self.init_failed(now, "GET_OFFLOAD_VLAN_V2_CAPS refused"),
        };
        if let State::Init(Init {
            negotiated: Some(n),
            ..
        }) = &mut self.state
        {
            n.vlan_caps = Some(caps);
        }
        self.finish_init();
    }

    fn init_failed(&mut self, now: Instant, why: &str) {
        self.counters.init_failures += 1;
        let max = self.config.init_max_failures;
        let retry_at = now + self.config.init_retry;
        let State::Init(init) = &mut self.state else {
            return;
        };
        init.failures += 1;
        if init.failures >= max {
            let failures = init.failures;
            self.state = State::Failed;
            self.events.push_back(Event::Failed);
            return self.log(
                LogLevel::Error,
                format!("initialisation failed {failures} times ({why}); giving up"),
            );
        }
        init.step = InitStep::Version;
        init.retry_at = Some(retry_at);
        init.negotiated = None;
        self.log(
            LogLevel::Warn,
            format!("initialisation failed ({why}); retrying"),
        );
    }

    /// The end of negotiation: iavf_process_config and the re-add block of
    /// the resources / VLAN V2 caps handler, then iavf_open if the netdev is up.
    fn finish_init(&mut self) {
        let State::Init(init) = std::mem::replace(&mut self.state, State::Ready) else {
            return;
        };
        let Some(negotiated) = init.negotiated else {
            error!("negotiation finished without resources");
            self.state = State::Failed;
            return;
        };
        let filtering = negotiated.filtering_allowed();
        self.negotiated = Some(negotiated);
        if filtering && self.vlans.on_reconfigure(&self.netdev.vlans) {
            self.aq.insert(AqFlags::ADD_VLAN_FILTER);
        }
        if self.macs.on_reconfigure() {
            self.aq.insert(AqFlags::ADD_MAC_FILTER);
        }
        if let Some(mac) = self.hw_mac {
            if self.netdev.mac != Some(mac) {
                self.netdev.mac = Some(mac);
                self.events.push_back(Event::MacAddress(mac));
            }
        }
        self.events.push_back(Event::Ready);
        if init.after_reset {
            self.events.push_back(Event::ResetDone);
            self.log(LogLevel::Info, "reset done".to_owned());
        }
        if self.netdev.up {
            self.open();
        }
    }

    fn on_mac_add_reply(&mut self, ok: bool) {
        let before = self.mac_before_change;
        let refused = self.macs.on_add_reply(ok, before);
        if ok {
            self.mac_before_change = None;
            return;
        }
        for mac in &refused {
            self.events.push_back(Event::MacRejected { mac: *mac });
        }
        let primary_refused = self.hw_mac.is_some_and(|m| refused.contains(&m));
        if let (true, Some(old)) = (primary_refused, self.mac_before_change.take()) {
            self.hw_mac = Some(old);
            self.netdev.mac = Some(old);
            self.events.push_back(Event::MacAddress(old));
        }
    }

    // ----- reset -----------------------------------------------------------

    /// The first half of iavf_reset_task: stop, forget the outstanding
    /// request and pending work, and wait for the device. `request` sends
    /// RESET_VF first (a reset the VF asks for).
    fn begin_reset(&mut self, now: Instant, reason: ResetReason, request: bool) {
        if matches!(self.state, State::Removed | State::WaitDevice { .. }) {
            return;
        }
        self.counters.resets += 1;
        info!(?reason, "reset");
        self.events.push_back(Event::ResetStarted(reason));
        self.set_carrier(false);
        self.link_up = false;
        self.link_speed_mbps = None;
        if self.queues_enabled {
            self.queues_enabled = false;
            self.events.push_back(Event::Queues(false));
        }
        self.in_flight = None;
        self.aq = AqFlags::empty();
        self.running = false;
        self.pf_promisc = PromiscFlags::empty();
        self.macs.on_reset();
        self.vlans.on_reset();
        if let Some(old) = self.mac_before_change.take() {
            // A MAC change the PF never confirmed: the resources reply decides.
            debug!(%old, "MAC change interrupted by reset");
        }
        self.send_reset_vf = request;
        self.state = State::WaitDevice {
            deadline: now + self.config.reset_timeout,
        };
    }

    fn set_carrier(&mut self, on: bool) {
        if self.carrier != on {
            self.carrier = on;
            self.events.push_back(Event::Carrier(on));
        }
    }

    fn log(&mut self, level: LogLevel, message: String) {
        match level {
            LogLevel::Debug => debug!("{message}"),
            LogLevel::Info => info!("{message}"),
            LogLevel::Warn => warn!("{message}"),
            LogLevel::Error => error!("{message}"),
        }
        self.events
            .push_back(Event::Log(LogLine { level, message }));
    }
}

/// Mbps for the legacy `enum virtchnl_link_speed`.
fn legacy_speed_mbps(speed: LinkSpeed) -> Option<u32> {
    Some(match speed {
        LinkSpeed::Speed100Mb => 100,
        LinkSpeed::Speed1Gb => 1_000,
        LinkSpeed::Speed2_5Gb => 2_500,
        LinkSpeed::Speed5Gb => 5_000,
        LinkSpeed::Speed10Gb => 10_000,
        LinkSpeed::Speed20Gb => 20_000,
        LinkSpeed::Speed25Gb => 25_000,
        LinkSpeed::Speed40Gb => 40_000,
        LinkSpeed::Unknown(_) => return None,
    })
}
