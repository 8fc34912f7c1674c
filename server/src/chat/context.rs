//! [`Chat`]: what every chat action needs (storage, the hub, membership checks, limits),
//! and what an action gives back ([`Done`]: its typed result, and the [`Events`] others
//! must see once the caller has been answered).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;

use flowline_protocol::ChannelId;
use flowline_protocol::ws::{ErrorCode, ServerEvent};

use super::throttle::TypingThrottle;
use crate::config::Limits;
use crate::features::Features;
use crate::hub::{Audience, Hub};
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::storage::{Storage, ThreadLink};

/// The chat actions of one node (send, edit, delete, react, thread, typing), written once
/// for every transport: each takes the caller's [`Access`](crate::membership::Access)
/// and a typed request, and returns a [`Done`] or a [`Refusal`] (nothing done).
pub struct Chat {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) hub: Arc<Hub>,
    pub(super) membership: Arc<Membership>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) limits: Limits,
    pub(super) features: Features,
    pub(super) typing: TypingThrottle,
    /// Thread channel → its parent (`None`: not a thread). Links never change, so they
    /// are cached node-wide and a send looks one up at most once.
    pub(super) thread_links: DashMap<ChannelId, Option<ThreadLink>>,
}

/// A chat action that succeeded: its result for the caller, and the events for others.
#[derive(Debug)]
pub struct Done<T> {
    /// What the caller is answered with.
    pub result: T,
    /// What others see; emit with [`Chat::emit`] after answering the caller, so the
    /// caller's answer comes first.
    pub events: Events,
}

/// Events a chat action produced for others, each with its audience.
#[derive(Debug, Default)]
#[must_use = "emit the events with Chat::emit"]
pub struct Events(Vec<(Audience, ServerEvent)>);

impl Events {
    /// No event.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Is there no event?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One event for `audience`.
    pub fn one(audience: Audience, event: ServerEvent) -> Self {
        Self(vec![(audience, event)])
    }
}

impl<T> Done<T> {
    /// `result` with no event for others.
    pub fn quiet(result: T) -> Self {
        Self {
            result,
            events: Events::none(),
        }
    }
}

impl Chat {
    /// Chat actions over this node's storage and hub.
    pub fn new(
        storage: Arc<dyn Storage>,
        hub: Arc<Hub>,
        membership: Arc<Membership>,
        metrics: Arc<Metrics>,
        limits: Limits,
        features: Features,
    ) -> Self {
        Self {
            storage,
            hub,
            membership,
            metrics,
            limits,
            features,
            typing: TypingThrottle::default(),
            thread_links: DashMap::new(),
        }
    }

    /// Hand `events` to the hub (every node in a cluster).
    pub fn emit(&self, events: Events) {
        for (audience, event) in events.0 {
            match serde_json::to_string(&event) {
                Ok(text) => {
                    self.hub.emit(&audience, &Utf8Bytes::from(text));
                }
                Err(e) => tracing::error!(error = %e, "serializing an event"),
            }
        }
    }

    /// A message body within the limit (empty only if `allow_empty`).
    pub(super) fn check_body(&self, body: &str, allow_empty: bool) -> Result<(), Refusal> {
        let max = self.limits.max_body_chars;
        let n = body.chars().count();
        if (n == 0 && !allow_empty) || n > max {
            return Refusal::err(
                ErrorCode::TooLong,
                format!("body must have 1 to {max} characters"),
            );
        }
        Ok(())
    }
}
