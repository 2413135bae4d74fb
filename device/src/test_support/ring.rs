//! The driver side of a split virtqueue (virtio 1.x §2.7), as the test
//! frontend lays it out in its guest memory, plus a small allocator for the
//! buffers chains point at.
//!
//! All accesses go through vm-memory; the rings are little-endian.

use std::collections::{BTreeMap, HashMap};
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

use super::frontend::FrontendError;

/// Guest memory reserved for one queue's rings: enough for 1024 entries.
pub(crate) const RING_STRIDE: u64 = 32 * 1024;

/// The largest queue the frontend lays out.
pub(crate) const MAX_RING_SIZE: u16 = 1024;

/// One descriptor of a chain built by hand (see
/// [`TestFrontend::send_raw_chain`](super::TestFrontend::send_raw_chain)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest-physical address; may lie outside guest memory on purpose.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// VRING_DESC_F_WRITE: the device writes this buffer.
    pub device_writes: bool,
}

/// A piece of guest memory owned by the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buffer {
    pub addr: GuestAddress,
    pub len: usize,
    class: u64,
}

/// What a chain in flight was posted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A frame sent with `send`.
    Send,
    /// An empty buffer posted with `post_rx`.
    Rx,
    /// A chain built with `send_raw_chain`.
    Raw,
}

/// A chain the device returned.
#[derive(Debug)]
pub(crate) struct Completed {
    pub head: u16,
    pub len: u32,
    pub kind: Kind,
    pub buffers: Vec<Buffer>,
}

#[derive(Debug)]
struct InFlight {
    descs: Vec<u16>,
    kind: Kind,
    buffers: Vec<Buffer>,
}

/// The driver's view of one split virtqueue.
#[derive(Debug)]
pub(crate) struct DriverQueue {
    pub index: usize,
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub kick: EventFd,
    pub call: EventFd,
    /// VIRTIO_RING_F_EVENT_IDX was negotiated.
    event_idx: bool,
    kicks: usize,
    avail_idx: Wrapping<u16>,
    used_seen: Wrapping<u16>,
    free: Vec<u16>,
    in_flight: HashMap<u16, InFlight>,
}

fn mem_err(addr: GuestAddress) -> impl FnOnce(vm_memory::GuestMemoryError) -> FrontendError {
    move |source| FrontendError::Memory {
        addr: addr.0,
        source,
    }
}

fn at(base: GuestAddress, offset: u64) -> GuestAddress {
    // The rings live in the first RING_STRIDE * 4 bytes above a small base.
    GuestAddress(base.0 + offset)
}

