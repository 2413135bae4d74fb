//! The explored system: one VF adapter core and one PF model, the guest
//! kernel's intent, and a mailbox holding at most one request.
//!
//! Nothing happens on its own. Every change is an [`Input`]: the kernel
//! changing the netdev, one watchdog pass of the driver (it sends at most one
//! request, as iavf does), the PF answering the request in the mailbox
//! (normally, or with a refusal), or the PF raising an event. Time stands
//! still, so no timeout ever fires: every reply comes from an input.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde::Serialize;
use vfrig_device::pf::{LinkState, Pf, PfConfig, VfId, VfPolicy, VfTable};
use vfrig_guest_driver::core::{
    Adapter, Config, Event, FilterOp, NetdevEvent, Phase, Vlan, VlanFsm, VlanState,
};
use virtchnl::{
    MacAddr, PfMessage, Reply, Request, VirtchnlOp, VirtchnlStatus, VlanFilterList,
    VlanFilterListV2,
};

/// The VF under test.
pub const VF: VfId = VfId(0);

/// The MACs a `mac` input switches between (locally administered).
pub const MACS: [MacAddr; 2] = [
    MacAddr([0x02, 0x00, 0x00, 0x00, 0xe0, 0x01]),
    MacAddr([0x02, 0x00, 0x00, 0x00, 0xe0, 0x02]),
];

/// Which VLAN opcodes the PF grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VlanOps {
    /// VLAN_V2 (ADD/DEL_VLAN_V2), what ice grants today.
    V2,
    /// Only VLAN (ADD/DEL_VLAN), an older PF (`vlan_v2 = false` in a scenario).
    V1,
}

impl VlanOps {
    /// The PF flavour in words, as reports and scenario descriptions say it.
    pub fn describe(self) -> &'static str {
        match self {
            VlanOps::V2 => "VLAN V2",
            VlanOps::V1 => "VLAN V1-only",
        }
    }
}

impl fmt::Display for VlanOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanOps::V2 => "v2",
            VlanOps::V1 => "v1",
        })
    }
}

/// The kinds of input the scheduler may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Alphabet {
    /// Add and delete VLANs (uppers of the VF).
    pub vlans: bool,
    /// Interface down and up.
    pub down_up: bool,
    /// Move the VF to another network namespace, its uppers deleted on the way.
    pub netns: bool,
    /// Change the VF's MAC.
    pub mac: bool,
    /// PF link events.
    pub link: bool,
    /// PF-initiated VF resets.
    pub reset: bool,
}

impl Default for Alphabet {
    /// What the iavf report's races need: VLANs, down/up, netns moves.
    fn default() -> Self {
        Alphabet {
            vlans: true,
            down_up: true,
            netns: true,
            mac: false,
            link: false,
            reset: false,
        }
    }
}

