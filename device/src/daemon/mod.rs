//! The `vfrig-pf` daemon: one process serving every VF of one PF.
//!
//! It creates `DIR/vf0.sock` ... (vhost-user, one per VF) and
//! `DIR/control.sock` (the JSON control protocol), all mode 0600 in a
//! directory it creates mode 0700, and runs:
//! - one thread per VF running the vhost-user serve loop, which serves one
//!   frontend at a time and serves again after a disconnect;
//! - a timer thread for delay faults;
//! - the control socket's accept thread, and one thread per control client.
//!
//! All of them share one [`Device`]. [`Daemon::shutdown`] (also on drop)
//! stops the loops and removes the sockets.
//!
//! Each VF has a [`VfRole`]: driver VFs (the default) get a 4-queue device
//! with the mailbox pair, for QEMU's `-netdev vhost-user,...,queues=2` and
//! `virtio-net-pci,mq=on`; kernel VFs ([`DaemonConfig::kernel_vfs`], or
//! `role = "kernel"` in the policy file) get the data pair only, for
//! `queues=1` and `virtio-net-pci,mq=off,failover=on`.

mod control_socket;
mod device;
pub mod policy_file;
mod tap;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::info;

/// How long [`Daemon::shutdown`] waits for each VF's serve loop to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub use device::Device;

use crate::engine::{Engine, EngineConfig};
use crate::pf::{PfConfig, VfId, VfRole};
use crate::vhost::{QueueLayout, StopHandle, VfServer};

/// Result alias for the daemon.
pub type Result<T> = std::result::Result<T, DaemonError>;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A file or socket operation failed.
    #[error("could not {what} {}", path.display())]
    Io {
        /// What was being done ("create the socket directory").
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A policy file could not be read or has a mistake; the message says where.
    #[error("policy file {}: {message}", path.display())]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column when the parser knows them.
        message: String,
    },
    /// The uplink TAP could not be created.
    #[error(
        "could not create TAP interface {name} (needs root or CAP_NET_ADMIN, and /dev/net/tun)"
    )]
    Tap {
        /// The interface name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A kernel VF was asked for that the PF does not have.
    #[error(
        "kernel VF {vf} does not exist: the PF has {vfs} VFs (vf0..vf{last}); \
         --kernel-vf takes an index below --vfs",
        last = vfs.saturating_sub(1)
    )]
    NoSuchKernelVf {
        /// The index asked for.
        vf: u16,
        /// How many VFs the PF has.
        vfs: u16,
    },
    /// The PF configuration is invalid.
    #[error(transparent)]
    Pf(#[from] crate::Error),
    /// A VF's vhost-user socket could not be set up.
    #[error(transparent)]
    Vhost(#[from] crate::vhost::Error),
}

use DaemonError as Error;

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Directory for the sockets (created if missing).
    pub dir: PathBuf,
    /// Number of VFs.
    pub vfs: u16,
    /// A policy file (see [`policy_file`]).
    pub policy: Option<PathBuf>,
    /// A pcap file for frames the PF switch sends to the uplink.
    pub pcap: Option<PathBuf>,
    /// A host TAP interface to use as the uplink (created if missing; needs
    /// CAP_NET_ADMIN).
    pub tap: Option<String>,
    /// Seed for probabilistic faults.
    pub seed: u64,
    /// VFs the guest kernel's virtio_net drives ([`VfRole::Kernel`]), in
    /// addition to those the policy file names; each must be below `vfs`.
    /// Every other VF has the driver role.
    pub kernel_vfs: BTreeSet<u16>,
}

/// A running daemon. Dropping it shuts it down.
#[derive(Debug)]
pub struct Daemon {
    dir: PathBuf,
    vfs: u16,
    /// Roles other than [`VfRole::Driver`].
    roles: BTreeMap<VfId, VfRole>,
    device: Arc<Device>,
    threads: Vec<JoinHandle<()>>,
    /// Serve loops of the VFs, and their threads.
    servers: Vec<(StopHandle, JoinHandle<()>)>,
    tap_reader: Option<tap::TapReader>,
    sockets: Vec<PathBuf>,
}

