//! camt.054.001.08: the bank's debit and credit notifications during the day, one booked
//! movement at a time (the statement of [`super::camt053`] follows at the end of the day).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::camt053::{ReportEntry, StatementEntry, entry_from_wire, entry_to_wire, invalid};
use super::{CashAccount, MessageError, Namespaced, check_len, from_xml, iso_date_time, to_xml};
use crate::domain::{AccountNumber, MessageId};

pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.054.001.08";

/// A notification as the platform understands it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub message_id: MessageId,
    pub created_at: DateTime<Utc>,
    pub notification_id: String,
    pub account: AccountNumber,
    pub entries: Vec<StatementEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Document")]
pub struct Document {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    #[serde(rename = "BkToCstmrDbtCdtNtfctn")]
    pub notification: BankToCustomerNotification,
}

impl Namespaced for Document {
    fn namespace(&self) -> &str {
        &self.xmlns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankToCustomerNotification {
    #[serde(rename = "GrpHdr")]
    pub grp_hdr: super::camt053::GroupHeader,
    #[serde(rename = "Ntfctn")]
    pub ntfctn: Vec<AccountNotification>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountNotification {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Acct")]
    pub acct: CashAccount,
    #[serde(rename = "Ntry", default)]
    pub ntry: Vec<ReportEntry>,
}

impl Notification {
    pub fn to_document(&self) -> Result<Document, MessageError> {
        check_len("Ntfctn/Id", &self.notification_id, 35)?;
        let entries = self
            .entries
            .iter()
            .map(entry_to_wire)
            .collect::<Result<Vec<_>, MessageError>>()?;
        Ok(Document {
            xmlns: NAMESPACE.to_owned(),
            notification: BankToCustomerNotification {
                grp_hdr: super::camt053::GroupHeader {
                    msg_id: self.message_id.to_string(),
                    cre_dt_tm: iso_date_time(self.created_at),
                },
                ntfctn: vec![AccountNotification {
                    id: self.notification_id.clone(),
                    acct: CashAccount::number(self.account.as_str(), None),
                    ntry: entries,
                }],
            },
        })
    }

    pub fn to_xml(&self) -> Result<String, MessageError> {
        to_xml(&self.to_document()?)
    }

    /// Reads a camt.054 with one notification; only booked entries are kept.
    pub fn parse(xml: &str) -> Result<Notification, MessageError> {
        let doc: Document = from_xml(xml, NAMESPACE)?;
        let group = doc.notification.grp_hdr;
        let [ntfctn]: [AccountNotification; 1] =
            doc.notification
                .ntfctn
                .try_into()
                .map_err(|_| MessageError::Invalid {
                    field: "Ntfctn",
                    reason: "one notification per message expected".into(),
                })?;
        let created_at = DateTime::parse_from_rfc3339(&group.cre_dt_tm)
            .map_err(|e| MessageError::Invalid {
                field: "CreDtTm",
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        let day: NaiveDate = created_at.date_naive();
        let mut entries = Vec::with_capacity(ntfctn.ntry.len());
        for entry in ntfctn.ntry {
            if let Some(entry) = entry_from_wire(entry, day)? {
                entries.push(entry);
            }
        }
        Ok(Notification {
            message_id: MessageId::new(group.msg_id).map_err(invalid("MsgId"))?,
            created_at,
            notification_id: ntfctn.id,
            account: AccountNumber::new(ntfctn.acct.id.othr.id).map_err(invalid("Acct"))?,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso20022::camt053::Direction;
    use crate::iso20022::camt053::tests::entry;
    use crate::iso20022::schema;
    use rust_decimal_macros::dec;

    fn notification() -> Notification {
        Notification {
            message_id: MessageId::new("BANK-NTF-0001").unwrap(),
            created_at: "2026-11-24T08:05:00Z".parse().unwrap(),
            notification_id: "NTF-3100000000000001-0001".into(),
            account: AccountNumber::new("3100000000000001").unwrap(),
            entries: vec![entry(dec!(30000000.00), "E2E-DEPOT-0001", Direction::Debit)],
        }
    }

    #[test]
    fn a_debit_notification_validates_and_reads_back() {
        let sent = notification();
        let xml = sent.to_xml().unwrap();
        schema::validate(&xml, "camt.054.001.08.xsd").unwrap();
        assert_eq!(Notification::parse(&xml).unwrap(), sent);
    }

    #[test]
    fn a_statement_is_not_a_notification() {
        let xml = crate::iso20022::camt053::tests::statement()
            .to_xml()
            .unwrap();
        assert!(Notification::parse(&xml).is_err());
    }
}
