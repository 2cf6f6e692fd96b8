//! ISO 20022 messages exchanged with the custodial bank, as typed structs mirroring the
//! official schemas (copies in `services/treasury/schemas/`), serialised with quick-xml's serde support.
//!
//! Only the elements the platform uses are modelled, in schema order; everything else is
//! optional in the schemas and skipped when reading. Every message the platform produces
//! is validated against the official XSD in the tests.
//!
//! - [`pain001`]: customer credit transfer initiation (pain.001.001.10), out.
//! - [`pain002`]: customer payment status report (pain.002.001.11), in.
//! - [`camt053`]: bank-to-customer statement (camt.053.001.08), in.
//! - [`camt054`]: bank-to-customer debit/credit notification (camt.054.001.08), in.

pub mod camt053;
pub mod camt054;
pub mod pain001;
pub mod pain002;

use chrono::{DateTime, SecondsFormat, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a message could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the message has no transactions")]
    Empty,
    #[error("a message carries at most {max} transactions, this one has {count}")]
    TooManyTransactions { count: usize, max: usize },
    #[error("end-to-end id {0} appears twice in one message")]
    DuplicateEndToEndId(String),
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("all transactions of one message must be in {0}")]
    MixedCurrencies(Currency),
    #[error("expected a {expected} document, got namespace {found:?}")]
    WrongMessage {
        expected: &'static str,
        found: String,
    },
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("invalid value in {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Most transactions in one message: banks refuse larger files, and it bounds the work.
pub const MAX_TRANSACTIONS: usize = 1_000;

pub(crate) const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Serialises a document with its XML declaration.
pub(crate) fn to_xml<T: Serialize>(document: &T) -> Result<String, MessageError> {
    let body = quick_xml::se::to_string(document).map_err(|e| MessageError::Xml(e.to_string()))?;
    Ok(format!("{XML_DECLARATION}{body}"))
}

/// Reads a document and checks its namespace.
pub(crate) fn from_xml<T: DeserializeOwned + Namespaced>(
    xml: &str,
    expected: &'static str,
) -> Result<T, MessageError> {
    let document: T = quick_xml::de::from_str(xml).map_err(|e| MessageError::Xml(e.to_string()))?;
    if document.namespace() != expected {
        return Err(MessageError::WrongMessage {
            expected,
            found: document.namespace().to_owned(),
        });
    }
    Ok(document)
}

pub(crate) trait Namespaced {
    fn namespace(&self) -> &str;
}

/// `ISODateTime` as banks send it: seconds precision, UTC.
pub(crate) fn iso_date_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), MessageError> {
    if value.chars().count() > max || value.is_empty() {
        return Err(MessageError::TooLong { field, max });
    }
    Ok(())
}

/// `ActiveOrHistoricCurrencyAndAmount`: an amount with its currency as attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyAndAmount {
    #[serde(rename = "@Ccy")]
    pub ccy: String,
    #[serde(rename = "$text", deserialize_with = "decimal_text")]
    pub value: Decimal,
}

/// Reads an `xs:decimal` from element text. `Decimal`'s own deserialiser asks for "any"
/// value, which an XML element answers with a map.
pub(crate) fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(serde::de::Error::custom)
}

impl CurrencyAndAmount {
    pub fn from_money(money: Money) -> Self {
        CurrencyAndAmount {
            ccy: money.currency().code().to_owned(),
            value: money.amount(),
        }
    }

    pub fn to_money(&self, field: &'static str) -> Result<Money, MessageError> {
        let invalid = |reason: String| MessageError::Invalid { field, reason };
        let currency: Currency = self.ccy.parse().map_err(|e| invalid(format!("{e}")))?;
        Money::new(self.value, currency).map_err(|e| invalid(e.to_string()))
    }
}

/// `GenericAccountIdentification1` inside `AccountIdentification4Choice`: Chinese account
/// numbers are not IBANs, so they go in `Othr/Id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountId {
    #[serde(rename = "Othr")]
    pub othr: GenericId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericId {
    #[serde(rename = "Id")]
    pub id: String,
}

