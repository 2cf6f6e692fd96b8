//! Partner-app orders: a partner (a freight or fleet platform) pushes an order its driver
//! already paid in the partner's app to a terminal of a station that signed it on; the till
//! prints the ticket, and the order counts in the shift like any sale, owed by the partner.
//!
//! - The **station company** (or an administrator) signs a partner onto a station with the
//!   contract's terms (commission, settlement cycle, single-order limit), amends them, and
//!   disables or enables the contract (`/v1/stations/{station_id}/partner-contracts`).
//! - The **partner** lists the stations it may serve with their terminals
//!   (`GET /v1/partner/stations`), pushes orders from its system with a signed request
//!   (`POST /v1/partner/orders`; its order number is the idempotency key: the same number and
//!   content is the same order, other content 409) and reads its orders by its own number.
//!   A terminal of a station that never signed the partner is not found; a disabled contract
//!   is refused (403); a terminal without an open shift takes no order (409).
//! - The **till** lists the orders pushed to it that it has not printed, with their tickets,
//!   and acknowledges each print (idempotent).
//!
//! When the partner's transfer reaches the station's bank account, the station company records
//! it against the contract (`/v1/stations/{station_id}/partner-contracts/{contract_id}/settlements`):
//! booked to the station's bank account and off what the partner owes, once per bank
//! reference of the transfer.
//!
//! A refund of a partner order is asked for at the till like any refund
//! (`POST /v1/terminals/{terminal_id}/refunds`): it is given back against what the partner
//! owes, never out of the drawer, and the partner is told by the webhook event
//! `partner_orders.refunded`, so that it refunds its driver.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use payments::partners::{self, ContractTerms, NewPartnerOrder, PushRefusal, Pushed, TermsError};
use payments::sales::{self, Sale};
use payments::shifts;
use payments::stations;
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{partner_contracts, partner_orders, pos_payments};

use crate::directory::{find_org, now};
use crate::error::responses::*;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgKind, Subject, authorize};
use crate::routes::payments::{
    Line, from_line, is_code, ledger_owner, minor, person, station, store_error,
    terminal_key_param, till, to_line,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contracts, sign_contract))
        .routes(routes!(disable_contract))
        .routes(routes!(enable_contract))
        .routes(routes!(list_settlements, record_settlement))
        .routes(routes!(reverse_settlement))
        .routes(routes!(partner_stations))
        .routes(routes!(push_order))
        .routes(routes!(get_order))
        .routes(routes!(till_orders))
        .routes(routes!(mark_printed))
}

/// The caller acts for a partner organisation with `action`.
fn partner_caller(caller: &Caller, action: Action) -> Result<(), ApiError> {
    authorize(caller, action, &caller.org, "organisation")?;
    if caller.org.kind != OrgKind::Partner {
        return Err(ApiError::forbidden(
            "partner orders are a partner organisation's",
        ));
    }
    Ok(())
}

fn refusal(refusal: PushRefusal) -> ApiError {
    match refusal {
        // The station never signed the partner: its terminal is answered like a missing one.
        PushRefusal::NoContract => ApiError::not_found("terminal"),
        PushRefusal::ContractDisabled { .. } => ApiError::forbidden(refusal.to_string()),
        PushRefusal::TerminalDisabled | PushRefusal::NoOpenShift => {
            ApiError::conflict(refusal.to_string())
        }
        PushRefusal::OverLimit { .. } => {
            ApiError::validation(vec![FieldError::new("amount", refusal.to_string())])
        }
    }
}

// ---------------------------------------------------------------------------------------
// Contracts (station company)
// ---------------------------------------------------------------------------------------

