//! The payment domain's values: methods, channels and their terms, maintenance windows.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use ledger::money::{Currency, Money, MoneyError, round_half_up};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How a customer pays at the till.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// WeChat Pay: the terminal scans the customer's payment code (付款码).
    WechatPayCode,
    /// WeChat Pay: the customer scans the terminal's dynamic code (Native).
    WechatPayQr,
    /// Alipay: the terminal scans the customer's payment code (`alipay.trade.pay`).
    AlipayCode,
    /// Alipay: the customer scans the terminal's dynamic code (`alipay.trade.precreate`).
    AlipayQr,
    /// A bank card through an acquirer.
    BankCard,
    /// Notes and coins into the drawer.
    Cash,
    /// The station's stored-value member card, kept in the ledger.
    MemberCard,
    /// An order a partner app's driver already paid, pushed to the terminal.
    PartnerApp,
}

impl Method {
    /// Whether the method goes through an outside channel (and so through routing).
    pub const fn uses_channel(self) -> bool {
        matches!(
            self,
            Method::WechatPayCode
                | Method::WechatPayQr
                | Method::AlipayCode
                | Method::AlipayQr
                | Method::BankCard
        )
    }
}

/// The outside party a channel talks to, which fixes the adapter and the message formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    WechatPay,
    Alipay,
    Acquirer,
}

/// A channel's identifier within the platform, e.g. `wxpay-direct` or `wxpay-via-bank-a`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(String);

impl ChannelId {
    /// A non-empty identifier of at most 64 characters from `[A-Za-z0-9_-]`.
    pub fn new(id: impl Into<String>) -> Result<Self, ModelError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(ChannelId(id))
        } else {
            Err(ModelError::ChannelId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Invalid domain input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("channel id {0:?} is not 1-64 characters of letters, digits, '-' or '_'")]
    ChannelId(String),
    #[error("a fee rate must be at least 0 and below 1, got {0}")]
    FeeRate(Decimal),
    #[error("a maintenance window must end after it starts")]
    EmptyWindow,
    #[error("a limit must be positive and in the channel's currency")]
    Limit,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// A channel's fee as a fraction of the amount (0.0038 is 0.38%).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct FeeRate(Decimal);

impl FeeRate {
    pub fn new(rate: Decimal) -> Result<Self, ModelError> {
        if rate.is_sign_negative() || rate >= Decimal::ONE {
            Err(ModelError::FeeRate(rate))
        } else {
            Ok(FeeRate(rate))
        }
    }

    pub fn rate(self) -> Decimal {
        self.0
    }

    /// The fee on `amount`, rounded by the ledger's one rule (half-up to the fen).
    pub fn fee_on(self, amount: Money) -> Result<Money, MoneyError> {
        round_half_up(amount.amount() * self.0, amount.currency())
    }
}

impl TryFrom<Decimal> for FeeRate {
    type Error = ModelError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        FeeRate::new(value)
    }
}

impl From<FeeRate> for Decimal {
    fn from(value: FeeRate) -> Self {
        value.0
    }
}

/// When the channel takes its fee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeMode {
    /// Deducted from each payment: the settlement brings the amount less the fee.
    DeductedAtPayment,
    /// Billed later: the settlement brings the full amount; the fee comes as a bill.
    BilledLater,
}

/// A period in which a channel announced it will not serve (the banks' maintenance notices).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MaintenanceWindow {
    /// A one-off window, `[from, until)`.
    OneOff {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Every listed weekday between two local times in a time zone, `[start, end)`. A window
    /// whose end is before its start runs over midnight into the next day.
    Recurring {
        weekdays: Vec<Weekday>,
        start: NaiveTime,
        end: NaiveTime,
        time_zone: Tz,
    },
}

