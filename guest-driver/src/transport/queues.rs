//! virtio-net queues over split rings: receive and transmit queues with one
//! fixed buffer slot per descriptor, the `virtio_net_hdr` every buffer
//! starts with, and the control queue's command layout.
//!
//! These types own no memory and notify nothing: each call takes the
//! [`SharedMemory`] the rings and buffers live in, and `publish` says whether
//! the device wants a notification, which the caller sends.

use super::ring::{Segment, SplitQueue};
use super::shared::{Region, SharedMemory};
use super::{Error, Result};

/// Size of `struct virtio_net_hdr_v1` (VIRTIO_F_VERSION_1 layout).
pub const NET_HDR_LEN: usize = 12;

/// `struct virtio_net_hdr_v1`: flags, gso_type, then five le16 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Segment size for GSO.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Buffers the frame spans (receive; 1 without MRG_RXBUF).
    pub num_buffers: u16,
}

impl NetHdr {
    /// The header in wire format.
    pub fn to_bytes(&self) -> [u8; NET_HDR_LEN] {
        let mut b = [0u8; NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Reads a header from the start of `bytes`, if they hold one.
    pub fn parse(bytes: &[u8]) -> Option<NetHdr> {
        let b: &[u8; NET_HDR_LEN] = bytes.get(..NET_HDR_LEN)?.try_into().ok()?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        })
    }
}

/// Counters of one receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxStats {
    /// Frames handed to the caller.
    pub frames: u64,
    /// Buffers returned shorter than the header or longer than the buffer
    /// (the device could not use them); dropped and reposted.
    pub bad_len: u64,
}

/// A receive queue: every descriptor owns one `buf_size`-byte buffer slot,
/// posted device-writable and reposted as soon as its frame is copied out.
#[derive(Debug)]
pub struct RxQueue {
    ring: SplitQueue,
    buffers: Region,
    buf_size: usize,
    stats: RxStats,
}

impl RxQueue {
    /// A queue over `ring` with one `buf_size`-byte slot per ring entry in
    /// `buffers`. Call [`fill`](Self::fill) before use.
    pub fn new(ring: SplitQueue, buffers: Region, buf_size: usize) -> Result<RxQueue> {
        let slots = usize::from(ring.size());
        buffers.slot(slots - 1, buf_size)?;
        if buf_size <= NET_HDR_LEN || u32::try_from(buf_size).is_err() {
            return Err(Error::OutOfBounds {
                offset: 0,
                len: buf_size,
                size: buffers.len,
            });
        }
        Ok(RxQueue {
            ring,
            buffers,
            buf_size,
            stats: RxStats::default(),
        })
    }

    /// The ring.
    pub fn ring(&self) -> &SplitQueue {
        &self.ring
    }

    /// Counters.
    pub fn stats(&self) -> RxStats {
        self.stats
    }

    fn post(&mut self, mem: &impl SharedMemory, slot: u32) -> Result<()> {
        let region = self.buffers.slot(slot as usize, self.buf_size)?;
        let seg = Segment {
            offset: region.offset,
            // Checked to fit a u32 in `new`.
            len: self.buf_size as u32,
            device_writes: true,
        };
        self.ring.add(mem, &[seg], slot).map(|_| ())
    }

    /// Posts every slot. Publish afterwards.
    pub fn fill(&mut self, mem: &impl SharedMemory) -> Result<()> {
        for slot in 0..u32::from(self.ring.size()) {
            self.post(mem, slot)?;
        }
        Ok(())
    }

