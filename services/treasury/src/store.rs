//! Instructions in storage: creation by the maker, approval by checkers, and the ledger side
//! of each outcome.
//!
//! The ledger follows the instruction: a hold on the debtor's sub-account when the approval
//! chain completes; the hold posts when the bank settles and voids when the bank rejects; a
//! return after settlement is a new entry that reverses the payment. Every ledger write has
//! an idempotency key derived from the instruction, so a retry after a crash never moves
//! money twice; every status change is conditional on the status it leaves, so two racing
//! calls cannot both apply. Every step leaves a row in the audit trail.
//!
//! # Batches
//! An instruction may carry several payments (`lines`) from its debtor sub-account, each to
//! its own creditor with its own end-to-end id: approved as a whole (the policy sees the
//! total), held as one ledger hold with a debtor and a creditor leg per line, sent as one
//! pain.001 with one transaction per line, and concluded per line: a line the bank refuses
//! is released alone (the hold posts leg by leg), a line returned later is reversed alone.
//! The lines live in `treasury_instruction_lines`; the instruction row keeps the total and,
//! for listing, the first line's creditor. All lines go on one rail, so their creditors are
//! all at the debtor's bank or all at other banks.
//!
//! # Freezes
//! A freeze's creditor is the sub-account's frozen-funds ledger account
//! ([`Instructions::new_freeze`]); its hold, placed on approval like any other, stays pending
//! after the bank confirms the freeze (the instruction is then `settled`: carried out at the
//! bank), so the funds are not available in the ledger either. An unfreeze names the freeze
//! ([`Instructions::new_unfreeze`]), holds nothing, and voids the freeze's hold when the bank
//! confirms the release.

use chrono::{DateTime, NaiveDate, Utc};
use ledger::{Currency, Ledger, LedgerError, Money, NewEntry, PostHold, VoidHold};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, SqlErr,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use entities::{
    treasury_approvals, treasury_events, treasury_instruction_lines as instruction_lines,
    treasury_instructions, treasury_message_transactions as message_txs,
};

use crate::approval::{
    self, Approval, ApprovalError, ApprovalPolicy, ApprovalState, ContentDigest, Rejection, Role,
    Subject, UserId,
};
use crate::domain::{AccountNumber, BankCode, EndToEndId, InstructionKind};
use crate::submission::{Concluded, TransactionState};

/// The source of time; tests pass one they can move.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// One side of an instruction: the account at the bank and its mirror in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterparty {
    pub ledger_account: Uuid,
    pub name: String,
    pub account: AccountNumber,
    pub bank: BankCode,
}

/// What the maker asks for. All of it is approvable content: changing any field voids the
/// approvals given so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstruction {
    pub kind: InstructionKind,
    pub end_to_end_id: EndToEndId,
    pub debtor: Counterparty,
    pub creditor: Counterparty,
    pub amount: Money,
    pub purpose: Option<String>,
    pub remittance: Option<String>,
    pub requested_execution_date: NaiveDate,
    /// For an unfreeze: the freeze instruction it releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<Uuid>,
    /// For a batch: its payments, from the debtor, each to its own creditor (see
    /// [`Line`]); `amount` is their total and `creditor` the first line's. Empty for a single
    /// payment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<Line>,
}

/// One payment of a batch instruction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The end-to-end id of its transaction in the message.
    pub end_to_end_id: EndToEndId,
    pub creditor: Counterparty,
    pub amount: Money,
    #[serde(default)]
    pub remittance: Option<String>,
}

/// The most payments one batch may carry: they travel in one message.
pub const MAX_BATCH_LINES: usize = 1000;

/// Where an instruction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionStatus {
    PendingApproval,
    Approved,
    Rejected,
    Settled,
    Returned,
}

impl InstructionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            InstructionStatus::PendingApproval => "pending_approval",
            InstructionStatus::Approved => "approved",
            InstructionStatus::Rejected => "rejected",
            InstructionStatus::Settled => "settled",
            InstructionStatus::Returned => "returned",
        }
    }

    fn parse(text: &str) -> Result<Self, TreasuryError> {
        [
            InstructionStatus::PendingApproval,
            InstructionStatus::Approved,
            InstructionStatus::Rejected,
            InstructionStatus::Settled,
            InstructionStatus::Returned,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| TreasuryError::Corrupt(format!("unknown status {text:?}")))
    }
}

/// An instruction as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub id: Uuid,
    pub status: InstructionStatus,
    pub content: NewInstruction,
    pub maker: UserId,
    pub digest: ContentDigest,
    pub hold_entry_id: Option<Uuid>,
    pub rejection: Option<(String, String)>,
    pub created_at: DateTime<Utc>,
}

/// One transaction of an instruction's message (the instruction itself, or one tranche).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageTransaction {
    pub message_id: String,
    pub seq: i32,
    pub instruction_id: Uuid,
    pub end_to_end_id: EndToEndId,
    pub amount: Money,
    pub state: TransactionState,
    /// The bank's reason of a rejection or return.
    pub reason: Option<String>,
}

fn to_transaction(row: message_txs::Model) -> Result<MessageTransaction, TreasuryError> {
    let currency: Currency = row
        .currency
        .parse()
        .map_err(|e| TreasuryError::Corrupt(format!("transaction {}: {e}", row.end_to_end_id)))?;
    Ok(MessageTransaction {
        end_to_end_id: EndToEndId::new(row.end_to_end_id.clone())
            .map_err(|e| TreasuryError::Corrupt(e.to_string()))?,
        amount: Money::from_minor(row.amount_minor, currency),
        state: TransactionState::parse(&row.status)?,
        message_id: row.message_id,
        seq: row.seq,
        instruction_id: row.instruction_id,
        reason: row.reason,
    })
}

/// One line of an instruction's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub event: String,
    pub detail: serde_json::Value,
}

/// Why a treasury operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TreasuryError {
    #[error("instruction {0} does not exist")]
    NotFound(Uuid),
    #[error("idempotency key {0:?} was used before for a different instruction")]
    IdempotencyConflict(String),
    #[error("end-to-end id {0} belongs to another instruction")]
    DuplicateEndToEndId(String),
    #[error("cannot {action} an instruction that is {status:?}")]
    InvalidState {
        action: &'static str,
        status: InstructionStatus,
    },
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("storage: {0}")]
    Storage(#[from] DbErr),
    #[error("stored instruction is inconsistent: {0}")]
    Corrupt(String),
    #[error("{0}")]
    InvalidContent(String),
}

/// The treasury's instructions, over the database and the ledger.
#[derive(Clone)]
pub struct Instructions {
    db: DatabaseConnection,
    ledger: Ledger,
    policy: ApprovalPolicy,
    clock: Clock,
}

const ACTOR_BANK: &str = "bank";
/// The creditor name of a freeze: the sub-account's own frozen funds.
pub const FROZEN_FUNDS: &str = "Frozen funds";
const ACTOR_SYSTEM: &str = "system";

