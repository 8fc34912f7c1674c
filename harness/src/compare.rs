//! `flowline compare RUN RUN...`: a side-by-side table of finished runs, printed and
//! written as compare.html with their per-second curves (fault windows shaded) and each
//! latency metric's percentile curves overlaid; both warn when the runs' load was not
//! identical (seed, scenario hash or users differ).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::runfolder::RunFolder;
use crate::svg::{Chart, PALETTE, Series, Shade, XAxis, esc, fmt_num};

/// The rows of the comparison: (label, one cell per run).
pub fn rows(runs: &[RunFolder]) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let cell = |f: &dyn Fn(&RunFolder) -> Option<String>| -> Vec<String> {
        runs.iter()
            .map(|r| f(r).unwrap_or_else(|| "-".into()))
            .collect()
    };
    rows.push((
        "scenario".into(),
        cell(&|r| r.text(&["meta.scenario", "scenario.name", "scenario", "name"])),
    ));
    rows.push(("phase".into(), cell(&|r| r.text(&["meta.phase", "phase"]))));
    rows.push(("seed".into(), cell(&|r| r.text(&["meta.seed", "seed"]))));
    rows.push(("users".into(), cell(&users)));
    rows.push(("scenario hash".into(), cell(&scenario_hash)));
    rows.push((
        "verdict".into(),
        cell(&|r| {
            r.passed()
                .map(|p| if p { "PASS" } else { "FAIL" }.to_string())
        }),
    ));
    rows.push((
        "sent".into(),
        cell(&|r| r.num(&["totals.sent", "counts.sent", "sent"]).map(fmt_num)),
    ));
    rows.push((
        "delivered".into(),
        cell(&|r| {
            r.num(&["totals.delivered", "counts.delivered", "delivered"])
                .map(fmt_num)
        }),
    ));
    rows.push(("deliveries/s".into(), cell(&|r| throughput(r).map(fmt_num))));
    let mut tags: Vec<String> = Vec::new();
    for r in runs {
        for t in r.histograms.keys() {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
    }
    for tag in &tags {
        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            rows.push((
                format!("{tag} {name} (ms)"),
                cell(&|r| {
                    r.histograms
                        .get(tag)
                        .filter(|h| !h.is_empty())
                        .map(|h| format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0))
                }),
            ));
        }
    }
    rows.push((
        "lost".into(),
        cell(&|r| r.num(&["correctness.lost", "lost"]).map(fmt_num)),
    ));
    rows.push((
        "duplicated".into(),
        cell(&|r| {
            r.num(&[
                "correctness.duplicated",
                "correctness.duplicates",
                "duplicated",
            ])
            .map(fmt_num)
        }),
    ));
    rows.push((
        "reordered".into(),
        cell(&|r| r.num(&["correctness.reordered", "reordered"]).map(fmt_num)),
    ));
    rows.push((
        "errors".into(),
        cell(&|r| {
            r.num(&["totals.errors", "counts.errors", "errors.total", "errors"])
                .map(fmt_num)
        }),
    ));
    rows.push((
        "loadgen CPU µs/delivery".into(),
        cell(&|r| {
            r.num(&["loadgen.cpu_us_per_delivery"])
                .map(|v| format!("{v:.2}"))
        }),
    ));
    rows.push((
        "loadgen KiB/user".into(),
        cell(&|r| {
            r.num(&["loadgen.rss_kib_per_user"])
                .map(|v| format!("{v:.1}"))
        }),
    ));
    rows.push(("thresholds held".into(), cell(&thresholds_held)));
    rows
}

/// Deliveries per second over the measured time (`deliveries_per_s` of summary.json, or
/// measured deliveries over measured seconds).
pub fn throughput(r: &RunFolder) -> Option<f64> {
    if let Some(v) = r.num(&["deliveries_per_s"]) {
        return Some(v);
    }
    let delivered = r.num(&["measured.delivered", "totals.delivered"])?;
    let secs = r.num(&["measured_s"])?;
    (secs > 0.0).then(|| delivered / secs)
}

fn thresholds_held(r: &RunFolder) -> Option<String> {
    let Value::Array(ts) = r.get("thresholds")? else {
        return None;
    };
    let held = ts
        .iter()
        .filter(|t| t.get("passed").and_then(Value::as_bool) == Some(true))
        .count();
    Some(format!("{held}/{}", ts.len()))
}

