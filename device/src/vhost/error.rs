//! Errors of the vhost-user shell.
//!
//! Only the host side fails here: the socket, eventfds, the daemon's
//! threads. A frontend that misbehaves ends its own connection (logged at
//! `warn`) and the next one is served; a guest that writes bad rings or
//! chains is logged and ignored.

use std::io;
use std::path::PathBuf;

use super::pump::{Side, MAX_FDS};
use super::relay::MAX_PAYLOAD;
use crate::pf::VfId;

/// Result alias for the vhost-user shell.
pub type Result<T> = std::result::Result<T, Error>;

/// What stopped a VF's vhost-user server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be bound (or a stale one removed).
    #[error(
        "cannot listen on vhost-user socket {}; check that its directory exists and is writable",
        path.display()
    )]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// Another server accepts connections on the socket.
    #[error(
        "cannot bind vhost-user socket {}: another daemon is serving it; stop that one or use another path",
        path.display()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be restricted to its owner.
    #[error("cannot set mode 0600 on vhost-user socket {}", path.display())]
    SocketMode {
        /// The socket path.
        path: PathBuf,
        /// Why chmod failed.
        #[source]
        source: io::Error,
    },
    /// An eventfd (waker or exit event) could not be created.
    #[error("cannot create the {what} eventfd for {vf}")]
    EventFd {
        /// The VF served.
        vf: VfId,
        /// Which eventfd.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `vhost-user-backend` could not set up a daemon (vrings, epoll, the
    /// worker thread).
    #[error("cannot start the vhost-user daemon for {vf}: {reason}")]
    Daemon {
        /// The VF served.
        vf: VfId,
        /// The library's error (it does not implement `std::error::Error`).
        reason: String,
    },
    /// The daemon has no vring worker to register the waker with.
    #[error("the vhost-user daemon for {vf} has no vring worker")]
    NoWorker {
        /// The VF served.
        vf: VfId,
    },
    /// The waker's eventfd could not be added to the vring worker's epoll.
    #[error("cannot register the waker of {vf} with its vring worker")]
    RegisterWaker {
        /// The VF served.
        vf: VfId,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Accepting a frontend failed for a reason other than the peer leaving.
    #[error("cannot accept a frontend on {} for {vf}", path.display())]
    Accept {
        /// The VF served.
        vf: VfId,
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The private directory for the daemon's socket could not be made or
    /// its path is too long for a socket.
    #[error(
        "cannot set up the private daemon socket {} for {vf}; check that the VF socket's directory is writable and its path short",
        path.display()
    )]
    DaemonSocket {
        /// The VF served.
        vf: VfId,
        /// The private socket's path (or its directory's template).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon did not take the relay's connection on its private
    /// socket.
    #[error("the vhost-user daemon for {vf} did not accept the relay's connection: {reason}")]
    DaemonAccept {
        /// The VF served.
        vf: VfId,
        /// The library's error.
        reason: String,
    },
    /// The relay between a frontend and the daemon could not be set up.
    #[error("cannot {what} for {vf}")]
    Relay {
        /// The VF served.
        vf: VfId,
        /// What failed ("start the relay thread", ...).
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why the relay between a frontend and its daemon ended, other than a side
/// closing its socket. Logged, never returned: it ends only its own
/// connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// Reading a message failed.
    #[error("reading from the {side} failed")]
    Read {
        /// Whose socket.
        side: Side,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a message failed.
    #[error("writing to the {side} failed")]
    Write {
        /// Whose socket.
        side: Side,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket closed in the middle of a message.
    #[error("the {side} closed its socket after {got} of {need} bytes of a message (request {request:?})")]
    Truncated {
        /// Who sent it.
        side: Side,
        /// The request, once the header was complete.
        request: Option<u32>,
        /// Bytes received.
        got: usize,
        /// Bytes the message needs.
        need: usize,
    },
    /// A payload larger than the protocol allows.
    #[error("the {side} sent request {request} with a {size}-byte payload; at most {MAX_PAYLOAD} are allowed")]
    TooLarge {
        /// Who sent it.
        side: Side,
        /// The request.
        request: u32,
        /// The payload size in the header.
        size: u32,
    },
    /// More descriptors than one message may carry.
    #[error("the {side} sent {count} file descriptors with request {request}; at most {MAX_FDS} are allowed")]
    TooManyFds {
        /// Who sent them.
        side: Side,
        /// The request.
        request: u32,
        /// How many came (all closed again).
        count: usize,
    },
}
