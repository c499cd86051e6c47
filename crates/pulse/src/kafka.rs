//! Kafka plumbing shared by ingest and fold: client configs, the murmur2 partitioner (the Java
//! client's, so every producer of the canonical log agrees), and headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::config::Config;

/// Checks each property as librdkafka will take it (`(name, why)` for the first it refuses):
/// an unknown name, or a value it refuses alone (`security.protocol = "SASL_SSL"` in a build
/// without the `ssl` feature, `sasl.jaas.config`, a TLS property without OpenSSL). Doing it here,
/// at load, names the key with exit code 2 and keeps the value out: rdkafka's error for a
/// refused property prints the value, and that value may be a secret (`ssl.key.pem`).
pub fn check_properties(
    properties: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    use rdkafka::types::RDKafkaConfRes;
    for (name, value) in properties {
        let mut c = ClientConfig::new();
        c.set(name, value);
        match c.create_native_config() {
            Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
                return Err((
                    name.clone(),
                    "is not a librdkafka property (see librdkafka's CONFIGURATION.md); in \
                     PULSE__KAFKA__PROPERTIES__<NAME>, `_` stands for `.`"
                        .to_string(),
                ));
            }
            Err(KafkaError::ClientConfig(_, desc, ..)) => {
                let desc = hide(&desc, value);
                return Err((name.clone(), format!("librdkafka refuses it: {desc}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `text` with each occurrence of `value` that stands alone (not inside a longer word: a
/// value `SSL` leaves "OpenSSL" as it is) replaced by "(value not shown)".
fn hide(text: &str, value: &str) -> String {
    if value.is_empty() {
        return text.to_string();
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(value) {
        let (before, after) = (
            rest[..i].chars().last(),
            rest[i + value.len()..].chars().next(),
        );
        out.push_str(&rest[..i]);
        if word(before) || word(after) {
            out.push_str(value);
        } else {
            out.push_str("(value not shown)");
        }
        rest = &rest[i + value.len()..];
    }
    out.push_str(rest);
    out
}

/// Client config: brokers, then pulse's `defaults`, then the user's pass-through librdkafka
/// properties, which win (validation refuses the few keys pulse must own).
fn build(config: &Config, defaults: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

pub fn client_config(config: &Config) -> ClientConfig {
    build(config, &[])
}

/// Producer settings: murmur2 keyed partitioning (Java-compatible), idempotence off by default
/// because acknowledged-message loss with idempotence was measured on tansu (README, "Test
/// brokers"); alert
/// duplicates are absorbed downstream by the deterministic alert_id.
pub fn producer_config(config: &Config) -> ClientConfig {
    build(
        config,
        &[
            ("partitioner", "murmur2_random".into()),
            ("linger.ms", "5".into()),
            ("message.timeout.ms", "30000".into()),
        ],
    )
}

/// The consumer group of a pipeline (`ingest` or `fold`).
pub fn group_id(config: &Config, pipeline: &str) -> String {
    format!("{}-{pipeline}", config.kafka.group_id)
}

pub fn consumer_config(config: &Config, pipeline: &str) -> ClientConfig {
    let mut c = consumer_defaults(config, pipeline);
    // The fold group's members name themselves by their HTTP address in the broker's view
    // (logs, group tools). Set last: a pass-through property must not override it.
    if pipeline == "fold" && !config.http.advertised_addr.is_empty() {
        c.set("client.id", &config.http.advertised_addr);
    }
    c
}

fn consumer_defaults(config: &Config, pipeline: &str) -> ClientConfig {
    build(
        config,
        &[
            ("group.id", group_id(config, pipeline)),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("isolation.level", "read_committed".into()),
            ("session.timeout.ms", "6000".into()),
            ("heartbeat.interval.ms", "1000".into()),
            ("partition.assignment.strategy", "cooperative-sticky".into()),
            // Lag gauges, ingest's merge (which input partitions are behind) and fold's
            // readiness (the end of each held partition).
            ("statistics.interval.ms", "1000".into()),
        ],
    )
}

/// Consumer errors librdkafka recovers from by itself (it reconnects and fetches again from
/// where it was): a broker restart shows up as these, and must not stop a pipeline.
pub fn transient(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageConsumption(C::AllBrokersDown | C::BrokerTransportFailure)
    )
}

/// A consumer context that exports consumer lag from librdkafka's statistics, and keeps which
/// partitions are behind (records in the broker not yet received) for ingest's merge.
pub struct LagContext {
    pub group: String,
    /// topic → partition → behind.
    pub behind: Arc<Mutex<HashMap<String, HashMap<i32, bool>>>>,
}

impl LagContext {
    pub fn new(group: String) -> Self {
        LagContext {
            group,
            behind: Arc::default(),
        }
    }
}

impl rdkafka::client::ClientContext for LagContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::telemetry::consumer_lag(&self.group, &statistics);
        let mut behind = self.behind.lock().expect("lock");
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 {
                    (behind.entry(topic.clone()).or_default()).insert(*p, is_behind(part));
                }
            }
        }
    }
}

/// A partition's end as librdkafka's statistics report it: the last stable offset (what a
/// read_committed consumer can read), else the high watermark; negative if not known yet.
pub fn partition_end(p: &rdkafka::statistics::Partition) -> i64 {
    if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    }
}

/// Whether a partition has records in the broker beyond those handed to the application: its
/// [`partition_end`] against the application's offset (or, before a first record, where it
/// starts). Unknown is behind.
fn is_behind(p: &rdkafka::statistics::Partition) -> bool {
    let end = partition_end(p);
    let received = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|o| *o >= 0)
        .unwrap_or(-1);
    end < 0 || received < 0 || received < end
}

impl rdkafka::consumer::ConsumerContext for LagContext {}

/// Partition of a key under the Java client's default partitioner (murmur2, positive, modulo).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

pub fn headers(pairs: &[(impl AsRef<str>, impl AsRef<str>)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k.as_ref(),
            value: Some(v.as_ref()),
        })
    })
}

