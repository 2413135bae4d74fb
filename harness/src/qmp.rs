//! QMP through the `qapi` crate: VF hotplug, reset and quit.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qapi::qmp;
use serde::{Deserialize, Serialize};

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Transport or QEMU-reported error.
    #[error("QMP {command} failed: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// What went wrong.
        #[source]
        source: qapi::ExecuteError,
    },
    /// An event did not come in time.
    #[error("QEMU did not report {what} within {timeout:?}")]
    Timeout {
        /// The awaited event.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A cloneable handle on the QMP socket, as `qapi::Qmp::from_stream` wants.
#[derive(Debug, Clone)]
struct Shared(Arc<UnixStream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

type Stream = qapi::Stream<BufReader<Shared>, Shared>;

/// A QMP session with one QEMU.
pub struct Qmp {
    inner: qapi::Qmp<Stream>,
    events: Vec<qmp::Event>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

/// `chardev-add` with a unix client socket that reconnects. The generated
/// `qmp::ChardevSocket` predates `reconnect-ms`, so this one command is
/// spelled out.
#[derive(Debug, Clone, Serialize)]
struct ChardevAddUnixClient {
    id: String,
    backend: serde_json::Value,
}

impl qapi::Command for ChardevAddUnixClient {
    const NAME: &'static str = "chardev-add";
    const ALLOW_OOB: bool = false;
    type Ok = IgnoredOk;
}

/// Any reply body.
#[derive(Debug, Clone, Deserialize)]
pub struct IgnoredOk(#[allow(dead_code)] serde_json::Value);

fn run<C: qapi::Command>(
    inner: &mut qapi::Qmp<Stream>,
    events: &mut Vec<qmp::Event>,
    cmd: &C,
) -> Result<C::Ok, QmpError> {
    let result = inner.execute(cmd);
    events.extend(inner.events());
    result.map_err(|source| QmpError::Command {
        command: C::NAME,
        source,
    })
}

impl Qmp {
    /// Performs the QMP handshake on a connected socket.
    pub fn handshake(stream: UnixStream) -> Result<Qmp, QmpError> {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| QmpError::Command {
                command: "qmp_capabilities",
                source: e.into(),
            })?;
        let mut inner = qapi::Qmp::from_stream(Shared(Arc::new(stream)));
        inner.handshake().map_err(|source| QmpError::Command {
            command: "qmp_capabilities",
            source,
        })?;
        Ok(Qmp {
            inner,
            events: Vec::new(),
        })
    }

    /// Hot-adds VF `vf` on its root port: a reconnecting chardev to the
    /// daemon's socket, a vhost-user netdev and the virtio-net function.
    pub fn add_vf(&mut self, vf: u16, socket: &Path) -> Result<(), QmpError> {
        let (chardev, netdev, _) = crate::qemu::vf_ids(vf);
        let add = ChardevAddUnixClient {
            id: chardev.clone(),
            backend: serde_json::json!({
                "type": "socket",
                "data": {
                    "addr": { "type": "unix", "data": { "path": socket.display().to_string() } },
                    "server": false,
                    "reconnect-ms": 200,
                }
            }),
        };
        run(&mut self.inner, &mut self.events, &add)?;
        let netdev_add = qmp::netdev_add(qmp::Netdev::vhost_user {
            id: netdev,
            vhost_user: qmp::NetdevVhostUserOptions {
                chardev,
                queues: Some(crate::qemu::VF_QUEUE_PAIRS.into()),
                vhostforce: None,
            },
        });
        run(&mut self.inner, &mut self.events, &netdev_add)?;
        let mut props = crate::qemu::vf_device_props(vf);
        let mut take = |key: &str| {
            props
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| props.remove(i).1)
        };
        let id = take("id");
        let bus = take("bus");
        let arguments = props
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let device_add = qmp::device_add {
            driver: "virtio-net-pci".into(),
            id,
            bus,
            arguments,
        };
        run(&mut self.inner, &mut self.events, &device_add)?;
        Ok(())
    }

    /// Hot-removes VF `vf`: `device_del`, waits for the guest to let go
    /// (DEVICE_DELETED), then removes the netdev and chardev.
    pub fn remove_vf(&mut self, vf: u16, timeout: Duration) -> Result<(), QmpError> {
        let (chardev, netdev, id) = crate::qemu::vf_ids(vf);
        run(
            &mut self.inner,
            &mut self.events,
            &qmp::device_del { id: id.clone() },
        )?;
        self.wait_event(&format!("DEVICE_DELETED for {id}"), timeout, |e| {
            matches!(e, qmp::Event::DEVICE_DELETED { data, .. } if data.device.as_deref() == Some(id.as_str()))
        })?;
        run(
            &mut self.inner,
            &mut self.events,
            &qmp::netdev_del { id: netdev },
        )?;
        run(
            &mut self.inner,
            &mut self.events,
            &qmp::chardev_remove { id: chardev },
        )?;
        Ok(())
    }

    /// Resets the machine.
    pub fn system_reset(&mut self) -> Result<(), QmpError> {
        run(&mut self.inner, &mut self.events, &qmp::system_reset {}).map(drop)
    }

    /// Asks QEMU to exit.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        run(&mut self.inner, &mut self.events, &qmp::quit {}).map(drop)
    }

    /// Polls QMP (with a cheap query) until an event matches.
    pub fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&qmp::Event) -> bool,
    ) -> Result<qmp::Event, QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(&mut matches) {
                return Ok(self.events.remove(i));
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout {
                    what: what.to_owned(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
            run(&mut self.inner, &mut self.events, &qmp::query_status {})?;
        }
    }
}
