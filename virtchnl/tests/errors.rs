//! Malformed input gives a typed error that says what is wrong.

use virtchnl::*;

fn frame(op: u32, payload: &[u8]) -> Vec<u8> {
    encode_frame(VirtchnlOp::from(op), VirtchnlStatus::Success, 0, payload)
}

#[test]
fn a_frame_shorter_than_its_header_is_rejected() {
    assert_eq!(
        Request::from_frame(&[1, 0, 0]),
        Err(Error::FrameTooShort { len: 3, need: 16 })
    );
}

#[test]
fn a_frame_whose_length_field_lies_is_rejected() {
    let mut bytes = Request::Version(VersionInfo::V1_1).to_frame(0);
    bytes.push(0);
    assert_eq!(
        Request::from_frame(&bytes),
        Err(Error::FrameLengthMismatch {
            op: VirtchnlOp::Version,
            declared: 8,
            actual: 9
        })
    );
}

#[test]
fn a_payload_larger_than_a_mailbox_buffer_is_rejected_before_allocating() {
    let mut bytes = frame(10, &[]);
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Request::from_frame(&bytes),
        Err(Error::PayloadTooLarge { max: 4096, .. })
    ));
}

#[test]
fn a_short_fixed_size_payload_names_the_opcode_and_sizes() {
    let err = Request::from_frame(&frame(8, &[1, 0, 0, 0])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ENABLE_QUEUES: payload is 4 bytes, expected 12"
    );
}

#[test]
fn a_list_shorter_than_its_legacy_size_is_truncated() {
    let err = Request::decode(VirtchnlOp::AddEthAddr, &[1, 0, 1, 0]).unwrap_err();
    assert_eq!(
        err,
        Error::Truncated {
            op: VirtchnlOp::AddEthAddr,
            len: 4,
            need: 12
        }
    );
}

#[test]
fn an_empty_list_is_rejected_like_the_kernel_does() {
    // vsi_id 1, num_elements 0, plus the legacy slot: right size, zero count.
    let err = Request::decode(VirtchnlOp::DelVlan, &[1, 0, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DEL_VLAN: num_elements=0, at least one element is required"
    );
}

#[test]
fn a_v2_list_count_that_disagrees_with_the_length_is_rejected() {
    let mut payload = vec![1, 0, 2, 0, 0, 0, 0, 0];
    payload.extend_from_slice(&[0; 32]);
    let err = Request::decode(VirtchnlOp::AddVlanV2, &payload).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ADD_VLAN_V2: num_elements=2 but payload holds 1 (40 bytes, expected 72)"
    );
}

#[test]
fn an_unknown_opcode_is_a_value_not_a_decode_failure() {
    let (header, _) = (
        FrameHeader::parse(&frame(999, &[])).expect("header parses"),
        (),
    );
    assert_eq!(header.op, VirtchnlOp::Unknown(999));
    assert_eq!(header.op.to_string(), "UNKNOWN(999)");
    // ...but it is not a request a VF may send.
    assert_eq!(
        Request::from_frame(&frame(999, &[])),
        Err(Error::NotARequest {
            op: VirtchnlOp::Unknown(999)
        })
    );
}

#[test]
fn an_event_sent_by_a_vf_is_not_a_request() {
    assert_eq!(
        Request::decode(VirtchnlOp::Event, &[0; 16]),
        Err(Error::NotARequest {
            op: VirtchnlOp::Event
        })
    );
}

#[test]
fn a_valid_request_without_a_typed_message_is_unsupported_not_malformed() {
    let payload = [0u8; 24];
    assert_eq!(
        validate_request_len(VirtchnlOp::ConfigTxQueue, &payload, None),
        Ok(())
    );
    assert_eq!(
        Request::decode(VirtchnlOp::ConfigTxQueue, &payload),
        Err(Error::Unsupported {
            op: VirtchnlOp::ConfigTxQueue
        })
    );
}

