//! A deterministic, seeded customer simulator: the raw Kafka input records a real shop would
//! produce on `customer.orders`, `customer.clickstream` and `customer.support`, in the exact JSON
//! wire format ingest accepts, plus a small share of deliberately malformed records.
//!
//! This module owns only generation. It is a pure library: no I/O, no clock, no threads, no
//! global state, and nothing but `serde`/`serde_json`. Tests, the demo and the benchmarks all
//! replay the same population from a `(SimConfig, seed)` pair, so a given seed yields
//! byte-identical output on every machine and run.
//!
//! # Generative model
//!
//! Purchases follow the BG/NBD ("buy till you die") story, because that is the model churn
//! scoring is implicitly reasoning about and it gives a realistic, heterogeneous population:
//!
//! * each buyer has a purchase rate λ ~ Gamma(r = 0.8, mean 1/30 days) — heavy heterogeneity,
//!   from monthly buyers to once-a-year ones — and a small "weekly" segment with λ ≈ 1/7 days;
//! * after every purchase the buyer drops out ("dies") with probability p ~ Beta(a, b); once
//!   dropped there are no more orders and browsing fades out within a few weeks;
//! * customers join at a uniformly random instant in the first 30% of the window, and ~15% are
//!   prospects who browse a few times but never buy.
//!
//! Around that skeleton: browsing sessions (a landing page, then product views, searches and
//! cart changes 10 s – 5 min apart; some carts are abandoned, some even at checkout), most
//! orders preceded by a session that ends in `checkout_started`, log-normal basket values of
//! roughly 20–80 in the configured currency, ~3% of orders later cancelled or refunded, and
//! support tickets (opened → first response hours later → resolved days later → CSAT), with
//! occasional NPS and free-text feedback. Unhappy support outcomes raise the dropout
//! probability and can end the relationship on the spot, so churn correlates with support the
//! way the scoring rules expect.
//!
//! # Laziness and ordering
//!
//! Each customer is a small state machine with three point processes (next purchase, next
//! browsing session, next background ticket) and a tiny queue of already-scheduled future
//! events (the rest of a session, a refund days later, a ticket's lifecycle). A process is
//! only expanded once every queued event before it has been emitted, and an expansion at time
//! `t` only schedules events at or after `t`; hence each customer's stream is non-decreasing
//! and memory per customer stays bounded. [`Simulator`] merges the customers with a
//! `BinaryHeap` keyed by `(time, customer index, sequence)`, so the global order is total and
//! deterministic. A customer's stream depends only on `(seed, customer index)`: adding
//! customers does not change existing ones.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use serde::Serialize;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// 2025-01-01T00:00:00Z in epoch milliseconds.
const DEFAULT_START_MS: i64 = 1_735_689_600_000;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub customers: u32,
    pub seed: u64,
    /// Start of the simulated window, epoch milliseconds UTC.
    pub start_ms: i64,
    /// Length of the window; events after `start_ms + duration_ms` are not produced.
    pub duration_ms: i64,
    /// Share of all records that are malformed, per thousand (2 = 0.2%).
    pub malformed_per_mille: u32,
    /// ISO-4217 code written into every order.
    pub currency: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customers: 2_000,
            seed: 42,
            start_ms: DEFAULT_START_MS,
            duration_ms: 365 * DAY,
            malformed_per_mille: 2,
            currency: "EUR".to_owned(),
        }
    }
}

/// The input topic a record belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimTopic {
    Orders,
    Clickstream,
    Support,
}

impl SimTopic {
    /// The conventional topic name (deployments may rename topics in config).
    pub fn as_str(self) -> &'static str {
        match self {
            SimTopic::Orders => "customer.orders",
            SimTopic::Clickstream => "customer.clickstream",
            SimTopic::Support => "customer.support",
        }
    }
}

/// One raw record as a producer would write it to Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    pub topic: SimTopic,
    /// The message key: the customer id, or `None` when the record has no customer id.
    pub key: Option<String>,
    /// The true event time in epoch milliseconds, whatever the value says.
    pub occurred_at: i64,
    /// The message value: JSON bytes (not even that for `bad_json`).
    pub value: Vec<u8>,
    /// `None` for a well-formed record; otherwise the reason a correct validator should give:
    /// `bad_json`, `missing_field:customer_id`, `missing_field:event_id`, `unknown_type`,
    /// `bad_amount` or `bad_timestamp`.
    pub malformed: Option<&'static str>,
}

impl SimRecord {
    /// The record decoded and validated as ingest does it (JSON, `ingest.max_record_bytes`).
    pub fn decode(
        &self,
        max_record_bytes: usize,
    ) -> Result<pulse_core::Event, pulse_codec::Rejection> {
        let family = match self.topic {
            SimTopic::Orders => pulse_codec::Family::Orders,
            SimTopic::Clickstream => pulse_codec::Family::Clickstream,
            SimTopic::Support => pulse_codec::Family::Support,
        };
        pulse_codec::decode_input(
            family,
            pulse_codec::Encoding::Json,
            &self.value,
            max_record_bytes,
        )
    }
}

/// RFC 3339 text as pulse's own codec writes it (one implementation for the whole workspace).
use pulse_codec::time::format_rfc3339 as rfc3339;

// ---------------------------------------------------------------------------------------------
// Randomness: our own PRNG and samplers, so output never changes with a dependency's version.
// ---------------------------------------------------------------------------------------------

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stateless 64-bit mixer, used to derive independent seeds and per-event coin flips.
fn mix64(x: u64) -> u64 {
    let mut s = x;
    splitmix64(&mut s)
}

/// xoshiro256**: fast, small state, good statistical quality; seeded through splitmix64 as its
/// authors recommend so that nearby seeds give unrelated streams. Public so that tests needing
/// seeded randomness (the crash loop's kill schedule) use this one generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1], safe to take the logarithm of.
    fn open01(&mut self) -> f64 {
        1.0 - self.f64()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Uniform in 0..n (multiply-shift; the bias is far below anything a simulation notices).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Log-uniform in [lo, hi): as many short gaps between 10 s and 1 min as between 1 and 5 min.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.f64()).exp()
    }

    fn exp(&mut self, rate: f64) -> f64 {
        -self.open01().ln() / rate
    }

    /// Standard normal via Box–Muller (the second variate is dropped to keep the state simple).
    fn normal(&mut self) -> f64 {
        let u1 = self.open01();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Gamma(shape, scale) by Marsaglia–Tsang; shape < 1 uses the boost `G(a+1)·U^(1/a)`.
    fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            let u = self.open01();
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.open01();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }

    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a, 1.0);
        let y = self.gamma(b, 1.0);
        if x + y > 0.0 {
            x / (x + y)
        } else {
            0.5
        }
    }

    /// Number of failures before a success, with the given mean.
    fn geometric(&mut self, mean: f64) -> u32 {
        let p = 1.0 / (1.0 + mean);
        (self.open01().ln() / (1.0 - p).ln()).floor().min(1e6) as u32
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }

    /// An index into `weights`, chosen proportionally to the weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut roll = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if roll < w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }
}

