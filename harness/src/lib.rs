//! vfrig's harness: boots test VMs with the emulated PF's VFs plugged in,
//! talks to the agent inside them, and (later) runs scenarios and snapshots
//! the PF's filter tables.
//!
//! What exists:
//! - [`image::prepare`]: the static guest agent and the cached kernel +
//!   initramfs from `vfrig-images`;
//! - [`Vm`]: QEMU (TCG, or KVM when a probe shows it works) on q35 with
//!   shared memfd memory, PCIe root ports for hotpluggable VFs, QMP through
//!   the `qapi` crate, the agent on a virtio-console port, and the serial
//!   console captured to the run's artifact directory;
//! - [`Rig`]: the PF daemon (`vfrig_device::daemon`) and a VM together;
//! - [`splat::find`]: kernel splat detection in a console log;
//! - [`process`]: nothing is left running after any kind of exit.
//!
//! It is the only crate that spawns processes. Its binary is `vfrig`
//! (`cargo rig ...` in this workspace).

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod explore;
pub mod image;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod rig;
pub mod rundir;
pub mod scenario;
pub mod setup;
pub mod splat;
pub mod ui;
pub mod vm;

pub use agent::{AgentClient, AgentError};
pub use rig::{Rig, RigConfig};
pub use vm::{BootReport, Vm, VmConfig, VmError};
