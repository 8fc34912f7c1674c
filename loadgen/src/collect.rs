//! The one loop from workers' lines to a verdict, shared by `flowline run` (worker
//! processes, lines handed on by its coordinator) and standalone `flowline loadgen` (one
//! worker in this process):
//!
//! ```text
//! (worker, line) ─▶ the caller's own lines (metrics announcements) are handed back
//!                └▶ Aggregator::ingest ─▶ progress line every second on stderr
//! lines end ─▶ (caller: summarize, write the run folder) ─▶ print_verdict
//! ```
//!
//! The verdict words are the same for both: `held` / `FAILED` per threshold, `PASSED` /
//! `FAILED` for the run.

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::aggregate::{Aggregator, Summary};
use crate::error::LoadgenError;

/// Where the workers' lines come from: `(worker index, line)`.
pub type LineRx = mpsc::UnboundedReceiver<(usize, String)>;

/// How one collection went.
#[derive(Debug, Default)]
pub struct Collected {
    /// Lines neither the caller nor the aggregator could read.
    pub bad_lines: u64,
    /// The first of them, with why.
    pub first_bad: Option<LoadgenError>,
}

/// Feed every worker line to `agg` until every sender is gone, showing progress once a
/// second (rewritten in place on a terminal, a plain line every 5 s otherwise).
///
/// `own_line` sees each line first and returns true when it took it (the line is then not
/// aggregated). Once `deadline` passes, `at_deadline` runs on each progress tick (it should
/// stop the workers, which closes the lines).
pub async fn collect<F>(
    agg: &mut Aggregator,
    rx: LineRx,
    own_line: impl FnMut(usize, &str) -> bool,
    deadline: Option<Instant>,
    at_deadline: impl FnMut() -> F,
) -> Collected
where
    F: Future<Output = ()>,
{
    collect_observed(agg, rx, own_line, deadline, at_deadline, |_| {}).await
}

/// [`collect`], and `each_second` sees the aggregator once a second (a live view reads
/// the newly complete seconds from it, e.g. the run console).
pub async fn collect_observed<F>(
    agg: &mut Aggregator,
    mut rx: LineRx,
    mut own_line: impl FnMut(usize, &str) -> bool,
    deadline: Option<Instant>,
    mut at_deadline: impl FnMut() -> F,
    mut each_second: impl FnMut(&Aggregator),
) -> Collected
where
    F: Future<Output = ()>,
{
    let mut out = Collected::default();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_plain = Instant::now();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((w, line)) => {
                    if own_line(w, &line) {
                        continue;
                    }
                    if let Err(e) = agg.ingest(w, &line) {
                        out.bad_lines += 1;
                        if out.bad_lines <= 5 {
                            tracing::warn!("worker{}: unreadable line: {e}", w + 1);
                        }
                        out.first_bad.get_or_insert(e);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                each_second(agg);
                if tty {
                    eprint!("\r{}\x1b[K", agg.progress());
                } else if last_plain.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{}", agg.progress());
                    last_plain = Instant::now();
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    eprintln!();
                    at_deadline().await;
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    out
}

/// Print the run's verdict on stderr: each threshold (`held` / `FAILED`, with its actual
/// value as `actual` formats it), correctness, the generator's cost, problems, and one
/// closing `PASSED` / `FAILED` line naming the run folder.
pub fn print_verdict(s: &Summary, dir: &Path, actual: impl Fn(&str, f64) -> String) {
    eprintln!();
    for t in &s.thresholds {
        let value = t
            .actual
            .map(|v| actual(&t.expr, v))
            .unwrap_or_else(|| "not measured".into());
        eprintln!(
            "  {} {}  (actual {value})",
            if t.passed { "held  " } else { "FAILED" },
            t.expr
        );
    }
    let c = &s.correctness;
    eprintln!(
        "  correctness: expected {} delivered {} lost {} duplicated {} reordered {}",
        c.expected, c.delivered, c.lost, c.duplicated, c.reordered
    );
    if let Some(l) = &s.loadgen {
        eprintln!(
            "  loadgen: {} worker(s), {:.1} CPU s ({:.2} µs per delivery), peak RSS {} KiB ({:.1} KiB per user){}",
            l.workers,
            l.cpu_s,
            l.cpu_us_per_delivery,
            l.peak_rss_kib,
            l.rss_kib_per_user,
            s.peak_users_at_s
                .map(|t| format!("; {} users connected after {t} s", s.peak_users))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &s.coordinator {
        eprintln!("  {}", c.line());
    }
    for p in &s.problems {
        eprintln!("  problem: {p}");
    }
    if let Some(n) = s.node_errors.as_ref().filter(|n| n.total() > 0) {
        let mut top = n.top.iter();
        let first = top
            .next()
            .map(|m| format!("; top: {} ×{} ({})", m.message, m.count, m.nodes.join(", ")))
            .unwrap_or_default();
        eprintln!(
            "  nodes logged {} warnings/errors ({} distinct causes){first}",
            n.total(),
            n.distinct
        );
        for m in top {
            eprintln!("    ×{} {} ({})", m.count, m.message, m.nodes.join(", "));
        }
    }
    eprintln!(
        "flowline: {} — {} sent, {} delivered, {:.0} deliveries/s; run folder {}",
        if s.passed { "PASSED" } else { "FAILED" },
        s.totals.sent,
        s.totals.delivered,
        s.deliveries_per_s,
        dir.display()
    );
}
