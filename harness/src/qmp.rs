//! QMP: VF hotplug, reset and quit.
//!
//! Commands are the typed ones the `qapi` crate generates from QEMU's
//! schema. The line protocol is read here rather than through `qapi::Qmp`:
//! that reader fails on any event newer than its schema (QEMU 10 sends
//! `NETDEV_VHOST_USER_CONNECTED`, for one), so events are kept as a name and
//! raw JSON data.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use qapi::qmp;
use serde::Serialize;
use serde_json::Value;

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// QEMU answered with an error.
    #[error("QMP {command} failed: {class}: {desc}")]
    Qemu {
        /// The command.
        command: &'static str,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The socket failed or closed.
    #[error("QMP {command}: {source}")]
    Io {
        /// The command (or "greeting").
        command: &'static str,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A line that is not the QMP we know.
    #[error("QMP {command}: unexpected message from QEMU: {line}")]
    Protocol {
        /// The command (or "greeting").
        command: &'static str,
        /// The line.
        line: String,
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

/// A QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `DEVICE_DELETED`.
    pub name: String,
    /// Its `data` member (`null` when absent).
    pub data: Value,
}

/// A QMP session with one QEMU. Everything exchanged is copied to a
/// transcript file.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    transcript: Option<File>,
    events: Vec<Event>,
}

/// `chardev-add` with a unix client socket that reconnects. The generated
/// `qmp::ChardevSocket` predates `reconnect-ms`, so this one command is
/// spelled out.
#[derive(Debug, Clone, Serialize)]
struct ChardevAddUnixClient {
    id: String,
    backend: Value,
}

impl qapi::Command for ChardevAddUnixClient {
    const NAME: &'static str = "chardev-add";
    const ALLOW_OOB: bool = false;
    type Ok = qmp::ChardevReturn;
}

impl Qmp {
    /// Reads QEMU's greeting on a connected socket and negotiates
    /// capabilities; `transcript` gets a copy of the session.
    pub fn handshake(stream: UnixStream, transcript: &Path) -> Result<Qmp, QmpError> {
        let io = |source| QmpError::Io {
            command: "greeting",
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().map_err(io)?),
            writer: stream,
            transcript: File::create(transcript).ok(),
            events: Vec::new(),
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                command: "greeting",
                line: greeting.to_string(),
            });
        }
        qmp.execute(&qmp::qmp_capabilities { enable: None })?;
        Ok(qmp)
    }

    fn read_message(&mut self, command: &'static str) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io { command, source })?;
        if n == 0 {
            return Err(QmpError::Io {
                command,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        if let Some(t) = &mut self.transcript {
            let _ = t.write_all(line.as_bytes());
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            command,
            line: line.trim_end().to_owned(),
        })
    }

    /// Runs one command and returns its typed result. Events that arrive
    /// meanwhile are queued for [`Qmp::wait_event`].
    pub fn execute<C: qapi::Command>(&mut self, cmd: &C) -> Result<C::Ok, QmpError> {
        let line = serde_json::json!({ "execute": C::NAME, "arguments": cmd }).to_string();
        if let Some(t) = &mut self.transcript {
            let _ = writeln!(t, "{line}");
        }
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|source| QmpError::Io {
                command: C::NAME,
                source,
            })?;
        loop {
            let mut msg = self.read_message(C::NAME)?;
            if let Some(name) = msg.get("event").and_then(Value::as_str).map(str::to_owned) {
                let data = msg.get_mut("data").map(Value::take).unwrap_or(Value::Null);
                self.events.push(Event { name, data });
            } else if let Some(ret) = msg.get_mut("return") {
                return serde_json::from_value(ret.take()).map_err(|_| QmpError::Protocol {
                    command: C::NAME,
                    line: msg.to_string(),
                });
            } else if let Some(err) = msg.get("error") {
                let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                return Err(QmpError::Qemu {
                    command: C::NAME,
                    class: field("class"),
                    desc: field("desc"),
                });
            } else {
                return Err(QmpError::Protocol {
                    command: C::NAME,
                    line: msg.to_string(),
                });
            }
        }
    }

    /// Hot-adds VF `vf` on its root port: a reconnecting chardev to the
    /// daemon's socket, a vhost-user netdev and the virtio-net function.
    pub fn add_vf(
        &mut self,
        vf: u16,
        kind: crate::qemu::VfKind,
        socket: &Path,
    ) -> Result<(), QmpError> {
        let (chardev, netdev, _) = crate::qemu::vf_ids(vf);
        self.execute(&ChardevAddUnixClient {
            id: chardev.clone(),
            backend: serde_json::json!({
                "type": "socket",
                "data": {
                    "addr": { "type": "unix", "data": { "path": socket.display().to_string() } },
                    "server": false,
                    "reconnect-ms": 200,
                }
            }),
        })?;
        self.execute(&qmp::netdev_add(qmp::Netdev::vhost_user {
            id: netdev,
            vhost_user: qmp::NetdevVhostUserOptions {
                chardev,
                queues: Some(kind.queue_pairs().into()),
                vhostforce: None,
            },
        }))?;
        self.device_add("virtio-net-pci", crate::qemu::vf_device_props(vf, kind))
    }

    /// Plugs the failover primary back in (its netdev stays between plugs).
    pub fn add_primary(&mut self, primary: &crate::qemu::Primary) -> Result<(), QmpError> {
        self.device_add(&primary.model, primary.device_props())
    }

    /// Unplugs the failover primary and waits until QEMU has removed it.
    pub fn remove_primary(&mut self, timeout: Duration) -> Result<(), QmpError> {
        self.device_del(crate::qemu::PRIMARY_ID, timeout)
    }

    /// `device_add` from command-line style properties.
    fn device_add(
        &mut self,
        driver: &str,
        mut props: Vec<(String, String)>,
    ) -> Result<(), QmpError> {
        let mut take = |key: &str| {
            props
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| props.remove(i).1)
        };
        let id = take("id");
        let bus = take("bus");
        // QMP wants typed values where the command line takes strings.
        let arguments = props
            .into_iter()
            .map(|(k, v)| {
                let value = match (k.as_str(), v.parse::<u64>()) {
                    ("mq" | "failover", _) => Value::Bool(v == "on"),
                    (_, Ok(n)) => Value::from(n),
                    _ => Value::String(v),
                };
                (k, value)
            })
            .collect();
        self.execute(&qmp::device_add {
            driver: driver.into(),
            id,
            bus,
            arguments,
        })?;
        Ok(())
    }

    /// `device_del`, then waits for DEVICE_DELETED (the guest let go).
    fn device_del(&mut self, id: &str, timeout: Duration) -> Result<(), QmpError> {
        self.execute(&qmp::device_del { id: id.to_owned() })?;
        self.wait_event(&format!("DEVICE_DELETED for {id}"), timeout, |e| {
            e.name == "DEVICE_DELETED" && e.data.get("device").and_then(Value::as_str) == Some(id)
        })
        .map(drop)
    }

    /// Hot-removes VF `vf`: `device_del`, waits for the guest to let go
    /// (DEVICE_DELETED), then removes the netdev and chardev.
    pub fn remove_vf(&mut self, vf: u16, timeout: Duration) -> Result<(), QmpError> {
        let (chardev, netdev, id) = crate::qemu::vf_ids(vf);
        self.device_del(&id, timeout)?;
        self.execute(&qmp::netdev_del { id: netdev })?;
        // QEMU 10 removes a vhost-user netdev's chardev with the netdev;
        // older versions leave it behind.
        match self.execute(&qmp::chardev_remove { id: chardev }) {
            Err(QmpError::Qemu { desc, .. }) if desc.contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Resets the machine.
    pub fn system_reset(&mut self) -> Result<(), QmpError> {
        self.execute(&qmp::system_reset {}).map(drop)
    }

    /// Asks QEMU to exit.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute(&qmp::quit {}).map(drop)
    }

    /// Polls QMP (with a cheap query) until an event matches, and removes
    /// it from the queue.
    pub fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Result<Event, QmpError> {
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
            self.execute(&qmp::query_status {})?;
        }
    }

    /// Events received so far and not yet taken.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QEMU: greets, then answers each command line with the next
    /// scripted lines.
    fn fake_qemu(script: Vec<Vec<&'static str>>) -> (Qmp, std::thread::JoinHandle<Vec<String>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut got = Vec::new();
            let mut lines = BufReader::new(theirs).lines();
            let mut replies = vec![vec![r#"{"return": {}}"#]];
            replies.extend(script);
            for reply in replies {
                let Some(Ok(line)) = lines.next() else { break };
                got.push(line);
                for r in reply {
                    writeln!(w, "{r}").unwrap();
                }
            }
            got
        });
        let path = std::env::temp_dir().join(format!(
            "vfrig-qmp-test-{}-{:?}.log",
            std::process::id(),
            std::thread::current().id()
        ));
        let qmp = Qmp::handshake(ours, &path).unwrap();
        let _ = std::fs::remove_file(path);
        (qmp, server)
    }

    #[test]
    fn unknown_events_are_queued_and_results_typed() {
        let (mut qmp, server) = fake_qemu(vec![vec![
            r#"{"event": "NETDEV_VHOST_USER_CONNECTED", "data": {"netdev-id": "vfn0"}, "timestamp": {"seconds": 1, "microseconds": 2}}"#,
            r#"{"return": {"status": "running", "running": true, "singlestep": false}}"#,
        ]]);
        let status = qmp.execute(&qmp::query_status {}).unwrap();
        assert!(status.running);
        let events = qmp.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "NETDEV_VHOST_USER_CONNECTED");
        assert_eq!(events[0].data["netdev-id"], "vfn0");
        drop(qmp);
        let sent = server.join().unwrap();
        assert_eq!(sent[0], r#"{"arguments":{},"execute":"qmp_capabilities"}"#);
    }

    #[test]
    fn qemu_errors_carry_class_and_description() {
        let (mut qmp, _server) = fake_qemu(vec![vec![
            r#"{"error": {"class": "GenericError", "desc": "Duplicate device ID 'vf1'"}}"#,
        ]]);
        let err = qmp
            .execute(&qmp::device_del { id: "vf1".into() })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP device_del failed: GenericError: Duplicate device ID 'vf1'"
        );
    }

    #[test]
    fn hotplug_sends_chardev_netdev_and_device() {
        let ok = || vec![r#"{"return": {}}"#];
        let (mut qmp, server) = fake_qemu(vec![ok(), ok(), ok()]);
        qmp.add_vf(1, crate::qemu::VfKind::Driver, Path::new("/pf/vf1.sock"))
            .unwrap();
        drop(qmp);
        let sent: Vec<Value> = server
            .join()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(sent[1]["execute"], "chardev-add");
        assert_eq!(sent[1]["arguments"]["backend"]["data"]["reconnect-ms"], 200);
        assert_eq!(sent[2]["execute"], "netdev_add");
        assert_eq!(sent[2]["arguments"]["type"], "vhost-user");
        assert_eq!(sent[2]["arguments"]["chardev"], "vfc1");
        assert_eq!(sent[3]["execute"], "device_add");
        assert_eq!(sent[3]["arguments"]["driver"], "virtio-net-pci");
        assert_eq!(sent[3]["arguments"]["bus"], "rp1");
        assert_eq!(sent[3]["arguments"]["netdev"], "vfn1");
        assert_eq!(sent[3]["arguments"]["mac"], "02:00:00:00:10:01");
        assert_eq!(sent[3]["arguments"]["mq"], true);
        assert_eq!(sent[3]["arguments"]["vectors"], 6);
    }
}