impl Alphabet {
    /// The names `--alphabet` accepts.
    pub const NAMES: [&'static str; 6] = ["vlans", "down-up", "netns", "mac", "link", "reset"];

    /// Parses a comma-separated list of [`Alphabet::NAMES`].
    pub fn parse(text: &str) -> Result<Alphabet, String> {
        let mut a = Alphabet {
            vlans: false,
            down_up: false,
            netns: false,
            mac: false,
            link: false,
            reset: false,
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "vlans" => a.vlans = true,
                "down-up" => a.down_up = true,
                "netns" => a.netns = true,
                "mac" => a.mac = true,
                "link" => a.link = true,
                "reset" => a.reset = true,
                other => {
                    return Err(format!(
                        "unknown input kind `{other}`; use a comma-separated list of {}",
                        Alphabet::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(a)
    }
}

/// What one exploration is about: the machine, the PF and the inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    /// The driver's VLAN state machine.
    pub fsm: VlanFsm,
    /// The VLAN opcodes the PF grants.
    pub vlan_ops: VlanOps,
    /// The VLAN ids user operations use.
    pub vids: Vec<u16>,
    /// The kinds of input.
    pub alphabet: Alphabet,
    /// Requests the PF may refuse, and the status it refuses them with.
    #[serde(serialize_with = "ser_reject")]
    pub reject: BTreeMap<VirtchnlOp, VirtchnlStatus>,
}

fn ser_reject<S: serde::Serializer>(
    reject: &BTreeMap<VirtchnlOp, VirtchnlStatus>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(
        reject
            .iter()
            .map(|(op, st)| (op.to_string(), st.to_string())),
    )
}

impl Model {
    /// The default model for a machine and a PF: VLANs 10 and 20, the
    /// default alphabet, and the PF refusing VLAN adds and deletes with
    /// ERR_PARAM, as ice does when a filter operation fails.
    pub fn new(fsm: VlanFsm, vlan_ops: VlanOps) -> Model {
        Model {
            fsm,
            vlan_ops,
            vids: vec![10, 20],
            alphabet: Alphabet::default(),
            reject: default_rejects(),
        }
    }
}

/// The VLAN filter requests, refused with ERR_PARAM (ice's answer to a
/// failed VLAN filter operation).
pub fn default_rejects() -> BTreeMap<VirtchnlOp, VirtchnlStatus> {
    [
        VirtchnlOp::AddVlan,
        VirtchnlOp::DelVlan,
        VirtchnlOp::AddVlanV2,
        VirtchnlOp::DelVlanV2,
    ]
    .into_iter()
    .map(|op| (op, VirtchnlStatus::ErrParam))
    .collect()
}

/// One scheduling choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "input", content = "arg")]
pub enum Input {
    /// The kernel adds VLAN `vid` on the VF (an upper is created).
    AddVlan(u16),
    /// The kernel deletes VLAN `vid` (its upper is deleted).
    DelVlan(u16),
    /// The interface goes down.
    Down,
    /// The interface comes up.
    Up,
    /// The VF moves to another network namespace; its uppers are deleted
    /// first (implicit kill_vid for each), and the move closes it.
    NetnsMove,
    /// The VF's MAC is set to [`MACS`]`[i]`.
    SetMac(u8),
    /// One watchdog pass: the driver sends at most one request.
    Watchdog,
    /// The PF handles the request in the mailbox and answers.
    Answer,
    /// The PF refuses the request in the mailbox.
    Refuse,
    /// The PF takes the VF's link down.
    LinkDown,
    /// The PF brings the VF's link back.
    LinkUp,
    /// The PF resets the VF (RESET_IMPENDING first).
    VfReset,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::AddVlan(v) => write!(f, "kernel: add VLAN {v}"),
            Input::DelVlan(v) => write!(f, "kernel: delete VLAN {v}"),
            Input::Down => f.write_str("kernel: link down"),
            Input::Up => f.write_str("kernel: link up"),
            Input::NetnsMove => f.write_str("kernel: move to another netns (uppers deleted)"),
            Input::SetMac(i) => write!(f, "kernel: set MAC {}", MACS[usize::from(*i) % 2]),
            Input::Watchdog => f.write_str("driver: watchdog pass"),
            Input::Answer => f.write_str("PF: answer"),
            Input::Refuse => f.write_str("PF: refuse"),
            Input::LinkDown => f.write_str("PF: link down event"),
            Input::LinkUp => f.write_str("PF: link up event"),
            Input::VfReset => f.write_str("PF: VF reset"),
        }
    }
}

/// The request in the mailbox, sent and not yet answered.
#[derive(Debug, Clone)]
pub struct Mailbox {
    /// The frame as the driver sent it.
    pub frame: Vec<u8>,
    /// Its opcode.
    pub op: VirtchnlOp,
    /// Its cookie.
    pub cookie: u32,
    /// The VLAN ids it carries (VLAN requests only).
    pub vids: Vec<u16>,
}

/// How a VLAN left the kernel, for naming what went wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    /// The user deleted its upper.
    User {
        /// The interface went down afterwards.
        down_after: bool,
    },
    /// Its upper was deleted by a netns move.
    Netns,
}

/// The guest kernel's side: what it asked of the driver.
#[derive(Debug, Clone, Default, Hash)]
pub struct Kernel {
    /// The interface is administratively up.
    pub up: bool,
    /// The VLANs of the interface's uppers.
    pub vlans: BTreeSet<u16>,
    /// The interface moved to another namespace.
    pub moved: bool,
    /// Index into [`MACS`] of the last MAC set, if any.
    pub mac: Option<u8>,
}

/// What the driver told the kernel and what happened, as the invariants
/// need it.
#[derive(Debug, Clone, Default, Hash)]
pub struct Notes {
    /// VLANs whose add the PF refused, as the driver reported
    /// (`VlanRejected`), since the kernel last touched them.
    pub refused_add: BTreeSet<u16>,
    /// VLANs whose removal the PF refused, as the driver reported.
    pub refused_del: BTreeSet<u16>,
    /// VLANs the PF has had since the kernel added them: missing one of
    /// these later, while traffic flows, is an anti-spoof drop window.
    pub established: BTreeSet<u16>,
    /// VLANs the PF refused to delete (the mailbox's view, reported or not).
    pub del_refused_by_pf: BTreeSet<u16>,
    /// How each VLAN last left the kernel.
    pub removed: BTreeMap<u16, Removal>,
    /// VLANs that went through a down since the kernel added them.
    pub cycled: BTreeSet<u16>,
    /// The PF holds the VF's link down.
    pub link_forced_down: bool,
}

/// Why an input could not be applied in a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotEnabled {
    /// The input is not in the model's alphabet or makes no sense here.
    #[error("{0} is not possible here")]
    Impossible(Input),
    /// The input was tried and changed nothing (a watchdog pass with nothing to send).
    #[error("{0} changes nothing here")]
    NoOp(Input),
}

