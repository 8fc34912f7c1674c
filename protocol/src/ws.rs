//! The WebSocket protocol spoken at `/ws`: client operations, server events, error codes
//! and close codes.
//!
//! Every frame is one JSON object in a text frame, tagged by its `"type"` field. Unknown
//! fields are ignored (forward compatibility); unknown `type`s are answered with an
//! `error` event whose code is [`ErrorCode::UnknownOp`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AttachmentId, ChannelId, MessageId, Seq, UserId};

/// An operation sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientOp {
    /// First frame of every session: authenticates, and optionally resumes channels.
    Hello {
        /// The opaque token from `POST /api/v1/auth/login` (or the admin provisioning API).
        token: String,
        /// Protocol version the client speaks; defaults to the current one.
        #[serde(default = "default_version")]
        v: u32,
        /// Channels to resume: for each, the last seq the client has seen. The node replays
        /// every message with a larger seq, then continues live with no gap and no duplicate.
        /// Resumed channels are subscribed implicitly.
        #[serde(default, with = "int_key_map")]
        resume: BTreeMap<ChannelId, Seq>,
        /// Subscribe to every channel the user can read (default), or to none and let the
        /// client `subscribe` explicitly.
        #[serde(default = "default_true")]
        subscribe_all: bool,
        /// Put the presence of the user's co-members in `ready` (default). A client that
        /// shows no presence (a bot, a load generator) says false and gets an empty
        /// snapshot — in spaces of thousands it is the largest frame a session receives
        /// (compare Discord's presence intent). Presence events still arrive.
        #[serde(default = "default_true")]
        presence: bool,
    },
    /// Start receiving live messages of channels the user is a member of.
    Subscribe {
        #[serde(default)]
        req_id: Option<u64>,
        channels: Vec<ChannelId>,
    },
    /// Stop receiving live messages of channels.
    Unsubscribe {
        #[serde(default)]
        req_id: Option<u64>,
        channels: Vec<ChannelId>,
    },
    /// Post a message. Answered by `ack` once the message is durable for the phase.
    Send {
        req_id: u64,
        channel: ChannelId,
        body: String,
        /// Client-chosen value echoed in the `message` event, used to match deliveries.
        #[serde(default)]
        nonce: Option<String>,
        /// How `body` is to be read and which reference fields apply (default `text`).
        #[serde(default, skip_serializing_if = "MessageKind::is_text")]
        kind: MessageKind,
        /// `reply`: the message (same channel) this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// `quote`: the quoted message (same channel) and the quoted excerpt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quote: Option<Quote>,
        /// `forward`: a message the user can read, re-posted here keeping its origin.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forward_of: Option<MessageRef>,
        /// Ids of files uploaded with `POST /api/v1/uploads` to attach.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentId>,
    },
    /// Replace the body of one's own message. Answered by `ok`; members get `message_edited`.
    Edit {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        body: String,
    },
    /// Delete one's own message (it stays in history as a tombstone, its seq unchanged).
    /// Answered by `ok`; members get `message_deleted`.
    Delete {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
    },
    /// Add a reaction (unicode emoji or `:name:`); one per user per emoji per message.
    /// Answered by `ok` (also when it was already there); members get `reaction`.
    React {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        emoji: String,
    },
    /// Remove one's reaction. Answered by `ok`; members get `reaction`.
    Unreact {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        emoji: String,
    },
    /// Start a thread on a message: a child channel with its own seqs, readable by the
    /// parent's members. Answered by `thread_created` (also to members); starting a thread
    /// on a message that has one answers with the existing thread.
    StartThread {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// "I am typing in this channel." Ephemeral, never stored, never answered; the node
    /// forwards at most one per user per channel per 3 s.
    Typing { channel: ChannelId },
    /// Set one's presence (and optional custom status text). Answered by `ok` if `req_id`
    /// is given; members of the user's spaces get `presence`.
    SetPresence {
        #[serde(default)]
        req_id: Option<u64>,
        status: PresenceStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        custom: Option<String>,
    },
    /// Ask for the presence of users sharing a space with the caller (at most
    /// [`MAX_PRESENCE_QUERY`]): how clients of large spaces, which get no pushed presence,
    /// learn it. Answered by `presence_list`.
    GetPresence { req_id: u64, users: Vec<UserId> },
    /// Fetch stored messages of a channel by seq range.
    History {
        req_id: u64,
        channel: ChannelId,
        /// Only messages with seq < before.
        #[serde(default)]
        before: Option<Seq>,
        /// Only messages with seq > after.
        #[serde(default)]
        after: Option<Seq>,
        /// At most this many (default 50, max 200).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Application-level ping; answered by `pong` with the same `req_id` and `ts`.
    Ping {
        #[serde(default)]
        req_id: Option<u64>,
        /// Opaque client timestamp echoed back.
        #[serde(default)]
        ts: Option<u64>,
    },
}

impl ClientOp {
    /// A plain `send` of a text message: the common case, without the reference fields.
    pub fn send_text(req_id: u64, channel: ChannelId, body: String, nonce: Option<String>) -> Self {
        ClientOp::Send {
            req_id,
            channel,
            body,
            nonce,
            kind: MessageKind::Text,
            reply_to: None,
            quote: None,
            forward_of: None,
            attachments: Vec::new(),
        }
    }
}

/// JSON object keys are strings; serde's internally tagged enums buffer them as strings,
/// so integer-keyed maps need their keys parsed explicitly.
mod int_key_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<i64, i64>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        map.serialize(ser)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<BTreeMap<i64, i64>, D::Error> {
        let raw = BTreeMap::<String, i64>::deserialize(de)?;
        raw.into_iter()
            .map(|(k, v)| {
                k.parse::<i64>()
                    .map(|k| (k, v))
                    .map_err(|_| D::Error::custom(format!("key {k:?} is not an integer id")))
            })
            .collect()
    }
}

