//! Money: decimal text → integer minor units of an ISO-4217 currency. Never through a float.

/// Digits after the decimal point of the currency's minor unit (ISO 4217). Unknown but
/// well-formed codes get 2, the common case.
pub fn minor_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// A currency code is three ASCII capital letters.
pub fn valid_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Parses `"12.34"`, `"-5"`, `"0.5"` into minor units; more fractional digits than the currency
/// has is an error (no silent rounding of money).
pub fn parse_minor(amount: &str, currency: &str) -> Option<i64> {
    let exp = minor_exponent(currency);
    let (neg, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || frac.len() > exp as usize {
        return None;
    }
    if digits.ends_with('.') {
        return None;
    }
    let mut value: i64 = int.parse().ok()?;
    for i in 0..exp as usize {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(d)?;
    }
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units() {
        assert_eq!(parse_minor("23.50", "EUR"), Some(2350));
        assert_eq!(parse_minor("23.5", "EUR"), Some(2350));
        assert_eq!(parse_minor("23", "EUR"), Some(2300));
        assert_eq!(parse_minor("1500", "JPY"), Some(1500));
        assert_eq!(parse_minor("1.234", "KWD"), Some(1234));
        assert_eq!(parse_minor("-0.01", "USD"), Some(-1));
    }

    #[test]
    fn rejects_bad_amounts() {
        for bad in ["12,3x", "", ".5", "1.", "1.234", "abc", "1e3", "--1"] {
            assert_eq!(parse_minor(bad, "EUR"), None, "{bad}");
        }
        assert_eq!(parse_minor("1.5", "JPY"), None);
    }
}
