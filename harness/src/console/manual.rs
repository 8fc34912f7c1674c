//! Faults injected from the console: the request read into the scenario's own
//! [`FaultSpec`] (so a manual fault takes exactly the parameters a `[[faults]]` entry
//! takes), the checks only a run knows (measuring yet? within the run?), and the record
//! of each manual fault, appended to the run folder's scenario.toml as a `[[faults]]`
//! entry with its offset from the start of measurement when the run ends, so
//! `flowline replay` injects it again at the same moment for as long.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowline_chaos::fault::{FaultKind, FaultSpec};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Console, lock};

/// A kind the page offers, with its main parameter.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KindInfo {
    /// The kind as in `[[faults]]`.
    pub kind: &'static str,
    /// Its main parameter (empty: none).
    pub param: &'static str,
    /// An example value of it.
    pub example: &'static str,
    /// The parameter is a number (not a duration).
    pub numeric: bool,
    /// What it targets: `link`, `node` or `host` (network namespaces only).
    pub on: &'static str,
}

const fn k(
    kind: &'static str,
    param: &'static str,
    example: &'static str,
    numeric: bool,
    on: &'static str,
) -> KindInfo {
    KindInfo {
        kind,
        param,
        example,
        numeric,
        on,
    }
}

/// The kinds the page offers: every kind of the chaos controller's schedule.
pub const KINDS: &[KindInfo] = &[
    k("latency", "latency", "100ms", false, "link"),
    k("down", "", "", false, "link"),
    k("bandwidth", "rate", "64", true, "link"),
    k("kill", "", "", false, "node"),
    k("pause", "", "", false, "node"),
    k("blackhole", "", "", false, "link"),
    k("timeout", "timeout", "0s", false, "link"),
    k("reset_peer", "timeout", "0s", false, "link"),
    k("slow_close", "delay", "1s", false, "link"),
    k("slicer", "average_size", "64", true, "link"),
    k("limit_data", "bytes", "100000", true, "link"),
    k("frame_drop", "", "", false, "link"),
    k("frame_duplicate", "", "", false, "link"),
    k("frame_delay", "delay", "200ms", false, "link"),
    k("frame_reorder", "", "", false, "link"),
    k("frame_corrupt", "", "", false, "link"),
    k("loss", "percent", "10", true, "host"),
    k("partition", "", "", false, "host"),
    k("block_new", "", "", false, "host"),
    k("unplug", "", "", false, "host"),
    k("delay", "delay", "100ms", false, "host"),
    k("reorder", "percent", "25", true, "host"),
    k("duplicate", "percent", "5", true, "host"),
    k("corrupt", "percent", "5", true, "host"),
];

/// A fault injected by hand and what became of it.
#[derive(Debug, Clone)]
pub struct ManualRecord {
    /// Its number in the run's schedule.
    pub id: usize,
    /// As injected (`at` = offset from the start of measurement).
    pub spec: FaultSpec,
    /// When it was injected.
    pub injected: Instant,
    /// When it ends by itself.
    pub planned_end: Instant,
    /// When it was healed by hand.
    pub healed: Option<Instant>,
}

impl ManualRecord {
    /// How long it lasted (or will): to its planned end, its heal, or `run_end`.
    fn lasted(&self, run_end: Instant) -> Duration {
        let end = self
            .healed
            .unwrap_or(self.planned_end)
            .min(self.planned_end)
            .min(run_end);
        end.saturating_duration_since(self.injected)
    }

