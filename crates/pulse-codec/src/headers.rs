//! The names of every Kafka record header pulse writes or reads, in one place: the CloudEvents
//! binary-mode headers of alerts and erasure confirmations, the encoding and schema headers of
//! pulse's own records, fold's lineage header and the dead-letter headers. Values (schema
//! names, reasons) stay with the code that produces them.

/// How the value is encoded (`Encoding::content_type`); read back to decode.
pub const CONTENT_TYPE: &str = "content-type";
/// The schema (and version) of the value, e.g. `pulse.v1.ChangelogRecord/3`.
pub const SCHEMA: &str = "schema";

/// CloudEvents binary mode (Kafka protocol binding).
pub const CE_SPECVERSION: &str = "ce_specversion";
pub const CE_ID: &str = "ce_id";
pub const CE_TYPE: &str = "ce_type";
pub const CE_SOURCE: &str = "ce_source";
pub const CE_TIME: &str = "ce_time";
pub const CE_SUBJECT: &str = "ce_subject";

/// On every alert and erasure confirmation: `<canonical partition>/<offset>` of the record
/// that caused it (lineage; `replay --verify` matches on it).
pub const CAUSE: &str = "pulse.cause";

/// Dead-letter records (the value is the original bytes, untouched unless [`DLQ_TRUNCATED`]
/// says otherwise): why, and where the record came from.
pub const DLQ_REASON: &str = "pulse.dlq.reason";
pub const DLQ_DETAIL: &str = "pulse.dlq.detail";
pub const DLQ_TOPIC: &str = "pulse.dlq.source.topic";
pub const DLQ_PARTITION: &str = "pulse.dlq.source.partition";
pub const DLQ_OFFSET: &str = "pulse.dlq.source.offset";
/// `true` on a dead letter whose key or value was cut to what the producer can send; the
/// original sizes are then in [`DLQ_KEY_BYTES`] and [`DLQ_VALUE_BYTES`], the record itself at
/// the source coordinates (until the input topic's retention removes it).
pub const DLQ_TRUNCATED: &str = "pulse.dlq.truncated";
pub const DLQ_KEY_BYTES: &str = "pulse.dlq.original.key.bytes";
pub const DLQ_VALUE_BYTES: &str = "pulse.dlq.original.value.bytes";
