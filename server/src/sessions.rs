//! [`Sessions`]: the node's open WebSocket sessions as a whole — how many are open (the
//! connection limit), their ids, the tracker the node drains on shutdown, and which
//! sessions each token opened (so log out can close them with 4012).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::task::TaskTracker;

use flowline_protocol::ws::close;

use crate::auth::TokenHash;
use crate::hub::{SessionId, SessionShared};

/// Registry of one node's WebSocket sessions.
pub struct Sessions {
    tracker: TaskTracker,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Sessions per token, so log out can close them (4012).
    by_token: DashMap<TokenHash, Vec<(SessionId, Arc<SessionShared>)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            tracker: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            by_token: DashMap::new(),
        }
    }
}

impl Sessions {
    /// Count one more open session unless `max` are open; returns whether it may open.
    pub fn try_open(&self, max: usize) -> bool {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// A session counted by [`try_open`](Self::try_open) ended (or never started).
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// A fresh session id.
    pub fn next_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The tracker every session task is spawned on (drained on shutdown).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Stop tracking new sessions and wait (up to `limit`) for the open ones to end;
    /// returns whether they did.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Remember that session `id` authenticated with `token`.
    pub fn remember(&self, token: TokenHash, id: SessionId, shared: Arc<SessionShared>) {
        self.by_token.entry(token).or_default().push((id, shared));
    }

    /// Forget session `id` of `token`.
    pub fn forget(&self, token: TokenHash, id: SessionId) {
        let empty = self.by_token.get_mut(&token).is_some_and(|mut v| {
            v.retain(|(s, _)| *s != id);
            v.is_empty()
        });
        if empty {
            self.by_token.remove_if(&token, |_, v| v.is_empty());
        }
    }

    /// Close every session authenticated with `token`.
    pub fn kick_token(&self, token: TokenHash) {
        if let Some((_, sessions)) = self.by_token.remove(&token) {
            for (_, shared) in sessions {
                shared.kick(close::LOGGED_OUT);
            }
        }
    }
}
