//! Retail payments: the station's tills and channels (station company), shifts, payments and
//! refunds at the till (cashiers), refund approvals and reports (station managers), and the
//! channels' signed notifications.
//!
//! A till calls as its cashier (bearer token) **and** proves it is the terminal with the
//! terminal's own key in `Forecourt-Terminal-Key`, shown once when the terminal was
//! registered. A payment is the terminal's order number: the same number and content is the
//! same payment (answered with its current state), other content under the number is 409.
//! The request waits a bounded time for the outcome and then answers with the payment as it
//! stands (`pending`); the outcome also comes from a later `GET`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use payments::channels::InboundRequest;
use payments::flow::{FlowPolicy, PaymentInput};
use payments::health::HealthBook;
use payments::model::{
    ChannelConfig, ChannelId, FeeMode, FeeRate, MaintenanceWindow, Method, Party,
};
use payments::routing::{BreakerPolicy, PayerToken, RouteRequest, RoutingSnapshot};
use payments::sales::{self, Created, NewPayment, NewRefund, RefundCreated, Sale, SaleLine};
use payments::shifts::{self, CloseOverride, CloseRefusal};
use payments::stations::{self, StoreError};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use workflows::Engine;
use workflows::pos_payment::{Channels, PosPayment, PosPaymentInput};
use workflows::refund_approval::{RefundApproval, RefundInput, SIGNAL_DECISION};

use entities::{pos_payments, pos_refunds, pos_shifts, pos_terminals};

use crate::directory::{find_org, now};
use crate::error::responses::*;
use crate::error::{ApiError, FieldError, ProblemKind};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgKind, OrgRef, Subject, authorize};
use crate::state::AppState;

/// The header a till proves it is the terminal with.
pub const TERMINAL_KEY: &str = "forecourt-terminal-key";

/// What the payments area needs besides the database and the ledger.
pub struct PaymentsContext {
    /// Starts and signals `pos_payment` and `refund_approval` instances.
    pub engine: Engine,
    /// The channels this deployment has adapters for (their keys are the platform's).
    pub channels: Arc<Channels>,
    /// The party behind each channel.
    pub parties: BTreeMap<ChannelId, Party>,
    pub flow: FlowPolicy,
    /// How long a payment request waits for the outcome before answering `pending`.
    pub wait: Duration,
    /// How long one adapter call may take.
    pub activity_timeout_ms: u64,
    /// How long a refund request waits for the station manager.
    pub approval_deadline: Duration,
    /// The channels' health (breakers, success rates, payers that just failed), as recorded
    /// by every process.
    pub health: tokio::sync::Mutex<HealthBook>,
}

/// The breakers' terms: five failures within a minute open a channel for thirty seconds;
/// success rates look at the last fifty attempts.
pub const BREAKER: BreakerPolicy = BreakerPolicy {
    failures_to_open: 5,
    window_ms: 60_000,
    open_ms: 30_000,
    history: 50,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_terminals, register_terminal))
        .routes(routes!(list_channels, set_channel))
        .routes(routes!(open_shift))
        .routes(routes!(current_shift))
        .routes(routes!(close_shift))
        .routes(routes!(create_payment))
        .routes(routes!(get_payment))
        .routes(routes!(cancel_payment))
        .routes(routes!(create_refund))
        .routes(routes!(list_refund_requests))
        .routes(routes!(approve_refund))
        .routes(routes!(reject_refund))
        .routes(routes!(list_shifts))
        .routes(routes!(shift_receipt))
        .routes(routes!(day_summary))
        .routes(routes!(list_daily_closes))
        .routes(routes!(list_station_exceptions))
        .routes(routes!(list_exceptions))
        .routes(routes!(resolve_exception))
}

/// The channels' notifications: outside authentication and idempotency (the party signs
/// them, and applying one twice changes nothing).
pub fn notifications_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(channel_notification))
}

fn context(state: &AppState) -> Result<&Arc<PaymentsContext>, ApiError> {
    state.payments.as_ref().ok_or_else(|| {
        ApiError::new(
            ProblemKind::Unavailable,
            "payments are not configured on this deployment (no channel adapters)",
        )
    })
}

pub(crate) fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(what) => ApiError::not_found(what),
        StoreError::Conflict(detail) => ApiError::conflict(detail),
        StoreError::Invalid(detail) => ApiError::validation(vec![FieldError::new("body", detail)]),
        StoreError::Ledger(e) => ApiError::internal(anyhow::Error::new(e)),
        StoreError::Db(e) => e.into(),
    }
}

pub(crate) fn person(caller: &Caller) -> Result<(Uuid, String), ApiError> {
    match &caller.subject {
        Subject::User { id, username, .. } => Ok((*id, username.clone())),
        Subject::ApiKey { .. } => Err(ApiError::forbidden(
            "tills and approvals are operated by people, not API keys",
        )),
    }
}

/// The station the caller names, which must be a station of their subtree.
pub(crate) async fn station(
    state: &AppState,
    caller: &Caller,
    action: Action,
    station_id: Uuid,
) -> Result<OrgRef, ApiError> {
    let org = find_org(&state.db, station_id)
        .await?
        .ok_or_else(|| ApiError::not_found("station"))?;
    authorize(caller, action, &org, "station")?;
    if org.kind != OrgKind::Station {
        return Err(ApiError::not_found("station"));
    }
    Ok(org)
}

/// The terminal, when the caller may act at its station and presents its key.
pub(crate) async fn till(
    state: &AppState,
    caller: &Caller,
    action: Action,
    terminal_id: Uuid,
    headers: &HeaderMap,
) -> Result<pos_terminals::Model, ApiError> {
    let key = headers
        .get(TERMINAL_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthenticated,
                "a till route needs the terminal's key in the Forecourt-Terminal-Key header",
            )
        })?;
    let terminal = stations::terminal(&state.db, terminal_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    let org = find_org(&state.db, terminal.station_id)
        .await?
        .ok_or_else(|| ApiError::not_found("terminal"))?;
    authorize(caller, action, &org, "terminal")?;
    // The terminal as read above: reading it again would tell nothing newer.
    if !stations::key_opens(&terminal, key) {
        return Err(ApiError::new(
            ProblemKind::InvalidCredentials,
            "the terminal key is wrong, or the terminal is disabled",
        ));
    }
    Ok(terminal)
}

pub(crate) fn terminal_key_param() -> &'static str {
    "The terminal's key, shown once at its registration."
}

// ---------------------------------------------------------------------------------------
// Terminals and channels (station company)
// ---------------------------------------------------------------------------------------

/// A till bound to a station.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-aa00-7000-8000-000000000001",
    "station_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "code": "till-1",
    "name": "Forecourt till 1",
    "created_at": "2026-11-23T08:00:00Z",
    "disabled_at": null
}))]
pub struct Terminal {
    pub id: Uuid,
    pub station_id: Uuid,
    pub code: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<pos_terminals::Model> for Terminal {
    fn from(m: pos_terminals::Model) -> Self {
        Terminal {
            id: m.id,
            station_id: m.station_id,
            code: m.code,
            name: m.name,
            created_at: m.created_at,
            disabled_at: m.disabled_at,
        }
    }
}

/// A registered terminal with its key, shown only in this response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredTerminal {
    #[serde(flatten)]
    pub terminal: Terminal,
    /// Sent by the till as `Forecourt-Terminal-Key`. Shown once.
    pub key: String,
}

/// A new terminal.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "till-1", "name": "Forecourt till 1"}))]
pub struct RegisterTerminal {
    /// Unique within the station: 1 to 32 letters, digits, `-` or `_`.
    pub code: String,
    pub name: String,
}

