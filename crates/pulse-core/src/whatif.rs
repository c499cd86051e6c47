//! What-if: the difference between two replays of the same records, one with the live
//! `[scoring]` and one with a candidate. Pure: the shell replays both through a
//! [`crate::Partition`] and hands over each run's alerts (with the record that caused them)
//! and each customer's state at the end; [`compare`] matches and counts.
//!
//! # Matching alerts across rule versions
//!
//! An alert id hashes the rule version, so ids never match across configs on purpose. Two
//! alerts are *the same alert* when they share the key `(customer, kind, cause, n)`: `cause`
//! is the record whose processing emitted it (its canonical partition and offset, or its line
//! in an NDJSON file: for a timer, the record that moved the clock past the due time), and `n`
//! its rank among that customer's alerts of that kind at that cause (almost always 0). A
//! matched pair is *changed* when anything else differs: `from`, `to`, the instant (a timer
//! due at another time before the same record), the scores or the reasons (the rule version
//! aside). An alert whose key only the candidate has is *gained*, one only the live run has is
//! *lost*: an alert that merely moves to another record counts as one lost and one gained,
//! because a consumer would see it at another point of the log.
//!
//! # Risk crossings
//!
//! A customer *entered risk* under the candidate when their stage at the end is `at_risk` or
//! `churned` under the candidate and neither under the live config (*left risk*: the
//! reverse); *warned only live* / *warned only candidate*: at least one churn warning over
//! the whole replay under one config and none under the other.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::alert::{Alert, AlertKind, Reason};
use crate::config::ScoringConfig;
use crate::engine::{evaluate, reasons};
use crate::event::{Body, Event, Millis};
use crate::partition::Partition;
use crate::state::{CustomerState, Stage};

/// Where in the input a record sits: canonical partition and offset (an NDJSON file is
/// partition 0, offset = the line's index among the accepted lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cause {
    pub partition: i32,
    pub offset: i64,
}

/// An alert and the record that caused it; `index` is its rank among that record's alerts,
/// which, with the cause, makes its id ([`Alert::id`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CausedAlert {
    pub cause: Cause,
    pub index: u32,
    pub alert: Alert,
}

