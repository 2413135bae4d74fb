//! Kernel mutants: a stock module rebuilt from deliberately broken sources,
//! so a scenario can show that the rig catches a bug class (a divide by a
//! zero count, a missed lock) in a real kernel.
//!
//! The registry ([`MUTANTS`]) names, for each [`Mutant`], the module it
//! replaces, the source directory it is built from and its patch (kept in
//! `images/mutants/` and embedded in the crate, so a build does not depend
//! on the working directory). [`Builder::build_mutant`] builds one out of
//! tree against a Debian kernel release:
//!
//! 1. `linux-headers-<release>` and `linux-source-6.12=<version>` (the
//!    kernel package's version) must be installed; as root they are
//!    installed with apt-get, otherwise the error says what to run;
//! 2. only the mutant's source directory is extracted from
//!    `/usr/src/linux-source-6.12.tar.xz`;
//! 3. the patch is applied with `patch -p1` from the source root;
//! 4. `make -C /usr/src/linux-headers-<release> M=<dir> CONFIG_X=m modules`;
//! 5. `strip --strip-debug`, as Debian strips its own modules.
//!
//! Layout under the cache root:
//!
//! ```text
//! mutants/<name>-<key>/<module>.ko       the result, without debug info
//! mutants/<name>-<key>/mutant.json       its MutantInfo
//! mutants/<name>-<key>/build.log         what tar, patch and make printed
//! mutants/<name>-<key>/<name>.patch      the patch as applied
//! mutants/<name>-<key>/src/<source dir>/ the patched sources, objects and
//!                                        the unstripped module
//! mutants/<name>-<key>.failed/           the last failed build of that key
//! ```
//!
//! The key covers the mutant's name, module, config symbol and source
//! directory, the patch text, the kernel release, the source package's
//! version and the compiler's version line (of the compiler the kernel's
//! headers name, else `gcc`). Entries appear whole, as images do
//! (`cache.rs`): a build runs in a `.tmp-*` directory that is renamed
//! into place last, so a second build with the same inputs finds the
//! entry and does nothing.
//!
//! [`Builder::build_mutant`]: crate::Builder::build_mutant

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use crate::cache::{self, KeyHasher, TempDir};
use crate::command::{self, Tool, APT_GET, DPKG_QUERY, MAKE, PATCH, STRIP, TAR};
use crate::manifest::MutantInfo;
use crate::modules::parse_modinfo;
use crate::{Error, Result};

/// A known kernel mutant: which stock module it replaces and how it is
/// built. The registry is [`MUTANTS`]; look names up with [`find`] or
/// [`lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mutant {
    /// Its name in specs, scenarios and manifests (`bond-rr-count-zero`).
    pub name: &'static str,
    /// The module it replaces, as the kernel names it (`bonding`).
    pub module: &'static str,
    /// The directory it is built from, relative to the kernel source root
    /// (`drivers/net/bonding`). Only this directory is extracted.
    pub source_dir: &'static str,
    /// The Kconfig symbol that builds the module (`CONFIG_BONDING`); set
    /// to `m` on the make command line.
    pub config: &'static str,
    /// The patch's file name in `images/mutants/`.
    pub patch_file: &'static str,
    /// The patch: a unified diff, `-p1` from the kernel source root.
    pub patch: &'static str,
    /// One line on what the mutant breaks.
    pub summary: &'static str,
}

/// Every mutant the builder knows.
pub const MUTANTS: &[Mutant] = &[Mutant {
    name: "bond-rr-count-zero",
    module: "bonding",
    source_dir: "drivers/net/bonding",
    config: "CONFIG_BONDING",
    patch_file: "bond-rr-count-zero.patch",
    patch: include_str!("../mutants/bond-rr-count-zero.patch"),
    summary: "round-robin slave selection without its zero slave_cnt guard: \
              `% slave_cnt` divides by zero under an enslave race",
}];

/// The mutant called `name`, if the registry knows it.
pub fn find(name: &str) -> Option<&'static Mutant> {
    MUTANTS.iter().find(|m| m.name == name)
}

/// The mutant called `name`, or [`Error::UnknownMutant`] listing the known
/// ones.
pub fn lookup(name: &str) -> Result<&'static Mutant> {
    find(name).ok_or_else(|| Error::UnknownMutant {
        given: name.to_owned(),
        known: names().into_iter().map(str::to_owned).collect(),
    })
}