/// The warning shown when the compared runs did not carry the same load.
pub const NOT_IDENTICAL: &str = "the load was not identical";

/// The run's scenario.toml parsed (the scenario as run, seed filled in).
fn scenario_table(r: &RunFolder) -> Option<toml::Table> {
    r.scenario_toml.as_deref()?.parse::<toml::Table>().ok()
}

/// Simulated users, from the scenario as run.
fn users(r: &RunFolder) -> Option<String> {
    let t = scenario_table(r)?;
    let u = t.get("population")?.get("users")?;
    Some(
        u.as_integer()
            .map_or_else(|| u.to_string(), |n| n.to_string()),
    )
}

/// A short hash (FNV-1a, 64 bits) of the load the scenario describes: scenario.toml as run
/// without what a comparison of architectures varies on purpose (`[cluster]`: phase, nodes)
/// and without the seed (a row of its own). Comments and key order do not count.
pub fn scenario_hash(r: &RunFolder) -> Option<String> {
    let mut t = scenario_table(r)?;
    t.remove("cluster");
    if let Some(toml::Value::Table(run)) = t.get_mut("run") {
        run.remove("seed");
    }
    let canonical = canonical(&toml::Value::Table(t));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Some(format!("{h:016x}"))
}

/// TOML value as text with table keys sorted, so that equal content gives equal text.
fn canonical(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{k:?}={}", canonical(&t[k.as_str()])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        toml::Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// What differs in the load of the runs (seed, scenario hash, users), one line per
/// difference; empty when the load was identical. Runs whose value is unknown are left out.
pub fn load_differences(rows: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (label, what) in [
        ("seed", "seeds differ"),
        (
            "scenario hash",
            "scenario files differ (hash without [cluster] and seed)",
        ),
        ("users", "user counts differ"),
    ] {
        let Some((_, cells)) = rows.iter().find(|(l, _)| l == label) else {
            continue;
        };
        let known: Vec<(usize, &String)> = cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_str() != "-")
            .collect();
        if known.iter().any(|(_, c)| *c != known[0].1) {
            let each: Vec<String> = known
                .iter()
                .map(|(i, c)| format!("run {}: {c}", i + 1))
                .collect();
            out.push(format!("{what} ({})", each.join(", ")));
        }
    }
    out
}

/// The table as aligned text.
pub fn text_table(runs: &[RunFolder], rows: &[(String, Vec<String>)]) -> String {
    let names: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, _)| format!("run {}", i + 1))
        .collect();
    let w0 = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|(_, c)| c[i].chars().count())
                .chain([names[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(s, "run {}: {}", i + 1, r.dir.display());
    }
    let _ = write!(s, "{:w0$}", "");
    for (i, n) in names.iter().enumerate() {
        let _ = write!(s, "  {:>w$}", n, w = widths[i]);
    }
    s.push('\n');
    for (label, cells) in rows {
        let _ = write!(s, "{label:w0$}");
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, "  {:>w$}", c, w = widths[i]);
        }
        s.push('\n');
    }
    let diffs = load_differences(rows);
    if !diffs.is_empty() {
        let _ = writeln!(s, "warning: {NOT_IDENTICAL}:");
        for d in diffs {
            let _ = writeln!(s, "  {d}");
        }
    }
    s
}

