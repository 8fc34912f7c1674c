//! [`Lookups`]: the storage reads of a connecting session (`hello`, `subscribe`), each
//! batched across the sessions connecting at the same moment ([`Batcher`]): the token's
//! user, the user's readable channels, the channels' latest seqs, and the replay of what
//! was committed while the session subscribed. A storm of N connects costs a few queries
//! per kind instead of N, and holds at most [`crate::batch::IN_FLIGHT`] pool connections
//! per kind, so the rest of the pool stays free for the message path.
//!
//! Replays matter in a busy channel: every session announces the latest seq, subscribes,
//! reads the latest seq again and replays what lies between (see `session/hello.rs`), so
//! a storm of N connects to a channel that receives messages asks for N nearly identical
//! ranges. Batched, the ranges of one channel that overlap are read by one query and each
//! message is serialized once for all the sessions that replay it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use futures_util::FutureExt;

use flowline_protocol::api::User;
use flowline_protocol::ws::ServerEvent;
use flowline_protocol::{ChannelId, Seq, UserId};

use crate::auth::TokenHash;
use crate::batch::Batcher;
use crate::storage::{self, Storage};

/// Most seqs one replay query of a batch covers: overlapping ranges of a channel are
/// merged into one query up to this length.
const SPAN_MAX: Seq = 5_000;

/// A channel's messages with seq in `after + 1 ..= upto`.
type Range = (ChannelId, Seq, Seq);
/// Serialized `message` events, ascending by seq.
pub type Frames = Arc<[(Seq, Utf8Bytes)]>;

/// Batched reads of the connect path over one node's storage.
pub struct Lookups {
    tokens: Batcher<TokenHash, User>,
    readable: Batcher<UserId, Arc<[ChannelId]>>,
    seqs: Batcher<ChannelId, Seq>,
    replays: Batcher<Range, Frames>,
}

impl Lookups {
    /// Lookups answered by `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        let s = storage.clone();
        let tokens = Batcher::new(Arc::new(move |hashes: Vec<TokenHash>| {
            let s = s.clone();
            async move { Ok(s.users_by_tokens(&hashes).await?.into_iter().collect()) }.boxed()
        }));
        let s = storage.clone();
        let readable = Batcher::new(Arc::new(move |users: Vec<UserId>| {
            let s = s.clone();
            async move {
                let mut by_user: HashMap<UserId, Vec<ChannelId>> = HashMap::new();
                for (u, c) in s.readable_channels_of(&users).await? {
                    by_user.entry(u).or_default().push(c);
                }
                Ok(by_user
                    .into_iter()
                    .map(|(u, mut cs)| {
                        cs.sort_unstable();
                        (u, cs.into())
                    })
                    .collect())
            }
            .boxed()
        }));
        let s = storage.clone();
        let seqs = Batcher::new(Arc::new(move |channels: Vec<ChannelId>| {
            let s = s.clone();
            async move { Ok(s.last_seqs(&channels).await?.into_iter().collect()) }.boxed()
        }));
        let s = storage;
        let replays = Batcher::new(Arc::new(move |ranges: Vec<Range>| {
            let s = s.clone();
            async move {
                let mut out = HashMap::with_capacity(ranges.len());
                for (channel, lo, hi, keys) in spans(ranges) {
                    let limit = u32::try_from(hi - lo).unwrap_or(u32::MAX);
                    let frames: Vec<(Seq, Utf8Bytes)> = s
                        .messages(channel, Some(hi + 1), Some(lo), limit)
                        .await?
                        .into_iter()
                        .filter_map(|m| {
                            let seq = m.seq;
                            match serde_json::to_string(&ServerEvent::Message(m)) {
                                Ok(text) => Some((seq, text.into())),
                                Err(e) => {
                                    tracing::error!(error = %e, "serializing a replayed message");
                                    None
                                }
                            }
                        })
                        .collect();
                    for key @ (_, after, upto) in keys {
                        let part: Frames = frames
                            .iter()
                            .filter(|(seq, _)| *seq > after && *seq <= upto)
                            .cloned()
                            .collect();
                        out.insert(key, part);
                    }
                }
                Ok(out)
            }
            .boxed()
        }));
        Self {
            tokens,
            readable,
            seqs,
            replays,
        }
    }

    /// The user a token belongs to.
    pub async fn user_by_token(&self, hash: TokenHash) -> storage::Result<Option<User>> {
        self.tokens.get(hash).await
    }

    /// Every channel `user` can read, ascending.
    pub async fn readable_channels(&self, user: UserId) -> storage::Result<Vec<ChannelId>> {
        Ok(self
            .readable
            .get(user)
            .await?
            .map(|c| c.to_vec())
            .unwrap_or_default())
    }

    /// Latest seq of each existing channel in `channels`, ascending by channel.
    pub async fn last_seqs(
        &self,
        channels: &[ChannelId],
    ) -> storage::Result<Vec<(ChannelId, Seq)>> {
        let mut seqs = self.seqs.get_many(channels.to_vec()).await?;
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// The serialized messages of `channel` with seq in `after + 1 ..= upto`, ascending.
    pub async fn replay(
        &self,
        channel: ChannelId,
        after: Seq,
        upto: Seq,
    ) -> storage::Result<Frames> {
        if upto <= after {
            return Ok(Arc::from([]));
        }
        Ok(self
            .replays
            .get((channel, after, upto))
            .await?
            .unwrap_or_else(|| Arc::from([])))
    }
}