/// The names of all known mutants, in registry order.
pub fn names() -> Vec<&'static str> {
    MUTANTS.iter().map(|m| m.name).collect()
}

/// A mutant module, built (or found in the cache).
#[derive(Debug, Clone)]
pub struct BuiltMutant {
    /// What it is and what it was built from; goes into the image manifest.
    pub info: MutantInfo,
    /// Its cache entry, `<cache root>/mutants/<name>-<key>`.
    pub dir: PathBuf,
    /// The module, `<dir>/<module>.ko` (uncompressed, without debug
    /// info). The unstripped one is in `source`.
    pub ko: PathBuf,
    /// The patched source directory the module was built in.
    pub source: PathBuf,
    /// The output of the build's tar, patch, make and strip runs.
    pub log: PathBuf,
    /// Whether it came from the cache unchanged.
    pub cache_hit: bool,
}

/// Bump when how a mutant is built changes, so old entries are not reused.
const MUTANT_FORMAT: &str = "2";
/// Where mutants live under the cache root.
const MUTANTS_DIR: &str = "mutants";
/// Files in a mutant's entry.
const INFO_FILE: &str = "mutant.json";
const LOG_FILE: &str = "build.log";
const SOURCE_DIR: &str = "src";
/// Where Debian installs kernel headers and sources.
const USR_SRC: &str = "/usr/src";
/// apt waits this long for another apt or dpkg to finish.
const DPKG_LOCK_TIMEOUT_S: u32 = 600;

/// `6.12` of `6.12.117+deb12-cloud-amd64`: the series in the source
/// package's name.
pub(crate) fn release_series(release: &str) -> Option<String> {
    let mut parts = release.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor) && parts.next().is_some()).then(|| format!("{major}.{minor}"))
}

/// The packages a mutant for `release` is built with: the headers (any
/// version: the release names the ABI) and the sources at `version`, then
/// the tools the build runs (a minimal host may lack them).
fn toolchain_packages(release: &str, series: &str, version: &str) -> Vec<(String, Option<String>)> {
    let mut packages = vec![
        (format!("linux-headers-{release}"), None),
        (format!("linux-source-{series}"), Some(version.to_owned())),
    ];
    packages.extend(BUILD_TOOLS.iter().map(|tool| ((*tool).to_owned(), None)));
    packages
}

/// Debian packages of the tools a mutant build runs besides the compiler
/// the headers bring: make, patch, and xz to unpack the source tarball.
const BUILD_TOOLS: [&str; 3] = ["make", "patch", "xz-utils"];

/// `name` or `name=version`, as apt-get takes it.
fn apt_arg((name, version): &(String, Option<String>)) -> String {
    match version {
        Some(version) => format!("{name}={version}"),
        None => name.clone(),
    }
}

/// Installed packages and their versions, from `dpkg-query -W -f
/// '${Package}\t${Status}\t${Version}\n'` output. Known but not installed
/// packages (`unknown ok not-installed`, `deinstall ok config-files`) are
/// left out.
pub(crate) fn parse_installed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, status, version) = (fields.next()?, fields.next()?, fields.next()?);
            (status.split_whitespace().nth(2) == Some("installed"))
                .then(|| (name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// The compiler a kernel's headers build with: the first word of
/// `CONFIG_CC_VERSION_TEXT` in their `.config`.
pub(crate) fn compiler_program(config: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let text = line.strip_prefix("CONFIG_CC_VERSION_TEXT=")?;
        let program = text.trim_matches('"').split_whitespace().next()?;
        Some(program.to_owned())
    })
}

/// The first line of `cc --version` without the program's name, so `gcc`
/// and the `x86_64-linux-gnu-gcc-12` it links to read alike:
/// `(Debian 12.2.0-14+deb12u1) 12.2.0`.
pub(crate) fn version_text(version_output: &str) -> String {
    let first = version_output.lines().next().unwrap_or_default().trim();
    match first.split_once(char::is_whitespace) {
        Some((_, rest)) => rest.trim().to_owned(),
        None => first.to_owned(),
    }
}

/// The version line of the compiler a module for `release` is built with:
/// the one its installed headers name, else `gcc`; `none` without either.
fn compiler_version(release: &str) -> String {
    let config = headers_dir(release).join(".config");
    let program = std::fs::read_to_string(config)
        .ok()
        .and_then(|text| compiler_program(&text))
        .unwrap_or_else(|| "gcc".to_owned());
    match std::process::Command::new(&program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => version_text(&String::from_utf8_lossy(&out.stdout)),
        _ => "none".to_owned(),
    }
}

