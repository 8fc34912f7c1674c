//! `blackhole` (Flowline extension): drop every byte of the stream, keep the connection
//! open. On one direction only, this is a one-way partition.

use tokio::time::Instant;

use super::{Chunk, Toxic, Verdict};

/// A blackhole toxic.
#[derive(Debug)]
pub(crate) struct Blackhole;

impl Toxic for Blackhole {
    fn on_chunk(&mut self, _chunk: Chunk, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        Verdict::Pass
    }
}
