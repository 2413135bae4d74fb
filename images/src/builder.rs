//! [`Builder`]: resolves an [`ImageSpec`] to a cache key, and on a miss
//! fetches the kernel and busybox packages, picks the modules, assembles
//! the initramfs and stores the result under `<cache root>/images/<key>/`.
//!
//! The key covers everything that decides the image's bytes: this builder's
//! format, the flavour, the kernel package and version (or the custom
//! kernel's SHA-256 and a stamp of its module tree), the wanted modules,
//! busybox's version, the SHA-256 of every host file copied (dash, ip and
//! their libraries) and of every guest binary, and each kernel mutant's
//! name and key (see [`crate::mutant`]). An image directory appears only
//! once complete (see [`crate::cache`]), so finding its manifest is a
//! cache hit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{self, KeyHasher, TempDir};
use crate::debian::{self, megabytes, Candidate, Debian};
use crate::kernel::bzimage_release;
use crate::manifest::{BinaryInfo, KernelInfo, KernelSource, Manifest, ModuleEntry, PackageInfo};
use crate::modules::{load_order, LoadedModule, ModuleTree, OrderError, TreeLoader};
use crate::mutant::{self, BuiltMutant};
use crate::spec::AGENT_NAME;
use crate::userland::{self, merged_usr, HostTools};
use crate::{Error, Flavour, ImageSpec, Initramfs, Result};

/// Bump when what the builder puts into an image changes, so old cache
/// entries are not reused.
pub const FORMAT_VERSION: u32 = 2;

/// The file layout the key covers (merged /usr, busybox applets, dash as
/// /bin/sh, iproute2's ip, /init → the agent).
const LAYOUT: &str = "merged-usr busybox dash iproute2 init=agent";

/// The busybox package. Its static build needs no libraries.
const BUSYBOX: &str = "busybox-static";

/// gzip level of the initramfs. Level 1 writes about 6x faster than level 6
/// for about 15% more bytes, and the kernel unpacks either equally fast.
pub const GZIP_LEVEL: u32 = 1;

/// Where the guest agent reads which modules to load: one module per line
/// in load order, its absolute path and, after a space, the comma-separated
/// modules it depends on. Must equal `vfrig_agent::proto::MODULES_LIST` (this
/// crate does not depend on the agent's).
pub const MODULES_LIST: &str = "/etc/vfrig/modules";

/// Where the image carries its own manifest.
pub const MANIFEST_IN_IMAGE: &str = "/etc/vfrig/manifest.json";

/// File names inside an image directory.
const KERNEL_FILE: &str = "vmlinuz";
const INITRAMFS_FILE: &str = "initramfs.cpio.gz";
const MANIFEST_FILE: &str = "manifest.json";

/// A built (or cached) image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image's directory in the cache.
    pub dir: PathBuf,
    /// The kernel, for QEMU's `-kernel`.
    pub kernel: PathBuf,
    /// The gzip-compressed initramfs, for QEMU's `-initrd`.
    pub initramfs: PathBuf,
    /// What the image holds.
    pub manifest: Manifest,
    /// Whether it came from the cache unchanged.
    pub cache_hit: bool,
}

/// A Debian kernel package, unpacked in the cache.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// The package (`linux-image-6.12.117+deb12-cloud-amd64`).
    pub package: String,
    /// Its version (`6.12.117-1~deb12u1`).
    pub version: String,
    /// The kernel release (`6.12.117+deb12-cloud-amd64`).
    pub release: String,
    /// The bzImage (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules_dir: PathBuf,
}

type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Builds and caches images. Cheap to create; holds no open files.
#[derive(Clone)]
pub struct Builder {
    cache_root: PathBuf,
    progress: Progress,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("cache_root", &self.cache_root)
            .finish_non_exhaustive()
    }
}

/// Where the kernel comes from, before anything is downloaded.
enum KernelPlan {
    Debian(Candidate),
    Custom {
        path: PathBuf,
        sha256: String,
        release: String,
        modules: Option<ModuleTree>,
    },
}

/// A kernel ready to go into an image.
struct Kernel {
    vmlinuz: PathBuf,
    info: KernelInfo,
    modules: Option<ModuleTree>,
    /// For errors: where modules were looked for, and what to do.
    searched: String,
    hint: String,
}