fn headers_dir(release: &str) -> PathBuf {
    Path::new(USR_SRC).join(format!("linux-headers-{release}"))
}

/// The files a unified diff changes (the part after `a/`), checking that
/// it is one: each `--- a/X` is followed by `+++ b/X` and hunks whose
/// line counts match their headers. Text before the first `--- ` line is
/// commentary, as for `patch`.
pub(crate) fn diff_files(patch: &str) -> std::result::Result<Vec<String>, String> {
    fn path(line: &str) -> &str {
        line.split('\t').next().unwrap_or_default().trim_end()
    }
    fn range(text: &str) -> std::result::Result<(u64, u64), String> {
        let (start, len) = text.split_once(',').unwrap_or((text, "1"));
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("bad hunk range {text:?}"))
        };
        Ok((number(start)?, number(len)?))
    }
    let mut files = Vec::new();
    let mut lines = patch.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(old) = line.strip_prefix("--- ") else {
            continue;
        };
        let old = path(old);
        let new = lines
            .next()
            .and_then(|l| l.strip_prefix("+++ "))
            .map(path)
            .ok_or_else(|| format!("`--- {old}` is not followed by a `+++ ` line"))?;
        let file = match (old.strip_prefix("a/"), new.strip_prefix("b/")) {
            (Some(a), Some(b)) if a == b && !a.is_empty() => a.to_owned(),
            _ => {
                return Err(format!(
                    "`--- {old}` / `+++ {new}` is not an a/FILE, b/FILE pair for -p1"
                ))
            }
        };
        let mut hunks = 0;
        while let Some(header) = lines.peek().and_then(|l| l.strip_prefix("@@ -")) {
            let ranges = header
                .split_once(" @@")
                .map(|(ranges, _)| ranges)
                .ok_or_else(|| format!("bad hunk header in {file}: @@ -{header}"))?;
            let (old_range, new_range) = ranges
                .split_once(" +")
                .ok_or_else(|| format!("bad hunk header in {file}: @@ -{header}"))?;
            let (_, mut old_left) = range(old_range)?;
            let (_, mut new_left) = range(new_range)?;
            lines.next();
            while old_left > 0 || new_left > 0 {
                let line = lines
                    .next()
                    .ok_or_else(|| format!("a hunk of {file} ends early"))?;
                let (old_count, new_count) = match line.chars().next() {
                    Some(' ') | None => (1, 1),
                    Some('-') => (1, 0),
                    Some('+') => (0, 1),
                    Some('\\') => (0, 0),
                    Some(_) => return Err(format!("a hunk of {file} ends early: {line:?}")),
                };
                if old_count > old_left || new_count > new_left {
                    return Err(format!("a hunk of {file} is longer than its header says"));
                }
                old_left -= old_count;
                new_left -= new_count;
            }
            hunks += 1;
        }
        if hunks == 0 {
            return Err(format!("{file} has no hunks"));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err("no `--- a/FILE` line: not a unified diff".to_owned());
    }
    Ok(files)
}

/// What a mutant's cache key covers.
#[derive(Debug, Clone, Copy)]
struct KeyInputs<'a> {
    mutant: &'a Mutant,
    release: &'a str,
    source_version: &'a str,
    compiler: &'a str,
}

fn mutant_key(inputs: &KeyInputs<'_>) -> String {
    let mutant = inputs.mutant;
    let mut key = KeyHasher::new("mutant");
    key.field("format", MUTANT_FORMAT)
        .field("name", mutant.name)
        .field("module", mutant.module)
        .field("source-dir", mutant.source_dir)
        .field("config", mutant.config)
        .field("patch", mutant.patch)
        .field("release", inputs.release)
        .field("source-version", inputs.source_version)
        .field("compiler", inputs.compiler);
    key.finish()
}

/// A mutant build decided but not run: its inputs and key. Cheap to make
/// (it runs the compiler's `--version`), so the image builder makes one
/// for its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) mutant: &'static Mutant,
    pub(crate) release: String,
    pub(crate) source_version: String,
    pub(crate) compiler: String,
    pub(crate) key: String,
}

