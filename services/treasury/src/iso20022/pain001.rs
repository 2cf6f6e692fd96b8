//! pain.001.001.10: the platform's credit transfer initiation to the custodial bank.
//!
//! One message carries one batch: a debtor sub-account and up to [`MAX_TRANSACTIONS`]
//! credit transfers, all on one rail (`PmtTpInf/LclInstrm/Prtry`) and one requested
//! execution date.

use chrono::{DateTime, NaiveDate, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    Agent, CashAccount, CodeOrProprietary, CurrencyAndAmount, DateOrDateTime, MAX_TRANSACTIONS,
    MessageError, Namespaced, Party, check_len, decimal_text, from_xml, iso_date_time, to_xml,
};
use crate::domain::{AccountNumber, BankCode, EndToEndId, MessageId};
use crate::rails::Rail;

pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.10";
pub const MESSAGE_NAME: &str = "pain.001.001.10";

/// An account holder at a bank: who, which account, which bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountHolder {
    pub name: String,
    pub account: AccountNumber,
    pub bank: BankCode,
}

/// One credit transfer of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTransfer {
    pub end_to_end_id: EndToEndId,
    pub amount: Money,
    pub creditor: AccountHolder,
    /// A proprietary purpose (e.g. `DEPOT_PURCHASE`, `FRANCHISE_SETTLEMENT`).
    pub purpose: Option<String>,
    /// Unstructured remittance information, at most 140 characters.
    pub remittance: Option<String>,
}

/// A batch of transfers from one debtor sub-account, as the platform means it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub message_id: MessageId,
    pub created_at: DateTime<Utc>,
    /// The platform, as the initiating party.
    pub initiating_party: String,
    pub debtor: AccountHolder,
    pub rail: Rail,
    pub requested_execution_date: NaiveDate,
    pub transfers: Vec<CreditTransfer>,
}

/// The XML document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Document")]
pub struct Document {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    #[serde(rename = "CstmrCdtTrfInitn")]
    pub initiation: CustomerCreditTransferInitiation,
}

