//! [`Roster`]: presence as the node runs it — who is told what, when. It drives the
//! [`PresenceTracker`] state machine from session events (connect, activity, idle,
//! disconnect, a chosen status) and announces every change to the user's co-members
//! through the hub; in a cluster it adds users of other nodes from the bus's registry.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use flowline_protocol::UserId;
use flowline_protocol::ws::{ErrorCode, MAX_PRESENCE_QUERY, Presence, PresenceStatus, ServerEvent};

use super::tracker::{LocalPresenceStore, PresenceTracker};
use crate::bus::Bus;
use crate::features::Features;
use crate::hub::{Audience, Hub};
use crate::membership::Membership;
use crate::refusal::Refusal;

/// Presence of one node's users, and its announcements.
pub struct Roster {
    tracker: PresenceTracker,
    hub: Arc<Hub>,
    membership: Arc<Membership>,
    /// The cluster's presence registry (phases `pubsub`/`queue`).
    bus: Option<Arc<Bus>>,
    /// Time after a user's last session closes before they turn offline.
    grace: Duration,
    /// Inactivity after which an online user turns idle.
    idle_after: Duration,
    /// Longest custom status text, characters.
    max_status_chars: usize,
    /// Spaces larger than this get lazy presence (see `Features::presence_max_space`).
    max_space: usize,
    shutdown: CancellationToken,
}

impl Roster {
    /// A roster announcing through `hub` to co-members found by `membership`.
    pub fn new(
        hub: Arc<Hub>,
        membership: Arc<Membership>,
        bus: Option<Arc<Bus>>,
        features: &Features,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            tracker: PresenceTracker::new(Arc::new(LocalPresenceStore::default())),
            hub,
            membership,
            bus,
            grace: features.presence_grace,
            idle_after: features.idle_after,
            max_status_chars: features.max_status_chars,
            max_space: features.presence_max_space,
            shutdown,
        }
    }

    /// How long an online user may do nothing before turning idle.
    pub fn idle_after(&self) -> Duration {
        self.idle_after
    }

    fn emit(&self, audience: &Audience, p: Presence) {
        match serde_json::to_string(&ServerEvent::Presence(p)) {
            Ok(text) => {
                self.hub.emit(audience, &Utf8Bytes::from(text));
            }
            Err(e) => tracing::error!(error = %e, "serializing a presence event"),
        }
    }

    /// Announce a presence change to every user sharing a small space with its user
    /// (large spaces are lazy: their members ask).
    pub async fn announce(&self, p: Presence) {
        match self
            .membership
            .presence_audience(p.user_id, self.max_space)
            .await
        {
            Ok(users) if !users.is_empty() => self.emit(&Audience::Users(users), p),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot announce presence: storage failed"),
        }
    }

    /// Presence of those of `users` who are not offline. In a cluster, users connected to
    /// other nodes are online per the bus's registry (their chosen status and text are
    /// known to their own node only).
    pub async fn snapshot(&self, users: &[UserId]) -> Vec<Presence> {
        let mut snapshot = self.tracker.snapshot(users).await;
        if let Some(bus) = &self.bus {
            match bus.online_users(users).await {
                Ok(online) => {
                    let known: HashSet<UserId> = snapshot.iter().map(|p| p.user_id).collect();
                    snapshot.extend(online.into_iter().filter(|u| !known.contains(u)).map(
                        |user_id| Presence {
                            user_id,
                            status: PresenceStatus::Online,
                            custom: None,
                        },
                    ));
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the cluster's presence registry"),
            }
        }
        snapshot
    }

    /// `get_presence` of `caller`: the presence of those of `users` who share a space
    /// (large ones too) with the caller and are not offline.
    pub async fn query(&self, caller: UserId, users: &[UserId]) -> Result<Vec<Presence>, Refusal> {
        if users.len() > MAX_PRESENCE_QUERY {
            return Refusal::err(
                ErrorCode::TooLong,
                format!("get_presence asks about at most {MAX_PRESENCE_QUERY} users"),
            );
        }
        let visible = self.membership.sharing_a_space(caller, users).await?;
        Ok(self.snapshot(&visible).await)
    }

    /// A user joined a space: its members and the joiner learn each other's presence (they
    /// shared no space before, so neither was told) — unless the space is large (lazy).
    pub async fn on_join(&self, joiner: UserId, members: &[UserId]) {
        if members.len() > self.max_space {
            return;
        }
        let mut everyone = members.to_vec();
        everyone.push(joiner);
        let others: Vec<UserId> = members.iter().copied().filter(|&u| u != joiner).collect();
        for p in self.snapshot(&everyone).await {
            let audience = if p.user_id == joiner {
                Audience::Users(others.clone())
            } else {
                Audience::Users(vec![joiner])
            };
            self.emit(&audience, p);
        }
    }

    /// A session of `user` authenticated: online (unless reconnecting within the grace
    /// period). Returns the snapshot of the members of `user`'s small spaces for `ready`
    /// (empty unless `snapshot`) and the change to [`announce`](Self::announce) once the
    /// session is registered.
    pub async fn connect(&self, user: UserId, snapshot: bool) -> (Vec<Presence>, Option<Presence>) {
        let change = self.tracker.connect(user).await;
        if !snapshot {
            return (Vec::new(), change);
        }
        let users = match self
            .membership
            .presence_audience(user, self.max_space)
            .await
        {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read presence snapshot: storage failed");
                return (Vec::new(), change);
            }
        };
        (self.snapshot(&users).await, change)
    }

    /// `user` did something (an op other than `ping`): back from idle, announced.
    pub async fn activity(&self, user: UserId) {
        if let Some(p) = self.tracker.activity(user).await {
            self.announce(p).await;
        }
    }

    /// The idle check of `user` came due: turn them idle if they did nothing for the
    /// idle time (announced). Returns when to check again.
    pub async fn idle_check(&self, user: UserId) -> Instant {
        let (next, change) = self.tracker.check_idle(user, self.idle_after).await;
        if let Some(p) = change {
            self.announce(p).await;
        }
        next
    }

    /// `user` chose a status and custom text. Returns the change to
    /// [`announce`](Self::announce) once the caller is answered.
    pub async fn set_status(
        &self,
        user: UserId,
        status: PresenceStatus,
        custom: Option<String>,
    ) -> Result<Option<Presence>, Refusal> {
        let max = self.max_status_chars;
        let custom = custom.filter(|c| !c.is_empty());
        if let Some(c) = &custom
            && (c.chars().count() > max || c.chars().any(char::is_control))
        {
            return Refusal::err(
                ErrorCode::TooLong,
                format!("custom status must have at most {max} printable characters"),
            );
        }
        Ok(self.tracker.set(user, status, custom).await)
    }

    /// A session of `user` ended: after the grace period, the user turns offline unless a
    /// session of theirs came back meanwhile (on this node or, in a cluster, another).
    pub fn disconnect(self: &Arc<Self>, user: UserId) {
        let Some(epoch) = self.tracker.disconnect(user) else {
            return;
        };
        let roster = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(roster.grace) => {}
                () = roster.shutdown.cancelled() => return,
            }
            // Reconnected to another node of the cluster meanwhile: not offline.
            if let Some(bus) = &roster.bus
                && bus.is_online(user).await.unwrap_or(false)
            {
                return;
            }
            if let Some(p) = roster.tracker.expire(user, epoch).await {
                roster.announce(p).await;
            }
        });
    }
}
