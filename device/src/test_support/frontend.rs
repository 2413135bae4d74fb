//! [`TestFrontend`]: plays QEMU against a VF's vhost-user socket.
//!
//! It owns 16 MiB of memfd-backed guest memory at [`GUEST_BASE`], negotiates
//! like QEMU does (SET_OWNER, features, protocol features, GET_QUEUE_NUM,
//! SET_MEM_TABLE, then NUM/BASE/ADDR/KICK/CALL/ENABLE per queue) and drives
//! the split rings from the driver side: four, or the data pair's two with
//! [`QueueLayout::DataOnly`] (QEMU's `queues=1`, `mq=off`). Every request asks for a reply
//! (REPLY_ACK), so a backend error surfaces as a [`FrontendError::Vhost`]
//! naming the step.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::ring::{BufferPool, Completed, DriverQueue, Kind, RawDesc, MAX_RING_SIZE, RING_STRIDE};
use crate::vhost::virtio_net::{NET_HDR_LEN, NUM_QUEUES, RX_NET_HDR};
use crate::vhost::{Pair, QueueLayout};

/// Guest-physical address where the test frontend's memory starts. Address 0
/// and everything below are outside guest memory.
pub const GUEST_BASE: u64 = 0x10_0000;

/// Size of the test frontend's guest memory.
pub const GUEST_SIZE: usize = 16 << 20;

/// What the test frontend asks for and how long it waits.
#[derive(Debug, Clone)]
pub struct FrontendOptions {
    /// How long to wait for the socket, a reply or a used buffer.
    pub timeout: Duration,
    /// Ack VIRTIO_RING_F_EVENT_IDX if offered.
    pub event_idx: bool,
    /// Ring size of every queue (a power of two, at most 1024).
    pub queue_size: u16,
    /// The queues to set up, and so the features to ask for: with
    /// [`QueueLayout::DataOnly`] the frontend plays QEMU with `queues=1` and
    /// `mq=off`: it does not need the MQ protocol feature, asks GET_QUEUE_NUM
    /// only if the backend offers it, and never acks VIRTIO_NET_F_MQ.
    pub layout: QueueLayout,
}

impl Default for FrontendOptions {
    fn default() -> Self {
        FrontendOptions {
            timeout: super::scaled(Duration::from_secs(10)),
            event_idx: true,
            queue_size: 256,
            layout: QueueLayout::DataAndMailbox,
        }
    }
}

/// Where a queue's split ring lives in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring (flags, idx, ring[], used_event).
    pub avail: u64,
    /// Used ring (flags, idx, ring[], avail_event).
    pub used: u64,
}

/// What the backend offered and what was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// GET_FEATURES.
    pub offered_features: u64,
    /// SET_FEATURES.
    pub features: u64,
    /// GET_PROTOCOL_FEATURES.
    pub offered_protocol_features: VhostUserProtocolFeatures,
    /// SET_PROTOCOL_FEATURES.
    pub protocol_features: VhostUserProtocolFeatures,
    /// GET_QUEUE_NUM; 0 when not asked (the backend offers no MQ protocol
    /// feature).
    pub queue_num: u64,
}

