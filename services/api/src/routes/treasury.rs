//! Treasury: instructions to the custodial bank, maker-checker approval, the rails, and the
//! bank's callbacks.
//!
//! An instruction belongs to the organisation that owns its debtor sub-account; a caller sees
//! and acts on the instructions of their subtree. Makers create, checkers approve or reject
//! (never their own), and the `bank_instruction` workflow does the rest. The bank's signed
//! callbacks arrive unauthenticated by bearer token: the bank's signature is their proof.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use treasury::approval::{ApprovalError, ApprovalState, UserId};
use treasury::domain::{AccountNumber, BankCode, EndToEndId, InstructionKind};
use treasury::execution::Executor;
use treasury::signing::Verifier;
use treasury::store::{
    Counterparty, Instruction, InstructionStatus, NewInstruction, TreasuryError,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use workflows::bank_instruction::{
    BankInstruction, BankInstructionInput, SIGNAL_APPROVAL, SIGNAL_BANK_STATUS, SIGNAL_RETURNED,
    Timing,
};
use workflows::{Engine, Workflow};

use entities::{
    organisations, treasury_external_accounts, treasury_messages, treasury_sub_accounts,
};

use crate::directory::org_ref;
use crate::error::responses::*;
use crate::error::{ApiError, FieldError, ProblemKind};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgRef, Subject, authorize};
use crate::routes::subtree;
use crate::state::AppState;

/// What the treasury area needs besides the database.
pub struct TreasuryContext {
    /// Instructions, rails and the bank client.
    pub executor: Arc<Executor>,
    /// Starts and signals `bank_instruction` instances.
    pub engine: Engine,
    /// Verifies the bank's signature on its callbacks.
    pub bank: Verifier,
    /// How long the workflow waits for people and the bank.
    pub timing: Timing,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sub_accounts))
        .routes(routes!(list_external_accounts, register_external_account))
        .routes(routes!(get_calendar))
        .routes(routes!(list_instructions, create_instruction))
        .routes(routes!(get_instruction))
        .routes(routes!(approve_instruction))
        .routes(routes!(reject_instruction))
        .routes(routes!(get_rails))
        .routes(routes!(import_statement))
        .routes(routes!(list_exceptions))
        .routes(routes!(resolve_exception))
        .routes(routes!(get_policy, set_policy))
}

/// The bank's callbacks: outside authentication and idempotency (the bank signs them, and
/// applying one twice changes nothing).
pub fn bank_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bank_callback))
}

fn context(state: &AppState) -> Result<&Arc<TreasuryContext>, ApiError> {
    state.treasury.as_ref().ok_or_else(|| {
        ApiError::new(
            ProblemKind::Unavailable,
            "treasury is not configured on this deployment (no custodial bank connection)",
        )
    })
}

fn treasury_error(err: TreasuryError) -> ApiError {
    match err {
        TreasuryError::NotFound(_) => ApiError::not_found("instruction"),
        TreasuryError::IdempotencyConflict(_) => ApiError::new(
            ProblemKind::IdempotencyKeyReused,
            "this Idempotency-Key created another instruction",
        ),
        TreasuryError::DuplicateEndToEndId(id) => {
            ApiError::conflict(format!("end-to-end id {id} belongs to another instruction"))
        }
        TreasuryError::InvalidState { action, status } => ApiError::conflict(format!(
            "cannot {action} an instruction that is {}",
            status.as_str()
        )),
        TreasuryError::Approval(e) => match e {
            ApprovalError::SelfApproval
            | ApprovalError::MissingRole(_)
            | ApprovalError::NotEligible => ApiError::forbidden(e.to_string()),
            ApprovalError::NoReason => {
                ApiError::validation(vec![FieldError::new("reason", e.to_string())])
            }
            ApprovalError::AlreadyApprovedBy(_)
            | ApprovalError::AlreadyApproved
            | ApprovalError::Rejected => ApiError::conflict(e.to_string()),
        },
        TreasuryError::InvalidContent(reason) => {
            ApiError::validation(vec![FieldError::new("kind", reason)])
        }
        TreasuryError::Ledger(ledger::LedgerError::ExceedsCredits { .. }) => ApiError::conflict(
            "the debtor sub-account cannot cover this instruction: nothing was held",
        ),
        other => ApiError::internal(anyhow::Error::new(other)),
    }
}

/// The organisation whose ledger owner is `owner`.
async fn org_of_owner(state: &AppState, owner: &str) -> Result<OrgRef, ApiError> {
    let org = organisations::Entity::find()
        .filter(organisations::Column::LedgerOwner.eq(owner))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    org_ref(&org)
}

/// The organisation ids of ledger owners, for a page of rows, in one query.
async fn org_ids_of_owners<'a>(
    state: &AppState,
    owners: impl Iterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, Uuid>, ApiError> {
    let owners: Vec<&str> = owners.collect();
    Ok(organisations::Entity::find()
        .filter(organisations::Column::LedgerOwner.is_in(owners))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|o| (o.ledger_owner, o.id))
        .collect())
}

fn org_id(ids: &std::collections::HashMap<String, Uuid>, owner: &str) -> Result<Uuid, ApiError> {
    ids.get(owner).copied().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("no organisation owns ledger owner {owner}"))
    })
}

/// A sub-account at the custodial bank, with its balance in the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-aa00-7000-8000-0000000000d1",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "holder_name": "Huaxin Energy Station Co.",
    "account_number": "3100000000000001",
    "bank_code": "308584000013",
    "currency": "CNY",
    "ledger_account_id": "0193a5c2-aa00-7000-8000-0000000000c1",
    "is_master": false,
    "available": "1250000.00"
}))]
pub struct SubAccount {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub holder_name: String,
    pub account_number: String,
    /// CNAPS code of the custodial bank's branch.
    pub bank_code: String,
    pub currency: String,
    pub ledger_account_id: Uuid,
    /// The platform's master account, above every sub-account.
    pub is_master: bool,
    /// What instructions can still take: the ledger's available balance.
    #[schema(value_type = String)]
    pub available: Decimal,
}

crate::page_type!(SubAccountPage, SubAccount, "sub-accounts");

/// Which page of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

/// The sub-accounts at the custodial bank of the caller's subtree.
#[utoipa::path(
    get,
    path = "/v1/treasury/sub-accounts",
    tag = "treasury",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of sub-accounts", body = SubAccountPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_sub_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<SubAccountPage>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("sub-accounts", q.cursor.as_deref())?;
    let mut select = treasury_sub_accounts::Entity::find()
        .filter(treasury_sub_accounts::Column::OwnerOrg.in_subquery(subtree(
            organisations::Column::LedgerOwner,
            &caller.org.path,
        )))
        .order_by_asc(treasury_sub_accounts::Column::Id)
        .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(treasury_sub_accounts::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "sub-accounts", |r| r.id.to_string());
    let orgs = org_ids_of_owners(&state, rows.iter().map(|r| r.owner_org.as_str())).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let organisation_id = org_id(&orgs, &row.owner_org)?;
        let balance = state
            .ledger
            .balance(row.ledger_account_id)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
        items.push(SubAccount {
            id: row.id,
            organisation_id,
            holder_name: row.holder_name,
            account_number: row.account_number,
            bank_code: row.bank_code,
            currency: row.currency,
            ledger_account_id: row.ledger_account_id,
            is_master: row.is_master,
            available: balance.available.amount(),
        });
    }
    Ok(axum::Json(SubAccountPage { items, next_cursor }))
}

/// A legal entity's own account at any bank: where payouts go.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-aa00-7000-8000-0000000000e1",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e9",
    "holder_name": "Yanchang Depot No. 7 Ltd.",
    "account_number": "6222020200000000099",
    "bank_code": "102100099996",
    "branch_name": "ICBC Xi'an Gaoxin Branch"
}))]
pub struct ExternalAccount {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub holder_name: String,
    pub account_number: String,
    pub bank_code: String,
    pub branch_name: String,
}

crate::page_type!(ExternalAccountPage, ExternalAccount, "external accounts");

