//! vfrig's harness: runs scenarios against real VMs and snapshots the PF's
//! filter tables.
//!
//! This crate will start the `vfrig-pf` device daemon and QEMU (TCG always,
//! KVM when a probe says it works), talk to the agent inside the guest, drive
//! down/up, netns, bond, hotplug and fault steps from TOML scenario files in
//! `harness/scenarios/`, check that the kernel's intent, the driver's view
//! and the PF tables agree, and record the tables as `insta` snapshots under
//! the repository's `snapshots/` folder. It is the only crate that spawns
//! processes.
//!
//! Nothing is implemented yet; the PF model whose tables it will snapshot is
//! `vfrig_device::pf`.

#![forbid(unsafe_code)]
