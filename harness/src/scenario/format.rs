//! Scenario files: TOML in, a checked [`Scenario`] out.
//!
//! The format is documented in `harness/scenarios/README.md`. Parsing is
//! pure: [`parse`] takes the file's text and its name for messages, and
//! every mistake, from a TOML syntax error to a step with two actions or a
//! fault on a VF the PF does not have, comes back as a [`ParseError`] with
//! the file, line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use vfrig_images::Flavour;
use virtchnl::{MacAddr, VirtchnlOp, VirtchnlStatus};

/// The driver's VLAN filter state machine (`vfrig-driver run --vlan-fsm`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VlanFsm {
    /// The machine with the iavf fixes.
    #[default]
    Fixed,
    /// The machine the iavf bug report describes, flaws kept.
    Legacy,
}

impl VlanFsm {
    /// The name `vfrig-driver` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            VlanFsm::Fixed => "fixed",
            VlanFsm::Legacy => "legacy",
        }
    }
}

impl fmt::Display for VlanFsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VlanFsm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(VlanFsm::Fixed),
            "legacy" => Ok(VlanFsm::Legacy),
            other => Err(format!(
                "unknown VLAN state machine `{other}`; expected fixed or legacy"
            )),
        }
    }
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name (snapshots are named after it).
    pub name: String,
    /// What it shows, for people.
    pub description: String,
    /// The file it came from.
    pub path: PathBuf,
    /// VFs the PF has.
    pub vfs: u16,
    /// Which kernel flavour to boot.
    pub flavour: Flavour,
    /// The driver's VLAN state machine.
    pub vlan_fsm: VlanFsm,
    /// VFs whose driver enslaves its netdev to a master on appearance
    /// (`driver.enslave`), by VF.
    pub enslave: BTreeMap<u16, String>,
    /// Who binds each VF that vfrig's driver does not (`[roles]`).
    pub roles: BTreeMap<u16, Role>,
    /// A net_failover pair: a standby VF and an emulated primary.
    pub failover: Option<Failover>,
    /// A kernel mutant to boot with instead of the stock module.
    pub mutant: Option<String>,
    /// The PF's initial policy per VF (only the keys the file gave).
    pub pf: BTreeMap<u16, PolicyPatch>,
    /// When set, the scenario must fail with a message containing this.
    pub expect_fail: Option<String>,
    /// Per VLAN state machine, the symptom the scenario must fail with when
    /// run with that machine; with any other machine it must pass. Empty
    /// unless the file has `expect_fail_on` (then `expect_fail` is `None`).
    pub expect_fail_on: BTreeMap<VlanFsm, String>,
    /// VFs plugged when the VM boots: all but those the first hot-plug step
    /// of which is `hotplug`.
    pub vfs_at_boot: Vec<u16>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The symptom the scenario must fail with when its driver runs `fsm`,
    /// or `None` when it must pass: `expect_fail_on`'s entry for `fsm` if
    /// the file has `expect_fail_on`, else `expect_fail`.
    pub fn expected_failure(&self, fsm: VlanFsm) -> Option<&str> {
        if self.expect_fail_on.is_empty() {
            self.expect_fail.as_deref()
        } else {
            self.expect_fail_on.get(&fsm).map(String::as_str)
        }
    }

    /// The VLAN state machines the scenario is meant to run with: its own
    /// (`driver.vlan_fsm`) first, then every other one `expect_fail_on`
    /// names.
    pub fn machines(&self) -> Vec<VlanFsm> {
        let mut out = vec![self.vlan_fsm];
        out.extend(
            self.expect_fail_on
                .keys()
                .copied()
                .filter(|f| *f != self.vlan_fsm),
        );
        out
    }
}

/// Who binds a VF in the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// vfrig's driver (`vfrig-driver run`), the default.
    #[default]
    Driver,
    /// The guest kernel's virtio_net; no mailbox, no rig driver.
    Kernel,
}

/// A net_failover pair (`[failover]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    /// The standby VF: bound by the kernel's virtio_net, `failover=on`.
    pub standby: u16,
    /// QEMU's model of the primary (`e1000e`).
    pub primary: String,
}

/// The device models a failover primary may be: an emulated PCI NIC whose
/// driver the generic kernel loads at boot.
pub const PRIMARY_MODELS: [&str; 1] = ["e1000e"];

/// The PF policy keys a scenario may set for a VF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    /// `trust on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    /// `spoofchk on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spoofchk: Option<bool>,
    /// MAC filter limit of an untrusted VF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_macs: Option<u16>,
    /// VLAN filter limit of an untrusted VF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_vlans: Option<u16>,
    /// An administratively set MAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_mac: Option<MacAddr>,
    /// A port VLAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_vlan: Option<u16>,
    /// false: the PF offers only the V1 VLAN opcodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_v2: Option<bool>,
}

/// Where a step is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step: an action and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The action.
    pub action: Action,
    /// Its position in the file.
    pub pos: Pos,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run a shell command in the guest.
    Guest {
        /// The command.
        cmd: String,
        /// A non-zero exit does not fail the scenario.
        may_fail: bool,
        /// Time limit in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// Start a shell command in the guest and go on.
    Background {
        /// The command.
        cmd: String,
        /// Its name, for `stop`.
        id: String,
    },
    /// Stop a background command.
    Stop {
        /// Its name.
        id: String,
    },
    /// Run the inner steps `times` times.
    Repeat {
        /// How often.
        times: u32,
        /// The steps.
        steps: Vec<Step>,
    },
    /// Start guest commands together and wait for all.
    Parallel {
        /// The commands.
        cmds: Vec<String>,
        /// Non-zero exits do not fail the scenario.
        may_fail: bool,
    },
    /// Install a PF fault rule.
    Fault(Fault),
    /// Release what the PF holds.
    Release {
        /// For this VF, or every VF.
        vf: Option<u16>,
        /// Refuse what is held with this status (its kernel name,
        /// `ERR_PARAM`) instead of handing it to the PF.
        status: Option<String>,
        /// How long to wait for something to be held first, in ms.
        timeout_ms: Option<u64>,
    },
    /// A PF event for a VF.
    PfEvent {
        /// The VF.
        vf: u16,
        /// `link_down`, `link_up`, `link_auto` or `reset`.
        kind: PfEventKind,
    },
    /// Plug a VF into the VM through QMP and start its driver.
    Hotplug {
        /// The VF.
        vf: u16,
    },
    /// Unplug a VF through QMP.
    Unplug {
        /// The VF.
        vf: u16,
    },
    /// Unplug (`device_del`) or plug (`device_add`) the failover primary
    /// through QMP; a plug waits until the guest has its netdev.
    Primary {
        /// Plug (true) or unplug.
        plug: bool,
    },
    /// Wait until the PF, the drivers and the guest's links are quiet.
    Settle {
        /// Time limit in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// Assert on the PF table of a VF.
    Expect(Expect),
    /// The kernel's intent, the driver's view and the PF table agree.
    Consistent,
    /// An insta snapshot of the PF tables and the drivers' filter states.
    Snapshot {
        /// Its label.
        label: String,
    },
    /// Start recording what userspace sees, through the guest agent.
    Record(Recorder),
    /// Assert on counts of the recorded link events.
    ExpectLinks(ExpectLinks),
    /// Assert on what the uevent observer saw.
    ExpectUevents(ExpectUevents),
    /// Read the guest's interface counters and the PF's traffic counters
    /// and keep them under a label.
    Sample {
        /// The label.
        label: String,
    },
    /// Counters that must have grown since a sample.
    ExpectGrew(ExpectGrew),
    /// Switch the watchdog of a VF's driver to manual or back to auto
    /// (`vfrig-driver watchdog --vf N manual|auto`).
    Watchdog {
        /// The VF.
        vf: u16,
        /// The mode.
        mode: WatchdogMode,
    },
    /// One watchdog pass of a VF's driver in manual mode
    /// (`vfrig-driver watchdog --vf N step`).
    WatchdogStep {
        /// The VF.
        vf: u16,
        /// What the pass must send, if the scenario says.
        expect: Option<PassSends>,
    },
}

/// Who runs a VF driver's watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogMode {
    /// The driver's loop, every turn (the default).
    Auto,
    /// The scenario: one pass per `watchdog = { vf = N }` step.
    Manual,
}

