//! The generic WebSocket target (`[target] kind = "websocket"`): frame templates, the
//! matching of received frames and what each user received of every author. The user
//! that speaks to it is `worker/generic.rs`; its checker is `checker/generic.rs`.
//!
//! ```text
//! user i ──connect(url[i % n], headers, subprotocol)──▶ service
//!        ──hello template (once)──▶
//!        ──message template at the persona's rate──▶        {msg_id} = i·2^24 + seq
//!        ◀── frames: id/time pulled out by JSON pointer or regex
//!              own id   → echo   (counted as `acked`, latency `ack`)
//!              other id → fan-out (counted as `delivered`, latency `delivery`)
//! ```
//! Latency comes from the send time carried in the frame (`match_time`) when there is
//! one, otherwise (own echoes only) from the time the frame was written.
//!
//! Correctness: every worker reports what its users sent (author, seq, time), when each
//! user's last session began and whether it lasted to the end, and which (author, seq)
//! each user received as (recipient, author, first, last) seq ranges (`GenericDone` in
//! `wire.rs`, kept per user in [`AuthorReceipts`] while it runs); `checker/generic.rs`
//! decides.

pub mod frames;
pub mod matcher;
pub mod receipts;
pub mod template;

pub use frames::Frames;
pub use matcher::{Matched, Matcher};
pub use receipts::{AuthorRange, AuthorReceipts};
pub use template::{SEQ_BITS, Template, Vars, msg_id, room_key, split_id};
