//! The sans-IO adapter core: the iavf-like VF state machine.
//!
//! [`Adapter`] is the brain of the userspace VF driver, modelled on Linux's
//! iavf: pending work is a set of `aq_required`-style flags that a watchdog
//! step turns into virtchnl requests in iavf's fixed order, at most one
//! request waits for its reply at a time (`current_op`), and the MAC and
//! VLAN filter lists carry iavf's filter states. It does no I/O, reads no
//! clock, spawns nothing and draws no random numbers: every input is a method
//! call, every output is drained by the caller, and time is passed in. The
//! same code runs in unit tests, against the in-process PF model
//! (`vfrig-device`), under an interleaving explorer and in the guest.
//!
//! What it is not: it knows nothing of PCI, virtqueues, TAP devices or
//! rtnetlink. The transport moves frames; the netdev shell turns rtnetlink
//! observations into [`NetdevEvent`]s and applies [`Event`]s to the TAP.
//!
//! # Methods, by kind
//!
//! - **Getters**: [`Adapter::phase`], [`Adapter::status`] (serialisable,
//!   for comparison with the PF tables), [`Adapter::mac`],
//!   [`Adapter::carrier`], [`Adapter::vlan_state`], [`Adapter::vlan_filters`],
//!   [`Adapter::active_vlans`], [`Adapter::is_idle`], [`Adapter::config`].
//! - **Inputs** (`handle_*`):
//!   - [`Adapter::handle_netdev`]: what the kernel did to the netdev (up,
//!     down, MAC, VLAN add/remove with TPID 0x8100 or 0x88a8, promiscuous
//!     and allmulti, enslaved/released, moved to another netns, removed).
//!     It may be refused, as the `ndo_*` call would fail ([`Refused`]).
//!   - [`Adapter::handle_mailbox`] (a raw frame) or
//!     [`Adapter::handle_pf_message`] (decoded): replies and PF events (link
//!     change, reset impending, PF driver close). Never fails: a bad frame
//!     is counted and logged, an error status is a protocol event.
//!   - [`Adapter::handle_device_ready`]: the transport saw the device come
//!     back after a reset.
//!   - [`Adapter::handle_timeout`]: a timer is due.
//! - **Outputs** (`poll_*`, all `#[must_use]`):
//!   - [`Adapter::poll_transmit`]: the next mailbox request ([`Transmit`]:
//!     a virtchnl [`Request`](virtchnl::Request) and its cookie; `to_frame`
//!     gives the bytes). This is the watchdog step: nothing is sent before
//!     it is called, so the caller decides how netdev events and watchdog
//!     steps interleave.
//!   - [`Adapter::poll_event`]: carrier, queues, the MAC to set, VLANs the PF
//!     refused, reset start and end, log lines.
//!   - [`Adapter::poll_timeout`]: when to call `handle_timeout`.
//!
//! # Driving it
//!
//! After every input, and after a timeout:
//!
//! 1. call [`Adapter::poll_transmit`] until it returns `None`, sending each
//!    request in order (there is at most one tracked request, plus a
//!    RESET_VF when the adapter asks for a reset);
//! 2. call [`Adapter::poll_event`] until it returns `None`, applying each
//!    event in order;
//! 3. sleep until a mailbox frame, a netdev change or [`Adapter::poll_timeout`],
//!    whichever comes first.
//!
//! ```
//! use std::time::Instant;
//! use vfrig_guest_driver::core::{Adapter, Config, Phase};
//! use virtchnl::{PfMessage, Reply, ReplyBody, Request, VersionInfo, VirtchnlOp, VirtchnlStatus};
//!
//! let now = Instant::now();
//! let mut vf = Adapter::new(Config::default());
//! let tx = vf.poll_transmit(now).expect("VERSION first");
//! assert_eq!(tx.request, Request::Version(VersionInfo::V1_1));
//! assert!(vf.poll_transmit(now).is_none(), "one request in flight");
//!
//! let reply = Reply {
//!     op: VirtchnlOp::Version,
//!     status: VirtchnlStatus::Success,
//!     body: ReplyBody::Version(VersionInfo::V1_1),
//! };
//! vf.handle_pf_message(now, tx.cookie, PfMessage::Reply(reply));
//! let next = vf.poll_transmit(now).expect("then GET_VF_RESOURCES");
//! assert_eq!(next.op(), VirtchnlOp::GetVfResources);
//! assert_eq!(vf.phase(), Phase::Init);
//! ```
//!
//! # Life cycle
//!
//! ```text
//!  new ──► Init: VERSION 1.1 ─► GET_VF_RESOURCES (L2, VLAN, VLAN_V2, ADV_LINK_SPEED)
//!            │                    └─► GET_OFFLOAD_VLAN_V2_CAPS, if VLAN_V2 was granted
//!            │  error or timeout: start over after `init_retry`; Failed after
//!            │  `init_max_failures`
//!            ▼
//!          Down ◄──── netdev down ────► Running
//!            │   (ADD_ETH_ADDR, ENABLE_QUEUES on up; DISABLE_QUEUES,
//!            │    DEL_ETH_ADDR of the own MAC on down; carrier follows
//!            │    LINK_CHANGE once the queues are enabled)
//!            │
//!  RESET_IMPENDING, PF_DRIVER_CLOSE, or (then RESET_VF first) a reply
//!  timeout or ERR_NOT_SUPPORTED for an opcode the PF had allowed
//!            ▼
//!        Resetting ── handle_device_ready (or `reset_timeout`) ──► Init ──►
//!            every filter re-added, queues re-enabled if the netdev is up
//! ```
//!
//! The VF's MAC comes from the resources reply (`default_mac_addr`; the
//! configured fallback when the PF has none) and is handed to the shell as
//! [`Event::MacAddress`].
//!
//! # The watchdog
//!
//! Pending work is served in iavf_process_aq_command's order, restricted to
//! what is modelled: DISABLE_QUEUES, ADD_MAC_FILTER, ADD_VLAN_FILTER,
//! DEL_MAC_FILTER, DEL_VLAN_FILTER, ENABLE_QUEUES, CONFIGURE_PROMISC_MODE
//! (GET_CONFIG and GET_OFFLOAD_VLAN_V2_CAPS, first in iavf, are the
//! initialisation steps). One request is in flight at a time. A reply is
//! matched by opcode and cookie; any other reply is logged, counted and
//! ignored. A request without a reply after `reply_timeout` is logged and
//! forgotten; during initialisation negotiation starts over, afterwards the
//! adapter asks for a VF reset (RESET_VF) and re-initialises, since it can no
//! longer know what the PF applied. An ERR_NOT_SUPPORTED reply once
//! configured means the PF reset the VF without notice (after a reset ice
//! allows only VERSION, GET_VF_RESOURCES and RESET_VF): the adapter resets
//! too. Two deliberate differences from iavf: the outstanding request is not
//! cancelled on interface down (iavf's completion handler runs for any
//! reply, this one only for the awaited one), and a pending ENABLE_QUEUES is
//! dropped on down.
//!
//! VLAN filters use ADD_VLAN_V2/DEL_VLAN_V2 when the PF granted VLAN_V2 (on
//! the outer tag if the PF filters there, else the inner), ADD_VLAN/DEL_VLAN
//! when it granted VLAN. A VLAN on a bond the VF is enslaved to is a VLAN of
//! the VF: the shell reports it as [`NetdevEvent::VlanAdded`].
//!
//! # The two VLAN filter state machines
//!
//! Selected with [`Config::vlan_fsm`]; the rules are the ones iavf had
//! before and after its v7.1 VLAN fixes, one function per iavf function in
//! `vlan/legacy.rs` and `vlan/fixed.rs`, where each lists its transitions.
//!
//! [`VlanFsm::Fixed`] (the default): the PF's answer decides every
//! transition, and down/up does not touch the list.
//!
//! ```text
//!          user add        ADD sent           PF ok
//!   ────────────────► ADD ──────────► ADDING ───────► ACTIVE
//!                      │ user del        │ PF error      │ user del
//!                      ▼                 ▼               ▼
//!                    freed             freed           REMOVE ──user add──► ACTIVE
//!                                                        │ DEL sent
//!                                                        ▼
//!                    freed ◄──── PF ok ──────────── REMOVING ──PF error──► ACTIVE
//!                                                        │ user add: ADD after the DEL
//!                                                        │ user del: nothing (no 2nd DEL)
//!   ADDING ──user del──► REMOVE (a DEL follows the ADD's reply)
//!   that ADD after REMOVING ──user del while the DEL is out──► REMOVING
//!   reset: the list becomes the kernel's VLANs, all ADD (re-added)
//! ```
//!
//! [`VlanFsm::Legacy`]: the machine the bug report describes, flaws kept.
//!
//! ```text
//!          user add        ADD sent           V2 ok
//!   ────────────────► ADD ──────────► IS_NEW ───────► ACTIVE   (V1: stays IS_NEW)
//!                      │ user del        │ V2 error
//!                      ▼                 ▼
//!                    freed             freed
//!   any but ADD ──user del──► REMOVE ──DEL sent──► freed at once (reply ignored)
//!   REMOVE ──user add──► ACTIVE
//!   any ──down──► DISABLE ──DEL sent──► INACTIVE ──up──► ADD   (overwrites REMOVE)
//!   reset: any ──► ADD
//! ```
//!
//! The fixed machine also closes five windows upstream leaves open; they
//! are listed, with their reasons, in `vlan/fixed.rs` (H1-H5).
//!
//! # Invariants
//!
//! - At most one request is outstanding, and only its reply (same opcode
//!   and cookie) changes filter states.
//! - Nothing from the PF makes the adapter fail or panic.
//! - With the fixed machine, once the adapter is idle and its PF answered
//!   every request, the ACTIVE VLAN filters are exactly the PF's VLAN
//!   filters for this VF.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod adapter;
mod config;
mod flags;
mod io;
mod mac;
mod status;
mod vlan;

#[cfg(test)]
mod tests;

pub use adapter::Adapter;
pub use config::{Config, UnknownVlanFsm, VlanFsm, DEFAULT_CAPS};
pub use io::{Event, FilterOp, LogLevel, LogLine, NetdevEvent, Refused, ResetReason, Transmit};
pub use mac::MacState;
pub use status::{
    Counters, MacFilterStatus, NetdevStatus, Outstanding, Phase, Status, VlanFilterStatus,
};
pub use vlan::{Vlan, VlanState};
