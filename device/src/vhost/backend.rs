//! [`VfBackend`]: one connection's virtio-net queues, moving frames between
//! the rings and a [`VfPort`].
//!
//! The vring worker thread of `vhost-user-backend` calls
//! [`VhostUserBackendMut::handle_event`] with the queue index of a kick, with
//! [`WAKER_EVENT`] when the port's [`Waker`](super::Waker) fires, and once
//! more per queue after SET_VRING_ENABLE (such calls may find no work).
//! `handle_event` never returns `Err`: the library would end the worker
//! thread and the VF would silently stop. Guest mistakes are logged with
//! `warn!` and the chain goes back with length 0.
//!
//! The backend has the queues of its [`QueueLayout`] and no others: with
//! [`QueueLayout::DataOnly`] there is no mailbox pair, so no event or wake-up
//! ever reaches the port's mailbox.

use std::io;
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringState, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{read_tx_frame, RxBuffer};
use super::virtio_net::{max_frame, QueueLayout, MAX_QUEUE_SIZE, NUM_QUEUES};
use super::{Pair, VfPort};
use crate::pf::VfId;

/// The epoll data value of the waker's eventfd. `vhost-user-backend`
/// reserves `0..=num_queues` (the queues, then its exit and vring-enable
/// events), so listeners start above it; [`NUM_QUEUES`] is the most queues
/// any layout has.
pub const WAKER_EVENT: u16 = NUM_QUEUES as u16 + 1;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// The guest memory as one call sees it.
type MemGuard = vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>;

/// One connection's backend. Built fresh for every frontend; everything that
/// outlives a connection lives in the port.
pub struct VfBackend {
    vf: VfId,
    layout: QueueLayout,
    port: Arc<dyn VfPort>,
    mem: Mem,
    waker: Arc<EventFd>,
    exit: Mutex<Option<(EventConsumer, EventNotifier)>>,
    acked_features: u64,
}

impl std::fmt::Debug for VfBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfBackend")
            .field("vf", &self.vf)
            .field("layout", &self.layout)
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .finish_non_exhaustive()
    }
}

/// Why a pass over a queue stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The port has nothing (that fits) for the VF (receive queues only).
    PortEmpty,
    /// The VF has no more chains on the ring: all transmit chains were
    /// taken, or frames may wait but no receive buffer is left.
    OutOfBuffers,
    /// The ring itself is unusable (its addresses are outside guest memory).
    Broken,
}

impl VfBackend {
    /// A backend for `vf` with the queues of `layout`, over `mem` (the
    /// daemon's memory, empty until SET_MEM_TABLE). `waker` is the eventfd
    /// registered as [`WAKER_EVENT`]; `exit` is handed to the library as the
    /// vring worker's exit event.
    pub fn new(
        vf: VfId,
        layout: QueueLayout,
        port: Arc<dyn VfPort>,
        mem: Mem,
        waker: Arc<EventFd>,
        exit: (EventConsumer, EventNotifier),
    ) -> Self {
        VfBackend {
            vf,
            layout,
            port,
            mem,
            waker,
            exit: Mutex::new(Some(exit)),
            acked_features: 0,
        }
    }

    /// Sends the VF's transmit chains on `pair` to the port.
    fn process_tx(&self, pair: Pair, vring: &VringRwLock) {
        self.run_queue(pair.tx_queue(), vring, |state, mem| {
            self.drain_tx(pair, state, mem)
        });
    }

    /// Fills the VF's receive buffers on `pair` with frames from the port.
    fn deliver(&self, pair: Pair, vring: &VringRwLock) {
        self.run_queue(pair.rx_queue(), vring, |state, mem| {
            self.fill_rx(pair, state, mem)
        });
    }

