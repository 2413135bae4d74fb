//! PID 1 duties before serving: pseudo file systems, kernel modules and the
//! loopback link. Every step logs its failure and the boot goes on.

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
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

/// One line of the module list: the module file and the names of the
/// modules it needs (from its `.modinfo` `depends=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Absolute path of the `.ko` file.
    pub path: PathBuf,
    /// Module names it depends on (`-` and `_` are the same).
    pub deps: Vec<String>,
}

/// Parses a module list: one module per line, `PATH [DEP,DEP...]`, in load
/// order (dependencies first); blank lines and `#` comments are skipped.
pub fn parse_module_list(text: &str) -> Vec<ModuleSpec> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let path = PathBuf::from(words.next().unwrap_or_default());
            let deps = words
                .next()
                .map(|d| {
                    d.split(',')
                        .filter(|n| !n.is_empty())
                        .map(normalise)
                        .collect()
                })
                .unwrap_or_default();
            ModuleSpec { path, deps }
        })
        .collect()
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
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

/// Loads the modules named in the list file `list` with `finit_module` and
/// no parameters, on as many threads as there are CPUs, each module once
/// the modules it depends on are in. A missing list means no modules;
/// EEXIST counts as loaded. Results come in list order.
pub fn load_modules(list: &Path) -> Vec<ModuleLoad> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            agent_log!("read module list {}: {e}", list.display());
            return Vec::new();
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    load_all(&parse_module_list(&text), threads, load_module)
}

#[derive(Debug, Clone)]
enum Slot {
    Pending,
    Running,
    Done(ModuleLoad),
}

