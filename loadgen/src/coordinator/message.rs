//! The coordinator protocol's control messages (hello, ping/pong, start, started, stop,
//! refused), its version, the identity a worker proves in `hello` (build, scenario hash),
//! and the line framing both sides read with. The measurement lines (`tick`, `done`) are
//! [`crate::wire`]'s; docs/coordinator.md describes every message with examples.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::scenario::Scenario;

/// Version of the protocol; a worker and a coordinator of different versions refuse each
/// other. Bump it on any change a peer of the other version would misread. 2: the chat
/// history streams in `history` lines, once a second (1: all of it in the `done` line).
pub const PROTOCOL_VERSION: u32 = 2;

/// Longest line a peer may send before the start: a hello is a few hundred bytes, so a
/// stray client cannot make the coordinator buffer much.
pub const MAX_HANDSHAKE_LINE: usize = 64 * 1024;

/// Longest line after the start: a `history` line carries one second of a worker's sends
/// and receive events (~60 bytes of JSON a delivery), a `done` line every recipient's
/// range-compacted receipts: 2 GiB is ~35M deliveries in one second.
pub const MAX_RUN_LINE: usize = 2 << 30;

/// What a worker sends the coordinator besides its `tick` and `done` lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// First line of every connection: who the worker is and what it will run.
    Hello(Hello),
    /// Answer to a [`ToWorker::Ping`], sent as soon as it is read.
    Pong {
        /// The ping's id.
        id: u32,
        /// The ping's `sent_us`, echoed.
        sent_us: u64,
        /// The worker's clock (Unix µs) when it read the ping.
        worker_us: u64,
    },
    /// The worker's run began: its clock reached the start instant and it woke up.
    Started {
        /// When it woke, Unix µs on the coordinator's clock (its own minus its offset).
        at_us: u64,
        /// How long after its start instant it woke, µs (its own monotonic clock).
        late_us: u64,
    },
}

/// A worker's `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the worker.
    pub version: u32,
    /// Its shard index, `0..shards`.
    pub shard: usize,
    /// How many shards it believes the run has.
    pub shards: usize,
    /// Its build ([`build_id`]).
    pub build: String,
    /// Hash of the scenario it will run ([`scenario_hash`]).
    pub scenario_hash: String,
    /// The scenario's seed.
    pub seed: u64,
    /// Its Prometheus endpoint, if it serves one (`--metrics-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Its host name, for messages and the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// What the coordinator sends a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The hello was accepted; the start follows once every shard has said hello.
    Welcome {
        /// The coordinator's [`PROTOCOL_VERSION`].
        version: u32,
        /// Shards still missing when this one was accepted.
        waiting_for: usize,
    },
    /// The hello was refused; the connection closes after this line (the worker exits 2).
    Refused {
        /// Why, naming both values (e.g. the two builds).
        reason: String,
    },
    /// A clock probe: answer with a pong at once.
    Ping {
        /// Probe number.
        id: u32,
        /// The coordinator's clock (Unix µs) when it was sent.
        sent_us: u64,
    },
    /// Start the run at `t0`.
    Start {
        /// Start instant, Unix milliseconds on the coordinator's clock.
        t0: u64,
        /// The worker's clock minus the coordinator's, µs, as measured by the pings: the
        /// worker starts when its own clock reads `t0 + clock_offset_us`, and stamps its
        /// times on the coordinator's clock (its own minus the offset).
        clock_offset_us: i64,
    },
    /// Stop early (the run's deadline passed): close the users and send `done`, as on
    /// SIGINT.
    Stop {
        /// Why.
        reason: String,
    },
}

/// This binary's build as a worker announces it and a coordinator expects it: the
/// package version, the protocol version, and `FLOWLINE_BUILD` if it was set when the
/// binary was compiled (a container image build sets it to the git revision).
pub fn build_id() -> String {
    let mut id = format!(
        "flowline {} protocol {PROTOCOL_VERSION}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(b) = option_env!("FLOWLINE_BUILD").filter(|b| !b.is_empty()) {
        id.push_str(&format!(" ({b})"));
    }
    id
}

/// `sha256:<hex>` of the scenario as run ([`Scenario::to_toml`], seed and overrides
/// included): a worker started with another scenario file or other overrides differs.
pub fn scenario_hash(s: &Scenario) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(s.to_toml().as_bytes()))
    )
}

/// Microseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_us_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Read one `\n`-terminated line of at most `max` bytes (without the newline); `None` at
/// a clean end of stream. A longer line, a stream ending mid-line and invalid UTF-8 are
/// errors.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        let what = if buf.len() > max {
            format!("a line longer than {max} bytes")
        } else {
            "the connection closed in the middle of a line".to_string()
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a line is not UTF-8"))
}

/// Write `text` and a newline, and flush.
pub async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.flush().await
}

/// Serialize a message as one line of JSON text (no newline).
pub fn to_line<T: Serialize>(m: &T) -> String {
    // The message types hold only strings and numbers: serialising cannot fail.
    serde_json::to_string(m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_lines() {
        let hello = FromWorker::Hello(Hello {
            version: PROTOCOL_VERSION,
            shard: 1,
            shards: 4,
            build: build_id(),
            scenario_hash: "sha256:ab".into(),
            seed: 7,
            metrics: None,
            host: None,
            pid: Some(9),
        });
        let s = to_line(&hello);
        assert!(
            s.starts_with(&format!(
                r#"{{"type":"hello","version":{PROTOCOL_VERSION},"shard":1"#
            )),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<FromWorker>(&s).unwrap(), hello);
        let start = ToWorker::Start {
            t0: 1_700_000_000_000,
            clock_offset_us: -12,
        };
        let s = to_line(&start);
        assert_eq!(
            s,
            r#"{"type":"start","t0":1700000000000,"clock_offset_us":-12}"#
        );
        assert_eq!(serde_json::from_str::<ToWorker>(&s).unwrap(), start);
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut r = tokio::io::BufReader::new(&b"short\r\nlonger than ten\npartial"[..]);
        assert_eq!(
            read_line(&mut r, 10).await.unwrap().as_deref(),
            Some("short")
        );
        let e = read_line(&mut r, 10).await.unwrap_err();
        assert!(e.to_string().contains("longer than 10"), "{e}");
        let mut r = tokio::io::BufReader::new(&b"partial"[..]);
        let e = read_line(&mut r, 10).await.unwrap_err();
        assert!(e.to_string().contains("middle of a line"), "{e}");
        let mut r = tokio::io::BufReader::new(&b""[..]);
        assert_eq!(read_line(&mut r, 10).await.unwrap(), None);
    }

    #[test]
    fn scenario_hash_survives_the_run_folder_round_trip() {
        let s = Scenario::parse(
            "t",
            "[run]\nname = \"t\"\nduration = \"2s\"\nseed = 3\n[population]\nusers = 10\n",
        )
        .unwrap();
        let again = Scenario::parse("t", &s.to_toml()).unwrap();
        assert_eq!(scenario_hash(&s), scenario_hash(&again));
        let other = s
            .apply(&crate::scenario::Overrides {
                seed: Some(4),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(scenario_hash(&s), scenario_hash(&other));
    }
}