/// The inputs of a full image, resolved and hashed.
struct Prepared {
    key: String,
    busybox: Candidate,
    plan: KernelPlan,
    host: HostTools,
    binaries: Vec<(BinaryInfo, Vec<u8>)>,
    wanted: Vec<String>,
    mutants: Vec<mutant::Plan>,
}

impl Builder {
    /// A builder caching under `cache_root` (for example
    /// `<workspace>/target/vfrig`).
    pub fn new(cache_root: impl Into<PathBuf>) -> Self {
        Self {
            cache_root: cache_root.into(),
            progress: Arc::new(|_: &str| {}),
        }
    }

    /// Reports each step (`downloading linux-image-… (34.3 MB)`, `modules:
    /// 11 (closure of 6)`, `cache hit <key>`) to `f`. Steps are also logged
    /// at `info` level through `tracing`.
    pub fn progress(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.progress = Arc::new(f);
        self
    }

    /// The cache root.
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }

    fn say(&self, step: &str) {
        tracing::info!(step, "image builder");
        (self.progress)(step);
    }

    fn debian(&self) -> Debian<'_, impl Fn(&str) + '_> {
        Debian {
            cache_root: &self.cache_root,
            progress: move |step: &str| self.say(step),
        }
    }

    /// The newest Debian 6.12 kernel of `flavour`, downloaded and unpacked
    /// in the cache.
    pub fn debian_kernel(&self, flavour: Flavour) -> Result<DebianKernel> {
        let resolved = self.debian().resolve(Some(flavour), &[])?;
        let candidate = resolved.kernel.ok_or(Error::NoKernelPackage {
            pattern: flavour.package_pattern(),
        })?;
        self.unpack_debian_kernel(&candidate)
    }

    fn unpack_debian_kernel(&self, candidate: &Candidate) -> Result<DebianKernel> {
        let tree = self.debian().unpacked(candidate)?;
        let boot = tree.join("boot");
        let not_found = || Error::NotInPackage {
            what: "boot/vmlinuz-*".to_owned(),
            dir: tree.clone(),
        };
        let entries = std::fs::read_dir(&boot).map_err(|_| not_found())?;
        let vmlinuz = entries
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .ok_or_else(not_found)?;
        let release = read_release(&vmlinuz)?;
        let modules_dir = tree.join("lib/modules").join(&release);
        if !modules_dir.is_dir() {
            return Err(Error::NotInPackage {
                what: format!("lib/modules/{release}"),
                dir: tree,
            });
        }
        Ok(DebianKernel {
            package: candidate.package.clone(),
            version: candidate.version.clone(),
            release,
            vmlinuz,
            modules_dir,
        })
    }

    /// The kernel mutant `name` (see [`crate::MUTANTS`]) built for the
    /// Debian kernel `release` (`6.12.117+deb12-cloud-amd64`) from
    /// `linux-source-6.12` at `source_version` (the kernel package's
    /// version, `6.12.117-1~deb12u1`; [`DebianKernel`] has both), or found
    /// in `<cache root>/mutants/`. As root, missing headers and sources are
    /// installed with apt-get; otherwise the error says what to run.
    pub fn build_mutant(
        &self,
        name: &str,
        release: &str,
        source_version: &str,
    ) -> Result<BuiltMutant> {
        let plan = mutant::Plan::new(mutant::lookup(name)?, release, source_version);
        mutant::build(&self.cache_root, &plan, &|step: &str| self.say(step))
    }

    /// The image for `spec`: from the cache if an identical one was built
    /// before, else built now (see the crate docs for what goes in).
    pub fn build(&self, spec: &ImageSpec) -> Result<Image> {
        let Prepared {
            key,
            busybox,
            plan,
            host,
            binaries,
            wanted,
            mutants,
        } = self.prepare(spec)?;
        if let Some(image) = self.cached(&key)? {
            return Ok(image);
        }

        self.say(&format!("building image {key}"));
        self.prefetch(&plan, &busybox)?;
        let kernel = self.kernel(plan, spec.flavour)?;
        let release = kernel.info.release.clone();
        let mut built_mutants = Vec::with_capacity(mutants.len());
        for plan in &mutants {
            if plan.release != release {
                return Err(Error::MutantUnbuildable {
                    mutant: plan.mutant.name,
                    reason: format!(
                        "the kernel package {} boots release {release}, not the {} its name \
                         promises; delete its unpacked directory under {} and build again",
                        kernel.info.package.as_deref().unwrap_or_default(),
                        plan.release,
                        self.cache_root.join("pkgs").display()
                    ),
                });
            }
            built_mutants.push(mutant::build(&self.cache_root, plan, &|step: &str| {
                self.say(step)
            })?);
        }
        let overrides: Vec<(&str, &BuiltMutant)> = built_mutants
            .iter()
            .map(|m| (m.info.module.as_str(), m))
            .collect();
        let modules = match &kernel.modules {
            Some(tree) => self.select_modules(
                tree,
                &wanted,
                &overrides,
                &release,
                &kernel.searched,
                &kernel.hint,
            )?,
            None => {
                self.say("no module directory for the custom kernel: the image carries no modules and the agent loads none");
                Vec::new()
            }
        };
        let busybox_tree = self.debian().unpacked(&busybox)?;
        let busybox_bin = busybox_tree.join("bin/busybox");
        let applets = list_applets(&busybox_bin)?;

        self.say("collecting package versions with dpkg");
        let owned: Vec<(PathBuf, PathBuf)> = host
            .files
            .iter()
            .map(|f| (f.host_path.clone(), f.real_path.clone()))
            .collect();
        let mut packages = debian::owners(&owned)?;
        packages.push(PackageInfo {
            name: busybox.package.clone(),
            version: busybox.version.clone(),
        });
        packages.sort();
        packages.dedup();

        let mut fs = Initramfs::new();
        userland::base_layout(&mut fs)?;
        host.install(&mut fs)?;
        for (info, data) in &binaries {
            fs.file(&format!("usr/bin/{}", info.name), 0o755, data.clone())?;
        }
        // The kernel follows the link when it runs /init.
        fs.symlink("init", &format!("/usr/bin/{AGENT_NAME}"))?;
        install_busybox(&mut fs, &busybox_bin, &applets)?;
        fs.file("etc/profile", 0o644, userland::PROFILE)?;

        let mut entries = Vec::new();
        let mut list = String::new();
        for (name, module) in modules {
            let rel = module.rel.to_string_lossy().replace('\\', "/");
            let path_in_image = format!("/lib/modules/{release}/{rel}");
            fs.file(&merged_usr(&path_in_image), 0o644, module.data)?;
            // `PATH DEP,DEP`: the agent loads modules in parallel, each
            // after its dependencies.
            list.push_str(&path_in_image);
            if !module.info.depends.is_empty() {
                list.push(' ');
                list.push_str(&module.info.depends.join(","));
            }
            list.push('\n');
            let mutant = overrides
                .iter()
                .find(|(module, _)| *module == name)
                .map(|(_, built)| built.info.name.clone());
            entries.push(ModuleEntry {
                name,
                path_in_image,
                depends: module.info.depends,
                mutant,
            });
        }
        fs.file(MODULES_LIST, 0o644, list)?;

        let manifest = Manifest {
            key: key.clone(),
            kernel: kernel.info,
            modules: entries,
            packages,
            binaries: binaries.into_iter().map(|(info, _)| info).collect(),
            mutants: built_mutants.into_iter().map(|m| m.info).collect(),
            files: 0,
            initramfs_bytes: 0,
        };
        self.store(&key, &kernel.vmlinuz, fs, manifest)
    }

    /// The cache key [`Builder::build`] would use for `spec`, without
    /// building anything (it resolves package versions and hashes the
    /// inputs, as a cache lookup does).
    pub fn key(&self, spec: &ImageSpec) -> Result<String> {
        Ok(self.prepare(spec)?.key)
    }

    /// Everything up to the cache key: cheap when apt's answers are
    /// remembered.
    fn prepare(&self, spec: &ImageSpec) -> Result<Prepared> {
        spec.validate()?;
        if !spec.guest_binaries.iter().any(|b| b.name == AGENT_NAME) {
            return Err(Error::BadSpec {
                reason: format!(
                    "no guest binary named `{AGENT_NAME}`; the image's /init is that binary: \
                     add it to guest_binaries (build it with build_guest_binary)"
                ),
            });
        }
        let resolved = self
            .debian()
            .resolve(spec.kernel.is_none().then_some(spec.flavour), &[BUSYBOX])?;
        let busybox = first(resolved.packages)?;
        let plan = self.plan_kernel(spec, resolved.kernel, true)?;
        let host = HostTools::collect()?;
        let mut binaries = Vec::new();
        for binary in &spec.guest_binaries {
            let data = std::fs::read(&binary.path).map_err(Error::io("read", &binary.path))?;
            let info = BinaryInfo {
                name: binary.name.clone(),
                sha256: cache::sha256_hex(&data),
            };
            binaries.push((info, data));
        }
        let mutants = plan_mutants(spec, &plan)?;
        let mut wanted: Vec<String> = Vec::new();
        // A mutant's module loads even if the spec does not ask for it.
        for name in spec
            .modules_wanted
            .iter()
            .map(String::as_str)
            .chain(mutants.iter().map(|m| m.mutant.module))
            .map(crate::modules::normalise)
        {
            if !wanted.contains(&name) {
                wanted.push(name);
            }
        }
        let host_files: Vec<(String, String)> = host
            .files
            .iter()
            .map(|f| (f.image_path.clone(), cache::sha256_hex(&f.data)))
            .collect();
        let infos: Vec<BinaryInfo> = binaries.iter().map(|(info, _)| info.clone()).collect();
        let mutant_keys: Vec<(String, String)> = mutants
            .iter()
            .map(|m| (m.mutant.name.to_owned(), m.key.clone()))
            .collect();
        let key = image_key(&KeyInputs {
            flavour: spec.flavour,
            busybox: &busybox.version,
            kernel: kernel_fields(&plan),
            wanted: &wanted,
            host_files: &host_files,
            binaries: &infos,
            mutants: &mutant_keys,
        });
        Ok(Prepared {
            key,
            busybox,
            plan,
            host,
            binaries,
            wanted,
            mutants,
        })
    }

    /// The boot-time floor image for `spec`'s kernel: busybox and an /init
    /// script that powers off at once (`/bin/busybox poweroff -f`). No
    /// modules, no userland (so `spec.mutants` does not apply). Cached like
    /// [`Builder::build`]'s images, under other keys.
    pub fn bare(&self, spec: &ImageSpec) -> Result<Image> {
        spec.validate()?;
        let resolved = self
            .debian()
            .resolve(spec.kernel.is_none().then_some(spec.flavour), &[BUSYBOX])?;
        let busybox = first(resolved.packages)?;
        let plan = self.plan_kernel(spec, resolved.kernel, false)?;
        let mut key = KeyHasher::new("bare");
        key.field("format", FORMAT_VERSION.to_string())
            .field("init", BARE_INIT)
            .field("busybox", &busybox.version);
        for (label, value) in kernel_fields(&plan) {
            key.field(&label, value);
        }
        let key = key.finish();
        if let Some(image) = self.cached(&key)? {
            return Ok(image);
        }

        self.say(&format!("building bare image {key}"));
        self.prefetch(&plan, &busybox)?;
        let kernel = self.kernel(plan, spec.flavour)?;
        let busybox_tree = self.debian().unpacked(&busybox)?;
        let busybox_bin = busybox_tree.join("bin/busybox");
        let mut fs = Initramfs::new();
        userland::base_layout(&mut fs)?;
        install_busybox(&mut fs, &busybox_bin, &[])?;
        fs.symlink(&merged_usr("/bin/sh"), "busybox")?;
        fs.file("init", 0o755, BARE_INIT)?;
        let manifest = Manifest {
            key: key.clone(),
            kernel: kernel.info,
            modules: Vec::new(),
            packages: vec![PackageInfo {
                name: busybox.package.clone(),
                version: busybox.version.clone(),
            }],
            binaries: Vec::new(),
            mutants: Vec::new(),
            files: 0,
            initramfs_bytes: 0,
        };
        self.store(&key, &kernel.vmlinuz, fs, manifest)
    }

    /// Downloads the packages a build needs in one go.
    fn prefetch(&self, plan: &KernelPlan, busybox: &Candidate) -> Result<()> {
        let mut wanted = vec![busybox];
        if let KernelPlan::Debian(kernel) = plan {
            wanted.insert(0, kernel);
        }
        self.debian().prefetch(&wanted)
    }

    /// The finished image stored under `key`, if there is one.
    fn cached(&self, key: &str) -> Result<Option<Image>> {
        let dir = self.cache_root.join("images").join(key);
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read(&manifest_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &manifest_path)(e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| Error::CorruptCache {
                path: dir.clone(),
                reason: format!("bad {MANIFEST_FILE}: {e}"),
            })?;
        let image = Image {
            kernel: dir.join(KERNEL_FILE),
            initramfs: dir.join(INITRAMFS_FILE),
            dir,
            manifest,
            cache_hit: true,
        };
        for file in [&image.kernel, &image.initramfs] {
            if !file.is_file() {
                return Err(Error::CorruptCache {
                    path: image.dir,
                    reason: format!("{} is missing", file.display()),
                });
            }
        }
        self.say(&format!("cache hit {key}"));
        Ok(Some(image))
    }

    /// Decides the kernel without downloading: a Debian candidate, or the
    /// custom file read, hashed and its release found (and its module tree
    /// indexed, if `with_modules`).
    fn plan_kernel(
        &self,
        spec: &ImageSpec,
        debian: Option<Candidate>,
        with_modules: bool,
    ) -> Result<KernelPlan> {
        let Some(path) = &spec.kernel else {
            let candidate = debian.ok_or(Error::NoKernelPackage {
                pattern: spec.flavour.package_pattern(),
            })?;
            return Ok(KernelPlan::Debian(candidate));
        };
        let data = std::fs::read(path).map_err(Error::io("read", path))?;
        let release = bzimage_release(&data).map_err(|reason| Error::NotABzImage {
            path: path.clone(),
            reason,
        })?;
        let modules = match (&spec.modules, with_modules) {
            (Some(dir), true) => {
                // A lib/modules directory holding one tree per release.
                let nested = dir.join(&release);
                let root = if nested.is_dir() { nested } else { dir.clone() };
                Some(ModuleTree::scan(&root)?)
            }
            _ => None,
        };
        Ok(KernelPlan::Custom {
            path: path.clone(),
            sha256: cache::sha256_hex(&data),
            release,
            modules,
        })
    }

    /// Downloads and unpacks a Debian kernel, or takes the custom one.
    fn kernel(&self, plan: KernelPlan, flavour: Flavour) -> Result<Kernel> {
        match plan {
            KernelPlan::Debian(candidate) => {
                let unpacked = self.unpack_debian_kernel(&candidate)?;
                self.say(&format!(
                    "kernel {} {} (release {})",
                    unpacked.package, unpacked.version, unpacked.release
                ));
                let tree = ModuleTree::scan(&unpacked.modules_dir)?;
                let hint = match flavour {
                    Flavour::Cloud => "the cloud flavour has no e1000, e1000e, igb or igbvf: use the generic flavour, or drop the module from modules_wanted",
                    Flavour::Generic => "check the module's name, or drop it from modules_wanted",
                };
                Ok(Kernel {
                    vmlinuz: unpacked.vmlinuz,
                    info: KernelInfo {
                        package: Some(unpacked.package.clone()),
                        version: Some(unpacked.version),
                        release: unpacked.release,
                        flavour,
                        source: KernelSource::Debian,
                        path: None,
                    },
                    modules: Some(tree),
                    searched: format!("{} ({flavour} flavour)", unpacked.package),
                    hint: hint.to_owned(),
                })
            }
            KernelPlan::Custom {
                path,
                release,
                modules,
                ..
            } => {
                self.say(&format!(
                    "custom kernel {} (release {release})",
                    path.display()
                ));
                let searched = modules
                    .as_ref()
                    .map(|t| t.root.display().to_string())
                    .unwrap_or_default();
                Ok(Kernel {
                    vmlinuz: path.clone(),
                    info: KernelInfo {
                        package: None,
                        version: None,
                        release,
                        flavour,
                        source: KernelSource::Custom,
                        path: Some(path),
                    },
                    modules,
                    searched,
                    hint: "build it as a module (=m) into that directory, or drop it from modules_wanted"
                        .to_owned(),
                })
            }
        }
    }

    /// The closure of `wanted` in load order, read from `tree`, with each
    /// mutant's module in place of the stock one.
    fn select_modules(
        &self,
        tree: &ModuleTree,
        wanted: &[String],
        mutants: &[(&str, &BuiltMutant)],
        release: &str,
        searched: &str,
        hint: &str,
    ) -> Result<Vec<(String, LoadedModule)>> {
        let mut loader = TreeLoader::new(tree);
        for (module, built) in mutants {
            loader = loader.with_override(module, built.ko.clone());
        }
        let order = load_order(wanted, &mut loader).map_err(|e| match e {
            OrderError::Missing { module, needed_by } => Error::ModuleNotFound {
                module,
                needed_by,
                searched: searched.to_owned(),
                hint: hint.to_owned(),
            },
            OrderError::Cycle(cycle) => Error::ModuleCycle { cycle },
            OrderError::Source(e) => e,
        })?;
        for name in wanted {
            if !tree.files.contains_key(name) && tree.builtin.contains(name) {
                self.say(&format!(
                    "module {name} is built into the kernel; nothing to load"
                ));
            }
        }
        self.say(&format!(
            "modules: {} (closure of {})",
            order.len(),
            wanted.len()
        ));
        let mut out = Vec::with_capacity(order.len());
        for name in order {
            let module = loader
                .loaded
                .remove(&name)
                .expect("load_order only returns modules the loader read");
            if let Some(vermagic) = &module.info.vermagic {
                if vermagic.split_whitespace().next() != Some(release) {
                    return Err(Error::VermagicMismatch {
                        path: module.path,
                        vermagic: vermagic.clone(),
                        release: release.to_owned(),
                    });
                }
            }
            out.push((name, module));
        }
        Ok(out)
    }

    /// Writes the image into a temporary directory and renames it to
    /// `images/<key>`.
    fn store(
        &self,
        key: &str,
        vmlinuz: &Path,
        mut fs: Initramfs,
        mut manifest: Manifest,
    ) -> Result<Image> {
        let images = self.cache_root.join("images");
        let tmp = TempDir::new_in(&images, key)?;

        // The copy inside counts itself (and its directory) but cannot know
        // the archive's size.
        fs.dir("etc/vfrig", 0o755)?;
        manifest.files = fs.len() + usize::from(!fs.contains(MANIFEST_IN_IMAGE));
        let inner =
            serde_json::to_vec_pretty(&manifest).expect("the manifest has only string keys");
        fs.file(MANIFEST_IN_IMAGE, 0o644, inner)?;

        self.say("writing initramfs");
        let started = Instant::now();
        let initramfs = tmp.path().join(INITRAMFS_FILE);
        let file = std::fs::File::create(&initramfs).map_err(Error::io("create", &initramfs))?;
        let mut out = fs.write_gzip_level(std::io::BufWriter::new(file), GZIP_LEVEL)?;
        out.flush().map_err(Error::Write)?;
        drop(out);
        manifest.initramfs_bytes = std::fs::metadata(&initramfs)
            .map_err(Error::io("inspect", &initramfs))?
            .len();
        self.say(&format!(
            "initramfs: {} entries, {} compressed, in {:.1} s",
            manifest.files,
            megabytes(manifest.initramfs_bytes),
            started.elapsed().as_secs_f64()
        ));

        // A Debian kernel is linked from the unpacked package, which nothing
        // changes; a custom one is copied, since a kernel build may rewrite
        // its bzImage in place.
        let kernel_copy = tmp.path().join(KERNEL_FILE);
        let linked = manifest.kernel.source == KernelSource::Debian
            && std::fs::hard_link(vmlinuz, &kernel_copy).is_ok();
        if !linked {
            std::fs::copy(vmlinuz, &kernel_copy).map_err(Error::io("copy", vmlinuz))?;
        }
        let manifest_path = tmp.path().join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(&manifest).expect("the manifest has only string keys");
        std::fs::write(&manifest_path, json).map_err(Error::io("write", &manifest_path))?;

        let dir = images.join(key);
        if !tmp.publish(&dir)? {
            // Another process finished the same image first; its bytes are
            // the same.
            tracing::debug!(key, "image built concurrently elsewhere");
        }
        Ok(Image {
            kernel: dir.join(KERNEL_FILE),
            initramfs: dir.join(INITRAMFS_FILE),
            dir,
            manifest,
            cache_hit: false,
        })
    }
}

