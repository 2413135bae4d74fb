//! The agent's error type. Its `Display` text is what an error reply says,
//! so each message names the thing that failed and carries the OS error.

use std::io;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The line was not a valid request.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong with it.
        reason: String,
    },
    /// The line was longer than the agent accepts.
    #[error("request line longer than {limit} bytes; split the data into smaller writes")]
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// Reading a file failed.
    #[error("read {path}: {error}")]
    ReadFile {
        /// The file.
        path: String,
        /// The OS error.
        error: io::Error,
    },
    /// Writing a file failed.
    #[error("write {path}: {error}")]
    WriteFile {
        /// The file.
        path: String,
        /// The OS error.
        error: io::Error,
    },
    /// `data` of a write was not base64.
    #[error("write {path}: data is not valid base64: {error}")]
    Base64 {
        /// The file.
        path: String,
        /// The decoder's complaint.
        error: base64::DecodeError,
    },
    /// Starting a command failed.
    #[error("spawn `{cmd}`: {error}")]
    Spawn {
        /// The shell command.
        cmd: String,
        /// The OS error.
        error: io::Error,
    },
    /// A background command with this name is still there.
    #[error("a job named {name:?} already exists; stop it first")]
    JobExists {
        /// The name.
        name: String,
    },
    /// No background command has this name.
    #[error("no job named {name:?}")]
    NoSuchJob {
        /// The name.
        name: String,
    },
    /// A background command survived SIGKILL for too long.
    #[error("job {name:?} (pid {pid}) did not exit {waited_ms} ms after SIGKILL")]
    JobStuck {
        /// The name.
        name: String,
        /// Its pid (and process group).
        pid: i32,
        /// How long the agent waited after SIGKILL.
        waited_ms: u64,
    },
    /// A recorder request without a running recording.
    #[error("no link recording is running; send record_start first")]
    NotRecording,
    /// Setting up the netlink socket failed.
    #[error("netlink {what}: {error}")]
    Netlink {
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The recorder's socket failed while recording.
    #[error("link recorder stopped: {reason}")]
    RecorderFailed {
        /// What went wrong.
        reason: String,
    },
    /// A uevent request without a running uevent recording.
    #[error("no uevent recording is running; send uevent_start first")]
    NotWatchingUevents,
    /// The uevent observer's socket failed while recording.
    #[error("uevent observer stopped: {reason}")]
    UeventsFailed {
        /// What went wrong.
        reason: String,
    },
    /// A command-line argument of `vfrig-agent blast` was wrong.
    #[error("bad argument {arg}: {reason}")]
    BadArgument {
        /// The option (`--threads`) or word at fault.
        arg: String,
        /// What was wrong with it.
        reason: String,
    },
    /// No network interface has this name.
    #[error("no network interface named {name:?}; check the name with `ip link`")]
    NoSuchInterface {
        /// The name.
        name: String,
    },
    /// A sysfs attribute did not hold what the kernel writes there.
    #[error("unexpected contents {text:?} in {path}")]
    BadSysfs {
        /// The attribute file.
        path: String,
        /// What it held.
        text: String,
    },
    /// Setting up a packet socket failed.
    #[error("AF_PACKET socket on {ifname}: {what}: {error}")]
    PacketSocket {
        /// The interface.
        ifname: String,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// Blocking SIGTERM/SIGINT or opening the signalfd failed.
    #[error("catch SIGTERM/SIGINT: {error}")]
    Signals {
        /// The OS error.
        error: io::Error,
    },
    /// A request needed a thread and none could be started.
    #[error("start a thread: {error}")]
    Thread {
        /// The OS error.
        error: io::Error,
    },
    /// The request handler panicked (the console has the details).
    #[error("internal error: the handler panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// Result of a request.
pub type Result<T> = std::result::Result<T, Error>;
