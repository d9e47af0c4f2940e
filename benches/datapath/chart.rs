//! `datapath.svg`: the table as grouped bar charts, for people who would rather look than read.
//!
//! One panel per figure (bulk Gb/s; requests/s and latency for rr and crr; bytes per idle
//! connection), a group of bars per connection count (per proxy side for memory), a bar per
//! setup in one colour throughout. Throughput panels are linear and
//! label each bar with its ratio to direct; latency panels are logarithmic: the bar is p50, the
//! whisker reaches p99 and the dot marks p999. Hand-written SVG: no plotting dependency, and
//! any browser shows it.

use std::fmt::Write as _;

use crate::options::Workload;
use crate::report::{Report, Row};

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const COLOURS: [&str; 10] = [
    "#7f7f7f", "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
    "#9467bd", "#8c564b",
];

/// What a panel shows.
#[derive(Clone, Copy)]
enum Figure {
    Gbps,
    Rps,
    Latency,
}

pub fn svg(report: &Report) -> String {
    let setups = setups(report);
    let mut panels = Vec::new();
    for w in Workload::ALL {
        if !report.rows.iter().any(|r| r.workload == w.name()) {
            continue;
        }
        match w {
            Workload::Bulk => panels.push((w, Figure::Gbps)),
            _ => {
                panels.push((w, Figure::Rps));
                panels.push((w, Figure::Latency));
            }
        }
    }
    let legend_rows = setups.len().div_ceil(4);
    let legend_height = 20.0 * legend_rows as f64 + 40.0;
    let memory_panels = usize::from(!report.memory.is_empty());
    let height = legend_height + PANEL_HEIGHT * (panels.len() + memory_panels) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">zring data path: {} s per measurement, {} runtime(s) per zring, {} CPUs (ratios to direct, same run)</text>"#,
        report.settings.secs_per_measurement, report.settings.zring_cores, report.host.cpus
    );
    for (i, name) in setups.iter().enumerate() {
        let (x, y) = (LEFT + 220.0 * (i % 4) as f64, 40.0 + 20.0 * (i / 4) as f64);
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{y}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            COLOURS[i % COLOURS.len()],
            x + 20.0,
            y + 12.0,
            escape(name)
        );
    }
    let throughput_panels = panels.len();
    for (i, (w, figure)) in panels.into_iter().enumerate() {
        let y0 = legend_height + PANEL_HEIGHT * i as f64;
        panel(&mut s, report, &setups, w, figure, y0);
    }
    if memory_panels > 0 {
        let y0 = legend_height + PANEL_HEIGHT * throughput_panels as f64;
        memory_panel(&mut s, report, &setups, y0);
    }
    s.push_str("</svg>\n");
    s
}

/// Resident memory per idle HBONE connection, a group per side (outbound, inbound), a bar per
/// setup, labelled with the bytes.
fn memory_panel(s: &mut String, report: &Report, setups: &[String], y0: f64) {
    let (top, bottom) = (y0 + TOP, y0 + PANEL_HEIGHT - BOTTOM);
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let n = report.memory.first().map_or(0, |m| m.connections);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(&format!(
            "{n} idle HBONE connections: resident bytes per connection, by proxy side (lower is better)"
        ))
    );
    let max = report
        .memory
        .iter()
        .flat_map(|m| m.sides.iter().map(|s| s.bytes_per_conn))
        .fold(0.0f64, f64::max);
    let scale = Scale::linear(max);
    let y = |v: f64| bottom - (bottom - top) * scale.fraction(v);
    axis(s, &scale, top, bottom);
    let roles = [
        ("outbound", "outbound (client's node)"),
        ("inbound", "inbound (server's node)"),
    ];
    let group_width = (right - left) / roles.len() as f64;
    let bar = (group_width * 0.8 / setups.len().max(1) as f64).min(60.0);
    for (g, (role, caption)) in roles.iter().enumerate() {
        let gx = left + group_width * g as f64;
        let start = gx + (group_width - bar * setups.len() as f64) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{caption}</text>"#,
            gx + group_width / 2.0,
            bottom + 18.0
        );
        for m in &report.memory {
            let Some(i) = setups.iter().position(|n| *n == m.setup) else {
                continue;
            };
            let Some(side) = m.sides.iter().find(|s| s.role == *role) else {
                continue;
            };
            let (x, v) = (start + bar * i as f64, side.bytes_per_conn.max(0.0));
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {v:.0} bytes</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                y(v),
                bar - 2.0,
                bottom - y(v),
                COLOURS[i % COLOURS.len()],
                escape(&m.setup),
                x + bar / 2.0 - 1.0,
                y(v) - 3.0,
                short(v)
            );
        }
    }
}

