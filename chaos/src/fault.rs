//! One scheduled fault as written in a scenario's `[[faults]]` table, and its validation.
//!
//! ```toml
//! [[faults]]
//! at = "10s"                # when to inject, from the start of measurement
//! duration = "5s"           # when to heal (omit: lasts until the run ends)
//! kind = "latency"          # see FaultKind
//! target = "client-node*"   # a link name (globs allowed) or a node id
//! latency = "100ms"
//! jitter = "10ms"
//! stream = "downstream"     # downstream (default) | upstream | both
//! toxicity = 1.0
//! ```
//!
//! Link names are fixed by the harness: `client-node<i>` (load generator → node i),
//! `node<i>-redis` and `node<i>-postgres`. Node ids are `node<i>`, 1-based.
//!
//! Kernel faults act between hosts in network namespaces (see the `kernel` module):
//!
//! ```toml
//! [[faults]]
//! at = "10s"
//! duration = "20s"
//! kind = "partition"        # loss | partition | block_new | bandwidth | unplug
//!                           # (+ delay | reorder | duplicate | corrupt where netem exists)
//! target = "node2"          # a host name glob: node<i>, redis, postgres, worker<i>
//! peer = "redis"            # host glob; default every host that is not a target
//! direction = "to"          # to: target → peer dropped; from: peer → target; both (default)
//! ```
//!
//! `bandwidth` is the proxy's when its target names links and the kernel's (tbf) when it
//! names hosts.
//!
//! Frame faults act on the WebSocket messages a link's server sends its clients (see
//! docs/chaos.md, "Frame toxics"):
//!
//! ```toml
//! [[faults]]
//! at = "2s"
//! kind = "frame_drop"       # frame_drop | frame_duplicate | frame_delay | frame_reorder
//!                           # | frame_corrupt
//! target = "client-node1"
//! match = { "/type" = "message", "/channel" = 3 }   # JSON pointer = value, all must hold
//! nth = 5                   # only the 5th match per connection (or every = 10; neither: all)
//! ```
//! Raw parameters are parsed leniently per kind and checked by [`FaultSpec::validate`], so
//! a parameter that does not belong to the kind is an error rather than silently ignored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of a fault: a Toxiproxy toxic on links, a partition, a process fault, or a
/// kernel fault between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay every chunk by `latency` ± `jitter`.
    Latency,
    /// Cap throughput to `rate` KB/s.
    Bandwidth,
    /// Stop all data and close after `timeout` (0: hold forever).
    Timeout,
    /// Reset connections (TCP RST) after `timeout`.
    ResetPeer,
    /// Delay the close of connections by `delay`.
    SlowClose,
    /// Slice data into chunks of `average_size` ± `size_variation` bytes, `delay` apart.
    Slicer,
    /// Close connections after `bytes` bytes.
    LimitData,
    /// Partition: the link is disabled, live connections cut and new ones refused.
    Down,
    /// One-way partition: bytes in `stream` are silently dropped, the other way flows.
    Blackhole,
    /// SIGKILL the node; restart it after `restart_after` if given.
    Kill,
    /// SIGSTOP the node for the duration, then SIGCONT.
    Pause,
    /// Kernel: drop `percent` % of the packets between hosts.
    Loss,
    /// Kernel: drop every packet between hosts (one way with `direction`).
    Partition,
    /// Kernel: drop new connections between hosts, keep established ones.
    BlockNew,
    /// Kernel: the hosts' cables pulled (link down), then plugged back.
    Unplug,
    /// Kernel, netem only: delay packets by `delay` ± `jitter`.
    Delay,
    /// Kernel, netem only: reorder `percent` % of packets (needs `delay`).
    Reorder,
    /// Kernel, netem only: duplicate `percent` % of packets.
    Duplicate,
    /// Kernel, netem only: corrupt `percent` % of packets.
    Corrupt,
    /// WebSocket: never deliver the selected server → client messages.
    FrameDrop,
    /// WebSocket: deliver the selected messages twice.
    FrameDuplicate,
    /// WebSocket: hold the selected messages `delay` (later ones wait behind).
    FrameDelay,
    /// WebSocket: deliver each selected message after the `after`-th next matching one.
    FrameReorder,
    /// WebSocket: XOR payload byte `offset` of the selected messages with `xor`.
    FrameCorrupt,
}

