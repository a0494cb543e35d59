//! The report as text: the table on stdout (or Markdown for docs/benchmarks.md), the targets,
//! an SVG bar chart, and the block `--update-docs` splices into a document.

use super::*;
use std::fmt::Write as _;

fn fmt_spread(s: Option<Spread>, scale: f64, prec: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 || s.min == s.max => format!("{:.*}", prec, s.median / scale),
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            prec,
            s.median / scale,
            prec,
            s.min / scale,
            prec,
            s.max / scale
        ),
    }
}

/// The table printed on stdout (and written into docs/benchmarks.md as Markdown).
pub fn table(rep: &Report, markdown: bool) -> String {
    let head = [
        "system",
        "NDR Mpps",
        "PDR Mpps",
        "p50/p99 µs @50% PDR",
        "p50/p99 µs @90% PDR",
        "CPU-s/Mpkt all cores",
        "per core",
        "net of bg",
        "bg cores",
        "cycles/pkt",
    ];
    let rows: Vec<[String; 10]> = rep
        .systems
        .iter()
        .map(|s| {
            let m = &s.summary;
            let lat = |a: Option<Spread>, b: Option<Spread>| {
                format!("{} / {}", fmt_spread(a, 1.0, 0), fmt_spread(b, 1.0, 0))
            };
            [
                s.name.clone(),
                fmt_spread(m.ndr_pps, 1e6, 3),
                fmt_spread(m.pdr_pps, 1e6, 3),
                lat(m.p50_us_at_50pct_pdr, m.p99_us_at_50pct_pdr),
                lat(m.p50_us_at_90pct_pdr, m.p99_us_at_90pct_pdr),
                fmt_spread(m.cpu_s_per_mpkt_at_90pct_pdr, 1.0, 2),
                m.core_cpu_s_per_mpkt_at_90pct_pdr
                    .iter()
                    .map(|c| c.map_or("-".into(), |c| format!("{:.2}", c.median)))
                    .collect::<Vec<_>>()
                    .join(" + "),
                fmt_spread(m.cpu_s_per_mpkt_net_at_90pct_pdr, 1.0, 2),
                {
                    let loaded = s.repeats.iter().filter(|r| r.loaded).count();
                    let bg = m
                        .background_busy_cores
                        .map_or("-".into(), |b| format!("{:.2}", b.median));
                    if loaded > 0 {
                        format!("{bg} ({loaded}/{} loaded)", s.repeats.len())
                    } else {
                        bg
                    }
                },
                m.fwd_core_cycles_per_pkt_at_90pct_pdr
                    .map_or("not supported".into(), |c| format!("{:.0}", c.median)),
            ]
        })
        .collect();
    if !markdown {
        return texttable::render(&head, rows);
    }
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
    for r in &rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}

