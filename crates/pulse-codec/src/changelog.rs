//! Changelog records (`proto/pulse/v1/changelog.proto`) ↔ bytes, in the canonical encoding.
//! A customer snapshot carries the store's own encoding of the state (schema version + bytes),
//! so this crate never interprets it; a tombstone is a record with no value, not a message.
//!
//! Keys never hold a raw customer id: after compaction a tombstone's key outlives the erasure
//! (for `delete.retention.ms`), so customers are keyed by their customer key (the snapshot's
//! value carries the id while the customer exists). Version 1 was keyed by the raw id; version
//! 2 had no dedupe entries (a restore started with an empty event-id dedupe window).
//!
//! The dedupe window is one record per entry (key `d.<event key>`), tombstoned when the entry
//! leaves the window or its customer is erased, so the live records of the compacted topic
//! are exactly the live window, and hold no raw id (event and customer are named by hashes).

use prost::Message;

use crate::{wire, CodecError, Encoding};

/// The key of every checkpoint record (the partition is in the record and in the Kafka
/// partition it is produced to).
pub const CHECKPOINT_KEY: &str = "__checkpoint";

/// Version of the changelog's keys and records, in every record's `schema` header.
pub const CHANGELOG_SCHEMA_VERSION: u32 = 3;

/// The `schema` header (`headers::SCHEMA`) value of this version's changelog records.
pub fn changelog_schema() -> String {
    format!("pulse.v1.ChangelogRecord/{CHANGELOG_SCHEMA_VERSION}")
}

/// The version a `schema` header names (`None`: no header, or not a changelog schema; the
/// records of version 1 had none).
pub fn changelog_schema_version(header: Option<&str>) -> Option<u32> {
    header?
        .strip_prefix("pulse.v1.ChangelogRecord/")?
        .parse()
        .ok()
}

/// The changelog key of a customer's snapshot (and tombstone).
pub fn customer_changelog_key(customer_key: u128) -> String {
    format!("{customer_key:032x}")
}

/// The changelog key of a customer's erasure marker.
pub fn erasure_changelog_key(customer_key: u128) -> String {
    format!("erased.{customer_key:032x}")
}

/// Prefix of the changelog key of a dedupe entry (and its tombstone).
pub const DEDUPE_KEY_PREFIX: &str = "d.";

/// The changelog key of a dedupe entry (and its tombstone).
pub fn dedupe_changelog_key(event_key: u128) -> String {
    format!("{DEDUPE_KEY_PREFIX}{event_key:032x}")
}

/// The event key a dedupe entry's changelog key names (`None`: not a dedupe key).
pub fn parse_dedupe_changelog_key(key: &str) -> Option<u128> {
    parse_customer_key(key.strip_prefix(DEDUPE_KEY_PREFIX)?)
}

/// One changelog record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changelog {
    Customer {
        customer_id: String,
        schema_version: u32,
        state: Vec<u8>,
    },
    Checkpoint {
        partition: i32,
        next_offset: i64,
        clock_ms: i64,
    },
    /// The customer with this key was erased; its later events are dropped.
    Erased {
        customer_key: u128,
        erased_at_ms: i64,
    },
    /// An event id in the partition's dedupe window (by its event key), folded at
    /// `seen_at_ms` for the customer with that key.
    Dedupe {
        event_key: u128,
        seen_at_ms: i64,
        customer_key: u128,
    },
}

pub fn encode_changelog(record: &Changelog, encoding: Encoding) -> Vec<u8> {
    use wire::changelog_record::Record;
    let record = Some(match record.clone() {
        Changelog::Customer {
            customer_id,
            schema_version,
            state,
        } => Record::Customer(wire::CustomerSnapshot {
            customer_id,
            schema_version,
            state,
        }),
        Changelog::Checkpoint {
            partition,
            next_offset,
            clock_ms,
        } => Record::Checkpoint(wire::Checkpoint {
            partition,
            next_offset,
            clock_ms,
        }),
        Changelog::Erased {
            customer_key,
            erased_at_ms,
        } => Record::Erased(wire::ErasureMarker {
            customer_key: format!("{customer_key:032x}"),
            erased_at_ms,
        }),
        Changelog::Dedupe {
            event_key,
            seen_at_ms,
            customer_key,
        } => Record::Dedupe(wire::DedupeEntry {
            event_key: format!("{event_key:032x}"),
            seen_at_ms,
            customer_key: format!("{customer_key:032x}"),
        }),
    });
    let w = wire::ChangelogRecord { record };
    match encoding {
        Encoding::Json => serde_json::to_vec(&w).expect("wire types always serialize"),
        Encoding::Protobuf => w.encode_to_vec(),
    }
}