/// `CashAccount38` / `CashAccount39`: the parts used here are common to both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashAccount {
    #[serde(rename = "Id")]
    pub id: AccountId,
    #[serde(rename = "Ccy", default, skip_serializing_if = "Option::is_none")]
    pub ccy: Option<String>,
}

impl CashAccount {
    pub fn number(number: &str, currency: Option<Currency>) -> Self {
        CashAccount {
            id: AccountId {
                othr: GenericId {
                    id: number.to_owned(),
                },
            },
            ccy: currency.map(|c| c.code().to_owned()),
        }
    }
}

/// `PartyIdentification135` with a name only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    #[serde(rename = "Nm", default, skip_serializing_if = "Option::is_none")]
    pub nm: Option<String>,
}

/// `BranchAndFinancialInstitutionIdentification6` by clearing-system member id (the CNAPS
/// bank code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    #[serde(rename = "FinInstnId")]
    pub fin_instn_id: FinInstnId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinInstnId {
    #[serde(
        rename = "ClrSysMmbId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clr_sys_mmb_id: Option<ClrSysMmbId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClrSysMmbId {
    #[serde(rename = "MmbId")]
    pub mmb_id: String,
}

impl Agent {
    pub fn bank_code(code: &str) -> Self {
        Agent {
            fin_instn_id: FinInstnId {
                clr_sys_mmb_id: Some(ClrSysMmbId {
                    mmb_id: code.to_owned(),
                }),
            },
        }
    }
}

/// A code-or-proprietary choice (`LocalInstrument2Choice`, `Purpose2Choice`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeOrProprietary {
    #[serde(rename = "Cd", default, skip_serializing_if = "Option::is_none")]
    pub cd: Option<String>,
    #[serde(rename = "Prtry", default, skip_serializing_if = "Option::is_none")]
    pub prtry: Option<String>,
}

impl CodeOrProprietary {
    pub fn code(code: &str) -> Self {
        CodeOrProprietary {
            cd: Some(code.to_owned()),
            prtry: None,
        }
    }

    pub fn proprietary(text: &str) -> Self {
        CodeOrProprietary {
            cd: None,
            prtry: Some(text.to_owned()),
        }
    }
}

/// `DateAndDateTime2Choice`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateOrDateTime {
    #[serde(rename = "Dt", default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<chrono::NaiveDate>,
    #[serde(rename = "DtTm", default, skip_serializing_if = "Option::is_none")]
    pub dt_tm: Option<String>,
}

impl DateOrDateTime {
    pub fn date(date: chrono::NaiveDate) -> Self {
        DateOrDateTime {
            dt: Some(date),
            dt_tm: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod schema {
    //! Validation of produced messages against the official schemas with `xmllint`.

    use std::io::Write;
    use std::path::PathBuf;
    use std::process::Command;

    fn schema_dir() -> PathBuf {
        std::env::var_os("ISO20022_SCHEMAS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas"))
    }

    /// Runs `xmllint --schema` on the message; returns xmllint's complaint on failure.
    pub(crate) fn validate(xml: &str, xsd: &str) -> Result<(), String> {
        let schema = schema_dir().join(xsd);
        assert!(schema.exists(), "schema {} not found", schema.display());
        let mut file = std::env::temp_dir();
        file.push(format!(
            "forecourt-iso-{}-{}.xml",
            std::process::id(),
            uuid_like()
        ));
        std::fs::File::create(&file)
            .and_then(|mut f| f.write_all(xml.as_bytes()))
            .expect("write message");
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&schema)
            .arg(&file)
            .output()
            .expect("xmllint must be installed (Debian package libxml2-utils)");
        let _ = std::fs::remove_file(&file);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn uuid_like() -> u128 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        nanos ^ u128::from(N.fetch_add(1, Ordering::Relaxed))
    }
}