    /// The `[[faults]]` entry that replays it: its offset and the time it really lasted.
    pub fn replay_spec(&self, run_end: Instant) -> FaultSpec {
        let mut spec = self.spec.clone();
        let lasted = round_ms(self.lasted(run_end)).max(Duration::from_millis(1));
        if spec.kind == FaultKind::Kill {
            spec.restart_after = Some(lasted);
        } else {
            spec.duration = Some(lasted);
        }
        spec
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.spec.kind.as_str(),
            "target": self.spec.target,
            "label": self.spec.display_label(),
            "at_s": self.spec.at.as_secs_f64(),
            "healed_by_hand": self.healed.is_some(),
        })
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A refusal: HTTP status and message.
#[derive(Debug)]
pub struct Refused {
    /// 400 bad input, 404 no such fault, 409 not now.
    pub status: u16,
    /// What to tell the user.
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// Read the page's request into a fault spec: the fields of a `[[faults]]` entry (kind,
/// target, the kind's parameters, optional label) plus a required `duration`; `at` is
/// the moment of the request.
pub fn parse_request(body: &Value) -> Result<FaultSpec, Refused> {
    let Some(obj) = body.as_object() else {
        return Err(refuse(
            400,
            "the body must be a JSON object (kind, target, duration, parameters)",
        ));
    };
    if obj.contains_key("at") {
        return Err(refuse(
            400,
            "`at` is not taken: a manual fault starts when it is injected",
        ));
    }
    match obj.get("duration") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(refuse(
                400,
                "`duration` is required (e.g. \"10s\"): a manual fault ends by itself, or \
                 earlier when healed",
            ));
        }
    }
    let mut obj = obj.clone();
    obj.insert("at".into(), Value::from("0s"));
    // Empty form fields are absent parameters.
    obj.retain(|_, v| !matches!(v, Value::String(s) if s.trim().is_empty()) && !v.is_null());
    let spec: FaultSpec = serde_json::from_value(Value::Object(obj))
        .map_err(|e| refuse(400, format!("bad fault: {e}")))?;
    Ok(spec)
}

impl Console {
    /// Inject a fault by hand; `Ok` carries the answer's JSON.
    pub async fn inject(&self, body: &Value) -> Result<Value, Refused> {
        let mut spec = parse_request(body)?;
        let Some(clock) = *lock(&self.inner.clock) else {
            return Err(refuse(
                409,
                "the run's workers have not started yet: manual faults are taken from the \
                 start of measurement",
            ));
        };
        let Some(faults) = lock(&self.inner.faults).clone() else {
            return Err(refuse(409, "the run is over: no more faults"));
        };
        let now = Instant::now();
        if now < clock.zero {
            return Err(refuse(
                409,
                format!(
                    "the run is still warming up: manual faults start with the measurement, \
                     in {:.1} s (they are written to scenario.toml with their offset from it)",
                    (clock.zero - now).as_secs_f64()
                ),
            ));
        }
        let duration = spec.duration.unwrap_or_default();
        let left = clock.end.saturating_duration_since(now);
        if duration > left {
            return Err(refuse(
                400,
                format!(
                    "duration {} goes beyond the run: it ends in {:.1} s",
                    humantime::format_duration(duration),
                    left.as_secs_f64()
                ),
            ));
        }
        spec.at = round_ms(now - clock.zero);
        if spec.kind == FaultKind::Kill {
            // A killed node comes back when the fault ends.
            spec.restart_after = spec.duration.take();
        }
        if spec.label.is_none() {
            spec.label = Some(format!("manual {} {}", spec.kind.as_str(), spec.target));
        }
        let fault = faults
            .inject_manual(spec.clone())
            .await
            .map_err(|e| refuse(e.status(), e.to_string()))?;
        lock(&self.inner.manual).push(ManualRecord {
            id: fault.id,
            spec,
            injected: now,
            planned_end: now + duration,
            healed: None,
        });
        self.publish();
        Ok(json!({ "fault": fault, "at_s": (now - clock.zero).as_secs_f64() }))
    }

    /// Heal manual fault `id` now.
    pub async fn heal(&self, id: usize) -> Result<Value, Refused> {
        let Some(faults) = lock(&self.inner.faults).clone() else {
            return Err(refuse(409, "the run is over: its faults are healed"));
        };
        if !lock(&self.inner.manual).iter().any(|m| m.id == id) {
            return Err(refuse(
                404,
                format!(
                    "no fault {id} was injected from the console (faults of the scenario's \
                     schedule are not healed from here: a replay would not do the same)"
                ),
            ));
        }
        let healed = faults
            .heal_one(id)
            .await
            .map_err(|e| refuse(500, format!("healing fault {id}: {e}")))?;
        if !healed {
            return Err(refuse(404, format!("fault {id} is not active any more")));
        }
        let now = Instant::now();
        for m in lock(&self.inner.manual).iter_mut().filter(|m| m.id == id) {
            m.healed = Some(now);
        }
        self.publish();
        Ok(json!({ "healed": [id], "at_s": self.since_zero(now) }))
    }

    /// Seconds from the start of measurement to `t`.
    fn since_zero(&self, t: Instant) -> Option<f64> {
        let zero = lock(&self.inner.clock).map(|c| c.zero)?;
        Some(t.saturating_duration_since(zero).as_secs_f64())
    }