impl WatchdogMode {
    /// The name `vfrig-driver watchdog` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogMode::Auto => "auto",
            WatchdogMode::Manual => "manual",
        }
    }
}

/// What a watchdog pass must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassSends {
    /// Nothing (`expect = "none"`).
    Nothing,
    /// A request with this opcode, by its kernel name (`ADD_VLAN_V2`).
    Op(String),
}

impl PassSends {
    /// What a pass sent, from `vfrig-driver watchdog step`'s `sent`.
    pub fn from_sent(sent: Option<&str>) -> PassSends {
        sent.map_or(PassSends::Nothing, |op| PassSends::Op(op.to_owned()))
    }
}

impl fmt::Display for PassSends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassSends::Nothing => f.write_str("nothing"),
            PassSends::Op(op) => f.write_str(op),
        }
    }
}

/// What a `record` step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorder {
    /// rtnetlink link events in every namespace (what `ip monitor` sees).
    Links,
    /// Raw kernel uevents of net devices, each followed by a look at sysfs
    /// (what a udev-less program like cloud-init sees).
    Uevents,
}

/// Assertions on the net `add` uevents seen since `record = "uevents"`;
/// counts left out are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectUevents {
    /// Only adds of this interface (default: every net add).
    #[serde(default)]
    pub ifname: Option<String>,
    /// How many adds.
    #[serde(default)]
    pub adds: Option<u64>,
    /// At least this many adds had no master at the observer's first look.
    #[serde(default)]
    pub without_master_at_least: Option<u64>,
    /// Exactly this many adds had no master at the first look.
    #[serde(default)]
    pub without_master: Option<u64>,
    /// How many never got a master within the observer's 100 ms.
    #[serde(default)]
    pub never_enslaved: Option<u64>,
}

/// Counters that must have grown since a `sample`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectGrew {
    /// The sample's label.
    pub since: String,
    /// Counter names: `IF.STAT` for a guest interface in the root
    /// namespace (`bond0.tx_dropped`, any file of its `statistics/`), and
    /// `pf.vfN.COUNTER` for the PF's traffic counters of a VF
    /// (`pf.vf0.tx_frames`, `pf.vf1.drops.no_filter_match`).
    pub counters: Vec<String>,
}

/// Assertions on the link events recorded since `record = "links"`; counts
/// left out are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectLinks {
    /// The interface name.
    pub ifname: String,
    /// How often it appeared (a new link after none or after its deletion).
    #[serde(default)]
    pub appeared: Option<u64>,
    /// How often it was deleted.
    #[serde(default)]
    pub removed: Option<u64>,
    /// How often it appeared without a master already set.
    #[serde(default)]
    pub appeared_without_master: Option<u64>,
}

impl Action {
    /// A one-line description, for progress output.
    pub fn summary(&self) -> String {
        let first_line = |cmd: &str| {
            let lines: Vec<&str> = cmd.trim().lines().map(str::trim).collect();
            lines.join("; ")
        };
        match self {
            Action::Guest { cmd, .. } => format!("guest: {}", first_line(cmd)),
            Action::Background { cmd, id } => format!("background {id}: {}", first_line(cmd)),
            Action::Stop { id } => format!("stop {id}"),
            Action::Repeat { times, steps } => format!("repeat {times} x {} steps", steps.len()),
            Action::Parallel { cmds, .. } => format!("parallel: {} commands", cmds.len()),
            Action::Fault(f) => format!(
                "fault: {} {} on vf{}",
                f.action.as_str(),
                f.op.as_deref().unwrap_or("any request"),
                f.vf.map_or("*".to_owned(), |v| v.to_string())
            ),
            Action::Release { vf, status, .. } => format!(
                "{} what the PF holds for vf{}",
                status
                    .as_deref()
                    .map_or("release".to_owned(), |s| format!("refuse with {s}")),
                vf.map_or("*".to_owned(), |v| v.to_string())
            ),
            Action::PfEvent { vf, kind } => format!("PF event {} on vf{vf}", kind.as_str()),
            Action::Hotplug { vf } => format!("hot-plug vf{vf}"),
            Action::Unplug { vf } => format!("unplug vf{vf}"),
            Action::Primary { plug: true } => "plug the failover primary".into(),
            Action::Primary { plug: false } => "unplug the failover primary".into(),
            Action::Settle { .. } => "settle".into(),
            Action::Expect(e) => format!("expect on vf{}", e.vf),
            Action::Consistent => "consistent: kernel, driver and PF agree".into(),
            Action::Snapshot { label } => format!("snapshot {label}"),
            Action::Record(Recorder::Links) => "record link events".into(),
            Action::Record(Recorder::Uevents) => "record net uevents".into(),
            Action::ExpectLinks(e) => format!("expect link events of {}", e.ifname),
            Action::ExpectUevents(e) => format!(
                "expect net uevents of {}",
                e.ifname.as_deref().unwrap_or("every interface")
            ),
            Action::Sample { label } => format!("sample counters as `{label}`"),
            Action::ExpectGrew(e) => {
                format!("expect {} grown since `{}`", e.counters.join(", "), e.since)
            }
            Action::Watchdog { vf, mode } => format!("watchdog of vf{vf}: {}", mode.as_str()),
            Action::WatchdogStep { vf, expect } => format!(
                "one watchdog pass of vf{vf}{}",
                expect
                    .as_ref()
                    .map(|e| format!(", which must send {e}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The step's key in the file, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            Action::Guest { .. } => "guest",
            Action::Background { .. } => "background",
            Action::Stop { .. } => "stop",
            Action::Repeat { .. } => "repeat",
            Action::Parallel { .. } => "parallel",
            Action::Fault(_) => "fault",
            Action::Release { .. } => "release",
            Action::PfEvent { .. } => "pf_event",
            Action::Hotplug { .. } => "hotplug",
            Action::Unplug { .. } => "unplug",
            Action::Primary { .. } => "primary",
            Action::Settle { .. } => "settle",
            Action::Expect(_) => "expect",
            Action::Consistent => "consistent",
            Action::Snapshot { .. } => "snapshot",
            Action::Record(_) => "record",
            Action::ExpectLinks(_) => "expect_links",
            Action::ExpectUevents(_) => "expect_uevents",
            Action::Sample { .. } => "sample",
            Action::ExpectGrew(_) => "expect_grew",
            Action::Watchdog { .. } | Action::WatchdogStep { .. } => "watchdog",
        }
    }
}

/// A PF fault rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The VF, or every VF.
    #[serde(default)]
    pub vf: Option<u16>,
    /// The opcode (`"DEL_VLAN_V2"`), or every opcode.
    #[serde(default)]
    pub op: Option<String>,
    /// What the PF does.
    pub action: FaultAction,
    /// The reply status of a `reject` (`"ERR_PARAM"` when left out).
    #[serde(default)]
    pub status: Option<String>,
    /// The delay of a `delay`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// How many matching requests it applies to (default 1).
    #[serde(default)]
    pub count: Option<u32>,
}

impl Fault {
    /// The control protocol's `fault` command for this rule.
    pub fn command(&self) -> serde_json::Value {
        let mut cmd = serde_json::json!({"cmd": "fault", "action": self.action.as_str()});
        let obj = cmd.as_object_mut().expect("an object");
        if let Some(vf) = self.vf {
            obj.insert("vf".into(), vf.into());
        }
        if let Some(op) = &self.op {
            obj.insert("op".into(), op.clone().into());
        }
        if let Some(status) = &self.status {
            obj.insert("status".into(), status.clone().into());
        }
        if let Some(ms) = self.delay_ms {
            obj.insert("delay_ms".into(), ms.into());
        }
        obj.insert("count".into(), self.count.unwrap_or(1).into());
        cmd
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Refuse, with a status.
    Reject,
    /// Lose the request.
    Drop,
    /// Answer later.
    Delay,
    /// Hold until released.
    Hold,
    /// Answer after the next message to the VF.
    Reorder,
}

impl FaultAction {
    fn as_str(self) -> &'static str {
        match self {
            FaultAction::Reject => "reject",
            FaultAction::Drop => "drop",
            FaultAction::Delay => "delay",
            FaultAction::Hold => "hold",
            FaultAction::Reorder => "reorder",
        }
    }
}

/// A PF event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PfEventKind {
    /// The host forces the VF's link down.
    LinkDown,
    /// The host forces it up.
    LinkUp,
    /// The VF's link follows the PF's again.
    LinkAuto,
    /// The host resets the VF.
    Reset,
}

impl PfEventKind {
    /// The control protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PfEventKind::LinkDown => "link_down",
            PfEventKind::LinkUp => "link_up",
            PfEventKind::LinkAuto => "link_auto",
            PfEventKind::Reset => "reset",
        }
    }
}