/// What went wrong while playing the frontend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// The socket file never appeared.
    #[error(
        "vhost-user socket {} did not appear within {waited:?}; is a VfServer serving it?",
        path.display()
    )]
    NoSocket {
        /// The socket path.
        path: PathBuf,
        /// How long the frontend waited.
        waited: Duration,
    },
    /// The socket exists but refused connections until the deadline.
    #[error("cannot connect to vhost-user socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The last error.
        #[source]
        source: io::Error,
    },
    /// A vhost-user request failed or was refused by the backend.
    #[error("vhost-user {step} failed")]
    Vhost {
        /// The request ("SET_MEM_TABLE", "SET_VRING_ADDR 2", ...).
        step: String,
        /// The library's error.
        #[source]
        source: vhost::Error,
    },
    /// The backend does not offer a feature the frontend needs.
    #[error("backend does not offer {what} (offered {offered:#x})")]
    Missing {
        /// The feature.
        what: &'static str,
        /// What it offered.
        offered: u64,
    },
    /// GET_QUEUE_NUM reports too few queues.
    #[error("backend has {got} queues; the frontend needs {need}")]
    QueueNum {
        /// GET_QUEUE_NUM.
        got: u64,
        /// The queues of the frontend's layout.
        need: usize,
    },
    /// Setting up a resource (memfd, mapping, eventfd, epoll) failed.
    #[error("cannot set up the test frontend's {what}")]
    Setup {
        /// The resource.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Guest memory could not be mapped.
    #[error("cannot map the test frontend's guest memory")]
    Map(#[source] vm_memory::mmap::FromRangesError),
    /// A guest memory access of the frontend itself failed.
    #[error("guest memory access at {addr:#x} failed")]
    Memory {
        /// Guest-physical address.
        addr: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// No such queue: a VF has queues 0 to 3, or 0 and 1 without a mailbox.
    #[error("queue {queue} does not exist; this VF has queues 0 to {last}")]
    NoQueue {
        /// The index asked for.
        queue: usize,
        /// The last queue there is.
        last: usize,
    },
    /// Not enough free descriptors.
    #[error("queue {queue} has {free} free descriptors; {need} needed")]
    QueueFull {
        /// Queue index.
        queue: usize,
        /// Free descriptors.
        free: usize,
        /// Descriptors asked for.
        need: usize,
    },
    /// The buffer area of guest memory is used up.
    #[error(
        "guest memory for buffers is used up ({want} bytes wanted); post fewer or smaller buffers"
    )]
    OutOfGuestMemory {
        /// Bytes asked for.
        want: usize,
    },
    /// The device returned a chain the frontend did not post.
    #[error("device returned descriptor {id} on queue {queue}, which is not in flight")]
    UnknownUsed {
        /// Queue index.
        queue: usize,
        /// The used element's id.
        id: u32,
    },
    /// A receive buffer came back with a used length shorter than the
    /// header or longer than the buffer.
    #[error("receive buffer of {size} bytes on queue {queue} came back with used length {len}")]
    BadRxLength {
        /// Queue index.
        queue: usize,
        /// Used length.
        len: u32,
        /// The buffer's size.
        size: usize,
    },
    /// A receive buffer came back with a header other than "one buffer, no offloads".
    #[error("receive header on queue {queue} is {header:02x?}; expected {RX_NET_HDR:02x?}")]
    BadRxHeader {
        /// Queue index.
        queue: usize,
        /// The header written.
        header: [u8; NET_HDR_LEN],
    },
    /// Waiting ran out.
    #[error("timed out after {waited:?} waiting for {what}; {seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The state last seen.
        seen: String,
    },
}

/// The frontend side of one VF connection, with its guest memory and rings.
pub struct TestFrontend {
    frontend: Frontend,
    mem: GuestMemoryMmap,
    /// The frontend-process address of [`GUEST_BASE`], for SET_VRING_ADDR.
    host_base: u64,
    queues: Vec<DriverQueue>,
    pool: BufferPool,
    epoll: Epoll,
    negotiated: Negotiated,
    options: FrontendOptions,
    /// Frames received (header stripped) and not yet taken by `recv`.
    rx_ready: Vec<VecDeque<Vec<u8>>>,
}

impl fmt::Debug for TestFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestFrontend")
            .field("negotiated", &self.negotiated)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

fn vhost_step(step: impl Into<String>) -> impl FnOnce(vhost::Error) -> FrontendError {
    let step = step.into();
    move |source| FrontendError::Vhost { step, source }
}

