//! Measuring a worker's clock: `ping {id, sent_us}` → `pong {id, sent_us, worker_us}`, a
//! few times; the probe with the shortest round trip gives the offset (NTP's estimate:
//! the worker read its clock halfway through the round trip, so the offset is uncertain
//! by at most half of it).

use std::time::Duration;

use flowline_loadgen::coordinator::message::{
    FromWorker, MAX_HANDSHAKE_LINE, ToWorker, read_line, unix_us_now,
};

use super::gather::Conn;

/// Longest wait for one pong.
const PONG_WAIT: Duration = Duration::from_secs(2);

/// A worker's clock as measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    /// Its clock minus the coordinator's, µs.
    pub offset_us: i64,
    /// Shortest round trip, µs.
    pub rtt_us: u64,
}

/// One probe: coordinator clock when sent and when the pong came, worker clock between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) sent_us: u64,
    pub(crate) worker_us: u64,
    pub(crate) recv_us: u64,
}

/// The estimate of the probe with the shortest round trip.
pub(crate) fn estimate(probes: &[Probe]) -> Option<Clock> {
    let best = probes
        .iter()
        .min_by_key(|p| p.recv_us.saturating_sub(p.sent_us))?;
    let rtt = best.recv_us.saturating_sub(best.sent_us);
    let mid = best.sent_us as i128 + (rtt / 2) as i128;
    Some(Clock {
        offset_us: (best.worker_us as i128 - mid) as i64,
        rtt_us: rtt,
    })
}

/// Ping `conn` `count` times, one after the other; an error if it does not answer.
pub(crate) async fn measure(conn: &mut Conn, count: u32) -> Result<Clock, String> {
    let mut probes = Vec::new();
    for id in 1..=count.max(1) {
        let sent_us = unix_us_now();
        conn.send(&ToWorker::Ping { id, sent_us })
            .await
            .map_err(|e| format!("sending a ping: {e}"))?;
        let worker_us = tokio::time::timeout(PONG_WAIT, pong(conn, id))
            .await
            .map_err(|_| format!("no pong within {PONG_WAIT:?}"))??;
        probes.push(Probe {
            sent_us,
            worker_us,
            recv_us: unix_us_now(),
        });
    }
    estimate(&probes).ok_or_else(|| "no probe".to_string())
}

/// Read until the pong of probe `id`; its worker time.
async fn pong(conn: &mut Conn, id: u32) -> Result<u64, String> {
    loop {
        let line = read_line(&mut conn.reader, MAX_HANDSHAKE_LINE)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("closed during the clock pings")?;
        match serde_json::from_str::<FromWorker>(&line) {
            Ok(FromWorker::Pong {
                id: got, worker_us, ..
            }) if got == id => return Ok(worker_us),
            _ => tracing::debug!(
                "coordinator: shard {}: line ignored before the start",
                conn.hello.shard
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_round_trip_wins() {
        let p = |sent_us, worker_us, recv_us| Probe {
            sent_us,
            worker_us,
            recv_us,
        };
        // Worker 5 ms ahead; the second probe has a 2 ms round trip, the others 40 ms
        // with the delay all on one side (which would skew their estimate).
        let c = estimate(&[
            p(1_000_000, 1_005_000 + 39_000, 1_040_000),
            p(2_000_000, 2_005_000 + 1_000, 2_002_000),
            p(3_000_000, 3_005_000 + 1_000, 3_040_000),
        ])
        .unwrap();
        assert_eq!(
            c,
            Clock {
                offset_us: 5_000,
                rtt_us: 2_000
            }
        );
        // Behind.
        let c = estimate(&[p(10_000, 7_500, 11_000)]).unwrap();
        assert_eq!(c.offset_us, -3_000);
        assert_eq!(estimate(&[]), None);
    }
}