/// `t` plus a duration in days. Clamped and saturating because heavy-tailed samples (a
/// once-a-century buyer) must push an event past the window, never overflow.
fn after_days(t: i64, days: f64) -> i64 {
    t.saturating_add((days.clamp(0.0, 36_500.0) * DAY as f64) as i64)
}

fn after_secs(t: i64, secs: f64) -> i64 {
    t.saturating_add((secs.max(0.0) * SECOND as f64) as i64)
}

// ---------------------------------------------------------------------------------------------
// Catalogue and vocabulary.
// ---------------------------------------------------------------------------------------------

const CATALOG_SIZE: u32 = 400;
const CATEGORIES: [&str; 8] = [
    "shoes",
    "jackets",
    "bags",
    "accessories",
    "outdoor",
    "kids",
    "sale",
    "new-in",
];
const QUERIES: [&str; 10] = [
    "running shoes",
    "rain jacket",
    "backpack",
    "wool socks",
    "gift card",
    "winter boots",
    "yoga mat",
    "sunglasses",
    "water bottle",
    "hiking pants",
];
const FEEDBACK_POSITIVE: [&str; 4] = [
    "Fast delivery, great quality.",
    "Love the new collection!",
    "Support sorted it out quickly, thanks.",
    "Easy checkout and painless returns.",
];
const FEEDBACK_NEUTRAL: [&str; 4] = [
    "Delivery was okay.",
    "Product as described.",
    "Would like more sizes.",
    "Average experience overall.",
];
const FEEDBACK_NEGATIVE: [&str; 4] = [
    "Package arrived damaged and nobody answered.",
    "My refund is taking forever.",
    "Terrible support, I am switching shops.",
    "Item never arrived.",
];

/// A popular-biased SKU: squaring a uniform puts most traffic on the head of the catalogue.
fn popular_sku(rng: &mut Rng) -> u32 {
    let u = rng.f64();
    ((u * u * f64::from(CATALOG_SIZE)) as u32).min(CATALOG_SIZE - 1)
}

/// A SKU's unit price in minor units. Derived from the SKU alone (not the seed) so the
/// catalogue is the same in every simulation, like a real shop's.
fn sku_price_minor(sku: u32) -> i64 {
    let mut r = Rng::seeded(0x5EED_CA7A_1060_0000 ^ u64::from(sku));
    let units = r.lognormal(18.0, 0.65).clamp(2.0, 400.0).floor() as i64;
    units * 100 + [99, 50, 0, 95][r.below(4) as usize]
}

fn sku_name(sku: u32) -> String {
    format!("sku-{sku:05}")
}

/// Minor units as a decimal string, "23.50".
fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

// ---------------------------------------------------------------------------------------------
// Scheduled actions: compact descriptions, rendered to JSON only when emitted.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Page {
    Home,
    Category(u8),
    Product(u32),
    Search(u8),
    Cart,
    Checkout,
    Help,
}

impl Page {
    fn url(self) -> String {
        match self {
            Page::Home => "/".to_owned(),
            Page::Category(c) => format!("/c/{}", CATEGORIES[usize::from(c)]),
            Page::Product(sku) => format!("/p/{}", sku_name(sku)),
            Page::Search(q) => format!("/search?q={}", QUERIES[usize::from(q)].replace(' ', "+")),
            Page::Cart => "/cart".to_owned(),
            Page::Checkout => "/checkout".to_owned(),
            Page::Help => "/help".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Item {
    sku: u32,
    quantity: u32,
    unit_price_minor: i64,
}

#[derive(Debug, Clone, Copy)]
struct Feedback {
    text: &'static str,
    /// -1, 0 or 1: which vocabulary the text came from (drives the dropout effect even when no
    /// numeric sentiment is attached).
    tone: i8,
    sentiment: Option<f64>,
}

#[derive(Debug, Clone)]
enum Action {
    Click {
        kind: &'static str,
        session: u32,
        page: Page,
        sku: Option<u32>,
        channel: Option<&'static str>,
    },
    Order {
        kind: &'static str,
        order: u32,
        amount_minor: i64,
        /// Only `order_placed` carries items.
        items: Option<Vec<Item>>,
        channel: Option<&'static str>,
    },
    Support {
        kind: &'static str,
        ticket: Option<u32>,
        score: Option<u8>,
        feedback: Option<Feedback>,
        priority: Option<&'static str>,
        channel: Option<&'static str>,
    },
}

impl Action {
    fn topic(&self) -> SimTopic {
        match self {
            Action::Click { .. } => SimTopic::Clickstream,
            Action::Order { .. } => SimTopic::Orders,
            Action::Support { .. } => SimTopic::Support,
        }
    }
}

/// A queued action; ordered by time, then insertion order so ties stay deterministic.
#[derive(Debug)]
struct Pending {
    at: i64,
    n: u64,
    action: Action,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.n) == (other.at, other.n)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.n).cmp(&(other.at, other.n))
    }
}

/// The next event a customer will emit.
#[derive(Debug)]
struct Head {
    at: i64,
    seq: u64,
    action: Action,
}

// ---------------------------------------------------------------------------------------------
// The per-customer state machine.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Prospect,
    Regular,
    Weekly,
}

#[derive(Debug)]
struct Customer {
    idx: u32,
    id: String,
    rng: Rng,
    /// Seeds the per-event coin flips done at render time (render must be pure so a malformed
    /// copy of a record can be made without disturbing the stream).
    salt: u64,
    segment: Segment,
    /// Purchases per day (λ); 0 for prospects.
    purchase_rate: f64,
    /// Browse-only sessions per day.
    browse_rate: f64,
    /// Background (not order-related) tickets per day.
    ticket_rate: f64,
    /// BG/NBD dropout probability after each purchase; raised by bad experiences.
    p_drop: f64,
    /// Latent satisfaction in 0..1 that drives CSAT, NPS and feedback tone.
    mood: f64,
    device: &'static str,
    next_purchase: Option<i64>,
    next_browse: Option<i64>,
    next_ticket: Option<i64>,
    dropped_at: Option<i64>,
    prospect_sessions_left: u32,
    sessions: u32,
    orders: u32,
    tickets: u32,
    pending: BinaryHeap<Reverse<Pending>>,
    pending_n: u64,
    emitted: u64,
    head: Option<Head>,
}

