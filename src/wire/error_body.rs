//! The body of an error reply (docs/wire-format.md, "Replies"): what a
//! requester in any language decodes when `wharf-status` is `error`.

use serde::{Deserialize, Serialize};

/// Body of an error reply, in the request's content type:
/// `{"kind": "...", "message": "...", "details": ...}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct ErrorBody {
    pub(crate) kind: String,
    pub(crate) message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) details: Option<serde_json::Value>,
}
