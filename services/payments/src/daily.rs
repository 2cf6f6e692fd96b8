//! The daily close (日结): one business day (Asia/Shanghai) of a station, and of its station
//! company across its stations, in one summary that finance checks against bank arrivals.
//!
//! The day's totals are the sum of the shift summaries of the day's payments and refunds,
//! computed by [`crate::shifts::summarise`] itself, so a shift close and the daily close can
//! never disagree on what a sale counts for. On top the close lists what stops the day from
//! being final: shifts left open (with terminal and cashier) and payments or refunds whose
//! outcome is still unresolved.
//!
//! A close is stored once per organisation and day ([`close_day`]); running it again
//! recomputes the same row in place, never a second one. [`day_summary`] computes a station's
//! day without storing it (the till's "yesterday's summary").

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ledger::money::{Currency, Money};
use rust_decimal::Decimal;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::{
    organisations, pos_card_top_ups, pos_daily_closes, pos_payments, pos_refunds, pos_shifts,
};

use crate::model::Method;
use crate::sales::{BUSINESS_TZ, parse_method, stored_money};
use crate::shifts::{FuelTally, ShiftRefund, ShiftSummary, Tally, summarise};
use crate::stations::StoreError;

/// Whose day a close adds up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseScope {
    Station,
    /// The station company (the station's parent in `organisations`): all its stations.
    StationCompany,
}

impl CloseScope {
    fn as_str(self) -> &'static str {
        match self {
            CloseScope::Station => "station",
            CloseScope::StationCompany => "station_company",
        }
    }
}

/// A shift still open when the day was closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenShift {
    pub shift_id: Uuid,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub terminal_code: String,
    pub cashier_id: Uuid,
    pub cashier_name: String,
    pub opened_at: DateTime<Utc>,
}

/// A payment or refund of the day whose outcome is still open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedItem {
    /// `payment`, `refund` or `top_up` (a member-card top-up).
    pub kind: String,
    /// The payment or refund number.
    pub number: String,
    pub station_id: Uuid,
    pub shift_id: Option<Uuid>,
    pub amount: Decimal,
    pub status: String,
}

/// One business day of a station or a station company.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySummary {
    pub organisation_id: Uuid,
    pub scope: CloseScope,
    /// `YYYY-MM-DD` in Asia/Shanghai.
    pub business_day: String,
    pub currency: String,
    /// The stations added up (one for a station's close).
    pub stations: Vec<Uuid>,
    /// Succeeded payments.
    pub sales: Tally,
    pub by_method: BTreeMap<Method, Tally>,
    /// Fuel lines by grade (`92`, `95`, `98`, `0`).
    pub by_fuel_grade: BTreeMap<String, FuelTally>,
    pub non_fuel: Tally,
    /// Refunds of the day paid back.
    pub refunds: Tally,
    pub refunds_by_method: BTreeMap<Method, Tally>,
    /// Sales less refunds.
    pub net: Decimal,
    /// Fees of the day's succeeded sales: the channels' fees and the partners' commissions.
    pub fees: Decimal,
    /// Payments that failed or were reversed (nothing taken).
    pub not_taken: Tally,
    pub cash_sales: Decimal,
    pub cash_refunds: Decimal,
    /// Member-card top-ups taken in cash (the drawer's, not sales).
    #[serde(default)]
    pub card_top_ups: Tally,
    /// Shifts that opened on the day, took money or refunds on it, or were open during it.
    pub shifts: Vec<Uuid>,
    pub open_shifts: Vec<OpenShift>,
    pub unresolved: Vec<UnresolvedItem>,
}

impl DaySummary {
    fn empty(organisation_id: Uuid, scope: CloseScope, day: &str) -> DaySummary {
        DaySummary {
            organisation_id,
            scope,
            business_day: day.to_owned(),
            currency: Currency::CNY.to_string(),
            stations: Vec::new(),
            sales: Tally::default(),
            by_method: BTreeMap::new(),
            by_fuel_grade: BTreeMap::new(),
            non_fuel: Tally::default(),
            refunds: Tally::default(),
            refunds_by_method: BTreeMap::new(),
            net: Decimal::ZERO,
            fees: Decimal::ZERO,
            not_taken: Tally::default(),
            cash_sales: Decimal::ZERO,
            cash_refunds: Decimal::ZERO,
            card_top_ups: Tally::default(),
            shifts: Vec::new(),
            open_shifts: Vec::new(),
            unresolved: Vec::new(),
        }
    }