/// Browsing of a dropped-out customer decays with this time constant: a few lingering visits
/// in the first weeks, then silence.
const FADE_TAU_DAYS: f64 = 7.0;

impl Customer {
    fn new(idx: u32, root: u64, start_ms: i64, duration_ms: i64) -> Self {
        let mut rng = Rng::seeded(mix64(root ^ mix64(u64::from(idx) ^ 0xC057_0E12)));
        let salt = rng.next_u64();
        let join = start_ms + (rng.f64() * 0.3 * duration_ms.max(0) as f64) as i64;
        let roll = rng.f64();
        // 15% prospects; of the buyers about 8% are weekly shoppers.
        let segment = if roll < 0.15 {
            Segment::Prospect
        } else if roll < 0.15 + 0.85 * 0.08 {
            Segment::Weekly
        } else {
            Segment::Regular
        };
        let (purchase_rate, p_drop) = match segment {
            Segment::Prospect => (0.0, 0.0),
            // Tight Gamma around one purchase a week; loyal, so a low dropout probability
            // (≈15 purchases expected), which makes their eventual silence easy to see.
            Segment::Weekly => (rng.gamma(16.0, 1.0 / (16.0 * 7.0)), rng.beta(1.0, 14.0)),
            // Shape 0.8 gives the long tail of rare buyers; the floor keeps gaps finite.
            Segment::Regular => (
                rng.gamma(0.8, 1.0 / (0.8 * 30.0)).max(1.0 / 1_000.0),
                rng.beta(1.2, 7.0),
            ),
        };
        let browse_rate = match segment {
            Segment::Prospect => 1.0 / rng.range(3.0, 30.0),
            _ => purchase_rate * rng.range(0.5, 2.5) + 1.0 / 45.0,
        };
        let ticket_rate = if segment == Segment::Prospect {
            1.0 / 900.0
        } else {
            1.0 / 240.0
        };
        let mood = rng.beta(5.0, 2.0);
        let device = if rng.chance(0.6) { "web" } else { "app" };
        let next_purchase = match segment {
            Segment::Prospect => None,
            // Half are acquired by a purchase; the rest browse first and buy later.
            _ if rng.chance(0.5) => Some(join),
            _ => Some(after_days(join, rng.exp(purchase_rate))),
        };
        let next_browse = if next_purchase == Some(join) {
            Some(after_days(join, rng.exp(browse_rate)))
        } else {
            Some(join)
        };
        let next_ticket = Some(after_days(join, rng.exp(ticket_rate)));
        let prospect_sessions_left = 1 + rng.geometric(3.0);
        Customer {
            idx,
            id: format!("c-{idx:06}"),
            rng,
            salt,
            segment,
            purchase_rate,
            browse_rate,
            ticket_rate,
            p_drop,
            mood,
            device,
            next_purchase,
            next_browse,
            next_ticket,
            dropped_at: None,
            prospect_sessions_left,
            sessions: 0,
            orders: 0,
            tickets: 0,
            pending: BinaryHeap::new(),
            pending_n: 0,
            emitted: 0,
            head: None,
        }
    }

    /// When the next process fires; before the first event, that is the join instant.
    fn wake_at(&self) -> Option<i64> {
        [self.next_purchase, self.next_browse, self.next_ticket]
            .into_iter()
            .flatten()
            .min()
    }

    fn push(&mut self, at: i64, action: Action) {
        self.pending_n += 1;
        self.pending.push(Reverse(Pending {
            at,
            n: self.pending_n,
            action,
        }));
    }

    /// Computes the next event (into `head`), expanding processes only as far as needed.
    fn advance(&mut self, end: i64) {
        self.head = None;
        loop {
            let process_at = self.wake_at();
            let pending_at = self.pending.peek().map(|p| p.0.at);
            match (pending_at, process_at) {
                // Queued events at or before every process's next firing are final.
                (Some(p), proc_at) if proc_at.is_none_or(|t| p <= t) => {
                    if p > end {
                        self.pending = BinaryHeap::new();
                        return;
                    }
                    let Some(Reverse(next)) = self.pending.pop() else {
                        return;
                    };
                    // Most customers sit idle for days between sessions; giving the queue's
                    // buffer back then keeps a 100k-customer run at a few bytes per idle one.
                    if self.pending.is_empty() {
                        self.pending = BinaryHeap::new();
                    }
                    self.apply_effects(next.at, &next.action);
                    self.emitted += 1;
                    self.head = Some(Head {
                        at: next.at,
                        seq: self.emitted,
                        action: next.action,
                    });
                    return;
                }
                (_, Some(t)) => {
                    if t > end {
                        // The stream is over: whatever is still queued lies past the window.
                        self.pending = BinaryHeap::new();
                        return;
                    }
                    if self.next_purchase == Some(t) {
                        self.expand_purchase(t);
                    } else if self.next_browse == Some(t) {
                        self.expand_browse(t);
                    } else {
                        self.expand_ticket(t);
                    }
                }
                (None, None) => return,
                // Unreachable: a pending event with no process always takes the first arm.
                (Some(_), None) => return,
            }
        }
    }

    /// Customer reactions happen when the event happens, not when it was scheduled, so a bad
    /// CSAT only affects purchases after it.
    fn apply_effects(&mut self, at: i64, action: &Action) {
        if let Action::Support {
            kind,
            score,
            feedback,
            ..
        } = action
        {
            match (*kind, score, feedback) {
                ("csat_submitted", Some(s), _) if *s <= 2 => self.unhappy(at, 1.0),
                ("nps_submitted", Some(s), _) if *s <= 4 => self.unhappy(at, 0.5),
                ("feedback_submitted", _, Some(f)) if f.tone < 0 => self.unhappy(at, 0.5),
                _ => {}
            }
        }
    }

    /// A bad experience makes a later dropout likelier and can end the relationship now.
    fn unhappy(&mut self, at: i64, severity: f64) {
        if self.segment == Segment::Prospect || self.dropped_at.is_some() {
            return;
        }
        self.p_drop = (self.p_drop * (1.0 + severity) + 0.05 * severity).min(0.95);
        if self.rng.chance(0.25 * severity) {
            self.dropped_at = Some(at);
            self.next_purchase = None;
        }
    }

    /// 1 while active; decays after dropout (thinning of the browsing process).
    fn fade(&self, t: i64) -> f64 {
        match self.dropped_at {
            Some(d) if t > d => (-((t - d) as f64 / DAY as f64) / FADE_TAU_DAYS).exp(),
            _ => 1.0,
        }
    }

    fn click_gap(&mut self, t: i64) -> i64 {
        after_secs(t, self.rng.log_uniform(10.0, 300.0))
    }

