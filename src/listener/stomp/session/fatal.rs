//! How a session fails: one error type for every frame's handling.

/// A fatal protocol error: sent as ERROR, then the connection closes.
#[derive(Debug)]
pub(super) struct Fatal {
    pub(super) message: String,
    pub(super) detail: String,
    /// The `receipt` of the frame that failed, echoed as `receipt-id`.
    pub(super) receipt: Option<String>,
    /// Extra headers for the ERROR frame.
    pub(super) headers: Vec<(String, String)>,
}

/// A [`Fatal`] with no receipt to echo and no extra headers.
pub(super) fn fatal(message: impl Into<String>, detail: impl Into<String>) -> Fatal {
    Fatal {
        message: message.into(),
        detail: detail.into(),
        receipt: None,
        headers: Vec::new(),
    }
}