    /// Runs `pass` over a live queue with notifications off, signals what it
    /// used, and turns notifications back on (EVENT_IDX-style). A pass that
    /// ran the VF's chains dry is repeated if more arrived meanwhile: chains
    /// posted while notifications were off would otherwise wait for a kick
    /// that never comes. A repeat that finds nothing is a runaway avail index.
    fn run_queue(
        &self,
        queue: usize,
        vring: &VringRwLock,
        mut pass: impl FnMut(&mut VringState<Mem>, &MemGuard) -> (usize, Stop),
    ) {
        let mut state = vring.get_mut();
        if !is_live(&state) {
            return;
        }
        let mem = self.mem.memory();
        let mut rechecked = false;
        loop {
            if let Err(err) = state.disable_notification() {
                self.broken_ring(queue, &err);
                return;
            }
            let (used, stop) = pass(&mut state, &mem);
            self.signal(queue, &mut state, used);
            if rechecked && used == 0 && stop == Stop::OutOfBuffers {
                self.runaway_avail(queue);
                return;
            }
            match (stop, state.enable_notification()) {
                (Stop::OutOfBuffers, Ok(true)) => rechecked = true,
                (Stop::Broken, _) => return,
                (_, Ok(_)) => return,
                (_, Err(err)) => {
                    self.broken_ring(queue, &err);
                    return;
                }
            }
        }
    }

    /// Passes every available transmit chain to the port; returns how many
    /// chains went to the used ring, and why it stopped.
    fn drain_tx(&self, pair: Pair, state: &mut VringState<Mem>, mem: &MemGuard) -> (usize, Stop) {
        let queue = pair.tx_queue();
        let mut used = 0;
        while let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&**mem) {
            let head = chain.head_index();
            match read_tx_frame(&**mem, chain, max_frame(pair)) {
                Ok(frame) => {
                    tracing::trace!(queue, head, len = frame.len(), "transmit");
                    self.port.transmit(pair, &frame);
                }
                Err(err) => {
                    tracing::warn!(
                        vf = self.vf.0, queue, head, error = %err,
                        "malformed transmit chain; passing an empty frame and returning it with length 0"
                    );
                    self.port.transmit(pair, &[]);
                }
            }
            if let Err(err) = state.add_used(head, 0) {
                self.broken_ring(queue, &err);
                return (used, Stop::Broken);
            }
            used += 1;
        }
        (used, Stop::OutOfBuffers)
    }

    /// Moves frames into available receive chains until the port or the
    /// ring runs dry; returns how many chains went to the used ring.
    fn fill_rx(&self, pair: Pair, state: &mut VringState<Mem>, mem: &MemGuard) -> (usize, Stop) {
        let queue = pair.rx_queue();
        let mut used = 0;
        loop {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&**mem) else {
                return (used, Stop::OutOfBuffers);
            };
            let head = chain.head_index();
            let len = match RxBuffer::new(&**mem, chain, max_frame(pair)) {
                Err(err) => {
                    tracing::warn!(
                        vf = self.vf.0, queue, head, error = %err,
                        "malformed receive chain; returning it with length 0"
                    );
                    0
                }
                Ok(buffer) => match self.port.receive(pair, buffer.capacity()) {
                    None => {
                        // Keep the buffer for the next frame.
                        state.get_queue_mut().go_to_previous_position();
                        return (used, Stop::PortEmpty);
                    }
                    Some(frame) if frame.len() > buffer.capacity() => {
                        tracing::warn!(
                            vf = self.vf.0, queue, len = frame.len(), capacity = buffer.capacity(),
                            "port returned a frame larger than the buffer it was offered; dropping it"
                        );
                        state.get_queue_mut().go_to_previous_position();
                        continue;
                    }
                    Some(frame) => match buffer.write(&**mem, &frame) {
                        Ok(len) => {
                            tracing::trace!(queue, head, len = frame.len(), "receive");
                            len
                        }
                        Err(err) => {
                            tracing::warn!(
                                vf = self.vf.0, queue, head, error = %err,
                                "receive chain became unwritable; frame dropped"
                            );
                            0
                        }
                    },
                },
            };
            if let Err(err) = state.add_used(head, len) {
                self.broken_ring(queue, &err);
                return (used, Stop::Broken);
            }
            used += 1;
        }
    }

    /// Interrupts the VF after `used` new used entries, if the ring asks for
    /// it (VIRTIO_RING_F_EVENT_IDX: only when `used_event` was passed).
    fn signal(&self, queue: usize, state: &mut VringState<Mem>, used: usize) {
        if used == 0 {
            return;
        }
        match state.needs_notification() {
            Ok(false) => {}
            Ok(true) => {
                if let Err(err) = state.signal_used_queue() {
                    tracing::warn!(vf = self.vf.0, queue, %err, "could not signal the used queue");
                }
            }
            Err(err) => self.broken_ring(queue, &err),
        }
    }

    fn broken_ring(&self, queue: usize, err: &virtio_queue::Error) {
        tracing::warn!(
            vf = self.vf.0, queue, error = %err,
            "virtqueue rings are not usable; ignoring the queue until the frontend fixes them"
        );
    }

    /// The avail index says chains are waiting that the ring does not give
    /// (an index more than a ring ahead, or unreadable entries). Stop rather
    /// than spin; the next kick tries again.
    fn runaway_avail(&self, queue: usize) {
        tracing::warn!(
            vf = self.vf.0,
            queue,
            "available ring index runs ahead of the chains the ring holds; ignoring the queue until the next kick"
        );
    }

    /// Resets the waker's eventfd so epoll stops reporting it.
    fn drain_waker(&self) {
        match self.waker.read() {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => tracing::warn!(vf = self.vf.0, %err, "could not reset the waker eventfd"),
        }
    }
}