fn default_version() -> u32 {
    crate::PROTOCOL_VERSION
}

fn default_true() -> bool {
    true
}

/// A message as delivered live, replayed on resume, or returned by history.
///
/// Every field after `created_at` is optional on the wire and absent when empty, so a
/// plain text message costs no more than before.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub channel: ChannelId,
    pub seq: Seq,
    pub id: MessageId,
    pub author: UserId,
    /// The body (raw markdown for `markdown`); empty for a deleted message.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Creation time, Unix milliseconds (server clock).
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "MessageKind::is_text")]
    pub kind: MessageKind,
    /// `reply`: the message answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// `quote`: the quoted message and excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// `forward`: where the forwarded message came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_from: Option<Origin>,
    /// Last edit time, Unix ms, if edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// Deletion time, Unix ms: the message is a tombstone (empty body, no attachments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Reaction counts, in order of first use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
    /// The thread started on this message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// How a message's body is read and which of its reference fields are set.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Plain text.
    #[default]
    Text,
    /// Markdown, stored raw (rendering is the client's business).
    Markdown,
    /// An answer to `reply_to` (same channel).
    Reply,
    /// Quotes an excerpt of another message of the same channel.
    Quote,
    /// Re-posts another message, keeping its origin.
    Forward,
}

impl MessageKind {
    /// Whether this is the default kind (skipped on the wire).
    pub fn is_text(&self) -> bool {
        *self == MessageKind::Text
    }
}

/// A message referenced by id, with the channel it lives in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: ChannelId,
    pub id: MessageId,
}

/// A quoted excerpt of a message of the same channel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: MessageId,
    /// The quoted text; must occur in the quoted message's body.
    pub excerpt: String,
}

/// Origin of a forwarded message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub channel: ChannelId,
    pub id: MessageId,
    pub author: UserId,
    pub created_at: i64,
}

/// One emoji's count on a message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: u32,
}

/// Summary of the thread started on a message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadSummary {
    /// The thread's channel id (its messages have their own seqs).
    pub channel: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub replies: u32,
    /// Unix ms of the last reply, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply_at: Option<i64>,
}

/// A file attached to a message (uploaded with `POST /api/v1/uploads`, downloaded with
/// `GET /api/v1/uploads/{id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: AttachmentId,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Hex sha256 of the content (files are stored content-addressed).
    pub sha256: String,
}

/// A user's presence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Idle,
    /// Do not disturb.
    Dnd,
    #[default]
    Offline,
}

/// One user's presence, as in `ready`'s snapshot and in `presence` events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub user_id: UserId,
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
}

