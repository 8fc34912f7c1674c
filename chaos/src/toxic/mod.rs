//! Toxics: their API description ([`ToxicSpec`], Toxiproxy's JSON shape) and their
//! behaviour on a live connection (the crate-private [`Toxic`] trait, one file per toxic).
//!
//! # The contract a toxic keeps
//!
//! A toxic sees the chunks of one direction of one connection, in order, and is
//! synchronous: it never sleeps itself. Instead every [`Chunk`] carries `due`, the moment
//! it may be written (initially its arrival time), and a toxic that delays data moves
//! `due` forward. The link writer sleeps until `due`, so a chunk that already waited in
//! the queue only sleeps for what is left (latency adds to arrival, not to dequeue time).
//! A toxic may
//! - emit zero, one or several chunks for each input chunk (`out`), keeping their order;
//! - end the connection by returning [`Verdict::Close`] (FIN after what it emitted) or
//!   [`Verdict::Reset`] (RST);
//! - ask to act on its own at a moment ([`Toxic::deadline`]), e.g. `timeout`;
//! - delay the close when the source reaches end of stream ([`Toxic::on_eof`]).
//!
//! A toxic holds per-connection state only; it is created when it is added to a proxy
//! (or when a connection starts) and dropped when removed, so toxics can be added,
//! changed and removed on live connections. Toxicity is rolled once per connection and
//! toxic: with probability `toxicity` the toxic acts, otherwise it passes data through.
//! A toxic that holds chunks back gives them up in [`Toxic::drain`] when it is removed
//! or the stream ends, so healing never loses data.
//!
//! # Frame toxics
//!
//! The `frame_*` toxics act on whole WebSocket messages of the downstream direction. The
//! downstream chain runs a [`framer::Framer`] before its toxics: while a frame toxic acts,
//! each complete data message reaches the toxics as one chunk with `frame: Some(..)`;
//! every other chunk (HTTP head, control frames, other protocols) has `frame: None` and
//! frame toxics pass it. Which messages a frame toxic takes is [`select::FrameSelect`].

mod bandwidth;
mod blackhole;
mod frame_corrupt;
mod frame_delay;
mod frame_drop;
mod frame_duplicate;
mod frame_reorder;
pub(crate) mod framer;
mod latency;
mod limit_data;
mod reset_peer;
pub use crate::frame_select as select;
mod slicer;
mod slow_close;
mod timeout;

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::{Error, Result};
use framer::{Frame, Framer};
pub use select::FrameSelect;
use select::Selector;

/// Direction of data through a proxy: upstream is client → server, downstream server → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → upstream server.
    Upstream,
    /// Upstream server → client (Toxiproxy's default).
    Downstream,
}

impl Direction {
    /// Toxiproxy's name for the direction.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }

    /// Parse Toxiproxy's `stream` field.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "upstream" => Ok(Direction::Upstream),
            "downstream" => Ok(Direction::Downstream),
            _ => Err(Error::InvalidStream),
        }
    }
}

/// The type of a toxic with its attributes, in Toxiproxy's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToxicKind {
    /// Delay each chunk by `latency` ± `jitter` milliseconds.
    Latency {
        /// Milliseconds.
        latency: u64,
        /// Milliseconds, uniform ± around `latency`.
        jitter: u64,
    },
    /// Limit throughput to `rate` KB/s (1 KB = 1000 bytes); 0 means unlimited.
    Bandwidth {
        /// KB/s.
        rate: u64,
    },
    /// Delay the close of the stream by `delay` milliseconds.
    SlowClose {
        /// Milliseconds.
        delay: u64,
    },
    /// Drop all data and close the connection after `timeout` ms (0: never close).
    Timeout {
        /// Milliseconds.
        timeout: u64,
    },
    /// On data, reset the connection (TCP RST) after `timeout` ms.
    ResetPeer {
        /// Milliseconds.
        timeout: u64,
    },
    /// Slice data into pieces of `average_size` ± `size_variation` bytes, `delay` µs apart.
    Slicer {
        /// Bytes.
        average_size: u64,
        /// Bytes.
        size_variation: u64,
        /// Microseconds between pieces.
        delay: u64,
    },
    /// Close the connection once `bytes` bytes went through.
    LimitData {
        /// Bytes.
        bytes: u64,
    },
    /// Flowline extension: silently drop every byte of the stream (one-way partition).
    Blackhole,
    /// Flowline extension: act on selected WebSocket messages (server → client).
    Frame {
        /// What is done to a selected message.
        action: FrameAction,
        /// Which messages are selected.
        select: FrameSelect,
    },
}

