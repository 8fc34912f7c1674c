//! [`Node`]: the shared state of one chat node, assembled once at start-up and handed to
//! the runners (WebSocket sessions, HTTP handlers). The parts below it know nothing of
//! it: each gets only what it needs (the bus a hub interface and storage, the chat
//! actions storage, hub and membership, ...).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::chat::Chat;
use crate::config::Config;
use crate::hub::Hub;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::presence::Roster;
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
    /// Presence.
    pub roster: Arc<Roster>,
    /// The chat actions.
    pub chat: Chat,
    /// Open WebSocket sessions.
    pub sessions: Sessions,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
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
            bus,
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
        Self {
            config,
            storage,
            hub,
            metrics,
            membership,
            roster,
            chat,
            sessions: Sessions::default(),
            shutdown,
        }
    }
}