impl Plan {
    pub(crate) fn new(mutant: &'static Mutant, release: &str, source_version: &str) -> Self {
        let compiler = compiler_version(release);
        let key = mutant_key(&KeyInputs {
            mutant,
            release,
            source_version,
            compiler: &compiler,
        });
        Self {
            mutant,
            release: release.to_owned(),
            source_version: source_version.to_owned(),
            compiler,
            key,
        }
    }

    fn entry_name(&self) -> String {
        format!("{}-{}", self.mutant.name, self.key)
    }

    fn info(&self) -> MutantInfo {
        MutantInfo {
            name: self.mutant.name.to_owned(),
            module: self.mutant.module.to_owned(),
            key: self.key.clone(),
            release: self.release.clone(),
            source_version: self.source_version.clone(),
            compiler: self.compiler.clone(),
            patch_sha256: cache::sha256_hex(self.mutant.patch.as_bytes()),
        }
    }

    fn series(&self) -> Result<String> {
        release_series(&self.release).ok_or_else(|| {
            self.unbuildable(format!(
                "kernel release {:?} does not start with MAJOR.MINOR.; mutants are built for \
                 Debian kernels only",
                self.release
            ))
        })
    }

    fn unbuildable(&self, reason: String) -> Error {
        Error::MutantUnbuildable {
            mutant: self.mutant.name,
            reason,
        }
    }
}

