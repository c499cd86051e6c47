//! Ingest: input topics → validated, normalised, customer-keyed canonical log; rejects → the
//! dead-letter topic with the original bytes and a reason; ticks → idle canonical partitions.
//!
//! Stateless and at-least-once: a batch's records are produced and acknowledged before the
//! input offsets are committed, so a crash re-sends (fold's event_id dedupe absorbs it).
//!
//! The one part of pulse whose decisions may read the wall clock (`Ingest::clock`): an event
//! dated more than `ingest.max_future_skew_ms` ahead of it is dead-lettered (`future_event`),
//! and wall-clock ticks carry it. Both decisions are recorded (the canonical log or the
//! dead-letter topic), and fold and replay read only the log, so replay stays deterministic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_codec::{
    check_not_future, decode_record, encode_canonical, Canonical, Encoding, Family, Source,
    TickSource,
};
use pulse_core::Millis;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{Config, TickSourceConfig};
use crate::kafka::{self, header, headers};
use crate::producer::Outstanding;
use crate::{telemetry, PipelineError};

/// Header names on dead-letter records (the value is the original bytes, untouched).
pub const DLQ_REASON: &str = "pulse.dlq.reason";
pub const DLQ_DETAIL: &str = "pulse.dlq.detail";
pub const DLQ_TOPIC: &str = "pulse.dlq.source.topic";
pub const DLQ_PARTITION: &str = "pulse.dlq.source.partition";
pub const DLQ_OFFSET: &str = "pulse.dlq.source.offset";

struct Ingest {
    config: Arc<Config>,
    producer: FutureProducer,
    families: HashMap<String, (Family, Encoding)>,
    canonical_partitions: i32,
    /// Largest event time seen (before subtracting the allowed lateness).
    max_event_time: Option<i64>,
    /// Per canonical partition: did it get an event since the last tick round, last tick sent.
    active: Vec<bool>,
    last_tick: Vec<i64>,
    metrics: telemetry::IngestMetrics,
}

pub async fn run(
    config: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let t = &config.topics;
    let e = &config.encoding;
    let families: HashMap<String, (Family, Encoding)> = [
        (t.orders.clone(), (Family::Orders, e.orders)),
        (t.clickstream.clone(), (Family::Clickstream, e.clickstream)),
        (t.support.clone(), (Family::Support, e.support)),
    ]
    .into();
    let consumer: StreamConsumer<kafka::LagContext> = kafka::consumer_config(&config, "ingest")
        .create_with_context(kafka::LagContext {
            group: kafka::group_id(&config, "ingest"),
        })?;
    let topics: Vec<&str> = families.keys().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let canonical_partitions = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || kafka::partition_count(&c, &c.topics.canonical))
            .await
            .expect("metadata task")?
    };
    let mut ingest = Ingest {
        producer: kafka::producer_config(&config).create()?,
        families,
        canonical_partitions,
        max_event_time: None,
        active: vec![false; canonical_partitions as usize],
        last_tick: vec![i64::MIN; canonical_partitions as usize],
        metrics: telemetry::IngestMetrics::default(),
        config: config.clone(),
    };
    tracing::info!(canonical_partitions, "ingest started");
    let batch_wait = Duration::from_millis(config.ingest.batch_max_ms);
    let tick_every = Duration::from_millis(config.ingest.tick_interval_ms);
    let mut next_tick = Instant::now() + tick_every;
    while !*shutdown.borrow() {
        let mut outstanding = Outstanding::default();
        let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
        let deadline = Instant::now() + batch_wait;
        while outstanding.len() < config.ingest.batch_max_records {
            let wait = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(wait) => break,
                m = consumer.recv() => match m {
                    Ok(m) => m,
                    // librdkafka reconnects by itself (a broker restart); nothing was lost.
                    Err(e) if kafka::transient(&e) => {
                        tracing::warn!(error = %e, "ingest consumer: broker unreachable, waiting");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            ingest.handle(&msg, &mut outstanding).await?;
            offsets.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
        }
        if Instant::now() >= next_tick {
            ingest.tick_idle_partitions(&mut outstanding).await?;
            next_tick = Instant::now() + tick_every;
        }
        outstanding.wait().await?;
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in offsets {
                tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            }
            consumer.commit(&tpl, CommitMode::Async)?;
        }
    }
    tracing::info!("ingest stopped");
    Ok(())
}

