//! The correctness checker: from the workers' histories (their `done` lines), whether every
//! acknowledged message reached every user that was due it, and what went wrong where.
//!
//! | file | decides |
//! |---|---|
//! | `chat.rs` | the Flowline cluster: lost, duplicated, reordered and gaps per channel |
//! | `generic.rs` | a generic WebSocket target: `expect = "echo"` or `"room"` |
//! | `verdict.rs` | the verdict both give (`summary.json` `correctness`) |

pub mod chat;
pub mod generic;
pub mod verdict;

pub use chat::check;
pub use verdict::{ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender};
