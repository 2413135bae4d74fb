//! ADD_ETH_ADDR / DEL_ETH_ADDR: `struct virtchnl_ether_addr_list`.

use core::fmt;
use core::str::FromStr;

use crate::validate::ETHER_ADDR_LIST;
use crate::wire::{Put, Reader};
use crate::{frame::MAX_PAYLOAD, Result, VirtchnlOp};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The broadcast address.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// All zeros.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// Group bit set (includes broadcast).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A unicast address that is not all zeros (`is_valid_ether_addr`).
    pub fn is_valid_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a [`MacAddr`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}; expected six hex bytes like 02:00:00:00:00:01")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| ParseMacError(s.to_owned()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(ParseMacError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

enum_with_unknown! {
    /// `VIRTCHNL_ETHER_ADDR_*`: what a VF means by an address in ADD/DEL_ETH_ADDR.
    ///
    /// Only the low two bits are meaningful (`VIRTCHNL_ETHER_ADDR_TYPE_MASK`);
    /// see [`EtherAddrType::masked`].
    pub enum EtherAddrType(u8) {
        /// `VIRTCHNL_ETHER_ADDR_LEGACY`: sent by old VFs (the byte was padding).
        Legacy = 0 => "LEGACY",
        /// `VIRTCHNL_ETHER_ADDR_PRIMARY`: the VF's device address.
        Primary = 1 => "PRIMARY",
        /// `VIRTCHNL_ETHER_ADDR_EXTRA`: any other unicast or multicast filter.
        Extra = 2 => "EXTRA",
    }
}

impl EtherAddrType {
    /// `VIRTCHNL_ETHER_ADDR_TYPE_MASK`.
    pub const MASK: u8 = 0x3;

    /// The type as a PF interprets it: only the low two bits count.
    pub fn masked(self) -> EtherAddrType {
        EtherAddrType::from(self.to_raw() & Self::MASK)
    }
}

/// `struct virtchnl_ether_addr` (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherAddr {
    /// The address.
    pub addr: MacAddr,
    /// Its role, as the VF declares it.
    pub kind: EtherAddrType,
}

/// `struct virtchnl_ether_addr_list`, payload of ADD_ETH_ADDR and DEL_ETH_ADDR.
///
/// On the wire: `vsi_id u16, num_elements u16, list[]`, followed by one unused
/// 8-byte slot (length `12 + 8 * n`, `virtchnl_struct_size` "full" flavour).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EtherAddrList {
    /// VSI the filters are for; the PF only accepts its own VSI id.
    pub vsi_id: u16,
    /// The addresses; never empty on the wire.
    pub addrs: Vec<EtherAddr>,
}

impl EtherAddrList {
    /// Most addresses one message can carry within [`MAX_PAYLOAD`].
    pub const MAX_PER_MESSAGE: usize = (MAX_PAYLOAD - 12) / 8;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        let count = ETHER_ADDR_LIST.check(op, payload)?;
        let mut r = Reader::new(op, payload);
        let vsi_id = r.u16()?;
        r.skip(2)?;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let addr = MacAddr(r.bytes()?);
            let kind = EtherAddrType::from(r.u8()?);
            r.skip(1)?;
            addrs.push(EtherAddr { addr, kind });
        }
        Ok(EtherAddrList { vsi_id, addrs })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.vsi_id);
        out.put_u16(count_u16(self.addrs.len()));
        for a in &self.addrs {
            out.extend_from_slice(&a.addr.0);
            out.put_u8(a.kind.to_raw());
            out.put_u8(0);
        }
        out.put_zeros(8);
    }
}

/// An element count as the u16 the wire carries; saturates (the frame will then not parse).
pub(crate) fn count_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}