/// A partner signed onto a station, with the terms its orders are booked under.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-bb00-7000-8000-000000000001",
    "partner_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e6",
    "partner_name": "Yunlian Freight",
    "station_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "station_name": "No. 1 Gaoxin Road",
    "status": "active",
    "commission_rate": "0.005",
    "settlement_days": 1,
    "single_limit": "3000.00",
    "currency": "CNY",
    "owed": "1492.50",
    "receivable_account_id": "5f0c6a9e-0000-5000-8000-000000000001",
    "commission_account_id": "5f0c6a9e-0000-5000-8000-000000000002",
    "signed_by": "station-owner",
    "status_changed_by": "station-owner",
    "status_reason": "signed",
    "created_at": "2026-11-28T08:00:00Z",
    "updated_at": "2026-11-28T08:00:00Z"
}))]
pub struct PartnerContract {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub partner_name: String,
    pub station_id: Uuid,
    pub station_name: String,
    /// `active` (the partner may push orders) or `disabled`.
    pub status: String,
    /// The partner's commission as a fraction of each order, deducted from what it owes.
    pub commission_rate: Decimal,
    /// The partner pays a business day's orders within this many days.
    pub settlement_days: u32,
    /// The largest order the partner may push.
    pub single_limit: Decimal,
    pub currency: String,
    /// What the partner owes the station now, as the ledger has it: its orders less its
    /// commissions and refunds.
    pub owed: Decimal,
    /// The station's ledger account of what the partner owes.
    pub receivable_account_id: Uuid,
    /// The station's ledger account of the partner's commissions.
    pub commission_account_id: Uuid,
    pub signed_by: String,
    /// Who last signed, amended, enabled or disabled the contract, and why.
    pub status_changed_by: String,
    pub status_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

async fn contract_view(
    state: &AppState,
    row: partner_contracts::Model,
) -> Result<PartnerContract, ApiError> {
    let terms = ContractTerms::of(&row).map_err(store_error)?;
    let owed = state
        .ledger
        .balance(row.receivable_account_id)
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?
        .posted
        .amount();
    Ok(PartnerContract {
        partner_name: partners::organisation_name(&state.db, row.partner_id)
            .await
            .map_err(store_error)?,
        station_name: partners::organisation_name(&state.db, row.station_id)
            .await
            .map_err(store_error)?,
        id: row.id,
        partner_id: row.partner_id,
        station_id: row.station_id,
        status: row.status,
        commission_rate: terms.commission_rate.rate().normalize(),
        settlement_days: terms.settlement_days,
        single_limit: terms.single_limit.amount(),
        currency: row.currency,
        owed,
        receivable_account_id: row.receivable_account_id,
        commission_account_id: row.commission_account_id,
        signed_by: row.signed_by,
        status_changed_by: row.status_changed_by,
        status_reason: row.status_reason,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Signing a partner onto a station, or amending the terms of its contract.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "partner_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e6",
    "commission_rate": "0.005",
    "settlement_days": 1,
    "single_limit": "3000.00"
}))]
pub struct SignContract {
    /// The partner organisation.
    pub partner_id: Uuid,
    /// The partner's commission as a fraction of each order (0.005 is 0.5 %), at most six
    /// decimals; deducted from what the partner owes and not given back by refunds.
    pub commission_rate: Decimal,
    /// The partner pays a business day's orders within this many days (T+N), 0 to 90.
    pub settlement_days: u32,
    /// The largest order the partner may push, CNY.
    pub single_limit: Decimal,
}

impl SignContract {
    fn terms(&self) -> Result<ContractTerms, TermsError> {
        ContractTerms::new(
            self.commission_rate,
            self.settlement_days,
            self.single_limit,
        )
    }
}

impl Validate for SignContract {
    fn validate(&self) -> Vec<FieldError> {
        match self.terms() {
            Ok(_) => vec![],
            Err(e) => {
                let field = match e {
                    TermsError::CommissionRate => "commission_rate",
                    TermsError::SettlementDays => "settlement_days",
                    TermsError::SingleLimit => "single_limit",
                };
                vec![FieldError::new(field, e.to_string())]
            }
        }
    }
}

/// The partners signed onto the station, with their terms and what each owes.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/partner-contracts",
    tag = "partner-orders",
    params(("station_id" = Uuid, Path, description = "Station id")),
    responses(
        (status = 200, description = "The station's contracts, oldest first", body = Vec<PartnerContract>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_contracts(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
) -> Result<axum::Json<Vec<PartnerContract>>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let rows = partners::station_contracts(&state.db, station_id)
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(contract_view(&state, row).await?);
    }
    Ok(axum::Json(out))
}

/// Sign a partner onto the station (station company): from now on the partner may push
/// orders to the station's terminals, owed to the station under these terms. Signing a
/// partner the station has a contract with amends its terms (200) for orders pushed from
/// then on, and leaves it enabled or disabled as it was.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/partner-contracts",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = SignContract,
    responses(
        (status = 201, description = "Signed: the new contract", body = PartnerContract),
        (status = 200, description = "The existing contract with its terms amended", body = PartnerContract),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn sign_contract(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(station_id): Path<Uuid>,
    Json(body): Json<SignContract>,
) -> Result<Response, ApiError> {
    let org = station(&state, &caller, Action::ManageStations, station_id).await?;
    let (_, by) = person(&caller)?;
    let terms = body
        .terms()
        .map_err(|e| ApiError::validation(vec![FieldError::new("body", e.to_string())]))?;
    let partner = find_org(&state.db, body.partner_id).await?;
    if partner.is_none_or(|p| p.kind != OrgKind::Partner) {
        return Err(ApiError::validation(vec![FieldError::new(
            "partner_id",
            "no partner organisation has this id",
        )]));
    }
    // The accounts exist before the first order; opening them again finds them.
    let owner = ledger_owner(&state, org.id).await?;
    partners::open_partner_accounts(&state.ledger, station_id, &owner, body.partner_id)
        .await
        .map_err(store_error)?;
    let txn = entities::db::begin_write(&state.db).await?;
    let signed = partners::sign_contract(&txn, station_id, body.partner_id, &terms, &by, now())
        .await
        .map_err(store_error)?;
    let id = signed.contract.id;
    let view = contract_view(&state, signed.contract).await?;
    let status = if signed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    claim
        .commit(
            txn,
            status,
            Some(&view),
            Some(format!("/v1/stations/{station_id}/partner-contracts/{id}")),
            None,
        )
        .await
}

/// Why a contract is disabled.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "settlement two weeks overdue"}))]
pub struct DisableContract {
    /// 1 to 200 characters; the partner sees it when its orders are refused.
    pub reason: String,
}

impl Validate for DisableContract {
    fn validate(&self) -> Vec<FieldError> {
        if self.reason.trim().is_empty() || self.reason.chars().count() > 200 {
            vec![FieldError::new("reason", "1 to 200 characters")]
        } else {
            vec![]
        }
    }
}

async fn change_status(
    state: &AppState,
    caller: &Caller,
    claim: IdempotencyClaim,
    station_id: Uuid,
    contract_id: Uuid,
    active: bool,
    reason: String,
) -> Result<Response, ApiError> {
    station(state, caller, Action::ManageStations, station_id).await?;
    let (_, by) = person(caller)?;
    let txn = entities::db::begin_write(&state.db).await?;
    let row =
        partners::set_contract_status(&txn, station_id, contract_id, active, &by, &reason, now())
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("contract"))?;
    let view = contract_view(state, row).await?;
    claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await
}

