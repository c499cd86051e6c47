//! pulse-core: the pure domain of pulse: events, per-customer state, scoring, lifecycle,
//! segments, alerts and timers as data.
//!
//! It owns every rule: RFM and segments, BTYD models (`models`) and their fits (`fit`), engagement, support health,
//! the weighted scorecards, lifecycle with hysteresis and exact timers (`engine`), and the
//! feedback sentiment lexicon used at the edge (`sentiment`), and the partition (`partition`):
//! the clock, the timers and the one order in which events and timers are decided. It must
//! not do I/O, read a clock, spawn, or know about Kafka, sled or protobuf: time is a
//! parameter, passed in by the shell (the `pulse` crate) as it reads the canonical log.

pub mod alert;
pub mod backtest;
pub mod config;
pub mod engine;
pub mod event;
pub mod fit;
pub mod hash;
pub mod models;
pub mod partition;
pub mod sentiment;
pub mod state;
pub mod whatif;

pub use alert::{Alert, AlertKind, Money, Reason, ReasonSignal, RuleSignal, Score};
pub use config::ScoringConfig;
pub use engine::{
    clv_of, decide, evaluate, summary, Decision, Evaluation, Input, Signal, StageCause, Summary,
};
pub use event::{Body, Event, Millis, DAY};
pub use partition::{Memory, Partition, States};
pub use state::{CustomerState, NpsClass, Segment, Stage, ValueTier};
