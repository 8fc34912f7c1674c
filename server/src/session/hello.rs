//! `hello` and attaching channels to a session (also used by `subscribe`): authenticate,
//! find the channels, announce them (`ready`/`subscribed`), subscribe at the hub and
//! replay what a resuming client missed.
//!
//! Resume without gap or duplicate: the reader reads the latest seqs, queues `Hold` and
//! the announcement (`ready`/`subscribed`), subscribes at the hub (live messages are now
//! held by the writer) and queues `Open`, then reads storage again (the latest seq, and
//! every message after the client's seq, or after the announced one), then queues
//! `Replay`; the writer writes the replayed messages and then the held live ones whose
//! seq is higher, dropping the overlap. Announcing before subscribing keeps every other
//! event of the channels after the announcement; the writer's gate (closed by `Hold`,
//! opened by `Open`) writes the announcement only once the session is subscribed, so a
//! client that has read it misses no event emitted after that.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;

use flowline_protocol::ws::{ErrorCode, ServerEvent, close};
use flowline_protocol::{ChannelId, PROTOCOL_VERSION, Seq};

use super::connection::{Flow, Session};
use crate::auth::token_hash;
use crate::error::StorageError;
use crate::hub::{Outbound, Replay};
use crate::membership::Access;
use crate::refusal::Refusal;

/// Messages read from storage per page while replaying a resume.
const REPLAY_PAGE: Seq = 500;
/// Attempts of each storage read after the announcement before the session is closed
/// with 4013 (the client then resumes elsewhere or later).
const READ_ATTEMPTS: u32 = 3;
/// Pause before the second attempt (doubled before the third).
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether [`Session::attach`] also registers the session's user at the hub (for the
/// events addressed to the user, e.g. presence), in the same gate as the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Register {
    /// `hello`: the session's first attach.
    User,
    /// `subscribe`: the user is registered already.
    Already,
}

/// Why [`Session::attach`] failed.
#[derive(Debug)]
pub(super) struct AttachError {
    /// The storage failure.
    pub(super) storage: StorageError,
    /// Whether the seqs were already announced: then the session must close with 4013,
    /// after its `unavailable` error.
    pub(super) announced: bool,
}