pub(crate) fn is_code(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Validate for RegisterTerminal {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_code(&self.code, 32) {
            errors.push(FieldError::new(
                "code",
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            errors.push(FieldError::new("name", "1 to 100 characters"));
        }
        errors
    }
}

/// The station's terminals.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/terminals",
    tag = "payments",
    params(("station_id" = Uuid, Path, description = "Station id")),
    responses(
        (status = 200, description = "The station's terminals", body = Vec<Terminal>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_terminals(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
) -> Result<axum::Json<Vec<Terminal>>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let rows = stations::terminals(&state.db, station_id)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(rows.into_iter().map(Terminal::from).collect()))
}

/// Register a terminal at a station (station company). Its key is in this response only.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/terminals",
    tag = "payments",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = RegisterTerminal,
    responses(
        (status = 201, description = "Registered; the key is shown only here", body = RegisteredTerminal),
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
async fn register_terminal(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(station_id): Path<Uuid>,
    Json(body): Json<RegisterTerminal>,
) -> Result<Response, ApiError> {
    let org = station(&state, &caller, Action::ManageStations, station_id).await?;
    // The station's sales, cash, fee and bank accounts exist before its first sale.
    let owner = ledger_owner(&state, org.id).await?;
    stations::station_accounts(&state.ledger, station_id, &owner)
        .await
        .map_err(store_error)?;
    let txn = entities::db::begin_write(&state.db).await?;
    let registered =
        stations::register_terminal(&txn, station_id, &body.code, body.name.trim(), now())
            .await
            .map_err(store_error)?;
    let id = registered.terminal.id;
    let created = RegisteredTerminal {
        terminal: registered.terminal.into(),
        key: registered.key,
    };
    claim
        .commit(
            txn,
            StatusCode::CREATED,
            Some(&created),
            Some(format!("/v1/stations/{station_id}/terminals/{id}")),
            Some("key"),
        )
        .await
}

/// How customers pay, at the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// WeChat Pay: the till scans the customer's payment code.
    WechatPayCode,
    /// WeChat Pay: the customer scans the till's dynamic code.
    WechatPayQr,
    /// Alipay: the till scans the customer's payment code.
    AlipayCode,
    /// Alipay: the customer scans the till's dynamic code.
    AlipayQr,
    /// A bank card through an acquirer.
    BankCard,
    /// Notes and coins into the drawer.
    Cash,
    /// The station company's stored-value member card; `payer_code` is the card number.
    MemberCard,
    /// An order a partner's driver paid in the partner's app, pushed to the till by the
    /// partner (`POST /v1/partner/orders`); never taken at the till.
    PartnerApp,
}

impl From<PaymentMethod> for Method {
    fn from(m: PaymentMethod) -> Self {
        match m {
            PaymentMethod::WechatPayCode => Method::WechatPayCode,
            PaymentMethod::WechatPayQr => Method::WechatPayQr,
            PaymentMethod::AlipayCode => Method::AlipayCode,
            PaymentMethod::AlipayQr => Method::AlipayQr,
            PaymentMethod::BankCard => Method::BankCard,
            PaymentMethod::Cash => Method::Cash,
            PaymentMethod::MemberCard => Method::MemberCard,
            PaymentMethod::PartnerApp => Method::PartnerApp,
        }
    }
}

/// A channel's maintenance window: one-off (`from`, `until`) or recurring (`weekdays`,
/// `start`, `end` in Asia/Shanghai; an end before the start runs past midnight).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Maintenance {
    OneOff {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    Recurring {
        /// `Mon` … `Sun`.
        weekdays: Vec<String>,
        /// `HH:MM`, local time.
        start: String,
        end: String,
    },
}

/// The station's terms on one channel.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "channel_id": "wxpay-direct",
    "methods": ["wechat_pay_code", "wechat_pay_qr"],
    "fee_rate": "0.0038",
    "fee_mode": "deducted_at_payment",
    "single_limit": "5000.00",
    "daily_limit": "200000.00",
    "priority": 1,
    "maintenance": [{"kind": "recurring", "weekdays": ["Sat"], "start": "23:00", "end": "03:00"}],
    "enabled": true
}))]
pub struct ChannelTerms {
    /// One of the deployment's channels.
    pub channel_id: String,
    pub methods: Vec<PaymentMethod>,
    /// A fraction of the amount (0.0038 is 0.38 %).
    pub fee_rate: Decimal,
    /// `deducted_at_payment` or `billed_later`.
    pub fee_mode: String,
    pub single_limit: Decimal,
    pub daily_limit: Decimal,
    /// Lower is tried first.
    pub priority: u32,
    #[serde(default)]
    pub maintenance: Vec<Maintenance>,
    pub enabled: bool,
}

/// One of the station's channels as stored.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StationChannel {
    #[serde(flatten)]
    pub terms: ChannelTerms,
    /// `wechat_pay`, `alipay` or `acquirer`.
    pub party: String,
    /// The station's ledger account for what the channel owes it until settlement.
    pub clearing_account_id: Uuid,
    pub updated_at: DateTime<Utc>,
}

impl Validate for ChannelTerms {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if ChannelId::new(self.channel_id.clone()).is_err() {
            errors.push(FieldError::new(
                "channel_id",
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| !Method::from(*m).uses_channel())
        {
            errors.push(FieldError::new(
                "methods",
                "at least one method that goes through a channel (not cash, not partner_app)",
            ));
        }
        if FeeRate::new(self.fee_rate).is_err() {
            errors.push(FieldError::new("fee_rate", "at least 0 and below 1"));
        }
        if !matches!(
            self.fee_mode.as_str(),
            "deducted_at_payment" | "billed_later"
        ) {
            errors.push(FieldError::new(
                "fee_mode",
                "deducted_at_payment or billed_later",
            ));
        }
        for (field, value) in [
            ("single_limit", self.single_limit),
            ("daily_limit", self.daily_limit),
        ] {
            if ledger::Money::new(value, ledger::Currency::CNY).is_err() || value <= Decimal::ZERO {
                errors.push(FieldError::new(field, "a positive amount, to the fen"));
            }
        }
        if self.maintenance.len() > 50 {
            errors.push(FieldError::new("maintenance", "at most 50 windows"));
        }
        errors
    }
}

fn weekday(text: &str) -> Option<chrono::Weekday> {
    text.parse().ok()
}

fn to_config(terms: &ChannelTerms, party: Party) -> Result<ChannelConfig, ApiError> {
    let invalid =
        |field: &str, message: String| ApiError::validation(vec![FieldError::new(field, message)]);
    let mut windows = Vec::new();
    for (i, window) in terms.maintenance.iter().enumerate() {
        let field = format!("maintenance[{i}]");
        let built = match window {
            Maintenance::OneOff { from, until } => MaintenanceWindow::one_off(*from, *until),
            Maintenance::Recurring {
                weekdays,
                start,
                end,
            } => {
                let days: Option<Vec<_>> = weekdays.iter().map(|d| weekday(d)).collect();
                let days = days.ok_or_else(|| invalid(&field, "weekdays are Mon … Sun".into()))?;
                let time = |t: &str| chrono::NaiveTime::parse_from_str(t, "%H:%M");
                let (Ok(start), Ok(end)) = (time(start), time(end)) else {
                    return Err(invalid(&field, "start and end are HH:MM".into()));
                };
                MaintenanceWindow::recurring(days, start, end, chrono_tz::Asia::Shanghai)
            }
        };
        windows.push(built.map_err(|e| invalid(&field, e.to_string()))?);
    }
    let money = |v: Decimal| {
        ledger::Money::new(v, ledger::Currency::CNY).map_err(|e| invalid("limit", e.to_string()))
    };
    Ok(ChannelConfig {
        id: ChannelId::new(terms.channel_id.clone())
            .map_err(|e| invalid("channel_id", e.to_string()))?,
        party,
        methods: terms.methods.iter().map(|m| Method::from(*m)).collect(),
        currency: ledger::Currency::CNY,
        fee_rate: FeeRate::new(terms.fee_rate).map_err(|e| invalid("fee_rate", e.to_string()))?,
        fee_mode: if terms.fee_mode == "billed_later" {
            FeeMode::BilledLater
        } else {
            FeeMode::DeductedAtPayment
        },
        single_limit: money(terms.single_limit)?,
        daily_limit: money(terms.daily_limit)?,
        priority: terms.priority,
        maintenance: windows,
        enabled: terms.enabled,
    })
}

fn method_of(method: Method) -> Option<PaymentMethod> {
    Some(match method {
        Method::WechatPayCode => PaymentMethod::WechatPayCode,
        Method::WechatPayQr => PaymentMethod::WechatPayQr,
        Method::AlipayCode => PaymentMethod::AlipayCode,
        Method::AlipayQr => PaymentMethod::AlipayQr,
        Method::BankCard => PaymentMethod::BankCard,
        Method::Cash => PaymentMethod::Cash,
        Method::MemberCard => PaymentMethod::MemberCard,
        Method::PartnerApp => PaymentMethod::PartnerApp,
    })
}

fn from_config(channel: stations::StationChannel) -> StationChannel {
    let c = channel.terms;
    let maintenance = c
        .maintenance
        .iter()
        .map(|w| match w {
            MaintenanceWindow::OneOff { from, until } => Maintenance::OneOff {
                from: *from,
                until: *until,
            },
            MaintenanceWindow::Recurring {
                weekdays,
                start,
                end,
                ..
            } => Maintenance::Recurring {
                weekdays: weekdays.iter().map(|d| d.to_string()).collect(),
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
            },
        })
        .collect();
    StationChannel {
        party: match c.party {
            Party::WechatPay => "wechat_pay",
            Party::Alipay => "alipay",
            Party::Acquirer => "acquirer",
        }
        .into(),
        terms: ChannelTerms {
            channel_id: c.id.to_string(),
            methods: c.methods.iter().filter_map(|m| method_of(*m)).collect(),
            fee_rate: c.fee_rate.rate(),
            fee_mode: match c.fee_mode {
                FeeMode::DeductedAtPayment => "deducted_at_payment",
                FeeMode::BilledLater => "billed_later",
            }
            .into(),
            single_limit: c.single_limit.amount(),
            daily_limit: c.daily_limit.amount(),
            priority: c.priority,
            maintenance,
            enabled: c.enabled,
        },
        clearing_account_id: channel.clearing_account_id,
        updated_at: channel.updated_at,
    }
}

/// The channels the station signed, with its terms on each.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/channels",
    tag = "payments",
    params(("station_id" = Uuid, Path, description = "Station id")),
    responses(
        (status = 200, description = "The station's channels", body = Vec<StationChannel>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
) -> Result<axum::Json<Vec<StationChannel>>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let rows = stations::channels(&state.db, station_id)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(rows.into_iter().map(from_config).collect()))
}

