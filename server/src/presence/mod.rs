//! Presence in one module: the per-node state machine (`tracker.rs`: sessions, grace
//! period, idle, chosen status) and the [`Roster`] (`roster.rs`) that drives it from
//! session events and decides who is told. The cluster-wide registry of which node holds
//! which user is the bus's (`bus/presence.rs`); the roster asks it through the bus.

mod roster;
mod tracker;

pub use roster::Roster;
