//! What the key stores share: the recorded first answer of a key and what claiming a key
//! found. A leaf of `idempotency`: both stores (`local.rs`, `cluster.rs`) and the
//! dispatcher (`mod.rs`) use it, it uses none of them.

use serde::{Deserialize, Serialize};

/// A recorded answer: what the first request was (its fingerprint) and what it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Hash of method, path and body of the first request.
    pub fingerprint: String,
    /// HTTP status of the first answer.
    pub status: u16,
    /// JSON body of the first answer.
    pub body: String,
}

/// What a claim found.
pub enum Claim<G> {
    /// Nobody used the key: act, then `finish` (`Idempotency::run`) with the guard.
    Fresh(G),
    /// The key's first request was answered this.
    Done(Recorded),
    /// The key's first request is still running; look again.
    Pending,
}

impl<G> Claim<G> {
    /// The same claim with the fresh guard turned into another.
    pub(super) fn map_fresh<H>(self, f: impl FnOnce(G) -> H) -> Claim<H> {
        match self {
            Self::Fresh(g) => Claim::Fresh(f(g)),
            Self::Done(r) => Claim::Done(r),
            Self::Pending => Claim::Pending,
        }
    }
}
