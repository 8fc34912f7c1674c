//! Postgres storage for phase `postgres` (sqlx, runtime-checked queries).
//!
//! Message appends are committed in batches (`appends.rs`, group commit): one statement
//! locks the batch's channel rows, bumps each `channels.last_seq` and inserts the messages
//! with those seqs, so each commits atomically, seqs are gapless, and the channel row lock
//! orders concurrent senders (also across nodes). The caller acks only after it
//! returns, i.e. after commit. Bulk provisioning reserves ids with `nextval` and inserts
//! every table with one `UNNEST` statement inside one transaction.
//!
//! One file per storage trait (`accounts.rs`, `spaces.rs`, `messages.rs`,
//! `attachments.rs`, `provision.rs`); `pools.rs` holds [`PgStorage`] itself, `appends.rs`
//! the group commit of appends, and
//! `rows.rs` the row types and SQL fragments they share.

mod accounts;
mod appends;
mod attachments;
mod messages;
mod pools;
mod provision;
mod rows;
mod spaces;

pub use pools::{PgStorage, PoolSizes};