/// The external (payout) accounts of the caller's subtree.
#[utoipa::path(
    get,
    path = "/v1/treasury/external-accounts",
    tag = "treasury",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of external accounts", body = ExternalAccountPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_external_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<ExternalAccountPage>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("external-accounts", q.cursor.as_deref())?;
    let mut select = treasury_external_accounts::Entity::find()
        .filter(
            treasury_external_accounts::Column::OwnerOrg.in_subquery(subtree(
                organisations::Column::LedgerOwner,
                &caller.org.path,
            )),
        )
        .order_by_asc(treasury_external_accounts::Column::Id)
        .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(treasury_external_accounts::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "external-accounts", |r| r.id.to_string());
    let orgs = org_ids_of_owners(&state, rows.iter().map(|r| r.owner_org.as_str())).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(ExternalAccount {
            id: row.id,
            organisation_id: org_id(&orgs, &row.owner_org)?,
            holder_name: row.holder_name,
            account_number: row.account_number,
            bank_code: row.bank_code,
            branch_name: row.branch_name,
        });
    }
    Ok(axum::Json(ExternalAccountPage { items, next_cursor }))
}

/// One side of an instruction.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Party {
    pub name: String,
    pub account_number: String,
    pub bank_code: String,
}

impl From<&Counterparty> for Party {
    fn from(c: &Counterparty) -> Self {
        Party {
            name: c.name.clone(),
            account_number: c.account.as_str().to_owned(),
            bank_code: c.bank.as_str().to_owned(),
        }
    }
}

/// Where the approval chain stands.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// `pending`, `approved` or `rejected`.
    pub state: String,
    /// What is still missing, while pending.
    pub waiting_for: Option<String>,
}

/// The message that carries the instruction to the bank.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BankMessage {
    pub message_id: String,
    /// `intra_bank`, `large_value` or `interbank_24x7`.
    pub rail: String,
    /// How many times it was sent.
    pub sends: i32,
    /// The latest ISO 20022 status the bank reported (`RCVD`, `ACTC`, `ACCP`, `ACSP`, `ACSC`,
    /// `PDNG`, `RJCT`).
    pub last_status: Option<String>,
    /// The message's credit transfers: one for an instruction sent whole, one per tranche
    /// for one split under the 24x7 cap (`<end_to_end_id>-1`, `-2`, …).
    #[serde(default)]
    pub transactions: Vec<BankTransaction>,
    /// What reached the creditor (and did not come back): the amount when every transaction
    /// settled, less when the bank refused or the creditor's bank returned some.
    #[schema(value_type = String)]
    pub settled_amount: Decimal,
}

/// One payment of a batch.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchLineView {
    pub end_to_end_id: String,
    pub creditor: Party,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub remittance: Option<String>,
}

/// One credit transfer of a message and what the bank made of it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BankTransaction {
    pub end_to_end_id: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// `pending`, `settled`, `rejected` or `returned`.
    pub status: String,
    /// The bank's reason code and text of a rejection or return.
    pub reason: Option<String>,
}

/// Where the instruction's workflow is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub instance_id: Uuid,
    /// `running`, `completed`, `failed` or `compensated`.
    pub status: String,
    /// `pending_approval`, `checking_approval`, `planning`, `waiting_for_window`,
    /// `syncing`, `submitted`, `settled`, `returning` or `finished`.
    pub phase: String,
    /// Why it is where it is.
    pub reason: String,
}

/// An instruction to the custodial bank.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-bb00-7000-8000-0000000000f1",
    "kind": "payout",
    "status": "settled",
    "end_to_end_id": "FC-PAYOUT-20261123-0001",
    "debtor": {"name": "Huaxin Energy Station Co.", "account_number": "3100000000000001", "bank_code": "308584000013"},
    "creditor": {"name": "Yanchang Depot No. 7 Ltd.", "account_number": "6222020200000000099", "bank_code": "102100099996"},
    "amount": "30000000.00",
    "currency": "CNY",
    "purpose": "SUPP",
    "remittance": "92# gasoline, 3,600 t, order DP-7781",
    "requested_execution_date": "2026-11-23",
    "maker": "treasury-maker",
    "approval": {"state": "approved", "waiting_for": null},
    "rejection": null,
    "bank": {"message_id": "FC0193a5c2bb0070008000000000000f1", "rail": "large_value", "sends": 1, "last_status": "ACSC",
             "transactions": [{"end_to_end_id": "FC-PAYOUT-20261123-0001", "amount": "30000000.00", "status": "settled", "reason": null}],
             "settled_amount": "30000000.00"},
    "workflow": {"instance_id": "0193a5c2-cc00-7000-8000-000000000001", "status": "running", "phase": "settled", "reason": "the bank settled the payment; the hold is posted"},
    "created_at": "2026-11-23T02:00:00Z"
}))]
pub struct InstructionView {
    pub id: Uuid,
    /// `sub_account_transfer`, `payout`, `freeze` or `unfreeze`.
    pub kind: String,
    /// `pending_approval`, `approved` (funds held; at the bank when `bank` says so),
    /// `rejected`, `settled` (for a freeze: in force at the bank, the funds held until an
    /// unfreeze is carried out) or `returned`.
    pub status: String,
    /// For an unfreeze: the freeze it releases.
    #[serde(default)]
    pub releases_instruction_id: Option<Uuid>,
    /// For a batch: its payments, in message order (`amount` is their total, `creditor` the
    /// first one's); empty for a single payment.
    #[serde(default)]
    pub transactions: Vec<BatchLineView>,
    pub end_to_end_id: String,
    pub debtor: Party,
    pub creditor: Party,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub purpose: Option<String>,
    pub remittance: Option<String>,
    pub requested_execution_date: NaiveDate,
    /// The username of the maker.
    pub maker: String,
    pub approval: ApprovalView,
    /// Who rejected it (a checker, the bank, or the system on expiry) and why.
    pub rejection: Option<RejectionView>,
    pub bank: Option<BankMessage>,
    pub workflow: Option<WorkflowView>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectionView {
    pub by: String,
    pub reason: String,
}

/// One line of the audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// A username, `bank` or `system`.
    pub actor: String,
    /// `created`, `amended`, `approved`, `approved_and_held`, `rejected`, `settled`,
    /// `settled_in_part` (some tranches refused; the hold posted for the rest),
    /// `transaction_returned` (one transaction reversed), `returned`; for freezes `frozen`,
    /// `released` (on the freeze, when its unfreeze is carried out), `unfrozen` and
    /// `approved_nothing_held` (an unfreeze).
    pub event: String,
    pub detail: serde_json::Value,
}

/// An instruction with its audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InstructionDetail {
    #[serde(flatten)]
    pub instruction: InstructionView,
    pub history: Vec<AuditEvent>,
}

crate::page_type!(InstructionPage, InstructionView, "instructions");

async fn view(
    state: &AppState,
    ctx: &TreasuryContext,
    instruction: Instruction,
) -> Result<InstructionView, ApiError> {
    let id = instruction.id;
    let approval = match ctx
        .executor
        .instructions
        .approval_state(id)
        .await
        .map_err(treasury_error)?
    {
        ApprovalState::Approved => ApprovalView {
            state: "approved".into(),
            waiting_for: None,
        },
        ApprovalState::Pending {
            role, have, need, ..
        } => ApprovalView {
            state: "pending".into(),
            waiting_for: Some(format!("{} more approval(s) by {}", need - have, role.0)),
        },
        ApprovalState::Rejected { .. } => ApprovalView {
            state: "rejected".into(),
            waiting_for: None,
        },
    };
    let transactions = ctx
        .executor
        .instructions
        .transactions(id)
        .await
        .map_err(treasury_error)?;
    let settled_amount = transactions
        .iter()
        .filter(|t| t.state == treasury::submission::TransactionState::Settled)
        .map(|t| t.amount.amount())
        .sum::<Decimal>();
    let transactions: Vec<BankTransaction> = transactions
        .into_iter()
        .map(|t| BankTransaction {
            end_to_end_id: t.end_to_end_id.to_string(),
            amount: t.amount.amount(),
            status: t.state.as_str().to_owned(),
            reason: t.reason,
        })
        .collect();
    let bank = treasury_messages::Entity::find()
        .filter(treasury_messages::Column::InstructionId.eq(id))
        .one(&state.db)
        .await?
        .map(|m| BankMessage {
            message_id: m.message_id,
            rail: m.rail,
            sends: m.sends,
            last_status: m.last_status,
            transactions,
            settled_amount,
        });
    let workflow = ctx
        .engine
        .instance_by_key(BankInstruction::NAME, &id.to_string())
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?
        .map(|i| WorkflowView {
            instance_id: i.id,
            status: i.status.as_str().to_owned(),
            phase: i.state["phase"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            reason: i.status_reason,
        });
    let c = &instruction.content;
    Ok(InstructionView {
        id,
        kind: c.kind.as_str().to_owned(),
        status: instruction.status.as_str().to_owned(),
        releases_instruction_id: c.releases,
        transactions: c
            .lines
            .iter()
            .map(|l| BatchLineView {
                end_to_end_id: l.end_to_end_id.to_string(),
                creditor: Party::from(&l.creditor),
                amount: l.amount.amount(),
                remittance: l.remittance.clone(),
            })
            .collect(),
        end_to_end_id: c.end_to_end_id.as_str().to_owned(),
        debtor: Party::from(&c.debtor),
        creditor: Party::from(&c.creditor),
        amount: c.amount.amount(),
        currency: c.amount.currency().code().to_owned(),
        purpose: c.purpose.clone(),
        remittance: c.remittance.clone(),
        requested_execution_date: c.requested_execution_date,
        maker: instruction.maker.0.clone(),
        approval,
        rejection: instruction
            .rejection
            .clone()
            .map(|(by, reason)| RejectionView { by, reason }),
        bank,
        workflow,
        created_at: instruction.created_at,
    })
}

/// The instruction, if the caller may `action` it.
async fn instruction_in_scope(
    state: &AppState,
    ctx: &TreasuryContext,
    caller: &Caller,
    action: Action,
    id: Uuid,
) -> Result<Instruction, ApiError> {
    // The role is checked before anything is looked up.
    authorize(caller, action, &caller.org, "instruction")?;
    let instruction = ctx
        .executor
        .instructions
        .get(id)
        .await
        .map_err(treasury_error)?;
    let debtor = treasury_sub_accounts::Entity::find()
        .filter(
            treasury_sub_accounts::Column::LedgerAccountId
                .eq(instruction.content.debtor.ledger_account),
        )
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("instruction"))?;
    let org = org_of_owner(state, &debtor.owner_org).await?;
    authorize(caller, action, &org, "instruction")?;
    Ok(instruction)
}