/// compare.html: the table and the overlaid percentile curves.
pub fn render_html(runs: &[RunFolder], rows: &[(String, Vec<String>)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flowline comparison</title><style>{}</style></head><body><main><h1>Flowline comparison of {} runs</h1>",
        crate::report::CSS,
        runs.len()
    );
    let diffs = load_differences(rows);
    if !diffs.is_empty() {
        let _ = write!(
            h,
            "<p class=\"load-warning\" style=\"background:#fff3e0;border-left:4px solid #ef6c00;padding:8px 12px\"><b>Warning: {NOT_IDENTICAL}.</b> The differences below are partly due to different traffic, not only to the architecture:<br>{}</p><table><tr><th class=\"l\"></th>",
            diffs
                .iter()
                .map(|d| esc(d))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    } else {
        h.push_str("<table><tr><th class=\"l\"></th>");
    }
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            h,
            "<th><span style=\"color:{}\">&#9632;</span> run {}<br><span class=\"note\">{}</span></th>",
            PALETTE[i % PALETTE.len()],
            i + 1,
            esc(&r.name())
        );
    }
    h.push_str("</tr>");
    for (label, cells) in rows {
        let _ = write!(h, "<tr><td class=\"l\">{}</td>", esc(label));
        for c in cells {
            let cls = match c.as_str() {
                "PASS" => " style=\"color:#2e7d32;font-weight:700\"",
                "FAIL" => " style=\"color:#c62828;font-weight:700\"",
                _ => "",
            };
            let _ = write!(h, "<td{cls}>{}</td>", esc(c));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h.push_str(&over_time(runs));
    h.push_str("<h2>Percentile distributions</h2>");
    let mut tags: Vec<String> = Vec::new();
    for r in runs {
        for t in r.histograms.keys() {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
    }
    for tag in &tags {
        let mut c = Chart::new(format!("{tag}: percentile distribution"), "ms");
        c.x_axis = XAxis::Percentile;
        c.height = 300.0;
        for (i, r) in runs.iter().enumerate() {
            let pts = r.percentile_curve(tag);
            if !pts.is_empty() {
                c.series.push(Series::new(
                    format!("run {}", i + 1),
                    PALETTE[i % PALETTE.len()],
                    pts,
                ));
            }
        }
        let _ = write!(h, "<div class=\"panel\">{}</div>", c.render());
    }
    if tags.is_empty() {
        h.push_str("<p class=\"note\">no histograms.hlog in these runs</p>");
    }
    h.push_str("</main></body></html>");
    h
}

/// The per-second curves of every run overlaid (one colour per run, as in the table), with
/// each run's fault windows shaded and listed.
fn over_time(runs: &[RunFolder]) -> String {
    let mut h = String::from("<h2>Over time</h2>");
    let mut shades = Vec::new();
    let mut listed = String::new();
    for (i, r) in runs.iter().enumerate() {
        for w in r.fault_windows() {
            shades.push(Shade {
                x0: w.start,
                x1: w.end,
                label: format!("run {}: {}", i + 1, w.label),
            });
            let _ = write!(
                listed,
                "<tr><td class=\"l\"><span style=\"color:{}\">&#9632;</span> run {}</td><td>{}</td><td>{:.1} s</td><td>{:.1} s</td></tr>",
                PALETTE[i % PALETTE.len()],
                i + 1,
                esc(&w.label),
                w.start,
                w.end
            );
        }
    }
    if listed.is_empty() {
        h.push_str("<p class=\"note\">No fault windows in these runs.</p>");
    } else {
        let _ = write!(
            h,
            "<p class=\"note\">Shaded: each run's fault windows (from its events.jsonl).</p><table class=\"fault-windows\"><tr><th class=\"l\">run</th><th class=\"l\">fault</th><th>from</th><th>to</th></tr>{listed}</table>"
        );
    }
    let x_end = runs.iter().map(RunFolder::end_time).fold(1.0, f64::max);
    // (title, unit, timeline.csv column, factor to the unit)
    let curves: [(&str, &str, &str, f64); 5] = [
        ("Delivery rate", "deliveries per second", "delivered", 1.0),
        ("Delivery p99, per second", "ms", "delivery_p99_us", 0.001),
        ("Send→ack p99, per second", "ms", "ack_p99_us", 0.001),
        ("Connected users", "users", "users", 1.0),
        ("Errors", "per second", "errors", 1.0),
    ];
    for (title, unit, column, factor) in curves {
        let mut c = Chart::new(title, unit);
        c.x_range = Some((0.0, x_end));
        c.shades = shades.clone();
        for (i, r) in runs.iter().enumerate() {
            if let Some(col) = r.timeline.col(&[column]) {
                let pts = r
                    .timeline
                    .points(col)
                    .into_iter()
                    .map(|(x, y)| (x, y * factor))
                    .collect();
                c.series.push(Series::new(
                    format!("run {}", i + 1),
                    PALETTE[i % PALETTE.len()],
                    pts,
                ));
            }
        }
        if !c.series.is_empty() {
            let _ = write!(h, "<div class=\"panel\">{}</div>", c.render());
        }
    }
    h
}

/// Load the runs, print the table, write compare.html (to `out`, default next to the first
/// run); returns the HTML path.
pub fn compare(dirs: &[PathBuf], out: Option<&Path>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(!dirs.is_empty(), "give at least one run folder");
    let runs = dirs
        .iter()
        .map(|d| RunFolder::load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows = rows(&runs);
    print!("{}", text_table(&runs, &rows));
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => dirs[0]
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("compare.html"),
    };
    std::fs::write(&path, render_html(&runs, &rows))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
