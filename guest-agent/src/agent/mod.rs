//! The agent proper: boot duties as PID 1, the request loop, and the
//! services behind each request.
//!
//! Module map:
//! - [`console`]: the few human-readable log lines (kernel console or stderr).
//! - [`boot`]: PID 1 duties: pseudo file systems, kernel modules, loopback.
//! - [`channel`]: finding the virtio-console port, reading request lines,
//!   the one writer all replies go through.
//! - [`request`]: turning a line into a [`Request`](vfrig_agent::proto::Request)
//!   and an [`Op`](vfrig_agent::proto::Op) into a reply.
//! - [`reaper`]: the only code that waits for child processes.
//! - [`process`]: shell commands in their own process group, output capture.
//! - [`jobs`]: named background commands.
//! - [`files`]: reading and writing guest files.
//! - [`recorder`], [`netlink`]: rtnetlink link events and link setup.
//! - [`uevents`]: raw kernel uevents of network devices being added, and
//!   what sysfs showed right after each.
//! - [`blast`], [`packet`]: `vfrig-agent blast`, raw Ethernet frames sent
//!   from several threads as fast as they go (not part of the agent
//!   proper: a subcommand run from guest shell commands).
//!
//! Invariant: PID 1 never exits and never lets a panic escape `main`; every
//! error becomes a log line or an error reply.

#[macro_use]
pub mod console;

pub mod blast;
pub mod boot;
pub mod channel;
pub mod clock;
mod error;
mod files;
mod jobs;
mod netlink;
mod packet;
mod process;
mod reaper;
mod recorder;
mod request;
mod serve;
mod uevents;

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub use serve::{run_pid1, run_stdio};

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub(crate) fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("vfrig-agent-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a scratch dir");
            Self(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How the agent was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of the test VM, serving on the virtio-console port.
    Pid1,
    /// A plain process serving on stdin/stdout (host tests).
    Stdio,
}

/// Locks `mutex`, ignoring poisoning.
///
/// A thread that panicked while holding one of the agent's locks has already
/// been logged by the panic hook; the agent must keep serving (as PID 1 it
/// cannot exit), and every structure behind these locks stays consistent
/// between statements, so the data is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How often an observer's reader thread checks whether it should stop.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(100);

/// The reader thread of an observer socket (the link recorder, the uevent
/// observer): waits until `fd` is readable, checking `stop` every
/// [`STOP_POLL`], then calls `read` with `state` locked. It ends when `stop`
/// is set or when `failed` (the state's failure reason) is set, by `read`
/// or by a failed poll; a failure is logged under `name`.
pub(crate) fn read_until_stopped<S>(
    name: &str,
    fd: BorrowedFd<'_>,
    stop: &AtomicBool,
    state: &Mutex<S>,
    failed: fn(&mut S) -> &mut Option<String>,
    mut read: impl FnMut(&mut S),
) {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(STOP_POLL).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                *failed(&mut lock(state)) = Some(format!("poll: {e}"));
                return;
            }
        }
        let mut state = lock(state);
        read(&mut state);
        if let Some(reason) = failed(&mut state) {
            agent_log!("{name} stopped: {reason}");
            return;
        }
    }
}
