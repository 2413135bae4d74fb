//! The guest's userland: busybox applets, the host's dash and iproute2 with
//! their shared libraries, and the image's directory layout.
//!
//! The image uses Debian's merged-/usr layout: `bin`, `sbin`, `lib` and
//! `lib64` are links into `usr/`, so every path a host tool or busybox
//! names (`/bin/ls`, `/lib/x86_64-linux-gnu/libc.so.6`,
//! `/lib64/ld-linux-x86-64.so.2`) exists in exactly one place, and the
//! dynamic loader finds libraries in both `/lib/x86_64-linux-gnu` and
//! `/usr/lib/x86_64-linux-gnu`.

use std::path::{Path, PathBuf};

use crate::command::{self, LDD};
use crate::{Error, Initramfs, Result};

/// Top-level directories that are links into `usr/`.
pub(crate) const MERGED: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// Where `path` really lives in the image: `bin/x` → `usr/bin/x`; leading
/// slashes are dropped.
pub(crate) fn merged_usr(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let top = path.split('/').next().unwrap_or_default();
    if MERGED.contains(&top) {
        format!("usr/{path}")
    } else {
        path.to_owned()
    }
}

/// `/etc/profile` for interactive busybox shells. busybox's shell runs its
/// own applets before searching PATH, so without the alias `ip` would be
/// busybox's small one rather than iproute2's.
pub(crate) const PROFILE: &str = "\
# vfrig guest profile (for interactive shells; set ENV=/etc/profile)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
alias ip=/usr/sbin/ip
PS1='vfrig# '
";

/// Applets that busybox must not provide: `ip` is iproute2's and `sh` is
/// dash.
const NOT_FROM_BUSYBOX: [&str; 2] = ["ip", "sh"];

/// The applet paths from `busybox --list-full` (`bin/ls`, `usr/sbin/arping`)
/// that the image links to busybox.
pub(crate) fn applets(list_full: &str) -> Vec<String> {
    list_full
        .lines()
        .map(|line| line.trim().trim_start_matches('/'))
        .filter(|path| !path.is_empty() && !path.split('/').any(|p| p.is_empty() || p == ".."))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or_default();
            !NOT_FROM_BUSYBOX.contains(&name)
        })
        .map(str::to_owned)
        .collect()
}

/// The files the dynamic loader maps for a binary, from `ldd` output: each
/// `name => /path (addr)` and the loader's own `/path (addr)` line.
/// `Err(name)` for a library ldd could not find.
pub(crate) fn parse_ldd(output: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_owned());
                }
                rest
            }
            None => line,
        };
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            let path = PathBuf::from(path);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    Ok(paths)
}

/// A host file to copy into the image.
#[derive(Debug, Clone)]
pub(crate) struct HostFile {
    /// The path it has in the image (absolute, before merging into `usr/`).
    pub(crate) image_path: String,
    /// The path it was found at on the host.
    pub(crate) host_path: PathBuf,
    /// The same file with links resolved.
    pub(crate) real_path: PathBuf,
    /// Its contents.
    pub(crate) data: Vec<u8>,
}

/// A host program the image needs and where to look for it.
struct HostProgram {
    name: &'static str,
    package: &'static str,
    candidates: &'static [&'static str],
    image_path: &'static str,
}

const DASH: HostProgram = HostProgram {
    name: "dash",
    package: "dash",
    candidates: &["/usr/bin/dash", "/bin/dash"],
    image_path: "/usr/bin/dash",
};

const IP: HostProgram = HostProgram {
    name: "ip",
    package: "iproute2",
    candidates: &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
    image_path: "/usr/sbin/ip",
};

/// dash and iproute2's `ip` from the host, with the libraries they load.
#[derive(Debug, Clone)]
pub(crate) struct HostTools {
    /// dash, ip, then the libraries (each once, in first-seen order).
    pub(crate) files: Vec<HostFile>,
}

impl HostTools {
    /// Finds and reads the host's dash and ip and their libraries.
    pub(crate) fn collect() -> Result<Self> {
        let mut files: Vec<HostFile> = Vec::new();
        for program in [DASH, IP] {
            let host_path = program
                .candidates
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .ok_or(Error::ToolMissing {
                    tool: program.name,
                    package: program.package,
                })?;
            files.push(read_host_file(program.image_path, host_path)?);
            let mut ldd = command::command(LDD, [host_path]);
            let out = command::stdout(LDD, &mut ldd, "the host binary may be damaged")?;
            let libraries = parse_ldd(&out).map_err(|library| Error::MissingLibrary {
                binary: host_path.to_owned(),
                library,
            })?;
            for library in libraries {
                let image_path = library.to_string_lossy().into_owned();
                if files.iter().all(|f| f.image_path != image_path) {
                    files.push(read_host_file(&image_path, &library)?);
                }
            }
        }
        Ok(Self { files })
    }

