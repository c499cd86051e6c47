//! `pulse backtest`: replay a history in memory with a `[scoring]`, snapshot every customer
//! at the split `T`, carry on to the end of the input, and score what pulse said at `T` against
//! what happened after it. The metrics and their definitions are pulse-core's
//! (`pulse_core::backtest`); the replay is pulse-core's `Partition` driven by
//! `pulse_core::whatif::Replayer`. This module loads the input, times the work against a plain
//! replay of the same input, and writes the terminal summary, the JSON and the HTML report.
//! Nothing touches Kafka topics except reading the canonical log when that is the input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use pulse_core::backtest::{self, checkpoints, Forecast, PlacedOrder, Report};
use pulse_core::event::OrderKind;
use pulse_core::whatif::{Cause, Replayer, Step};
use pulse_core::{AlertKind, Body, Millis, ScoringConfig, DAY};
use serde::Serialize;

use crate::config::Config;
use crate::history::{self, Loaded, Record};
use crate::replay::{parse_time, ReplayRange, UsageError};

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// Service config: where the canonical log is (when it is the input) and the `[scoring]`
    /// to test (`--scoring config`) or to fit from (`--scoring fit`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input: an NDJSON file of input events (or `pulse simulate --ndjson` lines) instead of
    /// the canonical log.
    #[arg(long)]
    pub ndjson: Option<PathBuf>,
    #[command(flatten)]
    pub range: ReplayRange,
    /// The split T (RFC 3339 or epoch ms): what pulse said at T is scored against (T, T+D].
    #[arg(long, value_parser = parse_time)]
    pub split: Millis,
    /// The horizon D: whole days (`90`, `90d`) or weeks (`13w`).
    #[arg(long, value_parser = parse_days)]
    pub horizon: Millis,
    /// `fit`: the config's `[scoring]` fitted on the events before the split (as `pulse fit
    /// --until SPLIT` would); `config`: the config's `[scoring]` as it is.
    #[arg(long, value_enum, default_value_t = ScoringSource::Fit)]
    pub scoring: ScoringSource,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (inline SVG plots, no external resource).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Timing rounds (backtest and plain replay interleaved; the fastest of each is kept).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoringSource {
    Fit,
    Config,
}

/// `90`, `90d` or `13w`.
pub fn parse_days(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    let (num, unit) = match s.strip_suffix('w') {
        Some(n) => (n, 7),
        None => (s.strip_suffix('d').unwrap_or(s), 1),
    };
    match num.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n * unit * DAY),
        _ => Err(format!(
            "`{s}` is not a positive number of days (90, 90d) or weeks (13w)"
        )),
    }
}

/// What a backtest run gives besides the report.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub records: usize,
    /// Replay with the snapshot at T, the forecasts and the metrics.
    pub backtest_seconds: f64,
    /// The same records through the same `Partition`, nothing else.
    pub replay_seconds: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Output {
    pub input: String,
    pub rejected: usize,
    pub rule_version: String,
    pub model: &'static str,
    pub timing: Timing,
    pub report: Report,
}

fn records(loaded: &Loaded) -> usize {
    loaded.partitions.iter().map(|p| p.records.len()).sum()
}

fn step(r: &Record) -> (Millis, Step<'_>) {
    match r {
        Record::Event(e) => (e.occurred_at, Step::Event(e)),
        Record::Tick(t) => (*t, Step::Tick(*t)),
    }
}

/// A plain replay: every partition through a `Replayer`, nothing kept.
pub fn plain_replay(loaded: &Loaded, cfg: &ScoringConfig) -> usize {
    let mut alerts = 0;
    for p in &loaded.partitions {
        let mut r = Replayer::new();
        for (i, rec) in p.records.iter().enumerate() {
            let cause = Cause {
                partition: p.partition,
                offset: i as i64,
            };
            alerts += r.feed(cause, step(rec).1, cfg);
        }
    }
    alerts
}