/// Grid lines with their tick labels, and the baseline, between `top` and `bottom`.
fn axis(s: &mut String, scale: &Scale, top: f64, bottom: f64) {
    let (left, right) = (LEFT, WIDTH - RIGHT);
    for (tick, label) in scale.ticks() {
        let ty = bottom - (bottom - top) * scale.fraction(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{right}" y1="{ty:.1}" y2="{ty:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left - 6.0,
            ty + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="black"/>"#
    );
}

/// Setup labels in order of first appearance (direct first), which fixes their colours.
fn setups(report: &Report) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let labels = report.rows.iter().map(|r| &r.setup);
    for label in labels.chain(report.memory.iter().map(|m| &m.setup)) {
        if !v.contains(label) {
            v.push(label.clone());
        }
    }
    v
}

fn panel(s: &mut String, report: &Report, setups: &[String], w: Workload, figure: Figure, y0: f64) {
    let (top, bottom) = (y0 + TOP, y0 + PANEL_HEIGHT - BOTTOM);
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let title = match figure {
        Figure::Gbps => format!("{}: Gb/s (higher is better)", w.title()),
        Figure::Rps => format!("{}: requests/s (higher is better)", w.title()),
        Figure::Latency => format!(
            "{}: latency µs, log scale (bar p50, whisker p99, dot p999; lower is better)",
            w.title()
        ),
    };
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(&title)
    );
    let conns = &report.settings.conns;
    let value = |r: &Row| match figure {
        Figure::Gbps => r.gbps,
        Figure::Rps => r.rps,
        Figure::Latency => r.latency_us.map(|l| l.p999.max(l.p99).max(l.p50)),
    };
    let max = report
        .rows
        .iter()
        .filter(|r| r.workload == w.name())
        .filter_map(value)
        .fold(0.0f64, f64::max);
    let min_latency = report
        .rows
        .iter()
        .filter(|r| r.workload == w.name())
        .filter_map(|r| r.latency_us.map(|l| l.p50))
        .fold(f64::INFINITY, f64::min);
    let scale = match figure {
        Figure::Latency => Scale::log(min_latency, max),
        _ => Scale::linear(max),
    };
    let y = |v: f64| bottom - (bottom - top) * scale.fraction(v);
    axis(s, &scale, top, bottom);
    let group_width = (right - left) / conns.len().max(1) as f64;
    let bar = (group_width * 0.8 / setups.len().max(1) as f64).min(60.0);
    for (g, &c) in conns.iter().enumerate() {
        let gx = left + group_width * g as f64;
        let start = gx + (group_width - bar * setups.len() as f64) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c} connection{}</text>"#,
            gx + group_width / 2.0,
            bottom + 18.0,
            if c == 1 { "" } else { "s" }
        );
        for r in report.group(w.name(), c) {
            let Some(i) = setups.iter().position(|n| *n == r.setup) else {
                continue;
            };
            let x = start + bar * i as f64;
            let colour = COLOURS[i % COLOURS.len()];
            match figure {
                Figure::Gbps | Figure::Rps => {
                    let (v, ratio) = match figure {
                        Figure::Gbps => (r.gbps, r.vs_direct.gbps),
                        _ => (r.rps, r.vs_direct.rps),
                    };
                    let Some(v) = v else { continue };
                    let h = bottom - y(v);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{}: {v:.2}</title></rect>"#,
                        y(v),
                        bar - 2.0,
                        escape(&r.setup)
                    );
                    if let Some(ratio) = ratio {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{ratio:.2}×</text>"#,
                            x + bar / 2.0 - 1.0,
                            y(v) - 3.0
                        );
                    }
                }
                Figure::Latency => {
                    let Some(l) = r.latency_us else { continue };
                    let cx = x + bar / 2.0 - 1.0;
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: p50 {:.0} µs, p99 {:.0} µs, p999 {:.0} µs</title></rect>"#,
                        y(l.p50),
                        bar - 2.0,
                        bottom - y(l.p50),
                        escape(&r.setup),
                        l.p50,
                        l.p99,
                        l.p999
                    );
                    let _ = writeln!(
                        s,
                        r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><circle cx="{cx:.1}" cy="{:.1}" r="2.5" fill="black"/>"#,
                        y(l.p50),
                        y(l.p99),
                        cx - bar / 4.0,
                        cx + bar / 4.0,
                        y(l.p99),
                        y(l.p99),
                        y(l.p999)
                    );
                }
            }
        }
    }
}

/// Maps values to a 0..=1 height.
enum Scale {
    Linear { max: f64, step: f64 },
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// From 0 to a round number above `max`, in 4 to 10 steps of 1, 2 or 5 × 10ⁿ.
    fn linear(max: f64) -> Scale {
        let max = if max > 0.0 && max.is_finite() {
            max
        } else {
            1.0
        };
        let raw = max / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        Scale::Linear {
            max: (max / step).ceil() * step,
            step,
        }
    }

    /// Whole decades around `lo..=hi`.
    fn log(lo: f64, hi: f64) -> Scale {
        let lo = if lo > 0.0 && lo.is_finite() { lo } else { 1.0 };
        let hi = if hi > lo && hi.is_finite() {
            hi
        } else {
            lo * 10.0
        };
        Scale::Log {
            // A decade below when the smallest value sits just above one, so its bar shows.
            lo: 10f64.powf((lo.log10() - 0.3).floor()),
            hi: 10f64.powf(hi.log10().ceil()),
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        match *self {
            Scale::Linear { max, .. } => (v / max).clamp(0.0, 1.0),
            Scale::Log { lo, hi } => {
                ((v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())).clamp(0.0, 1.0)
            }
        }
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            Scale::Linear { max, step } => (0..)
                .map(|i| i as f64 * step)
                .take_while(|t| *t <= max + step / 2.0)
                .map(|t| (t, short(t)))
                .collect(),
            Scale::Log { lo, hi } => {
                let mut v = Vec::new();
                let mut t = lo;
                while t <= hi * 1.001 {
                    v.push((t, short(t)));
                    t *= 10.0;
                }
                v
            }
        }
    }
}

/// 1500 → `1.5k`, 2000000 → `2M`, 0.5 → `0.5`.
fn short(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else {
        trim(format!("{v:.2}"))
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