/// What an input did, for the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// The request sent by a watchdog pass, or answered by the PF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The status the PF answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The whole explored system.
#[derive(Debug, Clone)]
pub struct World {
    now: Instant,
    fsm: VlanFsm,
    /// The driver core.
    pub adapter: Adapter,
    /// The PF model.
    pub pf: Pf,
    /// The request the driver sent and the PF has not answered.
    pub mailbox: Option<Mailbox>,
    /// The kernel's intent.
    pub kernel: Kernel,
    /// What the invariants need to know about the past.
    pub notes: Notes,
}

/// Builds the PF configuration the model runs against: one VF, the default
/// policy, VLAN V2 granted or not.
pub fn pf_config(vlan_ops: VlanOps) -> PfConfig {
    PfConfig {
        policies: vec![VfPolicy {
            vlan_v2: vlan_ops == VlanOps::V2,
            ..VfPolicy::default()
        }],
        ..PfConfig::default()
    }
}

impl World {
    /// The starting state: the driver has negotiated with the PF, the
    /// interface is up with its queues enabled, and there are no VLANs: what
    /// `ip link set vf0 up` and a settle give in the VM.
    pub fn start(model: &Model) -> Result<World, String> {
        let pf = Pf::new(pf_config(model.vlan_ops)).map_err(|e| e.to_string())?;
        let mut w = World {
            now: Instant::now(),
            fsm: model.fsm,
            adapter: Adapter::new(Config::with_fsm(model.fsm)),
            pf,
            mailbox: None,
            kernel: Kernel::default(),
            notes: Notes::default(),
        };
        w.run_to_rest(model)?;
        w.kernel_event(NetdevEvent::Up)
            .map_err(|e| format!("the driver refused up: {e}"))?;
        w.kernel.up = true;
        w.run_to_rest(model)?;
        if w.adapter.phase() != Phase::Running {
            return Err(format!(
                "the driver did not reach running: {:?}",
                w.adapter.phase()
            ));
        }
        Ok(w)
    }

    /// Sends and answers everything until the driver is at rest (watchdog
    /// passes and answers, nothing refused). Returns the inputs applied.
    pub fn run_to_rest(&mut self, model: &Model) -> Result<Vec<Input>, String> {
        let mut applied = Vec::new();
        for _ in 0..64 {
            if self.is_quiescent() {
                return Ok(applied);
            }
            let input = if self.mailbox.is_some() {
                Input::Answer
            } else {
                Input::Watchdog
            };
            self.apply_in(model, input).map_err(|e| e.to_string())?;
            applied.push(input);
        }
        Err("the driver and the PF did not come to rest".into())
    }

