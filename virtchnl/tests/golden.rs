//! Byte-exact fixtures, written by hand from the C struct layouts in
//! virtchnl.h, decode to the expected messages and re-encode to the same bytes.

use std::path::Path;

use virtchnl::*;

/// Reads `fixtures/NAME.hex`: hex digits and whitespace, `#` starts a comment.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len() % 2 == 0, "{name}: odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn check_request(name: &str, cookie: u32, expected: Request, payload_len: usize) {
    let bytes = fixture(name);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + payload_len,
        "{name}: fixture size"
    );
    let (header, req) = Request::from_frame(&bytes).expect("fixture decodes");
    assert_eq!(header.cookie, cookie);
    assert_eq!(header.status, VirtchnlStatus::Success);
    assert_eq!(req, expected, "{name}");
    assert_eq!(expected.to_frame(cookie), bytes, "{name}: re-encoding");
}

fn check_pf(name: &str, cookie: u32, expected: PfMessage, payload_len: usize) {
    let bytes = fixture(name);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + payload_len,
        "{name}: fixture size"
    );
    let (header, msg) = PfMessage::from_frame(&bytes).expect("fixture decodes");
    assert_eq!(header.cookie, cookie);
    assert_eq!(msg, expected, "{name}");
    assert_eq!(expected.to_frame(cookie), bytes, "{name}: re-encoding");
}

#[test]
fn version_info_is_8_bytes() {
    check_request("version_request", 1, Request::Version(VersionInfo::V1_1), 8);
}

#[test]
fn ether_addr_list_with_one_address_is_20_bytes() {
    let list = EtherAddrList {
        vsi_id: 1,
        addrs: vec![EtherAddr {
            addr: "02:00:00:00:00:01".parse().expect("valid MAC"),
            kind: EtherAddrType::Primary,
        }],
    };
    check_request("add_eth_addr_one", 2, Request::AddEthAddr(list), 20);
}

#[test]
fn vlan_filter_list_with_two_vids_is_10_bytes() {
    let list = VlanFilterList {
        vsi_id: 1,
        vids: vec![100, 200],
    };
    check_request("add_vlan_two", 3, Request::AddVlan(list), 10);
}

#[test]
fn vlan_filter_list_v2_with_one_filter_is_40_bytes() {
    let list = VlanFilterListV2 {
        vport_id: 1,
        filters: vec![VlanFilterV2 {
            inner: VirtchnlVlan::dot1q(100),
            outer: VirtchnlVlan::default(),
        }],
    };
    check_request("add_vlan_v2_one", 4, Request::AddVlanV2(list), 40);
}

#[test]
fn promisc_info_is_4_bytes() {
    let info = PromiscInfo {
        vsi_id: 1,
        flags: PromiscFlags::UNICAST | PromiscFlags::MULTICAST,
    };
    check_request(
        "promisc_request",
        10,
        Request::ConfigPromiscuousMode(info),
        4,
    );
}

#[test]
fn queue_select_is_12_bytes() {
    let q = QueueSelect {
        vsi_id: 1,
        rx_queues: 1,
        tx_queues: 1,
    };
    check_request("enable_queues_request", 11, Request::EnableQueues(q), 12);
}

#[test]
fn get_vf_resources_from_a_1_1_vf_carries_a_caps_word() {
    let caps = VfCapFlags::L2 | VfCapFlags::VLAN | VfCapFlags::VLAN_V2;
    check_request(
        "get_vf_resources_request",
        12,
        Request::GetVfResources { caps: Some(caps) },
        4,
    );
}

#[test]
fn vlan_caps_is_40_bytes() {
    let inner_offload =
        VlanSupport::TOGGLE | VlanSupport::TAG_LOCATION_L2TAG1 | VlanSupport::ETHERTYPE_8100;
    let caps = VlanCaps {
        filtering: VlanFilteringCaps {
            filtering_support: SupportedCaps {
                outer: VlanSupport::empty(),
                inner: VlanSupport::ETHERTYPE_8100,
            },
            ethertype_init: VlanSupport::ETHERTYPE_8100,
            max_filters: 8,
        },
        offloads: VlanOffloadCaps {
            stripping_support: SupportedCaps {
                outer: VlanSupport::empty(),
                inner: inner_offload,
            },
            insertion_support: SupportedCaps {
                outer: VlanSupport::empty(),
                inner: inner_offload,
            },
            ethertype_init: VlanSupport::ETHERTYPE_8100,
            ethertype_match: 0,
        },
    };
    let reply = Reply {
        op: VirtchnlOp::GetOffloadVlanV2Caps,
        status: VirtchnlStatus::Success,
        body: ReplyBody::VlanCaps(caps),
    };
    check_pf("vlan_caps_reply", 5, PfMessage::Reply(reply), 40);
}

#[test]
fn vf_resource_with_one_vsi_is_36_bytes() {
    let res = VfResource {
        num_queue_pairs: 1,
        max_vectors: 2,
        max_mtu: 1522,
        vf_cap_flags: VfCapFlags::L2 | VfCapFlags::ADV_LINK_SPEED | VfCapFlags::VLAN_V2,
        rss_key_size: 52,
        rss_lut_size: 64,
        vsi_res: vec![VsiResource {
            vsi_id: 1,
            num_queue_pairs: 1,
            vsi_type: VsiType::Sriov,
            qset_handle: 0,
            default_mac_addr: "02:00:00:00:00:0a".parse().expect("valid MAC"),
        }],
    };
    let reply = Reply {
        op: VirtchnlOp::GetVfResources,
        status: VirtchnlStatus::Success,
        body: ReplyBody::VfResource(res),
    };
    check_pf("vf_resource_reply", 6, PfMessage::Reply(reply), 36);
}

#[test]
fn pf_event_link_change_is_16_bytes() {
    check_pf(
        "event_link_up",
        0,
        PfMessage::Event(PfEvent::link(25_000, true)),
        16,
    );
}

#[test]
fn pf_event_reset_impending_is_certain_doom() {
    check_pf(
        "event_reset_impending",
        0,
        PfMessage::Event(PfEvent::reset_impending()),
        16,
    );
}

#[test]
fn error_reply_carries_a_negative_status_and_no_payload() {
    let reply = Reply::empty(VirtchnlOp::DelVlan, VirtchnlStatus::ErrParam);
    check_pf("reply_del_vlan_err_param", 9, PfMessage::Reply(reply), 0);
}