/// The value of a header as text, if present and UTF-8.
/// A canonical record decoded in the encoding its `content-type` header names, else the
/// configured one: how fold, replay and `pulse fit` read the canonical log.
pub fn decode_canonical_message(
    m: &rdkafka::message::BorrowedMessage<'_>,
    config: &crate::config::Config,
) -> Result<pulse_codec::Canonical, pulse_codec::CodecError> {
    use rdkafka::Message;
    let encoding = header(m.headers(), pulse_codec::headers::CONTENT_TYPE)
        .and_then(pulse_codec::Encoding::from_content_type)
        .unwrap_or(config.encoding.canonical);
    pulse_codec::decode_canonical(m.payload().unwrap_or_default(), encoding)
}

pub fn header<'a>(
    headers: Option<&'a rdkafka::message::BorrowedHeaders>,
    key: &str,
) -> Option<&'a str> {
    let h = headers?;
    h.iter()
        .find(|h| h.key.eq_ignore_ascii_case(key))
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// How long pulse waits for the first broker to answer before it reports the cluster
/// unreachable: long enough for a TLS + SASL handshake across a region, short enough that an
/// operator with a wrong address is told within seconds.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// A client context that keeps librdkafka's log lines and global errors at debug level and
/// remembers the last one, so that a failure is reported once, in pulse's words, naming the
/// bootstrap servers ([`ReachError`]), instead of as a burst of librdkafka lines at error
/// level. librdkafka never logs secret property values (it marks them sensitive).
#[derive(Default)]
pub struct QuietContext {
    cause: std::sync::Mutex<Option<&'static str>>,
}

impl QuietContext {
    fn remember(&self, line: String) {
        let cause = classify(&line);
        tracing::debug!(target: "librdkafka", "{line}");
        if cause.is_some() {
            *self.cause.lock().expect("lock") = cause;
        }
    }

    /// The last specific problem librdkafka reported, in a few words (never its raw text,
    /// which the debug log has): "all brokers down" follows every failed attempt and says
    /// less than the connection error before it.
    fn cause(&self) -> &'static str {
        self.cause.lock().expect("lock").unwrap_or("no answer")
    }
}

fn classify(line: &str) -> Option<&'static str> {
    let l = line.to_ascii_lowercase();
    Some(if l.contains("connection refused") {
        "connection refused"
    } else if l.contains("resolve") {
        "host name not resolved"
    } else if l.contains("sasl") || l.contains("authentication") {
        "authentication failed"
    } else if l.contains("ssl") {
        "TLS handshake failed"
    } else if l.contains("timed out") {
        "connection timed out"
    } else {
        return None;
    })
}

