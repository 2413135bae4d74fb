//! What a VF looks like as a virtio-net device: feature bits, queue layout,
//! the `virtio_net_hdr_v1` and frame size limits. Spec constants only.

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::Pair;

/// Queues of a VF with a mailbox: rx0, tx0 (data) and rx1, tx1 (mailbox);
/// see [`Pair`]. No VF has more.
pub const NUM_QUEUES: usize = 4;

/// Queues of a VF without a mailbox ([`QueueLayout::DataOnly`]): rx0, tx0.
pub const DATA_ONLY_QUEUES: usize = 2;

/// Which queue pairs a VF's virtio-net device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueLayout {
    /// Data and mailbox pairs, for a VF whose driver speaks virtchnl (vfrig's
    /// own): 4 queues, VIRTIO_NET_F_MQ and the MQ protocol feature. QEMU:
    /// `-netdev vhost-user,...,queues=2` and `virtio-net-pci,mq=on`.
    #[default]
    DataAndMailbox,
    /// The data pair only, for a VF the guest kernel's virtio_net drives: 2
    /// queues, no VIRTIO_NET_F_MQ and no MQ protocol feature. QEMU:
    /// `-netdev vhost-user,...,queues=1` and `virtio-net-pci,mq=off` (with
    /// `failover=on` for the standby of a net_failover pair).
    DataOnly,
}

impl QueueLayout {
    /// How many virtqueues the device has.
    pub fn num_queues(self) -> usize {
        match self {
            QueueLayout::DataAndMailbox => NUM_QUEUES,
            QueueLayout::DataOnly => DATA_ONLY_QUEUES,
        }
    }

    /// Whether the device has `pair`.
    pub fn has(self, pair: Pair) -> bool {
        match (self, pair) {
            (_, Pair::Data) | (QueueLayout::DataAndMailbox, Pair::Mailbox) => true,
            (QueueLayout::DataOnly, Pair::Mailbox) => false,
        }
    }

    /// The pair queue `index` belongs to and whether it is the VF's transmit
    /// queue; `None` for a queue this layout does not have.
    pub fn pair_of_queue(self, index: usize) -> Option<(Pair, bool)> {
        Pair::of_queue(index).filter(|&(pair, _)| self.has(pair))
    }

    /// The virtio features the backend offers: [`FEATURES`], without
    /// VIRTIO_NET_F_MQ for [`QueueLayout::DataOnly`].
    pub fn features(self) -> u64 {
        match self {
            QueueLayout::DataAndMailbox => FEATURES,
            QueueLayout::DataOnly => FEATURES & !(1 << VIRTIO_NET_F_MQ),
        }
    }

    /// The vhost-user protocol features the backend offers:
    /// [`protocol_features`], without MQ for [`QueueLayout::DataOnly`]
    /// (a frontend then never asks GET_QUEUE_NUM).
    pub fn protocol_features(self) -> VhostUserProtocolFeatures {
        match self {
            QueueLayout::DataAndMailbox => protocol_features(),
            QueueLayout::DataOnly => protocol_features() - VhostUserProtocolFeatures::MQ,
        }
    }
}

/// The largest ring a frontend may ask for (QEMU's `rx_queue_size` maximum).
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Virtio features the backend offers: VIRTIO_F_VERSION_1,
/// VIRTIO_RING_F_EVENT_IDX, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MAC,
/// VIRTIO_NET_F_STATUS and VHOST_USER_F_PROTOCOL_FEATURES.
///
/// No offloads and no VIRTIO_NET_F_MRG_RXBUF: a frame always fits one
/// receive chain. QEMU serves the config space (MAC, status, max pairs) and
/// the control queue itself for vhost-user netdevs.
pub const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_RING_F_EVENT_IDX)
    | (1 << VIRTIO_NET_F_MQ)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// vhost-user protocol features the backend offers: MQ (so the frontend may
/// ask GET_QUEUE_NUM) and REPLY_ACK (so a frontend sees backend errors).
///
/// Not CONFIG: QEMU's virtio-net answers config reads itself and drops CONFIG
/// for vhost-user net with a warning ("backend supports
/// VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not").
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// Size of `struct virtio_net_hdr_v1` (VIRTIO_F_VERSION_1 layout): flags (u8),
/// gso_type (u8), hdr_len, gso_size, csum_start, csum_offset, num_buffers
/// (all le16).
pub const NET_HDR_LEN: usize = 12;

/// The header the backend writes in front of every received frame: no
/// checksum or GSO information, one buffer.
pub const RX_NET_HDR: [u8; NET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// The largest Ethernet frame (after the header) on the data pair.
pub const MAX_DATA_FRAME: usize = 65_562;

/// The largest virtchnl frame (after the header) on the mailbox pair:
/// vfrig's 16-byte frame header plus a 4096-byte message.
pub const MAX_MAILBOX_FRAME: usize = virtchnl::MAX_FRAME_LEN;

/// The largest frame, without the `virtio_net_hdr`, that `pair` carries.
pub fn max_frame(pair: Pair) -> usize {
    match pair {
        Pair::Data => MAX_DATA_FRAME,
        Pair::Mailbox => MAX_MAILBOX_FRAME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_limit_is_a_full_virtchnl_frame() {
        assert_eq!(MAX_MAILBOX_FRAME, 4112);
    }

    #[test]
    fn a_data_only_device_has_two_queues_and_nothing_of_multiqueue() {
        let layout = QueueLayout::DataOnly;
        assert_eq!(layout.num_queues(), 2);
        assert_eq!(layout.features() & (1 << VIRTIO_NET_F_MQ), 0);
        assert_eq!(layout.features() | (1 << VIRTIO_NET_F_MQ), FEATURES);
        assert!(!layout
            .protocol_features()
            .contains(VhostUserProtocolFeatures::MQ));
        assert!(layout
            .protocol_features()
            .contains(VhostUserProtocolFeatures::REPLY_ACK));
        assert_eq!(layout.pair_of_queue(1), Some((Pair::Data, true)));
        assert_eq!(layout.pair_of_queue(2), None);
        assert_eq!(layout.pair_of_queue(3), None);
        assert!(!layout.has(Pair::Mailbox));
    }

    #[test]
    fn the_default_layout_is_todays_four_queue_device() {
        let layout = QueueLayout::default();
        assert_eq!(layout.num_queues(), NUM_QUEUES);
        assert_eq!(layout.features(), FEATURES);
        assert_eq!(layout.protocol_features(), protocol_features());
        assert_eq!(layout.pair_of_queue(3), Some((Pair::Mailbox, true)));
    }

    #[test]
    fn rx_header_says_one_buffer() {
        assert_eq!(u16::from_le_bytes([RX_NET_HDR[10], RX_NET_HDR[11]]), 1);
        assert!(RX_NET_HDR[..10].iter().all(|&b| b == 0));
    }
}
