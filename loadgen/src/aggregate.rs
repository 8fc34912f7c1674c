//! The aggregator the harness feeds with worker stdout lines: merges interval histograms
//! and counters, shows progress, and at the end runs the correctness checker, evaluates the
//! thresholds and writes `summary.json`, `histograms.hlog` and `timeline.csv`.
//!
//! Merging is exact: each second's histograms are the HdrHistogram sum of every shard's
//! tick for that second (the same counts at every value as one histogram of all samples),
//! and every percentile of the run is read from such sums, never averaged. Which shard
//! reported which second is tracked: ticks that come late, twice, or never are marked in
//! `summary.json`'s `ticks` (shard and seconds), not silently dropped.
//!
//! ```text
//! worker 0 ─┐ tick/history/done lines
//! worker 1 ─┼──▶ ingest() ──▶ per-second intervals (merged over workers) ──▶ timeline.csv
//! worker N ─┘        │                         └──────────────────────────▶ histograms.hlog
//!                    ├──▶ history lines ──▶ HistoryStore (memory, or run folder's history/)
//!                    └──▶ done lines (receipts) ──▶ checker ──┐
//!                         measured totals ────────────────────┴──▶ thresholds ──▶ summary.json
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::checker;
use crate::checker::store::HistoryStore;
use crate::error::{LoadgenError, Result};
use crate::histogram::{self, Metric, Percentiles};
use crate::scenario::Scenario;
use crate::summary::by_shard;
pub use crate::summary::{
    LATE_AFTER_S, LoadgenCost, NodeCost, NodeErrors, NodeLogMessage, Progress, RateLimited,
    RunMeta, ShardSeconds, Summary, TickReport,
};
use crate::threshold::ThresholdResult;
use crate::wire::{Counters, Done, Outcome, SendRecord, Tick, WorkerLine};

/// One second, merged over workers. Full histograms (~140 KiB each) are kept only until
/// every worker has reported the second; then they are sealed into their compressed form
/// (a few hundred bytes), so a long run does not hold hundreds of MB in the harness.
#[derive(Debug, Clone, Default)]
struct Interval {
    open: Option<Box<[Histogram<u64>; 4]>>,
    sealed: [Option<Vec<u8>>; 4],
    p99_delivery: Option<u64>,
    counters: Counters,
    users: u64,
    measuring: bool,
    drain: bool,
    /// Shards whose tick for this second has been merged.
    shards: Vec<bool>,
    reports: usize,
}

impl Interval {
    fn open_mut(&mut self) -> &mut [Histogram<u64>; 4] {
        self.open
            .get_or_insert_with(|| Box::new(std::array::from_fn(|_| histogram::new_histogram())))
    }

    /// The metric's histogram of this second, if it has samples.
    fn hist(&self, m: Metric) -> Option<Histogram<u64>> {
        if let Some(open) = &self.open {
            let h = &open[m as usize];
            return (!h.is_empty()).then(|| h.clone());
        }
        let bytes = self.sealed[m as usize].as_ref()?;
        Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
    }

    fn seal(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let d = &open[Metric::Delivery as usize];
        self.p99_delivery = (!d.is_empty()).then(|| d.value_at_quantile(0.99));
        for m in Metric::ALL {
            let h = &open[m as usize];
            if h.is_empty() {
                continue;
            }
            let mut buf = Vec::new();
            if V2DeflateSerializer::new().serialize(h, &mut buf).is_ok() {
                self.sealed[m as usize] = Some(buf);
            } else {
                // Keep the full histograms rather than lose a second.
                self.open = Some(open);
                return;
            }
        }
    }

    fn p99_delivery(&self) -> Option<u64> {
        match &self.open {
            Some(open) => {
                let d = &open[Metric::Delivery as usize];
                (!d.is_empty()).then(|| d.value_at_quantile(0.99))
            }
            None => self.p99_delivery,
        }
    }
}

