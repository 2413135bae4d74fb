//! Property tests: every message survives encode/decode unchanged, and no
//! input bytes make a decoder panic.

use proptest::collection::vec;
use proptest::prelude::*;
use virtchnl::*;

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ether_addr() -> impl Strategy<Value = EtherAddr> {
    (mac(), any::<u8>()).prop_map(|(addr, kind)| EtherAddr {
        addr,
        kind: EtherAddrType::from(kind),
    })
}

fn ether_list() -> impl Strategy<Value = EtherAddrList> {
    (
        any::<u16>(),
        vec(ether_addr(), 1..=EtherAddrList::MAX_PER_MESSAGE),
    )
        .prop_map(|(vsi_id, addrs)| EtherAddrList { vsi_id, addrs })
}

fn vlan_list() -> impl Strategy<Value = VlanFilterList> {
    (any::<u16>(), vec(any::<u16>(), 1..=64))
        .prop_map(|(vsi_id, vids)| VlanFilterList { vsi_id, vids })
}

fn vvlan() -> impl Strategy<Value = VirtchnlVlan> {
    (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(tci, tci_mask, tpid)| VirtchnlVlan {
        tci,
        tci_mask,
        tpid,
    })
}

fn vlan_list_v2() -> impl Strategy<Value = VlanFilterListV2> {
    (
        any::<u16>(),
        vec(
            (vvlan(), vvlan()).prop_map(|(inner, outer)| VlanFilterV2 { inner, outer }),
            1..=VlanFilterListV2::MAX_PER_MESSAGE,
        ),
    )
        .prop_map(|(vport_id, filters)| VlanFilterListV2 { vport_id, filters })
}

fn queue_select() -> impl Strategy<Value = QueueSelect> {
    (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(vsi_id, rx_queues, tx_queues)| {
        QueueSelect {
            vsi_id,
            rx_queues,
            tx_queues,
        }
    })
}

fn version() -> impl Strategy<Value = VersionInfo> {
    (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| VersionInfo { major, minor })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        version().prop_map(Request::Version),
        Just(Request::ResetVf),
        proptest::option::of(any::<u32>().prop_map(VfCapFlags))
            .prop_map(|caps| Request::GetVfResources { caps }),
        queue_select().prop_map(Request::EnableQueues),
        queue_select().prop_map(Request::DisableQueues),
        ether_list().prop_map(Request::AddEthAddr),
        ether_list().prop_map(Request::DelEthAddr),
        vlan_list().prop_map(Request::AddVlan),
        vlan_list().prop_map(Request::DelVlan),
        (any::<u16>(), any::<u16>()).prop_map(|(vsi_id, f)| Request::ConfigPromiscuousMode(
            PromiscInfo {
                vsi_id,
                flags: PromiscFlags(f)
            }
        )),
        queue_select().prop_map(Request::GetStats),
        Just(Request::EnableVlanStripping),
        Just(Request::DisableVlanStripping),
        Just(Request::GetOffloadVlanV2Caps),
        vlan_list_v2().prop_map(Request::AddVlanV2),
        vlan_list_v2().prop_map(Request::DelVlanV2),
    ]
}

fn supported() -> impl Strategy<Value = SupportedCaps> {
    (any::<u32>(), any::<u32>()).prop_map(|(o, i)| SupportedCaps {
        outer: VlanSupport(o),
        inner: VlanSupport(i),
    })
}

