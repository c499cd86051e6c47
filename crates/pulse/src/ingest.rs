//! Ingest: input topics → validated, normalised, customer-keyed canonical log; rejects → the
//! dead-letter topic with the original bytes and a reason; ticks → idle canonical partitions.
//!
//! Stateless and at-least-once: a batch's records are produced and acknowledged before the
//! input offsets are committed, so a crash re-sends (fold's event_id dedupe absorbs it).
//! What it received is relayed in event-time order across its input partitions
//! ([`merge`]), so a backlog reaches the canonical log as it happened, not as it was fetched.
//!
//! The one part of pulse whose decisions may read the wall clock (`Ingest::clock`): an event
//! dated more than `ingest.max_future_skew_ms` ahead of it is dead-lettered (`future_event`),
//! and wall-clock ticks carry it. Both decisions are recorded (the canonical log or the
//! dead-letter topic), and fold and replay read only the log, so replay stays deterministic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_codec::headers as hdr;
use pulse_codec::{
    check_not_future, decode_record, encode_canonical, Canonical, Encoding, Family, Rejection,
    Source, TickSource,
};
use pulse_core::Millis;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{Config, TickSourceConfig, RECORD_HEADROOM};
use crate::kafka::{self, header, headers};
use crate::producer::Outstanding;
use crate::{telemetry, PipelineError};

mod merge;
use merge::{Merge, Next, Tp};

/// A dead letter's key, when the key and value do not fit together, is cut to this: ids of
/// more than 256 bytes are refused anyway, so such a key is no id, and the value (the record
/// that says what went wrong) gets the room.
const DLQ_KEY_MAX: usize = 1_024;

/// A dead letter's key and value, cut to fit `budget` bytes together when they do not.
#[derive(Debug, PartialEq, Eq)]
struct Fitted<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    truncated: bool,
}

/// Keeps key and value whole when they fit in `budget` together; otherwise cuts the key to
/// [`DLQ_KEY_MAX`] and the value to the rest. A null stays null.
fn fit_dead_letter<'a>(
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    budget: usize,
) -> Fitted<'a> {
    let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
    if len(key) + len(value) <= budget {
        return Fitted {
            key,
            value,
            truncated: false,
        };
    }
    let key = key.map(|k| &k[..k.len().min(DLQ_KEY_MAX).min(budget)]);
    let room = budget - len(key);
    let value = value.map(|v| &v[..v.len().min(room)]);
    Fitted {
        key,
        value,
        truncated: true,
    }
}

/// Where a produced record came from, kept until it is acknowledged: enough to dead-letter it
/// without its bytes if the broker refuses it as too large.
struct Origin {
    family: Family,
    partition: i32,
    offset: i64,
    key_bytes: usize,
    value_bytes: usize,
}

impl Origin {
    fn of(r: &Received) -> Origin {
        Origin {
            family: r.family,
            partition: r.partition,
            offset: r.offset,
            key_bytes: r.key_bytes,
            value_bytes: r.value_bytes,
        }
    }
}

/// A received input record, decoded and judged, held by the merge until it is relayed: its
/// canonical record, or what a dead letter needs of the original.
struct Received {
    family: Family,
    partition: i32,
    offset: i64,
    key_bytes: usize,
    value_bytes: usize,
    outcome: Result<Canonicalised, DeadLetter>,
}

/// (key, canonical partition, value, event time).
type Canonicalised = (String, i32, Vec<u8>, Millis);

struct DeadLetter {
    rejection: Rejection,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    content_type: Option<String>,
}

impl Received {
    /// Where the merge orders it: by event time; a dead letter first (fold never sees it).
    fn time(&self) -> Millis {
        self.outcome.as_ref().map_or(Millis::MIN, |c| c.3)
    }
}