/// What a frame toxic does to the messages it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameAction {
    /// `frame_drop`: never deliver them.
    Drop,
    /// `frame_duplicate`: deliver them twice in a row.
    Duplicate,
    /// `frame_delay`: hold them `delay` ms (later frames wait behind them).
    Delay {
        /// Milliseconds.
        delay: u64,
    },
    /// `frame_reorder`: deliver each after the `after`-th later message matching `match`.
    Reorder {
        /// Matching messages that overtake it (at least 1).
        after: u64,
    },
    /// `frame_corrupt`: XOR payload byte `offset` with `xor`.
    Corrupt {
        /// Byte of the payload (the last one when the payload is shorter).
        offset: u64,
        /// 1..=255.
        xor: u64,
    },
}

impl FrameAction {
    fn type_name(&self) -> &'static str {
        match self {
            FrameAction::Drop => "frame_drop",
            FrameAction::Duplicate => "frame_duplicate",
            FrameAction::Delay { .. } => "frame_delay",
            FrameAction::Reorder { .. } => "frame_reorder",
            FrameAction::Corrupt { .. } => "frame_corrupt",
        }
    }

    fn from_type(name: &str) -> Option<Self> {
        Some(match name {
            "frame_drop" => FrameAction::Drop,
            "frame_duplicate" => FrameAction::Duplicate,
            "frame_delay" => FrameAction::Delay { delay: 0 },
            "frame_reorder" => FrameAction::Reorder { after: 1 },
            "frame_corrupt" => FrameAction::Corrupt { offset: 0, xor: 1 },
            _ => return None,
        })
    }

    /// The action's own attributes, with values.
    fn attributes(&self) -> Vec<(&'static str, u64)> {
        match *self {
            FrameAction::Drop | FrameAction::Duplicate => vec![],
            FrameAction::Delay { delay } => vec![("delay", delay)],
            FrameAction::Reorder { after } => vec![("after", after)],
            FrameAction::Corrupt { offset, xor } => vec![("offset", offset), ("xor", xor)],
        }
    }

    fn set(&mut self, key: &str, v: u64) {
        match (self, key) {
            (FrameAction::Delay { delay }, "delay") => *delay = v,
            (FrameAction::Reorder { after }, "after") => *after = v,
            (FrameAction::Corrupt { offset, .. }, "offset") => *offset = v,
            (FrameAction::Corrupt { xor, .. }, "xor") => *xor = v,
            _ => {}
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            FrameAction::Reorder { after: 0 } => Err("`after` must be at least 1".into()),
            FrameAction::Corrupt { xor, .. } if !(1..=255).contains(&xor) => {
                Err(format!("`xor` must be within 1..=255, got {xor}"))
            }
            _ => Ok(()),
        }
    }
}

