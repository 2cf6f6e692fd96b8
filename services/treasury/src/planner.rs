//! The rail planner: for an amount between two banks at a moment, which rail, when, in how
//! many tranches, and when the money is expected to arrive.
//!
//! The rule, in order, at the first moment (now, or the next rail boundary) where it yields:
//! 1. Same bank: intra-bank transfer.
//! 2. Within the 24x7 cap: the 24x7 interbank system (seconds, any hour), else large-value.
//! 3. Above the cap: large-value if open; else, if the policy allows tranches and the number
//!    needed is within its limit, tranches on the 24x7 system (分批到账); else wait.

use chrono::{DateTime, Duration, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::BankCode;
use crate::rails::{HORIZON_DAYS, Rail, Rails};

/// Whether an amount above the 24x7 cap may go in several tranches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TranchePolicy {
    /// Wait for the large-value system (the default).
    #[default]
    #[serde(rename = "wait", alias = "never")]
    Never,
    /// Split into at most `max_tranches` transactions on the capped rail when it is the only
    /// one open.
    Allowed { max_tranches: u32 },
}

/// What to plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRequest {
    pub amount: Money,
    pub debtor_bank: BankCode,
    pub creditor_bank: BankCode,
    pub at: DateTime<Utc>,
    pub tranches: TranchePolicy,
}

/// One transaction the plan sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub rail: Rail,
    pub amount: Money,
    pub send_at: DateTime<Utc>,
}

/// The plan: legs to send, all at the same moment, on the same rail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub legs: Vec<Leg>,
    pub send_at: DateTime<Utc>,
    pub expected_arrival: DateTime<Utc>,
    /// Whether the plan waits for a window instead of sending at the requested moment.
    pub waits: bool,
}

impl Plan {
    pub fn rail(&self) -> Rail {
        self.legs[0].rail
    }
}

/// Why no plan exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("bank rails carry CNY only, not {0}")]
    Currency(Currency),
    #[error("the amount must be positive")]
    NonPositive,
    #[error("no rail opens for this payment within {0} days")]
    NoWindow(u64),
}

impl Rails {
    /// Plans one payment. Pure: the same request on the same configuration gives the same
    /// plan.
    pub fn plan(&self, request: &PlanRequest) -> Result<Plan, PlanError> {
        if request.amount.currency() != Currency::CNY {
            return Err(PlanError::Currency(request.amount.currency()));
        }
        if !request.amount.is_positive() {
            return Err(PlanError::NonPositive);
        }
        let candidates = std::iter::once(request.at).chain(self.boundaries_after(request.at));
        for moment in candidates {
            if let Some(legs) = self.legs_at(request, moment) {
                let rail = legs[0].rail;
                let arrival = moment + Duration::minutes(i64::from(self.settle_minutes(rail)));
                debug_assert_eq!(
                    legs.iter().map(|l| l.amount.amount()).sum::<Decimal>(),
                    request.amount.amount(),
                    "the legs carry exactly the amount"
                );
                return Ok(Plan {
                    legs,
                    send_at: moment,
                    expected_arrival: arrival,
                    waits: moment > request.at,
                });
            }
        }
        Err(PlanError::NoWindow(HORIZON_DAYS))
    }

