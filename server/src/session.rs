//! One WebSocket session at `/ws`: a reader (this task) that parses client operations and
//! a writer task that owns the socket's sending half.
//!
//! ```text
//!  socket ──► reader: parse, limits, hello/subscribe/send/history/ping ──┐
//!                         │ acks, errors, ready (try_send)                 │ kick(code)
//!                         ▼                                                ▼
//!  hub fan-out ──► bounded queue (Outbound) ──► writer: resume de-dup, pings, close frames ──► socket
//! ```
//!
//! Both halves are generic over `Sink`/`Stream` so they can be driven without a socket.
//! Whoever ends first calls [`SessionShared::kick`]; the other follows.
//!
//! Resume without gap or duplicate: for each channel the reader first queues `Hold`, reads
//! the latest seqs and queues the announcement (`ready`/`subscribed`), then subscribes at
//! the hub (live messages are now held by the writer), then reads storage again (the
//! latest seq, and every message after the client's seq, or after the announced one),
//! then queues `Replay`; the writer writes the replayed messages and then the held live
//! ones whose seq is higher, dropping the overlap. Announcing before subscribing keeps
//! every other event of the channels after the announcement.

pub(crate) mod ops;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use flowline_protocol::api::User;
use flowline_protocol::ws::{ClientOp, ErrorCode, ServerEvent, close};
use flowline_protocol::{ChannelId, PROTOCOL_VERSION, Seq};

use crate::app::{App, now_ms};
use crate::auth::{TokenHash, token_hash};
use crate::hub::{Outbound, Replay, SessionId, SessionShared, Subscriber, offer};

/// Frames written per flush at most (batching amortises syscalls under fan-out).
const WRITE_BATCH: usize = 64;
/// Messages read from storage per page while replaying a resume.
const REPLAY_PAGE: u32 = 500;
/// Longest client nonce, bytes.
const MAX_NONCE: usize = 128;
/// Default `history` page.
const DEFAULT_HISTORY: u32 = 50;
/// How long we wait for the peer's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Serve one upgraded WebSocket until either side closes it.
pub(crate) async fn serve<Si, St>(app: Arc<App>, sink: Si, stream: St)
where
    Si: Sink<WsMessage> + Send + Unpin + 'static,
    St: Stream<Item = Result<WsMessage, axum::Error>> + Send + Unpin,
{
    let id = app.next_session.fetch_add(1, Ordering::Relaxed);
    app.metrics.connections_total.increment(1);
    app.metrics.connections.increment(1.0);
    let (tx, rx) = mpsc::channel(app.config.limits.outbound_queue);
    let shared = Arc::new(SessionShared::new(now_ms()));
    let writer = tokio::spawn(write_loop(app.clone(), sink, rx, shared.clone()));
    let mut session = Session {
        app: app.clone(),
        id,
        sub: Subscriber { tx, shared },
        user: None,
        token: None,
        subscribed: HashSet::new(),
        readable: HashSet::new(),
        idle_at: Instant::now() + app.config.features.idle_after,
    };
    let mut stream = stream;
    let code = session.read_loop(&mut stream).await;
    session.sub.shared.kick(code);
    session.finish();
    drop(session);
    let mut writer = writer;
    if tokio::time::timeout(app.config.write_timeout, &mut writer)
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
    app.metrics.connections.decrement(1.0);
}

struct Session {
    app: Arc<App>,
    id: SessionId,
    sub: Subscriber,
    user: Option<User>,
    token: Option<TokenHash>,
    subscribed: HashSet<ChannelId>,
    /// Channels this session has been authorized to read (cached for the session).
    readable: HashSet<ChannelId>,
    /// When to check whether the user went idle.
    idle_at: Instant,
}

/// What handling one frame asks of the session.
type Flow = Result<(), u16>;