    /// Whether the day can be taken as final: no shift left open, nothing unresolved.
    pub fn is_final(&self) -> bool {
        self.open_shifts.is_empty() && self.unresolved.is_empty()
    }
}

fn add_tally(into: &mut Tally, from: &Tally) {
    into.count += from.count;
    into.amount += from.amount;
}

fn add_tallies<K: Ord + Clone>(into: &mut BTreeMap<K, Tally>, from: &BTreeMap<K, Tally>) {
    for (k, t) in from {
        add_tally(into.entry(k.clone()).or_default(), t);
    }
}

fn add_fuel(into: &mut BTreeMap<String, FuelTally>, from: &BTreeMap<String, FuelTally>) {
    for (grade, t) in from {
        let sum = into.entry(grade.clone()).or_default();
        sum.count += t.count;
        sum.litres += t.litres;
        sum.amount += t.amount;
    }
}

/// Adds one shift's summary (of the day's payments and refunds only) to the day.
fn add_shift(day: &mut DaySummary, s: &ShiftSummary) {
    add_tally(&mut day.sales, &s.sales);
    add_tallies(&mut day.by_method, &s.by_method);
    add_fuel(&mut day.by_fuel_grade, &s.by_fuel_grade);
    add_tally(&mut day.non_fuel, &s.non_fuel);
    add_tally(&mut day.refunds, &s.refunds);
    add_tallies(&mut day.refunds_by_method, &s.refunds_by_method);
    add_tally(&mut day.not_taken, &s.not_taken);
    day.cash_sales += s.cash_sales;
    day.cash_refunds += s.cash_refunds;
    add_tally(&mut day.card_top_ups, &s.card_top_ups);
}

/// What one station's day is computed from.
pub struct StationDay<'a> {
    pub station_id: Uuid,
    pub business_day: &'a str,
    /// The end of the business day: a shift opened before it and still open is left open.
    pub day_end: DateTime<Utc>,
    /// Every shift the day's payments and refunds belong to, plus those that opened on the
    /// day or were open at its end.
    pub shifts: &'a [pos_shifts::Model],
    /// The payments of the business day.
    pub payments: &'a [pos_payments::Model],
    /// The refunds of the business day with the method of the payment each gives back.
    pub refunds: &'a [ShiftRefund<'a>],
    /// The member-card top-ups of the business day.
    pub top_ups: &'a [pos_card_top_ups::Model],
    /// Terminal codes by terminal id.
    pub terminal_codes: &'a BTreeMap<Uuid, String>,
}

