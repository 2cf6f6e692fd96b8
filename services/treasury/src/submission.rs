//! From approved instructions to a pain.001 batch, and from the bank's pain.002 back to the
//! instructions.
//!
//! A group-level rejection carries no transactions: a duplicate message id (DU01) means the
//! bank has the message already (a resubmission after a crash) and nothing is changed; the
//! status of its payments comes from the first report or a status query. Any other group
//! rejection (signature, message rules) is reported to the caller, which still knows which
//! instructions the message carried.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use entities::treasury_instructions;

use crate::domain::MessageId;
use crate::iso20022::pain001::{AccountHolder, Batch, CreditTransfer};
use crate::iso20022::pain002::{PaymentStatus, StatusReport};
use crate::rails::Rail;
use crate::store::{Instruction, InstructionStatus, Instructions, TreasuryError};

/// Why a batch cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a batch needs at least one instruction")]
    Empty,
    #[error("instruction {0} is not approved")]
    NotApproved(Uuid),
    #[error("instruction {0} has another debtor account than the batch")]
    MixedDebtors(Uuid),
}

/// Builds the batch of one message from approved instructions of one debtor sub-account.
pub fn batch_for(
    instructions: &[Instruction],
    message_id: MessageId,
    created_at: DateTime<Utc>,
    initiating_party: &str,
    rail: Rail,
    execution_date: NaiveDate,
) -> Result<Batch, BatchError> {
    let first = instructions.first().ok_or(BatchError::Empty)?;
    let debtor = &first.content.debtor;
    let mut transfers = Vec::with_capacity(instructions.len());
    for i in instructions {
        if i.status != InstructionStatus::Approved {
            return Err(BatchError::NotApproved(i.id));
        }
        let d = &i.content.debtor;
        if d.account != debtor.account || d.bank != debtor.bank {
            return Err(BatchError::MixedDebtors(i.id));
        }
        let c = &i.content.creditor;
        transfers.push(CreditTransfer {
            end_to_end_id: i.content.end_to_end_id.clone(),
            amount: i.content.amount,
            creditor: AccountHolder {
                name: c.name.clone(),
                account: c.account.clone(),
                bank: c.bank.clone(),
            },
            purpose: i.content.purpose.clone(),
            remittance: i.content.remittance.clone(),
        });
    }
    Ok(Batch {
        message_id,
        created_at,
        initiating_party: initiating_party.to_owned(),
        debtor: AccountHolder {
            name: debtor.name.clone(),
            account: debtor.account.clone(),
            bank: debtor.bank.clone(),
        },
        rail,
        requested_execution_date: execution_date,
        transfers,
    })
}

/// What applying a status report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    Applied {
        settled: Vec<Uuid>,
        rejected: Vec<Uuid>,
        /// Settled earlier and returned since (a rejection reported after settlement).
        returned: Vec<Uuid>,
        /// Accepted or pending at the bank: nothing changes until a final status.
        in_progress: Vec<Uuid>,
    },
    /// The bank already had this message: nothing was paid twice, nothing changes.
    DuplicateMessage,
    /// The whole message was refused; its instructions are unchanged.
    MessageRejected { code: String },
}

impl Instructions {
    /// The instruction with this end-to-end id.
    pub async fn by_end_to_end_id(&self, e2e: &str) -> Result<Option<Instruction>, TreasuryError> {
        let row = treasury_instructions::Entity::find()
            .filter(treasury_instructions::Column::EndToEndId.eq(e2e))
            .one(self.db())
            .await?;
        match row {
            Some(row) => self.get(row.id).await.map(Some),
            None => Ok(None),
        }
    }

    /// Applies a verified status report: ACSC settles (the hold posts), RJCT rejects (the
    /// hold is voided) or, after settlement, is a return (reversed); everything else waits. Applying the same report twice is harmless.
    pub async fn apply_report(
        &self,
        report: &StatusReport,
    ) -> Result<ReportOutcome, TreasuryError> {
        if report.group_status == Some(PaymentStatus::Rejected) && report.transactions.is_empty() {
            let code = report
                .group_reason
                .as_ref()
                .map(|r| r.code.clone())
                .unwrap_or_default();
            return Ok(if code == "DU01" {
                ReportOutcome::DuplicateMessage
            } else {
                ReportOutcome::MessageRejected { code }
            });
        }
        let (mut settled, mut rejected, mut returned, mut in_progress) =
            (vec![], vec![], vec![], vec![]);
        for tx in &report.transactions {
            let instruction = self
                .by_end_to_end_id(tx.end_to_end_id.as_str())
                .await?
                .ok_or_else(|| {
                    TreasuryError::Corrupt(format!(
                        "the bank reports on unknown end-to-end id {}",
                        tx.end_to_end_id
                    ))
                })?;
            match tx.status {
                PaymentStatus::AcceptedSettlementCompleted => {
                    self.settled(instruction.id).await?;
                    settled.push(instruction.id);
                }
                PaymentStatus::Rejected
                    if tx.is_return()
                        || matches!(
                            instruction.status,
                            InstructionStatus::Settled | InstructionStatus::Returned
                        ) =>
                {
                    // Money that left and came back: a return, never a voided hold.
                    let reason = tx
                        .reason
                        .as_ref()
                        .map(|r| format!("{} {}", r.code, r.info.clone().unwrap_or_default()))
                        .unwrap_or_else(|| "returned".into());
                    if instruction.status == InstructionStatus::Approved {
                        // The settlement was never reported: it happened before the return.
                        self.settled(instruction.id).await?;
                    }
                    self.returned(instruction.id, reason.trim()).await?;
                    returned.push(instruction.id);
                }
                PaymentStatus::Rejected => {
                    let reason = tx
                        .reason
                        .as_ref()
                        .map(|r| format!("{} {}", r.code, r.info.clone().unwrap_or_default()))
                        .unwrap_or_else(|| "rejected by the bank".into());
                    self.bank_rejected(instruction.id, reason.trim()).await?;
                    rejected.push(instruction.id);
                }
                PaymentStatus::Received
                | PaymentStatus::AcceptedTechnicalValidation
                | PaymentStatus::AcceptedCustomerProfile
                | PaymentStatus::AcceptedSettlementInProcess
                | PaymentStatus::Pending => in_progress.push(instruction.id),
            }
        }
        Ok(ReportOutcome::Applied {
            settled,
            rejected,
            returned,
            in_progress,
        })
    }
}
