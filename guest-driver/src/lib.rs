//! vfrig's guest driver: a userspace AVF-like VF driver that runs inside the
//! test VM.
//!
//! This crate will hold, in order of dependency:
//! - `core/`: the sans-IO VF state machine, modelled on iavf: `aq_required`
//!   work flags processed by a watchdog in a fixed order, at most one mailbox
//!   request in flight, and the MAC and VLAN filter lists with their
//!   lifecycle states. It takes netdev events, mailbox completions, PF events
//!   and timer ticks as inputs and returns mailbox requests and carrier
//!   changes as outputs, with no I/O, so unit tests and an interleaving
//!   explorer can drive it directly;
//! - `pci/` and `dma.rs`: the virtio-pci transport from userspace (BAR
//!   mapping, capability walk, split rings in a hugepage DMA arena). These are
//!   the only modules of the crate allowed to contain `unsafe`;
//! - `tap.rs` and `netlink.rs`: the netdev the guest kernel sees and the
//!   rtnetlink events (down/up, MAC, VLAN uppers, bonding, netns moves) the
//!   driver follows.
//!
//! The mailbox protocol it speaks lives in the `virtchnl` crate and the PF it
//! talks to in `vfrig-device`.

#![deny(unsafe_code)]

pub mod core;
pub mod transport;