impl TestFrontend {
    /// Connects to `socket` with default options and sets up all 4 queues.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self, FrontendError> {
        Self::connect_with(socket, FrontendOptions::default())
    }

    /// Connects to `socket`, waiting up to `options.timeout` for it to
    /// appear, negotiates and sets up the queues of `options.layout`.
    pub fn connect_with(
        socket: impl AsRef<Path>,
        options: FrontendOptions,
    ) -> Result<Self, FrontendError> {
        let num_queues = options.layout.num_queues();
        let stream = connect_stream(socket.as_ref(), options.timeout)?;
        let mut frontend = Frontend::from_stream(stream, num_queues as u64);
        frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);

        frontend.set_owner().map_err(vhost_step("SET_OWNER"))?;
        let offered_features = frontend
            .get_features()
            .map_err(vhost_step("GET_FEATURES"))?;
        let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered_features & protocol == 0 {
            return Err(FrontendError::Missing {
                what: "VHOST_USER_F_PROTOCOL_FEATURES",
                offered: offered_features,
            });
        }
        let offered_protocol_features = frontend
            .get_protocol_features()
            .map_err(vhost_step("GET_PROTOCOL_FEATURES"))?;
        let protocol_features = offered_protocol_features
            & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
        let mq = protocol_features.contains(VhostUserProtocolFeatures::MQ);
        if !mq && options.layout.has(Pair::Mailbox) {
            return Err(FrontendError::Missing {
                what: "VHOST_USER_PROTOCOL_F_MQ",
                offered: offered_protocol_features.bits(),
            });
        }
        frontend
            .set_protocol_features(protocol_features)
            .map_err(vhost_step("SET_PROTOCOL_FEATURES"))?;
        let queue_num = if mq {
            frontend
                .get_queue_num()
                .map_err(vhost_step("GET_QUEUE_NUM"))?
        } else {
            0
        };
        if mq && queue_num < num_queues as u64 {
            return Err(FrontendError::QueueNum {
                got: queue_num,
                need: num_queues,
            });
        }

        let mut wanted = options.layout.features();
        if !options.event_idx {
            wanted &= !(1 << VIRTIO_RING_F_EVENT_IDX);
        }
        let features = offered_features & wanted;
        frontend
            .set_features(features)
            .map_err(vhost_step("SET_FEATURES"))?;

        let mem = guest_memory()?;
        let region = mem
            .find_region(GuestAddress(GUEST_BASE))
            .expect("guest memory has its one region at GUEST_BASE");
        let info = VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(vhost_step("describing guest memory"))?;
        frontend
            .set_mem_table(&[info])
            .map_err(vhost_step("SET_MEM_TABLE"))?;

        let size = options.queue_size.clamp(1, MAX_RING_SIZE);
        let epoll = Epoll::new().map_err(|source| FrontendError::Setup {
            what: "epoll",
            source,
        })?;
        let mut queues = Vec::with_capacity(num_queues);
        for index in 0..num_queues {
            let base = GuestAddress(GUEST_BASE + RING_STRIDE * index as u64);
            let event_idx = features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
            let queue = DriverQueue::new(index, size, event_idx, base, &mem)?;
            let host = |gpa: GuestAddress| info.userspace_addr + (gpa.0 - GUEST_BASE);
            let config = VringConfigData {
                queue_max_size: size,
                queue_size: size,
                flags: 0,
                desc_table_addr: host(queue.desc),
                used_ring_addr: host(queue.used),
                avail_ring_addr: host(queue.avail),
                log_addr: None,
            };
            frontend
                .set_vring_num(index, size)
                .map_err(vhost_step(format!("SET_VRING_NUM {index}")))?;
            frontend
                .set_vring_base(index, 0)
                .map_err(vhost_step(format!("SET_VRING_BASE {index}")))?;
            frontend
                .set_vring_addr(index, &config)
                .map_err(vhost_step(format!("SET_VRING_ADDR {index}")))?;
            frontend
                .set_vring_kick(index, &queue.kick)
                .map_err(vhost_step(format!("SET_VRING_KICK {index}")))?;
            frontend
                .set_vring_call(index, &queue.call)
                .map_err(vhost_step(format!("SET_VRING_CALL {index}")))?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    queue.call.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, index as u64),
                )
                .map_err(|source| FrontendError::Setup {
                    what: "epoll registration",
                    source,
                })?;
            queues.push(queue);
        }
        for index in 0..num_queues {
            frontend
                .set_vring_enable(index, true)
                .map_err(vhost_step(format!("SET_VRING_ENABLE {index}")))?;
        }

        let buffers_start = GuestAddress(GUEST_BASE + RING_STRIDE * NUM_QUEUES as u64);
        let end = GuestAddress(GUEST_BASE + GUEST_SIZE as u64);
        Ok(TestFrontend {
            host_base: info.userspace_addr,
            frontend,
            mem,
            queues,
            pool: BufferPool::new(buffers_start, end),
            epoll,
            negotiated: Negotiated {
                offered_features,
                features,
                offered_protocol_features,
                protocol_features,
                queue_num,
            },
            options,
            rx_ready: vec![VecDeque::new(); num_queues],
        })
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// The frontend-process address of [`GUEST_BASE`] (what SET_MEM_TABLE
    /// and SET_VRING_ADDR carry).
    pub fn host_base(&self) -> u64 {
        self.host_base
    }

    /// Transmits `frame` on `pair`: a zeroed `virtio_net_hdr` in one
    /// descriptor and the frame in a second (none if the frame is empty),
    /// then waits until the device has used the chain.
    pub fn send(&mut self, pair: Pair, frame: &[u8]) -> Result<(), FrontendError> {
        let head = self.post_tx(pair, frame)?;
        self.wait_for_head(pair.tx_queue(), head, "a sent frame to be used")
            .map(|_| ())
    }

    /// Transmits every frame of `frames` on `pair` as [`send`](Self::send)
    /// does, but offers them all before waiting, as a driver with a burst to
    /// send would (the device is kicked only when it asks), then waits until
    /// the device has used them all.
    pub fn send_all(&mut self, pair: Pair, frames: &[&[u8]]) -> Result<(), FrontendError> {
        self.queue(pair.tx_queue())?;
        for frame in frames {
            self.post_tx(pair, frame)?;
        }
        let queue = pair.tx_queue();
        let start = Instant::now();
        let deadline = start + self.options.timeout;
        loop {
            while let Some(done) = self.queues[queue].poll_used(&self.mem)? {
                self.complete(queue, done)?;
            }
            if self.queues[queue].in_flight() == 0 {
                return Ok(());
            }
            if !self.wait_call(queue, deadline)? {
                return Err(FrontendError::Timeout {
                    what: format!("{} sent frames to be used on queue {queue}", frames.len()),
                    waited: start.elapsed(),
                    seen: format!("{} chains still in flight", self.queues[queue].in_flight()),
                });
            }
        }
    }

    /// Offers one transmit chain (header, then the frame) and returns its head.
    fn post_tx(&mut self, pair: Pair, frame: &[u8]) -> Result<u16, FrontendError> {
        self.queue(pair.tx_queue())?;
        let header = self.pool.alloc(NET_HDR_LEN)?;
        self.write(header.addr, &[0; NET_HDR_LEN])?;
        let mut descs = vec![RawDesc {
            addr: header.addr.0,
            len: NET_HDR_LEN as u32,
            device_writes: false,
        }];
        let mut buffers = vec![header];
        if !frame.is_empty() {
            let data = self.pool.alloc(frame.len())?;
            self.write(data.addr, frame)?;
            descs.push(RawDesc {
                addr: data.addr.0,
                len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
                device_writes: false,
            });
            buffers.push(data);
        }
        let queue = pair.tx_queue();
        self.queues[queue].add_chain(&self.mem, &descs, Kind::Send, buffers)
    }

    /// Offers `count` device-writable buffers of `size` bytes (header
    /// included) on the receive queue of `pair`.
    pub fn post_rx(&mut self, pair: Pair, count: usize, size: usize) -> Result<(), FrontendError> {
        let queue = pair.rx_queue();
        self.queue(queue)?;
        for _ in 0..count {
            let buffer = self.pool.alloc(size)?;
            let desc = RawDesc {
                addr: buffer.addr.0,
                len: u32::try_from(size).unwrap_or(u32::MAX),
                device_writes: true,
            };
            self.queues[queue].add_chain(&self.mem, &[desc], Kind::Rx, vec![buffer])?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next frame on the receive queue of
    /// `pair`; returns it without its header, or `None` if none came. The
    /// header must be the backend's (zeroed, num_buffers = 1).
    pub fn recv(
        &mut self,
        pair: Pair,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, FrontendError> {
        let queue = pair.rx_queue();
        self.queue(queue)?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(done) = self.queues[queue].poll_used(&self.mem)? {
                self.complete(queue, done)?;
            }
            if let Some(frame) = self.rx_ready[queue].pop_front() {
                return Ok(Some(frame));
            }
            if !self.wait_call(queue, deadline)? {
                return Ok(None);
            }
        }
    }

    /// Offers a chain built by hand on any queue (a bad address, a
    /// device-writable descriptor on a transmit queue, a chain too short for
    /// the header, ...) and waits until the device returns it; gives the
    /// used length. Buffers it points at are the caller's (see
    /// [`alloc`](Self::alloc)).
    pub fn send_raw_chain(
        &mut self,
        queue: usize,
        descs: &[RawDesc],
    ) -> Result<u32, FrontendError> {
        let last = self.queues.len().saturating_sub(1);
        let Some(q) = self.queues.get_mut(queue) else {
            return Err(FrontendError::NoQueue { queue, last });
        };
        let head = q.add_chain(&self.mem, descs, Kind::Raw, Vec::new())?;
        self.wait_for_head(queue, head, "a raw chain to be used")
    }

    /// Reserves `len` bytes of guest memory (never freed) and fills them with
    /// `fill`; gives the guest-physical address, for raw chains.
    pub fn alloc(&mut self, len: usize, fill: &[u8]) -> Result<u64, FrontendError> {
        let buffer = self.pool.alloc(len)?;
        let mut bytes = fill.to_vec();
        bytes.resize(len, 0);
        self.write(buffer.addr, &bytes)?;
        Ok(buffer.addr.0)
    }

    /// Reads guest memory.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, FrontendError> {
        let mut bytes = vec![0; len];
        self.mem
            .read_slice(&mut bytes, GuestAddress(addr))
            .map_err(|source| FrontendError::Memory { addr, source })?;
        Ok(bytes)
    }

    /// Writes guest memory, to corrupt a ring or a buffer on purpose.
    pub fn write_guest(&self, addr: u64, bytes: &[u8]) -> Result<(), FrontendError> {
        self.write(GuestAddress(addr), bytes)
    }

    /// Guest-physical addresses of the descriptor table, the available ring
    /// and the used ring of `queue`.
    pub fn ring(&self, queue: usize) -> Result<RingAddrs, FrontendError> {
        let q = self.queue(queue)?;
        Ok(RingAddrs {
            desc: q.desc.0,
            avail: q.avail.0,
            used: q.used.0,
        })
    }

    /// Kicks `queue` whether or not the device asked for it.
    pub fn kick(&self, queue: usize) -> Result<(), FrontendError> {
        self.queue(queue)?
            .kick
            .write(1)
            .map_err(|source| FrontendError::Setup {
                what: "kick",
                source,
            })
    }

    /// VIRTIO_RING_F_EVENT_IDX: the `avail_event` the device wrote in the
    /// used ring of `queue` (where it wants the next kick).
    pub fn avail_event(&self, queue: usize) -> Result<u16, FrontendError> {
        self.queue(queue)?.avail_event(&self.mem)
    }

    /// How many chains the frontend has offered on `queue` so far.
    pub fn avail_idx(&self, queue: usize) -> Result<u16, FrontendError> {
        Ok(self.queue(queue)?.avail_idx())
    }

    /// Kicks the frontend has sent on `queue` (it skips those the device
    /// did not ask for).
    pub fn kicks(&self, queue: usize) -> Result<usize, FrontendError> {
        Ok(self.queue(queue)?.kicks())
    }

    /// Chains offered on `queue` that the device has not returned.
    pub fn in_flight(&self, queue: usize) -> Result<usize, FrontendError> {
        Ok(self.queue(queue)?.in_flight())
    }

    /// The raw vhost-user connection, for tests that send requests of their
    /// own (a second SET_OWNER, GET_VRING_BASE, ...).
    pub fn vhost(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    /// Closes the connection, as QEMU does when the VM goes away.
    pub fn disconnect(self) {
        drop(self);
    }

    fn queue(&self, queue: usize) -> Result<&DriverQueue, FrontendError> {
        self.queues.get(queue).ok_or(FrontendError::NoQueue {
            queue,
            last: self.queues.len().saturating_sub(1),
        })
    }

    fn write(&self, addr: GuestAddress, bytes: &[u8]) -> Result<(), FrontendError> {
        self.mem
            .write_slice(bytes, addr)
            .map_err(|source| FrontendError::Memory {
                addr: addr.0,
                source,
            })
    }

    /// Handles one returned chain: frees its buffers and keeps a received
    /// frame for `recv`.
    fn complete(&mut self, queue: usize, done: Completed) -> Result<(), FrontendError> {
        let frame = match done.kind {
            Kind::Raw | Kind::Send => None,
            Kind::Rx => {
                let buffer = done.buffers.first().copied();
                let len = done.len as usize;
                match buffer {
                    Some(b) if len >= NET_HDR_LEN && len <= b.len => {
                        let bytes = self.read(b.addr.0, len)?;
                        let mut header = [0; NET_HDR_LEN];
                        header.copy_from_slice(&bytes[..NET_HDR_LEN]);
                        if header != RX_NET_HDR {
                            return Err(FrontendError::BadRxHeader { queue, header });
                        }
                        Some(bytes[NET_HDR_LEN..].to_vec())
                    }
                    _ => {
                        return Err(FrontendError::BadRxLength {
                            queue,
                            len: done.len,
                            size: buffer.map_or(0, |b| b.len),
                        })
                    }
                }
            }
        };
        for buffer in done.buffers {
            self.pool.free(buffer);
        }
        if let Some(frame) = frame {
            self.rx_ready[queue].push_back(frame);
        }
        Ok(())
    }

    /// Waits until the chain `head` on `queue` comes back; gives its used
    /// length. Frames received meanwhile are kept for `recv`.
    fn wait_for_head(&mut self, queue: usize, head: u16, what: &str) -> Result<u32, FrontendError> {
        let start = Instant::now();
        let deadline = start + self.options.timeout;
        loop {
            while let Some(done) = self.queues[queue].poll_used(&self.mem)? {
                let (got, len) = (done.head, done.len);
                self.complete(queue, done)?;
                if got == head {
                    return Ok(len);
                }
            }
            if !self.wait_call(queue, deadline)? {
                return Err(FrontendError::Timeout {
                    what: format!("{what} on queue {queue}"),
                    waited: start.elapsed(),
                    seen: format!(
                        "{} chains still in flight, avail_idx {}",
                        self.queues[queue].in_flight(),
                        self.queues[queue].avail_idx()
                    ),
                });
            }
        }
    }

    /// Arms the interrupt of `queue` and waits for any call until
    /// `deadline`; false once the deadline has passed. Call eventfds are
    /// emptied; the caller re-reads the used ring either way.
    fn wait_call(&mut self, queue: usize, deadline: Instant) -> Result<bool, FrontendError> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        self.queues[queue].arm_call(&self.mem)?;
        // A used entry added before the arm would not interrupt.
        if self.queues[queue].poll_used_pending(&self.mem)? {
            return Ok(true);
        }
        let millis = (deadline - now).as_millis().clamp(1, i32::MAX as u128);
        let mut events = [EpollEvent::default(); NUM_QUEUES];
        match self.epoll.wait(millis as i32, &mut events) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(FrontendError::Setup {
                    what: "epoll wait",
                    source,
                })
            }
        }
        for q in &self.queues {
            q.drain_call();
        }
        Ok(true)
    }
}

