use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use ledger::{Account, Balance, StatementQuery};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{ledger_accounts, organisations};

use crate::directory::{self, org_ref};
use crate::error::ApiError;
use crate::error::responses::*;
use crate::extract::{Path, Query};
use crate::page;
use crate::policy::{Action, Caller, OrgRef, authorize};
use crate::routes::subtree;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts))
        .routes(routes!(get_account))
        .routes(routes!(get_balance))
        .routes(routes!(get_statement))
}

/// An account's balances, as decimal strings in the account's currency.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "currency": "CNY",
    "posted": "182500.00",
    "available": "180000.00",
    "debits_posted": "17500.00",
    "credits_posted": "200000.00",
    "debits_pending": "2500.00",
    "credits_pending": "0.00"
}))]
pub struct BalanceView {
    pub currency: String,
    /// Posted balance on the account's normal side.
    #[schema(value_type = String)]
    pub posted: Decimal,
    /// What can still be spent: posted, less pending reservations, plus any credit limit.
    #[schema(value_type = String)]
    pub available: Decimal,
    #[schema(value_type = String)]
    pub debits_posted: Decimal,
    #[schema(value_type = String)]
    pub credits_posted: Decimal,
    #[schema(value_type = String)]
    pub debits_pending: Decimal,
    #[schema(value_type = String)]
    pub credits_pending: Decimal,
}

impl From<&Balance> for BalanceView {
    fn from(b: &Balance) -> Self {
        BalanceView {
            currency: b.posted.currency().code().to_owned(),
            posted: b.posted.amount(),
            available: b.available.amount(),
            debits_posted: b.debits_posted.amount(),
            credits_posted: b.credits_posted.amount(),
            debits_pending: b.debits_pending.amount(),
            credits_pending: b.credits_pending.amount(),
        }
    }
}

/// A ledger account of an organisation, with its balances.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-aa00-7000-8000-0000000000c1",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "code": "2202.station.settlement",
    "name": "Huaxin No. 3 Station: settlement due",
    "currency": "CNY",
    "normal_side": "credit",
    "debits_must_not_exceed_credits": true,
    "credits_must_not_exceed_debits": false,
    "credit_limit": null,
    "parent_id": null,
    "closed": false,
    "balance": {
        "currency": "CNY",
        "posted": "182500.00",
        "available": "180000.00",
        "debits_posted": "17500.00",
        "credits_posted": "200000.00",
        "debits_pending": "2500.00",
        "credits_pending": "0.00"
    },
    "created_at": "2026-11-22T08:00:00Z"
}))]
pub struct AccountView {
    pub id: Uuid,
    pub organisation_id: Uuid,
    /// Code in the chart of accounts.
    pub code: String,
    pub name: String,
    pub currency: String,
    /// `debit` or `credit`.
    pub normal_side: String,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    #[schema(value_type = Option<String>)]
    pub credit_limit: Option<Decimal>,
    pub parent_id: Option<Uuid>,
    pub closed: bool,
    pub balance: BalanceView,
    pub created_at: DateTime<Utc>,
}

fn view(account: &Account, organisation_id: Uuid) -> AccountView {
    AccountView {
        id: account.id,
        organisation_id,
        code: account.code.clone(),
        name: account.name.clone(),
        currency: account.currency.code().to_owned(),
        normal_side: account.normal_side.as_str().to_owned(),
        debits_must_not_exceed_credits: account.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits: account.credits_must_not_exceed_debits,
        credit_limit: account.credit_limit.map(|m| m.amount()),
        parent_id: account.parent_id,
        closed: account.closed,
        balance: BalanceView::from(&account.balance),
        created_at: account.created_at,
    }
}

crate::page_type!(AccountPage, AccountView, "ledger accounts");

/// Which page of the accounts of the caller's subtree.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAccounts {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only the accounts of this organisation (not of those below it).
    pub organisation_id: Option<Uuid>,
}

/// The ledger accounts of the caller's organisation subtree, with balances.
#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    params(ListAccounts),
    responses(
        (status = 200, description = "A page of accounts", body = AccountPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListAccounts>,
) -> Result<axum::Json<AccountPage>, ApiError> {
    authorize(&caller, Action::ReadAccounts, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("accounts", q.cursor.as_deref())?;
    let mut select = ledger_accounts::Entity::find()
        .filter(ledger_accounts::Column::OwnerOrg.in_subquery(subtree(
            organisations::Column::LedgerOwner,
            &caller.org.path,
        )))
        .order_by_asc(ledger_accounts::Column::Id)
        .limit(limit + 1);
    if let Some(org_id) = q.organisation_id {
        let org = organisations::Entity::find_by_id(org_id)
            .one(&state.db)
            .await?
            .ok_or_else(|| ApiError::not_found("organisation"))?;
        authorize(
            &caller,
            Action::ReadAccounts,
            &org_ref(&org)?,
            "organisation",
        )?;
        select = select.filter(ledger_accounts::Column::OwnerOrg.eq(org.ledger_owner));
    }
    if let Some(after) = after {
        select = select.filter(ledger_accounts::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "accounts", |a| a.id.to_string());
    let owners: Vec<String> = rows.iter().map(|a| a.owner_org.clone()).collect();
    let org_of: HashMap<String, Uuid> = organisations::Entity::find()
        .filter(organisations::Column::LedgerOwner.is_in(owners))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|o| (o.ledger_owner, o.id))
        .collect();
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let organisation_id = *org_of.get(&row.owner_org).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("account {} lost its organisation", row.id))
        })?;
        let account = Account::try_from(row)?;
        items.push(view(&account, organisation_id));
    }
    Ok(axum::Json(AccountPage { items, next_cursor }))
}