/// The pure computation of a station's day: the sum of the shift summaries of the day's
/// payments and refunds, the fees, the shifts left open and what is unresolved.
pub fn summarise_station_day(input: &StationDay<'_>) -> Result<DaySummary, StoreError> {
    let mut day = DaySummary::empty(input.station_id, CloseScope::Station, input.business_day);
    day.stations.push(input.station_id);
    let mut unresolved_in_shifts = 0u32;
    for shift in input.shifts {
        let payments: Vec<pos_payments::Model> = input
            .payments
            .iter()
            .filter(|p| p.shift_id == shift.id)
            .cloned()
            .collect();
        let refunds: Vec<ShiftRefund<'_>> = input
            .refunds
            .iter()
            .filter(|r| r.refund.shift_id == Some(shift.id))
            .map(|r| ShiftRefund {
                refund: r.refund,
                method: r.method,
            })
            .collect();
        let top_ups: Vec<pos_card_top_ups::Model> = input
            .top_ups
            .iter()
            .filter(|t| t.shift_id == shift.id)
            .cloned()
            .collect();
        let summary = summarise(shift, &payments, &refunds, &top_ups, None)?;
        unresolved_in_shifts += summary.unresolved;
        add_shift(&mut day, &summary);
        day.shifts.push(shift.id);
        if shift.status == "open" && shift.opened_at < input.day_end {
            day.open_shifts.push(OpenShift {
                shift_id: shift.id,
                station_id: shift.station_id,
                terminal_id: shift.terminal_id,
                terminal_code: input
                    .terminal_codes
                    .get(&shift.terminal_id)
                    .cloned()
                    .unwrap_or_default(),
                cashier_id: shift.cashier_id,
                cashier_name: shift.cashier_name.clone(),
                opened_at: shift.opened_at,
            });
        }
    }
    let known: BTreeSet<Uuid> = input.shifts.iter().map(|s| s.id).collect();
    if let Some(p) = input.payments.iter().find(|p| !known.contains(&p.shift_id)) {
        return Err(StoreError::Invalid(format!(
            "payment {} belongs to a shift the day was not given",
            p.payment_no
        )));
    }
    // Refunds asked for outside any shift (the back office) count for the day all the same.
    for r in input
        .refunds
        .iter()
        .filter(|r| r.refund.shift_id.is_none_or(|id| !known.contains(&id)))
    {
        let amount = stored_money(r.refund.amount_minor, &r.refund.currency)?.amount();
        match r.refund.status.as_str() {
            "succeeded" => {
                add_tally(&mut day.refunds, &Tally { count: 1, amount });
                add_tally(
                    day.refunds_by_method.entry(r.method).or_default(),
                    &Tally { count: 1, amount },
                );
                if r.method == Method::Cash {
                    day.cash_refunds += amount;
                }
            }
            "refunding" | "needs_attention" => unresolved_in_shifts += 1,
            _ => {}
        }
    }
    let mut fees_minor = 0i64;
    for p in input.payments {
        match p.status.as_str() {
            "succeeded" => fees_minor += p.fee_minor.unwrap_or(0),
            "failed" | "reversed" => {}
            _ => day.unresolved.push(UnresolvedItem {
                kind: "payment".into(),
                number: p.payment_no.clone(),
                station_id: p.station_id,
                shift_id: Some(p.shift_id),
                amount: stored_money(p.amount_minor, &p.currency)?.amount(),
                status: p.status.clone(),
            }),
        }
    }
    for r in input.refunds {
        if matches!(r.refund.status.as_str(), "refunding" | "needs_attention") {
            day.unresolved.push(UnresolvedItem {
                kind: "refund".into(),
                number: r.refund.refund_no.clone(),
                station_id: r.refund.station_id,
                shift_id: r.refund.shift_id,
                amount: stored_money(r.refund.amount_minor, &r.refund.currency)?.amount(),
                status: r.refund.status.clone(),
            });
        }
    }
    for t in input.top_ups.iter().filter(|t| t.status == "pending") {
        day.unresolved.push(UnresolvedItem {
            kind: "top_up".into(),
            number: t.top_up_no.clone(),
            station_id: t.station_id,
            shift_id: Some(t.shift_id),
            amount: stored_money(t.amount_minor, &t.currency)?.amount(),
            status: t.status.clone(),
        });
    }
    // The shift summaries and the list must agree on what is unresolved.
    assert_eq!(
        unresolved_in_shifts as usize,
        day.unresolved.len(),
        "the day's unresolved items disagree with its shifts'"
    );
    day.fees = Money::from_minor(fees_minor, Currency::CNY).amount();
    day.net = day.sales.amount - day.refunds.amount;
    Ok(day)
}

/// Adds station days into the day of the station company that owns them.
pub fn merge_days(company_id: Uuid, day: &str, stations: &[DaySummary]) -> DaySummary {
    let mut out = DaySummary::empty(company_id, CloseScope::StationCompany, day);
    for s in stations {
        assert_eq!(s.business_day, day, "station days of another day");
        out.stations.extend(s.stations.iter().copied());
        add_tally(&mut out.sales, &s.sales);
        add_tallies(&mut out.by_method, &s.by_method);
        add_fuel(&mut out.by_fuel_grade, &s.by_fuel_grade);
        add_tally(&mut out.non_fuel, &s.non_fuel);
        add_tally(&mut out.refunds, &s.refunds);
        add_tallies(&mut out.refunds_by_method, &s.refunds_by_method);
        add_tally(&mut out.not_taken, &s.not_taken);
        out.fees += s.fees;
        out.cash_sales += s.cash_sales;
        out.cash_refunds += s.cash_refunds;
        add_tally(&mut out.card_top_ups, &s.card_top_ups);
        out.shifts.extend(s.shifts.iter().copied());
        out.open_shifts.extend(s.open_shifts.iter().cloned());
        out.unresolved.extend(s.unresolved.iter().cloned());
    }
    out.stations.sort();
    out.net = out.sales.amount - out.refunds.amount;
    out
}

/// The instants a business day `YYYY-MM-DD` (Asia/Shanghai) starts and ends at.
pub fn day_bounds(day: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), StoreError> {
    let date = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| StoreError::Invalid(format!("{day:?} is not a day (YYYY-MM-DD)")))?;
    let at = |d: NaiveDate| {
        BUSINESS_TZ
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| StoreError::Invalid(format!("{d} has no single midnight")))
    };
    let next = date
        .succ_opt()
        .ok_or_else(|| StoreError::Invalid(format!("{day} is the last day")))?;
    Ok((at(date)?, at(next)?))
}