/// The bare image's /init.
const BARE_INIT: &str = "#!/bin/busybox sh\n/bin/busybox poweroff -f\n";

fn first(packages: Vec<Candidate>) -> Result<Candidate> {
    packages.into_iter().next().ok_or(Error::NoCandidate {
        package: BUSYBOX.to_owned(),
    })
}

/// The kernel's part of a cache key, as labelled fields.
fn kernel_fields(plan: &KernelPlan) -> Vec<(String, String)> {
    match plan {
        KernelPlan::Debian(candidate) => vec![
            ("kernel-package".to_owned(), candidate.package.clone()),
            ("kernel-version".to_owned(), candidate.version.clone()),
        ],
        KernelPlan::Custom {
            sha256, modules, ..
        } => {
            let mut fields = vec![("kernel-sha256".to_owned(), sha256.clone())];
            // Module trees can be hundreds of megabytes: stamp each file's
            // size and mtime instead of hashing it.
            if let Some(tree) = modules {
                fields.push(("modules-root".to_owned(), tree.root.display().to_string()));
                for (name, (rel, _)) in &tree.files {
                    let stamp = cache::stat_stamp(&tree.root.join(rel));
                    fields.push((
                        format!("module {name}"),
                        format!("{} {stamp}", rel.display()),
                    ));
                }
                let builtin = cache::stat_stamp(&tree.root.join("modules.builtin"));
                fields.push(("modules.builtin".to_owned(), builtin));
            }
            fields
        }
    }
}

