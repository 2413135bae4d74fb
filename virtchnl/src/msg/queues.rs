//! ENABLE_QUEUES / DISABLE_QUEUES / GET_STATS: `struct virtchnl_queue_select`,
//! and the GET_STATS reply.

use crate::wire::{check_len, Put, Reader};
use crate::{Result, VirtchnlOp};

/// `struct virtchnl_queue_select` (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QueueSelect {
    /// VSI the queues belong to.
    pub vsi_id: u16,
    /// Bitmap of receive queues.
    pub rx_queues: u32,
    /// Bitmap of transmit queues.
    pub tx_queues: u32,
}

impl QueueSelect {
    /// Size on the wire.
    pub const LEN: usize = 12;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        let vsi_id = r.u16()?;
        r.skip(2)?;
        Ok(QueueSelect {
            vsi_id,
            rx_queues: r.u32()?,
            tx_queues: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.vsi_id);
        out.put_u16(0);
        out.put_u32(self.rx_queues);
        out.put_u32(self.tx_queues);
    }
}

/// `struct virtchnl_eth_stats` (96 bytes), the reply to GET_STATS.
///
/// The field order follows ice's `struct ice_eth_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EthStats {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Unicast frames received.
    pub rx_unicast: u64,
    /// Multicast frames received.
    pub rx_multicast: u64,
    /// Broadcast frames received.
    pub rx_broadcast: u64,
    /// Received frames dropped.
    pub rx_discards: u64,
    /// Received frames of unknown protocol.
    pub rx_unknown_protocol: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Unicast frames sent.
    pub tx_unicast: u64,
    /// Multicast frames sent.
    pub tx_multicast: u64,
    /// Broadcast frames sent.
    pub tx_broadcast: u64,
    /// Frames dropped on transmit.
    pub tx_discards: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

impl EthStats {
    /// Size on the wire.
    pub const LEN: usize = 96;

    fn fields_mut(&mut self) -> [&mut u64; 12] {
        [
            &mut self.rx_bytes,
            &mut self.rx_unicast,
            &mut self.rx_multicast,
            &mut self.rx_broadcast,
            &mut self.rx_discards,
            &mut self.rx_unknown_protocol,
            &mut self.tx_bytes,
            &mut self.tx_unicast,
            &mut self.tx_multicast,
            &mut self.tx_broadcast,
            &mut self.tx_discards,
            &mut self.tx_errors,
        ]
    }

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        let mut stats = EthStats::default();
        for field in stats.fields_mut() {
            *field = r.u64()?;
        }
        Ok(stats)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut copy = *self;
        for field in copy.fields_mut() {
            out.put_u64(*field);
        }
    }
}