/// Set the station's terms on a channel (station company): new, or replacing its terms.
/// Switching a channel off (`enabled: false`) is the manual failover.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/channels",
    tag = "payments",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = ChannelTerms,
    responses(
        (status = 200, description = "The channel's terms as stored", body = StationChannel),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn set_channel(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(station_id): Path<Uuid>,
    Json(body): Json<ChannelTerms>,
) -> Result<Response, ApiError> {
    let org = station(&state, &caller, Action::ManageStations, station_id).await?;
    let ctx = context(&state)?;
    let id = ChannelId::new(body.channel_id.clone())
        .map_err(|e| ApiError::validation(vec![FieldError::new("channel_id", e.to_string())]))?;
    let party = *ctx.parties.get(&id).ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "channel_id",
            format!(
                "not a channel of this deployment; known: {}",
                ctx.parties
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )])
    })?;
    let config = to_config(&body, party)?;
    let owner = ledger_owner(&state, org.id).await?;
    let stored = stations::set_channel(&state.ledger, station_id, &owner, config, now())
        .await
        .map_err(store_error)?;
    let view = from_config(stored);
    let txn = entities::db::begin_write(&state.db).await?;
    claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await
}

pub(crate) async fn ledger_owner(state: &AppState, org: Uuid) -> Result<String, ApiError> {
    Ok(entities::organisations::Entity::find_by_id(org)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("station"))?
        .ledger_owner)
}

// ---------------------------------------------------------------------------------------
// Shifts
// ---------------------------------------------------------------------------------------

/// A shift, with its totals (running while open, final once closed).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Shift {
    pub id: Uuid,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub cashier: String,
    /// `open` or `closed`.
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Totals by method and fuel grade, counts, refunds, expected and declared cash and the
    /// variance, and any manager override.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

async fn shift_view(state: &AppState, shift: &pos_shifts::Model) -> Result<Shift, ApiError> {
    let summary = match &shift.summary {
        Some(text) => serde_json::from_str(text).map_err(ApiError::internal)?,
        None => serde_json::to_value(
            shifts::shift_summary(&state.db, shift, None)
                .await
                .map_err(store_error)?,
        )
        .map_err(ApiError::internal)?,
    };
    Ok(Shift {
        id: shift.id,
        station_id: shift.station_id,
        terminal_id: shift.terminal_id,
        cashier: shift.cashier_name.clone(),
        status: shift.status.clone(),
        opened_at: shift.opened_at,
        closed_at: shift.closed_at,
        summary,
    })
}

/// Opening a shift.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"opening_float": "500.00"}))]
pub struct OpenShift {
    /// Cash in the drawer at the start, CNY.
    pub opening_float: Decimal,
}

impl Validate for OpenShift {
    fn validate(&self) -> Vec<FieldError> {
        if self.opening_float < Decimal::ZERO
            || ledger::Money::new(self.opening_float, ledger::Currency::CNY).is_err()
        {
            vec![FieldError::new(
                "opening_float",
                "zero or a positive amount, to the fen",
            )]
        } else {
            vec![]
        }
    }
}

/// Open a shift on the terminal as the calling cashier. A terminal has one open shift.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/shifts",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = OpenShift,
    responses(
        (status = 201, description = "The open shift", body = Shift),
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
async fn open_shift(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Json(body): Json<OpenShift>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (cashier_id, cashier) = person(&caller)?;
    let float = ledger::Money::new(body.opening_float, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("opening_float", e.to_string())]))?;
    let txn = entities::db::begin_write(&state.db).await?;
    let shift = shifts::open_shift(&txn, &terminal, cashier_id, &cashier, float, now())
        .await
        .map_err(store_error)?;
    let view = Shift {
        id: shift.id,
        station_id: shift.station_id,
        terminal_id: shift.terminal_id,
        cashier: shift.cashier_name.clone(),
        status: shift.status.clone(),
        opened_at: shift.opened_at,
        closed_at: None,
        summary: serde_json::to_value(
            shifts::summarise(&shift, &[], &[], &[], None).map_err(store_error)?,
        )
        .map_err(ApiError::internal)?,
    };
    claim
        .commit(txn, StatusCode::CREATED, Some(&view), None, None)
        .await
}

pub(super) async fn open_shift_of(
    state: &AppState,
    terminal: &pos_terminals::Model,
) -> Result<pos_shifts::Model, ApiError> {
    shifts::current_shift(&state.db, terminal.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::conflict("the terminal has no open shift: open one first"))
}

/// The terminal's open shift with its running totals.
#[utoipa::path(
    get,
    path = "/v1/terminals/{terminal_id}/shifts/current",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
    ),
    responses(
        (status = 200, description = "The open shift", body = Shift),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn current_shift(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
) -> Result<axum::Json<Shift>, ApiError> {
    let terminal = till(&state, &caller, Action::ReadPayments, terminal_id, &headers).await?;
    let shift = open_shift_of(&state, &terminal).await?;
    Ok(axum::Json(shift_view(&state, &shift).await?))
}

/// Closing a shift.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"declared_cash": "1268.50"}))]
pub struct CloseShift {
    /// The cash the cashier counted in the drawer, CNY.
    pub declared_cash: Decimal,
    /// A station manager's reason to close over unresolved payments; recorded on the shift.
    pub override_reason: Option<String>,
}

impl Validate for CloseShift {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.declared_cash < Decimal::ZERO
            || ledger::Money::new(self.declared_cash, ledger::Currency::CNY).is_err()
        {
            errors.push(FieldError::new(
                "declared_cash",
                "zero or a positive amount, to the fen",
            ));
        }
        if let Some(reason) = &self.override_reason
            && (reason.trim().is_empty() || reason.chars().count() > 500)
        {
            errors.push(FieldError::new("override_reason", "1 to 500 characters"));
        }
        errors
    }
}

/// Close the terminal's shift: totals by method and fuel grade, refunds, expected versus
/// declared cash and the variance. Refused (409) while payments or refunds of the shift are
/// unresolved, unless a station manager overrides with a reason.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/shifts/current/close",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = CloseShift,
    responses(
        (status = 200, description = "The closed shift with its totals", body = Shift),
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
async fn close_shift(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Json(body): Json<CloseShift>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let (_, name) = person(&caller)?;
    let override_ = match &body.override_reason {
        Some(reason) => {
            if !crate::policy::permits(caller.role, Action::ApproveRefunds) {
                return Err(ApiError::forbidden(
                    "only a station manager can close a shift over unresolved payments",
                ));
            }
            Some(CloseOverride {
                by: name,
                reason: reason.trim().to_owned(),
            })
        }
        None => None,
    };
    let shift = open_shift_of(&state, &terminal).await?;
    let declared = ledger::Money::new(body.declared_cash, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("declared_cash", e.to_string())]))?;
    let txn = entities::db::begin_write(&state.db).await?;
    let summary = match shifts::close_shift(&txn, &shift, declared, override_, now())
        .await
        .map_err(store_error)?
    {
        Ok(summary) => summary,
        Err(refusal @ (CloseRefusal::AlreadyClosed | CloseRefusal::Unresolved(_))) => {
            // Release the shift's lock now, not whenever the connection is next used.
            txn.rollback().await?;
            return Err(ApiError::conflict(refusal.to_string()));
        }
    };
    let view = Shift {
        id: shift.id,
        station_id: shift.station_id,
        terminal_id: shift.terminal_id,
        cashier: shift.cashier_name.clone(),
        status: "closed".into(),
        opened_at: shift.opened_at,
        closed_at: summary.closed_at,
        summary: serde_json::to_value(&summary).map_err(ApiError::internal)?,
    };
    claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await
}

/// Which shifts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShiftsQuery {
    /// The station's local day (`YYYY-MM-DD`, Asia/Shanghai) the shifts opened on; today
    /// when absent.
    pub day: Option<NaiveDate>,
}