    /// Takes the next received frame, without its header, and reposts its
    /// buffer. Publish afterwards.
    pub fn poll(&mut self, mem: &impl SharedMemory) -> Result<Option<Vec<u8>>> {
        while let Some(used) = self.ring.poll_used(mem)? {
            let len = used.len as usize;
            if len < NET_HDR_LEN || len > self.buf_size {
                self.stats.bad_len += 1;
                tracing::warn!(
                    queue = self.ring.queue(),
                    len,
                    buffer = self.buf_size,
                    "device returned a receive buffer with an impossible length; dropping it"
                );
                self.post(mem, used.token)?;
                continue;
            }
            let region = self.buffers.slot(used.token as usize, self.buf_size)?;
            let mut bytes = vec![0u8; len];
            mem.read_bytes(region.offset, &mut bytes)?;
            self.post(mem, used.token)?;
            self.stats.frames += 1;
            bytes.drain(..NET_HDR_LEN);
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    /// Publishes reposted buffers; true if the device wants a notification.
    #[must_use = "notify the device when this returns true"]
    pub fn publish(&mut self, mem: &impl SharedMemory) -> Result<bool> {
        self.ring.publish(mem)
    }
}

/// A transmit queue: frames are copied, behind a zero header, into a free
/// `buf_size`-byte slot and posted device-readable; slots come back when the
/// device has used them.
#[derive(Debug)]
pub struct TxQueue {
    ring: SplitQueue,
    buffers: Region,
    buf_size: usize,
    free_slots: Vec<u32>,
    sent: u64,
}

impl TxQueue {
    /// A queue over `ring` with one `buf_size`-byte slot per ring entry in
    /// `buffers`.
    pub fn new(ring: SplitQueue, buffers: Region, buf_size: usize) -> Result<TxQueue> {
        let slots = u32::from(ring.size());
        buffers.slot(slots as usize - 1, buf_size)?;
        if buf_size <= NET_HDR_LEN || u32::try_from(buf_size).is_err() {
            return Err(Error::OutOfBounds {
                offset: 0,
                len: buf_size,
                size: buffers.len,
            });
        }
        Ok(TxQueue {
            ring,
            buffers,
            buf_size,
            free_slots: (0..slots).rev().collect(),
            sent: 0,
        })
    }

    /// The ring.
    pub fn ring(&self) -> &SplitQueue {
        &self.ring
    }

    /// The longest frame a slot takes.
    pub fn max_frame(&self) -> usize {
        self.buf_size - NET_HDR_LEN
    }

    /// Frames posted so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Frames the device has not finished with.
    pub fn in_flight(&self) -> u16 {
        self.ring.in_flight()
    }

    /// Takes back every slot the device has finished with; returns how many.
    pub fn reclaim(&mut self, mem: &impl SharedMemory) -> Result<usize> {
        let mut n = 0;
        while let Some(used) = self.ring.poll_used(mem)? {
            self.free_slots.push(used.token);
            n += 1;
        }
        Ok(n)
    }

    /// Posts `frame` behind a zero header. Publish afterwards.
    pub fn send(&mut self, mem: &impl SharedMemory, frame: &[u8]) -> Result<()> {
        if frame.len() > self.max_frame() {
            return Err(Error::FrameTooLong {
                len: frame.len(),
                max: self.max_frame(),
            });
        }
        if self.free_slots.is_empty() {
            self.reclaim(mem)?;
        }
        let Some(&slot) = self.free_slots.last() else {
            return Err(Error::QueueFull {
                queue: self.ring.queue(),
                size: self.ring.size(),
            });
        };
        let region = self.buffers.slot(slot as usize, self.buf_size)?;
        mem.write_bytes(region.offset, &NetHdr::default().to_bytes())?;
        mem.write_bytes(region.at(NET_HDR_LEN, frame.len())?, frame)?;
        let seg = Segment {
            offset: region.offset,
            // At most `buf_size`, which fits a u32 (checked in `new`).
            len: (NET_HDR_LEN + frame.len()) as u32,
            device_writes: false,
        };
        self.ring.add(mem, &[seg], slot)?;
        self.free_slots.pop();
        self.sent += 1;
        Ok(())
    }

    /// Publishes posted frames; true if the device wants a notification.
    #[must_use = "notify the device when this returns true"]
    pub fn publish(&mut self, mem: &impl SharedMemory) -> Result<bool> {
        self.ring.publish(mem)
    }
}

/// `VIRTIO_NET_CTRL_MQ`: the multiqueue command class.
pub const CTRL_MQ: u8 = 4;
/// `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`: how many queue pairs to use (le16).
pub const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
/// `VIRTIO_NET_OK`: the ack of a command that worked.
pub const CTRL_OK: u8 = 0;

/// Where the ack byte goes in the control buffer; commands must fit before it.
const CTRL_ACK_AT: usize = 64;
/// Bytes of the control buffer.
pub const CTRL_BUFFER_LEN: usize = CTRL_ACK_AT + 1;
/// What the ack byte holds until the device writes it.
const ACK_UNWRITTEN: u8 = 0xff;

/// The device-readable part of a control command: class, command, data.
pub fn ctrl_command(class: u8, command: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + data.len());
    out.push(class);
    out.push(command);
    out.extend_from_slice(data);
    out
}

/// The control queue: one command in flight at a time, in one buffer (the
/// command, then the ack byte at a fixed offset).
#[derive(Debug)]
pub struct CtrlQueue {
    ring: SplitQueue,
    buffer: Region,
}

impl CtrlQueue {
    /// A control queue over `ring`, using `buffer` (at least
    /// [`CTRL_BUFFER_LEN`] bytes).
    pub fn new(ring: SplitQueue, buffer: Region) -> Result<CtrlQueue> {
        buffer.at(0, CTRL_BUFFER_LEN)?;
        Ok(CtrlQueue { ring, buffer })
    }