    /// Adds the files to `fs`: each at its path (merged into `usr/`), mode
    /// 0755, plus `/bin/sh` → dash.
    pub(crate) fn install(&self, fs: &mut Initramfs) -> Result<()> {
        for file in &self.files {
            fs.file(&merged_usr(&file.image_path), 0o755, file.data.clone())?;
        }
        fs.symlink(&merged_usr("/bin/sh"), "dash")?;
        Ok(())
    }
}

fn read_host_file(image_path: &str, host_path: &Path) -> Result<HostFile> {
    let real_path = std::fs::canonicalize(host_path).map_err(Error::io("resolve", host_path))?;
    let data = std::fs::read(&real_path).map_err(Error::io("read", &real_path))?;
    Ok(HostFile {
        image_path: image_path.to_owned(),
        host_path: host_path.to_owned(),
        real_path,
        data,
    })
}

/// The directories, links and device nodes every image has.
pub(crate) fn base_layout(fs: &mut Initramfs) -> Result<()> {
    for top in MERGED {
        fs.dir(&format!("usr/{top}"), 0o755)?;
        fs.symlink(top, &format!("usr/{top}"))?;
    }
    for dir in ["proc", "sys", "dev", "run", "etc", "mnt", "root"] {
        fs.dir(dir, if dir == "root" { 0o700 } else { 0o755 })?;
    }
    fs.dir("tmp", 0o1777)?.dir("var/tmp", 0o1777)?;
    // iproute2 keeps network namespaces in /var/run/netns.
    fs.symlink("var/run", "/run")?;
    fs.char_dev("dev/console", 0o600, 5, 1)?
        .char_dev("dev/null", 0o666, 1, 3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let out = "\
\tlinux-vdso.so.1 (0x00007f90b4940000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f90b47e0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f90b45b7000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f90b4942000)
\tlibmd.so.0 => /lib/x86_64-linux-gnu/libmd.so.0 (0x00007f90b458b000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f90b45b7000)
";
        assert_eq!(
            parse_ldd(out),
            Ok([
                "/lib/x86_64-linux-gnu/libbpf.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/libmd.so.0",
            ]
            .map(PathBuf::from)
            .to_vec())
        );
        assert_eq!(parse_ldd("\tstatically linked\n"), Ok(vec![]));
        assert_eq!(
            parse_ldd("\tlibmnl.so.0 => not found\n"),
            Err("libmnl.so.0".to_owned())
        );
    }

    #[test]
    fn busybox_applets_leave_ip_and_sh_to_the_real_tools() {
        let list = "usr/bin/[\nbin/ash\nsbin/ip\nbin/sh\nbin/ls\nusr/sbin/arping\n\n../x\n";
        assert_eq!(
            applets(list),
            ["usr/bin/[", "bin/ash", "bin/ls", "usr/sbin/arping"]
        );
    }

    #[test]
    fn top_level_binary_and_library_directories_merge_into_usr() {
        assert_eq!(merged_usr("/bin/ls"), "usr/bin/ls");
        assert_eq!(merged_usr("sbin/ip"), "usr/sbin/ip");
        assert_eq!(
            merged_usr("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged_usr("/usr/bin/dash"), "usr/bin/dash");
        assert_eq!(merged_usr("/etc/profile"), "etc/profile");
        assert_eq!(merged_usr("/library/x"), "library/x");
    }

    #[test]
    fn the_base_layout_links_bin_and_lib_into_usr() {
        let mut fs = Initramfs::new();
        base_layout(&mut fs).expect("layout");
        assert_eq!(
            fs.get("lib"),
            Some(&crate::Entry::Symlink {
                target: "usr/lib".into()
            })
        );
        assert_eq!(fs.get("tmp"), Some(&crate::Entry::Dir { mode: 0o1777 }));
        assert_eq!(
            fs.get("/dev/null"),
            Some(&crate::Entry::CharDev {
                mode: 0o666,
                major: 1,
                minor: 3
            })
        );
        // Files go to the real directory, not through the link.
        fs.file(&merged_usr("/lib/modules/x.ko"), 0o644, vec![1])
            .expect("added");
        assert!(fs.contains("usr/lib/modules/x.ko"));
    }
}
