//! Test doubles shared by this crate's tests and other crates' tests
//! (feature `test-support`).
//!
//! - [`TestFrontend`] plays QEMU on a VF's vhost-user socket: memfd guest
//!   memory, negotiation, four split rings driven from the driver side.
//! - [`LoopbackPort`] is a [`VfPort`](crate::vhost::VfPort) that sends every
//!   transmitted frame back on the same pair.
//! - [`TestDir`] is a private temporary directory removed on drop.
//! - [`scaled`] stretches timeouts by `VFRIG_TIMEOUT_SCALE` for slow hosts.

use std::time::Duration;

mod dir;
mod frontend;
mod loopback;
mod ring;

pub use dir::TestDir;
pub use frontend::{
    FrontendError, FrontendOptions, Negotiated, RingAddrs, TestFrontend, GUEST_BASE, GUEST_SIZE,
};
pub use loopback::{LoopbackPort, LoopbackStats};
pub use ring::RawDesc;

/// `base` multiplied by `VFRIG_TIMEOUT_SCALE` (a positive number, default
/// 1), for runs on slow or emulated hosts.
pub fn scaled(base: Duration) -> Duration {
    let scale = std::env::var("VFRIG_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(scale)
}
