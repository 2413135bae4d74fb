//! PID 1 duties before serving: pseudo file systems, kernel modules and the
//! loopback link. Every step logs its failure and the boot goes on.

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};
use vfrig_agent::proto::ModuleLoad;

use super::netlink;

/// The mounts a test needs: (source, target, file system type, options).
const MOUNTS: &[(&str, &str, &str, Option<&str>)] = &[
    ("proc", "/proc", "proc", None),
    ("sysfs", "/sys", "sysfs", None),
    ("devtmpfs", "/dev", "devtmpfs", Some("mode=0755")),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        Some("gid=5,mode=620,ptmxmode=666"),
    ),
    ("tmpfs", "/run", "tmpfs", Some("mode=0755")),
    ("tmpfs", "/tmp", "tmpfs", Some("mode=1777")),
    ("hugetlbfs", "/dev/hugepages", "hugetlbfs", None),
];

/// Mounts proc, sysfs, devtmpfs, devpts, tmpfs on /run and /tmp, and
/// hugetlbfs, creating the mount points. A target that is already a mount
/// (devtmpfs with `CONFIG_DEVTMPFS_MOUNT`) is fine.
pub fn mount_all() {
    for &(source, target, fstype, options) in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(target) {
            agent_log!("create mount point {target}: {e}");
        }
        let flags = MsFlags::MS_NOSUID
            | if fstype == "devtmpfs" || fstype == "devpts" {
                MsFlags::empty()
            } else {
                MsFlags::MS_NODEV
            };
        match mount(Some(source), target, Some(fstype), flags, options) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {}
            Err(e) => agent_log!("mount {fstype} on {target}: {e}"),
        }
    }
}

/// The module paths in a module list: one per line, in load order; blank
/// lines and `#` comments are skipped.
pub fn parse_module_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// A module's name: its file name up to `.ko` (`/x/ice.ko` -> `ice`).
pub fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.find(".ko") {
        Some(end) => file.get(..end).unwrap_or_default().to_owned(),
        None => file,
    }
}

/// Loads the modules named in the list file `list`, in order, with
/// `finit_module` and no parameters. A missing list means no modules;
/// EEXIST counts as loaded.
pub fn load_modules(list: &Path) -> Vec<ModuleLoad> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            agent_log!("read module list {}: {e}", list.display());
            return Vec::new();
        }
    };
    parse_module_list(&text)
        .iter()
        .map(|path| {
            let start = Instant::now();
            let error = load_module(path).err();
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            ModuleLoad {
                name: module_name(path),
                ms,
                error,
            }
        })
        .collect()
}

fn load_module(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let no_params: &CStr = c"";
    match finit_module(&file, no_params, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("finit_module {}: {e}", path.display())),
    }
}

/// One log line for the module loads: count, failures and total time.
pub fn modules_summary(modules: &[ModuleLoad]) -> String {
    let total: u64 = modules.iter().map(|m| m.ms).sum();
    let failed: Vec<&str> = modules
        .iter()
        .filter(|m| m.error.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let mut line = format!(
        "loaded {} of {} modules in {total} ms",
        modules.len() - failed.len(),
        modules.len()
    );
    if !failed.is_empty() {
        line.push_str(&format!("; failed: {}", failed.join(", ")));
    }
    line
}

/// Sets the loopback link (ifindex 1) up.
pub fn loopback_up() {
    if let Err(e) = netlink::set_link_up(1) {
        agent_log!("bring up lo: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_skips_blanks_and_comments() {
        let text = "# load order\n/lib/modules/a.ko\n\n  /lib/modules/b.ko  # trailing\n#/lib/modules/c.ko\n";
        assert_eq!(
            parse_module_list(text),
            vec![
                PathBuf::from("/lib/modules/a.ko"),
                PathBuf::from("/lib/modules/b.ko")
            ]
        );
        assert!(parse_module_list("").is_empty());
    }

    #[test]
    fn module_names_are_file_stems() {
        assert_eq!(
            module_name(Path::new("/lib/modules/6.12/kernel/ice.ko")),
            "ice"
        );
        assert_eq!(module_name(Path::new("8021q.ko")), "8021q");
        assert_eq!(module_name(Path::new("/x/iavf.ko.xz")), "iavf");
        assert_eq!(module_name(Path::new("/x/noext")), "noext");
    }

    #[test]
    fn missing_list_means_no_modules_and_bad_paths_are_reported() {
        assert!(load_modules(Path::new("/nonexistent/vfrig/modules")).is_empty());
        let dir = crate::agent::test_util::Scratch::new("boot");
        let list = dir.path().join("modules");
        std::fs::write(&list, "# nothing real\n/nonexistent/vfrig/gone.ko\n").unwrap();
        let loads = load_modules(&list);
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].name, "gone");
        let error = loads[0].error.as_deref().unwrap();
        assert!(
            error.starts_with("open /nonexistent/vfrig/gone.ko: "),
            "{error}"
        );
        assert_eq!(
            modules_summary(&loads),
            format!("loaded 0 of 1 modules in {} ms; failed: gone", loads[0].ms)
        );
    }
}
