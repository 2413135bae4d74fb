//! [`VfServer`]: the loop that serves one VF's socket to frontend after
//! frontend, and [`StopHandle`], which ends it.
//!
//! # Connections
//!
//! The socket is bound once, in [`VfServer::bind`], and stays in place
//! until [`VfServer::serve`] returns, so QEMU can reconnect at any time. Each
//! connection gets a fresh [`VfBackend`] and a fresh
//! [`VhostUserDaemon`]: `vhost-user-backend` 0.24 resets neither ownership,
//! features, mappings nor vrings on disconnect, so serving twice with one
//! daemon is unreliable. Per connection:
//!
//! 1. build the backend and daemon, register the waker's eventfd with the
//!    vring worker;
//! 2. [`VfPort::connected`], *before* accepting, so the port knows the new
//!    waker before the first frame can arrive;
//! 3. accept one frontend, link the daemon (below) and relay between the
//!    two until either side disconnects;
//! 4. drop the daemon, which stops and joins its vring worker, so no
//!    `transmit`/`receive` follows;
//! 5. [`VfPort::disconnected`].
//!
//! Every `connected` is followed by exactly one `disconnected`, also when the
//! connection ends in an error or the loop is stopped while waiting.
//!
//! # The relay
//!
//! The daemon never sees the frontend's socket. `vhost` 0.18 refuses
//! VHOST_USER_SET_VRING_ENABLE until SET_FEATURES has acked
//! VHOST_USER_F_PROTOCOL_FEATURES (it checks the *acked* features), and the
//! daemon drops the connection at the first refusal; QEMU's vhost-user net
//! sends SET_VRING_ENABLE earlier, after the protocol features, on every
//! connection once a guest driver has the device running. Served directly,
//! each reconnect would end the same way, every `reconnect-ms`, for ever.
//! So a `pump` copies messages between the frontend and the daemon, and a
//! `relay` holds early ring enables back (answering them if asked) and
//! replays them after SET_FEATURES; everything else passes unchanged, file
//! descriptors included. See `relay` for the rules.
//!
//! The daemon can only accept on a listening socket, so each connection
//! links it through a private socket: bound in a mode-0700 directory next
//! to the VF socket (made in [`VfServer::bind`], removed on drop), connected
//! to by the server, accepted by the daemon, and unlinked again at once.
//! Either side closing or failing shuts both sockets down: the daemon sees
//! a disconnect and the frontend can reconnect.
//!
//! # Stopping
//!
//! [`StopHandle::stop`] sets a flag the loop checks between connections,
//! shuts down both sockets of the current connection, if any, and wakes an
//! `accept` that is waiting by shutting the listening socket down. The loop
//! then returns and drops the server, which closes the listener and removes
//! the socket file. As `connected` comes before `accept`, a loop stopped
//! while waiting for a frontend still ends with `disconnected`: the port
//! sees a pair for a connection that never came.
//!
//! # Socket permissions
//!
//! The socket is set to mode 0600 right after `bind`, before any `accept`.
//! Between the two calls it has the mode the umask gives (0755 with the
//! usual 022, which already refuses other users' `connect`); a caller that
//! cannot rely on the umask should put sockets in a 0700 directory (the
//! daemon does). `bind` replaces a stale socket file but refuses one that
//! another server still accepts on.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

use super::backend::{VfBackend, WAKER_EVENT};
use super::error::{Error, Result};
use super::pump::{Ended, Pump, PumpStop};
use super::{QueueLayout, VfPort, Waker};
use crate::pf::VfId;

/// Serves one VF on one vhost-user socket, one frontend at a time. Dropping
/// it (also at the end of [`serve`](Self::serve)) closes the listener and
/// removes the socket file.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use vfrig_device::pf::VfId;
/// # use vfrig_device::vhost::{VfPort, VfServer};
/// # fn run(port: Arc<dyn VfPort>) -> vfrig_device::vhost::Result<()> {
/// let server = VfServer::bind("/run/vfrig/vf0.sock", VfId(0), port)?;
/// let stop = server.stop_handle();
/// let thread = std::thread::spawn(move || server.serve());
/// // ... later, from any thread:
/// stop.stop();
/// # Ok(()) }
/// ```
pub struct VfServer {
    vf: VfId,
    layout: QueueLayout,
    port: Arc<dyn VfPort>,
    listener: UnixListener,
    private: PrivateDir,
    stop: StopHandle,
}