    /// Heal every manual fault that is active.
    pub async fn heal_all(&self) -> Result<Value, Refused> {
        let Some(faults) = lock(&self.inner.faults).clone() else {
            return Err(refuse(409, "the run is over: its faults are healed"));
        };
        let ids: Vec<usize> = lock(&self.inner.manual)
            .iter()
            .filter(|m| m.healed.is_none())
            .map(|m| m.id)
            .collect();
        let mut healed = Vec::new();
        for id in ids {
            match faults.heal_one(id).await {
                Ok(true) => healed.push(id),
                Ok(false) => {}
                Err(e) => return Err(refuse(500, format!("healing fault {id}: {e}"))),
            }
        }
        let now = Instant::now();
        for m in lock(&self.inner.manual)
            .iter_mut()
            .filter(|m| healed.contains(&m.id))
        {
            m.healed = Some(now);
        }
        self.publish();
        Ok(json!({ "healed": healed }))
    }

    /// Append every manual fault to scenario.toml as a `[[faults]]` entry (at the run's
    /// end: each with the time it really lasted).
    pub(super) fn write_manual_faults(&self) -> anyhow::Result<()> {
        let records = lock(&self.inner.manual).clone();
        if records.is_empty() {
            return Ok(());
        }
        let run_end = lock(&self.inner.clock)
            .map(|c| c.end.min(Instant::now()))
            .unwrap_or_else(Instant::now);
        let specs: Vec<FaultSpec> = records.iter().map(|r| r.replay_spec(run_end)).collect();
        let text = faults_toml(&specs)?;
        let path = &self.inner.scenario_path;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot append the manual faults to {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("cannot append the manual faults to {}", path.display()))?;
        eprintln!(
            "flowline: {} manual fault(s) appended to {} (flowline replay injects them again)",
            specs.len(),
            path.display()
        );
        Ok(())
    }
}

/// `[[faults]]` entries for `specs`, with a comment saying where they came from.
pub fn faults_toml(specs: &[FaultSpec]) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Faults<'a> {
        faults: &'a [FaultSpec],
    }
    let body = toml::to_string(&Faults { faults: specs })
        .context("cannot write the manual faults as TOML")?;
    Ok(format!(
        "\n# Injected by hand from the run console (`flowline run --console`); `at` counts \
         from the start of measurement.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_fault_entries() {
        let s = parse_request(&json!({"kind": "latency", "target": "client-node1",
            "duration": "5s", "latency": "100ms", "jitter": ""}))
        .unwrap();
        assert_eq!(s.kind, FaultKind::Latency);
        assert_eq!(s.latency, Some(Duration::from_millis(100)));
        assert_eq!(s.jitter, None);
        assert_eq!(s.duration, Some(Duration::from_secs(5)));
        for (bad, says) in [
            (
                json!({"kind": "latency", "target": "x", "latency": "1ms"}),
                "duration",
            ),
            (
                json!({"kind": "latency", "target": "x", "duration": "1s", "at": "1s"}),
                "`at`",
            ),
            (
                json!({"kind": "nonsense", "target": "x", "duration": "1s"}),
                "bad fault",
            ),
            (
                json!({"kind": "latency", "target": "x", "duration": "1s", "rat": 3}),
                "rat",
            ),
            (json!([1]), "JSON object"),
        ] {
            let e = parse_request(&bad).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn manual_faults_become_entries_a_scenario_reads() {
        let mut spec = parse_request(&json!({"kind": "latency", "target": "client-node1",
            "duration": "30s", "latency": "100ms"}))
        .unwrap();
        spec.at = Duration::from_millis(4_250);
        let now = Instant::now();
        let r = ManualRecord {
            id: 2,
            spec,
            injected: now,
            planned_end: now + Duration::from_secs(30),
            healed: Some(now + Duration::from_millis(3_500)),
        };
        let text = faults_toml(&[r.replay_spec(now + Duration::from_secs(60))]).unwrap();
        assert!(text.contains("[[faults]]"), "{text}");
        let scenario = format!(
            "[run]\nname = \"m\"\nduration = \"10s\"\nseed = 1\n[population]\nusers = 4\n{text}"
        );
        let s = flowline_loadgen::scenario::Scenario::parse("m.toml", &scenario).unwrap();
        assert_eq!(s.faults.len(), 1);
        let f = &s.faults[0];
        assert_eq!(f.at, Duration::from_millis(4_250));
        assert_eq!(f.duration, Some(Duration::from_millis(3_500)));
        assert_eq!(f.latency, Some(Duration::from_millis(100)));
        assert_eq!(f.target, "client-node1");
    }
}
