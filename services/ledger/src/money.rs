//! Money: `Decimal` amounts in a currency, exact minor units in storage.
//!
//! Rounding lives in exactly one function, [`round_half_up`], and splitting an amount into
//! parts in exactly one function, [`allocate`]. Everything else converts without rounding and
//! fails loudly if a conversion would lose a digit.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency the platform books in. The scale (digits after the point) comes from
/// the currency and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    /// Renminbi: 2 decimals (fen).
    CNY,
    /// Hong Kong dollar: 2 decimals.
    HKD,
    /// US dollar: 2 decimals.
    USD,
    /// Euro: 2 decimals.
    EUR,
    /// Japanese yen: no decimals.
    JPY,
}

impl Currency {
    /// Every currency the ledger accepts.
    pub const ALL: [Currency; 5] = [
        Currency::CNY,
        Currency::HKD,
        Currency::USD,
        Currency::EUR,
        Currency::JPY,
    ];

    /// Digits after the decimal point of the currency's minor unit.
    pub const fn scale(self) -> u32 {
        match self {
            Currency::JPY => 0,
            Currency::CNY | Currency::HKD | Currency::USD | Currency::EUR => 2,
        }
    }

    /// The ISO 4217 code.
    pub const fn code(self) -> &'static str {
        match self {
            Currency::CNY => "CNY",
            Currency::HKD => "HKD",
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::JPY => "JPY",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.code().to_owned()
    }
}

/// Why an amount is not valid money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("{amount} has more decimals than {currency} allows ({scale})")]
    TooManyDecimals {
        amount: Decimal,
        currency: Currency,
        scale: u32,
    },
    #[error("{amount} {currency} does not fit in the ledger's 64-bit minor units")]
    OutOfRange { amount: Decimal, currency: Currency },
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("allocation needs at least one part and non-negative weights with a positive sum")]
    InvalidWeights,
}

