//! The vfrig guest agent.
//!
//! The agent is PID 1 of the test VM. It mounts the pseudo file systems,
//! loads the kernel modules the image lists, brings up loopback and then
//! serves the harness over a virtio-console port named [`proto::CHANNEL_NAME`]
//! with newline-delimited JSON ([`proto`]). The serial console stays free for
//! kernel messages.
//!
//! This library holds the wire protocol, shared with the harness. The binary
//! `vfrig-agent` is the agent itself; `vfrig-agent --stdio` serves the same
//! protocol on stdin/stdout without any PID 1 duties, for tests on the host.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod proto;