/// An event sent by the node.
// `Message` is the hot variant: boxing it would add an allocation per message to make the
// rare variants smaller. Events are built, serialized once and dropped, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Answer to a valid `hello`. Resume replays (as `message` events) follow it.
    Ready {
        v: u32,
        user_id: UserId,
        /// Node that serves this session.
        node_id: String,
        /// Channels the session is subscribed to, with each one's latest seq at subscribe time.
        #[serde(with = "int_key_map")]
        channels: BTreeMap<ChannelId, Seq>,
        /// Interval at which the node pings; a client silent for 2× this is dropped.
        heartbeat_ms: u64,
        /// Presence of every user sharing a space with this one (offline users omitted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        presence: Vec<Presence>,
    },
    /// The message of `send` with this `req_id` is durable and has this id and seq.
    Ack {
        req_id: u64,
        channel: ChannelId,
        id: MessageId,
        seq: Seq,
        created_at: i64,
    },
    /// A message in a subscribed channel (live or replayed).
    Message(Message),
    /// Answer to `subscribe`/`unsubscribe`: the current subscription set change.
    Subscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        /// Each newly subscribed channel with its latest seq.
        #[serde(with = "int_key_map")]
        channels: BTreeMap<ChannelId, Seq>,
    },
    Unsubscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        channels: Vec<ChannelId>,
    },
    /// Answer to `history`, oldest first.
    History {
        req_id: u64,
        channel: ChannelId,
        messages: Vec<Message>,
    },
    /// Answer to `edit`, `delete`, `react`, `unreact` and `set_presence` (with `req_id`).
    Ok { req_id: u64 },
    /// A message was edited (to every member subscribed to the channel).
    MessageEdited {
        channel: ChannelId,
        id: MessageId,
        seq: Seq,
        body: String,
        edited_at: i64,
    },
    /// A message was deleted; it is now a tombstone.
    MessageDeleted {
        channel: ChannelId,
        id: MessageId,
        seq: Seq,
        deleted_at: i64,
    },
    /// A reaction was added (`added`) or removed; `count` is the emoji's new count.
    Reaction {
        channel: ChannelId,
        id: MessageId,
        seq: Seq,
        user_id: UserId,
        emoji: String,
        added: bool,
        count: u32,
    },
    /// A thread exists on a message (answer to `start_thread`, and to members).
    ThreadCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        /// Channel of the parent message.
        channel: ChannelId,
        /// The parent message.
        id: MessageId,
        seq: Seq,
        thread: ThreadSummary,
    },
    /// A thread's summary changed (a reply was posted); to members of the parent channel.
    ThreadUpdated {
        channel: ChannelId,
        id: MessageId,
        seq: Seq,
        thread: ThreadSummary,
    },
    /// Someone is typing in a channel; the indicator expires after `expires_ms`.
    Typing {
        channel: ChannelId,
        user_id: UserId,
        expires_ms: u64,
    },
    /// A user's presence changed (to members of the small spaces they share).
    Presence(Presence),
    /// Answer to `get_presence`: those of the asked users (sharing a space with the
    /// caller) who are not offline.
    PresenceList {
        req_id: u64,
        presence: Vec<Presence>,
    },
    /// A request failed; the session stays open unless a close frame follows.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        code: ErrorCode,
        message: String,
        /// With `rate_limited`: milliseconds until the action would be allowed again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
}

/// Stable, machine-readable error codes (serialized in snake_case). Shared by the
/// WebSocket `error` event and the HTTP API's `{code, message}` bodies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, or a field had the wrong type.
    BadRequest,
    /// The `type` is not an operation this node knows.
    UnknownOp,
    /// An operation other than `hello` before `hello`, or a second `hello`.
    NotAuthenticated,
    /// The token is unknown, expired or revoked.
    InvalidToken,
    /// The user is not a member of the channel or space.
    Forbidden,
    /// The channel, space, user or message does not exist.
    NotFound,
    /// A body or name is empty or longer than allowed.
    TooLong,
    /// JSON nested deeper than allowed.
    TooDeep,
    /// A name is already taken.
    Conflict,
    /// The protocol version in `hello` is not supported.
    UnsupportedVersion,
    /// The client sent too much too fast.
    RateLimited,
    /// Storage is unavailable; nothing was acked, the client may retry.
    Unavailable,
    /// Anything else; details are in the node's log.
    Internal,
    /// Log in refused: unknown user or wrong password (HTTP 401).
    InvalidCredentials,
    /// A reference (reply, quote, forward, attachment, thread parent) is invalid: wrong
    /// channel, excerpt not in the message, deleted message, ...
    InvalidReference,
    /// An upload's content type is not allowed (HTTP 415).
    UnsupportedType,
    /// An upload is larger than the node's limit (HTTP 413).
    TooLarge,
}

/// Most users one `get_presence` may ask about.
pub const MAX_PRESENCE_QUERY: usize = 1000;

