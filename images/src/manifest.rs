//! [`Manifest`]: what an image holds and where each part came from.
//!
//! Written as `manifest.json` next to the image's kernel and initramfs, and
//! as `/etc/vfrig/manifest.json` inside the initramfs. The copy inside cannot
//! know the archive's own size, so it has no `initramfs_bytes`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Flavour;

/// Where the image's kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSource {
    /// A Debian `linux-image-*` package.
    Debian,
    /// A bzImage given in the spec.
    Custom,
}

/// The kernel an image boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// The Debian package (`linux-image-6.12.117+deb12-cloud-amd64`), for a
    /// Debian kernel.
    pub package: Option<String>,
    /// The package version (`6.12.117-1~deb12u1`), for a Debian kernel.
    pub version: Option<String>,
    /// What `uname -r` prints in the guest (`6.12.117+deb12-cloud-amd64`).
    pub release: String,
    /// The flavour of the spec (for a custom kernel it only chose the
    /// default modules).
    pub flavour: Flavour,
    /// Debian package or custom file.
    pub source: KernelSource,
    /// The custom kernel file as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// One module in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// The module's name as the kernel knows it (`8021q`, `net_failover`).
    pub name: String,
    /// Absolute path of the (decompressed) `.ko` in the guest.
    pub path_in_image: String,
    /// The modules it needs, from its `.modinfo` `depends=` field.
    pub depends: Vec<String>,
    /// The kernel mutant this file was built from, when the image carries
    /// one in place of the stock module (see [`Manifest::mutants`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutant: Option<String>,
}

/// A kernel mutant the image carries: a module rebuilt from patched
/// sources, loaded instead of the stock one (see [`crate::Mutant`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantInfo {
    /// The mutant's name (`bond-rr-count-zero`).
    pub name: String,
    /// The module it replaces (`bonding`).
    pub module: String,
    /// Its cache key: a hash of everything its build depends on (name,
    /// patch, release, source version, compiler).
    pub key: String,
    /// The kernel release it was built for (its `vermagic`).
    pub release: String,
    /// The version of `linux-source-6.12` it was built from.
    pub source_version: String,
    /// The compiler's version line, without the program name
    /// (`(Debian 12.2.0-14+deb12u1) 12.2.0`).
    pub compiler: String,
    /// SHA-256 of the patch, hex.
    pub patch_sha256: String,
}

/// A Debian package that files of the image came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageInfo {
    /// The package name (`busybox-static`, `libc6`).
    pub name: String,
    /// Its version.
    pub version: String,
}

/// A guest binary installed from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInfo {
    /// Its name under `/usr/bin`.
    pub name: String,
    /// SHA-256 of its contents, hex.
    pub sha256: String,
}

/// What an image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cache key the image is stored under.
    pub key: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// The modules, in load order (dependencies first). The same paths, in
    /// the same order, are in the image's `/etc/vfrig/modules`.
    pub modules: Vec<ModuleEntry>,
    /// Debian packages the userland came from, sorted by name.
    pub packages: Vec<PackageInfo>,
    /// Guest binaries, in the spec's order.
    pub binaries: Vec<BinaryInfo>,
    /// Kernel mutants, in the spec's order; each one's module is in
    /// `modules` with `mutant` set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutants: Vec<MutantInfo>,
    /// Entries in the initramfs: directories, files, links and device nodes.
    pub files: usize,
    /// Size of the compressed initramfs; absent in the copy inside the image.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub initramfs_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// The module with this name, if the image has it.
    pub fn module(&self, name: &str) -> Option<&ModuleEntry> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The kernel mutant with this name, if the image carries it.
    pub fn mutant(&self, name: &str) -> Option<&MutantInfo> {
        self.mutants.iter().find(|m| m.name == name)
    }

    /// The version of a package the image's files came from.
    pub fn package(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}
