//! `pulse fit`: fit the rules to a history and write them as a `[scoring]` TOML fragment that
//! `pulse run --config` takes as it is. This module owns the shell around pulse-core's fit:
//! loading the input (an NDJSON file or a range of the canonical log, through
//! [`crate::history`]), folding it into every customer's summary at the calibration end `T`
//! (pulse-core's `Partition` and `engine::summary`, the engine's own fold and history), and
//! writing the fragment, its provenance comments and the JSON report. The math is
//! `pulse_core::fit`. `pulse backtest --scoring fit` calls [`fit_loaded`], the same function.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use pulse_core::engine::{self, Summary};
use pulse_core::fit::{fit_all, FitError, FitOptions, FitReport};
use pulse_core::{Body, Millis, Partition, ScoringConfig};
use serde::Serialize;

use crate::config::Config;
use crate::history::{self, Loaded, Record};
use crate::replay::{parse_time, ReplayRange, UsageError};

#[derive(clap::Args, Debug)]
pub struct FitArgs {
    /// Service config: where the canonical log is (when it is the input) and the `[scoring]`
    /// the fit starts from (its time unit, CLV schedule and every key the fit does not set).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input: an NDJSON file of input events (or `pulse simulate --ndjson` lines) instead of
    /// the canonical log.
    #[arg(long)]
    pub ndjson: Option<PathBuf>,
    #[command(flatten)]
    pub range: ReplayRange,
    /// The calibration end T (RFC 3339 or epoch ms): events before T are fitted on. Default:
    /// just after the input's last event.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<Millis>,
    /// Share of customers in the high value tier.
    #[arg(long, default_value_t = 0.2)]
    pub high_share: f64,
    /// Share of customers in the mid value tier (the rest are low).
    #[arg(long, default_value_t = 0.3)]
    pub mid_share: f64,
    /// Optimiser starts per model (1 to 6).
    #[arg(long, default_value_t = 4)]
    pub starts: usize,
    /// Write the `[scoring]` fragment here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the fit report (every model's parameters, standard errors, log-likelihood,
    /// AIC/BIC and convergence) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How [`fit_loaded`] fits, besides the base rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitParams {
    pub high_share: f64,
    pub mid_share: f64,
    pub starts: usize,
}

impl Default for FitParams {
    fn default() -> Self {
        let d = FitOptions::default();
        FitParams {
            high_share: d.high_share,
            mid_share: d.mid_share,
            starts: d.starts,
        }
    }
}

/// A fit of a loaded history.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub report: FitReport,
    /// The base `[scoring]` with the fitted values and `rule_version` `<base>-fit-<date of T>`.
    pub scoring: ScoringConfig,
    pub until: Millis,
    /// Events folded (before T, after dropping repeats and erased customers' events).
    pub events: usize,
    pub seconds: f64,
}

/// Every customer's summary at `until`, from the events with `occurred_at < until`, each
/// partition through its own `Partition::step` in log order (the engine's fold, so the
/// summaries are the ones the service would compute). As fold does: an event id repeated
/// for the same customer is dropped (fold within its dedupe window, here over the whole
/// input, which holds fold's drops and at most some older repeats fold would keep), and a
/// `customer_erased` forgets the customer and drops its later events (erasure is permanent). Canonical-log ticks only move
/// timers, which no summary reads, so they are skipped. Returns the summaries (customers with
/// an order) and the number of events folded.
pub fn summaries_at(loaded: &Loaded, until: Millis, cfg: &ScoringConfig) -> (Vec<Summary>, usize) {
    let mut summaries = Vec::new();
    let mut folded = 0;
    for p in &loaded.partitions {
        let mut partition = Partition::new();
        let mut seen = std::collections::HashSet::new();
        let mut erased = std::collections::HashSet::new();
        for rec in &p.records {
            let Record::Event(e) = rec else { continue };
            if e.occurred_at >= until
                || erased.contains(e.customer_id.as_str())
                || !seen.insert((e.customer_id.as_str(), e.event_id.as_str()))
            {
                continue;
            }
            folded += 1;
            if e.body == Body::Erased {
                partition.remove(&e.customer_id);
                erased.insert(e.customer_id.as_str());
            } else {
                partition.step(e, cfg);
            }
        }
        summaries.extend(
            partition
                .customers()
                .filter_map(|(_, state)| engine::summary(state, until, cfg)),
        );
    }
    (summaries, folded)
}

/// Just after the last event: every event is before it.
pub fn end_of_input(loaded: &Loaded) -> Option<Millis> {
    loaded.events().map(|e| e.occurred_at).max().map(|t| t + 1)
}

