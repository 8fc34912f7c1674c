//! The WebSocket protocol spoken at `/ws`: client operations, server events, error codes
//! and close codes.
//!
//! Every frame is one JSON object in a text frame, tagged by its `"type"` field. Unknown
//! fields are ignored (forward compatibility); unknown `type`s are answered with an
//! `error` event whose code is [`ErrorCode::UnknownOp`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ChannelId, MessageId, Seq, UserId};

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
    },
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub channel: ChannelId,
    pub seq: Seq,
    pub id: MessageId,
    pub author: UserId,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Creation time, Unix milliseconds (server clock).
    pub created_at: i64,
}

/// An event sent by the node.
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
    /// A request failed; the session stays open unless a close frame follows.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        code: ErrorCode,
        message: String,
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
}

/// WebSocket close codes used by the node (4000–4999 is the range reserved for
/// applications by RFC 6455).
pub mod close {
    /// The node is shutting down (SIGTERM); reconnect elsewhere or later.
    pub const GOING_AWAY: u16 = 1001;
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
            },
            ClientOp::Send {
                req_id: 7,
                channel: 3,
                body: "hi".into(),
                nonce: Some("n".into()),
            },
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
                subscribe_all: true
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
        });
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 2);
        assert!(v.get("nonce").is_none());
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
