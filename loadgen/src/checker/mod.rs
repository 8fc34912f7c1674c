//! The correctness checker: from the workers' histories (their `history` and `done`
//! lines), whether every acknowledged message reached every user that was due it, and what
//! went wrong where.
//!
//! | file | decides |
//! |---|---|
//! | `chat.rs` | the Flowline cluster: lost, duplicated, reordered and gaps per channel |
//! | `streams.rs` | the Flowline cluster: every named anomaly, per (channel, receiver) stream |
//! | `anomaly.rs` | the anomaly kinds and what is reported of each |
//! | `store.rs` | where the history waits for the check (memory, or spilled to bucket files) and the groups of whole channels it is read back in |
//! | `history.rs` | a whole run's check, group by group (chat and streams) |
//! | `generic.rs` | a generic WebSocket target: `expect = "echo"` or `"room"` |
//! | `verdict.rs` | the verdict both give (`summary.json` `correctness`) |

pub use crate::anomaly;
pub mod chat;
pub mod generic;
pub mod history;
pub mod store;
pub mod streams;
pub mod verdict;

pub use anomaly::{Anomalies, Anomaly, AnomalyOffender, AnomalyReport};
pub use chat::check;
pub use verdict::{ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender};