/// Disable a contract (station company): the partner's further orders to the station are
/// refused with the reason; orders already taken stand and stay owed. Disabling a disabled
/// contract changes nothing.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/partner-contracts/{contract_id}/disable",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("contract_id" = Uuid, Path, description = "Contract id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = DisableContract,
    responses(
        (status = 200, description = "The contract, disabled", body = PartnerContract),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(contract = %contract_id))]
async fn disable_contract(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, contract_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<DisableContract>,
) -> Result<Response, ApiError> {
    let reason = body.reason.trim().to_owned();
    change_status(
        &state,
        &caller,
        claim,
        station_id,
        contract_id,
        false,
        reason,
    )
    .await
}

/// Enable a contract again (station company). Enabling an active contract changes nothing.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/partner-contracts/{contract_id}/enable",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("contract_id" = Uuid, Path, description = "Contract id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The contract, active", body = PartnerContract),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(contract = %contract_id))]
async fn enable_contract(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, contract_id)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    change_status(
        &state,
        &caller,
        claim,
        station_id,
        contract_id,
        true,
        "enabled".into(),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Settlements (station company)
// ---------------------------------------------------------------------------------------

/// A transfer a station received from a partner against its contract.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-cc00-7000-8000-000000000001",
    "contract_id": "0193a5c2-bb00-7000-8000-000000000001",
    "partner_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e6",
    "station_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "reference": "CMB20261129000173",
    "amount": "1492.50",
    "currency": "CNY",
    "received_on": "2026-11-29",
    "entry_id": "0193a5c2-dd00-7000-8000-000000000001",
    "recorded_by": "station-owner",
    "recorded_at": "2026-11-29T09:12:00Z",
    "reversal": null
}))]
pub struct PartnerSettlement {
    pub id: Uuid,
    pub contract_id: Uuid,
    pub partner_id: Uuid,
    pub station_id: Uuid,
    /// The bank's reference of the transfer.
    pub reference: String,
    pub amount: Decimal,
    pub currency: String,
    /// The value date on the station's bank statement.
    pub received_on: NaiveDate,
    /// The ledger entry that booked it: the station's bank account debited, the partner's
    /// receivable credited.
    pub entry_id: Uuid,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    /// Present when the settlement was reversed as recorded by mistake.
    pub reversal: Option<SettlementReversal>,
}

/// Who reversed a settlement, when and why, and the entry that did it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SettlementReversal {
    pub reversed_by: String,
    pub reversed_at: DateTime<Utc>,
    pub reason: String,
    /// The ledger entry that took the amount back out of the bank account and put it back
    /// on what the partner owes.
    pub entry_id: Uuid,
}

fn settlement_view(
    row: entities::partner_settlements::Model,
) -> Result<PartnerSettlement, ApiError> {
    let amount = sales::stored_money(row.amount_minor, &row.currency).map_err(store_error)?;
    let received_on = row.received_on.parse().map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "settlement {} has value date {:?}: {e}",
            row.id,
            row.received_on
        ))
    })?;
    let reversal = match (
        row.reversed_at,
        row.reversed_by,
        row.reversal_reason,
        row.reversal_entry_id,
    ) {
        (Some(reversed_at), Some(reversed_by), Some(reason), Some(entry_id)) => {
            Some(SettlementReversal {
                reversed_by,
                reversed_at,
                reason,
                entry_id,
            })
        }
        _ => None,
    };
    Ok(PartnerSettlement {
        id: row.id,
        contract_id: row.contract_id,
        partner_id: row.partner_id,
        station_id: row.station_id,
        reference: row.reference,
        amount: amount.amount(),
        currency: row.currency,
        received_on,
        entry_id: row.entry_id,
        recorded_by: row.recorded_by,
        recorded_at: row.created_at,
        reversal,
    })
}

/// A transfer from the partner, as the station's bank statement shows it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "reference": "CMB20261129000173",
    "amount": "1492.50",
    "received_on": "2026-11-29"
}))]
pub struct RecordSettlement {
    /// The bank's reference of the transfer, 1 to 64 characters without spaces: a transfer
    /// is recorded once per contract and reference.
    pub reference: String,
    /// CNY, positive, at most two decimals. More than the partner owes is booked in full and
    /// leaves the partner in credit.
    pub amount: Decimal,
    /// The value date on the station's bank statement; not later than today (Asia/Shanghai).
    pub received_on: NaiveDate,
}

