//! What goes into the adapter and what comes out of it.

use std::fmt;

use serde::Serialize;
use virtchnl::{MacAddr, Request, VirtchnlOp};

use super::vlan::Vlan;

/// Something the guest kernel did to the VF's netdev, as the netdev shell
/// observed it (rtnetlink) or as the kernel would call into iavf's `ndo_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetdevEvent {
    /// `ip link set dev up` (iavf_open).
    Up,
    /// `ip link set dev down` (iavf_close, iavf_down).
    Down,
    /// The netdev's MAC changed (`ndo_set_mac_address`), by the user or by a
    /// bond enslaving the VF.
    MacChanged(MacAddr),
    /// A VLAN was added on the netdev, or on a bond it is enslaved to
    /// (`ndo_vlan_rx_add_vid`). VID 0 is ignored, as iavf does.
    VlanAdded(Vlan),
    /// A VLAN was removed (`ndo_vlan_rx_kill_vid`).
    VlanRemoved(Vlan),
    /// IFF_PROMISC / IFF_ALLMULTI changed (`ndo_set_rx_mode`).
    RxModeChanged {
        /// Unicast promiscuous.
        promisc: bool,
        /// All multicast.
        allmulti: bool,
    },
    /// The netdev was enslaved to a bond or team. The shell reports what the
    /// master does to it (MAC, VLANs, up) as separate events.
    Enslaved,
    /// The netdev was released from its master.
    Released,
    /// The netdev moved to another network namespace. The kernel closes it
    /// on the way (the adapter goes down); its VLAN uppers stay in the old
    /// namespace, still linked to it, so their filters stay too. Deleting an
    /// upper later (or the namespace it lives in) is a separate
    /// [`NetdevEvent::VlanRemoved`].
    NetnsMoved,
    /// The netdev is gone (driver unbound): the adapter asks the PF for a VF
    /// reset, as iavf_remove does, and stops.
    Removed,
}

/// Why the adapter refused a netdev change, as the `ndo_*` call would fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not negotiated with the PF yet, or a reset is under way.
    #[error("the VF is initialising or resetting; retry once it is ready")]
    NotReady,
    /// The adapter was removed.
    #[error("the VF was removed")]
    Removed,
    /// The PF granted neither VLAN nor VLAN_V2 filtering (iavf: -EIO).
    #[error("the PF did not grant VLAN filtering to this VF")]
    VlanFilteringNotAllowed,
    /// The PF cannot filter on this TPID.
    #[error("the PF cannot filter VLANs with TPID {tpid:#06x}")]
    UnsupportedTpid {
        /// The TPID asked for.
        tpid: u16,
    },
    /// A VLAN id outside 1..=4095.
    #[error("VLAN id {vid} is out of range; use 1..=4095")]
    BadVid {
        /// The VLAN id asked for.
        vid: u16,
    },
    /// The VF already holds as many VLAN filters as the PF allows (iavf: -EIO).
    #[error("the VF already has {limit} VLAN filters, the most the PF allows")]
    VlanLimit {
        /// The limit.
        limit: u16,
    },
    /// Not a unicast MAC address (iavf: -EADDRNOTAVAIL).
    #[error("{mac} is not a valid unicast MAC address")]
    InvalidMac {
        /// The address asked for.
        mac: MacAddr,
    },
}

/// Whether a filter was being added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// ADD_VLAN / ADD_VLAN_V2 / ADD_ETH_ADDR.
    Add,
    /// DEL_VLAN / DEL_VLAN_V2 / DEL_ETH_ADDR.
    Remove,
}

/// Why the adapter went through its reset path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum ResetReason {
    /// The PF sent RESET_IMPENDING.
    ResetImpending,
    /// The PF sent PF_DRIVER_CLOSE.
    PfDriverClose,
    /// The PF answered ERR_NOT_SUPPORTED to an opcode it had allowed: it
    /// reset the VF without notice and forgot what was negotiated. The
    /// adapter asks for a VF reset to start from a known state.
    RequestRefused {
        /// The refused request's opcode, by kernel name.
        #[serde(serialize_with = "super::status::op_name")]
        op: VirtchnlOp,
    },
    /// A request got no reply in time; the adapter asked for a VF reset.
    ReplyTimeout {
        /// The request's opcode, by kernel name.
        #[serde(serialize_with = "super::status::op_name")]
        op: VirtchnlOp,
    },
}

/// Severity of a [`LogLine`], as iavf's `dev_dbg`/`dev_info`/`dev_warn`/`dev_err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Per message detail.
    Debug,
    /// Life cycle: reset, link, filter committed.
    Info,
    /// The PF refused something or misbehaved; handled.
    Warn,
    /// The adapter cannot continue.
    Error,
}

/// A line for the guest's log. The core also emits it through `tracing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// The text, lowercase, in iavf's words where iavf has some.
    pub message: String,
}

impl LogLevel {
    /// The level's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.level.name(), self.message)
    }
}

/// Something the netdev shell must act on or may report. Drained with
/// [`Adapter::poll_event`](super::Adapter::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Negotiation with the PF finished (at start-up and after each reset).
    Ready,
    /// The shell MUST give the netdev this MAC (from the PF's resources, or
    /// restored after the PF refused a change).
    MacAddress(MacAddr),
    /// The shell MUST turn the netdev's carrier on or off.
    Carrier(bool),
    /// The PF enabled (`true`) or disabled the VF's queues: the shell may
    /// start or stop moving data frames.
    Queues(bool),
    /// The PF refused to add or remove a VLAN filter: the kernel's view and
    /// the adapter's now differ for this VLAN (iavf only logs this).
    VlanRejected {
        /// The VLAN.
        vlan: Vlan,
        /// What was refused.
        op: FilterOp,
    },
    /// The PF refused a MAC filter; a changed MAC is rolled back with a
    /// [`Event::MacAddress`] after this.
    MacRejected {
        /// The refused address.
        mac: MacAddr,
    },
    /// The adapter stopped and waits for the device to come back
    /// ([`Adapter::handle_device_ready`](super::Adapter::handle_device_ready)).
    ResetStarted(ResetReason),
    /// A reset finished: negotiation is done again and every filter re-added
    /// or queued for it.
    ResetDone,
    /// The adapter gave up (too many failed initialisations); only a device
    /// reset brings it back.
    Failed,
    /// A line for the log.
    Log(LogLine),
}

/// A mailbox request to send to the PF. Drained with
/// [`Adapter::poll_transmit`](super::Adapter::poll_transmit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a request the adapter waits for must be sent"]
pub struct Transmit {
    /// Identifies the request; the PF echoes it in the reply.
    pub cookie: u32,
    /// The request.
    pub request: Request,
}

impl Transmit {
    /// The request's opcode.
    pub fn op(&self) -> VirtchnlOp {
        self.request.op()
    }

    /// The mailbox frame to put on the transmit queue.
    pub fn to_frame(&self) -> Vec<u8> {
        self.request.to_frame(self.cookie)
    }
}