impl Instructions {
    pub fn new(ledger: Ledger, policy: ApprovalPolicy, clock: Clock) -> Self {
        Instructions {
            db: ledger.db().clone(),
            ledger,
            policy,
            clock,
        }
    }

    /// The approval policy in force: the latest stored version, or the configured one
    /// while none is stored.
    pub async fn policy(&self) -> Result<ApprovalPolicy, TreasuryError> {
        Ok(crate::policies::current(&self.db)
            .await?
            .map(|(policy, _)| policy)
            .unwrap_or_else(|| self.policy.clone()))
    }

    /// The configured policy, in force while none is stored.
    pub fn default_policy(&self) -> &ApprovalPolicy {
        &self.policy
    }

    /// The database the instructions live in.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        (self.clock)().trunc_subsecs(6)
    }

    /// Creates an instruction pending approval. The same idempotency key with the same
    /// content by the same maker returns the existing instruction.
    pub async fn create(
        &self,
        new: NewInstruction,
        maker: &UserId,
        idempotency_key: &str,
    ) -> Result<Instruction, TreasuryError> {
        self.check_content(&new).await?;
        let digest = ContentDigest::of(&new);
        let now = self.now();
        let id = Uuid::now_v7();
        let txn = entities::db::begin_write(&self.db).await?;
        let inserted = content_model(&new, id)
            .map(|mut m| {
                m.idempotency_key = Set(idempotency_key.to_owned());
                m.status = Set(InstructionStatus::PendingApproval.as_str().to_owned());
                m.maker = Set(maker.0.clone());
                m.content_digest = Set(digest.0.clone());
                m.hold_entry_id = Set(None);
                m.rejected_by = Set(None);
                m.rejection_reason = Set(None);
                m.created_at = Set(now);
                m.updated_at = Set(now);
                m
            })?
            .insert(&txn)
            .await;
        let inserted = match inserted {
            Ok(row) => insert_lines(&txn, id, &new.lines).await.map(|_| row),
            Err(err) => Err(err),
        };
        match inserted {
            Ok(_) => {
                event(
                    &txn,
                    id,
                    now,
                    &maker.0,
                    "created",
                    serde_json::to_value(&new).ok(),
                )
                .await?;
                txn.commit().await?;
                self.get(id).await
            }
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                txn.rollback().await?;
                let existing = treasury_instructions::Entity::find()
                    .filter(treasury_instructions::Column::IdempotencyKey.eq(idempotency_key))
                    .one(&self.db)
                    .await?;
                match existing {
                    Some(row) if row.content_digest == digest.0 && row.maker == maker.0 => {
                        self.get(row.id).await
                    }
                    Some(_) => Err(TreasuryError::IdempotencyConflict(
                        idempotency_key.to_owned(),
                    )),
                    None => Err(TreasuryError::DuplicateEndToEndId(
                        new.end_to_end_id.to_string(),
                    )),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Changes the content of an instruction still pending approval. Approvals given to the
    /// earlier content no longer count.
    pub async fn amend(
        &self,
        id: Uuid,
        new: NewInstruction,
        by: &UserId,
    ) -> Result<Instruction, TreasuryError> {
        self.check_content(&new).await?;
        let digest = ContentDigest::of(&new);
        let now = self.now();
        let txn = entities::db::begin_write(&self.db).await?;
        let mut model = content_model(&new, id)?;
        model.content_digest = Set(digest.0.clone());
        model.updated_at = Set(now);
        let updated = treasury_instructions::Entity::update_many()
            .set(model)
            .filter(treasury_instructions::Column::Id.eq(id))
            .filter(
                treasury_instructions::Column::Status
                    .eq(InstructionStatus::PendingApproval.as_str()),
            )
            .exec(&txn)
            .await;
        let updated = match updated {
            Ok(updated) if updated.rows_affected == 1 => {
                let replaced = match instruction_lines::Entity::delete_many()
                    .filter(instruction_lines::Column::InstructionId.eq(id))
                    .exec(&txn)
                    .await
                {
                    Ok(_) => insert_lines(&txn, id, &new.lines).await,
                    Err(err) => Err(err),
                };
                replaced.map(|_| updated)
            }
            other => other,
        };
        let updated = match updated {
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(TreasuryError::DuplicateEndToEndId(
                    new.end_to_end_id.to_string(),
                ));
            }
            other => other?,
        };
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            let current = self.get(id).await?;
            return Err(TreasuryError::InvalidState {
                action: "amend",
                status: current.status,
            });
        }
        let detail = serde_json::json!({ "content": new, "digest": digest.0 });
        event(&txn, id, now, &by.0, "amended", Some(detail)).await?;
        txn.commit().await?;
        self.get(id).await
    }

    pub async fn get(&self, id: Uuid) -> Result<Instruction, TreasuryError> {
        let row = treasury_instructions::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(TreasuryError::NotFound(id))?;
        let mut instruction = to_instruction(row)?;
        let lines = instruction_lines::Entity::find()
            .filter(instruction_lines::Column::InstructionId.eq(id))
            .order_by_asc(instruction_lines::Column::Seq)
            .all(&self.db)
            .await?;
        instruction.content.lines = lines.into_iter().map(to_line).collect::<Result<_, _>>()?;
        Ok(instruction)
    }

    /// The audit trail, oldest first.
    pub async fn history(&self, id: Uuid) -> Result<Vec<Event>, TreasuryError> {
        let rows = treasury_events::Entity::find()
            .filter(treasury_events::Column::InstructionId.eq(id))
            .order_by_asc(treasury_events::Column::At)
            .order_by_asc(treasury_events::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Event {
                at: r.at,
                actor: r.actor,
                event: r.event,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    /// Where the approval chain of an instruction stands now.
    pub async fn approval_state(&self, id: Uuid) -> Result<ApprovalState, TreasuryError> {
        let policy = self.policy().await?;
        let instruction = self.get(id).await?;
        let subject = self.subject(&instruction).await?;
        let approvals = self.approvals(id).await?;
        let rejection = rejection_of(&instruction);
        Ok(approval::evaluate(
            &policy,
            &subject,
            &approvals,
            rejection.as_ref(),
            self.now(),
        ))
    }

    /// Records an approval. When it completes the chain, the debtor's funds are held in the
    /// ledger and the instruction is approved. Calling again after a crash between the two
    /// finishes the job without a second hold.
    pub async fn approve(
        &self,
        id: Uuid,
        approver: &UserId,
        roles: &[Role],
    ) -> Result<Instruction, TreasuryError> {
        let now = self.now();
        let policy = self.policy().await?;
        let instruction = self.get(id).await?;
        if instruction.status != InstructionStatus::PendingApproval {
            return Err(TreasuryError::InvalidState {
                action: "approve",
                status: instruction.status,
            });
        }
        let subject = self.subject(&instruction).await?;
        let approvals = self.approvals(id).await?;
        match approval::approve(&policy, &subject, &approvals, None, approver, roles, now) {
            Ok(granted) => self.record_approval(id, &granted).await?,
            // The chain was complete before: a crash came between approval and hold.
            Err(ApprovalError::AlreadyApproved) => {}
            Err(err) => return Err(err.into()),
        }
        let approvals = self.approvals(id).await?;
        match approval::evaluate(&policy, &subject, &approvals, None, now) {
            ApprovalState::Approved => self.hold(&instruction, approver).await,
            ApprovalState::Pending { .. } | ApprovalState::Rejected { .. } => self.get(id).await,
        }
    }

    /// A checker rejects: the instruction ends.
    pub async fn reject(
        &self,
        id: Uuid,
        by: &UserId,
        roles: &[Role],
        reason: &str,
    ) -> Result<Instruction, TreasuryError> {
        let now = self.now();
        let instruction = self.get(id).await?;
        if instruction.status != InstructionStatus::PendingApproval {
            return Err(TreasuryError::InvalidState {
                action: "reject",
                status: instruction.status,
            });
        }
        let subject = self.subject(&instruction).await?;
        let policy = self.policy().await?;
        let rejection = approval::reject(&policy, &subject, None, by, roles, reason, now)?;
        self.finish_rejection(&instruction, &rejection, InstructionStatus::PendingApproval)
            .await
    }

    /// Ends an instruction whose approval chain did not complete in time. Nothing was held,
    /// so nothing is released.
    pub async fn expire(&self, id: Uuid) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status != InstructionStatus::PendingApproval {
            return Err(TreasuryError::InvalidState {
                action: "expire",
                status: instruction.status,
            });
        }
        let rejection = Rejection {
            by: UserId(ACTOR_SYSTEM.to_owned()),
            reason: "approval did not complete in time".to_owned(),
            at: self.now(),
        };
        self.finish_rejection(&instruction, &rejection, InstructionStatus::PendingApproval)
            .await
    }

    /// Finishes an approval whose chain is complete but whose hold was never placed (a
    /// crash came between the last approval and the hold). Anything else is returned as it
    /// stands.
    pub async fn resume_hold(&self, id: Uuid) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status != InstructionStatus::PendingApproval {
            return Ok(instruction);
        }
        match self.approval_state(id).await? {
            ApprovalState::Approved => {
                self.hold(&instruction, &UserId(ACTOR_SYSTEM.to_owned()))
                    .await
            }
            ApprovalState::Pending { .. } | ApprovalState::Rejected { .. } => Ok(instruction),
        }
    }

    /// The bank rejected an approved instruction (pain.002 RJCT): the hold is voided.
    pub async fn bank_rejected(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status == InstructionStatus::Rejected {
            return Ok(instruction);
        }
        let hold_id = self.expect_status(&instruction, InstructionStatus::Approved, "reject")?;
        let voided = if instruction.content.kind == InstructionKind::Unfreeze {
            Ok(None)
        } else {
            self.ledger
                .void_hold(VoidHold {
                    idempotency_key: format!("treasury:{id}:void"),
                    hold_id,
                })
                .await
                .map(Some)
        };
        match voided {
            // Another caller (the bank's callback and a worker's query, say) voided it a
            // moment ago; the conditional status change below settles who records it.
            Ok(_)
            | Err(LedgerError::HoldNotPending {
                status: ledger::HoldStatus::Voided,
                ..
            }) => {}
            Err(err) => return Err(err.into()),
        }
        let rejection = Rejection {
            by: UserId(ACTOR_BANK.to_owned()),
            reason: reason.to_owned(),
            at: self.now(),
        };
        self.finish_rejection(&instruction, &rejection, InstructionStatus::Approved)
            .await
    }

    /// The bank settled (pain.002 ACSC): the hold posts.
    pub async fn settled(&self, id: Uuid) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status == InstructionStatus::Settled {
            return Ok(instruction);
        }
        let hold_id = self.expect_status(&instruction, InstructionStatus::Approved, "settle")?;
        let posted = self
            .ledger
            .post_hold(PostHold::full(format!("treasury:{id}:settle"), hold_id))
            .await;
        match posted {
            // Posted a moment ago by another caller applying the same report.
            Ok(_)
            | Err(LedgerError::HoldNotPending {
                status: ledger::HoldStatus::Posted,
                ..
            }) => {}
            Err(err) => return Err(err.into()),
        }
        self.transition(
            &instruction,
            InstructionStatus::Approved,
            InstructionStatus::Settled,
            ACTOR_BANK,
            "settled",
            serde_json::json!({ "hold_entry_id": hold_id }),
        )
        .await
    }

    /// The creditor's bank returned a settled payment: new entries reverse what settled
    /// (every settled transaction of the instruction's message, or the instruction as a
    /// whole when it has no stored message).
    pub async fn returned(&self, id: Uuid, reason: &str) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status == InstructionStatus::Returned {
            return Ok(instruction);
        }
        self.expect_status(&instruction, InstructionStatus::Settled, "return")?;
        let rows = self.transactions(id).await?;
        if rows.is_empty() {
            let c = &instruction.content;
            let receipt = self
                .ledger
                .post_entry(
                    NewEntry::transfer(
                        format!("treasury:{id}:return"),
                        format!("treasury:{id}"),
                        c.creditor.ledger_account,
                        c.debtor.ledger_account,
                        c.amount.amount(),
                        c.amount.currency(),
                    )
                    .description(format!("return of {}: {reason}", c.end_to_end_id)),
                )
                .await?;
            return self
                .transition(
                    &instruction,
                    InstructionStatus::Settled,
                    InstructionStatus::Returned,
                    ACTOR_BANK,
                    "returned",
                    serde_json::json!({ "reason": reason, "entry_id": receipt.entry_id }),
                )
                .await;
        }
        for row in rows.iter().filter(|r| r.state == TransactionState::Settled) {
            self.mark_stored(
                &row.message_id,
                row.seq,
                TransactionState::Settled,
                TransactionState::Returned,
                Some(reason.to_owned()),
            )
            .await?;
        }
        self.conclude(id).await?;
        self.get(id).await
    }

    /// The content of a freeze of `amount` on a sub-account: the creditor is the
    /// sub-account's frozen-funds ledger account (opened on first use), at the bank the
    /// sub-account itself.
    #[allow(clippy::too_many_arguments)]
    pub async fn new_freeze(
        &self,
        sub_account: Counterparty,
        amount: Money,
        end_to_end_id: EndToEndId,
        purpose: Option<String>,
        reason: Option<String>,
        requested_execution_date: NaiveDate,
    ) -> Result<NewInstruction, TreasuryError> {
        let frozen = self.frozen_funds_account(&sub_account).await?;
        Ok(NewInstruction {
            kind: InstructionKind::Freeze,
            end_to_end_id,
            creditor: Counterparty {
                ledger_account: frozen,
                name: FROZEN_FUNDS.to_owned(),
                account: sub_account.account.clone(),
                bank: sub_account.bank.clone(),
            },
            debtor: sub_account,
            amount,
            purpose,
            remittance: reason,
            requested_execution_date,
            releases: None,
            lines: Vec::new(),
        })
    }

    /// The content of the unfreeze of a freeze in force.
    pub async fn new_unfreeze(
        &self,
        freeze: Uuid,
        end_to_end_id: EndToEndId,
        reason: Option<String>,
        requested_execution_date: NaiveDate,
    ) -> Result<NewInstruction, TreasuryError> {
        let frozen = self.get(freeze).await?;
        let c = frozen.content;
        Ok(NewInstruction {
            kind: InstructionKind::Unfreeze,
            end_to_end_id,
            debtor: c.debtor,
            creditor: c.creditor,
            amount: c.amount,
            purpose: c.purpose,
            remittance: reason,
            requested_execution_date,
            releases: Some(freeze),
            lines: Vec::new(),
        })
    }

    /// The ledger account that mirrors the funds frozen on a sub-account: its id is derived
    /// from the sub-account's, so opening it again finds it.
    pub async fn frozen_funds_account(
        &self,
        sub_account: &Counterparty,
    ) -> Result<Uuid, TreasuryError> {
        let mirror = self.ledger.account(sub_account.ledger_account).await?;
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("forecourt:treasury:frozen:{}", sub_account.ledger_account).as_bytes(),
        );
        let mut new = ledger::NewAccount::new(
            mirror.owner_org.clone(),
            format!("bank:frozen:{}", sub_account.account),
            format!("Funds frozen at the bank on {}", sub_account.account),
            mirror.currency,
            ledger::Side::Credit,
        );
        new.id = id;
        Ok(self.ledger.create_account(new).await?.id)
    }

    /// What a batch, a freeze and an unfreeze must look like.
    async fn check_content(&self, new: &NewInstruction) -> Result<(), TreasuryError> {
        let invalid = |m: &str| Err(TreasuryError::InvalidContent(m.to_owned()));
        if !new.lines.is_empty() {
            check_batch(new).map_err(TreasuryError::InvalidContent)?;
        }
        match new.kind {
            InstructionKind::SubAccountTransfer | InstructionKind::Payout => {
                if new.releases.is_some() {
                    return invalid("only an unfreeze releases a freeze");
                }
            }
            InstructionKind::Freeze | InstructionKind::Unfreeze if !new.lines.is_empty() => {
                return invalid("a freeze or an unfreeze is not a batch");
            }
            InstructionKind::Freeze => {
                if new.releases.is_some() {
                    return invalid("only an unfreeze releases a freeze");
                }
                if new.creditor.account != new.debtor.account
                    || new.creditor.bank != new.debtor.bank
                    || new.creditor.ledger_account != self.frozen_funds_account(&new.debtor).await?
                {
                    return invalid("a freeze is held on the sub-account's frozen funds");
                }
            }
            InstructionKind::Unfreeze => {
                let Some(freeze) = new.releases else {
                    return invalid("an unfreeze names the freeze it releases");
                };
                let frozen = match self.get(freeze).await {
                    Ok(frozen) => frozen,
                    Err(TreasuryError::NotFound(_)) => {
                        return invalid("the freeze to release does not exist");
                    }
                    Err(other) => return Err(other),
                };
                let f = &frozen.content;
                if f.kind != InstructionKind::Freeze {
                    return invalid("an unfreeze releases a freeze instruction");
                }
                if frozen.status != InstructionStatus::Settled {
                    return invalid("only a freeze in force at the bank can be released");
                }
                if f.debtor != new.debtor || f.creditor != new.creditor || f.amount != new.amount {
                    return invalid("an unfreeze releases the whole freeze, on its sub-account");
                }
                let released = treasury_instructions::Entity::find()
                    .filter(treasury_instructions::Column::ReleasesInstructionId.eq(freeze))
                    .filter(
                        treasury_instructions::Column::Status
                            .ne(InstructionStatus::Rejected.as_str()),
                    )
                    .count(&self.db)
                    .await?;
                if released > 0 {
                    return invalid("another unfreeze releases this freeze already");
                }
            }
        }
        Ok(())
    }

    /// The bank froze the amount: the freeze is in force, its hold stays pending.
    pub async fn frozen(&self, id: Uuid) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(id).await?;
        if instruction.status == InstructionStatus::Settled {
            return Ok(instruction);
        }
        let hold_id = self.expect_status(&instruction, InstructionStatus::Approved, "freeze")?;
        self.transition(
            &instruction,
            InstructionStatus::Approved,
            InstructionStatus::Settled,
            ACTOR_BANK,
            "frozen",
            serde_json::json!({ "hold_entry_id": hold_id }),
        )
        .await
    }

    /// The bank released a freeze: the freeze's hold is voided (the funds are available
    /// again) and the unfreeze is carried out.
    pub async fn released(&self, unfreeze: Uuid) -> Result<Instruction, TreasuryError> {
        let instruction = self.get(unfreeze).await?;
        if instruction.status == InstructionStatus::Settled {
            return Ok(instruction);
        }
        self.expect_status(&instruction, InstructionStatus::Approved, "unfreeze")?;
        let freeze_id = instruction.content.releases.ok_or_else(|| {
            TreasuryError::Corrupt(format!("unfreeze {unfreeze} names no freeze"))
        })?;
        let freeze = self.get(freeze_id).await?;
        let hold_id = freeze
            .hold_entry_id
            .ok_or_else(|| TreasuryError::Corrupt(format!("freeze {freeze_id} has no hold")))?;
        let voided = self
            .ledger
            .void_hold(VoidHold {
                idempotency_key: format!("treasury:{freeze_id}:unfreeze"),
                hold_id,
            })
            .await;
        match voided {
            Ok(receipt) => {
                if !receipt.replayed {
                    let txn = entities::db::begin_write(&self.db).await?;
                    let detail =
                        serde_json::json!({ "by": unfreeze, "entry_id": receipt.entry_id });
                    event(
                        &txn,
                        freeze_id,
                        self.now(),
                        ACTOR_BANK,
                        "released",
                        Some(detail),
                    )
                    .await?;
                    txn.commit().await?;
                }
            }
            Err(LedgerError::HoldNotPending {
                status: ledger::HoldStatus::Voided,
                ..
            }) => {}
            Err(err) => return Err(err.into()),
        }
        self.transition(
            &instruction,
            InstructionStatus::Approved,
            InstructionStatus::Settled,
            ACTOR_BANK,
            "unfrozen",
            serde_json::json!({ "releases": freeze_id, "hold_entry_id": hold_id }),
        )
        .await
    }

    /// The transactions of an instruction's message, in message order; none before the
    /// message is written (or for an instruction sent outside the executor).
    pub async fn transactions(&self, id: Uuid) -> Result<Vec<MessageTransaction>, TreasuryError> {
        let rows = message_txs::Entity::find()
            .filter(message_txs::Column::InstructionId.eq(id))
            .order_by_asc(message_txs::Column::MessageId)
            .order_by_asc(message_txs::Column::Seq)
            .all(&self.db)
            .await?;
        rows.into_iter().map(to_transaction).collect()
    }

    /// The stored transaction with this end-to-end id, if any.
    pub async fn transaction_by_end_to_end_id(
        &self,
        e2e: &str,
    ) -> Result<Option<MessageTransaction>, TreasuryError> {
        message_txs::Entity::find()
            .filter(message_txs::Column::EndToEndId.eq(e2e))
            .one(&self.db)
            .await?
            .map(to_transaction)
            .transpose()
    }

    /// Records what the bank says about one transaction. Only forward moves apply: pending
    /// to settled, rejected or returned, settled to returned; anything else (a report
    /// delivered late, twice, or contradicting a final status) changes nothing.
    pub(crate) async fn mark_transaction(
        &self,
        stored: &message_txs::Model,
        current: TransactionState,
        next: TransactionState,
        reason: Option<String>,
    ) -> Result<(), TreasuryError> {
        use TransactionState as T;
        let allowed = matches!(
            (current, next),
            (T::Pending, T::Settled | T::Rejected | T::Returned) | (T::Settled, T::Returned)
        );
        if !allowed {
            if current != next {
                tracing::warn!(
                    end_to_end_id = %stored.end_to_end_id,
                    from = current.as_str(),
                    to = next.as_str(),
                    "the bank reports a status that contradicts the one recorded; kept"
                );
            }
            return Ok(());
        }
        self.mark_stored(&stored.message_id, stored.seq, current, next, reason)
            .await
    }

    async fn mark_stored(
        &self,
        message_id: &str,
        seq: i32,
        current: TransactionState,
        next: TransactionState,
        reason: Option<String>,
    ) -> Result<(), TreasuryError> {
        message_txs::Entity::update_many()
            .set(message_txs::ActiveModel {
                status: Set(next.as_str().to_owned()),
                reason: Set(reason),
                updated_at: Set(self.now()),
                ..Default::default()
            })
            .filter(message_txs::Column::MessageId.eq(message_id))
            .filter(message_txs::Column::Seq.eq(seq))
            .filter(message_txs::Column::Status.eq(current.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The bank reports one transaction returned after settlement (a camt.054 reversal):
    /// recorded, reversed, and the instruction concluded.
    pub async fn transaction_returned(
        &self,
        transaction: &MessageTransaction,
        reason: &str,
    ) -> Result<Instruction, TreasuryError> {
        if transaction.state == TransactionState::Pending {
            // Settled before it came back, whatever the reports said so far.
            self.mark_stored(
                &transaction.message_id,
                transaction.seq,
                TransactionState::Pending,
                TransactionState::Settled,
                None,
            )
            .await?;
        }
        self.mark_stored(
            &transaction.message_id,
            transaction.seq,
            TransactionState::Settled,
            TransactionState::Returned,
            Some(reason.to_owned()),
        )
        .await?;
        self.conclude(transaction.instruction_id).await?;
        self.get(transaction.instruction_id).await
    }

    /// Brings an instruction in line with its transactions once none is pending: the hold
    /// posts in full when all settled, in part when some did, is voided when none did;
    /// returned transactions are reversed, and the instruction is returned when everything
    /// that settled has come back. Safe to run again at any point.
    pub async fn conclude(&self, id: Uuid) -> Result<Concluded, TreasuryError> {
        let instruction = self.get(id).await?;
        let rows = self.transactions(id).await?;
        if rows.is_empty() || rows.iter().any(|r| r.state == TransactionState::Pending) {
            return Ok(match instruction.status {
                InstructionStatus::Settled => Concluded::Settled,
                InstructionStatus::Rejected => Concluded::Rejected,
                InstructionStatus::Returned => Concluded::Returned,
                InstructionStatus::PendingApproval | InstructionStatus::Approved => {
                    Concluded::InProgress
                }
            });
        }
        let refused: Vec<serde_json::Value> = rows
            .iter()
            .filter(|r| r.state == TransactionState::Rejected)
            .map(|r| serde_json::json!({ "end_to_end_id": r.end_to_end_id, "amount": r.amount, "reason": r.reason }))
            .collect();
        let settled: Vec<&MessageTransaction> = rows.iter().filter(|r| r.state.settled()).collect();
        if instruction.status == InstructionStatus::Approved {
            if settled.is_empty() {
                let reasons: Vec<String> =
                    rows.iter()
                        .filter_map(|r| r.reason.clone())
                        .fold(Vec::new(), |mut all, r| {
                            if !all.contains(&r) {
                                all.push(r);
                            }
                            all
                        });
                let reason = if reasons.is_empty() {
                    "rejected by the bank".to_owned()
                } else {
                    reasons.join("; ")
                };
                self.bank_rejected(id, &reason).await?;
            } else if settled.len() == rows.len() {
                self.settled(id).await?;
            } else {
                let amount = settled.iter().try_fold(
                    Money::zero(instruction.content.amount.currency()),
                    |sum, r| sum.checked_add(r.amount),
                );
                let amount = amount.map_err(|e| TreasuryError::Corrupt(e.to_string()))?;
                self.settled_in_part(&instruction, amount, &rows, refused)
                    .await?;
            }
        }
        let instruction = self.get(id).await?;
        let returned: Vec<&MessageTransaction> = rows
            .iter()
            .filter(|r| r.state == TransactionState::Returned)
            .collect();
        if !returned.is_empty() && instruction.status == InstructionStatus::Settled {
            let mut entries = Vec::new();
            for row in &returned {
                entries.push(self.reverse(&instruction, row).await?);
            }
            if returned.len() == settled.len() {
                let reason = returned
                    .iter()
                    .filter_map(|r| r.reason.clone())
                    .next()
                    .unwrap_or_else(|| "returned".into());
                self.transition(
                    &instruction,
                    InstructionStatus::Settled,
                    InstructionStatus::Returned,
                    ACTOR_BANK,
                    "returned",
                    serde_json::json!({ "reason": reason, "entry_ids": entries }),
                )
                .await?;
            }
        }
        Ok(match self.get(id).await?.status {
            InstructionStatus::Settled => Concluded::Settled,
            InstructionStatus::Rejected => Concluded::Rejected,
            InstructionStatus::Returned => Concluded::Returned,
            InstructionStatus::PendingApproval | InstructionStatus::Approved => {
                Concluded::InProgress
            }
        })
    }

    /// Reverses one returned transaction (idempotent: one entry per transaction).
    async fn reverse(
        &self,
        instruction: &Instruction,
        row: &MessageTransaction,
    ) -> Result<Uuid, TreasuryError> {
        let c = &instruction.content;
        let id = instruction.id;
        let creditor = c
            .lines
            .iter()
            .find(|l| l.end_to_end_id == row.end_to_end_id)
            .map(|l| &l.creditor)
            .unwrap_or(&c.creditor);
        // The instruction's own end-to-end id: the key a whole return has always had.
        let key = if row.end_to_end_id == c.end_to_end_id {
            format!("treasury:{id}:return")
        } else {
            format!("treasury:{id}:return:{}", row.end_to_end_id)
        };
        let receipt = self
            .ledger
            .post_entry(
                NewEntry::transfer(
                    key,
                    format!("treasury:{id}"),
                    creditor.ledger_account,
                    c.debtor.ledger_account,
                    row.amount.amount(),
                    row.amount.currency(),
                )
                .description(format!(
                    "return of {}: {}",
                    row.end_to_end_id,
                    row.reason.clone().unwrap_or_default()
                )),
            )
            .await?;
        if !receipt.replayed {
            let txn = entities::db::begin_write(&self.db).await?;
            let detail = serde_json::json!({
                "end_to_end_id": row.end_to_end_id,
                "amount": row.amount,
                "reason": row.reason,
                "entry_id": receipt.entry_id,
            });
            event(
                &txn,
                id,
                self.now(),
                ACTOR_BANK,
                "transaction_returned",
                Some(detail),
            )
            .await?;
            txn.commit().await?;
        }
        Ok(receipt.entry_id)
    }

    /// Some transactions settled and the others were refused: the hold posts for what
    /// settled and releases the rest.
    async fn settled_in_part(
        &self,
        instruction: &Instruction,
        amount: Money,
        rows: &[MessageTransaction],
        refused: Vec<serde_json::Value>,
    ) -> Result<Instruction, TreasuryError> {
        let id = instruction.id;
        let hold_id = self.expect_status(instruction, InstructionStatus::Approved, "settle")?;
        let key = format!("treasury:{id}:settle");
        let lines = &instruction.content.lines;
        let post = if lines.is_empty() {
            // Tranches to one creditor: the settled amount of the two-leg hold.
            PostHold::partial(key, hold_id, amount.amount())
        } else {
            // A batch: the legs of the lines that settled, the others released.
            let mut legs = Vec::with_capacity(lines.len() * 2);
            for line in lines {
                let settled = rows
                    .iter()
                    .any(|r| r.end_to_end_id == line.end_to_end_id && r.state.settled());
                let amount = if settled {
                    line.amount.amount()
                } else {
                    rust_decimal::Decimal::ZERO
                };
                legs.extend([amount, amount]);
            }
            PostHold::by_legs(key, hold_id, legs)
        };
        let posted = self.ledger.post_hold(post).await;
        match posted {
            Ok(_)
            | Err(LedgerError::HoldNotPending {
                status: ledger::HoldStatus::Posted,
                ..
            }) => {}
            Err(err) => return Err(err.into()),
        }
        self.transition(
            instruction,
            InstructionStatus::Approved,
            InstructionStatus::Settled,
            ACTOR_BANK,
            "settled_in_part",
            serde_json::json!({
                "hold_entry_id": hold_id,
                "settled": amount,
                "of": instruction.content.amount,
                "refused": refused,
            }),
        )
        .await
    }

    fn expect_status(
        &self,
        instruction: &Instruction,
        status: InstructionStatus,
        action: &'static str,
    ) -> Result<Uuid, TreasuryError> {
        if instruction.status != status {
            return Err(TreasuryError::InvalidState {
                action,
                status: instruction.status,
            });
        }
        match (status, instruction.hold_entry_id) {
            (InstructionStatus::Approved, Some(hold)) => Ok(hold),
            // An unfreeze holds nothing.
            (InstructionStatus::Approved, None)
                if instruction.content.kind == InstructionKind::Unfreeze =>
            {
                Ok(Uuid::nil())
            }
            (InstructionStatus::Approved, None) => Err(TreasuryError::Corrupt(format!(
                "approved instruction {} has no hold",
                instruction.id
            ))),
            _ => Ok(Uuid::nil()),
        }
    }

    async fn hold(
        &self,
        instruction: &Instruction,
        by: &UserId,
    ) -> Result<Instruction, TreasuryError> {
        let c = &instruction.content;
        let id = instruction.id;
        if c.kind == InstructionKind::Unfreeze {
            return self.mark_approved(id, None, by).await;
        }
        let mut entry = NewEntry::transfer(
            format!("treasury:{id}:hold"),
            format!("treasury:{id}"),
            c.debtor.ledger_account,
            c.creditor.ledger_account,
            c.amount.amount(),
            c.amount.currency(),
        )
        .description(format!("bank instruction {}", c.end_to_end_id))
        .as_hold(None);
        if !c.lines.is_empty() {
            // A debtor and a creditor leg per line, in line order: each line posts or is
            // released on its own.
            entry.postings = c
                .lines
                .iter()
                .flat_map(|l| {
                    [
                        ledger::PostingInput::debit(
                            c.debtor.ledger_account,
                            l.amount.amount(),
                            l.amount.currency(),
                        ),
                        ledger::PostingInput::credit(
                            l.creditor.ledger_account,
                            l.amount.amount(),
                            l.amount.currency(),
                        ),
                    ]
                })
                .collect();
        }
        let receipt = self.ledger.post_entry(entry).await?;
        self.mark_approved(id, Some(receipt.entry_id), by).await
    }

    async fn mark_approved(
        &self,
        id: Uuid,
        hold: Option<Uuid>,
        by: &UserId,
    ) -> Result<Instruction, TreasuryError> {
        let now = self.now();
        let txn = entities::db::begin_write(&self.db).await?;
        let updated = treasury_instructions::Entity::update_many()
            .set(treasury_instructions::ActiveModel {
                status: Set(InstructionStatus::Approved.as_str().to_owned()),
                hold_entry_id: Set(hold),
                updated_at: Set(now),
                ..Default::default()
            })
            .filter(treasury_instructions::Column::Id.eq(id))
            .filter(
                treasury_instructions::Column::Status
                    .eq(InstructionStatus::PendingApproval.as_str()),
            )
            .exec(&txn)
            .await?;
        if updated.rows_affected == 1 {
            match hold {
                Some(hold) => {
                    let detail = serde_json::json!({ "hold_entry_id": hold });
                    event(&txn, id, now, &by.0, "approved_and_held", Some(detail)).await?;
                }
                None => event(&txn, id, now, &by.0, "approved_nothing_held", None).await?,
            }
        }
        txn.commit().await?;
        self.get(id).await
    }

    async fn record_approval(&self, id: Uuid, granted: &Approval) -> Result<(), TreasuryError> {
        let txn = entities::db::begin_write(&self.db).await?;
        let inserted = treasury_approvals::ActiveModel {
            id: Set(Uuid::now_v7()),
            instruction_id: Set(id),
            approver: Set(granted.approver.0.clone()),
            role: Set(granted.role.0.clone()),
            step: Set(i32::try_from(granted.step)
                .map_err(|_| TreasuryError::Corrupt("approval chain longer than i32".into()))?),
            content_digest: Set(granted.digest.0.clone()),
            approved_at: Set(granted.approved_at),
            expires_at: Set(granted.expires_at),
        }
        .insert(&txn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(ApprovalError::AlreadyApprovedBy(granted.approver.clone()).into());
            }
            Err(err) => return Err(err.into()),
        }
        let detail = serde_json::json!({
            "step": granted.step,
            "role": granted.role.0,
            "digest": granted.digest.0,
            "expires_at": granted.expires_at,
        });
        event(
            &txn,
            id,
            granted.approved_at,
            &granted.approver.0,
            "approved",
            Some(detail),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn finish_rejection(
        &self,
        instruction: &Instruction,
        rejection: &Rejection,
        from: InstructionStatus,
    ) -> Result<Instruction, TreasuryError> {
        let txn = entities::db::begin_write(&self.db).await?;
        let updated = treasury_instructions::Entity::update_many()
            .set(treasury_instructions::ActiveModel {
                status: Set(InstructionStatus::Rejected.as_str().to_owned()),
                rejected_by: Set(Some(rejection.by.0.clone())),
                rejection_reason: Set(Some(rejection.reason.clone())),
                updated_at: Set(rejection.at),
                ..Default::default()
            })
            .filter(treasury_instructions::Column::Id.eq(instruction.id))
            .filter(treasury_instructions::Column::Status.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            let current = self.get(instruction.id).await?;
            return match current.status {
                InstructionStatus::Rejected => Ok(current),
                status => Err(TreasuryError::InvalidState {
                    action: "reject",
                    status,
                }),
            };
        }
        let detail = serde_json::json!({ "reason": rejection.reason });
        event(
            &txn,
            instruction.id,
            rejection.at,
            &rejection.by.0,
            "rejected",
            Some(detail),
        )
        .await?;
        txn.commit().await?;
        self.get(instruction.id).await
    }

    async fn transition(
        &self,
        instruction: &Instruction,
        from: InstructionStatus,
        to: InstructionStatus,
        actor: &str,
        name: &str,
        detail: serde_json::Value,
    ) -> Result<Instruction, TreasuryError> {
        let now = self.now();
        let txn = entities::db::begin_write(&self.db).await?;
        let updated = treasury_instructions::Entity::update_many()
            .set(treasury_instructions::ActiveModel {
                status: Set(to.as_str().to_owned()),
                updated_at: Set(now),
                ..Default::default()
            })
            .filter(treasury_instructions::Column::Id.eq(instruction.id))
            .filter(treasury_instructions::Column::Status.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 1 {
            event(&txn, instruction.id, now, actor, name, Some(detail)).await?;
        }
        txn.commit().await?;
        let current = self.get(instruction.id).await?;
        if current.status != to {
            return Err(TreasuryError::InvalidState {
                action: "change",
                status: current.status,
            });
        }
        Ok(current)
    }

    async fn approvals(&self, id: Uuid) -> Result<Vec<Approval>, TreasuryError> {
        let rows = treasury_approvals::Entity::find()
            .filter(treasury_approvals::Column::InstructionId.eq(id))
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Approval {
                    approver: UserId(r.approver),
                    step: usize::try_from(r.step)
                        .map_err(|_| TreasuryError::Corrupt("negative approval step".into()))?,
                    role: Role(r.role),
                    digest: ContentDigest(r.content_digest),
                    approved_at: r.approved_at,
                    expires_at: r.expires_at,
                })
            })
            .collect()
    }

    /// The policy's view of an instruction: a creditor is new when no earlier instruction to
    /// the same account at the same bank has settled.
    async fn subject(&self, instruction: &Instruction) -> Result<Subject, TreasuryError> {
        let c = &instruction.content;
        let creditors: Vec<&Counterparty> = if c.lines.is_empty() {
            vec![&c.creditor]
        } else {
            c.lines.iter().map(|l| &l.creditor).collect()
        };
        // A batch has a new creditor when any of its lines has.
        let mut paid_before = u64::MAX;
        for creditor in creditors {
            let single = treasury_instructions::Entity::find()
                .filter(treasury_instructions::Column::CreditorBank.eq(creditor.bank.as_str()))
                .filter(
                    treasury_instructions::Column::CreditorAccount.eq(creditor.account.as_str()),
                )
                .filter(
                    treasury_instructions::Column::Status.eq(InstructionStatus::Settled.as_str()),
                )
                .filter(treasury_instructions::Column::Id.ne(instruction.id))
                .count(&self.db)
                .await?;
            let in_batches = message_txs::Entity::find()
                .filter(message_txs::Column::Status.eq(TransactionState::Settled.as_str()))
                .filter(message_txs::Column::InstructionId.ne(instruction.id))
                .filter(
                    message_txs::Column::EndToEndId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(instruction_lines::Column::EndToEndId)
                            .from(instruction_lines::Entity)
                            .and_where(
                                instruction_lines::Column::CreditorBank.eq(creditor.bank.as_str()),
                            )
                            .and_where(
                                instruction_lines::Column::CreditorAccount
                                    .eq(creditor.account.as_str()),
                            )
                            .to_owned(),
                    ),
                )
                .count(&self.db)
                .await?;
            paid_before = paid_before.min(single + in_batches);
        }
        let moves_money = matches!(
            c.kind,
            InstructionKind::SubAccountTransfer | InstructionKind::Payout
        );
        Ok(Subject {
            kind: c.kind,
            amount: c.amount,
            new_creditor: moves_money && paid_before == 0,
            maker: instruction.maker.clone(),
            digest: instruction.digest.clone(),
        })
    }
}