/// Whether the frontend has set the ring up (kick received) and enabled it.
fn is_live(state: &VringState<Mem>) -> bool {
    state.get_queue().ready() && state.is_enabled()
}

impl VhostUserBackendMut for VfBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.layout.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.layout.features()
    }

    fn acked_features(&mut self, features: u64) {
        tracing::debug!(
            vf = self.vf.0,
            features = format_args!("{features:#x}"),
            "features acked"
        );
        self.acked_features = features;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.layout.protocol_features()
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The library sets it on each ring's queue, which is what
        // enable/disable/needs_notification consult.
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = mem;
        Ok(())
    }

    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Called once, for the one worker thread (queues_per_thread is the
        // default single mask). Without an exit event, dropping the daemon
        // would wait for the worker forever.
        let exit = self
            .exit
            .lock()
            .expect("exit event lock poisoned: a thread panicked holding it")
            .take();
        if exit.is_none() {
            tracing::error!(vf = self.vf.0, thread_index, "exit event asked for twice");
        }
        exit
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let _span = tracing::debug_span!("vf", id = self.vf.0).entered();
        tracing::trace!(device_event, "vring worker event");
        let layout = self.layout;
        let vring = |pair: Pair, tx: bool| {
            let index = if tx { pair.tx_queue() } else { pair.rx_queue() };
            vrings.get(index).filter(|_| layout.has(pair))
        };
        if device_event == WAKER_EVENT {
            self.drain_waker();
            for pair in [Pair::Mailbox, Pair::Data] {
                if let Some(rx) = vring(pair, false) {
                    self.deliver(pair, rx);
                }
            }
            return Ok(());
        }
        let Some((pair, is_tx)) = layout.pair_of_queue(usize::from(device_event)) else {
            tracing::warn!(
                vf = self.vf.0,
                device_event,
                "event for no known queue or listener"
            );
            return Ok(());
        };
        if is_tx {
            if let Some(tx) = vring(pair, true) {
                self.process_tx(pair, tx);
            }
        }
        // New receive buffers, or a reply the port produced at once.
        if let Some(rx) = vring(pair, false) {
            self.deliver(pair, rx);
        }
        Ok(())
    }
}
