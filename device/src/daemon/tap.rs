//! A host TAP interface as the PF switch's uplink: frames the switch sends
//! to the uplink are written to it, and frames the host sends out of it
//! enter the switch as if from the wire.
//!
//! Creating a TAP needs CAP_NET_ADMIN and `/dev/net/tun`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use super::device::Device;

/// How often the reader looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A TAP interface the daemon owns.
pub struct Tap {
    name: String,
    device: tun::Device,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// Writes one Ethernet frame to the host.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        self.device.send(frame)
    }
}

/// Creates (or attaches to) TAP interface `name`, brought up.
pub fn open(name: &str) -> std::io::Result<Arc<Tap>> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).layer(tun::Layer::L2).up();
    let device = tun::create(&config).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Arc::new(Tap {
        name: name.to_owned(),
        device,
    }))
}

/// The thread that feeds frames the host sends out of the TAP into the switch.
#[derive(Debug)]
pub struct TapReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TapReader {
    /// Starts reading `tap` into `device`.
    pub fn spawn(tap: Arc<Tap>, device: Arc<Device>) -> std::io::Result<TapReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vfrig-tap".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !flag.load(Ordering::Relaxed) {
                    match tap.device.recv_timeout(&mut buf, POLL) {
                        Ok(0) => {}
                        Ok(n) => device.inject_uplink(&buf[..n]),
                        Err(err)
                            if matches!(
                                err.kind(),
                                std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(err) => {
                            warn!(%err, "reading the uplink TAP failed; host frames no longer reach the VFs");
                            return;
                        }
                    }
                }
                debug!("uplink TAP reader stopped");
            })?;
        Ok(TapReader {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the reader and waits for it (at most one poll interval).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the uplink TAP reader panicked");
            }
        }
    }
}

impl Drop for TapReader {
    fn drop(&mut self) {
        self.stop();
    }
}