impl ToxicKind {
    /// Toxiproxy's `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Blackhole => "blackhole",
            ToxicKind::Frame { action, .. } => action.type_name(),
        }
    }

    /// Whether it acts on WebSocket messages (downstream only).
    pub fn is_frame(&self) -> bool {
        matches!(self, ToxicKind::Frame { .. })
    }

    /// A toxic of the named type with all attributes zero (Toxiproxy's defaults).
    pub fn from_type(name: &str) -> Result<Self> {
        Ok(match name {
            "latency" => ToxicKind::Latency {
                latency: 0,
                jitter: 0,
            },
            "bandwidth" => ToxicKind::Bandwidth { rate: 0 },
            "slow_close" => ToxicKind::SlowClose { delay: 0 },
            "timeout" => ToxicKind::Timeout { timeout: 0 },
            "reset_peer" => ToxicKind::ResetPeer { timeout: 0 },
            "slicer" => ToxicKind::Slicer {
                average_size: 0,
                size_variation: 0,
                delay: 0,
            },
            "limit_data" => ToxicKind::LimitData { bytes: 0 },
            "blackhole" => ToxicKind::Blackhole,
            other => match FrameAction::from_type(other) {
                Some(action) => ToxicKind::Frame {
                    action,
                    select: FrameSelect::default(),
                },
                None => return Err(Error::InvalidToxicType),
            },
        })
    }

    /// The attributes as `(name, value)` pairs, in Toxiproxy's order.
    pub fn attributes(&self) -> Vec<(&'static str, Value)> {
        if let ToxicKind::Frame { action, select } = self {
            let mut v = vec![
                ("nth", Value::from(select.nth)),
                ("every", Value::from(select.every)),
                (
                    "match",
                    Value::Object(select.matches.clone().into_iter().collect()),
                ),
            ];
            v.extend(
                action
                    .attributes()
                    .into_iter()
                    .map(|(k, x)| (k, Value::from(x))),
            );
            return v;
        }
        self.number_attributes()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect()
    }

    /// The attributes of the byte toxics (all integers).
    fn number_attributes(&self) -> Vec<(&'static str, u64)> {
        match *self {
            ToxicKind::Latency { latency, jitter } => {
                vec![("latency", latency), ("jitter", jitter)]
            }
            ToxicKind::Bandwidth { rate } => vec![("rate", rate)],
            ToxicKind::SlowClose { delay } => vec![("delay", delay)],
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                vec![("timeout", timeout)]
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => vec![
                ("average_size", average_size),
                ("size_variation", size_variation),
                ("delay", delay),
            ],
            ToxicKind::LimitData { bytes } => vec![("bytes", bytes)],
            ToxicKind::Blackhole | ToxicKind::Frame { .. } => vec![],
        }
    }

    /// Overwrite the attributes present in `attrs`; unknown keys are ignored (as Toxiproxy does).
    fn merge_attributes(&mut self, attrs: &Map<String, Value>) -> Result<()> {
        let get = |key: &str, current: u64| -> Result<u64> {
            match attrs.get(key) {
                None => Ok(current),
                Some(v) => v.as_u64().ok_or_else(|| {
                    Error::BadRequestBody(format!(
                        "attribute {key:?} must be a non-negative integer, got {v}"
                    ))
                }),
            }
        };
        match self {
            ToxicKind::Latency { latency, jitter } => {
                *latency = get("latency", *latency)?;
                *jitter = get("jitter", *jitter)?;
            }
            ToxicKind::Bandwidth { rate } => *rate = get("rate", *rate)?,
            ToxicKind::SlowClose { delay } => *delay = get("delay", *delay)?,
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                *timeout = get("timeout", *timeout)?;
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                *average_size = get("average_size", *average_size)?;
                *size_variation = get("size_variation", *size_variation)?;
                *delay = get("delay", *delay)?;
            }
            ToxicKind::LimitData { bytes } => *bytes = get("bytes", *bytes)?,
            ToxicKind::Blackhole => {}
            ToxicKind::Frame { action, select } => {
                // New types, no client to stay compatible with: a misspelt attribute
                // would silently select nothing, so it is refused.
                let mut allowed = vec!["nth", "every", "match"];
                allowed.extend(action.attributes().into_iter().map(|(k, _)| k));
                if let Some(k) = attrs.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(Error::BadRequestBody(format!(
                        "{}: unknown attribute {k:?} (allowed: {})",
                        action.type_name(),
                        allowed.join(", ")
                    )));
                }
                select.nth = get("nth", select.nth)?;
                select.every = get("every", select.every)?;
                for (k, v) in action.attributes() {
                    let x = get(k, v)?;
                    action.set(k, x);
                }
                match attrs.get("match") {
                    None => {}
                    Some(Value::Object(m)) => {
                        select.matches = m.clone().into_iter().collect();
                    }
                    Some(v) => {
                        return Err(Error::BadRequestBody(format!(
                            "attribute \"match\" must be an object of JSON pointer → value, got {v}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if let ToxicKind::Frame { action, select } = self {
            return select
                .validate()
                .and_then(|()| action.validate())
                .map_err(|e| Error::BadRequestBody(format!("{}: {e}", action.type_name())));
        }
        if let ToxicKind::Slicer {
            average_size,
            size_variation,
            ..
        } = *self
        {
            if average_size == 0 {
                return Err(Error::BadRequestBody(
                    "slicer: average_size must be positive".into(),
                ));
            }
            if size_variation >= average_size {
                return Err(Error::BadRequestBody(
                    "slicer: size_variation must be less than average_size".into(),
                ));
            }
        }
        Ok(())
    }
}

/// One toxic of a proxy as the API shows it:
/// `{"name","type","stream","toxicity","attributes":{..}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToxicSpec {
    /// Unique per proxy; defaults to `<type>_<stream>`.
    pub name: String,
    /// The direction it applies to.
    pub stream: Direction,
    /// Probability (0..=1) that the toxic acts on a given connection.
    pub toxicity: f32,
    /// What it does.
    pub kind: ToxicKind,
}

/// The JSON accepted when creating or updating a toxic (all fields optional).
#[derive(Debug, Deserialize)]
struct RawToxic {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    stream: Option<String>,
    toxicity: Option<f32>,
    attributes: Option<Map<String, Value>>,
}

/// The JSON shape of a toxic.
#[derive(Serialize)]
struct ToxicJson<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    stream: &'a str,
    toxicity: f32,
    attributes: Map<String, Value>,
}

impl Serialize for ToxicSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ToxicJson {
            name: &self.name,
            kind: self.kind.type_name(),
            stream: self.stream.as_str(),
            toxicity: self.toxicity,
            attributes: self
                .kind
                .attributes()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
        .serialize(s)
    }
}

