//! The seam between a VF's vhost-user backend (the I/O shell) and the device
//! model behind it.
//!
//! The backend moves bytes between virtqueues and a [`VfPort`]; it knows
//! nothing about virtchnl, filters or faults. The port knows nothing about
//! virtqueues. Tests plug in a loopback port; the daemon plugs in the PF.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// A VF's two queue pairs. virtio-net numbers queues rx0, tx0, rx1, tx1:
/// [`Pair::Data`] is queues 0 (rx) and 1 (tx), [`Pair::Mailbox`] is queues 2
/// (rx: PF-to-VF completions and events, like AVF's ARQ) and 3 (tx: VF-to-PF
/// requests, like AVF's ATQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pair {
    /// Ethernet frames through the PF switch.
    Data,
    /// virtchnl frames to and from the PF.
    Mailbox,
}

impl Pair {
    /// The pair a queue index belongs to, and whether it is the VF's transmit queue.
    pub fn of_queue(index: usize) -> Option<(Pair, bool)> {
        match index {
            0 => Some((Pair::Data, false)),
            1 => Some((Pair::Data, true)),
            2 => Some((Pair::Mailbox, false)),
            3 => Some((Pair::Mailbox, true)),
            _ => None,
        }
    }

    /// The VF's receive queue index of this pair.
    pub fn rx_queue(self) -> usize {
        match self {
            Pair::Data => 0,
            Pair::Mailbox => 2,
        }
    }

    /// The VF's transmit queue index of this pair.
    pub fn tx_queue(self) -> usize {
        self.rx_queue() + 1
    }
}

/// Wakes a VF's backend so it delivers frames that are waiting for the VF.
///
/// Cloned into the port on every connection; waking a backend that has gone
/// away is harmless.
#[derive(Debug, Clone)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Wraps the eventfd the backend listens on.
    pub fn new(fd: Arc<EventFd>) -> Self {
        Waker(fd)
    }

    /// Asks the backend to call [`VfPort::receive`] again soon.
    pub fn wake(&self) {
        if let Err(err) = self.0.write(1) {
            tracing::warn!(%err, "could not wake a VF backend");
        }
    }
}

/// The device side of one VF, as its vhost-user backend sees it.
///
/// Shared between threads: every VF's backend runs on its own thread, and
/// other VFs' traffic, timers and the control socket reach the same device.
/// Frames are virtio-net payloads without the `virtio_net_hdr`, which the
/// backend strips on transmit and writes on receive.
pub trait VfPort: Send + Sync + 'static {
    /// A frontend connected; `waker` reaches this connection's backend.
    fn connected(&self, waker: Waker);

    /// The frontend went away (a VM reboot or a hot-unplug). A later
    /// connection is a fresh VF: the device treats it like a VF reset.
    fn disconnected(&self);

    /// The VF transmitted `frame` on `pair` (the readable bytes of one
    /// descriptor chain after the header). An unreadable chain is passed as an
    /// empty frame, so the device can answer it (the PF replies ERR_PARAM).
    fn transmit(&self, pair: Pair, frame: &[u8]);

    /// Takes the next frame waiting for the VF on `pair` that fits in
    /// `capacity` bytes, or `None` when nothing waits. The port decides what
    /// to do with a frame that can never fit (drop it and count it).
    fn receive(&self, pair: Pair, capacity: usize) -> Option<Vec<u8>>;
}