impl Session {
    /// `hello`: authenticate, subscribe (every readable channel with `subscribe_all`,
    /// plus the resumed ones), answer `ready`, replay, and go online.
    pub(super) async fn hello(
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
            )
            .await;
            return Err(close::UNSUPPORTED_VERSION);
        }
        let hash = token_hash(token);
        let node = self.node.clone();
        let user = match node.lookups.user_by_token(hash).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                self.error(None, ErrorCode::InvalidToken, "unknown or revoked token")
                    .await;
                return Err(close::AUTH_FAILED);
            }
            Err(e) => {
                self.refuse(None, Refusal::from(&e)).await;
                return Ok(());
            }
        };
        let mut access = Access::new(user.id);
        let mut channels = if subscribe_all {
            match node.lookups.readable_channels(user.id).await {
                Ok(c) => c,
                Err(e) => {
                    self.refuse(None, Refusal::from(&e)).await;
                    return Ok(());
                }
            }
        } else {
            Vec::new()
        };
        access.allow(channels.iter().copied());
        // A negative seq is no position in any channel: refused (after `ready`, like an
        // unreadable channel), never silently replayed from the start.
        let mut resume = resume;
        let negative: Vec<ChannelId> = resume
            .iter()
            .filter(|&(_, &seq)| seq < 0)
            .map(|(&c, _)| c)
            .collect();
        for c in &negative {
            resume.remove(c);
        }
        let mut refused = Vec::new();
        for &c in resume.keys() {
            if access.allows(c) {
                continue;
            }
            match node.membership.can_read(c, user.id).await {
                Ok(true) => {
                    access.allow([c]);
                    channels.push(c);
                }
                Ok(false) => refused.push(c),
                Err(e) => {
                    self.refuse(None, Refusal::from(&e)).await;
                    return Ok(());
                }
            }
        }
        self.user = Some(user.clone());
        self.token = Some(hash);
        self.access = access;
        node.sessions
            .remember(hash, self.id, self.sub.shared.clone());
        node.metrics.sessions_authenticated.increment(1);
        let heartbeat_ms = node.config.heartbeat_ms();
        let node_id = node.config.node_id.clone();
        self.idle_at = tokio::time::Instant::now() + node.roster.idle_after();
        let (presence, change) = node.roster.connect(user.id, want_presence).await;
        // The user is registered for their own events (presence...) inside the attach's
        // gate: after `ready` is queued, so none precedes it, and before it is written, so
        // a client that has read it misses none.
        let result = self
            .attach(&channels, &resume, Register::User, |seqs| {
                ServerEvent::Ready {
                    v: PROTOCOL_VERSION,
                    user_id: user.id,
                    node_id,
                    channels: seqs,
                    heartbeat_ms,
                    presence,
                }
            })
            .await;
        if let Err(e) = result {
            // No `ready`, or a `ready` whose replay could not be read: the client
            // reconnects and resumes (4013).
            self.refuse(None, Refusal::from(&e.storage)).await;
            return Err(close::TRY_AGAIN);
        }
        if let Some(p) = change {
            node.roster.announce(p).await;
        }
        for c in negative {
            self.error(
                None,
                ErrorCode::BadRequest,
                format!("cannot resume channel {c}: a resume seq must be 0 or more"),
            )
            .await;
        }
        for c in refused {
            self.error(
                None,
                ErrorCode::Forbidden,
                format!("cannot resume channel {c}: not a member"),
            )
            .await;
        }
        Ok(())
    }

    /// Subscribe to `channels` and queue `announce(latest seqs)` followed by the replay of
    /// every resumed channel (see the module doc for why this order has no gap).
    ///
    /// A storage failure before the announcement refuses the whole attach (nothing was
    /// promised). After it, the reads are retried ([`READ_ATTEMPTS`]); if they still fail,
    /// the caller must close the session with 4013 ([`AttachError::announced`]): the held
    /// live messages are then never written, so the client, which resumes from its last
    /// seq, sees no gap.
    pub(super) async fn attach(
        &mut self,
        channels: &[ChannelId],
        resume: &BTreeMap<ChannelId, Seq>,
        register: Register,
        announce: impl FnOnce(BTreeMap<ChannelId, Seq>) -> ServerEvent,
    ) -> Result<(), AttachError> {
        let node = self.node.clone();
        let announced: BTreeMap<ChannelId, Seq> = node
            .lookups
            .last_seqs(channels)
            .await
            .map_err(|storage| AttachError {
                storage,
                announced: false,
            })?
            .into_iter()
            .collect();
        // A baseline for the cluster sequencer before the hub delivers to this session: a
        // bus message that overtook its predecessor must open a gap (filled or waited
        // for), not become the channel's baseline and make the predecessor a duplicate.
        for (&channel, &seq) in &announced {
            node.hub.note_seq(channel, seq);
        }
        // One Hold and one Replay item whatever the number of channels, so a large
        // subscription never looks like a full queue. Hold closes the writer's gate: the
        // announcement is queued before the hub subscription, so no event of these
        // channels (typing, reactions, edits...) can reach the client before it, and is
        // written only after it (`Open`), so every event emitted after the client read
        // it reaches the client. Messages committed between the two seq reads are
        // replayed from storage below.
        self.queue(Outbound::Hold(channels.into())).await;
        self.event(&announce(announced.clone())).await;
        node.hub.subscribe(self.id, &self.sub, channels);
        self.subscribed.extend(channels.iter().copied());
        if register == Register::User
            && let Some(user) = &self.user
        {
            node.hub.register_user(user.id, self.id, &self.sub);
        }
        self.queue(Outbound::Open).await;
        match self.read_replays(channels, resume, &announced).await {
            Ok(replays) => {
                self.queue(Outbound::Replay(replays.into())).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot replay a subscription; closing the session (4013)");
                Err(AttachError {
                    storage: e,
                    announced: true,
                })
            }
        }
    }

    /// The second seq read and every channel's replay (messages after the client's seq,
    /// or after the announced one), each read retried on a storage failure.
    async fn read_replays(
        &self,
        channels: &[ChannelId],
        resume: &BTreeMap<ChannelId, Seq>,
        announced: &BTreeMap<ChannelId, Seq>,
    ) -> Result<Vec<Replay>, StorageError> {
        let node = &self.node;
        let seqs = retried(|| node.lookups.last_seqs(channels)).await?;
        let seqs: BTreeMap<ChannelId, Seq> = seqs.into_iter().collect();
        for (&channel, &seq) in &seqs {
            node.hub.note_seq(channel, seq);
        }
        let mut replays = Vec::with_capacity(channels.len());
        for &channel in channels {
            let latest = seqs.get(&channel).copied().unwrap_or(0);
            let from = match resume.get(&channel) {
                // A client claiming more than the channel holds (e.g. after the node's
                // storage was reset) resumes from the announced seq, so it keeps
                // receiving what follows instead of having it all dropped as known.
                Some(&from) => from.min(announced.get(&channel).copied().unwrap_or(0)),
                None => announced.get(&channel).copied().unwrap_or(0),
            };
            let frames = if latest > from {
                self.replay_frames(channel, from, latest).await?
            } else {
                Vec::new()
            };
            node.metrics.replayed.increment(frames.len() as u64);
            replays.push(Replay {
                channel,
                floor: from,
                frames,
            });
        }
        Ok(replays)
    }

    /// Serialized stored messages of `channel` with seq in (from, upto], read a page at
    /// a time through the node's batched [`crate::lookups::Lookups::replay`] (sessions
    /// subscribing at the same moment share the query and the serialization).
    async fn replay_frames(
        &self,
        channel: ChannelId,
        from: Seq,
        upto: Seq,
    ) -> Result<Vec<(Seq, Utf8Bytes)>, StorageError> {
        let mut frames = Vec::new();
        let mut after = from;
        while after < upto {
            let page_end = upto.min(after + REPLAY_PAGE);
            let page = retried(|| self.node.lookups.replay(channel, after, page_end)).await?;
            frames.extend(page.iter().cloned());
            after = page_end;
        }
        Ok(frames)
    }
}

/// Run a storage read, retrying a failure up to [`READ_ATTEMPTS`] times in all with a
/// short pause (a pool that timed out once under a connect storm usually has a
/// connection a moment later).
async fn retried<T, F, Fut>(mut read: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= READ_ATTEMPTS || !matches!(e, StorageError::Database(_)) => {
                return Err(e);
            }
            Err(_) => {
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
                attempt += 1;
            }
        }
    }
}