/// Builds `plan`'s mutant, or finds it in `<cache_root>/mutants`.
pub(crate) fn build(
    cache_root: &Path,
    plan: &Plan,
    progress: &dyn Fn(&str),
) -> Result<BuiltMutant> {
    let root = cache_root.join(MUTANTS_DIR);
    let name = plan.mutant.name;
    if let Some(hit) = cached(&root, plan)? {
        progress(&format!("mutant {name}: cache hit {}", plan.key));
        return Ok(hit);
    }
    let started = Instant::now();
    let series = plan.series()?;
    let touched = diff_files(plan.mutant.patch).map_err(|reason| {
        plan.unbuildable(format!(
            "images/mutants/{} is not a unified diff ({reason}); fix it",
            plan.mutant.patch_file
        ))
    })?;
    if let Some(outside) = touched
        .iter()
        .find(|f| !Path::new(f).starts_with(plan.mutant.source_dir))
    {
        return Err(plan.unbuildable(format!(
            "images/mutants/{} changes {outside}, outside {}, the only directory extracted \
             for it; widen the mutant's source_dir or narrow the patch",
            plan.mutant.patch_file, plan.mutant.source_dir
        )));
    }
    for tool in [PATCH, MAKE, TAR, STRIP] {
        require(tool)?;
    }
    let tmp = TempDir::new_in(&root, &plan.entry_name())?;
    ensure_toolchain(plan, &series, tmp.path(), progress)?;
    // Installing the headers may have brought the compiler they name.
    let replanned = Plan::new(plan.mutant, &plan.release, &plan.source_version);
    if replanned.key != plan.key {
        tracing::info!(
            mutant = name,
            before = %plan.compiler,
            after = %replanned.compiler,
            "the compiler changed while installing the headers; building under the new key"
        );
        if let Some(hit) = cached(&root, &replanned)? {
            progress(&format!("mutant {name}: cache hit {}", replanned.key));
            return Ok(hit);
        }
    }
    let plan = &replanned;
    let packages = toolchain_packages(&plan.release, &series, &plan.source_version);

    let headers = headers_dir(&plan.release);
    let tarball = Path::new(USR_SRC).join(format!("linux-source-{series}.tar.xz"));
    for (path, package) in [
        (headers.join("Makefile"), apt_arg(&packages[0])),
        (tarball.clone(), apt_arg(&packages[1])),
    ] {
        if !path.is_file() {
            return Err(plan.unbuildable(format!(
                "{} is missing although dpkg lists its package as installed; reinstall it with \
                 `apt-get install --reinstall {package}`",
                path.display()
            )));
        }
    }

    let log = tmp.path().join(LOG_FILE);
    let src = tmp.path().join(SOURCE_DIR);
    std::fs::create_dir(&src).map_err(Error::io("create directory", &src))?;
    let source_dir = plan.mutant.source_dir;
    progress(&format!(
        "mutant {name}: extracting {source_dir} from {} (about 10 s)",
        tarball.display()
    ));
    // tar and patch run in the work directory with relative paths, so the
    // command lines in the log and in errors hold for a kept failed build.
    let mut tar = command::command(TAR, ["-xJf"]);
    tar.arg(&tarball)
        .args(["-C", SOURCE_DIR, "--strip-components=1", "--wildcards"])
        .arg(format!("*/{source_dir}/*"))
        .current_dir(tmp.path());
    let hint = format!(
        "the source tarball may be damaged: reinstall it with `apt-get install --reinstall \
         linux-source-{series}={}`",
        plan.source_version
    );
    let tmp = step(tmp, &root, plan, TAR, &mut tar, &log, hint)?;
    let module_dir = src.join(source_dir);
    if !module_dir.is_dir() {
        return Err(plan.unbuildable(format!(
            "{} has no {source_dir}; check the mutant's source_dir",
            tarball.display()
        )));
    }

    let patch_path = tmp.path().join(plan.mutant.patch_file);
    std::fs::write(&patch_path, plan.mutant.patch).map_err(Error::io("write", &patch_path))?;
    let mut patch = command::command(PATCH, ["-p1", "--batch", "--forward", "-d", SOURCE_DIR]);
    patch
        .arg("-i")
        .arg(Path::new("..").join(plan.mutant.patch_file))
        .current_dir(tmp.path());
    let hint = format!(
        "images/mutants/{} does not apply to linux-source-{series} {}: refresh it against \
         that version (the extracted sources are next to the log)",
        plan.mutant.patch_file, plan.source_version
    );
    let tmp = step(tmp, &root, plan, PATCH, &mut patch, &log, hint)?;

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "mutant {name}: building {}.ko against linux-headers-{} (-j{jobs})",
        plan.mutant.module, plan.release
    ));
    let mut make = command::command(MAKE, ["-C"]);
    make.arg(&headers)
        .arg(format!("M={}", module_dir.display()))
        .arg(format!("{}=m", plan.mutant.config))
        .arg("modules")
        .arg(format!("-j{jobs}"));
    let hint = format!(
        "the patched sources do not build against linux-headers-{}: fix images/mutants/{} \
         (the patched sources are next to the log)",
        plan.release, plan.mutant.patch_file
    );
    let tmp = step(tmp, &root, plan, MAKE, &mut make, &log, hint)?;

    let built = module_dir.join(format!("{}.ko", plan.mutant.module));
    if !built.is_file() {
        return Err(plan.unbuildable(format!(
            "make succeeded but wrote no {}; check the mutant's module name and config symbol",
            built.display()
        )));
    }
    // Debug info is 90% of the file; Debian strips its modules the same
    // way (INSTALL_MOD_STRIP=1). The unstripped one stays in the sources,
    // for decoding an oops.
    let ko = tmp.path().join(format!("{}.ko", plan.mutant.module));
    let mut strip = command::command(STRIP, ["--strip-debug", "-o"]);
    strip.arg(&ko).arg(&built);
    let hint = "check binutils".to_owned();
    let tmp = step(tmp, &root, plan, STRIP, &mut strip, &log, hint)?;
    let data = std::fs::read(&ko).map_err(Error::io("read", &ko))?;
    check_module(&ko, &data, plan)?;
    let info = plan.info();
    let info_path = tmp.path().join(INFO_FILE);
    let json = serde_json::to_vec_pretty(&info).expect("MutantInfo has only string fields");
    std::fs::write(&info_path, json).map_err(Error::io("write", &info_path))?;

    let dir = root.join(plan.entry_name());
    if !tmp.publish(&dir)? {
        tracing::debug!(mutant = name, key = %plan.key, "mutant built concurrently elsewhere");
    }
    progress(&format!(
        "mutant {name}: built {}.ko in {:.1} s",
        plan.mutant.module,
        started.elapsed().as_secs_f64()
    ));
    Ok(entry(dir, plan, info, false))
}

/// The paths of the entry `dir` of `plan`'s mutant.
fn entry(dir: PathBuf, plan: &Plan, info: MutantInfo, cache_hit: bool) -> BuiltMutant {
    BuiltMutant {
        ko: dir.join(format!("{}.ko", plan.mutant.module)),
        source: dir.join(SOURCE_DIR).join(plan.mutant.source_dir),
        log: dir.join(LOG_FILE),
        dir,
        info,
        cache_hit,
    }
}