/// The daemon's side of every connection, as the vhost-user-backend
/// daemon serves it.
type Daemon = VhostUserDaemon<Arc<RwLock<VfBackend>>>;

impl fmt::Debug for VfServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfServer")
            .field("vf", &self.vf)
            .field("layout", &self.layout)
            .field("socket", &self.stop.0.socket)
            .finish_non_exhaustive()
    }
}

impl VfServer {
    /// Binds `socket` with mode 0600 and makes the private directory for
    /// the daemon's socket next to it. A stale socket file (nobody accepts
    /// on it) is replaced; a live one is an [`Error::InUse`], and any other
    /// file an [`Error::Listen`]. Nothing is accepted until
    /// [`serve`](Self::serve). The VF has both pairs
    /// ([`QueueLayout::DataAndMailbox`]).
    pub fn bind(socket: impl AsRef<Path>, vf: VfId, port: Arc<dyn VfPort>) -> Result<Self> {
        Self::bind_with_layout(socket, vf, port, QueueLayout::DataAndMailbox)
    }

    /// [`bind`](Self::bind), for a VF whose virtio-net device has the queues
    /// of `layout`; every connection's backend offers exactly those.
    pub fn bind_with_layout(
        socket: impl AsRef<Path>,
        vf: VfId,
        port: Arc<dyn VfPort>,
        layout: QueueLayout,
    ) -> Result<Self> {
        let path = socket.as_ref().to_path_buf();
        let listen_err = |source| Error::Listen {
            path: path.clone(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                // Never delete something that is not a socket.
                return Err(listen_err(io::ErrorKind::AlreadyExists.into()));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::InUse { path });
            }
            std::fs::remove_file(&path).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(&path).map_err(listen_err)?;
        let private = match PrivateDir::create(&path, vf) {
            Ok(private) => private,
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                return Err(err);
            }
        };
        // A second descriptor of the listening socket lets `stop` fail a
        // blocked accept(2) with shutdown(2), whatever became of the file.
        let wake = nix::unistd::dup(&listener).map_err(|e| listen_err(io::Error::from(e)))?;
        let server = VfServer {
            vf,
            layout,
            port,
            listener,
            private,
            stop: StopHandle(Arc::new(StopState {
                socket: path,
                listener: wake,
                stopped: AtomicBool::new(false),
                serving: AtomicBool::new(true),
                connection: Mutex::new(None),
            })),
        };
        // On error `server` is dropped, which removes the file again.
        std::fs::set_permissions(server.socket(), std::fs::Permissions::from_mode(0o600)).map_err(
            |source| Error::SocketMode {
                path: server.socket().to_path_buf(),
                source,
            },
        )?;
        Ok(server)
    }

    /// The socket this server listens on.
    pub fn socket(&self) -> &Path {
        &self.stop.0.socket
    }

    /// A handle that ends [`serve`](Self::serve) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves frontends one after another until [`StopHandle::stop`]. Blocks.
    ///
    /// Returns `Ok` when stopped, `Err` when the host side fails (no eventfd,
    /// no thread, `accept` fails). Either way the socket file is gone when
    /// this returns. A frontend that breaks the protocol only ends its own
    /// connection.
    pub fn serve(mut self) -> Result<()> {
        let span = tracing::info_span!("vf", id = self.vf.0);
        let _entered = span.enter();
        tracing::info!(socket = %self.stop.0.socket.display(), "serving vhost-user socket");
        let result = loop {
            if self.stop.is_stopped() {
                break Ok(());
            }
            if let Err(err) = self.serve_one() {
                // A stop fails a waiting accept: that is the stop, not an error.
                if self.stop.is_stopped() {
                    break Ok(());
                }
                break Err(err);
            }
        };
        match &result {
            Ok(()) => tracing::info!("stopped serving"),
            Err(err) => tracing::error!(error = %err, "vhost-user server failed"),
        }
        result
        // `self` is dropped here: the listener closes, the file goes.
    }

    /// One connection, steps 1 to 5 of the module docs.
    fn serve_one(&mut self) -> Result<()> {
        let vf = self.vf;
        let waker = EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC).map_err(|source| Error::EventFd {
            vf,
            what: "waker",
            source,
        })?;
        let waker = Arc::new(waker);
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)
            .map_err(|source| Error::EventFd {
                vf,
                what: "exit",
                source,
            })?;
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let backend = VfBackend::new(
            vf,
            self.layout,
            self.port.clone(),
            mem.clone(),
            waker.clone(),
            exit,
        );
        let mut daemon = VhostUserDaemon::new(
            format!("vhost-user-{vf}"),
            Arc::new(RwLock::new(backend)),
            mem,
        )
        .map_err(|err| Error::Daemon {
            vf,
            reason: err.to_string(),
        })?;
        {
            let handlers = daemon.get_epoll_handlers();
            let worker = handlers.first().ok_or(Error::NoWorker { vf })?;
            worker
                .register_listener(waker.as_raw_fd(), EventSet::IN, u64::from(WAKER_EVENT))
                .map_err(|source| Error::RegisterWaker { vf, source })?;
        }

        self.port.connected(Waker::new(waker));
        let result = self.run_connection(&mut daemon);
        // Stops and joins the vring worker: no port call comes after this.
        drop(daemon);
        self.port.disconnected();
        result
    }

    /// Accepts one frontend, links the daemon and relays until either side
    /// has gone.
    fn run_connection(&mut self, daemon: &mut Daemon) -> Result<()> {
        let vf = self.vf;
        let frontend = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                // The frontend gave up before we got to it.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(source) => {
                    return Err(Error::Accept {
                        vf,
                        path: self.stop.0.socket.clone(),
                        source,
                    })
                }
            }
        };
        tracing::info!("frontend connected");
        let backend = self.private.link(daemon, vf)?;
        let pump = Pump::new(frontend, backend);
        let stop = match pump.stop_handle() {
            Ok(stop) => stop,
            Err(source) => {
                // Closing our end ends the daemon's connection.
                drop(pump);
                let _ = daemon.wait();
                return Err(Error::Relay {
                    vf,
                    what: "duplicate the relay's sockets",
                    source,
                });
            }
        };
        // Publish the connection, then look at the flag: a concurrent `stop`
        // either finds the handle or is seen here (see `StopHandle::stop`).
        *self.stop.connection() = Some(stop);
        if self.stop.is_stopped() {
            if let Some(stop) = self.stop.connection().as_ref() {
                stop.shutdown();
            }
        }
        // Returns once both sockets are shut down, so the daemon has seen
        // the disconnect (or its own error) and `wait` returns.
        let ended = pump.run(format!("vhost-relay-{vf}"));
        *self.stop.connection() = None;
        let served = daemon.wait();
        let ended = ended.map_err(|source| Error::Relay {
            vf,
            what: "start the relay thread",
            source,
        })?;
        log_end(&ended, served);
        Ok(())
    }
}

