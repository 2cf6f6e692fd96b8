//! Freezing and releasing funds on a sub-account at the custodial bank (a court order, a
//! dispute).
//!
//! # Why not ISO 20022
//! pain.001 moves money; ISO 20022 has no customer-to-bank message that asks the account
//! servicer to block an amount on an account (the `acmt` account-management messages open,
//! amend and close accounts; blocking is a bank-internal service). Banks that offer it over
//! host-to-host take it as a proprietary request, and so does this platform: a small JSON
//! document on the same signed interface as everything else (`POST {base}/h2h/freeze`,
//! `Content-Type: application/json`, RSA-SHA256 over the exact body bytes in `X-Signature`),
//! answered synchronously with a signed JSON answer, and queried with
//! `GET {base}/h2h/freeze/{request_id}` (`404`: never received, sending is safe). The
//! request id plays the role of a message id: the bank answers a request id it has seen
//! with its first answer and never freezes twice.
//!
//! # At the bank and in the ledger
//! A freeze reduces the sub-account's available balance at the bank by its amount: payments
//! beyond what is left are refused (`AM04`), and a freeze beyond it is refused too. An
//! unfreeze names the freeze it releases. In the ledger a freeze is a hold from the
//! sub-account to its frozen-funds account that stays pending while the freeze is in force
//! (so the funds are not available), and is voided when the bank confirms the unfreeze.

use chrono::{DateTime, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{AccountNumber, BankCode, EndToEndId, MessageId};
use crate::iso20022::MessageError;

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeAction {
    Freeze,
    Unfreeze,
}

/// A request to freeze an amount on a sub-account, or to release a freeze.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// Unique per request; the bank refuses to act twice on one id.
    pub request_id: MessageId,
    pub action: FreezeAction,
    pub account: AccountNumber,
    pub bank: BankCode,
    /// A positive amount in the account's currency, as a decimal string.
    pub amount: Decimal,
    pub currency: Currency,
    /// The platform's reference (the instruction's end-to-end id).
    pub reference: EndToEndId,
    /// For an unfreeze: the request id of the freeze it releases.
    #[serde(default)]
    pub releases: Option<MessageId>,
    /// Why (the court order's number, the dispute), shown at the bank.
    #[serde(default)]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What the bank did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezeStatus {
    /// Carried out.
    #[serde(rename = "ACSC")]
    Done,
    /// Refused; nothing changed.
    #[serde(rename = "RJCT")]
    Rejected,
}

/// The bank's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeAnswer {
    pub request_id: MessageId,
    pub status: FreezeStatus,
    /// An ISO external status reason code (`AM04`, `AC01`, `DS0B`, …) when rejected.
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Everything frozen on the account after the request.
    pub frozen: Decimal,
    pub answered_at: DateTime<Utc>,
}

impl FreezeRequest {
    /// The request's bytes as sent and signed.
    pub fn to_json(&self) -> Result<String, MessageError> {
        if self.amount <= Decimal::ZERO || self.amount.normalize().scale() > 2 {
            return Err(MessageError::Invalid {
                field: "amount",
                reason: "a positive amount with at most two decimal places".into(),
            });
        }
        if self.action == FreezeAction::Unfreeze && self.releases.is_none() {
            return Err(MessageError::Invalid {
                field: "releases",
                reason: "an unfreeze names the freeze it releases".into(),
            });
        }
        serde_json::to_string(self).map_err(|e| MessageError::Xml(e.to_string()))
    }

    pub fn parse(text: &str) -> Result<Self, MessageError> {
        serde_json::from_str(text).map_err(|e| MessageError::Xml(e.to_string()))
    }

    pub fn money(&self) -> Result<Money, MessageError> {
        Money::new(self.amount, self.currency).map_err(|e| MessageError::Invalid {
            field: "amount",
            reason: e.to_string(),
        })
    }
}

impl FreezeAnswer {
    pub fn to_json(&self) -> Result<String, MessageError> {
        serde_json::to_string(self).map_err(|e| MessageError::Xml(e.to_string()))
    }

    pub fn parse(text: &str) -> Result<Self, MessageError> {
        serde_json::from_str(text).map_err(|e| MessageError::Xml(e.to_string()))
    }

    /// The reason code and text of a rejection, as one line.
    pub fn reason_line(&self) -> String {
        format!(
            "{} {}",
            self.reason_code.clone().unwrap_or_default(),
            self.reason.clone().unwrap_or_default()
        )
        .trim()
        .to_owned()
    }
}
