//! Carrying out approved instructions at the bank: the work behind the `bank_instruction`
//! workflow's activities. Every function here is safe to run again after a crash.
//!
//! - [`Executor::check_approval`]: where the approval chain stands; completes a hold a crash
//!   interrupted; expires an instruction when asked to.
//! - [`Executor::plan`]: the rail now, or how long to wait for a window. The tranche policy
//!   in force (part of the versioned approval policy, "wait" by default) decides whether a
//!   payment above the 24x7 cap waits for the large-value window or goes now in tranches
//!   under the cap, all in the instruction's one message.
//! - [`Executor::sync`]: the one way an instruction reaches the bank. The first call builds
//!   the pain.001, signs it and stores message id, bytes and signature before anything is
//!   sent; every later call asks the bank about that message before sending the same bytes
//!   again. The bank refuses a message id (DU01) and an end-to-end id it has seen, so a
//!   resubmission after a crash never pays twice.
//! - [`Executor::book_return`]: a return after settlement, reversed in the ledger.
//!
//! A freeze or an unfreeze takes the same path with the bank's freeze request instead of a
//! pain.001 ([`crate::freeze`]): the signed JSON request is stored (in the message's `xml`
//! column, under the same message id) before the first send, a later call asks the bank
//! about the request id before sending the same bytes again, and the bank never acts twice
//! on one request id. Its rail is the intra-bank one: a freeze is the bank's own booking.

use chrono::{DateTime, NaiveTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, SqlErr};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use entities::{treasury_message_transactions, treasury_messages};
use ledger::Money;

use crate::approval::ApprovalState;
use crate::bank::{BankClient, SubmitError};
use crate::domain::{InstructionKind, MessageId};
use crate::freeze::{FreezeAction, FreezeAnswer, FreezeRequest, FreezeStatus};
use crate::iso20022::MessageError;
use crate::iso20022::camt053::Direction;
use crate::iso20022::camt054::Notification;
use crate::iso20022::pain002::{PaymentStatus, StatusReport};
use crate::planner::{BatchPlanRequest, Plan, PlanError, PlanRequest};
use crate::rails::{Rail, Rails, TZ, shanghai};
use crate::signing::{Signature, Signer, SigningError};
use crate::store::{
    Clock, Instruction, InstructionStatus, Instructions, NewInstruction, TreasuryError,
};
use crate::submission::{
    BatchError, ReportOutcome, TransactionState, lines_batch_for, split_batch_for,
};

/// Where an approval chain stands, as the workflow needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApprovalCheck {
    Pending {
        waiting_for: String,
    },
    /// Approved and the debtor's funds held.
    Approved,
    Rejected {
        reason: String,
    },
    Expired,
}

/// When to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PlanOutcome {
    SendNow {
        rail: String,
        expected_arrival: DateTime<Utc>,
    },
    Wait {
        rail: String,
        until: String,
        wait_ms: u64,
    },
    Impossible {
        reason: String,
    },
}

/// What the bank has made of an instruction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BankProgress {
    Settled,
    Rejected {
        reason: String,
    },
    Returned {
        reason: String,
    },
    /// Received, accepted or pending at the bank (the status code says which), or not sent
    /// because the bank could not take it now.
    InProgress {
        status: String,
    },
    /// Nobody knows yet whether the bank has it: ask before sending again.
    Unknown {
        reason: String,
    },
}

/// Why a step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error(transparent)]
    Treasury(#[from] TreasuryError),
    #[error("building the message: {0}")]
    Batch(#[from] BatchError),
    #[error("message: {0}")]
    Message(#[from] MessageError),
    #[error("signing: {0}")]
    Signing(#[from] SigningError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
}

impl ExecutionError {
    /// Whether trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            ExecutionError::Treasury(
                TreasuryError::Storage(_) | TreasuryError::Ledger(ledger::LedgerError::Storage(_)),
            ) => false,
            ExecutionError::Treasury(_)
            | ExecutionError::Batch(_)
            | ExecutionError::Message(_)
            | ExecutionError::Plan(_) => true,
            ExecutionError::Signing(_) => true,
        }
    }

    /// A stable class for retry policies and logs.
    pub fn class(&self) -> &'static str {
        match self {
            ExecutionError::Treasury(TreasuryError::InvalidState { .. }) => "invalid_state",
            ExecutionError::Treasury(TreasuryError::NotFound(_)) => "bad_input",
            ExecutionError::Treasury(_) => "treasury",
            ExecutionError::Batch(_) => "batch",
            ExecutionError::Message(_) => "message",
            ExecutionError::Signing(_) => "signing",
            ExecutionError::Plan(_) => "plan",
        }
    }
}