fn bad_body(e: serde_json::Error) -> Error {
    Error::BadRequestBody(e.to_string())
}

fn check_toxicity(t: f32) -> Result<f32> {
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(Error::BadRequestBody(format!(
            "toxicity must be within 0.0..=1.0, got {t}"
        )))
    }
}

impl ToxicSpec {
    /// A toxic with Toxiproxy's defaults: name `<type>_<stream>`, toxicity 1.0.
    pub fn new(kind: ToxicKind, stream: Direction) -> Self {
        ToxicSpec {
            name: format!("{}_{}", kind.type_name(), stream.as_str()),
            stream,
            toxicity: 1.0,
            kind,
        }
    }

    /// Set the name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Parse the body of `POST /proxies/{proxy}/toxics`.
    pub fn from_create_json(body: &[u8]) -> Result<Self> {
        let raw: RawToxic = serde_json::from_slice(body).map_err(bad_body)?;
        let stream = Direction::parse(raw.stream.as_deref().unwrap_or("downstream"))?;
        let type_name = raw.kind.unwrap_or_default();
        let mut kind = ToxicKind::from_type(&type_name)?;
        if let Some(attrs) = &raw.attributes {
            kind.merge_attributes(attrs)?;
        }
        kind.validate()?;
        if kind.is_frame() && stream != Direction::Downstream {
            return Err(Error::BadRequestBody(format!(
                "{type_name} acts on server → client WebSocket frames: stream must be \"downstream\""
            )));
        }
        let name = match raw.name {
            Some(n) if !n.is_empty() => n,
            _ => format!("{type_name}_{}", stream.as_str()),
        };
        Ok(ToxicSpec {
            name,
            stream,
            toxicity: check_toxicity(raw.toxicity.unwrap_or(1.0))?,
            kind,
        })
    }

    /// Apply the body of `POST/PATCH /proxies/{proxy}/toxics/{toxic}`: attributes and
    /// toxicity change, name, type and stream stay.
    pub fn updated_from_json(&self, body: &[u8]) -> Result<Self> {
        let raw: RawToxic = serde_json::from_slice(body).map_err(bad_body)?;
        let mut next = self.clone();
        if let Some(attrs) = &raw.attributes {
            next.kind.merge_attributes(attrs)?;
        }
        next.kind.validate()?;
        if let Some(t) = raw.toxicity {
            next.toxicity = check_toxicity(t)?;
        }
        Ok(next)
    }
}

/// A piece of a stream on its way through a link.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// The bytes.
    pub data: Bytes,
    /// When the chunk may be written: its arrival time, moved forward by delaying toxics.
    pub due: Instant,
    /// A whole WebSocket data message (downstream, while a frame toxic acts).
    pub frame: Option<Box<Frame>>,
}

