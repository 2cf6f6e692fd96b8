//! The station company's stored-value member cards at the till: issue, look up, top up in
//! cash, register to a holder, report lost, and unblock. Paying by card is a payment with
//! method `member_card` (see [`super::payments`]); its refunds go back onto the card.
//!
//! A card belongs to the station company above the station that issued it and works at
//! every station of that company; another company's tills do not find it. The cap (1,000
//! CNY anonymous, 5,000 CNY named) and the balance are held by the ledger, so concurrent
//! tills can neither pass the cap nor overdraw the card.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use payments::cards::{self, CardKind, Issued, NewCard, NewTopUp, TopUpCreated};
use rust_decimal::Decimal;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{pos_card_top_ups, pos_member_cards, pos_terminals};

use super::payments::{
    ledger_owner, minor, open_shift_of, person, store_error, terminal_key_param, till,
};
use crate::directory::now;
use crate::error::responses::*;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Validate};
use crate::policy::{Action, Caller};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_card))
        .routes(routes!(get_card))
        .routes(routes!(top_up))
        .routes(routes!(register_card))
        .routes(routes!(block_card))
        .routes(routes!(unblock_card))
}

/// The organisation that issues the cards a station takes: its station company (the
/// station's parent), or the station itself when it stands alone.
pub(super) async fn issuer_of(state: &AppState, station_id: Uuid) -> Result<Uuid, ApiError> {
    let station = entities::organisations::Entity::find_by_id(station_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("station"))?;
    Ok(station.parent_id.unwrap_or(station.id))
}

async fn card_at_till(
    state: &AppState,
    terminal: &pos_terminals::Model,
    card_no: &str,
) -> Result<pos_member_cards::Model, ApiError> {
    let issuer = issuer_of(state, terminal.station_id).await?;
    cards::card_by_no(&state.db, issuer, card_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("member card"))
}

/// A member card with its money.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "card_no": "8800123456780001",
    "kind": "named",
    "holder_name": "Wang Fang",
    "status": "active",
    "status_reason": null,
    "balance": "320.00",
    "loadable": "4680.00",
    "cap": "5000.00",
    "currency": "CNY",
    "issued_station_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "created_at": "2026-11-23T08:00:00Z"
}))]
pub struct MemberCard {
    pub card_no: String,
    /// `anonymous` (at most 1,000 CNY) or `named` (at most 5,000 CNY).
    pub kind: String,
    pub holder_name: Option<String>,
    /// `active` or `blocked`.
    pub status: String,
    pub status_reason: Option<String>,
    /// What the holder can spend, CNY.
    pub balance: Decimal,
    /// What may still be loaded before the cap, CNY.
    pub loadable: Decimal,
    pub cap: Decimal,
    pub currency: String,
    pub issued_station_id: Uuid,
    pub created_at: DateTime<Utc>,
}

async fn card_view(
    state: &AppState,
    card: pos_member_cards::Model,
) -> Result<MemberCard, ApiError> {
    let funds = cards::funds(&state.ledger, &card)
        .await
        .map_err(store_error)?;
    Ok(MemberCard {
        card_no: card.card_no,
        kind: card.kind,
        holder_name: card.holder_name,
        status: card.status,
        status_reason: card.status_reason,
        balance: funds.balance.amount(),
        loadable: funds.loadable.amount(),
        cap: funds.cap.amount(),
        currency: card.currency,
        issued_station_id: card.issued_station_id,
        created_at: card.created_at,
    })
}

/// A card the till issues.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"card_no": "8800123456780001", "kind": "named", "holder_name": "Wang Fang", "holder_phone": "13800138000"}))]
pub struct IssueCard {
    /// The number printed on the card: 8 to 19 digits.
    pub card_no: String,
    /// `anonymous` or `named`.
    pub kind: CardKindParam,
    /// Required for a named card, absent for an anonymous one.
    pub holder_name: Option<String>,
    pub holder_phone: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardKindParam {
    Anonymous,
    Named,
}

impl IssueCard {
    fn new_card(&self) -> NewCard {
        NewCard {
            card_no: self.card_no.clone(),
            kind: match self.kind {
                CardKindParam::Anonymous => CardKind::Anonymous,
                CardKindParam::Named => CardKind::Named,
            },
            holder_name: self.holder_name.clone(),
            holder_phone: self.holder_phone.clone(),
        }
    }
}

impl Validate for IssueCard {
    fn validate(&self) -> Vec<FieldError> {
        self.new_card()
            .problems()
            .into_iter()
            .map(|(field, message)| FieldError::new(field, message))
            .collect()
    }
}

/// Issue a member card at the till. The card belongs to the station's company and works at
/// all its stations; it starts empty. The same card number with the same details is the
/// same card (200); with other details, 409.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/member-cards",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = IssueCard,
    responses(
        (status = 201, description = "The card, issued", body = MemberCard),
        (status = 200, description = "The card this number already is (a retry)", body = MemberCard),
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
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn issue_card(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Json(body): Json<IssueCard>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (_, cashier) = person(&caller)?;
    let issuer = issuer_of(&state, terminal.station_id).await?;
    let owner = ledger_owner(&state, issuer).await?;
    let issued = cards::issue_card(
        &state.ledger,
        issuer,
        &owner,
        &terminal,
        &cashier,
        &body.new_card(),
        now(),
    )
    .await
    .map_err(store_error)?;
    let (status, card) = match issued {
        Issued::New(card) => (StatusCode::CREATED, card),
        Issued::Replay(card) => (StatusCode::OK, card),
    };
    Ok((status, axum::Json(card_view(&state, card).await?)).into_response())
}

/// A member card as the till sees it: its balance, what may still be loaded, its state.
#[utoipa::path(
    get,
    path = "/v1/terminals/{terminal_id}/member-cards/{card_no}",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("card_no" = String, Path, description = "The card's number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
    ),
    responses(
        (status = 200, description = "The card", body = MemberCard),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn get_card(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, card_no)): Path<(Uuid, String)>,
) -> Result<axum::Json<MemberCard>, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let card = card_at_till(&state, &terminal, &card_no).await?;
    Ok(axum::Json(card_view(&state, card).await?))
}

