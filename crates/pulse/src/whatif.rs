//! `pulse whatif`: the same input replayed in memory with the live `[scoring]` and with a
//! candidate's, and what would differ. Replay and matching are pulse-core's
//! (`pulse_core::whatif`: `Replayer`, `compare`, where alert matching across rule versions is
//! defined); this module loads the input and the two configs and writes the summary, the
//! per-customer NDJSON diff and the JSON. Nothing reaches any topic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use pulse_core::whatif::{compare, Cause, CausedAlert, Replayer, Run, WhatIf};
use pulse_core::{CustomerState, Millis, ScoringConfig};

use crate::config::Config;
use crate::history::{self, Loaded, Record};
use crate::replay::{ReplayRange, UsageError};

#[derive(clap::Args, Debug)]
pub struct WhatIfArgs {
    /// The live config (its `[scoring]`, and where the canonical log is). Default: the
    /// built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The candidate config: only its `[scoring]` is used.
    #[arg(long)]
    pub candidate: PathBuf,
    /// Input: an NDJSON file of input events instead of the canonical log.
    #[arg(long)]
    pub ndjson: Option<PathBuf>,
    #[command(flatten)]
    pub range: ReplayRange,
    /// Write one JSON line per customer with any difference.
    #[arg(long)]
    pub diff: Option<PathBuf>,
    /// Write the whole comparison as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// How many customers to show with both explanations.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
}

/// Both runs over every partition: alerts with their causes, customers at the end.
pub struct Replayed {
    pub alerts: Vec<CausedAlert>,
    pub customers: BTreeMap<String, (CustomerState, Millis)>,
}

pub fn replay(loaded: &Loaded, cfg: &ScoringConfig) -> Replayed {
    let mut out = Replayed {
        alerts: Vec::new(),
        customers: BTreeMap::new(),
    };
    for p in &loaded.partitions {
        let mut r = Replayer::new();
        for (i, rec) in p.records.iter().enumerate() {
            let cause = Cause {
                partition: p.partition,
                offset: i as i64,
            };
            let step = match rec {
                Record::Event(e) => pulse_core::whatif::Step::Event(e),
                Record::Tick(t) => pulse_core::whatif::Step::Tick(*t),
            };
            r.feed(cause, step, cfg);
        }
        out.customers.extend(r.customers());
        out.alerts.append(&mut r.alerts);
    }
    out
}

/// Compares the two configs over `loaded`.
pub fn diff(loaded: &Loaded, live: &ScoringConfig, candidate: &ScoringConfig) -> WhatIf {
    let (l, c) = (replay(loaded, live), replay(loaded, candidate));
    compare(
        &Run {
            config: live,
            alerts: &l.alerts,
            customers: &l.customers,
        },
        &Run {
            config: candidate,
            alerts: &c.alerts,
            customers: &c.customers,
        },
    )
}

pub async fn whatif(args: WhatIfArgs) -> anyhow::Result<WhatIf> {
    let live = Config::load(args.config.as_deref())
        .map_err(|e| UsageError(format!("--config: {}", crate::error_chain(&e))))?;
    let candidate = Config::load(Some(&args.candidate))
        .map_err(|e| UsageError(format!("--candidate: {}", crate::error_chain(&e))))?;
    let loaded = match &args.ndjson {
        Some(path) => history::load_ndjson(path, &live)?,
        None => history::load_log(&live, &args.range).await?,
    };
    eprintln!(
        "whatif: {}; live rules {}, candidate {}",
        loaded.description, live.scoring.rule_version, candidate.scoring.rule_version
    );
    let w = diff(&loaded, &live.scoring, &candidate.scoring);
    print!("{}", summary(&w, args.examples));
    if let Some(path) = &args.diff {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        );
        for d in &w.diffs {
            serde_json::to_writer(&mut f, d)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&w)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(w)
}

/// The terminal summary: migration matrix, alerts per kind, crossings, examples.
pub fn summary(w: &WhatIf, examples: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} customers; live {} → candidate {}",
        w.customers, w.live_rule_version, w.candidate_rule_version
    );
    let _ = writeln!(s, "stage at the end (rows live, columns candidate):");
    let _ = write!(s, "  {:<12}", "");
    for st in &w.stages {
        let _ = write!(s, "{st:>12}");
    }
    s.push('\n');
    for (i, row) in w.migration.iter().enumerate() {
        let _ = write!(s, "  {:<12}", w.stages[i]);
        for v in row {
            let _ = write!(s, "{v:>12}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "alerts (matched on customer, kind, causing record, rank):\n  {:<24} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "kind", "live", "candidate", "unchanged", "changed", "gained", "lost"
    );
    for k in &w.alerts {
        let _ = writeln!(
            s,
            "  {:<24} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8}",
            k.kind, k.live, k.candidate, k.unchanged, k.changed, k.gained, k.lost
        );
    }
    let _ = writeln!(
        s,
        "risk at the end: {} entered at_risk/churned, {} left; churn-warned only live: {}, only candidate: {}",
        w.entered_risk.len(),
        w.left_risk.len(),
        w.warned_only_live.len(),
        w.warned_only_candidate.len()
    );
    let _ = writeln!(s, "customers with any difference: {}", w.diffs.len());
    for d in w.diffs.iter().take(examples) {
        let _ = writeln!(s, "example {}:", d.customer_id);
        for (name, side) in [("live", &d.live), ("candidate", &d.candidate)] {
            match side {
                Some(side) => {
                    let why: Vec<&str> = side
                        .reasons
                        .iter()
                        .take(3)
                        .map(|r| r.text.as_str())
                        .collect();
                    let _ = writeln!(
                        s,
                        "  {name:<9} {} (risk {:.2}): {}",
                        side.stage,
                        side.churn_risk,
                        why.join("; ")
                    );
                }
                None => {
                    let _ = writeln!(s, "  {name:<9} erased");
                }
            }
        }
        for a in &d.lost {
            let _ = writeln!(s, "  lost    {} {}→{}", a.kind, a.from, a.to);
        }
        for a in &d.gained {
            let _ = writeln!(s, "  gained  {} {}→{}", a.kind, a.from, a.to);
        }
        for (a, b) in &d.changed {
            let _ = writeln!(
                s,
                "  changed {} {}→{} / {}→{}",
                a.kind, a.from, a.to, b.from, b.to
            );
        }
    }
    s
}