/// The mutant builds `spec` asks for, planned against the Debian kernel of
/// `plan` (release from the package name, source version = the package's
/// version).
fn plan_mutants(spec: &ImageSpec, plan: &KernelPlan) -> Result<Vec<mutant::Plan>> {
    if spec.mutants.is_empty() {
        return Ok(Vec::new());
    }
    let KernelPlan::Debian(candidate) = plan else {
        return Err(Error::BadSpec {
            reason: "mutants are built against a Debian kernel's headers; drop `kernel`".to_owned(),
        });
    };
    let release = debian::kernel_release(&candidate.package).ok_or_else(|| Error::BadSpec {
        reason: format!(
            "kernel package {} is not named linux-image-<release>",
            candidate.package
        ),
    })?;
    spec.mutants
        .iter()
        .map(|name| {
            Ok(mutant::Plan::new(
                mutant::lookup(name)?,
                release,
                &candidate.version,
            ))
        })
        .collect()
}

/// What a full image's cache key covers.
struct KeyInputs<'a> {
    flavour: Flavour,
    /// busybox-static's version.
    busybox: &'a str,
    /// From [`kernel_fields`].
    kernel: Vec<(String, String)>,
    /// Normalised module names, in the spec's order.
    wanted: &'a [String],
    /// (path in the image, SHA-256) of each host file.
    host_files: &'a [(String, String)],
    /// The guest binaries.
    binaries: &'a [BinaryInfo],
    /// (name, key) of each kernel mutant; none adds nothing to the key, so
    /// images without mutants keep the keys they had before mutants.
    mutants: &'a [(String, String)],
}

