//! [`Node`]: the shared state of one chat node, assembled once at start-up and handed to
//! the runners (WebSocket sessions, HTTP handlers). The parts below it know nothing of
//! it: each gets only what it needs (the bus a hub interface and storage, the chat
//! actions storage, hub and membership, ...).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use flowline_protocol::{ChannelId, Seq, UserId};

use crate::bus::{Bus, Inbox};
use crate::chat::Chat;
use crate::config::Config;
use crate::hub::{Audience, Gap, Hub};
use crate::idempotency::{Idempotency, LocalKeys, RedisKeys};
use crate::lookups::Lookups;
use crate::members::MemberChange;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::presence::Roster;
use crate::ratelimit::RateLimiter;
use crate::ratelimit::RedisBuckets;
use crate::sessions::Sessions;
use crate::storage::Storage;

/// State shared by every request and session of one node.
pub struct Node {
    /// The validated configuration.
    pub config: Config,
    /// Users, spaces, channels, messages.
    pub storage: Arc<dyn Storage>,
    /// Local fan-out.
    pub hub: Arc<Hub>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Membership checks.
    pub membership: Arc<Membership>,
    /// The connect path's batched storage reads.
    pub lookups: Lookups,
    /// Presence.
    pub roster: Arc<Roster>,
    /// The chat actions.
    pub chat: Chat,
    /// Open WebSocket sessions.
    pub sessions: Sessions,
    /// Rate limits of the chat actions (both transports).
    pub rates: RateLimiter,
    /// `Idempotency-Key`s of the HTTP API.
    pub idempotency: Idempotency,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// The cluster bus (phases `pubsub`/`queue`).
    bus: Option<Arc<Bus>>,
}

impl Node {
    /// Assemble a node over its storage, metrics and hub (with the bus already attached
    /// to the hub in the cluster phases).
    pub fn new(
        config: Config,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        bus: Option<Arc<Bus>>,
        shutdown: CancellationToken,
    ) -> Self {
        let membership = Arc::new(Membership::new(storage.clone()));
        let roster = Arc::new(Roster::new(
            hub.clone(),
            membership.clone(),
            bus.clone(),
            &config.features,
            shutdown.clone(),
        ));
        let chat = Chat::new(
            storage.clone(),
            hub.clone(),
            membership.clone(),
            metrics.clone(),
            config.limits,
            config.features.clone(),
        );
        // Cluster-wide where the phase has Redis, this node's own otherwise.
        let (rates, idempotency) = match &bus {
            Some(bus) => (
                RateLimiter::new(
                    config.rate,
                    Some(RedisBuckets::new(bus.redis(), bus.prefix())),
                ),
                Idempotency::Redis(RedisKeys::new(
                    bus.redis(),
                    bus.prefix(),
                    config.idempotency_ttl,
                )),
            ),
            None => (
                RateLimiter::new(config.rate, None),
                Idempotency::Local(LocalKeys::new(config.idempotency_ttl)),
            ),
        };
        Self {
            rates,
            idempotency,
            config,
            lookups: Lookups::new(storage.clone()),
            storage,
            hub,
            metrics,
            membership,
            roster,
            chat,
            sessions: Sessions::default(),
            shutdown,
            bus,
        }
    }

    /// Space membership changed (join, leave, a new space, provisioning): forget the
    /// cached membership here and, in a cluster, on every other node.
    pub fn members_changed(&self, change: MemberChange) {
        self.membership.forget(&change);
        if let Some(bus) = &self.bus {
            bus.publish_members(change);
        }
    }

    /// What the bus hands what it receives to: the hub, and the membership cache.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        Arc::new(NodeInbox {
            hub: self.hub.clone(),
            membership: self.membership.clone(),
        })
    }
}

/// The node as the bus sees it ([`Inbox`]): messages and events go to the hub, membership
/// changes to the membership cache.
struct NodeInbox {
    hub: Arc<Hub>,
    membership: Arc<Membership>,
}

impl Inbox for NodeInbox {
    fn accept(&self, channel: ChannelId, seq: Seq, text: &Utf8Bytes) -> usize {
        self.hub.accept(channel, seq, text)
    }

    fn emit_local(&self, audience: &Audience, text: &Utf8Bytes) -> usize {
        self.hub.emit_local(audience, text)
    }

    fn overdue_gaps(&self, wait: Duration) -> Vec<Gap> {
        self.hub.overdue_gaps(wait)
    }

    fn skip_gaps(&self, channel: ChannelId) -> u64 {
        self.hub.skip_gaps(channel)
    }

    fn local_users(&self) -> Vec<UserId> {
        self.hub.local_users()
    }

    fn forget_members(&self, change: &MemberChange) {
        self.membership.forget(change);
    }
}