/// One run: its config, its alerts in emission order, and every customer's state with the
/// partition clock at the end.
pub struct Run<'a> {
    pub config: &'a ScoringConfig,
    pub alerts: &'a [CausedAlert],
    /// customer id → (state at the end, its partition's clock at the end).
    pub customers: &'a BTreeMap<String, (CustomerState, Millis)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIf {
    pub live_rule_version: String,
    pub candidate_rule_version: String,
    pub customers: usize,
    /// Stage names in the order of the matrix' rows (live) and columns (candidate).
    pub stages: Vec<&'static str>,
    /// `migration[i][j]`: customers announced `stages[i]` at the end under the live config and
    /// `stages[j]` under the candidate.
    pub migration: Vec<Vec<usize>>,
    pub alerts: Vec<KindCounts>,
    pub entered_risk: Vec<String>,
    pub left_risk: Vec<String>,
    pub warned_only_live: Vec<String>,
    pub warned_only_candidate: Vec<String>,
    /// Every customer with any difference, by id.
    pub diffs: Vec<CustomerDiff>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindCounts {
    pub kind: &'static str,
    pub live: usize,
    pub candidate: usize,
    pub unchanged: usize,
    pub changed: usize,
    pub gained: usize,
    pub lost: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerDiff {
    pub customer_id: String,
    /// `None` for a customer erased by the end.
    pub live: Option<Side>,
    pub candidate: Option<Side>,
    pub gained: Vec<AlertView>,
    pub lost: Vec<AlertView>,
    /// (live, candidate).
    pub changed: Vec<(AlertView, AlertView)>,
}

/// A customer at the end of one run, with the explanation of their risk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub stage: &'static str,
    pub churn_risk: f64,
    pub reasons: Vec<ReasonView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub kind: &'static str,
    pub cause: Cause,
    pub occurred_at: Millis,
    pub rule_version: String,
    pub from: &'static str,
    pub to: &'static str,
    pub scores: BTreeMap<&'static str, f64>,
    pub reasons: Vec<ReasonView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonView {
    pub signal: &'static str,
    pub value: f64,
    pub contribution: f64,
    pub text: String,
}

impl From<&Reason> for ReasonView {
    fn from(r: &Reason) -> Self {
        ReasonView {
            signal: r.signal.as_str(),
            value: r.value,
            contribution: r.contribution,
            text: r.text.clone(),
        }
    }
}

impl AlertView {
    pub fn of(a: &CausedAlert) -> Self {
        AlertView {
            kind: a.alert.kind.as_str(),
            cause: a.cause,
            occurred_at: a.alert.occurred_at,
            rule_version: a.alert.rule_version.clone(),
            from: a.alert.from,
            to: a.alert.to,
            scores: a.alert.scores.iter().map(|s| (s.name, s.value)).collect(),
            reasons: a.alert.reasons.iter().map(ReasonView::from).collect(),
        }
    }
}

type Key = (String, AlertKind, Cause, u32);

/// Each alert under its matching key (module docs).
fn keyed(alerts: &[CausedAlert]) -> BTreeMap<Key, &CausedAlert> {
    let mut rank: BTreeMap<(&str, AlertKind, Cause), u32> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for a in alerts {
        let n = rank
            .entry((a.alert.customer_id.as_str(), a.alert.kind, a.cause))
            .or_insert(0);
        out.insert((a.alert.customer_id.clone(), a.alert.kind, a.cause, *n), a);
        *n += 1;
    }
    out
}

/// The same alert in substance: all but the rule version (and so the id).
fn same(a: &Alert, b: &Alert) -> bool {
    a.from == b.from
        && a.to == b.to
        && a.occurred_at == b.occurred_at
        && a.scores == b.scores
        && a.reasons == b.reasons
}

fn side(state: &CustomerState, clock: Millis, cfg: &ScoringConfig) -> Side {
    let eval = evaluate(state, clock, cfg);
    Side {
        stage: state.announced.stage.as_str(),
        churn_risk: eval.churn_risk,
        reasons: reasons(&eval, AlertKind::ChurnWarning, cfg)
            .iter()
            .map(ReasonView::from)
            .collect(),
    }
}

/// Compares two runs over the same records (module docs).
pub fn compare(live: &Run<'_>, candidate: &Run<'_>) -> WhatIf {
    let (lk, ck) = (keyed(live.alerts), keyed(candidate.alerts));
    let mut counts: BTreeMap<AlertKind, KindCounts> = AlertKind::ALL
        .iter()
        .map(|k| {
            (
                *k,
                KindCounts {
                    kind: k.as_str(),
                    live: 0,
                    candidate: 0,
                    unchanged: 0,
                    changed: 0,
                    gained: 0,
                    lost: 0,
                },
            )
        })
        .collect();
    #[derive(Default)]
    struct Acc {
        gained: Vec<AlertView>,
        lost: Vec<AlertView>,
        changed: Vec<(AlertView, AlertView)>,
    }
    let mut per: BTreeMap<String, Acc> = BTreeMap::new();
    for (key, a) in &lk {
        let c = counts.get_mut(&key.1).expect("every kind");
        c.live += 1;
        match ck.get(key) {
            None => {
                c.lost += 1;
                per.entry(key.0.clone())
                    .or_default()
                    .lost
                    .push(AlertView::of(a));
            }
            Some(b) if same(&a.alert, &b.alert) => c.unchanged += 1,
            Some(b) => {
                c.changed += 1;
                per.entry(key.0.clone())
                    .or_default()
                    .changed
                    .push((AlertView::of(a), AlertView::of(b)));
            }
        }
    }
    for (key, b) in &ck {
        let c = counts.get_mut(&key.1).expect("every kind");
        c.candidate += 1;
        if !lk.contains_key(key) {
            c.gained += 1;
            per.entry(key.0.clone())
                .or_default()
                .gained
                .push(AlertView::of(b));
        }
    }
    let warned = |alerts: &[CausedAlert]| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| a.alert.kind == AlertKind::ChurnWarning)
            .map(|a| a.alert.customer_id.clone())
            .collect()
    };
    let (wl, wc) = (warned(live.alerts), warned(candidate.alerts));
    let index = |s: Stage| Stage::ALL.iter().position(|x| *x == s).expect("a stage");
    let mut migration = vec![vec![0; Stage::ALL.len()]; Stage::ALL.len()];
    let (mut entered_risk, mut left_risk) = (Vec::new(), Vec::new());
    let mut diffs = Vec::new();
    // Erased customers have no state at the end but may have alerts: the union of both.
    let ids: BTreeSet<String> = live
        .customers
        .keys()
        .chain(candidate.customers.keys())
        .chain(per.keys())
        .cloned()
        .collect();
    for id in ids {
        let (ls, cs) = (live.customers.get(&id), candidate.customers.get(&id));
        let (a, b) = (
            ls.map(|s| s.0.announced.stage),
            cs.map(|s| s.0.announced.stage),
        );
        if let (Some(a), Some(b)) = (a, b) {
            migration[index(a)][index(b)] += 1;
            if b.is_risk() && !a.is_risk() {
                entered_risk.push(id.clone());
            }
            if a.is_risk() && !b.is_risk() {
                left_risk.push(id.clone());
            }
        }
        let acc = per.remove(&id);
        if a != b || acc.is_some() {
            let acc = acc.unwrap_or_default();
            diffs.push(CustomerDiff {
                customer_id: id,
                live: ls.map(|(s, clock)| side(s, *clock, live.config)),
                candidate: cs.map(|(s, clock)| side(s, *clock, candidate.config)),
                gained: acc.gained,
                lost: acc.lost,
                changed: acc.changed,
            });
        }
    }
    WhatIf {
        live_rule_version: live.config.rule_version.clone(),
        candidate_rule_version: candidate.config.rule_version.clone(),
        customers: live.customers.len().max(candidate.customers.len()),
        stages: Stage::ALL.iter().map(|s| s.as_str()).collect(),
        migration,
        alerts: counts.into_values().collect(),
        entered_risk,
        left_risk,
        warned_only_live: wl.difference(&wc).cloned().collect(),
        warned_only_candidate: wc.difference(&wl).cloned().collect(),
        diffs,
    }
}

