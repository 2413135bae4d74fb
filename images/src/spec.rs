//! What an image is built from: [`ImageSpec`], [`Flavour`], [`GuestBinary`].
//!
//! Plain data, no I/O. [`ImageSpec::validate`] checks what can be checked
//! without touching the disk.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Mutant, Result};

/// Name of the guest binary that is also the image's `/init`.
pub const AGENT_NAME: &str = "vfrig-agent";

/// Which Debian 6.12 kernel build the image boots.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// `linux-image-6.12.N+deb12-cloud-amd64`: small, boots fast, virtio
    /// drivers only (no e1000, e1000e, igb or igbvf). The default.
    #[default]
    Cloud,
    /// `linux-image-6.12.N+deb12-amd64`: the full driver set, including the
    /// emulated Intel NICs QEMU offers (e1000e for failover tests).
    Generic,
}

impl Flavour {
    /// Both flavours.
    pub const ALL: [Flavour; 2] = [Flavour::Cloud, Flavour::Generic];

    /// The modules an image of this flavour loads at boot unless the spec
    /// says otherwise (what [`ImageSpec::new`] puts in `modules_wanted`).
    pub fn default_modules(self) -> Vec<String> {
        /// What every scenario may use: TAP netdevs, VLAN uppers, bonds,
        /// failover pairs and virtio-net.
        const COMMON: [&str; 6] = [
            "tun",
            "8021q",
            "bonding",
            "failover",
            "net_failover",
            "virtio_net",
        ];
        let mut modules: Vec<String> = COMMON.iter().map(|m| (*m).to_owned()).collect();
        if self == Flavour::Generic {
            // The emulated NIC of failover scenarios; the cloud kernel lacks it.
            modules.push("e1000e".to_owned());
        }
        modules
    }

    /// What follows `linux-image-6.12.N+deb12` in the package name.
    pub(crate) fn package_suffix(self) -> &'static str {
        match self {
            Flavour::Cloud => "-cloud-amd64",
            Flavour::Generic => "-amd64",
        }
    }

    /// The apt-cache regular expression for this flavour's kernel packages.
    pub fn package_pattern(self) -> String {
        format!(
            "^linux-image-6\\.12\\.[0-9]+\\+deb12{}$",
            self.package_suffix()
        )
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Cloud => "cloud",
            Flavour::Generic => "generic",
        })
    }
}

impl FromStr for Flavour {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Flavour::ALL
            .into_iter()
            .find(|f| f.to_string() == s)
            .ok_or_else(|| Error::UnknownFlavour {
                given: s.to_owned(),
            })
    }
}

/// A static executable to install in the guest at `/usr/bin/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBinary {
    /// File name in the guest. The one named [`AGENT_NAME`] is also `/init`.
    pub name: String,
    /// Where it is on the host. The builder copies it and never runs it.
    pub path: PathBuf,
}

impl GuestBinary {
    /// A binary called `name`, read from `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
        }
    }
}

/// Everything that decides what goes into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Which Debian kernel build to boot (and which default modules to load).
    pub flavour: Flavour,
    /// A bzImage to boot instead of the Debian kernel.
    pub kernel: Option<PathBuf>,
    /// With `kernel`: a directory searched recursively for `*.ko` and
    /// `*.ko.xz` (a `lib/modules/<release>` tree or a kernel build
    /// directory). Without it, a custom kernel gets no modules at all.
    pub modules: Option<PathBuf>,
    /// Module names to load at boot, with their dependencies. `-` and `_`
    /// are the same, as for the kernel.
    pub modules_wanted: Vec<String>,
    /// Static binaries for the guest.
    pub guest_binaries: Vec<GuestBinary>,
    /// Kernel mutants ([`crate::MUTANTS`]) to carry instead of the stock
    /// modules they replace. Each is built against the image's Debian
    /// kernel, so they need `kernel` unset; a mutant's module is loaded at
    /// boot even when `modules_wanted` does not name it.
    pub mutants: Vec<String>,
}

impl ImageSpec {
    /// The Debian kernel of `flavour` with its default modules and no guest
    /// binaries.
    pub fn new(flavour: Flavour) -> Self {
        Self {
            flavour,
            kernel: None,
            modules: None,
            modules_wanted: flavour.default_modules(),
            guest_binaries: Vec::new(),
            mutants: Vec::new(),
        }
    }

    /// Adds a kernel mutant by name (see [`crate::MUTANTS`]).
    pub fn with_mutant(mut self, name: impl Into<String>) -> Self {
        self.mutants.push(name.into());
        self
    }

    /// Adds a guest binary.
    pub fn with_binary(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.guest_binaries.push(GuestBinary::new(name, path));
        self
    }

