//! Postgres storage for phase `postgres` (sqlx, runtime-checked queries).
//!
//! A message append is one statement: it bumps `channels.last_seq` and inserts the
//! message with that seq, so it commits atomically, seqs are gapless, and the channel
//! row lock orders concurrent senders (also across nodes). The caller acks only after it
//! returns, i.e. after commit. Bulk provisioning reserves ids with `nextval` and inserts
//! every table with one `UNNEST` statement inside one transaction.
//!
//! One file per storage trait (`accounts.rs`, `spaces.rs`, `messages.rs`,
//! `attachments.rs`, `provision.rs`); `pools.rs` holds [`PgStorage`] itself and
//! `rows.rs` the row types and SQL fragments they share.

mod accounts;
mod attachments;
mod messages;
mod pools;
mod provision;
mod rows;
mod spaces;

pub use pools::{PgStorage, PoolSizes};