pub fn decode_changelog(bytes: &[u8], encoding: Encoding) -> Result<Changelog, CodecError> {
    use wire::changelog_record::Record;
    let w: wire::ChangelogRecord = match encoding {
        Encoding::Json => serde_json::from_slice(bytes)?,
        Encoding::Protobuf => wire::ChangelogRecord::decode(bytes)?,
    };
    match w.record {
        Some(Record::Customer(c)) => Ok(Changelog::Customer {
            customer_id: c.customer_id,
            schema_version: c.schema_version,
            state: c.state,
        }),
        Some(Record::Checkpoint(c)) => Ok(Changelog::Checkpoint {
            partition: c.partition,
            next_offset: c.next_offset,
            clock_ms: c.clock_ms,
        }),
        Some(Record::Erased(e)) => Ok(Changelog::Erased {
            customer_key: parse_customer_key(&e.customer_key).ok_or_else(|| {
                CodecError::Invalid(format!("erasure marker key {:?}", e.customer_key))
            })?,
            erased_at_ms: e.erased_at_ms,
        }),
        Some(Record::Dedupe(d)) => {
            let key = |hex: &str| {
                parse_customer_key(hex)
                    .ok_or_else(|| CodecError::Invalid(format!("dedupe entry key {hex:?}")))
            };
            Ok(Changelog::Dedupe {
                event_key: key(&d.event_key)?,
                seen_at_ms: d.seen_at_ms,
                customer_key: key(&d.customer_key)?,
            })
        }
        None => Err(CodecError::Invalid(
            "changelog record without a variant".into(),
        )),
    }
}

/// Parses 32 hex digits (the form of [`customer_changelog_key`]).
pub fn parse_customer_key(hex: &str) -> Option<u128> {
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

/// serde for `bytes` fields as proto3 JSON has them: standard base64 with padding.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Changelog> {
        prop_oneof![
            (
                ".{0,20}",
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(customer_id, schema_version, state)| Changelog::Customer {
                    customer_id,
                    schema_version,
                    state
                }),
            (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(
                |(partition, next_offset, clock_ms)| Changelog::Checkpoint {
                    partition,
                    next_offset,
                    clock_ms
                }
            ),
            (any::<u128>(), any::<i64>()).prop_map(|(customer_key, erased_at_ms)| {
                Changelog::Erased {
                    customer_key,
                    erased_at_ms,
                }
            }),
            (any::<u128>(), any::<i64>(), any::<u128>()).prop_map(
                |(event_key, seen_at_ms, customer_key)| Changelog::Dedupe {
                    event_key,
                    seen_at_ms,
                    customer_key,
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn changelog_records_round_trip(r in record()) {
            for enc in [Encoding::Json, Encoding::Protobuf] {
                prop_assert_eq!(decode_changelog(&encode_changelog(&r, enc), enc).unwrap(), r.clone());
            }
        }
    }

    #[test]
    fn schema_header_names_the_version() {
        assert_eq!(
            changelog_schema_version(Some(&changelog_schema())),
            Some(CHANGELOG_SCHEMA_VERSION)
        );
        assert_eq!(changelog_schema_version(None), None);
        assert_eq!(
            changelog_schema_version(Some("pulse.v1.ChangelogRecord/1")),
            Some(1)
        );
        assert_eq!(
            parse_customer_key(&customer_changelog_key(u128::MAX - 7)),
            Some(u128::MAX - 7)
        );
        assert_eq!(parse_customer_key("abc"), None);
        assert!(erasure_changelog_key(1).starts_with("erased."));
        assert_eq!(dedupe_changelog_key(255), format!("d.{:032x}", 255));
        assert_eq!(
            parse_dedupe_changelog_key(&dedupe_changelog_key(u128::MAX - 3)),
            Some(u128::MAX - 3)
        );
        assert_eq!(parse_dedupe_changelog_key(&customer_changelog_key(9)), None);
        assert_eq!(parse_dedupe_changelog_key("d.xyz"), None);
    }

    #[test]
    fn json_is_keyed_by_the_variant_name() {
        let bytes = encode_changelog(
            &Changelog::Checkpoint {
                partition: 2,
                next_offset: 10,
                clock_ms: 5,
            },
            Encoding::Json,
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["record"]["checkpoint"]["next_offset"], 10);
        assert!(decode_changelog(b"{}", Encoding::Json).is_err());
        let bytes = encode_changelog(
            &Changelog::Customer {
                customer_id: "c1".into(),
                schema_version: 1,
                state: b"{}".to_vec(),
            },
            Encoding::Json,
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["record"]["customer"]["state"], "e30=",
            "base64, as proto3 JSON"
        );
    }
}