impl Chunk {
    /// Bytes that are not a whole WebSocket message.
    pub(crate) fn plain(data: Bytes, due: Instant) -> Self {
        Chunk {
            data,
            due,
            frame: None,
        }
    }
}

/// What `sel` needs of a chunk: `None` if it is no message; else its payload when `sel`
/// reads payloads (`None` inside when compressed or not needed).
pub(crate) fn payload_for(sel: &Selector, chunk: &Chunk) -> Option<Option<Vec<u8>>> {
    let f = chunk.frame.as_ref()?;
    Some(if sel.reads_payload() {
        f.payload(&chunk.data)
    } else {
        None
    })
}

/// Whether a frame toxic's selection takes this chunk (a message it selects).
pub(crate) fn picked(sel: &mut Selector, chunk: &Chunk) -> bool {
    payload_for(sel, chunk).is_some_and(|p| sel.pick(p.as_deref()))
}

/// What a toxic wants done with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep going.
    Pass,
    /// Write what was emitted, then close the connection (FIN).
    Close,
    /// Reset the connection (RST), discarding what is in flight.
    Reset,
}

/// The behaviour of one toxic on one direction of one connection. See the module doc.
pub(crate) trait Toxic: Send + std::fmt::Debug {
    /// Transform one chunk, pushing what may go on to `out`.
    fn on_chunk(&mut self, chunk: Chunk, now: Instant, out: &mut Vec<Chunk>) -> Verdict;

    /// How long to wait before closing when the source reached end of stream.
    fn on_eof(&self) -> Duration {
        Duration::ZERO
    }

    /// A moment at which the toxic acts by itself, and what it does then.
    fn deadline(&self) -> Option<(Instant, Verdict)> {
        None
    }

    /// Give up what it holds back (it is being removed, or the stream ended).
    fn drain(&mut self, _out: &mut Vec<Chunk>) {}
}

/// Longest delay a toxic applies (about 115 days): attributes come from the network, and
/// an unbounded one would overflow `Instant` arithmetic.
const MAX_DELAY_MS: u64 = 10_000_000_000;

/// `ms` milliseconds, capped at [`MAX_DELAY_MS`].
pub(crate) fn capped_ms(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_DELAY_MS))
}

/// Build the per-connection behaviour of a toxic; `now` is when it starts acting.
pub(crate) fn instantiate(kind: &ToxicKind, now: Instant) -> Box<dyn Toxic> {
    match *kind {
        ToxicKind::Latency { latency, jitter } => Box::new(latency::Latency::new(latency, jitter)),
        ToxicKind::Bandwidth { rate } => Box::new(bandwidth::Bandwidth::new(rate)),
        ToxicKind::SlowClose { delay } => Box::new(slow_close::SlowClose::new(delay)),
        ToxicKind::Timeout { timeout } => Box::new(timeout::Timeout::new(timeout, now)),
        ToxicKind::ResetPeer { timeout } => Box::new(reset_peer::ResetPeer::new(timeout)),
        ToxicKind::Slicer {
            average_size,
            size_variation,
            delay,
        } => Box::new(slicer::Slicer::new(average_size, size_variation, delay)),
        ToxicKind::LimitData { bytes } => Box::new(limit_data::LimitData::new(bytes)),
        ToxicKind::Blackhole => Box::new(blackhole::Blackhole),
        ToxicKind::Frame {
            ref action,
            ref select,
        } => frame_toxic(action, select),
    }
}

fn frame_toxic(action: &FrameAction, select: &FrameSelect) -> Box<dyn Toxic> {
    let sel = Selector::new(select.clone());
    match *action {
        FrameAction::Drop => Box::new(frame_drop::FrameDrop::new(sel)),
        FrameAction::Duplicate => Box::new(frame_duplicate::FrameDuplicate::new(sel)),
        FrameAction::Delay { delay } => Box::new(frame_delay::FrameDelay::new(sel, delay)),
        FrameAction::Reorder { after } => Box::new(frame_reorder::FrameReorder::new(sel, after)),
        FrameAction::Corrupt { offset, xor } => Box::new(frame_corrupt::FrameCorrupt::new(
            sel,
            offset,
            u8::try_from(xor).unwrap_or(1),
        )),
    }
}

