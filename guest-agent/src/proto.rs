//! The agent protocol: one JSON object per line in each direction.
//!
//! The harness sends [`Request`]s, each with an `id` it chooses (non-zero).
//! The agent handles requests concurrently and answers each with a
//! [`Message::Reply`] carrying the same `id`, in completion order. Once at
//! start-up, before any reply, the agent sends [`Message::Ready`].
//!
//! ```text
//! -> {"id":1,"op":"run","cmd":"uname -r","timeout_ms":5000}
//! <- {"reply":{"id":1,"ok":{"output":{"status":0,"stdout":"6.12.117+deb12-cloud-amd64\n",...}}}}
//! -> {"id":2,"op":"read_file","path":"/nope"}
//! <- {"reply":{"id":2,"error":"read /nope: No such file or directory (os error 2)"}}
//! ```
//!
//! A line that is not a valid request gets an error reply with the request's
//! `id` if one could be read from it, else `id` 0; the agent keeps serving.

use serde::{Deserialize, Serialize};

/// Name of the virtio-console port the agent serves on
/// (`/sys/class/virtio-ports/vportNpM/name`).
pub const CHANNEL_NAME: &str = "org.vfrig.agent.0";

/// File in the image listing the modules to load at boot: one per line, in
/// load order (dependencies first), as `PATH [DEP,DEP...]` with the names of
/// the modules it depends on. The agent loads independent modules in
/// parallel.
pub const MODULES_LIST: &str = "/etc/vfrig/modules";

/// Largest amount of stdout or stderr kept per command; more is dropped and
/// [`Output::truncated`] is set.
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// A request from the harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the harness, echoed in the reply. Must not be 0.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations the agent performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Run `sh -c CMD` and wait for it. Replies [`Reply::Output`].
    Run {
        /// The shell command.
        cmd: String,
        /// Kill the command's process group after this long; `None` waits
        /// for ever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Bytes for the command's stdin; `None` gives it /dev/null.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
    },
    /// Start `sh -c CMD` in the background under a name. Replies
    /// [`Reply::Done`]. A name in use is an error.
    Spawn {
        /// Name to stop it by later.
        name: String,
        /// The shell command.
        cmd: String,
    },
    /// Stop a background command: SIGTERM to its process group, SIGKILL
    /// after `timeout_ms` (default 2000). Replies [`Reply::Output`] with what
    /// it printed. A command that already exited is collected the same way.
    Stop {
        /// The name given to [`Op::Spawn`].
        name: String,
        /// Grace period before SIGKILL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Read a whole file. Replies [`Reply::File`].
    ReadFile {
        /// Absolute path in the guest.
        path: String,
    },
    /// Create or replace a file (or append to it). Replies [`Reply::Done`].
    WriteFile {
        /// Absolute path in the guest.
        path: String,
        /// Contents, base64 (standard alphabet, padded).
        data: String,
        /// Permission bits for a new file (default 0o644).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Append instead of replacing (sysfs and procfs files want this).
        #[serde(default)]
        append: bool,
    },
    /// Start recording rtnetlink link events from every network namespace.
    /// Clears an earlier recording. Replies [`Reply::Done`].
    RecordStart,
    /// Return the events recorded since the last take and keep recording.
    /// Replies [`Reply::Events`].
    RecordTake,
    /// Stop recording and return the events not yet taken. Replies
    /// [`Reply::Events`].
    RecordStop,
    /// Start observing raw kernel uevents (NETLINK_KOBJECT_UEVENT, group 1)
    /// for network devices being added; for each one, look at its sysfs
    /// `master` and `flags` at once, then follow it until `master` appears
    /// or `give_up_ms` passes. Clears an earlier recording. Replies
    /// [`Reply::Done`].
    ///
    /// This shows what a program reacting to the uevent (udev, cloud-init)
    /// can see: Linux sends KOBJ_ADD before the NETDEV_REGISTER notifiers
    /// that let net_failover or bonding link the device to its master.
    UeventStart {
        /// How long to wait for `master` after the uevent (default
        /// [`UEVENT_GIVE_UP_MS`], at most [`UEVENT_GIVE_UP_MAX_MS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        give_up_ms: Option<u64>,
    },
    /// Return the device adds observed since the last take and keep
    /// observing. Every uevent the kernel sent before the take is in the
    /// answer: the take waits (at most the give-up time and a margin) for
    /// the devices still being followed. Replies [`Reply::NetAdds`].
    UeventTake,
    /// Stop observing and return the device adds not yet taken, after
    /// following them to the end. Replies [`Reply::NetAdds`].
    UeventStop,
    /// Agent health. Replies [`Reply::Status`].
    Status,
    /// Sync file systems and power the machine off. Replies [`Reply::Done`]
    /// first; the channel closes when the machine goes down.
    Poweroff,
}