/// Waits for `path` to exist, then connects, retrying while the listener is
/// being replaced (`ENOENT`, `ECONNREFUSED`) until `timeout`.
fn connect_stream(path: &Path, timeout: Duration) -> Result<UnixStream, FrontendError> {
    let start = Instant::now();
    let mut last = None;
    loop {
        if path.exists() {
            match UnixStream::connect(path) {
                Ok(stream) => return Ok(stream),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    last = Some(err)
                }
                Err(source) => {
                    return Err(FrontendError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        if start.elapsed() >= timeout {
            return Err(match last {
                Some(source) => FrontendError::Connect {
                    path: path.to_path_buf(),
                    source,
                },
                None => FrontendError::NoSocket {
                    path: path.to_path_buf(),
                    waited: start.elapsed(),
                },
            });
        }
        // Polling a path has no event to wait on; the deadline bounds it.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 16 MiB of memfd-backed memory at [`GUEST_BASE`], shareable with the backend.
fn guest_memory() -> Result<GuestMemoryMmap, FrontendError> {
    let fd = nix::sys::memfd::memfd_create("vfrig-guest", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|errno| FrontendError::Setup {
        what: "memfd",
        source: io::Error::from(errno),
    })?;
    let file = File::from(fd);
    file.set_len(GUEST_SIZE as u64)
        .map_err(|source| FrontendError::Setup {
            what: "memfd size",
            source,
        })?;
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(GUEST_BASE),
        GUEST_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .map_err(FrontendError::Map)
}