fn rejection_of(instruction: &Instruction) -> Option<Rejection> {
    instruction
        .rejection
        .as_ref()
        .map(|(by, reason)| Rejection {
            by: UserId(by.clone()),
            reason: reason.clone(),
            at: instruction.created_at,
        })
}

/// The content columns of an instruction.
fn content_model(
    new: &NewInstruction,
    id: Uuid,
) -> Result<treasury_instructions::ActiveModel, TreasuryError> {
    let amount_minor = new
        .amount
        .minor_units()
        .map_err(|e| TreasuryError::Corrupt(e.to_string()))?;
    Ok(treasury_instructions::ActiveModel {
        id: Set(id),
        kind: Set(new.kind.as_str().to_owned()),
        end_to_end_id: Set(new.end_to_end_id.to_string()),
        debtor_ledger_account_id: Set(new.debtor.ledger_account),
        debtor_name: Set(new.debtor.name.clone()),
        debtor_account: Set(new.debtor.account.to_string()),
        debtor_bank: Set(new.debtor.bank.to_string()),
        creditor_ledger_account_id: Set(new.creditor.ledger_account),
        creditor_name: Set(new.creditor.name.clone()),
        creditor_account: Set(new.creditor.account.to_string()),
        creditor_bank: Set(new.creditor.bank.to_string()),
        amount_minor: Set(amount_minor),
        currency: Set(new.amount.currency().code().to_owned()),
        purpose: Set(new.purpose.clone()),
        remittance: Set(new.remittance.clone()),
        requested_execution_date: Set(new.requested_execution_date.to_string()),
        releases_instruction_id: Set(new.releases),
        ..Default::default()
    })
}