/// One toxic of a connection's chain: its spec, whether toxicity chose it, its state.
#[derive(Debug)]
struct Stage {
    spec: ToxicSpec,
    active: bool,
    toxic: Box<dyn Toxic>,
}

/// The toxics of one direction of one connection, in the order they were added, and for
/// the downstream direction the WebSocket framer that feeds frame toxics whole messages.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    stages: Vec<Stage>,
    framer: Option<Framer>,
    scratch: Vec<Chunk>,
}

impl Chain {
    /// The chain of a downstream (server → client) direction: it follows WebSocket frames.
    pub fn downstream() -> Self {
        Chain {
            framer: Some(Framer::default()),
            ..Chain::default()
        }
    }

    /// Whether no toxic acts (the fast path: write chunks as they come, after [`Chain::observe`]).
    pub fn is_idle(&self) -> bool {
        self.stages.iter().all(|s| !s.active)
    }

    /// Whether a frame toxic acts (the framer holds whole messages for it).
    fn assembles(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.active && s.spec.kind.is_frame())
    }

    /// Whether bytes may bypass the chain (splice): not while frames are being followed.
    pub fn may_bypass(&self) -> bool {
        self.framer.as_ref().is_none_or(Framer::is_opaque)
    }

    /// Follow a chunk written on the fast path (no toxic acts), so frame boundaries stay known.
    pub fn observe(&mut self, chunk: &Chunk) {
        if let Some(f) = &mut self.framer
            && !f.is_opaque()
        {
            f.feed(chunk.clone(), false, &mut self.scratch);
            self.scratch.clear();
        }
    }

    /// Follow a new list of toxics: unchanged toxics keep their state and toxicity roll,
    /// new or changed ones start fresh at `now`. Returns what removed toxics (and the
    /// framer, when no frame toxic is left) held back, to be written now.
    pub fn refresh(&mut self, specs: &[ToxicSpec], now: Instant) -> Vec<Chunk> {
        let mut old = std::mem::take(&mut self.stages);
        for spec in specs {
            if let Some(pos) = old.iter().position(|s| s.spec == *spec) {
                self.stages.push(old.swap_remove(pos));
            } else {
                let active = spec.toxicity >= 1.0 || rand::random::<f32>() < spec.toxicity;
                self.stages.push(Stage {
                    spec: spec.clone(),
                    active,
                    toxic: instantiate(&spec.kind, now),
                });
            }
        }
        let mut flushed = Vec::new();
        for mut gone in old {
            gone.toxic.drain(&mut flushed);
        }
        if !self.assembles()
            && let Some(f) = &mut self.framer
        {
            f.release(now, &mut flushed);
        }
        flushed
    }

    /// What every toxic and the framer hold, at the end of the stream.
    pub fn drain_all(&mut self, now: Instant) -> Vec<Chunk> {
        let mut out = Vec::new();
        for s in &mut self.stages {
            s.toxic.drain(&mut out);
        }
        if let Some(f) = &mut self.framer {
            f.release(now, &mut out);
        }
        out
    }

    /// Run one chunk through the framer and every acting toxic; the first non-`Pass`
    /// verdict wins, and the chunks emitted before it still go through the later toxics.
    pub fn process(&mut self, chunk: Chunk, now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        out.clear();
        let assemble = self.assembles();
        match &mut self.framer {
            Some(f) => f.feed(chunk, assemble, out),
            None => out.push(chunk),
        }
        let mut verdict = Verdict::Pass;
        let mut next = Vec::new();
        for stage in self.stages.iter_mut().filter(|s| s.active) {
            next.clear();
            for piece in out.drain(..) {
                let v = stage.toxic.on_chunk(piece, now, &mut next);
                if v != Verdict::Pass {
                    if verdict == Verdict::Pass {
                        verdict = v;
                    }
                    break;
                }
            }
            std::mem::swap(out, &mut next);
            if verdict == Verdict::Reset {
                out.clear();
                break;
            }
        }
        verdict
    }

    /// The earliest moment a toxic acts by itself.
    pub fn deadline(&self) -> Option<(Instant, Verdict)> {
        self.stages
            .iter()
            .filter(|s| s.active)
            .filter_map(|s| s.toxic.deadline())
            .min_by_key(|(at, _)| *at)
    }

    /// How long to delay the close at end of stream.
    pub fn eof_delay(&self) -> Duration {
        self.stages
            .iter()
            .filter(|s| s.active)
            .map(|s| s.toxic.on_eof())
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_json_defaults_like_toxiproxy() {
        let t = ToxicSpec::from_create_json(br#"{"type":"latency","attributes":{"latency":100}}"#)
            .unwrap();
        assert_eq!(t.name, "latency_downstream");
        assert_eq!(t.stream, Direction::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(
            t.kind,
            ToxicKind::Latency {
                latency: 100,
                jitter: 0
            }
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name":"latency_downstream","type":"latency","stream":"downstream",
                "toxicity":1.0,"attributes":{"latency":100,"jitter":0}})
        );
    }

    #[test]
    fn bad_toxics_are_refused_with_toxiproxy_errors() {
        let e = ToxicSpec::from_create_json(br#"{"type":"nope"}"#).unwrap_err();
        assert!(matches!(e, Error::InvalidToxicType));
        let e =
            ToxicSpec::from_create_json(br#"{"type":"latency","stream":"sideways"}"#).unwrap_err();
        assert!(matches!(e, Error::InvalidStream));
        let e = ToxicSpec::from_create_json(br#"{"type":"latency","attributes":{"latency":-1}}"#)
            .unwrap_err();
        assert_eq!(e.status(), 400);
        let e = ToxicSpec::from_create_json(b"{").unwrap_err();
        assert!(e.to_string().starts_with("bad request body"), "{e}");
    }

    #[test]
    fn update_keeps_unspecified_attributes() {
        let t = ToxicSpec::from_create_json(
            br#"{"type":"latency","stream":"upstream","attributes":{"latency":100,"jitter":5}}"#,
        )
        .unwrap();
        let u = t
            .updated_from_json(br#"{"attributes":{"latency":7},"toxicity":0.5}"#)
            .unwrap();
        assert_eq!(
            u.kind,
            ToxicKind::Latency {
                latency: 7,
                jitter: 5
            }
        );
        assert_eq!(u.toxicity, 0.5);
        assert_eq!(u.name, "latency_upstream");
    }

    #[tokio::test(start_paused = true)]
    async fn huge_attributes_do_not_overflow() {
        let now = Instant::now();
        let big = u64::MAX;
        let specs: Vec<ToxicSpec> = [
            ToxicKind::Latency {
                latency: big,
                jitter: big,
            },
            ToxicKind::Timeout { timeout: big },
            ToxicKind::ResetPeer { timeout: big },
            ToxicKind::SlowClose { delay: big },
            ToxicKind::Slicer {
                average_size: big,
                size_variation: big,
                delay: big,
            },
            ToxicKind::Bandwidth { rate: big },
            ToxicKind::LimitData { bytes: big },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, k)| ToxicSpec::new(k, Direction::Upstream).named(format!("t{i}")))
        .collect();
        let mut chain = Chain::default();
        chain.refresh(&specs, now);
        let mut out = Vec::new();
        let chunk = Chunk::plain(Bytes::from_static(b"data"), now);
        assert_eq!(chain.process(chunk, now, &mut out), Verdict::Pass);
        assert!(chain.deadline().is_some());
        assert!(chain.eof_delay() > Duration::from_secs(86_400));
    }

    #[tokio::test(start_paused = true)]
    async fn chain_composes_limit_then_latency() {
        let now = Instant::now();
        let specs = vec![
            ToxicSpec::new(ToxicKind::LimitData { bytes: 3 }, Direction::Downstream),
            ToxicSpec::new(
                ToxicKind::Latency {
                    latency: 10,
                    jitter: 0,
                },
                Direction::Downstream,
            ),
        ];
        let mut chain = Chain::default();
        chain.refresh(&specs, now);
        let mut out = Vec::new();
        let v = chain.process(
            Chunk::plain(Bytes::from_static(b"hello"), now),
            now,
            &mut out,
        );
        assert_eq!(v, Verdict::Close);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].data[..], b"hel");
        assert_eq!(out[0].due, now + Duration::from_millis(10));
    }
}
