//! Named background commands ([`Op::Spawn`], [`Op::Stop`]).
//!
//! Each job has a thread that captures its output until its shell exits.
//! A job stays in the table, running or not, until it is stopped, so a
//! command that finished on its own can still be collected.
//!
//! [`Op::Spawn`]: vfrig_agent::proto::Op::Spawn
//! [`Op::Stop`]: vfrig_agent::proto::Op::Stop

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use vfrig_agent::proto::{self, Output};

use super::error::{Error, Result};
use super::lock;
use super::process::{capture, Captured, Spawner};
use super::reaper::signal_group;

/// Grace period between SIGTERM and SIGKILL when the request gives none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_millis(2000);

/// How long to wait after SIGKILL before giving up on a job.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Job {
    pid: i32,
    finished: Mutex<Option<Captured>>,
    done: Condvar,
    /// Set once the capture thread has stored its result (which a stop may
    /// since have taken).
    exited: Mutex<bool>,
}

impl Job {
    /// Takes the result, waiting up to `timeout` for the command to end.
    fn wait(&self, timeout: Duration) -> Option<Captured> {
        let finished = lock(&self.finished);
        let (mut finished, _) = self
            .done
            .wait_timeout_while(finished, timeout, |f| f.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        finished.take()
    }
}

/// The table of background commands.
#[derive(Debug, Default)]
pub struct Jobs {
    table: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Jobs {
    /// Starts `cmd` in the background under `name`.
    pub fn spawn(&self, spawner: &Spawner, name: &str, cmd: &str) -> Result<()> {
        let mut table = lock(&self.table);
        if table.contains_key(name) {
            return Err(Error::JobExists {
                name: name.to_owned(),
            });
        }
        let spawned = spawner.spawn(cmd, false)?;
        let job = Arc::new(Job {
            pid: spawned.pid,
            finished: Mutex::new(None),
            done: Condvar::new(),
            exited: Mutex::new(false),
        });
        let thread_job = Arc::clone(&job);
        let capture_thread = std::thread::Builder::new()
            .name(format!("job {name}"))
            .spawn(move || {
                let captured = capture(
                    spawned.streams,
                    &spawned.watch,
                    spawned.pid,
                    spawned.started,
                    None,
                );
                *lock(&thread_job.finished) = Some(captured);
                *lock(&thread_job.exited) = true;
                thread_job.done.notify_all();
            });
        if let Err(error) = capture_thread {
            signal_group(job.pid, Signal::SIGKILL);
            return Err(Error::Thread { error });
        }
        table.insert(name.to_owned(), job);
        Ok(())
    }

    /// Stops the job `name`: SIGTERM to its process group, SIGKILL after
    /// `grace`, and returns what it printed. `timed_out` is set when SIGKILL
    /// was needed.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<Output> {
        let job = lock(&self.table)
            .remove(name)
            .ok_or_else(|| Error::NoSuchJob {
                name: name.to_owned(),
            })?;
        // Also when the shell has exited: whatever it left running in its
        // group goes too. While any member lives the group id cannot be
        // reused.
        signal_group(job.pid, Signal::SIGTERM);
        if let Some(captured) = job.wait(grace) {
            return Ok(captured.into_output());
        }
        signal_group(job.pid, Signal::SIGKILL);
        let captured = job.wait(KILL_WAIT).ok_or_else(|| Error::JobStuck {
            name: name.to_owned(),
            pid: job.pid,
            waited_ms: u64::try_from(KILL_WAIT.as_millis()).unwrap_or(u64::MAX),
        })?;
        let mut output = captured.into_output();
        output.timed_out = true;
        Ok(output)
    }

    /// The jobs not yet stopped, by name.
    pub fn list(&self) -> Vec<proto::Job> {
        lock(&self.table)
            .iter()
            .map(|(name, job)| proto::Job {
                name: name.clone(),
                pid: job.pid,
                running: !*lock(&job.exited),
            })
            .collect()
    }

    /// Sends SIGKILL to every job's process group (used before exiting).
    pub fn kill_all(&self) {
        for job in lock(&self.table).values() {
            signal_group(job.pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::process::Shell;
    use crate::agent::reaper::Reaper;
    use std::time::Instant;

    fn spawner() -> Spawner {
        Spawner::new(Reaper::start().unwrap(), Shell::STDIO)
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stop_terminates_and_returns_output() {
        let jobs = Jobs::default();
        let spawner = spawner();
        jobs.spawn(&spawner, "t", "echo up; exec sleep 30").unwrap();
        let out = jobs.stop("t", Duration::from_secs(5)).unwrap();
        // SIGTERM may land before or after `echo`; either way sleep dies of it.
        assert_eq!(out.signal, Some(Signal::SIGTERM as i32));
        assert!(!out.timed_out);
        assert!(jobs.list().is_empty());
    }

    #[test]
    fn a_job_ignoring_sigterm_is_killed_after_the_grace_period() {
        let jobs = Jobs::default();
        let spawner = spawner();
        let dir = crate::agent::test_util::Scratch::new("jobs-trap");
        let marker = dir.path().join("trapped");
        let cmd = format!(
            "trap '' TERM; touch {}; while :; do sleep 0.05; done",
            marker.display()
        );
        jobs.spawn(&spawner, "stubborn", &cmd).unwrap();
        wait_until("the trap to be set", || marker.exists());
        let out = jobs.stop("stubborn", Duration::from_millis(300)).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.signal, Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn finished_jobs_stay_until_stopped_and_names_are_unique() {
        let jobs = Jobs::default();
        let spawner = spawner();
        jobs.spawn(&spawner, "quick", "echo done; exit 4").unwrap();
        assert!(matches!(
            jobs.spawn(&spawner, "quick", "true"),
            Err(Error::JobExists { .. })
        ));
        wait_until("job to exit", || {
            jobs.list().first().is_some_and(|j| !j.running)
        });
        let out = jobs.stop("quick", Duration::from_secs(1)).unwrap();
        assert_eq!((out.status, out.stdout.as_str()), (Some(4), "done\n"));
        assert!(matches!(
            jobs.stop("quick", Duration::ZERO),
            Err(Error::NoSuchJob { .. })
        ));
        // The name is free again.
        jobs.spawn(&spawner, "quick", "true").unwrap();
        jobs.kill_all();
    }
}
