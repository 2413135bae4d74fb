//! The emulated PF of vfrig: an ice-like physical function that serves
//! AVF-style VFs.
//!
//! [`pf`] is the PF's brain: a sans-IO state machine that takes virtchnl
//! mailbox frames and host operations and produces replies and events, and
//! holds every VF's MAC and VLAN filters, promiscuous flags, queue state,
//! trust, spoof checking, admin MAC and port VLAN. Its rules follow Linux's
//! ice driver; each is named in the code and tested.
//!
//! What this crate is not (yet): the vhost-user daemon `vfrig-pf` that
//! presents each VF to QEMU as a virtio-net device and carries the mailbox
//! and the data path will live in `src/vhost/` and `src/bin/`; it will drive
//! [`pf::Pf`] and never put policy logic of its own around it.
//!
//! ```
//! use std::time::Instant;
//! use vfrig_device::pf::{Effect, Pf, PfConfig, VfId};
//! use virtchnl::{PfMessage, Request, VersionInfo, VirtchnlStatus};
//!
//! let mut pf = Pf::new(PfConfig::default())?;
//! let frame = Request::Version(VersionInfo::V1_1).to_frame(1);
//! pf.handle_mailbox(Instant::now(), VfId(0), &frame);
//! let Some(Effect::Reply { cookie, reply, .. }) = pf.poll_effect() else { panic!() };
//! assert_eq!((cookie, reply.status), (1, VirtchnlStatus::Success));
//! # Ok::<(), vfrig_device::Error>(())
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod control;
pub mod daemon;
pub mod engine;
mod error;
pub mod pf;
pub mod vhost;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use error::{Error, Result};