/// Cash loaded onto a card.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_no": "T1-TOPUP-0001", "amount": "500.00"}))]
pub struct CreateTopUp {
    /// The till's own order number (1 to 32 letters, digits, `-` or `_`): the same number
    /// and content is the same top-up.
    pub order_no: String,
    /// CNY, to the fen, paid in cash.
    pub amount: Decimal,
}

impl Validate for CreateTopUp {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !super::payments::is_code(&self.order_no, 32) {
            errors.push(FieldError::new(
                "order_no",
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        match ledger::Money::new(self.amount, ledger::Currency::CNY) {
            Ok(m) if m.is_positive() => {}
            _ => errors.push(FieldError::new("amount", "a positive amount, to the fen")),
        }
        errors
    }
}

/// A top-up as the till sees it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TopUp {
    pub top_up_no: String,
    pub order_no: String,
    pub card_no: String,
    pub shift_id: Uuid,
    /// How the customer paid for it (`cash`).
    pub method: String,
    pub amount: Decimal,
    /// `succeeded`, `failed` (the cap, or a blocked card: nothing moved) or `pending`.
    pub status: String,
    pub reason: String,
    /// The card after the top-up.
    pub card: MemberCard,
    pub created_at: DateTime<Utc>,
}

async fn top_up_view(
    state: &AppState,
    t: pos_card_top_ups::Model,
    card: pos_member_cards::Model,
) -> Result<TopUp, ApiError> {
    Ok(TopUp {
        top_up_no: t.top_up_no,
        order_no: t.terminal_order_no,
        card_no: card.card_no.clone(),
        shift_id: t.shift_id,
        method: t.method,
        amount: minor(t.amount_minor),
        status: t.status,
        reason: t.reason,
        card: card_view(state, card).await?,
        created_at: t.created_at,
    })
}

/// Load cash onto a member card. The cash counts in the shift's drawer. A load that would
/// pass the card's cap, or onto a blocked card, fails and moves nothing (`failed`, with the
/// reason and what may still be loaded). The same order number and content is the same
/// top-up (200).
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/member-cards/{card_no}/top-ups",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("card_no" = String, Path, description = "The card's number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = CreateTopUp,
    responses(
        (status = 201, description = "The top-up, `succeeded` or `failed`", body = TopUp),
        (status = 200, description = "The order number's top-up (a retry)", body = TopUp),
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
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn top_up(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, card_no)): Path<(Uuid, String)>,
    Json(body): Json<CreateTopUp>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (_, cashier) = person(&caller)?;
    let card = card_at_till(&state, &terminal, &card_no).await?;
    let amount = ledger::Money::new(body.amount, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))?;
    let new = NewTopUp {
        terminal_order_no: body.order_no.clone(),
        amount,
    };
    let at = now();
    // A retry is answered with the top-up as it stands (finished now if a crash cut it short).
    let (status, top_up) = match cards::existing_top_up(&state.db, terminal.id, &card, &new)
        .await
        .map_err(store_error)?
    {
        Some(existing) => (StatusCode::OK, existing),
        None => {
            let shift = open_shift_of(&state, &terminal).await?;
            // The row commits in the shift it re-checks, so nothing lands after its close.
            let txn = entities::db::begin_write(&state.db).await?;
            payments::shifts::open_shift_in(&txn, terminal.id)
                .await
                .map_err(store_error)?
                .filter(|s| s.id == shift.id)
                .ok_or_else(|| ApiError::conflict("the shift closed meanwhile: open one first"))?;
            let created = cards::create_top_up(&txn, &terminal, &shift, &card, &new, &cashier, at)
                .await
                .map_err(store_error)?;
            txn.commit().await?;
            match created {
                TopUpCreated::New(t) => (StatusCode::CREATED, t),
                TopUpCreated::Replay(t) => (StatusCode::OK, t),
            }
        }
    };
    let top_up = cards::book_top_up(&state.ledger, &top_up, &card, at)
        .await
        .map_err(store_error)?;
    // A top-up changes the card's money, in the ledger, not its row.
    Ok((status, axum::Json(top_up_view(&state, top_up, card).await?)).into_response())
}

