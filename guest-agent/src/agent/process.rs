//! Shell commands: each runs as `sh -c CMD` leading its own process group,
//! so a timeout or a stop can signal everything it started. Stdout and
//! stderr are read concurrently (one `poll` loop) and capped at
//! [`OUTPUT_LIMIT`] each.
//!
//! A command counts as finished when its shell exits. Output already in the
//! pipes is then collected for at most [`DRAIN_LIMIT`], so a background
//! grandchild that keeps the pipes open cannot hold up the reply.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use vfrig_agent::proto::{Output, OUTPUT_LIMIT};

use super::error::{Error, Result};
use super::reaper::{signal_group, Exit, ExitWatch, Reaper};

/// How long output is still collected after the shell exited.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(100);

/// The environment commands get as PID 1 (the kernel gives init almost none).
const PID1_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("TERM", "linux"),
];

/// Which shell runs commands, and with what environment.
#[derive(Debug, Clone, Copy)]
pub struct Shell {
    program: &'static str,
    env: &'static [(&'static str, &'static str)],
}

impl Shell {
    /// `/bin/sh` with PATH, HOME and TERM set, for PID 1.
    pub const PID1: Self = Self {
        program: "/bin/sh",
        env: PID1_ENV,
    };
    /// `sh` from PATH with the agent's own environment, for `--stdio`.
    pub const STDIO: Self = Self {
        program: "sh",
        env: &[],
    };
}

/// Starts shell commands through the reaper.
#[derive(Debug, Clone)]
pub struct Spawner {
    reaper: Reaper,
    shell: Shell,
}

/// A command that has just started.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Its stdin, when one was asked for.
    pub stdin: Option<ChildStdin>,
    /// Its stdout and stderr.
    pub streams: Streams,
    /// Where its exit arrives.
    pub watch: Arc<ExitWatch>,
    /// When it was started.
    pub started: Instant,
}

impl Spawner {
    /// A spawner that runs commands with `shell`.
    pub fn new(reaper: Reaper, shell: Shell) -> Self {
        Self { reaper, shell }
    }

    /// The reaper behind this spawner.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// Starts `sh -c cmd` as the leader of a new process group, with piped
    /// stdout and stderr, and stdin piped or /dev/null.
    pub fn spawn(&self, cmd: &str, pipe_stdin: bool) -> Result<Spawned> {
        let mut command = Command::new(self.shell.program);
        command
            .arg("-c")
            .arg(cmd)
            .envs(self.shell.env.iter().copied())
            .process_group(0)
            .stdin(if pipe_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let (mut child, watch) = self
            .reaper
            .spawn(&mut command)
            .map_err(|error| Error::Spawn {
                cmd: cmd.to_owned(),
                error,
            })?;
        Ok(Spawned {
            // `Reaper::spawn` checked that the pid fits.
            pid: i32::try_from(child.id()).unwrap_or(0),
            stdin: child.stdin.take(),
            streams: Streams {
                stdout: child.stdout.take(),
                stderr: child.stderr.take(),
            },
            watch,
            started,
        })
    }
}

/// Runs `cmd` to completion (see [`vfrig_agent::proto::Op::Run`]).
pub fn run(
    spawner: &Spawner,
    cmd: &str,
    timeout: Option<Duration>,
    stdin: Option<String>,
) -> Result<Output> {
    let mut spawned = spawner.spawn(cmd, stdin.is_some())?;
    if let (Some(data), Some(mut pipe)) = (stdin, spawned.stdin.take()) {
        // A separate thread, so a command that prints before reading cannot
        // deadlock against us. It ends when the data is written or the
        // command closes its stdin.
        let feeder = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let _ = pipe.write_all(data.as_bytes());
            });
        if let Err(error) = feeder {
            signal_group(spawned.pid, Signal::SIGKILL);
            return Err(Error::Thread { error });
        }
    }
    let deadline = timeout.map(|t| spawned.started + t);
    Ok(capture(
        spawned.streams,
        &spawned.watch,
        spawned.pid,
        spawned.started,
        deadline,
    )
    .into_output())
}