impl Session {
    /// Read frames until the peer leaves or a close is decided; returns the close code
    /// (0: close without a frame of ours).
    async fn read_loop<St>(&mut self, stream: &mut St) -> u16
    where
        St: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
    {
        let shared = self.sub.shared.clone();
        let deadline = Instant::now() + self.app.config.auth_timeout;
        // Created once: re-registering a waiter on every frame costs a lock each time.
        let kicked = shared.kicked();
        tokio::pin!(kicked);
        loop {
            let next = tokio::select! {
                code = &mut kicked => return code,
                () = tokio::time::sleep_until(deadline), if self.user.is_none() => {
                    self.app.metrics.auth_timeouts.increment(1);
                    return close::AUTH_TIMEOUT;
                }
                () = tokio::time::sleep_until(self.idle_at), if self.user.is_some() => {
                    if let Some(user) = self.user.as_ref().map(|u| u.id) {
                        self.presence_idle_check(user).await;
                    }
                    continue;
                }
                next = stream.next() => next,
            };
            let msg = match next {
                None => return 0,
                Some(Err(e)) => {
                    let text = e.to_string();
                    // tungstenite's capacity error: a message above max_message_size.
                    if text.contains("too long") || text.contains("Space limit") {
                        return close::MESSAGE_TOO_BIG;
                    }
                    return 0;
                }
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
                    );
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

    /// Leave the hub and the logout registry.
    fn finish(&mut self) {
        let channels: Vec<ChannelId> = self.subscribed.drain().collect();
        self.app.hub.unsubscribe(self.id, &channels);
        if let Some(user) = &self.user {
            self.app.hub.unregister_user(user.id, self.id);
            ops::presence_on_disconnect(&self.app, user.id);
        }
        if let Some(token) = self.token {
            self.app.forget_session(token, self.id);
        }
    }

    fn queue(&self, item: Outbound) -> bool {
        offer(&self.sub, item, &self.app.metrics)
    }

    fn event(&self, ev: &ServerEvent) {
        match serde_json::to_string(ev) {
            Ok(text) => {
                self.queue(Outbound::Direct(Box::new(text.into())));
            }
            Err(e) => tracing::error!(error = %e, "serializing an event"),
        }
    }

    fn error(&self, req_id: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.app.metrics.client_errors.increment(1);
        self.event(&ServerEvent::Error {
            req_id,
            code,
            message: message.into(),
        });
    }

    fn unavailable(&self, req_id: Option<u64>, e: &dyn std::fmt::Display) {
        self.app.metrics.storage_errors.increment(1);
        tracing::warn!(error = %e, "storage failed during a session");
        self.event(&ServerEvent::Error {
            req_id,
            code: ErrorCode::Unavailable,
            message: "storage is unavailable; nothing was done, retry later".into(),
        });
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let max_depth = self.app.config.limits.max_json_depth;
        if json_depth_exceeds(text, max_depth) {
            self.error(
                probe_req_id(text),
                ErrorCode::TooDeep,
                format!("JSON nested deeper than {max_depth}"),
            );
            return Err(close::PROTOCOL_ERROR);
        }
        let op = match serde_json::from_str::<ClientOp>(text) {
            Ok(op) => op,
            Err(e) => {
                let (code, msg) = classify_bad_frame(text, &e);
                self.error(probe_req_id(text), code, msg);
                return Ok(());
            }
        };
        let Some(user) = self.user.clone() else {
            return match op {
                ClientOp::Hello {
                    token,
                    v,
                    resume,
                    subscribe_all,
                    presence,
                } => self.hello(&token, v, resume, subscribe_all, presence).await,
                _ => {
                    self.error(
                        op_req_id(&op),
                        ErrorCode::NotAuthenticated,
                        "send `hello` with a token first",
                    );
                    Ok(())
                }
            };
        };
        if !matches!(op, ClientOp::Ping { .. }) {
            self.idle_at = Instant::now() + self.app.config.features.idle_after;
            self.presence_activity(user.id).await;
        }
        match op {
            ClientOp::Hello { .. } => {
                self.error(None, ErrorCode::NotAuthenticated, "already authenticated");
            }
            ClientOp::Subscribe { req_id, channels } => {
                self.subscribe(&user, req_id, channels).await
            }
            ClientOp::Unsubscribe { req_id, channels } => {
                self.app.hub.unsubscribe(self.id, &channels);
                for c in &channels {
                    self.subscribed.remove(c);
                }
                self.event(&ServerEvent::Unsubscribed { req_id, channels });
            }
            ClientOp::Send {
                req_id,
                channel,
                body,
                nonce,
                kind,
                reply_to,
                quote,
                forward_of,
                attachments,
            } => {
                let op = ops::SendOp {
                    req_id,
                    channel,
                    body,
                    nonce,
                    kind,
                    reply_to,
                    quote,
                    forward_of,
                    attachments,
                };
                self.send(&user, op).await;
            }
            ClientOp::Edit {
                req_id,
                channel,
                id,
                body,
            } => self.edit(&user, req_id, channel, id, body).await,
            ClientOp::Delete {
                req_id,
                channel,
                id,
            } => self.delete(&user, req_id, channel, id).await,
            ClientOp::React {
                req_id,
                channel,
                id,
                emoji,
            } => self.react(&user, req_id, channel, id, emoji, true).await,
            ClientOp::Unreact {
                req_id,
                channel,
                id,
                emoji,
            } => self.react(&user, req_id, channel, id, emoji, false).await,
            ClientOp::StartThread {
                req_id,
                channel,
                id,
                name,
            } => self.start_thread(&user, req_id, channel, id, name).await,
            ClientOp::Typing { channel } => self.typing(&user, channel).await,
            ClientOp::SetPresence {
                req_id,
                status,
                custom,
            } => self.set_presence(&user, req_id, status, custom).await,
            ClientOp::History {
                req_id,
                channel,
                before,
                after,
                limit,
            } => {
                self.history(&user, req_id, channel, before, after, limit)
                    .await
            }
            ClientOp::Ping { req_id, ts } => self.event(&ServerEvent::Pong { req_id, ts }),
        }
        Ok(())
    }

    async fn hello(
        &mut self,
        token: &str,
        v: u32,
        resume: BTreeMap<ChannelId, Seq>,
        subscribe_all: bool,
        want_presence: bool,
    ) -> Flow {
        if v != PROTOCOL_VERSION {
            self.error(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported (this node speaks {PROTOCOL_VERSION})"
                ),
            );
            return Err(close::UNSUPPORTED_VERSION);
        }
        let hash = token_hash(token);
        let user = match self.app.storage.user_by_token(hash).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                self.error(None, ErrorCode::InvalidToken, "unknown or revoked token");
                return Err(close::AUTH_FAILED);
            }
            Err(e) => {
                self.unavailable(None, &e);
                return Ok(());
            }
        };
        let storage = self.app.storage.clone();
        let mut channels = if subscribe_all {
            match storage.readable_channels(user.id).await {
                Ok(c) => c,
                Err(e) => {
                    self.unavailable(None, &e);
                    return Ok(());
                }
            }
        } else {
            Vec::new()
        };
        self.readable.extend(channels.iter().copied());
        let mut refused = Vec::new();
        for &c in resume.keys() {
            if self.readable.contains(&c) {
                continue;
            }
            match storage.can_read(c, user.id).await {
                Ok(true) => {
                    self.readable.insert(c);
                    channels.push(c);
                }
                Ok(false) => refused.push(c),
                Err(e) => {
                    self.unavailable(None, &e);
                    return Ok(());
                }
            }
        }
        self.user = Some(user.clone());
        self.token = Some(hash);
        self.app
            .remember_session(hash, self.id, self.sub.shared.clone());
        self.app.metrics.sessions_authenticated.increment(1);
        let heartbeat_ms = u64::try_from(self.app.config.heartbeat.as_millis()).unwrap_or(u64::MAX);
        let node_id = self.app.config.node_id.clone();
        self.idle_at = Instant::now() + self.app.config.features.idle_after;
        let (presence, change) = self.presence_on_connect(user.id, want_presence).await;
        let result = self
            .attach(&channels, &resume, |seqs| ServerEvent::Ready {
                v: PROTOCOL_VERSION,
                user_id: user.id,
                node_id,
                channels: seqs,
                heartbeat_ms,
                presence,
            })
            .await;
        if let Err(e) = result {
            self.unavailable(None, &e);
        }
        // Events for the user (presence) start after `ready` is queued, so none precedes it.
        self.app.hub.register_user(user.id, self.id, &self.sub);
        if let Some(p) = change {
            ops::announce_presence(&self.app, p).await;
        }
        for c in refused {
            self.error(
                None,
                ErrorCode::Forbidden,
                format!("cannot resume channel {c}: not a member"),
            );
        }
        Ok(())
    }

    /// Subscribe to `channels` and queue `announce(latest seqs)` followed by the replay of
    /// every resumed channel (see the module doc for why this order has no gap).
    async fn attach(
        &mut self,
        channels: &[ChannelId],
        resume: &BTreeMap<ChannelId, Seq>,
        announce: impl FnOnce(BTreeMap<ChannelId, Seq>) -> ServerEvent,
    ) -> Result<(), crate::error::StorageError> {
        // One Hold and one Replay item whatever the number of channels, so a large
        // subscription never looks like a full queue.
        self.queue(Outbound::Hold(channels.into()));
        let release = |floors: &BTreeMap<ChannelId, Seq>| -> Outbound {
            Outbound::Replay(
                channels
                    .iter()
                    .map(|&channel| Replay {
                        channel,
                        floor: floors.get(&channel).copied().unwrap_or(0),
                        frames: Vec::new(),
                    })
                    .collect(),
            )
        };
        // The announcement is queued before the hub subscription, so no event of these
        // channels (typing, reactions, edits...) can reach the client before it; messages
        // committed between the two seq reads are replayed from storage below.
        let announced: BTreeMap<ChannelId, Seq> = match self.app.storage.last_seqs(channels).await {
            Ok(s) => s.into_iter().collect(),
            Err(e) => {
                // Release the holds so the session stays usable.
                self.queue(release(&BTreeMap::new()));
                return Err(e);
            }
        };
        self.event(&announce(announced.clone()));
        self.app.hub.subscribe(self.id, &self.sub, channels);
        self.subscribed.extend(channels.iter().copied());
        let seqs = match self.app.storage.last_seqs(channels).await {
            Ok(s) => s,
            Err(e) => {
                self.queue(release(&announced));
                return Err(e);
            }
        };
        let seqs: BTreeMap<ChannelId, Seq> = seqs.into_iter().collect();
        for (&channel, &seq) in &seqs {
            self.app.hub.note_seq(channel, seq);
        }
        let mut replays = Vec::with_capacity(channels.len());
        for &channel in channels {
            let latest = seqs.get(&channel).copied().unwrap_or(0);
            let from = match resume.get(&channel) {
                Some(&from) => from,
                None => announced.get(&channel).copied().unwrap_or(0),
            };
            let frames = if latest > from {
                self.replay_frames(channel, from, latest).await
            } else {
                Vec::new()
            };
            self.app.metrics.replayed.increment(frames.len() as u64);
            replays.push(Replay {
                channel,
                floor: from,
                frames,
            });
        }
        self.queue(Outbound::Replay(replays.into()));
        Ok(())
    }

    /// Serialized stored messages of `channel` with seq in (from, upto].
    async fn replay_frames(
        &self,
        channel: ChannelId,
        from: Seq,
        upto: Seq,
    ) -> Vec<(Seq, Utf8Bytes)> {
        let mut frames = Vec::new();
        let mut after = from;
        while after < upto {
            let page = match self
                .app
                .storage
                .messages(channel, Some(upto + 1), Some(after), REPLAY_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    self.unavailable(None, &e);
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for m in page {
                let seq = m.seq;
                if let Ok(text) = serde_json::to_string(&ServerEvent::Message(m)) {
                    frames.push((seq, text.into()));
                }
            }
        }
        frames
    }

    /// Authorize `user` for `channel`: `Ok(())` or the error to send.
    async fn authorize(
        &mut self,
        user: &User,
        channel: ChannelId,
    ) -> Result<(), (ErrorCode, String)> {
        if self.readable.contains(&channel) {
            return Ok(());
        }
        let storage = self.app.storage.clone();
        match storage.can_read(channel, user.id).await {
            Ok(true) => {
                self.readable.insert(channel);
                Ok(())
            }
            Ok(false) => match storage.channel(channel).await {
                Ok(None) => Err((
                    ErrorCode::NotFound,
                    format!("channel {channel} does not exist"),
                )),
                Ok(Some(_)) => Err((
                    ErrorCode::Forbidden,
                    format!("not a member of channel {channel}"),
                )),
                Err(_) => Err((ErrorCode::Unavailable, "storage is unavailable".into())),
            },
            Err(e) => {
                self.app.metrics.storage_errors.increment(1);
                tracing::warn!(error = %e, "authorization check failed");
                Err((ErrorCode::Unavailable, "storage is unavailable".into()))
            }
        }
    }

    async fn subscribe(&mut self, user: &User, req_id: Option<u64>, channels: Vec<ChannelId>) {
        for &c in &channels {
            if let Err((code, msg)) = self.authorize(user, c).await {
                self.error(req_id, code, msg);
                return;
            }
        }
        let fresh: Vec<ChannelId> = channels
            .into_iter()
            .filter(|c| !self.subscribed.contains(c))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let result = self
            .attach(&fresh, &BTreeMap::new(), |seqs| ServerEvent::Subscribed {
                req_id,
                channels: seqs,
            })
            .await;
        if let Err(e) = result {
            self.unavailable(req_id, &e);
        }
    }

    async fn history(
        &mut self,
        user: &User,
        req_id: u64,
        channel: ChannelId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<u32>,
    ) {
        if let Err((code, msg)) = self.authorize(user, channel).await {
            self.error(Some(req_id), code, msg);
            return;
        }
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY)
            .clamp(1, self.app.config.limits.max_history);
        match self
            .app
            .storage
            .messages(channel, before, after, limit)
            .await
        {
            Ok(messages) => self.event(&ServerEvent::History {
                req_id,
                channel,
                messages,
            }),
            Err(e) => self.unavailable(Some(req_id), &e),
        }
    }
}