    /// The legs to send at `moment`, if the payment can go then.
    fn legs_at(&self, request: &PlanRequest, moment: DateTime<Utc>) -> Option<Vec<Leg>> {
        let (debtor, creditor) = (&request.debtor_bank, &request.creditor_bank);
        let open = |rail| self.is_open(rail, debtor, creditor, moment);
        let single = |rail| {
            Some(vec![Leg {
                rail,
                amount: request.amount,
                send_at: moment,
            }])
        };
        if debtor == creditor {
            return if open(Rail::IntraBank) {
                single(Rail::IntraBank)
            } else {
                None
            };
        }
        let cap = self.config().interbank.per_transaction_cap;
        let amount = request.amount.amount();
        if amount <= cap {
            if open(Rail::Interbank24x7) {
                return single(Rail::Interbank24x7);
            }
            return if open(Rail::LargeValue) {
                single(Rail::LargeValue)
            } else {
                None
            };
        }
        if open(Rail::LargeValue) {
            return single(Rail::LargeValue);
        }
        match request.tranches {
            TranchePolicy::Allowed { max_tranches } if open(Rail::Interbank24x7) => {
                let parts = tranches(request.amount, cap)?;
                if parts.len() > max_tranches as usize {
                    return None;
                }
                Some(
                    parts
                        .into_iter()
                        .map(|amount| Leg {
                            rail: Rail::Interbank24x7,
                            amount,
                            send_at: moment,
                        })
                        .collect(),
                )
            }
            TranchePolicy::Allowed { .. } | TranchePolicy::Never => None,
        }
    }
}

/// What to plan for a batch: several payments from one debtor bank, sent together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlanRequest {
    pub debtor_bank: BankCode,
    /// Each payment's creditor bank and amount.
    pub payments: Vec<(BankCode, Money)>,
    pub at: DateTime<Utc>,
}

impl Rails {
    /// Plans a batch: the first moment (now, or the next rail boundary) at which one rail
    /// carries every payment of it: intra-bank when all creditors are at the debtor's bank,
    /// else the 24x7 system when every payment is within its cap and it is open for every
    /// creditor's bank, else large-value when open for all. A batch is never split into
    /// tranches: a payment above the cap waits for the large-value window with the rest.
    pub fn plan_batch(&self, request: &BatchPlanRequest) -> Result<Plan, PlanError> {
        for (_, amount) in &request.payments {
            if amount.currency() != Currency::CNY {
                return Err(PlanError::Currency(amount.currency()));
            }
            if !amount.is_positive() {
                return Err(PlanError::NonPositive);
            }
        }
        if request.payments.is_empty() {
            return Err(PlanError::NonPositive);
        }
        let candidates = std::iter::once(request.at).chain(self.boundaries_after(request.at));
        for moment in candidates {
            if let Some(rail) = self.batch_rail_at(request, moment) {
                let arrival = moment + Duration::minutes(i64::from(self.settle_minutes(rail)));
                return Ok(Plan {
                    legs: request
                        .payments
                        .iter()
                        .map(|(_, amount)| Leg {
                            rail,
                            amount: *amount,
                            send_at: moment,
                        })
                        .collect(),
                    send_at: moment,
                    expected_arrival: arrival,
                    waits: moment > request.at,
                });
            }
        }
        Err(PlanError::NoWindow(HORIZON_DAYS))
    }

    fn batch_rail_at(&self, request: &BatchPlanRequest, moment: DateTime<Utc>) -> Option<Rail> {
        let debtor = &request.debtor_bank;
        let open_for_all = |rail| {
            request
                .payments
                .iter()
                .all(|(bank, _)| self.is_open(rail, debtor, bank, moment))
        };
        if request.payments.iter().all(|(bank, _)| bank == debtor) {
            return open_for_all(Rail::IntraBank).then_some(Rail::IntraBank);
        }
        let cap = self.config().interbank.per_transaction_cap;
        if request.payments.iter().all(|(_, a)| a.amount() <= cap)
            && open_for_all(Rail::Interbank24x7)
        {
            return Some(Rail::Interbank24x7);
        }
        open_for_all(Rail::LargeValue).then_some(Rail::LargeValue)
    }
}

