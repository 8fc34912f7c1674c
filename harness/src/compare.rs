//! `flowline compare RUN RUN...`: a side-by-side table of finished runs, printed and
//! written as compare.html with each latency metric's percentile curves overlaid.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::runfolder::RunFolder;
use crate::svg::{Chart, PALETTE, Series, XAxis, esc, fmt_num};

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
    s
}

/// compare.html: the table and the overlaid percentile curves.
pub fn render_html(runs: &[RunFolder], rows: &[(String, Vec<String>)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flowline comparison</title><style>{}</style></head><body><main><h1>Flowline comparison of {} runs</h1><table><tr><th class=\"l\"></th>",
        crate::report::CSS,
        runs.len()
    );
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
    h.push_str("</table><h2>Percentile distributions</h2>");
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
