//! Status codes: `enum virtchnl_status_code`, carried in a reply's `v_retval`.

enum_with_unknown! {
    /// The result a PF reports for a request (`enum virtchnl_status_code`).
    ///
    /// On the wire this is a signed 32-bit little-endian value; errors are negative.
    pub enum VirtchnlStatus(i32) {
        /// `VIRTCHNL_STATUS_SUCCESS`.
        Success = 0 => "SUCCESS",
        /// `VIRTCHNL_STATUS_ERR_PARAM`.
        ErrParam = -5 => "ERR_PARAM",
        /// `VIRTCHNL_STATUS_ERR_NO_MEMORY`.
        ErrNoMemory = -18 => "ERR_NO_MEMORY",
        /// `VIRTCHNL_STATUS_ERR_OPCODE_MISMATCH`.
        ErrOpcodeMismatch = -38 => "ERR_OPCODE_MISMATCH",
        /// `VIRTCHNL_STATUS_ERR_CQP_COMPL_ERROR`.
        ErrCqpComplError = -39 => "ERR_CQP_COMPL_ERROR",
        /// `VIRTCHNL_STATUS_ERR_INVALID_VF_ID`.
        ErrInvalidVfId = -40 => "ERR_INVALID_VF_ID",
        /// `VIRTCHNL_STATUS_ERR_ADMIN_QUEUE_ERROR`.
        ErrAdminQueueError = -53 => "ERR_ADMIN_QUEUE_ERROR",
        /// `VIRTCHNL_STATUS_ERR_NOT_SUPPORTED`.
        ErrNotSupported = -64 => "ERR_NOT_SUPPORTED",
    }
}

impl VirtchnlStatus {
    /// Whether this is [`VirtchnlStatus::Success`].
    pub fn is_success(self) -> bool {
        self == VirtchnlStatus::Success
    }
}