/// The finished entry of `plan`, if there is one.
fn cached(root: &Path, plan: &Plan) -> Result<Option<BuiltMutant>> {
    let dir = root.join(plan.entry_name());
    let info_path = dir.join(INFO_FILE);
    let text = match std::fs::read(&info_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &info_path)(e)),
    };
    let corrupt = |reason: String| Error::CorruptCache {
        path: dir.clone(),
        reason,
    };
    let info: MutantInfo =
        serde_json::from_slice(&text).map_err(|e| corrupt(format!("bad {INFO_FILE}: {e}")))?;
    let built = entry(dir.clone(), plan, info, true);
    if !built.ko.is_file() {
        return Err(corrupt(format!("{} is missing", built.ko.display())));
    }
    Ok(Some(built))
}

/// Fails with [`Error::ToolMissing`] if `tool` cannot be run.
fn require(tool: Tool) -> Result<()> {
    command::output(tool, &mut command::command(tool, ["--version"])).map(drop)
}

/// Runs one logged build step. On failure the work directory is kept as
/// `<name>-<key>.failed` (replacing an older one) and the error names its
/// log; on success the work directory is handed back.
fn step(
    tmp: TempDir,
    root: &Path,
    plan: &Plan,
    tool: Tool,
    command: &mut std::process::Command,
    log: &Path,
    hint: String,
) -> Result<TempDir> {
    let status = command::logged(tool, command, log)?;
    if status.success() {
        return Ok(tmp);
    }
    Err(keep_failed(tmp, root, plan, command, status, hint))
}

fn keep_failed(
    tmp: TempDir,
    root: &Path,
    plan: &Plan,
    command: &std::process::Command,
    status: ExitStatus,
    hint: String,
) -> Error {
    let log_bytes = std::fs::read(tmp.path().join(LOG_FILE)).unwrap_or_default();
    let failed = root.join(format!("{}.failed", plan.entry_name()));
    if failed.exists() {
        if let Err(error) = std::fs::remove_dir_all(&failed) {
            tracing::warn!(path = ?failed, %error, "could not remove an older failed build");
        }
    }
    let scratch = tmp.path().to_owned();
    let log = match tmp.publish(&failed) {
        Ok(true) => failed.join(LOG_FILE),
        Ok(false) | Err(_) => {
            tracing::warn!(path = ?failed, "could not keep the failed build");
            scratch.join(LOG_FILE)
        }
    };
    Error::MutantBuild {
        mutant: plan.mutant.name,
        command: command::describe(command),
        status,
        log,
        tail: command::stderr_tail(&log_bytes),
        hint,
    }
}

/// Checks the built module names itself as the mutant's module and was
/// built for the plan's release.
fn check_module(path: &Path, data: &[u8], plan: &Plan) -> Result<()> {
    let info = parse_modinfo(data).map_err(|reason| Error::BadModule {
        path: path.to_owned(),
        reason,
    })?;
    if info
        .name
        .as_deref()
        .is_some_and(|n| n != plan.mutant.module)
    {
        return Err(Error::BadModule {
            path: path.to_owned(),
            reason: format!(
                "its .modinfo names module {:?}, not {}",
                info.name.unwrap_or_default(),
                plan.mutant.module
            ),
        });
    }
    let vermagic = info.vermagic.unwrap_or_default();
    if vermagic.split_whitespace().next() != Some(plan.release.as_str()) {
        return Err(Error::VermagicMismatch {
            path: path.to_owned(),
            vermagic,
            release: plan.release.clone(),
        });
    }
    Ok(())
}

