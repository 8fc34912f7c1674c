//! The connect/reconnect driver shared by every kind of user: connect to the user's node,
//! run a session, and reconnect after a failed attempt or a broken session.
//!
//! ```text
//!        ┌───────────── churn (planned close: home node again) ─────────────┐
//!        ▼                                                                   │
//!  connect ──ok──▶ session (the user's own: hello, traffic) ──▶ Finished ──▶ close, stop
//!     │ fail                    │ Broken
//!     ▼                         ▼
//!  back off (100 ms · 2^n, ≤ 5 s, spread by user) / (50 ms · 2^n, ≤ 2 s); next node
//! ```

use std::time::{Duration, Instant};

use tokio::time::{sleep_until, timeout};

use crate::histogram::Metric;
use crate::worker::connect::{Ws, connect, target_index};
use crate::worker::context::ThreadCtx;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a session ended.
pub(super) enum End {
    /// The run is over (or this user's ramp window ended): close and stop.
    Finished,
    /// The connection broke: reconnect with resume.
    Broken,
    /// Planned churn: close and reconnect with resume.
    Churn,
}

/// A simulated user whose connections [`drive`] opens, whatever protocol it speaks.
pub(super) trait Sessions {
    fn index(&self) -> u32;
    fn stop_at(&self) -> Instant;
    /// One connection's life, from the handshake's end to the end of its traffic (the
    /// driver closes the socket unless it broke).
    /// Takes the socket by reference: moved in, it would sit in the task twice (as the
    /// argument and as the session's local).
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End;
}

/// Connection behaviour shared by every kind of user: connect to the user's node (see
/// [`target_index`]), run a session, and reconnect after a failed attempt or a broken
/// session with capped exponential backoff, moving on to the next node each time; planned
/// churn closes and reconnects to the home node. Ends at the user's stop time or on
/// cancellation.
pub(super) async fn drive(ctx: &ThreadCtx, u: &mut impl Sessions, churn: Option<Duration>) {
    let index = u.index();
    let mut attempt = 0u32;
    let mut sessions = 0u32;
    loop {
        let stop_at = u.stop_at();
        if Instant::now() >= stop_at || ctx.cancel.is_cancelled() {
            break;
        }
        let t0 = Instant::now();
        let target = &ctx.targets[target_index(index, attempt, ctx.targets.len())];
        // Boxed, as every step that only runs now and then: a task's size is that of its
        // largest state, paid by every user for the whole run.
        let backoff = match Box::pin(connect(target, index)).await {
            Err(kind) => {
                ctx.error(kind);
                attempt += 1;
                // Failed attempts back off longer, spread by user so a refused crowd does
                // not come back in lockstep.
                Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
                    + Duration::from_millis(u64::from(index % 97))
            }
            Ok(mut ws) => {
                ctx.record(Metric::Connect, t0.elapsed().as_micros() as u64);
                if sessions > 0 {
                    ctx.count(|c| c.reconnects += 1);
                }
                sessions += 1;
                let churn_at = churn
                    .map(|every| {
                        // Spread churn over users deterministically: a first close after
                        // 50–150% of the interval, depending on the user's index.
                        let frac = 0.5 + f64::from(index % 101) / 100.0;
                        Instant::now() + every.mul_f64(if sessions == 1 { frac } else { 1.0 })
                    })
                    // Planned churn ends with sending: a user that reconnected during the
                    // drain could end the run before reading its replay, and the checker
                    // would rightly count what it never read.
                    .filter(|&at| at < ctx.clock.send_end);
                let end = u.session(&mut ws, churn_at).await;
                if !matches!(end, End::Broken) {
                    let _ = Box::pin(timeout(CLOSE_TIMEOUT, ws.close(None))).await;
                }
                match end {
                    End::Finished => break,
                    End::Churn => {
                        attempt = 0;
                        continue;
                    }
                    End::Broken => {
                        ctx.count(|c| c.disconnects += 1);
                        attempt += 1;
                        Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
                    }
                }
            }
        };
        tokio::select! {
            _ = sleep_until((Instant::now() + backoff).min(u.stop_at()).into()) => {}
            _ = ctx.cancel.cancelled() => {}
        }
    }
}
