//! Getting a bootable image: the static guest binaries, then the cached
//! kernel + initramfs from [`vfrig_images`].

use std::path::PathBuf;

use vfrig_images::{Builder, Flavour, GuestBinary, Image, ImageSpec};

/// Which image to boot.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Debian kernel flavour (ignored with `kernel`).
    pub flavour: Flavour,
    /// A bzImage to boot instead of the Debian kernel.
    pub kernel: Option<PathBuf>,
    /// Modules for `kernel` (a directory searched for `.ko` files).
    pub modules: Option<PathBuf>,
    /// Kernel mutants to carry instead of the stock modules they replace
    /// (names from [`vfrig_images::MUTANTS`], such as `bond-rr-count-zero`).
    /// Built against the Debian kernel, so not with `kernel`.
    pub mutants: Vec<String>,
}

/// Image preparation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Building a static guest binary or the image failed.
    #[error(transparent)]
    Build(#[from] vfrig_images::Error),
    /// The build lock could not be taken.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds (or finds in the cache) the image: the guest agent and the VF
/// driver as static binaries, then kernel, modules (with `opts.mutants` in
/// place of their stock modules) and initramfs. Concurrent callers
/// (parallel tests) wait for each other on a lock file.
pub fn prepare(opts: &ImageOptions) -> Result<Image, ImageError> {
    let rig = crate::paths::rig_dir();
    let _lock = lock(&rig)?;
    let progress = |msg: &str| crate::ui::say(msg);
    let guest = |package: &str, bin: &str| {
        vfrig_images::build_guest_binary(
            &crate::paths::workspace_root(),
            package,
            bin,
            &crate::paths::target_dir().join("guest"),
            progress,
        )
    };
    let agent = guest("vfrig-agent", "vfrig-agent")?;
    let driver = guest("vfrig-guest-driver", "vfrig-driver")?;
    let spec = ImageSpec {
        flavour: opts.flavour,
        kernel: opts.kernel.clone(),
        modules: opts.modules.clone(),
        modules_wanted: opts.flavour.default_modules(),
        guest_binaries: vec![
            GuestBinary {
                name: "vfrig-agent".into(),
                path: agent,
            },
            GuestBinary {
                name: "vfrig-driver".into(),
                path: driver,
            },
        ],
        mutants: opts.mutants.clone(),
    };
    let image = Builder::new(&rig).progress(progress).build(&spec)?;
    Ok(image)
}

/// The bare image of the same kernel (busybox `init` that powers off at
/// once): the floor for boot-time benchmarks. It has no modules, so
/// `opts.mutants` does not apply.
pub fn prepare_bare(opts: &ImageOptions) -> Result<Image, ImageError> {
    let rig = crate::paths::rig_dir();
    let _lock = lock(&rig)?;
    let spec = ImageSpec {
        flavour: opts.flavour,
        kernel: opts.kernel.clone(),
        modules: opts.modules.clone(),
        modules_wanted: Vec::new(),
        guest_binaries: Vec::new(),
        mutants: Vec::new(),
    };
    Ok(Builder::new(&rig)
        .progress(|msg: &str| crate::ui::say(msg))
        .bare(&spec)?)
}

fn lock(rig: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let path = rig.join("build.lock");
    let fail = |source: std::io::Error| ImageError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(rig).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| fail(errno.into()))
}
