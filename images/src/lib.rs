//! vfrig's image builder: the kernel and initramfs the rig boots.
//!
//! [`Builder::build`] turns an [`ImageSpec`] into an [`Image`]: a kernel and
//! a gzip-compressed newc initramfs in a content-addressed cache directory,
//! with a [`Manifest`] saying what is inside and where it came from.
//!
//! - **Kernel**: the newest `linux-image-6.12.N+deb12-{cloud-,}amd64`
//!   package apt offers (bookworm-security), fetched with `apt-get download`
//!   and unpacked with `dpkg-deb -x`, both without root; or a custom bzImage
//!   (its release read from the boot header) with an optional module tree.
//! - **Modules**: the wanted ones ([`Flavour::default_modules`]) and their
//!   dependencies from each module's `.modinfo`, decompressed, in load order
//!   in `/etc/vfrig/modules` ([`MODULES_LIST`]). Built-in ones are skipped.
//! - **Userland** (merged /usr): busybox-static's applets (except `ip` and
//!   `sh`), the host's dash as `/bin/sh` and iproute2's `/usr/sbin/ip` with
//!   the shared libraries and loader `ldd` names, `/etc/profile`, and the
//!   rig's static guest binaries in `/usr/bin`, the agent also as `/init`.
//! - **Kernel mutants** ([`MUTANTS`], `ImageSpec::mutants`): a stock module
//!   rebuilt out of tree from patched Debian sources (`images/mutants/`),
//!   carried at the stock module's path in its place; built and cached by
//!   [`Builder::build_mutant`] under `<cache root>/mutants/`.
//! - **Cache**: `<cache root>/images/<key>/{vmlinuz,initramfs.cpio.gz,manifest.json}`,
//!   keyed by everything above; downloads and unpacked packages are cached
//!   too. A rebuild with the same inputs is a cache hit that runs no apt
//!   command.
//!
//! [`Builder::bare`] builds the boot-time floor: the same kernel with an
//! initramfs that only powers the machine off. [`Builder::key`] tells the
//! key an image would get without building it, and
//! [`Builder::debian_kernel`] unpacks a Debian kernel package on its own
//! (for its release, its bzImage or its module tree). [`build_guest_binary`]
//! builds a workspace binary statically for the guest.
//!
//! Host tools used: `apt-cache`, `apt-get`, `dpkg-deb`, `dpkg`/`dpkg-query`
//! (package `apt`, `dpkg`), `ldd` (`libc-bin`), and the host's `dash` and
//! `iproute2`; for mutants also `tar`, `patch`, `make` and the kernel's
//! compiler. A missing one is an error naming the package to install.
//!
//! This crate does not boot anything (the harness does) and needs root
//! only to install the kernel headers and sources a mutant is built
//! against (without root it names the apt-get command instead). It downloads only from the distribution's package repositories,
//! through apt. Underneath, [`Initramfs`] writes reproducible archives: the
//! same entries always give the same bytes.
//!
//! ```no_run
//! use vfrig_images::{build_guest_binary, Builder, Flavour, ImageSpec};
//! # fn main() -> vfrig_images::Result<()> {
//! let workspace = std::path::Path::new(".");
//! let agent = build_guest_binary(
//!     workspace,
//!     "vfrig-agent",
//!     "vfrig-agent",
//!     &workspace.join("target/vfrig/guest"),
//!     |step| eprintln!("{step}"),
//! )?;
//! let image = Builder::new(workspace.join("target/vfrig"))
//!     .progress(|step| eprintln!("image: {step}"))
//!     .build(&ImageSpec::new(Flavour::Cloud).with_binary("vfrig-agent", agent))?;
//! println!(
//!     "boot {} with {} (uname -r: {}, {} modules)",
//!     image.kernel.display(),
//!     image.initramfs.display(),
//!     image.manifest.kernel.release,
//!     image.manifest.modules.len()
//! );
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod cache;
mod command;
mod debian;
mod error;
mod guest_binary;
pub mod initramfs;
mod kernel;
pub mod manifest;
mod modules;
pub mod mutant;
mod spec;
mod userland;

pub use builder::{
    Builder, DebianKernel, Image, FORMAT_VERSION, GZIP_LEVEL, MANIFEST_IN_IMAGE, MODULES_LIST,
};
pub use error::{Error, Result};
pub use guest_binary::{build_guest_binary, ensure_static, GUEST_TARGET};
pub use initramfs::{Entry, Initramfs};
pub use manifest::{
    BinaryInfo, KernelInfo, KernelSource, Manifest, ModuleEntry, MutantInfo, PackageInfo,
};
pub use mutant::{BuiltMutant, Mutant, MUTANTS};
pub use spec::{Flavour, GuestBinary, ImageSpec, AGENT_NAME};