#[derive(Default)]
struct ChannelState {
    /// Highest seq written to the client (or known to it).
    delivered: Seq,
    /// Live messages held while a replay is pending.
    held: Option<Vec<(Seq, Utf8Bytes)>>,
}

/// Apply one queued item; push frames to write onto `out`. Returns false if a hold
/// buffer overflowed (the client is too slow to be resumed).
fn apply(
    item: Outbound,
    chans: &mut HashMap<ChannelId, ChannelState>,
    out: &mut Vec<Utf8Bytes>,
    max_held: usize,
) -> bool {
    match item {
        Outbound::Direct(t) => out.push(*t),
        Outbound::Live(d) => {
            let (channel, seq, text) = (d.channel, d.seq, d.text.clone());
            let st = chans.entry(channel).or_default();
            if let Some(held) = &mut st.held {
                if held.len() >= max_held {
                    return false;
                }
                held.push((seq, text));
            } else if seq > st.delivered {
                st.delivered = seq;
                out.push(text);
            }
        }
        Outbound::Hold(channels) => {
            for &channel in channels.iter() {
                chans.entry(channel).or_default().held = Some(Vec::new());
            }
        }
        Outbound::Replay(replays) => {
            for Replay {
                channel,
                floor,
                frames,
            } in replays.into_vec()
            {
                let st = chans.entry(channel).or_default();
                st.delivered = floor;
                let held = st.held.take().unwrap_or_default();
                for (seq, text) in frames.into_iter().chain(held) {
                    if seq > st.delivered {
                        st.delivered = seq;
                        out.push(text);
                    }
                }
            }
        }
    }
    true
}

