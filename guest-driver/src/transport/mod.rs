//! The virtio-pci transport from userspace: how the guest driver reaches its
//! VF without a kernel driver.
//!
//! A VF is a modern virtio-net PCI function (1af4:1041) whose queues a
//! vhost-user backend serves: queue pair 0 carries Ethernet frames through
//! the PF switch, pair 1 carries virtchnl frames to and from the PF, and
//! QEMU serves the control queue. [`VfDevice`] takes the function from the
//! kernel, sets it up and offers `send_frame`/`recv_frame` and
//! `send_mailbox`/`recv_mailbox`; nothing blocks and nothing interrupts, the
//! caller polls (see [`backoff`]).
//!
//! Layers, each calling only inwards:
//! - [`net`]: [`VfDevice`], the five queues of one VF;
//! - [`queues`]: receive/transmit queues with fixed buffer slots, the
//!   `virtio_net_hdr`, the control command layout;
//! - [`ring`]: the driver side of a split virtqueue;
//! - [`virtio`]: status, features, queue setup and notification through the
//!   common configuration;
//! - [`pci`]: sysfs: finding, locking and unbinding the function, config
//!   space and the virtio capability list, BAR files;
//! - [`mmio`] and [`dma`]: the only modules with `unsafe`. `mmio` owns the
//!   BAR mappings (bounds-checked volatile registers), `dma` the hugepage
//!   the rings and buffers live in (pinned, physically contiguous, volatile
//!   and atomic access). Each states its invariant in its module docs;
//! - [`shared`]: the [`SharedMemory`](shared::SharedMemory) seam between
//!   rings and the DMA arena, so rings and queues are tested on the host
//!   against plain memory.
//!
//! [`selftest`] is a first user: the VERSION / GET_VF_RESOURCES /
//! ENABLE_QUEUES exchange and one broadcast frame, behind
//! `vfrig-driver selftest`.
//!
//! **Invariant:** the device is reset before the memory it uses is unmapped
//! (`VfDevice`'s field order), and nothing the device writes can make the
//! driver panic or index out of bounds: used ids, lengths and indices are
//! checked, and every shared-memory access is bounds-checked.
//!
//! ```no_run
//! use vfrig_guest_driver::transport::{Selector, VfDevice};
//!
//! let mut vf = VfDevice::open(&Selector::FirstUnused)?;
//! vf.send_mailbox(&virtchnl::Request::Version(virtchnl::VersionInfo::V1_1).to_frame(1))?;
//! while vf.recv_mailbox()?.is_none() {
//!     std::thread::sleep(std::time::Duration::from_millis(1));
//! }
//! # Ok::<(), vfrig_guest_driver::transport::Error>(())
//! ```

pub mod backoff;
pub mod dma;
mod error;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod queues;
pub mod ring;
pub mod selftest;
pub mod shared;
pub mod virtio;

#[cfg(test)]
mod test_util;

pub use error::{Error, Result};
pub use net::{DeviceInfo, PairId, Selector, VfConfig, VfDevice};
pub use pci::Bdf;