    /// The ring.
    pub fn ring(&self) -> &SplitQueue {
        &self.ring
    }

    /// Posts a command. Publish afterwards, then poll for the ack.
    pub fn submit(
        &mut self,
        mem: &impl SharedMemory,
        class: u8,
        command: u8,
        data: &[u8],
    ) -> Result<()> {
        if self.ring.in_flight() != 0 {
            return Err(Error::QueueFull {
                queue: self.ring.queue(),
                size: 1,
            });
        }
        let cmd = ctrl_command(class, command, data);
        if cmd.len() > CTRL_ACK_AT {
            return Err(Error::OutOfBounds {
                offset: 0,
                len: cmd.len(),
                size: CTRL_ACK_AT,
            });
        }
        mem.write_bytes(self.buffer.at(0, cmd.len())?, &cmd)?;
        let ack = self.buffer.at(CTRL_ACK_AT, 1)?;
        mem.write_bytes(ack, &[ACK_UNWRITTEN])?;
        let segs = [
            Segment {
                offset: self.buffer.offset,
                // At most CTRL_ACK_AT (checked above).
                len: cmd.len() as u32,
                device_writes: false,
            },
            Segment {
                offset: ack,
                len: 1,
                device_writes: true,
            },
        ];
        self.ring.add(mem, &segs, 0).map(|_| ())
    }

    /// Publishes the command; true if the device wants a notification.
    #[must_use = "notify the device when this returns true"]
    pub fn publish(&mut self, mem: &impl SharedMemory) -> Result<bool> {
        self.ring.publish(mem)
    }