/// The backtest proper (pure apart from the clock reads the caller makes around it).
pub fn run(loaded: &Loaded, split: Millis, horizon: Millis, cfg: &ScoringConfig) -> Report {
    let cps = checkpoints(horizon);
    let mut forecasts: Vec<Forecast> = Vec::new();
    let mut orders: BTreeMap<String, Vec<PlacedOrder>> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut end = Millis::MIN;
    for p in &loaded.partitions {
        let mut r = Replayer::new();
        let mut snapped = false;
        let snapshot = |r: &Replayer, out: &mut Vec<Forecast>| {
            for (id, state) in r.partition.customers() {
                out.extend(backtest::forecast(id, state, split, &cps, cfg));
            }
        };
        for (i, rec) in p.records.iter().enumerate() {
            let cause = Cause {
                partition: p.partition,
                offset: i as i64,
            };
            let (time, s) = step(rec);
            if !snapped && time > split {
                // The clock reaches T: the timers due by then fire, as fold would fire them
                // on this record, then everyone is looked at as of T.
                r.feed(cause, Step::Tick(split), cfg);
                snapshot(&r, &mut forecasts);
                snapped = true;
            }
            r.feed(cause, s, cfg);
            if let Record::Event(e) = rec {
                if let Body::Order(o) = &e.body {
                    if o.kind == OrderKind::Placed {
                        orders
                            .entry(e.customer_id.clone())
                            .or_default()
                            .push(PlacedOrder {
                                at: e.occurred_at,
                                amount_minor: o.amount_minor,
                            });
                    }
                }
            }
        }
        if !snapped {
            let cause = Cause {
                partition: p.partition,
                offset: p.records.len() as i64,
            };
            r.feed(cause, Step::Tick(split), cfg);
            snapshot(&r, &mut forecasts);
        }
        end = end.max(r.partition.clock());
        warnings.extend(
            r.alerts
                .iter()
                .filter(|a| a.alert.kind == AlertKind::ChurnWarning)
                .map(|a| (a.alert.customer_id.clone(), a.alert.occurred_at)),
        );
    }
    for os in orders.values_mut() {
        os.sort();
    }
    forecasts.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    backtest::compute(&backtest::Input {
        split,
        horizon,
        end,
        forecasts,
        orders,
        warnings,
    })
}

pub async fn backtest(args: BacktestArgs) -> anyhow::Result<Output> {
    let config =
        Config::load(args.config.as_deref()).map_err(|e| UsageError(crate::error_chain(&e)))?;
    let loaded = match &args.ndjson {
        Some(path) => history::load_ndjson(path, &config)?,
        None => history::load_log(&config, &args.range).await?,
    };
    let cfg = match args.scoring {
        ScoringSource::Config => config.scoring.clone(),
        ScoringSource::Fit => {
            let fitted = crate::fit::fit_loaded(
                &loaded,
                args.split,
                &config.scoring,
                crate::fit::FitParams::default(),
            )
            .map_err(|e| anyhow::anyhow!("fit before the split: {e}"))?;
            eprint!("{}", crate::fit::summary(&fitted));
            fitted.scoring
        }
    };
    eprintln!(
        "backtest: {} ({} records), split {}, horizon {} days, rules {} ({})",
        loaded.description,
        records(&loaded),
        pulse_codec::time::format_rfc3339(args.split),
        args.horizon / DAY,
        cfg.rule_version,
        cfg.model.kind.as_str()
    );
    let (mut best_bt, mut best_replay) = (Duration::MAX, Duration::MAX);
    let mut report = None;
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let r = run(&loaded, args.split, args.horizon, &cfg);
        best_bt = best_bt.min(started.elapsed());
        report = Some(r);
        let started = Instant::now();
        std::hint::black_box(plain_replay(&loaded, &cfg));
        best_replay = best_replay.min(started.elapsed());
    }
    let report = report.expect("one round at least");
    let out = Output {
        input: loaded.description.clone(),
        rejected: loaded.rejected.len(),
        rule_version: cfg.rule_version.clone(),
        model: cfg.model.kind.as_str(),
        timing: Timing {
            records: records(&loaded),
            backtest_seconds: best_bt.as_secs_f64(),
            replay_seconds: best_replay.as_secs_f64(),
            ratio: best_bt.as_secs_f64() / best_replay.as_secs_f64(),
        },
        report,
    };
    print!("{}", summary(&out));
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&out)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        write_html(path, &out)?;
    }
    Ok(out)
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", 100.0 * v)
    } else {
        "n/a".into()
    }
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