/// The station's shifts opened on a day, newest first, with their totals.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/shifts",
    tag = "payments",
    params(("station_id" = Uuid, Path, description = "Station id"), ShiftsQuery),
    responses(
        (status = 200, description = "The day's shifts", body = Vec<Shift>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_shifts(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
    Query(q): Query<ShiftsQuery>,
) -> Result<axum::Json<Vec<Shift>>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let day = q
        .day
        .unwrap_or_else(|| Utc::now().with_timezone(&sales::BUSINESS_TZ).date_naive());
    let (from, until) = day_bounds(day)?;
    let rows = shifts::station_shifts(&state.db, station_id, from, until, 500)
        .await
        .map_err(store_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(shift_view(&state, row).await?);
    }
    Ok(axum::Json(out))
}

fn day_bounds(day: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(sales::BUSINESS_TZ).single())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| ApiError::parameter("day", "not a day in Asia/Shanghai"))
    };
    let next = day
        .succ_opt()
        .ok_or_else(|| ApiError::parameter("day", "out of range"))?;
    Ok((start(day)?, start(next)?))
}

/// A shift's close as a printable text receipt (40 columns).
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/shifts/{shift_id}/receipt",
    tag = "payments",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("shift_id" = Uuid, Path, description = "Shift id"),
    ),
    responses(
        (status = 200, description = "The receipt", body = String, content_type = "text/plain"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(shift = %shift_id))]
async fn shift_receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path((station_id, shift_id)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let org = station(&state, &caller, Action::ReadPayments, station_id).await?;
    let shift = shifts::shift(&state.db, shift_id)
        .await
        .map_err(store_error)?
        .filter(|s| s.station_id == station_id)
        .ok_or_else(|| ApiError::not_found("shift"))?;
    let summary = match &shift.summary {
        Some(text) => serde_json::from_str(text).map_err(ApiError::internal)?,
        None => shifts::shift_summary(&state.db, &shift, None)
            .await
            .map_err(store_error)?,
    };
    let terminal = stations::terminal(&state.db, shift.terminal_id)
        .await
        .map_err(store_error)?
        .map(|t| t.code)
        .unwrap_or_default();
    let text = shifts::receipt(&summary, &org.name, &terminal);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Payments
// ---------------------------------------------------------------------------------------

/// One line of a sale.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// Fuel from a nozzle.
    Fuel {
        /// `92`, `95`, `98` or `0` (diesel).
        grade: String,
        litres: Decimal,
        nozzle: u32,
        amount: Decimal,
    },
    /// A shop item.
    Item {
        name: String,
        quantity: u32,
        amount: Decimal,
    },
}

pub(crate) fn to_line(line: &Line) -> Result<SaleLine, String> {
    Ok(match line {
        Line::Fuel {
            grade,
            litres,
            nozzle,
            amount,
        } => SaleLine::Fuel {
            grade: serde_json::from_value(serde_json::Value::String(grade.clone()))
                .map_err(|_| format!("unknown fuel grade {grade:?}: 92, 95, 98 or 0"))?,
            litres: *litres,
            nozzle: *nozzle,
            amount: *amount,
        },
        Line::Item {
            name,
            quantity,
            amount,
        } => SaleLine::Item {
            name: name.trim().to_owned(),
            quantity: *quantity,
            amount: *amount,
        },
    })
}

pub(crate) fn from_line(line: &SaleLine) -> Line {
    match line {
        SaleLine::Fuel {
            grade,
            litres,
            nozzle,
            amount,
        } => Line::Fuel {
            grade: serde_json::to_value(grade)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            litres: *litres,
            nozzle: *nozzle,
            amount: *amount,
        },
        SaleLine::Item {
            name,
            quantity,
            amount,
        } => Line::Item {
            name: name.clone(),
            quantity: *quantity,
            amount: *amount,
        },
    }
}

/// A payment the till asks for.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "order_no": "T1-20261123-0001",
    "method": "wechat_pay_code",
    "amount": "300.00",
    "lines": [{"kind": "fuel", "grade": "92", "litres": "39.74", "nozzle": 3, "amount": "300.00"}],
    "payer_code": "134567890123456789"
}))]
pub struct CreatePayment {
    /// The terminal's own order number: 1 to 32 letters, digits, `-` or `_`. The same
    /// number with the same content is the same payment.
    pub order_no: String,
    pub method: PaymentMethod,
    /// CNY, to the fen.
    pub amount: Decimal,
    /// What was sold; the lines sum to the amount.
    pub lines: Vec<Line>,
    /// The customer's payment code or card token read by the till; required for the
    /// `*_code` methods and cards.
    pub payer_code: Option<String>,
}

impl Validate for CreatePayment {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_code(&self.order_no, 32) {
            errors.push(FieldError::new(
                "order_no",
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if self.method == PaymentMethod::PartnerApp {
            errors.push(FieldError::new(
                "method",
                "partner_app orders are pushed by the partner (POST /v1/partner/orders), not taken at the till",
            ));
        }
        let amount = ledger::Money::new(self.amount, ledger::Currency::CNY);
        match &amount {
            Ok(m) if m.is_positive() => {}
            _ => errors.push(FieldError::new("amount", "a positive amount, to the fen")),
        }
        let needs_code = matches!(
            self.method,
            PaymentMethod::WechatPayCode
                | PaymentMethod::AlipayCode
                | PaymentMethod::BankCard
                | PaymentMethod::MemberCard
        );
        match &self.payer_code {
            None if needs_code => errors.push(FieldError::new(
                "payer_code",
                "required when the till scans a code or reads a card",
            )),
            Some(code)
                if code.is_empty()
                    || code.len() > 128
                    || !code.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                errors.push(FieldError::new("payer_code", "1 to 128 visible characters"))
            }
            Some(code)
                if self.method == PaymentMethod::MemberCard
                    && !payments::cards::valid_card_no(code) =>
            {
                errors.push(FieldError::new(
                    "payer_code",
                    "a member card's number: 8 to 19 digits",
                ))
            }
            _ => {}
        }
        let lines: Result<Vec<SaleLine>, String> = self.lines.iter().map(to_line).collect();
        match (lines, amount) {
            (Err(e), _) => errors.push(FieldError::new("lines", e)),
            (Ok(lines), Ok(amount)) => {
                if let Err(e) = (Sale { lines }).validate(amount) {
                    errors.push(FieldError::new("lines", e));
                }
            }
            (Ok(_), Err(_)) => {}
        }
        errors
    }
}

/// A payment as the till and the back office see it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    /// The platform's payment number (what refunds name).
    pub payment_no: String,
    pub order_no: String,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub shift_id: Uuid,
    pub method: PaymentMethod,
    pub amount: Decimal,
    pub currency: String,
    /// `fuel`, `non_fuel` or `mixed`.
    pub sale_kind: String,
    pub lines: Vec<Line>,
    /// `pending`, `succeeded`, `failed`, `reversed` or `needs_attention`.
    pub status: String,
    /// Why the payment stands where it stands.
    pub reason: String,
    pub channel: Option<String>,
    pub channel_txn_id: Option<String>,
    pub fee: Option<Decimal>,
    /// For `*_qr` methods while pending: the code the customer scans.
    pub code_url: Option<String>,
    pub refunded: Decimal,
    /// What may still be refunded.
    pub refundable: Decimal,
    /// The routing decision: ranked candidates and every excluded channel with its reason.
    #[schema(value_type = Object)]
    pub route: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) fn minor(minor: i64) -> Decimal {
    ledger::Money::from_minor(minor, ledger::Currency::CNY).amount()
}

async fn payment_view(state: &AppState, p: pos_payments::Model) -> Result<Payment, ApiError> {
    let method = sales::parse_method(&p.method).map_err(store_error)?;
    let sale: Sale = serde_json::from_str(&p.sale).map_err(ApiError::internal)?;
    let code_url =
        if p.status == "pending" && matches!(method, Method::WechatPayQr | Method::AlipayQr) {
            issued_code(state, &p.payment_no).await
        } else {
            None
        };
    Ok(Payment {
        method: method_of(method)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("method {method:?}")))?,
        sale_kind: serde_json::to_value(sale.kind())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        lines: sale.lines.iter().map(from_line).collect(),
        amount: minor(p.amount_minor),
        refunded: minor(p.refunded_minor),
        refundable: if p.status == "succeeded" {
            minor(p.amount_minor - p.refunded_minor - p.refund_reserved_minor)
        } else {
            Decimal::ZERO
        },
        fee: p.fee_minor.map(minor),
        route: p
            .route
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ApiError::internal)?,
        payment_no: p.payment_no,
        order_no: p.terminal_order_no,
        station_id: p.station_id,
        terminal_id: p.terminal_id,
        shift_id: p.shift_id,
        currency: p.currency,
        status: p.status,
        reason: p.reason,
        channel: p.channel_id,
        channel_txn_id: p.channel_txn_id,
        code_url,
        created_at: p.created_at,
        finished_at: p.finished_at,
    })
}

