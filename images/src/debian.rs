//! Debian packages: which version apt offers, downloading and unpacking it
//! without root, and which installed package owns a host file.
//!
//! Layout under the cache root:
//!
//! ```text
//! apt-resolved.json                       what apt-cache answered, and for which apt state
//! downloads/<pkg>_<version>_<arch>.deb    as `apt-get download` names it (`:` as `%3a`)
//! pkgs/<pkg>_<version>/                   `dpkg-deb -x` of it, with a `.vfrig-complete` marker
//! ```
//!
//! apt-cache reads every package list on each run (about a second when, as
//! in Debian's container images, apt keeps no binary cache). So its answers
//! are remembered in `apt-resolved.json` together with a stamp (size and
//! mtime) of apt's lists, sources, preferences and dpkg's status file; while
//! the stamp is unchanged apt would answer the same, and a cached image is
//! found without running apt at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{self, KeyHasher, TempDir};
use crate::command::{self, APT_CACHE, APT_GET, DPKG, DPKG_DEB, DPKG_QUERY};
use crate::manifest::PackageInfo;
use crate::{Error, Flavour, Result};

/// The kernel series the rig boots.
const KERNEL_PREFIX: &str = "linux-image-6.12.";
/// What follows the patch level in a bookworm kernel package name.
const KERNEL_ABI: &str = "+deb12";
/// Marks a finished unpack.
const COMPLETE: &str = ".vfrig-complete";
/// Bumped when the memo's format changes.
const MEMO_VERSION: &str = "1";

/// A package version apt can download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Candidate {
    pub(crate) package: String,
    pub(crate) version: String,
    pub(crate) architecture: String,
    /// Size of the .deb in bytes, if apt said.
    pub(crate) size: Option<u64>,
}

impl Candidate {
    /// `<pkg>_<version>`, with `:` written `%3a` as apt does in file names.
    pub(crate) fn dir_name(&self) -> String {
        format!("{}_{}", self.package, self.version.replace(':', "%3a"))
    }

    /// The file name `apt-get download` gives the package.
    pub(crate) fn deb_name(&self) -> String {
        format!("{}_{}.deb", self.dir_name(), self.architecture)
    }

    fn size_text(&self) -> String {
        self.size
            .map(megabytes)
            .unwrap_or_else(|| "size unknown".to_owned())
    }
}

/// `34.3 MB`
pub(crate) fn megabytes(bytes: u64) -> String {
    // Precision loss is irrelevant for a message.
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    format!("{mb:.1} MB")
}

/// N of `linux-image-6.12.N+deb12<flavour suffix>`, if `name` is such a
/// package.
pub(crate) fn kernel_patch_level(name: &str, flavour: Flavour) -> Option<u32> {
    let rest = name.strip_prefix(KERNEL_PREFIX)?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (n, tail) = rest.split_at(digits);
    if n.is_empty() || tail != format!("{KERNEL_ABI}{}", flavour.package_suffix()) {
        return None;
    }
    n.parse().ok()
}

/// The release a Debian kernel package boots: its name after
/// `linux-image-` (`6.12.117+deb12-cloud-amd64`).
pub(crate) fn kernel_release(package: &str) -> Option<&str> {
    package
        .strip_prefix("linux-image-")
        .filter(|release| !release.is_empty())
}

/// The kernel package with the highest patch level in `apt-cache search`
/// output (`name - description` lines).
pub(crate) fn pick_kernel(search_output: &str, flavour: Flavour) -> Option<String> {
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| kernel_patch_level(name, flavour).map(|n| (n, name)))
        .max_by_key(|(n, _)| *n)
        .map(|(_, name)| name.to_owned())
}

/// The stanzas of `apt-cache show` output as field maps (continuation lines
/// are dropped: no field used here has them).
pub(crate) fn parse_stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut stanzas = Vec::new();
    let mut current = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                stanzas.push(std::mem::take(&mut current));
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((key, value)) = line.split_once(':') {
                current.insert(key.to_owned(), value.trim().to_owned());
            }
        }
    }
    if !current.is_empty() {
        stanzas.push(current);
    }
    stanzas
}

