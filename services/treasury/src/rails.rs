//! Bank rails: when each one is open, for which banks, and what it allows.
//!
//! Three rails reach a creditor from a sub-account at the custodial bank:
//! - [`Rail::IntraBank`]: debtor and creditor at the same bank; always open, no cap.
//! - [`Rail::LargeValue`]: the large-value real-time system (大额实时支付系统); open on
//!   working days between the configured opening time and the cut-off, no cap.
//! - [`Rail::Interbank24x7`]: the 24x7 interbank online system (超级网银); always open, with a
//!   per-transaction cap.
//!
//! Any rail is closed for a bank during that bank's maintenance windows (the notices in the
//! domain brief: "上海银行实时付款业务将于11月24日23:55-11月25日2:05进行维护"), one-off or
//! recurring daily or weekly. All wall-clock times are Asia/Shanghai.
//!
//! # Configuration
//! Hours, the cap and the maintenance windows are data ([`RailsConfig`]), read from a JSON
//! file (`TREASURY_RAILS`) with [`RailsConfig::from_json`]: every field may be left out and
//! keeps its default, unknown fields are refused (a misspelt `per_transaction_cap` must not
//! silently leave the default cap in force), and [`Rails::new`] checks the whole before the
//! process starts:
//! ```json
//! {
//!   "large_value": {"opens_at": "08:30:00", "cut_off": "17:15:00", "settle_minutes": 5},
//!   "interbank": {"per_transaction_cap": "5000000", "settle_minutes": 1},
//!   "maintenance": [
//!     {"bank": "313290000017", "rails": ["interbank_24x7"],
//!      "when": {"kind": "one_off", "from": "2026-11-24T23:55:00", "until": "2026-11-25T02:05:00"},
//!      "note": "上海银行实时付款业务维护"},
//!     {"bank": "102100099996",
//!      "when": {"kind": "weekly", "days": ["sun"], "from": "00:00:00", "until": "04:00:00"}}
//!   ]
//! }
//! ```

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::BusinessCalendar;
use crate::domain::BankCode;

/// The time zone of every configured time and of the business calendar.
pub const TZ: Tz = chrono_tz::Asia::Shanghai;

/// A way to move money from a sub-account to a creditor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rail {
    IntraBank,
    LargeValue,
    /// `interbank_24x7`, as the rail is named everywhere else.
    #[serde(rename = "interbank_24x7", alias = "interbank24x7")]
    Interbank24x7,
}

impl Rail {
    pub const ALL: [Rail; 3] = [Rail::IntraBank, Rail::LargeValue, Rail::Interbank24x7];

    /// The proprietary local-instrument code carried in pain.001 (`PmtTpInf/LclInstrm/Prtry`).
    pub const fn code(self) -> &'static str {
        match self {
            Rail::IntraBank => "INTRA",
            Rail::LargeValue => "HVPS",
            Rail::Interbank24x7 => "IBPS",
        }
    }

    pub fn from_code(code: &str) -> Option<Rail> {
        Rail::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether the rail can carry a payment between these two banks at all.
    pub fn serves(self, debtor: &BankCode, creditor: &BankCode) -> bool {
        match self {
            Rail::IntraBank => debtor == creditor,
            Rail::LargeValue | Rail::Interbank24x7 => debtor != creditor,
        }
    }
}

/// Hours of the large-value system on a working day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LargeValueConfig {
    pub opens_at: NaiveTime,
    /// The last moment a customer payment is accepted (exclusive).
    pub cut_off: NaiveTime,
    /// From submission to the creditor's account.
    pub settle_minutes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterbankConfig {
    /// The most one transaction may carry, in CNY.
    pub per_transaction_cap: Decimal,
    pub settle_minutes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntraBankConfig {
    pub settle_minutes: u32,
}

/// When a maintenance window applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MaintenanceTime {
    /// One announced window, from and until local date-times.
    OneOff {
        from: NaiveDateTime,
        until: NaiveDateTime,
    },
    /// Every day from `from` until `until`; a window that crosses midnight has `until`
    /// before `from`.
    Daily { from: NaiveTime, until: NaiveTime },
    /// On the listed days of the week from `from` until `until`; a window that crosses
    /// midnight (`until` before `from`) ends on the next day.
    Weekly {
        days: Vec<Weekday>,
        from: NaiveTime,
        until: NaiveTime,
    },
}