impl Ingest {
    /// Ingest's wall clock: the only one pulse's decisions read (future-event check,
    /// wall-clock ticks). What it decides is written to the log, never re-decided on replay.
    fn clock(&self) -> Millis {
        crate::wall_clock_ms()
    }

    async fn handle(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Outstanding,
    ) -> Result<(), PipelineError> {
        let Some(&(family, topic_encoding)) = self.families.get(msg.topic()) else {
            return Ok(());
        };
        let encoding = header(msg.headers(), "content-type")
            .and_then(Encoding::from_content_type)
            .unwrap_or(topic_encoding);
        let decoding = Instant::now();
        let result = decode_record(
            family,
            encoding,
            msg.payload(),
            self.config.ingest.max_record_bytes,
        )
        .and_then(|event| {
            let skew = self.config.ingest.max_future_skew_ms;
            if skew > 0 {
                check_not_future(&event, self.clock(), skew)?;
            }
            Ok(event)
        });
        self.metrics.decoded(family.as_str(), decoding);
        match result {
            Ok(event) => {
                self.metrics.accepted(family.as_str());
                self.max_event_time = Some(
                    self.max_event_time
                        .map_or(event.occurred_at, |m| m.max(event.occurred_at)),
                );
                let partition =
                    kafka::partition_for(event.customer_id.as_bytes(), self.canonical_partitions);
                self.active[partition as usize] = true;
                let key = event.customer_id.clone();
                let record = Canonical::Event(
                    event,
                    Source {
                        topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                    },
                );
                let value = encode_canonical(&record, self.config.encoding.canonical);
                let hdrs = headers(&[
                    (
                        "content-type",
                        self.config.encoding.canonical.content_type(),
                    ),
                    ("schema", "pulse.v1.CanonicalRecord/1"),
                ]);
                let rec = FutureRecord::to(&self.config.topics.canonical)
                    .key(&key)
                    .partition(partition)
                    .payload(&value)
                    .headers(hdrs);
                out.send(&self.producer, rec).await
            }
            Err(rejection) => {
                telemetry::ingest_dead_lettered(family.as_str(), rejection.class());
                let partition = msg.partition().to_string();
                let offset = msg.offset().to_string();
                let mut pairs = vec![
                    (DLQ_REASON, rejection.reason.as_str()),
                    (DLQ_DETAIL, rejection.detail.as_str()),
                    (DLQ_TOPIC, msg.topic()),
                    (DLQ_PARTITION, partition.as_str()),
                    (DLQ_OFFSET, offset.as_str()),
                ];
                if let Some(ct) = header(msg.headers(), "content-type") {
                    pairs.push(("content-type", ct));
                }
                let mut rec: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&self.config.topics.dead_letters).headers(headers(&pairs));
                // A tombstone stays a tombstone (a null value), not empty bytes.
                if let Some(value) = msg.payload() {
                    rec = rec.payload(value);
                }
                if let Some(key) = msg.key() {
                    rec = rec.key(key);
                }
                out.send(&self.producer, rec).await
            }
        }
    }

    /// Appends a tick to every canonical partition that saw no event since the last round and
    /// whose clock the tick would advance.
    async fn tick_idle_partitions(&mut self, out: &mut Outstanding) -> Result<(), PipelineError> {
        let time = match self.config.ingest.tick_source {
            TickSourceConfig::Watermark => match self.max_event_time {
                Some(t) => t - self.config.ingest.allowed_lateness_ms,
                None => return Ok(()),
            },
            TickSourceConfig::WallClock => self.clock(),
        };
        let source = match self.config.ingest.tick_source {
            TickSourceConfig::Watermark => TickSource::Watermark,
            TickSourceConfig::WallClock => TickSource::WallClock,
        };
        let value = encode_canonical(
            &Canonical::Tick { time, source },
            self.config.encoding.canonical,
        );
        let mut sent = 0;
        for p in 0..self.canonical_partitions as usize {
            let idle = !std::mem::replace(&mut self.active[p], false);
            if idle && time > self.last_tick[p] {
                self.last_tick[p] = time;
                let rec: FutureRecord<'_, (), _> = FutureRecord::to(&self.config.topics.canonical)
                    .partition(p as i32)
                    .payload(&value)
                    .headers(headers(&[(
                        "content-type",
                        self.config.encoding.canonical.content_type(),
                    )]));
                out.send(&self.producer, rec).await?;
                sent += 1;
            }
        }
        telemetry::ingest_ticks(sent, time);
        Ok(())
    }
}