/// The dynamic code a QR payment's channel issued, from the workflow's history.
async fn issued_code(state: &AppState, payment_no: &str) -> Option<String> {
    let ctx = state.payments.as_ref()?;
    let instance = ctx
        .engine
        .instance_by_key(workflows::pos_payment::PosPayment::NAME, payment_no)
        .await
        .ok()??;
    instance.history.iter().rev().find_map(|row| {
        // The charge activity's output is the adapter's `Result`, serialised as `{"Ok": …}`.
        row.detail
            .pointer("/event/output/Ok/code_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    })
}

use workflows::Workflow;

/// Take a payment at the till. Cash is booked at once; other methods are routed to the
/// station's channels and run by the `pos_payment` workflow, which never charges a second
/// channel unless the first certainly did not charge. The request waits a bounded time for
/// the outcome, then answers with the payment as it stands.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/payments",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = CreatePayment,
    responses(
        (status = 201, description = "The payment, final or `pending`", body = Payment),
        (status = 200, description = "The order number's payment, as it stands now (a retry)", body = Payment),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Json(body): Json<CreatePayment>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let ctx = context(&state)?;
    let amount = ledger::Money::new(body.amount, ledger::Currency::CNY)
        .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))?;
    let lines = body
        .lines
        .iter()
        .map(to_line)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::validation(vec![FieldError::new("lines", e)]))?;
    let new = NewPayment {
        terminal_order_no: body.order_no.clone(),
        method: body.method.into(),
        amount,
        sale: Sale { lines },
        payer_code: body.payer_code.clone(),
    };
    // A retry is answered with the payment as it stands, whatever the shift.
    if let Some(existing) = sales::existing_payment(&state.db, terminal.id, &new)
        .await
        .map_err(store_error)?
    {
        // Watching before the row is read again: an outcome recorded in between is seen.
        let watch = sales::outcomes::watch(&existing.payment_no);
        let mut existing = book_at_till(&state, existing).await?;
        if existing.status == "pending" {
            existing = sales::payment_by_no(&state.db, &existing.payment_no)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found("payment"))?;
        }
        let waited = wait_for_outcome(&state, ctx, existing, watch).await?;
        return Ok((
            StatusCode::OK,
            axum::Json(payment_view(&state, waited).await?),
        )
            .into_response());
    }
    let shift = open_shift_of(&state, &terminal).await?;
    // A member card is the issuer's, found by its number among the issuer's cards.
    let card = if new.method == Method::MemberCard {
        let number = new.payer_code.as_deref().unwrap_or_default();
        let issuer = super::member_cards::issuer_of(&state, terminal.station_id).await?;
        Some(
            payments::cards::card_by_no(&state.db, issuer, number)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    ApiError::validation(vec![FieldError::new(
                        "payer_code",
                        "no member card with this number at this station company",
                    )])
                })?,
        )
    } else {
        None
    };
    let at = now();
    let route = if new.method.uses_channel() {
        let configs: Vec<ChannelConfig> = stations::channels(&state.db, terminal.station_id)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|c| c.terms)
            .collect();
        let ids: Vec<ChannelId> = configs.iter().map(|c| c.id.clone()).collect();
        let payer = new.payer_code.as_deref().map(PayerToken::of);
        let health = ctx
            .health
            .lock()
            .await
            .snapshot(&state.db, at)
            .await
            .map_err(store_error)?;
        let snapshot = RoutingSnapshot {
            health,
            used_today: sales::used_today(&state.db, terminal.station_id, &sales::business_day(at))
                .await
                .map_err(store_error)?,
        };
        Some(payments::routing::route(
            &RouteRequest {
                method: new.method,
                amount,
                at,
                station_channels: &ids,
                payer: payer.as_ref(),
            },
            &configs,
            &snapshot,
        ))
    } else {
        None
    };
    // The row and its workflow commit together: no payment is left without its instance.
    let txn = entities::db::begin_write(&state.db).await?;
    let shift = shifts::open_shift_in(&txn, terminal.id)
        .await
        .map_err(store_error)?
        .filter(|s| s.id == shift.id)
        .ok_or_else(|| ApiError::conflict("the shift closed meanwhile: open one first"))?;
    let created = sales::create_payment(&txn, &terminal, &shift, &new, route.as_ref(), at)
        .await
        .map_err(store_error)?;
    if let (Created::New(payment), Some(card)) = (&created, &card) {
        payments::cards::attach_card(&txn, payment, card)
            .await
            .map_err(store_error)?;
    }
    if let (Created::New(payment), Some(decision)) = (&created, route) {
        let input = PosPaymentInput {
            payment: PaymentInput {
                payment_no: payment.payment_no.clone(),
                method: new.method,
                amount,
            },
            decision,
            policy: ctx.flow,
            description: "Fuel and shop".into(),
            payer_code: new.payer_code.clone(),
            activity_timeout_ms: ctx.activity_timeout_ms,
        };
        ctx.engine
            .start_in::<PosPayment>(&txn, &payment.payment_no, input)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
    }
    // Watching before the commit: the outcome cannot be recorded before it.
    let watch = sales::outcomes::watch(&created.payment().payment_no);
    txn.commit().await?;
    ctx.engine.wake();
    let status = match created {
        Created::New(_) => StatusCode::CREATED,
        Created::Replay(_) => StatusCode::OK,
    };
    let mut payment = created.payment().clone();
    if let (Created::New(_), Some(card)) = (&created, &card) {
        // Attached in the transaction above, after the row was read.
        payment.card_id = Some(card.id);
    }
    let payment = book_at_till(&state, payment).await?;
    let payment = wait_for_outcome(&state, ctx, payment, watch).await?;
    Ok((status, axum::Json(payment_view(&state, payment).await?)).into_response())
}

/// Books a pending payment the till settles by itself, cash or member card, and records it
/// (again after a crash: the booking is idempotent by the payment number). Payments through
/// a channel are left to their workflow.
async fn book_at_till(
    state: &AppState,
    payment: pos_payments::Model,
) -> Result<pos_payments::Model, ApiError> {
    if payment.status != "pending" {
        return Ok(payment);
    }
    let (status, reason) = match sales::parse_method(&payment.method).map_err(store_error)? {
        Method::Cash => {
            sales::book_cash_sale(&state.ledger, &payment)
                .await
                .map_err(store_error)?;
            ("succeeded", "cash into the drawer".to_owned())
        }
        Method::MemberCard => {
            let card_id = payment.card_id.ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("card payment without a card"))
            })?;
            let card = payments::cards::card(&state.db, card_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ApiError::not_found("member card"))?;
            match payments::cards::charge_card(&state.ledger, &payment, &card)
                .await
                .map_err(store_error)?
            {
                payments::stored_value::Charge::Paid => (
                    "succeeded",
                    format!("paid from member card {}", card.card_no),
                ),
                payments::stored_value::Charge::Refused(reason) => ("failed", reason),
            }
        }
        _ => return Ok(payment),
    };
    sales::record_outcome(
        &state.db,
        &payment.payment_no,
        &sales::Outcome {
            status: status.into(),
            channel: None,
            channel_txn_id: None,
            out_trade_no: None,
            fee_minor: None,
            reason,
        },
        now(),
    )
    .await
    .map_err(store_error)?;
    sales::payment_by_no(&state.db, &payment.payment_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("payment"))
}

// The polls of a waiting payment only catch a lost wake-up (the listening connection was
// being re-established): the first after 200 ms, then at most once a second. Polling sooner
// cost four reads of the row per payment at saturation, each for nothing.
const FIRST_POLL: Duration = Duration::from_millis(200);
const LAST_POLL: Duration = Duration::from_secs(1);