fn image_key(inputs: &KeyInputs<'_>) -> String {
    let mut key = KeyHasher::new("image");
    key.field("format", FORMAT_VERSION.to_string())
        .field("layout", LAYOUT)
        .field("flavour", inputs.flavour.to_string())
        .field("busybox", inputs.busybox)
        .field("modules-wanted", inputs.wanted.join(","));
    for (label, value) in &inputs.kernel {
        key.field(label, value);
    }
    for (path, sha256) in inputs.host_files {
        key.field("host-file", path).field("sha256", sha256);
    }
    for binary in inputs.binaries {
        key.field("binary", &binary.name)
            .field("sha256", &binary.sha256);
    }
    for (name, mutant_key) in inputs.mutants {
        key.field("mutant", name).field("mutant-key", mutant_key);
    }
    key.finish()
}

/// The release in a bzImage file (the version string lies within its first
/// 64 KiB + 0x200 bytes).
fn read_release(path: &Path) -> Result<String> {
    const HEAD: u64 = 0x1_0400;
    let mut head = Vec::new();
    let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, HEAD), &mut head)
        .map_err(Error::io("read", path))?;
    bzimage_release(&head).map_err(|reason| Error::NotABzImage {
        path: path.to_owned(),
        reason,
    })
}

/// The applet paths busybox offers, from `busybox --list-full`.
fn list_applets(busybox: &Path) -> Result<Vec<String>> {
    let tool = crate::command::Tool {
        program: "busybox",
        package: BUSYBOX,
    };
    let mut list = std::process::Command::new(busybox);
    list.arg("--list-full").stdin(std::process::Stdio::null());
    let out = crate::command::stdout(
        tool,
        &mut list,
        "the unpacked busybox-static package may be damaged: delete it from the cache",
    )?;
    Ok(userland::applets(&out))
}