/// Logs how a connection ended: `info` if a side just closed, a `warn` for
/// each failure otherwise.
fn log_end(ended: &Ended, served: std::result::Result<(), DaemonError>) {
    let mut clean = true;
    let directions = [
        ("frontend to daemon", &ended.to_daemon),
        ("daemon to frontend", &ended.to_frontend),
    ];
    for (direction, result) in directions {
        if let Err(err) = result {
            clean = false;
            tracing::warn!(direction, error = %chain(err), "relay failed; connection closed");
        }
    }
    match served {
        // What `VhostUserDaemon::serve` also counts as a clean end.
        Ok(())
        | Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => {}
        Err(err) => {
            clean = false;
            tracing::warn!(error = %err, "frontend connection ended with an error");
        }
    }
    if clean {
        tracing::info!("frontend disconnected");
    }
}

/// `err` and its sources, joined by ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

/// A mode-0700 directory next to the VF socket, for the private socket
/// that links the daemon to the relay. Only its owner can connect there,
/// so the one connection the daemon accepts is the server's. Removed, with
/// the socket, on drop.
#[derive(Debug)]
struct PrivateDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl PrivateDir {
    /// Makes `.vhost-XXXXXX` (random suffix, mode 0700) in the directory of
    /// `vf_socket`, and checks that the socket path in it fits a socket
    /// address.
    fn create(vf_socket: &Path, vf: VfId) -> Result<PrivateDir> {
        let parent = vf_socket
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = loop {
            let suffix: String = (0..6).map(|_| fastrand::alphanumeric()).collect();
            let dir = parent.join(format!(".vhost-{suffix}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::DaemonSocket {
                        vf,
                        path: dir,
                        source,
                    })
                }
            }
        };
        let private = PrivateDir {
            socket: dir.join("d"),
            dir,
        };
        // Dropped on error, which removes the directory again.
        SocketAddr::from_pathname(&private.socket).map_err(|source| Error::DaemonSocket {
            vf,
            path: private.socket.clone(),
            source,
        })?;
        Ok(private)
    }

    /// Gives `daemon` a connection whose other end is returned: binds the
    /// private socket, connects to it, lets the daemon accept that
    /// connection (it starts serving it) and unlinks the socket again.
    fn link(&self, daemon: &mut Daemon, vf: VfId) -> Result<UnixStream> {
        let socket_err = |source| Error::DaemonSocket {
            vf,
            path: self.socket.clone(),
            source,
        };
        // Left over from a link that failed half way.
        self.unlink();
        let listener = UnixListener::bind(&self.socket).map_err(socket_err)?;
        let linked = UnixStream::connect(&self.socket)
            .map_err(socket_err)
            // The connection waits in the backlog: the accept takes it at once.
            .and_then(|stream| {
                daemon
                    .start(&mut Listener::from(listener))
                    .map_err(|err| Error::DaemonAccept {
                        vf,
                        reason: err.to_string(),
                    })?;
                Ok(stream)
            });
        self.unlink();
        linked
    }

    fn unlink(&self) {
        match std::fs::remove_file(&self.socket) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                tracing::debug!(%err, socket = %self.socket.display(), "could not remove the daemon socket")
            }
            _ => {}
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        self.unlink();
        if let Err(err) = std::fs::remove_dir(&self.dir) {
            tracing::debug!(%err, dir = %self.dir.display(), "could not remove the daemon socket directory");
        }
    }
}