/// Assertions on one VF's PF table; fields left out are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The VF.
    pub vf: u16,
    /// Its 802.1Q VLAN filters, in any order.
    #[serde(default)]
    pub vlans: Option<Vec<u16>>,
    /// Its MAC filters (broadcast left out), in any order.
    #[serde(default)]
    pub macs: Option<Vec<MacAddr>>,
    /// Unicast promiscuous mode.
    #[serde(default)]
    pub promisc: Option<bool>,
    /// Multicast promiscuous mode.
    #[serde(default)]
    pub allmulti: Option<bool>,
    /// Whether its queues are enabled.
    #[serde(default)]
    pub queues_enabled: Option<bool>,
    /// Drop counters by name (`anti_spoof_vlan`, ...).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// How many requests with each opcode the VF has sent the PF since the
    /// scenario started (`DEL_VLAN_V2 = 2`).
    #[serde(default)]
    pub requests: BTreeMap<String, u64>,
    /// How many DEL_VLAN or DEL_VLAN_V2 requests since the scenario started
    /// named each VLAN id (`vlan_dels = { 100 = 1 }`): "removed exactly once".
    #[serde(default)]
    pub vlan_dels: BTreeMap<String, u64>,
}

/// The drop counter names `expect.drops` accepts.
pub const DROP_COUNTERS: [&str; 7] = [
    "anti_spoof_mac",
    "anti_spoof_vlan",
    "malformed",
    "tx_queues_disabled",
    "no_filter_match",
    "rx_queues_disabled",
    "no_rx_buffer",
];

/// A scenario file is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {message}", file.display(), pos.line, pos.column)]
pub struct ParseError {
    /// The file.
    pub file: PathBuf,
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

// ----- the file as written -------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    vfs: Option<Spanned<u16>>,
    #[serde(default)]
    vms: Option<Spanned<u16>>,
    #[serde(default)]
    flavour: Option<Spanned<Flavour>>,
    #[serde(default)]
    driver: RawDriver,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, Role>,
    #[serde(default)]
    failover: Option<Spanned<RawFailover>>,
    #[serde(default)]
    mutant: Option<Spanned<String>>,
    #[serde(default)]
    pf: BTreeMap<Spanned<String>, PolicyPatch>,
    #[serde(default)]
    expect_fail: Option<String>,
    #[serde(default)]
    expect_fail_on: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriver {
    #[serde(default)]
    vlan_fsm: VlanFsm,
    #[serde(default)]
    enslave: BTreeMap<Spanned<String>, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    standby: u16,
    primary: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    guest: Option<String>,
    background: Option<String>,
    stop: Option<String>,
    repeat: Option<u32>,
    parallel: Option<Vec<String>>,
    fault: Option<Fault>,
    release: Option<RawRelease>,
    pf_event: Option<RawPfEvent>,
    hotplug: Option<RawVf>,
    unplug: Option<RawVf>,
    settle: Option<bool>,
    expect: Option<Expect>,
    consistent: Option<bool>,
    snapshot: Option<String>,
    record: Option<String>,
    expect_links: Option<ExpectLinks>,
    primary: Option<String>,
    expect_uevents: Option<ExpectUevents>,
    sample: Option<String>,
    expect_grew: Option<ExpectGrew>,
    watchdog: Option<RawWatchdog>,
    // Modifiers.
    may_fail: Option<bool>,
    vm: Option<u16>,
    id: Option<String>,
    steps: Option<Vec<Spanned<RawStep>>>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    #[serde(default)]
    vf: Option<u16>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    vf: u16,
    #[serde(default)]
    mode: Option<WatchdogMode>,
    #[serde(default)]
    expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPfEvent {
    vf: u16,
    kind: PfEventKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVf {
    vf: u16,
}

// ----- parsing --------------------------------------------------------------

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|err| ParseError {
        file: path.to_owned(),
        pos: Pos { line: 1, column: 1 },
        message: format!("cannot read the scenario file: {err}"),
    })?;
    parse(&text, path)
}

/// Parses a scenario file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ParseError> {
    let p = Parser { text, path };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let span = err.span().unwrap_or(0..0);
        p.error(&span, err.message().trim_end().to_owned())
    })?;
    p.scenario(raw)
}

struct Parser<'a> {
    text: &'a str,
    path: &'a Path,
}