impl MaintenanceWindow {
    /// A one-off window; refuses one that ends before it starts.
    pub fn one_off(from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Self, ModelError> {
        if until <= from {
            return Err(ModelError::EmptyWindow);
        }
        Ok(MaintenanceWindow::OneOff { from, until })
    }

    /// A recurring window; refuses a zero-length one.
    pub fn recurring(
        weekdays: Vec<Weekday>,
        start: NaiveTime,
        end: NaiveTime,
        time_zone: Tz,
    ) -> Result<Self, ModelError> {
        if start == end || weekdays.is_empty() {
            return Err(ModelError::EmptyWindow);
        }
        Ok(MaintenanceWindow::Recurring {
            weekdays,
            start,
            end,
            time_zone,
        })
    }

    /// Whether `at` falls inside the window.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        match self {
            MaintenanceWindow::OneOff { from, until } => *from <= at && at < *until,
            MaintenanceWindow::Recurring {
                weekdays,
                start,
                end,
                time_zone,
            } => {
                let local = at.with_timezone(time_zone);
                let time = local.time();
                let today = local.weekday();
                if start < end {
                    weekdays.contains(&today) && *start <= time && time < *end
                } else {
                    // Over midnight: the evening part belongs to the listed day, the morning
                    // part to the day after it.
                    (weekdays.contains(&today) && time >= *start)
                        || (weekdays.contains(&today.pred()) && time < *end)
                }
            }
        }
    }
}

/// One channel a station can take payments through, with its commercial terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub id: ChannelId,
    pub party: Party,
    /// The methods this channel serves.
    pub methods: Vec<Method>,
    pub currency: Currency,
    pub fee_rate: FeeRate,
    pub fee_mode: FeeMode,
    /// The largest single payment the channel accepts.
    pub single_limit: Money,
    /// The most the channel takes for the merchant in one local day.
    pub daily_limit: Money,
    /// Lower numbers are tried first.
    pub priority: u32,
    pub maintenance: Vec<MaintenanceWindow>,
    /// Switched off by the station company (a manual failover).
    pub enabled: bool,
}

impl ChannelConfig {
    /// Checks the terms hang together: limits positive and in the channel's currency.
    pub fn validate(&self) -> Result<(), ModelError> {
        for limit in [self.single_limit, self.daily_limit] {
            if !limit.is_positive() || limit.currency() != self.currency {
                return Err(ModelError::Limit);
            }
        }
        Ok(())
    }

    /// Whether any maintenance window covers `at`.
    pub fn in_maintenance(&self, at: DateTime<Utc>) -> bool {
        self.maintenance.iter().any(|w| w.covers(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    #[test]
    fn fees_round_half_up_to_the_fen() {
        let rate = FeeRate::new(dec!(0.0038)).unwrap();
        // 300.00 * 0.0038 = 1.14 exactly; 12.50 * 0.0038 = 0.0475 -> 0.05.
        let fee = rate.fee_on(Money::new(dec!(300.00), Currency::CNY).unwrap());
        assert_eq!(fee.unwrap().amount(), dec!(1.14));
        let fee = rate.fee_on(Money::new(dec!(12.50), Currency::CNY).unwrap());
        assert_eq!(fee.unwrap().amount(), dec!(0.05));
        assert!(FeeRate::new(dec!(1)).is_err());
        assert!(FeeRate::new(dec!(-0.01)).is_err());
    }

    #[test]
    fn a_bank_notice_for_saturday_night_covers_the_small_hours_of_sunday() {
        // "Every Saturday 23:00 to Sunday 03:00 Beijing time" as a recurring window.
        let window = MaintenanceWindow::recurring(
            vec![Weekday::Sat],
            NaiveTime::from_hms_opt(23, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(3, 0, 0).unwrap(),
            chrono_tz::Asia::Shanghai,
        )
        .unwrap();
        let shanghai = chrono_tz::Asia::Shanghai;
        let at = |d, h, m| {
            shanghai
                .with_ymd_and_hms(2026, 11, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        // 2026-11-28 is a Saturday.
        assert!(!window.covers(at(28, 22, 59)));
        assert!(window.covers(at(28, 23, 0)));
        assert!(window.covers(at(29, 2, 59)));
        assert!(!window.covers(at(29, 3, 0)));
        assert!(!window.covers(at(29, 23, 30)));
        assert!(!window.covers(at(27, 23, 30)));
    }

    #[test]
    fn a_one_off_window_is_half_open() {
        let from = Utc.with_ymd_and_hms(2026, 11, 25, 16, 0, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap();
        let window = MaintenanceWindow::one_off(from, until).unwrap();
        assert!(window.covers(from));
        assert!(!window.covers(until));
        assert!(MaintenanceWindow::one_off(until, from).is_err());
    }

    #[test]
    fn channel_ids_are_short_and_plain() {
        assert!(ChannelId::new("wxpay-via-bank_a").is_ok());
        assert!(ChannelId::new("").is_err());
        assert!(ChannelId::new("a b").is_err());
        assert!(ChannelId::new("x".repeat(65)).is_err());
    }
}
