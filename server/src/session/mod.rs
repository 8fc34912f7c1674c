//! One WebSocket session at `/ws`: a reader (the session's own task) that parses client
//! operations and a writer task that owns the socket's sending half.
//!
//! ```text
//!  socket ──► reader: parse, limits, hello/subscribe/send/history/ping ──┐
//!                         │ acks, errors, ready (try_send)                 │ kick(code)
//!                         ▼                                                ▼
//!  hub fan-out ──► bounded queue (Outbound) ──► writer: resume de-dup, pings, close frames ──► socket
//! ```
//!
//! Both halves are generic over `Sink`/`Stream` so they can be driven without a socket.
//! Whoever ends first calls `SessionShared::kick`; the other follows.
//!
//! Files: `connection.rs` (the session's lifetime and reader loop), `hello.rs`
//! (authentication, subscribing, resume without gap or duplicate), `ops.rs` (dispatch
//! and the answers of every op), `frame.rs` (pre-parse checks), `writer.rs` (the writer
//! task).

mod connection;
mod frame;
mod hello;
mod ops;
mod writer;

pub(crate) use connection::serve;