/// The business day before the one `at` falls in: what a close fired at `at` closes.
pub fn previous_business_day(at: DateTime<Utc>) -> String {
    let today = at.with_timezone(&BUSINESS_TZ).date_naive();
    today
        .pred_opt()
        .expect("a day before exists")
        .format("%Y-%m-%d")
        .to_string()
}

/// Computes a station's business day from storage, without storing it. This is what the
/// till's "yesterday's summary" prints.
pub async fn day_summary(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    day: &str,
) -> Result<DaySummary, StoreError> {
    let (start, end) = day_bounds(day)?;
    let payments = pos_payments::Entity::find()
        .filter(pos_payments::Column::StationId.eq(station_id))
        .filter(pos_payments::Column::BusinessDay.eq(day))
        .order_by_asc(pos_payments::Column::CreatedAt)
        .all(db)
        .await?;
    let refunds = pos_refunds::Entity::find()
        .filter(pos_refunds::Column::StationId.eq(station_id))
        .filter(pos_refunds::Column::BusinessDay.eq(day))
        .order_by_asc(pos_refunds::Column::CreatedAt)
        .all(db)
        .await?;
    // The refunded payments may be of earlier days: their methods are looked up.
    let refunded: Vec<Uuid> = refunds.iter().map(|r| r.payment_id).collect();
    let methods: BTreeMap<Uuid, String> = if refunded.is_empty() {
        BTreeMap::new()
    } else {
        pos_payments::Entity::find()
            .select_only()
            .column(pos_payments::Column::Id)
            .column(pos_payments::Column::Method)
            .filter(pos_payments::Column::Id.is_in(refunded))
            .into_tuple::<(Uuid, String)>()
            .all(db)
            .await?
            .into_iter()
            .collect()
    };
    let mut with_methods = Vec::with_capacity(refunds.len());
    for refund in &refunds {
        let method = methods
            .get(&refund.payment_id)
            .ok_or(StoreError::NotFound("refunded payment"))?;
        with_methods.push(ShiftRefund {
            refund,
            method: parse_method(method)?,
        });
    }
    let top_ups = pos_card_top_ups::Entity::find()
        .filter(pos_card_top_ups::Column::StationId.eq(station_id))
        .filter(pos_card_top_ups::Column::BusinessDay.eq(day))
        .order_by_asc(pos_card_top_ups::Column::CreatedAt)
        .all(db)
        .await?;
    let shift_ids: BTreeSet<Uuid> = payments
        .iter()
        .map(|p| p.shift_id)
        .chain(refunds.iter().filter_map(|r| r.shift_id))
        .chain(top_ups.iter().map(|t| t.shift_id))
        .collect();
    let mut touched = Condition::any()
        .add(
            Condition::all()
                .add(pos_shifts::Column::OpenedAt.gte(start))
                .add(pos_shifts::Column::OpenedAt.lt(end)),
        )
        .add(
            Condition::all()
                .add(pos_shifts::Column::Status.eq("open"))
                .add(pos_shifts::Column::OpenedAt.lt(end)),
        );
    if !shift_ids.is_empty() {
        touched = touched.add(pos_shifts::Column::Id.is_in(shift_ids));
    }
    let shifts = pos_shifts::Entity::find()
        .filter(pos_shifts::Column::StationId.eq(station_id))
        .filter(touched)
        .order_by_asc(pos_shifts::Column::OpenedAt)
        .order_by_asc(pos_shifts::Column::Id)
        .all(db)
        .await?;
    let terminal_codes: BTreeMap<Uuid, String> = crate::stations::terminals(db, station_id)
        .await?
        .into_iter()
        .map(|t| (t.id, t.code))
        .collect();
    summarise_station_day(&StationDay {
        station_id,
        business_day: day,
        day_end: end,
        shifts: &shifts,
        payments: &payments,
        refunds: &with_methods,
        top_ups: &top_ups,
        terminal_codes: &terminal_codes,
    })
}

/// A stored close with its summary read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredClose {
    pub row: pos_daily_closes::Model,
    pub summary: DaySummary,
}

/// What [`close_day`] stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DailyClose {
    pub station: StoredClose,
    /// The station company's close, when the station has a company in `organisations`.
    pub company: Option<StoredClose>,
}