/// One second of a run merged over its workers, as [`Aggregator::seconds_after`] gives it.
#[derive(Debug, Clone)]
pub struct SecondView {
    /// Interval number (covers `[t-1, t)` seconds since the run's start).
    pub t: u64,
    /// In the measured window.
    pub measuring: bool,
    /// In the drain.
    pub drain: bool,
    /// Users connected at its end.
    pub users: u64,
    /// Its counters.
    pub counters: Counters,
    /// Its histograms by [`Metric`] (index `Metric as usize`), `None` without samples.
    pub hists: [Option<Histogram<u64>>; 4],
}

/// Merges the stdout lines of a run's workers.
#[derive(Debug)]
pub struct Aggregator {
    scenario: Scenario,
    workers: usize,
    started: SystemTime,
    intervals: BTreeMap<u64, Interval>,
    users_now: Vec<u64>,
    errors: u64,
    dones: Vec<Option<Done>>,
    /// Newest second any shard has reported.
    newest: u64,
    /// Last second each shard reported.
    last_tick: Vec<Option<u64>>,
    late: BTreeMap<usize, Vec<u64>>,
    duplicate: BTreeMap<usize, Vec<u64>>,
    /// The chat sends and receive events, for the checker.
    history: HistoryStore,
}

impl Aggregator {
    /// An aggregator for `workers` worker processes of `scenario`.
    pub fn new(scenario: &Scenario, workers: usize) -> Self {
        Aggregator {
            scenario: scenario.clone(),
            workers,
            started: SystemTime::now(),
            intervals: BTreeMap::new(),
            users_now: vec![0; workers],
            errors: 0,
            dones: vec![None; workers],
            newest: 0,
            last_tick: vec![None; workers],
            late: BTreeMap::new(),
            duplicate: BTreeMap::new(),
            history: HistoryStore::in_memory(),
        }
    }

    /// Keep the chat history in bucket files under `dir` (the run folder's `history/`,
    /// removed with the aggregator) rather than in memory, so the check's memory does not
    /// grow with the run. Call it before the first line.
    pub fn spill_to(&mut self, dir: &Path) -> Result<()> {
        self.history = HistoryStore::spilled(dir)?;
        Ok(())
    }

