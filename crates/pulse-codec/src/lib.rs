//! pulse-codec: the wire formats of pulse and their conversion to pulse-core types, done once,
//! at the edge. Protobuf types are generated from ../../proto; the JSON encoding of pulse's own
//! records is the serde form of the same generated types.
//!
//! It must not do I/O or know about Kafka clients: it maps bytes to values and back.

pub mod alert;
pub mod canonical;
pub mod changelog;
pub mod erasure;
pub mod headers;
pub mod input;
pub mod money;
pub mod time;

#[allow(clippy::all)]
pub mod wire {
    //! Types generated from proto/ (prost + serde). Used inside this crate and by tests that
    //! read topics; the service converts them to core types at the edge.
    include!(concat!(env!("OUT_DIR"), "/pulse.v1.rs"));
}

pub use alert::{alert_headers, alert_to_wire, decode_alert, encode_alert, ALERT_SCHEMA};
pub use canonical::{decode_canonical, encode_canonical, Canonical, Source, TickSource};
pub use changelog::{
    changelog_schema, changelog_schema_version, customer_changelog_key, decode_changelog,
    dedupe_changelog_key, encode_changelog, erasure_changelog_key, parse_dedupe_changelog_key,
    Changelog, CHANGELOG_SCHEMA_VERSION, CHECKPOINT_KEY, DEDUPE_KEY_PREFIX,
};
pub use erasure::{decode_erasure, encode_erasure, erasure_confirmation, erasure_headers};
pub use input::{check_not_future, decode_input, decode_record, Family, Rejection};

/// How a topic's values are encoded. JSON is the default everywhere.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Protobuf,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }

    /// Reads a `content-type` header value; parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: &str) -> Option<Self> {
        match value.split(';').next()?.trim() {
            "application/json" => Some(Encoding::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bad json")]
    Json(#[from] serde_json::Error),
    #[error("bad protobuf")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid record: {0}")]
    Invalid(String),
}
