//! The one place that waits for child processes.
//!
//! Invariant: nothing else in the agent calls `wait`, `waitpid` or std's
//! `Child::wait`. A single reaper thread collects every exit status: as PID 1
//! (and as a child subreaper with `--stdio`) orphaned descendants are
//! reparented to the agent, so their statuses arrive too. Each status goes to
//! the [`ExitWatch`] registered for that pid, or, when nobody registered the
//! pid, counts as a reaped orphan.
//!
//! Races: [`Reaper::spawn`] holds the registry lock from before `fork` until
//! the new pid is registered, and the reaper only *peeks* at an exited child
//! (`waitid(.., WNOWAIT)`) before taking that lock, then reaps that one pid.
//! So a child that exits at once is never mistaken for an orphan, and if
//! std's spawn reaps a child whose `exec` failed, the reaper finds nothing to
//! reap and moves on.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::lock;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` with this status.
    Code(i32),
    /// This signal terminated it.
    Signal(i32),
}

/// Receives the exit of one registered child.
///
/// Besides a condition variable it owns a pipe whose read end becomes
/// readable when the exit arrives, so a thread can wait for the exit and
/// for output in one `poll`.
#[derive(Debug)]
pub struct ExitWatch {
    exit: Mutex<Option<Exit>>,
    exited: Condvar,
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
}

impl ExitWatch {
    fn new() -> io::Result<Self> {
        let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Self {
            exit: Mutex::new(None),
            exited: Condvar::new(),
            wake_rx,
            wake_tx,
        })
    }

    fn deliver(&self, exit: Exit) {
        *lock(&self.exit) = Some(exit);
        self.exited.notify_all();
        // One byte per watch, so the pipe never fills and this never blocks.
        let _ = nix::unistd::write(&self.wake_tx, &[1]);
    }

    /// The exit, once the child has been reaped.
    pub fn get(&self) -> Option<Exit> {
        *lock(&self.exit)
    }

    /// Readable once the exit has arrived.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }
}

#[derive(Debug, Default)]
struct Registry {
    waiters: HashMap<i32, Arc<ExitWatch>>,
    /// Set by each spawn, cleared by the reaper before it looks for
    /// children; lets the reaper sleep while the agent has no children.
    spawned: bool,
}

#[derive(Debug, Default)]
struct Shared {
    registry: Mutex<Registry>,
    spawned: Condvar,
    orphans: AtomicU64,
}

/// Handle to the reaper thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    shared: Arc<Shared>,
}

impl Reaper {
    /// Returns the process's reaper, starting its thread on first use.
    ///
    /// There is one per process: two threads doing `waitid(P_ALL)` would
    /// take each other's statuses.
    pub fn start() -> io::Result<Self> {
        static REAPER: Mutex<Option<Reaper>> = Mutex::new(None);
        let mut slot = lock(&REAPER);
        if let Some(reaper) = slot.as_ref() {
            return Ok(reaper.clone());
        }
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                // A panic here would stop all reaping; the hook has logged
                // it, so carry on.
                let run = std::panic::AssertUnwindSafe(|| reap_loop(&thread_shared));
                if std::panic::catch_unwind(run).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            })?;
        let reaper = Self { shared };
        *slot = Some(reaper.clone());
        Ok(reaper)
    }

    /// Spawns `cmd` and registers its pid before the reaper can see it exit.
    ///
    /// The returned [`Child`] must never be waited for; its exit arrives
    /// through the [`ExitWatch`].
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Arc<ExitWatch>)> {
        let watch = Arc::new(ExitWatch::new()?);
        let mut registry = lock(&self.shared.registry);
        let child = cmd.spawn()?;
        let pid = pid_of(&child)?;
        registry.waiters.insert(pid, Arc::clone(&watch));
        registry.spawned = true;
        self.shared.spawned.notify_all();
        Ok((child, watch))
    }

    /// Orphans reaped so far: exits of processes nobody registered.
    pub fn orphans(&self) -> u64 {
        self.shared.orphans.load(Ordering::Relaxed)
    }

    /// Sends `signal` to the process group of every registered child that
    /// has not exited yet (every command is its own group leader).
    pub fn signal_all_groups(&self, signal: Signal) {
        let registry = lock(&self.shared.registry);
        for &pid in registry.waiters.keys() {
            signal_group(pid, signal);
        }
    }
}

/// Whether the agent has any child process left, exited or not.
pub fn has_children() -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

/// Sends `signal` to the process group led by `pgid`. A group that is
/// already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid <= 1 {
        // Never signal our own group or "every process".
        return;
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => agent_log!("signal {signal} to process group {pgid}: {e}"),
    }
}

fn pid_of(child: &Child) -> io::Result<i32> {
    i32::try_from(child.id()).map_err(|_| io::Error::other("child pid out of range"))
}

fn reap_loop(shared: &Shared) {
    loop {
        lock(&shared.registry).spawned = false;
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reap(shared, pid);
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                // No children: sleep until the next spawn. The timeout only
                // guards against a missed wake-up.
                let registry = lock(&shared.registry);
                let _ = shared
                    .spawned
                    .wait_timeout_while(registry, Duration::from_secs(1), |r| !r.spawned);
            }
            Err(e) => {
                agent_log!("waitid: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn reap(shared: &Shared, pid: Pid) {
    let mut registry = lock(&shared.registry);
    let exit = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal as i32),
        // Reaped elsewhere (std's spawn reaps a child whose exec failed), or
        // not an exit after all.
        Ok(_) | Err(_) => return,
    };
    match registry.waiters.remove(&pid.as_raw()) {
        Some(watch) => watch.deliver(exit),
        None => {
            shared.orphans.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_exit(watch: &ExitWatch) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = watch.get() {
                return exit;
            }
            assert!(Instant::now() < deadline, "no exit status within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn exit_code_and_signal_reach_the_watch() {
        let reaper = Reaper::start().unwrap();
        let (_child, watch) = reaper
            .spawn(Command::new("sh").args(["-c", "exit 7"]))
            .unwrap();
        assert_eq!(wait_exit(&watch), Exit::Code(7));
        let (_child, watch) = reaper
            .spawn(Command::new("sh").args(["-c", "kill -9 $$"]))
            .unwrap();
        assert_eq!(wait_exit(&watch), Exit::Signal(9));
        // The wake pipe is readable once the exit is there.
        let mut fds = [nix::poll::PollFd::new(
            watch.wake_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(),
            1
        );
    }

    #[test]
    fn many_instant_exits_are_never_counted_as_orphans() {
        let reaper = Reaper::start().unwrap();
        let orphans_before = reaper.orphans();
        let watches: Vec<_> = (0..20)
            .map(|i| {
                reaper
                    .spawn(Command::new("sh").args(["-c", &format!("exit {i}")]))
                    .unwrap()
                    .1
            })
            .collect();
        for (i, watch) in watches.iter().enumerate() {
            assert_eq!(wait_exit(watch), Exit::Code(i as i32));
        }
        assert_eq!(reaper.orphans(), orphans_before);
    }

    #[test]
    fn failed_exec_is_an_error_not_a_hang() {
        let reaper = Reaper::start().unwrap();
        let err = reaper
            .spawn(&mut Command::new("/nonexistent/vfrig-no-such-program"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // The reaper keeps working afterwards.
        let (_child, watch) = reaper.spawn(&mut Command::new("true")).unwrap();
        assert_eq!(wait_exit(&watch), Exit::Code(0));
    }
}
