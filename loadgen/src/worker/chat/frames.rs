//! The chat protocol as a simulated user speaks it: ops written as text frames, `ready`
//! awaited after `hello`, and a borrowed [`Peek`] at the few fields of a server frame the
//! hot path needs; the nonce every `send` carries holds its intended send time.

use std::collections::BTreeMap;
use std::time::Duration;

use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_protocol::{ChannelId, MessageId, Seq};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::worker::connect::Ws;

/// The fields of a server frame the worker's hot path needs; everything else (the body,
/// `ready`'s channel map) is skipped without being copied.
#[derive(Debug, Deserialize)]
pub struct Peek<'a> {
    /// The event's `type`.
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// `message`/`ack`: channel.
    #[serde(default)]
    pub channel: Option<ChannelId>,
    /// `message`/`ack`: seq in the channel.
    #[serde(default)]
    pub seq: Option<Seq>,
    /// `message`/`ack`: message id.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// `message` of kind `reply`: the message answered.
    #[serde(default)]
    pub reply_to: Option<MessageId>,
    /// `ack`/`error`: request id.
    #[serde(default)]
    pub req_id: Option<u64>,
    /// `message`: the sender's nonce.
    #[serde(default, borrow)]
    pub nonce: Option<&'a str>,
    /// `error`: code.
    #[serde(default)]
    pub code: Option<flowline_protocol::ws::ErrorCode>,
}

pub use crate::nonce::{nonce, parse_nonce};

const BODY: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";

/// A message body of `len` bytes.
pub(super) fn body(len: usize) -> String {
    BODY.chars().cycle().take(len).collect()
}

/// Write one client op as a text frame.
pub(super) async fn send_op(ws: &mut Ws, op: &ClientOp) -> std::result::Result<(), ()> {
    let text = serde_json::to_string(op).map_err(|_| ())?;
    ws.send(Message::text(text)).await.map_err(|_| ())
}

/// Wait for `ready`: (channels with their seq, heartbeat).
pub(super) async fn wait_ready(
    ws: &mut Ws,
) -> std::result::Result<(BTreeMap<ChannelId, Seq>, Option<Duration>), &'static str> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerEvent>(&text) {
                Ok(ServerEvent::Ready {
                    channels,
                    heartbeat_ms,
                    ..
                }) => {
                    let hb = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
                    return Ok((channels, hb));
                }
                Ok(ServerEvent::Error { .. }) => return Err("hello_refused"),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None => return Err("hello_closed"),
            Some(Ok(_)) => {}
            Some(Err(_)) => return Err("ws_read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_a_message_frame() {
        let ev = flowline_protocol::ws::ServerEvent::Message(flowline_protocol::ws::Message {
            channel: 3,
            seq: 9,
            id: 77,
            author: 5,
            body: "with \"escapes\" and ünïcode".into(),
            nonce: Some(nonce(4, 2, 123)),
            created_at: 1,
            ..Default::default()
        });
        let text = serde_json::to_string(&ev).unwrap();
        let p: Peek<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (p.kind, p.channel, p.seq, p.id),
            ("message", Some(3), Some(9), Some(77))
        );
        assert_eq!(p.nonce.and_then(parse_nonce), Some((4, 2, 123)));
    }
}