/// Waits until the payment is final or the bounded wait is over: woken when the outcome is
/// recorded (announced by a worker of this process, or notified by one of another process
/// on PostgreSQL), and polling the row in any case, rarely: a notification may be lost.
async fn wait_for_outcome(
    state: &AppState,
    ctx: &PaymentsContext,
    mut payment: pos_payments::Model,
    watch: sales::outcomes::Watch,
) -> Result<pos_payments::Model, ApiError> {
    if payment.status != "pending" {
        return Ok(payment);
    }
    let deadline = tokio::time::Instant::now() + ctx.wait;
    let mut pause = FIRST_POLL;
    // The watch began before the payment could be recorded (the caller's job), so an
    // announcement is never missed; once one came, only the polls are left to wait for.
    let mut announced = false;
    while payment.status == "pending" && tokio::time::Instant::now() < deadline {
        if announced {
            tokio::time::sleep(pause).await;
        } else {
            tokio::select! {
                _ = watch.recorded() => announced = true,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        pause = (pause * 2).min(LAST_POLL);
        payment = sales::payment_by_no(&state.db, &payment.payment_no)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("payment"))?;
    }
    Ok(payment)
}

/// A payment of this terminal, by the terminal's order number.
#[utoipa::path(
    get,
    path = "/v1/terminals/{terminal_id}/payments/{order_no}",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("order_no" = String, Path, description = "The terminal's order number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
    ),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, order_no)): Path<(Uuid, String)>,
) -> Result<axum::Json<Payment>, ApiError> {
    let terminal = till(&state, &caller, Action::ReadPayments, terminal_id, &headers).await?;
    let payment = sales::payment_by_order(&state.db, terminal.id, &order_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    Ok(axum::Json(payment_view(&state, payment).await?))
}

/// The till stops waiting for a pending payment (the customer walked away): whatever may
/// have been charged is reversed, and the reversal confirmed, before the sale is released.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/payments/{order_no}/cancel",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("order_no" = String, Path, description = "The terminal's order number"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 202, description = "Cancelling; the payment as it stands", body = Payment),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn cancel_payment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((terminal_id, order_no)): Path<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let ctx = context(&state)?;
    let payment = sales::payment_by_order(&state.db, terminal.id, &order_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    if payment.status != "pending" {
        return Err(ApiError::conflict(format!(
            "the payment is {}; a finished payment is given back with a refund",
            payment.status
        )));
    }
    if !sales::parse_method(&payment.method)
        .map_err(store_error)?
        .uses_channel()
    {
        return Err(ApiError::conflict(
            "a cash or member-card payment is not cancelled: send the same payment again to book it, then refund it",
        ));
    }
    if payment.method == sales::method_text(Method::PartnerApp) {
        return Err(ApiError::conflict(
            "a partner order is not cancelled at the till: it is booked when the partner's push completes; refund it then",
        ));
    }
    match ctx
        .engine
        .signal_by_key(
            PosPayment::NAME,
            &payment.payment_no,
            "abandon",
            serde_json::Value::Null,
        )
        .await
    {
        Ok(()) | Err(workflows::EngineError::Finished(_)) => {}
        Err(e) => return Err(ApiError::internal(anyhow::Error::new(e))),
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(payment_view(&state, payment).await?),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------

/// A refund asked for at the till.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "payment_no": "019ab0c2d3e4a1b2c3d4e5f6",
    "refund_no": "RF-0001",
    "amount": "50.00",
    "reason": "over-filled can returned"
}))]
pub struct CreateRefund {
    /// The payment to refund (its `payment_no`), of this station.
    pub payment_no: String,
    /// The till's own refund number: 1 to 32 letters, digits, `-` or `_`. The same number
    /// is the same refund.
    pub refund_no: String,
    /// CNY; several partial refunds may add up to the payment, never more.
    pub amount: Decimal,
    pub reason: String,
}

impl Validate for CreateRefund {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_code(&self.refund_no, 32) {
            errors.push(FieldError::new(
                "refund_no",
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if self.payment_no.is_empty() || self.payment_no.len() > 64 {
            errors.push(FieldError::new("payment_no", "a payment number"));
        }
        match ledger::Money::new(self.amount, ledger::Currency::CNY) {
            Ok(m) if m.is_positive() => {}
            _ => errors.push(FieldError::new("amount", "a positive amount, to the fen")),
        }
        if self.reason.trim().is_empty() || self.reason.chars().count() > 200 {
            errors.push(FieldError::new("reason", "1 to 200 characters"));
        }
        errors
    }
}

/// A refund.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    pub id: Uuid,
    /// The platform's refund number, sent to the channel.
    pub refund_no: String,
    pub terminal_refund_no: String,
    pub payment_no: String,
    pub station_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub reason: String,
    /// `pending_approval`, `refunding`, `succeeded`, `failed`, `rejected`, `expired` or
    /// `needs_attention`.
    pub status: String,
    pub status_reason: String,
    /// The sale belongs to another shift: the station manager decides.
    pub needs_approval: bool,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub decision_note: Option<String>,
    pub channel_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn refund_view(r: pos_refunds::Model, payment_no: String) -> Refund {
    Refund {
        id: r.id,
        refund_no: r.refund_no,
        terminal_refund_no: r.terminal_refund_no,
        payment_no,
        station_id: r.station_id,
        amount: minor(r.amount_minor),
        currency: r.currency,
        reason: r.reason,
        status: r.status,
        status_reason: r.status_reason,
        needs_approval: r.needs_approval,
        requested_by: r.requested_by,
        decided_by: r.decided_by,
        decision_note: r.decision_note,
        channel_refund_id: r.channel_refund_id,
        created_at: r.created_at,
        expires_at: r.expires_at,
        finished_at: r.finished_at,
    }
}

async fn wait_for_refund(
    state: &AppState,
    ctx: &PaymentsContext,
    mut refund: pos_refunds::Model,
) -> Result<pos_refunds::Model, ApiError> {
    let deadline = tokio::time::Instant::now() + ctx.wait;
    let mut pause = Duration::from_millis(2);
    while refund.status == "refunding" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        refund = sales::refund(&state.db, refund.id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("refund"))?;
    }
    Ok(refund)
}

/// Refund all or part of a payment of this station. A sale of the till's open shift is
/// refunded at once; a sale of another shift becomes a request the station manager
/// approves or rejects (it expires if nobody decides). Partial refunds add up to the payment
/// at most, under any concurrency.
#[utoipa::path(
    post,
    path = "/v1/terminals/{terminal_id}/refunds",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = CreateRefund,
    responses(
        (status = 201, description = "The refund: final, `refunding`, or `pending_approval`", body = Refund),
        (status = 200, description = "The refund number's refund, as it stands (a retry)", body = Refund),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn create_refund(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Json(body): Json<CreateRefund>,
) -> Result<Response, ApiError> {
    let terminal = till(&state, &caller, Action::TakePayments, terminal_id, &headers).await?;
    let ctx = context(&state)?;
    let (_, name) = person(&caller)?;
    let payment = sales::payment_by_no(&state.db, &body.payment_no)
        .await
        .map_err(store_error)?
        .filter(|p| p.station_id == terminal.station_id)
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let shift = open_shift_of(&state, &terminal).await?;
    let needs_approval = payment.shift_id != shift.id;
    let at = now();
    let expires_at = needs_approval.then(|| {
        at + chrono::Duration::from_std(ctx.approval_deadline)
            .unwrap_or(chrono::Duration::hours(24))
    });
    let new = NewRefund {
        terminal_refund_no: body.refund_no.clone(),
        amount: ledger::Money::new(body.amount, ledger::Currency::CNY)
            .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))?,
        reason: body.reason.trim().to_owned(),
        requested_by: name,
    };
    // The refund, its reservation on the payment and its workflow commit together.
    let txn = entities::db::begin_write(&state.db).await?;
    shifts::open_shift_in(&txn, terminal.id)
        .await
        .map_err(store_error)?
        .filter(|s| s.id == shift.id)
        .ok_or_else(|| ApiError::conflict("the shift closed meanwhile: open one first"))?;
    let created = sales::request_refund(
        &txn,
        &payment,
        &new,
        Some(shift.id),
        needs_approval,
        expires_at,
        at,
    )
    .await
    .map_err(store_error)?;
    let (status, refund) = match created {
        RefundCreated::New(r) => {
            ctx.engine
                .start_in::<RefundApproval>(
                    &txn,
                    &r.refund_no,
                    RefundInput {
                        refund_no: r.refund_no.clone(),
                        needs_approval: r.needs_approval,
                        approval_deadline_ms: ctx.approval_deadline.as_millis() as u64,
                        activity_timeout_ms: ctx.activity_timeout_ms,
                    },
                )
                .await
                .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
            (StatusCode::CREATED, r)
        }
        RefundCreated::Replay(r) => (StatusCode::OK, r),
        RefundCreated::Refused(refusal) => {
            // Release the shift's lock now, not whenever the connection is next used.
            txn.rollback().await?;
            return Err(match refusal {
                sales::RefundRefusal::NotRefundable(_) => ApiError::conflict(refusal.to_string()),
                _ => ApiError::validation(vec![FieldError::new("amount", refusal.to_string())]),
            });
        }
    };
    txn.commit().await?;
    ctx.engine.wake();
    let refund = wait_for_refund(&state, ctx, refund).await?;
    Ok((status, axum::Json(refund_view(refund, payment.payment_no))).into_response())
}

/// Which refund requests.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefundRequestsQuery {
    /// Only refunds in this status (`pending_approval` by default).
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

crate::page_type!(RefundPage, Refund, "refunds");