    /// At rest: nothing in the mailbox, nothing pending in the driver, and
    /// the driver configured (down or running).
    pub fn is_quiescent(&self) -> bool {
        self.mailbox.is_none()
            && self.adapter.is_idle()
            && matches!(self.adapter.phase(), Phase::Down | Phase::Running)
    }

    /// The VLAN state machine.
    pub fn fsm(&self) -> VlanFsm {
        self.fsm
    }

    /// The PF's table of the VF.
    pub fn table(&self) -> VfTable {
        self.pf
            .tables()
            .vf(VF.0)
            .cloned()
            .unwrap_or_else(|| unreachable!("the PF was built with one VF"))
    }

    /// A hash of everything that decides the future (and the invariants'
    /// verdicts): equal fingerprints need not be explored twice.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.adapter.fingerprint(&mut h);
        self.pf.fingerprint(&mut h);
        match &self.mailbox {
            Some(m) => (1u8, m.op, &m.vids).hash(&mut h),
            None => 0u8.hash(&mut h),
        }
        self.kernel.hash(&mut h);
        self.notes.hash(&mut h);
        h.finish()
    }

    /// The inputs worth trying here, in a fixed order. Some may still turn
    /// out to change nothing ([`NotEnabled::NoOp`]).
    pub fn candidates(&self, model: &Model) -> Vec<Input> {
        let mut out = Vec::new();
        let a = &model.alphabet;
        let ready = matches!(self.adapter.phase(), Phase::Down | Phase::Running);
        if a.vlans && ready {
            for &vid in &model.vids {
                if self.kernel.vlans.contains(&vid) {
                    out.push(Input::DelVlan(vid));
                } else {
                    out.push(Input::AddVlan(vid));
                }
            }
        }
        if a.down_up && ready {
            out.push(if self.kernel.up {
                Input::Down
            } else {
                Input::Up
            });
        }
        if a.netns && ready && !self.kernel.moved {
            out.push(Input::NetnsMove);
        }
        if a.mac && ready {
            let next = self.kernel.mac.map_or(0, |i| (i + 1) % 2);
            out.push(Input::SetMac(next));
        }
        if self.mailbox.is_none() {
            out.push(Input::Watchdog);
        }
        if let Some(m) = &self.mailbox {
            out.push(Input::Answer);
            if model.reject.contains_key(&m.op) {
                out.push(Input::Refuse);
            }
        }
        if a.link {
            out.push(if self.notes.link_forced_down {
                Input::LinkUp
            } else {
                Input::LinkDown
            });
        }
        if a.reset && self.mailbox.is_none() {
            out.push(Input::VfReset);
        }
        out
    }

    /// Applies `input`. The state is unspecified after an error: apply to a
    /// clone when the input may not be enabled.
    pub fn apply_in(&mut self, model: &Model, input: Input) -> Result<Effect, NotEnabled> {
        if !self.candidates(model).contains(&input) {
            return Err(NotEnabled::Impossible(input));
        }
        let status = model.reject.get(
            &self
                .mailbox
                .as_ref()
                .map_or(VirtchnlOp::Unspecified, |m| m.op),
        );
        match (input, status) {
            (Input::Refuse, Some(status)) => self.refuse(*status),
            _ => self.apply(input),
        }
    }

    fn apply(&mut self, input: Input) -> Result<Effect, NotEnabled> {
        let mut effect = Effect {
            op: None,
            status: None,
        };
        match input {
            Input::AddVlan(vid) => {
                self.kernel_event(NetdevEvent::VlanAdded(Vlan::dot1q(vid)))
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.kernel.vlans.insert(vid);
                self.notes.refused_add.remove(&vid);
                self.notes.refused_del.remove(&vid);
                self.notes.removed.remove(&vid);
                self.notes.cycled.remove(&vid);
            }
            Input::DelVlan(vid) => {
                self.kernel_event(NetdevEvent::VlanRemoved(Vlan::dot1q(vid)))
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.forget_vlan(vid, Removal::User { down_after: false });
            }
            Input::Down => {
                self.kernel_event(NetdevEvent::Down)
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.went_down();
            }
            Input::Up => {
                self.kernel_event(NetdevEvent::Up)
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.kernel.up = true;
            }
            Input::NetnsMove => {
                for vid in self.kernel.vlans.clone() {
                    self.kernel_event(NetdevEvent::VlanRemoved(Vlan::dot1q(vid)))
                        .map_err(|_| NotEnabled::Impossible(input))?;
                    self.forget_vlan(vid, Removal::Netns);
                }
                self.kernel_event(NetdevEvent::NetnsMoved)
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.went_down();
                self.kernel.moved = true;
            }
            Input::SetMac(i) => {
                self.kernel_event(NetdevEvent::MacChanged(MACS[usize::from(i) % 2]))
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.kernel.mac = Some(i);
            }
            Input::Watchdog => {
                let Some(mut tx) = self.adapter.poll_transmit(self.now) else {
                    return Err(NotEnabled::NoOp(input));
                };
                if tx.request == Request::ResetVf {
                    // Never answered: the PF resets the VF at once.
                    self.pf.handle_mailbox(self.now, VF, &tx.to_frame());
                    self.deliver_effects();
                    match self.adapter.poll_transmit(self.now) {
                        Some(next) => tx = next,
                        None => {
                            effect.op = Some(VirtchnlOp::ResetVf.to_string());
                            self.drain();
                            return Ok(effect);
                        }
                    }
                }
                effect.op = Some(tx.op().to_string());
                self.mailbox = Some(Mailbox {
                    frame: tx.to_frame(),
                    op: tx.op(),
                    cookie: tx.cookie,
                    vids: vlan_ids(&tx.request),
                });
                self.drain();
            }
            Input::Answer => {
                let m = self.mailbox.take().ok_or(NotEnabled::Impossible(input))?;
                effect.op = Some(m.op.to_string());
                self.pf.handle_mailbox(self.now, VF, &m.frame);
                self.deliver_effects();
            }
            Input::Refuse => return Err(NotEnabled::Impossible(input)),
            Input::LinkDown | Input::LinkUp => {
                let down = input == Input::LinkDown;
                let link = if down {
                    LinkState::Disable
                } else {
                    LinkState::Auto
                };
                self.pf
                    .set_link_state(VF, link)
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.notes.link_forced_down = down;
                self.deliver_effects();
            }
            Input::VfReset => {
                self.pf
                    .reset_vf(VF, true)
                    .map_err(|_| NotEnabled::Impossible(input))?;
                self.notes.refused_add.clear();
                self.notes.refused_del.clear();
                self.notes.established.clear();
                self.deliver_effects();
            }
        }
        self.note_established();
        Ok(effect)
    }

    /// The PF refuses the request in the mailbox with `status`, without
    /// looking at it (what a refusing fault rule does in the daemon).
    fn refuse(&mut self, status: VirtchnlStatus) -> Result<Effect, NotEnabled> {
        let m = self
            .mailbox
            .take()
            .ok_or(NotEnabled::Impossible(Input::Refuse))?;
        if matches!(m.op, VirtchnlOp::DelVlan | VirtchnlOp::DelVlanV2) {
            self.notes.del_refused_by_pf.extend(m.vids.iter().copied());
        }
        let frame = PfMessage::Reply(Reply::empty(m.op, status)).to_frame(m.cookie);
        self.adapter.handle_mailbox(self.now, &frame);
        self.drain();
        self.note_established();
        Ok(Effect {
            op: Some(m.op.to_string()),
            status: Some(status.to_string()),
        })
    }

    fn forget_vlan(&mut self, vid: u16, how: Removal) {
        self.kernel.vlans.remove(&vid);
        self.notes.refused_add.remove(&vid);
        self.notes.refused_del.remove(&vid);
        self.notes.established.remove(&vid);
        self.notes.cycled.remove(&vid);
        self.notes.removed.insert(vid, how);
    }

    fn went_down(&mut self) {
        self.kernel.up = false;
        for removal in self.notes.removed.values_mut() {
            if let Removal::User { down_after } = removal {
                *down_after = true;
            }
        }
        self.notes.cycled.extend(self.kernel.vlans.iter().copied());
    }

    fn kernel_event(
        &mut self,
        event: NetdevEvent,
    ) -> Result<(), vfrig_guest_driver::core::Refused> {
        let result = self.adapter.handle_netdev(event);
        self.drain();
        result
    }

    /// Hands every frame the PF queued to the driver, in order.
    fn deliver_effects(&mut self) {
        while let Some(effect) = self.pf.poll_effect() {
            if effect.vf() == VF {
                self.adapter.handle_mailbox(self.now, &effect.to_frame());
                self.drain();
            }
        }
        self.drain();
    }

    /// Acts on the driver's events as the netdev shell does.
    fn drain(&mut self) {
        while let Some(event) = self.adapter.poll_event() {
            match event {
                Event::VlanRejected { vlan, op } => {
                    let set = match op {
                        FilterOp::Add => &mut self.notes.refused_add,
                        FilterOp::Remove => &mut self.notes.refused_del,
                    };
                    set.insert(vlan.vid);
                }
                // The shell reports the device back at once (the mailbox
                // stays usable across a VF reset).
                Event::ResetStarted(_) => self.adapter.handle_device_ready(self.now),
                _ => {}
            }
        }
    }

    /// Marks kernel VLANs the PF has, and the driver holds ACTIVE, as
    /// established. (A VLAN the kernel re-adds while its DEL is in flight is
    /// still on the PF, but only until the DEL lands: not established.)
    fn note_established(&mut self) {
        let table = self.table();
        let driver = self.driver_vlans();
        for vid in &self.kernel.vlans {
            if table.vlans.contains(vid) && driver.get(vid) == Some(&VlanState::Active) {
                self.notes.established.insert(*vid);
            }
        }
    }

    /// The driver's VLAN filters by id (802.1Q only: the model uses no other TPID).
    pub fn driver_vlans(&self) -> BTreeMap<u16, VlanState> {
        self.adapter
            .vlan_filters()
            .filter(|(v, _)| v.tpid == Vlan::TPID_8021Q)
            .map(|(v, s)| (v.vid, s))
            .collect()
    }

    /// One line for the trace: both cores and the kernel.
    pub fn describe(&self) -> String {
        let table = self.table();
        let status = self.adapter.status();
        let vlans: Vec<String> = self
            .driver_vlans()
            .iter()
            .map(|(vid, s)| format!("{vid}:{s}"))
            .collect();
        let outstanding = status
            .outstanding
            .as_ref()
            .map(|o| o.op.to_string())
            .unwrap_or_else(|| "-".into());
        format!(
            "kernel {} vlans {:?}{} | driver {:?} [{}] pending {:?} out {} | PF vlans {:?} queues {}{}",
            if self.kernel.up { "up" } else { "down" },
            self.kernel.vlans,
            if self.kernel.moved { " (moved)" } else { "" },
            status.phase,
            vlans.join(" "),
            status.pending,
            outstanding,
            table.vlans,
            if table.queues.rx != 0 { "on" } else { "off" },
            if table.antispoof.vlan {
                " vlan-antispoof"
            } else {
                ""
            },
        )
    }
}

fn vlan_ids(request: &Request) -> Vec<u16> {
    match request {
        Request::AddVlan(VlanFilterList { vids, .. })
        | Request::DelVlan(VlanFilterList { vids, .. }) => vids.clone(),
        Request::AddVlanV2(VlanFilterListV2 { filters, .. })
        | Request::DelVlanV2(VlanFilterListV2 { filters, .. }) => filters
            .iter()
            .filter_map(|f| {
                [f.outer, f.inner]
                    .into_iter()
                    .find(|t| t.tci != 0)
                    .map(|t| t.tci & 0x0fff)
            })
            .collect(),
        _ => Vec::new(),
    }
}