impl Daemon {
    /// Creates the sockets and starts serving.
    pub fn start(config: DaemonConfig) -> Result<Daemon> {
        if let Some(&vf) = config.kernel_vfs.range(config.vfs..).next() {
            return Err(Error::NoSuchKernelVf {
                vf,
                vfs: config.vfs,
            });
        }
        let mut pf = match &config.policy {
            Some(path) => policy_file::load(path, config.vfs)?,
            None => PfConfig {
                num_vfs: config.vfs,
                ..PfConfig::default()
            },
        };
        for &vf in &config.kernel_vfs {
            pf.roles.insert(VfId(vf), VfRole::Kernel);
        }
        let roles = pf.roles.clone();
        let engine = Engine::new(
            EngineConfig {
                pf,
                seed: config.seed,
            },
            Instant::now(),
        )?;
        create_private_dir(&config.dir)?;
        let uplink = match &config.pcap {
            Some(path) => Some(create_pcap(path)?),
            None => None,
        };
        let tap = match &config.tap {
            Some(name) => Some(tap::open(name).map_err(|source| Error::Tap {
                name: name.clone(),
                source,
            })?),
            None => None,
        };
        let device = Device::new(engine, uplink, tap.clone());
        let mut daemon = Daemon {
            dir: config.dir.clone(),
            vfs: config.vfs,
            roles: roles.clone(),
            device: Arc::clone(&device),
            threads: Vec::new(),
            servers: Vec::new(),
            tap_reader: None,
            sockets: Vec::new(),
        };
        if let Some(tap) = tap {
            daemon.tap_reader = Some(tap::TapReader::spawn(tap, Arc::clone(&device)).map_err(
                |source| Error::Io {
                    what: "start the TAP reader thread for",
                    path: config.dir.clone(),
                    source,
                },
            )?);
        }

        // On any error below, dropping `daemon` stops what was started.
        for vf in 0..config.vfs {
            let id = VfId(vf);
            let layout = match roles.get(&id).copied().unwrap_or_default() {
                VfRole::Driver => QueueLayout::DataAndMailbox,
                VfRole::Kernel => {
                    info!(
                        vf,
                        "kernel VF: one queue pair, no mailbox (QEMU: queues=1, mq=off)"
                    );
                    QueueLayout::DataOnly
                }
            };
            let server =
                VfServer::bind_with_layout(daemon.vf_socket(vf), id, device.port(id), layout)?;
            let stop = server.stop_handle();
            let thread = std::thread::Builder::new()
                .name(format!("vfrig-vf{vf}"))
                .spawn(move || {
                    if let Err(err) = server.serve() {
                        tracing::error!(vf, "VF stopped serving: {err}");
                    }
                })
                .map_err(|source| Error::Io {
                    what: "start the serving thread for",
                    path: daemon.vf_socket(vf),
                    source,
                })?;
            daemon.servers.push((stop, thread));
        }

        let control = daemon.control_socket();
        let listener = bind_private(&control)?;
        daemon.sockets.push(control.clone());
        daemon.threads.push(
            control_socket::spawn(listener, Arc::clone(&device)).map_err(|source| Error::Io {
                what: "start the control socket thread for",
                path: control.clone(),
                source,
            })?,
        );
        daemon
            .threads
            .push(device.spawn_timer().map_err(|source| Error::Io {
                what: "start the timer thread for",
                path: config.dir.clone(),
                source,
            })?);
        info!(dir = %config.dir.display(), vfs = config.vfs, "PF daemon started");
        Ok(daemon)
    }

    /// The vhost-user socket of VF `vf`.
    pub fn vf_socket(&self, vf: u16) -> PathBuf {
        self.dir.join(format!("vf{vf}.sock"))
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Number of VFs served.
    pub fn vfs(&self) -> u16 {
        self.vfs
    }

    /// Who drives VF `vf` (`None` if the PF does not have it): what its
    /// socket serves, and so how QEMU must be started for it (see the
    /// [module docs](self)).
    pub fn role(&self, vf: u16) -> Option<VfRole> {
        (vf < self.vfs).then(|| self.roles.get(&VfId(vf)).copied().unwrap_or_default())
    }

    /// The shared device (for in-process tests and tools).
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Stops serving and removes the sockets.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for (stop, _) in &self.servers {
            stop.stop();
        }
        // Each serve loop removes its own socket when it returns. Keep waking
        // each until it has: a frontend that disconnects while the daemon
        // stops can race the first wake-up.
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (stop, thread) in self.servers.drain(..) {
            while !thread.is_finished() && Instant::now() < deadline {
                stop.wake();
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                tracing::error!(
                    socket = %stop.socket().display(),
                    "a VF serving thread did not stop; leaving it behind"
                );
                continue;
            }
            if thread.join().is_err() {
                tracing::error!("a VF serving thread panicked");
            }
        }
        if let Some(mut reader) = self.tap_reader.take() {
            reader.stop();
        }
        self.device.stop();
        for socket in self.sockets.drain(..) {
            let _ = std::fs::remove_file(&socket);
        }
        info!(dir = %self.dir.display(), "PF daemon stopped");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.sockets.is_empty() || !self.servers.is_empty() || self.tap_reader.is_some() {
            self.stop();
        }
    }
}

fn create_pcap(path: &Path) -> Result<pcap_file::pcap::PcapWriter<std::fs::File>> {
    let io = |what, source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(|e| io("create the uplink capture", e))?;
    pcap_file::pcap::PcapWriter::new(file).map_err(|e| {
        io(
            "write the header of the uplink capture",
            std::io::Error::other(e.to_string()),
        )
    })
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            what: "create the socket directory",
            path: dir.to_owned(),
            source,
        })
}

/// Binds a Unix socket, replacing a stale one, and makes it mode 0600.
fn bind_private(path: &Path) -> Result<UnixListener> {
    let io = |what, source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io(
                "bind (another daemon is serving it; stop that one or use another --dir)",
                std::io::Error::from(std::io::ErrorKind::AddrInUse),
            ));
        }
        std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restrict the permissions of", e))?;
    Ok(listener)
}
