//! The PF daemon and a VM together: what most callers want.

use std::path::PathBuf;

use vfrig_device::daemon::{Daemon, DaemonConfig};

use crate::rundir::SocketDir;
use crate::vm::{Vm, VmConfig, VmError};

/// How to start a rig.
#[derive(Debug, Clone)]
pub struct RigConfig {
    /// VFs the PF has.
    pub vfs: u16,
    /// A PF policy file.
    pub policy: Option<PathBuf>,
    /// VFs the guest kernel's virtio_net binds (the daemon's kernel role).
    pub kernel_vfs: std::collections::BTreeSet<u16>,
    /// Seed for probabilistic faults.
    pub seed: u64,
    /// The VM. Its `vfs_at_boot` lists the VFs plugged at boot.
    pub vm: VmConfig,
}

/// A running PF daemon with a VM attached. Fields drop in order: the VM
/// first, then the daemon, then the socket directory.
#[derive(Debug)]
pub struct Rig {
    /// The VM.
    pub vm: Vm,
    /// The PF daemon (in this process).
    pub daemon: Daemon,
    _dir: SocketDir,
}

impl Rig {
    /// Starts the daemon, then the VM.
    pub fn start(config: &RigConfig) -> Result<Rig, VmError> {
        let dir = SocketDir::create().map_err(|source| VmError::Io {
            what: "create a socket directory for the PF daemon".into(),
            source,
        })?;
        let daemon = Daemon::start(DaemonConfig {
            dir: dir.path().join("pf"),
            vfs: config.vfs,
            policy: config.policy.clone(),
            pcap: None,
            tap: None,
            seed: config.seed,
            kernel_vfs: config.kernel_vfs.clone(),
        })?;
        let vm = Vm::start(&config.vm, &daemon)?;
        Ok(Rig {
            vm,
            daemon,
            _dir: dir,
        })
    }

    /// The directory holding the daemon's sockets (removed on drop).
    pub fn socket_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Powers the VM off (checking the console for splats) and stops the
    /// daemon.
    pub fn shutdown(self) -> Result<(), VmError> {
        let Rig { vm, daemon, _dir } = self;
        let result = vm.shutdown();
        daemon.shutdown();
        result
    }
}
