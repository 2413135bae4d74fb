//! [`Pump`]: the I/O half of the message relay. It moves whole vhost-user
//! messages, with their file descriptors, between a frontend's socket and
//! the daemon's, and lets a [`Relay`] decide about each frontend message.
//!
//! # Messages
//!
//! A message is a 12-byte header (request, flags, payload size) and `size`
//! payload bytes, at most [`MAX_PAYLOAD`]. File descriptors come as
//! SCM_RIGHTS with the header; at most [`MAX_FDS`] per message. Descriptors
//! sent with payload bytes are discarded by the kernel, as they are when
//! the daemon reads a message itself. Messages are forwarded whole, with
//! their descriptors attached to the first byte, so the daemon reads them
//! exactly as if the frontend had sent them.
//!
//! # Descriptors
//!
//! The control buffer has room for the kernel's limit per message
//! (SCM_MAX_FD), so a recvmsg never truncates it and every descriptor it
//! installs is seen. From then on each one belongs to an `Fds`, which closes
//! it when dropped: after the message was forwarded (the receiver got its
//! own copy), when the relay swallows the message, or when reading or
//! forwarding fails. No descriptor is used after that or leaks.
//!
//! # Threads and ending
//!
//! [`Pump::run`] copies frontend → daemon on the calling thread and daemon
//! → frontend on a scoped thread. Whichever direction ends first (a side
//! closed its socket, or a read or write failed) shuts both sockets down,
//! which ends the other direction at once and tells both peers: the daemon
//! sees a disconnect, the frontend can reconnect. [`PumpStop::shutdown`]
//! does the same from outside. Both directions may write to the frontend
//! (replies from the daemon, answers from the relay), so those writes take
//! a lock, one whole message at a time.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, send, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::error::RelayError;
use super::relay::{Decision, Header, Relay, HEADER_LEN, MAX_PAYLOAD};

/// Most file descriptors one message may carry: 8, VHOST_MEMORY_BASELINE_NREGIONS
/// of the vhost-user spec (SET_MEM_TABLE).
pub(crate) const MAX_FDS: usize = 8;

/// The kernel's limit of descriptors per SCM_RIGHTS message (SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;

/// One end of the relay, for logs and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// QEMU, or whoever connected to the VF socket.
    Frontend,
    /// The `vhost-user-backend` daemon serving the VF.
    Daemon,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Frontend => "frontend",
            Side::Daemon => "daemon",
        })
    }
}

/// File descriptors received with one message; owned here (see the module
/// docs) and closed on drop.
#[derive(Debug, Default)]
struct Fds(Vec<RawFd>);

impl Drop for Fds {
    fn drop(&mut self) {
        for &fd in &self.0 {
            if let Err(err) = nix::unistd::close(fd) {
                tracing::debug!(fd, %err, "relay: closing a received descriptor failed");
            }
        }
    }
}

/// A message as read from a socket.
#[derive(Debug)]
struct Incoming {
    header: Header,
    payload: Vec<u8>,
    fds: Fds,
}

/// How one relay ended: the result of each direction. A side closing its
/// socket (also by the other direction's shutdown) is `Ok`.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Frontend → daemon.
    pub(crate) to_daemon: Result<(), RelayError>,
    /// Daemon → frontend.
    pub(crate) to_frontend: Result<(), RelayError>,
}

/// The relay's two sockets: the frontend's accepted connection and the
/// daemon's.
#[derive(Debug)]
pub(crate) struct Pump {
    frontend: UnixStream,
    daemon: UnixStream,
}

/// Ends a running [`Pump`] from another thread.
#[derive(Debug)]
pub(crate) struct PumpStop {
    frontend: UnixStream,
    daemon: UnixStream,
}

impl PumpStop {
    /// Shuts both sockets down: the pump returns, the daemon sees a
    /// disconnect, the frontend sees its connection close. Safe to repeat.
    pub(crate) fn shutdown(&self) {
        shutdown_both(&self.frontend, &self.daemon);
    }
}

