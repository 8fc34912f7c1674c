//! Small inline-SVG charts for the reports: time series with shaded windows, and
//! percentile-distribution curves. No JavaScript, no network: plain SVG text.

use std::fmt::Write as _;

/// A palette that stays readable on white and for the common colour-vision deficiencies.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: String,
    /// (x, y) points in data units, sorted by x.
    pub points: Vec<(f64, f64)>,
    /// Dashed stroke (secondary series).
    pub dashed: bool,
}

impl Series {
    /// A solid series.
    pub fn new(name: impl Into<String>, color: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            color: color.to_string(),
            points,
            dashed: false,
        }
    }
}

/// A shaded x-range (a fault window) with a label.
#[derive(Debug, Clone)]
pub struct Shade {
    /// Start, in x units.
    pub x0: f64,
    /// End, in x units.
    pub x1: f64,
    /// Label written at the top of the window.
    pub label: String,
}

/// A vertical marker (a node started or killed).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Position, in x units.
    pub x: f64,
    /// Short label.
    pub label: String,
}

/// How the x axis of a chart is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Seconds of the run.
    Seconds,
    /// Percentiles on the `1/(1-q)` scale (HdrHistogram's percentile plot).
    Percentile,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Unit of the y axis, shown beside the title.
    pub y_unit: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Shaded windows.
    pub shades: Vec<Shade>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
    /// The x axis kind.
    pub x_axis: XAxis,
    /// Width in px.
    pub width: f64,
    /// Height in px.
    pub height: f64,
    /// Fixed x range (time charts of one run share it); `None`: fit the data.
    pub x_range: Option<(f64, f64)>,
}

impl Chart {
    /// An empty time chart.
    pub fn new(title: impl Into<String>, y_unit: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            y_unit: y_unit.into(),
            series: Vec::new(),
            shades: Vec::new(),
            markers: Vec::new(),
            x_axis: XAxis::Seconds,
            width: 1160.0,
            height: 250.0,
            x_range: None,
        }
    }

    /// Render to an `<svg>` element.
    pub fn render(&self) -> String {
        let (w, h) = (self.width, self.height);
        let (ml, mr, mt, mb) = (64.0, 16.0, 40.0, 34.0);
        let (pw, ph) = (w - ml - mr, h - mt - mb);
        let xmap = |x: f64| match self.x_axis {
            XAxis::Seconds => x,
            XAxis::Percentile => pct_x(x),
        };
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(xmap(x));
            x1 = x1.max(xmap(x));
            y1 = y1.max(y);
        }
        for s in &self.shades {
            x0 = x0.min(s.x0);
            x1 = x1.max(s.x1);
        }
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart" font-family="system-ui,sans-serif" font-size="12">"#
        );
        let _ = write!(
            out,
            r##"<text x="{ml}" y="18" font-size="15" font-weight="600" fill="#222">{}</text><text x="{ml}" y="32" fill="#777">{}</text>"##,
            esc(&self.title),
            esc(&self.y_unit)
        );
        if !x0.is_finite() {
            let _ = write!(
                out,
                r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/><text x="{}" y="{}" text-anchor="middle" fill="#999">no data</text></svg>"##,
                ml + pw / 2.0,
                mt + ph / 2.0
            );
            return out;
        }
        if let Some((a, b)) = self.x_range
            && x0.is_finite()
        {
            x0 = a;
            x1 = b;
        }
        if self.x_axis == XAxis::Percentile {
            x0 = 0.0;
            x1 = x1.max(pct_x(0.999));
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let (ystep, ymax) = nice_axis(y1);
        let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| mt + ph - (y / ymax).clamp(0.0, 1.02) * ph;
        let _ = write!(
            out,
            r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>"##
        );
        // Shaded windows first, so lines draw over them.
        for (i, s) in self.shades.iter().enumerate() {
            let a = sx(s.x0.max(x0));
            let b = sx(s.x1.min(x1)).max(a + 2.0);
            // A label that would run off the plot ends at the window's right edge instead.
            let width = 6.2 * s.label.chars().count() as f64;
            let (tx, anchor) = if a + 3.0 + width > ml + pw {
                (b - 3.0, "end")
            } else {
                (a + 3.0, "start")
            };
            let _ = write!(
                out,
                r##"<rect x="{a:.1}" y="{mt}" width="{:.1}" height="{ph}" fill="#d62728" fill-opacity="0.10" stroke="#d62728" stroke-opacity="0.35" stroke-dasharray="3 3"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#b22" font-size="11">{}</text>"##,
                b - a,
                mt + 12.0 + 12.0 * (i % 3) as f64,
                esc(&s.label)
            );
        }
        // Grid and y ticks.
        let mut y = 0.0;
        while y <= ymax + ystep / 2.0 {
            let py = sy(y);
            let _ = write!(
                out,
                r##"<line x1="{ml}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                ml + pw,
                ml - 6.0,
                py + 4.0,
                fmt_num(y)
            );
            y += ystep;
        }
        // X ticks.
        match self.x_axis {
            XAxis::Seconds => {
                let (xstep, _) = nice_axis(x1 - x0);
                let mut x = (x0 / xstep).ceil() * xstep;
                while x <= x1 + 1e-9 {
                    let px = sx(x);
                    let _ = write!(
                        out,
                        r##"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{}" stroke="#999"/><text x="{px:.1}" y="{}" text-anchor="middle" fill="#555">{}s</text>"##,
                        mt + ph,
                        mt + ph + 4.0,
                        mt + ph + 17.0,
                        fmt_num(x)
                    );
                    x += xstep;
                }
            }
            XAxis::Percentile => {
                for (q, label) in [
                    (0.0, "0%"),
                    (0.9, "90%"),
                    (0.99, "99%"),
                    (0.999, "99.9%"),
                    (0.9999, "99.99%"),
                    (0.99999, "99.999%"),
                ] {
                    let xv = pct_x(q);
                    if xv > x1 + 1e-9 {
                        break;
                    }
                    let px = sx(xv);
                    let _ = write!(
                        out,
                        r##"<line x1="{px:.1}" x2="{px:.1}" y1="{mt}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle" fill="#555">{label}</text>"##,
                        mt + ph,
                        mt + ph + 17.0
                    );
                }
            }
        }
        for m in self.markers.iter().filter(|m| m.x >= x0 && m.x <= x1) {
            let px = sx(m.x);
            // Labels near the right edge go to the left of their line.
            let (tx, anchor) = if px > ml + pw * 0.85 {
                (px - 3.0, "end")
            } else {
                (px + 3.0, "start")
            };
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{mt}" y2="{}" stroke="#444" stroke-dasharray="5 3"/><text x="{tx:.1}" y="{}" text-anchor="{anchor}" fill="#333" font-size="11">{}</text>"##,
                mt + ph,
                mt + ph - 5.0,
                esc(&m.label)
            );
        }
        for s in &self.series {
            let mut d = String::new();
            let mut dots = String::new();
            let mut prev: Option<f64> = None;
            let mut run_len = 0;
            let mut last = (0.0, 0.0);
            let dot = |dots: &mut String, (cx, cy): (f64, f64)| {
                let _ = write!(
                    dots,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.5" fill="{}"/>"#,
                    s.color
                );
            };
            for &(x, y) in s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
            {
                // Seconds without samples are a gap, not a straight line across it.
                let gap = self.x_axis == XAxis::Seconds && prev.is_some_and(|p| x - p > 1.5);
                if gap && run_len == 1 {
                    dot(&mut dots, last);
                }
                let cmd = if prev.is_none() || gap { 'M' } else { 'L' };
                run_len = if cmd == 'M' { 1 } else { run_len + 1 };
                last = (sx(xmap(x)), sy(y));
                let _ = write!(d, "{cmd}{:.1},{:.1}", last.0, last.1);
                prev = Some(x);
            }
            if run_len == 1 {
                dot(&mut dots, last);
            }
            out.push_str(&dots);
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round"{dash}/>"#,
                s.color
            );
        }
        // Legend, right-aligned on the title line.
        let mut lx = ml + pw;
        for s in self.series.iter().rev() {
            let tw = 7.0 * s.name.chars().count() as f64 + 26.0;
            lx -= tw;
            let _ = write!(
                out,
                r##"<line x1="{lx:.1}" x2="{:.1}" y1="22" y2="22" stroke="{}" stroke-width="3"/><text x="{:.1}" y="26" fill="#333">{}</text>"##,
                lx + 16.0,
                s.color,
                lx + 20.0,
                esc(&s.name)
            );
        }
        out.push_str("</svg>");
        out
    }
}

