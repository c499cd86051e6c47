//! Input events (customer.orders / .clickstream / .support) → validated core [`Event`]s.
//!
//! JSON and protobuf are read into one borrowed view, `Fields`, and validated once, so both
//! encodings accept and reject exactly the same events with the same reasons.

use std::borrow::Cow;

use prost::Message;
use pulse_core::event::{Body, Click, ClickKind, Event, Order, OrderKind, Support, SupportKind};
use pulse_core::Millis;
use serde::Deserialize;

use crate::money::{parse_minor, valid_currency};
use crate::time::{format_rfc3339, parse_rfc3339};
use crate::wire;
use crate::Encoding;

/// Which input topic a record came from; decides which `type`s are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Orders,
    Clickstream,
    Support,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Orders, Family::Clickstream, Family::Support];
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Orders => "orders",
            Family::Clickstream => "clickstream",
            Family::Support => "support",
        }
    }
}

/// Why a record was not accepted: `reason` is machine-readable (`class[:detail]`, e.g.
/// `missing_field:customer_id`), `detail` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub detail: String,
}

impl Rejection {
    /// The detail is cut to [`MAX_DETAIL_BYTES`]: a parser's message can quote the offending
    /// value (serde_json's `invalid type: string "…"`), and the value can be as large as the
    /// record; the dead letter carries the record itself, so its detail never needs to repeat it.
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut cut = MAX_DETAIL_BYTES - TRUNCATED.len();
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str(TRUNCATED);
        }
        Rejection {
            reason: reason.into(),
            detail,
        }
    }
    fn missing(field: &str) -> Self {
        Rejection::new(
            format!("missing_field:{field}"),
            format!("`{field}` is required"),
        )
    }
    /// The bounded class of the reason (`missing_field`, `bad_json`, ...), for metrics.
    pub fn class(&self) -> &str {
        self.reason.split(':').next().unwrap_or(&self.reason)
    }
}

/// Ids longer than this are refused: they are keys, not documents.
const MAX_ID_LEN: usize = 256;
/// The longest [`Rejection::detail`], in bytes (UTF-8, cut at a character boundary).
pub const MAX_DETAIL_BYTES: usize = 512;
/// What ends a detail that was cut.
const TRUNCATED: &str = "… (truncated)";
/// Event times start at the Unix epoch (1970-01-01T00:00:00Z): any past a retailer can
/// backfill, and nothing negative (a sign or unit mistake; state and the partition clock are
/// non-negative milliseconds).
pub const MIN_TIME: Millis = 0;
/// ... and end before 2200-01-01T00:00:00Z: a sanity check on units, since epoch microseconds
/// or nanoseconds of any recent date land far beyond it. Whether a time in range is too far
/// ahead of now is ingest's question, asked with its clock ([`check_not_future`]).
pub const MAX_TIME: Millis = 7_258_118_400_000;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum When<'a> {
    Millis(i64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Number(serde_json::Number),
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    quantity: Option<u32>,
}

/// Every field any input family may carry, borrowed from the record where possible.
#[derive(Debug, Default, Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    occurred_at: Option<When<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    order_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    amount: Option<Amount<'a>>,
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    items: Option<Vec<ObjectOnly<Item>>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ticket_id: Option<Cow<'a, str>>,
    score: Option<f64>,
    sentiment: Option<f64>,
    /// Feedback text: scored into `sentiment` when that is absent, then dropped.
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// Decodes and validates one input record as a Kafka consumer hands it over: `None` is a
/// record whose value is null, a tombstone. Input topics carry events, and a tombstone carries
/// none (no id, no time, no customer in its value): it is refused as `tombstone`, never
/// skipped, so the dead letter keeps its key and coordinates for whoever sent it (often a
/// producer that meant to delete a customer: that is a `customer_erased` event).
pub fn decode_record(
    family: Family,
    encoding: Encoding,
    value: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Event, Rejection> {
    match value {
        Some(bytes) => decode_input(family, encoding, bytes, max_bytes),
        None => Err(Rejection::new(
            "tombstone",
            "the record's value is null (a tombstone): input topics carry events; to erase a customer send a `customer_erased` event",
        )),
    }
}

/// Decodes and validates one input record.
pub fn decode_input(
    family: Family,
    encoding: Encoding,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Event, Rejection> {
    if bytes.len() > max_bytes {
        return Err(Rejection::new(
            "too_large",
            format!("{} bytes, limit {max_bytes}", bytes.len()),
        ));
    }
    match encoding {
        Encoding::Json => {
            not_an_object(bytes)?;
            let fields: Fields<'_> = serde_json::from_slice(bytes).map_err(|e| {
                let class = if e.is_data() { "bad_field" } else { "bad_json" };
                Rejection::new(class, e.to_string())
            })?;
            validate(family, fields)
        }
        Encoding::Protobuf => {
            let bad = |e: prost::DecodeError| Rejection::new("bad_protobuf", e.to_string());
            let fields = match family {
                Family::Orders => from_order(wire::OrderEvent::decode(bytes).map_err(bad)?),
                Family::Clickstream => {
                    from_click(wire::ClickstreamEvent::decode(bytes).map_err(bad)?)
                }
                Family::Support => from_support(wire::SupportEvent::decode(bytes).map_err(bad)?),
            };
            validate(family, fields)
        }
    }
}

