//! `datapath.svg`: the table as grouped bar charts, for people who would rather look than read.
//!
//! One section per core count (`ZRING_BENCH_CORES`), and in each one panel per figure (bulk
//! Gb/s; requests/s and latency for rr and crr; CPU per operation of each proxy process per
//! workload; bytes per idle connection), a group of bars per connection count (per proxy side
//! for memory), a bar per setup in one colour throughout (the same setup at another core count
//! keeps its colour). Labels on zring's bars are zring / the other proxy (ztunnel) in the same run,
//! green where issue 14's target is met and red where not; grey labels on the others are ratios
//! to direct. Throughput, CPU and memory panels are linear; latency panels are logarithmic: the
//! bar is p50, the whisker reaches p99 and the dot marks p999. Hand-written SVG: no plotting
//! dependency, and any browser shows it.

use std::fmt::Write as _;

use crate::memory::Memory;
use crate::options::Workload;
use crate::report::{Report, Row, cpu_unit};
use crate::targets::{CPU_MAX, MEMORY_MAX, P99_MAX, THROUGHPUT_MIN};

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const SECTION_HEAD: f64 = 30.0;
/// In run order: direct grey; plaintext zring uring, legacy (blues) and the other proxy (orange);
/// HBONE zring uring, legacy (greens) and the other proxy (red).
const COLOURS: [&str; 10] = [
    "#7f7f7f", "#1f77b4", "#aec7e8", "#ff7f0e", "#2ca02c", "#98df8a", "#d62728", "#ffbb78",
    "#9467bd", "#8c564b",
];
const MET: &str = "#1a7f1a";
const MISSED: &str = "#c01818";
const GREY: &str = "#555555";

/// What a panel shows.
#[derive(Clone, Copy)]
enum Figure {
    Gbps,
    Rps,
    Latency,
    Cpu,
}

/// The setups of one section: labels in run order, each with its colour.
struct Section<'a> {
    report: &'a Report,
    cores: usize,
    setups: Vec<(String, &'static str)>,
}

impl Section<'_> {
    fn colour(&self, setup: &str) -> Option<(usize, &'static str)> {
        self.setups
            .iter()
            .position(|(l, _)| l == setup)
            .map(|i| (i, self.setups[i].1))
    }

    fn rows(&self, w: Workload, conns: usize) -> impl Iterator<Item = &Row> {
        self.report
            .group(w.name(), conns)
            .filter(|r| r.cores.is_none_or(|c| c == self.cores))
    }

    fn memory(&self) -> impl Iterator<Item = &Memory> {
        self.report.memory.iter().filter(|m| m.cores == self.cores)
    }
}

/// A setup's label without its core count, which picks its colour.
fn kind(label: &str) -> &str {
    match label.rsplit_once(' ') {
        Some((k, c)) if c.ends_with('c') && c[..c.len() - 1].parse::<usize>().is_ok() => k,
        _ => label,
    }
}