/// State carried through the steps while checking them.
#[derive(Default)]
struct Check {
    backgrounds: BTreeSet<String>,
    labels: BTreeSet<String>,
    /// Per VF, whether its first hot-plug step plugs it.
    first_plug: BTreeMap<u16, bool>,
    /// Recorders started by `record` steps before.
    recording: BTreeSet<&'static str>,
    /// Sample labels taken before.
    samples: BTreeSet<String>,
    /// The scenario has a failover primary.
    has_primary: bool,
    /// VFs the guest kernel binds (no vfrig driver, no watchdog).
    kernel_vfs: BTreeSet<u16>,
    /// VFs whose driver's watchdog an earlier step made manual.
    manual: BTreeSet<u16>,
}

impl Parser<'_> {
    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.path.to_owned(),
            pos: self.pos(span.start),
            message: message.into(),
        }
    }

    fn scenario(&self, raw: RawFile) -> Result<Scenario, ParseError> {
        let name_span = raw.name.span();
        let name = raw.name.into_inner();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.error(
                &name_span,
                format!(
                    "name `{name}` must be letters, digits, `-` and `_` (it names snapshot files)"
                ),
            ));
        }
        let vfs = match raw.vfs {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 64 => {
                return Err(self.error(&v.span(), "vfs must be between 1 and 64"))
            }
            Some(v) => v.into_inner(),
            None => 1,
        };
        if let Some(vms) = raw.vms {
            if *vms.get_ref() != 1 {
                return Err(self.error(
                    &vms.span(),
                    "only vms = 1 is supported: the runner boots one VM per scenario",
                ));
            }
        }
        let mut pf = BTreeMap::new();
        for (key, policy) in raw.pf {
            pf.insert(self.vf_key(&key, "pf.", vfs)?, policy);
        }
        let mut roles = BTreeMap::new();
        for (key, role) in raw.roles {
            let vf = self.vf_key(&key, "roles.", vfs)?;
            if role != Role::Driver {
                roles.insert(vf, role);
            }
        }
        let flavour_span = raw.flavour.as_ref().map_or(0..0, Spanned::span);
        let flavour = raw.flavour.map(Spanned::into_inner).unwrap_or_default();
        let failover = match raw.failover {
            None => None,
            Some(f) => {
                let span = f.span();
                let f = f.into_inner();
                if f.standby >= vfs {
                    return Err(self.error(
                        &span,
                        format!(
                            "failover standby vf{} is a VF the PF does not have (vfs = {vfs})",
                            f.standby
                        ),
                    ));
                }
                if !PRIMARY_MODELS.contains(&f.primary.as_str()) {
                    return Err(self.error(
                        &span,
                        format!(
                            "failover primary `{}` is not supported; use one of: {}",
                            f.primary,
                            PRIMARY_MODELS.join(", ")
                        ),
                    ));
                }
                if flavour != Flavour::Generic {
                    return Err(self.error(
                        &span,
                        "a failover primary needs `flavour = \"generic\"`: the cloud kernel \
                         has no driver for QEMU's emulated NICs",
                    ));
                }
                // The guest kernel's virtio_net binds the standby.
                roles.insert(f.standby, Role::Kernel);
                Some(Failover {
                    standby: f.standby,
                    primary: f.primary,
                })
            }
        };
        let mut enslave = BTreeMap::new();
        for (key, master) in raw.driver.enslave {
            let vf = self.vf_key(&key, "driver.enslave.", vfs)?;
            if roles.contains_key(&vf) {
                return Err(self.error(
                    &key.span(),
                    format!("driver.enslave names vf{vf}, which vfrig's driver does not bind"),
                ));
            }
            if master.is_empty() || master.len() > 15 || master.contains(['/', ' ']) {
                return Err(self.error(&key.span(), format!("`{master}` is not an interface name")));
            }
            enslave.insert(vf, master);
        }
        let mutant = match raw.mutant {
            None => None,
            Some(m) => {
                let span = m.span();
                let name = m.into_inner();
                if vfrig_images::mutant::find(&name).is_none() {
                    return Err(self.error(
                        &span,
                        format!(
                            "unknown mutant `{name}`; known mutants: {}",
                            vfrig_images::mutant::names().join(", ")
                        ),
                    ));
                }
                if flavour != Flavour::Cloud {
                    return Err(self.error(
                        &flavour_span,
                        "mutants are built against the cloud kernel's headers; \
                         leave `flavour` out",
                    ));
                }
                Some(name)
            }
        };
        let mut check = Check {
            has_primary: failover.is_some(),
            kernel_vfs: roles.keys().copied().collect(),
            ..Check::default()
        };
        let steps = self.steps(raw.step, vfs, &mut check)?;
        if let Some(symptom) = &raw.expect_fail {
            if symptom.trim().is_empty() {
                return Err(self.error(&(0..0), "expect_fail must name the symptom"));
            }
        }
        let expect_fail_on = match raw.expect_fail_on {
            None => BTreeMap::new(),
            Some(table) => self.expect_fail_on(table, raw.expect_fail.is_some())?,
        };
        let vfs_at_boot = (0..vfs)
            .filter(|vf| check.first_plug.get(vf) != Some(&true))
            .collect();
        Ok(Scenario {
            name,
            description: raw.description.trim().to_owned(),
            path: self.path.to_owned(),
            vfs,
            flavour,
            vlan_fsm: raw.driver.vlan_fsm,
            enslave,
            roles,
            failover,
            mutant,
            pf,
            expect_fail: raw.expect_fail,
            expect_fail_on,
            vfs_at_boot,
            steps,
        })
    }

    /// `expect_fail_on = { legacy = "symptom" }`, checked.
    fn expect_fail_on(
        &self,
        table: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
        has_expect_fail: bool,
    ) -> Result<BTreeMap<VlanFsm, String>, ParseError> {
        let span = table.span();
        if has_expect_fail {
            return Err(self.error(
                &span,
                "expect_fail and expect_fail_on do not go together: expect_fail is the \
                 symptom whatever the machine, expect_fail_on the symptom per machine (the \
                 scenario must pass with the machines it does not name)",
            ));
        }
        let table = table.into_inner();
        if table.is_empty() {
            return Err(self.error(
                &span,
                "expect_fail_on names no VLAN state machine; write \
                 expect_fail_on = { legacy = \"symptom\" }",
            ));
        }
        let mut out = BTreeMap::new();
        for (key, symptom) in table {
            let fsm: VlanFsm = key
                .get_ref()
                .parse()
                .map_err(|e: String| self.error(&key.span(), format!("expect_fail_on: {e}")))?;
            if symptom.get_ref().trim().is_empty() {
                return Err(self.error(
                    &symptom.span(),
                    format!("expect_fail_on.{fsm} must name the symptom"),
                ));
            }
            out.insert(fsm, symptom.into_inner());
        }
        Ok(out)
    }

    /// A `vfN` key of the table `table` (`pf.`), checked against `vfs`.
    fn vf_key(&self, key: &Spanned<String>, table: &str, vfs: u16) -> Result<u16, ParseError> {
        let vf = key
            .get_ref()
            .strip_prefix("vf")
            .and_then(|n| n.parse::<u16>().ok())
            .ok_or_else(|| {
                self.error(
                    &key.span(),
                    format!("unknown key {table}{}; expected {table}vfN", key.get_ref()),
                )
            })?;
        if vf >= vfs {
            return Err(self.error(
                &key.span(),
                format!("{table}vf{vf} names a VF the PF does not have (vfs = {vfs})"),
            ));
        }
        Ok(vf)
    }

    fn steps(
        &self,
        raw: Vec<Spanned<RawStep>>,
        vfs: u16,
        check: &mut Check,
    ) -> Result<Vec<Step>, ParseError> {
        raw.into_iter()
            .map(|step| self.step(step, vfs, check))
            .collect()
    }

    fn step(&self, raw: Spanned<RawStep>, vfs: u16, check: &mut Check) -> Result<Step, ParseError> {
        let span = raw.span();
        let pos = self.pos(span.start);
        let s = raw.into_inner();
        let err = |message: String| self.error(&span, message);
        let present: Vec<&str> = [
            ("guest", s.guest.is_some()),
            ("background", s.background.is_some()),
            ("stop", s.stop.is_some()),
            ("repeat", s.repeat.is_some()),
            ("parallel", s.parallel.is_some()),
            ("fault", s.fault.is_some()),
            ("release", s.release.is_some()),
            ("pf_event", s.pf_event.is_some()),
            ("hotplug", s.hotplug.is_some()),
            ("unplug", s.unplug.is_some()),
            ("settle", s.settle.is_some()),
            ("expect", s.expect.is_some()),
            ("consistent", s.consistent.is_some()),
            ("snapshot", s.snapshot.is_some()),
            ("record", s.record.is_some()),
            ("expect_links", s.expect_links.is_some()),
            ("primary", s.primary.is_some()),
            ("expect_uevents", s.expect_uevents.is_some()),
            ("sample", s.sample.is_some()),
            ("expect_grew", s.expect_grew.is_some()),
            ("watchdog", s.watchdog.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.then_some(k))
        .collect();
        let keyword =
            match present.as_slice() {
                [one] => *one,
                [] => return Err(err(
                    "a step needs one action: guest, background, stop, repeat, parallel, fault, \
                     release, pf_event, hotplug, unplug, primary, settle, expect, consistent, \
                     snapshot, record, expect_links, expect_uevents, sample, expect_grew or \
                     watchdog"
                        .into(),
                )),
                many => {
                    return Err(err(format!(
                        "a step has exactly one action, this one has {}",
                        many.join(", ")
                    )))
                }
            };
        // Modifiers only where they mean something.
        let allowed: &[&str] = match keyword {
            "guest" => &["may_fail", "vm", "timeout_ms"],
            "background" => &["id", "vm"],
            "parallel" => &["may_fail", "vm"],
            "repeat" => &["steps"],
            "release" | "settle" => &["timeout_ms"],
            _ => &[],
        };
        for (modifier, given) in [
            ("may_fail", s.may_fail.is_some()),
            ("vm", s.vm.is_some()),
            ("id", s.id.is_some()),
            ("steps", s.steps.is_some()),
            ("timeout_ms", s.timeout_ms.is_some()),
        ] {
            if given && !allowed.contains(&modifier) {
                return Err(err(format!(
                    "`{modifier}` does not apply to a `{keyword}` step"
                )));
            }
        }
        if s.vm.is_some_and(|vm| vm != 0) {
            return Err(err("vm must be 0: the scenario has one VM".into()));
        }
        let check_vf = |vf: u16, what: &str| -> Result<(), ParseError> {
            if vf < vfs {
                Ok(())
            } else {
                Err(err(format!(
                    "{what} names vf{vf}, but the PF has {vfs} VF(s) (set `vfs` at the top)"
                )))
            }
        };
        let action = match keyword {
            "guest" => Action::Guest {
                cmd: s.guest.unwrap_or_default(),
                may_fail: s.may_fail.unwrap_or(false),
                timeout_ms: s.timeout_ms,
            },
            "background" => {
                let id =
                    s.id.ok_or_else(|| err("a background step needs `id = \"name\"`".into()))?;
                if !check.backgrounds.insert(id.clone()) {
                    return Err(err(format!("background id `{id}` is used twice")));
                }
                Action::Background {
                    cmd: s.background.unwrap_or_default(),
                    id,
                }
            }
            "stop" => {
                let id = s.stop.unwrap_or_default();
                if !check.backgrounds.contains(&id) {
                    return Err(err(format!(
                        "stop names `{id}`, which no background step before it started"
                    )));
                }
                Action::Stop { id }
            }
            "repeat" => {
                let inner = s
                    .steps
                    .ok_or_else(|| err("a repeat step needs `steps = [ ... ]`".into()))?;
                Action::Repeat {
                    times: s.repeat.unwrap_or(0),
                    steps: self.steps(inner, vfs, check)?,
                }
            }
            "parallel" => {
                let cmds = s.parallel.unwrap_or_default();
                if cmds.len() < 2 {
                    return Err(err("parallel needs at least two commands".into()));
                }
                Action::Parallel {
                    cmds,
                    may_fail: s.may_fail.unwrap_or(false),
                }
            }
            "fault" => {
                let fault = s.fault.unwrap_or_else(|| unreachable!());
                if let Some(vf) = fault.vf {
                    check_vf(vf, "fault")?;
                }
                if let Some(op) = &fault.op {
                    op.parse::<VirtchnlOp>()
                        .map_err(|e| err(format!("fault op: {e}")))?;
                }
                if let Some(status) = &fault.status {
                    if fault.action != FaultAction::Reject {
                        return Err(err(
                            "fault status applies to action = \"reject\" only".into()
                        ));
                    }
                    status
                        .parse::<VirtchnlStatus>()
                        .map_err(|e| err(format!("fault status: {e}")))?;
                }
                if (fault.action == FaultAction::Delay) != fault.delay_ms.is_some() {
                    return Err(err(
                        "delay_ms is required with action = \"delay\" and applies to nothing else"
                            .into(),
                    ));
                }
                Action::Fault(fault)
            }
            "release" => {
                let (vf, status) = s.release.map(|r| (r.vf, r.status)).unwrap_or_default();
                if let Some(vf) = vf {
                    check_vf(vf, "release")?;
                }
                let status = match status {
                    None => None,
                    Some(name) => Some(
                        name.parse::<VirtchnlStatus>()
                            .map_err(|e| err(format!("release status: {e}")))?
                            .to_string(),
                    ),
                };
                Action::Release {
                    vf,
                    status,
                    timeout_ms: s.timeout_ms,
                }
            }
            "watchdog" => {
                let w = s.watchdog.unwrap_or_else(|| unreachable!());
                check_vf(w.vf, "watchdog")?;
                watchdog_action(w, check).map_err(err)?
            }
            "pf_event" => {
                let ev = s.pf_event.unwrap_or_else(|| unreachable!());
                check_vf(ev.vf, "pf_event")?;
                Action::PfEvent {
                    vf: ev.vf,
                    kind: ev.kind,
                }
            }
            "hotplug" | "unplug" => {
                let plug = keyword == "hotplug";
                let vf = s.hotplug.or(s.unplug).map(|v| v.vf).unwrap_or_default();
                check_vf(vf, keyword)?;
                check.first_plug.entry(vf).or_insert(plug);
                // A new driver starts with the automatic watchdog.
                check.manual.remove(&vf);
                if plug {
                    Action::Hotplug { vf }
                } else {
                    Action::Unplug { vf }
                }
            }
            "settle" => {
                if s.settle != Some(true) {
                    return Err(err("write `settle = true`".into()));
                }
                Action::Settle {
                    timeout_ms: s.timeout_ms,
                }
            }
            "expect" => {
                let expect = s.expect.unwrap_or_default();
                check_vf(expect.vf, "expect")?;
                for name in expect.drops.keys() {
                    if !DROP_COUNTERS.contains(&name.as_str()) {
                        return Err(err(format!(
                            "unknown drop counter `{name}`; expected one of {}",
                            DROP_COUNTERS.join(", ")
                        )));
                    }
                }
                for op in expect.requests.keys() {
                    op.parse::<VirtchnlOp>()
                        .map_err(|e| err(format!("expect requests: {e}")))?;
                }
                for vid in expect.vlan_dels.keys() {
                    if !vid.parse::<u16>().is_ok_and(|v| (1..4095).contains(&v)) {
                        return Err(err(format!(
                            "expect vlan_dels: `{vid}` is not a VLAN id (1 to 4094)"
                        )));
                    }
                }
                Action::Expect(expect)
            }
            "consistent" => {
                if s.consistent != Some(true) {
                    return Err(err("write `consistent = true`".into()));
                }
                Action::Consistent
            }
            "snapshot" => {
                let label = s.snapshot.unwrap_or_default();
                if label.is_empty()
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(err(format!(
                        "snapshot label `{label}` must be letters, digits, `-` and `_`"
                    )));
                }
                if !check.labels.insert(label.clone()) {
                    return Err(err(format!("snapshot label `{label}` is used twice")));
                }
                Action::Snapshot { label }
            }
            "record" => {
                let (name, recorder) = match s.record.as_deref() {
                    Some("links") => ("links", Recorder::Links),
                    Some("uevents") => ("uevents", Recorder::Uevents),
                    other => {
                        return Err(err(format!(
                            "record = \"{}\": the recorders are \"links\" (rtnetlink link \
                             events) and \"uevents\" (raw net uevents with a look at sysfs)",
                            other.unwrap_or_default()
                        )))
                    }
                };
                check.recording.insert(name);
                Action::Record(recorder)
            }
            "expect_links" => {
                if !check.recording.contains("links") {
                    return Err(err(
                        "expect_links needs a `record = \"links\"` step before it".into(),
                    ));
                }
                Action::ExpectLinks(s.expect_links.unwrap_or_default())
            }
            "expect_uevents" => {
                if !check.recording.contains("uevents") {
                    return Err(err(
                        "expect_uevents needs a `record = \"uevents\"` step before it".into(),
                    ));
                }
                Action::ExpectUevents(s.expect_uevents.unwrap_or_default())
            }
            "primary" => {
                if !check.has_primary {
                    return Err(err(
                        "a primary step needs a failover pair: add a [failover] table".into(),
                    ));
                }
                match s.primary.as_deref() {
                    Some("plug") => Action::Primary { plug: true },
                    Some("unplug") => Action::Primary { plug: false },
                    other => {
                        return Err(err(format!(
                            "primary = \"{}\": write \"plug\" or \"unplug\"",
                            other.unwrap_or_default()
                        )))
                    }
                }
            }
            "sample" => {
                let label = s.sample.unwrap_or_default();
                if label.is_empty() {
                    return Err(err("a sample needs a label".into()));
                }
                check.samples.insert(label.clone());
                Action::Sample { label }
            }
            "expect_grew" => {
                let e = s.expect_grew.unwrap_or_default();
                if !check.samples.contains(&e.since) {
                    return Err(err(format!(
                        "expect_grew since `{}`: no sample step with that label comes before it",
                        e.since
                    )));
                }
                if e.counters.is_empty() {
                    return Err(err("expect_grew needs at least one counter".into()));
                }
                for counter in &e.counters {
                    check_counter(counter, vfs).map_err(err)?;
                }
                Action::ExpectGrew(e)
            }
            other => unreachable!("action {other}"),
        };
        Ok(Step { action, pos })
    }
}