/// Makes sure the headers and sources `plan` builds against are installed:
/// as root by installing them (reporting it through `progress`), otherwise
/// by failing with the command to run. `scratch` is a directory this
/// process just created (its owner tells whether we are root).
fn ensure_toolchain(
    plan: &Plan,
    series: &str,
    scratch: &Path,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let packages = toolchain_packages(&plan.release, series, &plan.source_version);
    let missing = missing_packages(&packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    let args: Vec<String> = missing.iter().map(apt_arg).collect();
    let shown = format!(
        "apt-get install -y --no-install-recommends {}",
        args.join(" ")
    );
    let not_installed = |missing: &[(String, Option<String>)]| Error::MutantToolchainMissing {
        mutant: plan.mutant.name,
        missing: missing.iter().map(apt_arg).collect(),
        command: shown.clone(),
    };
    if !crate::debian::is_root_owned(scratch) {
        return Err(not_installed(&missing));
    }
    progress(&format!("installing {} (about 40 s)", args.join(" and ")));
    let started = Instant::now();
    let mut install = command::command(
        APT_GET,
        [
            "install".to_owned(),
            "-y".to_owned(),
            "--no-install-recommends".to_owned(),
            "-o".to_owned(),
            format!("DPkg::Lock::Timeout={DPKG_LOCK_TIMEOUT_S}"),
        ]
        .into_iter()
        .chain(args.iter().cloned()),
    );
    install.env("DEBIAN_FRONTEND", "noninteractive");
    command::passthrough(
        APT_GET,
        &mut install,
        "check the apt sources and run `apt-get update`; the headers and sources must be \
         of the kernel the image boots",
    )?;
    let still = missing_packages(&packages)?;
    if !still.is_empty() {
        return Err(not_installed(&still));
    }
    progress(&format!(
        "installed {} in {:.1} s",
        args.join(" and "),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Those of `packages` that are not installed (at the version given, if
/// one is).
fn missing_packages(
    packages: &[(String, Option<String>)],
) -> Result<Vec<(String, Option<String>)>> {
    let mut query = command::command(
        DPKG_QUERY,
        ["-W", "-f", "${Package}\t${Status}\t${Version}\n"],
    );
    query.args(packages.iter().map(|(name, _)| name));
    // dpkg-query exits 1 when it knows none of some name; the rest is listed.
    let out = command::output(DPKG_QUERY, &mut query)?;
    let installed = parse_installed(&String::from_utf8_lossy(&out.stdout));
    Ok(packages
        .iter()
        .filter(|(name, version)| match (installed.get(name), version) {
            (None, _) => true,
            (Some(have), Some(want)) => have != want,
            (Some(_), None) => false,
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_finds_known_mutants_and_lists_them_for_unknown_ones() {
        let mutant = lookup("bond-rr-count-zero").expect("known");
        assert_eq!(mutant.module, "bonding");
        assert_eq!(mutant.source_dir, "drivers/net/bonding");
        assert_eq!(mutant.config, "CONFIG_BONDING");
        assert_eq!(names(), ["bond-rr-count-zero"]);
        let err = lookup("bond-rr").expect_err("unknown");
        assert!(
            matches!(&err, Error::UnknownMutant { given, known } if given == "bond-rr" && known == &["bond-rr-count-zero"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unknown kernel mutant \"bond-rr\"; known mutants: bond-rr-count-zero"
        );
        assert_eq!(find("bond-rr-count-zero"), Some(mutant));
        assert_eq!(find("bond-rr"), None);
        let all = names();
        for (i, name) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(name), "{name} is listed twice");
        }
    }

    #[test]
    fn every_patch_is_a_unified_diff_inside_its_source_directory() {
        for mutant in MUTANTS {
            let files = diff_files(mutant.patch).unwrap_or_else(|e| panic!("{}: {e}", mutant.name));
            for file in &files {
                assert!(
                    Path::new(file).starts_with(mutant.source_dir),
                    "{}: {file}",
                    mutant.name
                );
            }
        }
        let bonding = lookup("bond-rr-count-zero").expect("known");
        assert_eq!(
            diff_files(bonding.patch).expect("parses"),
            ["drivers/net/bonding/bond_main.c"]
        );
        // The header says what the patch removes, and the patch removes
        // the guard and nothing else.
        let (header, diff) = bonding.patch.split_once("\n--- ").expect("a header");
        assert!(header.contains("divide error"), "{header}");
        let removed: Vec<&str> = diff.lines().filter(|l| l.starts_with("-\t")).collect();
        let added: Vec<&str> = diff.lines().filter(|l| l.starts_with("+\t")).collect();
        assert!(
            removed.contains(&"-\tif (likely(slave_cnt)) {"),
            "{removed:?}"
        );
        assert!(removed.contains(&"-\treturn NULL;"), "{removed:?}");
        assert_eq!(
            added,
            [
                "+\tslave_id = bond_rr_gen_slave_id(bond) % slave_cnt;",
                "+\treturn bond_get_slave_by_id(bond, slave_id);"
            ]
        );
    }

    #[test]
    fn malformed_diffs_are_refused_with_the_reason() {
        let check = |patch: &str, want: &str| {
            let got = diff_files(patch).expect_err("malformed");
            assert!(got.contains(want), "{got}");
        };
        let good = "text\n--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n";
        assert_eq!(diff_files(good).expect("parses"), ["x.c"]);
        assert_eq!(
            diff_files("--- a/x.c\t2026-01-01\n+++ b/x.c\t2026-01-02\n@@ -1 +1 @@\n-b\n+c\n")
                .expect("timestamps and one-line ranges"),
            ["x.c"]
        );
        check("just words\n", "not a unified diff");
        check("--- a/x.c\n@@ -1 +1 @@\n", "not followed by a `+++ ` line");
        check("--- x.c\n+++ x.c\n@@ -1 +1 @@\n-a\n+b\n", "a/FILE, b/FILE");
        check(
            "--- a/x.c\n+++ b/y.c\n@@ -1 +1 @@\n-a\n+b\n",
            "a/FILE, b/FILE",
        );
        check("--- a/x.c\n+++ b/x.c\n", "has no hunks");
        check(
            "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n",
            "ends early",
        );
        check(
            "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n-b\n+c\n",
            "longer than",
        );
        check(
            "--- a/x.c\n+++ b/x.c\n@@ -x +1 @@\n-a\n+b\n",
            "bad hunk range",
        );
    }

    #[test]
    fn mutant_keys_are_stable_and_change_with_every_input() {
        let bonding = lookup("bond-rr-count-zero").expect("known");
        let base = KeyInputs {
            mutant: bonding,
            release: "6.12.117+deb12-cloud-amd64",
            source_version: "6.12.117-1~deb12u1",
            compiler: "(Debian 12.2.0-14+deb12u1) 12.2.0",
        };
        let key = mutant_key(&base);
        assert_eq!(key.len(), cache::KEY_LEN);
        assert_eq!(key, mutant_key(&base));
        let other_patch = Mutant {
            patch: "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
            ..*bonding
        };
        let renamed = Mutant {
            name: "bond-rr-count-zero-2",
            ..*bonding
        };
        let changed = [
            mutant_key(&KeyInputs {
                mutant: &other_patch,
                ..base
            }),
            mutant_key(&KeyInputs {
                mutant: &renamed,
                ..base
            }),
            mutant_key(&KeyInputs {
                release: "6.12.117+deb12-amd64",
                ..base
            }),
            mutant_key(&KeyInputs {
                source_version: "6.12.117-1~deb12u2",
                ..base
            }),
            mutant_key(&KeyInputs {
                compiler: "(Debian 12.2.0-14+deb12u2) 12.2.0",
                ..base
            }),
        ];
        crate::cache::tests::assert_all_differ(&key, &changed);
    }

    #[test]
    fn host_facts_parse() {
        assert_eq!(
            release_series("6.12.117+deb12-cloud-amd64").as_deref(),
            Some("6.12")
        );
        assert_eq!(release_series("6.1.0-28-amd64").as_deref(), Some("6.1"));
        assert_eq!(release_series("6.12"), None);
        assert_eq!(release_series("v6.12.1"), None);
        assert_eq!(
            compiler_program(
                "CONFIG_CC_IS_GCC=y\nCONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n"
            )
            .as_deref(),
            Some("x86_64-linux-gnu-gcc-12")
        );
        assert_eq!(compiler_program("CONFIG_CC_IS_GCC=y\n"), None);
        let plain = version_text("gcc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022\n");
        assert_eq!(plain, "(Debian 12.2.0-14+deb12u1) 12.2.0");
        assert_eq!(
            version_text("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\n"),
            plain
        );
        let installed = parse_installed(
            "linux-headers-6.12.117+deb12-cloud-amd64\tinstall ok installed\t6.12.117-1~deb12u1\n\
             linux-source-6.12\tdeinstall ok config-files\t6.12.115-2~deb12u1\n\
             patch\thold ok installed\t2.7.6-7\n",
        );
        assert_eq!(
            installed,
            BTreeMap::from([
                (
                    "linux-headers-6.12.117+deb12-cloud-amd64".to_owned(),
                    "6.12.117-1~deb12u1".to_owned()
                ),
                ("patch".to_owned(), "2.7.6-7".to_owned()),
            ])
        );
        let packages =
            toolchain_packages("6.12.117+deb12-cloud-amd64", "6.12", "6.12.117-1~deb12u1");
        assert_eq!(
            packages.iter().map(apt_arg).collect::<Vec<_>>(),
            [
                "linux-headers-6.12.117+deb12-cloud-amd64",
                "linux-source-6.12=6.12.117-1~deb12u1",
                "make",
                "patch",
                "xz-utils"
            ]
        );
    }
}
