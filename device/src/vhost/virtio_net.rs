//! What a VF looks like as a virtio-net device: feature bits, queue layout,
//! the `virtio_net_hdr_v1` and frame size limits. Spec constants only.

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::Pair;

/// Queues of one VF: rx0, tx0 (data) and rx1, tx1 (mailbox); see [`Pair`].
pub const NUM_QUEUES: usize = 4;

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
    fn rx_header_says_one_buffer() {
        assert_eq!(u16::from_le_bytes([RX_NET_HDR[10], RX_NET_HDR[11]]), 1);
        assert!(RX_NET_HDR[..10].iter().all(|&b| b == 0));
    }
}
