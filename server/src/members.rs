//! [`MemberCache`]: this node's cache of who belongs to which space, so a connect (the
//! presence audience, the `ready` snapshot) costs no Postgres query of O(space size).
//!
//! ```text
//!  spaces_of(user) ──miss──► Storage::spaces_of_users (single-flight per user, batched
//!                             across users: a connect storm costs a few queries, not one each)
//!  members(space)  ──miss──► Storage::space_members (one query per space, single-flight)
//!  join/leave/create/provision on any node ──► forget(change) here
//!                                           └─► bus `membership` envelope ──► forget on the others
//! ```
//!
//! Entries live until a change forgets them: the node that made the change forgets at
//! once, the others when the bus delivers its envelope (milliseconds; until then they may
//! announce presence to a member who just left, or not yet to one who just joined). A
//! lookup that was already reading storage when its entry was forgotten finishes with what
//! it read; the next lookup reads again.

use std::sync::Arc;

use std::collections::HashMap;

use dashmap::DashMap;
use futures_util::FutureExt;
use tokio::sync::OnceCell;

use flowline_protocol::{SpaceId, UserId};

use crate::batch::Batcher;
use crate::storage::{self, Storage};

/// A change of space membership, as forgotten here and sent to the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MemberChange {
    /// `user` joined or created `space`.
    Member {
        /// The space.
        space: SpaceId,
        /// The user.
        user: UserId,
    },
    /// `user` left `space`: besides the cache, every node drops what its sessions of
    /// `user` remember they may write to (`Membership::forget`).
    Left {
        /// The space.
        space: SpaceId,
        /// The user.
        user: UserId,
    },
    /// Anything may have changed (bulk provisioning): forget everything.
    All,
}

type Cell<T> = Arc<OnceCell<Arc<[T]>>>;

/// Space membership as this node last read it.
pub struct MemberCache {
    storage: Arc<dyn Storage>,
    /// Reads the spaces of every user whose entry is missing at the same moment at once.
    spaces_batch: Batcher<UserId, Arc<[SpaceId]>>,
    spaces: DashMap<UserId, Cell<SpaceId>>,
    members: DashMap<SpaceId, Cell<UserId>>,
}

impl MemberCache {
    /// An empty cache over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        let s = storage.clone();
        let spaces_batch = Batcher::new(Arc::new(move |users: Vec<UserId>| {
            let s = s.clone();
            async move {
                let mut by_user: HashMap<UserId, Vec<SpaceId>> = HashMap::new();
                for (u, space) in s.spaces_of_users(&users).await? {
                    by_user.entry(u).or_default().push(space);
                }
                Ok(by_user.into_iter().map(|(u, v)| (u, v.into())).collect())
            }
            .boxed()
        }));
        Self {
            storage,
            spaces_batch,
            spaces: DashMap::new(),
            members: DashMap::new(),
        }
    }

    /// The spaces `user` belongs to.
    pub async fn spaces_of(&self, user: UserId) -> storage::Result<Arc<[SpaceId]>> {
        let cell = self.spaces.entry(user).or_default().clone();
        let got = cell
            .get_or_try_init(|| async {
                let spaces = self.spaces_batch.get(user).await?;
                storage::Result::Ok(spaces.unwrap_or_else(|| Arc::from([])))
            })
            .await?;
        Ok(got.clone())
    }

    /// The members of `space`.
    pub async fn members(&self, space: SpaceId) -> storage::Result<Arc<[UserId]>> {
        let cell = self.members.entry(space).or_default().clone();
        let got = cell
            .get_or_try_init(|| async {
                let users = self.storage.space_members(space).await?;
                storage::Result::Ok(users.into_iter().map(|u| u.id).collect::<Arc<[_]>>())
            })
            .await?;
        Ok(got.clone())
    }

    /// Forget what `change` may have made stale.
    pub fn forget(&self, change: &MemberChange) {
        match *change {
            MemberChange::Member { space, user } | MemberChange::Left { space, user } => {
                self.spaces.remove(&user);
                self.members.remove(&space);
            }
            MemberChange::All => {
                self.spaces.clear();
                self.members.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Accounts, MemoryStorage, Spaces};

    #[tokio::test]
    async fn reads_once_and_forgets_on_change() {
        let storage = Arc::new(MemoryStorage::new());
        let a = storage.create_user("a", "x").await.unwrap();
        let b = storage.create_user("b", "x").await.unwrap();
        let space = storage.create_space(a.id, "s").await.unwrap();
        let cache = MemberCache::new(storage.clone());
        assert_eq!(&*cache.members(space.id).await.unwrap(), [a.id]);
        assert!(cache.spaces_of(b.id).await.unwrap().is_empty());
        storage.join_space(space.id, b.id).await.unwrap();
        // Not told yet: the cached lists stand.
        assert_eq!(&*cache.members(space.id).await.unwrap(), [a.id]);
        assert!(cache.spaces_of(b.id).await.unwrap().is_empty());
        cache.forget(&MemberChange::Member {
            space: space.id,
            user: b.id,
        });
        let mut members = cache.members(space.id).await.unwrap().to_vec();
        members.sort_unstable();
        assert_eq!(members, [a.id, b.id]);
        assert_eq!(&*cache.spaces_of(b.id).await.unwrap(), [space.id]);
        storage.leave_space(space.id, b.id).await.unwrap();
        cache.forget(&MemberChange::All);
        assert_eq!(&*cache.members(space.id).await.unwrap(), [a.id]);
    }
}