/// An event is a JSON object. serde would also fill a struct from an array, by position
/// (`["e1","c1",1772366400123,"order_placed",...]` is an order to it): a producer's field
/// order is no contract, so anything but an object is refused, as `not_an_object` when it is
/// valid JSON of another kind, else as `bad_json`.
fn not_an_object(bytes: &[u8]) -> Result<(), Rejection> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(());
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(Rejection::new("bad_json", e.to_string()));
    }
    let kind = match first {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    };
    Err(Rejection::new(
        "not_an_object",
        format!("an input event must be a JSON object, not {kind}"),
    ))
}

/// Deserializes `T` from a JSON object only, never from an array by position (see
/// [`not_an_object`]); for the objects nested in an event (order items).
#[derive(Debug)]
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectOnly)
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

fn non_empty(s: String) -> Option<Cow<'static, str>> {
    (!s.is_empty()).then_some(Cow::Owned(s))
}

fn when(ts: Option<wire::Timestamp>) -> Option<When<'static>> {
    match ts?.value? {
        wire::timestamp::Value::Rfc3339(s) => Some(When::Text(Cow::Owned(s))),
        wire::timestamp::Value::EpochMs(ms) => Some(When::Millis(ms)),
    }
}

fn from_order(e: wire::OrderEvent) -> Fields<'static> {
    Fields {
        event_id: non_empty(e.event_id),
        customer_id: non_empty(e.customer_id),
        occurred_at: when(e.occurred_at),
        kind: non_empty(e.r#type),
        order_id: non_empty(e.order_id),
        amount: non_empty(e.amount).map(Amount::Text),
        currency: non_empty(e.currency),
        items: Some(
            e.items
                .into_iter()
                .map(|i| {
                    ObjectOnly(Item {
                        quantity: Some(i.quantity),
                    })
                })
                .collect(),
        ),
        channel: e.channel.map(Cow::Owned),
        ..Fields::default()
    }
}

fn from_click(e: wire::ClickstreamEvent) -> Fields<'static> {
    Fields {
        event_id: non_empty(e.event_id),
        customer_id: non_empty(e.customer_id),
        occurred_at: when(e.occurred_at),
        kind: non_empty(e.r#type),
        session_id: e.session_id.map(Cow::Owned),
        channel: e.channel.map(Cow::Owned),
        ..Fields::default()
    }
}

fn from_support(e: wire::SupportEvent) -> Fields<'static> {
    Fields {
        event_id: non_empty(e.event_id),
        customer_id: non_empty(e.customer_id),
        occurred_at: when(e.occurred_at),
        kind: non_empty(e.r#type),
        ticket_id: e.ticket_id.map(Cow::Owned),
        score: e.score.map(f64::from),
        sentiment: e.sentiment,
        text: e.text.map(Cow::Owned),
        channel: e.channel.map(Cow::Owned),
        ..Fields::default()
    }
}