/// The terminal summary.
pub fn summary(out: &Output) -> String {
    let r = &out.report;
    let mut s = String::new();
    let s_ = &mut s;
    let _ = writeln!(
        s_,
        "cohort: {} customers with an order by the split; holdout {} days",
        r.summary.customers,
        num(r.horizon_days, 0)
    );
    let _ = writeln!(
        s_,
        "repeat purchases in the holdout: expected {:.1}, actual {} (per customer: MAE {}, RMSE {})",
        r.summary.expected_purchases,
        r.summary.actual_purchases,
        num(r.summary.mean_absolute_error, 3),
        num(r.summary.rmse, 3)
    );
    let _ = writeln!(
        s_,
        "P(alive) against buying in the holdout (the observable proxy for alive): Brier {} over {} customers",
        num(r.calibration.brier, 4),
        r.calibration.customers
    );
    let _ = writeln!(
        s_,
        "churn warnings (judged on the {} days after each; lapse = {} days without an order):",
        num(r.horizon_days, 0),
        num(r.horizon_days, 0)
    );
    let _ = writeln!(
        s_,
        "  {:<28} {:>9} {:>10} {:>8} {:>8} {:>8} {:>11}",
        "rule", "warnings", "precision", "lapses", "caught", "recall", "median lead"
    );
    let w = &r.warnings;
    for (name, m) in [
        (format!("pulse ({})", out.rule_version), &w.model),
        (
            format!("no order for {} days", num(w.baseline_days, 1)),
            &w.baseline,
        ),
    ] {
        let _ = writeln!(
            s_,
            "  {:<28} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} d",
            name,
            m.warnings,
            pct(m.precision),
            m.lapses,
            m.caught,
            pct(m.recall),
            num(m.median_lead_days, 1)
        );
    }
    let _ = writeln!(
        s_,
        "time: backtest {:.3} s, plain replay {:.3} s of the same {} records: {:.2}x",
        out.timing.backtest_seconds,
        out.timing.replay_seconds,
        out.timing.records,
        out.timing.ratio
    );
    s
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

const W: f64 = 520.0;
const H: f64 = 320.0;
const ML: f64 = 56.0;
const MR: f64 = 16.0;
const MT: f64 = 28.0;
const MB: f64 = 44.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

struct Axes {
    x_max: f64,
    y_max: f64,
}

impl Axes {
    fn x(&self, v: f64) -> f64 {
        ML + (W - ML - MR) * v / self.x_max
    }
    fn y(&self, v: f64) -> f64 {
        H - MB - (H - MT - MB) * v / self.y_max
    }
    fn frame(&self, title: &str, x_label: &str, y_label: &str, x_ticks: bool) -> String {
        let mut s = format!(
            "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">\
             <text x=\"{}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
            ML,
            esc(title)
        );
        for k in 0..=4 {
            let v = self.y_max * k as f64 / 4.0;
            let y = self.y(v);
            let _ = write!(
                s,
                "<line x1=\"{ML}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
                W - MR,
                ML - 4.0,
                y + 4.0,
                short(v)
            );
            if x_ticks {
                let xv = self.x_max * k as f64 / 4.0;
                let x = self.x(xv);
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                    H - MB + 16.0,
                    short(xv)
                );
            }
        }
        let _ = write!(
            s,
            "<line x1=\"{ML}\" x2=\"{ML}\" y1=\"{MT}\" y2=\"{}\" stroke=\"#333\"/>\
             <line x1=\"{ML}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
             <text x=\"14\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{}</text>",
            H - MB,
            W - MR,
            (ML + W - MR) / 2.0,
            H - 8.0,
            esc(x_label),
            (MT + H - MB) / 2.0,
            (MT + H - MB) / 2.0,
            esc(y_label),
            b = H - MB,
        );
        s
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v == v.round() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn polyline(axes: &Axes, points: &[(f64, f64)], color: &str, dash: bool) -> String {
    let pts: Vec<String> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| format!("{:.1},{:.1}", axes.x(*x), axes.y(*y)))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{} points=\"{}\"/>",
        if dash {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        },
        pts.join(" ")
    )
}

