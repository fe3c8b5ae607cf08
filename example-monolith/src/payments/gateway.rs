//! A fake payment gateway. It validates card numbers (digits, length, Luhn check) and
//! answers like a real test gateway: most cards are approved, a few well-known test
//! numbers are declined. It runs in-process and never waits, so checkout can call it
//! inside its transaction.

use argon2::password_hash::rand_core::{OsRng, RngCore};

/// Card numbers the gateway declines, with the reason it gives.
pub const DECLINING_CARDS: [(&str, &str); 3] = [
    ("4000000000000002", "card declined"),
    ("4000000000009995", "card declined: insufficient funds"),
    ("4000000000000069", "card declined: expired card"),
];

/// An approved charge.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The gateway's reference for the charge.
    pub reference: String,
    /// Last four digits of the card, the only part the shop keeps.
    pub last4: String,
}

/// Why a card cannot be charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The number is not a card number (the client's mistake: 400).
    #[error("card_number must be 12 to 19 digits with a valid check digit")]
    InvalidCard,
    /// The gateway declined (402).
    #[error("{0}")]
    Declined(&'static str),
}

/// The card number with spaces and dashes removed, if it is a plausible card number.
pub fn normalise(card_number: &str) -> Result<String, PaymentError> {
    let digits: String = card_number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || !luhn(&digits) {
        return Err(PaymentError::InvalidCard);
    }
    Ok(digits)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Charges `amount_cents` to a card.
pub fn charge(card_number: &str, amount_cents: i64) -> Result<Charge, PaymentError> {
    let digits = normalise(card_number)?;
    if let Some((_, reason)) = DECLINING_CARDS.iter().find(|(card, _)| *card == digits) {
        tracing::info!(amount_cents, "payment declined");
        return Err(PaymentError::Declined(reason));
    }
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    let reference = id.iter().fold(String::from("ch_"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    });
    Ok(Charge { reference, last4: digits[digits.len() - 4..].to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_behave_like_a_test_gateway() {
        assert!(charge("4242 4242 4242 4242", 100).is_ok());
        assert_eq!(charge("4242424242424242", 1).unwrap().last4, "4242");
        assert_eq!(charge("4000000000000002", 100).unwrap_err(), PaymentError::Declined("card declined"));
        assert_eq!(charge("4242424242424241", 100).unwrap_err(), PaymentError::InvalidCard);
        assert_eq!(charge("abc", 100).unwrap_err(), PaymentError::InvalidCard);
        assert_eq!(charge("", 100).unwrap_err(), PaymentError::InvalidCard);
    }
}