fn minor(amount: Decimal) -> Result<i64, StoreError> {
    Money::new(amount, Currency::CNY)
        .and_then(|m| m.minor_units())
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

fn read_close(row: pos_daily_closes::Model) -> Result<StoredClose, StoreError> {
    let summary: DaySummary = serde_json::from_str(&row.summary).map_err(|e| {
        StoreError::Invalid(format!("stored close of {}: {e}", row.organisation_id))
    })?;
    Ok(StoredClose { row, summary })
}

/// Writes the close of `summary`'s organisation and day: inserted the first time, the same
/// row recomputed in place after.
pub async fn store_close(
    db: &impl ConnectionTrait,
    summary: &DaySummary,
    now: DateTime<Utc>,
) -> Result<StoredClose, StoreError> {
    let text = serde_json::to_string(summary).expect("summaries serialise");
    if let Some(existing) = daily_close(db, summary.organisation_id, &summary.business_day).await?
        && existing.row.summary == text
    {
        return Ok(existing);
    }
    let count = |n: usize| i64::try_from(n).expect("counts fit in i64");
    let row = pos_daily_closes::ActiveModel {
        id: Set(Uuid::now_v7()),
        organisation_id: Set(summary.organisation_id),
        scope: Set(summary.scope.as_str().to_owned()),
        business_day: Set(summary.business_day.clone()),
        currency: Set(summary.currency.clone()),
        sales_count: Set(i64::from(summary.sales.count)),
        sales_minor: Set(minor(summary.sales.amount)?),
        refunds_count: Set(i64::from(summary.refunds.count)),
        refunds_minor: Set(minor(summary.refunds.amount)?),
        net_minor: Set(minor(summary.net)?),
        fees_minor: Set(minor(summary.fees)?),
        shifts: Set(count(summary.shifts.len())),
        open_shifts: Set(count(summary.open_shifts.len())),
        unresolved: Set(count(summary.unresolved.len())),
        summary: Set(text),
        created_at: Set(now),
        computed_at: Set(now),
    };
    use pos_daily_closes::Column as C;
    pos_daily_closes::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([C::OrganisationId, C::BusinessDay])
                .update_columns([
                    C::Scope,
                    C::Currency,
                    C::SalesCount,
                    C::SalesMinor,
                    C::RefundsCount,
                    C::RefundsMinor,
                    C::NetMinor,
                    C::FeesMinor,
                    C::Shifts,
                    C::OpenShifts,
                    C::Unresolved,
                    C::Summary,
                    C::ComputedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    daily_close(db, summary.organisation_id, &summary.business_day)
        .await?
        .ok_or(StoreError::NotFound("daily close"))
}

/// The station company a station belongs to: its parent in `organisations`, when that is a
/// station company.
pub async fn station_company(
    db: &impl ConnectionTrait,
    station_id: Uuid,
) -> Result<Option<organisations::Model>, StoreError> {
    let Some(station) = organisations::Entity::find_by_id(station_id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let Some(parent_id) = station.parent_id else {
        return Ok(None);
    };
    Ok(organisations::Entity::find_by_id(parent_id)
        .one(db)
        .await?
        .filter(|p| p.kind == "station_company"))
}

/// Closes a station's business day and recomputes its station company's close from all the
/// company's stations. Idempotent: run again, it rewrites the same rows.
pub async fn close_day(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    day: &str,
    now: DateTime<Utc>,
) -> Result<DailyClose, StoreError> {
    let summary = day_summary(db, station_id, day).await?;
    let station = store_close(db, &summary, now).await?;
    let company = match station_company(db, station_id).await? {
        None => None,
        Some(company) => {
            let stations = organisations::Entity::find()
                .filter(organisations::Column::ParentId.eq(company.id))
                .filter(organisations::Column::Kind.eq("station"))
                .order_by_asc(organisations::Column::Id)
                .limit(1_000)
                .all(db)
                .await?;
            let mut days = Vec::with_capacity(stations.len());
            for s in &stations {
                days.push(if s.id == station_id {
                    summary.clone()
                } else {
                    day_summary(db, s.id, day).await?
                });
            }
            Some(store_close(db, &merge_days(company.id, day, &days), now).await?)
        }
    };
    Ok(DailyClose { station, company })
}

/// The stored close of a station or station company for a business day, if it was run.
pub async fn daily_close(
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    day: &str,
) -> Result<Option<StoredClose>, StoreError> {
    pos_daily_closes::Entity::find()
        .filter(pos_daily_closes::Column::OrganisationId.eq(organisation_id))
        .filter(pos_daily_closes::Column::BusinessDay.eq(day))
        .one(db)
        .await?
        .map(read_close)
        .transpose()
}

/// The stored closes of an organisation, newest day first, at most `limit` (capped at 366).
pub async fn daily_closes(
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    limit: u64,
) -> Result<Vec<StoredClose>, StoreError> {
    pos_daily_closes::Entity::find()
        .filter(pos_daily_closes::Column::OrganisationId.eq(organisation_id))
        .order_by_desc(pos_daily_closes::Column::BusinessDay)
        .limit(limit.min(366))
        .all(db)
        .await?
        .into_iter()
        .map(read_close)
        .collect()
}

/// The station's summary of the business day before the one `now` falls in: what a till
/// prints as "yesterday's summary".
pub async fn yesterday_summary(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    now: DateTime<Utc>,
) -> Result<DaySummary, StoreError> {
    day_summary(db, station_id, &previous_business_day(now)).await
}

/// The printable daily summary, fixed-width for a till printer.
pub fn receipt(summary: &DaySummary, station: &str) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("{label:<22}{value:>18}\n"));
    };
    let rule = |out: &mut String| {
        out.push_str(&"-".repeat(40));
        out.push('\n');
    };
    out.push_str(&format!("{:^40}\n", "DAILY CLOSE"));
    out.push_str(&format!("{station}\n"));
    line(&mut out, "Business day", summary.business_day.clone());
    line(&mut out, "Shifts", summary.shifts.len().to_string());
    rule(&mut out);
    line(
        &mut out,
        &format!("Sales ({})", summary.sales.count),
        summary.sales.amount.to_string(),
    );
    for (method, tally) in &summary.by_method {
        let name = crate::sales::method_text(*method);
        line(
            &mut out,
            &format!("  {name} ({})", tally.count),
            tally.amount.to_string(),
        );
    }
    for (grade, tally) in &summary.by_fuel_grade {
        line(
            &mut out,
            &format!("  {grade}# {} L", tally.litres),
            tally.amount.to_string(),
        );
    }
    if summary.non_fuel.count > 0 {
        line(
            &mut out,
            &format!("  shop ({})", summary.non_fuel.count),
            summary.non_fuel.amount.to_string(),
        );
    }
    line(
        &mut out,
        &format!("Refunds ({})", summary.refunds.count),
        format!("-{}", summary.refunds.amount),
    );
    line(&mut out, "Net", summary.net.to_string());
    line(&mut out, "Fees and commissions", summary.fees.to_string());
    rule(&mut out);
    for open in &summary.open_shifts {
        out.push_str(&format!(
            "OPEN SHIFT {} {} since {}\n",
            open.terminal_code,
            open.cashier_name,
            open.opened_at
                .with_timezone(&BUSINESS_TZ)
                .format("%Y-%m-%d %H:%M")
        ));
    }
    if !summary.unresolved.is_empty() {
        out.push_str(&format!("UNRESOLVED {}\n", summary.unresolved.len()));
    }
    if summary.is_final() {
        out.push_str("Every shift closed, nothing unresolved\n");
    }
    out
}

/// The most days one scheduled close catches up after downtime.
pub const CATCH_UP_DAYS_MAX: usize = 31;

/// The days a scheduled close aimed at `day` closes: every day after the station's last
/// stored close up to `day` (the latest [`CATCH_UP_DAYS_MAX`] of them), so that ticks
/// missed while no scheduler ran leave no day unclosed; just `day` for a station never
/// closed before or already up to date.
pub async fn days_to_close(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    day: &str,
) -> Result<Vec<String>, StoreError> {
    let target = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| StoreError::Invalid(format!("{day:?} is not a day (YYYY-MM-DD)")))?;
    let last = daily_closes(db, station_id, 1)
        .await?
        .into_iter()
        .next()
        .and_then(|c| NaiveDate::parse_from_str(&c.row.business_day, "%Y-%m-%d").ok());
    let Some(last) = last.filter(|last| *last < target) else {
        return Ok(vec![day.to_owned()]);
    };
    let mut days: Vec<String> = last
        .iter_days()
        .skip(1)
        .take_while(|d| *d <= target)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    let skip = days.len().saturating_sub(CATCH_UP_DAYS_MAX);
    days.drain(..skip);
    Ok(days)
}