impl Drop for VfServer {
    fn drop(&mut self) {
        self.stop.0.serving.store(false, Ordering::SeqCst);
        let socket = &self.stop.0.socket;
        if let Err(err) = std::fs::remove_file(socket) {
            tracing::debug!(%err, socket = %socket.display(), "could not remove the socket file");
        }
        // The listener closes when the fields are dropped, right after.
    }
}

/// Ends a [`VfServer::serve`] loop. Cheap to clone; any thread may call
/// [`stop`](Self::stop), any number of times.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<StopState>);

struct StopState {
    socket: PathBuf,
    /// The listening socket (a dup of the server's), for shutdown(2).
    listener: std::os::fd::OwnedFd,
    stopped: AtomicBool,
    serving: AtomicBool,
    /// The relay of the connection being served.
    connection: Mutex<Option<PumpStop>>,
}

impl fmt::Debug for StopState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopState")
            .field("socket", &self.socket)
            .field("stopped", &self.stopped)
            .field("serving", &self.serving)
            .finish_non_exhaustive()
    }
}

impl StopHandle {
    /// Asks the loop to return: no new frontend is served, the current one
    /// is disconnected (both sockets of its relay are shut down), and a
    /// waiting `accept` is woken. Returns at once; join the serving thread
    /// to wait.
    pub fn stop(&self) {
        if self.0.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(connection) = self.connection().as_ref() {
            connection.shutdown();
        }
        self.wake();
    }

    /// Wakes a loop blocked in `accept`: shuts the listening socket down,
    /// which fails a waiting accept(2) at once and every later one, so the
    /// loop sees the stop. Works even if the socket file was removed. Safe to
    /// repeat.
    pub fn wake(&self) {
        if self.0.serving.load(Ordering::SeqCst) {
            let how = nix::sys::socket::Shutdown::Both;
            if let Err(err) = nix::sys::socket::shutdown(self.0.listener.as_raw_fd(), how) {
                tracing::debug!(%err, socket = %self.0.socket.display(), "stop: shutdown of the listener failed");
            }
        }
    }

    /// The socket of the loop this handle stops.
    pub fn socket(&self) -> &Path {
        &self.0.socket
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    fn connection(&self) -> MutexGuard<'_, Option<PumpStop>> {
        self.0
            .connection
            .lock()
            .expect("stop handle lock poisoned: a thread panicked holding it")
    }
}