/// Which instructions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListInstructions {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only instructions in this status (`pending_approval`, `approved`, `rejected`,
    /// `settled`, `returned`).
    pub status: Option<String>,
}

/// The instructions whose debtor sub-account belongs to the caller's subtree, oldest first.
#[utoipa::path(
    get,
    path = "/v1/treasury/instructions",
    tag = "treasury",
    params(ListInstructions),
    responses(
        (status = 200, description = "A page of instructions", body = InstructionPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_instructions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListInstructions>,
) -> Result<axum::Json<InstructionPage>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let ctx = context(&state)?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("instructions", q.cursor.as_deref())?;
    use entities::treasury_instructions as ti;
    use sea_orm::ExprTrait;
    use sea_orm::sea_query::Query as SqlQuery;
    let debtors = SqlQuery::select()
        .column(treasury_sub_accounts::Column::LedgerAccountId)
        .from(treasury_sub_accounts::Entity)
        .and_where(
            sea_orm::sea_query::Expr::col(treasury_sub_accounts::Column::OwnerOrg).in_subquery(
                subtree(organisations::Column::LedgerOwner, &caller.org.path),
            ),
        )
        .to_owned();
    let mut select = ti::Entity::find()
        .filter(ti::Column::DebtorLedgerAccountId.in_subquery(debtors))
        .order_by_asc(ti::Column::Id)
        .limit(limit + 1);
    if let Some(status) = &q.status {
        let known = [
            InstructionStatus::PendingApproval,
            InstructionStatus::Approved,
            InstructionStatus::Rejected,
            InstructionStatus::Settled,
            InstructionStatus::Returned,
        ];
        if !known.iter().any(|s| s.as_str() == status) {
            return Err(ApiError::parameter(
                "status",
                "one of pending_approval, approved, rejected, settled, returned",
            ));
        }
        select = select.filter(ti::Column::Status.eq(status.as_str()));
    }
    if let Some(after) = after {
        select = select.filter(ti::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "instructions", |r| r.id.to_string());
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let instruction = ctx
            .executor
            .instructions
            .get(row.id)
            .await
            .map_err(treasury_error)?;
        items.push(view(&state, ctx, instruction).await?);
    }
    Ok(axum::Json(InstructionPage { items, next_cursor }))
}

/// One instruction with its approval state, where it is at the bank, its workflow and its
/// audit trail.
#[utoipa::path(
    get,
    path = "/v1/treasury/instructions/{id}",
    tag = "treasury",
    params(("id" = Uuid, Path, description = "Instruction id")),
    responses(
        (status = 200, description = "The instruction", body = InstructionDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(instruction = %id))]
async fn get_instruction(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<InstructionDetail>, ApiError> {
    let ctx = context(&state)?;
    let instruction = instruction_in_scope(&state, ctx, &caller, Action::ReadTreasury, id).await?;
    detail(&state, ctx, instruction).await.map(axum::Json)
}

async fn detail(
    state: &AppState,
    ctx: &TreasuryContext,
    instruction: Instruction,
) -> Result<InstructionDetail, ApiError> {
    let history = ctx
        .executor
        .instructions
        .history(instruction.id)
        .await
        .map_err(treasury_error)?
        .into_iter()
        .map(|e| AuditEvent {
            at: e.at,
            actor: e.actor,
            event: e.event,
            detail: e.detail,
        })
        .collect();
    Ok(InstructionDetail {
        instruction: view(state, ctx, instruction).await?,
        history,
    })
}

/// A new instruction. A payment has exactly one creditor: another sub-account (a transfer
/// at the bank) or an external account (a payout). A `freeze` blocks `amount` on the debtor
/// sub-account at the bank (and in the ledger) until an `unfreeze` naming it in
/// `releases_instruction_id` (with the same sub-account and amount) is carried out; neither
/// has a creditor.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "debtor_sub_account_id": "0193a5c2-aa00-7000-8000-0000000000d1",
    "creditor_external_account_id": "0193a5c2-aa00-7000-8000-0000000000e1",
    "amount": "30000000.00",
    "currency": "CNY",
    "purpose": "SUPP",
    "remittance": "92# gasoline, 3,600 t, order DP-7781",
    "requested_execution_date": "2026-11-23"
}))]
pub struct CreateInstruction {
    /// The sub-account that pays; it must belong to the caller's subtree.
    pub debtor_sub_account_id: Uuid,
    /// A sub-account at the custodial bank that receives (a transfer).
    pub creditor_sub_account_id: Option<Uuid>,
    /// An external account that receives (a payout).
    pub creditor_external_account_id: Option<Uuid>,
    /// A positive decimal with at most two places, as a string.
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// `CNY`: the bank's rails carry nothing else.
    pub currency: String,
    /// An ISO 20022 purpose code (`SUPP`, `TRAD`, …), up to 35 characters.
    pub purpose: Option<String>,
    /// What the creditor sees, up to 140 characters.
    pub remittance: Option<String>,
    /// Nothing is sent before this day starts in Shanghai; today when absent.
    pub requested_execution_date: Option<NaiveDate>,
    /// The end-to-end id the bank and the creditor see, up to 35 characters; generated
    /// when absent.
    pub end_to_end_id: Option<String>,
    /// `freeze` or `unfreeze`; a payment when absent (its kind follows from the creditor).
    pub kind: Option<String>,
    /// For an unfreeze: the freeze instruction it releases.
    pub releases_instruction_id: Option<Uuid>,
    /// A batch: 2 to 1000 payments from the debtor sub-account, approved as a whole (the
    /// approval policy sees `amount`, which must be their total), held as a whole, sent as
    /// one message with one transaction each, and settled, refused or returned each on its
    /// own. All to sub-accounts or all to external accounts, all at the debtor's bank or all
    /// elsewhere; no top-level creditor then.
    pub transactions: Option<Vec<BatchTransaction>>,
}

/// One payment of a batch.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchTransaction {
    pub creditor_sub_account_id: Option<Uuid>,
    pub creditor_external_account_id: Option<Uuid>,
    /// A positive decimal with at most two places, as a string.
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// Up to 35 characters; `<the batch's end_to_end_id>-<n>` when absent.
    pub end_to_end_id: Option<String>,
    /// What this creditor sees, up to 140 characters.
    pub remittance: Option<String>,
}