fn to_instruction(row: treasury_instructions::Model) -> Result<Instruction, TreasuryError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        TreasuryError::Corrupt(format!("instruction {}: {what}: {e}", row.id))
    };
    let currency: Currency = row.currency.parse().map_err(|e| corrupt("currency", &e))?;
    let kind = [
        InstructionKind::SubAccountTransfer,
        InstructionKind::Payout,
        InstructionKind::Freeze,
        InstructionKind::Unfreeze,
    ]
    .into_iter()
    .find(|k| k.as_str() == row.kind)
    .ok_or_else(|| corrupt("kind", &row.kind))?;
    let party = |ledger_account, name: &str, account: &str, bank: &str| {
        Ok::<_, TreasuryError>(Counterparty {
            ledger_account,
            name: name.to_owned(),
            account: AccountNumber::new(account).map_err(|e| corrupt("account", &e))?,
            bank: BankCode::new(bank).map_err(|e| corrupt("bank", &e))?,
        })
    };
    let content = NewInstruction {
        kind,
        end_to_end_id: EndToEndId::new(row.end_to_end_id.clone())
            .map_err(|e| corrupt("end-to-end id", &e))?,
        debtor: party(
            row.debtor_ledger_account_id,
            &row.debtor_name,
            &row.debtor_account,
            &row.debtor_bank,
        )?,
        creditor: party(
            row.creditor_ledger_account_id,
            &row.creditor_name,
            &row.creditor_account,
            &row.creditor_bank,
        )?,
        amount: Money::from_minor(row.amount_minor, currency),
        purpose: row.purpose.clone(),
        remittance: row.remittance.clone(),
        requested_execution_date: row
            .requested_execution_date
            .parse()
            .map_err(|e| corrupt("requested execution date", &e))?,
        releases: row.releases_instruction_id,
        lines: Vec::new(),
    };
    Ok(Instruction {
        id: row.id,
        status: InstructionStatus::parse(&row.status)?,
        content,
        maker: UserId(row.maker),
        digest: ContentDigest(row.content_digest),
        hold_entry_id: row.hold_entry_id,
        rejection: row.rejected_by.zip(row.rejection_reason),
        created_at: row.created_at,
    })
}