impl Pump {
    /// A pump between `frontend` and `daemon`, both connected and blocking.
    pub(crate) fn new(frontend: UnixStream, daemon: UnixStream) -> Pump {
        Pump { frontend, daemon }
    }

    /// A handle that shuts this pump's sockets down.
    pub(crate) fn stop_handle(&self) -> io::Result<PumpStop> {
        Ok(PumpStop {
            frontend: self.frontend.try_clone()?,
            daemon: self.daemon.try_clone()?,
        })
    }

    /// Relays until either side closes or fails; both sockets are shut
    /// down when this returns. `Err` only if the second thread (named
    /// `thread_name`, in the caller's span) cannot be started.
    pub(crate) fn run(self, thread_name: String) -> io::Result<Ended> {
        let Pump { frontend, daemon } = self;
        let frontend_writes = Mutex::new(());
        let span = tracing::Span::current();
        std::thread::scope(|scope| {
            let back = std::thread::Builder::new()
                .name(thread_name)
                .spawn_scoped(scope, || {
                    let _entered = span.enter();
                    let result = to_frontend(&daemon, &frontend, &frontend_writes);
                    shutdown_both(&frontend, &daemon);
                    result
                });
            let back = match back {
                Ok(back) => back,
                Err(err) => {
                    shutdown_both(&frontend, &daemon);
                    return Err(err);
                }
            };
            let mut relay = Relay::new();
            let to_daemon = to_daemon(&frontend, &daemon, &frontend_writes, &mut relay);
            shutdown_both(&frontend, &daemon);
            let to_frontend = back
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok(Ended {
                to_daemon,
                to_frontend,
            })
        })
    }
}

/// Frontend → daemon, through the relay, until the frontend closes.
fn to_daemon(
    frontend: &UnixStream,
    daemon: &UnixStream,
    frontend_writes: &Mutex<()>,
    relay: &mut Relay,
) -> Result<(), RelayError> {
    while let Some(message) = recv_message(frontend, Side::Frontend)? {
        let Incoming {
            header,
            payload,
            fds,
        } = message;
        let request = header.frontend_req();
        match relay.handle_frontend(header, &payload) {
            Decision::Forward => {
                tracing::trace!(
                    ?request,
                    size = header.size,
                    fds = fds.0.len(),
                    "frontend message"
                );
                send_message(daemon, Side::Daemon, header, &payload, &fds.0)?;
            }
            Decision::Swallow { reply } => {
                tracing::debug!(
                    ?request,
                    payload = ?payload,
                    answered = reply.is_some(),
                    "held back until SET_FEATURES"
                );
                if let Some(reply) = reply {
                    let _guard = lock(frontend_writes);
                    send_message(frontend, Side::Frontend, reply.header, &reply.payload, &[])?;
                }
            }
            Decision::ForwardThenReplay { replay } => {
                send_message(daemon, Side::Daemon, header, &payload, &fds.0)?;
                tracing::debug!(
                    ?request,
                    rings = replay.len(),
                    "replaying held-back ring enables"
                );
                for message in replay {
                    send_message(daemon, Side::Daemon, message.header, &message.payload, &[])?;
                }
            }
        }
        // `fds` is dropped here: our copies close.
    }
    Ok(())
}

/// Daemon → frontend, unchanged, until the daemon closes.
fn to_frontend(
    daemon: &UnixStream,
    frontend: &UnixStream,
    frontend_writes: &Mutex<()>,
) -> Result<(), RelayError> {
    while let Some(message) = recv_message(daemon, Side::Daemon)? {
        tracing::trace!(
            request = message.header.request,
            size = message.header.size,
            "daemon message"
        );
        let _guard = lock(frontend_writes);
        send_message(
            frontend,
            Side::Frontend,
            message.header,
            &message.payload,
            &message.fds.0,
        )?;
    }
    Ok(())
}

fn lock(writes: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    writes
        .lock()
        .expect("relay write lock poisoned: a relay thread panicked")
}