impl Namespaced for Document {
    fn namespace(&self) -> &str {
        &self.xmlns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCreditTransferInitiation {
    #[serde(rename = "GrpHdr")]
    pub grp_hdr: GroupHeader,
    #[serde(rename = "PmtInf")]
    pub pmt_inf: Vec<PaymentInstruction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeader {
    #[serde(rename = "MsgId")]
    pub msg_id: String,
    #[serde(rename = "CreDtTm")]
    pub cre_dt_tm: String,
    #[serde(rename = "NbOfTxs")]
    pub nb_of_txs: String,
    #[serde(rename = "CtrlSum", deserialize_with = "decimal_text")]
    pub ctrl_sum: Decimal,
    #[serde(rename = "InitgPty")]
    pub initg_pty: Party,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInstruction {
    #[serde(rename = "PmtInfId")]
    pub pmt_inf_id: String,
    #[serde(rename = "PmtMtd")]
    pub pmt_mtd: String,
    #[serde(rename = "NbOfTxs")]
    pub nb_of_txs: String,
    #[serde(rename = "CtrlSum", deserialize_with = "decimal_text")]
    pub ctrl_sum: Decimal,
    #[serde(rename = "PmtTpInf")]
    pub pmt_tp_inf: PaymentTypeInformation,
    #[serde(rename = "ReqdExctnDt")]
    pub reqd_exctn_dt: DateOrDateTime,
    #[serde(rename = "Dbtr")]
    pub dbtr: Party,
    #[serde(rename = "DbtrAcct")]
    pub dbtr_acct: CashAccount,
    #[serde(rename = "DbtrAgt")]
    pub dbtr_agt: Agent,
    #[serde(rename = "CdtTrfTxInf")]
    pub cdt_trf_tx_inf: Vec<CreditTransferTransaction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTypeInformation {
    #[serde(rename = "LclInstrm")]
    pub lcl_instrm: CodeOrProprietary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTransferTransaction {
    #[serde(rename = "PmtId")]
    pub pmt_id: PaymentIdentification,
    #[serde(rename = "Amt")]
    pub amt: Amount,
    #[serde(rename = "CdtrAgt")]
    pub cdtr_agt: Agent,
    #[serde(rename = "Cdtr")]
    pub cdtr: Party,
    #[serde(rename = "CdtrAcct")]
    pub cdtr_acct: CashAccount,
    #[serde(rename = "Purp", default, skip_serializing_if = "Option::is_none")]
    pub purp: Option<CodeOrProprietary>,
    #[serde(rename = "RmtInf", default, skip_serializing_if = "Option::is_none")]
    pub rmt_inf: Option<RemittanceInformation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIdentification {
    #[serde(rename = "EndToEndId")]
    pub end_to_end_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    #[serde(rename = "InstdAmt")]
    pub instd_amt: CurrencyAndAmount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemittanceInformation {
    #[serde(rename = "Ustrd")]
    pub ustrd: Vec<String>,
}

impl Batch {
    /// Checks the batch against the message rules and builds the document.
    pub fn to_document(&self) -> Result<Document, MessageError> {
        let count = self.transfers.len();
        if count == 0 {
            return Err(MessageError::Empty);
        }
        if count > MAX_TRANSACTIONS {
            return Err(MessageError::TooManyTransactions {
                count,
                max: MAX_TRANSACTIONS,
            });
        }
        let currency = self.transfers[0].amount.currency();
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.transfers {
            if t.amount.currency() != currency {
                return Err(MessageError::MixedCurrencies(currency));
            }
            if !t.amount.is_positive() {
                return Err(MessageError::Invalid {
                    field: "InstdAmt",
                    reason: "amounts must be positive".into(),
                });
            }
            if !seen.insert(t.end_to_end_id.as_str()) {
                return Err(MessageError::DuplicateEndToEndId(
                    t.end_to_end_id.to_string(),
                ));
            }
            check_len("Cdtr/Nm", &t.creditor.name, 140)?;
            if let Some(r) = &t.remittance {
                check_len("RmtInf/Ustrd", r, 140)?;
            }
            if let Some(p) = &t.purpose {
                check_len("Purp/Prtry", p, 35)?;
            }
        }
        check_len("InitgPty/Nm", &self.initiating_party, 140)?;
        check_len("Dbtr/Nm", &self.debtor.name, 140)?;
        let total = self.control_sum()?;
        let transactions = self
            .transfers
            .iter()
            .map(|t| CreditTransferTransaction {
                pmt_id: PaymentIdentification {
                    end_to_end_id: t.end_to_end_id.to_string(),
                },
                amt: Amount {
                    instd_amt: CurrencyAndAmount::from_money(t.amount),
                },
                cdtr_agt: Agent::bank_code(t.creditor.bank.as_str()),
                cdtr: Party {
                    nm: Some(t.creditor.name.clone()),
                },
                cdtr_acct: CashAccount::number(t.creditor.account.as_str(), None),
                purp: t.purpose.as_deref().map(CodeOrProprietary::proprietary),
                rmt_inf: t.remittance.as_ref().map(|r| RemittanceInformation {
                    ustrd: vec![r.clone()],
                }),
            })
            .collect();
        Ok(Document {
            xmlns: NAMESPACE.to_owned(),
            initiation: CustomerCreditTransferInitiation {
                grp_hdr: GroupHeader {
                    msg_id: self.message_id.to_string(),
                    cre_dt_tm: iso_date_time(self.created_at),
                    nb_of_txs: count.to_string(),
                    ctrl_sum: total.amount(),
                    initg_pty: Party {
                        nm: Some(self.initiating_party.clone()),
                    },
                },
                pmt_inf: vec![PaymentInstruction {
                    pmt_inf_id: self.message_id.to_string(),
                    pmt_mtd: "TRF".to_owned(),
                    nb_of_txs: count.to_string(),
                    ctrl_sum: total.amount(),
                    pmt_tp_inf: PaymentTypeInformation {
                        lcl_instrm: CodeOrProprietary::proprietary(self.rail.code()),
                    },
                    reqd_exctn_dt: DateOrDateTime::date(self.requested_execution_date),
                    dbtr: Party {
                        nm: Some(self.debtor.name.clone()),
                    },
                    dbtr_acct: CashAccount::number(self.debtor.account.as_str(), Some(currency)),
                    dbtr_agt: Agent::bank_code(self.debtor.bank.as_str()),
                    cdt_trf_tx_inf: transactions,
                }],
            },
        })
    }

    /// The sum of the batch, exactly.
    pub fn control_sum(&self) -> Result<Money, MessageError> {
        let currency = self
            .transfers
            .first()
            .map(|t| t.amount.currency())
            .unwrap_or(Currency::CNY);
        self.transfers
            .iter()
            .try_fold(Money::zero(currency), |sum, t| sum.checked_add(t.amount))
            .map_err(|e| MessageError::Invalid {
                field: "CtrlSum",
                reason: e.to_string(),
            })
    }

    /// The message as the bank receives it.
    pub fn to_xml(&self) -> Result<String, MessageError> {
        to_xml(&self.to_document()?)
    }
}

/// Reads a pain.001.001.10 message (the bank simulator's side).
pub fn parse(xml: &str) -> Result<Document, MessageError> {
    from_xml(xml, NAMESPACE)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::iso20022::schema;
    use rust_decimal_macros::dec;

    pub(crate) fn depot_batch() -> Batch {
        let cny = |a| Money::new(a, Currency::CNY).unwrap();
        Batch {
            message_id: MessageId::new("FC-20261124-0001").unwrap(),
            created_at: "2026-11-24T08:00:00Z".parse().unwrap(),
            initiating_party: "Forecourt 平台".into(),
            debtor: AccountHolder {
                name: "重庆某加油站有限公司".into(),
                account: AccountNumber::new("3100000000000001").unwrap(),
                bank: BankCode::new("102100099996").unwrap(),
            },
            rail: Rail::LargeValue,
            requested_execution_date: "2026-11-24".parse().unwrap(),
            transfers: vec![
                CreditTransfer {
                    end_to_end_id: EndToEndId::new("E2E-DEPOT-0001").unwrap(),
                    amount: cny(dec!(30000000.00)),
                    creditor: AccountHolder {
                        name: "西南油库有限公司".into(),
                        account: AccountNumber::new("6222020200112233445").unwrap(),
                        bank: BankCode::new("313290000017").unwrap(),
                    },
                    purpose: Some("DEPOT_PURCHASE".into()),
                    remittance: Some("采购合同 PO-2026-118 第1批".into()),
                },
                CreditTransfer {
                    end_to_end_id: EndToEndId::new("E2E-DEPOT-0002").unwrap(),
                    amount: cny(dec!(1234.56)),
                    creditor: AccountHolder {
                        name: "运输公司".into(),
                        account: AccountNumber::new("6222020200999988887").unwrap(),
                        bank: BankCode::new("105100000017").unwrap(),
                    },
                    purpose: None,
                    remittance: None,
                },
            ],
        }
    }

    #[test]
    fn a_depot_purchase_batch_validates_against_the_official_schema() {
        let xml = depot_batch().to_xml().unwrap();
        schema::validate(&xml, "pain.001.001.10.xsd").unwrap();
        assert!(xml.contains("<CtrlSum>30001234.56</CtrlSum>"), "{xml}");
        assert!(
            xml.contains("<InstdAmt Ccy=\"CNY\">30000000.00</InstdAmt>"),
            "{xml}"
        );
        assert!(xml.contains("<Prtry>HVPS</Prtry>"));
    }

    #[test]
    fn the_schema_check_can_fail() {
        let xml = depot_batch()
            .to_xml()
            .unwrap()
            .replace("<PmtMtd>TRF</PmtMtd>", "<PmtMtd>CASH</PmtMtd>");
        assert!(schema::validate(&xml, "pain.001.001.10.xsd").is_err());
    }

    #[test]
    fn the_message_reads_back_to_the_same_document() {
        let batch = depot_batch();
        let xml = batch.to_xml().unwrap();
        assert_eq!(parse(&xml).unwrap(), batch.to_document().unwrap());
    }

    #[test]
    fn message_rules_are_enforced_before_anything_is_sent() {
        let mut empty = depot_batch();
        empty.transfers.clear();
        assert_eq!(empty.to_xml(), Err(MessageError::Empty));

        let mut dup = depot_batch();
        dup.transfers[1].end_to_end_id = dup.transfers[0].end_to_end_id.clone();
        assert!(matches!(
            dup.to_xml(),
            Err(MessageError::DuplicateEndToEndId(_))
        ));

        let mut mixed = depot_batch();
        mixed.transfers[1].amount = Money::new(dec!(1), Currency::USD).unwrap();
        assert_eq!(
            mixed.to_xml(),
            Err(MessageError::MixedCurrencies(Currency::CNY))
        );

        let mut long = depot_batch();
        long.transfers[0].remittance = Some("字".repeat(141));
        assert!(matches!(long.to_xml(), Err(MessageError::TooLong { .. })));
    }

    #[test]
    fn another_message_type_is_refused() {
        let xml = depot_batch()
            .to_xml()
            .unwrap()
            .replace(NAMESPACE, "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09");
        assert!(matches!(
            parse(&xml),
            Err(MessageError::WrongMessage { .. })
        ));
    }
}