/// A line from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Sent once when the agent is ready for requests.
    Ready(Ready),
    /// The answer to the request with this `id`.
    Reply {
        /// The request's id; 0 when a malformed line had none.
        id: u64,
        /// Result.
        #[serde(flatten)]
        outcome: Outcome,
    },
}

/// Success or failure of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was carried out.
    Ok(Reply),
    /// It was not; the text says why.
    Error(String),
}

/// The agent's start-up report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest.
    pub kernel_release: String,
    /// Guest uptime (CLOCK_BOOTTIME) when the agent became ready.
    pub uptime_ms: u64,
    /// Guest uptime when the agent started (PID 1 exec).
    pub started_ms: u64,
    /// Modules loaded at boot, in list order. They load in parallel, so
    /// their times add up to more than [`Ready::modules_ms`].
    pub modules: Vec<ModuleLoad>,
    /// Wall time the module loading took.
    #[serde(default)]
    pub modules_ms: u64,
}

/// One module load at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleLoad {
    /// Module name (file stem).
    pub name: String,
    /// Time the load took.
    pub ms: u64,
    /// Why it failed; `None` when it loaded (or was already built in /
    /// loaded: EEXIST counts as loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The request had nothing to return.
    Done,
    /// A command's result ([`Op::Run`], [`Op::Stop`]).
    Output(Output),
    /// A file's contents, base64 ([`Op::ReadFile`]).
    File {
        /// Contents, base64 (standard alphabet, padded).
        data: String,
    },
    /// Recorded link events ([`Op::RecordTake`], [`Op::RecordStop`]).
    Events(Vec<LinkEvent>),
    /// Observed network device adds ([`Op::UeventTake`],
    /// [`Op::UeventStop`]), in `seq` order.
    NetAdds(Vec<NetAdd>),
    /// Agent health ([`Op::Status`]).
    Status(Status),
}

/// How a command ended and what it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Exit status, when it exited.
    pub status: Option<i32>,
    /// Terminating signal, when a signal ended it.
    pub signal: Option<i32>,
    /// The timeout expired and the agent killed it.
    pub timed_out: bool,
    /// Standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error (invalid UTF-8 replaced).
    pub stderr: String,
    /// Output beyond [`OUTPUT_LIMIT`] was dropped.
    pub truncated: bool,
    /// Wall time from start to exit.
    pub duration_ms: u64,
}

impl Output {
    /// The command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Kind of a link event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkEventKind {
    /// RTM_NEWLINK: a link appeared or changed.
    New,
    /// RTM_DELLINK: a link went away (or moved to another netns).
    Del,
}

/// One rtnetlink link event, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEvent {
    /// Position in the recording, from 0.
    pub seq: u64,
    /// Milliseconds since the recording started.
    pub t_ms: u64,
    /// New or deleted.
    pub kind: LinkEventKind,
    /// Interface index in the namespace the event came from.
    pub ifindex: u32,
    /// Interface name (IFLA_IFNAME), empty when absent.
    pub name: String,
    /// `ifi_flags` (IFF_UP = 0x1, IFF_RUNNING = 0x40, IFF_LOWER_UP = 0x10000, ...).
    pub flags: u32,
    /// Link kind from IFLA_LINKINFO (`vlan`, `bond`, `tun`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_kind: Option<String>,
    /// IFLA_MASTER: ifindex of the master device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<u32>,
    /// Netns id (as seen from the agent's netns) the event came from;
    /// `None` for the agent's own netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netnsid: Option<i32>,
    /// IFLA_NEW_NETNSID: the link moved to this netns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_netnsid: Option<i32>,
    /// IFLA_NEW_IFINDEX: its ifindex there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ifindex: Option<i32>,
}

/// Default of [`Op::UeventStart`]'s `give_up_ms`.
pub const UEVENT_GIVE_UP_MS: u64 = 100;

/// Largest `give_up_ms` [`Op::UeventStart`] accepts.
pub const UEVENT_GIVE_UP_MAX_MS: u64 = 10_000;