/// An exact amount in a currency, with no more decimals than the currency has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// The only way to build money from a decimal: refuses digits the currency does not have.
    /// `12.50` is accepted for CNY (trailing zeros are not digits); `12.505` is not.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let normalized = amount.normalize();
        if normalized.scale() > currency.scale() {
            return Err(MoneyError::TooManyDecimals {
                amount,
                currency,
                scale: currency.scale(),
            });
        }
        let money = Money {
            amount: rescale(normalized, currency),
            currency,
        };
        money.minor_units()?;
        Ok(money)
    }

    /// Builds money from minor units (fen for CNY) as stored.
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Money {
            amount: Decimal::new(minor, currency.scale()),
            currency,
        }
    }

    /// Zero in the currency.
    pub fn zero(currency: Currency) -> Self {
        Money::from_minor(0, currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units, exactly.
    pub fn minor_units(&self) -> Result<i64, MoneyError> {
        let scaled = self.amount * Decimal::from(10_i64.pow(self.currency.scale()));
        debug_assert!(
            scaled.fract().is_zero(),
            "money always has the currency's scale"
        );
        scaled.to_i64().ok_or(MoneyError::OutOfRange {
            amount: self.amount,
            currency: self.currency,
        })
    }

    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Money::new(self.amount + other.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

fn rescale(mut amount: Decimal, currency: Currency) -> Decimal {
    amount.rescale(currency.scale());
    amount
}

/// The platform's one rounding rule: half away from zero ("half-up", 四舍五入) to the
/// currency's minor unit. Prices times litres, fee rates and profit shares all come here.
pub fn round_half_up(value: Decimal, currency: Currency) -> Result<Money, MoneyError> {
    let rounded = value.round_dp_with_strategy(
        currency.scale(),
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    Money::new(rounded, currency)
}

/// The platform's one allocation rule: splits `total` into parts proportional to `weights`
/// by largest remainder, so that the parts always sum to the whole. Ties in the remainder go
/// to the earlier part, which makes the result deterministic.
pub fn allocate(total: Money, weights: &[Decimal]) -> Result<Vec<Money>, MoneyError> {
    let weight_sum: Decimal = weights.iter().copied().sum();
    if weights.is_empty()
        || weights.iter().any(|w| w.is_sign_negative())
        || weight_sum <= Decimal::ZERO
    {
        return Err(MoneyError::InvalidWeights);
    }
    let total_minor = total.minor_units()?;
    let total_dec = Decimal::from(total_minor);
    let mut parts: Vec<i64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(Decimal, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let exact = total_dec * *weight / weight_sum;
        let floor = exact.floor();
        parts.push(floor.to_i64().ok_or(MoneyError::OutOfRange {
            amount: total.amount(),
            currency: total.currency(),
        })?);
        remainders.push((exact - floor, index));
    }
    let mut left = total_minor - parts.iter().sum::<i64>();
    // Largest remainder first; the stable sort keeps earlier parts first among equals.
    remainders.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, index) in remainders {
        if left == 0 {
            break;
        }
        parts[index] += 1;
        left -= 1;
    }
    debug_assert_eq!(left, 0);
    let out: Vec<Money> = parts
        .into_iter()
        .map(|minor| Money::from_minor(minor, total.currency()))
        .collect();
    debug_assert_eq!(
        out.iter().map(|m| m.amount()).sum::<Decimal>(),
        total.amount()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn money_refuses_digits_the_currency_does_not_have() {
        assert!(Money::new(dec!(12.50), Currency::CNY).is_ok());
        assert!(Money::new(dec!(12.500), Currency::CNY).is_ok());
        assert!(matches!(
            Money::new(dec!(12.505), Currency::CNY),
            Err(MoneyError::TooManyDecimals { scale: 2, .. })
        ));
        assert!(Money::new(dec!(1.5), Currency::JPY).is_err());
    }

    #[test]
    fn minor_units_round_trip() {
        let m = Money::new(dec!(123456.78), Currency::CNY).unwrap();
        assert_eq!(m.minor_units().unwrap(), 12_345_678);
        assert_eq!(Money::from_minor(12_345_678, Currency::CNY), m);
    }

    #[test]
    fn rounding_is_half_up_away_from_zero() {
        let cases = [
            (dec!(2.345), dec!(2.35)),
            (dec!(2.344), dec!(2.34)),
            (dec!(-2.345), dec!(-2.35)),
            (dec!(7.4449), dec!(7.44)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                round_half_up(value, Currency::CNY).unwrap().amount(),
                expected
            );
        }
    }

    #[test]
    fn three_shareholders_split_a_hundred_yuan() {
        let total = Money::new(dec!(100.00), Currency::CNY).unwrap();
        let parts = allocate(total, &[dec!(1), dec!(1), dec!(1)]).unwrap();
        let amounts: Vec<Decimal> = parts.iter().map(|m| m.amount()).collect();
        assert_eq!(amounts, vec![dec!(33.34), dec!(33.33), dec!(33.33)]);
    }

    #[test]
    fn allocation_refuses_bad_weights() {
        let total = Money::new(dec!(1), Currency::CNY).unwrap();
        assert!(allocate(total, &[]).is_err());
        assert!(allocate(total, &[dec!(0)]).is_err());
        assert!(allocate(total, &[dec!(1), dec!(-1)]).is_err());
    }

    proptest! {
        #[test]
        fn allocated_parts_always_sum_to_the_whole(
            total_minor in 0_i64..10_000_000_000,
            weights in proptest::collection::vec(0_u32..10_000, 1..12),
        ) {
            prop_assume!(weights.iter().any(|w| *w > 0));
            let total = Money::from_minor(total_minor, Currency::CNY);
            let weights: Vec<Decimal> = weights.into_iter().map(Decimal::from).collect();
            let parts = allocate(total, &weights).unwrap();
            let sum: i64 = parts.iter().map(|p| p.minor_units().unwrap()).sum();
            prop_assert_eq!(sum, total_minor);
            for (part, weight) in parts.iter().zip(&weights) {
                if weight.is_zero() {
                    prop_assert_eq!(part.minor_units().unwrap(), 0);
                }
            }
        }
    }
}
