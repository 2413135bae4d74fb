//! vfrig's guest driver: a userspace AVF-like VF driver that runs inside the
//! test VM.
//!
//! Modules, in order of dependency:
//! - [`core`]: the sans-IO VF state machine, modelled on iavf: `aq_required`
//!   work flags processed by a watchdog in a fixed order, at most one
//!   mailbox request in flight, and the MAC and VLAN filter lists with their
//!   lifecycle states. It takes netdev events, mailbox frames, PF events and
//!   timer ticks as inputs and returns mailbox requests and carrier changes
//!   as outputs, with no I/O, so unit tests and an interleaving explorer can
//!   drive it directly;
//! - [`transport`]: the virtio-pci transport from userspace (sysfs BARs,
//!   capability walk, split rings in a hugepage DMA arena); its `mmio` and
//!   `dma` modules hold its `unsafe`;
//! - [`netdev`]: the TAP the guest kernel sees as the VF's netdev and the
//!   rtnetlink listener that turns what the kernel does to it (down/up,
//!   MAC, VLAN uppers, bonding, netns moves) into the core's events; its
//!   `sys` module holds the three TAP ioctls;
//! - [`driver`]: the single-threaded event loop behind `vfrig-driver run`,
//!   tying the three together, with a status socket and a control socket
//!   (the watchdog: automatic, or one pass at a time for replays) per VF.
//!
//! ```no_run
//! use vfrig_guest_driver::core::VlanFsm;
//! use vfrig_guest_driver::driver::{self, DriverOptions};
//!
//! // Runs until SIGTERM or SIGINT; `vfrig-driver status --vf 0` reads its state.
//! let opts = DriverOptions { vf: 0, bdf: None, vlan_fsm: VlanFsm::Fixed, enslave: None };
//! driver::run(&opts)?;
//! # Ok::<(), vfrig_guest_driver::driver::DriverError>(())
//! ```
//!
//! The mailbox protocol it speaks lives in the `virtchnl` crate and the PF it
//! talks to in `vfrig-device`.

#![deny(unsafe_code)]

pub mod core;
pub mod driver;
pub mod netdev;
pub mod transport;