/// The station's refunds, by default those waiting for the manager, oldest first.
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/refunds",
    tag = "payments",
    params(("station_id" = Uuid, Path, description = "Station id"), RefundRequestsQuery),
    responses(
        (status = 200, description = "A page of refunds", body = RefundPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_refund_requests(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
    Query(q): Query<RefundRequestsQuery>,
) -> Result<axum::Json<RefundPage>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let status = q.status.unwrap_or_else(|| "pending_approval".into());
    const STATUSES: &[&str] = &[
        "pending_approval",
        "refunding",
        "succeeded",
        "failed",
        "rejected",
        "expired",
        "needs_attention",
    ];
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::parameter("status", STATUSES.join(", ")));
    }
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("refunds", q.cursor.as_deref())?;
    let mut select = pos_refunds::Entity::find()
        .filter(pos_refunds::Column::StationId.eq(station_id))
        .filter(pos_refunds::Column::Status.eq(status))
        .order_by_asc(pos_refunds::Column::Id)
        .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(pos_refunds::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "refunds", |r| r.id.to_string());
    let ids: Vec<Uuid> = rows.iter().map(|r| r.payment_id).collect();
    let numbers: BTreeMap<Uuid, String> = if ids.is_empty() {
        BTreeMap::new()
    } else {
        pos_payments::Entity::find()
            .select_only()
            .column(pos_payments::Column::Id)
            .column(pos_payments::Column::PaymentNo)
            .filter(pos_payments::Column::Id.is_in(ids))
            .into_tuple::<(Uuid, String)>()
            .all(&state.db)
            .await?
            .into_iter()
            .collect()
    };
    Ok(axum::Json(RefundPage {
        items: rows
            .into_iter()
            .map(|r| {
                let no = numbers.get(&r.payment_id).cloned().unwrap_or_default();
                refund_view(r, no)
            })
            .collect(),
        next_cursor,
    }))
}

/// A manager's decision.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"note": "checked the CCTV: can returned unopened"}))]
pub struct Decision {
    /// Why; required to reject.
    pub note: Option<String>,
}

impl Validate for Decision {
    fn validate(&self) -> Vec<FieldError> {
        match &self.note {
            Some(n) if n.trim().is_empty() || n.chars().count() > 500 => {
                vec![FieldError::new("note", "1 to 500 characters")]
            }
            _ => vec![],
        }
    }
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    claim: IdempotencyClaim,
    station_id: Uuid,
    refund_id: Uuid,
    approve: bool,
    note: Option<String>,
) -> Result<Response, ApiError> {
    station(state, caller, Action::ApproveRefunds, station_id).await?;
    let ctx = context(state)?;
    let (_, name) = person(caller)?;
    let refund = sales::refund(&state.db, refund_id)
        .await
        .map_err(store_error)?
        .filter(|r| r.station_id == station_id)
        .ok_or_else(|| ApiError::not_found("refund"))?;
    if refund.requested_by == name {
        return Err(ApiError::forbidden(
            "the person who asked for a refund cannot decide it",
        ));
    }
    if !approve && note.is_none() {
        return Err(ApiError::validation(vec![FieldError::new(
            "note",
            "a rejection says why",
        )]));
    }
    // The decision, the workflow's signal and the stored response commit together.
    let txn = entities::db::begin_write(&state.db).await?;
    let decided = sales::decide_refund(
        &txn,
        refund_id,
        approve,
        &name,
        note.as_deref().map(str::trim).unwrap_or(""),
        now(),
    )
    .await
    .map_err(store_error)?
    .ok_or_else(|| ApiError::conflict("the refund is no longer waiting for approval"))?;
    match ctx
        .engine
        .signal_in(
            &txn,
            RefundApproval::NAME,
            &decided.refund_no,
            SIGNAL_DECISION,
            serde_json::json!({ "approved": approve }),
        )
        .await
    {
        // Expired meanwhile: the store's decision stands, and the workflow has finished.
        Ok(()) | Err(workflows::EngineError::Finished(_)) => {}
        Err(e) => return Err(ApiError::internal(anyhow::Error::new(e))),
    }
    let payment_no = pos_payments::Entity::find_by_id(decided.payment_id)
        .one(&txn)
        .await?
        .map(|p| p.payment_no)
        .unwrap_or_default();
    let view = refund_view(decided, payment_no);
    let response = claim
        .commit(txn, StatusCode::OK, Some(&view), None, None)
        .await?;
    ctx.engine.wake();
    Ok(response)
}

/// Approve a refund request (station manager; never the person who asked for it). The
/// refund is then paid back through the payment's channel, or from the drawer for cash.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/refunds/{refund_id}/approve",
    tag = "payments",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("refund_id" = Uuid, Path, description = "Refund id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = Decision,
    responses(
        (status = 200, description = "The refund as it stands", body = Refund),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(refund = %refund_id))]
async fn approve_refund(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, refund_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<Decision>,
) -> Result<Response, ApiError> {
    decide(
        &state, &caller, claim, station_id, refund_id, true, body.note,
    )
    .await
}

/// Reject a refund request (station manager), with a note. The amount becomes refundable
/// again.
#[utoipa::path(
    post,
    path = "/v1/stations/{station_id}/refunds/{refund_id}/reject",
    tag = "payments",
    params(
        ("station_id" = Uuid, Path, description = "Station id"),
        ("refund_id" = Uuid, Path, description = "Refund id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = Decision,
    responses(
        (status = 200, description = "The rejected refund", body = Refund),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(refund = %refund_id))]
async fn reject_refund(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path((station_id, refund_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<Decision>,
) -> Result<Response, ApiError> {
    decide(
        &state, &caller, claim, station_id, refund_id, false, body.note,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Channel notifications
// ---------------------------------------------------------------------------------------

/// A channel's asynchronous payment notification, in the party's own format and signed by
/// it (WeChat Pay: `Wechatpay-Signature` over the AES-256-GCM-encrypted resource; Alipay:
/// RSA2 over the form; the acquirer: its signature header). Answered in the party's format.
#[utoipa::path(
    post,
    path = "/v1/payments/notifications/{channel_id}",
    tag = "payments",
    params(("channel_id" = String, Path, description = "The channel the notification is for")),
    request_body(content = String, description = "The party's notification, as it sends it", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Accepted (or already applied)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(())
)]
#[tracing::instrument(skip_all, fields(channel = %channel_id))]
async fn channel_notification(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctx = context(&state)?;
    let id = ChannelId::new(channel_id).map_err(|_| ApiError::not_found("channel"))?;
    let adapter = ctx
        .channels
        .get(&id)
        .ok_or_else(|| ApiError::not_found("channel"))?;
    let request = InboundRequest {
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let notification = adapter.parse_notification(&request).map_err(|e| match e {
        payments::channels::NotificationError::Malformed(detail) => {
            ApiError::new(ProblemKind::MalformedMessage, detail)
        }
        other => ApiError::new(ProblemKind::SignatureInvalid, other.to_string()),
    })?;
    let payment_no = notification
        .out_trade_no
        .rsplit_once('-')
        .map(|(no, _)| no.to_owned())
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let payload = serde_json::to_value(&notification).map_err(ApiError::internal)?;
    match ctx
        .engine
        .signal_by_key(PosPayment::NAME, &payment_no, "notification", payload)
        .await
    {
        // A notification after the payment finished changes nothing: it is acknowledged.
        Ok(()) | Err(workflows::EngineError::Finished(_)) => {}
        Err(workflows::EngineError::UnknownInstance(_)) => {
            return Err(ApiError::not_found("payment"));
        }
        Err(e) => return Err(ApiError::internal(anyhow::Error::new(e))),
    }
    let party = ctx.parties.get(&id).copied();
    Ok(match party {
        Some(Party::Alipay) => (StatusCode::OK, "success").into_response(),
        _ => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "code": "SUCCESS", "message": "OK" })),
        )
            .into_response(),
    })
}

// ---------------------------------------------------------------------------------------
// The day's end: summaries, daily closes, reconciliation exceptions
// ---------------------------------------------------------------------------------------

/// Which day.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DayQuery {
    /// The station's local day (`YYYY-MM-DD`, Asia/Shanghai); yesterday when absent.
    pub day: Option<NaiveDate>,
}

/// A station's day as the till prints it: totals by method and fuel grade, refunds, fees,
/// shifts left open and payments still unresolved, and the printable text.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DaySummary {
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// The same for a till printer (40 columns).
    pub receipt: String,
}

/// The station's summary of a day (yesterday by default), computed now, for the till.
#[utoipa::path(
    get,
    path = "/v1/terminals/{terminal_id}/day-summary",
    tag = "payments",
    params(
        ("terminal_id" = Uuid, Path, description = "Terminal id"),
        ("Forecourt-Terminal-Key" = String, Header, description = terminal_key_param()),
        DayQuery,
    ),
    responses(
        (status = 200, description = "The day's summary", body = DaySummary),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(terminal = %terminal_id))]
