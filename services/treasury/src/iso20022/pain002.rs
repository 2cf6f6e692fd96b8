//! pain.002.001.11: the bank's status report on a pain.001 message and its transactions.
//!
//! The platform reads these; the bank simulator writes them. Statuses, in the order a
//! payment normally goes through them: RCVD, ACTC, ACCP, ACSP, ACSC; or RJCT with a reason;
//! PDNG while the bank waits (for a window, for funds).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    CodeOrProprietary, MessageError, Namespaced, check_len, from_xml, iso_date_time, to_xml,
};
use crate::domain::{EndToEndId, MessageId};

pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.11";

/// The status of a message or a transaction (ExternalPaymentTransactionStatus1Code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// RCVD: received, nothing checked yet.
    Received,
    /// ACTC: syntax and signature checked.
    AcceptedTechnicalValidation,
    /// ACCP: customer profile (account, funds, limits) checked.
    AcceptedCustomerProfile,
    /// ACSP: settlement in process.
    AcceptedSettlementInProcess,
    /// ACSC: settled on the debtor's account.
    AcceptedSettlementCompleted,
    /// RJCT: rejected, with a reason.
    Rejected,
    /// PDNG: pending (waiting for a window or funds).
    Pending,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 7] = [
        PaymentStatus::Received,
        PaymentStatus::AcceptedTechnicalValidation,
        PaymentStatus::AcceptedCustomerProfile,
        PaymentStatus::AcceptedSettlementInProcess,
        PaymentStatus::AcceptedSettlementCompleted,
        PaymentStatus::Rejected,
        PaymentStatus::Pending,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            PaymentStatus::Received => "RCVD",
            PaymentStatus::AcceptedTechnicalValidation => "ACTC",
            PaymentStatus::AcceptedCustomerProfile => "ACCP",
            PaymentStatus::AcceptedSettlementInProcess => "ACSP",
            PaymentStatus::AcceptedSettlementCompleted => "ACSC",
            PaymentStatus::Rejected => "RJCT",
            PaymentStatus::Pending => "PDNG",
        }
    }

    pub fn from_code(code: &str) -> Result<PaymentStatus, MessageError> {
        PaymentStatus::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or_else(|| MessageError::Invalid {
                field: "TxSts",
                reason: format!("unknown status {code:?}"),
            })
    }

    /// Whether no later report can change the outcome.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStatus::AcceptedSettlementCompleted | PaymentStatus::Rejected
        )
    }
}

/// Why the bank rejected (an ISO external status reason code such as `AM04` insufficient
/// funds, `DU01` duplicate message, `DS0B` signature invalid), with free text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReason {
    pub code: String,
    pub info: Option<String>,
}

/// How the custodial bank marks a transaction returned after settlement: status RJCT, the
/// return reason code (e.g. `AC04`) in `StsRsnInf/Rsn/Cd`, and additional information that
/// starts with this word. The booking of the return comes as a camt.054 credit with
/// `RvslInd` and `RtrInf`.
pub const RETURN_INFO_PREFIX: &str = "RETURNED";

/// One transaction's status in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionStatus {
    pub end_to_end_id: EndToEndId,
    pub status: PaymentStatus,
    pub reason: Option<StatusReason>,
}

impl TransactionStatus {
    /// Whether the bank reports a return after settlement (see [`RETURN_INFO_PREFIX`])
    /// rather than a rejection before it.
    pub fn is_return(&self) -> bool {
        self.status == PaymentStatus::Rejected
            && self
                .reason
                .as_ref()
                .and_then(|r| r.info.as_deref())
                .is_some_and(|info| info.starts_with(RETURN_INFO_PREFIX))
    }
}

/// A status report as the platform understands it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub message_id: MessageId,
    pub created_at: DateTime<Utc>,
    pub original_message_id: MessageId,
    pub group_status: Option<PaymentStatus>,
    pub group_reason: Option<StatusReason>,
    pub transactions: Vec<TransactionStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Document")]
pub struct Document {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    #[serde(rename = "CstmrPmtStsRpt")]
    pub report: CustomerPaymentStatusReport,
}