impl Validate for CreateInstruction {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let creditors = (
            self.creditor_sub_account_id,
            self.creditor_external_account_id,
        );
        if let Some(transactions) = &self.transactions {
            if creditors != (None, None) || self.kind.is_some() {
                errors.push(FieldError::new(
                    "transactions",
                    "a batch names its creditors in its transactions, and is a payment",
                ));
            }
            if !(2..=1000).contains(&transactions.len()) {
                errors.push(FieldError::new(
                    "transactions",
                    "a batch carries 2 to 1000 transactions",
                ));
            }
            for (n, t) in transactions.iter().enumerate() {
                if !matches!(
                    (t.creditor_sub_account_id, t.creditor_external_account_id),
                    (Some(_), None) | (None, Some(_))
                ) {
                    errors.push(FieldError::new(
                        format!("transactions[{n}]"),
                        "give exactly one of creditor_sub_account_id and creditor_external_account_id",
                    ));
                }
                if t.amount <= Decimal::ZERO || t.amount.normalize().scale() > 2 {
                    errors.push(FieldError::new(
                        format!("transactions[{n}].amount"),
                        "a positive amount with at most two decimal places",
                    ));
                }
                if let Some(remittance) = &t.remittance {
                    check_text(
                        &format!("transactions[{n}].remittance"),
                        remittance,
                        140,
                        &mut errors,
                    );
                }
                if let Some(e2e) = &t.end_to_end_id
                    && let Err(e) = EndToEndId::new(e2e.clone())
                {
                    errors.push(FieldError::new(
                        format!("transactions[{n}].end_to_end_id"),
                        e.to_string(),
                    ));
                }
            }
        }
        match self.kind.as_deref() {
            None if self.transactions.is_some() => {}
            None => {
                if !matches!(creditors, (Some(_), None) | (None, Some(_))) {
                    errors.push(FieldError::new(
                        "creditor_sub_account_id",
                        "give exactly one of creditor_sub_account_id and creditor_external_account_id",
                    ));
                }
                if self.releases_instruction_id.is_some() {
                    errors.push(FieldError::new(
                        "releases_instruction_id",
                        "only an unfreeze releases a freeze",
                    ));
                }
            }
            Some(kind @ ("freeze" | "unfreeze")) => {
                if creditors != (None, None) {
                    errors.push(FieldError::new(
                        "creditor_sub_account_id",
                        format!("a {kind} has no creditor"),
                    ));
                }
                if (kind == "unfreeze") != self.releases_instruction_id.is_some() {
                    errors.push(FieldError::new(
                        "releases_instruction_id",
                        "an unfreeze, and only an unfreeze, names the freeze it releases",
                    ));
                }
            }
            Some(other) => errors.push(FieldError::new(
                "kind",
                format!("unknown kind {other:?}: freeze or unfreeze, or none for a payment"),
            )),
        }
        if self.amount <= Decimal::ZERO || self.amount.normalize().scale() > 2 {
            errors.push(FieldError::new(
                "amount",
                "a positive amount with at most two decimal places",
            ));
        }
        if self.currency != "CNY" {
            errors.push(FieldError::new(
                "currency",
                "the bank's rails carry CNY only",
            ));
        }
        if let Some(purpose) = &self.purpose {
            check_text("purpose", purpose, 35, &mut errors);
        }
        if let Some(remittance) = &self.remittance {
            check_text("remittance", remittance, 140, &mut errors);
        }
        if let Some(e2e) = &self.end_to_end_id
            && let Err(e) = EndToEndId::new(e2e.clone())
        {
            errors.push(FieldError::new("end_to_end_id", e.to_string()));
        }
        errors
    }
}

fn username(caller: &Caller) -> Result<UserId, ApiError> {
    match &caller.subject {
        Subject::User { username, .. } => Ok(UserId(username.clone())),
        Subject::ApiKey { .. } => Err(ApiError::forbidden(
            "treasury decisions are made by people, not API keys",
        )),
    }
}

/// Create an instruction (makers). It waits for the checkers' approval; nothing is held or
/// sent before the approval chain completes.
#[utoipa::path(
    post,
    path = "/v1/treasury/instructions",
    tag = "treasury",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = CreateInstruction,
    responses(
        (status = 201, description = "Created, pending approval", body = InstructionDetail,
            headers(("Location" = String, description = "The instruction's URL"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn create_instruction(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<CreateInstruction>,
) -> Result<Response, ApiError> {
    authorize(
        &caller,
        Action::MakeInstructions,
        &caller.org,
        "organisation",
    )?;
    let ctx = context(&state)?;
    let maker = username(&caller)?;
    let debtor = treasury_sub_accounts::Entity::find_by_id(body.debtor_sub_account_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("sub-account"))?;
    let debtor_org = org_of_owner(&state, &debtor.owner_org).await?;
    authorize(
        &caller,
        Action::MakeInstructions,
        &debtor_org,
        "sub-account",
    )?;
    let today = Utc::now().with_timezone(&treasury::rails::TZ).date_naive();
    let id_seed = Uuid::now_v7();
    let end_to_end_id = match &body.end_to_end_id {
        Some(e2e) => EndToEndId::new(e2e.clone()),
        None => EndToEndId::new(format!("FC{}", id_seed.simple())),
    }
    .map_err(|e| ApiError::validation(vec![FieldError::new("end_to_end_id", e.to_string())]))?;
    let amount = ledger::Money::new(body.amount, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))?;
    let debtor_party = counterparty(
        &debtor.holder_name,
        &debtor.account_number,
        &debtor.bank_code,
        debtor.ledger_account_id,
    )?;
    let purpose = body.purpose.as_deref().map(|p| p.trim().to_owned());
    let remittance = body.remittance.as_deref().map(|r| r.trim().to_owned());
    let date = body.requested_execution_date.unwrap_or(today);
    let instructions = &ctx.executor.instructions;
    let new = match (body.kind.as_deref(), body.releases_instruction_id) {
        (Some("freeze"), _) => Some(
            instructions
                .new_freeze(
                    debtor_party.clone(),
                    amount,
                    end_to_end_id.clone(),
                    purpose.clone(),
                    remittance.clone(),
                    date,
                )
                .await
                .map_err(treasury_error)?,
        ),
        (Some("unfreeze"), Some(freeze)) => {
            let new = instructions
                .new_unfreeze(freeze, end_to_end_id.clone(), remittance.clone(), date)
                .await
                .map_err(|e| match e {
                    TreasuryError::NotFound(_) => ApiError::validation(vec![FieldError::new(
                        "releases_instruction_id",
                        "no such freeze",
                    )]),
                    other => treasury_error(other),
                })?;
            if new.debtor.ledger_account != debtor.ledger_account_id {
                return Err(ApiError::validation(vec![FieldError::new(
                    "releases_instruction_id",
                    "the freeze is on another sub-account",
                )]));
            }
            if new.amount != amount {
                return Err(ApiError::validation(vec![FieldError::new(
                    "amount",
                    format!(
                        "an unfreeze releases the whole freeze: {}",
                        new.amount.amount()
                    ),
                )]));
            }
            Some(new)
        }
        _ => None,
    };
    let new = match new {
        Some(new) => new,
        None => {
            payment(
                &state,
                &body,
                &debtor,
                debtor_party,
                end_to_end_id,
                amount,
                purpose,
                remittance,
                date,
            )
            .await?
        }
    };
    let key = format!("api:{}:{}", caller.org.id, claim.key());
    let instruction = ctx
        .executor
        .instructions
        .create(new, &maker, &key)
        .await
        .map_err(treasury_error)?;
    ctx.engine
        .start::<BankInstruction>(
            &instruction.id.to_string(),
            BankInstructionInput {
                instruction_id: instruction.id,
                timing: ctx.timing.clone(),
            },
        )
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
    tracing::info!(instruction = %instruction.id, "instruction created");
    let id = instruction.id;
    let body = detail(&state, ctx, instruction).await?;
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(
            txn,
            StatusCode::CREATED,
            Some(&body),
            Some(format!("/v1/treasury/instructions/{id}")),
            None,
        )
        .await
}

/// The content of a payment, or of a batch of payments: the kind follows from the
/// creditors.
#[allow(clippy::too_many_arguments)]
async fn payment(
    state: &AppState,
    body: &CreateInstruction,
    debtor: &treasury_sub_accounts::Model,
    debtor_party: Counterparty,
    end_to_end_id: EndToEndId,
    amount: ledger::Money,
    purpose: Option<String>,
    remittance: Option<String>,
    date: NaiveDate,
) -> Result<NewInstruction, ApiError> {
    let Some(transactions) = &body.transactions else {
        let (kind, creditor) = creditor_of(
            state,
            debtor,
            body.creditor_sub_account_id,
            body.creditor_external_account_id,
        )
        .await?;
        return Ok(NewInstruction {
            kind,
            end_to_end_id,
            debtor: debtor_party,
            creditor,
            amount,
            purpose,
            remittance,
            requested_execution_date: date,
            releases: None,
            lines: Vec::new(),
        });
    };
    let mut lines = Vec::with_capacity(transactions.len());
    let mut kinds = Vec::with_capacity(transactions.len());
    for (n, t) in transactions.iter().enumerate() {
        let (kind, creditor) = creditor_of(
            state,
            debtor,
            t.creditor_sub_account_id,
            t.creditor_external_account_id,
        )
        .await?;
        kinds.push(kind);
        lines.push(treasury::store::Line {
            end_to_end_id: match &t.end_to_end_id {
                Some(e2e) => EndToEndId::new(e2e.clone()).map_err(|e| {
                    ApiError::validation(vec![FieldError::new(
                        format!("transactions[{n}].end_to_end_id"),
                        e.to_string(),
                    )])
                })?,
                None => treasury::submission::tranche_end_to_end_id(&end_to_end_id, n + 1),
            },
            creditor,
            amount: ledger::Money::new(t.amount, ledger::Currency::CNY).map_err(|e| {
                ApiError::validation(vec![FieldError::new(
                    format!("transactions[{n}].amount"),
                    e.to_string(),
                )])
            })?,
            remittance: t.remittance.as_deref().map(|r| r.trim().to_owned()),
        });
    }
    let kind = kinds[0];
    if kinds.iter().any(|k| *k != kind) {
        return Err(ApiError::validation(vec![FieldError::new(
            "transactions",
            "one batch, one kind: all to sub-accounts or all to external accounts",
        )]));
    }
    let total: Decimal = lines.iter().map(|l| l.amount.amount()).sum();
    if total != amount.amount() {
        return Err(ApiError::validation(vec![FieldError::new(
            "amount",
            format!("the batch's amount is the total of its transactions: {total}"),
        )]));
    }
    Ok(NewInstruction {
        kind,
        end_to_end_id,
        debtor: debtor_party,
        creditor: lines[0].creditor.clone(),
        amount,
        purpose,
        remittance,
        requested_execution_date: date,
        releases: None,
        lines,
    })
}

/// A payment's creditor: another sub-account (a transfer at the bank) or an external
/// account (a payout, credited in the ledger to the master account's mirror).
async fn creditor_of(
    state: &AppState,
    debtor: &treasury_sub_accounts::Model,
    sub_account: Option<Uuid>,
    external_account: Option<Uuid>,
) -> Result<(InstructionKind, Counterparty), ApiError> {
    Ok(match (sub_account, external_account) {
        (Some(id), _) => {
            let c = treasury_sub_accounts::Entity::find_by_id(id)
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::not_found("sub-account"))?;
            if c.id == debtor.id {
                return Err(ApiError::validation(vec![FieldError::new(
                    "creditor_sub_account_id",
                    "the creditor is the debtor",
                )]));
            }
            (
                InstructionKind::SubAccountTransfer,
                counterparty(
                    &c.holder_name,
                    &c.account_number,
                    &c.bank_code,
                    c.ledger_account_id,
                )?,
            )
        }
        (None, Some(id)) => {
            let c = treasury_external_accounts::Entity::find_by_id(id)
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::not_found("external account"))?;
            // Money leaving the bank: the master account's mirror takes the credit.
            let master = treasury_sub_accounts::Entity::find()
                .filter(treasury_sub_accounts::Column::IsMaster.eq(true))
                .filter(treasury_sub_accounts::Column::Currency.eq(debtor.currency.clone()))
                .one(&state.db)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("no master account in {}", debtor.currency))
                })?;
            (
                InstructionKind::Payout,
                counterparty(
                    &c.holder_name,
                    &c.account_number,
                    &c.bank_code,
                    master.ledger_account_id,
                )?,
            )
        }
        (None, None) => unreachable!("validated: one creditor"),
    })
}