    fn click_channel(&mut self) -> Option<&'static str> {
        self.rng.chance(0.7).then_some(self.device)
    }

    fn click(&mut self, at: i64, kind: &'static str, session: u32, page: Page, sku: Option<u32>) {
        let channel = self.click_channel();
        self.push(
            at,
            Action::Click {
                kind,
                session,
                page,
                sku,
                channel,
            },
        );
    }

    /// Queues one browsing session starting at `t0` and returns the time of its last event.
    /// With a basket, the session ends by putting the basket in the cart and starting checkout.
    fn session(&mut self, t0: i64, basket: Option<&[Item]>) -> i64 {
        self.sessions += 1;
        let s = self.sessions;
        let mut t = t0;
        let landing = match self.rng.weighted(&[50, 25, 15, 10]) {
            0 => Page::Home,
            1 => Page::Category(self.rng.below(CATEGORIES.len() as u32) as u8),
            2 => Page::Product(popular_sku(&mut self.rng)),
            _ => Page::Help,
        };
        let landing_sku = match landing {
            Page::Product(sku) => Some(sku),
            _ => None,
        };
        self.click(t, "page_view", s, landing, landing_sku);
        let steps = if basket.is_some() {
            self.rng.geometric(1.5).min(6)
        } else {
            1 + self.rng.geometric(3.0).min(14)
        };
        let mut last_sku = landing_sku;
        let mut cart: Vec<u32> = Vec::new();
        for _ in 0..steps {
            t = self.click_gap(t);
            let roll = self.rng.below(100);
            match (roll, last_sku) {
                (0..=34, _) => {
                    let sku = popular_sku(&mut self.rng);
                    last_sku = Some(sku);
                    self.click(t, "product_view", s, Page::Product(sku), Some(sku));
                }
                (35..=49, _) => {
                    let q = self.rng.below(QUERIES.len() as u32) as u8;
                    self.click(t, "search", s, Page::Search(q), None);
                }
                // Random cart changes only in browse sessions: a purchase session's cart is
                // exactly its basket.
                (65..=79, Some(sku)) if basket.is_none() && cart.len() < 4 => {
                    cart.push(sku);
                    self.click(t, "add_to_cart", s, Page::Product(sku), Some(sku));
                }
                (80..=84, _) if !cart.is_empty() => {
                    let sku = cart.swap_remove(self.rng.below(cart.len() as u32) as usize);
                    self.click(t, "remove_from_cart", s, Page::Cart, Some(sku));
                }
                _ => {
                    let c = self.rng.below(CATEGORIES.len() as u32) as u8;
                    self.click(t, "page_view", s, Page::Category(c), None);
                }
            }
        }
        match basket {
            Some(items) => {
                for item in items {
                    t = self.click_gap(t);
                    self.click(
                        t,
                        "product_view",
                        s,
                        Page::Product(item.sku),
                        Some(item.sku),
                    );
                    t = self.click_gap(t);
                    self.click(t, "add_to_cart", s, Page::Product(item.sku), Some(item.sku));
                }
                t = self.click_gap(t);
                self.click(t, "page_view", s, Page::Cart, None);
                t = self.click_gap(t);
                self.click(t, "checkout_started", s, Page::Checkout, None);
            }
            // Abandoned carts: most never reach checkout, some give up on the checkout page.
            None if !cart.is_empty() && self.rng.chance(0.3) => {
                t = self.click_gap(t);
                self.click(t, "page_view", s, Page::Cart, None);
                t = self.click_gap(t);
                self.click(t, "checkout_started", s, Page::Checkout, None);
            }
            None => {}
        }
        t
    }

    /// 1–4 distinct-ish lines; log-normal prices make totals land mostly around 20–80.
    fn basket(&mut self) -> Vec<Item> {
        let lines = 1 + self.rng.geometric(0.8).min(3);
        (0..lines)
            .map(|_| {
                let sku = popular_sku(&mut self.rng);
                let quantity = match self.rng.weighted(&[85, 12, 3]) {
                    0 => 1,
                    1 => 2,
                    _ => 3,
                };
                Item {
                    sku,
                    quantity,
                    unit_price_minor: sku_price_minor(sku),
                }
            })
            .collect()
    }

    fn expand_purchase(&mut self, t: i64) {
        self.orders += 1;
        let order = self.orders;
        let items = self.basket();
        let amount_minor: i64 = items
            .iter()
            .map(|i| i.unit_price_minor * i64::from(i.quantity))
            .sum();
        // Most orders follow a session; the rest are one-click/app re-orders.
        let placed_at = if self.rng.chance(0.85) {
            let end = self.session(t, Some(&items));
            after_secs(end, self.rng.range(20.0, 180.0))
        } else {
            t
        };
        let channel = self.rng.chance(0.85).then_some(self.device);
        let first_item_minor = items[0].unit_price_minor * i64::from(items[0].quantity);
        self.push(
            placed_at,
            Action::Order {
                kind: "order_placed",
                order,
                amount_minor,
                items: Some(items),
                channel,
            },
        );
        let follow_up = self.rng.f64();
        if follow_up < 0.015 {
            let at = after_secs(placed_at, self.rng.log_uniform(600.0, 36.0 * 3_600.0));
            self.push(
                at,
                Action::Order {
                    kind: "order_cancelled",
                    order,
                    amount_minor,
                    items: None,
                    channel,
                },
            );
        } else if follow_up < 0.03 {
            let at = after_days(placed_at, self.rng.range(3.0, 21.0));
            // Partial refunds return one line of a multi-line order.
            let refund = if self.rng.chance(0.7) {
                amount_minor
            } else {
                first_item_minor
            };
            self.push(
                at,
                Action::Order {
                    kind: "order_refunded",
                    order,
                    amount_minor: refund,
                    items: None,
                    channel,
                },
            );
        }
        if self.rng.chance(0.05) {
            let at = after_days(placed_at, self.rng.range(0.5, 10.0));
            self.open_ticket(at);
        }
        if self.rng.chance(0.04) {
            let at = after_days(placed_at, self.rng.range(2.0, 14.0));
            self.push_nps(at);
        }
        if self.rng.chance(0.015) {
            let at = after_days(placed_at, self.rng.range(0.05, 5.0));
            self.push_feedback(at, None, self.mood);
        }
        // BG/NBD: the coin for "dies after this purchase" is tossed at every purchase.
        if self.rng.chance(self.p_drop) {
            self.dropped_at = Some(placed_at);
            self.next_purchase = None;
        } else {
            self.next_purchase = Some(after_days(placed_at, self.rng.exp(self.purchase_rate)));
        }
    }

    fn expand_browse(&mut self, t: i64) {
        let fade = self.fade(t);
        if fade < 0.02 {
            self.next_browse = None;
            return;
        }
        let mut resume = t;
        if self.rng.chance(fade) {
            resume = self.session(t, None);
            if self.segment == Segment::Prospect {
                self.prospect_sessions_left = self.prospect_sessions_left.saturating_sub(1);
                if self.prospect_sessions_left == 0 {
                    self.next_browse = None;
                    return;
                }
            }
        }
        // From the end of the session, so one customer's sessions never overlap.
        self.next_browse = Some(after_days(resume, self.rng.exp(self.browse_rate)));
    }

    fn expand_ticket(&mut self, t: i64) {
        if self.dropped_at.is_some() {
            self.next_ticket = None;
            return;
        }
        self.open_ticket(t);
        self.next_ticket = Some(after_days(t, self.rng.exp(self.ticket_rate)));
    }

    /// A bare ticket step: only the ticket id, as helpdesk webhooks send them.
    fn ticket_step(kind: &'static str, ticket: Option<u32>) -> Action {
        Action::Support {
            kind,
            ticket,
            score: None,
            feedback: None,
            priority: None,
            channel: None,
        }
    }

    /// Queues a whole ticket lifecycle; all steps are in the future of `t`.
    fn open_ticket(&mut self, t: i64) {
        self.tickets += 1;
        let ticket = Some(self.tickets);
        let channel = Some(self.rng.pick(&["email", "chat", "phone", "email"]));
        let priority =
            Some(["low", "normal", "high", "urgent"][self.rng.weighted(&[30, 50, 15, 5])]);
        self.push(
            t,
            Action::Support {
                kind: "ticket_opened",
                ticket,
                score: None,
                feedback: None,
                priority,
                channel,
            },
        );
        let first = after_secs(t, self.rng.lognormal(3.0, 1.1).clamp(0.05, 72.0) * 3_600.0);
        self.push(first, Self::ticket_step("ticket_first_response", ticket));
        // A few tickets are never closed.
        if !self.rng.chance(0.95) {
            return;
        }
        let resolved = after_days(first, self.rng.lognormal(1.2, 0.9).clamp(0.02, 21.0));
        self.push(resolved, Self::ticket_step("ticket_resolved", ticket));
        if !self.rng.chance(0.65) {
            return;
        }
        // Slow handling costs satisfaction on top of the customer's disposition.
        let slow = first - t > DAY || resolved - t > 7 * DAY;
        let q = self.mood + 0.15 * self.rng.normal() - if slow { 0.3 } else { 0.0 };
        let score = (1.0 + (q * 5.0).floor()).clamp(1.0, 5.0) as u8;
        let at = after_secs(resolved, self.rng.log_uniform(300.0, 2.0 * 86_400.0));
        self.push(
            at,
            Action::Support {
                kind: "csat_submitted",
                ticket,
                score: Some(score),
                feedback: None,
                priority: None,
                channel,
            },
        );
        let p_feedback = if score <= 2 { 0.5 } else { 0.15 };
        if self.rng.chance(p_feedback) {
            let fb_at = after_secs(at, self.rng.range(60.0, 86_400.0));
            let disposition = (f64::from(score) - 1.0) / 4.0;
            self.push_feedback(fb_at, ticket, disposition);
        }
    }

    fn push_nps(&mut self, at: i64) {
        let q = self.mood + 0.15 * self.rng.normal();
        let score = (q * 11.0).floor().clamp(0.0, 10.0) as u8;
        let channel = Some(self.device);
        self.push(
            at,
            Action::Support {
                kind: "nps_submitted",
                ticket: None,
                score: Some(score),
                feedback: None,
                priority: None,
                channel,
            },
        );
    }

    /// Free-text feedback whose tone follows `disposition` (0 unhappy .. 1 happy); a numeric
    /// sentiment is attached only sometimes, as when an upstream scorer is flaky.
    fn push_feedback(&mut self, at: i64, ticket: Option<u32>, disposition: f64) {
        let s = (2.0 * disposition - 1.0 + 0.25 * self.rng.normal()).clamp(-1.0, 1.0);
        let (tone, texts) = if s < -0.25 {
            (-1, &FEEDBACK_NEGATIVE)
        } else if s > 0.25 {
            (1, &FEEDBACK_POSITIVE)
        } else {
            (0, &FEEDBACK_NEUTRAL)
        };
        let text = self.rng.pick(texts);
        let sentiment = self.rng.chance(0.6).then_some((s * 100.0).round() / 100.0);
        let channel = Some(self.rng.pick(&["email", "web", "app"]));
        self.push(
            at,
            Action::Support {
                kind: "feedback_submitted",
                ticket,
                score: None,
                feedback: Some(Feedback {
                    text,
                    tone,
                    sentiment,
                }),
                priority: None,
                channel,
            },
        );
    }

    /// Renders an event to its wire form. Pure (no RNG draws) so that a malformed twin of the
    /// same event can be rendered without changing the rest of the stream.
    fn render(&self, head: &Head, currency: &str, defect: Option<Defect>) -> SimRecord {
        let topic = head.action.topic();
        // ~10% of records carry an RFC 3339 string timestamp so both ingest paths are used.
        let string_time = mix64(self.salt ^ head.seq) % 100 < 10;
        let mut wire = Wire {
            event_id: Some(format!("e-{:06}-{}", self.idx, head.seq)),
            customer_id: Some(&self.id),
            occurred_at: if string_time {
                WireTime::Text(rfc3339(head.at))
            } else {
                WireTime::Millis(head.at)
            },
            kind: "",
            ..Wire::default()
        };
        match &head.action {
            Action::Click {
                kind,
                session,
                page,
                sku,
                channel,
            } => {
                wire.kind = kind;
                wire.session_id = Some(format!("s-{:06}-{session}", self.idx));
                wire.sku = sku.map(sku_name);
                if !matches!(*kind, "add_to_cart" | "remove_from_cart") {
                    wire.url = Some(page.url());
                }
                if let Page::Search(q) = page {
                    wire.query = Some(QUERIES[usize::from(*q)]);
                }
                wire.channel = *channel;
            }
            Action::Order {
                kind,
                order,
                amount_minor,
                items,
                channel,
            } => {
                wire.kind = kind;
                wire.order_id = Some(format!("o-{:06}-{order}", self.idx));
                wire.amount = Some(money(*amount_minor));
                wire.currency = Some(currency);
                wire.items = items.as_ref().map(|items| {
                    items
                        .iter()
                        .map(|i| WireItem {
                            sku: sku_name(i.sku),
                            quantity: i.quantity,
                            unit_price: money(i.unit_price_minor),
                        })
                        .collect()
                });
                wire.channel = *channel;
            }
            Action::Support {
                kind,
                ticket,
                score,
                feedback,
                priority,
                channel,
            } => {
                wire.kind = kind;
                wire.ticket_id = ticket.map(|t| format!("t-{:06}-{t}", self.idx));
                wire.score = *score;
                if let Some(f) = feedback {
                    wire.text = Some(f.text);
                    wire.sentiment = f.sentiment;
                }
                wire.priority = *priority;
                wire.channel = *channel;
            }
        }
        let mut key = Some(self.id.clone());
        if let Some(defect) = defect {
            // A malformed twin gets its own id so event ids stay unique across the output.
            if let Some(id) = &mut wire.event_id {
                id.push_str("-m");
            }
            match defect {
                Defect::BadJson(_) => {}
                Defect::MissingCustomerId => {
                    wire.customer_id = None;
                    key = None;
                }
                Defect::MissingEventId => wire.event_id = None,
                Defect::UnknownType(v) => {
                    wire.kind = match topic {
                        SimTopic::Orders => ["order_teleported", "order_shipped_twice"][v],
                        SimTopic::Clickstream => ["page_hover", "mouse_wiggle"][v],
                        SimTopic::Support => ["ticket_merged_into_void", "chat_typing"][v],
                    }
                }
                Defect::BadAmount(v) => wire.amount = Some(["12,3x", "twelve"][v].to_owned()),
                Defect::BadTimestamp(v) => {
                    wire.occurred_at = WireTime::Text(["yesterday", "31/12/2025 10:00"][v].into())
                }
            }
        }
        // Serialising plain strings and numbers cannot fail.
        let mut value = serde_json::to_vec(&wire).unwrap_or_default();
        if let Some(Defect::BadJson(v)) = defect {
            if v == 0 {
                // A truncated object is never valid JSON: the closing brace is missing.
                value.truncate(value.len() / 2);
            } else {
                value = b"<html><body>502 Bad Gateway</body></html>".to_vec();
            }
        }
        SimRecord {
            topic,
            key,
            occurred_at: head.at,
            value,
            malformed: defect.map(Defect::reason),
        }
    }
}