impl Namespaced for Document {
    fn namespace(&self) -> &str {
        &self.xmlns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPaymentStatusReport {
    #[serde(rename = "GrpHdr")]
    pub grp_hdr: GroupHeader,
    #[serde(rename = "OrgnlGrpInfAndSts")]
    pub orgnl_grp_inf_and_sts: OriginalGroup,
    #[serde(rename = "OrgnlPmtInfAndSts", default)]
    pub orgnl_pmt_inf_and_sts: Vec<OriginalPaymentInstruction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeader {
    #[serde(rename = "MsgId")]
    pub msg_id: String,
    #[serde(rename = "CreDtTm")]
    pub cre_dt_tm: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalGroup {
    #[serde(rename = "OrgnlMsgId")]
    pub orgnl_msg_id: String,
    #[serde(rename = "OrgnlMsgNmId")]
    pub orgnl_msg_nm_id: String,
    #[serde(rename = "GrpSts", default, skip_serializing_if = "Option::is_none")]
    pub grp_sts: Option<String>,
    #[serde(rename = "StsRsnInf", default, skip_serializing_if = "Vec::is_empty")]
    pub sts_rsn_inf: Vec<StatusReasonInformation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalPaymentInstruction {
    #[serde(rename = "OrgnlPmtInfId")]
    pub orgnl_pmt_inf_id: String,
    #[serde(rename = "TxInfAndSts", default)]
    pub tx_inf_and_sts: Vec<PaymentTransaction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTransaction {
    #[serde(
        rename = "OrgnlEndToEndId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub orgnl_end_to_end_id: Option<String>,
    #[serde(rename = "TxSts", default, skip_serializing_if = "Option::is_none")]
    pub tx_sts: Option<String>,
    #[serde(rename = "StsRsnInf", default, skip_serializing_if = "Vec::is_empty")]
    pub sts_rsn_inf: Vec<StatusReasonInformation>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReasonInformation {
    #[serde(rename = "Rsn", default, skip_serializing_if = "Option::is_none")]
    pub rsn: Option<CodeOrProprietary>,
    #[serde(rename = "AddtlInf", default, skip_serializing_if = "Vec::is_empty")]
    pub addtl_inf: Vec<String>,
}

fn reason_info(reason: &StatusReason) -> Result<StatusReasonInformation, MessageError> {
    check_len("StsRsnInf/Rsn/Cd", &reason.code, 4)?;
    if let Some(info) = &reason.info {
        check_len("StsRsnInf/AddtlInf", info, 105)?;
    }
    Ok(StatusReasonInformation {
        rsn: Some(CodeOrProprietary::code(&reason.code)),
        addtl_inf: reason.info.iter().cloned().collect(),
    })
}

fn reason_of(infos: &[StatusReasonInformation]) -> Option<StatusReason> {
    infos.first().map(|i| StatusReason {
        code: i
            .rsn
            .as_ref()
            .and_then(|r| r.cd.clone().or_else(|| r.prtry.clone()))
            .unwrap_or_default(),
        info: (!i.addtl_inf.is_empty()).then(|| i.addtl_inf.join(" ")),
    })
}

fn id<T>(
    field: &'static str,
    text: &str,
    make: impl Fn(String) -> Result<T, crate::domain::InvalidValue>,
) -> Result<T, MessageError> {
    make(text.to_owned()).map_err(|e| MessageError::Invalid {
        field,
        reason: e.to_string(),
    })
}

impl StatusReport {
    pub fn to_document(&self) -> Result<Document, MessageError> {
        let group_reason = self.group_reason.as_ref().map(reason_info).transpose()?;
        let transactions = self
            .transactions
            .iter()
            .map(|t| {
                Ok(PaymentTransaction {
                    orgnl_end_to_end_id: Some(t.end_to_end_id.to_string()),
                    tx_sts: Some(t.status.code().to_owned()),
                    sts_rsn_inf: t
                        .reason
                        .as_ref()
                        .map(reason_info)
                        .transpose()?
                        .into_iter()
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, MessageError>>()?;
        Ok(Document {
            xmlns: NAMESPACE.to_owned(),
            report: CustomerPaymentStatusReport {
                grp_hdr: GroupHeader {
                    msg_id: self.message_id.to_string(),
                    cre_dt_tm: iso_date_time(self.created_at),
                },
                orgnl_grp_inf_and_sts: OriginalGroup {
                    orgnl_msg_id: self.original_message_id.to_string(),
                    orgnl_msg_nm_id: super::pain001::MESSAGE_NAME.to_owned(),
                    grp_sts: self.group_status.map(|s| s.code().to_owned()),
                    sts_rsn_inf: group_reason.into_iter().collect(),
                },
                orgnl_pmt_inf_and_sts: if transactions.is_empty() {
                    Vec::new()
                } else {
                    vec![OriginalPaymentInstruction {
                        orgnl_pmt_inf_id: self.original_message_id.to_string(),
                        tx_inf_and_sts: transactions,
                    }]
                },
            },
        })
    }

    pub fn to_xml(&self) -> Result<String, MessageError> {
        to_xml(&self.to_document()?)
    }

    /// Reads a status report. Transactions without an end-to-end id or a status are refused:
    /// the platform cannot match them.
    pub fn parse(xml: &str) -> Result<StatusReport, MessageError> {
        let doc: Document = from_xml(xml, NAMESPACE)?;
        let report = doc.report;
        let created_at = DateTime::parse_from_rfc3339(&report.grp_hdr.cre_dt_tm)
            .map_err(|e| MessageError::Invalid {
                field: "CreDtTm",
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        let group = &report.orgnl_grp_inf_and_sts;
        let mut transactions = Vec::new();
        for tx in report
            .orgnl_pmt_inf_and_sts
            .iter()
            .flat_map(|p| p.tx_inf_and_sts.iter())
        {
            let (Some(e2e), Some(status)) = (&tx.orgnl_end_to_end_id, &tx.tx_sts) else {
                return Err(MessageError::Invalid {
                    field: "TxInfAndSts",
                    reason: "a transaction status needs OrgnlEndToEndId and TxSts".into(),
                });
            };
            transactions.push(TransactionStatus {
                end_to_end_id: id("OrgnlEndToEndId", e2e, EndToEndId::new)?,
                status: PaymentStatus::from_code(status)?,
                reason: reason_of(&tx.sts_rsn_inf),
            });
        }
        Ok(StatusReport {
            message_id: id("MsgId", &report.grp_hdr.msg_id, MessageId::new)?,
            created_at,
            original_message_id: id("OrgnlMsgId", &group.orgnl_msg_id, MessageId::new)?,
            group_status: group
                .grp_sts
                .as_deref()
                .map(PaymentStatus::from_code)
                .transpose()?,
            group_reason: reason_of(&group.sts_rsn_inf),
            transactions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso20022::schema;

    fn report(status: PaymentStatus, reason: Option<StatusReason>) -> StatusReport {
        StatusReport {
            message_id: MessageId::new("BANK-STS-0001").unwrap(),
            created_at: "2026-11-24T08:00:05Z".parse().unwrap(),
            original_message_id: MessageId::new("FC-20261124-0001").unwrap(),
            group_status: Some(status),
            group_reason: None,
            transactions: vec![TransactionStatus {
                end_to_end_id: EndToEndId::new("E2E-DEPOT-0001").unwrap(),
                status,
                reason,
            }],
        }
    }

    #[test]
    fn every_status_round_trips_and_validates_against_the_official_schema() {
        for status in PaymentStatus::ALL {
            let reason = (status == PaymentStatus::Rejected).then(|| StatusReason {
                code: "AM04".into(),
                info: Some("余额不足 insufficient funds".into()),
            });
            let sent = report(status, reason);
            let xml = sent.to_xml().unwrap();
            schema::validate(&xml, "pain.002.001.11.xsd").unwrap();
            assert_eq!(StatusReport::parse(&xml).unwrap(), sent, "{status:?}");
        }
    }

    #[test]
    fn a_rejection_carries_its_reason() {
        let xml = report(
            PaymentStatus::Rejected,
            Some(StatusReason {
                code: "DU01".into(),
                info: None,
            }),
        )
        .to_xml()
        .unwrap();
        let parsed = StatusReport::parse(&xml).unwrap();
        let tx = &parsed.transactions[0];
        assert_eq!(tx.status, PaymentStatus::Rejected);
        assert!(tx.status.is_final());
        assert_eq!(tx.reason.as_ref().unwrap().code, "DU01");
    }

    #[test]
    fn unknown_statuses_and_unmatched_transactions_are_refused() {
        let xml = report(PaymentStatus::Pending, None).to_xml().unwrap();
        let unknown = xml.replace("<TxSts>PDNG</TxSts>", "<TxSts>XXXX</TxSts>");
        assert!(matches!(
            StatusReport::parse(&unknown),
            Err(MessageError::Invalid { field: "TxSts", .. })
        ));
        let anonymous = xml.replace("<OrgnlEndToEndId>E2E-DEPOT-0001</OrgnlEndToEndId>", "");
        assert!(matches!(
            StatusReport::parse(&anonymous),
            Err(MessageError::Invalid {
                field: "TxInfAndSts",
                ..
            })
        ));
    }
}