impl RecordSettlement {
    fn settlement(&self) -> Result<partners::NewSettlement, Vec<FieldError>> {
        let mut errors = Vec::new();
        let reference = self.reference.trim();
        if reference.is_empty()
            || reference.chars().count() > 64
            || reference.chars().any(char::is_whitespace)
        {
            errors.push(FieldError::new(
                "reference",
                "1 to 64 characters without spaces",
            ));
        }
        let amount = match ledger::Money::new(self.amount, ledger::Currency::CNY) {
            Ok(m) if m.is_positive() => Some(m),
            Ok(_) => {
                errors.push(FieldError::new("amount", "must be positive"));
                None
            }
            Err(e) => {
                errors.push(FieldError::new("amount", e.to_string()));
                None
            }
        };
        if self.received_on > sales::business_date(now()) {
            errors.push(FieldError::new(
                "received_on",
                "a transfer cannot have been received after today",
            ));
        }
        match amount {
            Some(amount) if errors.is_empty() => Ok(partners::NewSettlement {
                reference: reference.to_owned(),
                amount,
                received_on: self.received_on,
            }),
            _ => Err(errors),
        }
    }
}

impl Validate for RecordSettlement {
    fn validate(&self) -> Vec<FieldError> {
        self.settlement().err().unwrap_or_default()
    }
}

/// A recorded settlement and the contract after it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SettlementRecorded {
    pub settlement: PartnerSettlement,
    /// The contract as it stands, with what the partner owes now (below zero: in credit).
    pub contract: PartnerContract,
}

/// The contract of the station with `contract_id`.
async fn contract_of_station(
    state: &AppState,
    station_id: Uuid,
    contract_id: Uuid,
) -> Result<partner_contracts::Model, ApiError> {
    partner_contracts::Entity::find_by_id(contract_id)
        .one(&state.db)
        .await?
        .filter(|c| c.station_id == station_id)
        .ok_or_else(|| ApiError::not_found("contract"))
}

/// Record a transfer the station received from the partner (station company): booked to the
/// station's bank account and off what the partner owes. A bank reference stands once per
/// contract: the same transfer again answers the settlement as recorded (200), another
/// amount or value date under the same reference is a conflict (409) and books nothing. A
/// settlement recorded by mistake is reversed (`…/settlements/{id}/reverse`), and its
/// reference may then be recorded again.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/partner-contracts/{contract_id}/settlements",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("contract_id" = Uuid, Path, description = "Contract id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = RecordSettlement,
    responses(
        (status = 201, description = "Recorded and booked", body = SettlementRecorded),
        (status = 200, description = "The transfer was recorded before under this reference", body = SettlementRecorded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(contract = %contract_id))]
async fn record_settlement(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, contract_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<RecordSettlement>,
) -> Result<Response, ApiError> {
    station(&state, &caller, Action::ManageStations, station_id).await?;
    let (_, by) = person(&caller)?;
    let settlement = body.settlement().map_err(ApiError::validation)?;
    let contract = contract_of_station(&state, station_id, contract_id).await?;
    let hash = settlement.request_hash().map_err(store_error)?;
    // Recorded before: answered as it was, and nothing is booked again.
    let earlier = partners::standing_settlement(&state.db, contract.id, &settlement.reference)
        .await
        .map_err(store_error)?;
    let (status, row, txn) = if let Some(earlier) = earlier {
        let row = partners::same_settlement(earlier, &hash).map_err(store_error)?;
        (
            StatusCode::OK,
            row,
            entities::db::begin_write(&state.db).await?,
        )
    } else {
        // Booked first: a request cut short after this has moved the money, and its retry
        // (the same attempt, so the ledger answers the same entry) writes the row. The
        // writing transaction begins after the ledger's commit, which on SQLite needs the
        // write lock.
        let attempt = partners::next_attempt(&state.db, contract.id, &settlement.reference)
            .await
            .map_err(store_error)?;
        let receipt = state
            .ledger
            .post_entry(partners::settlement_entry(&contract, &settlement, attempt))
            .await
            .map_err(|e| match e {
                ledger::LedgerError::IdempotencyConflict { .. } => ApiError::conflict(format!(
                    "bank reference {} was booked with another amount or value date",
                    settlement.reference
                )),
                other => ApiError::internal(anyhow::Error::new(other)),
            })?;
        let txn = entities::db::begin_write(&state.db).await?;
        let recorded = partners::record_settlement(
            &txn,
            &contract,
            &settlement,
            attempt,
            receipt.entry_id,
            &by,
            now(),
        )
        .await
        .map_err(store_error)?;
        match recorded {
            partners::Recorded::New(row) => (StatusCode::CREATED, row, txn),
            partners::Recorded::Existing(row) => (StatusCode::OK, row, txn),
        }
    };
    let view = SettlementRecorded {
        settlement: settlement_view(row)?,
        contract: contract_view(&state, contract).await?,
    };
    claim.commit(txn, status, Some(&view), None, None).await
}