/// A session's outbound queue as its writer sees it: keeps `flowline_outbound_queued`
/// exact (every item taken, or left behind when the session ends, is subtracted).
struct Queued {
    rx: mpsc::Receiver<Outbound>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Queued {
    async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        if item.is_some() {
            self.metrics.outbound_queued.decrement(1.0);
        }
        item
    }

    fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        let item = self.rx.try_recv();
        if item.is_ok() {
            self.metrics.outbound_queued.decrement(1.0);
        }
        item
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Closed first, so no item slips in after the count.
        self.rx.close();
        let mut left = 0u32;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        self.metrics.outbound_queued.decrement(f64::from(left));
    }
}

async fn write_loop<Si>(
    app: Arc<App>,
    mut sink: Si,
    rx: mpsc::Receiver<Outbound>,
    shared: Arc<SessionShared>,
) where
    Si: Sink<WsMessage> + Unpin,
{
    let mut rx = Queued {
        rx,
        metrics: app.metrics.clone(),
    };
    let heartbeat = app.config.heartbeat;
    let write_timeout = app.config.write_timeout;
    let max_held = app.config.limits.outbound_queue;
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut chans: HashMap<ChannelId, ChannelState> = HashMap::new();
    let mut out: Vec<Utf8Bytes> = Vec::new();
    // Both futures are created once per session, not per frame (each creation registers
    // a waiter under a lock; the shutdown one is shared by every session).
    let kicked = shared.kicked();
    tokio::pin!(kicked);
    let shutdown = app.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    let code = loop {
        tokio::select! {
            biased;
            code = &mut kicked => break code,
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                shared.kick(close::GOING_AWAY);
            }
            _ = tick.tick() => {
                let silent = now_ms().saturating_sub(shared.last_seen_ms.load(Ordering::Relaxed));
                if Duration::from_millis(silent) > heartbeat * 2 {
                    if shared.kick(close::HEARTBEAT_TIMEOUT) {
                        app.metrics.heartbeat_timeouts.increment(1);
                    }
                } else if !matches!(
                    tokio::time::timeout(write_timeout, sink.send(WsMessage::Ping(Default::default()))).await,
                    Ok(Ok(()))
                ) {
                    shared.kick(0);
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { break 0 };
                let mut ok = apply(item, &mut chans, &mut out, max_held);
                while ok && out.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(item) => ok = apply(item, &mut chans, &mut out, max_held),
                        Err(_) => break,
                    }
                }
                if !ok {
                    if shared.kick(close::SLOW_CONSUMER) {
                        app.metrics.slow_consumer_disconnects.increment(1);
                    }
                    continue;
                }
                if !out.is_empty() && !write_all(&mut sink, &mut out, write_timeout).await {
                    shared.kick(0);
                }
            }
        }
    };
    // Frames queued before a close the session decided itself (e.g. the `error` event
    // explaining it) still go out; a slow consumer's backlog does not.
    if code != 0 && code != close::SLOW_CONSUMER {
        while let Ok(item) = rx.try_recv() {
            apply(item, &mut chans, &mut out, max_held);
        }
        if !out.is_empty() {
            write_all(&mut sink, &mut out, write_timeout).await;
        }
    }
    if code == 0 {
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    } else {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(close_reason(code)),
        };
        let _ = tokio::time::timeout(write_timeout, async {
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            let _ = sink.close().await;
        })
        .await;
    }
    shared.kick(0);
}