/// A `watchdog` step: a mode switch, or one pass (with what it must send).
fn watchdog_action(w: RawWatchdog, check: &mut Check) -> Result<Action, String> {
    let vf = w.vf;
    if check.kernel_vfs.contains(&vf) {
        return Err(format!(
            "watchdog names vf{vf}, which the guest kernel binds ([roles]): it has no vfrig \
             driver and no watchdog"
        ));
    }
    let expect = match (w.mode, w.expect) {
        (Some(_), Some(_)) => {
            return Err(
                "watchdog: `mode` switches the watchdog, `expect` checks one pass; \
                        write them in two steps"
                    .into(),
            )
        }
        (Some(mode), None) => {
            if mode == WatchdogMode::Manual {
                check.manual.insert(vf);
            } else {
                check.manual.remove(&vf);
            }
            return Ok(Action::Watchdog { vf, mode });
        }
        (None, expect) => expect,
    };
    if !check.manual.contains(&vf) {
        return Err(format!(
            "a watchdog pass needs vf{vf}'s watchdog in manual mode: add a step \
             `watchdog = {{ vf = {vf}, mode = \"manual\" }}` before it"
        ));
    }
    let expect = match expect.as_deref() {
        None => None,
        Some(none) if none.eq_ignore_ascii_case("none") => Some(PassSends::Nothing),
        Some(op) => {
            let op = op.parse::<VirtchnlOp>().map_err(|e| {
                format!("watchdog expect: {e}; write an opcode (\"ADD_VLAN_V2\") or \"none\"")
            })?;
            Some(PassSends::Op(op.to_string()))
        }
    };
    Ok(Action::WatchdogStep { vf, expect })
}