/// Group a batch's ranges into spans, each read by one query: per channel, ranges that
/// overlap or touch are merged while the span stays within [`SPAN_MAX`] seqs. Each span
/// is `(channel, lo, hi, ranges)`: seqs `lo + 1 ..= hi`, covering each of its ranges.
fn spans(mut ranges: Vec<Range>) -> Vec<(ChannelId, Seq, Seq, Vec<Range>)> {
    ranges.retain(|&(_, after, upto)| upto > after);
    ranges.sort_unstable();
    let mut out: Vec<(ChannelId, Seq, Seq, Vec<Range>)> = Vec::new();
    for r @ (channel, after, upto) in ranges {
        match out.last_mut() {
            Some((c, lo, hi, keys))
                if *c == channel && after <= *hi && upto.max(*hi) - *lo <= SPAN_MAX =>
            {
                *hi = upto.max(*hi);
                keys.push(r);
            }
            _ => out.push((channel, after, upto, vec![r])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::new_token;
    use crate::storage::{Accounts, MemoryStorage, Messages, NewMessage, Spaces};

    #[tokio::test]
    async fn answers_like_storage() {
        let storage = Arc::new(MemoryStorage::new());
        let a = storage.create_user("a", "x").await.unwrap();
        let b = storage.create_user("b", "x").await.unwrap();
        let (_, hash) = new_token();
        storage.insert_token(a.id, hash).await.unwrap();
        let space = storage.create_space(a.id, "s").await.unwrap();
        let ch = storage
            .create_channel(
                space.id,
                "c",
                flowline_protocol::api::ChannelKind::Public,
                &[],
            )
            .await
            .unwrap();
        storage
            .append_message(NewMessage::text(ch.id, a.id, "hi".into(), None, 0))
            .await
            .unwrap();
        let l = Lookups::new(storage.clone());
        assert_eq!(l.user_by_token(hash).await.unwrap(), Some(a.clone()));
        assert_eq!(l.user_by_token([0; 32]).await.unwrap(), None);
        assert_eq!(
            l.readable_channels(a.id).await.unwrap(),
            storage.readable_channels(a.id).await.unwrap()
        );
        assert!(l.readable_channels(b.id).await.unwrap().is_empty());
        assert_eq!(
            l.last_seqs(&[ch.id, 999_999, ch.id]).await.unwrap(),
            [(ch.id, 1)]
        );
    }

    #[test]
    fn spans_merge_overlapping_ranges_of_a_channel() {
        let got = spans(vec![
            (1, 10, 20),
            (2, 0, 5),
            (1, 15, 30),
            (1, 40, 50),
            (1, 7, 7),
        ]);
        let got: Vec<_> = got
            .into_iter()
            .map(|(c, lo, hi, k)| (c, lo, hi, k.len()))
            .collect();
        // (1, 7, 7) is empty: dropped; (1, 40, 50) does not touch (10, 30].
        assert_eq!(got, [(1, 10, 30, 2), (1, 40, 50, 1), (2, 0, 5, 1)]);
        let long = spans(vec![(1, 0, 4_000), (1, 3_000, 6_000)]);
        assert_eq!(long.len(), 2, "a span stays within SPAN_MAX seqs");
    }

    #[tokio::test]
    async fn replays_answer_exact_ranges() {
        let storage = Arc::new(MemoryStorage::new());
        let a = storage.create_user("a", "x").await.unwrap();
        let space = storage.create_space(a.id, "s").await.unwrap();
        let ch = storage
            .create_channel(
                space.id,
                "c",
                flowline_protocol::api::ChannelKind::Public,
                &[],
            )
            .await
            .unwrap();
        for i in 0..30 {
            storage
                .append_message(NewMessage::text(ch.id, a.id, format!("m{i}"), None, 0))
                .await
                .unwrap();
        }
        let l = Arc::new(Lookups::new(storage.clone()));
        let ranges = [(0, 5), (3, 12), (10, 30), (29, 40), (7, 7), (12, 3)];
        let tasks: Vec<_> = ranges
            .iter()
            .map(|&(after, upto)| {
                let l = l.clone();
                tokio::spawn(async move { l.replay(ch.id, after, upto).await.unwrap() })
            })
            .collect();
        for (t, &(after, upto)) in tasks.into_iter().zip(&ranges) {
            let frames = t.await.unwrap();
            let seqs: Vec<Seq> = frames.iter().map(|(s, _)| *s).collect();
            let want: Vec<Seq> = (after + 1..=upto.min(30)).collect();
            assert_eq!(seqs, want, "range ({after}, {upto}]");
            for (seq, text) in frames.iter() {
                match serde_json::from_str::<ServerEvent>(text).unwrap() {
                    ServerEvent::Message(m) => {
                        assert_eq!((m.seq, m.body), (*seq, format!("m{}", seq - 1)));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(l.replay(999_999, 0, 10).await.unwrap().is_empty());
    }
}
