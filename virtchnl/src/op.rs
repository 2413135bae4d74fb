//! Opcodes: `enum virtchnl_ops` from `include/linux/avf/virtchnl.h`.

enum_with_unknown! {
    /// A virtchnl opcode (`enum virtchnl_ops`).
    ///
    /// The same opcode travels in a request and in its reply; [`VirtchnlOp::Event`]
    /// only ever travels from the PF to a VF.
    pub enum VirtchnlOp(u32) {
        /// `VIRTCHNL_OP_UNKNOWN`: no opcode; iavf uses it to mean "nothing in flight".
        Unspecified = 0 => "UNKNOWN",
        /// `VIRTCHNL_OP_VERSION`.
        Version = 1 => "VERSION",
        /// `VIRTCHNL_OP_RESET_VF`: never answered.
        ResetVf = 2 => "RESET_VF",
        /// `VIRTCHNL_OP_GET_VF_RESOURCES`.
        GetVfResources = 3 => "GET_VF_RESOURCES",
        /// `VIRTCHNL_OP_CONFIG_TX_QUEUE`.
        ConfigTxQueue = 4 => "CONFIG_TX_QUEUE",
        /// `VIRTCHNL_OP_CONFIG_RX_QUEUE`.
        ConfigRxQueue = 5 => "CONFIG_RX_QUEUE",
        /// `VIRTCHNL_OP_CONFIG_VSI_QUEUES`.
        ConfigVsiQueues = 6 => "CONFIG_VSI_QUEUES",
        /// `VIRTCHNL_OP_CONFIG_IRQ_MAP`.
        ConfigIrqMap = 7 => "CONFIG_IRQ_MAP",
        /// `VIRTCHNL_OP_ENABLE_QUEUES`.
        EnableQueues = 8 => "ENABLE_QUEUES",
        /// `VIRTCHNL_OP_DISABLE_QUEUES`.
        DisableQueues = 9 => "DISABLE_QUEUES",
        /// `VIRTCHNL_OP_ADD_ETH_ADDR`.
        AddEthAddr = 10 => "ADD_ETH_ADDR",
        /// `VIRTCHNL_OP_DEL_ETH_ADDR`.
        DelEthAddr = 11 => "DEL_ETH_ADDR",
        /// `VIRTCHNL_OP_ADD_VLAN`.
        AddVlan = 12 => "ADD_VLAN",
        /// `VIRTCHNL_OP_DEL_VLAN`.
        DelVlan = 13 => "DEL_VLAN",
        /// `VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE`.
        ConfigPromiscuousMode = 14 => "CONFIG_PROMISCUOUS_MODE",
        /// `VIRTCHNL_OP_GET_STATS`.
        GetStats = 15 => "GET_STATS",
        /// `VIRTCHNL_OP_RSVD`.
        Reserved16 = 16 => "RSVD",
        /// `VIRTCHNL_OP_EVENT`: PF to VF only.
        Event = 17 => "EVENT",
        /// `VIRTCHNL_OP_CONFIG_RSS_HFUNC`.
        ConfigRssHfunc = 18 => "CONFIG_RSS_HFUNC",
        /// `VIRTCHNL_OP_RDMA` (was `IWARP`).
        Rdma = 20 => "RDMA",
        /// `VIRTCHNL_OP_CONFIG_RDMA_IRQ_MAP`.
        ConfigRdmaIrqMap = 21 => "CONFIG_RDMA_IRQ_MAP",
        /// `VIRTCHNL_OP_RELEASE_RDMA_IRQ_MAP`.
        ReleaseRdmaIrqMap = 22 => "RELEASE_RDMA_IRQ_MAP",
        /// `VIRTCHNL_OP_CONFIG_RSS_KEY`.
        ConfigRssKey = 23 => "CONFIG_RSS_KEY",
        /// `VIRTCHNL_OP_CONFIG_RSS_LUT`.
        ConfigRssLut = 24 => "CONFIG_RSS_LUT",
        /// `VIRTCHNL_OP_GET_RSS_HASHCFG_CAPS` (was `GET_RSS_HENA_CAPS`).
        GetRssHashcfgCaps = 25 => "GET_RSS_HASHCFG_CAPS",
        /// `VIRTCHNL_OP_SET_RSS_HASHCFG` (was `SET_RSS_HENA`).
        SetRssHashcfg = 26 => "SET_RSS_HASHCFG",
        /// `VIRTCHNL_OP_ENABLE_VLAN_STRIPPING`.
        EnableVlanStripping = 27 => "ENABLE_VLAN_STRIPPING",
        /// `VIRTCHNL_OP_DISABLE_VLAN_STRIPPING`.
        DisableVlanStripping = 28 => "DISABLE_VLAN_STRIPPING",
        /// `VIRTCHNL_OP_REQUEST_QUEUES`.
        RequestQueues = 29 => "REQUEST_QUEUES",
        /// `VIRTCHNL_OP_ENABLE_CHANNELS`.
        EnableChannels = 30 => "ENABLE_CHANNELS",
        /// `VIRTCHNL_OP_DISABLE_CHANNELS`.
        DisableChannels = 31 => "DISABLE_CHANNELS",
        /// `VIRTCHNL_OP_ADD_CLOUD_FILTER`.
        AddCloudFilter = 32 => "ADD_CLOUD_FILTER",
        /// `VIRTCHNL_OP_DEL_CLOUD_FILTER`.
        DelCloudFilter = 33 => "DEL_CLOUD_FILTER",
        /// `VIRTCHNL_OP_GET_SUPPORTED_RXDIDS`.
        GetSupportedRxdids = 44 => "GET_SUPPORTED_RXDIDS",
        /// `VIRTCHNL_OP_ADD_RSS_CFG`.
        AddRssCfg = 45 => "ADD_RSS_CFG",
        /// `VIRTCHNL_OP_DEL_RSS_CFG`.
        DelRssCfg = 46 => "DEL_RSS_CFG",
        /// `VIRTCHNL_OP_ADD_FDIR_FILTER`.
        AddFdirFilter = 47 => "ADD_FDIR_FILTER",
        /// `VIRTCHNL_OP_DEL_FDIR_FILTER`.
        DelFdirFilter = 48 => "DEL_FDIR_FILTER",
        /// `VIRTCHNL_OP_GET_OFFLOAD_VLAN_V2_CAPS`.
        GetOffloadVlanV2Caps = 51 => "GET_OFFLOAD_VLAN_V2_CAPS",
        /// `VIRTCHNL_OP_ADD_VLAN_V2`.
        AddVlanV2 = 52 => "ADD_VLAN_V2",
        /// `VIRTCHNL_OP_DEL_VLAN_V2`.
        DelVlanV2 = 53 => "DEL_VLAN_V2",
        /// `VIRTCHNL_OP_ENABLE_VLAN_STRIPPING_V2`.
        EnableVlanStrippingV2 = 54 => "ENABLE_VLAN_STRIPPING_V2",
        /// `VIRTCHNL_OP_DISABLE_VLAN_STRIPPING_V2`.
        DisableVlanStrippingV2 = 55 => "DISABLE_VLAN_STRIPPING_V2",
        /// `VIRTCHNL_OP_ENABLE_VLAN_INSERTION_V2`.
        EnableVlanInsertionV2 = 56 => "ENABLE_VLAN_INSERTION_V2",
        /// `VIRTCHNL_OP_DISABLE_VLAN_INSERTION_V2`.
        DisableVlanInsertionV2 = 57 => "DISABLE_VLAN_INSERTION_V2",
        /// `VIRTCHNL_OP_1588_PTP_GET_CAPS`.
        PtpGetCaps = 60 => "1588_PTP_GET_CAPS",
        /// `VIRTCHNL_OP_1588_PTP_GET_TIME`.
        PtpGetTime = 61 => "1588_PTP_GET_TIME",
        /// `VIRTCHNL_OP_GET_QOS_CAPS`.
        GetQosCaps = 66 => "GET_QOS_CAPS",
        /// `VIRTCHNL_OP_CONFIG_QUEUE_BW`.
        ConfigQueueBw = 112 => "CONFIG_QUEUE_BW",
        /// `VIRTCHNL_OP_CONFIG_QUANTA`.
        ConfigQuanta = 113 => "CONFIG_QUANTA",
    }
}