/// Why a settlement is reversed.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "amount keyed as 1942.50; the statement says 1492.50"}))]
pub struct ReverseSettlement {
    /// 1 to 200 characters.
    pub reason: String,
}

impl Validate for ReverseSettlement {
    fn validate(&self) -> Vec<FieldError> {
        if self.reason.trim().is_empty() || self.reason.chars().count() > 200 {
            vec![FieldError::new("reason", "1 to 200 characters")]
        } else {
            vec![]
        }
    }
}

/// Reverse a settlement recorded by mistake (station company): the amount leaves the
/// station's bank account again and is owed by the partner again, by an entry of its own; the
/// settlement stays listed with its reversal, and its bank reference may be recorded again.
/// Reversing a reversed settlement changes nothing.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/partner-contracts/{contract_id}/settlements/{settlement_id}/reverse",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("contract_id" = Uuid, Path, description = "Contract id"),
        ("settlement_id" = Uuid, Path, description = "Settlement id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = ReverseSettlement,
    responses(
        (status = 200, description = "The settlement, reversed, and the contract after it", body = SettlementRecorded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(settlement = %settlement_id))]
async fn reverse_settlement(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, contract_id, settlement_id)): Path<(Uuid, Uuid, Uuid)>,
    Json(body): Json<ReverseSettlement>,
) -> Result<Response, ApiError> {
    station(&state, &caller, Action::ManageStations, station_id).await?;
    let (_, by) = person(&caller)?;
    let contract = contract_of_station(&state, station_id, contract_id).await?;
    let mut row = partners::settlement(&state.db, contract.id, settlement_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    // Booked first, like the settlement (a retry finds the same reversal entry); the writing
    // transaction begins after the ledger's commit, which on SQLite needs the write lock.
    let reversal = if row.reversed_at.is_none() {
        let entry = partners::reversal_entry(&contract, &row).map_err(store_error)?;
        let receipt = state
            .ledger
            .post_entry(entry)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
        Some(receipt.entry_id)
    } else {
        None
    };
    let txn = entities::db::begin_write(&state.db).await?;
    if let Some(entry_id) = reversal {
        row = partners::mark_reversed(&txn, row.id, entry_id, &by, body.reason.trim(), now())
            .await
            .map_err(store_error)?;
    }
    let view = SettlementRecorded {
        settlement: settlement_view(row)?,
        contract: contract_view(&state, contract).await?,
    };
    claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await
}

/// Which of the contract's settlements.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SettlementsQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

crate::page_type!(
    PartnerSettlementPage,
    PartnerSettlement,
    "partner settlements"
);

/// The transfers recorded from the partner on this contract, oldest first.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/partner-contracts/{contract_id}/settlements",
    tag = "partner-orders",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("contract_id" = Uuid, Path, description = "Contract id"),
        SettlementsQuery,
    ),
    responses(
        (status = 200, description = "A page of the contract's settlements", body = PartnerSettlementPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(contract = %contract_id))]
async fn list_settlements(
    State(state): State<AppState>,
    caller: Caller,
    Path((station_id, contract_id)): Path<(Uuid, Uuid)>,
    Query(q): Query<SettlementsQuery>,
) -> Result<axum::Json<PartnerSettlementPage>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let contract = contract_of_station(&state, station_id, contract_id).await?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("partner-settlements", q.cursor.as_deref())?;
    let rows = partners::contract_settlements(&state.db, contract.id, after, limit + 1)
        .await
        .map_err(store_error)?;
    let (rows, next_cursor) = page::split(rows, limit, "partner-settlements", |s| s.id.to_string());
    let items = rows
        .into_iter()
        .map(settlement_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(PartnerSettlementPage { items, next_cursor }))
}

// ---------------------------------------------------------------------------------------
// The partner's side
// ---------------------------------------------------------------------------------------

/// A terminal a partner may push orders to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServedTerminal {
    pub id: Uuid,
    /// The station's own name for the till (`till-1`).
    pub code: String,
    pub name: String,
}

/// A station the partner may serve, with its terms and its terminals.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServedStation {
    pub contract_id: Uuid,
    pub station_id: Uuid,
    pub station_name: String,
    pub commission_rate: Decimal,
    pub settlement_days: u32,
    pub single_limit: Decimal,
    pub currency: String,
    /// What the partner owes the station now.
    pub owed: Decimal,
    /// The station's terminals in service.
    pub terminals: Vec<ServedTerminal>,
}

/// The stations the calling partner may push orders to (its active contracts), with their
/// terminals.
#[utoipa::path(
    get,
    path = "/v1/partner/stations",
    tag = "partner-orders",
    responses(
        (status = 200, description = "The stations the partner may serve", body = Vec<ServedStation>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn partner_stations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<ServedStation>>, ApiError> {
    partner_caller(&caller, Action::ReadPartnerOrders)?;
    let rows = partners::active_contracts_of(&state.db, caller.org.id)
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let terminals = stations::terminals(&state.db, row.station_id)
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|t| t.disabled_at.is_none())
            .map(|t| ServedTerminal {
                id: t.id,
                code: t.code,
                name: t.name,
            })
            .collect();
        let contract = contract_view(&state, row).await?;
        out.push(ServedStation {
            contract_id: contract.id,
            station_id: contract.station_id,
            station_name: contract.station_name,
            commission_rate: contract.commission_rate,
            settlement_days: contract.settlement_days,
            single_limit: contract.single_limit,
            currency: contract.currency,
            owed: contract.owed,
            terminals,
        });
    }
    Ok(axum::Json(out))
}