/// Runs `load` for every module on up to `threads` threads, never before
/// the modules it depends on have loaded. Dependencies that are not in the
/// list count as present (built in, or loaded already). A module whose
/// dependency failed is not loaded and fails too.
fn load_all(
    specs: &[ModuleSpec],
    threads: usize,
    load: impl Fn(&Path) -> Result<(), String> + Sync,
) -> Vec<ModuleLoad> {
    let names: Vec<String> = specs
        .iter()
        .map(|s| normalise(&module_name(&s.path)))
        .collect();
    let index = |dep: &str| names.iter().position(|n| n == dep);
    let state = Mutex::new(vec![Slot::Pending; specs.len()]);
    let changed = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());

    let worker = || loop {
        let mut slots = lock();
        // Pick the first module whose dependencies are all done.
        let pick = loop {
            let mut waiting = false;
            let mut pick = None;
            for i in 0..specs.len() {
                if !matches!(slots[i], Slot::Pending) {
                    continue;
                }
                let mut ready = true;
                let mut failed_dep = None;
                for dep in &specs[i].deps {
                    match index(dep).map(|j| &slots[j]) {
                        None => {}
                        Some(Slot::Done(d)) if d.error.is_none() => {}
                        Some(Slot::Done(_)) => failed_dep = Some(dep.clone()),
                        Some(_) => ready = false,
                    }
                }
                if let Some(dep) = failed_dep {
                    slots[i] = Slot::Done(ModuleLoad {
                        name: module_name(&specs[i].path),
                        ms: 0,
                        error: Some(format!("not loaded: it needs {dep}, which failed")),
                    });
                    changed.notify_all();
                    continue;
                }
                if ready {
                    pick = Some(i);
                    break;
                }
                waiting = true;
            }
            if let Some(i) = pick {
                slots[i] = Slot::Running;
                break Some(i);
            }
            let running = slots.iter().any(|s| matches!(s, Slot::Running));
            if !waiting {
                break None;
            }
            if !running {
                // Pending modules wait on each other: a cycle in the list.
                for (i, slot) in slots.iter_mut().enumerate() {
                    if matches!(slot, Slot::Pending) {
                        *slot = Slot::Done(ModuleLoad {
                            name: module_name(&specs[i].path),
                            ms: 0,
                            error: Some("not loaded: its dependencies form a cycle".into()),
                        });
                    }
                }
                changed.notify_all();
                break None;
            }
            slots = changed.wait(slots).unwrap_or_else(|p| p.into_inner());
        };
        let Some(i) = pick else { return };
        drop(slots);
        let start = Instant::now();
        let error = load(&specs[i].path).err();
        let done = ModuleLoad {
            name: module_name(&specs[i].path),
            ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        };
        lock()[i] = Slot::Done(done);
        changed.notify_all();
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            scope.spawn(worker);
        }
        worker();
    });
    state
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .filter_map(|slot| match slot {
            Slot::Done(load) => Some(load),
            _ => None,
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

/// One log line for the module loads: count, failures and the wall time
/// they took together.
pub fn modules_summary(modules: &[ModuleLoad], total: u64) -> String {
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
        let paths: Vec<PathBuf> = parse_module_list(text)
            .into_iter()
            .map(|m| m.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/lib/modules/a.ko"),
                PathBuf::from("/lib/modules/b.ko")
            ]
        );
        let with_deps = parse_module_list("/m/bonding.ko tls\n/m/8021q.ko garp,mrp\n/m/tun.ko\n");
        assert_eq!(with_deps[0].deps, vec!["tls"]);
        assert_eq!(with_deps[1].deps, vec!["garp", "mrp"]);
        assert!(with_deps[2].deps.is_empty());
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
            modules_summary(&loads, 3),
            "loaded 0 of 1 modules in 3 ms; failed: gone"
        );
    }

    fn spec(name: &str, deps: &[&str]) -> ModuleSpec {
        ModuleSpec {
            path: PathBuf::from(format!("/m/{name}.ko")),
            deps: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn parallel_loading_respects_dependencies() {
        use std::sync::Mutex;
        let specs = [
            spec("llc", &[]),
            spec("stp", &["llc"]),
            spec("garp", &["stp", "llc"]),
            spec("mrp", &[]),
            spec("8021q", &["garp", "mrp"]),
            spec("tls", &[]),
            spec("bonding", &["tls"]),
            spec("tun", &[]),
            spec("virtio_net", &["net_failover", "builtin_thing"]),
            spec("failover", &[]),
            spec("net_failover", &["failover"]),
        ];
        for threads in [1, 2, 4] {
            let order = Mutex::new(Vec::new());
            let loads = load_all(&specs, threads, |p| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                order.lock().unwrap().push(module_name(p));
                Ok(())
            });
            let order = order.into_inner().unwrap();
            assert_eq!(order.len(), specs.len());
            let pos = |n: &str| order.iter().position(|m| m == n).unwrap();
            for s in &specs {
                for d in &s.deps {
                    if d != "builtin_thing" {
                        assert!(pos(d) < pos(&module_name(&s.path)), "{order:?}");
                    }
                }
            }
            let names: Vec<&str> = loads.iter().map(|l| l.name.as_str()).collect();
            assert_eq!(
                names[..3],
                ["llc", "stp", "garp"],
                "results keep list order"
            );
            assert!(loads.iter().all(|l| l.error.is_none()));
        }
    }

    #[test]
    fn a_failed_dependency_fails_its_dependents_without_loading_them() {
        let specs = [
            spec("tls", &[]),
            spec("bonding", &["tls"]),
            spec("tun", &[]),
        ];
        let loaded = std::sync::Mutex::new(Vec::new());
        let loads = load_all(&specs, 2, |p| {
            loaded.lock().unwrap().push(module_name(p));
            if p.ends_with("tls.ko") {
                Err("finit_module: Invalid argument".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(
            loads[1].error.as_deref(),
            Some("not loaded: it needs tls, which failed")
        );
        assert!(!loaded
            .into_inner()
            .unwrap()
            .contains(&"bonding".to_string()));
        assert!(loads[2].error.is_none());
    }

    #[test]
    fn a_dependency_cycle_fails_instead_of_hanging() {
        let specs = [spec("a", &["b"]), spec("b", &["a"]), spec("c", &[])];
        let loads = load_all(&specs, 2, |_| Ok(()));
        assert!(loads[0].error.as_deref().unwrap().contains("cycle"));
        assert!(loads[1].error.as_deref().unwrap().contains("cycle"));
        assert!(loads[2].error.is_none());
    }
}