/// Each target, its measured ratio, what it requires and whether it is met (a Markdown table
/// for docs/benchmarks.md, or plain lines).
pub fn targets_text(rep: &Report, markdown: bool) -> String {
    let rows = rep.targets.iter().map(|t| {
        let r = t.ratio.map_or("-".into(), |r| format!("{r:.2}"));
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        [t.target.clone(), r, t.required.clone(), met.to_string()]
    });
    if !markdown {
        return texttable::render(&["target", "ratio", "required", "met"], rows);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| target (64-byte frames) | measured ratio | required | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for [target, r, required, met] in rows {
        let _ = writeln!(out, "| {target} | {r} | {required} | {met} |");
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A bar chart (NDR and PDR with min–max whiskers, and CPU-s per Mpkt) as SVG, by hand.
pub fn svg(rep: &Report) -> String {
    let n = rep.systems.len().max(1);
    let (left, top, ph, gap) = (70.0, 50.0, 220.0, 120.0);
    let slot = 90.0;
    let width = left + slot * n as f64 + 30.0;
    let height = top + ph + gap + ph + 90.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="20" font-size="14">ferry-bench compare: {}-byte frames, {} destinations, {} repeats (median, whiskers min–max)</text>"#,
        rep.config["frame_size"], rep.config["destinations"], rep.config["repeats"]
    );
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="36" fill="#555">{}, {} cores, Linux {}, {}, AF_XDP {}</text>"##,
        esc(&rep.machine.cpu_model),
        rep.machine.cores,
        esc(&rep.machine.kernel),
        esc(&rep.machine.nic),
        esc(&rep.machine.afxdp_mode)
    );
    let panel = |o: &mut String,
                 y0: f64,
                 title: &str,
                 series: &[(&str, &str, Vec<Option<Spread>>)],
                 scale: f64| {
        let vmax = series
            .iter()
            .flat_map(|s| s.2.iter().flatten().map(|x| x.max / scale))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="{:.0}" font-size="12">{}</text>"#,
            y0 - 6.0,
            esc(title)
        );
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{y0}" x2="{left}" y2="{:.1}" stroke="#000"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
            y0 + ph,
            y0 + ph,
            width - 20.0,
            y0 + ph
        );
        for k in 0..=4 {
            let v = vmax * f64::from(k) / 4.0;
            let y = y0 + ph - ph * f64::from(k) / 4.0;
            let _ = writeln!(
                o,
                r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
                width - 20.0,
                left - 4.0,
                y + 4.0
            );
        }
        let bw = (slot - 20.0) / series.len() as f64;
        for i in 0..n {
            let x0 = left + slot * i as f64 + 10.0;
            for (j, (_, color, vals)) in series.iter().enumerate() {
                let Some(Some(s)) = vals.get(i) else { continue };
                let h = s.median / scale / vmax * ph;
                let x = x0 + bw * j as f64;
                let _ = writeln!(
                    o,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/>"#,
                    y0 + ph - h,
                    bw - 2.0
                );
                let (ylo, yhi) = (
                    y0 + ph - s.min / scale / vmax * ph,
                    y0 + ph - s.max / scale / vmax * ph,
                );
                let cx = x + (bw - 2.0) / 2.0;
                let _ = writeln!(
                    o,
                    r##"<line x1="{cx:.1}" y1="{ylo:.1}" x2="{cx:.1}" y2="{yhi:.1}" stroke="#000"/><line x1="{:.1}" y1="{yhi:.1}" x2="{:.1}" y2="{yhi:.1}" stroke="#000"/><line x1="{:.1}" y1="{ylo:.1}" x2="{:.1}" y2="{ylo:.1}" stroke="#000"/>"##,
                    cx - 3.0,
                    cx + 3.0,
                    cx - 3.0,
                    cx + 3.0
                );
            }
        }
        for (j, (label, color, _)) in series.iter().enumerate() {
            let x = width - 160.0 + 75.0 * j as f64;
            let _ = writeln!(
                o,
                r#"<rect x="{x:.0}" y="{:.0}" width="10" height="10" fill="{color}"/><text x="{:.0}" y="{:.0}">{label}</text>"#,
                y0 - 16.0,
                x + 14.0,
                y0 - 7.0
            );
        }
    };
    let sums: Vec<&Summary> = rep.systems.iter().map(|s| &s.summary).collect();
    panel(
        &mut o,
        top + 20.0,
        "Throughput (Mpps)",
        &[
            ("NDR", "#4a7ebb", sums.iter().map(|s| s.ndr_pps).collect()),
            ("PDR", "#9dc3e6", sums.iter().map(|s| s.pdr_pps).collect()),
        ],
        1e6,
    );
    let y2 = top + 20.0 + ph + gap;
    panel(
        &mut o,
        y2,
        "CPU-seconds per million packets, all cores, at 90% of PDR",
        &[(
            "CPU",
            "#c0504d",
            sums.iter().map(|s| s.cpu_s_per_mpkt_at_90pct_pdr).collect(),
        )],
        1.0,
    );
    for (i, s) in rep.systems.iter().enumerate() {
        let x = left + slot * i as f64 + slot / 2.0;
        let y = y2 + ph + 14.0;
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-35 {x:.1} {y:.1})">{}</text>"#,
            esc(&s.name)
        );
        let y = top + 20.0 + ph + 14.0;
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-35 {x:.1} {y:.1})">{}</text>"#,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// The Markdown block `--update-docs` writes between the markers in docs/benchmarks.md.
pub fn markdown(rep: &Report, command: &str) -> String {
    let m = &rep.machine;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Machine: {}, {} cores, {} GiB, Linux {}; NIC: {}; AF_XDP mode: {}; cycles: {}. \
         Load average {} at the start, {} at the end.\n",
        m.cpu_model,
        m.cores,
        m.memory_gib,
        m.kernel,
        m.nic,
        m.afxdp_mode,
        m.perf_cycles,
        m.load_average_start,
        m.load_average_end
    );
    let _ = writeln!(
        o,
        "Run: `{command}` — {} repeats, {} s trials, search resolution {}, {}-byte frames, {} \
         destinations in {} /26 routes; generator on core {}, sink on core {}, forwarder on core {}. \
         Cells: median (min–max over the repeats).\n",
        rep.config["repeats"],
        rep.config["trial_secs"],
        rep.config["resolution"],
        rep.config["frame_size"],
        rep.config["destinations"],
        rep.config["route_blocks"],
        rep.config["gen_core"],
        rep.config["sink_core"],
        rep.config["fwd_core"]
    );
    o.push_str(&table(rep, true));
    o.push('\n');
    o.push_str(&targets_text(rep, true));
    o
}

pub const DOC_BEGIN: &str = "<!-- ferry-bench compare: begin (generated) -->";
pub const DOC_END: &str = "<!-- ferry-bench compare: end -->";

/// Replaces the generated block of `doc` (or appends one) with `block`.
pub fn splice_doc(doc: &str, block: &str) -> String {
    let new = format!("{DOC_BEGIN}\n{block}{DOC_END}");
    match (doc.find(DOC_BEGIN), doc.find(DOC_END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{new}{}", &doc[..a], &doc[b + DOC_END.len()..])
        }
        _ => format!("{}\n{new}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_or_appends_the_block() {
        let doc = "# B\n\ntext\n";
        let once = splice_doc(doc, "one\n");
        assert!(once.starts_with("# B\n\ntext\n") && once.contains("one\n"));
        let twice = splice_doc(&once, "two\n");
        assert!(twice.contains("two\n") && !twice.contains("one\n"));
        assert_eq!(twice.matches(DOC_BEGIN).count(), 1);
    }
}
