//! report.html's Workers section: what the coordinator measured of each worker
//! (summary.json `coordinator`): clock offset, round trip, start skew, lost workers, and
//! how delivery latency between workers was corrected for their clocks.

use std::fmt::Write as _;

use flowline_loadgen::coordinator::CoordinatorReport;

use crate::runfolder::RunFolder;
use crate::svg::esc;

/// The section, or nothing for a run without a coordinator (the standalone loadgen).
pub fn section(run: &RunFolder) -> String {
    let Some(c) = run
        .get("coordinator")
        .and_then(|v| serde_json::from_value::<CoordinatorReport>(v.clone()).ok())
    else {
        return String::new();
    };
    let mut s = String::from("<h2>Workers</h2>");
    let _ = write!(
        s,
        "<p class=\"note\">Coordinator protocol {}; {}.</p>",
        c.version,
        esc(&c.clocks)
    );
    s.push_str(
        "<table><tr><th>shard</th><th class=\"l\">host</th><th>clock offset (ms)</th>\
         <th>ping round trip (ms)</th><th>start skew (ms)</th><th class=\"l\">lost</th></tr>",
    );
    for w in &c.workers {
        let lost = w
            .lost_at_s
            .map(|t| format!("{t:.1} s after the start, before its done line"));
        let _ = write!(
            s,
            "<tr{}><td>{}</td><td class=\"l\">{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if lost.is_some() { " class=\"bad\"" } else { "" },
            w.shard,
            esc(w.host.as_deref().unwrap_or(&w.peer)),
            w.clock_offset_ms,
            w.rtt_ms,
            w.start_skew_ms
                .map_or("not reported".into(), |v| format!("{v:.2}")),
            esc(lost.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</table>");
    s
}