impl From<DbErr> for ExecutionError {
    fn from(err: DbErr) -> Self {
        ExecutionError::Treasury(TreasuryError::Storage(err))
    }
}

/// Everything the activities need.
pub struct Executor {
    pub instructions: Instructions,
    pub rails: Arc<Rails>,
    pub bank: BankClient,
    pub signer: Signer,
    pub clock: Clock,
    /// The platform's name as initiating party of every message.
    pub initiating_party: String,
}

impl Executor {
    fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        (self.clock)().trunc_subsecs(6)
    }

    /// Where the approval chain stands. With `expire`, an instruction still pending expires.
    pub async fn check_approval(
        &self,
        id: Uuid,
        expire: bool,
    ) -> Result<ApprovalCheck, ExecutionError> {
        let instruction = self.instructions.resume_hold(id).await?;
        Ok(match instruction.status {
            InstructionStatus::PendingApproval if expire => {
                let expired = self.instructions.expire(id).await?;
                match expired.status {
                    InstructionStatus::Rejected => ApprovalCheck::Expired,
                    _ => ApprovalCheck::Approved,
                }
            }
            InstructionStatus::PendingApproval => {
                match self.instructions.approval_state(id).await? {
                    ApprovalState::Pending {
                        role, have, need, ..
                    } => ApprovalCheck::Pending {
                        waiting_for: format!("{} more by {}", need - have, role.0),
                    },
                    ApprovalState::Rejected { reason, .. } => ApprovalCheck::Rejected { reason },
                    ApprovalState::Approved => ApprovalCheck::Pending {
                        waiting_for: "the hold".into(),
                    },
                }
            }
            InstructionStatus::Rejected => ApprovalCheck::Rejected {
                reason: instruction
                    .rejection
                    .map(|(by, reason)| format!("{reason} (by {by})"))
                    .unwrap_or_default(),
            },
            InstructionStatus::Approved
            | InstructionStatus::Settled
            | InstructionStatus::Returned => ApprovalCheck::Approved,
        })
    }

    /// The rail for the instruction now, or how long to wait. The requested execution date
    /// counts: nothing is sent before that day starts in Shanghai.
    pub async fn plan(&self, id: Uuid) -> Result<PlanOutcome, ExecutionError> {
        if let Some(message) = self.message_of(id).await? {
            // Sent before: the rail is the one in the message.
            return Ok(PlanOutcome::SendNow {
                rail: message.rail,
                expected_arrival: self.now(),
            });
        }
        let instruction = self.instructions.get(id).await?;
        let c = &instruction.content;
        let now = self.now();
        let day_start = shanghai(c.requested_execution_date, NaiveTime::MIN).unwrap_or(now);
        let at = now.max(day_start);
        let plan = match self.plan_at(c, at).await? {
            Ok(plan) => plan,
            Err(err) => {
                return Ok(PlanOutcome::Impossible {
                    reason: err.to_string(),
                });
            }
        };
        let rail = rail_name(plan.rail()).to_owned();
        if plan.send_at <= now {
            Ok(PlanOutcome::SendNow {
                rail,
                expected_arrival: plan.expected_arrival,
            })
        } else {
            let wait_ms = (plan.send_at - now).num_milliseconds().max(0) as u64;
            Ok(PlanOutcome::Wait {
                rail,
                until: plan.send_at.with_timezone(&TZ).to_rfc3339(),
                wait_ms,
            })
        }
    }

    /// The rails' plan for an instruction at `at`, under the tranche policy in force.
    async fn plan_at(
        &self,
        c: &NewInstruction,
        at: DateTime<Utc>,
    ) -> Result<Result<Plan, PlanError>, ExecutionError> {
        if !c.lines.is_empty() {
            return Ok(self.rails.plan_batch(&BatchPlanRequest {
                debtor_bank: c.debtor.bank.clone(),
                payments: c
                    .lines
                    .iter()
                    .map(|l| (l.creditor.bank.clone(), l.amount))
                    .collect(),
                at,
            }));
        }
        let tranches = self.instructions.policy().await?.tranches();
        Ok(self.rails.plan(&PlanRequest {
            amount: c.amount,
            debtor_bank: c.debtor.bank.clone(),
            creditor_bank: c.creditor.bank.clone(),
            at,
            tranches,
        }))
    }

    /// Sends the instruction's message, or asks the bank about the one sent before, and
    /// applies what the bank says.
    pub async fn sync(&self, id: Uuid) -> Result<BankProgress, ExecutionError> {
        let instruction = self.instructions.get(id).await?;
        match instruction.status {
            InstructionStatus::Approved => {}
            status => return final_progress(&self.instructions, id, status).await,
        }
        if matches!(
            instruction.content.kind,
            InstructionKind::Freeze | InstructionKind::Unfreeze
        ) {
            return self.sync_freeze(&instruction).await;
        }
        let message = match self.message_of(id).await? {
            Some(message) => message,
            None => self.write_message(id).await?,
        };
        let message_id =
            MessageId::new(message.message_id.clone()).map_err(|e| MessageError::Invalid {
                field: "MsgId",
                reason: e.to_string(),
            })?;
        if message.sends > 0 {
            match self.bank.status(&message_id).await {
                Ok(Some(report)) => return self.apply(id, &message, &report).await,
                // Never received: sending the same bytes is safe.
                Ok(None) => {}
                Err(err) => {
                    return Ok(BankProgress::Unknown {
                        reason: format!("status query failed: {err}"),
                    });
                }
            }
        }
        self.count_send(&message.message_id).await?;
        let signature = Signature::from_base64(&message.signature)?;
        match self
            .bank
            .submit_signed(message.xml.as_bytes(), &signature)
            .await
        {
            Ok(report) => self.apply(id, &message, &report).await,
            Err(SubmitError::Refused { reason }) => Ok(BankProgress::InProgress {
                status: format!("not sent: {reason}"),
            }),
            Err(SubmitError::Unknown { reason }) => Ok(BankProgress::Unknown { reason }),
            Err(SubmitError::Local(reason)) => Ok(BankProgress::InProgress {
                status: format!("not sent: {reason}"),
            }),
        }
    }

    /// Applies a status report the bank sent on its own (a callback, already verified) and
    /// says which instruction it concerns, so that its workflow can be told; `None` for a
    /// report on a message the platform never sent (logged; there is nothing to apply, and
    /// refusing it would only make the bank send it again and again).
    pub async fn receive_report(
        &self,
        report: &StatusReport,
    ) -> Result<Option<Uuid>, ExecutionError> {
        let Some(message) =
            treasury_messages::Entity::find_by_id(report.original_message_id.as_str())
                .one(self.instructions.db())
                .await?
        else {
            tracing::error!(
                message = %report.original_message_id,
                "the bank reports on a message the platform never sent"
            );
            return Ok(None);
        };
        self.apply(message.instruction_id, &message, report).await?;
        Ok(Some(message.instruction_id))
    }

    /// Applies a booking notification (camt.054, already verified): a reversal on the
    /// debtor's sub-account of a settled instruction is its return. Says which instructions
    /// were returned, and why, so that their workflows can be told; other bookings change
    /// nothing here (the end-of-day statement reconciles them).
    pub async fn receive_notification(
        &self,
        notification: &Notification,
    ) -> Result<Vec<(Uuid, String)>, ExecutionError> {
        let mut returned = Vec::new();
        for entry in &notification.entries {
            let (true, Direction::Credit, Some(e2e)) = (
                entry.reversal,
                entry.direction,
                entry.end_to_end_id.as_ref(),
            ) else {
                continue;
            };
            let transaction = self
                .instructions
                .transaction_by_end_to_end_id(e2e.as_str())
                .await?;
            let id = match &transaction {
                Some(t) => t.instruction_id,
                None => match self.instructions.by_end_to_end_id(e2e.as_str()).await? {
                    Some(instruction) => instruction.id,
                    None => continue,
                },
            };
            let instruction = self.instructions.get(id).await?;
            if instruction.content.debtor.account != notification.account {
                continue;
            }
            let reason = entry
                .return_reason
                .as_ref()
                .map(|r| format!("{} {}", r.code, r.info.clone().unwrap_or_default()))
                .unwrap_or_else(|| "returned by the creditor's bank".into());
            let reason = reason.trim().to_owned();
            match &transaction {
                Some(t) => {
                    self.instructions.transaction_returned(t, &reason).await?;
                }
                None => {
                    self.instructions.returned(id, &reason).await?;
                }
            }
            returned.push((id, reason));
        }
        Ok(returned)
    }

    /// Books a return after settlement (idempotent) and says whether everything that
    /// settled has come back. An instruction sent as one transaction is returned whole; one
    /// sent in tranches has each returned tranche recorded when the bank reported it (a
    /// status report or a camt.054), so only what the bank said is reversed here.
    pub async fn book_return(&self, id: Uuid, reason: &str) -> Result<bool, ExecutionError> {
        let transactions = self.instructions.transactions(id).await?;
        let instruction = if transactions.len() > 1 {
            self.instructions.conclude(id).await?;
            self.instructions.get(id).await?
        } else {
            self.instructions.returned(id, reason).await?
        };
        Ok(instruction.status == InstructionStatus::Returned)
    }

    async fn apply(
        &self,
        id: Uuid,
        message: &treasury_messages::Model,
        report: &StatusReport,
    ) -> Result<BankProgress, ExecutionError> {
        // The message's status: the group status when the bank gives one (the only one of a
        // message of several transactions), else its one transaction's.
        let status = report
            .group_status
            .or_else(|| report.transactions.iter().map(|t| t.status).next())
            .map(PaymentStatus::code)
            .unwrap_or("RCVD");
        let xml = report.to_xml()?;
        treasury_messages::Entity::update_many()
            .set(treasury_messages::ActiveModel {
                last_status: Set(Some(status.to_owned())),
                last_report: Set(Some(xml)),
                updated_at: Set(self.now()),
                ..Default::default()
            })
            .filter(treasury_messages::Column::MessageId.eq(&message.message_id))
            .exec(self.instructions.db())
            .await?;
        match self.instructions.apply_report(report).await? {
            ReportOutcome::Applied { .. } => {}
            ReportOutcome::DuplicateMessage => {
                // The bank has it from an earlier send: its status comes from a query.
                let message_id = report.original_message_id.clone();
                return Ok(match self.bank.status(&message_id).await {
                    Ok(Some(known)) if known.group_reason.is_none() => {
                        Box::pin(self.apply(id, message, &known)).await?
                    }
                    Ok(_) => BankProgress::Unknown {
                        reason: "the bank reports a duplicate but has no status for it".into(),
                    },
                    Err(err) => BankProgress::Unknown {
                        reason: format!("status query failed: {err}"),
                    },
                });
            }
            ReportOutcome::MessageRejected { code } => {
                let info = report
                    .group_reason
                    .as_ref()
                    .and_then(|r| r.info.clone())
                    .unwrap_or_default();
                self.instructions
                    .bank_rejected(id, format!("{code} {info}").trim())
                    .await?;
            }
        }
        let instruction = self.instructions.get(id).await?;
        match instruction.status {
            InstructionStatus::Approved => Ok(BankProgress::InProgress {
                status: status.to_owned(),
            }),
            status => final_progress(&self.instructions, id, status).await,
        }
    }

    async fn message_of(
        &self,
        id: Uuid,
    ) -> Result<Option<treasury_messages::Model>, ExecutionError> {
        Ok(treasury_messages::Entity::find()
            .filter(treasury_messages::Column::InstructionId.eq(id))
            .one(self.instructions.db())
            .await?)
    }

    /// Builds, signs and stores the instruction's one message and its transactions (one, or
    /// one per tranche). Two racing calls store one.
    async fn write_message(&self, id: Uuid) -> Result<treasury_messages::Model, ExecutionError> {
        let instruction = self.instructions.get(id).await?;
        let now = self.now();
        let c = &instruction.content;
        let planned = self.plan_at(c, now).await??;
        let message_id = message_id_for(id);
        let execution_date = planned
            .send_at
            .with_timezone(&TZ)
            .date_naive()
            .max(c.requested_execution_date);
        let batch = if c.lines.is_empty() {
            let parts: Vec<Money> = planned.legs.iter().map(|l| l.amount).collect();
            split_batch_for(
                std::slice::from_ref(&instruction),
                std::slice::from_ref(&parts),
                message_id.clone(),
                now,
                &self.initiating_party,
                planned.rail(),
                execution_date,
            )?
        } else {
            lines_batch_for(
                &instruction,
                message_id.clone(),
                now,
                &self.initiating_party,
                planned.rail(),
                execution_date,
            )?
        };
        let xml = batch.to_xml()?;
        let signature = self.signer.sign(xml.as_bytes())?;
        let model = treasury_messages::ActiveModel {
            message_id: Set(message_id.as_str().to_owned()),
            instruction_id: Set(id),
            rail: Set(rail_name(planned.rail()).to_owned()),
            xml: Set(xml),
            signature: Set(signature.to_base64()),
            sends: Set(0),
            last_status: Set(None),
            last_report: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let transactions: Vec<treasury_message_transactions::ActiveModel> = batch
            .transfers
            .iter()
            .enumerate()
            .map(|(n, t)| {
                Ok::<_, ExecutionError>(treasury_message_transactions::ActiveModel {
                    message_id: Set(message_id.as_str().to_owned()),
                    seq: Set(i32::try_from(n + 1).map_err(|_| {
                        TreasuryError::Corrupt("more transactions than i32".into())
                    })?),
                    instruction_id: Set(id),
                    end_to_end_id: Set(t.end_to_end_id.to_string()),
                    amount_minor: Set(t
                        .amount
                        .minor_units()
                        .map_err(|e| TreasuryError::Corrupt(e.to_string()))?),
                    currency: Set(t.amount.currency().code().to_owned()),
                    status: Set(TransactionState::Pending.as_str().to_owned()),
                    reason: Set(None),
                    updated_at: Set(now),
                })
            })
            .collect::<Result<_, _>>()?;
        let txn = entities::db::begin_write(self.instructions.db()).await?;
        let inserted = match model.insert(&txn).await {
            Ok(stored) => treasury_message_transactions::Entity::insert_many(transactions)
                .exec(&txn)
                .await
                .map(|_| stored),
            Err(err) => Err(err),
        };
        match inserted {
            Ok(stored) => {
                txn.commit().await?;
                Ok(stored)
            }
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                txn.rollback().await?;
                self.message_of(id).await?.ok_or_else(|| {
                    ExecutionError::Treasury(TreasuryError::Corrupt(format!(
                        "message of {id} neither inserted nor found"
                    )))
                })
            }
            Err(err) => {
                txn.rollback().await?;
                Err(err.into())
            }
        }
    }

    /// [`sync`](Self::sync) for a freeze or an unfreeze.
    async fn sync_freeze(&self, instruction: &Instruction) -> Result<BankProgress, ExecutionError> {
        let id = instruction.id;
        let message = match self.message_of(id).await? {
            Some(message) => message,
            None => self.write_freeze_request(instruction).await?,
        };
        let request_id =
            MessageId::new(message.message_id.clone()).map_err(|e| MessageError::Invalid {
                field: "request_id",
                reason: e.to_string(),
            })?;
        if message.sends > 0 {
            match self.bank.freeze_status(&request_id).await {
                Ok(Some(answer)) => return self.apply_freeze(id, &message, &answer).await,
                Ok(None) => {}
                Err(err) => {
                    return Ok(BankProgress::Unknown {
                        reason: format!("status query failed: {err}"),
                    });
                }
            }
        }
        self.count_send(&message.message_id).await?;
        let signature = Signature::from_base64(&message.signature)?;
        match self
            .bank
            .freeze_signed(message.xml.as_bytes(), &signature)
            .await
        {
            Ok(answer) => self.apply_freeze(id, &message, &answer).await,
            Err(SubmitError::Refused { reason }) | Err(SubmitError::Local(reason)) => {
                Ok(BankProgress::InProgress {
                    status: format!("not sent: {reason}"),
                })
            }
            Err(SubmitError::Unknown { reason }) => Ok(BankProgress::Unknown { reason }),
        }
    }

    /// Builds, signs and stores the freeze or unfreeze request of an instruction.
    async fn write_freeze_request(
        &self,
        instruction: &Instruction,
    ) -> Result<treasury_messages::Model, ExecutionError> {
        let id = instruction.id;
        let c = &instruction.content;
        let now = self.now();
        let request = FreezeRequest {
            request_id: message_id_for(id),
            action: match c.kind {
                InstructionKind::Unfreeze => FreezeAction::Unfreeze,
                _ => FreezeAction::Freeze,
            },
            account: c.debtor.account.clone(),
            bank: c.debtor.bank.clone(),
            amount: c.amount.amount(),
            currency: c.amount.currency(),
            reference: c.end_to_end_id.clone(),
            releases: c.releases.map(message_id_for),
            reason: c.remittance.clone(),
            created_at: now,
        };
        let json = request.to_json()?;
        let signature = self.signer.sign(json.as_bytes())?;
        let model = treasury_messages::ActiveModel {
            message_id: Set(request.request_id.as_str().to_owned()),
            instruction_id: Set(id),
            rail: Set(rail_name(Rail::IntraBank).to_owned()),
            xml: Set(json),
            signature: Set(signature.to_base64()),
            sends: Set(0),
            last_status: Set(None),
            last_report: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        match model.insert(self.instructions.db()).await {
            Ok(stored) => Ok(stored),
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                self.message_of(id).await?.ok_or_else(|| {
                    ExecutionError::Treasury(TreasuryError::Corrupt(format!(
                        "request of {id} neither inserted nor found"
                    )))
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Applies the bank's answer to a freeze or unfreeze request.
    async fn apply_freeze(
        &self,
        id: Uuid,
        message: &treasury_messages::Model,
        answer: &FreezeAnswer,
    ) -> Result<BankProgress, ExecutionError> {
        let code = match answer.status {
            FreezeStatus::Done => "ACSC",
            FreezeStatus::Rejected => "RJCT",
        };
        treasury_messages::Entity::update_many()
            .set(treasury_messages::ActiveModel {
                last_status: Set(Some(code.to_owned())),
                last_report: Set(Some(answer.to_json()?)),
                updated_at: Set(self.now()),
                ..Default::default()
            })
            .filter(treasury_messages::Column::MessageId.eq(&message.message_id))
            .exec(self.instructions.db())
            .await?;
        let instruction = self.instructions.get(id).await?;
        match (answer.status, instruction.content.kind) {
            (FreezeStatus::Done, InstructionKind::Unfreeze) => {
                self.instructions.released(id).await?;
            }
            (FreezeStatus::Done, _) => {
                self.instructions.frozen(id).await?;
            }
            (FreezeStatus::Rejected, _) => {
                self.instructions
                    .bank_rejected(id, &answer.reason_line())
                    .await?;
            }
        }
        let status = self.instructions.get(id).await?.status;
        final_progress(&self.instructions, id, status).await
    }

    /// Counts a send before it happens: after a crash, a count above zero means "ask the
    /// bank first".
    async fn count_send(&self, message_id: &str) -> Result<(), ExecutionError> {
        use sea_orm::ExprTrait;
        use sea_orm::sea_query::Expr;
        treasury_messages::Entity::update_many()
            .col_expr(
                treasury_messages::Column::Sends,
                Expr::col(treasury_messages::Column::Sends).add(1),
            )
            .col_expr(
                treasury_messages::Column::UpdatedAt,
                Expr::value(self.now()),
            )
            .filter(treasury_messages::Column::MessageId.eq(message_id))
            .exec(self.instructions.db())
            .await?;
        Ok(())
    }
}

/// The message id of an instruction's one message: `FC` and the instruction id (34
/// characters, within ISO's 35).
pub fn message_id_for(instruction: Uuid) -> MessageId {
    MessageId::new(format!("FC{}", instruction.simple())).expect("34 alphanumeric characters")
}

/// The rail's name as stored and shown.
pub fn rail_name(rail: Rail) -> &'static str {
    match rail {
        Rail::IntraBank => "intra_bank",
        Rail::LargeValue => "large_value",
        Rail::Interbank24x7 => "interbank_24x7",
    }
}

async fn final_progress(
    instructions: &Instructions,
    id: Uuid,
    status: InstructionStatus,
) -> Result<BankProgress, ExecutionError> {
    let reason = || {
        let instructions = instructions.clone();
        async move {
            let history = instructions.history(id).await?;
            Ok::<_, TreasuryError>(
                history
                    .iter()
                    .rev()
                    .find_map(|e| e.detail.get("reason").and_then(|r| r.as_str()))
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    Ok(match status {
        InstructionStatus::Settled => BankProgress::Settled,
        InstructionStatus::Rejected => BankProgress::Rejected {
            reason: reason().await?,
        },
        InstructionStatus::Returned => BankProgress::Returned {
            reason: reason().await?,
        },
        InstructionStatus::PendingApproval | InstructionStatus::Approved => {
            return Err(TreasuryError::InvalidState {
                action: "send",
                status,
            }
            .into());
        }
    })
}