fn counterparty(
    name: &str,
    account: &str,
    bank: &str,
    ledger_account: Uuid,
) -> Result<Counterparty, ApiError> {
    Ok(Counterparty {
        ledger_account,
        name: name.to_owned(),
        account: AccountNumber::new(account)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored account number: {e}")))?,
        bank: BankCode::new(bank)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored bank code: {e}")))?,
    })
}

async fn nudge(ctx: &TreasuryContext, id: Uuid, signal: &str, payload: serde_json::Value) {
    // The instance also polls: a signal that cannot be delivered only costs time.
    if let Err(err) = ctx
        .engine
        .signal_by_key(BankInstruction::NAME, &id.to_string(), signal, payload)
        .await
    {
        tracing::debug!(instruction = %id, error = %err, "instance not signalled");
    }
}

async fn decided(
    state: &AppState,
    ctx: &TreasuryContext,
    claim: IdempotencyClaim,
    instruction: Instruction,
) -> Result<Response, ApiError> {
    nudge(
        ctx,
        instruction.id,
        SIGNAL_APPROVAL,
        serde_json::Value::Null,
    )
    .await;
    let body = detail(state, ctx, instruction).await?;
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(txn, StatusCode::OK, Some(&body), None, None)
        .await
}

fn checker_roles(caller: &Caller) -> Vec<treasury::approval::Role> {
    vec![treasury::approval::Role::new(caller.role.as_str())]
}

/// Approve an instruction (checkers). The maker cannot approve their own; when this approval
/// completes the chain, the debtor's funds are held and the instruction goes to the bank.
#[utoipa::path(
    post,
    path = "/v1/treasury/instructions/{id}/approve",
    tag = "treasury",
    params(
        ("id" = Uuid, Path, description = "Instruction id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The instruction after the approval", body = InstructionDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(instruction = %id))]
async fn approve_instruction(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let ctx = context(&state)?;
    instruction_in_scope(&state, ctx, &caller, Action::CheckInstructions, id).await?;
    let approver = username(&caller)?;
    let instruction = ctx
        .executor
        .instructions
        .approve(id, &approver, &checker_roles(&caller))
        .await
        .map_err(treasury_error)?;
    decided(&state, ctx, claim, instruction).await
}

/// Why a checker rejects.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "the depot's account changed last week: confirm it by phone first"}))]
pub struct RejectInstruction {
    /// 1 to 500 characters; the maker sees it.
    pub reason: String,
}

/// A free text of 1 to `max` characters once trimmed.
fn check_text(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        errors.push(FieldError::new(field, format!("1 to {max} characters")));
    }
}

impl Validate for RejectInstruction {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_text("reason", &self.reason, 500, &mut errors);
        errors
    }
}

/// Reject an instruction (checkers): it ends, nothing is held or sent.
#[utoipa::path(
    post,
    path = "/v1/treasury/instructions/{id}/reject",
    tag = "treasury",
    params(
        ("id" = Uuid, Path, description = "Instruction id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = RejectInstruction,
    responses(
        (status = 200, description = "The rejected instruction", body = InstructionDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(instruction = %id))]
async fn reject_instruction(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
    Json(body): Json<RejectInstruction>,
) -> Result<Response, ApiError> {
    let ctx = context(&state)?;
    instruction_in_scope(&state, ctx, &caller, Action::CheckInstructions, id).await?;
    let by = username(&caller)?;
    let instruction = ctx
        .executor
        .instructions
        .reject(id, &by, &checker_roles(&caller), body.reason.trim())
        .await
        .map_err(treasury_error)?;
    decided(&state, ctx, claim, instruction).await
}

/// Which banks.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RailsQuery {
    /// CNAPS code of the debtor's bank (the custodial bank's branch).
    pub debtor_bank: String,
    /// CNAPS code of the creditor's bank.
    pub creditor_bank: String,
}

/// One rail now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RailView {
    /// `intra_bank`, `large_value` or `interbank_24x7`.
    pub rail: String,
    /// Whether the rail connects these two banks at all.
    pub serves: bool,
    pub open_now: bool,
    /// When an open rail next closes (within the planning horizon).
    pub closes_at: Option<DateTime<Utc>>,
    /// When a closed rail next opens (within the planning horizon).
    pub next_opens_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<String>)]
    pub per_transaction_cap: Option<Decimal>,
}

/// What is open now between two banks, and the next windows.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RailsView {
    pub at: DateTime<Utc>,
    pub rails: Vec<RailView>,
}