fn shutdown_both(frontend: &UnixStream, daemon: &UnixStream) {
    for (side, stream) in [(Side::Frontend, frontend), (Side::Daemon, daemon)] {
        if let Err(err) = stream.shutdown(std::net::Shutdown::Both) {
            // ENOTCONN: the peer has gone already.
            tracing::trace!(%side, %err, "relay: shutdown");
        }
    }
}

/// A peer that has gone away: the relay ends without an error.
fn gone(err: Errno) -> bool {
    matches!(err, Errno::ECONNRESET | Errno::EPIPE | Errno::ENOTCONN)
}

/// Reads one whole message; `None` if `side` closed its socket between
/// messages.
fn recv_message(stream: &UnixStream, side: Side) -> Result<Option<Incoming>, RelayError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut fds = Fds::default();
    let mut control = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    while got < HEADER_LEN {
        let mut iov = [IoSliceMut::new(&mut head[got..])];
        let received = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match received {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(err) if gone(err) && got == 0 => return Ok(None),
            Err(err) => {
                return Err(RelayError::Read {
                    side,
                    source: err.into(),
                })
            }
        };
        // Never truncated (the buffer holds SCM_MAX_FD descriptors), so
        // every descriptor the kernel installed is listed here.
        let cmsgs = msg.cmsgs().map_err(|err| RelayError::Read {
            side,
            source: err.into(),
        })?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.0.extend(received);
            }
        }
        if msg.bytes == 0 {
            if got == 0 && fds.0.is_empty() {
                return Ok(None);
            }
            return Err(RelayError::Truncated {
                side,
                request: None,
                got,
                need: HEADER_LEN,
            });
        }
        got += msg.bytes;
    }
    let header = Header::parse(head);
    if fds.0.len() > MAX_FDS {
        return Err(RelayError::TooManyFds {
            side,
            request: header.request,
            count: fds.0.len(),
        });
    }
    let size = header.size as usize;
    if size > MAX_PAYLOAD {
        return Err(RelayError::TooLarge {
            side,
            request: header.request,
            size: header.size,
        });
    }
    let mut payload = vec![0; size];
    let mut got = 0;
    while got < size {
        match (&*stream).read(&mut payload[got..]) {
            Ok(0) => {
                return Err(RelayError::Truncated {
                    side,
                    request: Some(header.request),
                    got: HEADER_LEN + got,
                    need: HEADER_LEN + size,
                })
            }
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(RelayError::Read { side, source }),
        }
    }
    Ok(Some(Incoming {
        header,
        payload,
        fds,
    }))
}