async fn event(
    db: &impl ConnectionTrait,
    instruction_id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
    name: &str,
    detail: Option<serde_json::Value>,
) -> Result<(), DbErr> {
    treasury_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        instruction_id: Set(instruction_id),
        at: Set(at),
        actor: Set(actor.to_owned()),
        event: Set(name.to_owned()),
        detail: Set(detail.unwrap_or(serde_json::Value::Null).to_string()),
    }
    .insert(db)
    .await
    .map(|_| ())
}

async fn insert_lines(db: &impl ConnectionTrait, id: Uuid, lines: &[Line]) -> Result<(), DbErr> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let amount_minor = line
            .amount
            .minor_units()
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        rows.push(instruction_lines::ActiveModel {
            instruction_id: Set(id),
            seq: Set(i32::try_from(n + 1).map_err(|e| DbErr::Custom(e.to_string()))?),
            end_to_end_id: Set(line.end_to_end_id.to_string()),
            creditor_ledger_account_id: Set(line.creditor.ledger_account),
            creditor_name: Set(line.creditor.name.clone()),
            creditor_account: Set(line.creditor.account.to_string()),
            creditor_bank: Set(line.creditor.bank.to_string()),
            amount_minor: Set(amount_minor),
            currency: Set(line.amount.currency().code().to_owned()),
            remittance: Set(line.remittance.clone()),
        });
    }
    instruction_lines::Entity::insert_many(rows)
        .exec(db)
        .await
        .map(|_| ())
}