impl FaultKind {
    /// Whether this kind targets processes (node ids) rather than links.
    pub fn is_process(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Pause)
    }

    /// Whether only the kernel makes this kind (it targets hosts). `bandwidth` is made by
    /// both the proxy and the kernel and answers false.
    pub fn is_kernel(self) -> bool {
        matches!(
            self,
            FaultKind::Loss
                | FaultKind::Partition
                | FaultKind::BlockNew
                | FaultKind::Unplug
                | FaultKind::Delay
                | FaultKind::Reorder
                | FaultKind::Duplicate
                | FaultKind::Corrupt
        )
    }

    /// Whether the kind needs the kernel's netem qdisc.
    pub fn needs_netem(self) -> bool {
        matches!(
            self,
            FaultKind::Delay | FaultKind::Reorder | FaultKind::Duplicate | FaultKind::Corrupt
        )
    }

    /// Name of the kind as written in scenarios and in Toxiproxy's `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Timeout => "timeout",
            FaultKind::ResetPeer => "reset_peer",
            FaultKind::SlowClose => "slow_close",
            FaultKind::Slicer => "slicer",
            FaultKind::LimitData => "limit_data",
            FaultKind::Down => "down",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Loss => "loss",
            FaultKind::Partition => "partition",
            FaultKind::BlockNew => "block_new",
            FaultKind::Unplug => "unplug",
            FaultKind::Delay => "delay",
            FaultKind::Reorder => "reorder",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Corrupt => "corrupt",
            FaultKind::FrameDrop => "frame_drop",
            FaultKind::FrameDuplicate => "frame_duplicate",
            FaultKind::FrameDelay => "frame_delay",
            FaultKind::FrameReorder => "frame_reorder",
            FaultKind::FrameCorrupt => "frame_corrupt",
        }
    }

    /// Whether the kind is a frame toxic (WebSocket messages of a link, downstream).
    pub fn is_frame(self) -> bool {
        matches!(
            self,
            FaultKind::FrameDrop
                | FaultKind::FrameDuplicate
                | FaultKind::FrameDelay
                | FaultKind::FrameReorder
                | FaultKind::FrameCorrupt
        )
    }
}

/// Which direction of a link a toxic applies to. Downstream is server → client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamSel {
    /// Server → client (Toxiproxy's default).
    #[default]
    Downstream,
    /// Client → server.
    Upstream,
    /// Both directions (one toxic each).
    Both,
}

/// Which way a kernel fault hits traffic, seen from its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostDirection {
    /// Traffic from the targets to their peers and back (the default).
    #[default]
    Both,
    /// Traffic the targets send to their peers.
    To,
    /// Traffic the targets receive from their peers.
    From,
}

impl HostDirection {
    /// The name as written in scenarios.
    pub fn as_str(self) -> &'static str {
        match self {
            HostDirection::Both => "both",
            HostDirection::To => "to",
            HostDirection::From => "from",
        }
    }
}

/// A fault of a scenario's schedule, as parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Injection time, from the start of measurement (after warm-up).
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// How long the fault lasts; `None` until the end of the run.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// What the fault does.
    pub kind: FaultKind,
    /// Link name glob (`client-node*`, `node2-redis`), node id glob (`node2`), or for
    /// kernel faults a host name glob (`node2`, `redis`, `worker*`).
    pub target: String,
    /// Kernel faults between hosts: the other end (host glob; default every host that
    /// is not a target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Kernel faults: which way traffic is hit (default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<HostDirection>,
    /// `loss`, `reorder`, `duplicate`, `corrupt`: share of packets, in percent (0..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Optional label shown in reports (defaults to `<kind> <target>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Direction of a link fault (default downstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSel>,
    /// Chance (0..=1) that the toxic acts on a given connection (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toxicity: Option<f32>,
    /// `latency`: the added delay.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency: Option<Duration>,
    /// `latency` (proxy) and `delay` (netem): ± this much.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// Bandwidth in KB/s (Toxiproxy's unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// `timeout` (close after; 0 holds) and `reset_peer` (reset after data).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// `slow_close`: close delay; `slicer`: delay between pieces; `delay`/`reorder`
    /// (netem): the added delay.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// `slicer`: average piece size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_size: Option<u64>,
    /// `slicer`: ± bytes around `average_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_variation: Option<u64>,
    /// `limit_data`: bytes before the connection is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `kill`: restart the node this long after the kill.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_after: Option<Duration>,
    /// Frame faults: act on the `nth` matching message of each connection only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u64>,
    /// Frame faults: act on every `every`-th matching message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Frame faults: JSON pointer → value a message must hold (all of them; an array
    /// value matches any of its elements).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// `frame_reorder`: matching messages that overtake the held one (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// `frame_corrupt`: payload byte to corrupt (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `frame_corrupt`: XOR mask, 1..=255 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xor: Option<u64>,
    /// Allow a target that resolves to a non-loopback address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_non_loopback: bool,
}

/// A fault entry that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault #{index} ({kind} on {target:?}): {reason}")]
pub struct FaultError {
    /// Position in `[[faults]]`, 1-based.
    pub index: usize,
    /// The fault's kind, as written.
    pub kind: &'static str,
    /// The fault's target, as written.
    pub target: String,
    /// What is wrong.
    pub reason: String,
}