fn legend(items: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (name, color)) in items.iter().enumerate() {
        let y = MT + 8.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            ML + 10.0,
            y - 4.0,
            ML + 28.0,
            y + 1.0,
            esc(name)
        );
    }
    s
}

fn tracking_svg(r: &Report) -> String {
    let y_max = nice_max(
        r.tracking
            .iter()
            .map(|p| p.expected_cumulative.max(p.actual_cumulative as f64))
            .fold(0.0, f64::max),
    );
    let axes = Axes {
        x_max: nice_max(r.horizon_days),
        y_max,
    };
    let mut exp = vec![(0.0, 0.0)];
    let mut act = vec![(0.0, 0.0)];
    for p in &r.tracking {
        exp.push((p.day, p.expected_cumulative));
        act.push((p.day, p.actual_cumulative as f64));
    }
    let mut s = axes.frame(
        "Tracking: cumulative repeat purchases after the split",
        "days after the split",
        "repeat purchases (cumulative)",
        true,
    );
    s += &polyline(&axes, &act, "#1f77b4", false);
    s += &polyline(&axes, &exp, "#d62728", true);
    s += &legend(&[("actual", "#1f77b4"), ("expected (model at T)", "#d62728")]);
    s + "</svg>"
}

fn calibration_svg(r: &Report) -> String {
    let axes = Axes {
        x_max: 1.0,
        y_max: 1.0,
    };
    let mut s = axes.frame(
        "P(alive) calibration (10 bins)",
        "P(alive) at the split (bin mean)",
        "share that bought in the holdout",
        true,
    );
    s += &polyline(&axes, &[(0.0, 0.0), (1.0, 1.0)], "#999", true);
    let most = r
        .calibration
        .bins
        .iter()
        .map(|b| b.customers)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let pts: Vec<(f64, f64)> = r
        .calibration
        .bins
        .iter()
        .filter(|b| b.customers > 0)
        .map(|b| (b.mean_p_alive, b.bought_share))
        .collect();
    s += &polyline(&axes, &pts, "#1f77b4", false);
    for b in r.calibration.bins.iter().filter(|b| b.customers > 0) {
        let radius = 3.0 + 7.0 * (b.customers as f64 / most).sqrt();
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius:.1}\" fill=\"#1f77b4\" fill-opacity=\"0.5\"><title>{} customers</title></circle>",
            axes.x(b.mean_p_alive),
            axes.y(b.bought_share),
            b.customers
        );
    }
    s += &legend(&[
        ("observed (area ∝ customers)", "#1f77b4"),
        ("perfect calibration", "#999"),
    ]);
    s + "</svg>"
}

fn deciles_svg(r: &Report) -> String {
    let d = &r.clv_deciles;
    let y_max = nice_max(
        d.iter()
            .flat_map(|x| [x.mean_predicted_spend, x.mean_realised_spend])
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            / 100.0,
    );
    let axes = Axes {
        x_max: d.len().max(1) as f64,
        y_max,
    };
    let mut s = axes.frame(
        "Holdout spend by decile of predicted CLV",
        "decile of predicted CLV (1 = lowest)",
        "mean spend per customer (major units)",
        false,
    );
    let slot = (W - ML - MR) / d.len().max(1) as f64;
    let bw = slot * 0.38;
    for (i, x) in d.iter().enumerate() {
        let x0 = ML + slot * i as f64 + slot * 0.1;
        for (k, (v, color)) in [
            (x.mean_predicted_spend, "#d62728"),
            (x.mean_realised_spend, "#1f77b4"),
        ]
        .iter()
        .enumerate()
        {
            let v = if v.is_finite() { v / 100.0 } else { 0.0 };
            let top = axes.y(v);
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{:.2}</title></rect>",
                x0 + bw * k as f64,
                H - MB - top,
                v
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x0 + bw,
            H - MB + 16.0,
            x.decile
        );
    }
    s += &legend(&[("predicted", "#d62728"), ("realised", "#1f77b4")]);
    s + "</svg>"
}