/// The holder an anonymous card is registered to.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"holder_name": "Wang Fang", "holder_phone": "13800138000"}))]
pub struct RegisterCard {
    pub holder_name: String,
    pub holder_phone: String,
}

impl Validate for RegisterCard {
    fn validate(&self) -> Vec<FieldError> {
        NewCard {
            card_no: "00000000".into(),
            kind: CardKind::Named,
            holder_name: Some(self.holder_name.clone()),
            holder_phone: Some(self.holder_phone.clone()),
        }
        .problems()
        .into_iter()
        .map(|(field, message)| FieldError::new(field, message))
        .collect()
    }
}

/// Register an anonymous card to its holder: its cap rises to 5,000 CNY and it can be
/// reported lost. The same holder again is a replay; another holder, 409.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/member-cards/{card_no}/register",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("card_no" = String, Path, description = "The card's number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = RegisterCard,
    responses(
        (status = 200, description = "The card, named", body = MemberCard),
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
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn register_card(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, card_no)): Path<(Uuid, String)>,
    Json(body): Json<RegisterCard>,
) -> Result<axum::Json<MemberCard>, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let card = card_at_till(&state, &terminal, &card_no).await?;
    let card = cards::register_holder(
        &state.ledger,
        &card,
        &body.holder_name,
        &body.holder_phone,
        now(),
    )
    .await
    .map_err(store_error)?;
    Ok(axum::Json(card_view(&state, card).await?))
}

/// A report of a lost card, checked against the holder's phone.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"holder_phone": "13800138000", "reason": "lost at the car wash"}))]
pub struct BlockCard {
    /// The phone the card is registered with.
    pub holder_phone: String,
    pub reason: String,
}

impl Validate for BlockCard {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.reason.trim().is_empty() || self.reason.chars().count() > 500 {
            errors.push(FieldError::new("reason", "1 to 500 characters"));
        }
        if self.holder_phone.is_empty() || self.holder_phone.len() > 20 {
            errors.push(FieldError::new("holder_phone", "5 to 20 digits, + or -"));
        }
        errors
    }
}

/// Report a named card lost: it can neither pay nor be loaded until a station manager
/// unblocks it; its balance stays the holder's. An anonymous card cannot be reported lost
/// (409): whoever holds it may spend it. Blocking a blocked card changes nothing.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/member-cards/{card_no}/block",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("card_no" = String, Path, description = "The card's number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = BlockCard,
    responses(
        (status = 200, description = "The card, blocked", body = MemberCard),
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
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn block_card(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, card_no)): Path<(Uuid, String)>,
    Json(body): Json<BlockCard>,
) -> Result<axum::Json<MemberCard>, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (_, by) = person(&caller)?;
    let card = card_at_till(&state, &terminal, &card_no).await?;
    if card.kind != "named" {
        return Err(ApiError::conflict(
            "an anonymous card cannot be reported lost: register it to its holder first",
        ));
    }
    if card.holder_phone.as_deref() != Some(body.holder_phone.as_str()) {
        return Err(ApiError::validation(vec![FieldError::new(
            "holder_phone",
            "not the phone the card is registered with",
        )]));
    }
    let reason = format!("reported lost to {by}: {}", body.reason.trim());
    let card = cards::set_blocked(&state.db, &card, true, &reason, now())
        .await
        .map_err(store_error)?;
    Ok(axum::Json(card_view(&state, card).await?))
}

/// Why a station manager unblocks a card.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "found by the holder, identity checked"}))]
pub struct UnblockCard {
    pub reason: String,
}

impl Validate for UnblockCard {
    fn validate(&self) -> Vec<FieldError> {
        if self.reason.trim().is_empty() || self.reason.chars().count() > 500 {
            vec![FieldError::new("reason", "1 to 500 characters")]
        } else {
            Vec::new()
        }
    }
}

/// Unblock a card (station managers only), with the reason kept on the card.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/member-cards/{card_no}/unblock",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("card_no" = String, Path, description = "The card's number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = UnblockCard,
    responses(
        (status = 200, description = "The card, active", body = MemberCard),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn unblock_card(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, card_no)): Path<(Uuid, String)>,
    Json(body): Json<UnblockCard>,
) -> Result<axum::Json<MemberCard>, ApiError> {
    let terminal = till(
        &state,
        &caller,
        Action::ApproveRefunds,
        terminal_id,
        &headers,
    )
    .await?;
    let (_, by) = person(&caller)?;
    let card = card_at_till(&state, &terminal, &card_no).await?;
    let reason = format!("unblocked by {by}: {}", body.reason.trim());
    let card = cards::set_blocked(&state.db, &card, false, &reason, now())
        .await
        .map_err(store_error)?;
    Ok(axum::Json(card_view(&state, card).await?))
}