impl FaultSpec {
    /// Names of the parameters that are set, as written in the scenario.
    fn params_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut push = |name, present: bool| {
            if present {
                set.push(name);
            }
        };
        push("peer", self.peer.is_some());
        push("direction", self.direction.is_some());
        push("percent", self.percent.is_some());
        push("stream", self.stream.is_some());
        push("toxicity", self.toxicity.is_some());
        push("latency", self.latency.is_some());
        push("jitter", self.jitter.is_some());
        push("rate", self.rate.is_some());
        push("timeout", self.timeout.is_some());
        push("delay", self.delay.is_some());
        push("average_size", self.average_size.is_some());
        push("size_variation", self.size_variation.is_some());
        push("bytes", self.bytes.is_some());
        push("restart_after", self.restart_after.is_some());
        push("nth", self.nth.is_some());
        push("every", self.every.is_some());
        push("match", self.matches.is_some());
        push("after", self.after.is_some());
        push("offset", self.offset.is_some());
        push("xor", self.xor.is_some());
        set
    }

    /// The selection of a frame fault.
    pub fn frame_select(&self) -> crate::frame_select::FrameSelect {
        crate::frame_select::FrameSelect {
            nth: self.nth.unwrap_or(0),
            every: self.every.unwrap_or(0),
            matches: self.matches.clone().unwrap_or_default(),
        }
    }

    /// Frame faults: what their selection and parameters must satisfy.
    fn validate_frame(&self) -> Result<(), String> {
        if self.stream.is_some_and(|s| s != StreamSel::Downstream) {
            return Err(
                "`stream`: frame faults act on server → client messages, only \"downstream\""
                    .into(),
            );
        }
        if self.nth == Some(0) || self.every == Some(0) {
            return Err("`nth` and `every` count from 1".into());
        }
        if self.after == Some(0) {
            return Err("`after` must be at least 1".into());
        }
        if let Some(x) = self.xor
            && !(1..=255).contains(&x)
        {
            return Err(format!("`xor` must be within 1..=255, got {x}"));
        }
        self.frame_select().validate()
    }

    /// (allowed parameters, required parameters) of the kind.
    fn kind_params(kind: FaultKind) -> (&'static [&'static str], &'static [&'static str]) {
        const TOXIC: [&str; 2] = ["stream", "toxicity"];
        const FRAME: [&str; 5] = ["stream", "toxicity", "nth", "every", "match"];
        const FRAME_DELAY: [&str; 6] = ["stream", "toxicity", "nth", "every", "match", "delay"];
        const FRAME_REORDER: [&str; 6] = ["stream", "toxicity", "nth", "every", "match", "after"];
        const FRAME_CORRUPT: [&str; 7] = [
            "stream", "toxicity", "nth", "every", "match", "offset", "xor",
        ];
        match kind {
            FaultKind::Latency => (&["stream", "toxicity", "latency", "jitter"], &["latency"]),
            // `stream`/`toxicity` for the proxy, `direction` for the kernel: which one
            // applies is known once the target is resolved (Schedule::new).
            FaultKind::Bandwidth => (&["stream", "toxicity", "rate", "direction"], &["rate"]),
            FaultKind::Timeout => (&["stream", "toxicity", "timeout"], &["timeout"]),
            FaultKind::ResetPeer => (&["stream", "toxicity", "timeout"], &[]),
            FaultKind::SlowClose => (&["stream", "toxicity", "delay"], &["delay"]),
            FaultKind::Slicer => (
                &[
                    "stream",
                    "toxicity",
                    "average_size",
                    "size_variation",
                    "delay",
                ],
                &["average_size"],
            ),
            FaultKind::LimitData => (&["stream", "toxicity", "bytes"], &["bytes"]),
            FaultKind::Down => (&[], &[]),
            FaultKind::Blackhole => (&TOXIC, &[]),
            FaultKind::Kill => (&["restart_after"], &[]),
            FaultKind::Pause => (&[], &[]),
            FaultKind::Loss => (&["peer", "direction", "percent"], &["percent"]),
            FaultKind::Partition | FaultKind::BlockNew => (&["peer", "direction"], &[]),
            FaultKind::Unplug => (&[], &[]),
            FaultKind::Delay => (&["direction", "delay", "jitter"], &["delay"]),
            FaultKind::Reorder => (&["direction", "percent", "delay"], &["percent", "delay"]),
            FaultKind::Duplicate | FaultKind::Corrupt => (&["direction", "percent"], &["percent"]),
            FaultKind::FrameDrop | FaultKind::FrameDuplicate => (&FRAME, &[]),
            FaultKind::FrameDelay => (&FRAME_DELAY, &["delay"]),
            FaultKind::FrameReorder => (&FRAME_REORDER, &[]),
            FaultKind::FrameCorrupt => (&FRAME_CORRUPT, &[]),
        }
    }

    /// Check that the parameters fit the kind. `index` is the entry's 1-based position.
    pub fn validate(&self, index: usize) -> Result<(), FaultError> {
        let err = |reason: String| FaultError {
            index,
            kind: self.kind.as_str(),
            target: self.target.clone(),
            reason,
        };
        if self.target.trim().is_empty() {
            return Err(err("target is empty".into()));
        }
        let (allowed, required) = Self::kind_params(self.kind);
        for p in self.params_set() {
            if !allowed.contains(&p) {
                return Err(err(format!(
                    "parameter `{p}` does not apply to this kind (allowed: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
        let set = self.params_set();
        for r in required {
            if !set.contains(r) {
                return Err(err(format!("parameter `{r}` is required")));
            }
        }
        if let Some(t) = self.toxicity
            && !(0.0..=1.0).contains(&t)
        {
            return Err(err(format!("toxicity must be within 0.0..=1.0, got {t}")));
        }
        if self.kind == FaultKind::Pause && self.duration.is_none() {
            return Err(err(
                "a pause needs a duration (the node is resumed when it ends)".into(),
            ));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(err("duration must be positive".into()));
        }
        if let Some(p) = self.percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(err(format!(
                "percent must be within 0 (excluded) and 100, got {p}"
            )));
        }
        if let Some(p) = &self.peer
            && let Err(e) = glob::Pattern::new(p)
        {
            return Err(err(format!("bad peer glob: {e}")));
        }
        if self.kind.is_frame()
            && let Err(reason) = self.validate_frame()
        {
            return Err(err(reason));
        }
        if self.kind.needs_netem()
            && let Err(reason) = crate::netem::support()
        {
            return Err(err(reason));
        }
        Ok(())
    }

    /// The label shown in events and reports.
    pub fn display_label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.kind.as_str(), self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The chaos crate does not depend on `toml`; JSON exercises the same serde derive.
    fn parse(s: &str) -> FaultSpec {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn latency_fault_parses_and_validates() {
        let f = parse(
            r#"{"at":"10s","duration":"5s","kind":"latency","target":"client-node*","latency":"100ms","jitter":"10ms"}"#,
        );
        assert_eq!(f.at, Duration::from_secs(10));
        assert_eq!(f.latency, Some(Duration::from_millis(100)));
        f.validate(1).unwrap();
        assert_eq!(f.display_label(), "latency client-node*");
    }

    #[test]
    fn wrong_parameter_for_kind_is_refused() {
        let f = parse(r#"{"at":"1s","kind":"down","target":"node1-redis","latency":"1s"}"#);
        let e = f.validate(3).unwrap_err();
        assert!(e.to_string().contains("`latency` does not apply"), "{e}");
        assert_eq!(e.index, 3);
    }

    #[test]
    fn missing_required_parameter_is_refused() {
        let f = parse(r#"{"at":"1s","kind":"bandwidth","target":"client-node1"}"#);
        assert!(f.validate(1).unwrap_err().reason.contains("`rate`"));
    }

    #[test]
    fn frame_faults_validate_their_selection() {
        let f = parse(
            r#"{"at":"1s","kind":"frame_drop","target":"client-node1","match":{"/type":"message"},"nth":3}"#,
        );
        f.validate(1).unwrap();
        assert_eq!(f.frame_select().nth, 3);
        let bad = [
            (r#""nth":1,"every":2"#, "`nth`"),
            (r#""match":{"type":"message"}"#, "JSON pointer"),
            (r#""stream":"upstream""#, "`stream`"),
            (r#""nth":0"#, "count from 1"),
            (r#""latency":"1s""#, "`latency` does not apply"),
        ];
        for (extra, want) in bad {
            let f = parse(&format!(
                r#"{{"at":"1s","kind":"frame_drop","target":"client-node1",{extra}}}"#
            ));
            let e = f.validate(2).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let f = parse(r#"{"at":"1s","kind":"frame_corrupt","target":"c","xor":256}"#);
        assert!(f.validate(1).unwrap_err().reason.contains("`xor`"));
        let f = parse(r#"{"at":"1s","kind":"frame_delay","target":"c"}"#);
        assert!(
            f.validate(1)
                .unwrap_err()
                .reason
                .contains("`delay` is required")
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let r: Result<FaultSpec, _> =
            serde_json::from_str(r#"{"at":"1s","kind":"down","target":"x","latncy":"1s"}"#);
        assert!(r.unwrap_err().to_string().contains("latncy"));
    }
}