/// One kernel `add` uevent of a network device (SUBSYSTEM=net), with what
/// sysfs said about the device right after the uevent arrived and how long
/// it took to get a master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAdd {
    /// Position in the recording, from 0.
    pub seq: u64,
    /// Milliseconds since the recording started, at receipt of the uevent.
    pub t_ms: u64,
    /// The device's name (`INTERFACE=` of the uevent).
    pub ifname: String,
    /// Its sysfs path under /sys (`DEVPATH=`).
    pub devpath: String,
    /// Master (basename of `/sys/class/net/IF/master`) read right after
    /// receipt; `None`: no master yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_at_first_look: Option<String>,
    /// `/sys/class/net/IF/flags` read right after receipt (IFF_UP = 0x1,
    /// IFF_MULTICAST = 0x1000, ...); `None`: unreadable, the device was
    /// already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_at_first_look: Option<u32>,
    /// Microseconds from receipt until `master` existed: `Some(0)` when it
    /// was there at first look; `None` when it did not appear within the
    /// give-up time (never enslaved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_to_master: Option<u64>,
    /// The master the device got, if it got one in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// `flags` read when `master` appeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_when_enslaved: Option<u32>,
}

/// Agent health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Guest uptime.
    pub uptime_ms: u64,
    /// Background commands not yet stopped.
    pub jobs: Vec<Job>,
    /// Orphaned processes the agent reaped as PID 1.
    pub reaped_orphans: u64,
    /// Whether the link recorder is running.
    pub recording: bool,
    /// Whether the uevent observer ([`Op::UeventStart`]) is running.
    #[serde(default)]
    pub uevent_recording: bool,
}

/// A background command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its name.
    pub name: String,
    /// Process id (also its process group).
    pub pid: i32,
    /// Still running.
    pub running: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_flat() {
        let req = Request {
            id: 7,
            op: Op::Run {
                cmd: "true".into(),
                timeout_ms: Some(10),
                stdin: None,
            },
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(line, r#"{"id":7,"op":"run","cmd":"true","timeout_ms":10}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
    }

    #[test]
    fn reply_wire_forms() {
        let ok = Message::Reply {
            id: 3,
            outcome: Outcome::Ok(Reply::Done),
        };
        let line = serde_json::to_string(&ok).unwrap();
        assert_eq!(line, r#"{"reply":{"id":3,"ok":"done"}}"#);
        assert_eq!(serde_json::from_str::<Message>(&line).unwrap(), ok);
        let err = Message::Reply {
            id: 0,
            outcome: Outcome::Error("bad".into()),
        };
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(line, r#"{"reply":{"id":0,"error":"bad"}}"#);
        assert_eq!(serde_json::from_str::<Message>(&line).unwrap(), err);
    }

    #[test]
    fn uevent_ops_wire_forms() {
        let start = |give_up_ms| Request {
            id: 2,
            op: Op::UeventStart { give_up_ms },
        };
        let line = serde_json::to_string(&start(None)).unwrap();
        assert_eq!(line, r#"{"id":2,"op":"uevent_start"}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), start(None));
        let line = serde_json::to_string(&start(Some(250))).unwrap();
        assert_eq!(line, r#"{"id":2,"op":"uevent_start","give_up_ms":250}"#);
        assert_eq!(
            serde_json::from_str::<Request>(&line).unwrap(),
            start(Some(250))
        );
        let take: Request = serde_json::from_str(r#"{"id":3,"op":"uevent_take"}"#).unwrap();
        assert_eq!(take.op, Op::UeventTake);
        let stop: Request = serde_json::from_str(r#"{"id":4,"op":"uevent_stop"}"#).unwrap();
        assert_eq!(stop.op, Op::UeventStop);
    }

    #[test]
    fn net_adds_omit_what_was_not_seen() {
        let add = NetAdd {
            seq: 0,
            t_ms: 5,
            ifname: "eth1".into(),
            devpath: "/devices/pci0000:00/0000:00:02.0/net/eth1".into(),
            master_at_first_look: None,
            flags_at_first_look: Some(0x1002),
            us_to_master: Some(2300),
            master: Some("eth0".into()),
            flags_when_enslaved: Some(0x1803),
        };
        let reply = Reply::NetAdds(vec![add.clone()]);
        let line = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            line,
            r#"{"net_adds":[{"seq":0,"t_ms":5,"ifname":"eth1","#.to_owned()
                + r#""devpath":"/devices/pci0000:00/0000:00:02.0/net/eth1","#
                + r#""flags_at_first_look":4098,"us_to_master":2300,"#
                + r#""master":"eth0","flags_when_enslaved":6147}]}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), reply);
    }

    #[test]
    fn status_without_uevent_recording_field_parses() {
        let status: Status = serde_json::from_str(
            r#"{"uptime_ms":1,"jobs":[],"reaped_orphans":0,"recording":false}"#,
        )
        .unwrap();
        assert!(!status.uevent_recording);
    }
}
