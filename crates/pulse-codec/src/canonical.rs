//! The canonical log's records (events and ticks) ⇄ bytes.

use prost::Message;
use pulse_core::event::{
    Body, Click, ClickKind, Event, Millis, Order, OrderKind, Support, SupportKind,
};

use crate::wire::{self, canonical_event, canonical_record};
use crate::{CodecError, Encoding};

/// Where ingest read an event: kept for lineage and debugging, not used by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickSource {
    /// Ingest's event-time watermark: replay fires the same timers.
    Watermark,
    /// The wall clock, for deployments that want timers to fire during live quiet periods.
    WallClock,
}

impl TickSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TickSource::Watermark => "watermark",
            TickSource::WallClock => "wall_clock",
        }
    }
}

/// One record of the canonical log.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical {
    Event(Event, Source),
    Tick { time: Millis, source: TickSource },
}

pub fn encode_canonical(record: &Canonical, encoding: Encoding) -> Vec<u8> {
    let wire = to_wire(record);
    match encoding {
        Encoding::Json => serde_json::to_vec(&wire).expect("wire types always serialize"),
        Encoding::Protobuf => wire.encode_to_vec(),
    }
}

pub fn decode_canonical(bytes: &[u8], encoding: Encoding) -> Result<Canonical, CodecError> {
    let wire: wire::CanonicalRecord = match encoding {
        Encoding::Json => serde_json::from_slice(bytes)?,
        Encoding::Protobuf => wire::CanonicalRecord::decode(bytes)?,
    };
    from_wire(wire)
}

fn to_wire(record: &Canonical) -> wire::CanonicalRecord {
    let record = match record {
        Canonical::Tick { time, source } => canonical_record::Record::Tick(wire::Tick {
            time_ms: *time,
            source: source.as_str().to_string(),
        }),
        Canonical::Event(e, src) => {
            let body = match &e.body {
                Body::Order(o) => canonical_event::Body::Order(wire::Order {
                    r#type: o.kind.as_str().into(),
                    order_id: o.order_id.clone(),
                    amount_minor: o.amount_minor,
                    currency: o.currency.clone(),
                    item_count: o.item_count,
                    channel: o.channel.clone(),
                }),
                Body::Click(c) => canonical_event::Body::Click(wire::Click {
                    r#type: c.kind.as_str().into(),
                    session_id: c.session_id.clone(),
                }),
                Body::Support(s) => canonical_event::Body::Support(wire::Support {
                    r#type: s.kind.as_str().into(),
                    ticket_id: s.ticket_id.clone(),
                    score: s.score.map(u32::from),
                    sentiment: s.sentiment,
                }),
                Body::Erased => canonical_event::Body::Erasure(wire::Erasure {}),
            };
            canonical_record::Record::Event(wire::CanonicalEvent {
                event_id: e.event_id.clone(),
                customer_id: e.customer_id.clone(),
                occurred_at_ms: e.occurred_at,
                source: Some(wire::Source {
                    topic: src.topic.clone(),
                    partition: src.partition,
                    offset: src.offset,
                }),
                body: Some(body),
            })
        }
    };
    wire::CanonicalRecord {
        record: Some(record),
    }
}

fn from_wire(wire: wire::CanonicalRecord) -> Result<Canonical, CodecError> {
    let bad = |what: &str| CodecError::Invalid(what.to_string());
    match wire.record.ok_or_else(|| bad("record is empty"))? {
        canonical_record::Record::Tick(t) => Ok(Canonical::Tick {
            time: t.time_ms,
            source: match t.source.as_str() {
                "wall_clock" => TickSource::WallClock,
                "watermark" => TickSource::Watermark,
                other => return Err(bad(&format!("unknown tick source {other}"))),
            },
        }),
        canonical_record::Record::Event(e) => {
            let body = match e.body.ok_or_else(|| bad("event has no body"))? {
                canonical_event::Body::Order(o) => Body::Order(Order {
                    kind: OrderKind::parse(&o.r#type).ok_or_else(|| bad("order type"))?,
                    order_id: o.order_id,
                    amount_minor: o.amount_minor,
                    currency: o.currency,
                    item_count: o.item_count,
                    channel: o.channel,
                }),
                canonical_event::Body::Click(c) => Body::Click(Click {
                    kind: ClickKind::parse(&c.r#type).ok_or_else(|| bad("click type"))?,
                    session_id: c.session_id,
                }),
                canonical_event::Body::Support(s) => Body::Support(Support {
                    kind: SupportKind::parse(&s.r#type).ok_or_else(|| bad("support type"))?,
                    ticket_id: s.ticket_id,
                    score: s.score.map(|v| v.min(255) as u8),
                    sentiment: s.sentiment,
                }),
                canonical_event::Body::Erasure(_) => Body::Erased,
            };
            let src = e.source.unwrap_or_default();
            Ok(Canonical::Event(
                Event {
                    event_id: e.event_id,
                    customer_id: e.customer_id,
                    occurred_at: e.occurred_at_ms,
                    body,
                },
                Source {
                    topic: src.topic,
                    partition: src.partition,
                    offset: src.offset,
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (0..3u8, "[a-z0-9]{1,8}", 0..1_000_000i64, 0..20u32).prop_map(|(k, id, amt, n)| {
                Body::Order(Order {
                    kind: [OrderKind::Placed, OrderKind::Cancelled, OrderKind::Refunded]
                        [k as usize],
                    order_id: id,
                    amount_minor: amt,
                    currency: "EUR".into(),
                    item_count: n,
                    channel: None,
                })
            }),
            proptest::option::of("[a-z]{1,6}").prop_map(|s| Body::Click(Click {
                kind: ClickKind::AddToCart,
                session_id: s
            })),
            (
                proptest::option::of(0..=10u8),
                proptest::option::of(-1.0f32..1.0)
            )
                .prop_map(|(score, sentiment)| Body::Support(Support {
                    kind: SupportKind::NpsSubmitted,
                    ticket_id: None,
                    score,
                    sentiment
                })),
            Just(Body::Erased),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_in_both_encodings(
            id in "[a-z0-9-]{1,20}", cust in "[a-z0-9-]{1,20}", t in 0..4_000_000_000_000i64,
            body in arb_body(), offset in 0..1_000_000i64, tick in any::<bool>(),
        ) {
            let record = if tick {
                Canonical::Tick { time: t, source: TickSource::Watermark }
            } else {
                Canonical::Event(
                    Event { event_id: id, customer_id: cust, occurred_at: t, body },
                    Source { topic: "customer.orders".into(), partition: 3, offset },
                )
            };
            for enc in [Encoding::Json, Encoding::Protobuf] {
                let bytes = encode_canonical(&record, enc);
                prop_assert_eq!(&decode_canonical(&bytes, enc).unwrap(), &record);
            }
        }
    }
}