/// The rails between two banks now: which are open, when they close, when the closed ones
/// open next (working days, cut-off, holidays and make-up days, maintenance windows).
#[utoipa::path(
    get,
    path = "/v1/treasury/rails",
    tag = "treasury",
    params(RailsQuery),
    responses(
        (status = 200, description = "The rails now", body = RailsView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn get_rails(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RailsQuery>,
) -> Result<axum::Json<RailsView>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let ctx = context(&state)?;
    let debtor = BankCode::new(q.debtor_bank.clone())
        .map_err(|e| ApiError::parameter("debtor_bank", e.to_string()))?;
    let creditor = BankCode::new(q.creditor_bank.clone())
        .map_err(|e| ApiError::parameter("creditor_bank", e.to_string()))?;
    let report = ctx.executor.rails.status(&debtor, &creditor, Utc::now());
    Ok(axum::Json(RailsView {
        at: report.at,
        rails: report
            .rails
            .into_iter()
            .map(|r| RailView {
                rail: treasury::execution::rail_name(r.rail).to_owned(),
                serves: r.serves,
                open_now: r.open_now,
                closes_at: r.closes_at,
                next_opens_at: r.next_opens_at,
                per_transaction_cap: r.per_transaction_cap,
            })
            .collect(),
    }))
}

/// A callback of the custodial bank: a pain.002 status report or a camt.054 booking
/// notification, signed by the bank (`X-Signature`: base64 RSA-SHA256 over the body). It is
/// verified, applied to the instructions it concerns, and their workflows are told. Applying
/// the same callback twice changes nothing; any non-2xx answer makes the bank send it again.
#[utoipa::path(
    post,
    path = "/v1/treasury/bank/callbacks",
    tag = "treasury",
    params(("X-Signature" = String, Header, description = "The bank's base64 RSA-SHA256 signature over the body.")),
    request_body(content = String, content_type = "application/xml", description = "pain.002.001.11 or camt.054.001.08"),
    responses(
        (status = 204, description = "Applied"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    // No bearer token or partner key: the bank's signature over the body is the credential.
    security(())
)]
#[tracing::instrument(skip_all)]
async fn bank_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctx = context(&state)?;
    let signature = headers
        .get(treasury::bank::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    use treasury::bank::{CallbackError, Incoming};
    let incoming =
        treasury::bank::verify_callback(&ctx.bank, &body, signature).map_err(|e| match e {
            CallbackError::MissingSignature | CallbackError::BadSignature => {
                ApiError::new(ProblemKind::SignatureInvalid, e.to_string())
            }
            CallbackError::UnknownMessage | CallbackError::Message(_) => ApiError::new(
                ProblemKind::MalformedMessage,
                format!("unreadable message: {e}"),
            ),
        })?;
    let internal =
        |e: treasury::execution::ExecutionError| ApiError::internal(anyhow::Error::new(e));
    match incoming {
        Incoming::StatusReport(report) => {
            let concerned = ctx
                .executor
                .receive_report(&report)
                .await
                .map_err(internal)?;
            if let Some(id) = concerned {
                nudge(ctx, id, SIGNAL_BANK_STATUS, serde_json::Value::Null).await;
            }
        }
        Incoming::Notification(notification) => {
            let returned = ctx
                .executor
                .receive_notification(&notification)
                .await
                .map_err(internal)?;
            for (id, reason) in returned {
                nudge(
                    ctx,
                    id,
                    SIGNAL_RETURNED,
                    serde_json::json!({ "reason": reason }),
                )
                .await;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A difference between a bank statement and the platform's books.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-dd00-7000-8000-000000000001",
    "statement_id": "0193a5c2-dd00-7000-8000-0000000000a1",
    "account_number": "3100000000000101",
    "kind": "unknown_entry",
    "end_to_end_id": null,
    "detail": {"kind": "unknown_entry", "bank_reference": "BK-000042", "end_to_end_id": null, "amount": {"amount": "5000000.00", "currency": "CNY"}},
    "status": "open",
    "resolution": null,
    "resolved_by": null,
    "resolved_at": null,
    "created_at": "2026-11-24T01:00:00Z"
}))]
pub struct ExceptionView {
    pub id: Uuid,
    /// The imported statement that raised it.
    pub statement_id: Uuid,
    pub account_number: String,
    /// `missing_from_statement`, `unknown_entry`, `amount_mismatch`, `direction_mismatch`,
    /// `duplicate_booking` or `balance_mismatch`.
    pub kind: String,
    pub end_to_end_id: Option<String>,
    pub detail: serde_json::Value,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<entities::treasury_exceptions::Model> for ExceptionView {
    fn from(m: entities::treasury_exceptions::Model) -> Self {
        ExceptionView {
            id: m.id,
            statement_id: m.statement_id,
            account_number: m.account_number,
            kind: m.kind,
            end_to_end_id: m.end_to_end_id,
            detail: serde_json::from_str(&m.detail).unwrap_or(serde_json::Value::Null),
            status: m.status,
            resolution: m.resolution,
            resolved_by: m.resolved_by,
            resolved_at: m.resolved_at,
            created_at: m.created_at,
        }
    }
}

crate::page_type!(ExceptionPage, ExceptionView, "reconciliation exceptions");

/// A statement to import: fetched from the bank for an account and a day, or uploaded.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"account_number": "3100000000000101", "date": "2026-11-23"}))]
pub struct ImportStatement {
    /// A sub-account at the custodial bank: fetch its statement from the bank (verified).
    pub account_number: Option<String>,
    /// The day of the statement to fetch.
    pub date: Option<NaiveDate>,
    /// A camt.053.001.08 document to import as it is (instead of fetching).
    pub xml: Option<String>,
}

impl Validate for ImportStatement {
    fn validate(&self) -> Vec<FieldError> {
        match (&self.account_number, &self.date, &self.xml) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => Vec::new(),
            _ => vec![FieldError::new(
                "xml",
                "give either account_number and date (fetch from the bank) or xml (upload)",
            )],
        }
    }
}

/// An imported statement and what its reconciliation found.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatementImport {
    pub id: Uuid,
    pub account_number: String,
    /// The bank's id of the statement.
    pub statement_id: String,
    pub date: String,
    /// `bank` or `upload`.
    pub source: String,
    #[schema(value_type = String)]
    pub opening: Decimal,
    #[schema(value_type = String)]
    pub closing: Decimal,
    pub currency: String,
    /// Booked lines on the statement, and how many matched an instruction.
    pub entries: i32,
    pub matched: i32,
    pub exceptions: Vec<ExceptionView>,
    pub imported_by: String,
    pub imported_at: DateTime<Utc>,
}

/// The sub-account with this number, if the caller may `action` on it.
async fn account_in_scope(
    state: &AppState,
    caller: &Caller,
    action: Action,
    number: &str,
) -> Result<(), ApiError> {
    let sub = treasury_sub_accounts::Entity::find()
        .filter(treasury_sub_accounts::Column::AccountNumber.eq(number))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("sub-account"))?;
    let org = org_of_owner(state, &sub.owner_org).await?;
    authorize(caller, action, &org, "sub-account")
}

