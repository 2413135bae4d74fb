//! The vhost-user shell: serves one VF as a virtio-net device to QEMU.
//!
//! Thin by design: it moves frames between virtqueues and a [`VfPort`] and
//! holds no device state of its own.
//!
//! - [`VfServer`] binds a VF's socket and serves one frontend after another
//!   until its [`StopHandle`] is used; each connection gets a fresh backend.
//! - `backend` implements `vhost_user_backend::VhostUserBackendMut` for one
//!   connection, in one of two [`QueueLayout`]s: 4 queues (2 [`Pair`]s),
//!   VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_NET_F_MQ/MAC/STATUS,
//!   protocol features MQ and REPLY_ACK; or, for a VF the guest kernel
//!   drives, 2 queues (the data pair) without VIRTIO_NET_F_MQ and the MQ
//!   protocol feature.
//! - `relay` (sans-IO) and `pump` (its I/O) sit between the frontend and
//!   the daemon and hold back ring enables the `vhost` crate would refuse
//!   before SET_FEATURES (see [`VfServer`]'s module docs).
//! - `chain` reads and writes descriptor chains in guest memory.
//! - [`virtio_net`] holds the spec constants.
//!
//! **Invariant:** nothing the guest writes into its rings can panic the
//! backend or stop it: a chain it cannot use goes back with length 0 (and,
//! on a transmit queue, reaches the port as an empty frame), with a `warn!`
//! naming the VF, the queue and the fault.

mod backend;
mod chain;
mod error;
mod port;
mod pump;
mod relay;
mod serve;
pub mod virtio_net;

pub use error::{Error, Result};
pub use port::{Pair, VfPort, Waker};
pub use serve::{StopHandle, VfServer};
pub use virtio_net::QueueLayout;