/// The candidates in `apt-cache show --no-all-versions` output, by package.
pub(crate) fn parse_candidates(text: &str) -> BTreeMap<String, Candidate> {
    parse_stanzas(text)
        .into_iter()
        .filter_map(|mut s| {
            let candidate = Candidate {
                package: s.remove("Package")?,
                version: s.remove("Version")?,
                architecture: s.remove("Architecture")?,
                size: s.get("Size").and_then(|n| n.parse().ok()),
            };
            Some((candidate.package.clone(), candidate))
        })
        .collect()
}

/// `(package, path)` pairs from `dpkg -S` output (`libc6:amd64: /lib/...`,
/// several packages comma-separated; diversion lines skipped).
pub(crate) fn parse_dpkg_search(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("diversion ") {
            continue;
        }
        let Some((packages, path)) = line.split_once(": ") else {
            continue;
        };
        for package in packages.split(", ") {
            out.push((package.trim().to_owned(), path.trim().to_owned()));
        }
    }
    out
}

/// Packages from `dpkg-query -W -f '${Package}\t${Version}\n'` output.
pub(crate) fn parse_dpkg_query(text: &str) -> Vec<PackageInfo> {
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(name, version)| !name.is_empty() && !version.is_empty())
        .map(|(name, version)| PackageInfo {
            name: name.to_owned(),
            version: version.to_owned(),
        })
        .collect()
}

/// The path dpkg may know a file by on a merged-/usr system: `/usr/x` for
/// `/x` and `/x` for `/usr/x`.
pub(crate) fn usr_twin(path: &str) -> String {
    match path.strip_prefix("/usr/") {
        Some(rest) => format!("/{rest}"),
        None => format!("/usr{path}"),
    }
}

/// What apt-cache answered, for one apt state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    stamp: String,
    kernels: BTreeMap<Flavour, Candidate>,
    packages: BTreeMap<String, Candidate>,
}

/// A stamp of everything apt-cache's answers depend on, or `None` if apt's
/// lists are not where they usually are (then nothing is remembered).
fn apt_state_stamp() -> Option<String> {
    let lists = Path::new("/var/lib/apt/lists");
    let mut files: Vec<PathBuf> = list_files(lists);
    if files.is_empty() {
        return None;
    }
    for dir in [
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
        "/etc/apt/apt.conf.d",
    ] {
        files.extend(list_files(Path::new(dir)));
    }
    files.extend(
        [
            "/etc/apt/sources.list",
            "/etc/apt/preferences",
            "/var/lib/dpkg/status",
        ]
        .map(PathBuf::from),
    );
    let mut key = KeyHasher::new("apt-state");
    key.field("memo", MEMO_VERSION);
    for file in &files {
        key.field(&file.to_string_lossy(), cache::stat_stamp(file));
    }
    Some(key.finish())
}

/// Regular files directly in `dir`, sorted; none if it cannot be read.
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "lock"))
        .collect();
    files.sort();
    files
}

/// What [`Debian::resolve`] found.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The kernel package, if one was asked for.
    pub(crate) kernel: Option<Candidate>,
    /// The other packages, in the order asked.
    pub(crate) packages: Vec<Candidate>,
}

/// Debian package operations over a cache root, reporting steps to
/// `progress`.
pub(crate) struct Debian<'a, P> {
    pub(crate) cache_root: &'a Path,
    pub(crate) progress: P,
}

impl<P> std::fmt::Debug for Debian<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debian")
            .field("cache_root", &self.cache_root)
            .finish_non_exhaustive()
    }
}

