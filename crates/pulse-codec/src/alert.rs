//! Alerts → bytes and CloudEvents headers (Kafka protocol binding, binary mode).

use prost::Message;
use pulse_core::Alert;

use crate::time::format_rfc3339;
use crate::{headers, wire, Encoding};

/// The `schema` header of every alert: `docs/schemas/alert.schema.json` describes this version
/// (its `$id` ends in it). Fields may be added within a version; a field that changes type or
/// meaning bumps it.
pub const ALERT_SCHEMA: &str = "pulse.v1.Alert/1";

/// The wire form of an alert, with its deterministic id.
pub fn alert_to_wire(alert: &Alert, alert_id: &str) -> wire::Alert {
    wire::Alert {
        alert_id: alert_id.to_string(),
        r#type: alert.kind.as_str().to_string(),
        customer_id: alert.customer_id.clone(),
        occurred_at: format_rfc3339(alert.occurred_at),
        rule_version: alert.rule_version.clone(),
        from: alert.from.to_string(),
        to: alert.to.to_string(),
        scores: alert
            .scores
            .iter()
            .map(|s| (s.name.to_string(), s.value))
            .collect(),
        reasons: alert
            .reasons
            .iter()
            .map(|r| wire::Reason {
                signal: r.signal.as_str().to_string(),
                value: r.value,
                contribution: r.contribution,
                text: r.text.clone(),
            })
            .collect(),
        value_tier: alert.value_tier.map(|t| t.as_str().to_string()),
        money: alert
            .money
            .iter()
            .map(|m| {
                let money = wire::Money {
                    amount_minor: m.amount_minor,
                    currency: m.currency.clone(),
                };
                (m.name.to_string(), money)
            })
            .collect(),
    }
}

pub fn encode_alert(alert: &wire::Alert, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::to_vec(alert).expect("wire types always serialize"),
        Encoding::Protobuf => alert.encode_to_vec(),
    }
}

pub fn decode_alert(bytes: &[u8], encoding: Encoding) -> Result<wire::Alert, crate::CodecError> {
    Ok(match encoding {
        Encoding::Json => serde_json::from_slice(bytes)?,
        Encoding::Protobuf => wire::Alert::decode(bytes)?,
    })
}

/// CloudEvents binary-mode headers for an alert (`ce_*` plus `content-type`) and pulse's schema
/// header.
pub fn alert_headers(
    alert: &wire::Alert,
    source: &str,
    encoding: Encoding,
) -> Vec<(&'static str, String)> {
    vec![
        (headers::CE_SPECVERSION, "1.0".to_string()),
        (headers::CE_ID, alert.alert_id.clone()),
        (headers::CE_TYPE, format!("pulse.{}", alert.r#type)),
        (headers::CE_SOURCE, source.to_string()),
        (headers::CE_TIME, alert.occurred_at.clone()),
        (headers::CE_SUBJECT, alert.customer_id.clone()),
        (headers::CONTENT_TYPE, encoding.content_type().to_string()),
        (headers::SCHEMA, ALERT_SCHEMA.to_string()),
    ]
}