/// Folds `loaded` up to `until` and fits `base`'s rules to it (one implementation for
/// `pulse fit` and `pulse backtest --scoring fit`).
pub fn fit_loaded(
    loaded: &Loaded,
    until: Millis,
    base: &ScoringConfig,
    params: FitParams,
) -> Result<Fitted, FitError> {
    let started = Instant::now();
    let (summaries, events) = summaries_at(loaded, until, base);
    eprintln!(
        "fit: {events} events before {} folded into {} customers with an order; fitting BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma",
        pulse_codec::time::format_rfc3339(until),
        summaries.len()
    );
    let opts = FitOptions {
        starts: params.starts,
        high_share: params.high_share,
        mid_share: params.mid_share,
        scoring: base.clone(),
        ..FitOptions::default()
    };
    let report = fit_all(&summaries, &opts)?;
    let mut scoring = report.apply(base);
    scoring.rule_version = format!("{}-fit-{}", base.rule_version, date_of(until));
    Ok(Fitted {
        report,
        scoring,
        until,
        events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `YYYY-MM-DD` of `t` (UTC).
fn date_of(t: Millis) -> String {
    pulse_codec::time::format_rfc3339(t)
        .chars()
        .take(10)
        .collect()
}

#[derive(Serialize)]
struct Fragment<'a> {
    scoring: &'a ScoringConfig,
}

/// The `[scoring]` fragment: provenance comments, then the whole fitted section.
pub fn fragment(fitted: &Fitted, input: &str, command: &str) -> anyhow::Result<String> {
    let r = &fitted.report;
    let mut s = String::new();
    let _ = writeln!(s, "# Fitted by `pulse fit`: {command}");
    let _ = writeln!(s, "# input: {input}");
    let _ = writeln!(
        s,
        "# calibration end (events before it): {}; {} events folded, {} customers with an order ({} distinct summaries)",
        pulse_codec::time::format_rfc3339(fitted.until),
        fitted.events,
        r.customers,
        r.distinct_summaries
    );
    for f in [&r.bg_nbd, &r.mbg_nbd, &r.pareto_nbd]
        .into_iter()
        .chain(r.gamma_gamma.as_ref())
    {
        let _ = writeln!(
            s,
            "# {:<11} log-likelihood {:.3}, AIC {:.3}, BIC {:.3}, converged {}",
            f.model, f.log_likelihood, f.aic, f.bic, f.convergence.converged
        );
    }
    let _ = writeln!(
        s,
        "# best by BIC: {}; value tiers: top {} high, next {} mid",
        r.best.as_str(),
        r.high_share,
        r.mid_share
    );
    s.push('\n');
    s.push_str(
        &toml::to_string(&Fragment {
            scoring: &fitted.scoring,
        })
        .context("serialize [scoring]")?,
    );
    Ok(s)
}

/// The short human summary for stderr.
pub fn summary(fitted: &Fitted) -> String {
    let r = &fitted.report;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fitted {} customers in {:.2} s; rule_version {}",
        r.customers, fitted.seconds, fitted.scoring.rule_version
    );
    for f in [&r.bg_nbd, &r.mbg_nbd, &r.pareto_nbd]
        .into_iter()
        .chain(r.gamma_gamma.as_ref())
    {
        let params: Vec<String> = f
            .params
            .iter()
            .map(|(n, v)| format!("{n}={v:.4}"))
            .collect();
        let _ = writeln!(
            s,
            "  {:<11} {:<48} LL {:>14.3}  BIC {:>14.3}{}",
            f.model,
            params.join(" "),
            f.log_likelihood,
            f.bic,
            if f.convergence.converged {
                ""
            } else {
                "  (not converged)"
            }
        );
    }
    let _ = writeln!(
        s,
        "  best by BIC: {}; value tiers: mid from {:.0}, high from {:.0} (minor units)",
        r.best.as_str(),
        r.value_tier.mid_from_minor,
        r.value_tier.high_from_minor
    );
    s
}

pub async fn fit(args: FitArgs) -> anyhow::Result<Fitted> {
    let config =
        Config::load(args.config.as_deref()).map_err(|e| UsageError(crate::error_chain(&e)))?;
    let loaded = match &args.ndjson {
        Some(path) => history::load_ndjson(path, &config)?,
        None => history::load_log(&config, &args.range).await?,
    };
    let until = match args.until.or_else(|| end_of_input(&loaded)) {
        Some(t) => t,
        None => anyhow::bail!("{}: no event to fit on", loaded.description),
    };
    let params = FitParams {
        high_share: args.high_share,
        mid_share: args.mid_share,
        starts: args.starts,
    };
    let fitted = fit_loaded(&loaded, until, &config.scoring, params)
        .map_err(|e| anyhow::anyhow!("fit: {e}"))?;
    let command: Vec<String> = std::env::args().collect();
    let text = fragment(&fitted, &loaded.description, &command.join(" "))?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&fitted.report)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    eprint!("{}", summary(&fitted));
    Ok(fitted)
}