fn to_line(row: instruction_lines::Model) -> Result<Line, TreasuryError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        TreasuryError::Corrupt(format!(
            "line {} of {}: {what}: {e}",
            row.seq, row.instruction_id
        ))
    };
    let currency: Currency = row.currency.parse().map_err(|e| corrupt("currency", &e))?;
    Ok(Line {
        end_to_end_id: EndToEndId::new(row.end_to_end_id.clone())
            .map_err(|e| corrupt("end-to-end id", &e))?,
        creditor: Counterparty {
            ledger_account: row.creditor_ledger_account_id,
            name: row.creditor_name.clone(),
            account: AccountNumber::new(row.creditor_account.clone())
                .map_err(|e| corrupt("account", &e))?,
            bank: BankCode::new(row.creditor_bank.clone()).map_err(|e| corrupt("bank", &e))?,
        },
        amount: Money::from_minor(row.amount_minor, currency),
        remittance: row.remittance,
    })
}

/// What a batch must look like: at least two lines, within the message limit, their total
/// the instruction's amount, the first line's creditor the instruction's, distinct end-to-end
/// ids, one currency, and one rail for all (every creditor at the debtor's bank, or none).
fn check_batch(new: &NewInstruction) -> Result<(), String> {
    let lines = &new.lines;
    if lines.len() < 2 || lines.len() > MAX_BATCH_LINES {
        return Err(format!("a batch carries 2 to {MAX_BATCH_LINES} payments"));
    }
    if !matches!(
        new.kind,
        InstructionKind::SubAccountTransfer | InstructionKind::Payout
    ) {
        return Err("a batch carries payments only".into());
    }
    let currency = new.amount.currency();
    let mut total = Money::zero(currency);
    let mut ids = std::collections::BTreeSet::new();
    ids.insert(new.end_to_end_id.as_str());
    for line in lines {
        if line.amount.currency() != currency || !line.amount.is_positive() {
            return Err("every payment of a batch is positive, in the batch's currency".into());
        }
        total = total.checked_add(line.amount).map_err(|e| e.to_string())?;
        if !ids.insert(line.end_to_end_id.as_str()) {
            return Err(format!(
                "end-to-end id {} appears twice in the batch",
                line.end_to_end_id
            ));
        }
        if line.creditor.ledger_account == new.debtor.ledger_account {
            return Err("a payment of the batch goes to the debtor itself".into());
        }
    }
    if total != new.amount {
        return Err(format!(
            "the batch's amount {} is not the total of its payments {}",
            new.amount.amount(),
            total.amount()
        ));
    }
    if lines[0].creditor != new.creditor {
        return Err("the batch's creditor is its first payment's".into());
    }
    let here = lines
        .iter()
        .filter(|l| l.creditor.bank == new.debtor.bank)
        .count();
    if here != 0 && here != lines.len() {
        return Err(
            "one batch, one rail: its creditors are all at the debtor's bank or all elsewhere"
                .into(),
        );
    }
    Ok(())
}
