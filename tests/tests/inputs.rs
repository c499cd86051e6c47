//! Nothing a producer sends stops pulse or makes it drop another customer's event,
//! through ingest and fold (against librdkafka's mock cluster, or tansu where said):
//! - event-id dedupe is per customer: customer A's order and customer B's NPS answer with the
//!   same `event_id` on the same canonical partition are both folded; A's order re-sent is
//!   dropped as a duplicate.
//! - records of any size end in the canonical log or the dead-letter topic, and ingest goes on:
//!   a 12 MiB record, a 1 MiB customer id (and key), 1.03 MB of bad JSON (over the limit: cut
//!   to what the producer can send, `pulse.dlq.truncated` and the original sizes in headers),
//!   900 kB under the limit whose parser message quotes the whole value (kept whole, the
//!   detail cut), a protobuf record whose canonical JSON would be over the producer's limit,
//!   and a tombstone; then a normal order is folded and the input offsets are committed past
//!   every one of them (no restart loop). Against tansu.
//! - a record the broker refuses as too large is dead-lettered without its bytes, and ingest
//!   goes on and commits.
//!
//! One file for these, so the duplicate counter this process's metrics recorder holds is only
//! moved by the test that expects it.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use pulse_codec::wire;
use pulse_e2e::{
    config, consume_until, day, http_get, produce, producer, sum_partitions, wait_for, Broker, Rec,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// A counter's value on `/metrics` (absent until first moved: 0).
fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_of_two_customers_is_not_a_duplicate() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "dedupe-across-customers", "");
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());

    // Two customers on the same canonical partition: dedupe is per partition, so only there
    // could one's event be taken for the other's.
    let a = "cust-a";
    let b = (0..)
        .map(|i| format!("cust-b-{i}"))
        .find(|c| {
            pulse::kafka::partition_for(c.as_bytes(), 2)
                == pulse::kafka::partition_for(a.as_bytes(), 2)
        })
        .expect("a customer on A's partition");
    let order = format!(
        r#"{{"event_id":"1001","customer_id":"{a}","occurred_at":{},"type":"order_placed","order_id":"o-1","amount":"30.00","currency":"EUR"}}"#,
        day(1)
    );
    let nps = format!(
        r#"{{"event_id":"1001","customer_id":"{b}","occurred_at":{},"type":"nps_submitted","score":9}}"#,
        day(1)
    );
    produce(&p, &cfg.topics.orders, Some(a), order.as_bytes(), &[]).await?;
    produce(&p, &cfg.topics.support, Some(&b), nps.as_bytes(), &[]).await?;
    // Ingest is at-least-once: the same order of A again is a duplicate (control).
    produce(&p, &cfg.topics.orders, Some(a), order.as_bytes(), &[]).await?;

    // Three events reached fold: each is either a dedupe entry (folded) or a duplicate.
    let entries = || {
        sum_partitions(&running, |s| {
            s.dedupe_entries().map_or(0, |d| d.len() as i64)
        })
    };
    let duplicates = || -> f64 {
        let (_, m) = http_get(running.http_addr, "/metrics").expect("metrics");
        counter(&m, "pulse_fold_duplicate_events_total")
    };
    wait_for(
        "fold to account for the three events",
        Duration::from_secs(60),
        || entries() as f64 + duplicates() >= 3.0,
    )
    .await?;
    assert_eq!(
        (entries(), duplicates()),
        (2, 1.0),
        "A's order and B's NPS answer folded, A's re-sent order dropped"
    );
    let (code, body) = http_get(running.http_addr, &format!("/v1/customers/{a}"))?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""count":1"#), "A has one order: {body}");
    let (code, body) = http_get(running.http_addr, &format!("/v1/customers/{b}"))?;
    assert_eq!(code, 200, "B's NPS answer was folded: {body}");
    running.stop().await?;
    Ok(())
}

/// The most key and value of a record pulse produces take together by default: librdkafka's
/// `message.max.bytes` (1,000,000) less pulse's 16,384 for headers.
const BUDGET: usize = 1_000_000 - 16_384;