impl MaintenanceTime {
    /// Whether the local moment `at` falls inside the window.
    fn covers(&self, at: NaiveDateTime) -> bool {
        let t = at.time();
        match self {
            MaintenanceTime::OneOff { from, until } => *from <= at && at < *until,
            MaintenanceTime::Daily { from, until } => {
                if from < until {
                    *from <= t && t < *until
                } else {
                    t >= *from || t < *until
                }
            }
            MaintenanceTime::Weekly { days, from, until } => {
                let today = at.date().weekday();
                if from < until {
                    days.contains(&today) && *from <= t && t < *until
                } else {
                    (days.contains(&today) && t >= *from)
                        || (days.contains(&today.pred()) && t < *until)
                }
            }
        }
    }
}

/// A bank's maintenance window: the rails listed (all rails when empty) are closed for
/// payments from or to that bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub bank: BankCode,
    #[serde(default)]
    pub rails: Vec<Rail>,
    pub when: MaintenanceTime,
    /// Where the window comes from (the bank's notice).
    #[serde(default)]
    pub note: String,
}

/// The rails as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RailsConfig {
    pub large_value: LargeValueConfig,
    pub interbank: InterbankConfig,
    pub intra_bank: IntraBankConfig,
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

impl Default for RailsConfig {
    /// The large-value system's customer hours (08:30 to the 17:00 cut-off) and a 5,000,000
    /// CNY cap on the interbank system.
    fn default() -> Self {
        RailsConfig {
            large_value: LargeValueConfig {
                opens_at: NaiveTime::from_hms_opt(8, 30, 0).expect("valid time"),
                cut_off: NaiveTime::from_hms_opt(17, 0, 0).expect("valid time"),
                settle_minutes: 5,
            },
            interbank: InterbankConfig {
                per_transaction_cap: Decimal::from(5_000_000),
                settle_minutes: 1,
            },
            intra_bank: IntraBankConfig { settle_minutes: 0 },
            maintenance: Vec::new(),
        }
    }
}

impl Default for LargeValueConfig {
    fn default() -> Self {
        RailsConfig::default().large_value
    }
}

impl Default for InterbankConfig {
    fn default() -> Self {
        RailsConfig::default().interbank
    }
}

impl Default for IntraBankConfig {
    fn default() -> Self {
        RailsConfig::default().intra_bank
    }
}

impl RailsConfig {
    /// Reads a configuration file's text (see the module documentation); fields left out
    /// keep their defaults. Check the result with [`Rails::new`].
    pub fn from_json(text: &str) -> Result<Self, RailsError> {
        serde_json::from_str(text).map_err(|e| RailsError::Parse(e.to_string()))
    }
}

/// Why a rails configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RailsError {
    #[error("the large-value system must open before its cut-off")]
    HoursInverted,
    #[error("the interbank per-transaction cap must be positive whole fen")]
    InvalidCap,
    #[error("maintenance window of bank {0} is empty or ends before it starts")]
    EmptyWindow(BankCode),
    #[error("a weekly maintenance window of bank {0} names no day")]
    NoDays(BankCode),
    #[error("rails configuration is not valid JSON: {0}")]
    Parse(String),
}

/// The configured rails and the calendar they follow.
#[derive(Clone, Debug)]
pub struct Rails {
    config: RailsConfig,
    calendar: BusinessCalendar,
}

/// Days ahead searched for rail boundaries: longer than the longest holiday.
pub(crate) const HORIZON_DAYS: u64 = 21;

impl Rails {
    pub fn new(config: RailsConfig, calendar: BusinessCalendar) -> Result<Self, RailsError> {
        if config.large_value.opens_at >= config.large_value.cut_off {
            return Err(RailsError::HoursInverted);
        }
        let cap = config.interbank.per_transaction_cap;
        if cap <= Decimal::ZERO || cap.normalize().scale() > 2 {
            return Err(RailsError::InvalidCap);
        }
        for window in &config.maintenance {
            let empty = match &window.when {
                MaintenanceTime::OneOff { from, until } => from >= until,
                MaintenanceTime::Daily { from, until } => from == until,
                MaintenanceTime::Weekly { days, from, until } => {
                    if days.is_empty() {
                        return Err(RailsError::NoDays(window.bank.clone()));
                    }
                    from == until
                }
            };
            if empty {
                return Err(RailsError::EmptyWindow(window.bank.clone()));
            }
        }
        Ok(Rails { config, calendar })
    }

    pub fn config(&self) -> &RailsConfig {
        &self.config
    }

    pub fn calendar(&self) -> &BusinessCalendar {
        &self.calendar
    }

    /// From submission to arrival on this rail.
    pub fn settle_minutes(&self, rail: Rail) -> u32 {
        match rail {
            Rail::IntraBank => self.config.intra_bank.settle_minutes,
            Rail::LargeValue => self.config.large_value.settle_minutes,
            Rail::Interbank24x7 => self.config.interbank.settle_minutes,
        }
    }

