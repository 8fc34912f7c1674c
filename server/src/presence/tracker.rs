//! The presence state machine of one node ([`PresenceTracker`]): sessions per user, the
//! grace period before offline, inactivity idle, the chosen status; and where what others
//! see is kept ([`PresenceStore`]).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use flowline_protocol::UserId;
use flowline_protocol::ws::{Presence, PresenceStatus};

/// Where users' presence is kept: in this process for one node; a cluster can back it by
/// a shared registry (e.g. Redis) so every node sees every user.
pub trait PresenceStore: Send + Sync + 'static {
    /// Presence of those of `users` that are not offline.
    fn get<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<Presence>>;
    /// Record a user's presence (offline removes it).
    fn set(&self, presence: Presence) -> BoxFuture<'_, ()>;
}

/// In-process [`PresenceStore`].
#[derive(Default)]
pub struct LocalPresenceStore {
    map: DashMap<UserId, Presence>,
}

impl PresenceStore for LocalPresenceStore {
    fn get<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<Presence>> {
        async move {
            users
                .iter()
                .filter_map(|u| self.map.get(u).map(|p| p.clone()))
                .collect()
        }
        .boxed()
    }

    fn set(&self, presence: Presence) -> BoxFuture<'_, ()> {
        async move {
            if presence.status == PresenceStatus::Offline {
                self.map.remove(&presence.user_id);
            } else {
                self.map.insert(presence.user_id, presence);
            }
        }
        .boxed()
    }
}

/// One user's presence as this node tracks it.
#[derive(Debug, Clone)]
struct Local {
    /// Open sessions on this node.
    sessions: usize,
    /// The status the user chose (`offline` = invisible).
    chosen: PresenceStatus,
    custom: Option<String>,
    /// Turned idle by inactivity (only from `online`).
    auto_idle: bool,
    last_active: Instant,
    /// Bumped on every connect/disconnect, so a pending offline timer can tell it is stale.
    epoch: u64,
    /// What others currently see.
    shown: PresenceStatus,
}

impl Local {
    fn effective(&self) -> PresenceStatus {
        match (self.sessions, self.chosen) {
            (0, _) | (_, PresenceStatus::Offline) => PresenceStatus::Offline,
            (_, PresenceStatus::Online) if self.auto_idle => PresenceStatus::Idle,
            (_, s) => s,
        }
    }

    fn presence(&self, user_id: UserId) -> Presence {
        Presence {
            user_id,
            status: self.shown,
            custom: if self.shown == PresenceStatus::Offline {
                None
            } else {
                self.custom.clone()
            },
        }
    }
}

/// Presence state machine of one node: sessions per user, grace before offline,
/// inactivity idle, chosen status. Each method returns the [`Presence`] to announce when
/// what others see changed (already written to the store).
pub struct PresenceTracker {
    store: Arc<dyn PresenceStore>,
    users: DashMap<UserId, Local>,
}

impl PresenceTracker {
    /// A tracker writing to `store`.
    pub fn new(store: Arc<dyn PresenceStore>) -> Self {
        Self {
            store,
            users: DashMap::new(),
        }
    }

    /// Presence of those of `users` that are not offline.
    pub async fn snapshot(&self, users: &[UserId]) -> Vec<Presence> {
        self.store.get(users).await
    }

    /// Apply `f` to the user's state; if what others see changed, store and return it.
    async fn update(&self, user: UserId, f: impl FnOnce(&mut Local)) -> Option<Presence> {
        let (changed, p) = {
            let mut e = self.users.entry(user).or_insert_with(|| Local {
                sessions: 0,
                chosen: PresenceStatus::Online,
                custom: None,
                auto_idle: false,
                last_active: Instant::now(),
                epoch: 0,
                shown: PresenceStatus::Offline,
            });
            let before = (e.shown, e.custom.clone());
            f(&mut e);
            e.shown = e.effective();
            let p = e.presence(user);
            (before != (p.status, e.custom.clone()), p)
        };
        if !changed {
            return None;
        }
        self.store.set(p.clone()).await;
        Some(p)
    }

