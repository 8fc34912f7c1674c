//! [`Lookups`]: the storage reads of a connecting session (`hello`, `subscribe`), each
//! batched across the sessions connecting at the same moment ([`Batcher`]): the token's
//! user, the user's readable channels, and the channels' latest seqs. A storm of N
//! connects costs a few queries per kind instead of N, and holds at most
//! [`crate::batch::IN_FLIGHT`] pool connections per kind, so the rest of the pool stays
//! free for the message path.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;

use flowline_protocol::api::User;
use flowline_protocol::{ChannelId, Seq, UserId};

use crate::auth::TokenHash;
use crate::batch::Batcher;
use crate::storage::{self, Storage};

/// Batched reads of the connect path over one node's storage.
pub struct Lookups {
    tokens: Batcher<TokenHash, User>,
    readable: Batcher<UserId, Arc<[ChannelId]>>,
    seqs: Batcher<ChannelId, Seq>,
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
        let s = storage;
        let seqs = Batcher::new(Arc::new(move |channels: Vec<ChannelId>| {
            let s = s.clone();
            async move { Ok(s.last_seqs(&channels).await?.into_iter().collect()) }.boxed()
        }));
        Self {
            tokens,
            readable,
            seqs,
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
}