/// An id (event, customer, order): present, at most [`MAX_ID_LEN`] bytes, and free of control
/// characters. Ids are keys: the customer id is the canonical log's message key, a path
/// segment of the HTTP API and a field of every log line and alert, where a newline, an
/// escape sequence or a NUL would forge or corrupt what a reader sees. Such an id is refused
/// (`bad_field:<field>`), never cleaned, since a cleaned id would merge two customers.
fn id(value: Option<Cow<'_, str>>, field: &str) -> Result<String, Rejection> {
    match value {
        Some(v) if !v.trim().is_empty() => {
            if v.len() > MAX_ID_LEN {
                Err(Rejection::new(
                    format!("bad_field:{field}"),
                    format!("`{field}` longer than {MAX_ID_LEN} bytes"),
                ))
            } else if let Some((at, c)) = v.char_indices().find(|(_, c)| c.is_control()) {
                Err(Rejection::new(
                    format!("bad_field:{field}"),
                    format!(
                        "`{field}` contains a control character (U+{:04X} at byte {at})",
                        u32::from(c)
                    ),
                ))
            } else {
                Ok(v.into_owned())
            }
        }
        _ => Err(Rejection::missing(field)),
    }
}

/// `occurred_at` as epoch milliseconds within [`MIN_TIME`] ..= [`MAX_TIME`]. One reason,
/// `bad_timestamp`, with a detail that says which bound (or the syntax) was the problem.
fn event_time(when: When<'_>) -> Result<Millis, Rejection> {
    let bad = |detail: String| Rejection::new("bad_timestamp", detail);
    let t = match when {
        When::Millis(ms) => ms,
        When::Text(text) => parse_rfc3339(&text).ok_or_else(|| {
            bad(
                "`occurred_at` must be RFC 3339 (e.g. 2026-03-01T12:00:00Z) or epoch milliseconds"
                    .into(),
            )
        })?,
    };
    if t < MIN_TIME {
        return Err(bad(format!(
            "`occurred_at` {t} ms is before 1970-01-01T00:00:00Z (negative epoch milliseconds)"
        )));
    }
    if t > MAX_TIME {
        return Err(bad(format!(
            "`occurred_at` {t} ms is after 2200-01-01T00:00:00Z: epoch milliseconds expected, not micro- or nanoseconds"
        )));
    }
    Ok(t)
}

/// Refuses an event dated more than `max_skew_ms` after `now` (ingest's wall clock, read by
/// the caller: this crate reads no clock) with reason `future_event`; `max_skew_ms` 0 accepts
/// any time. One future-dated event would otherwise move its partition's clock, and through
/// ingest's watermark every partition's, past every customer's timers.
pub fn check_not_future(event: &Event, now: Millis, max_skew_ms: Millis) -> Result<(), Rejection> {
    if max_skew_ms > 0 && event.occurred_at > now.saturating_add(max_skew_ms) {
        return Err(Rejection::new(
            "future_event",
            format!(
                "`occurred_at` {} is more than {max_skew_ms} ms (ingest.max_future_skew_ms) ahead of ingest's clock {}",
                format_rfc3339(event.occurred_at),
                format_rfc3339(now)
            ),
        ));
    }
    Ok(())
}