/// A producer that may send records up to 16 MiB, as a producer with a raised
/// `message.max.bytes` (and a broker that takes them) would.
fn big_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", (16 << 20).to_string())
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// A produced input record: (what, key, value).
type Sent = (&'static str, Option<String>, Option<Vec<u8>>);

/// The offset `group` committed on partition 0 of `topic` (-1: none).
fn committed(broker: &Broker, group: &str, topic: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got.elements()[0].offset().to_raw().unwrap_or(-1))
}

/// Creates `cfg`'s topics, the orders topic with one partition (so "committed past a record"
/// is one number), the others with two.
async fn create_topics(broker: &Broker, cfg: &pulse::config::Config) -> anyhow::Result<()> {
    for (key, topic) in cfg.topics.named() {
        let n = if key == "topics.orders" { 1 } else { 2 };
        broker.create_topics(cfg, &[topic], n).await?;
    }
    Ok(())
}

fn order(customer: &str, event_id: &str, extra: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","customer_id":"{customer}","occurred_at":{},"type":"order_placed","order_id":"o-{event_id}","amount":"30.00","currency":"EUR"{extra}}}"#,
        day(3)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_dead_lettered_and_ingest_goes_on() -> anyhow::Result<()> {
    // tansu, not the mock cluster: the mock keeps about 5 MiB per partition and drops older
    // record batches beyond it (it lost the 2 MiB record here), which a real broker never does.
    // tansu takes and serves records of any size, as a Kafka broker does whose input topic's
    // max.message.bytes was raised for the producer that sends them.
    let broker = Broker::tansu()?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "oversized", "");
    assert_eq!(cfg.ingest.max_record_bytes, BUDGET, "the default limit");
    create_topics(&broker, &cfg).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = big_producer(&broker.bootstrap());
    let orders = cfg.topics.orders.as_str();
    let dead = |n: usize| {
        consume_until(
            &broker.bootstrap(),
            &[&cfg.topics.dead_letters],
            Duration::from_secs(60),
            |r| r.len() >= n,
        )
    };

    // What was produced, by input offset: (what, key, value).
    let mut sent: BTreeMap<i64, Sent> = BTreeMap::new();
    let huge = order(
        "c-huge",
        "huge",
        &format!(r#","pad":"{}""#, "x".repeat(12 << 20)),
    );
    let (_, off) = produce(&p, orders, Some("c-huge"), huge.as_bytes(), &[]).await?;
    sent.insert(
        off,
        (
            "12 MiB record",
            Some("c-huge".into()),
            Some(huge.into_bytes()),
        ),
    );

    let long_id = format!("c{}", "i".repeat((1 << 20) - 1));
    let rec = order(&long_id, "long-id", "");
    let (_, off) = produce(&p, orders, Some(&long_id), rec.as_bytes(), &[]).await?;
    sent.insert(
        off,
        ("1 MiB customer id", Some(long_id), Some(rec.into_bytes())),
    );

    let bad_json = format!(r#"{{"event_id":"{}"#, "j".repeat(1_030_000));
    let (_, off) = produce(&p, orders, Some("c-json"), bad_json.as_bytes(), &[]).await?;
    sent.insert(
        off,
        (
            "1.03 MB bad JSON",
            Some("c-json".into()),
            Some(bad_json.into_bytes()),
        ),
    );

    // Under the limit, but serde_json's message quotes the 900 kB string in full.
    let quoted = order(
        "c-quoted",
        "quoted",
        &format!(r#","score":"{}""#, "q".repeat(900_000)),
    );
    assert!(quoted.len() < BUDGET);
    let (_, off) = produce(&p, orders, Some("c-quoted"), quoted.as_bytes(), &[]).await?;
    sent.insert(
        off,
        (
            "900 kB quoted by the parser",
            Some("c-quoted".into()),
            Some(quoted.into_bytes()),
        ),
    );

    // 200 kB of protobuf whose canonical JSON writes each control character as 6 bytes.
    let proto = wire::OrderEvent {
        event_id: "proto".into(),
        customer_id: "c-proto".into(),
        occurred_at: Some(wire::Timestamp {
            value: Some(wire::timestamp::Value::EpochMs(day(3))),
        }),
        r#type: "order_placed".into(),
        order_id: "o-proto".into(),
        amount: "30.00".into(),
        currency: "EUR".into(),
        channel: Some("\u{1}".repeat(200_000)),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(proto.len() < BUDGET && proto.len() * 6 > BUDGET);
    let pb = [("content-type", "application/x-protobuf")];
    let (_, off) = produce(&p, orders, Some("c-proto"), &proto, &pb).await?;
    sent.insert(
        off,
        (
            "protobuf too large as canonical JSON",
            Some("c-proto".into()),
            Some(proto),
        ),
    );

    let tombstone = rdkafka::producer::FutureRecord::<str, [u8]>::to(orders).key("c-tomb");
    let off = p
        .send(tombstone, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?
        .offset;
    sent.insert(off, ("tombstone", Some("c-tomb".into()), None));

    let fine = order("c-ok", "ok", "");
    let (_, last) = produce(
        &producer(&broker.bootstrap()),
        orders,
        Some("c-ok"),
        fine.as_bytes(),
        &[],
    )
    .await?;

    let letters = dead(sent.len())?;
    assert_eq!(letters.len(), sent.len(), "one dead letter per record");
    let by_offset: BTreeMap<i64, &Rec> = letters
        .iter()
        .map(|d| Ok((d.headers["pulse.dlq.source.offset"].parse()?, d)))
        .collect::<anyhow::Result<_>>()?;
    for (off, (what, key, value)) in &sent {
        let d = by_offset[off];
        let h = |k: &str| d.headers.get(k).map(String::as_str);
        let reason = h("pulse.dlq.reason").unwrap_or_default();
        let detail = h("pulse.dlq.detail").unwrap_or_default();
        let got_key = d.key.as_deref().map_or(0, str::len);
        eprintln!(
            "{what}: reason {reason}, key {got_key} B, value {} B, truncated {:?}, original {:?}/{:?} B, detail {} B: {:.120}",
            d.value.len(),
            h("pulse.dlq.truncated"),
            h("pulse.dlq.original.key.bytes"),
            h("pulse.dlq.original.value.bytes"),
            detail.len(),
            detail
        );
        assert_eq!(h("pulse.dlq.source.topic"), Some(orders), "{what}");
        assert!(
            !detail.is_empty() && detail.len() <= 512,
            "{what}: detail of {} bytes",
            detail.len()
        );
        assert!(
            got_key + d.value.len() <= BUDGET,
            "{what}: within the producer's limit"
        );
        let (key_len, value) = (
            key.as_deref().map_or(0, str::len),
            value.as_deref().unwrap_or_default(),
        );
        let cut = key_len + value.len() > BUDGET;
        if cut {
            assert_eq!(h("pulse.dlq.truncated"), Some("true"), "{what}");
            assert_eq!(
                h("pulse.dlq.original.key.bytes"),
                Some(key_len.to_string().as_str()),
                "{what}"
            );
            assert_eq!(
                h("pulse.dlq.original.value.bytes"),
                Some(value.len().to_string().as_str()),
                "{what}"
            );
            assert!(
                value.starts_with(&d.value),
                "{what}: the value cut, a prefix of the original"
            );
            assert!(key
                .as_deref()
                .unwrap_or_default()
                .starts_with(d.key.as_deref().unwrap_or_default()));
            assert_eq!(
                got_key + d.value.len(),
                BUDGET.min(key_len.min(1_024) + value.len()),
                "{what}: as much as fits"
            );
        } else {
            assert_eq!(h("pulse.dlq.truncated"), None, "{what}: nothing cut");
            assert_eq!(d.value, value, "{what}: the original bytes");
            assert_eq!(d.key, *key, "{what}");
        }
        let want = match *what {
            "900 kB quoted by the parser" => "bad_field",
            "tombstone" => "tombstone",
            _ => "too_large",
        };
        assert_eq!(reason, want, "{what}: {detail}");
    }
    // The parser's message is cut, not the record.
    let quoted = by_offset
        .values()
        .find(|d| d.key.as_deref() == Some("c-quoted"))
        .expect("quoted");
    assert!(quoted.headers["pulse.dlq.detail"].ends_with("… (truncated)"));
    let proto = by_offset
        .values()
        .find(|d| d.key.as_deref() == Some("c-proto"))
        .expect("proto");
    assert!(proto.headers["pulse.dlq.detail"].contains("canonical record"));
    assert_eq!(
        proto.headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );

    // Ingest went on: the order after them all is folded ...
    wait_for(
        "the normal order to be folded",
        Duration::from_secs(60),
        || {
            http_get(running.http_addr, "/v1/customers/c-ok")
                .is_ok_and(|(code, body)| code == 200 && body.contains(r#""count":1"#))
        },
    )
    .await?;
    // ... and its offset committed past every record: a restart starts after them.
    let group = pulse::kafka::group_id(&cfg, "ingest");
    wait_for(
        "ingest to commit past the last record",
        Duration::from_secs(30),
        || committed(&broker, &group, orders).is_ok_and(|o| o == last + 1),
    )
    .await?;
    running.stop().await?;
    Ok(())
}

/// A record the broker refuses as too large (its topic's max.message.bytes below the
/// producer's message.max.bytes, which pulse cannot see) is dead-lettered without its bytes,
/// saying so, and ingest goes on. The mock cluster answers ingest's first Produce request
/// with MESSAGE_TOO_LARGE, as such a broker answers (neither test broker has a topic size
/// limit to configure). Fold is off: nothing else produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_as_too_large_is_dead_lettered() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "refused", "[fold]\nenabled = false\n");
    create_topics(&broker, &cfg).await?;
    let orders = cfg.topics.orders.as_str();
    let p = producer(&broker.bootstrap());
    let first = order("c-refused", "refused", "");
    let (_, refused) = produce(&p, orders, Some("c-refused"), first.as_bytes(), &[]).await?;
    let Broker::Mock(mock) = &broker else {
        unreachable!("a mock cluster")
    };
    // Acknowledged above, so the next Produce request is ingest's, for the canonical record.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let running = pulse::start(cfg.clone()).await?;

    let letters = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.dead_letters],
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )?;
    let d = &letters[0];
    let h = |k: &str| d.headers.get(k).map(String::as_str);
    assert_eq!(h("pulse.dlq.reason"), Some("too_large"));
    assert!(
        h("pulse.dlq.detail").is_some_and(|t| t.contains("broker refused")),
        "{:?}",
        d.headers
    );
    assert_eq!(h("pulse.dlq.source.topic"), Some(orders));
    assert_eq!(
        h("pulse.dlq.source.offset"),
        Some(refused.to_string().as_str())
    );
    assert_eq!(h("pulse.dlq.truncated"), Some("true"));
    assert_eq!(h("pulse.dlq.original.key.bytes"), Some("9"));
    assert_eq!(
        h("pulse.dlq.original.value.bytes"),
        Some(first.len().to_string().as_str())
    );
    assert_eq!((d.key.as_deref(), d.value.len()), (None, 0), "no bytes");

    // Ingest went on: the next order reaches the canonical log, and the offset is committed.
    let next = order("c-next", "next", "");
    let (_, last) = produce(&p, orders, Some("c-next"), next.as_bytes(), &[]).await?;
    consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.canonical],
        Duration::from_secs(60),
        |r| r.iter().any(|r| r.key.as_deref() == Some("c-next")),
    )?;
    let group = pulse::kafka::group_id(&cfg, "ingest");
    wait_for(
        "ingest to commit past the next order",
        Duration::from_secs(30),
        || committed(&broker, &group, orders).is_ok_and(|o| o == last + 1),
    )
    .await?;
    running.stop().await?;
    Ok(())
}