/// Writes one whole message to `side`, `fds` attached to its first byte.
/// A peer that has gone away is not an error: the reading direction sees
/// the close and ends the relay.
fn send_message(
    stream: &UnixStream,
    side: Side,
    header: Header,
    payload: &[u8],
    fds: &[RawFd],
) -> Result<(), RelayError> {
    let head = header.to_bytes();
    let total = HEADER_LEN + payload.len();
    let write_err = |err: Errno| RelayError::Write {
        side,
        source: err.into(),
    };
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(&head), IoSlice::new(payload)];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(sent) => break sent,
            Err(Errno::EINTR) => continue,
            Err(err) if gone(err) => return Ok(()),
            Err(err) => return Err(write_err(err)),
        }
    };
    if sent < total {
        // Rare (a signal, a full buffer): the rest goes without descriptors.
        let mut rest = Vec::with_capacity(total - sent);
        rest.extend_from_slice(&head);
        rest.extend_from_slice(payload);
        let mut rest = &rest[sent..];
        while !rest.is_empty() {
            match send(stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return Err(write_err(Errno::EPIPE)),
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(err) if gone(err) => return Ok(()),
                Err(err) => return Err(write_err(err)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::thread::JoinHandle;

    use nix::sys::memfd::MFdFlags;

    use vhost::vhost_user::message::{FrontendReq, VhostUserProtocolFeatures};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    const PROTOCOL_FEATURES: u64 = 1 << 30;

    /// A pump on its own thread, with the far ends of both sockets.
    struct Running {
        qemu: UnixStream,
        daemon: UnixStream,
        stop: PumpStop,
        thread: JoinHandle<io::Result<Ended>>,
    }

    fn start() -> Running {
        let (qemu, frontend) = UnixStream::pair().expect("socketpair");
        let (daemon_end, daemon) = UnixStream::pair().expect("socketpair");
        let pump = Pump::new(frontend, daemon_end);
        let stop = pump.stop_handle().expect("clone the sockets");
        let thread = std::thread::spawn(move || pump.run("test-relay".into()));
        Running {
            qemu,
            daemon,
            stop,
            thread,
        }
    }

    fn header(request: FrontendReq, flags: u32, size: usize) -> Header {
        Header {
            request: u32::from(request),
            flags: 0x1 | flags,
            size: size as u32,
        }
    }

    fn send(stream: &UnixStream, request: FrontendReq, flags: u32, payload: &[u8], fds: &[RawFd]) {
        let header = header(request, flags, payload.len());
        send_message(stream, Side::Frontend, header, payload, fds).expect("send");
    }

    fn recv(stream: &UnixStream) -> Incoming {
        recv_message(stream, Side::Daemon)
            .expect("receive")
            .expect("a message, not a close")
    }

    fn vring_state(index: u32, num: u32) -> Vec<u8> {
        let mut payload = index.to_ne_bytes().to_vec();
        payload.extend_from_slice(&num.to_ne_bytes());
        payload
    }

    #[test]
    fn descriptors_pass_through_with_their_message() {
        let run = start();
        let memfd =
            nix::sys::memfd::memfd_create("relay-test", MFdFlags::MFD_CLOEXEC).expect("memfd");
        let mut memory = std::fs::File::from(memfd);
        memory.write_all(b"guest memory").expect("fill the memfd");
        let payload = [0u8; 8];
        send(
            &run.qemu,
            FrontendReq::SET_MEM_TABLE,
            0,
            &payload,
            &[memory.as_raw_fd()],
        );

        let got = recv(&run.daemon);
        assert_eq!(got.header, header(FrontendReq::SET_MEM_TABLE, 0, 8));
        assert_eq!(got.payload, payload);
        assert_eq!(got.fds.0.len(), 1);
        // The daemon's copy is a descriptor of the same file.
        let copy = std::fs::read(format!("/proc/self/fd/{}", got.fds.0[0])).expect("reopen");
        assert_eq!(copy, b"guest memory");

        // A reply with a descriptor goes back the same way.
        let inflight = EventFd::new(0).expect("eventfd");
        let reply = Header {
            request: 31,
            flags: 0x5,
            size: 0,
        };
        send_message(
            &run.daemon,
            Side::Daemon,
            reply,
            &[],
            &[inflight.as_raw_fd()],
        )
        .expect("reply");
        let back = recv(&run.qemu);
        assert_eq!((back.header, back.fds.0.len()), (reply, 1));
        drop(run.qemu);
        let ended = run
            .thread
            .join()
            .expect("no panic")
            .expect("thread started");
        assert!(
            ended.to_daemon.is_ok() && ended.to_frontend.is_ok(),
            "{ended:?}"
        );
    }

    #[test]
    fn early_enables_are_answered_held_back_and_replayed() {
        let run = start();
        let reply_ack = VhostUserProtocolFeatures::REPLY_ACK.bits();
        send(
            &run.qemu,
            FrontendReq::SET_PROTOCOL_FEATURES,
            0,
            &reply_ack.to_ne_bytes(),
            &[],
        );
        assert_eq!(
            recv(&run.daemon).header.request,
            u32::from(FrontendReq::SET_PROTOCOL_FEATURES)
        );

        send(
            &run.qemu,
            FrontendReq::SET_VRING_ENABLE,
            0x8,
            &vring_state(1, 1),
            &[],
        );
        let ack = recv(&run.qemu);
        assert_eq!(ack.header, header(FrontendReq::SET_VRING_ENABLE, 0x4, 8));
        assert_eq!(ack.payload, 0u64.to_ne_bytes());
        send(
            &run.qemu,
            FrontendReq::SET_VRING_ENABLE,
            0,
            &vring_state(2, 0),
            &[],
        );

        send(
            &run.qemu,
            FrontendReq::SET_FEATURES,
            0,
            &PROTOCOL_FEATURES.to_ne_bytes(),
            &[],
        );
        let features = recv(&run.daemon);
        assert_eq!(features.header, header(FrontendReq::SET_FEATURES, 0, 8));
        let replayed = recv(&run.daemon);
        assert_eq!(replayed.header, header(FrontendReq::SET_VRING_ENABLE, 0, 8));
        assert_eq!(replayed.payload, vring_state(1, 1));

        // From now on enables go straight through.
        send(
            &run.qemu,
            FrontendReq::SET_VRING_ENABLE,
            0x8,
            &vring_state(2, 1),
            &[],
        );
        let direct = recv(&run.daemon);
        assert_eq!(direct.header, header(FrontendReq::SET_VRING_ENABLE, 0x8, 8));
        assert_eq!(direct.payload, vring_state(2, 1));
        run.stop.shutdown();
        run.thread
            .join()
            .expect("no panic")
            .expect("thread started");
    }

    #[test]
    fn the_daemon_closing_closes_the_frontend() {
        let mut run = start();
        drop(run.daemon);
        let mut byte = [0u8; 1];
        assert_eq!(run.qemu.read(&mut byte).expect("EOF"), 0);
        let ended = run
            .thread
            .join()
            .expect("no panic")
            .expect("thread started");
        assert!(
            ended.to_daemon.is_ok() && ended.to_frontend.is_ok(),
            "{ended:?}"
        );
    }

    #[test]
    fn stopping_closes_both_sides() {
        let mut run = start();
        run.stop.shutdown();
        let mut byte = [0u8; 1];
        assert_eq!(run.qemu.read(&mut byte).expect("EOF"), 0);
        assert_eq!((&run.daemon).read(&mut byte).expect("EOF"), 0);
        run.thread
            .join()
            .expect("no panic")
            .expect("thread started");
    }

    #[test]
    fn a_message_cut_short_or_too_large_ends_the_relay_with_an_error() {
        let mut run = start();
        let mut head = header(FrontendReq::SET_FEATURES, 0, 8).to_bytes().to_vec();
        head.extend_from_slice(&[1, 2, 3]);
        run.qemu.write_all(&head).expect("write");
        run.qemu
            .shutdown(std::net::Shutdown::Write)
            .expect("half close");
        let ended = run
            .thread
            .join()
            .expect("no panic")
            .expect("thread started");
        assert!(
            matches!(
                ended.to_daemon,
                Err(RelayError::Truncated {
                    got: 15,
                    need: 20,
                    ..
                })
            ),
            "{ended:?}"
        );

        let mut run = start();
        let big = header(FrontendReq::SET_CONFIG, 0, MAX_PAYLOAD + 1).to_bytes();
        run.qemu.write_all(&big).expect("write");
        let ended = run
            .thread
            .join()
            .expect("no panic")
            .expect("thread started");
        assert!(
            matches!(ended.to_daemon, Err(RelayError::TooLarge { .. })),
            "{ended:?}"
        );
    }

    #[test]
    fn more_descriptors_than_the_protocol_allows_end_the_relay() {
        let run = start();
        let fds: Vec<EventFd> = (0..=MAX_FDS)
            .map(|_| EventFd::new(0).expect("eventfd"))
            .collect();
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        send(&run.qemu, FrontendReq::SET_MEM_TABLE, 0, &[0; 8], &raw);
        let ended = run
            .thread
            .join()
            .expect("no panic")
            .expect("thread started");
        assert!(
            matches!(
                ended.to_daemon,
                Err(RelayError::TooManyFds { count: 9, .. })
            ),
            "{ended:?}"
        );
    }
}