    /// Whether `bank` is under maintenance for `rail` at the local time `at`.
    pub fn in_maintenance(&self, rail: Rail, bank: &BankCode, at: NaiveDateTime) -> bool {
        self.config.maintenance.iter().any(|w| {
            &w.bank == bank && (w.rails.is_empty() || w.rails.contains(&rail)) && w.when.covers(at)
        })
    }

    /// Whether `rail` accepts a payment from `debtor` to `creditor` at `at`.
    pub fn is_open(
        &self,
        rail: Rail,
        debtor: &BankCode,
        creditor: &BankCode,
        at: DateTime<Utc>,
    ) -> bool {
        if !rail.serves(debtor, creditor) {
            return false;
        }
        let local = at.with_timezone(&TZ).naive_local();
        if self.in_maintenance(rail, debtor, local) || self.in_maintenance(rail, creditor, local) {
            return false;
        }
        match rail {
            Rail::IntraBank | Rail::Interbank24x7 => true,
            Rail::LargeValue => {
                let hours = &self.config.large_value;
                self.calendar.is_working_day(local.date())
                    && hours.opens_at <= local.time()
                    && local.time() < hours.cut_off
            }
        }
    }

    /// Every instant after `at` (within the horizon) at which some rail may open or close:
    /// the large-value opening and cut-off on each day, and the start and end of every
    /// maintenance window. Availability is constant between two consecutive boundaries.
    pub fn boundaries_after(&self, at: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let today = at.with_timezone(&TZ).date_naive();
        let mut out = BTreeSet::new();
        let mut add = |local: NaiveDateTime| {
            if let Some(instant) = to_utc(local)
                && instant > at
            {
                out.insert(instant);
            }
        };
        for n in 0..=HORIZON_DAYS {
            let Some(day) = today.checked_add_days(Days::new(n)) else {
                break;
            };
            add(day.and_time(self.config.large_value.opens_at));
            add(day.and_time(self.config.large_value.cut_off));
            for window in &self.config.maintenance {
                // A weekly window's edges on every day: one crossing midnight ends the
                // next day, and an edge on a day outside the window changes nothing.
                if let MaintenanceTime::Daily { from, until }
                | MaintenanceTime::Weekly { from, until, .. } = &window.when
                {
                    add(day.and_time(*from));
                    add(day.and_time(*until));
                }
            }
        }
        let horizon_end = today.checked_add_days(Days::new(HORIZON_DAYS + 1));
        for window in &self.config.maintenance {
            if let MaintenanceTime::OneOff { from, until } = &window.when {
                for edge in [*from, *until] {
                    if horizon_end.is_some_and(|end| edge.date() <= end) {
                        add(edge);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// What is open now and, for each rail, when it next opens or closes.
    pub fn status(
        &self,
        debtor: &BankCode,
        creditor: &BankCode,
        at: DateTime<Utc>,
    ) -> RailStatusReport {
        let boundaries = self.boundaries_after(at);
        let rails = Rail::ALL
            .into_iter()
            .map(|rail| {
                let serves = rail.serves(debtor, creditor);
                let open_now = self.is_open(rail, debtor, creditor, at);
                let change = boundaries
                    .iter()
                    .copied()
                    .find(|b| self.is_open(rail, debtor, creditor, *b) != open_now);
                RailStatus {
                    rail,
                    serves,
                    open_now,
                    closes_at: if open_now { change } else { None },
                    next_opens_at: if open_now || !serves { None } else { change },
                    per_transaction_cap: (rail == Rail::Interbank24x7)
                        .then_some(self.config.interbank.per_transaction_cap),
                }
            })
            .collect();
        RailStatusReport { at, rails }
    }
}

/// A local Shanghai date-time as an instant (Shanghai has no daylight saving: always one).
pub(crate) fn to_utc(local: NaiveDateTime) -> Option<DateTime<Utc>> {
    TZ.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// A local Shanghai date and time as an instant; `None` for an impossible time.
pub fn shanghai(date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    to_utc(date.and_time(time))
}

/// One rail's state at a moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RailStatus {
    pub rail: Rail,
    /// Whether the rail connects the two banks at all.
    pub serves: bool,
    pub open_now: bool,
    /// When an open rail next closes, if within the horizon.
    pub closes_at: Option<DateTime<Utc>>,
    /// When a closed rail next opens, if within the horizon.
    pub next_opens_at: Option<DateTime<Utc>>,
    pub per_transaction_cap: Option<Decimal>,
}

/// What is open now and the next windows, for a pair of banks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RailStatusReport {
    pub at: DateTime<Utc>,
    pub rails: Vec<RailStatus>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn at(text: &str) -> DateTime<Utc> {
        let local: NaiveDateTime = text.parse().expect("local date-time");
        to_utc(local).unwrap()
    }

    pub(crate) fn bank(code: &str) -> BankCode {
        BankCode::new(code).unwrap()
    }

    pub(crate) fn rails_with(maintenance: Vec<MaintenanceWindow>) -> Rails {
        let calendar = crate::calendar::tests::national_day_2026();
        Rails::new(
            RailsConfig {
                maintenance,
                ..RailsConfig::default()
            },
            calendar,
        )
        .unwrap()
    }

    #[test]
    fn large_value_is_open_in_business_hours_on_working_days_only() {
        let rails = rails_with(vec![]);
        let (a, b) = (bank("102100099996"), bank("313290000017"));
        let open = |t| rails.is_open(Rail::LargeValue, &a, &b, at(t));
        assert!(open("2026-11-24T16:00:00"), "Tuesday afternoon");
        assert!(!open("2026-11-24T17:00:00"), "at the cut-off");
        assert!(!open("2026-11-24T08:29:59"), "before opening");
        assert!(open("2026-10-10T10:00:00"), "make-up Saturday");
        assert!(!open("2026-10-17T10:00:00"), "ordinary Saturday");
        assert!(!open("2026-10-05T10:00:00"), "National Day holiday");
    }

    #[test]
    fn intra_bank_only_serves_one_bank_and_the_others_only_two() {
        let rails = rails_with(vec![]);
        let (a, b) = (bank("102100099996"), bank("313290000017"));
        let sunday_night = at("2026-11-29T03:00:00");
        assert!(rails.is_open(Rail::IntraBank, &a, &a, sunday_night));
        assert!(!rails.is_open(Rail::IntraBank, &a, &b, sunday_night));
        assert!(rails.is_open(Rail::Interbank24x7, &a, &b, sunday_night));
        assert!(!rails.is_open(Rail::Interbank24x7, &a, &a, sunday_night));
    }

    #[test]
    fn a_daily_window_across_midnight_closes_both_sides_of_it() {
        let b = bank("313290000017");
        let rails = rails_with(vec![MaintenanceWindow {
            bank: b.clone(),
            rails: vec![Rail::Interbank24x7],
            when: MaintenanceTime::Daily {
                from: NaiveTime::from_hms_opt(23, 55, 0).unwrap(),
                until: NaiveTime::from_hms_opt(0, 30, 0).unwrap(),
            },
            note: String::new(),
        }]);
        let a = bank("102100099996");
        let open = |t| rails.is_open(Rail::Interbank24x7, &a, &b, at(t));
        assert!(open("2026-11-24T23:54:59"));
        assert!(!open("2026-11-24T23:55:00"));
        assert!(!open("2026-11-25T00:29:59"));
        assert!(open("2026-11-25T00:30:00"));
        let c = bank("105100000017");
        assert!(rails.is_open(Rail::Interbank24x7, &a, &c, at("2026-11-25T00:00:00")));
    }

    #[test]
    fn status_shows_what_is_open_now_and_the_next_window() {
        let rails = rails_with(vec![]);
        let (a, b) = (bank("102100099996"), bank("313290000017"));
        let report = rails.status(&a, &b, at("2026-11-24T22:00:00"));
        let lv = report
            .rails
            .iter()
            .find(|r| r.rail == Rail::LargeValue)
            .unwrap();
        assert!(!lv.open_now);
        assert_eq!(lv.next_opens_at, Some(at("2026-11-25T08:30:00")));
        let ib = report
            .rails
            .iter()
            .find(|r| r.rail == Rail::Interbank24x7)
            .unwrap();
        assert!(ib.open_now);
        assert_eq!(ib.closes_at, None);
        assert_eq!(ib.per_transaction_cap, Some(Decimal::from(5_000_000)));
        let intra = report
            .rails
            .iter()
            .find(|r| r.rail == Rail::IntraBank)
            .unwrap();
        assert!(!intra.serves && !intra.open_now && intra.next_opens_at.is_none());

        let afternoon = rails.status(&a, &b, at("2026-11-24T16:00:00"));
        let lv = afternoon
            .rails
            .iter()
            .find(|r| r.rail == Rail::LargeValue)
            .unwrap();
        assert!(lv.open_now);
        assert_eq!(lv.closes_at, Some(at("2026-11-24T17:00:00")));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let cal = crate::calendar::tests::national_day_2026();
        let mut inverted = RailsConfig::default();
        inverted.large_value.cut_off = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
        assert_eq!(
            Rails::new(inverted, cal.clone()).err(),
            Some(RailsError::HoursInverted)
        );
        let mut zero_cap = RailsConfig::default();
        zero_cap.interbank.per_transaction_cap = Decimal::ZERO;
        assert_eq!(
            Rails::new(zero_cap, cal.clone()).err(),
            Some(RailsError::InvalidCap)
        );
        let mut empty = RailsConfig::default();
        let t = "2026-11-24T23:55:00".parse().unwrap();
        empty.maintenance.push(MaintenanceWindow {
            bank: bank("313290000017"),
            rails: vec![],
            when: MaintenanceTime::OneOff { from: t, until: t },
            note: String::new(),
        });
        assert!(matches!(
            Rails::new(empty, cal),
            Err(RailsError::EmptyWindow(_))
        ));
    }

    #[test]
    fn a_configuration_file_may_give_only_what_differs_from_the_defaults() {
        let config =
            RailsConfig::from_json(r#"{"interbank": {"per_transaction_cap": "1000000"}}"#).unwrap();
        assert_eq!(
            config.interbank.per_transaction_cap,
            Decimal::from(1_000_000)
        );
        assert_eq!(config.interbank.settle_minutes, 1);
        assert_eq!(config.large_value, RailsConfig::default().large_value);
        assert_eq!(
            RailsConfig::from_json("{}").unwrap(),
            RailsConfig::default()
        );
    }

    #[test]
    fn a_misspelt_or_malformed_configuration_is_refused_with_the_reason() {
        let typo = RailsConfig::from_json(r#"{"interbank": {"per_transacton_cap": "1"}}"#);
        assert!(
            matches!(&typo, Err(RailsError::Parse(m)) if m.contains("per_transacton_cap")),
            "{typo:?}"
        );
        let bad_time = RailsConfig::from_json(r#"{"large_value": {"opens_at": "8h30"}}"#);
        assert!(
            matches!(bad_time, Err(RailsError::Parse(_))),
            "{bad_time:?}"
        );
        let no_days = RailsConfig::from_json(
            r#"{"maintenance": [{"bank": "313290000017",
                "when": {"kind": "weekly", "days": [], "from": "00:00:00", "until": "04:00:00"}}]}"#,
        )
        .unwrap();
        let cal = crate::calendar::tests::national_day_2026();
        assert!(matches!(
            Rails::new(no_days, cal),
            Err(RailsError::NoDays(_))
        ));
    }

    #[test]
    fn a_weekly_window_closes_its_days_only_and_may_cross_midnight() {
        // Every Sunday from 23:00 until Monday 01:00.
        let config = RailsConfig::from_json(
            r#"{"maintenance": [{"bank": "313290000017", "rails": ["interbank_24x7"],
                "when": {"kind": "weekly", "days": ["sun"], "from": "23:00:00", "until": "01:00:00"}}]}"#,
        )
        .unwrap();
        let rails = Rails::new(config, crate::calendar::tests::national_day_2026()).unwrap();
        let (a, b) = (bank("102100099996"), bank("313290000017"));
        let open = |t| rails.is_open(Rail::Interbank24x7, &a, &b, at(t));
        assert!(open("2026-11-29T22:59:59"), "Sunday before the window");
        assert!(!open("2026-11-29T23:00:00"), "Sunday night");
        assert!(!open("2026-11-30T00:59:59"), "Monday small hours");
        assert!(open("2026-11-30T01:00:00"), "Monday after the window");
        assert!(open("2026-11-28T23:30:00"), "Saturday night is not in it");
        assert!(open("2026-11-29T00:30:00"), "nor Sunday's small hours");
        assert!(
            rails
                .boundaries_after(at("2026-11-29T22:00:00"))
                .contains(&at("2026-11-30T01:00:00"))
        );
    }

    #[test]
    fn rails_configuration_reads_from_json() {
        let json = r#"{
            "large_value": {"opens_at": "08:30:00", "cut_off": "17:15:00", "settle_minutes": 5},
            "interbank": {"per_transaction_cap": "5000000", "settle_minutes": 1},
            "intra_bank": {"settle_minutes": 0},
            "maintenance": [{
                "bank": "313290000017",
                "when": {"kind": "one_off", "from": "2026-11-24T23:55:00", "until": "2026-11-25T02:05:00"},
                "note": "上海银行实时付款业务维护"
            }]
        }"#;
        let config: RailsConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.maintenance.len(), 1);
        assert!(config.maintenance[0].rails.is_empty());
        assert_eq!(
            config.large_value.cut_off,
            NaiveTime::from_hms_opt(17, 15, 0).unwrap()
        );
    }
}