    /// A session of `user` authenticated (cancels a pending offline: no flapping).
    pub async fn connect(&self, user: UserId) -> Option<Presence> {
        self.update(user, |l| {
            l.sessions += 1;
            l.epoch += 1;
            l.last_active = Instant::now();
            l.auto_idle = false;
        })
        .await
    }

    /// A session of `user` ended. Returns the epoch to pass to [`expire`](Self::expire)
    /// after the grace period if it was the user's last session on this node.
    pub fn disconnect(&self, user: UserId) -> Option<u64> {
        let mut e = self.users.get_mut(&user)?;
        e.sessions = e.sessions.saturating_sub(1);
        e.epoch += 1;
        (e.sessions == 0).then_some(e.epoch)
    }

    /// The grace period after the last session ended is over: offline unless the user
    /// came back (the epoch moved).
    pub async fn expire(&self, user: UserId, epoch: u64) -> Option<Presence> {
        let current = self.users.get(&user).map(|e| (e.epoch, e.sessions));
        if current != Some((epoch, 0)) {
            return None;
        }
        self.update(user, |_| {}).await
    }

    /// The user chose a status and custom text.
    pub async fn set(
        &self,
        user: UserId,
        status: PresenceStatus,
        custom: Option<String>,
    ) -> Option<Presence> {
        self.update(user, |l| {
            l.chosen = status;
            l.custom = custom;
            l.auto_idle = false;
            l.last_active = Instant::now();
        })
        .await
    }

    /// The user did something (sent an operation): back from auto-idle.
    pub async fn activity(&self, user: UserId) -> Option<Presence> {
        let was_idle = match self.users.get_mut(&user) {
            Some(mut e) => {
                e.last_active = Instant::now();
                e.auto_idle
            }
            None => false,
        };
        if !was_idle {
            return None;
        }
        self.update(user, |l| l.auto_idle = false).await
    }

    /// Turn the user idle if they chose `online` and did nothing for `idle_after`.
    /// Returns the instant at which to check again and the change, if any.
    pub async fn check_idle(
        &self,
        user: UserId,
        idle_after: Duration,
    ) -> (Instant, Option<Presence>) {
        let due = match self.users.get(&user) {
            Some(e) => e.last_active + idle_after,
            None => return (Instant::now() + idle_after, None),
        };
        if Instant::now() < due {
            return (due, None);
        }
        let p = self.update(user, |l| l.auto_idle = true).await;
        (Instant::now() + idle_after, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn presence_has_grace_and_idle() {
        let t = PresenceTracker::new(Arc::new(LocalPresenceStore::default()));
        let p = t.connect(1).await.unwrap();
        assert_eq!(p.status, PresenceStatus::Online);
        // A second session changes nothing others see.
        assert!(t.connect(1).await.is_none());
        assert!(t.disconnect(1).is_none());
        let epoch = t.disconnect(1).unwrap();
        // Reconnect inside the grace period: the pending offline is stale.
        assert!(t.connect(1).await.is_none());
        assert!(t.expire(1, epoch).await.is_none());
        let epoch = t.disconnect(1).unwrap();
        assert_eq!(
            t.expire(1, epoch).await.unwrap().status,
            PresenceStatus::Offline
        );
        assert!(t.snapshot(&[1]).await.is_empty());
        t.connect(1).await.unwrap();
        let (_, p) = t.check_idle(1, Duration::ZERO).await;
        assert_eq!(p.unwrap().status, PresenceStatus::Idle);
        assert_eq!(t.activity(1).await.unwrap().status, PresenceStatus::Online);
        let p = t
            .set(1, PresenceStatus::Dnd, Some("focus".into()))
            .await
            .unwrap();
        assert_eq!(
            (p.status, p.custom.as_deref()),
            (PresenceStatus::Dnd, Some("focus"))
        );
        // dnd is never turned idle.
        assert!(t.check_idle(1, Duration::ZERO).await.1.is_none());
    }
}
