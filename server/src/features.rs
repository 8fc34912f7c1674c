//! Chat features beyond plain messages: their configuration ([`Features`], flags in
//! [`FeatureArgs`]), presence ([`PresenceTracker`] over a [`PresenceStore`]) and the
//! typing throttle ([`TypingThrottle`]).
//!
//! Every event these produce leaves through [`crate::hub::Hub::emit`], so a cluster bus can
//! carry it to the other nodes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use flowline_protocol::ws::{Presence, PresenceStatus};
use flowline_protocol::{ChannelId, UserId};

/// Feature settings of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The node's data directory; uploads are stored under `<data_dir>/uploads`.
    pub data_dir: PathBuf,
    /// Largest upload, bytes (larger: 413 `too_large`).
    pub upload_max_bytes: u64,
    /// Allowed upload content types: exact (`image/png`) or a whole family (`image/*`).
    pub upload_types: Vec<String>,
    /// A user whose last session closed turns offline after this long (a reconnect in
    /// between causes no presence event).
    pub presence_grace: Duration,
    /// An online user with no activity for this long turns idle.
    pub idle_after: Duration,
    /// At most one `typing` is forwarded per user per channel per this interval.
    pub typing_interval: Duration,
    /// How long clients show a typing indicator (`expires_ms` of the event).
    pub typing_expires: Duration,
    /// Longest custom status text, characters.
    pub max_status_chars: usize,
    /// Most attachments on one message.
    pub max_attachments: usize,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("flowline-data"),
            upload_max_bytes: 8 * 1024 * 1024,
            upload_types: DEFAULT_UPLOAD_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            presence_grace: Duration::from_secs(10),
            idle_after: Duration::from_secs(300),
            typing_interval: Duration::from_secs(3),
            typing_expires: Duration::from_secs(8),
            max_status_chars: 128,
            max_attachments: 10,
        }
    }
}

/// Content types accepted by default.
pub const DEFAULT_UPLOAD_TYPES: &[&str] = &[
    "image/*",
    "video/*",
    "audio/*",
    "text/plain",
    "application/pdf",
    "application/zip",
];

impl Features {
    /// Is an upload of this content type allowed? (Parameters like `; charset=` are ignored.)
    pub fn type_allowed(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let Some((family, _)) = essence.split_once('/') else {
            return false;
        };
        self.upload_types.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            match allowed.strip_suffix("/*") {
                Some(f) => f == family,
                None => allowed == essence,
            }
        })
    }

    /// Check the values for consistency.
    pub fn validate(&self) -> Result<(), String> {
        if self.upload_max_bytes == 0 {
            return Err("upload size limit must be positive".into());
        }
        if self.upload_types.iter().any(|t| !t.contains('/')) {
            return Err("upload types look like `image/png` or `image/*`".into());
        }
        if self.presence_grace.is_zero()
            || self.idle_after.is_zero()
            || self.typing_interval.is_zero()
            || self.typing_expires.is_zero()
        {
            return Err("presence and typing timeouts must be positive".into());
        }
        if self.max_attachments == 0 || self.max_status_chars == 0 {
            return Err("attachment and status limits must be positive".into());
        }
        Ok(())
    }
}

/// Command-line flags of [`Features`] (flattened into `flowline server`).
#[derive(Debug, Clone, clap::Args)]
pub struct FeatureArgs {
    /// Node data directory; uploads go to `<dir>/uploads/<sha256>` (default
    /// `flowline-data/<node id>`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest upload, bytes (larger: 413).
    #[arg(long, default_value_t = Features::default().upload_max_bytes)]
    pub upload_max_bytes: u64,
    /// Allowed upload content types, comma-separated (`image/*` allows a family;
    /// others: 415).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_UPLOAD_TYPES.iter().map(|s| (*s).to_owned()))]
    pub upload_types: Vec<String>,
    /// Time after a user's last session closes before they turn offline, ms.
    #[arg(long, default_value_t = 10_000)]
    pub presence_grace_ms: u64,
    /// Inactivity after which an online user turns idle, ms.
    #[arg(long, default_value_t = 300_000)]
    pub idle_after_ms: u64,
}

impl FeatureArgs {
    /// The settings these flags describe for node `node_id`.
    pub fn to_features(&self, node_id: &str) -> Features {
        Features {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("flowline-data").join(node_id)),
            upload_max_bytes: self.upload_max_bytes,
            upload_types: self.upload_types.clone(),
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            idle_after: Duration::from_millis(self.idle_after_ms),
            ..Features::default()
        }
    }
}

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

/// Per-node throttle of `typing`: at most one forwarded per user per channel per interval.
/// Nothing is stored beyond the last forward time.
#[derive(Default)]
pub struct TypingThrottle {
    last: DashMap<(UserId, ChannelId), Instant>,
}

/// Entries kept before stale ones are swept.
const TYPING_SWEEP_AT: usize = 50_000;

impl TypingThrottle {
    /// Should this `typing` be forwarded now?
    pub fn allow(&self, user: UserId, channel: ChannelId, interval: Duration) -> bool {
        let now = Instant::now();
        let allowed = match self.last.entry((user, channel)) {
            dashmap::Entry::Occupied(mut e) => {
                if now.duration_since(*e.get()) >= interval {
                    e.insert(now);
                    true
                } else {
                    false
                }
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(now);
                true
            }
        };
        if allowed && self.last.len() > TYPING_SWEEP_AT {
            self.last.retain(|_, t| now.duration_since(*t) < interval);
        }
        allowed
    }
}

/// Feature state shared by a node's sessions.
pub struct FeatureState {
    /// Presence of users with sessions on this node.
    pub presence: PresenceTracker,
    /// Typing throttle.
    pub typing: TypingThrottle,
    /// Thread channel → its parent (`None`: not a thread). Links never change, so they
    /// are cached node-wide and a send looks one up at most once.
    pub(crate) thread_links: DashMap<ChannelId, Option<crate::storage::ThreadLink>>,
}

impl Default for FeatureState {
    fn default() -> Self {
        Self {
            presence: PresenceTracker::new(Arc::new(LocalPresenceStore::default())),
            typing: TypingThrottle::default(),
            thread_links: DashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_match_exactly_or_by_family() {
        let f = Features::default();
        assert!(f.type_allowed("image/png"));
        assert!(f.type_allowed("Image/PNG; q=1"));
        assert!(f.type_allowed("text/plain; charset=utf-8"));
        assert!(!f.type_allowed("text/html"));
        assert!(!f.type_allowed("application/x-msdownload"));
        assert!(!f.type_allowed("nonsense"));
    }

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

    #[test]
    fn typing_is_throttled_per_user_and_channel() {
        let t = TypingThrottle::default();
        let i = Duration::from_secs(3);
        assert!(t.allow(1, 10, i));
        assert!(!t.allow(1, 10, i));
        assert!(t.allow(1, 11, i));
        assert!(t.allow(2, 10, i));
        assert!(t.allow(1, 10, Duration::ZERO));
    }
}