/// WebSocket close codes used by the node (4000–4999 is the range reserved for
/// applications by RFC 6455).
pub mod close {
    /// The node is shutting down (SIGTERM); reconnect elsewhere or later.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke RFC 6455 framing: an unmasked frame, non-zero RSV bits, a
    /// reserved opcode, a continuation frame without a start (or a new message inside a
    /// fragmented one), a fragmented or over-125-byte control frame.
    pub const WS_PROTOCOL_VIOLATION: u16 = 1002;
    /// A text frame (or a message of text fragments) that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame larger than the maximum frame size.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// No valid `hello` within the authentication deadline (5 s).
    pub const AUTH_TIMEOUT: u16 = 4001;
    /// `hello` carried an invalid token.
    pub const AUTH_FAILED: u16 = 4002;
    /// The client did not read fast enough and its outbound queue filled up.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The client stopped answering pings.
    pub const HEARTBEAT_TIMEOUT: u16 = 4009;
    /// The client sent frames that could not be handled, repeatedly or fatally
    /// (binary frames, excessive nesting).
    pub const PROTOCOL_ERROR: u16 = 4010;
    /// The client's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4011;
    /// The session's token was revoked (log out).
    pub const LOGGED_OUT: u16 = 4012;
    /// The node could not finish subscribing (storage failed after the seqs were
    /// announced, so it cannot replay what the client would miss): reconnect and resume
    /// from the last seq received. Nothing after a gap was written.
    pub const TRY_AGAIN: u16 = 4013;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ops_round_trip() {
        let ops = [
            ClientOp::Hello {
                token: "t".into(),
                v: 1,
                resume: BTreeMap::from([(3, 41)]),
                subscribe_all: true,
                presence: true,
            },
            ClientOp::Send {
                req_id: 7,
                channel: 3,
                body: "hi".into(),
                nonce: Some("n".into()),
                kind: MessageKind::Quote,
                reply_to: None,
                quote: Some(Quote {
                    id: 4,
                    excerpt: "x".into(),
                }),
                forward_of: None,
                attachments: vec![9],
            },
            ClientOp::SetPresence {
                req_id: None,
                status: PresenceStatus::Dnd,
                custom: Some("busy".into()),
            },
            ClientOp::Typing { channel: 3 },
            ClientOp::History {
                req_id: 8,
                channel: 3,
                before: Some(100),
                after: None,
                limit: Some(20),
            },
        ];
        for op in ops {
            let text = serde_json::to_string(&op).unwrap();
            let back: ClientOp = serde_json::from_str(&text).unwrap();
            assert_eq!(op, back, "{text}");
        }
    }

    #[test]
    fn hello_defaults_and_resume_keys() {
        let op: ClientOp =
            serde_json::from_str(r#"{"type":"hello","token":"x","resume":{"12":5}}"#).unwrap();
        assert_eq!(
            op,
            ClientOp::Hello {
                token: "x".into(),
                v: crate::PROTOCOL_VERSION,
                resume: BTreeMap::from([(12, 5)]),
                subscribe_all: true,
                presence: true,
            }
        );
    }

    #[test]
    fn message_event_is_flat() {
        let ev = ServerEvent::Message(Message {
            channel: 1,
            seq: 2,
            id: 3,
            author: 4,
            body: "b".into(),
            nonce: None,
            created_at: 5,
            ..Message::default()
        });
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 2);
        assert!(v.get("nonce").is_none());
        // A plain text message carries none of the optional feature fields.
        assert_eq!(v.as_object().map(|o| o.len()), Some(7), "{v}");
        assert_eq!(serde_json::from_value::<ServerEvent>(v).unwrap(), ev);
    }

    #[test]
    fn ready_channels_round_trip() {
        let ev = ServerEvent::Ready {
            v: 1,
            user_id: 9,
            node_id: "node1".into(),
            channels: BTreeMap::from([(3, 0), (12, 41)]),
            heartbeat_ms: 15_000,
            presence: vec![Presence {
                user_id: 2,
                status: PresenceStatus::Idle,
                custom: None,
            }],
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(r#""12":41"#), "{text}");
        assert_eq!(serde_json::from_str::<ServerEvent>(&text).unwrap(), ev);
        let bad = r#"{"type":"subscribed","channels":{"x":1}}"#;
        assert!(serde_json::from_str::<ServerEvent>(bad).is_err());
    }

    #[test]
    fn error_codes_are_snake_case() {
        let v = serde_json::to_value(ErrorCode::UnknownOp).unwrap();
        assert_eq!(v, "unknown_op");
    }
}
