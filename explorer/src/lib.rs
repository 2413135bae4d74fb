//! vfrig's interleaving explorer.
//!
//! The VF driver core (`vfrig-guest-driver`'s [`Adapter`]) and the PF model
//! (`vfrig-device`'s [`Pf`]) are pure and deterministic, so every race
//! window between them is an ordering of a few inputs: kernel operations,
//! watchdog passes, the PF's answers and refusals, PF events. This crate
//! drives one of each in process with an explicit scheduler, enumerates the
//! orderings up to a depth ([`search`]), checks the [`invariant`]s in every
//! state, and hands back, for each kind of failure, a trace that it can
//! shrink, print and write as a scenario file a VM replays ([`trace`]).
//!
//! ```
//! use vfrig_explorer::{explore, Bounds, Kind, Model, Strategy, VlanOps};
//! use vfrig_guest_driver::core::VlanFsm;
//!
//! let model = Model::new(VlanFsm::Legacy, VlanOps::V2);
//! let found = explore(&model, Strategy::Bfs, Bounds { depth: 7, budget: 200_000 }).unwrap();
//! assert!(found.findings.contains_key(&Kind::DelFreedThenRejected));
//! ```
//!
//! What it is not: a model checker of the kernel or of QEMU. The kernel's
//! side is the intent the explorer keeps (which VLANs, up or down, which
//! namespace); the transport is a one-slot mailbox. A trace it finds is
//! confirmed by replaying it in a VM (`cargo rig run`).
//!
//! [`Adapter`]: vfrig_guest_driver::core::Adapter
//! [`Pf`]: vfrig_device::pf::Pf

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod invariant;
pub mod search;
pub mod trace;
pub mod world;

pub use invariant::{check, Invariant, Kind, Violation};
pub use search::{explore, Bounds, Exploration, Finding, Strategy};
pub use trace::{counterpart, render, replay, scenario, shrink, ReplayError, Step};
pub use world::{default_rejects, Alphabet, Input, Model, VlanOps, World};