/// The report as one HTML file: inline CSS and SVG, no script, no external resource.
pub fn html(out: &Output) -> String {
    let r = &out.report;
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pulse backtest</title>\
         <style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}\
         table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:12px}\
         .note{color:#555;font-size:13px;max-width:1050px}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>pulse backtest</h1><p>{}<br>split {} · horizon {} days · rules <b>{}</b> ({}) · end of input {}</p>",
        esc(&out.input),
        pulse_codec::time::format_rfc3339(r.split),
        num(r.horizon_days, 0),
        esc(&out.rule_version),
        out.model,
        pulse_codec::time::format_rfc3339(r.end)
    );
    let _ = write!(
        s,
        "<table><tr><th>cohort (ordered by the split)</th><th>expected repeat purchases</th><th>actual</th><th>MAE per customer</th><th>RMSE</th><th>Brier (P(alive) vs bought)</th></tr>\
         <tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        r.summary.customers,
        r.summary.expected_purchases,
        r.summary.actual_purchases,
        num(r.summary.mean_absolute_error, 3),
        num(r.summary.rmse, 3),
        num(r.calibration.brier, 4)
    );
    s += "<h2>Churn warnings against the obvious rule</h2><table><tr><th>rule</th><th>warnings scored</th><th>precision</th><th>lapses</th><th>caught</th><th>recall</th><th>median lead (days)</th><th>not yet observable</th></tr>";
    let w = &r.warnings;
    for (name, m) in [
        (format!("pulse ({})", out.rule_version), &w.model),
        (
            format!("no order for {} days (median gap)", num(w.baseline_days, 1)),
            &w.baseline,
        ),
    ] {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name),
            m.warnings,
            pct(m.precision),
            m.lapses,
            m.caught,
            pct(m.recall),
            num(m.median_lead_days, 1),
            m.unobserved_warnings
        );
    }
    let d = num(r.horizon_days, 0);
    let _ = write!(
        s,
        "</table><p class=\"note\">Precision: of the warnings issued from the split on whose next {d} days are in the input, \
         the share after which the customer placed no order within {d} days. A lapse: an order followed by {d} days without one, \
         complete after the split; recall: the share of lapses warned strictly before the silence reached {d} days; lead: from \
         the earliest such warning to that moment. The baseline warns once per silence when it reaches the cohort's median \
         gap between purchase days at the split.</p>"
    );
    s += "<div class=\"plots\">";
    s += &tracking_svg(r);
    s += &calibration_svg(r);
    s += &deciles_svg(r);
    s += "</div>";
    s += "<p class=\"note\">Calibration is scored against <b>buying in the holdout</b>, the observable proxy for being alive: \
          an alive customer may still not buy within the horizon, so even a calibrated P(alive) has its points below \
          the diagonal, the more so the shorter the horizon. Predicted spend: expected holdout purchase days × Gamma-Gamma expected \
          spend per purchase day (undiscounted).</p>";
    s += "<h2>Conditional expectations by calibration repeat purchases</h2><table><tr><th>x at the split</th><th>customers</th><th>mean expected</th><th>mean actual</th></tr>";
    for b in &r.by_x {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            b.x,
            b.customers,
            num(b.mean_expected, 3),
            num(b.mean_actual, 3)
        );
    }
    s += "</table><h2>CLV deciles</h2><table><tr><th>decile</th><th>customers</th><th>mean predicted CLV</th><th>mean predicted holdout spend</th><th>mean realised holdout spend</th></tr>";
    for x in &r.clv_deciles {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            x.decile,
            x.customers,
            num(x.mean_predicted_clv / 100.0, 2),
            num(x.mean_predicted_spend / 100.0, 2),
            num(x.mean_realised_spend / 100.0, 2)
        );
    }
    let _ = write!(
        s,
        "</table><p class=\"note\">Time: backtest {:.3} s against a plain replay of the same {} records {:.3} s ({:.2}×).</p></body></html>",
        out.timing.backtest_seconds, out.timing.records, out.timing.replay_seconds, out.timing.ratio
    );
    s
}

fn write_html(path: &Path, out: &Output) -> anyhow::Result<()> {
    std::fs::write(path, html(out)).with_context(|| format!("write {}", path.display()))
}