async fn write_all<Si>(sink: &mut Si, out: &mut Vec<Utf8Bytes>, limit: Duration) -> bool
where
    Si: Sink<WsMessage> + Unpin,
{
    let write = async {
        for text in out.drain(..) {
            if sink.feed(WsMessage::Text(text)).await.is_err() {
                return false;
            }
        }
        sink.flush().await.is_ok()
    };
    matches!(tokio::time::timeout(limit, write).await, Ok(true))
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node shutting down",
        close::MESSAGE_TOO_BIG => "frame too large",
        close::AUTH_TIMEOUT => "no hello within the deadline",
        close::AUTH_FAILED => "invalid token",
        close::SLOW_CONSUMER => "slow consumer",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        close::PROTOCOL_ERROR => "protocol error",
        close::UNSUPPORTED_VERSION => "unsupported protocol version",
        close::LOGGED_OUT => "logged out",
        _ => "",
    }
}

/// Does `text` nest arrays/objects deeper than `max`? Scans without parsing, so a
/// hostile frame costs one pass and no recursion.
pub(crate) fn json_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

const KNOWN_OPS: [&str; 13] = [
    "hello",
    "subscribe",
    "unsubscribe",
    "send",
    "history",
    "ping",
    "edit",
    "delete",
    "react",
    "unreact",
    "start_thread",
    "typing",
    "set_presence",
];

