//! rtnetlink requests: bringing a link up, and the helpers the recorder and
//! tests share for framing and walking netlink datagrams.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// Sets IFF_UP on the link with index `ifindex` in the caller's network
/// namespace (RTM_NEWLINK with a change mask, like `ip link set .. up`).
pub fn set_link_up(ifindex: u32) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    request(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

/// Sends one request and collects the replies up to the final ACK, DONE
/// or error.
fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let packet = serialize(header, message);
    socket.send(&packet, 0)?;
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        for message in split(buf.get(..n).unwrap_or_default()) {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            match message.payload {
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                _ => {}
            }
        }
    }
}

/// Frames `message` with `header` (length and type filled in).
pub fn serialize(header: NetlinkHeader, message: RouteNetlinkMessage) -> Vec<u8> {
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The netlink messages in one datagram. Stops at the first malformed
/// header.
pub fn split(datagram: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let len = buffer.length() as usize;
        let Some(message) = rest.get(..len) else {
            break;
        };
        messages.push(message);
        // Messages are 4-byte aligned; the last one may lack padding.
        let next = len.saturating_add(3) & !3;
        rest = rest.get(next..).unwrap_or_default();
    }
    messages
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_DUMP;
    use nix::sched::{unshare, CloneFlags};

    /// `ifi_flags` of link `ifindex`, read back with RTM_GETLINK.
    pub(crate) fn link_flags(ifindex: u32) -> io::Result<u32> {
        let replies = request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        replies
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) if link.header.index == ifindex => {
                    Some(link.header.flags.bits())
                }
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such link"))
    }

    /// Moves the calling thread (only) into a new network namespace; `false`
    /// when not permitted here.
    pub(crate) fn enter_new_netns() -> bool {
        match unshare(CloneFlags::CLONE_NEWNET) {
            Ok(()) => true,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("skipping: cannot create a network namespace: {e}");
                }
                false
            }
        }
    }

    #[test]
    fn set_link_up_raises_loopback_in_a_fresh_netns() {
        // A thread of its own: unshare(CLONE_NEWNET) affects only the
        // calling thread, and this one ends with the test.
        std::thread::spawn(|| {
            if !enter_new_netns() {
                return;
            }
            let up = LinkFlags::Up.bits();
            assert_eq!(
                link_flags(1).unwrap() & up,
                0,
                "lo starts down in a new netns"
            );
            set_link_up(1).unwrap();
            assert_eq!(link_flags(1).unwrap() & up, up);
            let err = set_link_up(9999).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn split_walks_aligned_messages_and_stops_at_garbage() {
        let mut a = LinkMessage::default();
        a.header.index = 1;
        let one = serialize(NetlinkHeader::default(), RouteNetlinkMessage::NewLink(a));
        let mut datagram = one.clone();
        datagram.extend_from_slice(&one);
        datagram.extend_from_slice(&[1, 2, 3]);
        let parts = split(&datagram);
        assert_eq!(parts, vec![one.as_slice(), one.as_slice()]);
        assert!(split(&[0xff; 8]).is_empty());
    }
}