impl<P: Fn(&str)> Debian<'_, P> {
    /// The newest 6.12 kernel package of `kernel` (if given) and the
    /// candidate versions of `packages`, from memory when apt's state has
    /// not changed.
    pub(crate) fn resolve(&self, kernel: Option<Flavour>, packages: &[&str]) -> Result<Resolved> {
        let memo_path = self.cache_root.join("apt-resolved.json");
        let stamp = apt_state_stamp();
        let mut memo = stamp
            .as_ref()
            .and_then(|stamp| {
                let text = std::fs::read(&memo_path).ok()?;
                let memo: Memo = serde_json::from_slice(&text).ok()?;
                (memo.stamp == *stamp).then_some(memo)
            })
            .unwrap_or_else(|| Memo {
                stamp: stamp.clone().unwrap_or_default(),
                ..Memo::default()
            });

        let mut to_show: Vec<String> = packages
            .iter()
            .filter(|p| !memo.packages.contains_key(**p))
            .map(|p| (*p).to_owned())
            .collect();
        let mut kernel_name = None;
        if let Some(flavour) = kernel.filter(|f| !memo.kernels.contains_key(f)) {
            let pattern = flavour.package_pattern();
            (self.progress)(&format!("resolving {pattern} with apt-cache"));
            let mut search = command::command(APT_CACHE, ["search", "--names-only", &pattern]);
            let out = command::stdout(APT_CACHE, &mut search, "run `apt-get update`")?;
            let name = pick_kernel(&out, flavour).ok_or(Error::NoKernelPackage { pattern })?;
            to_show.push(name.clone());
            kernel_name = Some((flavour, name));
        }
        if !to_show.is_empty() {
            let mut show = command::command(
                APT_CACHE,
                ["show", "--no-all-versions"]
                    .into_iter()
                    .chain(to_show.iter().map(String::as_str)),
            );
            let out = command::stdout(
                APT_CACHE,
                &mut show,
                "run `apt-get update`, and check the package names",
            )?;
            let mut found = parse_candidates(&out);
            for name in &to_show {
                let candidate = found.remove(name).ok_or_else(|| Error::NoCandidate {
                    package: name.clone(),
                })?;
                match &kernel_name {
                    Some((flavour, kernel)) if kernel == name => {
                        memo.kernels.insert(*flavour, candidate);
                    }
                    _ => {
                        memo.packages.insert(name.clone(), candidate);
                    }
                }
            }
            if stamp.is_some() {
                self.save_memo(&memo_path, &memo);
            }
        }

        let kernel =
            match kernel {
                Some(flavour) => Some(memo.kernels.get(&flavour).cloned().ok_or_else(|| {
                    Error::NoKernelPackage {
                        pattern: flavour.package_pattern(),
                    }
                })?),
                None => None,
            };
        let packages = packages
            .iter()
            .map(|p| {
                memo.packages
                    .get(*p)
                    .cloned()
                    .ok_or_else(|| Error::NoCandidate {
                        package: (*p).to_owned(),
                    })
            })
            .collect::<Result<_>>()?;
        Ok(Resolved { kernel, packages })
    }

    /// Writes the memo through a temporary file; failing to is only logged.
    fn save_memo(&self, path: &Path, memo: &Memo) {
        let json = serde_json::to_vec_pretty(memo).expect("the memo has only string keys");
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let result = std::fs::create_dir_all(self.cache_root)
            .and_then(|()| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = result {
            tracing::warn!(path = ?path, %error, "could not remember apt-cache's answers");
        }
    }

    /// The unpacked tree of `candidate`, downloading and unpacking it first
    /// if needed.
    pub(crate) fn unpacked(&self, candidate: &Candidate) -> Result<PathBuf> {
        let pkgs = self.cache_root.join("pkgs");
        let dest = pkgs.join(candidate.dir_name());
        if dest.join(COMPLETE).is_file() {
            return Ok(dest);
        }
        let deb = self.download(candidate)?;
        (self.progress)(&format!("unpacking {}", candidate.package));
        let tmp = TempDir::new_in(&pkgs, &candidate.dir_name())?;
        let mut unpack = command::command(DPKG_DEB, [Path::new("-x"), &deb, tmp.path()]);
        command::stdout(
            DPKG_DEB,
            &mut unpack,
            "the downloaded package may be damaged: delete it and build again",
        )?;
        let marker = tmp.path().join(COMPLETE);
        std::fs::write(&marker, candidate.version.as_bytes())
            .map_err(Error::io("write", &marker))?;
        tmp.publish(&dest)?;
        Ok(dest)
    }

    /// The downloaded .deb of `candidate`, fetching it with `apt-get
    /// download` first if needed.
    pub(crate) fn download(&self, candidate: &Candidate) -> Result<PathBuf> {
        self.prefetch(&[candidate])?;
        Ok(self.deb_path(candidate))
    }

    fn deb_path(&self, candidate: &Candidate) -> PathBuf {
        self.cache_root.join("downloads").join(candidate.deb_name())
    }

    /// Downloads, in one `apt-get download` run, every candidate that is
    /// neither downloaded nor unpacked yet (each apt run costs about a
    /// second before it fetches anything).
    pub(crate) fn prefetch(&self, candidates: &[&Candidate]) -> Result<()> {
        let pkgs = self.cache_root.join("pkgs");
        let missing: Vec<&Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| {
                !self.deb_path(c).is_file() && !pkgs.join(c.dir_name()).join(COMPLETE).is_file()
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let what: Vec<String> = missing
            .iter()
            .map(|c| format!("{} {} ({})", c.package, c.version, c.size_text()))
            .collect();
        (self.progress)(&format!("downloading {}", what.join(", ")));
        let started = Instant::now();
        let downloads = self.cache_root.join("downloads");
        let tmp = TempDir::new_in(&downloads, "download")?;
        let mut download = command::command(APT_GET, ["download"]);
        if is_root_owned(tmp.path()) {
            // As root, apt hands the download to the `_apt` user, which
            // cannot write into our private directory; it would fall back
            // to root with a warning. Skip the hand-over instead.
            download.args(["-o", "APT::Sandbox::User=root"]);
        }
        download
            .args(
                missing
                    .iter()
                    .map(|c| format!("{}={}", c.package, c.version)),
            )
            .current_dir(tmp.path());
        command::passthrough(
            APT_GET,
            &mut download,
            "check the network and the apt sources, and run `apt-get update`",
        )?;
        let mut bytes = 0;
        for candidate in &missing {
            let deb = downloaded_deb(tmp.path(), &candidate.package)?;
            let dest = self.deb_path(candidate);
            std::fs::rename(&deb, &dest).map_err(Error::io("rename into place", &dest))?;
            bytes += std::fs::metadata(&dest).map_or(0, |m| m.len());
        }
        (self.progress)(&format!(
            "downloaded {} in {:.1} s",
            megabytes(bytes),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// Whether `path` belongs to root, i.e. whether we run as root (we just
/// created it).
pub(crate) fn is_root_owned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.uid() == 0)
}

/// The one `<package>_*.deb` file in `dir`.
fn downloaded_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    let prefix = format!("{package}_");
    let debs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    match <[PathBuf; 1]>::try_from(debs) {
        Ok([deb]) => Ok(deb),
        Err(debs) => Err(Error::NotInPackage {
            what: format!(
                "exactly one downloaded {prefix}*.deb (found {})",
                debs.len()
            ),
            dir: dir.to_owned(),
        }),
    }
}

/// The installed packages that own `paths` (host files, as named or as
/// found after resolving links), with their versions, sorted and without
/// duplicates. Files no package owns are left out (and logged).
pub(crate) fn owners(paths: &[(PathBuf, PathBuf)]) -> Result<Vec<PackageInfo>> {
    // dpkg knows a file by the path its package ships, which on merged-/usr
    // systems may be the /usr-less twin of the one we have.
    let mut queries: Vec<String> = Vec::new();
    for (named, real) in paths {
        for path in [named, real] {
            let path = path.to_string_lossy().into_owned();
            for candidate in [usr_twin(&path), path] {
                if !queries.contains(&candidate) {
                    queries.push(candidate);
                }
            }
        }
    }
    let mut search = command::command(DPKG, ["-S"]);
    search.args(&queries);
    // dpkg -S exits 1 when some path has no owner; the others are still listed.
    let out = command::output(DPKG, &mut search)?;
    let found = parse_dpkg_search(&String::from_utf8_lossy(&out.stdout));
    let mut packages: Vec<String> = Vec::new();
    for (named, real) in paths {
        let owner = [named, real].iter().find_map(|path| {
            let path = path.to_string_lossy();
            let twin = usr_twin(&path);
            found
                .iter()
                .find(|(_, p)| *p == path || *p == twin)
                .map(|(package, _)| package.clone())
        });
        match owner {
            Some(package) if !packages.contains(&package) => packages.push(package),
            Some(_) => {}
            None => tracing::warn!(path = ?named, "no installed package owns this file"),
        }
    }
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = command::command(DPKG_QUERY, ["-W", "-f", "${Package}\t${Version}\n"]);
    query.args(&packages);
    let out = command::stdout(DPKG_QUERY, &mut query, "check the dpkg database")?;
    let mut infos = parse_dpkg_query(&out);
    infos.sort();
    infos.dedup();
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = "\
linux-image-6.12.43+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.99+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.200+deb12-cloud-amd64-dbg - Linux 6.12 for x86-64 cloud (debug symbols)
linux-image-6.12.300+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.118+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.x+deb12-cloud-amd64 - nonsense
";

    #[test]
    fn the_highest_patch_level_of_the_flavour_wins_numerically() {
        assert_eq!(
            pick_kernel(SEARCH, Flavour::Cloud).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            pick_kernel(SEARCH, Flavour::Generic).as_deref(),
            Some("linux-image-6.12.118+deb12-amd64")
        );
        assert_eq!(pick_kernel("", Flavour::Cloud), None);
        assert_eq!(
            kernel_patch_level("linux-image-6.12.7+deb12-amd64", Flavour::Cloud),
            None
        );
        assert_eq!(
            kernel_patch_level("linux-image-6.12.7+deb12-amd64", Flavour::Generic),
            Some(7)
        );
        assert_eq!(
            kernel_patch_level("linux-image-6.1.7+deb12-amd64", Flavour::Generic),
            None
        );
        assert_eq!(
            kernel_release("linux-image-6.12.117+deb12-cloud-amd64"),
            Some("6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(kernel_release("linux-headers-6.12.117+deb12-amd64"), None);
    }

    #[test]
    fn package_patterns_are_the_documented_regular_expressions() {
        assert_eq!(
            Flavour::Cloud.package_pattern(),
            r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$"
        );
        assert_eq!(
            Flavour::Generic.package_pattern(),
            r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"
        );
    }

    #[test]
    fn candidates_come_from_apt_cache_show_stanzas() {
        let show = "\
Package: linux-image-6.12.117+deb12-cloud-amd64
Source: linux-signed-6.12-amd64 (6.12.117+1~deb12u1)
Version: 6.12.117-1~deb12u1
Architecture: amd64
Description: Linux 6.12 for x86-64 cloud (signed)
 The Linux kernel 6.12 and modules for use on x86-64 cloud.
Size: 34307256

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
Size: 928188

Package: broken
";
        let found = parse_candidates(show);
        assert_eq!(found.len(), 2);
        let busybox = &found["busybox-static"];
        assert_eq!(busybox.version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(
            busybox.deb_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(busybox.dir_name(), "busybox-static_1%3a1.35.0-4+deb12u1+b1");
        let kernel = &found["linux-image-6.12.117+deb12-cloud-amd64"];
        assert_eq!(kernel.size, Some(34_307_256));
        assert_eq!(kernel.size_text(), "34.3 MB");
    }

    #[test]
    fn dpkg_owners_and_versions_parse() {
        let search = "\
libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6
diversion by foo from: /bin/sh
libfoo1:amd64, libfoo1:i386: /usr/share/doc/foo
iproute2: /sbin/ip
";
        assert_eq!(
            parse_dpkg_search(search),
            [
                ("libc6:amd64", "/lib/x86_64-linux-gnu/libc.so.6"),
                ("libfoo1:amd64", "/usr/share/doc/foo"),
                ("libfoo1:i386", "/usr/share/doc/foo"),
                ("iproute2", "/sbin/ip"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            parse_dpkg_query("dash\t0.5.12-2\nlibc6\t2.36-9+deb12u14\nhalf\t\n"),
            [
                PackageInfo {
                    name: "dash".into(),
                    version: "0.5.12-2".into()
                },
                PackageInfo {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into()
                },
            ]
        );
        assert_eq!(usr_twin("/usr/sbin/ip"), "/sbin/ip");
        assert_eq!(
            usr_twin("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
    }
}