/// Tell an unknown op from a malformed known one.
fn classify_bad_frame(text: &str, err: &serde_json::Error) -> (ErrorCode, String) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (ErrorCode::BadRequest, format!("not valid JSON: {err}"));
    };
    match value.get("type").and_then(|t| t.as_str()) {
        Some(t) if !KNOWN_OPS.contains(&t) => (ErrorCode::UnknownOp, format!("unknown op {t:?}")),
        Some(_) => (ErrorCode::BadRequest, format!("invalid fields: {err}")),
        None => (
            ErrorCode::BadRequest,
            "a frame must be a JSON object with a string \"type\"".into(),
        ),
    }
}

fn probe_req_id(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        req_id: Option<serde_json::Value>,
    }
    serde_json::from_str::<Probe>(text)
        .ok()
        .and_then(|p| p.req_id)
        .and_then(|v| v.as_u64())
}

fn op_req_id(op: &ClientOp) -> Option<u64> {
    match op {
        ClientOp::Hello { .. } => None,
        ClientOp::Typing { .. } => None,
        ClientOp::Subscribe { req_id, .. }
        | ClientOp::Unsubscribe { req_id, .. }
        | ClientOp::SetPresence { req_id, .. }
        | ClientOp::Ping { req_id, .. } => *req_id,
        ClientOp::Send { req_id, .. }
        | ClientOp::History { req_id, .. }
        | ClientOp::Edit { req_id, .. }
        | ClientOp::Delete { req_id, .. }
        | ClientOp::React { req_id, .. }
        | ClientOp::Unreact { req_id, .. }
        | ClientOp::StartThread { req_id, .. } => Some(*req_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_ignores_strings() {
        assert!(!json_depth_exceeds(r#"{"a":[1,{"b":"[[[[[[["}]}"#, 3));
        assert!(json_depth_exceeds(r#"{"a":[[[1]]]}"#, 3));
        assert!(!json_depth_exceeds(r#"{"a":"\"{{{{"}"#, 1));
    }

    fn live(channel: ChannelId, seq: Seq, text: Utf8Bytes) -> Outbound {
        Outbound::Live(Arc::new(crate::hub::Delivery { channel, seq, text }))
    }

    #[test]
    fn writer_resume_drops_overlap_and_keeps_order() {
        let t = |s: &str| Utf8Bytes::from(s);
        let mut chans = HashMap::new();
        let mut out = Vec::new();
        assert!(apply(
            Outbound::Hold(vec![1].into()),
            &mut chans,
            &mut out,
            10
        ));
        // live 5 and 6 arrive while storage is read
        for s in [5, 6] {
            apply(live(1, s, t(&s.to_string())), &mut chans, &mut out, 10);
        }
        assert!(out.is_empty());
        let frames = vec![(4, t("4")), (5, t("5"))];
        apply(
            Outbound::Replay(
                vec![Replay {
                    channel: 1,
                    floor: 3,
                    frames,
                }]
                .into(),
            ),
            &mut chans,
            &mut out,
            10,
        );
        apply(live(1, 6, t("6")), &mut chans, &mut out, 10);
        apply(live(1, 7, t("7")), &mut chans, &mut out, 10);
        let got: Vec<&str> = out.iter().map(|u| u.as_str()).collect();
        assert_eq!(got, ["4", "5", "6", "7"]);
        assert!(apply(
            Outbound::Hold(vec![2].into()),
            &mut chans,
            &mut out,
            1
        ));
        assert!(apply(live(2, 1, t("x")), &mut chans, &mut out, 1));
        assert!(!apply(live(2, 2, t("y")), &mut chans, &mut out, 1));
    }

    #[test]
    fn bad_frames_are_classified() {
        let e = serde_json::from_str::<ClientOp>("{}").unwrap_err();
        assert_eq!(
            classify_bad_frame(r#"{"type":"dance"}"#, &e).0,
            ErrorCode::UnknownOp
        );
        assert_eq!(
            classify_bad_frame(r#"{"type":"send","req_id":"x"}"#, &e).0,
            ErrorCode::BadRequest
        );
        assert_eq!(classify_bad_frame("nope", &e).0, ErrorCode::BadRequest);
        assert_eq!(
            probe_req_id(r#"{"type":"send","req_id":7,"channel":"x"}"#),
            Some(7)
        );
    }
}