async fn day_summary(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(terminal_id): Path<Uuid>,
    Query(q): Query<DayQuery>,
) -> Result<axum::Json<DaySummary>, ApiError> {
    let terminal = till(&state, &caller, Action::ReadPayments, terminal_id, &headers).await?;
    let day = match q.day {
        Some(day) => day.format("%Y-%m-%d").to_string(),
        None => payments::daily::previous_business_day(Utc::now()),
    };
    let summary = payments::daily::day_summary(&state.db, terminal.station_id, &day)
        .await
        .map_err(store_error)?;
    let station = find_org(&state.db, terminal.station_id)
        .await?
        .map(|o| o.name)
        .unwrap_or_default();
    Ok(axum::Json(DaySummary {
        receipt: payments::daily::receipt(&summary, &station),
        summary: serde_json::to_value(&summary).map_err(ApiError::internal)?,
    }))
}

/// A stored daily close (日结) of a station or a station company.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DailyClose {
    pub organisation_id: Uuid,
    pub business_day: String,
    /// Whether the day is final: no shift left open, nothing unresolved.
    pub is_final: bool,
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

/// Which closes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClosesQuery {
    /// At most this many, newest first (1 to 366, default 31).
    pub limit: Option<u64>,
}

/// The daily closes of a station or a station company, newest first. The `daily_close`
/// workflow makes them at 00:00 Asia/Shanghai for the day before.
#[utoipa::path(
    get,
    path = "/v1/organisations/{id}/daily-closes",
    tag = "payments",
    params(("id" = Uuid, Path, description = "A station or station company"), ClosesQuery),
    responses(
        (status = 200, description = "The closes", body = Vec<DailyClose>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(organisation = %id))]
async fn list_daily_closes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<ClosesQuery>,
) -> Result<axum::Json<Vec<DailyClose>>, ApiError> {
    let org = find_org(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(&caller, Action::ReadPayments, &org, "organisation")?;
    if !matches!(org.kind, OrgKind::Station | OrgKind::StationCompany) {
        return Err(ApiError::not_found("organisation"));
    }
    let limit = q.limit.unwrap_or(31);
    if !(1..=366).contains(&limit) {
        return Err(ApiError::parameter("limit", "1 to 366"));
    }
    let closes = payments::daily::daily_closes(&state.db, id, limit)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(
        closes
            .into_iter()
            .map(|c| {
                Ok(DailyClose {
                    organisation_id: id,
                    business_day: c.summary.business_day.clone(),
                    is_final: c.summary.is_final(),
                    summary: serde_json::to_value(&c.summary).map_err(ApiError::internal)?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
    ))
}

/// A difference between a channel's statement and our payments that reconciliation could
/// not explain.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconException {
    pub id: Uuid,
    pub channel: String,
    pub statement_day: String,
    /// `payment` or `refund`.
    pub subject: String,
    /// `missing_here`, `missing_there`, `amount_mismatch` or `status_mismatch`.
    pub kind: String,
    pub station_id: Option<Uuid>,
    pub out_trade_no: String,
    pub refund_no: String,
    pub payment_no: Option<String>,
    pub channel_txn_id: Option<String>,
    pub our_amount: Option<Decimal>,
    pub their_amount: Option<Decimal>,
    pub currency: String,
    /// What the statement, our books and the channel's query said.
    pub detail: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution_note: Option<String>,
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<entities::pos_recon_exceptions::Model> for ReconException {
    fn from(m: entities::pos_recon_exceptions::Model) -> Self {
        ReconException {
            id: m.id,
            channel: m.channel_id,
            statement_day: m.statement_day,
            subject: m.subject,
            kind: m.kind,
            station_id: m.station_id,
            out_trade_no: m.out_trade_no,
            refund_no: m.refund_no,
            payment_no: m.payment_no,
            channel_txn_id: m.channel_txn_id,
            our_amount: m.our_amount_minor.map(minor),
            their_amount: m.their_amount_minor.map(minor),
            currency: m.currency,
            detail: m.detail,
            status: m.status,
            resolution_note: m.resolution_note,
            resolved_by: m.resolved_by,
            created_at: m.created_at,
            resolved_at: m.resolved_at,
        }
    }
}

/// Which exceptions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExceptionsQuery {
    pub channel: Option<String>,
    /// Statement day, `YYYY-MM-DD`.
    pub day: Option<NaiveDate>,
    /// `open` (default) or `resolved`.
    pub status: Option<String>,
    /// Rows to skip.
    pub offset: Option<u64>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<u64>,
}

fn exception_filter(
    q: ExceptionsQuery,
    station_id: Option<Uuid>,
) -> Result<payments::reconcile::ExceptionFilter, ApiError> {
    let status = q.status.unwrap_or_else(|| "open".into());
    if !matches!(status.as_str(), "open" | "resolved") {
        return Err(ApiError::parameter("status", "open or resolved"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=payments::reconcile::EXCEPTION_PAGE_MAX).contains(&limit) {
        return Err(ApiError::parameter("limit", "1 to 500"));
    }
    Ok(payments::reconcile::ExceptionFilter {
        channel: q
            .channel
            .map(ChannelId::new)
            .transpose()
            .map_err(|e| ApiError::parameter("channel", e.to_string()))?,
        day: q.day.map(|d| d.format("%Y-%m-%d").to_string()),
        status: Some(status),
        station_id,
        offset: q.offset.unwrap_or(0),
        limit: Some(limit),
    })
}

/// The station's reconciliation exceptions (open by default).
#[utoipa::path(
    get,
    path = "/v1/stations/{station_id}/reconciliation-exceptions",
    tag = "payments",
    params(("station_id" = Uuid, Path, description = "Station id"), ExceptionsQuery),
    responses(
        (status = 200, description = "The exceptions", body = Vec<ReconException>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(station = %station_id))]
async fn list_station_exceptions(
    State(state): State<AppState>,
    caller: Caller,
    Path(station_id): Path<Uuid>,
    Query(q): Query<ExceptionsQuery>,
) -> Result<axum::Json<Vec<ReconException>>, ApiError> {
    station(&state, &caller, Action::ReadPayments, station_id).await?;
    let rows =
        payments::reconcile::list_exceptions(&state.db, &exception_filter(q, Some(station_id))?)
            .await
            .map_err(store_error)?;
    Ok(axum::Json(
        rows.into_iter().map(ReconException::from).collect(),
    ))
}

/// Every reconciliation exception, those with no station of ours included (a charge the
/// channel took that we never recorded): the platform operator's administrators.
#[utoipa::path(
    get,
    path = "/v1/reconciliation-exceptions",
    tag = "payments",
    params(ExceptionsQuery),
    responses(
        (status = 200, description = "The exceptions", body = Vec<ReconException>),
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
    Query(q): Query<ExceptionsQuery>,
) -> Result<axum::Json<Vec<ReconException>>, ApiError> {
    operator_admin(&caller)?;
    let rows = payments::reconcile::list_exceptions(&state.db, &exception_filter(q, None)?)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(
        rows.into_iter().map(ReconException::from).collect(),
    ))
}

fn operator_admin(caller: &Caller) -> Result<(), ApiError> {
    authorize(caller, Action::ManageStations, &caller.org, "organisation")?;
    if caller.org.kind != OrgKind::PlatformOperator {
        return Err(ApiError::forbidden(
            "exceptions that belong to no station are the platform operator's",
        ));
    }
    Ok(())
}

/// A resolution.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"note": "refunded by the channel on 11-24, statement line 1182"}))]
pub struct Resolve {
    /// What was found and done, 1 to 1000 characters.
    pub note: String,
}

impl Validate for Resolve {
    fn validate(&self) -> Vec<FieldError> {
        if self.note.trim().is_empty() || self.note.chars().count() > 1000 {
            vec![FieldError::new("note", "1 to 1000 characters")]
        } else {
            vec![]
        }
    }
}

/// Resolve a reconciliation exception with a note (the station company for its stations'
/// exceptions, the platform operator's administrators for the others). Resolving again
/// returns the first resolution.
#[utoipa::path(
    post,
    path = "/v1/reconciliation-exceptions/{id}/resolve",
    tag = "payments",
    params(
        ("id" = Uuid, Path, description = "Exception id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    request_body = Resolve,
    responses(
        (status = 200, description = "The resolved exception", body = ReconException),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
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
    Json(body): Json<Resolve>,
) -> Result<Response, ApiError> {
    let (_, name) = person(&caller)?;
    let found = payments::reconcile::exception(&state.db, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("exception"))?;
    match found.station_id {
        Some(station_id) => {
            station(&state, &caller, Action::ManageStations, station_id).await?;
        }
        None => operator_admin(&caller)?,
    }
    let txn = entities::db::begin_write(&state.db).await?;
    let resolved = payments::reconcile::resolve_exception(&txn, id, &name, &body.note, now())
        .await
        .map_err(store_error)?;
    claim
        .commit(
            txn,
            StatusCode::OK,
            Some(&ReconException::from(resolved)),
            None,
            None,
        )
        .await
}