fn vlan_caps() -> impl Strategy<Value = VlanCaps> {
    (
        supported(),
        any::<u32>(),
        any::<u16>(),
        supported(),
        supported(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(fs, fe, max, ss, is, oe, m)| VlanCaps {
            filtering: VlanFilteringCaps {
                filtering_support: fs,
                ethertype_init: VlanSupport(fe),
                max_filters: max,
            },
            offloads: VlanOffloadCaps {
                stripping_support: ss,
                insertion_support: is,
                ethertype_init: VlanSupport(oe),
                ethertype_match: m,
            },
        })
}

fn vf_resource() -> impl Strategy<Value = VfResource> {
    let vsi = (
        any::<u16>(),
        any::<u16>(),
        any::<i32>(),
        any::<u16>(),
        mac(),
    )
        .prop_map(
            |(vsi_id, num_queue_pairs, t, qset_handle, default_mac_addr)| VsiResource {
                vsi_id,
                num_queue_pairs,
                vsi_type: VsiType::from(t),
                qset_handle,
                default_mac_addr,
            },
        );
    (
        any::<[u16; 3]>(),
        any::<u32>(),
        any::<[u32; 2]>(),
        vec(vsi, 0..=4),
    )
        .prop_map(|([q, v, mtu], caps, [k, l], vsi_res)| VfResource {
            num_queue_pairs: q,
            max_vectors: v,
            max_mtu: mtu,
            vf_cap_flags: VfCapFlags(caps),
            rss_key_size: k,
            rss_lut_size: l,
            vsi_res,
        })
}

fn stats() -> impl Strategy<Value = EthStats> {
    any::<[u64; 12]>().prop_map(|f| EthStats {
        rx_bytes: f[0],
        rx_unicast: f[1],
        rx_multicast: f[2],
        rx_broadcast: f[3],
        rx_discards: f[4],
        rx_unknown_protocol: f[5],
        tx_bytes: f[6],
        tx_unicast: f[7],
        tx_multicast: f[8],
        tx_broadcast: f[9],
        tx_discards: f[10],
        tx_errors: f[11],
    })
}

fn status() -> impl Strategy<Value = VirtchnlStatus> {
    any::<i32>().prop_map(VirtchnlStatus::from)
}

fn event() -> impl Strategy<Value = PfEvent> {
    let kind = prop_oneof![
        (any::<u32>(), any::<bool>()).prop_map(|(link_speed, link_up)| EventKind::LinkChange {
            link_speed,
            link_up
        }),
        Just(EventKind::ResetImpending),
        Just(EventKind::PfDriverClose),
        any::<i32>()
            .prop_filter("codes 1..=3 have names", |c| !(1..=3).contains(c))
            .prop_map(EventKind::Unknown),
    ];
    (kind, any::<i32>()).prop_map(|(kind, s)| PfEvent {
        kind,
        severity: EventSeverity::from(s),
    })
}

fn pf_message() -> impl Strategy<Value = PfMessage> {
    let reply = prop_oneof![
        (any::<u32>(), status()).prop_map(|(op, status)| {
            let op = VirtchnlOp::from(op);
            Reply::empty(op, status)
        }),
        (version(), status()).prop_map(|(v, status)| Reply {
            op: VirtchnlOp::Version,
            status,
            body: ReplyBody::Version(v)
        }),
        (vf_resource(), status()).prop_map(|(r, status)| Reply {
            op: VirtchnlOp::GetVfResources,
            status,
            body: ReplyBody::VfResource(r)
        }),
        (vlan_caps(), status()).prop_map(|(c, status)| Reply {
            op: VirtchnlOp::GetOffloadVlanV2Caps,
            status,
            body: ReplyBody::VlanCaps(c)
        }),
        (stats(), status()).prop_map(|(s, status)| Reply {
            op: VirtchnlOp::GetStats,
            status,
            body: ReplyBody::Stats(s)
        }),
    ]
    .prop_filter("a successful EVENT is an event, not a reply", |r| {
        r.op != VirtchnlOp::Event || !r.status.is_success()
    })
    .prop_map(PfMessage::Reply);
    prop_oneof![reply, event().prop_map(PfMessage::Event)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_round_trips(req in request(), cookie in any::<u32>()) {
        let frame = req.to_frame(cookie);
        let (header, back) = Request::from_frame(&frame).expect("own encoding decodes");
        prop_assert_eq!(header.op, req.op());
        prop_assert_eq!(header.cookie, cookie);
        prop_assert_eq!(header.len as usize, frame.len() - HEADER_LEN);
        prop_assert_eq!(back, req);
    }

    #[test]
    fn every_encoded_request_passes_the_kernel_length_check(req in request()) {
        let payload = req.encode_payload();
        let version = match &req {
            Request::GetVfResources { caps: None } => Some(VersionInfo::V1_0),
            _ => Some(VersionInfo::V1_1),
        };
        prop_assert_eq!(validate_request_len(req.op(), &payload, version), Ok(()));
    }

    #[test]
    fn pf_message_round_trips(msg in pf_message(), cookie in any::<u32>()) {
        let frame = msg.to_frame(cookie);
        let (header, back) = PfMessage::from_frame(&frame).expect("own encoding decodes");
        prop_assert_eq!(header.cookie, cookie);
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn decoding_arbitrary_frames_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        let _ = Request::from_frame(&bytes);
        let _ = PfMessage::from_frame(&bytes);
    }

    #[test]
    fn decoding_arbitrary_payloads_never_panics(
        op in prop_oneof![0u32..120, any::<u32>()],
        payload in vec(any::<u8>(), 0..600),
    ) {
        let op = VirtchnlOp::from(op);
        let decoded = Request::decode(op, &payload);
        let valid = validate_request_len(op, &payload, Some(VersionInfo::V1_1)).is_ok()
            || validate_request_len(op, &payload, Some(VersionInfo::V1_0)).is_ok();
        // Whatever decodes as a request also passes the kernel's length rules.
        if decoded.is_ok() {
            prop_assert!(valid, "{op} decoded but failed validation");
        }
        let _ = Reply::decode(op, VirtchnlStatus::Success, &payload);
    }

    #[test]
    fn list_payloads_with_a_wrong_count_are_rejected(req in request(), delta in 1u16..5) {
        // Bump the count field of every list message: the decoder must notice.
        let count_at = match req.op() {
            VirtchnlOp::AddEthAddr | VirtchnlOp::DelEthAddr
            | VirtchnlOp::AddVlan | VirtchnlOp::DelVlan
            | VirtchnlOp::AddVlanV2 | VirtchnlOp::DelVlanV2 => 2,
            _ => return Ok(()),
        };
        let mut payload = req.encode_payload();
        let count = u16::from_le_bytes([payload[count_at], payload[count_at + 1]]);
        let bumped = count.wrapping_add(delta);
        payload[count_at..count_at + 2].copy_from_slice(&bumped.to_le_bytes());
        let is_count_error = matches!(
            Request::decode(req.op(), &payload),
            Err(Error::CountMismatch { .. } | Error::ZeroCount { .. })
        );
        prop_assert!(is_count_error);
    }

    #[test]
    fn codes_round_trip_through_raw_values(raw in any::<u32>(), st in any::<i32>()) {
        prop_assert_eq!(VirtchnlOp::from(raw).to_raw(), raw);
        prop_assert_eq!(VirtchnlStatus::from(st).to_raw(), st);
    }
}