/// The one thing wrong with a malformed record; the `usize` picks a variant of the damage.
#[derive(Debug, Clone, Copy)]
enum Defect {
    BadJson(usize),
    MissingCustomerId,
    MissingEventId,
    UnknownType(usize),
    BadAmount(usize),
    BadTimestamp(usize),
}

impl Defect {
    fn reason(self) -> &'static str {
        match self {
            Defect::BadJson(_) => "bad_json",
            Defect::MissingCustomerId => "missing_field:customer_id",
            Defect::MissingEventId => "missing_field:event_id",
            Defect::UnknownType(_) => "unknown_type",
            Defect::BadAmount(_) => "bad_amount",
            Defect::BadTimestamp(_) => "bad_timestamp",
        }
    }

    /// Exactly one defect per record so the expected reason is unambiguous. `bad_amount` only
    /// makes sense where there is an amount; orders are a small share of traffic, so it takes a
    /// third of their defects to show up often enough to exercise that path.
    fn pick(rng: &mut Rng, topic: SimTopic) -> Self {
        let variant = rng.below(2) as usize;
        if topic == SimTopic::Orders && rng.below(3) == 0 {
            return Defect::BadAmount(variant);
        }
        match rng.below(5) {
            0 => Defect::BadJson(variant),
            1 => Defect::MissingCustomerId,
            2 => Defect::MissingEventId,
            3 => Defect::UnknownType(variant),
            _ => Defect::BadTimestamp(variant),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireTime {
    Millis(i64),
    Text(String),
}

#[derive(Serialize)]
struct WireItem {
    sku: String,
    quantity: u32,
    unit_price: String,
}

/// The union of the three topics' schemas; absent fields are omitted, not null.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    occurred_at: WireTime,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<WireItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentiment: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'static str>,
}

impl Default for Wire<'_> {
    fn default() -> Self {
        Wire {
            event_id: None,
            customer_id: None,
            occurred_at: WireTime::Millis(0),
            kind: "",
            order_id: None,
            amount: None,
            currency: None,
            items: None,
            session_id: None,
            sku: None,
            url: None,
            query: None,
            ticket_id: None,
            score: None,
            text: None,
            sentiment: None,
            priority: None,
            channel: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The merged stream.
// ---------------------------------------------------------------------------------------------

/// Iterator over all records of all customers in non-decreasing `occurred_at` order.
#[derive(Debug)]
pub struct Simulator {
    customers: Vec<Customer>,
    /// One entry per customer with a next event: (time, customer index, event sequence).
    heap: BinaryHeap<Reverse<(i64, u32, u64)>>,
    end_ms: i64,
    currency: String,
    malformed_p: f64,
    /// Drives malformation only; separate from the customers' generators so that changing
    /// `malformed_per_mille` does not change the well-formed stream.
    rng: Rng,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let root = mix64(cfg.seed);
        let end_ms = cfg.start_ms.saturating_add(cfg.duration_ms.max(0));
        let customers: Vec<Customer> = (0..cfg.customers)
            .map(|i| Customer::new(i, root, cfg.start_ms, cfg.duration_ms))
            .collect();
        // Customers are not expanded yet: each enters the merge at its first process time
        // (sequence 0, which no real event uses) and is started when the merge gets there, so
        // late joiners cost nothing until they join.
        let heap = customers
            .iter()
            .filter_map(|c| {
                let t = c.wake_at().filter(|&t| t <= end_ms)?;
                Some(Reverse((t, c.idx, 0)))
            })
            .collect();
        Simulator {
            customers,
            heap,
            end_ms,
            currency: cfg.currency,
            malformed_p: f64::from(cfg.malformed_per_mille.min(1_000)) / 1_000.0,
            rng: Rng::seeded(mix64(root ^ 0x0BAD_F00D)),
        }
    }

    /// The ground truth the stream only implies, for judging the scores on simulated data:
    /// each customer's id and the instant they dropped out (the order after which they buy no
    /// more, or the bad experience that ended it), `None` while still alive. Complete once the
    /// iterator is exhausted; before that, only for what has been generated so far.
    pub fn dropouts(&self) -> impl Iterator<Item = (&str, Option<i64>)> {
        self.customers.iter().map(|c| (c.id.as_str(), c.dropped_at))
    }
}

impl Iterator for Simulator {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        let (idx, head) = loop {
            let &Reverse((_, idx, _)) = self.heap.peek()?;
            let customer = &mut self.customers[idx as usize];
            if let Some(head) = customer.head.take() {
                break (idx, head);
            }
            // A customer reached for the first time: start it and requeue at its first event.
            self.heap.pop();
            customer.advance(self.end_ms);
            if let Some(h) = &customer.head {
                self.heap.push(Reverse((h.at, idx, h.seq)));
            }
        };
        let customer = &mut self.customers[idx as usize];
        // Each output slot is independently malformed with probability p. A malformed record
        // is a damaged twin of the next real one (same time, so ordering holds), and the real
        // one still follows: no genuine event is ever lost to the injection.
        if self.malformed_p > 0.0 && self.rng.chance(self.malformed_p) {
            let defect = Defect::pick(&mut self.rng, head.action.topic());
            let record = customer.render(&head, &self.currency, Some(defect));
            customer.head = Some(head);
            return Some(record);
        }
        let record = customer.render(&head, &self.currency, None);
        self.heap.pop();
        customer.advance(self.end_ms);
        if let Some(h) = &customer.head {
            self.heap.push(Reverse((h.at, idx, h.seq)));
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            customers: 300,
            seed,
            duration_ms: 120 * DAY,
            ..SimConfig::default()
        }
    }

    /// Inverse of `civil_from_days`, for round-tripping string timestamps.
    use pulse_codec::time::parse_rfc3339;

    fn parse_amount(s: &str) -> Option<i64> {
        let (units, cents) = s.split_once('.')?;
        if cents.len() != 2 || units.is_empty() {
            return None;
        }
        Some(units.parse::<i64>().ok()? * 100 + cents.parse::<i64>().ok()?)
    }

    /// A reference validator: what a correct ingest should say about a record.
    fn validate(topic: SimTopic, bytes: &[u8]) -> Result<Value, &'static str> {
        let v: Value = serde_json::from_slice(bytes).map_err(|_| "bad_json")?;
        let obj = v.as_object().ok_or("bad_json")?;
        if !obj.get("event_id").is_some_and(Value::is_string) {
            return Err("missing_field:event_id");
        }
        if !obj.get("customer_id").is_some_and(Value::is_string) {
            return Err("missing_field:customer_id");
        }
        match obj.get("occurred_at") {
            Some(Value::Number(n)) if n.is_i64() => {}
            Some(Value::String(s)) if parse_rfc3339(s).is_some() => {}
            _ => return Err("bad_timestamp"),
        }
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or("unknown_type")?;
        let known: &[&str] = match topic {
            SimTopic::Orders => &["order_placed", "order_cancelled", "order_refunded"],
            SimTopic::Clickstream => &[
                "page_view",
                "product_view",
                "search",
                "add_to_cart",
                "remove_from_cart",
                "checkout_started",
            ],
            SimTopic::Support => &[
                "ticket_opened",
                "ticket_first_response",
                "ticket_resolved",
                "csat_submitted",
                "nps_submitted",
                "feedback_submitted",
            ],
        };
        if !known.contains(&kind) {
            return Err("unknown_type");
        }
        if topic == SimTopic::Orders {
            let amount = obj
                .get("amount")
                .and_then(Value::as_str)
                .and_then(parse_amount);
            if amount.is_none_or(|a| a < 0) {
                return Err("bad_amount");
            }
        }
        Ok(v)
    }

    fn time_of(v: &Value) -> i64 {
        match &v["occurred_at"] {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(s) => parse_rfc3339(s).unwrap(),
            other => panic!("bad occurred_at {other}"),
        }
    }

    #[test]
    fn samplers_have_the_right_moments() {
        let mut rng = Rng::seeded(1);
        let n = 50_000;
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let g = mean((0..n).map(|_| rng.gamma(0.8, 2.0)).collect());
        assert!((g - 1.6).abs() < 0.05, "gamma mean {g}");
        let g = mean((0..n).map(|_| rng.gamma(16.0, 0.5)).collect());
        assert!((g - 8.0).abs() < 0.1, "gamma mean {g}");
        let b = mean((0..n).map(|_| rng.beta(1.2, 7.0)).collect());
        assert!((b - 1.2 / 8.2).abs() < 0.01, "beta mean {b}");
        let e = mean((0..n).map(|_| rng.exp(0.25)).collect());
        assert!((e - 4.0).abs() < 0.1, "exp mean {e}");
        let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let m = mean(z.clone());
        let var = mean(z.iter().map(|x| (x - m) * (x - m)).collect());
        assert!(
            m.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "normal {m} {var}"
        );
        let geo = mean((0..n).map(|_| f64::from(rng.geometric(3.0))).collect());
        assert!((geo - 3.0).abs() < 0.1, "geometric mean {geo}");
    }

    #[test]
    fn same_seed_same_output_different_seed_different_output() {
        let a: Vec<SimRecord> = Simulator::new(small(9)).collect();
        let b: Vec<SimRecord> = Simulator::new(small(9)).collect();
        let c: Vec<SimRecord> = Simulator::new(small(10)).collect();
        assert!(a.len() > 1_000, "too few records: {}", a.len());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_customers_stream_does_not_depend_on_the_population() {
        let only = |customers: u32| -> Vec<SimRecord> {
            Simulator::new(SimConfig {
                customers,
                malformed_per_mille: 0,
                ..small(21)
            })
            .filter(|r| r.key.as_deref() == Some("c-000007"))
            .collect()
        };
        let alone = only(8);
        assert!(!alone.is_empty());
        assert_eq!(alone, only(300));
    }

    #[test]
    fn empty_configurations_yield_nothing() {
        assert_eq!(
            Simulator::new(SimConfig {
                customers: 0,
                ..SimConfig::default()
            })
            .count(),
            0
        );
        // A zero-length window still lets customers joining at its very start act at once.
        let instant: Vec<SimRecord> = Simulator::new(SimConfig {
            duration_ms: 0,
            ..small(1)
        })
        .collect();
        assert!(instant.iter().all(|r| r.occurred_at == small(1).start_ms));
    }

    #[test]
    fn malformation_does_not_perturb_the_well_formed_stream() {
        let clean: Vec<SimRecord> = Simulator::new(SimConfig {
            malformed_per_mille: 0,
            ..small(3)
        })
        .collect();
        let dirty: Vec<SimRecord> = Simulator::new(SimConfig {
            malformed_per_mille: 50,
            ..small(3)
        })
        .filter(|r| r.malformed.is_none())
        .collect();
        assert_eq!(clean, dirty);
    }

    #[test]
    fn times_are_non_decreasing_and_inside_the_window() {
        let cfg = small(11);
        let (start, end) = (cfg.start_ms, cfg.start_ms + cfg.duration_ms);
        let mut last = i64::MIN;
        let mut n = 0;
        for r in Simulator::new(cfg) {
            assert!(r.occurred_at >= last, "time went backwards at record {n}");
            assert!((start..=end).contains(&r.occurred_at));
            last = r.occurred_at;
            n += 1;
        }
        assert!(n > 1_000);
    }

    #[test]
    fn malformed_share_and_reasons_match_a_reference_validator() {
        let cfg = SimConfig::default();
        let per_mille = cfg.malformed_per_mille;
        let records: Vec<SimRecord> = Simulator::new(cfg).take(50_000).collect();
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        let mut topics = HashSet::new();
        for r in &records {
            let verdict = validate(r.topic, &r.value).err();
            assert_eq!(
                verdict,
                r.malformed,
                "{:?}",
                String::from_utf8_lossy(&r.value)
            );
            if let Some(reason) = r.malformed {
                *reasons.entry(reason).or_default() += 1;
                topics.insert(r.topic);
                assert_eq!(r.key.is_none(), reason == "missing_field:customer_id");
            } else {
                assert!(r.key.is_some());
            }
        }
        let bad: usize = reasons.values().sum();
        let expected = records.len() as f64 * f64::from(per_mille) / 1_000.0;
        assert!(
            (bad as f64) >= expected * 0.5 && (bad as f64) <= expected * 1.5,
            "{bad} malformed, expected about {expected}"
        );
        assert!(reasons.len() >= 5, "reasons seen: {reasons:?}");
        assert!(topics.len() >= 2, "malformed only on {topics:?}");
    }

    #[test]
    fn well_formed_records_parse_and_are_consistent() {
        let mut ids = HashSet::new();
        let mut string_times = 0usize;
        let mut n = 0usize;
        for r in Simulator::new(small(5)) {
            if r.malformed.is_some() {
                continue;
            }
            n += 1;
            let v = validate(r.topic, &r.value).expect("well-formed record rejected");
            assert_eq!(time_of(&v), r.occurred_at);
            string_times += usize::from(v["occurred_at"].is_string());
            assert_eq!(v["customer_id"].as_str(), r.key.as_deref());
            assert!(
                ids.insert(v["event_id"].as_str().unwrap().to_owned()),
                "duplicate id"
            );
            match v["type"].as_str().unwrap() {
                "order_placed" => {
                    assert_eq!(v["currency"], "EUR");
                    let items = v["items"].as_array().unwrap();
                    let total: i64 = items
                        .iter()
                        .map(|i| {
                            parse_amount(i["unit_price"].as_str().unwrap()).unwrap()
                                * i["quantity"].as_i64().unwrap()
                        })
                        .sum();
                    assert_eq!(Some(total), parse_amount(v["amount"].as_str().unwrap()));
                }
                "csat_submitted" => assert!((1..=5).contains(&v["score"].as_u64().unwrap())),
                "nps_submitted" => assert!(v["score"].as_u64().unwrap() <= 10),
                "feedback_submitted" => {
                    assert!(v["text"].is_string());
                    if let Some(s) = v.get("sentiment") {
                        assert!((-1.0..=1.0).contains(&s.as_f64().unwrap()));
                    }
                }
                _ => {}
            }
        }
        let share = string_times as f64 / n as f64;
        assert!(
            (0.07..0.13).contains(&share),
            "string timestamp share {share}"
        );
    }

    #[test]
    fn a_weekly_buyer_goes_silent_and_prospects_never_buy() {
        let cfg = SimConfig {
            customers: 800,
            ..SimConfig::default()
        };
        let end = cfg.start_ms + cfg.duration_ms;
        let mut orders: HashMap<String, Vec<i64>> = HashMap::new();
        let mut last_seen: HashMap<String, i64> = HashMap::new();
        for r in Simulator::new(cfg).filter(|r| r.malformed.is_none()) {
            let id = r.key.clone().unwrap();
            last_seen.insert(id.clone(), r.occurred_at);
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            if v["type"] == "order_placed" {
                orders.entry(id).or_default().push(r.occurred_at);
            }
        }
        let churned_weekly = orders.iter().filter(|(id, times)| {
            let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
            let mut sorted = gaps.clone();
            sorted.sort_unstable();
            let last_order = *times.last().unwrap();
            times.len() >= 8
                && sorted[sorted.len() / 2] <= 10 * DAY
                && last_order < end - 120 * DAY
                && last_seen[*id] < last_order + 60 * DAY
        });
        assert!(churned_weekly.count() >= 1, "no weekly buyer dropped out");
        let never_bought = last_seen
            .keys()
            .filter(|id| !orders.contains_key(*id))
            .count();
        let share = never_bought as f64 / last_seen.len() as f64;
        assert!((0.1..0.5).contains(&share), "non-buyer share {share}");
    }

    #[test]
    fn per_customer_queues_stay_small() {
        let mut sim = Simulator::new(SimConfig {
            customers: 5_000,
            ..SimConfig::default()
        });
        let mut max_pending = 0;
        for i in 0..200_000 {
            if sim.next().is_none() {
                break;
            }
            if i % 1_000 == 0 {
                let m = sim
                    .customers
                    .iter()
                    .map(|c| c.pending.len())
                    .max()
                    .unwrap_or(0);
                max_pending = max_pending.max(m);
            }
        }
        assert!(max_pending < 64, "a customer queued {max_pending} events");
    }

    #[test]
    fn default_mix_and_throughput() {
        let started = std::time::Instant::now();
        let mut per_topic: HashMap<SimTopic, usize> = HashMap::new();
        let mut per_type: HashMap<String, usize> = HashMap::new();
        let mut malformed = 0usize;
        let mut total = 0usize;
        let mut bytes = 0usize;
        for r in Simulator::new(SimConfig::default()) {
            total += 1;
            bytes += r.value.len();
            *per_topic.entry(r.topic).or_default() += 1;
            if r.malformed.is_some() {
                malformed += 1;
            } else if let Ok(v) = serde_json::from_slice::<Value>(&r.value) {
                *per_type
                    .entry(v["type"].as_str().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let pct = |n: usize| 100.0 * n as f64 / total as f64;
        println!(
            "records: {total} ({:.0} records/s incl. JSON re-parse, {} bytes)",
            total as f64 / secs,
            bytes
        );
        for t in [SimTopic::Orders, SimTopic::Clickstream, SimTopic::Support] {
            println!(
                "  {:<22} {:6.2}%",
                t.as_str(),
                pct(per_topic.get(&t).copied().unwrap_or(0))
            );
        }
        println!("  malformed              {:6.3}%", pct(malformed));
        let mut types: Vec<_> = per_type.into_iter().collect();
        types.sort_by_key(|(name, n)| (Reverse(*n), name.clone()));
        for (t, n) in types {
            println!("    {t:<22} {n}");
        }
        assert!(total > 0);
    }
}