impl rdkafka::client::ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(level, L::Debug | L::Info | L::Notice) {
            tracing::debug!(target: "librdkafka", "{fac} {message}");
        } else {
            self.remember(format!("{fac} {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.remember(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("no Kafka broker answered at {bootstrap} (kafka.bootstrap_servers) within {secs} s: {cause} (RUST_LOG=librdkafka=debug shows librdkafka's detail)")]
    Unreachable {
        bootstrap: String,
        secs: u64,
        cause: &'static str,
    },
    #[error("kafka client")]
    Client(#[source] KafkaError),
}

/// The cluster's metadata for every topic, through a [`QuietContext`] client: the first
/// contact pulse makes, so an unreachable cluster is reported here, once, within
/// [`REACH_TIMEOUT`]. Blocking: call off the async runtime.
pub fn cluster_metadata(config: &Config) -> Result<rdkafka::metadata::Metadata, ReachError> {
    let consumer: BaseConsumer<QuietContext> = client_config(config)
        .create_with_context(QuietContext::default())
        .map_err(ReachError::Client)?;
    let deadline = std::time::Instant::now() + REACH_TIMEOUT;
    // librdkafka queues its log lines and errors (rdkafka sets `log.queue`): polling hands
    // them to the context, which keeps them at debug level. A poll with a timeout takes every
    // event that arrives within it; one with none takes a single event, too few to keep up
    // with `debug=all`.
    let drain = || {
        let until = std::time::Instant::now() + Duration::from_millis(50);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let _ = consumer.poll(left);
        }
    };
    loop {
        match consumer.fetch_metadata(None, Duration::from_millis(500)) {
            Ok(md) => {
                drain();
                return Ok(md);
            }
            Err(_) if std::time::Instant::now() < deadline => drain(),
            Err(_) => {
                drain();
                return Err(ReachError::Unreachable {
                    bootstrap: config.kafka.bootstrap_servers.clone(),
                    secs: REACH_TIMEOUT.as_secs(),
                    cause: consumer.context().cause(),
                });
            }
        }
    }
}

/// Number of partitions of a topic, from broker metadata.
pub fn partition_count(config: &Config, topic: &str) -> Result<i32, KafkaError> {
    let consumer: BaseConsumer = client_config(config).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().ok_or(KafkaError::MetadataFetch(
        rdkafka::types::RDKafkaErrorCode::UnknownTopic,
    ))?;
    if let Some(e) = t.error() {
        return Err(KafkaError::MetadataFetch(e.into()));
    }
    Ok(t.partitions().len() as i32)
}

/// The owner of each canonical partition as the fold group's committed offsets name it: fold
/// commits each partition's offset with its advertised HTTP address as the commit metadata,
/// so the last committer — the current owner, or for a moment after a rebalance the previous
/// one — is known to every instance through OffsetFetch, which every broker implements.
/// Blocking: call off the async runtime.
pub fn fold_group_owners(
    config: &Config,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<i32, String>, KafkaError> {
    // A consumer that only asks for the group's committed offsets; it never joins the group.
    let consumer: BaseConsumer = build(
        config,
        &[
            ("group.id", group_id(config, "fold")),
            ("enable.auto.commit", "false".into()),
        ],
    )
    .create()?;
    let topic = &config.topics.canonical;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partition_count(config, topic)? {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter(|e| !e.metadata().is_empty())
        .map(|e| (e.partition(), e.metadata().to_string()))
        .collect())
}

/// Creates one topic (admin API); an existing one is left as it is.
pub async fn create_topic(config: &Config, name: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    match admin
        .create_topics([&topic], &AdminOptions::new())
        .await?
        .remove(0)
    {
        Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
        Err((_, code)) => Err(KafkaError::AdminOp(code)),
    }
}

/// Creates pulse's topics where the broker supports the admin API (not the mock cluster, whose
/// topics are created through its own handle). Existing topics are left as they are.
pub async fn create_topics(config: &Config, partitions: i32) -> Result<(), KafkaError> {
    for (_, name) in config.topics.named() {
        create_topic(config, name, partitions).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn hide_replaces_the_value_where_it_stands_alone() {
        assert_eq!(
            hide("Unsupported value \"SSL\" for \"security.protocol\": OpenSSL not available", "SSL"),
            "Unsupported value \"(value not shown)\" for \"security.protocol\": OpenSSL not available"
        );
        assert_eq!(
            hide("bad: hunter2. again hunter2", "hunter2"),
            "bad: (value not shown). again (value not shown)"
        );
        assert_eq!(hide("nothing", ""), "nothing");
    }
}