/// Position of percentile `q` (0..1) on the `log10(1/(1-q))` axis.
pub fn pct_x(q: f64) -> f64 {
    let q = q.clamp(0.0, 0.999_999);
    (1.0 / (1.0 - q)).log10()
}

/// A "nice" tick step and axis maximum covering `max` (at least 1 unit).
pub fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

/// A number for an axis label: 1.5k, 250, 0.25.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Escape text for HTML/SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(9.0), (2.0, 10.0));
        assert_eq!(nice_axis(230.0), (50.0, 250.0));
        assert_eq!(nice_axis(0.0), (0.2, 1.0));
        assert_eq!(fmt_num(25_000.0), "25k");
        assert_eq!(fmt_num(0.25), "0.25");
    }

    #[test]
    fn chart_has_series_shades_and_escaped_labels() {
        let mut c = Chart::new("p99 <delivery>", "ms");
        c.series
            .push(Series::new("p99", PALETTE[0], vec![(0.0, 1.0), (1.0, 3.0)]));
        c.shades.push(Shade {
            x0: 0.5,
            x1: 0.8,
            label: "latency client-node*".into(),
        });
        let svg = c.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("p99 &lt;delivery&gt;"));
        assert!(svg.contains("latency client-node*"));
        assert!(svg.contains("<path d=\"M"));
        assert!(Chart::new("empty", "").render().contains("no data"));
        // A gap of several seconds breaks the line; a lone second is a dot.
        let mut c = Chart::new("gaps", "ms");
        c.series.push(Series::new(
            "p99",
            PALETTE[0],
            vec![(1.0, 1.0), (2.0, 2.0), (10.0, 3.0)],
        ));
        let svg = c.render();
        let path = svg.split("<path d=\"").nth(1).unwrap();
        assert_eq!(path.split('"').next().unwrap().matches('M').count(), 2);
        assert_eq!(svg.matches("<circle").count(), 1);
    }
}
