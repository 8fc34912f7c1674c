//! report.html: one self-contained page per run, built only from the run folder's files.
//!
//! ```text
//! summary.json ─┐
//! timeline.csv ─┼─▶ RunFolder ─▶ charts (inline SVG, faults shaded) + tables ─▶ report.html
//! events.jsonl ─┤
//! histograms.hlog┘
//! ```
//!
//! Timeline columns are recognised by name: `<metric>_p50|p90|p99|p999|max[_ms|_us]` are
//! latency percentiles (one chart per metric), `users`/`connected` the user count, columns
//! about sends/acks/deliveries the rates, and errors/disconnects/reconnects the error chart
//! (with `rate_limited`, the refusals for a rate limit, as its own series when there were
//! any).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use flowline_loadgen::aggregate::TickReport;
use flowline_loadgen::scenario::Scenario;

use crate::runfolder::{IntervalStats, RunFolder};
use crate::svg::{Chart, Marker, PALETTE, Series, Shade, XAxis, esc, fmt_num};

/// Percentiles listed in latency tables.
pub const TABLE_QUANTILES: [(f64, &str); 5] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

/// Write `<dir>/report.html` from the run folder's files; returns its path.
pub fn write(dir: &Path) -> anyhow::Result<PathBuf> {
    let run = RunFolder::load(dir)?;
    let html = render(&run);
    let path = dir.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Page style shared by report.html and compare.html.
pub const CSS: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f4f5f7;color:#222}
main{max-width:1200px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:24px;margin:8px 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.badge{display:inline-block;padding:3px 12px;border-radius:12px;color:#fff;font-weight:700;font-size:14px;vertical-align:middle;margin-left:10px}
.pass{background:#2e7d32}.fail{background:#c62828}.unknown{background:#777}
.meta{color:#555;font-size:13px}.meta b{color:#222}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:700}.card .k{font-size:12px;color:#666}
.card.bad .v{color:#c62828}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;margin:10px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid .panel{margin:0}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#f0f0f0}
td.l,th.l{text-align:left}tr.bad td{background:#fdecea}tr.good td.s{color:#2e7d32;font-weight:600}
tr.bad td.s{color:#c62828;font-weight:700}
.note{color:#666;font-size:12px}
"#;

/// Render the page.
pub fn render(run: &RunFolder) -> String {
    let mut h = String::new();
    let name = run
        .text(&[
            "meta.scenario",
            "scenario.name",
            "scenario",
            "name",
            "meta.name",
        ])
        .unwrap_or_else(|| run.name());
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flowline run: {}</title><style>{CSS}</style></head><body><main>",
        esc(&name)
    );
    let (cls, verdict) = match run.passed() {
        Some(true) => ("pass", "PASS"),
        Some(false) => ("fail", "FAIL"),
        None => ("unknown", "NO VERDICT"),
    };
    let _ = write!(
        h,
        "<h1>Flowline run: {}<span class=\"badge {cls}\">{verdict}</span></h1>",
        esc(&name)
    );
    h.push_str(&metadata(run));
    h.push_str(&cards(run));

    let windows = run.fault_windows();
    let shades: Vec<Shade> = windows
        .iter()
        .map(|w| Shade {
            x0: w.start,
            x1: w.end,
            label: w.label.clone(),
        })
        .collect();
    let markers: Vec<Marker> = run
        .other_events()
        .iter()
        .filter_map(|e| {
            Some(Marker {
                x: e.t?,
                label: format!("{} {}", e.kind, e.label).trim().to_string(),
            })
        })
        .collect();
    h.push_str("<h2>Over time</h2>");
    h.push_str(&ticks_note(run));
    if !windows.is_empty() {
        h.push_str("<p class=\"note\">Shaded: fault windows (from events.jsonl). Dashed lines: node events.</p>");
    }
    let x_end = run.end_time().max(1.0);
    for mut chart in timeline_charts(run) {
        chart.x_range = Some((0.0, x_end));
        chart.shades = shades.clone();
        chart.markers = markers.clone();
        let _ = write!(h, "<div class=\"panel\">{}</div>", chart.render());
    }

    h.push_str("<h2>Latency distribution</h2>");
    h.push_str(&latency_table(run));
    h.push_str("<div class=\"grid\">");
    for (i, tag) in run.histograms.keys().enumerate() {
        let mut c = Chart::new(format!("{tag}: percentile distribution"), "ms");
        c.x_axis = XAxis::Percentile;
        c.width = 565.0;
        c.height = 260.0;
        c.series.push(Series::new(
            tag.clone(),
            PALETTE[i % PALETTE.len()],
            run.percentile_curve(tag),
        ));
        let _ = write!(h, "<div class=\"panel\">{}</div>", c.render());
    }
    h.push_str("</div>");
    if run.histograms.is_empty() {
        h.push_str("<p class=\"note\">histograms.hlog is missing or empty.</p>");
    }

    h.push_str("<h2>Correctness</h2>");
    h.push_str(&correctness_table(run));
    h.push_str("<h2>Thresholds</h2>");
    h.push_str(&thresholds_table(run));
    h.push_str(&node_errors_table(run));
    h.push_str(&crate::report_workers::section(run));
    h.push_str("<h2>Totals</h2>");
    h.push_str(&totals_table(run));
    h.push_str("<h2>Events</h2>");
    h.push_str(&events_table(run));
    let _ = write!(
        h,
        "<p class=\"note\">Generated by flowline from {} (summary.json, timeline.csv, events.jsonl, histograms.hlog).</p></main></body></html>",
        esc(&run.dir.display().to_string())
    );
    h
}

/// Which shard's per-second ticks came late, twice or never (summary.json's `ticks`):
/// the seconds whose merged histograms lack or hold extra samples are named.
fn ticks_note(run: &RunFolder) -> String {
    let Some(ticks) = run
        .summary
        .get("ticks")
        .and_then(|t| serde_json::from_value::<TickReport>(t.clone()).ok())
    else {
        return String::new();
    };
    let mut s = String::new();
    for (what, list) in [
        (
            "missing (samples absent from those seconds)",
            &ticks.missing,
        ),
        ("late (merged all the same)", &ticks.late),
        ("repeated (only the first merged)", &ticks.duplicate),
    ] {
        if list.is_empty() {
            continue;
        }
        let shards: Vec<String> = list.iter().map(ToString::to_string).collect();
        let _ = write!(
            s,
            "<p class=\"note\"><b>Ticks {}:</b> {}</p>",
            esc(what),
            esc(&shards.join("; "))
        );
    }
    s
}

fn metadata(run: &RunFolder) -> String {
    // The loadgen's own parser: scenario.toml may hold a u64 seed that plain TOML tables
    // (i64 integers) refuse.
    let scen = run
        .scenario_toml
        .as_deref()
        .and_then(|t| Scenario::parse("scenario.toml", t).ok());
    let from = |f: fn(&Scenario) -> String| scen.as_ref().map(f);
    let items = [
        (
            "seed",
            run.text(&["meta.seed", "seed"])
                .or_else(|| from(|s| s.seed.to_string())),
        ),
        (
            "phase",
            run.text(&["meta.phase", "phase"])
                .or_else(|| from(|s| s.cluster.phase.as_str().to_string())),
        ),
        (
            "nodes",
            run.text(&["meta.nodes", "nodes"])
                .or_else(|| from(|s| s.cluster.nodes.to_string())),
        ),
        ("users", from(|s| s.population.users.to_string())),
        (
            "duration",
            from(|s| {
                format!(
                    "{} (+{} warm-up, {} drain)",
                    humantime::format_duration(s.duration),
                    humantime::format_duration(s.warmup),
                    humantime::format_duration(s.drain)
                )
            }),
        ),
        ("workers", run.text(&["workers"])),
        (
            "revision",
            run.text(&["meta.revision", "meta.git_revision", "revision"]),
        ),
        (
            "started",
            run.text(&["meta.started_at", "started_at", "meta.start"]),
        ),
        ("folder", Some(run.name())),
    ];
    let mut s = String::from("<p class=\"meta\">");
    for (k, v) in items {
        if let Some(v) = v {
            let _ = write!(s, "{k} <b>{}</b> &nbsp; ", esc(&v));
        }
    }
    s.push_str("</p>");
    s
}

fn cards(run: &RunFolder) -> String {
    let num = |paths: &[&str]| run.num(paths);
    let p99 = |tag: &str| {
        run.histograms
            .get(tag)
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
    };
    let delivery_tag = run
        .histograms
        .keys()
        .find(|k| k.contains("deliver"))
        .cloned();
    let ack_tag = run.histograms.keys().find(|k| k.contains("ack")).cloned();
    let items: Vec<(&str, Option<String>, bool)> = vec![
        (
            "messages sent",
            num(&["totals.sent", "counts.sent", "sent"]).map(fmt_num),
            false,
        ),
        (
            "deliveries",
            num(&["totals.delivered", "counts.delivered", "delivered"]).map(fmt_num),
            false,
        ),
        (
            "p99 send→ack",
            ack_tag
                .as_deref()
                .and_then(p99)
                .map(|v| format!("{v:.1} ms")),
            false,
        ),
        (
            "p99 delivery",
            delivery_tag
                .as_deref()
                .and_then(p99)
                .map(|v| format!("{v:.1} ms")),
            false,
        ),
        (
            "lost",
            num(&["correctness.lost", "lost"]).map(fmt_num),
            num(&["correctness.lost", "lost"]).is_some_and(|v| v > 0.0),
        ),
        (
            "duplicated",
            num(&[
                "correctness.duplicated",
                "correctness.duplicates",
                "duplicated",
            ])
            .map(fmt_num),
            num(&[
                "correctness.duplicated",
                "correctness.duplicates",
                "duplicated",
            ])
            .is_some_and(|v| v > 0.0),
        ),
        (
            "errors",
            num(&["totals.errors", "counts.errors", "errors.total", "errors"]).map(fmt_num),
            num(&["totals.errors", "counts.errors", "errors.total", "errors"])
                .is_some_and(|v| v > 0.0),
        ),
    ];
    let mut s = String::from("<div class=\"cards\">");
    for (k, v, bad) in items {
        if let Some(v) = v {
            let _ = write!(
                s,
                "<div class=\"card{}\"><div class=\"v\">{}</div><div class=\"k\">{k}</div></div>",
                if bad { " bad" } else { "" },
                esc(&v)
            );
        }
    }
    s.push_str("</div>");
    s
}

/// Which timeline columns are latency percentiles: (metric, percentile name, to-ms factor).
fn latency_column(name: &str) -> Option<(String, &'static str, f64)> {
    let lower = name.to_ascii_lowercase();
    let (base, factor) = if let Some(b) = lower.strip_suffix("_ms") {
        (b, 1.0)
    } else if let Some(b) = lower.strip_suffix("_us") {
        (b, 0.001)
    } else {
        (lower.as_str(), 1.0)
    };
    for p in ["p50", "p90", "p99", "p999", "p99.9", "max"] {
        if let Some(metric) = base.strip_suffix(p) {
            let metric = metric.trim_end_matches(['_', '.']);
            let metric = if metric.is_empty() { "latency" } else { metric };
            let label: &'static str = match p {
                "p999" | "p99.9" => "p99.9",
                "p50" => "p50",
                "p90" => "p90",
                "p99" => "p99",
                _ => "max",
            };
            return Some((metric.to_string(), label, factor));
        }
    }
    None
}

/// Picks one statistic of an interval.
type StatOf = fn(&IntervalStats) -> u64;

/// Latency charts over time from histograms.hlog's per-second intervals: p50/p90/p99/max.
fn interval_charts(run: &RunFolder) -> Vec<Chart> {
    let mut tags: Vec<&String> = run.intervals.keys().collect();
    let rank = |t: &str| match t {
        "delivery" => 0,
        "ack" => 1,
        "hello" => 2,
        "connect" => 3,
        _ => 4,
    };
    tags.sort_by_key(|t| (rank(t), (*t).clone()));
    let mut charts = Vec::new();
    for tag in tags {
        let iv = &run.intervals[tag];
        let mut c = Chart::new(format!("{tag} latency percentiles, per second"), "ms");
        let series: [(&str, StatOf); 4] = [
            ("p50", |s| s.p50),
            ("p90", |s| s.p90),
            ("p99", |s| s.p99),
            ("max", |s| s.max),
        ];
        for (i, (name, get)) in series.iter().enumerate() {
            let pts = iv
                .iter()
                .filter(|s| s.count > 0)
                .map(|s| (s.t, get(s) as f64 / 1000.0))
                .collect();
            let mut ser = Series::new(*name, PALETTE[i], pts);
            ser.dashed = *name == "max";
            c.series.push(ser);
        }
        charts.push(c);
    }
    charts
}

/// The charts over time, in reading order: latency (from histograms.hlog when present,
/// else from timeline.csv's percentile columns), users, send rate, delivery rate, errors.
pub fn timeline_charts(run: &RunFolder) -> Vec<Chart> {
    let t = &run.timeline;
    let mut charts = interval_charts(run);
    let from_hlog = !charts.is_empty();
    // Latency: one chart per metric, series in percentile order.
    let mut metrics: Vec<String> = Vec::new();
    let mut lat: Vec<(String, &'static str, f64, usize)> = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        if let Some((m, p, f)) = latency_column(c) {
            if !metrics.contains(&m) {
                metrics.push(m.clone());
            }
            lat.push((m, p, f, i));
        }
    }
    // Delivery first: it is the number people look for.
    metrics.sort_by_key(|m| (!m.contains("deliver"), !m.contains("ack"), m.clone()));
    for m in metrics.iter().filter(|_| !from_hlog) {
        let mut c = Chart::new(format!("{m} latency percentiles, per second"), "ms");
        for (pi, p) in ["p50", "p90", "p99", "p99.9", "max"].iter().enumerate() {
            for (mm, pp, f, i) in &lat {
                if mm == m && pp == p {
                    let pts = t.points(*i).into_iter().map(|(x, y)| (x, y * f)).collect();
                    let mut s = Series::new(*p, PALETTE[pi], pts);
                    s.dashed = *p == "max";
                    c.series.push(s);
                }
            }
        }
        charts.push(c);
    }
    let is_lat = |c: &str| latency_column(c).is_some();
    let pick = |pred: &dyn Fn(&str) -> bool| -> Vec<usize> {
        t.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !is_lat(c) && pred(&c.to_ascii_lowercase()))
            .map(|(i, _)| i)
            .collect()
    };
    let users = pick(&|c| c.contains("users") || c.contains("connected") || c == "connections");
    let mut errors = pick(&|c| {
        c.contains("error")
            || c.contains("disconnect")
            || c.contains("reconnect")
            || c.contains("timeout")
            || c.contains("lost")
            || c.contains("fail")
    });
    // Refusals for a rate limit: their own series, only in runs that had any (a flat zero
    // line in every other run would say nothing).
    errors.extend(
        pick(&|c| c == "rate_limited")
            .into_iter()
            .filter(|&i| t.points(i).iter().any(|&(_, y)| y > 0.0)),
    );
    let rates = pick(&|c| {
        (c.contains("sent")
            || c.contains("send")
            || c.contains("ack")
            || c.contains("deliver")
            || c.contains("recv")
            || c.contains("per_s"))
            && !c.contains("error")
    });
    let make = |title: &str, unit: &str, cols: &[usize]| {
        let mut c = Chart::new(title, unit);
        for (k, i) in cols.iter().enumerate() {
            c.series.push(Series::new(
                t.columns[*i].clone(),
                PALETTE[(k + 2) % PALETTE.len()],
                t.points(*i),
            ));
        }
        c
    };
    // Deliveries outnumber sends by the fan-out: they get their own scale.
    let (deliveries, sends): (Vec<usize>, Vec<usize>) = rates
        .iter()
        .partition(|i| t.columns[**i].to_ascii_lowercase().contains("deliver"));
    charts.push(make("Connected users", "users", &users));
    charts.push(make(
        "Send rate (sent and acked)",
        "messages per second",
        &sends,
    ));
    charts.push(make("Delivery rate", "deliveries per second", &deliveries));
    charts.push(make("Errors", "per second", &errors));
    charts
}

fn latency_table(run: &RunFolder) -> String {
    let mut s = String::from("<table><tr><th class=\"l\">metric</th><th>count</th>");
    for (_, n) in TABLE_QUANTILES {
        let _ = write!(s, "<th>{n}</th>");
    }
    s.push_str("<th>max</th></tr>");
    let mut any = false;
    for (tag, h) in &run.histograms {
        any = true;
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td>",
            esc(tag),
            h.len()
        );
        for (q, _) in TABLE_QUANTILES {
            let _ = write!(s, "<td>{}</td>", ms(h.value_at_quantile(q)));
        }
        let _ = write!(s, "<td>{}</td></tr>", ms(h.max()));
    }
    s.push_str("</table>");
    if !any {
        if let Some(lat) = run.get("latency") {
            return kv_table(lat);
        }
        return "<p class=\"note\">no latency data</p>".into();
    }
    s.push_str("<p class=\"note\">milliseconds, measured window (after warm-up; the whole run for a metric measured only outside it), from histograms.hlog (HdrHistogram, 3 significant digits)</p>");
    s
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn correctness_table(run: &RunFolder) -> String {
    let Some(c) = run.get("correctness") else {
        return "<p class=\"note\">summary.json has no correctness section</p>".into();
    };
    let mut s = String::from("<table><tr><th class=\"l\">check</th><th>count</th></tr>");
    let mut lists = Vec::new();
    if let Value::Object(m) = c {
        for (k, v) in m {
            match v {
                Value::Number(n) => {
                    let bad = n.as_f64().is_some_and(|x| x > 0.0)
                        && ["lost", "dup", "reorder", "gap"]
                            .iter()
                            .any(|w| k.contains(w));
                    let _ = write!(
                        s,
                        "<tr class=\"{}\"><td class=\"l\">{}</td><td class=\"s\">{}</td></tr>",
                        if bad { "bad" } else { "good" },
                        esc(k),
                        n
                    );
                }
                Value::Bool(b) => {
                    let _ = write!(
                        s,
                        "<tr class=\"{}\"><td class=\"l\">{}</td><td class=\"s\">{b}</td></tr>",
                        if *b { "good" } else { "bad" },
                        esc(k)
                    );
                }
                Value::Array(a) if !a.is_empty() => lists.push((k.clone(), a.clone())),
                Value::String(t) => {
                    let _ = write!(
                        s,
                        "<tr><td class=\"l\">{}</td><td>{}</td></tr>",
                        esc(k),
                        esc(t)
                    );
                }
                _ => {}
            }
        }
    }
    s.push_str("</table>");
    for (k, a) in lists {
        let _ = write!(
            s,
            "<p class=\"note\">{} (first {} of {}):</p>",
            esc(&k),
            a.len().min(20),
            a.len()
        );
        s.push_str(&array_table(&a[..a.len().min(20)]));
    }
    s
}

fn thresholds_table(run: &RunFolder) -> String {
    let Some(Value::Array(ts)) = run.get("thresholds") else {
        return "<p class=\"note\">no thresholds in this scenario</p>".into();
    };
    if ts.is_empty() {
        return "<p class=\"note\">no thresholds in this scenario</p>".into();
    }
    let mut s = String::from(
        "<table><tr><th class=\"l\">threshold</th><th>observed</th><th>result</th></tr>",
    );
    for t in ts {
        let expr = ["expr", "expression", "threshold", "name"]
            .iter()
            .find_map(|k| t.get(*k).and_then(Value::as_str))
            .unwrap_or("?");
        let observed = ["observed", "actual", "value"]
            .iter()
            .find_map(|k| t.get(*k))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => match n.as_f64() {
                    Some(x) => threshold_value(expr, x),
                    None => n.to_string(),
                },
                Value::Null => "not measured".into(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let passed = ["passed", "pass", "ok"]
            .iter()
            .find_map(|k| t.get(*k).and_then(Value::as_bool));
        let (cls, txt) = match passed {
            Some(true) => ("good", "held"),
            Some(false) => ("bad", "FAILED"),
            None => ("", "?"),
        };
        let _ = write!(
            s,
            "<tr class=\"{cls}\"><td class=\"l\">{}</td><td>{}</td><td class=\"s\">{txt}</td></tr>",
            esc(expr),
            esc(&observed)
        );
    }
    s.push_str("</table>");
    s
}

/// A threshold's measured value in the unit people read: latencies (recorded in µs) in ms,
/// rates as percentages or per second, counts as they are.
pub fn threshold_value(expr: &str, v: f64) -> String {
    let metric = expr.split_whitespace().next().unwrap_or("");
    let is_latency = metric.split_once('.').is_some_and(|(l, stat)| {
        ["connect", "hello", "ack", "delivery"].contains(&l) && stat != "rate"
    });
    if is_latency {
        format!("{:.2} ms", v / 1000.0)
    } else if metric == "errors.rate" {
        format!("{:.3}%", v * 100.0)
    } else if metric.ends_with(".rate") {
        format!("{} /s", fmt_num(v))
    } else {
        fmt_num(v)
    }
}

/// summary.json `node_errors`: the nodes' most frequent warnings and errors, shown only
/// when there are any (the cause of a slow or failed run is often there).
fn node_errors_table(run: &RunFolder) -> String {
    let Some(n) = run.get("node_errors") else {
        return String::new();
    };
    let count = |k: &str| n.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (warnings, errors) = (count("warnings"), count("errors"));
    if warnings + errors == 0 {
        return String::new();
    }
    let mut s = String::from("<h2>Node warnings and errors</h2>");
    let _ = write!(
        s,
        "<p class=\"note\">The nodes logged {warnings} warning(s) and {errors} error(s), {} distinct \
         message(s) (numbers, ids and durations shown as #); the most frequent, from logs/&lt;node&gt;.log:</p>",
        count("distinct")
    );
    s.push_str("<table><tr><th>count</th><th class=\"l\">level</th><th class=\"l\">message</th><th class=\"l\">nodes</th></tr>");
    let empty = Vec::new();
    for m in n.get("top").and_then(Value::as_array).unwrap_or(&empty) {
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
        let nodes: Vec<&str> = m
            .get("nodes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let cls = if text("level") == "ERROR" { "bad" } else { "" };
        let _ = write!(
            s,
            "<tr class=\"{cls}\"><td>{}</td><td class=\"l\">{}</td><td class=\"l\" title=\"{}\">{}</td><td class=\"l\">{}</td></tr>",
            m.get("count").and_then(Value::as_u64).unwrap_or(0),
            esc(text("level")),
            esc(text("example")),
            esc(text("message")),
            esc(&nodes.join(", "))
        );
    }
    s.push_str("</table>");
    s
}

fn totals_table(run: &RunFolder) -> String {
    for k in ["totals", "counts", "counters"] {
        if let Some(v) = run.get(k) {
            return kv_table(v);
        }
    }
    "<p class=\"note\">summary.json has no totals section</p>".into()
}

fn events_table(run: &RunFolder) -> String {
    if run.events.is_empty() {
        return "<p class=\"note\">no events</p>".into();
    }
    let mut s = String::from(
        "<table><tr><th>t (s)</th><th class=\"l\">event</th><th class=\"l\">what</th></tr>",
    );
    for e in run.events.iter().take(200) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            e.t.map(|t| format!("{t:.2}")).unwrap_or_default(),
            esc(&e.kind),
            esc(&e.label)
        );
    }
    s.push_str("</table>");
    s
}

/// A two-column table of an object's scalar fields (nested objects flattened with dots).
pub fn kv_table(v: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", v, &mut rows);
    let mut s = String::from("<table>");
    for (k, val) in rows {
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&k),
            esc(&val)
        );
    }
    s.push_str("</table>");
    s
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(a) => out.push((prefix.to_string(), format!("[{} items]", a.len()))),
        Value::Number(n) => out.push((
            prefix.to_string(),
            n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
        )),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
        Value::Null => {}
    }
}

fn array_table(items: &[Value]) -> String {
    let mut keys: Vec<String> = Vec::new();
    for it in items {
        if let Value::Object(m) = it {
            for k in m.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    let mut s = String::from("<table><tr>");
    for k in &keys {
        let _ = write!(s, "<th class=\"l\">{}</th>", esc(k));
    }
    s.push_str("</tr>");
    for it in items {
        s.push_str("<tr>");
        if keys.is_empty() {
            let _ = write!(s, "<td class=\"l\">{}</td>", esc(&it.to_string()));
        }
        for k in &keys {
            let v = it.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let _ = write!(s, "<td class=\"l\">{}</td>", esc(&v.unwrap_or_default()));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_columns_are_recognised() {
        assert_eq!(
            latency_column("delivery_p99_ms"),
            Some(("delivery".into(), "p99", 1.0))
        );
        assert_eq!(
            latency_column("ack_p999_us"),
            Some(("ack".into(), "p99.9", 0.001))
        );
        assert_eq!(latency_column("p50"), Some(("latency".into(), "p50", 1.0)));
        assert_eq!(latency_column("users"), None);
    }

    /// A run with refusals for a rate limit shows them per second in the errors chart,
    /// from timeline.csv as the real aggregator writes it; a run without has no such
    /// series.
    #[test]
    fn rate_limited_answers_are_their_own_series_in_the_errors_chart() {
        use flowline_loadgen::aggregate::{Aggregator, RunMeta};
        use flowline_loadgen::wire::{Counters, Tick, WorkerLine};
        let scenario = Scenario::parse(
            "t",
            "[run]\nname = \"refusals\"\nduration = \"4s\"\nseed = 1\n[population]\nusers = 3\n",
        )
        .unwrap();
        let errors_chart = |refused: [u64; 4]| {
            let mut agg = Aggregator::new(&scenario, 1);
            for (t, n) in (1..).zip(refused) {
                let tick = Tick {
                    worker: 0,
                    t,
                    elapsed_ms: t * 1000,
                    measuring: true,
                    drain: false,
                    users: 3,
                    counters: Counters {
                        rate_limited: n,
                        errors: 1,
                        ..Counters::default()
                    },
                    hist: Default::default(),
                };
                let line = serde_json::to_string(&WorkerLine::Tick(tick)).unwrap();
                agg.ingest(0, &line).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            agg.finish(dir.path(), RunMeta::default()).unwrap();
            let run = RunFolder::load(dir.path()).unwrap();
            timeline_charts(&run)
                .into_iter()
                .find(|c| c.title == "Errors")
                .expect("an errors chart")
        };
        let chart = errors_chart([0, 7, 12, 3]);
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"errors"), "{names:?}");
        let rl = chart
            .series
            .iter()
            .find(|s| s.name == "rate_limited")
            .unwrap_or_else(|| panic!("no rate_limited series: {names:?}"));
        let per_s: Vec<f64> = rl.points.iter().map(|&(_, y)| y).collect();
        assert_eq!(per_s, [0.0, 7.0, 12.0, 3.0]);
        assert!(chart.render().contains(">rate_limited</text>"));

        let calm = errors_chart([0; 4]);
        assert!(
            calm.series.iter().all(|s| s.name != "rate_limited"),
            "a run without refusals draws no rate_limited line"
        );
        assert!(calm.series.iter().any(|s| s.name == "errors"));
    }

    /// The report's per-second percentiles are those of the merged ticks: three shards'
    /// tick lines go through the real aggregator into a run folder, and each second's
    /// p50/p90/p99/max equal those of one histogram of that second's samples.
    #[test]
    fn per_second_percentiles_come_from_merged_ticks() {
        use flowline_loadgen::aggregate::{Aggregator, RunMeta};
        use flowline_loadgen::histogram::{self, Metric};
        use flowline_loadgen::wire::{Counters, Tick, WorkerLine};
        let scenario = Scenario::parse(
            "t",
            "[run]\nname = \"merge\"\nduration = \"3s\"\nseed = 1\n[population]\nusers = 3\n",
        )
        .unwrap();
        const SHARDS: usize = 3;
        let mut agg = Aggregator::new(&scenario, SHARDS);
        let mut singles = Vec::new();
        let mut x = 7u64;
        for t in 1..=4u64 {
            let mut one = histogram::new_histogram();
            for w in 0..SHARDS {
                // Shard 2 never reports second 4.
                if w == 2 && t == 4 {
                    continue;
                }
                let mut h = histogram::new_histogram();
                // Each shard its own spread, so averaging percentiles would differ.
                for _ in 0..200 * (w + 1) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let us = (x >> 40) % (1000 * 10u64.pow(w as u32)) + 1;
                    histogram::record(&mut h, us);
                    histogram::record(&mut one, us);
                }
                let tick = Tick {
                    worker: w,
                    t,
                    elapsed_ms: t * 1000,
                    measuring: true,
                    drain: false,
                    users: 1,
                    counters: Counters::default(),
                    hist: [(
                        Metric::Delivery.name().to_string(),
                        histogram::encode(&h).unwrap(),
                    )]
                    .into(),
                };
                let line = serde_json::to_string(&WorkerLine::Tick(tick)).unwrap();
                agg.ingest(w, &line).unwrap();
            }
            singles.push(one);
        }
        let dir = tempfile::tempdir().unwrap();
        agg.finish(dir.path(), RunMeta::default()).unwrap();
        let run = RunFolder::load(dir.path()).unwrap();
        let stats = &run.intervals["delivery"];
        assert_eq!(stats.len(), singles.len());
        for (s, one) in stats.iter().zip(&singles) {
            assert_eq!(
                (s.count, s.p50, s.p90, s.p99, s.max),
                (
                    one.len(),
                    one.value_at_quantile(0.5),
                    one.value_at_quantile(0.9),
                    one.value_at_quantile(0.99),
                    one.max()
                ),
                "second {}",
                s.t
            );
        }
        let html = render(&run);
        assert!(
            html.contains(
                "<b>Ticks missing (samples absent from those seconds):</b> shard 2: second 4"
            ),
            "the report names the missing shard and second"
        );
    }

    #[test]
    fn threshold_values_are_shown_in_reading_units() {
        assert_eq!(
            threshold_value("delivery.p99 < 250ms", 110_000.0),
            "110.00 ms"
        );
        assert_eq!(threshold_value("errors.rate < 0.1%", 0.0005), "0.050%");
        assert_eq!(threshold_value("lost == 0", 10.0), "10");
    }
}
