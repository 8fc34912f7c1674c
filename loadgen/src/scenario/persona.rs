//! Personas: the kinds of user behaviour a scenario mixes (`[[personas]]`), typed, and the
//! HTTP kinds a persona may run on goose instead of a WebSocket.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::dist::Dist;

/// A kind of user behaviour; each user gets one, drawn by weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// Name shown in summaries.
    pub name: String,
    /// Relative weight when assigning personas to users.
    pub weight: f64,
    /// Mean message rate per user (Poisson) in the closed model.
    pub messages_per_minute: f64,
    /// Body size in bytes.
    pub body_bytes: Dist,
    /// History fetches per minute (WebSocket `history`).
    pub history_per_minute: f64,
    /// Close the connection and resume this often (churn); `None`: stay connected.
    pub reconnect_every: Option<Duration>,
    /// Send `typing` before every message.
    pub typing: bool,
    /// Reactions per minute (`react` on the latest message seen).
    pub reactions_per_minute: f64,
    /// Share of messages that are thread replies (`start_thread` once, then sends into
    /// the thread channel).
    pub thread_reply_share: f64,
    /// Presence changes per minute (`set_presence`).
    pub presence_per_minute: f64,
    /// Attachment uploads per minute (`POST /api/v1/uploads`, then a `send` carrying it).
    pub uploads_per_minute: f64,
    /// An HTTP persona: its users run on goose (no WebSocket).
    pub http: Option<HttpKind>,
    /// HTTP persona: requests per minute per user.
    pub requests_per_minute: f64,
    /// `http = "bot"`: share of posts sent a second time with the same `Idempotency-Key`
    /// (the node must answer the first result and post nothing).
    pub retry_share: f64,
}

impl Persona {
    pub(super) fn default_named(name: &str) -> Self {
        Persona {
            name: name.into(),
            weight: 1.0,
            messages_per_minute: 2.0,
            body_bytes: Dist::fixed(100.0),
            history_per_minute: 0.0,
            reconnect_every: None,
            typing: false,
            reactions_per_minute: 0.0,
            thread_reply_share: 0.0,
            presence_per_minute: 0.0,
            uploads_per_minute: 0.0,
            http: None,
            requests_per_minute: 60.0,
            retry_share: 0.0,
        }
    }
}

/// What an HTTP persona does (run on goose instead of a WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpKind {
    /// Sign up once, then log in again and again (`POST /api/v1/auth/login`).
    Login,
    /// Page back through channel history (`GET /api/v1/channels/{id}/messages?before=`).
    History,
    /// Upload files (`POST /api/v1/uploads`).
    Upload,
    /// A well-behaved bot: post (with `Idempotency-Key`, some posts retried with the same
    /// key), edit its post and react to it over HTTP, waiting out `Retry-After` on a 429.
    Bot,
    /// A flooder: post into one channel far over the rate limits, ignoring 429s.
    Flood,
}

impl HttpKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpKind::Login => "login",
            HttpKind::History => "history",
            HttpKind::Upload => "upload",
            HttpKind::Bot => "bot",
            HttpKind::Flood => "flood",
        }
    }

    /// Whether its users post chat messages (recorded for the checker like WebSocket
    /// sends).
    pub fn posts(self) -> bool {
        matches!(self, HttpKind::Bot | HttpKind::Flood)
    }
}
