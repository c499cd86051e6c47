//! Erasure confirmations (`proto/pulse/v1/erasure.proto`) → bytes and CloudEvents headers.
//! A confirmation names the customer by its customer key, never by the raw id: the topic is an
//! audit log that outlives the erasure.

use prost::Message;
use pulse_core::hash::StableHasher;
use pulse_core::Millis;

use crate::time::format_rfc3339;
use crate::{headers, wire, Encoding};

/// The confirmation of the erasure request `request_event_id` for the customer with
/// `customer_key`, applied at `at` by the canonical record at `offset`. Its id hashes the
/// customer key, the request and the offset, so a re-sent confirmation is byte-identical.
pub fn erasure_confirmation(
    customer_key: u128,
    request_event_id: &str,
    offset: i64,
    at: Millis,
    already_erased: bool,
) -> wire::ErasureConfirmation {
    let id = StableHasher::default()
        .field(b"erasure")
        .num(customer_key as u64)
        .num((customer_key >> 64) as u64)
        .field(request_event_id.as_bytes())
        .num(offset as u64)
        .finish();
    wire::ErasureConfirmation {
        confirmation_id: format!("{id:032x}"),
        request_event_id: request_event_id.to_string(),
        customer_key: format!("{customer_key:032x}"),
        erased_at: format_rfc3339(at),
        already_erased,
    }
}

pub fn encode_erasure(c: &wire::ErasureConfirmation, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::to_vec(c).expect("wire types always serialize"),
        Encoding::Protobuf => c.encode_to_vec(),
    }
}

pub fn decode_erasure(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<wire::ErasureConfirmation, crate::CodecError> {
    Ok(match encoding {
        Encoding::Json => serde_json::from_slice(bytes)?,
        Encoding::Protobuf => wire::ErasureConfirmation::decode(bytes)?,
    })
}

/// CloudEvents binary-mode headers of a confirmation; the subject is the customer key.
pub fn erasure_headers(
    c: &wire::ErasureConfirmation,
    source: &str,
    encoding: Encoding,
) -> Vec<(&'static str, String)> {
    vec![
        (headers::CE_SPECVERSION, "1.0".to_string()),
        (headers::CE_ID, c.confirmation_id.clone()),
        (headers::CE_TYPE, "pulse.customer_erased".to_string()),
        (headers::CE_SOURCE, source.to_string()),
        (headers::CE_TIME, c.erased_at.clone()),
        (headers::CE_SUBJECT, c.customer_key.clone()),
        (headers::CONTENT_TYPE, encoding.content_type().to_string()),
        (
            headers::SCHEMA,
            "pulse.v1.ErasureConfirmation/1".to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_round_trips_without_the_raw_id() {
        let key = pulse_core::hash::customer_key("cust-secret-42");
        let c = erasure_confirmation(key, "req-1", 17, 1_735_689_600_000, false);
        assert_eq!(
            c,
            erasure_confirmation(key, "req-1", 17, 1_735_689_600_000, false)
        );
        assert_ne!(
            c.confirmation_id,
            erasure_confirmation(key, "req-1", 18, 1_735_689_600_000, false).confirmation_id
        );
        for enc in [Encoding::Json, Encoding::Protobuf] {
            let bytes = encode_erasure(&c, enc);
            assert_eq!(decode_erasure(&bytes, enc).unwrap(), c);
            assert!(!bytes.windows(14).any(|w| w == b"cust-secret-42"));
        }
        let headers = erasure_headers(&c, "pulse", Encoding::Json);
        assert!(headers.iter().all(|(_, v)| !v.contains("cust-secret-42")));
    }
}
