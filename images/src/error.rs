//! Errors of the image builder.
//!
//! Each message names what failed and, where a person can fix it, says how.
//! The underlying error, when there is one, is returned from `source()` and
//! not repeated in the message.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path in the initramfs is not a plain relative path.
    #[error("initramfs path {path:?} is not a relative path of normal components (no `..`, no empty parts)")]
    BadPath {
        /// The path as given.
        path: String,
    },
    /// Two entries want the same path, or a path goes through a non-directory.
    #[error("initramfs path {path:?} is already a {existing}; cannot add a {wanted} there")]
    Conflict {
        /// The path.
        path: String,
        /// What is there.
        existing: &'static str,
        /// What was being added.
        wanted: &'static str,
    },
    /// A file larger than newc can describe (4 GiB).
    #[error("initramfs file {path:?} is {len} bytes; newc archives hold files below 4 GiB")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        len: usize,
    },
    /// Writing the archive failed.
    #[error("could not write the initramfs")]
    Write(#[source] std::io::Error),

    /// A flavour name that is neither `cloud` nor `generic`.
    #[error("unknown kernel flavour {given:?}; use `cloud` or `generic`")]
    UnknownFlavour {
        /// What was given.
        given: String,
    },
    /// The spec asks for something inconsistent.
    #[error("invalid image spec: {reason}")]
    BadSpec {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("could not {action} {path}")]
    Io {
        /// What was being done ("read", "create directory", ...).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A host tool the builder runs is not installed.
    #[error("`{tool}` not found; install it with `apt-get install {package}`")]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A host tool could not be started for another reason than being absent.
    #[error("could not run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A host tool ran and failed.
    #[error("`{command}` failed ({status}){}; {hint}", stderr_suffix(.stderr))]
    ToolFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its standard error, if it was captured.
        stderr: String,
        /// What to check.
        hint: &'static str,
    },
    /// apt-cache knows no Debian kernel package of the wanted series.
    #[error(
        "apt-cache finds no package matching `{pattern}`; the package lists are stale or \
         bookworm-security is missing from the apt sources: run `apt-get update` (and add \
         `bookworm-security` to the sources if it is not there)"
    )]
    NoKernelPackage {
        /// The regular expression that was searched for.
        pattern: String,
    },
    /// apt-cache knows the package but offers no version to download.
    #[error("apt-cache has no candidate version of {package}; run `apt-get update` and check the apt sources")]
    NoCandidate {
        /// The package.
        package: String,
    },
    /// An unpacked package does not hold what it should.
    #[error("{what} not found in {dir}; delete that directory so the package is unpacked again")]
    NotInPackage {
        /// What was looked for.
        what: String,
        /// The unpacked tree.
        dir: PathBuf,
    },
    /// A kernel file is not an x86 bzImage.
    #[error("{path} is not an x86 bzImage ({reason}); pass the built `arch/x86/boot/bzImage`, not `vmlinux`")]
    NotABzImage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A wanted module, or a dependency of one, is not in the module tree.
    #[error("module {module}{} not found in {searched}; {hint}", needed_by_suffix(.needed_by))]
    ModuleNotFound {
        /// The module name (with `_`, as the kernel names it).
        module: String,
        /// The module that depends on it, if it was not asked for directly.
        needed_by: Option<String>,
        /// Where it was looked for (package and flavour, or a directory).
        searched: String,
        /// What to do.
        hint: String,
    },
    /// Module dependencies that loop.
    #[error("module dependencies form a cycle: {}; the module tree is inconsistent, rebuild its modules", .cycle.join(" -> "))]
    ModuleCycle {
        /// The modules on the loop, first one repeated at the end.
        cycle: Vec<String>,
    },
    /// A file that should be a kernel module is not one.
    #[error("{path} is not a loadable kernel module ({reason}); rebuild it or remove it from the module tree")]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A module compressed in a format the builder does not read.
    #[error("{path} is {format}-compressed, which the image builder does not read; build the kernel with CONFIG_MODULE_COMPRESS_XZ or CONFIG_MODULE_COMPRESS_NONE, or decompress the modules first")]
    UnsupportedCompression {
        /// The file.
        path: PathBuf,
        /// The format ("zstd").
        format: &'static str,
    },
    /// A module built for another kernel than the one in the image.
    #[error("module {path} was built for `{vermagic}`, not for the kernel release {release}; pass the modules built with that kernel")]
    VermagicMismatch {
        /// The module file.
        path: PathBuf,
        /// Its `vermagic=` field.
        vermagic: String,
        /// The kernel's release.
        release: String,
    },
    /// `ldd` cannot resolve a library a host tool needs.
    #[error("`ldd {binary}` cannot resolve {library}; install the package that provides it")]
    MissingLibrary {
        /// The host binary.
        binary: PathBuf,
        /// The library's name.
        library: String,
    },
    /// A file that should be an ELF executable is not one.
    #[error("{path} is not an ELF executable ({reason})")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A guest binary that needs a dynamic loader.
    #[error("{path} is dynamically linked (it has a PT_INTERP program header); build it for x86_64-unknown-linux-gnu with RUSTFLAGS='-C target-feature=+crt-static'")]
    NotStatic {
        /// The binary.
        path: PathBuf,
    },
    /// A kernel mutant name the registry does not know.
    #[error("unknown kernel mutant {given:?}; known mutants: {}", .known.join(", "))]
    UnknownMutant {
        /// What was given.
        given: String,
        /// The names the registry knows.
        known: Vec<String>,
    },
    /// The packages a kernel mutant is built against are not installed,
    /// and this process is not root, so it cannot install them.
    #[error(
        "kernel mutant {mutant} is built against packages that are not installed ({}); \
         run `{command}` as root, then build again",
        .missing.join(", ")
    )]
    MutantToolchainMissing {
        /// The mutant.
        mutant: &'static str,
        /// The missing packages, as `name=version`.
        missing: Vec<String>,
        /// The command that installs them.
        command: String,
    },
    /// A kernel mutant cannot be built here, for a reason other than a
    /// failing step.
    #[error("kernel mutant {mutant} cannot be built: {reason}")]
    MutantUnbuildable {
        /// The mutant.
        mutant: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A step of a kernel mutant's build failed. Its whole output is kept
    /// in `log`, next to the sources it worked on.
    #[error("building kernel mutant {mutant}: `{command}` failed ({status}); the full output is in {log}; {hint}{}", stderr_suffix(.tail))]
    MutantBuild {
        /// The mutant.
        mutant: &'static str,
        /// The command line that failed.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The log file with its output.
        log: PathBuf,
        /// The end of that output.
        tail: String,
        /// What to do.
        hint: String,
    },
    /// A finished cache entry that cannot be read back.
    #[error("cache entry {path} is unreadable ({reason}); delete it and build again")]
    CorruptCache {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

fn needed_by_suffix(needed_by: &Option<String>) -> String {
    match needed_by {
        Some(parent) => format!(" (needed by {parent})"),
        None => String::new(),
    }
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_failed_and_what_to_do() {
        let check = |err: Error, want: &str| assert_eq!(err.to_string(), want);
        check(
            Error::NoKernelPackage {
                pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$".into(),
            },
            r"apt-cache finds no package matching `^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$`; the package lists are stale or bookworm-security is missing from the apt sources: run `apt-get update` (and add `bookworm-security` to the sources if it is not there)",
        );
        check(
            Error::ToolMissing {
                tool: "dpkg-deb",
                package: "dpkg",
            },
            "`dpkg-deb` not found; install it with `apt-get install dpkg`",
        );
        check(
            Error::ModuleNotFound {
                module: "tls".into(),
                needed_by: Some("bonding".into()),
                searched: "/src/linux".into(),
                hint: "build it".into(),
            },
            "module tls (needed by bonding) not found in /src/linux; build it",
        );
        check(
            Error::ModuleCycle {
                cycle: vec!["a".into(), "b".into(), "a".into()],
            },
            "module dependencies form a cycle: a -> b -> a; the module tree is inconsistent, rebuild its modules",
        );
        check(
            Error::UnknownMutant {
                given: "bond-rr".into(),
                known: vec!["bond-rr-count-zero".into(), "other".into()],
            },
            "unknown kernel mutant \"bond-rr\"; known mutants: bond-rr-count-zero, other",
        );
        check(
            Error::MutantToolchainMissing {
                mutant: "m",
                missing: vec!["linux-headers-r=1".into(), "linux-source-6.12=1".into()],
                command: "apt-get install -y linux-headers-r linux-source-6.12=1".into(),
            },
            "kernel mutant m is built against packages that are not installed (linux-headers-r=1, linux-source-6.12=1); run `apt-get install -y linux-headers-r linux-source-6.12=1` as root, then build again",
        );
        let io = Error::io("read", "/x")(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(io.to_string(), "could not read /x");
        assert!(std::error::Error::source(&io).is_some());
    }
}
