//! From approved instructions to a pain.001 batch, and from the bank's pain.002 back to the
//! instructions.
//!
//! A group-level rejection carries no transactions: a duplicate message id (DU01) means the
//! bank has the message already (a resubmission after a crash) and nothing is changed; the
//! status of its payments comes from the first report or a status query. Any other group
//! rejection (signature, message rules) is reported to the caller, which still knows which
//! instructions the message carried.
//!
//! # One message, several transactions
//! A message stored by [`crate::execution`] records its transactions
//! (`treasury_message_transactions`): one per instruction sent whole, or one per tranche of
//! an instruction split on the capped 24x7 rail ([`tranche_transfers`]: parts under the cap
//! that sum exactly to the instruction, each with its own end-to-end id). Reports are applied
//! per transaction; an instruction concludes when none of its transactions is pending:
//! - every transaction settled: the hold posts in full, once;
//! - none settled: the hold is voided and the instruction rejected;
//! - some settled, some rejected: the hold posts for what settled and the rest is released
//!   (a partial post); the instruction is settled, its settled amount below its amount, and
//!   the audit trail says which tranches the bank refused and why.
//!
//! A return after settlement reverses the returned transaction's amount; the instruction is
//! returned when everything that settled has come back. A report on a transaction the
//! platform has no record of (a message built outside the executor) is applied to the
//! instruction with that end-to-end id as a whole.

use chrono::{DateTime, NaiveDate, Utc};
use ledger::Money;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use entities::{treasury_instructions, treasury_message_transactions as message_txs};

use crate::domain::{EndToEndId, MessageId};
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
    #[error("the tranches of instruction {0} do not sum to its amount")]
    TranchesDoNotSum(Uuid),
}

