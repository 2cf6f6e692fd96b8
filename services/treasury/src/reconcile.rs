//! Statement reconciliation: what the bank booked (camt.053) against what the platform
//! expects from its instructions and the ledger. Every difference becomes an exception for
//! treasury to clear; nothing is corrected silently.

use std::collections::BTreeMap;

use ledger::Money;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::EndToEndId;
use crate::iso20022::camt053::{Direction, Statement};

/// A movement the platform expects on the statement's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedMovement {
    pub end_to_end_id: EndToEndId,
    pub amount: Money,
    pub direction: Direction,
    /// A return after settlement: the bank books it as a reversal.
    pub reversal: bool,
}

/// One difference between the statement and the platform's books.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReconException {
    /// The platform expects a booking the bank did not make.
    MissingFromStatement {
        end_to_end_id: EndToEndId,
        amount: Money,
    },
    /// The bank booked something no instruction explains.
    UnknownEntry {
        bank_reference: String,
        end_to_end_id: Option<EndToEndId>,
        amount: Money,
    },
    AmountMismatch {
        end_to_end_id: EndToEndId,
        expected: Money,
        booked: Money,
    },
    DirectionMismatch {
        end_to_end_id: EndToEndId,
        expected: Direction,
        booked: Direction,
    },
    /// The same instruction booked twice.
    DuplicateBooking {
        end_to_end_id: EndToEndId,
        bank_reference: String,
    },
    /// Opening balance plus the booked lines is not the closing balance.
    BalanceMismatch {
        opening: Money,
        net_movement: Decimal,
        closing: Money,
    },
}

/// What a reconciliation found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    pub matched: Vec<EndToEndId>,
    pub exceptions: Vec<ReconException>,
}

impl Reconciliation {
    pub fn is_clean(&self) -> bool {
        self.exceptions.is_empty()
    }
}

/// Matches every booked line to the expected movement with the same end-to-end id (and
/// reversal flag); reports everything else.
pub fn reconcile(statement: &Statement, expected: &[ExpectedMovement]) -> Reconciliation {
    let mut out = Reconciliation::default();
    let mut open: BTreeMap<(&EndToEndId, bool), &ExpectedMovement> = expected
        .iter()
        .map(|m| ((&m.end_to_end_id, m.reversal), m))
        .collect();
    let mut seen: BTreeMap<(&EndToEndId, bool), ()> = BTreeMap::new();
    let mut net = Decimal::ZERO;
    for entry in &statement.entries {
        net += match entry.direction {
            Direction::Credit => entry.amount.amount(),
            Direction::Debit => -entry.amount.amount(),
        };
        let unknown = || ReconException::UnknownEntry {
            bank_reference: entry.bank_reference.clone(),
            end_to_end_id: entry.end_to_end_id.clone(),
            amount: entry.amount,
        };
        let Some(id) = &entry.end_to_end_id else {
            out.exceptions.push(unknown());
            continue;
        };
        let key = (id, entry.reversal);
        if seen.insert(key, ()).is_some() {
            out.exceptions.push(ReconException::DuplicateBooking {
                end_to_end_id: id.clone(),
                bank_reference: entry.bank_reference.clone(),
            });
            continue;
        }
        let Some(want) = open.remove(&key) else {
            out.exceptions.push(unknown());
            continue;
        };
        if want.amount != entry.amount {
            out.exceptions.push(ReconException::AmountMismatch {
                end_to_end_id: id.clone(),
                expected: want.amount,
                booked: entry.amount,
            });
        } else if want.direction != entry.direction {
            out.exceptions.push(ReconException::DirectionMismatch {
                end_to_end_id: id.clone(),
                expected: want.direction,
                booked: entry.direction,
            });
        } else {
            out.matched.push(id.clone());
        }
    }
    for ((id, _), want) in open {
        out.exceptions.push(ReconException::MissingFromStatement {
            end_to_end_id: id.clone(),
            amount: want.amount,
        });
    }
    if statement.opening.amount() + net != statement.closing.amount() {
        out.exceptions.push(ReconException::BalanceMismatch {
            opening: statement.opening,
            net_movement: net,
            closing: statement.closing,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso20022::camt053::tests::{cny, entry, statement};
    use rust_decimal_macros::dec;

    fn expect(amount: Decimal, e2e: &str) -> ExpectedMovement {
        ExpectedMovement {
            end_to_end_id: EndToEndId::new(e2e).unwrap(),
            amount: cny(amount),
            direction: Direction::Debit,
            reversal: false,
        }
    }

    fn books() -> Vec<ExpectedMovement> {
        vec![
            expect(dec!(30000000.00), "E2E-DEPOT-0001"),
            expect(dec!(1234.56), "E2E-DEPOT-0002"),
        ]
    }

    #[test]
    fn a_statement_that_matches_the_books_is_clean() {
        let xml = statement().to_xml().unwrap();
        let parsed = Statement::parse(&xml).unwrap();
        let result = reconcile(&parsed, &books());
        assert!(result.is_clean(), "{result:?}");
        assert_eq!(result.matched.len(), 2);
    }

    #[test]
    fn camt053_reconciliation_finds_planted_mismatches() {
        let mut planted = statement();
        // The depot payment booked one fen short.
        planted.entries[0].amount = cny(dec!(29999999.99));
        // The transport payment is missing from the statement.
        planted.entries.remove(1);
        // A booking nobody instructed, and the same booking twice.
        planted
            .entries
            .push(entry(dec!(500.00), "E2E-UNKNOWN-01", Direction::Debit));
        planted
            .entries
            .push(entry(dec!(500.00), "E2E-UNKNOWN-01", Direction::Debit));
        // A credit where the platform expects a debit.
        planted
            .entries
            .push(entry(dec!(10.00), "E2E-REFUND-01", Direction::Credit));
        let mut expected = books();
        expected.push(expect(dec!(10.00), "E2E-REFUND-01"));

        let parsed = Statement::parse(&planted.to_xml().unwrap()).unwrap();
        let result = reconcile(&parsed, &expected);
        let kinds: Vec<&str> = result
            .exceptions
            .iter()
            .map(|e| match e {
                ReconException::MissingFromStatement { .. } => "missing",
                ReconException::UnknownEntry { .. } => "unknown",
                ReconException::AmountMismatch { .. } => "amount",
                ReconException::DirectionMismatch { .. } => "direction",
                ReconException::DuplicateBooking { .. } => "duplicate",
                ReconException::BalanceMismatch { .. } => "balance",
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "amount",
                "unknown",
                "duplicate",
                "direction",
                "missing",
                "balance"
            ]
        );
        assert!(result.matched.is_empty());
    }

    #[test]
    fn a_return_after_settlement_matches_as_a_reversal() {
        let mut st = statement();
        let mut back = entry(dec!(1234.56), "E2E-DEPOT-0002", Direction::Credit);
        back.reversal = true;
        st.entries.push(back);
        st.closing = cny(dec!(19999999.99) + dec!(0.01));
        let mut expected = books();
        expected.push(ExpectedMovement {
            direction: Direction::Credit,
            reversal: true,
            ..expect(dec!(1234.56), "E2E-DEPOT-0002")
        });
        let result = reconcile(&st, &expected);
        assert!(result.is_clean(), "{result:?}");
        assert_eq!(result.matched.len(), 3);
    }
}