fn validate(family: Family, f: Fields<'_>) -> Result<Event, Rejection> {
    let event_id = id(f.event_id, "event_id")?;
    let customer_id = id(f.customer_id, "customer_id")?;
    let occurred_at = event_time(
        f.occurred_at
            .ok_or_else(|| Rejection::missing("occurred_at"))?,
    )?;
    let kind = f.kind.ok_or_else(|| Rejection::missing("type"))?;
    let unknown = || {
        let shown: String = kind.chars().take(64).filter(|c| !c.is_control()).collect();
        Rejection::new(
            format!("unknown_type:{shown}"),
            format!("`{shown}` is not a {} event type", family.as_str()),
        )
    };
    let channel = f.channel.map(Cow::into_owned);
    let body = if kind == "customer_erased" {
        Body::Erased
    } else {
        match family {
            Family::Orders => {
                let kind = OrderKind::parse(&kind).ok_or_else(unknown)?;
                let order_id = id(f.order_id, "order_id")?;
                let currency = f.currency.ok_or_else(|| Rejection::missing("currency"))?;
                if !valid_currency(&currency) {
                    return Err(Rejection::new(
                        "bad_currency",
                        "`currency` must be an ISO 4217 code such as EUR",
                    ));
                }
                let text = match f.amount.ok_or_else(|| Rejection::missing("amount"))? {
                    Amount::Text(t) => t.into_owned(),
                    Amount::Number(n) => n.to_string(),
                };
                let amount_minor = parse_minor(text.trim(), &currency)
                    .filter(|a| *a >= 0)
                    .ok_or_else(|| {
                        Rejection::new(
                            "bad_amount",
                            "`amount` must be a non-negative decimal within the currency's minor unit",
                        )
                    })?;
                let item_count = f
                    .items
                    .map(|items| items.iter().map(|i| i.0.quantity.unwrap_or(1)).sum())
                    .unwrap_or(0);
                Body::Order(Order {
                    kind,
                    order_id,
                    amount_minor,
                    currency: currency.into_owned(),
                    item_count,
                    channel,
                })
            }
            Family::Clickstream => Body::Click(Click {
                kind: ClickKind::parse(&kind).ok_or_else(unknown)?,
                session_id: f.session_id.map(Cow::into_owned),
            }),
            Family::Support => {
                let kind = SupportKind::parse(&kind).ok_or_else(unknown)?;
                let range = match kind {
                    SupportKind::CsatSubmitted => Some(1.0..=5.0),
                    SupportKind::NpsSubmitted => Some(0.0..=10.0),
                    _ => None,
                };
                let score = match range {
                    Some(range) => {
                        let s = f.score.ok_or_else(|| Rejection::missing("score"))?;
                        if !range.contains(&s) || s.fract() != 0.0 {
                            return Err(Rejection::new(
                                "bad_score",
                                format!("`score` must be a whole number in {range:?}"),
                            ));
                        }
                        Some(s as u8)
                    }
                    None => None,
                };
                let sentiment = match f.sentiment {
                    Some(s) if !(-1.0..=1.0).contains(&s) => {
                        return Err(Rejection::new(
                            "bad_sentiment",
                            "`sentiment` must be in -1..1",
                        ))
                    }
                    other => other.map(|s| s as f32),
                };
                // Free text never reaches the canonical event: only its score does.
                let sentiment = match (kind, sentiment, f.text) {
                    (SupportKind::FeedbackSubmitted, None, Some(text)) => {
                        Some(pulse_core::sentiment::score(&text))
                    }
                    (_, given, _) => given,
                };
                let ticket_id = f.ticket_id.map(Cow::into_owned);
                if matches!(
                    kind,
                    SupportKind::TicketOpened
                        | SupportKind::TicketFirstResponse
                        | SupportKind::TicketResolved
                ) && ticket_id.is_none()
                {
                    return Err(Rejection::missing("ticket_id"));
                }
                Body::Support(Support {
                    kind,
                    ticket_id,
                    score,
                    sentiment,
                })
            }
        }
    };
    Ok(Event {
        event_id,
        customer_id,
        occurred_at,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(family: Family, s: &str) -> Result<Event, Rejection> {
        decode_input(family, Encoding::Json, s.as_bytes(), 1 << 20)
    }

    #[test]
    fn accepts_an_order_in_both_time_forms() {
        let a = json(Family::Orders, r#"{"event_id":"e1","customer_id":"c1","occurred_at":1772366400123,"type":"order_placed","order_id":"o1","amount":"23.50","currency":"EUR","items":[{"sku":"s","quantity":2,"unit_price":"11.75"}]}"#).unwrap();
        let b = json(Family::Orders, r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2026-03-01T12:00:00.123Z","type":"order_placed","order_id":"o1","amount":23.5,"currency":"EUR","items":[{"sku":"s","quantity":2,"unit_price":"11.75"}]}"#).unwrap();
        assert_eq!(a, b);
        let Body::Order(o) = a.body else { panic!() };
        assert_eq!((o.amount_minor, o.item_count), (2350, 2));
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (Family::Orders, "{not json", "bad_json"),
            (
                Family::Orders,
                r#"{"event_id":"e","occurred_at":1772366400123,"type":"order_placed"}"#,
                "missing_field:customer_id",
            ),
            (
                Family::Clickstream,
                r#"{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"teleport"}"#,
                "unknown_type:teleport",
            ),
            (
                Family::Orders,
                r#"{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"order_placed","order_id":"o","amount":"12,3x","currency":"EUR"}"#,
                "bad_amount",
            ),
            (
                Family::Support,
                r#"{"event_id":"e","customer_id":"c","occurred_at":"yesterday","type":"csat_submitted","score":4}"#,
                "bad_timestamp",
            ),
            (
                Family::Support,
                r#"{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"csat_submitted","score":9}"#,
                "bad_score",
            ),
            (
                Family::Orders,
                r#"{"event_id":"e","customer_id":42,"occurred_at":1772366400123,"type":"order_placed"}"#,
                "bad_field",
            ),
        ];
        for (family, input, reason) in cases {
            assert_eq!(json(family, input).unwrap_err().reason, reason, "{input}");
        }
        let big = decode_input(Family::Orders, Encoding::Json, &[b' '; 100], 10).unwrap_err();
        assert_eq!(big.reason, "too_large");
    }

    const ORDER: &str = r#"{"event_id":"e1","customer_id":"c1","occurred_at":1772366400123,"type":"order_placed","order_id":"o1","amount":"23.50","currency":"EUR"}"#;

    #[test]
    fn ids_with_control_characters_are_refused_naming_the_field() {
        assert!(json(Family::Orders, ORDER).is_ok());
        for (field, bad, code) in [
            ("customer_id", r"c1\u0000", "U+0000"),
            ("customer_id", r"c1\nc2", "U+000A"),
            ("customer_id", r"\u001b[31mc1", "U+001B"),
            ("customer_id", r"c\u007f", "U+007F"),
            ("customer_id", r"c\u0085", "U+0085"),
            ("event_id", r"e\t1", "U+0009"),
            ("order_id", r"o\r1", "U+000D"),
        ] {
            let good = match field {
                "customer_id" => "c1",
                "event_id" => "e1",
                _ => "o1",
            };
            let input = ORDER.replace(
                &format!(r#""{field}":"{good}""#),
                &format!(r#""{field}":"{bad}""#),
            );
            assert_ne!(input, ORDER);
            let err = json(Family::Orders, &input).unwrap_err();
            assert_eq!(err.reason, format!("bad_field:{field}"), "{input}");
            assert!(
                err.detail.contains("control character") && err.detail.contains(code),
                "{}",
                err.detail
            );
        }
        // Protobuf goes through the same check.
        let proto = wire::ClickstreamEvent {
            event_id: "e".into(),
            customer_id: "c\u{7}1".into(),
            occurred_at: Some(wire::Timestamp {
                value: Some(wire::timestamp::Value::EpochMs(1_772_366_400_123)),
            }),
            r#type: "page_view".into(),
            ..Default::default()
        };
        let err = decode_input(
            Family::Clickstream,
            Encoding::Protobuf,
            &proto.encode_to_vec(),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(err.reason, "bad_field:customer_id");
        // Whitespace and non-ASCII letters inside an id are not control characters.
        let spaced = ORDER.replace(r#""customer_id":"c1""#, r#""customer_id":"Zoë Smith""#);
        assert_eq!(
            json(Family::Orders, &spaced).unwrap().customer_id,
            "Zoë Smith"
        );
    }

    #[test]
    fn only_a_json_object_is_an_event() {
        // The fields of ORDER in the order `Fields` declares them: serde alone takes this
        // array as an order, by position.
        let positional = r#"["e1","c1",1772366400123,"order_placed","o1","23.50","EUR",null,null,null,null,null,null,null]"#;
        let err = json(Family::Orders, positional).unwrap_err();
        assert_eq!(
            (err.reason.as_str(), err.detail.as_str()),
            (
                "not_an_object",
                "an input event must be a JSON object, not an array"
            )
        );
        for (input, kind) in [
            (r#" "e1""#, "a string"),
            ("42", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            let err = json(Family::Orders, input).unwrap_err();
            assert_eq!(err.reason, "not_an_object", "{input}");
            assert!(err.detail.ends_with(kind), "{input}: {}", err.detail);
        }
        // Not JSON at all stays bad_json, an empty value included.
        for input in ["[1,", "", "   ", "nul"] {
            assert_eq!(
                json(Family::Orders, input).unwrap_err().reason,
                "bad_json",
                "{input:?}"
            );
        }
        // Items are objects too: `[[2]]` is not an item of quantity 2.
        let items = |items: &str| {
            ORDER.replace(
                r#""currency":"EUR""#,
                &format!(r#""currency":"EUR","items":{items}"#),
            )
        };
        let Body::Order(o) = json(Family::Orders, &items(r#"[{"sku":"s","quantity":2}]"#))
            .unwrap()
            .body
        else {
            panic!()
        };
        assert_eq!(o.item_count, 2);
        let err = json(Family::Orders, &items("[[2]]")).unwrap_err();
        assert_eq!(err.reason, "bad_field");
        assert!(err.detail.contains("expected an object"), "{}", err.detail);
    }

    #[test]
    fn a_tombstone_is_refused_as_such() {
        let err = decode_record(Family::Orders, Encoding::Json, None, 1 << 20).unwrap_err();
        assert_eq!(err.reason, "tombstone");
        assert!(err.detail.contains("customer_erased"), "{}", err.detail);
        // An empty value is a value: not JSON.
        let err = decode_record(Family::Orders, Encoding::Json, Some(b""), 1 << 20).unwrap_err();
        assert_eq!(err.reason, "bad_json");
        assert_eq!(
            decode_record(
                Family::Orders,
                Encoding::Json,
                Some(ORDER.as_bytes()),
                1 << 20
            ),
            json(Family::Orders, ORDER)
        );
    }

    #[test]
    fn a_detail_never_repeats_a_large_value() {
        // serde_json quotes the offending string in its message: 600 kB of it here.
        let huge = "x".repeat(600_000);
        let input = format!(
            r#"{{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"csat_submitted","score":"{huge}"}}"#
        );
        let err = json(Family::Support, &input).unwrap_err();
        assert_eq!(err.reason, "bad_field");
        assert!(
            err.detail.starts_with("invalid type: string"),
            "{}",
            &err.detail[..40]
        );
        assert!(
            err.detail.len() <= MAX_DETAIL_BYTES,
            "{} bytes",
            err.detail.len()
        );
        assert!(err.detail.ends_with("… (truncated)"));
        // Cut at a character boundary: multi-byte characters are never split.
        let wide = Rejection::new("r", "é".repeat(1_000));
        assert!(wide.detail.len() <= MAX_DETAIL_BYTES);
        assert!(wide.detail.starts_with("éé") && wide.detail.ends_with("… (truncated)"));
        // A short detail is kept as it is.
        assert_eq!(Rejection::new("r", "short").detail, "short");
    }

    fn click_at(occurred_at: &str) -> Result<Event, Rejection> {
        json(
            Family::Clickstream,
            &format!(
                r#"{{"event_id":"e","customer_id":"c","occurred_at":{occurred_at},"type":"page_view"}}"#
            ),
        )
    }

    #[test]
    fn any_time_from_the_unix_epoch_on_is_accepted() {
        let epoch = click_at(r#""1970-01-01T00:00:00Z""#).unwrap();
        assert_eq!(epoch.occurred_at, 0);
        assert_eq!(click_at("0").unwrap().occurred_at, 0);
        // 1997-05-01T09:30:00Z, before the old 2000-01-01 bound, in both forms.
        let text = click_at(r#""1997-05-01T09:30:00Z""#).unwrap();
        let millis = click_at("862479000000").unwrap();
        assert_eq!(
            (text.occurred_at, millis.occurred_at),
            (862_479_000_000, 862_479_000_000)
        );
        // The last instant before the unit sanity bound.
        let last = click_at(r#""2199-12-31T23:59:59.999Z""#).unwrap();
        assert_eq!(last.occurred_at, MAX_TIME - 1);
    }

    #[test]
    fn negative_and_absurd_times_are_refused_saying_why() {
        for (input, says) in [
            ("-1", "before 1970-01-01"),
            (r#""1969-12-31T23:59:59.999Z""#, "before 1970-01-01"),
            // 2026-03-01 in epoch microseconds: a unit mistake.
            ("1772366400123000", "not micro- or nanoseconds"),
            (r#""2200-01-01T00:00:00.001Z""#, "after 2200-01-01"),
            (r#""next tuesday""#, "RFC 3339"),
        ] {
            let err = click_at(input).unwrap_err();
            assert_eq!(err.reason, "bad_timestamp", "{input}");
            assert!(err.detail.contains(says), "{input}: {}", err.detail);
        }
    }

    #[test]
    fn events_too_far_ahead_of_the_clock_are_future_events() {
        let now = 1_772_366_400_000; // 2026-03-01T12:00:00Z
        let hour = 3_600_000;
        let at = |t: i64| Event {
            occurred_at: t,
            ..click_at("0").unwrap()
        };
        assert_eq!(check_not_future(&at(now + hour), now, hour), Ok(()));
        assert_eq!(check_not_future(&at(0), now, hour), Ok(()));
        let err = check_not_future(&at(now + hour + 1), now, hour).unwrap_err();
        assert_eq!(
            (err.reason.as_str(), err.class()),
            ("future_event", "future_event")
        );
        let in_2199 = click_at(r#""2199-06-01T00:00:00Z""#).unwrap();
        let err = check_not_future(&in_2199, now, hour).unwrap_err();
        assert_eq!(
            err.detail,
            "`occurred_at` 2199-06-01T00:00:00.000Z is more than 3600000 ms \
             (ingest.max_future_skew_ms) ahead of ingest's clock 2026-03-01T12:00:00.000Z"
        );
        // 0 turns the check off (a backfill of simulated or re-dated data).
        assert_eq!(check_not_future(&in_2199, now, 0), Ok(()));
    }

    #[test]
    fn erasure_is_accepted_on_every_topic() {
        for family in Family::ALL {
            let e = json(family, r#"{"event_id":"x","customer_id":"c","occurred_at":1772366400123,"type":"customer_erased"}"#).unwrap();
            assert_eq!(e.body, Body::Erased);
        }
    }

    #[test]
    fn feedback_text_is_scored_and_dropped() {
        let scored = json(
            Family::Support,
            r#"{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"feedback_submitted","text":"Terrible service, very rude agent"}"#,
        )
        .unwrap();
        let Body::Support(s) = &scored.body else {
            panic!("{scored:?}")
        };
        let expected = pulse_core::sentiment::score("Terrible service, very rude agent");
        assert!(expected < -0.5);
        assert_eq!(s.sentiment, Some(expected));
        assert!(
            !format!("{scored:?}").contains("rude"),
            "the text is not kept"
        );
        // A given sentiment wins over the text.
        let given = json(
            Family::Support,
            r#"{"event_id":"e","customer_id":"c","occurred_at":1772366400123,"type":"feedback_submitted","text":"awful","sentiment":0.5}"#,
        )
        .unwrap();
        let Body::Support(s) = &given.body else {
            panic!("{given:?}")
        };
        assert_eq!(s.sentiment, Some(0.5));
        // The protobuf mapping carries the text too.
        let proto = wire::SupportEvent {
            event_id: "e".into(),
            customer_id: "c".into(),
            occurred_at: Some(wire::Timestamp {
                value: Some(wire::timestamp::Value::Rfc3339(
                    "2026-03-01T12:00:00.123Z".into(),
                )),
            }),
            r#type: "feedback_submitted".into(),
            text: Some("Terrible service, very rude agent".into()),
            ..Default::default()
        };
        let from_proto = decode_input(
            Family::Support,
            Encoding::Protobuf,
            &proto.encode_to_vec(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(from_proto, scored);
    }

    #[test]
    fn protobuf_and_json_agree() {
        let proto = wire::SupportEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: Some(wire::Timestamp {
                value: Some(wire::timestamp::Value::Rfc3339(
                    "2026-03-01T12:00:00.123Z".into(),
                )),
            }),
            r#type: "nps_submitted".into(),
            score: Some(9),
            ..Default::default()
        };
        let from_proto = decode_input(
            Family::Support,
            Encoding::Protobuf,
            &proto.encode_to_vec(),
            1 << 20,
        );
        let from_json = json(
            Family::Support,
            r#"{"event_id":"e1","customer_id":"c1","occurred_at":1772366400123,"type":"nps_submitted","score":9}"#,
        );
        assert_eq!(from_proto, from_json);
        let missing = wire::SupportEvent {
            customer_id: String::new(),
            ..proto
        };
        let err = decode_input(
            Family::Support,
            Encoding::Protobuf,
            &missing.encode_to_vec(),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(err.reason, "missing_field:customer_id");
        let garbage = decode_input(
            Family::Support,
            Encoding::Protobuf,
            &[0xff, 0xff, 0xff],
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(garbage.reason, "bad_protobuf");
    }
}