/// Checks the form of an `expect_grew` counter name.
fn check_counter(name: &str, vfs: u16) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "counter `{name}`: {why}; write IF.STAT (`bond0.tx_dropped`) or \
             pf.vfN.COUNTER (`pf.vf0.tx_frames`)"
        ))
    };
    match name.split('.').collect::<Vec<_>>().as_slice() {
        ["pf", vf, rest @ ..] if !rest.is_empty() => {
            match vf.strip_prefix("vf").and_then(|n| n.parse::<u16>().ok()) {
                Some(n) if n < vfs => Ok(()),
                Some(n) => bad(&format!("the PF has no vf{n}")),
                None => bad("`pf.` must be followed by a VF"),
            }
        }
        [ifname, stat] if !ifname.is_empty() && !stat.is_empty() && *ifname != "pf" => Ok(()),
        _ => bad("unknown form"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Scenario, ParseError> {
        parse(text, Path::new("t.toml"))
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = parse_str(
            r#"
name = "demo"
description = "everything"
vfs = 2
driver = { vlan_fsm = "legacy" }
expect_fail = "lost"

[pf.vf1]
spoofchk = true
max_vlans = 4
vlan_v2 = false

[[step]]
guest = "ip link set vf0 up"
may_fail = true

[[step]]
repeat = 3
steps = [ { guest = "true" }, { parallel = ["a", "b"] } ]

[[step]]
fault = { vf = 0, op = "DEL_VLAN_V2", action = "reject", status = "ERR_PARAM" }

[[step]]
unplug = { vf = 1 }

[[step]]
expect = { vf = 0, vlans = [100], macs = ["02:00:00:00:10:00"], drops = { anti_spoof_vlan = 0 }, requests = { DEL_VLAN_V2 = 1 } }

[[step]]
snapshot = "end"
"#,
        )
        .expect("valid");
        assert_eq!(s.name, "demo");
        assert_eq!(s.vfs, 2);
        assert_eq!(s.vlan_fsm, VlanFsm::Legacy);
        assert_eq!(s.pf[&1].max_vlans, Some(4));
        assert_eq!(
            s.vfs_at_boot,
            vec![0, 1],
            "unplugged first: plugged at boot"
        );
        assert_eq!(s.steps.len(), 6);
        assert_eq!(
            s.steps[0].pos,
            Pos {
                line: 13,
                column: 1
            },
            "the [[step]] header"
        );
        match &s.steps[1].action {
            Action::Repeat { times: 3, steps } => {
                assert_eq!(steps.len(), 2);
                assert_eq!(steps[1].pos.line, 19);
            }
            other => panic!("{other:?}"),
        }
        let Action::Fault(f) = &s.steps[2].action else {
            panic!("a fault")
        };
        assert_eq!(
            f.command(),
            serde_json::json!({"cmd": "fault", "vf": 0, "op": "DEL_VLAN_V2", "action": "reject",
                "status": "ERR_PARAM", "count": 1})
        );
    }

    #[test]
    fn failover_roles_enslave_and_mutants_parse() {
        let s = parse_str(
            r#"
name = "f"
flavour = "generic"
vfs = 3
[roles]
vf1 = "kernel"
[failover]
standby = 0
primary = "e1000e"
[driver]
enslave = { vf2 = "bond0" }
[[step]]
record = "uevents"
[[step]]
primary = "unplug"
[[step]]
sample = "a"
[[step]]
expect_grew = { since = "a", counters = ["bond0.tx_dropped", "pf.vf2.tx_frames"] }
[[step]]
expect_uevents = { ifname = "eth1", adds = 1, without_master_at_least = 1 }
"#,
        )
        .expect("valid");
        assert_eq!(
            s.roles,
            BTreeMap::from([(0, Role::Kernel), (1, Role::Kernel)]),
            "the standby is bound by the kernel"
        );
        assert_eq!(
            s.failover,
            Some(Failover {
                standby: 0,
                primary: "e1000e".into()
            })
        );
        assert_eq!(s.enslave[&2], "bond0");
        assert_eq!(s.steps[1].action, Action::Primary { plug: false });
        assert_eq!(s.steps[0].action, Action::Record(Recorder::Uevents));
        let m = parse_str("name = \"m\"\nmutant = \"bond-rr-count-zero\"\n").expect("valid");
        assert_eq!(m.mutant.as_deref(), Some("bond-rr-count-zero"));
    }

    #[test]
    fn failover_mutant_and_counter_mistakes_are_explained() {
        let e = error("name = \"x\"\n[failover]\nstandby = 0\nprimary = \"e1000e\"\n");
        assert!(
            e.starts_with("t.toml:2:1: ") && e.contains("generic"),
            "{e}"
        );
        let e = error(
            "name = \"x\"\nflavour = \"generic\"\n[failover]\nstandby = 0\nprimary = \"rtl8139\"\n",
        );
        assert!(e.contains("rtl8139") && e.contains("e1000e"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nprimary = \"unplug\"\n");
        assert!(e.contains("[failover]"), "{e}");
        let e = error("name = \"x\"\nmutant = \"nope\"\n");
        assert!(
            e.starts_with("t.toml:2:") && e.contains("bond-rr-count-zero"),
            "{e}"
        );
        let e = error("name = \"x\"\n[roles]\nvf3 = \"kernel\"\n");
        assert!(
            e.starts_with("t.toml:3:1: ") && e.contains("roles.vf3"),
            "{e}"
        );
        let e = error(
            "name = \"x\"\n[roles]\nvf0 = \"kernel\"\n[driver]\nenslave = { vf0 = \"bond0\" }\n",
        );
        assert!(e.contains("does not bind"), "{e}");
        let e = error(
            "name = \"x\"\n[[step]]\nexpect_grew = { since = \"a\", counters = [\"x.y\"] }\n",
        );
        assert!(e.contains("no sample"), "{e}");
        let e = error(
            "name = \"x\"\n[[step]]\nsample = \"a\"\n[[step]]\nexpect_grew = { since = \"a\", counters = [\"pf.vf4.tx_frames\"] }\n",
        );
        assert!(e.starts_with("t.toml:4:1: ") && e.contains("no vf4"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nexpect_uevents = { adds = 1 }\n");
        assert!(e.contains("record = \"uevents\""), "{e}");
    }

    #[test]
    fn replay_keys_parse() {
        let s = parse_str(
            r#"
name = "r"
expect_fail_on = { legacy = "driver-matches-intent" }

[[step]]
watchdog = { vf = 0, mode = "manual" }

[[step]]
fault = { vf = 0, op = "ADD_VLAN_V2", action = "hold" }

[[step]]
watchdog = { vf = 0, expect = "add_vlan_v2" }

[[step]]
release = { vf = 0, status = "err_param" }

[[step]]
watchdog = { vf = 0, expect = "none" }

[[step]]
watchdog = { vf = 0 }

[[step]]
watchdog = { vf = 0, mode = "auto" }

[[step]]
release = { vf = 0 }
"#,
        )
        .expect("valid");
        assert_eq!(s.expect_fail, None);
        assert_eq!(
            s.expect_fail_on,
            BTreeMap::from([(VlanFsm::Legacy, "driver-matches-intent".to_owned())])
        );
        let actions: Vec<&Action> = s.steps.iter().map(|s| &s.action).collect();
        assert_eq!(
            actions,
            [
                &Action::Watchdog {
                    vf: 0,
                    mode: WatchdogMode::Manual
                },
                &s.steps[1].action,
                &Action::WatchdogStep {
                    vf: 0,
                    expect: Some(PassSends::Op("ADD_VLAN_V2".into()))
                },
                &Action::Release {
                    vf: Some(0),
                    status: Some("ERR_PARAM".into()),
                    timeout_ms: None
                },
                &Action::WatchdogStep {
                    vf: 0,
                    expect: Some(PassSends::Nothing)
                },
                &Action::WatchdogStep {
                    vf: 0,
                    expect: None
                },
                &Action::Watchdog {
                    vf: 0,
                    mode: WatchdogMode::Auto
                },
                &Action::Release {
                    vf: Some(0),
                    status: None,
                    timeout_ms: None
                },
            ]
        );
        assert_eq!(s.steps[2].action.keyword(), "watchdog");
        assert_eq!(
            s.steps[2].action.summary(),
            "one watchdog pass of vf0, which must send ADD_VLAN_V2"
        );
        assert_eq!(
            s.steps[3].action.summary(),
            "refuse with ERR_PARAM what the PF holds for vf0"
        );
    }

    #[test]
    fn expect_fail_on_picks_the_symptom_by_machine() {
        let s = parse_str("name = \"x\"\nexpect_fail_on = { legacy = \"stuck\" }\n").unwrap();
        assert_eq!(s.machines(), vec![VlanFsm::Fixed, VlanFsm::Legacy]);
        assert_eq!(s.expected_failure(VlanFsm::Fixed), None);
        assert_eq!(s.expected_failure(VlanFsm::Legacy), Some("stuck"));
        let s = parse_str(
            "name = \"x\"\ndriver = { vlan_fsm = \"legacy\" }\n\
             expect_fail_on = { legacy = \"a\", fixed = \"b\" }\n",
        )
        .unwrap();
        assert_eq!(s.machines(), vec![VlanFsm::Legacy, VlanFsm::Fixed]);
        assert_eq!(s.expected_failure(VlanFsm::Fixed), Some("b"));
        // Without expect_fail_on, expect_fail holds whatever the machine.
        let s = parse_str("name = \"x\"\nexpect_fail = \"lost\"\n").unwrap();
        assert_eq!(s.machines(), vec![VlanFsm::Fixed]);
        assert_eq!(s.expected_failure(VlanFsm::Legacy), Some("lost"));
        assert_eq!(s.expected_failure(VlanFsm::Fixed), Some("lost"));
    }

    #[test]
    fn replay_key_mistakes_are_explained_where_they_are() {
        let manual = "[[step]]\nwatchdog = { vf = 0, mode = \"manual\" }\n";
        let e = error(&format!(
            "name = \"x\"\n{manual}[[step]]\nwatchdog = {{ vf = 0, mode = \"auto\", expect = \"none\" }}\n"
        ));
        assert!(
            e.starts_with("t.toml:4:1: ") && e.contains("two steps"),
            "{e}"
        );
        let e = error("name = \"x\"\n[[step]]\nwatchdog = { vf = 0 }\n");
        assert!(
            e.starts_with("t.toml:2:1: ") && e.contains("mode = \"manual\""),
            "{e}"
        );
        let e = error(&format!(
            "name = \"x\"\n{manual}[[step]]\nwatchdog = {{ vf = 0, expect = \"ADD_VLAN_V3\" }}\n"
        ));
        assert!(
            e.starts_with("t.toml:4:1: ") && e.contains("ADD_VLAN_V3") && e.contains("none"),
            "{e}"
        );
        let e = error("name = \"x\"\n[[step]]\nwatchdog = { vf = 0, mode = \"paused\" }\n");
        assert!(e.starts_with("t.toml:3:") && e.contains("paused"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nwatchdog = { vf = 1, mode = \"manual\" }\n");
        assert!(e.contains("vf1") && e.contains("vfs"), "{e}");
        let e = error(
            "name = \"x\"\nvfs = 2\n[roles]\nvf1 = \"kernel\"\n[[step]]\nwatchdog = { vf = 1, mode = \"manual\" }\n",
        );
        assert!(e.contains("guest kernel binds"), "{e}");
        let e = error(&format!(
            "name = \"x\"\n{manual}[[step]]\nwatchdog = {{ vf = 0 }}\ntimeout_ms = 5\n"
        ));
        assert!(e.contains("timeout_ms") && e.contains("watchdog"), "{e}");
        // A hot-plug starts a new driver, with the automatic watchdog.
        let e = error(&format!(
            "name = \"x\"\n{manual}[[step]]\nunplug = {{ vf = 0 }}\n[[step]]\nhotplug = {{ vf = 0 }}\n[[step]]\nwatchdog = {{ vf = 0 }}\n"
        ));
        assert!(e.starts_with("t.toml:8:1: ") && e.contains("manual"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nrelease = { vf = 0, status = \"ERR_NOPE\" }\n");
        assert!(
            e.starts_with("t.toml:2:1: ") && e.contains("release status") && e.contains("ERR_NOPE"),
            "{e}"
        );

        let e = error("name = \"x\"\nexpect_fail = \"a\"\nexpect_fail_on = { legacy = \"b\" }\n");
        assert!(
            e.starts_with("t.toml:3:18: ") && e.contains("do not go together"),
            "{e}"
        );
        let e = error("name = \"x\"\nexpect_fail_on = { legasy = \"b\" }\n");
        assert!(
            e.starts_with("t.toml:2:20: ") && e.contains("legasy") && e.contains("fixed or legacy"),
            "{e}"
        );
        let e = error("name = \"x\"\nexpect_fail_on = { legacy = \" \" }\n");
        assert!(
            e.starts_with("t.toml:2:29: ") && e.contains("expect_fail_on.legacy"),
            "{e}"
        );
        let e = error("name = \"x\"\nexpect_fail_on = {}\n");
        assert!(
            e.starts_with("t.toml:2:18: ") && e.contains("names no"),
            "{e}"
        );
    }

    #[test]
    fn a_vf_hotplugged_first_is_not_plugged_at_boot() {
        let s = parse_str("name = \"x\"\nvfs = 2\n[[step]]\nhotplug = { vf = 1 }\n").unwrap();
        assert_eq!(s.vfs_at_boot, vec![0]);
    }

    fn error(text: &str) -> String {
        parse_str(text).expect_err("invalid").to_string()
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = error("name = \"x\"\n[[step]]\nguest = \"true\"\nsettel = true\n");
        assert!(e.starts_with("t.toml:4:1: ") && e.contains("settel"), "{e}");
        let e = error("name = \"x\"\n\n[[step]]\nguest = \"a\"\nfault = { action = \"hold\" }\n");
        assert!(
            e.starts_with("t.toml:3:1: ") && e.contains("guest, fault"),
            "{e}"
        );
        let e = error("name = \"x\"\n[[step]]\nfault = { action = \"explode\" }\n");
        assert!(e.starts_with("t.toml:3:") && e.contains("explode"), "{e}");
        let e =
            error("name = \"x\"\n[[step]]\nrepeat = 2\nsteps = [ { guest = \"a\", bogus = 1 } ]\n");
        assert!(e.starts_with("t.toml:4:") && e.contains("bogus"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nexpect = { vf = 1 }\n");
        assert!(
            e.starts_with("t.toml:2:1: ") && e.contains("vf1") && e.contains("vfs"),
            "{e}"
        );
        let e =
            error("name = \"x\"\n[[step]]\nfault = { op = \"DEL_VLAN_V3\", action = \"hold\" }\n");
        assert!(e.contains("DEL_VLAN_V3"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nstop = \"load\"\n");
        assert!(e.contains("no background"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nsettle = true\nmay_fail = true\n");
        assert!(e.contains("may_fail") && e.contains("settle"), "{e}");
        let e = error("name = \"x\"\n[pf.vf0]\ntrusted = true\n");
        assert!(
            e.starts_with("t.toml:3:1: ") && e.contains("trusted"),
            "{e}"
        );
        let e = error("name = \"x\"\n[[step]]\nexpect = { vf = 0, drops = { spoof = 0 } }\n");
        assert!(e.contains("spoof") && e.contains("anti_spoof_vlan"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nexpect_links = { ifname = \"vf0\" }\n");
        assert!(e.contains("record"), "{e}");
        let e = error("name = \"x\"\n[[step]]\nrecord = \"packets\"\n");
        assert!(e.contains("links") && e.contains("uevents"), "{e}");
        let e = error("name = \"a b\"\n");
        assert!(e.starts_with("t.toml:1:8: "), "{e}");
        let e = error("name = \"x\"\n[[step]]\nguest = \"unterminated\n");
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }
}