/// What ingest has handed to the producer this round: the tag is `None` for a tick.
type Sent = Outstanding<Option<Origin>>;

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
    /// The most key and value of a produced record may take together: the producer's
    /// `message.max.bytes` less [`RECORD_HEADROOM`] for headers and framing.
    max_key_value: usize,
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
        .create_with_context(kafka::LagContext::new(kafka::group_id(&config, "ingest")))?;
    let behind = consumer.context().behind.clone();
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
        max_key_value: config.kafka.message_max_bytes() - RECORD_HEADROOM,
        metrics: telemetry::IngestMetrics::default(),
        config: config.clone(),
    };
    tracing::info!(canonical_partitions, "ingest started");
    let batch_wait = Duration::from_millis(config.ingest.batch_max_ms);
    let tick_every = Duration::from_millis(config.ingest.tick_interval_ms);
    let mut next_tick = Instant::now() + tick_every;
    let mut merge: Merge<Received> = Merge::new(
        Duration::from_millis(config.ingest.merge_max_idle_ms),
        config.ingest.merge_max_buffered,
    );
    let mut forced = 0;
    while !*shutdown.borrow() {
        let mut outstanding = Sent::default();
        // The next offset to commit per input partition: after the last record relayed.
        let mut offsets: HashMap<Tp, i64> = HashMap::new();
        let dropped = merge.assign(ingest.assigned(&consumer)?);
        if dropped > 0 {
            tracing::info!(
                dropped,
                "input partitions revoked: their held records are left to their new owner"
            );
        }
        let deadline = Instant::now() + batch_wait;
        while outstanding.len() < config.ingest.batch_max_records {
            // Relay what the merge lets go; then wait for a record, the merge or the deadline.
            let mut wait = deadline.saturating_duration_since(Instant::now());
            loop {
                let next = {
                    let behind = behind.lock().expect("lock");
                    let input = |f| ingest.input_topic(f);
                    merge.pop(Instant::now(), |(f, p)| {
                        let known = behind.get(input(*f)).and_then(|ps| ps.get(p));
                        known.copied().unwrap_or(true)
                    })
                };
                match next {
                    Next::Record(r, tp, offset) => {
                        ingest.relay(r, &mut outstanding).await?;
                        offsets.insert(tp, offset + 1);
                        if outstanding.len() >= config.ingest.batch_max_records {
                            break;
                        }
                    }
                    Next::Wait(w) => {
                        wait = wait.min(w);
                        break;
                    }
                    Next::Empty => break,
                }
            }
            if outstanding.len() >= config.ingest.batch_max_records || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(wait) => {}
                m = consumer.recv() => match m {
                    Ok(msg) => {
                        let Some(r) = ingest.receive(&msg) else { continue };
                        let tp = (r.family, r.partition);
                        // A first record of a new assignment: every partition of it gets its
                        // queue first, so those yet to deliver hold the merge back.
                        if !merge.knows(&tp) {
                            merge.assign(ingest.assigned(&consumer)?);
                        }
                        merge.push(tp, msg.offset(), r.time(), r);
                    }
                    // librdkafka reconnects by itself (a broker restart); nothing was lost.
                    Err(e) if kafka::transient(&e) => {
                        tracing::warn!(error = %e, "ingest consumer: broker unreachable, waiting");
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
        if merge.forced > forced {
            telemetry::ingest_merge_forced(merge.forced - forced);
            forced = merge.forced;
        }
        if Instant::now() >= next_tick {
            ingest.tick_idle_partitions(&mut outstanding).await?;
            next_tick = Instant::now() + tick_every;
        }
        let refused = outstanding.wait_too_large().await?;
        ingest.dead_letter_refused(refused).await?;
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((family, partition), offset) in offsets {
                let topic = ingest.input_topic(family);
                tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
            }
            consumer.commit(&tpl, CommitMode::Async)?;
        }
    }
    tracing::info!("ingest stopped");
    Ok(())
}

impl Ingest {
    /// The input partitions the group gave this instance.
    fn assigned(
        &self,
        consumer: &StreamConsumer<kafka::LagContext>,
    ) -> Result<Vec<Tp>, PipelineError> {
        Ok(consumer
            .assignment()?
            .elements()
            .iter()
            .filter_map(|e| Some((self.families.get(e.topic())?.0, e.partition())))
            .collect())
    }

    /// Ingest's wall clock: the only one pulse's decisions read (future-event check,
    /// wall-clock ticks). What it decides is written to the log, never re-decided on replay.
    fn clock(&self) -> Millis {
        crate::wall_clock_ms()
    }

    /// Decodes and judges a received input record; `None` for a topic ingest does not read.
    fn receive(&mut self, msg: &BorrowedMessage<'_>) -> Option<Received> {
        let &(family, topic_encoding) = self.families.get(msg.topic())?;
        let encoding = header(msg.headers(), hdr::CONTENT_TYPE)
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
        let outcome = result
            .and_then(|event| self.canonical(event, msg))
            .map_err(|rejection| DeadLetter {
                rejection,
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                // The producer's content type, so the dead letter can be read; a header too
                // long to be one is not repeated.
                content_type: header(msg.headers(), hdr::CONTENT_TYPE)
                    .filter(|ct| ct.len() <= 256)
                    .map(str::to_string),
            });
        Some(Received {
            family,
            partition: msg.partition(),
            offset: msg.offset(),
            key_bytes: msg.key().map_or(0, <[u8]>::len),
            value_bytes: msg.payload().map_or(0, <[u8]>::len),
            outcome,
        })
    }

    /// Produces a received record: to the canonical log, or to the dead-letter topic.
    async fn relay(&mut self, r: Received, out: &mut Sent) -> Result<(), PipelineError> {
        let family = r.family;
        let origin = Some(Origin::of(&r));
        let dead = match r.outcome {
            Ok((key, partition, value, event_time)) => {
                self.metrics.accepted(family.as_str());
                self.max_event_time = Some(
                    self.max_event_time
                        .map_or(event_time, |m| m.max(event_time)),
                );
                self.active[partition as usize] = true;
                let hdrs = headers(&[
                    (
                        hdr::CONTENT_TYPE,
                        self.config.encoding.canonical.content_type(),
                    ),
                    (hdr::SCHEMA, "pulse.v1.CanonicalRecord/1"),
                ]);
                let rec = FutureRecord::to(&self.config.topics.canonical)
                    .key(&key)
                    .partition(partition)
                    .payload(&value)
                    .headers(hdrs);
                return out.send_tagged(&self.producer, rec, origin).await;
            }
            Err(dead) => dead,
        };
        let rejection = &dead.rejection;
        let topic = self.input_topic(family);
        telemetry::ingest_dead_lettered(family.as_str(), rejection.class());
        let fitted = fit_dead_letter(
            dead.key.as_deref(),
            dead.value.as_deref(),
            self.max_key_value,
        );
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let key_bytes = r.key_bytes.to_string();
        let value_bytes = r.value_bytes.to_string();
        let mut pairs = vec![
            (hdr::DLQ_REASON, rejection.reason.as_str()),
            (hdr::DLQ_DETAIL, rejection.detail.as_str()),
            (hdr::DLQ_TOPIC, topic),
            (hdr::DLQ_PARTITION, partition.as_str()),
            (hdr::DLQ_OFFSET, offset.as_str()),
        ];
        if fitted.truncated {
            telemetry::ingest_dead_letter_truncated(topic, r.partition, r.offset);
            pairs.extend([
                (hdr::DLQ_TRUNCATED, "true"),
                (hdr::DLQ_KEY_BYTES, key_bytes.as_str()),
                (hdr::DLQ_VALUE_BYTES, value_bytes.as_str()),
            ]);
        }
        if let Some(ct) = &dead.content_type {
            pairs.push((hdr::CONTENT_TYPE, ct.as_str()));
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.config.topics.dead_letters).headers(headers(&pairs));
        // A tombstone stays a tombstone (a null value), not empty bytes.
        if let Some(value) = fitted.value {
            rec = rec.payload(value);
        }
        if let Some(key) = fitted.key {
            rec = rec.key(key);
        }
        out.send_tagged(&self.producer, rec, origin).await
    }

    /// Dead-letters, without key or value, the records the producer or the broker refused as
    /// too large (a topic's `max.message.bytes` below the producer's `message.max.bytes`;
    /// librdkafka refuses a whole batch, so its other records too): the headers say what and
    /// where the original is, so nothing is lost and the input offset can be committed. Only
    /// if even that is refused does ingest stop.
    async fn dead_letter_refused(
        &self,
        refused: Vec<(KafkaError, Option<Origin>)>,
    ) -> Result<(), PipelineError> {
        let mut out = Outstanding::default();
        for (error, origin) in refused {
            // A tick carries no input record: one refused with a batch it shared is not
            // needed, the next round ticks again.
            let Some(o) = origin else {
                tracing::warn!(%error, "tick refused as too large with its batch; not re-sent");
                continue;
            };
            let topic = self.input_topic(o.family);
            telemetry::ingest_dead_lettered(o.family.as_str(), "too_large");
            telemetry::ingest_dead_letter_truncated(topic, o.partition, o.offset);
            let detail = format!("the broker refused the record pulse produced for it ({error}): the topics' max.message.bytes must be at least the producer's message.max.bytes ({}); the original is at its source coordinates", self.config.kafka.message_max_bytes());
            let (partition, offset) = (o.partition.to_string(), o.offset.to_string());
            let (key_bytes, value_bytes) = (o.key_bytes.to_string(), o.value_bytes.to_string());
            let pairs = [
                (hdr::DLQ_REASON, "too_large"),
                (hdr::DLQ_DETAIL, detail.as_str()),
                (hdr::DLQ_TOPIC, topic),
                (hdr::DLQ_PARTITION, partition.as_str()),
                (hdr::DLQ_OFFSET, offset.as_str()),
                (hdr::DLQ_TRUNCATED, "true"),
                (hdr::DLQ_KEY_BYTES, key_bytes.as_str()),
                (hdr::DLQ_VALUE_BYTES, value_bytes.as_str()),
            ];
            let rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.config.topics.dead_letters).headers(headers(&pairs));
            out.send(&self.producer, rec).await?;
        }
        out.wait().await
    }

    fn input_topic(&self, family: Family) -> &str {
        let t = &self.config.topics;
        match family {
            Family::Orders => &t.orders,
            Family::Clickstream => &t.clickstream,
            Family::Support => &t.support,
        }
    }

    /// An accepted event as its canonical record: (key, canonical partition, value, event
    /// time). Refused as `too_large` when key and value would not fit what the producer can
    /// send: the canonical form can be larger than the input (a protobuf string of control
    /// characters is six times longer in JSON), and a record the producer refuses would stop
    /// ingest for good, the offset never committed.
    fn canonical(
        &self,
        event: pulse_core::Event,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(String, i32, Vec<u8>, Millis), Rejection> {
        let partition =
            kafka::partition_for(event.customer_id.as_bytes(), self.canonical_partitions);
        let key = event.customer_id.clone();
        let event_time = event.occurred_at;
        let record = Canonical::Event(
            event,
            Source {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
        );
        let value = encode_canonical(&record, self.config.encoding.canonical);
        let size = key.len() + value.len();
        if size > self.max_key_value {
            return Err(Rejection::new(
                "too_large",
                format!(
                    "its canonical record would be {size} bytes with its key, limit {} (the producer's message.max.bytes {} less {RECORD_HEADROOM} for headers)",
                    self.max_key_value,
                    self.config.kafka.message_max_bytes()
                ),
            ));
        }
        Ok((key, partition, value, event_time))
    }

    /// Appends a tick to every canonical partition that saw no event since the last round and
    /// whose clock the tick would advance.
    async fn tick_idle_partitions(&mut self, out: &mut Sent) -> Result<(), PipelineError> {
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
                        hdr::CONTENT_TYPE,
                        self.config.encoding.canonical.content_type(),
                    )]));
                out.send_tagged(&self.producer, rec, None).await?;
                sent += 1;
            }
        }
        telemetry::ingest_ticks(sent, time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_that_fits_is_kept_whole() {
        let (key, value) = (b"c-1".as_slice(), vec![b'x'; 1_000]);
        let f = fit_dead_letter(Some(key), Some(&value), 1_003);
        assert_eq!(
            f,
            Fitted {
                key: Some(key),
                value: Some(value.as_slice()),
                truncated: false
            }
        );
        // A tombstone stays null, a keyless record keyless.
        let f = fit_dead_letter(None, None, 10);
        assert_eq!((f.key, f.value, f.truncated), (None, None, false));
    }

    #[test]
    fn an_oversized_dead_letter_is_cut_to_the_budget_key_first() {
        let budget = 1_000_000 - RECORD_HEADROOM;
        // A 12 MiB value with a short key: the key whole, the value cut to the rest.
        let value = vec![b'v'; 12 << 20];
        let f = fit_dead_letter(Some(b"c-1"), Some(&value), budget);
        assert!(f.truncated);
        assert_eq!(f.key, Some(b"c-1".as_slice()));
        assert_eq!(f.value.map(<[u8]>::len), Some(budget - 3));
        assert!(
            value.starts_with(f.value.unwrap()),
            "a prefix of the original"
        );
        // A 1 MiB key (a customer id) and its 1 MiB record: the key cut to DLQ_KEY_MAX.
        let key = vec![b'k'; 1 << 20];
        let f = fit_dead_letter(Some(&key), Some(&value[..1 << 20]), budget);
        assert!(f.truncated);
        assert_eq!(f.key.map(<[u8]>::len), Some(DLQ_KEY_MAX));
        assert_eq!(f.value.map(<[u8]>::len), Some(budget - DLQ_KEY_MAX));
        // Together within the budget whatever the sizes.
        for (k, v) in [
            (0, 5_000_000),
            (5_000_000, 0),
            (2_000, 2_000_000),
            (budget, 1),
        ] {
            let (key, value) = (vec![b'k'; k], vec![b'v'; v]);
            let f = fit_dead_letter(Some(&key), Some(&value), budget);
            let total = f.key.map_or(0, <[u8]>::len) + f.value.map_or(0, <[u8]>::len);
            assert!(f.truncated && total <= budget, "{k} + {v}: {total}");
        }
    }
}