/// A byte buffer that keeps the first `limit` bytes and notes the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedBuf {
    data: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl CappedBuf {
    /// An empty buffer keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            data: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Appends what fits of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.data.len());
        let keep = bytes.len().min(room);
        self.data
            .extend_from_slice(bytes.get(..keep).unwrap_or_default());
        if keep < bytes.len() {
            self.truncated = true;
        }
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The kept bytes as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A command's stdout and stderr; `None` once at end of file.
#[derive(Debug)]
pub struct Streams {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

/// A finished command: how it ended and what it printed.
#[derive(Debug)]
pub struct Captured {
    /// How the shell ended.
    pub exit: Exit,
    /// The deadline passed and the group was killed.
    pub timed_out: bool,
    /// Its stdout.
    pub stdout: CappedBuf,
    /// Its stderr.
    pub stderr: CappedBuf,
    /// From spawn to exit.
    pub duration: Duration,
}

impl Captured {
    /// The protocol form.
    pub fn into_output(self) -> Output {
        let (status, signal) = match self.exit {
            Exit::Code(code) => (Some(code), None),
            Exit::Signal(signal) => (None, Some(signal)),
        };
        Output {
            status,
            signal,
            timed_out: self.timed_out,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            truncated: self.stdout.truncated() || self.stderr.truncated(),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Collects output until the shell exits. At `deadline` the whole process
/// group gets SIGKILL.
pub fn capture(
    mut streams: Streams,
    watch: &ExitWatch,
    pgid: i32,
    started: Instant,
    deadline: Option<Instant>,
) -> Captured {
    let mut stdout = CappedBuf::new(OUTPUT_LIMIT);
    let mut stderr = CappedBuf::new(OUTPUT_LIMIT);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut timed_out = false;
    let exit = loop {
        if let Some(exit) = watch.get() {
            break exit;
        }
        let mut timeout = PollTimeout::NONE;
        if let (Some(deadline), false) = (deadline, timed_out) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                signal_group(pgid, Signal::SIGKILL);
                timed_out = true;
            } else {
                timeout = poll_timeout(left);
            }
        }
        let ready = poll_streams(&streams, Some(watch.wake_fd()), timeout);
        streams.read_ready(ready, &mut chunk, &mut stdout, &mut stderr);
    };
    let duration = started.elapsed();
    let drain_until = Instant::now() + DRAIN_LIMIT;
    while streams.any_open() && Instant::now() < drain_until {
        let ready = poll_streams(&streams, None, PollTimeout::ZERO);
        if ready == Ready::default() {
            break;
        }
        streams.read_ready(ready, &mut chunk, &mut stdout, &mut stderr);
    }
    Captured {
        exit,
        timed_out,
        stdout,
        stderr,
        duration,
    }
}

/// Which streams have something to read (data or end of file).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ready {
    stdout: bool,
    stderr: bool,
}

impl Streams {
    fn any_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    fn read_ready(
        &mut self,
        ready: Ready,
        chunk: &mut [u8],
        stdout: &mut CappedBuf,
        stderr: &mut CappedBuf,
    ) {
        if ready.stdout {
            read_once(&mut self.stdout, chunk, stdout);
        }
        if ready.stderr {
            read_once(&mut self.stderr, chunk, stderr);
        }
    }
}

/// One `read` from a stream that `poll` said is readable; closes it at end
/// of file or on an error.
fn read_once<R: Read>(stream: &mut Option<R>, chunk: &mut [u8], into: &mut CappedBuf) {
    let Some(reader) = stream.as_mut() else {
        return;
    };
    match reader.read(chunk) {
        Ok(0) => *stream = None,
        Ok(n) => into.push(chunk.get(..n).unwrap_or_default()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) => {}
        Err(_) => *stream = None,
    }
}

/// Waits up to `timeout` for a stream (or `wake`) to become readable.
fn poll_streams(streams: &Streams, wake: Option<BorrowedFd<'_>>, timeout: PollTimeout) -> Ready {
    let interest = PollFlags::POLLIN;
    let mut fds = Vec::with_capacity(3);
    let mut slots = [None, None];
    if let Some(out) = streams.stdout.as_ref() {
        slots[0] = Some(fds.len());
        fds.push(PollFd::new(out.as_fd(), interest));
    }
    if let Some(err) = streams.stderr.as_ref() {
        slots[1] = Some(fds.len());
        fds.push(PollFd::new(err.as_fd(), interest));
    }
    if let Some(wake) = wake {
        fds.push(PollFd::new(wake, interest));
    }
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => {
            agent_log!("poll on command output: {e}");
            // Avoid spinning on a persistent error.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let readable = |slot: Option<usize>| {
        slot.and_then(|i| fds.get(i))
            .and_then(PollFd::revents)
            .is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
    };
    Ready {
        stdout: readable(slots[0]),
        stderr: readable(slots[1]),
    }
}

/// `left` as a poll timeout, rounded up to whole milliseconds so a sub-ms
/// remainder does not spin.
fn poll_timeout(left: Duration) -> PollTimeout {
    let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_buf_keeps_the_first_bytes_and_flags_the_rest() {
        let mut buf = CappedBuf::new(5);
        buf.push(b"abc");
        assert!(!buf.truncated());
        buf.push(b"de");
        assert!(!buf.truncated());
        assert_eq!(buf.text(), "abcde");
        buf.push(b"f");
        assert!(buf.truncated());
        buf.push(b"");
        assert_eq!(buf.text(), "abcde");
    }

    #[test]
    fn capped_buf_splits_a_chunk_at_the_limit() {
        let mut buf = CappedBuf::new(4);
        buf.push(b"123456");
        assert_eq!(buf.text(), "1234");
        assert!(buf.truncated());
    }

    #[test]
    fn capped_buf_replaces_invalid_utf8() {
        let mut buf = CappedBuf::new(16);
        buf.push(&[b'a', 0xff, b'b']);
        assert_eq!(buf.text(), "a\u{fffd}b");
    }

    #[test]
    fn captured_maps_exit_to_status_or_signal() {
        let captured = |exit| Captured {
            exit,
            timed_out: false,
            stdout: CappedBuf::new(1),
            stderr: CappedBuf::new(1),
            duration: Duration::from_millis(12),
        };
        let out = captured(Exit::Code(3)).into_output();
        assert_eq!(
            (out.status, out.signal, out.duration_ms),
            (Some(3), None, 12)
        );
        let out = captured(Exit::Signal(9)).into_output();
        assert_eq!((out.status, out.signal), (None, Some(9)));
    }

    #[test]
    fn run_captures_both_streams_and_stdin() {
        let spawner = Spawner::new(Reaper::start().unwrap(), Shell::STDIO);
        let out = run(
            &spawner,
            "cat; echo err >&2; exit 2",
            Some(Duration::from_secs(10)),
            Some("from stdin".into()),
        )
        .unwrap();
        assert_eq!(out.status, Some(2));
        assert_eq!(out.stdout, "from stdin");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.timed_out);
    }

    #[test]
    fn run_returns_even_if_a_grandchild_keeps_the_pipes_open() {
        let spawner = Spawner::new(Reaper::start().unwrap(), Shell::STDIO);
        let out = run(&spawner, "sleep 5 & echo $!", None, None).unwrap();
        assert_eq!(out.status, Some(0));
        let pid = nix::unistd::Pid::from_raw(out.stdout.trim().parse().unwrap());
        // Still running: the reply did not wait for it.
        assert_eq!(nix::sys::signal::kill(pid, None), Ok(()));
        nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    }
}
