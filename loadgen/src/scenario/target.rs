//! The generic WebSocket target's typed form (`[target] kind = "websocket"`): URLs,
//! frame templates, what to check and how to read ids and times out of received frames.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the load generator talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The reference chat cluster (Flowline protocol).
    #[default]
    Flowline,
    /// Any WebSocket service, driven by frame templates.
    Websocket,
}

/// Correctness the generic target can check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Only latency and counts.
    #[default]
    None,
    /// Every sent frame comes back to its sender.
    Echo,
    /// Every frame reaches every other member of the sender's room.
    Room,
}

/// Unit of a send time placeholder / matched time field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Unix time, milliseconds.
    UnixMs,
    /// Unix time, microseconds.
    #[default]
    UnixUs,
    /// Nanoseconds of the loadgen's monotonic clock since the run's common start.
    MonoNs,
}

/// A generic WebSocket target (`[target] kind = "websocket"`).
#[derive(Debug, Clone, PartialEq)]
pub struct WsTarget {
    /// URLs; user `i` uses `urls[i % len]`.
    pub urls: Vec<String>,
    /// Extra handshake headers.
    pub headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Protocol` to ask for.
    pub subprotocol: Option<String>,
    /// Frame sent once after connecting (template).
    pub hello: Option<String>,
    /// Frame sent at the persona's rate (template).
    pub message: String,
    /// Correctness check.
    pub expect: Expect,
    /// Room key template (users with the same rendered key share a room).
    pub room: String,
    /// Users per room: `{room}` is `user / room_size`.
    pub room_size: u32,
    /// A member is due a room's frames sent at least this long after it connected.
    pub join_grace: Duration,
    /// JSON pointer to the message id in received frames.
    pub match_id: Option<String>,
    /// JSON pointer to the send time in received frames.
    pub match_time: Option<String>,
    /// Unit of the matched send time.
    pub time_unit: TimeUnit,
    /// Regex with named groups `id` and/or `time` for text frames (instead of pointers).
    pub match_regex: Option<String>,
}

/// Placeholders a frame template may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "user", "seq", "msg_id", "unix_ms", "unix_us", "mono_ns", "room", "room_key",
];

/// Names of the `{…}` placeholders in a template (`{{`/`}}` are literal braces).
pub fn template_names(t: &str) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if b.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let rest = &t[i + 1..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` at byte {i}"))?;
                out.push(&rest[..end]);
                i += end + 2;
            }
            b'}' => return Err(format!("lone `}}` at byte {i} (write `}}}}`)")),
            _ => i += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
impl WsTarget {
    /// A small echo/room target for unit tests.
    pub(crate) fn example(expect: Expect) -> WsTarget {
        WsTarget {
            urls: vec!["ws://127.0.0.1:1/".into()],
            headers: vec![],
            subprotocol: None,
            hello: None,
            message: "{msg_id}".into(),
            expect,
            room: "r{room}".into(),
            room_size: 3,
            join_grace: Duration::from_millis(100),
            match_id: Some("/id".into()),
            match_time: None,
            time_unit: TimeUnit::UnixUs,
            match_regex: None,
        }
    }
}