/// The end-to-end id of tranche `n` (from 1) of an instruction: `<end-to-end id>-<n>`, or,
/// when that would not fit ISO's 35 characters, the id's beginning, 8 hex digits of its
/// SHA-256 and `-<n>` (still unique per instruction and traceable through the stored
/// transactions).
pub fn tranche_end_to_end_id(of: &EndToEndId, n: usize) -> EndToEndId {
    let suffix = format!("-{n}");
    let direct = format!("{of}{suffix}");
    if direct.len() <= 35 {
        return EndToEndId::new(direct).expect("letters, digits and '-' within 35");
    }
    let digest = Sha256::digest(of.as_str().as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = 35 - suffix.len() - hash.len() - 1;
    let head: String = of.as_str().chars().take(keep).collect();
    EndToEndId::new(format!("{head}-{hash}{suffix}")).expect("letters, digits and '-' within 35")
}

/// The transfers of one instruction sent as `parts` (one part: the instruction itself,
/// under its own end-to-end id; several: tranches under derived ids). The parts must sum to
/// the instruction's amount.
pub fn tranche_transfers(
    instruction: &Instruction,
    parts: &[Money],
) -> Result<Vec<CreditTransfer>, BatchError> {
    let c = &instruction.content;
    let sum = parts
        .iter()
        .try_fold(Money::zero(c.amount.currency()), |acc, p| {
            acc.checked_add(*p)
        });
    if parts.is_empty() || sum.ok() != Some(c.amount) {
        return Err(BatchError::TranchesDoNotSum(instruction.id));
    }
    Ok(parts
        .iter()
        .enumerate()
        .map(|(i, amount)| CreditTransfer {
            end_to_end_id: if parts.len() == 1 {
                c.end_to_end_id.clone()
            } else {
                tranche_end_to_end_id(&c.end_to_end_id, i + 1)
            },
            amount: *amount,
            creditor: AccountHolder {
                name: c.creditor.name.clone(),
                account: c.creditor.account.clone(),
                bank: c.creditor.bank.clone(),
            },
            purpose: c.purpose.clone(),
            remittance: c.remittance.clone(),
        })
        .collect())
}

/// Builds the batch of one message from approved instructions of one debtor sub-account,
/// one transaction per instruction.
pub fn batch_for(
    instructions: &[Instruction],
    message_id: MessageId,
    created_at: DateTime<Utc>,
    initiating_party: &str,
    rail: Rail,
    execution_date: NaiveDate,
) -> Result<Batch, BatchError> {
    let parts: Vec<Vec<Money>> = instructions
        .iter()
        .map(|i| vec![i.content.amount])
        .collect();
    split_batch_for(
        instructions,
        &parts,
        message_id,
        created_at,
        initiating_party,
        rail,
        execution_date,
    )
}

/// Builds the batch of one message from approved instructions of one debtor sub-account,
/// each sent as its `parts` (see [`tranche_transfers`]).
pub fn split_batch_for(
    instructions: &[Instruction],
    parts: &[Vec<Money>],
    message_id: MessageId,
    created_at: DateTime<Utc>,
    initiating_party: &str,
    rail: Rail,
    execution_date: NaiveDate,
) -> Result<Batch, BatchError> {
    let first = instructions.first().ok_or(BatchError::Empty)?;
    let debtor = &first.content.debtor;
    let mut transfers = Vec::with_capacity(instructions.len());
    for (n, i) in instructions.iter().enumerate() {
        if i.status != InstructionStatus::Approved {
            return Err(BatchError::NotApproved(i.id));
        }
        let d = &i.content.debtor;
        if d.account != debtor.account || d.bank != debtor.bank {
            return Err(BatchError::MixedDebtors(i.id));
        }
        let parts = parts.get(n).ok_or(BatchError::TranchesDoNotSum(i.id))?;
        transfers.extend(tranche_transfers(i, parts)?);
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

/// Builds the message of a batch instruction: one transaction per line, each with its own
/// creditor, amount, end-to-end id and remittance, the instruction's purpose.
pub fn lines_batch_for(
    instruction: &Instruction,
    message_id: MessageId,
    created_at: DateTime<Utc>,
    initiating_party: &str,
    rail: Rail,
    execution_date: NaiveDate,
) -> Result<Batch, BatchError> {
    if instruction.status != InstructionStatus::Approved {
        return Err(BatchError::NotApproved(instruction.id));
    }
    let c = &instruction.content;
    if c.lines.is_empty() {
        return Err(BatchError::Empty);
    }
    let transfers = c
        .lines
        .iter()
        .map(|l| CreditTransfer {
            end_to_end_id: l.end_to_end_id.clone(),
            amount: l.amount,
            creditor: AccountHolder {
                name: l.creditor.name.clone(),
                account: l.creditor.account.clone(),
                bank: l.creditor.bank.clone(),
            },
            purpose: c.purpose.clone(),
            remittance: l.remittance.clone(),
        })
        .collect();
    Ok(Batch {
        message_id,
        created_at,
        initiating_party: initiating_party.to_owned(),
        debtor: AccountHolder {
            name: c.debtor.name.clone(),
            account: c.debtor.account.clone(),
            bank: c.debtor.bank.clone(),
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

    /// Applies a verified status report, transaction by transaction: ACSC settles, RJCT
    /// rejects or, after settlement, is a return; everything else waits. An instruction
    /// concludes when none of its transactions is pending (see the module documentation).
    /// Applying the same report twice is harmless.
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
        let mut touched: Vec<Uuid> = Vec::new();
        for tx in &report.transactions {
            let stored = message_txs::Entity::find()
                .filter(message_txs::Column::MessageId.eq(report.original_message_id.as_str()))
                .filter(message_txs::Column::EndToEndId.eq(tx.end_to_end_id.as_str()))
                .one(self.db())
                .await?;
            let Some(stored) = stored else {
                // A message the executor did not store: its transaction is its instruction.
                let (id, outcome) = self.apply_to_instruction(tx).await?;
                match outcome {
                    Concluded::Settled => settled.push(id),
                    Concluded::Rejected => rejected.push(id),
                    Concluded::Returned => returned.push(id),
                    Concluded::InProgress => in_progress.push(id),
                }
                continue;
            };
            let reason = || {
                tx.reason
                    .as_ref()
                    .map(|r| format!("{} {}", r.code, r.info.clone().unwrap_or_default()))
                    .map(|r| r.trim().to_owned())
            };
            let current = TransactionState::parse(&stored.status)?;
            let next = match tx.status {
                PaymentStatus::AcceptedSettlementCompleted => Some(TransactionState::Settled),
                PaymentStatus::Rejected
                    if tx.is_return()
                        || matches!(
                            current,
                            TransactionState::Settled | TransactionState::Returned
                        ) =>
                {
                    Some(TransactionState::Returned)
                }
                PaymentStatus::Rejected => Some(TransactionState::Rejected),
                PaymentStatus::Received
                | PaymentStatus::AcceptedTechnicalValidation
                | PaymentStatus::AcceptedCustomerProfile
                | PaymentStatus::AcceptedSettlementInProcess
                | PaymentStatus::Pending => None,
            };
            if let Some(next) = next {
                self.mark_transaction(&stored, current, next, reason())
                    .await?;
            }
            if !touched.contains(&stored.instruction_id) {
                touched.push(stored.instruction_id);
            }
        }
        for id in touched {
            match self.conclude(id).await? {
                Concluded::Settled => settled.push(id),
                Concluded::Rejected => rejected.push(id),
                Concluded::Returned => returned.push(id),
                Concluded::InProgress => in_progress.push(id),
            }
        }
        Ok(ReportOutcome::Applied {
            settled,
            rejected,
            returned,
            in_progress,
        })
    }

    /// The status of a transaction of a message the platform has no record of, applied to
    /// the instruction with its end-to-end id as a whole.
    async fn apply_to_instruction(
        &self,
        tx: &crate::iso20022::pain002::TransactionStatus,
    ) -> Result<(Uuid, Concluded), TreasuryError> {
        let instruction = self
            .by_end_to_end_id(tx.end_to_end_id.as_str())
            .await?
            .ok_or_else(|| {
                TreasuryError::Corrupt(format!(
                    "the bank reports on unknown end-to-end id {}",
                    tx.end_to_end_id
                ))
            })?;
        let reason = |default: &str| {
            tx.reason
                .as_ref()
                .map(|r| format!("{} {}", r.code, r.info.clone().unwrap_or_default()))
                .unwrap_or_else(|| default.into())
                .trim()
                .to_owned()
        };
        let id = instruction.id;
        Ok(match tx.status {
            PaymentStatus::AcceptedSettlementCompleted => {
                self.settled(id).await?;
                (id, Concluded::Settled)
            }
            PaymentStatus::Rejected
                if tx.is_return()
                    || matches!(
                        instruction.status,
                        InstructionStatus::Settled | InstructionStatus::Returned
                    ) =>
            {
                // Money that left and came back: a return, never a voided hold.
                if instruction.status == InstructionStatus::Approved {
                    // The settlement was never reported: it happened before the return.
                    self.settled(id).await?;
                }
                self.returned(id, &reason("returned")).await?;
                (id, Concluded::Returned)
            }
            PaymentStatus::Rejected => {
                self.bank_rejected(id, &reason("rejected by the bank"))
                    .await?;
                (id, Concluded::Rejected)
            }
            PaymentStatus::Received
            | PaymentStatus::AcceptedTechnicalValidation
            | PaymentStatus::AcceptedCustomerProfile
            | PaymentStatus::AcceptedSettlementInProcess
            | PaymentStatus::Pending => (id, Concluded::InProgress),
        })
    }
}

/// Where one transaction of a message stands at the bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionState {
    Pending,
    Settled,
    Rejected,
    Returned,
}

impl TransactionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TransactionState::Pending => "pending",
            TransactionState::Settled => "settled",
            TransactionState::Rejected => "rejected",
            TransactionState::Returned => "returned",
        }
    }

    pub fn parse(text: &str) -> Result<Self, TreasuryError> {
        [
            TransactionState::Pending,
            TransactionState::Settled,
            TransactionState::Rejected,
            TransactionState::Returned,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| TreasuryError::Corrupt(format!("unknown transaction status {text:?}")))
    }

    /// Whether the money of the transaction reached the creditor (and may have come back).
    pub fn settled(self) -> bool {
        matches!(self, TransactionState::Settled | TransactionState::Returned)
    }
}

/// Where an instruction stands after a report was applied to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concluded {
    Settled,
    Rejected,
    Returned,
    InProgress,
}