impl DriverQueue {
    /// Lays out an empty ring of `size` entries at `base` (RING_STRIDE bytes).
    pub fn new(
        index: usize,
        size: u16,
        event_idx: bool,
        base: GuestAddress,
        mem: &GuestMemoryMmap,
    ) -> Result<Self, FrontendError> {
        let size64 = u64::from(size);
        let desc = base;
        let avail = at(base, 16 * size64);
        // The used ring is 4-aligned; page-align it as QEMU does.
        let used = at(base, (16 * size64 + 6 + 2 * size64).next_multiple_of(4096));
        let zeros = vec![0u8; RING_STRIDE as usize];
        mem.write_slice(&zeros, base).map_err(mem_err(base))?;
        let eventfd = |what| {
            EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)
                .map_err(|source| FrontendError::Setup { what, source })
        };
        Ok(DriverQueue {
            index,
            size,
            desc,
            avail,
            used,
            kick: eventfd("kick eventfd")?,
            call: eventfd("call eventfd")?,
            event_idx,
            kicks: 0,
            avail_idx: Wrapping(0),
            used_seen: Wrapping(0),
            free: (0..size).rev().collect(),
            in_flight: HashMap::new(),
        })
    }

    /// Writes `descs` as one chain, makes it available and kicks the device
    /// if it asked for kicks (virtio 1.x §2.7.10: `avail_event` with
    /// VIRTIO_RING_F_EVENT_IDX, else VRING_USED_F_NO_NOTIFY), as a guest
    /// driver does; a device that forgets to re-enable notifications stalls.
    pub fn add_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[RawDesc],
        kind: Kind,
        buffers: Vec<Buffer>,
    ) -> Result<u16, FrontendError> {
        if descs.is_empty() || descs.len() > self.free.len() {
            return Err(FrontendError::QueueFull {
                queue: self.index,
                free: self.free.len(),
                need: descs.len().max(1),
            });
        }
        let split = self.free.len() - descs.len();
        let mut ids = self.free.split_off(split);
        ids.reverse();
        for (n, desc) in descs.iter().enumerate() {
            let mut flags = 0u16;
            if desc.device_writes {
                flags |= VRING_DESC_F_WRITE as u16;
            }
            let next = ids.get(n + 1).copied();
            if next.is_some() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&desc.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&desc.len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
            let addr = at(self.desc, 16 * u64::from(ids[n]));
            mem.write_slice(&raw, addr).map_err(mem_err(addr))?;
        }
        let head = ids[0];
        let slot = at(self.avail, 4 + 2 * u64::from(self.avail_idx.0 % self.size));
        mem.write_slice(&head.to_le_bytes(), slot)
            .map_err(mem_err(slot))?;
        let old = self.avail_idx;
        self.avail_idx += 1;
        let idx = at(self.avail, 2);
        mem.store(self.avail_idx.0.to_le(), idx, Ordering::Release)
            .map_err(mem_err(idx))?;
        // Publish the index before reading what the device asked for; the
        // device does the converse in enable_notification.
        fence(Ordering::SeqCst);
        let kick = if self.event_idx {
            // vring_need_event(avail_event, new, old)
            let event = Wrapping(self.avail_event(mem)?);
            self.avail_idx - event - Wrapping(1) < self.avail_idx - old
        } else {
            let flags: u16 = mem
                .load(self.used, Ordering::Acquire)
                .map_err(mem_err(self.used))?;
            u16::from_le(flags) & VRING_USED_F_NO_NOTIFY as u16 == 0
        };
        self.in_flight.insert(
            head,
            InFlight {
                descs: ids,
                kind,
                buffers,
            },
        );
        if kick {
            self.kicks += 1;
            self.kick.write(1).map_err(|source| FrontendError::Setup {
                what: "kick",
                source,
            })?;
        }
        Ok(head)
    }

    /// Takes the next chain the device returned, if any.
    pub fn poll_used(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Completed>, FrontendError> {
        let idx_addr = at(self.used, 2);
        let idx: u16 = mem
            .load(idx_addr, Ordering::Acquire)
            .map_err(mem_err(idx_addr))?;
        if u16::from_le(idx) == self.used_seen.0 {
            return Ok(None);
        }
        let elem = at(self.used, 4 + 8 * u64::from(self.used_seen.0 % self.size));
        let mut raw = [0u8; 8];
        mem.read_slice(&mut raw, elem).map_err(mem_err(elem))?;
        self.used_seen += 1;
        let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let flight = u16::try_from(id)
            .ok()
            .and_then(|head| self.in_flight.remove(&head).map(|f| (head, f)));
        let Some((head, flight)) = flight else {
            return Err(FrontendError::UnknownUsed {
                queue: self.index,
                id,
            });
        };
        self.free.extend(flight.descs);
        Ok(Some(Completed {
            head,
            len,
            kind: flight.kind,
            buffers: flight.buffers,
        }))
    }

    /// Whether the device has returned chains not yet taken.
    pub fn poll_used_pending(&self, mem: &GuestMemoryMmap) -> Result<bool, FrontendError> {
        let idx_addr = at(self.used, 2);
        let idx: u16 = mem
            .load(idx_addr, Ordering::Acquire)
            .map_err(mem_err(idx_addr))?;
        Ok(u16::from_le(idx) != self.used_seen.0)
    }

    /// VIRTIO_RING_F_EVENT_IDX: asks for an interrupt on the next used entry.
    pub fn arm_call(&self, mem: &GuestMemoryMmap) -> Result<(), FrontendError> {
        let used_event = at(self.avail, 4 + 2 * u64::from(self.size));
        mem.store(self.used_seen.0.to_le(), used_event, Ordering::Release)
            .map_err(mem_err(used_event))
    }

    /// VIRTIO_RING_F_EVENT_IDX: the avail index after which the device wants
    /// a kick (`avail_event` at the end of the used ring).
    pub fn avail_event(&self, mem: &GuestMemoryMmap) -> Result<u16, FrontendError> {
        let addr = at(self.used, 4 + 8 * u64::from(self.size));
        mem.load(addr, Ordering::Acquire)
            .map(u16::from_le)
            .map_err(mem_err(addr))
    }

    /// The driver's next avail index (how many chains it has offered).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx.0
    }

    /// Kicks sent so far.
    pub fn kicks(&self) -> usize {
        self.kicks
    }

    /// Chains offered and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Empties a kick or call eventfd that may have fired.
    pub fn drain_call(&self) {
        // Non-blocking: WouldBlock just means nothing was signalled.
        let _ = self.call.read();
    }
}

/// Hands out guest buffers from `[start, end)`; sizes are rounded up to a
/// power of two and recycled per size.
#[derive(Debug)]
pub(crate) struct BufferPool {
    next: u64,
    end: u64,
    free: BTreeMap<u64, Vec<u64>>,
}

impl BufferPool {
    pub fn new(start: GuestAddress, end: GuestAddress) -> Self {
        BufferPool {
            next: start.0,
            end: end.0,
            free: BTreeMap::new(),
        }
    }

    pub fn alloc(&mut self, len: usize) -> Result<Buffer, FrontendError> {
        let class = (len as u64).max(64).next_power_of_two();
        if let Some(addr) = self.free.get_mut(&class).and_then(Vec::pop) {
            return Ok(Buffer {
                addr: GuestAddress(addr),
                len,
                class,
            });
        }
        if self.end - self.next < class {
            return Err(FrontendError::OutOfGuestMemory { want: len });
        }
        let addr = self.next;
        self.next += class;
        Ok(Buffer {
            addr: GuestAddress(addr),
            len,
            class,
        })
    }

    pub fn free(&mut self, buffer: Buffer) {
        self.free
            .entry(buffer.class)
            .or_default()
            .push(buffer.addr.0);
    }
}