pub fn svg(report: &Report) -> String {
    let mut kinds: Vec<String> = Vec::new();
    let labels = report.rows.iter().map(|r| &r.setup);
    for label in labels.chain(report.memory.iter().map(|m| &m.setup)) {
        if !kinds.iter().any(|k| k == kind(label)) {
            kinds.push(kind(label).to_owned());
        }
    }
    let colour = |label: &str| {
        let i = kinds.iter().position(|k| k == kind(label)).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let mut figures = Vec::new();
    for w in Workload::ALL {
        if !report.rows.iter().any(|r| r.workload == w.name()) {
            continue;
        }
        match w {
            Workload::Bulk => figures.push((w, Figure::Gbps)),
            _ => {
                figures.push((w, Figure::Rps));
                figures.push((w, Figure::Latency));
            }
        }
        if report.rows.iter().any(|r| r.proxy != "-") {
            figures.push((w, Figure::Cpu));
        }
    }
    let sections: Vec<Section> = report
        .settings
        .cores
        .iter()
        .map(|&cores| {
            let mut setups: Vec<(String, &'static str)> = Vec::new();
            let rows = report
                .rows
                .iter()
                .filter(|r| r.cores.is_none_or(|c| c == cores))
                .map(|r| &r.setup);
            let memory = report.memory.iter().filter(|m| m.cores == cores);
            for label in rows.chain(memory.map(|m| &m.setup)) {
                if !setups.iter().any(|(l, _)| l == label) {
                    setups.push((label.clone(), colour(label)));
                }
            }
            Section {
                report,
                cores,
                setups,
            }
        })
        .collect();
    let legend_rows = kinds.len().div_ceil(4);
    let legend_height = 20.0 * legend_rows as f64 + 60.0;
    let panels_per_section =
        |sec: &Section| figures.len() + usize::from(sec.memory().next().is_some());
    let height = legend_height
        + sections
            .iter()
            .map(|sec| SECTION_HEAD + PANEL_HEIGHT * panels_per_section(sec) as f64)
            .sum::<f64>();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let peer = report
        .settings
        .other_proxy_name
        .as_deref()
        .unwrap_or("the other proxy");
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">zring data path: {} s per measurement, {} CPUs, one section per core count (same run)</text>"#,
        report.settings.secs_per_measurement, report.host.cpus
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="38" fill="{GREY}">Labels on zring's bars: zring / {} (<tspan fill="{MET}">met</tspan> or <tspan fill="{MISSED}">missed</tspan> issue 14's target); grey labels: ratio to direct.</text>"#,
        escape(peer)
    );
    for (i, k) in kinds.iter().enumerate() {
        let (x, y) = (LEFT + 220.0 * (i % 4) as f64, 48.0 + 20.0 * (i / 4) as f64);
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{y}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            COLOURS[i % COLOURS.len()],
            x + 20.0,
            y + 12.0,
            escape(k)
        );
    }
    let mut y0 = legend_height;
    for sec in &sections {
        let _ = writeln!(
            s,
            r##"<line x1="0" x2="{WIDTH}" y1="{:.1}" y2="{:.1}" stroke="#888"/><text x="10" y="{:.1}" font-size="15" font-weight="bold">{} runtime(s) per zring, {} worker thread(s) per {}</text>"##,
            y0 + 2.0,
            y0 + 2.0,
            y0 + 22.0,
            sec.cores,
            sec.cores,
            escape(peer)
        );
        y0 += SECTION_HEAD;
        for &(w, figure) in &figures {
            panel(&mut s, sec, w, figure, y0);
            y0 += PANEL_HEIGHT;
        }
        if sec.memory().next().is_some() {
            memory_panel(&mut s, sec, y0);
            y0 += PANEL_HEIGHT;
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A bar's label: rotated (bars are narrow), from just above the baseline upwards, with a white
/// halo so it reads over bars and grid lines alike.
fn label(s: &mut String, x: f64, bottom: f64, text: &str, colour: &str) {
    let (x, y) = (x, bottom - 4.0);
    let _ = writeln!(
        s,
        r#"<text transform="translate({x:.1},{y:.1}) rotate(-90)" font-size="9" fill="{colour}" stroke="white" stroke-width="2.5" paint-order="stroke">{}</text>"#,
        escape(text)
    );
}

/// `0.95×` in green or red by whether it meets `target`, for zring's bars.
fn judged(ratio: Option<f64>, meets: impl Fn(f64) -> bool) -> Option<(String, &'static str)> {
    ratio.map(|r| (format!("{r:.2}×"), if meets(r) { MET } else { MISSED }))
}

/// Resident memory per idle HBONE connection, a group per side (outbound, inbound), a bar per
/// setup, labelled with the bytes and zring's ratio to the other proxy.
fn memory_panel(s: &mut String, sec: &Section, y0: f64) {
    let (top, bottom) = (y0 + TOP, y0 + PANEL_HEIGHT - BOTTOM);
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let n = sec.memory().next().map_or(0, |m| m.connections);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(&format!(
            "{n} idle HBONE connections: resident bytes per connection, by proxy side (lower is better; target ≤ {MEMORY_MAX}×)"
        ))
    );
    let max = sec
        .memory()
        .flat_map(|m| m.sides.iter().map(|s| s.bytes_per_conn))
        .fold(0.0f64, f64::max);
    let scale = Scale::linear(max);
    let y = |v: f64| bottom - (bottom - top) * scale.fraction(v);
    axis(s, &scale, top, bottom);
    let roles = [
        ("outbound", "outbound (client's node)"),
        ("inbound", "inbound (server's node)"),
    ];
    let bars = sec.memory().count().max(1);
    let group_width = (right - left) / roles.len() as f64;
    let bar = (group_width * 0.8 / bars as f64).min(60.0);
    for (g, (role, caption)) in roles.iter().enumerate() {
        let gx = left + group_width * g as f64;
        let start = gx + (group_width - bar * bars as f64) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{caption}</text>"#,
            gx + group_width / 2.0,
            bottom + 18.0
        );
        for (i, m) in sec.memory().enumerate() {
            let Some((_, colour)) = sec.colour(&m.setup) else {
                continue;
            };
            let Some(side) = m.sides.iter().find(|s| s.role == *role) else {
                continue;
            };
            let (x, v) = (start + bar * i as f64, side.bytes_per_conn.max(0.0));
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {v:.0} bytes</title></rect>"#,
                y(v),
                bar - 2.0,
                bottom - y(v),
                escape(&m.setup),
            );
            let text = match judged(side.vs_peer, |r| r <= MEMORY_MAX) {
                Some((r, c)) => (format!("{} B, {r}", short(v)), c),
                None => (format!("{} B", short(v)), GREY),
            };
            label(s, x + bar / 2.0 + 2.0, bottom, &text.0, text.1);
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

fn panel(s: &mut String, sec: &Section, w: Workload, figure: Figure, y0: f64) {
    let (top, bottom) = (y0 + TOP, y0 + PANEL_HEIGHT - BOTTOM);
    let (left, right) = (LEFT, WIDTH - RIGHT);
    let title = match figure {
        Figure::Gbps => format!(
            "{}: Gb/s (higher is better; target ≥ {THROUGHPUT_MIN}×)",
            w.title()
        ),
        Figure::Rps => format!(
            "{}: requests/s (higher is better; target ≥ {THROUGHPUT_MIN}×)",
            w.title()
        ),
        Figure::Latency => format!(
            "{}: latency µs, log scale (bar p50, whisker p99, dot p999; label p50 / p99 ratios; target p99 ≤ {P99_MAX}×)",
            w.title()
        ),
        Figure::Cpu => format!(
            "{}: CPU {} of each proxy, outbound (solid) and inbound (pale) (lower is better; target ≤ {CPU_MAX}×)",
            w.title(),
            cpu_unit(w)
        ),
    };
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(&title)
    );
    let conns = &sec.report.settings.conns;
    let all = || conns.iter().flat_map(|&c| sec.rows(w, c));
    let max = all()
        .flat_map(|r| match figure {
            Figure::Gbps => vec![r.gbps],
            Figure::Rps => vec![r.rps],
            Figure::Latency => vec![r.latency_us.map(|l| l.p999.max(l.p99).max(l.p50))],
            Figure::Cpu => vec![r.cpu_per_op.outbound, r.cpu_per_op.inbound],
        })
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let min_latency = all()
        .filter_map(|r| r.latency_us.map(|l| l.p50))
        .fold(f64::INFINITY, f64::min);
    let scale = match figure {
        Figure::Latency => Scale::log(min_latency, max),
        _ => Scale::linear(max),
    };
    let y = |v: f64| bottom - (bottom - top) * scale.fraction(v);
    axis(s, &scale, top, bottom);
    // CPU panels: no direct bar (it has no proxy), two bars (out, in) per setup.
    let shown: Vec<&(String, &'static str)> = sec
        .setups
        .iter()
        .filter(|(l, _)| !matches!(figure, Figure::Cpu) || l != "direct")
        .collect();
    let per_setup = if matches!(figure, Figure::Cpu) { 2 } else { 1 };
    let bars = (shown.len() * per_setup).max(1);
    let group_width = (right - left) / conns.len().max(1) as f64;
    let bar = (group_width * 0.85 / bars as f64).min(60.0);
    for (g, &c) in conns.iter().enumerate() {
        let gx = left + group_width * g as f64;
        let start = gx + (group_width - bar * bars as f64) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c} connection{}</text>"#,
            gx + group_width / 2.0,
            bottom + 18.0,
            if c == 1 { "" } else { "s" }
        );
        for r in sec.rows(w, c) {
            let Some(i) = shown.iter().position(|(l, _)| *l == r.setup) else {
                continue;
            };
            let colour = shown[i].1;
            let x = start + bar * (i * per_setup) as f64;
            let peer = r.vs_peer.as_ref();
            match figure {
                Figure::Gbps | Figure::Rps => {
                    let (v, direct) = match figure {
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
                    let text = judged(peer.and_then(|p| p.throughput), |x| x >= THROUGHPUT_MIN)
                        .or_else(|| direct.map(|d| (format!("{d:.2}× direct"), GREY)));
                    if let Some((t, c)) = text {
                        label(s, x + bar / 2.0 + 2.0, bottom, &t, c);
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
                    if let Some(p) = peer
                        && let (Some(p50), Some(p99)) = (p.p50, p.p99)
                    {
                        let c = if p99 <= P99_MAX { MET } else { MISSED };
                        label(s, cx + 4.0, bottom, &format!("{p50:.2}× / {p99:.2}×"), c);
                    }
                }
                Figure::Cpu => {
                    let sides = [
                        (
                            r.cpu_per_op.outbound,
                            peer.and_then(|p| p.cpu_outbound),
                            "1",
                            "outbound",
                        ),
                        (
                            r.cpu_per_op.inbound,
                            peer.and_then(|p| p.cpu_inbound),
                            "0.5",
                            "inbound",
                        ),
                    ];
                    for (k, (v, ratio, opacity, side)) in sides.into_iter().enumerate() {
                        let Some(v) = v.filter(|v| v.is_finite()) else {
                            continue;
                        };
                        let bx = x + bar * k as f64;
                        let _ = writeln!(
                            s,
                            r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{opacity}"><title>{} {side}: {v:.3} {}</title></rect>"#,
                            y(v),
                            bar - 1.0,
                            bottom - y(v),
                            escape(&r.setup),
                            r.cpu_unit
                        );
                        if let Some((t, c)) = judged(ratio, |x| x <= CPU_MAX) {
                            label(s, bx + bar / 2.0 + 2.0, bottom, &t, c);
                        }
                    }
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
