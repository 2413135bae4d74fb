//! The vhost-user shell: serves one VF as a virtio-net device to QEMU.
//!
//! Thin by design: it moves frames between virtqueues and a [`VfPort`] and
//! holds no device state of its own.

mod port;

pub use port::{Pair, VfPort, Waker};
