//! Storage behind one contract with two implementations: [`MemoryStorage`] (phase
//! `single`) and [`PgStorage`] (every Postgres phase).
//!
//! * `contract.rs` — the value types and the traits, one per job ([`Accounts`],
//!   [`Spaces`], [`Messages`], [`Attachments`], [`Provisioning`]), gathered in
//!   [`Storage`];
//! * `memory.rs` — the in-memory implementation;
//! * `postgres/` — the Postgres implementation, one file per trait.
//!
//! The traits are object-safe (boxed futures) so the node holds an `Arc<dyn Storage>` and
//! the HTTP and WebSocket code is written once. Authorization rules live here, in
//! [`Spaces::can_read`], so both implementations answer identically:
//!
//! * public channel: readable by every member of its space;
//! * private channel: readable by its explicit members who are still space members;
//! * DM: readable by its two users.

mod contract;
mod memory;
mod postgres;

pub use contract::{
    Accounts, Attachments, Credentials, Messages, NewAttachment, NewMessage, ProvisionedIds,
    Provisioning, ReactionChange, Result, Spaces, Storage, ThreadLink,
};
pub use memory::MemoryStorage;
pub use postgres::{PgStorage, PoolSizes};
