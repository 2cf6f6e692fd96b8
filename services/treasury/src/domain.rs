//! Domain newtypes: the only ways in are constructors that refuse invalid values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value is not a valid identifier, account number or bank code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("{what} must be 1 to {max} characters, got {len}")]
    Length {
        what: &'static str,
        max: usize,
        len: usize,
    },
    #[error("{what} may only contain {allowed}: {value:?}")]
    Characters {
        what: &'static str,
        allowed: &'static str,
        value: String,
    },
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), InvalidValue> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(InvalidValue::Length { what, max, len });
    }
    if !value.chars().all(ok) {
        return Err(InvalidValue::Characters {
            what,
            allowed,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                check($what, &value, $max, $allowed, $ok)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

text_newtype!(
    /// A bank account number as Chinese banks print it: 6 to 34 digits (the ISO 20022
    /// `Othr/Id` of an account is at most 34 characters).
    AccountNumber,
    "account number",
    34,
    "digits",
    |c: char| c.is_ascii_digit()
);

text_newtype!(
    /// A bank's code in the national clearing system (the 12-digit CNAPS bank code of a branch
    /// is the usual form; shorter head-office codes are accepted too).
    BankCode,
    "bank code",
    12,
    "digits",
    |c: char| c.is_ascii_digit()
);

text_newtype!(
    /// The end-to-end id of one payment: set by the platform, carried unchanged through the
    /// bank and back in every status report and statement line (ISO 20022 `Max35Text`; kept
    /// to letters, digits and `-` so that every bank's format accepts it).
    EndToEndId,
    "end-to-end id",
    35,
    "ASCII letters, digits and '-'",
    |c: char| c.is_ascii_alphanumeric() || c == '-'
);

text_newtype!(
    /// The id of one message sent to the bank (`GrpHdr/MsgId`); the bank refuses a second
    /// message with the same id, which is what makes resubmission safe.
    MessageId,
    "message id",
    35,
    "ASCII letters, digits and '-'",
    |c: char| c.is_ascii_alphanumeric() || c == '-'
);

impl AccountNumber {
    /// Account numbers are shown with all but the last four digits masked.
    pub fn masked(&self) -> String {
        let keep = self.0.len().saturating_sub(4);
        format!("{}{}", "*".repeat(keep), &self.0[keep..])
    }
}

/// What an instruction asks the bank to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionKind {
    /// Between two sub-accounts under the platform's master account.
    SubAccountTransfer,
    /// From a sub-account to a legal entity's external account.
    Payout,
    /// Freeze funds on a sub-account.
    Freeze,
    /// Release frozen funds.
    Unfreeze,
}

impl InstructionKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            InstructionKind::SubAccountTransfer => "sub_account_transfer",
            InstructionKind::Payout => "payout",
            InstructionKind::Freeze => "freeze",
            InstructionKind::Unfreeze => "unfreeze",
        }
    }
}

impl std::str::FromStr for InstructionKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [
            InstructionKind::SubAccountTransfer,
            InstructionKind::Payout,
            InstructionKind::Freeze,
            InstructionKind::Unfreeze,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| format!("unknown instruction kind {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_are_digits_and_masked_when_shown() {
        let n = AccountNumber::new("6222020200112233445").unwrap();
        assert_eq!(n.masked(), "***************3445");
        assert!(AccountNumber::new("6222-0202").is_err());
        assert!(AccountNumber::new("").is_err());
        assert!(AccountNumber::new("1".repeat(35)).is_err());
    }

    #[test]
    fn end_to_end_ids_fit_iso_max35_text() {
        assert!(EndToEndId::new("E2E-2026-000001").is_ok());
        assert!(EndToEndId::new("x".repeat(35)).is_ok());
        assert!(EndToEndId::new("x".repeat(36)).is_err());
        assert!(EndToEndId::new("中文").is_err());
        assert!(MessageId::new("MSG 1").is_err());
    }

    #[test]
    fn newtypes_refuse_bad_values_when_deserialised() {
        assert!(serde_json::from_str::<BankCode>("\"102100099996\"").is_ok());
        assert!(serde_json::from_str::<BankCode>("\"ICBC\"").is_err());
    }
}