/// An order the partner pushes.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "order_no": "YL20261128000123",
    "terminal_id": "0193a5c2-aa00-7000-8000-000000000001",
    "amount": "300.00",
    "lines": [{"kind": "fuel", "grade": "0", "litres": "42.553", "nozzle": 5, "amount": "300.00"}],
    "driver_ref": "D-88231",
    "vehicle_plate": "陕A12345"
}))]
pub struct PushOrder {
    /// The partner's own order number: 1 to 64 letters, digits, `-` or `_`. The same number
    /// with the same content is the same order; other content under it is refused (409).
    pub order_no: String,
    /// A terminal of a station the partner may serve (`GET /v1/partner/stations`).
    pub terminal_id: Uuid,
    /// What the driver paid in the partner's app, CNY, to the fen.
    pub amount: Decimal,
    /// What was sold, like a till payment's lines; they sum to the amount.
    pub lines: Vec<Line>,
    /// The partner's reference of the driver: 1 to 64 characters.
    pub driver_ref: String,
    /// The vehicle's plate, 1 to 16 characters, when the partner knows it.
    pub vehicle_plate: Option<String>,
}

fn plain_text(text: &str, max: usize) -> bool {
    let text = text.trim();
    !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

impl Validate for PushOrder {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_code(&self.order_no, 64) {
            errors.push(FieldError::new(
                "order_no",
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let amount = ledger::Money::new(self.amount, ledger::Currency::CNY);
        match &amount {
            Ok(m) if m.is_positive() => {}
            _ => errors.push(FieldError::new("amount", "a positive amount, to the fen")),
        }
        let lines: Result<Vec<_>, String> = self.lines.iter().map(to_line).collect();
        match (lines, amount) {
            (Err(e), _) => errors.push(FieldError::new("lines", e)),
            (Ok(lines), Ok(amount)) => {
                if let Err(e) = (Sale { lines }).validate(amount) {
                    errors.push(FieldError::new("lines", e));
                }
            }
            (Ok(_), Err(_)) => {}
        }
        if !plain_text(&self.driver_ref, 64) {
            errors.push(FieldError::new("driver_ref", "1 to 64 characters"));
        }
        if let Some(plate) = &self.vehicle_plate
            && (!plain_text(plate, 16) || plate.trim().chars().any(char::is_whitespace))
        {
            errors.push(FieldError::new(
                "vehicle_plate",
                "1 to 16 characters without spaces",
            ));
        }
        errors
    }
}

/// A refund of a partner order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderRefund {
    pub refund_no: String,
    pub amount: Decimal,
    /// `pending_approval`, `refunding`, `succeeded`, `rejected`, `expired`, …
    pub status: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A partner order, as the partner and the till see it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PartnerOrder {
    /// The partner's own order number.
    pub order_no: String,
    /// The platform's payment number (what a refund at the till names).
    pub payment_no: String,
    pub partner_id: Uuid,
    pub partner_name: String,
    pub station_id: Uuid,
    pub station_name: String,
    pub terminal_id: Uuid,
    pub terminal_code: String,
    /// The shift the order counts in.
    pub shift_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    /// The partner's commission on the order, deducted from what it owes.
    pub commission: Decimal,
    /// `fuel`, `non_fuel` or `mixed`.
    pub sale_kind: String,
    pub lines: Vec<Line>,
    pub driver_ref: String,
    pub vehicle_plate: Option<String>,
    /// `succeeded` once booked (`pending` only while the push is being completed).
    pub status: String,
    pub reason: String,
    /// Whether the till acknowledged printing the ticket.
    pub printed: bool,
    pub printed_at: Option<DateTime<Utc>>,
    /// Refunded so far; the partner refunds its driver as much.
    pub refunded: Decimal,
    pub refunds: Vec<OrderRefund>,
    pub created_at: DateTime<Utc>,
    /// The ticket as the till prints it (40 columns).
    pub ticket: String,
}

/// Names looked up once per request.
#[derive(Default)]
struct Names {
    organisations: BTreeMap<Uuid, String>,
    terminals: BTreeMap<Uuid, String>,
}

impl Names {
    async fn organisation(
        &mut self,
        db: &impl ConnectionTrait,
        id: Uuid,
    ) -> Result<String, ApiError> {
        if let Some(name) = self.organisations.get(&id) {
            return Ok(name.clone());
        }
        let name = partners::organisation_name(db, id)
            .await
            .map_err(store_error)?;
        self.organisations.insert(id, name.clone());
        Ok(name)
    }

    async fn terminal(&mut self, db: &impl ConnectionTrait, id: Uuid) -> Result<String, ApiError> {
        if let Some(code) = self.terminals.get(&id) {
            return Ok(code.clone());
        }
        let code = stations::terminal(db, id)
            .await
            .map_err(store_error)?
            .map(|t| t.code)
            .unwrap_or_default();
        self.terminals.insert(id, code.clone());
        Ok(code)
    }
}

async fn order_view(
    state: &AppState,
    names: &mut Names,
    order: partner_orders::Model,
    payment: pos_payments::Model,
) -> Result<PartnerOrder, ApiError> {
    let partner_name = names.organisation(&state.db, order.partner_id).await?;
    let station_name = names.organisation(&state.db, order.station_id).await?;
    let terminal_code = names.terminal(&state.db, order.terminal_id).await?;
    let ticket = partners::ticket(&partners::TicketInput {
        station: &station_name,
        terminal: &terminal_code,
        partner: &partner_name,
        order: &order,
        payment: &payment,
    })
    .map_err(store_error)?;
    let sale: Sale = serde_json::from_str(&payment.sale).map_err(ApiError::internal)?;
    let refunds = sales::payment_refunds(&state.db, payment.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|r| OrderRefund {
            refund_no: r.refund_no,
            amount: minor(r.amount_minor),
            status: r.status,
            reason: r.reason,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
        .collect();
    Ok(PartnerOrder {
        order_no: order.partner_order_no,
        payment_no: payment.payment_no,
        partner_id: order.partner_id,
        partner_name,
        station_id: order.station_id,
        station_name,
        terminal_id: order.terminal_id,
        terminal_code,
        shift_id: payment.shift_id,
        amount: minor(payment.amount_minor),
        currency: payment.currency,
        commission: minor(order.commission_minor),
        sale_kind: serde_json::to_value(sale.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        lines: sale.lines.iter().map(from_line).collect(),
        driver_ref: order.driver_ref,
        vehicle_plate: order.vehicle_plate,
        status: payment.status,
        reason: payment.reason,
        printed: order.printed_at.is_some(),
        printed_at: order.printed_at,
        refunded: minor(payment.refunded_minor),
        refunds,
        created_at: order.created_at,
        ticket,
    })
}

/// Completes the order (books it if an interrupted push left it pending) and shows it.
async fn completed_view(
    state: &AppState,
    order: partner_orders::Model,
) -> Result<PartnerOrder, ApiError> {
    let payment = partners::complete(&state.ledger, &order)
        .await
        .map_err(store_error)?;
    order_view(state, &mut Names::default(), order, payment).await
}

/// Push an order a driver already paid in the partner's app to a terminal of a station that
/// signed the partner, with a signed request from the partner's system. It becomes a sale of
/// the terminal's open shift (method `partner_app`), owed by the partner less its
/// commission, and waits at the till for its ticket to be printed. The partner's order number
/// is the idempotency key: pushing the same order again answers it as it stands (200);
/// other content under the number is 409. A terminal of a station without a contract is not
/// found; a disabled contract is 403; a terminal with no open shift is 409.
#[utoipa::path(
    post,
    path = "/v1/partner/orders",
    tag = "partner-orders",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = PushOrder,
    responses(
        (status = 201, description = "The order, booked in the terminal's open shift", body = PartnerOrder),
        (status = 200, description = "The order number's order, as it stands (a retry)", body = PartnerOrder),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(partner = %caller.org.id))]
async fn push_order(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PushOrder>,
) -> Result<Response, ApiError> {
    partner_caller(&caller, Action::PushPartnerOrders)?;
    if !matches!(caller.subject, Subject::ApiKey { .. }) {
        return Err(ApiError::forbidden(
            "orders are pushed by the partner's system with a signed request (an API key), not by a logged-in user",
        ));
    }
    let partner_id = caller.org.id;
    let amount = ledger::Money::new(body.amount, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))?;
    let lines = body
        .lines
        .iter()
        .map(to_line)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::validation(vec![FieldError::new("lines", e)]))?;
    let new = NewPartnerOrder {
        partner_order_no: body.order_no.clone(),
        terminal_id: body.terminal_id,
        amount,
        sale: Sale { lines },
        driver_ref: body.driver_ref.trim().to_owned(),
        vehicle_plate: body.vehicle_plate.as_deref().map(|p| p.trim().to_owned()),
    };
    // A retry is answered with the order as it stands, whatever the contract or shift now.
    if let Some(existing) = partners::existing_order(&state.db, partner_id, &new)
        .await
        .map_err(store_error)?
    {
        let view = completed_view(&state, existing).await?;
        return Ok((StatusCode::OK, axum::Json(view)).into_response());
    }
    let terminal = stations::terminal(&state.db, body.terminal_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    // The contract and the shift are read and held in the transaction that writes the order:
    // a contract disabled or a shift closed meanwhile waits for it, or refuses it.
    let txn = entities::db::begin_write(&state.db).await?;
    let contract = partners::contract_between_in(&txn, partner_id, terminal.station_id)
        .await
        .map_err(store_error)?;
    let checked =
        partners::check_push(contract.as_ref(), &terminal, amount).map_err(store_error)?;
    let (terms, contract, shift) = match (checked, contract) {
        (Ok(terms), Some(contract)) => {
            match shifts::open_shift_in(&txn, terminal.id)
                .await
                .map_err(store_error)?
            {
                Some(shift) => (terms, contract, shift),
                None => {
                    txn.rollback().await?;
                    return Err(refusal(PushRefusal::NoOpenShift));
                }
            }
        }
        (Err(refused), _) => {
            txn.rollback().await?;
            return Err(refusal(refused));
        }
        (Ok(_), None) => {
            txn.rollback().await?;
            return Err(refusal(PushRefusal::NoContract));
        }
    };
    let pushed = partners::push_order(
        &txn,
        &contract,
        &terms,
        &terminal,
        &shift,
        &new,
        &caller.org.name,
        now(),
    )
    .await
    .map_err(store_error)?;
    let (status, order) = match pushed {
        Pushed::New(order) => {
            txn.commit().await?;
            (StatusCode::CREATED, *order)
        }
        Pushed::Taken => {
            // A concurrent push of the same number won: ours writes nothing.
            txn.rollback().await?;
            let existing = partners::existing_order(&state.db, partner_id, &new)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a taken order is gone")))?;
            (StatusCode::OK, existing)
        }
    };
    let view = completed_view(&state, order).await?;
    Ok((status, axum::Json(view)).into_response())
}

/// The calling partner's order by its own order number; another partner's number is not
/// found.
#[utoipa::path(
    get,
    path = "/v1/partner/orders/{order_no}",
    tag = "partner-orders",
    params(("order_no" = String, Path, description = "The partner's own order number")),
    responses(
        (status = 200, description = "The order, with its printing and refunds", body = PartnerOrder),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(partner = %caller.org.id))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_no): Path<String>,
) -> Result<axum::Json<PartnerOrder>, ApiError> {
    partner_caller(&caller, Action::ReadPartnerOrders)?;
    let order = partners::order_by_partner_no(&state.db, caller.org.id, &order_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(axum::Json(completed_view(&state, order).await?))
}

// ---------------------------------------------------------------------------------------
// The till's side
// ---------------------------------------------------------------------------------------

/// Which of the terminal's partner orders.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TillOrdersQuery {
    /// `false` (default): the orders whose ticket is still to print; `true`: those printed.
    pub printed: Option<bool>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

crate::page_type!(PartnerOrderPage, PartnerOrder, "partner orders");

/// The partner orders pushed to this terminal whose ticket it has not printed yet (or, with
/// `printed=true`, those it printed), oldest first, each with its ticket.
#[utoipa::path(
    get,
    path = "/v1/terminals/{terminal_id}/partner-orders",
    tag = "partner-orders",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        TillOrdersQuery,
    ),
    responses(
        (status = 200, description = "A page of the terminal's partner orders", body = PartnerOrderPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn till_orders(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Query(q): Query<TillOrdersQuery>,
) -> Result<axum::Json<PartnerOrderPage>, ApiError> {
    let terminal = till(&state, &caller, Action::ReadPayments, terminal_id, &headers).await?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("partner-orders", q.cursor.as_deref())?;
    let rows = partners::terminal_orders(
        &state.db,
        terminal.id,
        q.printed.unwrap_or(false),
        after,
        limit + 1,
    )
    .await
    .map_err(store_error)?;
    let (rows, next_cursor) = page::split(rows, limit, "partner-orders", |o| o.id.to_string());
    let ids: Vec<Uuid> = rows.iter().map(|o| o.payment_id).collect();
    let mut payments: BTreeMap<Uuid, pos_payments::Model> = if ids.is_empty() {
        BTreeMap::new()
    } else {
        pos_payments::Entity::find()
            .filter(pos_payments::Column::Id.is_in(ids))
            .all(&state.db)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect()
    };
    let mut names = Names::default();
    let mut items = Vec::with_capacity(rows.len());
    for order in rows {
        let mut payment = payments
            .remove(&order.payment_id)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("order without its payment")))?;
        if payment.status == "pending" {
            payment = partners::complete(&state.ledger, &order)
                .await
                .map_err(store_error)?;
        }
        items.push(order_view(&state, &mut names, order, payment).await?);
    }
    Ok(axum::Json(PartnerOrderPage { items, next_cursor }))
}

/// The till printed the order's ticket. Acknowledging again changes nothing (the first
/// print's time stays); an order of another terminal is not found.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/partner-orders/{payment_no}/printed",
    tag = "partner-orders",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("payment_no" = String, Path, description = "The order's payment number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The order, printed", body = PartnerOrder),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn mark_printed(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    headers: HeaderMap,
    Path((terminal_id, payment_no)): Path<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (_, by) = person(&caller)?;
    let txn = entities::db::begin_write(&state.db).await?;
    let order = match partners::mark_printed(&txn, terminal.id, &payment_no, &by, now())
        .await
        .map_err(store_error)?
    {
        Some(Ok(order)) => order,
        Some(Err(refused)) => {
            txn.rollback().await?;
            return Err(ApiError::conflict(refused.to_string()));
        }
        None => {
            txn.rollback().await?;
            return Err(ApiError::not_found("partner order"));
        }
    };
    let payment = pos_payments::Entity::find_by_id(order.payment_id)
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found("partner order"))?;
    let view = order_view(&state, &mut Names::default(), order, payment).await?;
    claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await
}