/// Import a camt.053 statement of a sub-account (fetched from the bank, or uploaded) and
/// reconcile it with the instructions: every difference becomes an open exception. The same
/// statement imported again answers the first import (200).
#[utoipa::path(
    post,
    path = "/v1/treasury/statements",
    tag = "treasury",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = ImportStatement,
    responses(
        (status = 201, description = "Imported and reconciled", body = StatementImport),
        (status = 200, description = "Imported before: that import", body = StatementImport),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn import_statement(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<ImportStatement>,
) -> Result<Response, ApiError> {
    authorize(
        &caller,
        Action::ImportStatements,
        &caller.org,
        "organisation",
    )?;
    let ctx = context(&state)?;
    let by = username(&caller)?;
    let (statement, xml, source) = match (&body.account_number, body.date, &body.xml) {
        (Some(number), Some(date), None) => {
            account_in_scope(&state, &caller, Action::ImportStatements, number).await?;
            let account = AccountNumber::new(number.clone()).map_err(|e| {
                ApiError::validation(vec![FieldError::new("account_number", e.to_string())])
            })?;
            let statement = ctx
                .executor
                .bank
                .statement(&account, date)
                .await
                .map_err(|e| {
                    ApiError::new(
                        ProblemKind::Unavailable,
                        format!("the bank did not give the statement: {e}"),
                    )
                })?;
            let xml = statement
                .to_xml()
                .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
            (statement, xml, treasury::statements::Source::Bank)
        }
        (None, None, Some(xml)) => {
            let statement = treasury::iso20022::camt053::Statement::parse(xml).map_err(|e| {
                ApiError::validation(vec![FieldError::new(
                    "xml",
                    format!("not a camt.053.001.08 statement: {e}"),
                )])
            })?;
            account_in_scope(
                &state,
                &caller,
                Action::ImportStatements,
                statement.account.as_str(),
            )
            .await?;
            (statement, xml.clone(), treasury::statements::Source::Upload)
        }
        _ => unreachable!("validated: one form"),
    };
    let imported =
        treasury::statements::import(&state.db, &statement, &xml, source, &by.0, Utc::now())
            .await
            .map_err(|e| match e {
                treasury::statements::StatementError::UnknownAccount(_) => {
                    ApiError::not_found("sub-account")
                }
                other => ApiError::internal(anyhow::Error::new(other)),
            })?;
    let s = imported.statement;
    let currency: ledger::Currency = s
        .currency
        .parse()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored currency: {e:?}")))?;
    let view = StatementImport {
        id: s.id,
        account_number: s.account_number,
        statement_id: s.statement_id,
        date: s.statement_date,
        source: s.source,
        opening: ledger::Money::from_minor(s.opening_minor, currency).amount(),
        closing: ledger::Money::from_minor(s.closing_minor, currency).amount(),
        currency: s.currency,
        entries: s.entries,
        matched: s.matched,
        exceptions: imported
            .exceptions
            .into_iter()
            .map(ExceptionView::from)
            .collect(),
        imported_by: s.imported_by,
        imported_at: s.imported_at,
    };
    let status = if imported.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let txn = entities::db::begin_write(&state.db).await?;
    claim.commit(txn, status, Some(&view), None, None).await
}

/// Which exceptions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListExceptions {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// `open` or `resolved`; both when absent.
    pub status: Option<String>,
}

/// The reconciliation exceptions of the sub-accounts of the caller's subtree, oldest first.
#[utoipa::path(
    get,
    path = "/v1/treasury/exceptions",
    tag = "treasury",
    params(ListExceptions),
    responses(
        (status = 200, description = "A page of exceptions", body = ExceptionPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_exceptions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListExceptions>,
) -> Result<axum::Json<ExceptionPage>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("exceptions", q.cursor.as_deref())?;
    use entities::treasury_exceptions as te;
    use sea_orm::ExprTrait;
    use sea_orm::sea_query::Query as SqlQuery;
    let accounts = SqlQuery::select()
        .column(treasury_sub_accounts::Column::AccountNumber)
        .from(treasury_sub_accounts::Entity)
        .and_where(
            sea_orm::sea_query::Expr::col(treasury_sub_accounts::Column::OwnerOrg).in_subquery(
                subtree(organisations::Column::LedgerOwner, &caller.org.path),
            ),
        )
        .to_owned();
    let mut select = te::Entity::find()
        .filter(te::Column::AccountNumber.in_subquery(accounts))
        .order_by_asc(te::Column::Id)
        .limit(limit + 1);
    if let Some(status) = &q.status {
        if status != "open" && status != "resolved" {
            return Err(ApiError::parameter("status", "open or resolved"));
        }
        select = select.filter(te::Column::Status.eq(status.as_str()));
    }
    if let Some(after) = after {
        select = select.filter(te::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "exceptions", |r| r.id.to_string());
    Ok(axum::Json(ExceptionPage {
        items: rows.into_iter().map(ExceptionView::from).collect(),
        next_cursor,
    }))
}

/// How an exception was cleared.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resolution": "deposit from the station's cash pickup, booked by hand as entry 1187"}))]
pub struct ResolveException {
    /// 1 to 500 characters: what was found and done.
    pub resolution: String,
}

impl Validate for ResolveException {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_text("resolution", &self.resolution, 500, &mut errors);
        errors
    }
}

/// Resolve an open exception with a note (checkers).
#[utoipa::path(
    post,
    path = "/v1/treasury/exceptions/{id}/resolve",
    tag = "treasury",
    params(
        ("id" = Uuid, Path, description = "Exception id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = ResolveException,
    responses(
        (status = 200, description = "The resolved exception", body = ExceptionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(exception = %id))]
async fn resolve_exception(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
    Json(body): Json<ResolveException>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::CheckInstructions, &caller.org, "exception")?;
    let by = username(&caller)?;
    let row = entities::treasury_exceptions::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("exception"))?;
    account_in_scope(
        &state,
        &caller,
        Action::CheckInstructions,
        &row.account_number,
    )
    .await
    .map_err(|e| {
        if e.kind == ProblemKind::NotFound {
            ApiError::not_found("exception")
        } else {
            e
        }
    })?;
    let resolved =
        treasury::statements::resolve(&state.db, id, &by.0, body.resolution.trim(), Utc::now())
            .await
            .map_err(|e| match e {
                treasury::statements::StatementError::UnknownException(_) => {
                    ApiError::not_found("exception")
                }
                treasury::statements::StatementError::AlreadyResolved(_) => {
                    ApiError::conflict("the exception is resolved already")
                }
                other => ApiError::internal(anyhow::Error::new(other)),
            })?;
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(
            txn,
            StatusCode::OK,
            Some(&ExceptionView::from(resolved)),
            None,
            None,
        )
        .await
}

/// When a rule applies; every field given must hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyCondition {
    /// The instruction's amount is above this (CNY, a decimal string).
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub amount_above: Option<Decimal>,
    /// The instruction is of one of these kinds (`sub_account_transfer`, `payout`); any
    /// kind when empty.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Whether the creditor has never been paid before (`true`) or has (`false`).
    #[serde(default)]
    pub new_creditor: Option<bool>,
}

/// One link of an approval chain: `approvals` people with `role`, from `eligible` when
/// named (N of M).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyStep {
    /// A user role, `treasury_checker` in practice.
    pub role: String,
    pub approvals: u32,
    /// Usernames of the people who may approve this step; anyone with the role when empty.
    #[serde(default)]
    pub eligible: Vec<String>,
}

/// A rule block: a condition and the chain of steps it requires.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub name: String,
    #[serde(default)]
    pub when: PolicyCondition,
    pub steps: Vec<PolicyStep>,
}

/// An approval policy to put in force.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "rules": [
        {"name": "every instruction", "when": {}, "steps": [{"role": "treasury_checker", "approvals": 1, "eligible": []}]},
        {"name": "above 10 million: 2 of the 3 directors", "when": {"amount_above": "10000000"},
         "steps": [{"role": "treasury_checker", "approvals": 2, "eligible": ["zhao", "qian", "sun"]}]}
    ],
    "valid_for_minutes": 1440,
    "tranches": {"kind": "allowed", "max_tranches": 10}
}))]
pub struct PolicyBody {
    /// Every matching rule adds its steps, in order. One rule must have no condition.
    pub rules: Vec<PolicyRule>,
    /// How long an approval stays valid.
    pub valid_for_minutes: u32,
    /// Whether an approved payment above the 24x7 interbank cap waits for the large-value
    /// window (the default) or, when only the 24x7 system is open, goes at once in tranches
    /// under the cap, all in one message to the bank.
    #[serde(default)]
    pub tranches: PolicyTranches,
}

/// What a payment above the 24x7 cap does outside the large-value system's hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyTranches {
    /// Wait for the large-value window.
    #[default]
    Wait,
    /// Split into at most `max_tranches` (2 to 100) transactions under the cap.
    Allowed { max_tranches: u32 },
}

impl From<PolicyTranches> for treasury::planner::TranchePolicy {
    fn from(t: PolicyTranches) -> Self {
        match t {
            PolicyTranches::Wait => treasury::planner::TranchePolicy::Never,
            PolicyTranches::Allowed { max_tranches } => {
                treasury::planner::TranchePolicy::Allowed { max_tranches }
            }
        }
    }
}

impl From<treasury::planner::TranchePolicy> for PolicyTranches {
    fn from(t: treasury::planner::TranchePolicy) -> Self {
        match t {
            treasury::planner::TranchePolicy::Never => PolicyTranches::Wait,
            treasury::planner::TranchePolicy::Allowed { max_tranches } => {
                PolicyTranches::Allowed { max_tranches }
            }
        }
    }
}

impl Validate for PolicyBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for kind in &rule.when.kinds {
                if kind.parse::<InstructionKind>().is_err() {
                    errors.push(FieldError::new(
                        format!("rules[{i}].when.kinds"),
                        format!(
                            "unknown kind {kind:?}: sub_account_transfer, payout, freeze or unfreeze"
                        ),
                    ));
                }
            }
        }
        errors
    }
}