/// An account, if the caller may read it: its owner must be an organisation of the caller's
/// subtree. Accounts of owners that are no organisation are not reachable here.
async fn account_in_scope(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(Account, OrgRef), ApiError> {
    let account = state.ledger.account(id).await?;
    let org = organisations::Entity::find()
        .filter(organisations::Column::LedgerOwner.eq(&account.owner_org))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let org = directory::org_ref(&org)?;
    authorize(caller, Action::ReadAccounts, &org, "account")?;
    Ok((account, org))
}

/// One account with its balances.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(account = %id))]
async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AccountView>, ApiError> {
    let (account, org) = account_in_scope(&state, &caller, id).await?;
    Ok(axum::Json(view(&account, org.id)))
}

/// When to read a balance.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceAt {
    /// RFC 3339 time: the balance from every posting effective at or before it. Now when
    /// absent.
    pub as_of: Option<DateTime<Utc>>,
}

/// An account's balance now, or as of a time.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/balance",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), BalanceAt),
    responses(
        (status = 200, description = "The balance", body = BalanceView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(account = %id))]
async fn get_balance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<BalanceAt>,
) -> Result<axum::Json<BalanceView>, ApiError> {
    let (account, _) = account_in_scope(&state, &caller, id).await?;
    let balance = match q.as_of {
        None => account.balance,
        Some(at) => state.ledger.balance_as_of(id, at).await?,
    };
    Ok(axum::Json(BalanceView::from(&balance)))
}

/// One line of a statement: a posting and the balance after it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "seq": 12,
    "entry_id": "0193a5c2-bb00-7000-8000-0000000000d1",
    "reference": "pos:station-3:shift-2026-11-22-1:sale-0042",
    "description": "WeChat Pay sale, 92# petrol",
    "side": "credit",
    "effect": "post",
    "amount": "350.00",
    "effective_at": "2026-11-22T09:15:00Z",
    "recorded_at": "2026-11-22T09:15:01Z",
    "running_balance": "182500.00",
    "debits_pending_after": "2500.00",
    "credits_pending_after": "0.00"
}))]
pub struct StatementLineView {
    /// The account's posting sequence number.
    pub seq: i64,
    pub entry_id: Uuid,
    /// The document or workflow that caused the entry.
    pub reference: String,
    pub description: String,
    /// `debit` or `credit`.
    pub side: String,
    /// `post`, `reserve` or `release`.
    pub effect: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// Posted balance on the account's normal side after this line.
    #[schema(value_type = String)]
    pub running_balance: Decimal,
    #[schema(value_type = String)]
    pub debits_pending_after: Decimal,
    #[schema(value_type = String)]
    pub credits_pending_after: Decimal,
}

/// A page of an account's statement, oldest line first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatementPageView {
    pub account_id: Uuid,
    pub currency: String,
    pub items: Vec<StatementLineView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which page of a statement.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementParams {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Lines per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

/// An account's statement: every posting with the running balance, oldest first.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/statement",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), StatementParams),
    responses(
        (status = 200, description = "A page of the statement", body = StatementPageView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(account = %id))]
async fn get_statement(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<StatementParams>,
) -> Result<axum::Json<StatementPageView>, ApiError> {
    let (account, _) = account_in_scope(&state, &caller, id).await?;
    let limit = page::limit(q.limit)?;
    // The account's id is part of the list's name: a cursor of another account's statement
    // is refused.
    let list = format!("statement/{id}");
    let after = page::decode_seq(&list, q.cursor.as_deref())?;
    let statement = state
        .ledger
        .statement(StatementQuery {
            account_id: id,
            after,
            limit,
        })
        .await?;
    let next_cursor = statement
        .next_cursor
        .map(|seq| page::encode(&list, &seq.to_string()));
    Ok(axum::Json(StatementPageView {
        account_id: id,
        currency: account.currency.code().to_owned(),
        items: statement
            .lines
            .into_iter()
            .map(|l| StatementLineView {
                seq: l.seq,
                entry_id: l.entry_id,
                reference: l.reference,
                description: l.description,
                side: l.side.as_str().to_owned(),
                effect: l.effect.as_str().to_owned(),
                amount: l.amount.amount(),
                effective_at: l.effective_at,
                recorded_at: l.recorded_at,
                running_balance: l.running_balance.amount(),
                debits_pending_after: l.debits_pending_after.amount(),
                credits_pending_after: l.credits_pending_after.amount(),
            })
            .collect(),
        next_cursor,
    }))
}