    /// Feed one stdout line of worker `worker`. Lines that are not JSON objects of type
    /// `tick`/`done` are ignored; a malformed tick/done line is an error.
    pub fn ingest(&mut self, worker: usize, line: &str) -> Result<()> {
        let line = line.trim();
        if !line.starts_with('{') {
            return Ok(());
        }
        // Only the `type` first: a `done` line of a big run is tens of MB (half a million
        // receipts with rooms of 50), and going through `serde_json::Value` or the
        // internally tagged enum would buffer it as a tree ten times its size.
        #[derive(serde::Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        let Ok(Kind { kind }) = serde_json::from_str::<Kind<'_>>(line) else {
            return Ok(());
        };
        let kind = kind.unwrap_or_default();
        if !matches!(kind.as_ref(), "tick" | "history" | "done") {
            return Ok(());
        }
        if worker >= self.workers {
            return Err(LoadgenError::Worker {
                worker,
                message: format!("only {} workers were announced", self.workers),
            });
        }
        let malformed = |e: serde_json::Error| LoadgenError::Worker {
            worker,
            message: format!("malformed line: {e}"),
        };
        let parsed = match kind.as_ref() {
            "tick" => WorkerLine::Tick(serde_json::from_str(line).map_err(malformed)?),
            "history" => WorkerLine::History(serde_json::from_str(line).map_err(malformed)?),
            _ => WorkerLine::Done(Box::new(serde_json::from_str(line).map_err(malformed)?)),
        };
        match parsed {
            WorkerLine::Tick(t) => self.ingest_tick(worker, t),
            WorkerLine::History(h) => {
                self.history.append(h.sends, h.receives);
                Ok(())
            }
            WorkerLine::Done(mut d) => {
                if self.dones[worker].is_none() {
                    // A done line that carries the history (a worker that does not stream
                    // it): the store takes it. Without `sends`, `acked` stands for them.
                    let acked = std::mem::take(&mut d.acked);
                    let mut sends = std::mem::take(&mut d.sends);
                    if sends.is_empty() {
                        sends = acked
                            .into_iter()
                            .map(|(channel, seq, id, sender)| SendRecord {
                                channel,
                                seq,
                                id,
                                sender,
                                n: 0,
                                at_ms: 0,
                                outcome: Outcome::Ok,
                            })
                            .collect();
                    }
                    self.history.append(sends, std::mem::take(&mut d.receives));
                }
                self.dones[worker] = Some(*d);
                Ok(())
            }
        }
    }

    fn ingest_tick(&mut self, worker: usize, t: Tick) -> Result<()> {
        let workers = self.workers;
        // Decode everything first: a bad histogram leaves the second untouched.
        let mut hists = Vec::new();
        for (name, enc) in &t.hist {
            let Some(m) = Metric::ALL.iter().find(|m| m.name() == name) else {
                continue;
            };
            let h = histogram::decode(enc).map_err(|e| LoadgenError::Worker {
                worker,
                message: format!("tick {}: {e}", t.t),
            })?;
            hists.push((*m, h));
        }
        let iv = self.intervals.entry(t.t).or_default();
        if iv.shards.len() < workers {
            iv.shards.resize(workers, false);
        }
        if iv.shards[worker] {
            // Merging it again would count its samples twice.
            self.duplicate.entry(worker).or_default().push(t.t);
            return Ok(());
        }
        if self.newest >= t.t.saturating_add(LATE_AFTER_S) || self.dones[worker].is_some() {
            self.late.entry(worker).or_default().push(t.t);
        }
        for (m, h) in hists {
            iv.open_mut()[m as usize]
                .add(&h)
                .map_err(|e| LoadgenError::Histogram(format!("merge: {e:?}")))?;
        }
        iv.counters.add(&t.counters);
        iv.users += t.users;
        iv.measuring |= t.measuring;
        iv.drain |= t.drain;
        iv.shards[worker] = true;
        iv.reports += 1;
        // Every shard has reported the second: no tick can be merged into it any more
        // (a repeat is a duplicate), so it is compressed.
        if iv.reports >= workers {
            iv.seal();
        }
        self.newest = self.newest.max(t.t);
        let last = &mut self.last_tick[worker];
        *last = Some(last.map_or(t.t, |l| l.max(t.t)));
        self.users_now[worker] = t.users;
        self.errors += t.counters.errors;
        Ok(())
    }

    /// Which shard's ticks came late, twice or not at all, so far. A shard is due every
    /// second from 1 to its last tick (to the run's last second if it sent no `done`).
    pub fn ticks(&self) -> TickReport {
        let mut missing: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for shard in 0..self.workers {
            let end = match (self.last_tick[shard], &self.dones[shard]) {
                (Some(last), Some(_)) => last,
                _ => self.newest,
            };
            let seconds: Vec<u64> = (1..=end)
                .filter(|t| {
                    !self
                        .intervals
                        .get(t)
                        .is_some_and(|iv| iv.shards.get(shard).copied().unwrap_or(false))
                })
                .collect();
            if !seconds.is_empty() {
                missing.insert(shard, seconds);
            }
        }
        TickReport {
            seconds: self.newest,
            late: by_shard(&self.late),
            missing: by_shard(&missing),
            duplicate: by_shard(&self.duplicate),
        }
    }

    /// Workers that have sent their `done` line.
    pub fn workers_done(&self) -> usize {
        self.dones.iter().filter(|d| d.is_some()).count()
    }

    /// The live view: the latest complete second.
    pub fn progress(&self) -> Progress {
        let latest = self
            .intervals
            .iter()
            .rev()
            .find(|(_, iv)| iv.reports >= self.workers)
            .or_else(|| self.intervals.iter().next_back());
        let mut p = Progress {
            users: self.users_now.iter().sum(),
            errors: self.errors,
            ..Progress::default()
        };
        if let Some((&t, iv)) = latest {
            p.elapsed = Duration::from_secs(t);
            p.sends_per_s = iv.counters.sent;
            p.deliveries_per_s = iv.counters.delivered;
            p.p99_delivery_us = iv.p99_delivery();
        }
        p
    }

    /// The seconds after `after` that every shard has reported (or that are older than
    /// [`LATE_AFTER_S`] behind the newest), oldest first, with their merged histograms:
    /// what a live view (the run console) draws once a second without reading any file.
    pub fn seconds_after(&self, after: u64) -> Vec<SecondView> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.intervals
            .range((Excluded(after), Unbounded))
            .take_while(|(t, iv)| {
                iv.reports >= self.workers || t.saturating_add(LATE_AFTER_S) <= self.newest
            })
            .map(|(&t, iv)| SecondView {
                t,
                measuring: iv.measuring,
                drain: iv.drain,
                users: iv.users,
                counters: iv.counters.clone(),
                hists: std::array::from_fn(|m| iv.hist(Metric::ALL[m])),
            })
            .collect()
    }

    /// Check correctness, evaluate thresholds and write the run folder's files.
    pub fn finish(&self, run_dir: &Path, meta: RunMeta) -> Result<Summary> {
        let summary = self.summarize(meta);
        self.write(run_dir, &summary)?;
        Ok(summary)
    }

    /// Write the run folder's files: `summary` (the one writer of summary.json; whatever
    /// it holds is in the typed [`Summary`] first), histograms.hlog and timeline.csv.
    pub fn write(&self, run_dir: &Path, summary: &Summary) -> Result<()> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| LoadgenError::io(format!("creating {}", run_dir.display()), e))?;
        let json =
            serde_json::to_vec_pretty(summary).map_err(|e| LoadgenError::json("summary", e))?;
        write_file(&run_dir.join("summary.json"), &json)?;
        write_file(&run_dir.join("histograms.hlog"), &self.hlog()?)?;
        write_file(&run_dir.join("timeline.csv"), self.timeline().as_bytes())
    }

    /// The summary without writing anything.
    pub fn summarize(&self, meta: RunMeta) -> Summary {
        let mut problems = Vec::new();
        let mut recipients = Vec::new();
        let mut totals = Counters::default();
        let mut peak_done = 0;
        for (i, d) in self.dones.iter().enumerate() {
            match d {
                Some(d) => {
                    recipients.extend_from_slice(&d.recipients);
                    totals.add(&d.totals);
                    peak_done += d.peak_users;
                }
                None => problems.push(format!("worker {i} did not finish (no done line)")),
            }
        }
        let mut correctness = match &self.scenario.target {
            Some(t) => {
                let parts: Vec<&crate::wire::GenericDone> = self
                    .dones
                    .iter()
                    .flatten()
                    .filter_map(|d| d.generic.as_ref())
                    .collect();
                // One worker (the usual case up to 15k users): check its history in
                // place rather than copying it.
                let merged;
                let g = match parts.as_slice() {
                    [one] => *one,
                    _ => {
                        let mut m = crate::wire::GenericDone::default();
                        for p in &parts {
                            m.extend(p);
                        }
                        m.sort();
                        merged = m;
                        &merged
                    }
                };
                checker::generic::check(t, g, self.scenario.population.users).unwrap_or_else(|e| {
                    problems.push(format!("correctness check: {e}"));
                    checker::CorrectnessReport::default()
                })
            }
            None => checker::history::check_history(
                &self.history,
                &recipients,
                checker::history::MAX_GROUP,
            )
            .unwrap_or_else(|e| {
                problems.push(format!("correctness check: {e}"));
                checker::CorrectnessReport::default()
            }),
        };
        if self.scenario.target.is_some() {
            correctness.anomalies = crate::anomaly::none();
        }

        let mut measured = Counters::default();
        let mut hists: [Histogram<u64>; 4] = std::array::from_fn(|_| histogram::new_histogram());
        let mut measured_s = 0.0;
        let mut sampled_peak = 0;
        for iv in self.intervals.values() {
            sampled_peak = sampled_peak.max(iv.users);
            if iv.measuring {
                measured_s += 1.0;
                measured.add(&iv.counters);
            }
            // Latency of messages sent in the window includes deliveries during the drain.
            for m in Metric::ALL {
                // Connecting happens mostly in the warm-up: connect and hello latency
                // cover the whole run; ack and delivery the window and the drain.
                let whole_run = matches!(m, Metric::Connect | Metric::Hello);
                if (whole_run || iv.measuring || iv.drain)
                    && let Some(h) = iv.hist(m)
                {
                    let _ = hists[m as usize].add(&h);
                }
            }
        }
        // When everybody was connected: the first second at the sampled peak. The peak
        // workers tell in their done lines is a sum of each thread's own maximum, reached
        // at different moments, so no single second need show it.
        let peak_users_at_s = self
            .intervals
            .iter()
            .find(|(_, iv)| sampled_peak > 0 && iv.users >= sampled_peak)
            .map(|(&t, _)| t);
        let peak_users = sampled_peak.max(peak_done);
        let loadgen = self.cost(&totals, peak_users);
        if self.dones.iter().all(Option::is_none) {
            totals = self
                .intervals
                .values()
                .fold(Counters::default(), |mut c, iv| {
                    c.add(&iv.counters);
                    c
                });
        }
        let per_s = |n: u64| {
            if measured_s > 0.0 {
                n as f64 / measured_s
            } else {
                0.0
            }
        };
        let mut latency_us = BTreeMap::new();
        for m in Metric::ALL {
            let h = &hists[m as usize];
            if !h.is_empty() {
                latency_us.insert(m.name().to_string(), Percentiles::of(h));
            }
        }

        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for (name, p) in &latency_us {
            for (stat, v) in p.stats() {
                values.insert(format!("{name}.{stat}"), v);
            }
        }
        let ops = measured.sent + measured.connects + measured.history;
        for (k, v) in [
            ("sent", measured.sent as f64),
            ("acked", measured.acked as f64),
            ("delivered", measured.delivered as f64),
            ("errors", measured.errors as f64),
            ("rate_limited", measured.rate_limited as f64),
            ("disconnects", measured.disconnects as f64),
            ("reconnects", measured.reconnects as f64),
            ("users", peak_users as f64),
            ("expected", correctness.expected as f64),
            ("lost", correctness.lost as f64),
            ("duplicated", correctness.duplicated as f64),
            ("reordered", correctness.reordered as f64),
            ("gaps", correctness.gaps as f64),
        ] {
            values.insert(k.to_string(), v);
        }
        // The anomaly checker reads the chat protocol only: on a generic target these
        // stay unmeasured (a threshold on them fails rather than passing vacuously).
        for (kind, r) in correctness
            .anomalies
            .iter()
            .filter(|_| self.scenario.target.is_none())
        {
            values.insert(format!("anomalies.{}", kind.name()), r.count as f64);
        }
        for (k, v) in [
            (
                "errors.rate",
                if ops > 0 {
                    measured.errors as f64 / ops as f64
                } else {
                    0.0
                },
            ),
            ("deliveries.rate", per_s(measured.delivered)),
            ("sends.rate", per_s(measured.sent)),
            ("rate_limited.rate", per_s(measured.rate_limited)),
        ] {
            values.insert(k.to_string(), v);
        }
        if let Some(c) = &loadgen {
            values.insert("loadgen.cpu_s".into(), c.cpu_s);
            values.insert("loadgen.rss_kib_per_user".into(), c.rss_kib_per_user);
            values.insert("loadgen.cpu_us_per_delivery".into(), c.cpu_us_per_delivery);
        }
        // Correctness needs every worker's history: without it, those values are unknown.
        if !problems.is_empty() {
            for k in ["expected", "lost", "duplicated", "reordered", "gaps"] {
                values.remove(k);
            }
            values.retain(|k, _| !k.starts_with("anomalies."));
        }
        // Seconds without some shard's samples: the latency of the run is incomplete.
        let ticks = self.ticks();
        for m in &ticks.missing {
            problems.push(format!("no tick from {m} (its samples are missing)"));
        }
        for d in &ticks.duplicate {
            problems.push(format!(
                "repeated tick from {d} (only the first one was merged)"
            ));
        }
        let thresholds: Vec<ThresholdResult> = self
            .scenario
            .thresholds
            .iter()
            .map(|t| t.eval(&values))
            .collect();
        let mut http: Option<crate::wire::HttpReport> = None;
        for d in self.dones.iter().flatten() {
            if let Some(h) = &d.http
                && let Err(e) = http.get_or_insert_with(Default::default).merge(h)
            {
                problems.push(format!("HTTP report: {e}"));
            }
        }
        if let Some(h) = http.as_mut() {
            h.finish();
        }
        let rate_limited = RateLimited::of(
            self.intervals
                .iter()
                .map(|(&t, iv)| (t, iv.counters.rate_limited, iv.measuring)),
            measured_s,
        );
        Summary {
            http,
            rate_limited,
            passed: problems.is_empty() && thresholds.iter().all(|t| t.passed),
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            meta,
            workers: self.workers,
            workers_done: self.workers_done(),
            measured_s,
            sends_per_s: per_s(measured.sent),
            deliveries_per_s: per_s(measured.delivered),
            measured,
            totals,
            peak_users,
            peak_users_at_s,
            loadgen,
            latency_us,
            correctness,
            thresholds,
            ticks,
            problems,
            nodes_cost: Vec::new(),
            links_cost: Vec::new(),
            harness_cost: None,
            node_errors: None,
            coordinator: None,
        }
    }

    /// The workers' own cost, if any reported it.
    fn cost(&self, totals: &Counters, peak_users: u64) -> Option<LoadgenCost> {
        let used: Vec<_> = self
            .dones
            .iter()
            .flatten()
            .filter_map(|d| d.resources)
            .collect();
        if used.is_empty() {
            return None;
        }
        let cpu_s: f64 = used.iter().map(|r| r.cpu_s).sum();
        let peak_rss_kib: u64 = used.iter().map(|r| r.peak_rss_kib).sum();
        let ratio = |a: f64, b: u64| if b > 0 { a / b as f64 } else { 0.0 };
        Some(LoadgenCost {
            workers: used.len(),
            cpu_s,
            peak_rss_kib,
            rss_kib_per_user: ratio(peak_rss_kib as f64, peak_users),
            cpu_us_per_delivery: ratio(cpu_s * 1e6, totals.delivered),
        })
    }

    /// The interval log: one histogram per metric per second, tagged by metric name.
    fn hlog(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .add_comment(&format!(
                    "Flowline run of scenario {} (seed {}); values in microseconds",
                    self.scenario.name, self.scenario.seed
                ))
                .with_start_time(self.started)
                .with_base_time(self.started)
                .begin_log_with(&mut buf, &mut ser)
                .map_err(|e| LoadgenError::io("hlog header", e))?;
            for (&t, iv) in &self.intervals {
                for m in Metric::ALL {
                    let Some(h) = iv.hist(m) else {
                        continue;
                    };
                    let tag = Tag::new(m.name());
                    w.write_histogram(
                        &h,
                        Duration::from_secs(t.saturating_sub(1)),
                        Duration::from_secs(1),
                        tag,
                    )
                    .map_err(|e| LoadgenError::Histogram(format!("hlog: {e}")))?;
                }
            }
        }
        Ok(buf)
    }

    /// One CSV row per second.
    fn timeline(&self) -> String {
        let mut out = String::from(
            "t_s,measuring,drain,users,sent,acked,delivered,errors,disconnects,reconnects,delivery_p50_us,delivery_p99_us,ack_p99_us,rate_limited\n",
        );
        for (&t, iv) in &self.intervals {
            let delivery = iv.hist(Metric::Delivery);
            let ack = iv.hist(Metric::Ack);
            let q = |h: &Option<Histogram<u64>>, q: f64| {
                h.as_ref()
                    .map_or_else(String::new, |h| h.value_at_quantile(q).to_string())
            };
            let c = &iv.counters;
            out.push_str(&format!(
                "{t},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                u8::from(iv.measuring),
                u8::from(iv.drain),
                iv.users,
                c.sent,
                c.acked,
                c.delivered,
                c.errors,
                c.disconnects,
                c.reconnects,
                q(&delivery, 0.5),
                q(&delivery, 0.99),
                q(&ack, 0.99),
                c.rate_limited,
            ));
        }
        out
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path)
        .map_err(|e| LoadgenError::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| LoadgenError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