#[test]
fn get_vf_resources_length_depends_on_the_announced_version() {
    let op = VirtchnlOp::GetVfResources;
    assert_eq!(
        validate_request_len(op, &[], Some(VersionInfo::V1_0)),
        Ok(())
    );
    assert_eq!(validate_request_len(op, &[], None), Ok(()));
    assert!(validate_request_len(op, &[], Some(VersionInfo::V1_1)).is_err());
    assert_eq!(
        validate_request_len(op, &[1, 0, 0, 0], Some(VersionInfo::V1_1)),
        Ok(())
    );
}

#[test]
fn the_kernel_length_table_covers_fixed_size_opcodes_we_do_not_model() {
    let cases = [
        (VirtchnlOp::ConfigRxQueue, 40),
        (VirtchnlOp::AddFdirFilter, 2616),
        (VirtchnlOp::AddRssCfg, 2444),
        (VirtchnlOp::AddCloudFilter, 272),
        (VirtchnlOp::PtpGetCaps, 48),
        (VirtchnlOp::EnableVlanStrippingV2, 16),
        (VirtchnlOp::RequestQueues, 2),
    ];
    for (op, len) in cases {
        assert_eq!(
            validate_request_len(op, &vec![0; len], None),
            Ok(()),
            "{op}"
        );
        assert_eq!(
            validate_request_len(op, &vec![0; len + 1], None),
            Err(Error::WrongLength {
                op,
                len: len + 1,
                expected: len
            })
        );
    }
}

#[test]
fn rss_key_is_5_plus_key_len_and_irq_map_needs_a_vector() {
    // virtchnl_rss_key is 5 + key_len bytes with a 6-byte legacy minimum, so
    // key_len 1 fits in 6 bytes and key_len 0 can never be valid.
    let mut key = vec![1, 0, 1, 0, 0xaa, 0];
    assert_eq!(
        validate_request_len(VirtchnlOp::ConfigRssKey, &key, None),
        Ok(())
    );
    key[2] = 0;
    assert!(validate_request_len(VirtchnlOp::ConfigRssKey, &key, None).is_err());
    let irq = [0u8; 14];
    assert_eq!(
        validate_request_len(VirtchnlOp::ConfigIrqMap, &irq, None),
        Err(Error::ZeroCount {
            op: VirtchnlOp::ConfigIrqMap,
            field: "num_vectors"
        })
    );
}

#[test]
fn opcode_and_status_names_parse_back() {
    for op in VirtchnlOp::ALL {
        assert_eq!(op.to_string().parse::<VirtchnlOp>(), Ok(*op));
    }
    assert_eq!("del_vlan".parse::<VirtchnlOp>(), Ok(VirtchnlOp::DelVlan));
    assert_eq!("52".parse::<VirtchnlOp>(), Ok(VirtchnlOp::AddVlanV2));
    assert_eq!(
        "ERR_ADMIN_QUEUE_ERROR".parse::<VirtchnlStatus>(),
        Ok(VirtchnlStatus::ErrAdminQueueError)
    );
    let err = "DEL_VLANS".parse::<VirtchnlOp>().unwrap_err();
    assert!(err.to_string().contains("DEL_VLANS"), "{err}");
}

#[test]
fn mac_addresses_parse_and_print_in_colon_notation() {
    let mac: MacAddr = "02:AB:00:00:00:01".parse().expect("valid");
    assert_eq!(mac.to_string(), "02:ab:00:00:00:01");
    assert!(mac.is_valid_unicast());
    assert!("02:ab:00:00:00".parse::<MacAddr>().is_err());
    assert!("02:ab:00:00:00:01:07".parse::<MacAddr>().is_err());
    assert!("zz:ab:00:00:00:01".parse::<MacAddr>().is_err());
    assert!(MacAddr::BROADCAST.is_multicast());
}

#[test]
fn capability_flags_debug_lists_names_and_keeps_unknown_bits() {
    let caps = VfCapFlags::L2 | VfCapFlags::VLAN_V2 | VfCapFlags(1 << 30);
    assert_eq!(format!("{caps:?}"), "VfCapFlags(L2 | VLAN_V2 | 0x40000000)");
}
