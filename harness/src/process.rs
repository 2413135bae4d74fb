//! Child processes and cleanup on every exit path.
//!
//! The rig starts QEMU and keeps sockets in temporary directories. They must
//! not outlive the harness, whatever way it ends:
//!
//! - normal return and panics: the owners ([`crate::Vm`]) kill and remove in
//!   `Drop`;
//! - Ctrl-C, SIGTERM, SIGHUP: [`install_signal_handlers`] kills every
//!   registered process, removes every registered directory and exits with
//!   128 + the signal number;
//! - the harness killed outright (SIGKILL, abort): children are started with
//!   `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills them when the thread
//!   that started them goes away. Keep a [`crate::Vm`] on the thread that
//!   started it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    pids: BTreeMap<u64, i32>,
    dirs: BTreeMap<u64, PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeMap::new(),
    dirs: BTreeMap::new(),
});
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the maps consistent (each
    // operation is one insert or remove), so poisoning is ignored.
    REGISTRY.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Keeps a process or directory registered for cleanup on a signal; drop it
/// once its owner has cleaned up itself.
#[derive(Debug)]
pub struct Registration {
    token: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = registry();
        reg.pids.remove(&self.token);
        reg.dirs.remove(&self.token);
    }
}

/// Registers a child to be killed if the harness gets a termination signal.
pub fn register_process(pid: u32) -> Registration {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    registry().pids.insert(token, pid as i32);
    Registration { token }
}

/// Registers a directory to be removed if the harness gets a termination
/// signal.
pub fn register_dir(dir: PathBuf) -> Registration {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    registry().dirs.insert(token, dir);
    Registration { token }
}

/// Kills and removes everything registered. Called from the signal thread.
fn clean_up_all() {
    let reg = registry();
    for pid in reg.pids.values() {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    for pid in reg.pids.values() {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), None);
    }
    for dir in reg.dirs.values() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler (once per process). After a
/// signal the process cleans up and exits with 128 + signal.
pub fn install_signal_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(err) => {
                tracing::warn!(
                    "cannot install signal handlers, Ctrl-C may leave QEMU running: {err}"
                );
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("vfrig-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    crate::ui::say(format!("signal {sig}: stopping QEMU and cleaning up"));
                    clean_up_all();
                    std::process::exit(128 + sig);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start the signal thread, Ctrl-C may leave QEMU running: {err}");
        }
    });
}

/// Spawns `cmd` so that it dies with the spawning thread
/// (`PR_SET_PDEATHSIG`), and registers it for signal cleanup.
pub fn spawn_tied(cmd: &mut Command) -> std::io::Result<(Child, Registration)> {
    tie_to_parent(cmd);
    let child = cmd.spawn()?;
    let registration = register_process(child.id());
    Ok((child, registration))
}

#[allow(unsafe_code)]
fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls prctl(2), which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Kills a child (SIGKILL) and reaps it. A child that already exited is
/// only reaped.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}
