//! vfrig's image builder: the kernel and initramfs the rig boots.
//!
//! This crate will fetch a versioned Debian 6.12 kernel package, pick the
//! modules the rig needs with their dependency closure, add busybox, iproute2
//! and the rig's own static guest binaries, write a compressed newc initramfs
//! in Rust, and cache the result content-addressed so an unchanged image is a
//! cache hit. It only ever downloads from the distribution's package
//! repositories.
//!
//! What exists so far: [`Initramfs`], the reproducible newc archive writer.
//! Fetching packages, choosing modules and caching come next.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod initramfs;

pub use error::{Error, Result};
pub use initramfs::{Entry, Initramfs};