    /// The ack of the command in flight, once the device has answered.
    pub fn poll(&mut self, mem: &impl SharedMemory) -> Result<Option<u8>> {
        if self.ring.poll_used(mem)?.is_none() {
            return Ok(None);
        }
        let mut ack = [0u8];
        mem.read_bytes(self.buffer.at(CTRL_ACK_AT, 1)?, &mut ack)?;
        Ok(Some(ack[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ring::{DESC_F_NEXT, DESC_F_WRITE};
    use crate::transport::shared::{Bump, HeapMemory};
    use crate::transport::test_util::{ring, FakeDevice};

    const MEM: usize = 1 << 16;

    fn setup(size: u16, buf: usize) -> (HeapMemory, Bump, SplitQueue, FakeDevice, Region) {
        let mem = HeapMemory::new(MEM, 0x10_0000);
        let mut bump = Bump::new(MEM);
        let (q, dev) = ring(&mem, &mut bump, size);
        let buffers = bump.alloc(usize::from(size) * buf, 64).unwrap();
        (mem, bump, q, dev, buffers)
    }

    #[test]
    fn header_layout_is_virtio_net_hdr_v1() {
        let h = NetHdr {
            flags: 1,
            gso_type: 3,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
            num_buffers: 1,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 3, 2, 1, 4, 3, 6, 5, 8, 7, 1, 0]);
        assert_eq!(NetHdr::parse(&b), Some(h));
        assert_eq!(NetHdr::parse(&b[..11]), None);
        assert_eq!(NetHdr::default().to_bytes(), [0; 12]);
    }

    #[test]
    fn received_frames_lose_their_header_and_buffers_are_reposted() {
        let (mem, _, q, mut dev, buffers) = setup(4, 128);
        let mut rx = RxQueue::new(q, buffers, 128).unwrap();
        rx.fill(&mem).unwrap();
        assert!(rx.publish(&mem).unwrap());
        let (head, chain) = dev.pop(&mem).unwrap();
        assert_eq!(
            chain,
            [(0x10_0000 + buffers.offset as u64, 128, DESC_F_WRITE)]
        );
        let mut wire = NetHdr {
            num_buffers: 1,
            ..NetHdr::default()
        }
        .to_bytes()
        .to_vec();
        wire.extend_from_slice(b"frame");
        dev.write(&mem, chain[0], &wire);
        dev.push(&mem, u32::from(head), wire.len() as u32);
        assert_eq!(rx.poll(&mem).unwrap().as_deref(), Some(&b"frame"[..]));
        assert_eq!(rx.poll(&mem).unwrap(), None);
        // All four buffers are posted again: the used one went back.
        assert_eq!(rx.ring().in_flight(), 4);
        let _ = rx.publish(&mem).unwrap();
        let mut seen = 0;
        while dev.pop(&mem).is_some() {
            seen += 1;
        }
        assert_eq!(seen, 3 + 1);
    }

    #[test]
    fn impossible_receive_lengths_are_dropped_and_counted() {
        let (mem, _, q, mut dev, buffers) = setup(2, 64);
        let mut rx = RxQueue::new(q, buffers, 64).unwrap();
        rx.fill(&mem).unwrap();
        let _ = rx.publish(&mem).unwrap();
        let (a, _) = dev.pop(&mem).unwrap();
        let (b, _) = dev.pop(&mem).unwrap();
        dev.push(&mem, u32::from(a), 0); // the device could not use it
        dev.push(&mem, u32::from(b), 65); // longer than the buffer
        assert_eq!(rx.poll(&mem).unwrap(), None);
        assert_eq!(
            rx.stats(),
            RxStats {
                frames: 0,
                bad_len: 2
            }
        );
        assert_eq!(rx.ring().in_flight(), 2);
    }

    #[test]
    fn sent_frames_get_a_zero_header_and_slots_come_back() {
        let (mem, _, q, mut dev, buffers) = setup(2, 64);
        let mut tx = TxQueue::new(q, buffers, 64).unwrap();
        assert_eq!(tx.max_frame(), 52);
        tx.send(&mem, b"one").unwrap();
        tx.send(&mem, b"two").unwrap();
        assert!(matches!(
            tx.send(&mem, b"three"),
            Err(Error::QueueFull { .. })
        ));
        assert!(tx.publish(&mem).unwrap());
        let (h1, c1) = dev.pop(&mem).unwrap();
        let (_, c2) = dev.pop(&mem).unwrap();
        assert_eq!(c1[0].1, 15);
        assert_eq!(c1[0].2, 0, "device-readable");
        assert_eq!(&dev.read(&mem, c1[0])[..], b"\0\0\0\0\0\0\0\0\0\0\0\0one");
        assert_eq!(&dev.read(&mem, c2[0])[12..], b"two");
        dev.push(&mem, u32::from(h1), 0);
        // `send` reclaims by itself when no slot is free.
        tx.send(&mem, b"three").unwrap();
        assert_eq!((tx.sent(), tx.in_flight()), (3, 2));
        assert!(matches!(
            tx.send(&mem, &[0; 53]),
            Err(Error::FrameTooLong { len: 53, max: 52 })
        ));
    }

    #[test]
    fn a_control_command_is_readable_bytes_then_a_writable_ack() {
        let (mem, mut bump, q, mut dev, _) = setup(4, 64);
        let buffer = bump.alloc(CTRL_BUFFER_LEN, 8).unwrap();
        let mut ctrl = CtrlQueue::new(q, buffer).unwrap();
        ctrl.submit(&mem, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &2u16.to_le_bytes())
            .unwrap();
        assert!(matches!(
            ctrl.submit(&mem, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &[]),
            Err(Error::QueueFull { .. })
        ));
        let _ = ctrl.publish(&mem).unwrap();
        let (head, chain) = dev.pop(&mem).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!((chain[0].1, chain[0].2), (4, DESC_F_NEXT));
        assert_eq!((chain[1].1, chain[1].2), (1, DESC_F_WRITE));
        assert_eq!(dev.read(&mem, chain[0]), [4, 0, 2, 0]);
        assert_eq!(ctrl.poll(&mem).unwrap(), None);
        dev.write(&mem, chain[1], &[CTRL_OK]);
        dev.push(&mem, u32::from(head), 1);
        assert_eq!(ctrl.poll(&mem).unwrap(), Some(CTRL_OK));
        // The next command may go.
        ctrl.submit(&mem, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &1u16.to_le_bytes())
            .unwrap();
    }
}