/// Full tranches at the cap, then the rest: the parts sum to the whole, none exceeds the cap.
fn tranches(total: Money, cap: Decimal) -> Option<Vec<Money>> {
    let cap = Money::new(cap, total.currency()).ok()?;
    let cap_minor = cap.minor_units().ok()?;
    let mut left = total.minor_units().ok()?;
    let mut parts = Vec::new();
    while left > 0 {
        let part = left.min(cap_minor);
        parts.push(Money::from_minor(part, total.currency()));
        left -= part;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rails::tests::{at, bank, rails_with};
    use crate::rails::{MaintenanceTime, MaintenanceWindow};
    use rust_decimal_macros::dec;

    fn cny(amount: Decimal) -> Money {
        Money::new(amount, Currency::CNY).unwrap()
    }

    fn request(amount: Decimal, when: &str, tranches: TranchePolicy) -> PlanRequest {
        PlanRequest {
            amount: cny(amount),
            debtor_bank: bank("102100099996"),
            creditor_bank: bank("313290000017"),
            at: at(when),
            tranches,
        }
    }

    #[test]
    fn thirty_million_at_four_pm_on_a_working_day_goes_large_value() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-11-24T16:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert_eq!(plan.legs.len(), 1);
        assert!(!plan.waits);
        assert_eq!(plan.expected_arrival, at("2026-11-24T16:05:00"));
    }

    #[test]
    fn thirty_million_at_ten_pm_waits_for_the_large_value_window_when_tranches_are_refused() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-11-24T22:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert!(plan.waits);
        assert_eq!(plan.send_at, at("2026-11-25T08:30:00"));
        assert_eq!(plan.expected_arrival, at("2026-11-25T08:35:00"));
    }

    #[test]
    fn thirty_million_at_ten_pm_goes_in_tranches_on_the_24x7_system_when_policy_allows() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-11-24T22:00:00",
                TranchePolicy::Allowed { max_tranches: 10 },
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::Interbank24x7);
        assert_eq!(plan.legs.len(), 6);
        assert!(plan.legs.iter().all(|l| l.amount == cny(dec!(5000000))));
        assert!(!plan.waits);
        assert_eq!(plan.expected_arrival, at("2026-11-24T22:01:00"));
    }

    #[test]
    fn too_many_tranches_for_the_policy_means_waiting() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-11-24T22:00:00",
                TranchePolicy::Allowed { max_tranches: 3 },
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert_eq!(plan.send_at, at("2026-11-25T08:30:00"));
    }

    #[test]
    fn tranches_sum_to_the_amount_and_none_exceeds_the_cap() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(12345678.91),
                "2026-11-24T22:00:00",
                TranchePolicy::Allowed { max_tranches: 10 },
            ))
            .unwrap();
        let amounts: Vec<Decimal> = plan.legs.iter().map(|l| l.amount.amount()).collect();
        assert_eq!(
            amounts,
            vec![dec!(5000000), dec!(5000000), dec!(2345678.91)]
        );
    }

    #[test]
    fn a_make_up_working_saturday_opens_the_large_value_system() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-10-10T10:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert!(!plan.waits);
    }

    #[test]
    fn an_ordinary_saturday_waits_for_monday_morning() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-10-17T10:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.send_at, at("2026-10-19T08:30:00"));
    }

    #[test]
    fn the_eve_of_golden_week_waits_until_the_holiday_ends() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(30000000),
                "2026-09-30T18:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.send_at, at("2026-10-08T08:30:00"));
    }

    #[test]
    fn a_small_payout_at_night_goes_at_once_on_the_24x7_system() {
        let plan = rails_with(vec![])
            .plan(&request(
                dec!(80000),
                "2026-11-24T22:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::Interbank24x7);
        assert_eq!(plan.expected_arrival, at("2026-11-24T22:01:00"));
    }

    #[test]
    fn a_maintenance_window_of_the_creditor_bank_is_respected() {
        // 上海银行实时付款业务将于11月24日23:55-11月25日2:05进行维护
        let shanghai_bank = bank("313290000017");
        let rails = rails_with(vec![MaintenanceWindow {
            bank: shanghai_bank,
            rails: vec![],
            when: MaintenanceTime::OneOff {
                from: "2026-11-24T23:55:00".parse().unwrap(),
                until: "2026-11-25T02:05:00".parse().unwrap(),
            },
            note: "上海银行实时付款业务维护".to_owned(),
        }]);
        let plan = rails
            .plan(&request(
                dec!(80000),
                "2026-11-25T00:30:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::Interbank24x7);
        assert!(plan.waits);
        assert_eq!(plan.send_at, at("2026-11-25T02:05:00"));
        assert_eq!(plan.expected_arrival, at("2026-11-25T02:06:00"));
        // A payment to another bank is not affected.
        let mut other = request(dec!(80000), "2026-11-25T00:30:00", TranchePolicy::Never);
        other.creditor_bank = bank("105100000017");
        assert!(!rails.plan(&other).unwrap().waits);
    }

    #[test]
    fn a_maintenance_window_on_large_value_pushes_a_big_payment_to_its_end() {
        let rails = rails_with(vec![MaintenanceWindow {
            bank: bank("102100099996"),
            rails: vec![Rail::LargeValue],
            when: MaintenanceTime::OneOff {
                from: "2026-11-24T15:00:00".parse().unwrap(),
                until: "2026-11-24T16:30:00".parse().unwrap(),
            },
            note: String::new(),
        }]);
        let plan = rails
            .plan(&request(
                dec!(30000000),
                "2026-11-24T16:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert_eq!(plan.send_at, at("2026-11-24T16:30:00"));
    }

    #[test]
    fn a_configured_maintenance_window_makes_the_planner_wait_until_it_ends() {
        let config = crate::rails::RailsConfig::from_json(
            r#"{"maintenance": [{"bank": "313290000017",
                "when": {"kind": "weekly", "days": ["tue"], "from": "21:30:00", "until": "23:15:00"},
                "note": "weekly batch window"}]}"#,
        )
        .unwrap();
        let rails = Rails::new(config, crate::calendar::tests::national_day_2026()).unwrap();
        let plan = rails
            .plan(&request(
                dec!(80000),
                "2026-11-24T22:00:00",
                TranchePolicy::Never,
            ))
            .unwrap();
        assert!(plan.waits);
        assert_eq!(plan.rail(), Rail::Interbank24x7);
        assert_eq!(plan.send_at, at("2026-11-24T23:15:00"));
    }

    #[test]
    fn a_configured_cap_changes_the_plan() {
        let rails = |cap: &str| {
            let json = format!(r#"{{"interbank": {{"per_transaction_cap": "{cap}"}}}}"#);
            let config = crate::rails::RailsConfig::from_json(&json).unwrap();
            Rails::new(config, crate::calendar::tests::national_day_2026()).unwrap()
        };
        let night = request(
            dec!(3000000),
            "2026-11-24T22:00:00",
            TranchePolicy::Allowed { max_tranches: 10 },
        );
        // Within the default cap: at once on the 24x7 system.
        let plan = rails("5000000").plan(&night).unwrap();
        assert_eq!(
            (plan.rail(), plan.legs.len(), plan.waits),
            (Rail::Interbank24x7, 1, false)
        );
        // Above a configured cap of one million: three tranches.
        let plan = rails("1000000").plan(&night).unwrap();
        assert_eq!(
            (plan.rail(), plan.legs.len(), plan.waits),
            (Rail::Interbank24x7, 3, false)
        );
        // And without tranches, the morning window.
        let mut waiting = night.clone();
        waiting.tranches = TranchePolicy::Never;
        let plan = rails("1000000").plan(&waiting).unwrap();
        assert_eq!(plan.rail(), Rail::LargeValue);
        assert_eq!(plan.send_at, at("2026-11-25T08:30:00"));
    }

    #[test]
    fn a_batch_goes_on_one_rail_for_all_its_payments() {
        let rails = rails_with(vec![MaintenanceWindow {
            bank: bank("105100000017"),
            rails: vec![Rail::Interbank24x7],
            when: MaintenanceTime::OneOff {
                from: "2026-11-24T21:00:00".parse().unwrap(),
                until: "2026-11-24T23:00:00".parse().unwrap(),
            },
            note: String::new(),
        }]);
        let batch = |payments: Vec<(&str, Decimal)>, when: &str| BatchPlanRequest {
            debtor_bank: bank("102100099996"),
            payments: payments
                .into_iter()
                .map(|(b, a)| (bank(b), cny(a)))
                .collect(),
            at: at(when),
        };
        // Within the cap at night: at once on the 24x7 system, one leg per payment.
        let plan = rails
            .plan_batch(&batch(
                vec![
                    ("313290000017", dec!(80000)),
                    ("313290000017", dec!(120000.50)),
                ],
                "2026-11-24T20:00:00",
            ))
            .unwrap();
        assert_eq!(
            (plan.rail(), plan.legs.len(), plan.waits),
            (Rail::Interbank24x7, 2, false)
        );
        // One creditor's bank in maintenance: the whole batch waits for its end.
        let plan = rails
            .plan_batch(&batch(
                vec![("313290000017", dec!(80000)), ("105100000017", dec!(1000))],
                "2026-11-24T22:00:00",
            ))
            .unwrap();
        assert_eq!(plan.send_at, at("2026-11-24T23:00:00"));
        // One payment above the cap: the whole batch waits for large-value.
        let plan = rails
            .plan_batch(&batch(
                vec![("313290000017", dec!(6000000)), ("313290000017", dec!(1))],
                "2026-11-24T20:00:00",
            ))
            .unwrap();
        assert_eq!(
            (plan.rail(), plan.send_at),
            (Rail::LargeValue, at("2026-11-25T08:30:00"))
        );
        // All at the debtor's bank: intra-bank.
        let plan = rails
            .plan_batch(&batch(
                vec![("102100099996", dec!(6000000)), ("102100099996", dec!(1))],
                "2026-11-29T03:00:00",
            ))
            .unwrap();
        assert_eq!((plan.rail(), plan.waits), (Rail::IntraBank, false));
    }

    #[test]
    fn intra_bank_is_always_open_and_uncapped() {
        let mut same = request(dec!(150000000), "2026-11-29T03:00:00", TranchePolicy::Never);
        same.creditor_bank = same.debtor_bank.clone();
        let plan = rails_with(vec![]).plan(&same).unwrap();
        assert_eq!(plan.rail(), Rail::IntraBank);
        assert_eq!(plan.legs.len(), 1);
        assert!(!plan.waits);
    }

    #[test]
    fn only_positive_cny_is_planned() {
        let rails = rails_with(vec![]);
        let mut usd = request(dec!(1), "2026-11-24T16:00:00", TranchePolicy::Never);
        usd.amount = Money::new(dec!(1), Currency::USD).unwrap();
        assert_eq!(rails.plan(&usd), Err(PlanError::Currency(Currency::USD)));
        let zero = request(dec!(0), "2026-11-24T16:00:00", TranchePolicy::Never);
        assert_eq!(rails.plan(&zero), Err(PlanError::NonPositive));
    }

    #[test]
    fn a_bank_closed_for_longer_than_the_horizon_has_no_plan() {
        let rails = rails_with(vec![MaintenanceWindow {
            bank: bank("313290000017"),
            rails: vec![],
            when: MaintenanceTime::OneOff {
                from: "2026-11-01T00:00:00".parse().unwrap(),
                until: "2027-01-01T00:00:00".parse().unwrap(),
            },
            note: String::new(),
        }]);
        assert_eq!(
            rails.plan(&request(
                dec!(1),
                "2026-11-24T16:00:00",
                TranchePolicy::Never
            )),
            Err(PlanError::NoWindow(HORIZON_DAYS))
        );
    }
}
