//! One session's lifetime: [`serve`] starts the writer task, runs the reader loop
//! (frames in, limits, the authentication deadline, the idle check), and tears the
//! session down (hub, presence, logout registry) when either side ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::Message as WsMessage;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use flowline_protocol::ChannelId;
use flowline_protocol::api::User;
use flowline_protocol::ws::{ErrorCode, ServerEvent, close};

use super::writer::{WriterConfig, write_loop};
use crate::auth::TokenHash;
use crate::clock::now_ms;
use crate::hub::{Outbound, SessionId, SessionShared, Subscriber, offer};
use crate::membership::Access;
use crate::node::Node;
use crate::refusal::Refusal;

/// How long we wait for the peer's close frame after sending ours.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve one upgraded WebSocket until either side closes it.
pub(crate) async fn serve<Si, St>(node: Arc<Node>, sink: Si, stream: St)
where
    Si: Sink<WsMessage> + Send + Unpin + 'static,
    St: Stream<Item = Result<WsMessage, axum::Error>> + Send + Unpin,
{
    let id = node.sessions.next_id();
    node.metrics.connections_total.increment(1);
    node.metrics.connections.increment(1.0);
    // Fan-out may fill `outbound_queue` slots, the session's own answers as many again
    // (see `Session::queue`).
    let (tx, rx) = mpsc::channel(2 * node.config.limits.outbound_queue);
    let shared = Arc::new(SessionShared::new(now_ms()));
    let writer = tokio::spawn(write_loop(
        WriterConfig {
            metrics: node.metrics.clone(),
            heartbeat: node.config.heartbeat,
            write_timeout: node.config.write_timeout,
            max_held: node.config.limits.outbound_queue,
            shutdown: node.shutdown.clone(),
        },
        sink,
        rx,
        shared.clone(),
    ));
    let mut session = Session {
        node: node.clone(),
        id,
        sub: Subscriber { tx, shared },
        user: None,
        token: None,
        access: Access::default(),
        subscribed: HashSet::new(),
        idle_at: Instant::now() + node.roster.idle_after(),
    };
    let mut stream = stream;
    let code = session.read_loop(&mut stream).await;
    session.sub.shared.kick(code);
    session.finish();
    drop(session);
    let mut writer = writer;
    if tokio::time::timeout(node.config.write_timeout, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    // We sent a close frame: give the peer a moment to answer it before the TCP
    // connection goes, so it reads our close code instead of a reset.
    if code != 0 {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    node.metrics.connections.decrement(1.0);
}

/// The close code answering a failed read (RFC 6455 §7.4.1): 1009 for a message over
/// the size limit, 1007 for text that is not UTF-8, 1002 for broken framing; 0 (no close
/// frame) when the connection itself went (reset, I/O error). After such an error
/// tungstenite reads no more but can still write, so the client gets the code.
fn read_error_close(e: axum::Error) -> u16 {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let Ok(e) = e.into_inner().downcast::<WsError>() else {
        return 0;
    };
    match *e {
        WsError::Capacity(_) => close::MESSAGE_TOO_BIG,
        WsError::Utf8(_) => close::INVALID_PAYLOAD,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => 0,
        WsError::Protocol(_) => close::WS_PROTOCOL_VIOLATION,
        _ => 0,
    }
}

/// The reader's state of one session.
pub(super) struct Session {
    pub(super) node: Arc<Node>,
    pub(super) id: SessionId,
    pub(super) sub: Subscriber,
    /// Set by a successful `hello`.
    pub(super) user: Option<User>,
    pub(super) token: Option<TokenHash>,
    /// The user and the channels they were found to read (cached for the session).
    pub(super) access: Access,
    pub(super) subscribed: HashSet<ChannelId>,
    /// When to check whether the user went idle.
    pub(super) idle_at: Instant,
}

/// What handling one frame asks of the session: go on, or close with this code.
pub(super) type Flow = Result<(), u16>;

impl Session {
    /// Read frames until the peer leaves or a close is decided; returns the close code
    /// (0: close without a frame of ours).
    async fn read_loop<St>(&mut self, stream: &mut St) -> u16
    where
        St: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
    {
        let shared = self.sub.shared.clone();
        let deadline = Instant::now() + self.node.config.auth_timeout;
        // Created once: re-registering a waiter on every frame costs a lock each time.
        let kicked = shared.kicked();
        tokio::pin!(kicked);
        loop {
            let next = tokio::select! {
                code = &mut kicked => return code,
                () = tokio::time::sleep_until(deadline), if self.user.is_none() => {
                    self.node.metrics.auth_timeouts.increment(1);
                    return close::AUTH_TIMEOUT;
                }
                () = tokio::time::sleep_until(self.idle_at), if self.user.is_some() => {
                    if let Some(user) = self.user.as_ref().map(|u| u.id) {
                        self.idle_at = self.node.roster.idle_check(user).await;
                    }
                    continue;
                }
                next = stream.next() => next,
            };
            let msg = match next {
                None => return 0,
                Some(Err(e)) => return read_error_close(e),
                Some(Ok(m)) => m,
            };
            shared.last_seen_ms.store(now_ms(), Ordering::Relaxed);
            let flow = match msg {
                // Boxed: the op handlers' state is large and only needed while a frame is
                // handled, not by every idle session.
                WsMessage::Text(text) => Box::pin(self.on_text(&text)).await,
                WsMessage::Binary(_) => {
                    self.error(
                        None,
                        ErrorCode::BadRequest,
                        "binary frames are not part of the protocol",
                    )
                    .await;
                    Err(close::PROTOCOL_ERROR)
                }
                WsMessage::Close(_) => return 0,
                WsMessage::Ping(_) | WsMessage::Pong(_) => Ok(()),
            };
            if let Err(code) = flow {
                return code;
            }
        }
    }

    /// Leave the hub, presence and the logout registry.
    fn finish(&mut self) {
        let channels: Vec<ChannelId> = self.subscribed.drain().collect();
        self.node.hub.unsubscribe(self.id, &channels);
        if let Some(user) = &self.user {
            self.node.hub.unregister_user(user.id, self.id);
            self.node.roster.disconnect(user.id);
        }
        if let Some(token) = self.token {
            self.node.sessions.forget(token, self.id);
        }
    }

    /// Queue an answer to the client's own request (or a `Hold`/`Replay` of its own
    /// subscription) for the writer. The session's own items may occupy only the first
    /// `outbound_queue` slots of its queue, so fan-out always finds as many again free:
    /// while that many items wait, the reader waits for the writer, and so stops reading
    /// the socket. A client that pipelines requests faster than it reads the answers is
    /// slowed down, never cut off; only fan-out it fails to drain makes it a slow consumer.
    /// Returns false if the item was not queued (the session is ending).
    pub(super) async fn queue(&self, item: Outbound) -> bool {
        let room = self.node.config.limits.outbound_queue;
        let tx = &self.sub.tx;
        let shared = &self.sub.shared;
        if tx.max_capacity() - tx.capacity() >= room {
            loop {
                // Register before checking, so a drain between the check and the await
                // is seen.
                let drained = shared.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if tx.max_capacity() - tx.capacity() < room {
                    break;
                }
                tokio::select! {
                    () = drained => {}
                    _ = shared.kicked() => return false,
                }
            }
        }
        offer(&self.sub, item, &self.node.metrics)
    }

    /// Queue one event for this session.
    pub(super) async fn event(&self, ev: &ServerEvent) {
        match serde_json::to_string(ev) {
            Ok(text) => {
                self.queue(Outbound::Direct(Box::new(text.into()))).await;
            }
            Err(e) => tracing::error!(error = %e, "serializing an event"),
        }
    }

    /// Answer a client mistake with an `error` event.
    pub(super) async fn error(
        &self,
        req_id: Option<u64>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        self.node.metrics.client_errors.increment(1);
        self.event(&ServerEvent::Error {
            req_id,
            code,
            message: message.into(),
            retry_after_ms: None,
        })
        .await;
    }

    /// Answer a refused operation: counted as a storage error when storage failed, as a
    /// client error otherwise.
    pub(super) async fn refuse(&self, req_id: Option<u64>, r: Refusal) {
        if r.code == ErrorCode::Unavailable {
            self.node.metrics.storage_errors.increment(1);
            self.event(&ServerEvent::Error {
                req_id,
                code: r.code,
                message: r.message,
                retry_after_ms: None,
            })
            .await;
        } else {
            self.error(req_id, r.code, r.message).await;
        }
    }
}