/// What a replay step is: an event, or a tick that only moves the clock.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Event(&'a Event),
    Tick(Millis),
}

/// Drives one [`Partition`] over records in log order, as fold does minus what is fold's own
/// I/O (no event-id dedupe, no outbox): each record advances the clock (timers fire), then an
/// event is applied, or forgets its customer if it is an erasure. Every alert is kept with
/// the record that caused it. The what-if and the backtest drive both their runs through this.
#[derive(Debug, Clone, Default)]
pub struct Replayer {
    pub partition: Partition,
    pub alerts: Vec<CausedAlert>,
}

impl Replayer {
    pub fn new() -> Self {
        Replayer::default()
    }

    /// Processes one record; returns how many alerts it caused (the last ones of `alerts`).
    pub fn feed(&mut self, cause: Cause, step: Step<'_>, cfg: &ScoringConfig) -> usize {
        let before = self.alerts.len();
        let time = match step {
            Step::Event(e) => e.occurred_at,
            Step::Tick(t) => t,
        };
        let mut fired = Vec::new();
        self.partition
            .advance(time, cfg, |_, _, _, alerts| fired.extend(alerts));
        if let Step::Event(e) = step {
            if e.body == Body::Erased {
                self.partition.remove(&e.customer_id);
            } else {
                fired.extend(self.partition.apply(e, cfg));
            }
        }
        for (i, alert) in fired.into_iter().enumerate() {
            self.alerts.push(CausedAlert {
                cause,
                index: i as u32,
                alert,
            });
        }
        self.alerts.len() - before
    }

    /// Every customer's state with the clock, for [`Run::customers`].
    pub fn customers(&self) -> BTreeMap<String, (CustomerState, Millis)> {
        let clock = self.partition.clock();
        self.partition
            .customers()
            .map(|(id, s)| (id.clone(), (s.clone(), clock)))
            .collect()
    }
}
