//! JSON bodies and headers of the chat actions over HTTP (`/api/v1/channels/{id}/messages`
//! and below, `/api/v1/users/me/presence`): the same actions as the WebSocket ops `send`,
//! `edit`, `delete`, `react`, `unreact`, `start_thread`, `typing` and `set_presence`, with
//! the same rules and the same events for subscribers (docs/protocol.md, "Bots: chat
//! actions over HTTP").
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `/api/v1/channels/{id}/messages` | [`PostMessage`] → 201 `Message` (`Idempotency-Key` honoured) |
//! | PATCH | `/api/v1/channels/{id}/messages/{msg}` | [`EditMessage`] → 204 |
//! | DELETE | `/api/v1/channels/{id}/messages/{msg}` | – → 204 |
//! | PUT | `/api/v1/channels/{id}/messages/{msg}/reactions/{emoji}` | – → 204 (idempotent) |
//! | DELETE | `/api/v1/channels/{id}/messages/{msg}/reactions/{emoji}` | – → 204 (idempotent) |
//! | POST | `/api/v1/channels/{id}/messages/{msg}/thread` | [`StartThread`] → 201 new / 200 existing [`Thread`] |
//! | POST | `/api/v1/channels/{id}/typing` | – → 204 |
//! | PUT | `/api/v1/users/me/presence` | [`SetPresence`] → 204 (idempotent) |

use serde::{Deserialize, Serialize};

use crate::ws::{MessageKind, MessageRef, PresenceStatus, Quote, ThreadSummary};
use crate::{AttachmentId, ChannelId, MessageId, Seq};

/// Request header making a `POST` safe to retry: a retry with the same key (same caller,
/// same request) answers the first result instead of acting twice.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Response header set (`true`) on an answer replayed for a repeated `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Longest `Idempotency-Key`, bytes (printable ASCII).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Rate-limit response headers (GitHub/Discord convention): the bucket's size, what is
/// left of it, and seconds until it is full again.
pub const RATE_LIMIT_LIMIT: &str = "x-ratelimit-limit";
/// See [`RATE_LIMIT_LIMIT`].
pub const RATE_LIMIT_REMAINING: &str = "x-ratelimit-remaining";
/// See [`RATE_LIMIT_LIMIT`].
pub const RATE_LIMIT_RESET: &str = "x-ratelimit-reset";

/// Body of `POST /channels/{id}/messages`: the fields of the WebSocket `send` op.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"body": "deploy finished ✅", "nonce": "bot-42", "kind": "text"})))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// Text (1 to the node's maximum characters; may be empty with attachments; ignored
    /// for `forward`).
    #[serde(default)]
    pub body: String,
    /// Client-chosen value echoed in the `message` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// How `body` is read and which reference field applies (default `text`).
    #[serde(default)]
    pub kind: MessageKind,
    /// `reply`: the answered message (same channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// `quote`: the quoted message (same channel) and excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// `forward`: a readable message re-posted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_of: Option<MessageRef>,
    /// The caller's uploads to attach, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentId>,
}

/// Body of `PATCH /channels/{id}/messages/{msg}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"body": "deploy finished ✅ (edited)"})))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// The new text.
    pub body: String,
}

/// Body of `POST /channels/{id}/messages/{msg}/thread`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "deploy 42"})))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartThread {
    /// The thread's name (default: derived from the parent message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Answer of `POST /channels/{id}/messages/{msg}/thread`: the thread of a message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// Channel of the parent message.
    pub channel: ChannelId,
    /// The parent message.
    pub id: MessageId,
    /// Its seq.
    pub seq: Seq,
    /// The thread channel and its counts.
    pub thread: ThreadSummary,
}

/// Body of `PUT /users/me/presence`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"status": "dnd", "custom": "deploying"})))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPresence {
    /// The chosen status.
    pub status: PresenceStatus,
    /// Custom status text (empty or absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
}