/// Adds `/bin/busybox`, `/bin/ash` and a link for each applet whose path is
/// still free (real tools added before win).
fn install_busybox(fs: &mut Initramfs, busybox: &Path, applets: &[String]) -> Result<()> {
    let data = std::fs::read(busybox).map_err(Error::io("read", busybox))?;
    fs.file(&merged_usr("/bin/busybox"), 0o755, data)?;
    for applet in applets.iter().map(String::as_str).chain(["bin/ash"]) {
        let path = merged_usr(applet);
        if !fs.contains(&path) {
            fs.symlink(&path, "/bin/busybox")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> (Vec<String>, Vec<(String, String)>, Vec<BinaryInfo>) {
        (
            vec!["tun".into(), "bonding".into()],
            vec![
                ("/usr/sbin/ip".into(), "aa".into()),
                ("/lib/libc.so.6".into(), "bb".into()),
            ],
            vec![BinaryInfo {
                name: AGENT_NAME.into(),
                sha256: "cc".into(),
            }],
        )
    }

    fn debian_kernel() -> Vec<(String, String)> {
        kernel_fields(&KernelPlan::Debian(Candidate {
            package: "linux-image-6.12.117+deb12-cloud-amd64".into(),
            version: "6.12.117-1~deb12u1".into(),
            architecture: "amd64".into(),
            size: Some(1),
        }))
    }

    #[test]
    fn image_keys_are_stable_and_change_with_every_input() {
        let (wanted, host, binaries) = inputs();
        let base = KeyInputs {
            flavour: Flavour::Cloud,
            busybox: "1:1.35.0-4",
            kernel: debian_kernel(),
            wanted: &wanted,
            host_files: &host,
            binaries: &binaries,
            mutants: &[],
        };
        let key = image_key(&base);
        assert_eq!(key.len(), cache::KEY_LEN);
        assert_eq!(
            key,
            image_key(&KeyInputs {
                kernel: debian_kernel(),
                ..base
            })
        );

        let mut newer_kernel = debian_kernel();
        newer_kernel[1].1 = "6.12.117-1~deb12u2".into();
        let custom = kernel_fields(&KernelPlan::Custom {
            path: "/k".into(),
            sha256: "dd".into(),
            release: "6.12.0".into(),
            modules: None,
        });
        let reordered: Vec<String> = wanted.iter().rev().cloned().collect();
        let fewer = &wanted[..1];
        let mut other_lib = host.clone();
        other_lib[1].1 = "bx".into();
        let mut other_agent = binaries.clone();
        other_agent[0].sha256 = "cd".into();
        let mut renamed = binaries.clone();
        renamed[0].name = "agent".into();
        let mutant = [(
            "bond-rr-count-zero".to_owned(),
            "0123456789abcdef0123".to_owned(),
        )];
        let rebuilt_mutant = [(
            "bond-rr-count-zero".to_owned(),
            "0123456789abcdef0124".to_owned(),
        )];
        let changed = [
            image_key(&KeyInputs {
                flavour: Flavour::Generic,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                busybox: "1:1.36.1-1",
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                kernel: newer_kernel,
                ..base
            }),
            image_key(&KeyInputs {
                kernel: custom,
                ..base
            }),
            image_key(&KeyInputs {
                wanted: &reordered,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                wanted: fewer,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                host_files: &other_lib,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                binaries: &other_agent,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                binaries: &renamed,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                binaries: &[],
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                mutants: &mutant,
                kernel: debian_kernel(),
                ..base
            }),
            image_key(&KeyInputs {
                mutants: &rebuilt_mutant,
                kernel: debian_kernel(),
                ..base
            }),
        ];
        crate::cache::tests::assert_all_differ(&key, &changed);
    }

    #[test]
    fn custom_module_trees_are_stamped_file_by_file() {
        let scratch = cache::tests::scratch("stamp");
        let root = scratch.path();
        std::fs::create_dir_all(root.join("kernel/net")).expect("tree");
        std::fs::write(root.join("kernel/net/a.ko"), b"a").expect("module");
        let fields = |root: &Path| {
            kernel_fields(&KernelPlan::Custom {
                path: "/k".into(),
                sha256: "dd".into(),
                release: "6.12.0".into(),
                modules: Some(ModuleTree::scan(root).expect("scanned")),
            })
        };
        let before = fields(root);
        assert_eq!(before, fields(root));
        assert!(before
            .iter()
            .any(|(label, value)| label == "module a" && value.starts_with("kernel/net/a.ko 1:")));
        std::fs::write(root.join("kernel/net/a.ko"), b"ab").expect("rebuilt");
        assert_ne!(before, fields(root));
        let grown = fields(root);
        std::fs::write(root.join("kernel/b.ko.xz"), b"").expect("added");
        assert_ne!(grown, fields(root));
    }
}
