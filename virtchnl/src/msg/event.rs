//! EVENT: `struct virtchnl_pf_event`, sent by the PF without a request.

use crate::wire::{check_len, Put, Reader};
use crate::{Result, VirtchnlOp};

enum_with_unknown! {
    /// Legacy `enum virtchnl_link_speed` (bit values), used in link events
    /// unless `VIRTCHNL_VF_CAP_ADV_LINK_SPEED` was negotiated.
    pub enum LinkSpeed(u32) {
        /// `VIRTCHNL_LINK_SPEED_2_5GB`.
        Speed2_5Gb = 0x1 => "2_5GB",
        /// `VIRTCHNL_LINK_SPEED_100MB`.
        Speed100Mb = 0x2 => "100MB",
        /// `VIRTCHNL_LINK_SPEED_1GB`.
        Speed1Gb = 0x4 => "1GB",
        /// `VIRTCHNL_LINK_SPEED_10GB`.
        Speed10Gb = 0x8 => "10GB",
        /// `VIRTCHNL_LINK_SPEED_40GB`.
        Speed40Gb = 0x10 => "40GB",
        /// `VIRTCHNL_LINK_SPEED_20GB`.
        Speed20Gb = 0x20 => "20GB",
        /// `VIRTCHNL_LINK_SPEED_25GB`.
        Speed25Gb = 0x40 => "25GB",
        /// `VIRTCHNL_LINK_SPEED_5GB`.
        Speed5Gb = 0x80 => "5GB",
    }
}

enum_with_unknown! {
    /// `PF_EVENT_SEVERITY_*`.
    pub enum EventSeverity(i32) {
        /// `PF_EVENT_SEVERITY_INFO`.
        Info = 0 => "INFO",
        /// `PF_EVENT_SEVERITY_CERTAIN_DOOM`: a reset follows.
        CertainDoom = 255 => "CERTAIN_DOOM",
    }
}

/// What happened (`enum virtchnl_event_codes` with its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `VIRTCHNL_EVENT_LINK_CHANGE`.
    LinkChange {
        /// Legacy [`LinkSpeed`] bits, or Mbps when `ADV_LINK_SPEED` was negotiated
        /// (`link_event` and `link_event_adv` share the same offsets).
        link_speed: u32,
        /// Whether the link is up.
        link_up: bool,
    },
    /// `VIRTCHNL_EVENT_RESET_IMPENDING`: the PF is about to reset the VF.
    ResetImpending,
    /// `VIRTCHNL_EVENT_PF_DRIVER_CLOSE`.
    PfDriverClose,
    /// Any other code, including `VIRTCHNL_EVENT_UNKNOWN` (0); its data is not kept.
    Unknown(i32),
}

/// `struct virtchnl_pf_event` (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PfEvent {
    /// The event and its data.
    pub kind: EventKind,
    /// How bad it is.
    pub severity: EventSeverity,
}

impl PfEvent {
    /// Size on the wire.
    pub const LEN: usize = 16;

    /// A link event at INFO severity.
    pub fn link(link_speed: u32, link_up: bool) -> Self {
        PfEvent {
            kind: EventKind::LinkChange {
                link_speed,
                link_up,
            },
            severity: EventSeverity::Info,
        }
    }

    /// RESET_IMPENDING at CERTAIN_DOOM severity, as ice sends it.
    pub fn reset_impending() -> Self {
        PfEvent {
            kind: EventKind::ResetImpending,
            severity: EventSeverity::CertainDoom,
        }
    }

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        let code = r.i32()?;
        let link_speed = r.u32()?;
        let link_up = r.u8()? != 0;
        r.skip(3)?;
        let severity = EventSeverity::from(r.i32()?);
        let kind = match code {
            1 => EventKind::LinkChange {
                link_speed,
                link_up,
            },
            2 => EventKind::ResetImpending,
            3 => EventKind::PfDriverClose,
            other => EventKind::Unknown(other),
        };
        Ok(PfEvent { kind, severity })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let (code, speed, up) = match self.kind {
            EventKind::LinkChange {
                link_speed,
                link_up,
            } => (1, link_speed, link_up),
            EventKind::ResetImpending => (2, 0, false),
            EventKind::PfDriverClose => (3, 0, false),
            EventKind::Unknown(code) => (code, 0, false),
        };
        out.put_i32(code);
        out.put_u32(speed);
        out.put_u8(u8::from(up));
        out.put_zeros(3);
        out.put_i32(self.severity.to_raw());
    }
}
