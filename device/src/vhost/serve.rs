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
//! 3. accept one frontend and serve it until it disconnects;
//! 4. drop the daemon, which stops and joins its vring worker, so no
//!    `transmit`/`receive` follows;
//! 5. [`VfPort::disconnected`].
//!
//! Every `connected` is followed by exactly one `disconnected`, also when the
//! connection ends in an error or the loop is stopped while waiting.
//!
//! # Stopping
//!
//! [`StopHandle::stop`] sets a flag the loop checks between connections,
//! shuts down the current frontend connection, if any, and wakes an `accept`
//! that is waiting by connecting to the socket once. The loop then returns
//! and drops the server, which closes the listener and removes the socket
//! file. As `connected` comes before `accept`, a loop stopped while waiting
//! for a frontend still ends with `disconnected`: the port sees a pair for
//! a connection that never came.
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
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use vhost::vhost_user::{Error as VhostUserError, Listener, VhostUserVirtioFeatures};
use vhost_user_backend::{Error as DaemonError, ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

use super::backend::{VfBackend, WAKER_EVENT};
use super::error::{Error, Result};
use super::{VfPort, Waker};
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
    port: Arc<dyn VfPort>,
    listener: Listener,
    stop: StopHandle,
}

impl fmt::Debug for VfServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfServer")
            .field("vf", &self.vf)
            .field("socket", &self.stop.0.socket)
            .finish_non_exhaustive()
    }
}

impl VfServer {
    /// Binds `socket` with mode 0600. A stale socket file (nobody accepts
    /// on it) is replaced; a live one is an [`Error::InUse`], and any other
    /// file an [`Error::Listen`]. Nothing is accepted until
    /// [`serve`](Self::serve).
    pub fn bind(socket: impl AsRef<Path>, vf: VfId, port: Arc<dyn VfPort>) -> Result<Self> {
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
        // A second descriptor of the listening socket lets `stop` fail a
        // blocked accept(2) with shutdown(2), whatever became of the file.
        let wake = nix::unistd::dup(&listener).map_err(|e| listen_err(io::Error::from(e)))?;
        let server = VfServer {
            vf,
            port,
            listener: Listener::from(listener),
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
        let backend = VfBackend::new(vf, self.port.clone(), mem.clone(), waker.clone(), exit);
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

    /// Accepts one frontend and waits until it has gone.
    fn run_connection(
        &mut self,
        daemon: &mut VhostUserDaemon<Arc<RwLock<VfBackend>>>,
    ) -> Result<()> {
        daemon
            .start(&mut self.listener)
            .map_err(|err| Error::Accept {
                vf: self.vf,
                path: self.stop.0.socket.clone(),
                reason: err.to_string(),
            })?;
        tracing::info!("frontend connected");
        // Publish the connection, then look at the flag: a concurrent `stop`
        // either finds the handle or is seen here (see `StopHandle::stop`).
        *self.stop.connection() = daemon.shutdown_handle();
        if self.stop.is_stopped() {
            daemon.request_shutdown();
        }
        let result = daemon.wait();
        *self.stop.connection() = None;
        match result {
            // What `VhostUserDaemon::serve` also counts as a clean end.
            Ok(())
            | Err(DaemonError::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => tracing::info!("frontend disconnected"),
            // QEMU's virtio-net disables the queue pairs the guest has not
            // enabled yet while the device is realized, before SET_FEATURES;
            // the vhost crate (0.18) refuses SET_VRING_ENABLE until
            // SET_FEATURES acked VHOST_USER_F_PROTOCOL_FEATURES and drops
            // the connection. QEMU sends that only at realize, so with
            // `reconnect-ms` on its chardev the next connection works.
            Err(DaemonError::HandleRequest(VhostUserError::InactiveFeature(feature)))
                if feature == VhostUserVirtioFeatures::PROTOCOL_FEATURES =>
            {
                tracing::info!(
                    "frontend enabled a ring before SET_FEATURES, which the vhost crate \
                     refuses; expecting it to reconnect (QEMU: reconnect-ms on the chardev)"
                )
            }
            Err(err) => tracing::warn!(error = %err, "frontend connection ended with an error"),
        }
        Ok(())
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
    connection: Mutex<Option<ShutdownHandle>>,
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
    /// is disconnected, and a waiting `accept` is woken by one connection
    /// to the socket. Returns at once; join the serving thread to wait.
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

    fn connection(&self) -> MutexGuard<'_, Option<ShutdownHandle>> {
        self.0
            .connection
            .lock()
            .expect("stop handle lock poisoned: a thread panicked holding it")
    }
}