/// The approval policy in force.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// The stored version in force; absent while the configured default applies.
    pub version: Option<i32>,
    #[serde(flatten)]
    pub policy: PolicyBody,
    pub set_by: Option<String>,
    pub set_at: Option<DateTime<Utc>>,
}

fn policy_view(
    policy: &treasury::approval::ApprovalPolicy,
    row: Option<&entities::treasury_policies::Model>,
) -> PolicyView {
    let config = policy.config();
    PolicyView {
        version: row.map(|r| r.version),
        policy: PolicyBody {
            rules: config
                .rules
                .into_iter()
                .map(|r| PolicyRule {
                    name: r.name,
                    when: PolicyCondition {
                        amount_above: r.when.amount_above,
                        kinds: r.when.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
                        new_creditor: r.when.new_creditor,
                    },
                    steps: r
                        .steps
                        .into_iter()
                        .map(|s| PolicyStep {
                            role: s.role.0,
                            approvals: s.approvals,
                            eligible: s.eligible.into_iter().map(|u| u.0).collect(),
                        })
                        .collect(),
                })
                .collect(),
            valid_for_minutes: config.valid_for_minutes,
            tranches: config.tranches.into(),
        },
        set_by: row.map(|r| r.set_by.clone()),
        set_at: row.map(|r| r.set_at),
    }
}

/// The approval policy in force: which instructions need whose approval.
#[utoipa::path(
    get,
    path = "/v1/treasury/approval-policy",
    tag = "treasury",
    responses(
        (status = 200, description = "The policy in force", body = PolicyView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<PolicyView>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let ctx = context(&state)?;
    let stored = treasury::policies::current(&state.db).await?;
    Ok(axum::Json(match &stored {
        Some((policy, row)) => policy_view(policy, Some(row)),
        None => policy_view(ctx.executor.instructions.default_policy(), None),
    }))
}

/// Put a new approval policy in force (the platform operator's administrators). It applies
/// to every approval from now on, pending instructions included; earlier versions are kept.
#[utoipa::path(
    post,
    path = "/v1/treasury/approval-policy",
    tag = "treasury",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = PolicyBody,
    responses(
        (status = 201, description = "The new policy, in force", body = PolicyView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<PolicyBody>,
) -> Result<Response, ApiError> {
    authorize(
        &caller,
        Action::ManageApprovalPolicy,
        &caller.org,
        "organisation",
    )?;
    if caller.org.kind != crate::policy::OrgKind::PlatformOperator {
        return Err(ApiError::forbidden(
            "the approval policy is set by the platform operator's administrators",
        ));
    }
    context(&state)?;
    let by = username(&caller)?;
    use treasury::approval::{Condition, PolicyConfig, Role, Rule, Step};
    let config = PolicyConfig {
        rules: body
            .rules
            .iter()
            .map(|r| Rule {
                name: r.name.clone(),
                when: Condition {
                    amount_above: r.when.amount_above,
                    kinds: r.when.kinds.iter().filter_map(|k| k.parse().ok()).collect(),
                    new_creditor: r.when.new_creditor,
                },
                steps: r
                    .steps
                    .iter()
                    .map(|s| Step {
                        role: Role::new(&s.role),
                        approvals: s.approvals,
                        eligible: s.eligible.iter().map(|u| UserId(u.clone())).collect(),
                    })
                    .collect(),
            })
            .collect(),
        valid_for_minutes: body.valid_for_minutes,
        tranches: body.tranches.into(),
    };
    let row = treasury::policies::set(&state.db, config, &by.0, Utc::now())
        .await
        .map_err(|e| match e {
            treasury::policies::PolicyStoreError::Invalid(
                e @ treasury::approval::PolicyError::TrancheLimit(_),
            ) => ApiError::validation(vec![FieldError::new("tranches", e.to_string())]),
            treasury::policies::PolicyStoreError::Invalid(e) => {
                ApiError::validation(vec![FieldError::new("rules", e.to_string())])
            }
            treasury::policies::PolicyStoreError::Concurrent => ApiError::conflict(e.to_string()),
            other => ApiError::internal(anyhow::Error::new(other)),
        })?;
    let (policy, _) = treasury::policies::current(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the policy just stored is gone")))?;
    tracing::info!(version = row.version, "approval policy set");
    let view = policy_view(&policy, Some(&row));
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(txn, StatusCode::CREATED, Some(&view), None, None)
        .await
}

/// A legal entity's own account to register for payouts.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e9",
    "holder_name": "Taicang Depot Co., Ltd.",
    "account_number": "6222020200000000301",
    "bank_code": "102100099996",
    "branch_name": "ICBC Taicang Branch"
}))]
pub struct RegisterExternalAccount {
    /// The organisation that holds the account, in the caller's subtree.
    pub organisation_id: Uuid,
    /// 1 to 140 characters, as the bank knows the holder.
    pub holder_name: String,
    pub account_number: String,
    /// The CNAPS code of the branch that keeps the account (12 digits).
    pub bank_code: String,
    pub branch_name: String,
}

impl Validate for RegisterExternalAccount {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = AccountNumber::new(self.account_number.clone()) {
            errors.push(FieldError::new("account_number", e.to_string()));
        }
        if let Err(e) = BankCode::new(self.bank_code.clone()) {
            errors.push(FieldError::new("bank_code", e.to_string()));
        }
        check_text("holder_name", &self.holder_name, 140, &mut errors);
        check_text("branch_name", &self.branch_name, 140, &mut errors);
        errors
    }
}

/// Register an organisation's own bank account as a payout creditor (treasury makers). The
/// first payment to it counts as one to a new creditor for the approval policy. Registering
/// the same account with the same details again returns it.
#[utoipa::path(
    post,
    path = "/v1/treasury/external-accounts",
    tag = "treasury",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = RegisterExternalAccount,
    responses(
        (status = 201, description = "Registered", body = ExternalAccount),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn register_external_account(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<RegisterExternalAccount>,
) -> Result<Response, ApiError> {
    authorize(
        &caller,
        Action::MakeInstructions,
        &caller.org,
        "organisation",
    )?;
    let by = username(&caller)?;
    let org = crate::directory::find_org(&state.db, body.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(&caller, Action::MakeInstructions, &org, "organisation")?;
    let owner = organisations::Entity::find_by_id(org.id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?
        .ledger_owner;
    let invalid = |field: &str, e: String| ApiError::validation(vec![FieldError::new(field, e)]);
    let registered = treasury::accounts::register(
        &state.db,
        treasury::accounts::NewExternalAccount {
            owner_org: owner,
            holder_name: body.holder_name.trim().to_owned(),
            account: AccountNumber::new(body.account_number.clone())
                .map_err(|e| invalid("account_number", e.to_string()))?,
            bank: BankCode::new(body.bank_code.clone())
                .map_err(|e| invalid("bank_code", e.to_string()))?,
            branch_name: body.branch_name.trim().to_owned(),
        },
        &by.0,
        Utc::now(),
    )
    .await
    .map_err(|e| match e {
        treasury::accounts::AccountError::Conflict { .. } => ApiError::conflict(e.to_string()),
        treasury::accounts::AccountError::InvalidName => invalid("holder_name", e.to_string()),
        other => ApiError::internal(anyhow::Error::new(other)),
    })?;
    let view = ExternalAccount {
        id: registered.id,
        organisation_id: org.id,
        holder_name: registered.details.holder_name,
        account_number: registered.details.account.as_str().to_owned(),
        bank_code: registered.details.bank.as_str().to_owned(),
        branch_name: registered.details.branch_name,
    };
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(txn, StatusCode::CREATED, Some(&view), None, None)
        .await
}

/// The business calendar the rails follow.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CalendarView {
    /// Days without business although they are weekdays (or weekend days inside a holiday).
    pub holidays: Vec<NaiveDate>,
    /// Saturdays and Sundays that are working days (调休).
    pub makeup_working_days: Vec<NaiveDate>,
}

/// The business calendar: public holidays and make-up working days, as configured.
#[utoipa::path(
    get,
    path = "/v1/treasury/calendar",
    tag = "treasury",
    responses(
        (status = 200, description = "The calendar", body = CalendarView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn get_calendar(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<CalendarView>, ApiError> {
    authorize(&caller, Action::ReadTreasury, &caller.org, "organisation")?;
    let ctx = context(&state)?;
    let config = ctx.executor.rails.calendar().config();
    Ok(axum::Json(CalendarView {
        holidays: config.holidays,
        makeup_working_days: config.makeup_working_days,
    }))
}
