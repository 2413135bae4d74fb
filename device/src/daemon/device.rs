//! The engine shared by every thread of the daemon, and the per-VF ports the
//! vhost-user backends talk to.
//!
//! One lock around the engine: every VF backend, the timer and the control
//! socket take it for the duration of one input and the outputs it causes.
//! After each input the device wakes the VF backends the engine names and
//! tells the timer thread about the next deadline.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use pcap_file::pcap::{PcapPacket, PcapWriter};
use tracing::{debug, warn};

use super::tap::Tap;
use crate::engine::Engine;
use crate::pf::VfId;
use crate::vhost::{Pair, VfPort, Waker};

#[derive(Debug)]
struct Inner {
    engine: Engine,
    wakers: Vec<Option<Waker>>,
    /// Where frames switched to the uplink are written; `None` discards them
    /// (the switch still counts them).
    uplink: Option<PcapWriter<File>>,
    /// A host TAP that also receives them.
    tap: Option<Arc<Tap>>,
    stopping: bool,
}

/// The engine behind a lock, with the wakers of connected VF backends.
#[derive(Debug)]
pub struct Device {
    inner: Mutex<Inner>,
    /// Signalled whenever the engine's next deadline may have changed.
    timer: Condvar,
}

impl Device {
    /// Shares `engine` between threads; uplink frames go to the `uplink`
    /// capture and the `tap` interface, when given.
    pub fn new(
        engine: Engine,
        uplink: Option<PcapWriter<File>>,
        tap: Option<Arc<Tap>>,
    ) -> Arc<Device> {
        let vfs = usize::from(engine.pf().num_vfs());
        Arc::new(Device {
            inner: Mutex::new(Inner {
                engine,
                wakers: vec![None; vfs],
                uplink,
                tap,
                stopping: false,
            }),
            timer: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("device lock poisoned: a thread panicked while holding it")
    }

    /// Runs `input` on the engine at the current time, then performs what it
    /// asks for: wakes VF backends and, if the next deadline changed, the timer.
    pub fn with<R>(&self, input: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        let mut inner = self.lock();
        let deadline = inner.engine.poll_timeout();
        let result = input(&mut inner.engine, Instant::now());
        Self::after_input(&mut inner);
        // Most inputs (every data frame) leave the deadline alone: wake the
        // timer thread only when it has a new one to wait for.
        let rescheduled = inner.engine.poll_timeout() != deadline;
        drop(inner);
        if rescheduled {
            self.timer.notify_all();
        }
        result
    }

    fn after_input(inner: &mut Inner) {
        while let Some(vf) = inner.engine.poll_wake() {
            if let Some(Some(waker)) = inner.wakers.get(usize::from(vf.0)) {
                waker.wake();
            }
        }
        while let Some(frame) = inner.engine.poll_uplink() {
            if let Some(tap) = &inner.tap {
                if let Err(err) = tap.send(&frame) {
                    debug!(%err, "could not write a frame to the uplink TAP");
                }
            }
            let Some(pcap) = inner.uplink.as_mut() else {
                continue;
            };
            let timestamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            if let Err(err) = pcap.write_packet(&PcapPacket::new(timestamp, len, &frame)) {
                warn!(%err, "could not write to the uplink capture; capture stopped");
                inner.uplink = None;
            }
        }
    }

    /// Feeds a frame into the PF switch as if it came from the wire.
    pub fn inject_uplink(&self, frame: &[u8]) {
        self.with(|engine, now| engine.handle_uplink(now, frame));
    }

    /// The port of VF `vf`, for its vhost-user backend.
    pub fn port(self: &Arc<Self>, vf: VfId) -> Arc<dyn VfPort> {
        Arc::new(VfHandle {
            vf,
            device: Arc::clone(self),
        })
    }

    /// Starts the thread that handles delay faults when they are due.
    pub fn spawn_timer(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let device = Arc::clone(self);
        std::thread::Builder::new()
            .name("vfrig-timer".into())
            .spawn(move || device.timer_loop())
    }

    fn timer_loop(&self) {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return;
            }
            let now = Instant::now();
            match inner.engine.poll_timeout() {
                Some(deadline) if deadline <= now => {
                    inner.engine.handle_timeout(now);
                    Self::after_input(&mut inner);
                }
                Some(deadline) => {
                    inner = self
                        .timer
                        .wait_timeout(inner, deadline - now)
                        .expect("device lock poisoned: a thread panicked while holding it")
                        .0;
                }
                None => {
                    inner = self
                        .timer
                        .wait(inner)
                        .expect("device lock poisoned: a thread panicked while holding it");
                }
            }
        }
    }

    /// Stops the timer thread.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.timer.notify_all();
    }
}

/// One VF's view of the device.
#[derive(Debug)]
struct VfHandle {
    vf: VfId,
    device: Arc<Device>,
}

impl VfPort for VfHandle {
    fn connected(&self, waker: Waker) {
        debug!(vf = %self.vf, "frontend connected");
        let mut inner = self.device.lock();
        if let Some(slot) = inner.wakers.get_mut(usize::from(self.vf.0)) {
            *slot = Some(waker);
        }
        inner.engine.connected(self.vf);
    }

    fn disconnected(&self) {
        debug!(vf = %self.vf, "frontend disconnected");
        self.device
            .with(|engine, now| engine.disconnected(now, self.vf));
        let mut inner = self.device.lock();
        if let Some(slot) = inner.wakers.get_mut(usize::from(self.vf.0)) {
            *slot = None;
        }
    }

    fn transmit(&self, pair: Pair, frame: &[u8]) {
        self.device.with(|engine, now| match pair {
            Pair::Mailbox => engine.handle_mailbox(now, self.vf, frame),
            Pair::Data => engine.handle_data(now, self.vf, frame),
        });
    }

    fn receive(&self, pair: Pair, capacity: usize) -> Option<Vec<u8>> {
        self.device.lock().engine.receive(self.vf, pair, capacity)
    }
}