    /// Boots `kernel` instead of the Debian kernel, with modules from
    /// `modules` if given.
    pub fn with_kernel(mut self, kernel: impl Into<PathBuf>, modules: Option<PathBuf>) -> Self {
        self.kernel = Some(kernel.into());
        self.modules = modules;
        self
    }

    /// Checks what can be checked without the disk: binary names are plain
    /// file names and unique, `modules` comes with `kernel`, module names are
    /// not empty, mutants are known ([`Error::UnknownMutant`] lists the
    /// known ones), listed once, replace different modules and come without
    /// `kernel`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::BadSpec { reason });
        if self.modules.is_some() && self.kernel.is_none() {
            return bad(
                "`modules` is set without `kernel`; the Debian kernel brings its own modules, \
                 so pass a module directory only together with a custom kernel"
                    .to_owned(),
            );
        }
        let mut names = BTreeSet::new();
        for binary in &self.guest_binaries {
            let name = &binary.name;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return bad(format!(
                    "guest binary name {name:?} must be a plain file name (it becomes /usr/bin/{name})"
                ));
            }
            if !names.insert(name.as_str()) {
                return bad(format!("guest binary {name:?} is listed twice"));
            }
        }
        if let Some(empty) = self.modules_wanted.iter().find(|m| m.trim().is_empty()) {
            return bad(format!("module name {empty:?} is empty"));
        }
        let mut replaced: Vec<&Mutant> = Vec::new();
        for name in &self.mutants {
            let mutant = crate::mutant::lookup(name)?;
            if let Some(other) = replaced.iter().find(|m| m.module == mutant.module) {
                return bad(if other.name == mutant.name {
                    format!("mutant {name:?} is listed twice")
                } else {
                    format!(
                        "mutants {:?} and {name:?} both replace module {}; an image carries one",
                        other.name, mutant.module
                    )
                });
            }
            replaced.push(mutant);
        }
        if !self.mutants.is_empty() && self.kernel.is_some() {
            return bad(
                "mutants are built against the headers of the Debian kernel the image boots; \
                 drop `kernel` (build the mutant into your own kernel's module tree instead) \
                 or drop the mutants"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_print_and_parse_as_their_lowercase_names() {
        for flavour in Flavour::ALL {
            let text = flavour.to_string();
            assert_eq!(text.parse::<Flavour>().expect("parses"), flavour);
            assert_eq!(
                serde_json::to_string(&flavour).expect("serialises"),
                format!("\"{text}\"")
            );
        }
        let err = "Cloud".parse::<Flavour>().expect_err("case matters");
        assert_eq!(
            err.to_string(),
            "unknown kernel flavour \"Cloud\"; use `cloud` or `generic`"
        );
    }

    #[test]
    fn generic_loads_what_cloud_loads_plus_e1000e() {
        let cloud = Flavour::Cloud.default_modules();
        let generic = Flavour::Generic.default_modules();
        assert_eq!(&generic[..cloud.len()], cloud);
        assert_eq!(&generic[cloud.len()..], ["e1000e"]);
        assert_eq!(
            ImageSpec::new(Flavour::Cloud).modules_wanted,
            [
                "tun",
                "8021q",
                "bonding",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn specs_with_bad_names_or_stray_modules_are_refused() {
        let check = |spec: ImageSpec, want: Option<&str>| {
            let got = spec.validate().err().map(|e| e.to_string());
            match (got, want) {
                (None, None) => {}
                (Some(got), Some(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        };
        let spec = ImageSpec::new(Flavour::Cloud);
        check(spec.clone().with_binary("vfrig-agent", "/x"), None);
        check(
            spec.clone().with_binary("a/b", "/x"),
            Some("plain file name"),
        );
        check(spec.clone().with_binary("", "/x"), Some("plain file name"));
        check(
            spec.clone().with_binary("a", "/x").with_binary("a", "/y"),
            Some("listed twice"),
        );
        let mut stray = spec.clone();
        stray.modules = Some("/m".into());
        check(stray, Some("without `kernel`"));
        check(spec.clone().with_kernel("/k", Some("/m".into())), None);

        check(spec.clone().with_mutant("bond-rr-count-zero"), None);
        check(
            spec.clone()
                .with_mutant("bond-rr-count-zero")
                .with_mutant("bond-rr-count-zero"),
            Some("listed twice"),
        );
        check(
            spec.clone()
                .with_mutant("bond-rr-count-zero")
                .with_kernel("/k", None),
            Some("drop `kernel`"),
        );
        let err = spec
            .with_mutant("no-such-mutant")
            .validate()
            .expect_err("unknown");
        assert!(
            matches!(&err, Error::UnknownMutant { given, known }
                if given == "no-such-mutant" && known.iter().any(|k| k == "bond-rr-count-zero")),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("known mutants: bond-rr-count-zero"),
            "{err}"
        );
    }
}
