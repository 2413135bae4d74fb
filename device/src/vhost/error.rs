//! Errors of the vhost-user shell.
//!
//! Only the host side fails here: the socket, eventfds, the daemon's
//! threads. A frontend that misbehaves ends its own connection (logged at
//! `warn`) and the next one is served; a guest that writes bad rings or
//! chains is logged and ignored.

use std::io;
use std::path::PathBuf;

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
    #[error("cannot accept a frontend on {} for {vf}: {reason}", path.display())]
    Accept {
        /// The VF served.
        vf: VfId,
        /// The socket path.
        path: PathBuf,
        /// The library's error.
        reason: String,
    },
}
